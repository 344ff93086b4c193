"""The end of a sweep: what happened to every job, printed, written to ``summary.json``, and the exit status.

A sweep in which every job failed used to exit 0, so shell scripts, CI, SLURM ``afterok``
dependencies and workflow engines took it for success.  Now every multirun (any launcher) ends with
one summary block, built from the records the jobs wrote in their folders, never from what the
launcher or scheduler says:

* **ok** - ``results.json`` with ``status: ok``;
* **skipped** - ``skipped.json`` (an identical finished job exists: resume by config key);
* **failed** - ``results.json`` with ``status: failed`` (its one-line error; ``error_type:
  Terminated`` is reported as killed by a signal: ``scancel``, preemption, a time limit, Ctrl-C;
  a ``ConfigError`` at ``validate`` or ``prepare``, before any weights load, as refused), or a job
  folder with no record at all (killed without a chance to write one, e.g. SIGKILL or out of
  memory; killed by the sweep's stop when the sweep was stopped by a signal);
* **not started** - a job of the sweep that has no folder.

``summary.json`` also counts ``killed`` (of the failed: stopped by a signal) and ``refused`` (of the
failed: refused by a config check), and names the signal that stopped the sweep (``stopped_by``,
e.g. ``SIGTERM``; ``null`` when it ran to its end).  A signal to the launching command stops the
sweep's jobs first (:mod:`calib_sweep.stopping`).

Separately, ``tracking_failed`` counts the jobs (of any state) whose W&B run could not be started
(``wandb.error`` in ``results.json`` or ``skipped.json``: ``wandb.init`` raised, e.g. a refused tag or
an unreachable server); their results are complete, so it does not change the exit status, but the
summary block names each one.

Exit status of ``python -m calib_sweep -m ...``: 0 when every job is ok or skipped, 1 otherwise, 2
for a config error (before any job starts, or every job refused by a config check before its weights
load: a ``ConfigError`` at ``validate`` or ``prepare``), 128 + N when signal N stopped the sweep.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

SUMMARY_FILE = "summary.json"
STATES = ("ok", "failed", "skipped", "not_started")
#: Stages whose ``ConfigError`` is a refusal before any weights load (the job's config, checked against
#: the model's config.json at ``prepare``).
REFUSING_STAGES = ("validate", "prepare")


def expected_jobs(config: DictConfig) -> list[list[str]]:
    """The override list of every job of a sweep, in job-number order, as Hydra's basic sweeper
    expands them (``hydra.sweeper.params`` plus the command line's task overrides)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = [f"{k}={v}" for k, v in (config.hydra.sweeper.get("params") or {}).items()]
    arguments = [*params, *OmegaConf.to_container(config.hydra.overrides.task, resolve=False)]
    overrides = OverridesParser.create().parse_overrides(arguments)
    return BasicSweeper.split_arguments(overrides, None)[0]


def _job_number(folder: Path) -> int | None:
    try:
        hydra_cfg = OmegaConf.load(folder / ".hydra" / "hydra.yaml")
        return int(hydra_cfg.hydra.job.num)
    except Exception:
        return None


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def job_state(folder: Path) -> dict[str, Any]:
    """The state of one job folder: ``{"state", "folder", "error"?, "error_type"?, "stage"?,
    "tracking_error"?}`` (``tracking_error``: why its W&B run was not started, see the module docstring)."""
    entry = _state(folder)
    for name in ("results.json", "skipped.json"):
        error = ((_read(folder / name) or {}).get("wandb") or {}).get("error")
        if error and entry["state"] in (("ok", "failed") if name == "results.json" else ("skipped",)):
            entry["tracking_error"] = str(error)
    return entry


def _state(folder: Path) -> dict[str, Any]:
    entry: dict[str, Any] = {"folder": str(folder)}
    results = _read(folder / "results.json")
    if results is not None and results.get("status") == "ok":
        return {**entry, "state": "ok"}
    if results is not None and results.get("status") == "failed":
        entry.update(state="failed", error=results.get("error"), error_type=results.get("error_type"),
                     stage=results.get("stage"))
        if results.get("error_type") == "Terminated":
            entry["killed"] = True
        elif results.get("error_type") == "ConfigError" and results.get("stage") in REFUSING_STAGES:
            entry["refused"] = True
        return entry
    if (folder / "skipped.json").is_file():
        return {**entry, "state": "skipped", "results": (_read(folder / "skipped.json") or {}).get("results")}
    return {**entry, "state": "failed", "error": "no record: the job ended without writing one "
            "(killed by SIGKILL, out of memory, or still running)", "error_type": "NoRecord"}


def summarize(sweep_dir: str | Path, expected: list[list[str]] | None = None,
              stopped_by: int | None = None) -> dict[str, Any]:
    """What happened to every job of a sweep folder.

    Args:
        sweep_dir: the sweep folder (``hydra.sweep.dir``).
        expected: the sweep's jobs (:func:`expected_jobs`); jobs without a folder are then counted
            as not started.  ``None``: only the folders found are counted.
        stopped_by: the signal number that stopped the sweep, if one did: a job folder without a
            record is then a job the stop killed before it could write one (``killed``).

    Returns:
        ``{"sweep": str, "counts": {state: n}, "killed": n, "refused": n, "tracking_failed": n,
        "stopped_by": signal name | None, "jobs": [per job: num, state, folder, error ...]}``
        (``killed``, ``refused``: of the failed jobs, those stopped by a signal and those refused by a
        config check before weights load; ``tracking_failed``: jobs whose W&B run could not be started).
    """
    sweep_dir = Path(sweep_dir)
    found: dict[int, dict[str, Any]] = {}
    extra = []
    for folder in sorted(p for p in sweep_dir.iterdir() if (p / ".hydra").is_dir()) if sweep_dir.is_dir() else []:
        num = _job_number(folder)
        if num is None:
            extra.append(job_state(folder))
        else:
            found[num] = {"num": num, **job_state(folder)}
    jobs = []
    total = max(len(expected) if expected is not None else 0, max(found, default=-1) + 1)
    for num in range(total):
        if num in found:
            jobs.append(found[num])
        elif expected is not None:
            jobs.append({"num": num, "state": "not_started", "overrides": expected[num] if num < len(expected) else None})
    jobs += extra
    name = signal.Signals(stopped_by).name if stopped_by else None
    for job in jobs:
        if stopped_by and job.get("error_type") == "NoRecord":
            job.update(killed=True, error=f"stopped by {name} before it wrote a record")
    counts = {state: sum(j["state"] == state for j in jobs) for state in STATES}
    tracking_failed = sum("tracking_error" in j for j in jobs)
    return {"sweep": str(sweep_dir), "counts": counts, "killed": sum(bool(j.get("killed")) for j in jobs),
            "refused": sum(bool(j.get("refused")) for j in jobs), "tracking_failed": tracking_failed,
            "stopped_by": name, "jobs": jobs}


def format_summary(summary: dict[str, Any]) -> str:
    """The summary block: one line of counts, then one line per failed or not-started job and per job
    whose W&B run was not started."""
    c = summary["counts"]
    tracking = summary.get("tracking_failed", 0)
    killed, refused = summary.get("killed", 0), summary.get("refused", 0)
    lines = [f"calib_sweep: sweep {summary['sweep']}: {len(summary['jobs'])} jobs: {c['ok']} ok, {c['failed']} failed, "
             f"{c['skipped']} skipped (already done), {c['not_started']} not started"
             + (f"; stopped by {summary['stopped_by']}" if summary.get("stopped_by") else "")
             + (f"; {killed} killed by a signal" if killed else "")
             + (f"; {refused} refused by a config check before weights load" if refused else "")
             + (f"; W&B run not started for {tracking}" if tracking else "")]
    for job in summary["jobs"]:
        if job["state"] == "failed":
            how = "killed" if job.get("killed") else "refused" if job.get("refused") else "failed"
            stage = f" in {job['stage']}" if job.get("stage") else ""
            lines.append(f"  {how}{stage}: {job['folder']}: {job.get('error')}")
        elif job["state"] == "not_started":
            lines.append(f"  not started: job {job['num']} ({' '.join(job.get('overrides') or [])})")
    for job in summary["jobs"]:
        if "tracking_error" in job:
            lines.append(f"  W&B run not started: {job['folder']}: {job['tracking_error']}")
    return "\n".join(lines)


def summarize_folder(sweep_dir: str | Path) -> dict[str, Any]:
    """:func:`summarize` of a finished sweep folder, its jobs expanded from its ``multirun.yaml``
    (when readable) so jobs that never started are counted too."""
    expected = None
    try:
        expected = expected_jobs(OmegaConf.load(Path(sweep_dir) / "multirun.yaml"))
    except Exception as exc:
        log.debug("no job list for %s: %s", sweep_dir, exc)
    return summarize(sweep_dir, expected)


def sweep_folders(paths: list[str | Path]) -> list[Path]:
    """Every sweep folder (one holding ``multirun.yaml``) at or under ``paths``, sorted."""
    found = set()
    for path in map(Path, paths):
        if (path / "multirun.yaml").is_file():
            found.add(path)
        if path.is_dir():
            found.update(p.parent for p in path.rglob("multirun.yaml"))
    return sorted(found)


def exit_status(summary: dict[str, Any]) -> int:
    """0 when every job is ok or skipped (and there is at least one); 2 when every job was refused by
    a config check before its weights load (``ConfigError`` at ``validate`` or ``prepare``: a bad
    override, or a value that does not fit the model's config.json, as for a single run); else 1."""
    c = summary["counts"]
    if c["failed"] == 0 and c["not_started"] == 0 and len(summary["jobs"]) > 0:
        return 0
    jobs = summary["jobs"]
    if jobs and all(j["state"] == "failed" and j.get("stage") in REFUSING_STAGES and j.get("error_type") == "ConfigError"
                    for j in jobs):
        return 2
    return 1


def _signal_of(status: int) -> int | None:
    """The signal number of exit status 128 + N (``None`` for any other status)."""
    try:
        return int(signal.Signals(status - 128)) if status > 128 else None
    except ValueError:
        return None


def _tidy(config: DictConfig, sweep_dir: Path) -> None:
    """Remove the sweep's control folder (:mod:`calib_sweep.stopping`) and the empty ``%j`` folder that
    submitit's local controller makes from the unexpanded ``submitit_folder`` (``.submitit/%j``)."""
    import shutil

    from calib_sweep.stopping import control_dir

    shutil.rmtree(control_dir(sweep_dir), ignore_errors=True)
    try:
        folder = str(config.hydra.launcher.get("submitit_folder") or "")
    except Exception:
        folder = ""
    for path in {Path(folder), sweep_dir / ".submitit" / "%j"} if "%j" in folder else {sweep_dir / ".submitit" / "%j"}:
        try:
            path.rmdir()  # only when empty
        except OSError:
            pass


def _log_to_wandb(config: DictConfig, summary: dict[str, Any]) -> None:
    """One small W&B run (job type ``sweep-summary``, the sweep's group) holding the counts and a
    table of the jobs, when the logger is on.  Failures are logged, never raised."""
    from calib_sweep.tracking import NAME_LIMIT, fit, resolve_mode

    logger_cfg = config.get("logger")
    if logger_cfg is None or not logger_cfg.get("enabled", True) or resolve_mode(logger_cfg) == "disabled":
        return
    try:
        import wandb

        run = wandb.init(project=logger_cfg.get("project"), entity=logger_cfg.get("entity"),
                         group=fit(logger_cfg.get("group") or summary["sweep"], NAME_LIMIT), job_type="sweep-summary",
                         name=fit(f"summary {Path(summary['sweep']).name}", NAME_LIMIT), dir=summary["sweep"],
                         mode=resolve_mode(logger_cfg), reinit="finish_previous",
                         settings=wandb.Settings(silent=True))
        run.summary.update({f"jobs/{k}": v for k, v in summary["counts"].items()})
        run.summary["jobs/tracking_failed"] = summary.get("tracking_failed", 0)
        table = wandb.Table(columns=["num", "state", "folder", "error"],
                            data=[[j.get("num"), j["state"], j.get("folder"), j.get("error")] for j in summary["jobs"]])
        run.log({"jobs": table})
        if summary.get("adaptive"):  # hydra/sweeper=calib_adaptive: per cell, sets, half-widths, why it stopped
            cells = summary["adaptive"]["cells"]
            names = list(summary["adaptive"]["targets"])
            run.log({"adaptive": wandb.Table(
                columns=["cell", "sets", "stop", *[f"half_width/{n}" for n in names]],
                data=[[c["cell"], c["sets"], c["stop"], *[c["half_widths"].get(n) for n in names]] for c in cells])})
        run.finish()
    except Exception as exc:
        log.warning("W&B sweep summary failed: %s", exc)


def finish_sweep(config: DictConfig, sweep_dir: str | Path, at_least: int = 0) -> int:
    """Summarize a finished sweep: print the block, write ``summary.json``, log to W&B.

    Under ``hydra/sweeper=calib_adaptive`` the jobs are those its ``adaptive.json`` lists, and
    ``summary.json["adaptive"]`` holds its record: per cell the sets run, the CI half-width reached per
    target and the stopping reason (:func:`calib_sweep.adaptive.state`).

    Args:
        at_least: the status the process exits with anyway (e.g. 143 after SIGTERM); recorded when
            higher than the jobs' own.

    Returns:
        The exit status (:func:`exit_status`, or ``at_least`` when higher).
    """
    from calib_sweep.adaptive import read_state
    from calib_sweep.stopping import stop_signal
    from calib_sweep.tracking import write_json

    try:
        expected = expected_jobs(config)
    except Exception as exc:  # a sweeper other than the basic one: count the folders found
        log.debug("could not expand the sweep's jobs: %s", exc)
        expected = None
    adaptive = read_state(sweep_dir)  # hydra/sweeper=calib_adaptive: its jobs, and its per-cell record
    if adaptive is not None:
        expected = adaptive.pop("jobs", None)
    stopped_by = stop_signal(sweep_dir) or _signal_of(int(at_least))
    summary = summarize(sweep_dir, expected, stopped_by=stopped_by)
    if adaptive is not None:
        summary["adaptive"] = adaptive
    summary["exit_status"] = max(exit_status(summary), int(at_least))
    write_json(Path(sweep_dir) / SUMMARY_FILE, summary)
    _tidy(config, Path(sweep_dir))
    print(format_summary(summary), file=sys.stderr, flush=True)
    _log_to_wandb(config, summary)
    return summary["exit_status"]


#: The multirun of this process, between its start and its summary: ``{"config": DictConfig}``.
ACTIVE: dict[str, Any] = {}
#: Whether a sweep or run has started in this process (config errors come before).
STARTED: dict[str, bool] = {"any": False}


class SweepSummary(Callback):
    """Hydra callback: at the end of a multirun, the summary block and the exit status (see the
    module docstring).  A launcher that raises (a submitit job killed without returning) skips
    ``on_multirun_end``; :func:`summarize_interrupted` then gives the summary instead."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        STARTED["any"] = True

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Remember the sweep, tell its jobs how many run at once (:func:`export_sweep_size`, for their
        thread share) and handle SIGTERM / SIGINT for it (:class:`calib_sweep.stopping.SweepStopper`)."""
        from calib_sweep.stopping import SweepStopper, launcher_kind

        STARTED["any"] = True
        ACTIVE["config"] = config
        export_sweep_size(config)
        ACTIVE["stopper"] = SweepStopper(str(config.hydra.sweep.dir), launcher_kind(config.hydra.get("launcher"))).install()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        _end_active()
        status = finish_sweep(config, str(config.hydra.sweep.dir))
        if status:
            raise SystemExit(status)


def export_sweep_size(config: DictConfig, environ: dict[str, str] | None = None) -> int | None:
    """Set :data:`calib_sweep.runtime.SWEEP_JOBS_VARIABLE` in ``environ`` (default ``os.environ``, which
    the sweep's job processes inherit) to the jobs that can run at once: the sweep's jobs
    (:func:`expected_jobs`), or ``hydra.sweeper.max_batch_size`` when smaller.  Returns the number
    (``None``, and the variable removed, when the jobs cannot be expanded: another sweeper)."""
    from calib_sweep.runtime import SWEEP_JOBS_VARIABLE

    environ = os.environ if environ is None else environ
    try:
        n = len(expected_jobs(config))
        batch = config.hydra.sweeper.get("max_batch_size")
        n = min(n, int(batch)) if batch else n
    except Exception as exc:
        log.debug("could not count the sweep's jobs: %s", exc)
        environ.pop(SWEEP_JOBS_VARIABLE, None)
        return None
    environ[SWEEP_JOBS_VARIABLE] = str(n)
    return n


def _end_active() -> DictConfig | None:
    """Forget the multirun of this process (its signal handlers restored, its sweep size unset);
    returns its config."""
    from calib_sweep.runtime import SWEEP_JOBS_VARIABLE

    stopper = ACTIVE.pop("stopper", None)
    if stopper is not None:
        stopper.uninstall()
    os.environ.pop(SWEEP_JOBS_VARIABLE, None)
    return ACTIVE.pop("config", None)


def discard_active() -> None:
    """Forget the multirun of this process without a summary: a sweeper refused its settings before any
    job started (one line, exit 2; :mod:`hydra_plugins.calib_adaptive`)."""
    _end_active()


def summarize_interrupted(code: int = 1) -> int | None:
    """The summary of a multirun that ended without ``on_multirun_end`` (its launcher raised, or a
    signal stopped it; ``code`` is the status the process exits with), or ``None`` when no multirun
    is unfinished in this process.  Returns the exit status (``code`` at least, and at least 1)."""
    config = _end_active()
    if config is None:
        return None
    return finish_sweep(config, str(config.hydra.sweep.dir), at_least=max(int(code), 1))
