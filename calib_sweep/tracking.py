"""Record stage: the job's ``results.json`` (written once, atomically) and its Weights & Biases run.

W&B mode (``logger.mode``): ``auto`` (default) is ``online`` only when an API key is configured
(``WANDB_API_KEY`` or a ``~/.netrc`` entry for the W&B host) *and* the W&B host answers a TCP
connection within ``logger.probe_timeout_s`` seconds; otherwise ``offline``.  An explicit
``WANDB_MODE`` environment variable wins over both.  Offline runs are written under the job's
folder (``wandb/offline-run-*``) and can be uploaded later with ``wandb sync``.  Nothing here waits
on the network beyond the probe: W&B failures are logged and never fail the job, and
``results.json`` is complete whatever W&B does.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import netrc
import os
import socket
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

log = logging.getLogger(__name__)

RESULTS_FILE = "results.json"

#: Libraries whose versions shape the numbers (recorded in results.json and in baseline keys).
LIBRARIES = (
    "torch", "transformers", "tokenizers", "llmcompressor", "compressed-tensors", "datasets", "hydra-core",
    "omegaconf", "wandb", "lm-eval", "accelerate", "numpy",
)


def versions() -> dict[str, str | None]:
    """Versions of Python, calib_sweep and :data:`LIBRARIES` (None when not installed)."""
    import importlib.metadata
    import platform

    from calib_sweep import __version__

    found: dict[str, str | None] = {"python": platform.python_version(), "calib_sweep": __version__}
    for name in LIBRARIES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_results(folder: str | os.PathLike, record: dict[str, Any]) -> Path:
    """Write ``record`` to ``folder/results.json`` atomically (temporary file, then rename).

    A reader never sees a half-written file: either the old file, or the complete new one.

    Returns:
        The path written.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / RESULTS_FILE
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".results-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(_json_safe(record), handle, indent=2, sort_keys=False)
            handle.write("\n")
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


#: Config keys that do not change a job's numbers and so are left out of its key.
_NOT_IN_KEY = ("logger", "resume")


def config_key(resolved: dict[str, Any]) -> str:
    """SHA-256 (hex) of a job's resolved config without ``logger`` and ``resume``.

    Two jobs with the same key compute the same numbers (on the same hardware): the key drives
    resume (skip finished jobs) and the W&B run id (no duplicate runs when a sweep is rerun).
    """
    payload = {k: v for k, v in resolved.items() if k not in _NOT_IN_KEY}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def find_finished(key: str, index_dir: str | os.PathLike) -> Path | None:
    """The ``results.json`` of an earlier successful job with this key, if it still exists."""
    entry = Path(index_dir) / f"{key}.json"
    try:
        target = Path(json.loads(entry.read_text())["results"])
        record = json.loads(target.read_text())
    except (OSError, ValueError, KeyError):
        return None
    return target if record.get("status") == "ok" and record.get("config_key") == key else None


def register_finished(key: str, results: str | os.PathLike, index_dir: str | os.PathLike) -> None:
    """Record (atomically) that ``results`` holds the finished job with this key."""
    index_dir = Path(index_dir)
    index_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=index_dir, prefix=".entry-")
    with os.fdopen(fd, "w") as handle:
        json.dump({"results": str(Path(results).resolve())}, handle)
    os.replace(tmp, index_dir / f"{key}.json")


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"method": {"name": "gptq"}}`` -> ``{"method.name": "gptq"}`` (for dashboard filters)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _has_api_key(host: str) -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def _reachable(host: str, port: int, timeout_s: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def resolve_mode(logger_cfg: Any) -> str:
    """Decide the W&B mode: ``online``, ``offline`` or ``disabled`` (see the module docstring)."""
    env = os.environ.get("WANDB_MODE")
    if env:
        return "offline" if env == "dryrun" else env
    mode = str(logger_cfg.get("mode", "auto"))
    if mode != "auto":
        return mode
    url = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    host, port = url.hostname or "api.wandb.ai", url.port or (443 if url.scheme == "https" else 80)
    if not _has_api_key(host):
        return "offline"
    return "online" if _reachable(host, port, float(logger_cfg.get("probe_timeout_s", 3))) else "offline"


class WandbRun:
    """A W&B run that never fails the job: every call is guarded and logged on error."""

    def __init__(
        self,
        logger_cfg: Any,
        config: dict[str, Any],
        folder: str | os.PathLike,
        name: str,
        group: str | None = None,
        tags: list[str] | None = None,
        run_id: str | None = None,
    ):
        """Start the run (or nothing, when disabled).

        Args:
            logger_cfg: the ``logger`` config group.
            config: the resolved job config; logged flattened (``method.name`` ...).
            folder: the job folder; offline runs are written under ``folder/wandb``.
            name: display name.
            group: W&B group (one per sweep); ``logger.group`` wins when set.
            tags: extra tags (method, model, source, seed), added to ``logger.tags``.
            run_id: stable id (from :func:`config_key`), so a rerun resumes instead of duplicating.
        """
        self.run = None
        self.mode = "disabled"
        if logger_cfg is None or not logger_cfg.get("enabled", True):
            return
        self.mode = resolve_mode(logger_cfg)
        if self.mode == "disabled":
            return
        try:
            import wandb

            self.run = wandb.init(
                project=logger_cfg.get("project"),
                entity=logger_cfg.get("entity"),
                group=logger_cfg.get("group") or group,
                tags=list(logger_cfg.get("tags") or []) + list(tags or []),
                name=name,
                id=run_id,
                resume="allow" if run_id else None,
                config=flatten(config),
                dir=str(folder),
                mode=self.mode,
                reinit="finish_previous",
                settings=wandb.Settings(init_timeout=float(logger_cfg.get("init_timeout_s", 60)), silent=True),
            )
        except Exception as exc:  # W&B trouble must not cost the job its results
            log.warning("W&B init failed (%s); results.json is still written", exc)
            self.run = None

    @property
    def info(self) -> dict[str, Any]:
        """Mode, id and local folder of the run, for ``results.json``."""
        if self.run is None:
            return {"mode": self.mode, "id": None}
        return {"mode": self.mode, "id": self.run.id, "dir": getattr(self.run, "dir", None), "url": self.run.url}

    def log(self, metrics: dict[str, Any]) -> None:
        """Log scalar metrics and set them as the run summary."""
        if self.run is None:
            return
        try:
            self.run.log(metrics)
            self.run.summary.update(metrics)
        except Exception as exc:
            log.warning("W&B log failed: %s", exc)

    def log_artifact(self, path: str | os.PathLike, name: str, kind: str) -> None:
        """Attach a file (e.g. the calibration manifest) to the run as an artifact."""
        if self.run is None:
            return
        try:
            import wandb

            artifact = wandb.Artifact(name=name, type=kind)
            artifact.add_file(str(path))
            self.run.log_artifact(artifact)
        except Exception as exc:
            log.warning("W&B artifact failed: %s", exc)

    def finish(self, exit_code: int = 0) -> None:
        """Close the run (exit code 1 marks it failed in the dashboard)."""
        if self.run is None:
            return
        try:
            self.run.finish(exit_code=exit_code)
        except Exception as exc:
            log.warning("W&B finish failed: %s", exc)
        self.run = None
