"""The dense (uncompressed) model's evaluation, computed once per (model, eval config) and reused.

Every job of a sweep compares its compressed model with the same dense model under the same
evaluation.  :func:`dense_baseline` caches that evaluation in
``calib_sweep.assets.cache_dir()/baselines/<key>.json``, where ``key`` (:func:`baseline_key`)
hashes everything that shapes the dense figures: the model config, the whole ``eval`` config, the
resolved dtype and device type, the held-out token streams (or, without them, the configs of the
evaluation texts), the zero-shot task data (asset checksums, converter version, local files) and
the versions of the libraries that compute the numbers.  A file lock (``fcntl.flock`` on
``<key>.lock``) makes parallel jobs of one sweep compute it only once; the JSON file is written to
a temporary name and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from calib_sweep import assets

from calib_sweep.tracking import versions

log = logging.getLogger(__name__)

#: Bump when the baseline record's layout or meaning changes: part of every key.
BASELINE_VERSION = "1"

#: Libraries whose versions are part of the key (they shape the numbers).


def _plain(value: Any) -> Any:
    """A JSON-ready copy of a (possibly OmegaConf) value."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(value, (DictConfig, ListConfig)):
            return OmegaConf.to_container(value, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    return value


def _token_sha256(tokens: Any) -> str:
    """SHA-256 of a token stream's int64 little-endian bytes (``torch.Tensor`` or sequence of ints)."""
    import numpy as np

    if hasattr(tokens, "detach"):
        tokens = tokens.detach().cpu().numpy()
    return hashlib.sha256(np.asarray(tokens, dtype="<i8").tobytes()).hexdigest()


def _text_identity(cfg: Any, texts: Mapping[str, Any] | None) -> dict[str, Any]:
    if texts is not None:
        return {"tokens": {name: _token_sha256(tokens) for name, tokens in sorted(texts.items())}}
    # Without the token streams: the configs the held-out texts are drawn from.
    from calib_sweep.data import dataset_config

    names = [str(n) for n in (cfg.eval.perplexity.get("texts") or [])]
    sources = {}
    for name in names:
        sources[name] = _plain(cfg.dataset) if name == cfg.dataset.name else _plain(dataset_config(name))
    return {"sources": sources}


def _file_identity(value: Any) -> dict[str, Any]:
    """``{"file", "sha256"}`` of a user's data file: a local path (expanded) or a URL exactly as given
    (hashed through fsspec when readable; None when not, and the job then fails on it)."""
    from calib_sweep import paths

    if paths.is_remote(value):
        try:
            digest = paths.sha256(str(value).strip())
        except Exception:  # noqa: BLE001 - unreadable now: the evaluation reports it in one line
            digest = None
        return {"file": str(value).strip(), "sha256": digest}
    path = paths.local_path(value)
    return {"file": str(path), "sha256": assets.sha256_file(path) if path.is_file() else None}


def _zero_shot_identity(eval_cfg: Any) -> dict[str, Any]:
    from calib_sweep.evaluation import tasks

    zs = eval_cfg.get("zeroshot") if hasattr(eval_cfg, "get") else None
    names = [str(n) for n in ((zs.get("tasks") if zs is not None else None) or [])]
    local = dict((zs.get("local_files") if zs is not None else None) or {})
    ident: dict[str, Any] = {"converter": tasks.CONVERTER_VERSION}
    for name in names:
        spec = tasks.TASKS.get(name)
        if local.get(name) is not None:
            ident[name] = _file_identity(local[name])
        elif spec is not None and spec.asset is not None:
            ident[name] = assets.ASSETS[spec.asset].sha256
    return ident


def _runtime(cfg: Any) -> dict[str, str]:
    from calib_sweep import models

    device = models.resolve_device(cfg.get("device", "auto"))
    dtype = models.resolve_dtype(cfg.get("dtype", "auto"), device)
    return {"device_type": device.type, "dtype": str(dtype)}


def baseline_key(cfg: Any, texts: Mapping[str, Any] | None = None) -> str:
    """Hex SHA-256 (first 24 characters) naming the dense baseline of a job's (model, eval config).

    Args:
        cfg: the job's resolved config (``model``, ``eval``, ``dataset``, ``device``, ``dtype``).
        texts: the held-out token streams the job evaluates perplexity on (``int64 [n_tokens]``
            each); when ``None``, the dataset configs of ``eval.perplexity.texts`` stand in for them.

    Returns:
        The key; jobs that differ only in method, calibration source, seed or sample count share it.
    """
    ident = {
        "version": BASELINE_VERSION,
        "model": _plain(cfg.model),
        "eval": _plain(cfg.eval),
        "runtime": _runtime(cfg),
        "texts": _text_identity(cfg, texts),
        "zeroshot_data": _zero_shot_identity(cfg.eval),
        "libraries": versions(),
    }
    blob = json.dumps(ident, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def baseline_path(key: str) -> Path:
    """``cache_dir()/baselines/<key>.json``."""
    return assets.cache_dir() / "baselines" / f"{key}.json"


def _read(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("metrics"), dict):
        return None
    return record


def _write_atomic(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(record, handle, indent=1, sort_keys=True, default=str)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def _preserved_rng():
    """Restore the ``random``, NumPy and torch (CPU and CUDA) generator states afterwards."""
    import random

    import numpy as np
    import torch

    py_state, np_state, torch_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.set_rng_state(torch_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)


def dense_baseline(
    cfg: Any,
    compute: Callable[[], tuple[dict, dict]],
    own: tuple[dict, dict] | None = None,
    *,
    texts: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The dense model's evaluation for this job's (model, eval config): cached, or computed once.

    Args:
        cfg: the job's resolved config.
        compute: loads (or takes) the uncompressed model and returns ``evaluate_model``'s
            ``(metrics, details)``; called only when no cached baseline exists, under the lock, with
            the global ``random`` / NumPy / torch generator states restored afterwards (lm-eval
            reseeds them), so a job's later stages do not depend on whether the cache was warm.
        own: the job's own ``(metrics, details)`` when the job *is* the dense method: stored as the
            baseline (if none is cached yet) and returned; ``compute`` is not called.
        texts: the held-out token streams (see :func:`baseline_key`); recommended.

    Returns:
        ``{"metrics": {...}, "details": {...}, "key": str, "reused": bool, "path": str}``;
        ``reused`` is True when the figures come from the cache (computed by an earlier job).

    Raises:
        Whatever ``compute`` raises (nothing is cached then); OSError if the cache is not writable.
    """
    key = baseline_key(cfg, texts)
    path = baseline_path(key)

    def result(record: dict[str, Any], reused: bool) -> dict[str, Any]:
        return {"metrics": record["metrics"], "details": record.get("details", {}), "key": key, "reused": reused,
                "path": str(path)}

    def make_record(metrics: dict, details: dict, source: str) -> dict[str, Any]:
        return {
            "key": key, "metrics": metrics, "details": details, "source": source,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "model": _plain(cfg.model), "eval": _plain(cfg.eval),
            "runtime": _runtime(cfg), "versions": versions(),
        }

    cached = _read(path)
    if own is not None:
        if cached is None:
            with _locked(path.with_suffix(".lock")):
                if _read(path) is None:
                    _write_atomic(path, make_record(dict(own[0]), dict(own[1]), "dense job"))
        return {"metrics": dict(own[0]), "details": dict(own[1]), "key": key, "reused": False, "path": str(path)}
    if cached is not None:
        log.info("dense baseline %s reused from %s", key, path)
        return result(cached, True)
    with _locked(path.with_suffix(".lock")):
        cached = _read(path)  # another job may have written it while we waited
        if cached is not None:
            log.info("dense baseline %s reused from %s (computed by a parallel job)", key, path)
            return result(cached, True)
        log.info("computing the dense baseline %s", key)
        with _preserved_rng():  # lm-eval reseeds the global generators; the job must not depend on the cache
            metrics, details = compute()
        record = make_record(dict(metrics), dict(details), "computed")
        _write_atomic(path, record)
    return result(json.loads(json.dumps(record, default=str)), False)


def deltas(metrics: Mapping[str, Any], dense_metrics: Mapping[str, Any]) -> dict[str, float]:
    """Absolute differences ``metrics[k] - dense_metrics[k]`` for every key both hold as finite numbers.

    Args:
        metrics: the job's metrics (e.g. ``perplexity/<text>``, ``zeroshot/<task>/acc``).
        dense_metrics: the dense baseline's metrics.

    Returns:
        ``{key: difference}`` in the metric's own unit (accuracy points as fractions, perplexity
        as perplexity), keys in the order of ``metrics``; booleans and non-finite values are skipped.
    """
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if key not in dense_metrics:
            continue
        other = dense_metrics[key]
        if isinstance(value, bool) or isinstance(other, bool):
            continue
        if not isinstance(value, (int, float)) or not isinstance(other, (int, float)):
            continue
        diff = float(value) - float(other)
        if math.isfinite(diff):
            out[key] = diff
    return out
