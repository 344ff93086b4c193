"""Hydra entry point: ``python -m calib_sweep [overrides]`` or ``calib-sweep [overrides]``.

Composes the config (``conf/config.yaml``), runs one job (:func:`calib_sweep.job.run_job`) and
nothing else.  In a single run a failure exits non-zero with one line on stderr (exit code 2 for
invalid input).  In a multirun (``-m``) a failed job leaves its failure record and the sweep goes on.
SIGTERM or SIGINT (``scancel``, a time limit, Ctrl-C) ends the job with a failure record
(``error_type: Terminated``) and the process with exit code 128 + the signal number, sweep or not;
sent to the command that launched a sweep, it stops the sweep's jobs first (:mod:`calib_sweep.stopping`).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

log = logging.getLogger("calib_sweep")


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def _app(cfg: DictConfig) -> float | None:
    from calib_sweep import stopping
    from calib_sweep.assets import AssetError
    from calib_sweep.cluster import is_scheduler_launcher
    from calib_sweep.errors import ConfigError
    from calib_sweep.job import report_failure, run_job
    from calib_sweep.runtime import Terminated, TerminationSignals

    hydra_cfg = HydraConfig.get()
    output_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    # One W&B group per sweep: the sweep folder, e.g. multirun/2026-11-29/14-30-00.
    group = str(hydra_cfg.sweep.dir) if multirun else None
    launcher = hydra_cfg.launcher if multirun else None
    # A job process of a local parallel sweep: the sweep's launching command forwards a signal to it
    # when stopped, and waits for its record (calib_sweep.stopping).
    kind = stopping.launcher_kind(launcher) if multirun else None
    local = kind in stopping.LOCAL_KINDS
    # The whole job, not only run_job's stages, handles SIGTERM/SIGINT: a joblib worker killed by a
    # signal before its job's stages would make joblib kill the other workers mid-record.
    with TerminationSignals() as signals:
        entry = stopping.register(group, output_dir) if local else None
        try:
            if local:
                stopping.check(group)  # the sweep is stopping: this job ends before it starts
            record = run_job(cfg, output_dir, resume=multirun, group=group, launcher=launcher)
        except Terminated as exc:
            signals.signum = signals.signum or exc.signum  # later signals wait: the job is ending
            report_failure(exc, output_dir)
            if kind == "joblib":  # in a stopping sweep, this worker ends here: it must not start a queued job
                stopping.hold(group, entry, 128 + exc.signum)
            stopping.unregister(entry)
            if multirun and is_scheduler_launcher(launcher):
                return None  # one scheduler job of many: its failure record speaks for it in the summary
            sys.exit(128 + exc.signum)
        except (ConfigError, AssetError) as exc:
            report_failure(exc, output_dir)
            if multirun:
                return None
            sys.exit(2)
        except Exception as exc:  # run_job logged the one-line error and its stage as the job log's last line
            if multirun:
                return None
            report_failure(exc, output_dir)
            sys.exit(1)
        finally:
            stopping.unregister(entry)
    if record["status"] == "skipped":
        return None
    metrics = record["metrics"]
    for key, value in metrics.items():
        log.info("%s = %.4f", key, value)
    log.info("results: %s", output_dir / "results.json")
    return next(iter(metrics.values()), None)


def command_line_conflict(args: list[str]) -> str | None:
    """One line for a flag combination Hydra would refuse with a traceback (exit 1), else None.

    Hydra allows one of ``--multirun``/``--cfg``/``--info``; ``-m --cfg job`` is the common slip.
    """
    multirun = any(a in ("-m", "--multirun") for a in args)
    shown = next((a for a in args if a in ("-c", "--cfg", "-i", "--info") or a.startswith(("--cfg=", "--info="))), None)
    if multirun and shown:
        flag = shown.split("=", 1)[0]
        return (f"{flag} with -m/--multirun: Hydra shows one job's config, not a sweep's. Fix: use {flag} without -m "
                f"to see a job's config (python -m calib_sweep {flag} job <overrides>).")
    return None


def main() -> None:
    """Console-script entry point (``calib-sweep``).

    Exit status: 0 when the job (or every job of a sweep) is ok or skipped; 1 when one failed (a
    sweep prints a summary block, see :mod:`calib_sweep.sweep_summary`); 2 for a config error
    before any job starts (or every job of a sweep refused by a config check); 128 + N when signal N
    stopped it (a sweep's jobs stopped first, its summary printed: :mod:`calib_sweep.stopping`).
    """
    from calib_sweep import sweep_summary
    from calib_sweep.runtime import Terminated

    refused = command_line_conflict(sys.argv[1:])
    if refused:
        print(f"calib_sweep: error: {refused}", file=sys.stderr)
        sys.exit(2)
    try:
        _app()
    except Terminated as exc:  # the sweep's launching command was signalled (calib_sweep.stopping)
        code = 128 + exc.signum
        interrupted = sweep_summary.summarize_interrupted(code)
        sys.exit(max(code, interrupted or 0))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        interrupted = sweep_summary.summarize_interrupted(code) if code else None
        if interrupted is not None:
            sys.exit(max(code, interrupted))
        if code == 1 and not sweep_summary.STARTED["any"]:
            sys.exit(2)  # Hydra refused the command line or config before any job started
        raise


if __name__ == "__main__":
    main()
