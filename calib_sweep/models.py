"""Load stage: a causal LM and its tokenizer from a Hub id, a local folder or the embedded default.

Model configs (``conf/model/*.yaml``) have ``source: embedded`` (a registry asset converted once
from GGUF to a plain Hugging Face folder in the cache) or ``source: pretrained`` (``path`` is a Hub id
or a local folder, passed to ``from_pretrained`` as is).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch

from calib_sweep import assets
from calib_sweep.errors import ConfigError

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_device(device: str) -> torch.device:
    """Map ``device`` (``auto``, ``cpu``, ``cuda``, ``cuda:1``, ``mps``) to a torch device.

    ``auto`` picks CUDA when available, else Apple MPS, else CPU.

    Raises:
        ConfigError: a CUDA/MPS device was asked for but is not available.
    """
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"device={device!r} is not a torch device. Fix: use auto, cpu, cuda or cuda:N.") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={device!r} but no CUDA device is visible. Fix: device=auto or device=cpu.")
    return dev


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """Map ``dtype`` (``auto``, ``float32``, ``float16``, ``bfloat16``) to a torch dtype.

    ``auto`` is bfloat16 on CUDA (float16 where bf16 is unsupported) and float32 elsewhere, since
    half-precision matmuls are slow or inexact on CPUs.

    Raises:
        ConfigError: unknown dtype name.
    """
    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if dtype not in _DTYPES:
        raise ConfigError(f"dtype={dtype!r} is not supported. Fix: use one of auto, {', '.join(_DTYPES)}.")
    return _DTYPES[dtype]


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
_GGUF_SPECIAL = {"bos": "bos_token_id", "eos": "eos_token_id", "unk": "unknown_token_id", "pad": "padding_token_id"}


def gguf_special_tokens(gguf_path: str | os.PathLike) -> dict[str, int]:
    """The special-token ids a GGUF file declares: ``{"bos": id, "eos": id, "unk": id, "pad": id}``
    (keys absent when the file does not declare them), from ``tokenizer.ggml.<name>_token_id``."""
    from gguf import GGUFReader

    fields = GGUFReader(str(gguf_path)).fields
    found = {}
    for name, key in _GGUF_SPECIAL.items():
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


def special_token_ids(tokenizer) -> dict[str, int | None]:
    """``{"bos", "eos", "unk", "pad": id or None}`` of a tokenizer (for checks and manifests)."""
    return {name: getattr(tokenizer, f"{name}_token_id") for name in _GGUF_SPECIAL}


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
            f"Fix: use its end-of-text token, e.g. model.separator_token={tokenizer.eos_token!r}, or null for the EOS token."
        )
    return int(token_id)


def _embedded_folder(model_cfg: Any) -> Path:
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


def model_path(model_cfg: Any) -> str:
    """Return what ``from_pretrained`` should read: a Hub id or a local folder.

    Raises:
        ConfigError: unknown ``source`` or missing ``path``.
        calib_sweep.assets.AssetError: the embedded model cannot be fetched.
    """
    validate_model(model_cfg)  # unknown source or non-boolean flags
    if model_cfg.source == "embedded":
        if model_cfg.get("asset") not in assets.ASSETS:
            raise ConfigError(
                f"model.asset={model_cfg.get('asset')!r} is not a known registry asset. "
                f"Fix: use one of {sorted(assets.ASSETS)}."
            )
        return str(_embedded_folder(model_cfg))
    if not model_cfg.get("path"):  # pretrained
        raise ConfigError("model.path is empty. Fix: set model.path to a Hub id (org/name) or a local folder.")
    return str(model_cfg.path)


def _pretrained_kwargs(model_cfg: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"trust_remote_code": bool(model_cfg.get("trust_remote_code", False))}
    if model_cfg.source == "pretrained" and model_cfg.get("revision"):
        kwargs["revision"] = model_cfg.revision
    return kwargs


def load_config(model_cfg: Any):
    """Load only the model's ``config.json`` (no weights): used for validation before loading."""
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(model_path(model_cfg), **_pretrained_kwargs(model_cfg))


def load_tokenizer(model_cfg: Any):
    """Load the tokenizer (fast tokenizer where available)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_path(model_cfg), **_pretrained_kwargs(model_cfg))


def validate_model(model_cfg: Any) -> None:
    """Checks of the ``model`` config that need no file, network or weights.

    Raises:
        ConfigError: an unknown ``source``, a flag (``prepend_bos``, ``trust_remote_code``) that is
            not a boolean (e.g. ``model.prepend_bos=maybe``), or a ``separator_token`` that is not a
            non-empty string or null.
    """
    if model_cfg.get("source") not in ("embedded", "pretrained"):
        raise ConfigError(f"model.source={model_cfg.get('source')!r} is unknown. Fix: use 'embedded' or 'pretrained'.")
    for flag in ("prepend_bos", "trust_remote_code"):
        value = model_cfg.get(flag, False)
        if not isinstance(value, bool):
            raise ConfigError(f"model.{flag}={value!r} must be true or false. Fix: model.{flag}=true or model.{flag}=false.")
    separator = model_cfg.get("separator_token")
    if separator is not None and (not isinstance(separator, str) or not separator):
        raise ConfigError(
            f"model.separator_token={separator!r} must be a token string (e.g. '<|endoftext|>') or null (the EOS token). "
            "Fix: model.separator_token=null."
        )
    if model_cfg.get("source") == "pretrained":
        from calib_sweep.paths import check_model_path

        check_model_path(model_cfg.get("path"))  # a URL is named as given, with how to use a local copy


def model_identity(model_cfg: Any) -> dict[str, Any]:
    """What identifies a model's weights, for cache keys: the model config, plus the asset checksum
    and conversion version (embedded), or each weight file's name, size and modification time (a
    local folder; a Hub id is named with its revision by the config itself)."""
    from omegaconf import OmegaConf

    ident: dict[str, Any] = {"config": OmegaConf.to_container(model_cfg, resolve=True) if OmegaConf.is_config(model_cfg)
                             else dict(model_cfg)}
    if model_cfg.get("source") == "embedded" and model_cfg.get("asset") in assets.ASSETS:
        ident["asset_sha256"] = assets.ASSETS[model_cfg.asset].sha256
        ident["conversion"] = CONVERSION_VERSION
    elif model_cfg.get("path") and Path(str(model_cfg.path)).is_dir():
        ident["files"] = sorted(
            (p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in Path(str(model_cfg.path)).iterdir() if p.is_file()
        )
    return ident


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


def load_model(model_cfg: Any, device: torch.device, dtype: torch.dtype):
    """Load the causal LM's weights in ``dtype`` onto ``device``, in eval mode."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_path(model_cfg), dtype=dtype, **_pretrained_kwargs(model_cfg))
    model.to(device)
    model.eval()
    return model


def linear_shapes(config) -> dict[str, tuple[int, int]]:
    """Shapes ``(out_features, in_features)`` of every ``nn.Linear`` of a model, without weights.

    The model is built on the ``meta`` device from its config, so this costs no memory and works
    for 70B configs on a laptop.  Used to validate group sizes and N:M patterns before loading.
    """
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return {
        name: (module.out_features, module.in_features)
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear)
    }
