"""Embedded models: a GGUF file from a registry package, converted once to a plain Hugging Face folder.

The conversion (:func:`embedded_folder`) dequantizes the GGUF weights with ``transformers``, rebuilds
a SentencePiece-BPE vocabulary whose merges ``transformers`` gets wrong
(:func:`_sentencepiece_bpe_tokenizer`) and sets the special tokens the GGUF metadata declares on the
tokenizer and the model configs (:func:`gguf_special_tokens`, :func:`align_special_tokens`).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch

from calib_sweep import assets

#: ``model_type`` of each embedded asset's converted ``config.json`` (known before the conversion, so
#: validation can use it without a file; tests/test_models_package.py checks it against the folders).
EMBEDDED_MODEL_TYPES = {"smollm2_135m_instruct_gguf": "llama", "gemma3_270m_gguf": "gemma3_text"}


def _sentencepiece_bpe_tokenizer(gguf_path: Path):
    """A fast tokenizer for a GGUF file whose vocabulary is SentencePiece BPE, or ``None`` for others.

    GGUF stores such a vocabulary (``tokenizer.ggml.model == "llama"``) as pieces with scores and no
    merge list.  transformers 5.17's GGUF converter rebuilds merges for it in the wrong order for
    gemma-3-270m ("The history" -> ``The``, ``▁h``, ``ist``, ``ory``; after saving, one piece per
    character), which makes the model useless (perplexity ~50,000).  SentencePiece BPE merges the
    adjacent pair whose *merged piece* has the highest score, so the merge list is: every split of
    every normal piece into two pieces that are both in the vocabulary, ordered by the merged
    piece's score (Kudo & Richardson 2018, SentencePiece; the rule transformers' own
    ``SentencePieceExtractor`` applies to ``.model`` files).  Unknown bytes fall back to the
    ``<0xNN>`` byte pieces; spaces are ``▁``; user-defined pieces (newline runs, ...) are matched
    whole; no prefix space is added (the file's
    ``add_space_prefix`` is checked); a BOS token is added when the file says so.

    Returns:
        A ``PreTrainedTokenizerFast`` or ``None`` when the file has merges or another tokenizer model.
    """
    from gguf import GGUFReader
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers, processors
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast

    reader = GGUFReader(str(gguf_path))
    fields = reader.fields

    def scalar(key: str, default=None):
        field = fields.get(key)
        if field is None:
            return default
        value = field.parts[field.data[0]]
        return bytes(value).decode("utf-8") if field.types[0].name == "STRING" else value.tolist()[0]

    def array(key: str) -> list:
        field = fields[key]
        return [field.parts[i] for i in field.data]

    if scalar("tokenizer.ggml.model") != "llama" or "tokenizer.ggml.merges" in fields or scalar("tokenizer.ggml.add_space_prefix", True):
        return None
    pieces = [bytes(p).decode("utf-8") for p in array("tokenizer.ggml.tokens")]
    scores = [float(p[0]) for p in array("tokenizer.ggml.scores")]
    types = [int(p[0]) for p in array("tokenizer.ggml.token_type")]
    vocab = {piece: index for index, piece in enumerate(pieces)}
    merges = []
    for piece, index in vocab.items():
        if types[index] != 1:  # only normal pieces are merge results (not control, byte or user pieces)
            continue
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in vocab and right in vocab:
                merges.append((-scores[index], vocab[left], vocab[right], left, right))
    merges.sort()
    special = {name: pieces[int(scalar(f"tokenizer.ggml.{name}_token_id"))]
               for name in ("bos", "eos", "unknown", "padding") if scalar(f"tokenizer.ggml.{name}_token_id") is not None}
    backend = Tokenizer(BPE(vocab=vocab, merges=[(m[3], m[4]) for m in merges], unk_token=special.get("unknown"),
                            byte_fallback=True, fuse_unk=True))
    backend.normalizer = normalizers.Replace(" ", "\u2581")
    backend.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
    # Control pieces (<bos>, <eos>, ...) are special tokens; user-defined pieces (newline, tab and
    # space runs, HTML tags) are matched whole before BPE, as SentencePiece does.
    backend.add_special_tokens([pieces[i] for i, kind in enumerate(types) if kind == 3])
    backend.add_tokens([AddedToken(pieces[i], special=False, normalized="\u2581" in pieces[i])
                        for i, kind in enumerate(types) if kind == 4])
    bos = special.get("bos")
    if bos is not None and scalar("tokenizer.ggml.add_bos_token", False):
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, vocab[bos])]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=bos, eos_token=special.get("eos"), unk_token=special.get("unknown"),
        pad_token=special.get("padding"),
    )


#: Bumped whenever the GGUF -> Hugging Face conversion changes, so old cache folders are not reused.
CONVERSION_VERSION = 2

#: GGUF metadata keys of the special tokens, by tokenizer attribute.
GGUF_SPECIAL = {"bos": "bos_token_id", "eos": "eos_token_id", "unk": "unknown_token_id", "pad": "padding_token_id"}


def gguf_special_tokens(gguf_path: str | os.PathLike) -> dict[str, int]:
    """The special-token ids a GGUF file declares: ``{"bos": id, "eos": id, "unk": id, "pad": id}``
    (keys absent when the file does not declare them), from ``tokenizer.ggml.<name>_token_id``."""
    from gguf import GGUFReader

    fields = GGUFReader(str(gguf_path)).fields
    found = {}
    for name, key in GGUF_SPECIAL.items():
        field = fields.get(f"tokenizer.ggml.{key}")
        if field is not None:
            found[name] = int(field.parts[field.data[0]].tolist()[0])
    return found


def align_special_tokens(tokenizer, model, special: dict[str, int]) -> None:
    """Make the tokenizer, the model config and the generation config agree with ``special``.

    transformers 5.17's GGUF conversion of SmolLM2 names ``<|im_start|>`` (id 1, the BOS) as the
    EOS token too and drops the pad token, while the GGUF file says eos 2 (``<|im_end|>``), pad 2;
    every later use of ``tokenizer.eos_token_id`` (document separators, generation) then used the
    BOS token.  The GGUF metadata is the ground truth: every special token of the file is set on
    all three objects here.

    Args:
        tokenizer: the converted tokenizer (changed in place).
        model: the converted model (``config`` and ``generation_config`` changed in place).
        special: ``{"bos"|"eos"|"unk"|"pad": token id}`` from :func:`gguf_special_tokens`.

    Raises:
        ValueError: an id lies outside the tokenizer's vocabulary.
    """
    for name, token_id in special.items():
        piece = tokenizer.convert_ids_to_tokens(int(token_id))
        if piece is None or token_id >= len(tokenizer):
            raise ValueError(f"GGUF {name}_token_id={token_id} is not in the tokenizer's vocabulary ({len(tokenizer)} tokens)")
        setattr(tokenizer, f"{name}_token", piece)
        for config in (model.config, getattr(model, "generation_config", None)):
            if config is not None and name != "unk":
                setattr(config, f"{name}_token_id", int(token_id))
    if "unk" in special and hasattr(model.config, "unk_token_id"):
        model.config.unk_token_id = int(special["unk"])



def embedded_folder(model_cfg: Any) -> Path:
    """Return the converted Hugging Face folder of an embedded GGUF model, converting it once.

    GGUF loading dequantizes every tensor (~20 s for SmolLM2-135M on 2 CPU cores); the plain
    safetensors folder written here loads in well under a second.  The folder is written under a
    temporary name and renamed when complete, so an interrupted conversion leaves nothing behind.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    asset = assets.ASSETS[model_cfg.asset]
    folder = assets.cache_dir() / "models" / f"{model_cfg.name}-{asset.sha256[:12]}-c{CONVERSION_VERSION}"
    if (folder / "config.json").is_file():
        return folder
    gguf_path = assets.fetch(model_cfg.asset)
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer = _sentencepiece_bpe_tokenizer(gguf_path) or AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    # The dequantized weights are plain floats now: drop the GGUF quantizer so the folder is an
    # ordinary checkpoint (and llmcompressor does not refuse it as "already quantized").
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    align_special_tokens(tokenizer, model, gguf_special_tokens(gguf_path))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    del model
    from calib_sweep.tracking import make_readable

    make_readable(tmp)
    if folder.exists():  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        os.replace(tmp, folder)
    # Conversions by older versions of this code (other suffix, or none) are never read again.
    stem = f"{model_cfg.name}-{asset.sha256[:12]}"
    for old in folder.parent.glob(f"{stem}*"):
        if old != folder and (old.name == stem or old.name.startswith(f"{stem}-c")) and ".tmp" not in old.name:
            shutil.rmtree(old, ignore_errors=True)
    return folder
