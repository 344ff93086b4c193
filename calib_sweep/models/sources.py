"""Where a model's files come from: the embedded folder, a Hub id or a local folder.

Model configs (``conf/model/*.yaml``) have ``source: embedded`` (a registry asset converted once
from GGUF to a plain Hugging Face folder in the cache, :mod:`calib_sweep.models.gguf`),
``source: pretrained`` (``path`` is a Hub id or a local folder, passed to ``from_pretrained`` as is),
or ``source: config`` (no checkpoint: the architecture is the ``config`` mapping of the YAML file,
for ``init: random``; :mod:`calib_sweep.models.architecture`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from calib_sweep import assets
from calib_sweep.errors import ConfigError
from calib_sweep.models.gguf import CONVERSION_VERSION, embedded_folder
from calib_sweep.models.validation import validate_model


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
        return str(embedded_folder(model_cfg))
    if not model_cfg.get("path"):  # pretrained
        raise ConfigError("model.path is empty. Fix: set model.path to a Hub id (org/name) or a local folder.")
    return str(model_cfg.path)


def pretrained_kwargs(model_cfg: Any) -> dict[str, Any]:
    """Keyword arguments of every ``from_pretrained`` call: ``trust_remote_code``, and ``revision``
    for a pretrained (Hub) source that names one."""
    kwargs: dict[str, Any] = {"trust_remote_code": bool(model_cfg.get("trust_remote_code", False))}
    if model_cfg.source == "pretrained" and model_cfg.get("revision"):
        kwargs["revision"] = model_cfg.revision
    return kwargs


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
