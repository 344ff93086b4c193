"""The numerical environment of a job: what changes its figures although its config key stays the same.

A job's config key (:func:`calib_sweep.tracking.config_key`) holds ``threads: auto``, ``device: auto``
and ``dtype: auto`` as written, not what they resolve to.  On SmolLM2 the thread count alone moves GPTQ
perplexity from 29.90 to 31.67 on one calibration set (README, noise floor), so a finished job computed
with 1 thread is a different numerical variant of the job a 2-thread rerun would give.  Resume
therefore compares :func:`environment` of the job about to run with the ``runtime`` block of the
finished one (:func:`mismatch`) under ``resume.match``:

- ``strict`` (default): skip only if thread count, dtype, device type and hardware label
  (:func:`calib_sweep.runtime.hardware_id`: CPU model or GPU, SIMD level, BLAS, threads) all agree;
- ``config``: the config key alone decides (the behaviour before this check), for users who accept
  another numerical variant of the same config.

A finished record without a ``runtime`` field (older than the field) counts as matching on that field.
"""

from __future__ import annotations

from typing import Any

from calib_sweep.errors import ConfigError

#: Values of ``resume.match``.
MATCH_MODES = ("strict", "config")


def validate_match(value: Any) -> str:
    """``resume.match`` checked: ``strict`` or ``config``.

    Raises:
        ConfigError: any other value, named with the options.
    """
    if value not in MATCH_MODES:
        raise ConfigError(f"resume.match={value!r} is not one of {list(MATCH_MODES)}. Fix: resume.match=strict "
                          "(skip only results computed under the same threads, dtype, device and hardware) or "
                          "resume.match=config (the config key alone decides).")
    return value


def environment(device_cfg: Any, dtype_cfg: Any, threads_cfg: Any, launcher: Any = None) -> dict[str, Any] | None:
    """What a job with these settings would compute under on this machine, without running it.

    Returns:
        ``{"threads": int, "dtype": "torch.float32", "device": "cpu" | "cuda", "hardware_id": str}``, the
        same values the job then records in ``results.json["runtime"]``; ``None`` when a setting is
        invalid (the job's validation reports it; nothing can be skipped).
    """
    from calib_sweep import models, runtime

    try:
        device = models.resolve_device(device_cfg)
        dtype = models.resolve_dtype(dtype_cfg, device)
        threads, _ = runtime.resolve_threads(threads_cfg if threads_cfg is not None else "auto", launcher)
    except ConfigError:
        return None
    hardware = {**runtime.hardware_record(device), "threads": threads}
    return {"threads": int(threads), "dtype": str(dtype), "device": device.type, "hardware_id": runtime.hardware_id(hardware)}


def recorded(runtime_record: Any) -> dict[str, Any]:
    """The fields of :func:`environment` in a finished job's ``results.json["runtime"]`` (those present)."""
    if not isinstance(runtime_record, dict):
        return {}
    found: dict[str, Any] = {}
    if runtime_record.get("threads") is not None:
        found["threads"] = runtime_record["threads"]
    if runtime_record.get("dtype") is not None:
        found["dtype"] = str(runtime_record["dtype"])
    if runtime_record.get("device") is not None:
        found["device"] = str(runtime_record["device"]).split(":")[0]
    hardware = runtime_record.get("hardware")
    if isinstance(hardware, dict) and hardware.get("id"):
        found["hardware_id"] = str(hardware["id"])
    return found


def mismatch(previous: dict[str, Any], current: dict[str, Any] | None) -> str | None:
    """Why a finished job (``previous``: :func:`recorded`) is not what this job would compute
    (``current``: :func:`environment`), as one phrase, e.g. ``earlier result used 1 thread, this job 2``;
    ``None`` when every field both have agrees (or ``current`` is ``None``)."""
    if current is None:
        return None
    if "threads" in previous and previous["threads"] != current["threads"]:
        def n(t):
            return f"{t} thread" + ("" if t == 1 else "s")
        return f"earlier result used {n(previous['threads'])}, this job {current['threads']}"
    for field, what in (("dtype", "dtype"), ("device", "device"), ("hardware_id", "hardware")):
        if field in previous and previous[field] != current[field]:
            return f"earlier result used {what} {previous[field]}, this job {current[field]}"
    return None
