"""Record stage: the job's ``results.json`` (written once, atomically) and its Weights & Biases run.

W&B mode (``logger.mode``): ``auto`` (default) is ``online`` only when an API key is configured
(``WANDB_API_KEY`` or a ``~/.netrc`` entry for the W&B host) *and* the W&B host answers a TCP
connection within ``logger.probe_timeout_s`` seconds; otherwise ``offline``.  An explicit
``WANDB_MODE`` environment variable wins over both.  Offline runs are written under the job's
folder (``wandb/offline-run-*``) and can be uploaded later with ``wandb sync``.  Tags longer than 64
characters and group / run names longer than 128 (W&B's limits) are shortened by :func:`fit`; a
failed ``wandb.init`` is recorded as ``wandb.error`` in ``results.json`` and counted as
``tracking_failed`` in the sweep summary.  Nothing here waits
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
import shutil
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


def _file_mode() -> int:
    """``0o666`` minus the process umask: the mode ``open()`` gives new files (``mkstemp`` gives 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def make_readable(path: str | os.PathLike) -> None:
    """Give every file under ``path`` (or ``path`` itself) the mode of an ordinary new file (0644
    under umask 022): libraries that write through ``mkstemp`` (safetensors, tokenizers) leave 0600."""
    path = Path(path)
    for item in [path] if path.is_file() else path.rglob("*"):
        if item.is_file() and not item.is_symlink():
            os.chmod(item, _file_mode())


def write_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (temporary file in the same folder, then rename), with
    the permissions of an ordinary new file (0644 under the usual umask 022).

    A reader never sees a half-written file: either the old file, or the complete new one.

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | os.PathLike, record: Any, indent: int = 2) -> Path:
    """Write ``record`` as JSON (non-finite floats as strings) with :func:`write_atomic`."""
    return write_atomic(path, json.dumps(_json_safe(record), indent=indent, sort_keys=False) + "\n")


def write_results(folder: str | os.PathLike, record: dict[str, Any]) -> Path:
    """Write ``record`` to ``folder/results.json`` atomically, mode 0644 (see :func:`write_atomic`).

    Returns:
        The path written.
    """
    return write_json(Path(folder) / RESULTS_FILE, record)


#: Config keys that do not change a job's numbers and so are left out of its key.
_NOT_IN_KEY = ("logger", "resume")


DEFAULT_SELECTION = {"name": "random", "pool_factor": 1}
"""The ``selection`` config of the default random draw; configs written before the group existed mean it."""


def config_key(resolved: dict[str, Any], dtype: str | None = None) -> str:
    """SHA-256 (hex) of a job's resolved config without ``logger`` and ``resume``, plus the torch
    dtype ``dtype=auto`` resolved to (``dtype``, e.g. ``"torch.float32"``), when given.

    Two jobs with the same key compute the same numbers (on the same hardware): the key drives
    resume (skip finished jobs) and the W&B run id (no duplicate runs when a sweep is rerun).  The
    resolved dtype is part of it, so a bf16 result on a GPU never stands in for an fp32 one on a CPU.
    The default ``selection`` (random) is left out, so jobs keep the keys they had before that group;
    so is ``eval.layer_diagnostics: false`` (a job without diagnostics has the key it had before the
    switch existed; the diagnostics only add a record, they never change a metric), and
    ``dataset.format: text`` / ``dataset.chat_template: null`` (the defaults: keys as before those fields),
    and ``eval.zeroshot.scorer`` (``fast`` and ``hflm`` give the same loglikelihoods within 1e-4 nats and the
    same accuracy, tests/test_scorer.py; ``results.json`` records which one ran).
    GPTQ's ``method.static_groups: true`` on the llmcompressor backend is left out too: it is what every GPTQ
    config before the option ran, so those jobs keep their keys; ``false`` (the default) is another algorithm
    and another key.
    """
    payload = {k: v for k, v in resolved.items() if k not in _NOT_IN_KEY}
    if payload.get("selection") == DEFAULT_SELECTION:
        del payload["selection"]  # the default draw: keys (resume, W&B ids) as before the selection group existed
    evaluation = payload.get("eval")
    if isinstance(evaluation, dict):
        evaluation = {k: v for k, v in evaluation.items() if not (k == "layer_diagnostics" and v is False)}
        if isinstance(evaluation.get("zeroshot"), dict):  # fast and hflm: same loglikelihoods (1e-4 nats), one job
            evaluation["zeroshot"] = {k: v for k, v in evaluation["zeroshot"].items() if k != "scorer"}
        payload["eval"] = evaluation
    dataset = payload.get("dataset")
    if isinstance(dataset, dict):  # plain text and no template override: keys as before dataset.format existed
        payload["dataset"] = {k: v for k, v in dataset.items() if (k, v) not in (("format", "text"), ("chat_template", None))}
    method = payload.get("method")
    if (isinstance(method, dict) and method.get("name") == "gptq" and method.get("static_groups") is True
            and method.get("backend", "llmcompressor") == "llmcompressor"):  # as before static_groups existed
        payload["method"] = {k: v for k, v in method.items() if k != "static_groups"}
    if dtype is not None:
        payload["_resolved_dtype"] = dtype
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


def register_finished(
    key: str, results: str | os.PathLike, index_dir: str | os.PathLike, replayed: dict[str, Any] | None = None
) -> None:
    """Record (atomically) that ``results`` holds the finished job with this key (and, after
    :func:`replay_run`, the W&B run made for it, so it is made once)."""
    entry: dict[str, Any] = {"results": str(Path(results).resolve())}
    if replayed:
        entry["replayed"] = replayed
    write_json(Path(index_dir) / f"{key}.json", entry)


#: Files of a finished job copied into a records archive (``resume.archive_dir``): the record and, where
#: zero-shot ran, its per-item records (:mod:`calib_sweep.evaluation.items`).
ARCHIVED_FILES = (RESULTS_FILE, "items.npz")


def archive_finished(key: str, results: str | os.PathLike, archive_dir: str | os.PathLike) -> Path:
    """Copy a finished job's ``results.json`` (and ``items.npz`` beside it, if any) into
    ``archive_dir/<key[:16]>/``, each file written atomically, and return that folder.

    A records archive is a folder meant to be committed (e.g. ``docs/replication_v2/records``): the
    sweep's own folders and ``multirun/.index`` live only on the machine that ran it, so a long grid run
    over several sessions or machines resumes from the archive (:func:`find_archived`), and the report
    reads it like a sweep folder.  About 10-70 KB per job (per-layer diagnostics are most of it).

    Raises:
        OSError: the folder cannot be written.
    """
    source = Path(results).parent
    target = Path(archive_dir) / key[:16]
    target.mkdir(parents=True, exist_ok=True)
    for name in ARCHIVED_FILES:
        if not (source / name).is_file():
            continue
        fd, tmp = tempfile.mkstemp(dir=target, prefix=f".{name}-")
        os.close(fd)
        try:
            shutil.copyfile(source / name, tmp)
            os.chmod(tmp, _file_mode())
            os.replace(tmp, target / name)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return target


def find_archived(key: str, archive_dir: str | os.PathLike | None) -> Path | None:
    """The archived ``results.json`` of a successful job with this key (see :func:`archive_finished`),
    or None (no archive, no such job, or its record is not ``ok`` with this key)."""
    if not archive_dir or not isinstance(archive_dir, (str, os.PathLike)):  # a bad value: validate names it
        return None
    target = Path(archive_dir) / key[:16] / RESULTS_FILE
    try:
        record = json.loads(target.read_text())
    except (OSError, ValueError):
        return None
    return target.resolve() if record.get("status") == "ok" and record.get("config_key") == key else None


def index_entry(key: str, index_dir: str | os.PathLike) -> dict[str, Any]:
    """The resume index entry of a key (``{}`` when there is none or it is unreadable)."""
    try:
        return json.loads((Path(index_dir) / f"{key}.json").read_text())
    except (OSError, ValueError):
        return {}


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


#: W&B's limits: a tag is 1-64 characters; a group or display name at most 128 (the server refuses longer).
TAG_LIMIT = 64
NAME_LIMIT = 128


def fit(value: str, limit: int) -> str:
    """``value`` when it has at most ``limit`` characters, else a readable prefix, ``-`` and the first
    8 hex digits of its SHA-256, exactly ``limit`` characters long.

    Deterministic (the same value always gives the same text) and distinct values stay distinct (up to
    a 32-bit hash collision).  The full value stays in the run's config (``dataset.name``, ...).

    Raises:
        ValueError: ``limit`` < 10 (no room for a prefix and the hash).
    """
    value = str(value)
    if limit < 10:
        raise ValueError(f"limit={limit} leaves no room for a prefix and an 8-digit hash")
    if len(value) <= limit:
        return value
    return f"{value[:limit - 9]}-{hashlib.sha256(value.encode()).hexdigest()[:8]}"


def _fit_optional(value: Any, limit: int) -> str | None:
    return None if value is None else fit(str(value), limit)


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
            name: display name (at most :data:`NAME_LIMIT` characters, else shortened by :func:`fit`).
            group: W&B group (one per sweep); ``logger.group`` wins when set (shortened like ``name``).
            tags: extra tags (method, model, source, seed), added to ``logger.tags``; each one
                longer than :data:`TAG_LIMIT` characters is shortened by :func:`fit`.
            run_id: stable id (from :func:`config_key`), so a rerun resumes instead of duplicating.
        """
        self.run = None
        self.mode = "disabled"
        self.error: str | None = None
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
                group=_fit_optional(logger_cfg.get("group") or group, NAME_LIMIT),
                tags=[fit(tag, TAG_LIMIT) for tag in list(logger_cfg.get("tags") or []) + list(tags or [])],
                name=_fit_optional(name, NAME_LIMIT),
                id=run_id,
                resume="allow" if run_id else None,
                config=flatten(config),
                dir=str(folder),
                mode=self.mode,
                reinit="finish_previous",
                settings=wandb.Settings(init_timeout=float(logger_cfg.get("init_timeout_s", 60)), silent=True),
            )
        except Exception as exc:  # W&B trouble must not cost the job its results
            self.error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")
            log.warning("W&B init failed (%s); results.json is still written", self.error)
            self.run = None

    @property
    def info(self) -> dict[str, Any]:
        """Mode, id and local folder of the run, for ``results.json`` (``error``: the one-line reason
        ``wandb.init`` failed, counted as ``tracking_failed`` in the sweep summary)."""
        if self.run is None:
            return {"mode": self.mode, "id": None, **({"error": self.error} if self.error else {})}
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

            artifact = wandb.Artifact(name=fit(name, NAME_LIMIT), type=kind)
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


def replay_run(
    logger_cfg: Any,
    results: str | os.PathLike,
    folder: str | os.PathLike,
    name: str,
    group: str | None,
    tags: list[str],
    run_id: str,
    done_before: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """Make the W&B run a finished job never got, from its ``results.json``.

    A job first run with ``logger=none`` and later skipped by resume (same config key) under a
    W&B logger would otherwise never appear on the dashboard.  The run gets the job's run id (from
    its config key), its recorded config and metrics, its timings, the tag ``replayed`` and
    ``replayed_from`` (the results path) in its summary.

    Args:
        logger_cfg: the current ``logger`` config group.
        results: the earlier job's ``results.json``.
        folder: the skipping job's folder (offline runs are written under ``folder/wandb``).
        name, group, tags, run_id: as for :class:`WandbRun`.
        done_before: the info of an earlier replay (from the resume index); a replay in the same
            mode is not made twice.

    Returns:
        The new run's info plus ``replayed: True``; its info with ``error`` (and ``id: None``,
        ``replayed: False``) when ``wandb.init`` failed; ``None`` when the earlier job already has a
        W&B run (online or offline), was replayed before in this mode, or no logger is on now.
    """
    if logger_cfg is None or not logger_cfg.get("enabled", True) or resolve_mode(logger_cfg) == "disabled":
        return None
    if done_before is not None and done_before.get("mode") == resolve_mode(logger_cfg):
        return None
    record = json.loads(Path(results).read_text())
    if (record.get("wandb") or {}).get("id"):
        return None
    run = WandbRun(logger_cfg, record.get("config") or {}, folder, name=name, group=group,
                   tags=[*tags, "replayed"], run_id=run_id)
    if run.run is None:
        return {**run.info, "replayed": False} if run.error else None
    metrics = {k: v for k, v in (record.get("metrics") or {}).items() if isinstance(v, (int, float))}
    run.log({**metrics, **{f"time/{k}": v for k, v in (record.get("timings") or {}).items()}})
    try:
        run.run.summary["replayed_from"] = str(results)
    except Exception as exc:
        log.warning("W&B summary failed: %s", exc)
    info = {**run.info, "replayed": True}
    run.finish()
    log.info("made W&B run %s from the earlier results %s (it had none)", run_id, results)
    return info

