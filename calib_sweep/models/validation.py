"""Checks of the ``model`` group, the device and the dtype that need no file, no network and no weights.

:func:`validate_model` runs at the validate stage of every job; :func:`resolve_device` and
:func:`resolve_dtype` turn ``device`` / ``dtype`` into torch objects; :func:`check_dtype` refuses a
dtype a model family cannot run in (Gemma-3 in float16), before any weight is read.
"""

from __future__ import annotations

from typing import Any

import torch

from calib_sweep.errors import ConfigError
from calib_sweep.models.gguf import EMBEDDED_MODEL_TYPES

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

#: ``model.init`` values: weights from the checkpoint, or drawn at random.
INITS = ("pretrained", "random")

#: ``model_type`` values (``config.json``) whose activations overflow float16 (max 65,504): Gemma-3's
#: residual stream grows past it in its later layers, so a float16 forward pass gives inf/NaN logits
#: (huggingface/transformers#36822; measured here: gemma-3-270m, ``kl_from_dense: nan``).
FLOAT16_OVERFLOWS = ("gemma3", "gemma3_text")


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


def declared_model_type(model_cfg: Any) -> str | None:
    """The ``model_type`` a model config states without any file: ``model.config.model_type``
    (``init: random``), or that of an embedded asset (:data:`calib_sweep.models.gguf.EMBEDDED_MODEL_TYPES`);
    ``None`` for a Hub id or a local folder (their ``config.json`` says, at load)."""
    try:
        fields = plain(model_cfg.get("config"))
    except Exception:  # a malformed mapping is reported by validate_model
        fields = None
    if isinstance(fields, dict) and fields.get("model_type"):
        return str(fields["model_type"])
    if model_cfg.get("source") == "embedded":
        return EMBEDDED_MODEL_TYPES.get(model_cfg.get("asset"))
    return None


def check_dtype(model_cfg: Any, dtype: torch.dtype, config: Any = None) -> None:
    """Refuse a dtype the model family cannot run in, before its weights load.

    Args:
        model_cfg: the ``model`` group.
        dtype: the resolved torch dtype (:func:`resolve_dtype`; ``dtype=auto`` may be float16 on a GPU
            without bfloat16).
        config: the model's ``transformers`` config when already read (its ``model_type`` is used);
            else the type the model config declares (:func:`declared_model_type`).

    Raises:
        ConfigError: float16 on a model type of :data:`FLOAT16_OVERFLOWS` (Gemma-3).
    """
    model_type = getattr(config, "model_type", None) if config is not None else declared_model_type(model_cfg)
    if dtype == torch.float16 and model_type in FLOAT16_OVERFLOWS:
        raise ConfigError(
            f"model {model_cfg.get('name')!r} ({model_type}) overflows in float16 (inf/NaN logits, "
            "huggingface/transformers#36822), and the job's dtype resolves to float16. Fix: dtype=bfloat16 or dtype=float32."
        )


def is_random_init(model_cfg: Any) -> bool:
    """True when ``model.init`` is ``random`` (a config without the key loads its checkpoint)."""
    return model_cfg.get("init", "pretrained") == "random"


def plain(value: Any) -> Any:
    """``value`` as plain Python containers (an OmegaConf node resolved), else unchanged."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _validate_init(model_cfg: Any) -> None:
    """Checks of ``init``, ``init_seed``, ``config`` and ``tokenizer`` (no file read)."""
    init = model_cfg.get("init", "pretrained")
    if init not in INITS:
        raise ConfigError(f"model.init={init!r} is unknown. Fix: model.init=pretrained or model.init=random.")
    fields = plain(model_cfg.get("config"))
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
