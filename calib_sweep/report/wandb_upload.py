"""Send the report's summary to Weights & Biases, when the sweep's runs were online.

Only when at least one job's ``results.json["wandb"]["mode"]`` is ``online``; the report run goes to that
job's ``logger.project`` / ``logger.entity`` and is named ``sweep-report``.  The mode is decided again now
with :func:`calib_sweep.tracking.resolve_mode` (API key + a 3 s probe; ``WANDB_MODE`` wins), so an
unreachable server means a one-line message, never a hang.  Offline or disabled runs: skipped with a
message; only when some job has an offline W&B run (``wandb.mode: offline`` with a run id or a
``wandb/offline-run-*`` folder) does it say to upload them with ``wandb sync`` (``logger=none`` sweeps have
nothing to sync).  W&B errors never fail the report.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

from calib_sweep.report import evidence_tables, layers, paired, predictors, variance
from calib_sweep.report.aggregate import Summary, metric_label
from calib_sweep.tracking import WandbRun, resolve_mode

log = logging.getLogger(__name__)


def _group_row(g) -> list:
    return [g.label, g.model, g.method, g.source, g.n_samples, g.seq_len, g.variant, g.count("ok"), g.count("failed"),
            g.count("missing")]


_GROUP_COLUMNS = ["group", "model", "method", "source", "n_samples", "seq_len", "variant", "seeds_ok", "seeds_failed",
                  "seeds_missing"]


def _cell(value):
    """A W&B table cell: numbers and strings as they are (n/a reasons are strings), None for empty."""
    return None if value == "" else value


def upload(summary: Summary, out: Path, figure_files: dict[str, Path], say: Callable[[str], None] = print) -> bool:
    """Log the summary tables, bar/line plots and the figures to a W&B run when the sweep was online.

    Args:
        summary: the computed report; out: the report folder (the W&B run's local files go under it);
        figure_files: title -> PNG path of the rendered figures; say: where the one-line messages go.

    Returns:
        True when a run was created and logged, False when skipped (the reason is said).
    """
    online = [j for j in summary.jobs if j.wandb_mode == "online"]
    if not online:
        modes = ", ".join(sorted(summary.wandb_modes)) or "no W&B record"
        offline = [j for j in summary.jobs if j.offline_runs]
        if offline:  # only then is there anything for `wandb sync` to upload
            globs = sorted({f"{j.folder.parent}/*/wandb/offline-run-*" for j in offline})
            say(f"W&B: the sweep's runs were not online ({modes}); summary not uploaded "
                f"(upload the {len(offline)} offline run{'s' if len(offline) != 1 else ''} with "
                f"`wandb sync {' '.join(globs)}`, then run the report again).")
        else:
            say(f"W&B: the sweep's runs were not online ({modes}) and no job has an offline W&B run; "
                "summary not uploaded, nothing to sync (run with logger=wandb to log to W&B).")
        return False
    logger_cfg = dict(online[0].config.get("logger") or {})
    logger_cfg.update(enabled=True, init_timeout_s=min(float(logger_cfg.get("init_timeout_s", 30)), 30.0))
    mode = resolve_mode(logger_cfg)
    if mode != "online":
        say(f"W&B: the runs were online but W&B is {mode} now (no API key or server unreachable); summary not uploaded.")
        return False
    logger_cfg["mode"] = "online"
    config = {"report": {"sweep_jobs": len(summary.jobs), "groups": len(summary.groups), "folder": str(out)}}
    run = WandbRun(logger_cfg, config, out, name="sweep-report")
    if run.run is None:
        say("W&B: could not start the report run (see the log); summary not uploaded.")
        return False
    try:
        import wandb

        metrics = summary.main_metrics or summary.metrics
        columns = _GROUP_COLUMNS + [f"{m} {k}" for m in metrics for k in ("mean", "sd", "min", "max", "range")]
        rows = []
        for g in summary.groups:
            row = _group_row(g)
            for m in metrics:
                s = g.stats.get(m)
                row += [None] * 5 if s is None else [s.mean, s.sd, s.min, s.max, s.range]
            rows.append(row)
        main = wandb.Table(columns=columns, data=rows)
        logged: dict = {"report/main_table": main}
        for m in metrics:
            logged[f"report/bar/{metric_label(m)}"] = wandb.plot.bar(main, "group", f"{m} mean",
                                                                     title=f"{metric_label(m)}: mean across calibration sets")
        logged["report/dispersion"] = wandb.Table(
            columns=["metric", "groups", "mean_sd", "max_sd", "mean_range", "max_range", "widest_group"],
            data=[[d.metric, d.n_groups, d.mean_sd, d.max_sd, d.mean_range, d.max_range, d.widest] for d in summary.dispersion])
        logged["report/jobs"] = wandb.Table(
            columns=["status", "model", "method", "source", "n_samples", "seq_len", "variant", "seed", "folder", "error"] + summary.metrics,
            data=[[j.status, j.model, j.method, j.source, j.n_samples, j.seq_len, j.variant, j.seed, str(j.folder), j.error or ""]
                  + [j.metrics.get(m) for m in summary.metrics] for j in summary.jobs])
        if summary.series:
            size_rows = [[f"{g.method}/{g.source}/len{g.seq_len}" + (f" [{g.variant}]" if g.variant else ""), g.model,
                          g.n_samples] + [g.stats[m].mean if m in g.stats else None for m in metrics]
                         for groups in summary.series.values() for g in groups]
            sizes = wandb.Table(columns=["series", "model", "n_samples"] + metrics, data=size_rows)
            logged["report/sample_size"] = sizes
            for m in metrics:
                logged[f"report/sample_size/{metric_label(m)}"] = wandb.plot.line(
                    sizes, "n_samples", m, stroke="series", title=f"{metric_label(m)} vs n_samples")
        for name, table_rows in {**evidence_tables.rows(summary), **layers.csv_rows(summary.layer_families),
                                 **predictors.csv_rows(summary.predictors),
                                 **variance.csv_rows(summary.variance),
                                 **paired.csv_rows(summary.paired)}.items():
            columns = list(dict.fromkeys(k for row in table_rows for k in row))
            logged[f"report/{name}"] = wandb.Table(columns=columns, data=[[_cell(row.get(c)) for c in columns] for row in table_rows])
        for title, path in figure_files.items():
            logged[f"report/figure/{Path(path).stem}"] = wandb.Image(str(path), caption=title)
        run.run.log(logged)
        url = getattr(run.run, "url", None)
    except Exception as exc:  # W&B trouble must not cost the report its files
        log.warning("W&B logging failed: %s", exc)
        say(f"W&B: logging the summary failed ({type(exc).__name__}: {exc}); the report files are complete.")
        run.finish(exit_code=1)
        return False
    run.finish()
    say(f"W&B: summary logged to {url or 'the report run'}")
    return True
