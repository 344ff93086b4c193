"""Tokenizers: loading (a model's own or another's), fitting to a smaller vocabulary, and the control
tokens calib_sweep itself puts into rows (the document separator and the BOS token).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from calib_sweep.errors import ConfigError
from calib_sweep.models.architecture import load_config
from calib_sweep.models.gguf import GGUF_SPECIAL
from calib_sweep.models.sources import model_path, pretrained_kwargs
from calib_sweep.models.validation import is_random_init

#: The model configs ``model.tokenizer`` may name (``conf/model/<name>.yaml``).
_MODEL_CONFIGS = Path(__file__).resolve().parent.parent / "conf" / "model"


def special_token_ids(tokenizer) -> dict[str, int | None]:
    """``{"bos", "eos", "unk", "pad": id or None}`` of a tokenizer (for checks and manifests)."""
    return {name: getattr(tokenizer, f"{name}_token_id") for name in GGUF_SPECIAL}


def document_separator(model_cfg: Any, tokenizer) -> int:
    """The token put after every document when documents are joined into one stream.

    It is the model's end-of-text token: ``model.separator_token`` when set (SmolLM2-Instruct:
    ``<|endoftext|>``, id 0, the document separator of its pretraining corpus; its EOS
    ``<|im_end|>`` ends a chat turn), else the tokenizer's EOS token (Gemma: ``<eos>``, id 1;
    Llama: ``</s>``).

    Returns:
        The token id.

    Raises:
        ConfigError: ``model.separator_token`` is not a single token of the vocabulary, or neither it
            nor an EOS token exists.
    """
    name = model_cfg.get("separator_token")
    if name is None:
        if tokenizer.eos_token_id is None:
            raise ConfigError(
                f"the tokenizer of {model_cfg.get('name')!r} has no EOS token to separate documents. "
                "Fix: set model.separator_token to its end-of-text token."
            )
        return int(tokenizer.eos_token_id)
    token_id = tokenizer.convert_tokens_to_ids(str(name))
    if token_id is None or token_id == tokenizer.unk_token_id and str(name) != tokenizer.unk_token:
        raise ConfigError(
            f"model.separator_token={name!r} is not a token of {model_cfg.get('name')!r}'s vocabulary. "
            f"Fix: use the model's end-of-text (document separator) token, e.g. '<|endoftext|>', '</s>' or '<eos>', "
            f"or null for its EOS token ({tokenizer.eos_token!r})."
        )
    return int(token_id)


def bos_token_id(model_cfg: Any, tokenizer) -> int | None:
    """The token to put in front of every calibration row and evaluation window, or ``None``.

    ``model.prepend_bos: true`` is for models that are unusable without a BOS token at the start
    of the context (gemma-3-270m: held-out perplexity ~10 with it, ~270 without).  The default
    (false) keeps the GPTQ reference protocol: windows cut from a token stream, no BOS.

    Raises:
        ConfigError: ``prepend_bos`` is set but the tokenizer has no BOS token.
    """
    if not model_cfg.get("prepend_bos", False):
        return None
    if tokenizer.bos_token_id is None:
        raise ConfigError(
            f"model.prepend_bos=true but the tokenizer of {model_cfg.name!r} has no BOS token. Fix: model.prepend_bos=false."
        )
    return int(tokenizer.bos_token_id)


def tokenizer_location(model_cfg: Any) -> str:
    """What ``AutoTokenizer.from_pretrained`` reads: ``model.tokenizer`` or the model's own folder / Hub id.

    ``model.tokenizer`` may name another model config (``conf/model/<name>.yaml``, e.g.
    ``smollm2_135m``: that model's tokenizer, the embedded one converted once like its weights), a
    local folder holding tokenizer files, or a Hub id.
    """
    value = model_cfg.get("tokenizer")
    if value is None:
        return model_path(model_cfg)
    named = _MODEL_CONFIGS / f"{value}.yaml"
    if "/" not in str(value) and named.is_file():
        from omegaconf import OmegaConf

        other = OmegaConf.load(named)
        if other.get("tokenizer") is not None or other.get("source") == "config":
            raise ConfigError(f"model.tokenizer={value!r} names a model config without a tokenizer of its own.")
        return model_path(other)
    return str(value)


def load_tokenizer(model_cfg: Any):
    """Load the tokenizer (fast tokenizer where available).

    ``model.tokenizer`` (a model config name such as ``smollm2_135m``, a folder or a Hub id) replaces
    the source's own tokenizer.  With ``init: random`` a tokenizer with more tokens than the model's
    ``vocab_size`` is cut to fit (:func:`fit_tokenizer`), so no token id is ever out of range.
    """
    from transformers import AutoTokenizer

    where = tokenizer_location(model_cfg)
    kwargs = pretrained_kwargs(model_cfg) if model_cfg.get("tokenizer") is None else {}
    tokenizer = AutoTokenizer.from_pretrained(where, **kwargs)
    if is_random_init(model_cfg):
        tokenizer = fit_tokenizer(tokenizer, int(load_config(model_cfg).vocab_size))
    return tokenizer


def fit_tokenizer(tokenizer, vocab_size: int):
    """The tokenizer, cut to a model's ``vocab_size`` when it has more tokens; else unchanged.

    A random-weight model may have a smaller vocabulary than the tokenizer it borrows (the Llama-2-7B
    shape has 32,000 tokens, SmolLM2's tokenizer 49,152).  Token ids are not clamped or wrapped (that
    would merge unrelated tokens and break decoding); the tokenizer itself is cut, deterministically: a
    BPE vocabulary keeps its first ``vocab_size`` tokens and only the merges whose two parts and result
    are among them.  SmolLM2's byte-level BPE numbers its tokens in merge order after the 256 byte
    symbols, so the cut tokenizer is the same BPE stopped after its first ``vocab_size - 252`` merges:
    every text still encodes (into more, shorter tokens) and decodes back exactly.  What was done is
    kept in ``tokenizer.init_vocabulary`` (also logged).

    Raises:
        ConfigError: the tokenizer cannot be cut losslessly (not BPE, a special token or a byte symbol
            beyond ``vocab_size``).
    """
    import json
    import logging

    from tokenizers import Tokenizer, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    total = len(tokenizer)
    if total <= vocab_size:
        tokenizer.init_vocabulary = {"tokenizer_tokens": total, "model_vocab_size": vocab_size, "cut": False}
        return tokenizer
    fix = f"Fix: set model.config.vocab_size={total} (the tokenizer's size) or use a tokenizer with at most {vocab_size} tokens."
    backend = getattr(tokenizer, "backend_tokenizer", None)
    spec = json.loads(backend.to_str()) if backend is not None else {}
    model = spec.get("model") or {}
    if model.get("type") != "BPE":
        raise ConfigError(f"the tokenizer has {total} tokens, more than the model's vocab_size={vocab_size}, "
                          f"and is not a BPE tokenizer that can be cut. {fix}")
    original, vocab = model["vocab"], {piece: i for piece, i in model["vocab"].items() if i < vocab_size}
    prefix = model.get("continuing_subword_prefix") or ""
    merges = []
    for merge in model["merges"]:
        left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
        merged = left + (right[len(prefix):] if prefix and right.startswith(prefix) else right)
        if left in vocab and right in vocab and merged in vocab:
            merges.append(merge)
    model["vocab"], model["merges"] = vocab, merges
    special = {name: getattr(tokenizer, f"{name}_token") for name in ("bos", "eos", "unk", "pad")}
    dropped = [t for t in spec.get("added_tokens", []) if t["id"] >= vocab_size]
    if any(t["content"] in special.values() for t in dropped):
        raise ConfigError(f"a special token of the tokenizer lies beyond the model's vocab_size={vocab_size}. {fix}")
    spec["added_tokens"] = [t for t in spec.get("added_tokens", []) if t["id"] < vocab_size]
    if "ByteLevel" in json.dumps(spec.get("pre_tokenizer")):  # every byte is one of 256 symbols
        needed = pre_tokenizers.ByteLevel.alphabet()
    elif model.get("byte_fallback"):  # unknown characters become <0xNN> byte pieces
        needed = [f"<0x{b:02X}>" for b in range(256)]
    else:
        needed = None
    # The byte symbols the full tokenizer has must all survive (SmolLM2's lacks 21 of the 256, bytes
    # that UTF-8 text never holds; the cut tokenizer lacks exactly those too).
    if needed is None or any(symbol in original and symbol not in vocab for symbol in needed):
        raise ConfigError(f"cutting the tokenizer to vocab_size={vocab_size} would lose byte symbols: some text "
                          f"would not encode. {fix}")
    cut = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(json.dumps(spec)),
        **{f"{name}_token": value for name, value in special.items() if value is not None},
        model_max_length=tokenizer.model_max_length,
    )
    cut.init_vocabulary = {
        "tokenizer_tokens": total, "model_vocab_size": vocab_size, "cut": True, "tokens_kept": len(cut),
        "merges_kept": len(merges), "rule": "tokenizer cut to its first vocab_size tokens and the merges among them",
    }
    logging.getLogger(__name__).info(
        "model.init=random: tokenizer cut from %d to %d tokens (%d merges) to fit vocab_size=%d",
        total, len(cut), len(merges), vocab_size,
    )
    return cut
