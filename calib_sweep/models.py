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


def _embedded_folder(model_cfg: Any) -> Path:
    """Return the converted Hugging Face folder of an embedded GGUF model, converting it once.

    GGUF loading dequantizes every tensor (~20 s for SmolLM2-135M on 2 CPU cores); the plain
    safetensors folder written here loads in well under a second.  The folder is written under a
    temporary name and renamed when complete, so an interrupted conversion leaves nothing behind.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    asset = assets.ASSETS[model_cfg.asset]
    folder = assets.cache_dir() / "models" / f"{model_cfg.name}-{asset.sha256[:12]}"
    if (folder / "config.json").is_file():
        return folder
    gguf_path = assets.fetch(model_cfg.asset)
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    # The dequantized weights are plain floats now: drop the GGUF quantizer so the folder is an
    # ordinary checkpoint (and llmcompressor does not refuse it as "already quantized").
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    del model
    if folder.exists():  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        os.replace(tmp, folder)
    return folder


def model_path(model_cfg: Any) -> str:
    """Return what ``from_pretrained`` should read: a Hub id or a local folder.

    Raises:
        ConfigError: unknown ``source`` or missing ``path``.
        calib_sweep.assets.AssetError: the embedded model cannot be fetched.
    """
    if model_cfg.source == "embedded":
        if model_cfg.get("asset") not in assets.ASSETS:
            raise ConfigError(
                f"model.asset={model_cfg.get('asset')!r} is not a known registry asset. "
                f"Fix: use one of {sorted(assets.ASSETS)}."
            )
        return str(_embedded_folder(model_cfg))
    if model_cfg.source == "pretrained":
        if not model_cfg.get("path"):
            raise ConfigError("model.path is empty. Fix: set model.path to a Hub id (org/name) or a local folder.")
        return str(model_cfg.path)
    raise ConfigError(f"model.source={model_cfg.source!r} is unknown. Fix: use 'embedded' or 'pretrained'.")


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
