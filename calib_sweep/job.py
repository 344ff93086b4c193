"""One job: prepare -> calibrate -> load / compress -> evaluate -> record.

A job is a pure function of its resolved config: rerunning it from ``results.json["config"]`` on the
same hardware gives the same numbers.  Every cheap check runs before any weights are loaded
(:func:`validate`), so bad input fails in seconds with one clear line.  :func:`run_job` claims the
folder, skips a finished job on resume, runs the stages (:mod:`calib_sweep.stages`, in order in
:func:`_run_stages`) and writes the record, or the failure record.

``results.json`` keys: ``status`` ("ok" or "failed"), ``config_key`` (hash of the config, see
:func:`calib_sweep.tracking.config_key`), ``config`` (resolved), ``inputs`` (fingerprints of the local
files it reads, :mod:`calib_sweep.inputs`), ``weights_storage`` (how the base weights were stored, :mod:`calib_sweep.models.storage`), ``metrics`` (``perplexity/<text>``), ``evaluation``
(perplexity protocols), ``compression`` (verification figures), ``calibration`` (the manifest),
``timings`` (seconds per stage), ``memory`` (peak bytes), ``versions``, ``wandb``, and for failures
``error``, ``error_type``, ``stage``.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import resource
import sys
import traceback
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from calib_sweep import cluster, inputs, methods, models, numerics, runtime, stages
from calib_sweep.claims import claim_job_folder
from calib_sweep.data import validate_row_order_seed, validate_samples, validate_source
from calib_sweep.data.selection import validate_selection
from calib_sweep.errors import ConfigError
from calib_sweep.evaluation import validate_eval
from calib_sweep.tracking import (
    WandbRun,
    archive_finished,
    config_key,
    find_archived,
    find_finished,
    index_entry,
    register_finished,
    replay_run,
    versions,
    write_atomic,
    write_json,
    write_results,
)

log = logging.getLogger(__name__)

def peak_memory(device: torch.device | None = None) -> dict[str, int]:
    """Peak resident memory of this process and, on CUDA, peak allocated GPU memory, in bytes."""
    figures = {"peak_rss_bytes": int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024}
    if device is not None and device.type == "cuda":
        figures["peak_gpu_bytes"] = int(torch.cuda.max_memory_allocated(device))
    return figures


def _check_archive_dir(folder: Path) -> None:
    """``resume.archive_dir`` must be a folder, or creatable, and writable (checked before any work, since the
    job copies its record there only when it has finished).

    Raises:
        ConfigError: a file there, or no write access to the folder or the nearest existing folder above it.
    """
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"resume.archive_dir={str(folder)!r} is a file, not a folder. Fix: resume.archive_dir=<folder> "
                          "(e.g. docs/replication_v2/records) or null (no records archive)")
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"resume.archive_dir={str(folder)!r}: no write access to {str(existing)!r}. Fix: a folder you "
                          "can write (e.g. docs/replication_v2/records in your checkout) or null (no records archive)")


def validate(cfg: DictConfig) -> None:
    """Checks that need no file and no weights (a URL in a path field may cost one short network probe).

    Raises:
        ConfigError: the first invalid value, named with its fix.
    """
    models.validate_model(cfg.model)
    methods.validate_method(cfg.method)
    validate_samples(cfg.samples.n_samples, cfg.samples.seq_len, cfg.seed, prepend_bos=cfg.model.get("prepend_bos", False),
                     allow_fewer=cfg.samples.get("allow_fewer", False))
    validate_source(cfg.dataset)
    models.check_dtype(cfg.model, models.resolve_dtype(cfg.dtype, models.resolve_device(cfg.device)))  # fp16 on Gemma-3
    validate_eval(cfg.eval)
    runtime.resolve_threads(cfg.get("threads", "auto"))
    numerics.validate_match((cfg.get("resume") or {}).get("match", "strict"))
    archive = (cfg.get("resume") or {}).get("archive_dir")
    if archive is not None and (not isinstance(archive, str) or not archive.strip()):
        raise ConfigError(f"resume.archive_dir={archive!r} is not a folder path. Fix: resume.archive_dir=<folder> "
                          "(e.g. docs/replication_v2/records) or null (no records archive)")
    if archive is not None:
        _check_archive_dir(Path(archive))
    validate_row_order_seed((cfg.get("perturb") or {}).get("row_order_seed"))
    validate_selection(cfg.get("selection"), cfg.dataset)
    kl_windows = cfg.eval.get("kl_windows", 4)
    if isinstance(kl_windows, bool) or not isinstance(kl_windows, int) or kl_windows < 0:
        raise ConfigError(f"eval.kl_windows={kl_windows!r} must be an integer >= 0 (0 = no KL). Fix: e.g. 4.")
    layer_diagnostics = cfg.eval.get("layer_diagnostics", False)
    if not isinstance(layer_diagnostics, bool):
        raise ConfigError(f"eval.layer_diagnostics={layer_diagnostics!r} must be true or false. Fix: eval.layer_diagnostics=true.")
    if layer_diagnostics and kl_windows == 0:
        raise ConfigError("eval.layer_diagnostics=true measures layer outputs on the KL windows, but eval.kl_windows=0. "
                          "Fix: eval.kl_windows=4, or eval.layer_diagnostics=false.")


def _resolved_dtype(cfg: DictConfig) -> str | None:
    """The torch dtype ``cfg.dtype`` resolves to on this machine (``None`` when invalid: validate says why)."""
    try:
        return str(models.resolve_dtype(cfg.dtype, models.resolve_device(cfg.device)))
    except ConfigError:
        return None


def _recorded(results: Path) -> dict[str, Any]:
    """A finished job's ``results.json`` (``{}`` when unreadable: its ``inputs`` and ``runtime`` then
    count as matching, as for records older than those fields)."""
    try:
        record = json.loads(results.read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _tags(cfg: DictConfig) -> list[str]:
    """W&B tags of a job: method, model, calibration source, seed."""
    return [f"method:{cfg.method.name}", f"model:{cfg.model.name}", f"source:{cfg.dataset.name}", f"seed:{cfg.seed}"]


def run_job(
    cfg: DictConfig, output_dir: str | Path, resume: bool = False, group: str | None = None, launcher: Any = None
) -> dict[str, Any]:
    """Run one job and write ``output_dir/results.json``.

    The job folder is claimed first (:func:`calib_sweep.claims.claim_job_folder`): a folder that
    holds another config's job is left untouched.  On failure, including SIGTERM / SIGINT
    (``error_type: Terminated``), a failure record (``status: "failed"``, error, stage) is written
    instead, the job's log gets one last line (``job failed in stage <stage>: <error> (traceback in
    <folder>/traceback.txt)``), then the exception is re-raised; other jobs' folders are never touched.

    Args:
        cfg: the composed job config.
        output_dir: the job's folder.
        resume: skip the job when ``cfg.resume.index_dir`` (or the records archive
            ``cfg.resume.archive_dir``, when set) records a finished job with the same
            config key (unless ``cfg.resume.force``) and the same local inputs
            (:func:`calib_sweep.inputs.changed`: a changed file reruns the job, with one log line
            saying which); a ``skipped.json`` then points at it.  If that
            earlier job has no W&B run and a logger is on now, one is made from its results
            (:func:`calib_sweep.tracking.replay_run`).
        group: W&B group (the sweep), used unless ``logger.group`` is set.
        launcher: ``hydra.launcher`` of the sweep, for the thread count of parallel jobs
            (:func:`calib_sweep.runtime.resolve_threads`).

    Returns:
        The record written to ``results.json`` (or, when skipped, ``{"status": "skipped", ...}``); a
        finished job's record has ``finished``, the UTC time it was written (ISO 8601, seconds).  With
        ``cfg.resume.archive_dir`` set, a finished job's record (and ``items.npz``) is also copied
        there (:func:`calib_sweep.tracking.archive_finished`), single run or sweep.

    Raises:
        calib_sweep.claims.FolderInUse: the folder belongs to another job (nothing is written).
        calib_sweep.runtime.Terminated: SIGTERM or SIGINT arrived (after the failure record).
    """
    output_dir = Path(output_dir)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    key = config_key(resolved, _resolved_dtype(cfg))
    claim_job_folder(output_dir, key)
    (output_dir / "traceback.txt").unlink(missing_ok=True)  # from an earlier failed run of this job
    resume_cfg = cfg.get("resume") or {}
    index_dir = Path(str(resume_cfg.get("index_dir", "multirun/.index")))
    archive_dir = resume_cfg.get("archive_dir")  # committed records (resume.archive_dir); validate checked it
    read = inputs.job_inputs(resolved)  # what the key cannot see: the content of local files
    if resume and resume_cfg.get("enabled", True) and not resume_cfg.get("force", False):
        skipped = _skip_finished(cfg, key, read, output_dir, index_dir, group, launcher, archive_dir)
        if skipped is not None:
            return skipped
    record: dict[str, Any] = {"status": "running", "config_key": key, "config": resolved, "inputs": read,
                              "versions": versions()}
    record.update(models.weights_record(cfg.model))  # "weights": pretrained | random (model.init=random: timing only)
    record.update(cluster.scheduler_record())  # "slurm": job id (= its .submitit/ log folder), partition, node...
    job = stages.JobState(record, output_dir)
    with runtime.TerminationSignals() as signals:
        try:
            _run_stages(cfg, job, launcher, group, key)
        except BaseException as exc:
            with signals.deferred():
                _record_failure(exc, job)
            raise
        with signals.deferred():  # a signal now waits until the record is complete
            record["timings"] = job.timer.timings
            record["memory"] = peak_memory(job.device)
            record["finished"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
            results = write_results(output_dir, record)
            job.run.finish()
            try:
                register_finished(key, results, index_dir)
            except OSError as exc:  # the index only speeds up resume; results.json is already safe
                log.warning("could not index %s for resume: %s", results, exc)
            if archive_dir:
                try:
                    log.info("archived the record in %s", archive_finished(key, results, str(archive_dir)))
                except OSError as exc:  # the job's own folder still holds it
                    log.warning("could not archive %s in %s: %s", results, archive_dir, exc)
    return record


def _run_stages(cfg: DictConfig, job: stages.JobState, launcher: Any, group: str | None, key: str) -> None:
    """The job's stages in order (:mod:`calib_sweep.stages`), each given its config group(s) and the one
    before's output: prepare -> calibrate -> load / compress -> evaluate -> record.  They fill
    ``job.record``; the W&B run, opened after calibrate and before load, is left in ``job.run`` for
    :func:`run_job` to finish."""
    with job.timer("validate"):
        validate(cfg)
    prepared = stages.prepare(cfg, launcher, job)
    calibrated = stages.calibrate(cfg.dataset, cfg.samples, cfg.seed, cfg.get("selection"), cfg.get("perturb"),
                                  prepared, job)
    job.run = WandbRun(cfg.get("logger"), job.record["config"], job.folder, name=job.folder.name, group=group,
                       tags=_tags(cfg), run_id=key[:32])
    job.record["wandb"] = job.run.info
    loaded = stages.load(cfg.model, cfg.method, cfg.eval, prepared, calibrated, job)
    compressed = stages.compress(cfg.method, cfg.eval, loaded, job)
    del loaded  # the dense references: the model is freed before the dense baseline loads another
    evaluated = stages.evaluate(cfg, prepared, calibrated, compressed, job)
    stages.record(evaluated, compressed.calib, job)


def _skip_finished(cfg: DictConfig, key: str, read: dict[str, Any], output_dir: Path, index_dir: Path,
                   group: str | None, launcher: Any = None, archive_dir: str | None = None) -> dict[str, Any] | None:
    """For ``resume``: the ``skipped.json`` record (written) when ``index_dir`` (or else the records
    archive ``archive_dir``, :func:`calib_sweep.tracking.find_archived`) holds a finished job with
    config ``key`` whose local inputs are unchanged and, under ``resume.match=strict``, whose numerical
    environment (threads, dtype, device, hardware: :mod:`calib_sweep.numerics`) is the one this job
    would run under (its W&B run replayed if it has none), else ``None`` (no such job, or an input or
    the environment changed: one log line says which, and the job reruns)."""
    match = (cfg.get("resume") or {}).get("match", "strict")
    if match not in numerics.MATCH_MODES:
        return None  # validate names the bad value
    previous = find_finished(key, index_dir) or find_archived(key, archive_dir)
    if previous is None:
        return None
    earlier = _recorded(previous)
    reason = inputs.changed(earlier.get("inputs"), read)
    current = None
    if reason is None and match == "strict":
        current = numerics.environment(cfg.get("device", "auto"), cfg.get("dtype", "auto"), cfg.get("threads", "auto"), launcher)
        reason = numerics.mismatch(numerics.recorded(earlier.get("runtime")), current)
        if reason is not None:
            reason += " (resume.match=config skips it anyway)"
    if reason is not None:
        log.info("rerunning: %s [finished job: %s]", reason, previous)
        return None
    log.info("skipping: a finished job with this config exists at %s (resume.force=true reruns it)", previous)
    skipped: dict[str, Any] = {"status": "skipped", "config_key": key, "results": str(previous), "match": match}
    if current is not None:
        skipped["environment"] = current
    replayed = replay_run(cfg.get("logger"), previous, output_dir, name=output_dir.name, group=group,
                          tags=_tags(cfg), run_id=key[:32], done_before=index_entry(key, index_dir).get("replayed"))
    if replayed is not None:
        skipped["wandb"] = replayed
        if replayed.get("id"):  # made once; a failed init is tried again on the next resume
            register_finished(key, previous, index_dir, replayed={"mode": replayed["mode"], "id": replayed["id"]})
    write_json(output_dir / "skipped.json", skipped)
    return skipped


def _record_failure(exc: BaseException, job: stages.JobState) -> None:
    """Write the failure record (``status: "failed"``, the stage, the error's type and first line, timings,
    memory) and ``traceback.txt``, finish the W&B run with exit code 1 and log the job's last line."""
    record = job.record
    record.update(
        status="failed",
        stage=job.timer.current,
        error_type=type(exc).__name__,
        error=str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
    )
    record["timings"] = job.timer.timings
    record["memory"] = peak_memory(job.device)
    write_atomic(job.folder / "traceback.txt", "".join(traceback.format_exception(exc)))
    write_results(job.folder, record)
    if job.run is not None:
        job.run.finish(exit_code=1)
    # The last line of the job's log (calib_sweep.log): the error and where it happened.
    log.error("job failed in stage %s: %s (traceback in %s)", record["stage"], one_line(exc),
              job.folder / "traceback.txt")


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message, prefixed by its type when it is not ours."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return text if isinstance(exc, ConfigError) else f"{type(exc).__name__}: {text}"


def report_failure(exc: BaseException, output_dir: Path) -> None:
    """Print the one-line reason for a failed job to stderr (the traceback is in ``traceback.txt``)."""
    print(f"calib_sweep: error: {one_line(exc)}  [job folder: {output_dir}]", file=sys.stderr)
