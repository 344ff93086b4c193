"""Load stage: a causal LM and its tokenizer from a Hub id, a local folder or the embedded default.

Model configs (``conf/model/*.yaml``) have ``source: embedded`` (a registry asset converted once
from GGUF to a plain Hugging Face folder in the cache) or ``source: pretrained`` (``path`` is a Hub id
or a local folder, passed to ``from_pretrained`` as is), or ``source: config`` (no checkpoint: the
architecture is the ``config`` mapping of the YAML file, for ``init: random``).

``init: random`` (``model.init=random``; ``+model.init=random`` on configs without the key) builds the
architecture with seeded random weights instead of loading any: for timing and memory only, where
real weights cannot travel (an air-gapped GPU machine).  See :func:`random_model`.
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

    ``auto`` is bfloat16 on CUDA (float16 where bf16 is unsupported) and float32 elsewhere.  On CPUs
    with native bf16 (avx512_bf16), ``dtype=bfloat16`` works and the default job runs 1.6x faster, but
    it moved GPTQ held-out perplexity by 3.6 across-calibration-set SDs and mean zero-shot accuracy by
    2.9 SDs (``bench/bf16_cpu.py``, 2026-11-30, README "Performance"), so ``auto`` stays float32 on CPUs.

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
            f"Fix: use the model's end-of-text (document separator) token, e.g. '<|endoftext|>', '</s>' or '<eos>', "
            f"or null for its EOS token ({tokenizer.eos_token!r})."
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


def model_path(model_cfg: Any) -> str:
    """Return what ``from_pretrained`` should read: a Hub id or a local folder.

    Raises:
        ConfigError: unknown ``source`` or missing ``path``.
        calib_sweep.assets.AssetError: the embedded model cannot be fetched.
    """
    validate_model(model_cfg)  # unknown source or non-boolean flags
    if model_cfg.source == "config":
        raise ConfigError(
            f"model {model_cfg.get('name')!r} has source: config (an architecture without a checkpoint): it has no "
            "weights or tokenizer files to read. Fix: model.init=random and model.tokenizer=<model config name or folder>."
        )
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
    """Load only the model's ``config.json`` (no weights): used for validation before loading.

    With ``init: random`` the architecture is :func:`random_init_config` (``model.config`` fields,
    over the source's ``config.json`` unless ``source: config``).
    """
    from transformers import AutoConfig

    if is_random_init(model_cfg):
        return random_init_config(model_cfg)
    return AutoConfig.from_pretrained(model_path(model_cfg), **_pretrained_kwargs(model_cfg))


def load_tokenizer(model_cfg: Any):
    """Load the tokenizer (fast tokenizer where available).

    ``model.tokenizer`` (a model config name such as ``smollm2_135m``, a folder or a Hub id) replaces
    the source's own tokenizer.  With ``init: random`` a tokenizer with more tokens than the model's
    ``vocab_size`` is cut to fit (:func:`fit_tokenizer`), so no token id is ever out of range.
    """
    from transformers import AutoTokenizer

    where = tokenizer_location(model_cfg)
    kwargs = _pretrained_kwargs(model_cfg) if model_cfg.get("tokenizer") is None else {}
    tokenizer = AutoTokenizer.from_pretrained(where, **kwargs)
    if is_random_init(model_cfg):
        tokenizer = fit_tokenizer(tokenizer, int(load_config(model_cfg).vocab_size))
    return tokenizer


def validate_model(model_cfg: Any) -> None:
    """Checks of the ``model`` config that need no file, network or weights.

    Raises:
        ConfigError: an unknown ``source``, a flag (``prepend_bos``, ``trust_remote_code``) that is
            not a boolean (e.g. ``model.prepend_bos=maybe``), or a ``separator_token`` that is not a
            non-empty string or null.
    """
    if model_cfg.get("source") not in ("embedded", "pretrained", "config"):
        raise ConfigError(f"model.source={model_cfg.get('source')!r} is unknown. Fix: use 'embedded' or 'pretrained'.")
    _validate_init(model_cfg)
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
    if model_cfg.get("source") == "embedded" and model_cfg.get("path"):
        raise ConfigError(
            f"model.path={model_cfg.path!r} is set, but model {model_cfg.get('name')!r} is embedded (its weights come from "
            "a registry package) and would ignore it. Fix: model.source=pretrained model.path=<folder or org/name>, "
            "or drop model.path."
        )
    if model_cfg.get("source") == "pretrained":
        from calib_sweep.paths import check_model_path

        check_model_path(model_cfg.get("path"), revision=model_cfg.get("revision"))  # URL, missing folder, offline Hub id


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

    if is_random_init(model_cfg):
        return random_model(model_cfg, device, dtype)
    model = AutoModelForCausalLM.from_pretrained(model_path(model_cfg), dtype=dtype, **_pretrained_kwargs(model_cfg))
    model.to(device)
    model.eval()
    return model


# --- model.init=random: an architecture with seeded random weights (timing and memory only) -------

#: ``model.init`` values: weights from the checkpoint, or drawn at random.
INITS = ("pretrained", "random")

#: Config fields of the source's ``config.json`` that describe a checkpoint file rather than the architecture.
_CHECKPOINT_FIELDS = ("_name_or_path", "_model_name_or_path", "transformers_version", "dtype", "torch_dtype",
                      "quantization_config", "_commit_hash")


def is_random_init(model_cfg: Any) -> bool:
    """True when ``model.init`` is ``random`` (a config without the key loads its checkpoint)."""
    return model_cfg.get("init", "pretrained") == "random"


def _plain(value: Any) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _validate_init(model_cfg: Any) -> None:
    """Checks of ``init``, ``init_seed``, ``config`` and ``tokenizer`` (no file read)."""
    init = model_cfg.get("init", "pretrained")
    if init not in INITS:
        raise ConfigError(f"model.init={init!r} is unknown. Fix: model.init=pretrained or model.init=random.")
    fields = _plain(model_cfg.get("config"))
    if fields is not None and not isinstance(fields, dict):
        raise ConfigError(f"model.config={fields!r} must be a mapping of Hugging Face config fields or null.")
    tokenizer = model_cfg.get("tokenizer")
    if tokenizer is not None and (not isinstance(tokenizer, str) or not tokenizer):
        raise ConfigError(f"model.tokenizer={tokenizer!r} must be a model config name, a folder or a Hub id, or null.")
    if init != "random":
        if model_cfg.get("source") == "config":
            raise ConfigError(
                f"model {model_cfg.get('name')!r} is an architecture without weights (source: config). "
                "Fix: model.init=random (timing and memory only)."
            )
        if fields:
            raise ConfigError(
                "model.config (architecture fields) applies only to model.init=random: a checkpoint keeps its own. "
                "Fix: model.init=random, or drop model.config."
            )
        return
    seed = model_cfg.get("init_seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"model.init_seed={seed!r} must be an integer >= 0. Fix: e.g. model.init_seed=0.")
    if model_cfg.get("source") == "config":
        if not fields or not fields.get("model_type"):
            raise ConfigError(
                f"model {model_cfg.get('name')!r} (source: config) needs model.config with a model_type "
                "(e.g. llama) and the architecture's fields."
            )
        if tokenizer is None:
            raise ConfigError(
                f"model {model_cfg.get('name')!r} (source: config) has no tokenizer of its own. "
                "Fix: model.tokenizer=smollm2_135m (a model config name), or a folder with tokenizer files."
            )


def random_init_config(model_cfg: Any):
    """The architecture of a ``model.init=random`` model: a ``transformers`` config, no weights read.

    ``source: config``: built from the ``model.config`` mapping alone (it names ``model_type``).
    Otherwise the source's ``config.json`` (embedded or pretrained), with ``model.config`` fields
    over it.  A ``num_hidden_layers`` smaller than ``layer_types`` cuts that list to match (the first
    decoder layers of the architecture, e.g. for timing a few layers of a 7B shape).

    Raises:
        ConfigError: unknown ``model_type`` or a field the config class refuses.
    """
    from transformers import AutoConfig

    validate_model(model_cfg)
    fields = dict(_plain(model_cfg.get("config")) or {})
    base: dict[str, Any] = {}
    if model_cfg.source != "config":
        base = AutoConfig.from_pretrained(model_path(model_cfg), **_pretrained_kwargs(model_cfg)).to_dict()
    merged = {k: v for k, v in {**base, **fields}.items() if k not in _CHECKPOINT_FIELDS}
    layers, types = merged.get("num_hidden_layers"), merged.get("layer_types")
    if isinstance(layers, int) and isinstance(types, list) and len(types) > layers:
        merged["layer_types"] = types[:layers]
    model_type = merged.pop("model_type", None)
    try:
        return AutoConfig.for_model(model_type, **merged)
    except (ValueError, TypeError, KeyError) as exc:
        raise ConfigError(
            f"model.config of {model_cfg.get('name')!r} is not a valid {model_type!r} config: {str(exc).splitlines()[0]}"
        ) from None


def tokenizer_location(model_cfg: Any) -> str:
    """What ``AutoTokenizer.from_pretrained`` reads: ``model.tokenizer`` or the model's own folder / Hub id.

    ``model.tokenizer`` may name another model config (``conf/model/<name>.yaml``, e.g.
    ``smollm2_135m``: that model's tokenizer, the embedded one converted once like its weights), a
    local folder holding tokenizer files, or a Hub id.
    """
    value = model_cfg.get("tokenizer")
    if value is None:
        return model_path(model_cfg)
    named = Path(__file__).resolve().parent / "conf" / "model" / f"{value}.yaml"
    if "/" not in str(value) and named.is_file():
        from omegaconf import OmegaConf

        other = OmegaConf.load(named)
        if other.get("tokenizer") is not None or other.get("source") == "config":
            raise ConfigError(f"model.tokenizer={value!r} names a model config without a tokenizer of its own.")
        return model_path(other)
    return str(value)


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


def random_model(model_cfg: Any, device: torch.device, dtype: torch.dtype):
    """The architecture of :func:`random_init_config` with random weights, in eval mode on ``device``.

    The weights are the architecture's own initialisation in ``transformers`` (Llama: normal with
    ``initializer_range`` 0.02, norms 1), drawn on ``device`` directly (a 7B shape never passes
    through host memory) from a generator seeded with ``model.init_seed``; the global random state
    is left as it was.  The same seed, device type and dtype give the same weights (CPU and CUDA
    draw different numbers).  Timing and memory only: such a model predicts nothing.
    """
    from transformers import AutoModelForCausalLM

    config = random_init_config(model_cfg)
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(int(model_cfg.get("init_seed", 0)))
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    # llmcompressor's oneshot loads a processor from the model's _name_or_path (empty for a model made
    # from a config) even for tokenized data: point it at a folder like a checkpoint's, minus weights.
    model.config._name_or_path = str(random_init_folder(model_cfg))
    model.eval()
    return model


def random_init_folder(model_cfg: Any) -> Path:
    """A folder with the random-init model's ``config.json`` and its (cut) tokenizer, and no weights.

    It stands where a checkpoint folder would for code that reads one by the model's ``_name_or_path``
    (llmcompressor's ``oneshot`` loads its processor from there).  Written once per (architecture,
    tokenizer) under ``cache_dir()/models/random-init-*``, atomically (a temporary name, then a rename).
    """
    import hashlib
    import json

    config = random_init_config(model_cfg)
    ident = {"config": config.to_dict(), "tokenizer": tokenizer_location(model_cfg)}
    if Path(ident["tokenizer"]).is_dir():
        ident["files"] = sorted((f.name, f.stat().st_size, int(f.stat().st_mtime))
                                for f in Path(ident["tokenizer"]).iterdir() if f.is_file())
    key = hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]
    folder = assets.cache_dir() / "models" / f"random-init-{key}"
    if (folder / "config.json").is_file():
        return folder
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    config.save_pretrained(tmp)
    load_tokenizer(model_cfg).save_pretrained(tmp)
    try:
        os.replace(tmp, folder)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
        if not (folder / "config.json").is_file():
            raise
    return folder


def weights_record(model_cfg: Any) -> dict[str, Any]:
    """What ``results.json`` says about the weights: ``{"weights": "pretrained"}``, or for
    ``model.init=random`` ``{"weights": "random", "random_init": {seed, architecture, tokenizer,
    vocabulary rule, ...}}``.  Reads no file and never raises (it is written before validation)."""
    if not is_random_init(model_cfg):
        return {"weights": "pretrained"}
    try:
        fields = dict(_plain(model_cfg.get("config")) or {})
    except Exception:  # a malformed config is reported by validation
        fields = {}
    return {
        "weights": "random",
        "random_init": {
            "purpose": "timing and memory only: the weights are random, so its metrics measure nothing",
            "seed": model_cfg.get("init_seed", 0),
            "architecture": ("model.config (shipped in conf/model)" if model_cfg.get("source") == "config"
                             else f"config.json of the {model_cfg.get('source')} model, model.config fields over it"),
            "config_fields": fields,
            "tokenizer": model_cfg.get("tokenizer") or "the model's own",
            "vocabulary": "a tokenizer with more tokens than the model's vocab_size is cut to its first vocab_size "
                          "tokens (BPE: and the merges among them); token ids are never clamped",
            "same_weights_for": "the same seed, architecture, device type and dtype",
        },
    }


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
