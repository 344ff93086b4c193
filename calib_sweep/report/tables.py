"""The report's tables, built once and written as CSV (raw values) or rendered as Markdown/HTML (display values).

Display convention (Markdown and HTML, :mod:`calib_sweep.report.display`): accuracy in percent
(``results.json`` holds fractions), everything else in its own unit; ``mean ± SD`` uses the sample SD
(ddof=1); ``–`` marks an undefined figure (SD of one seed, a metric no finished job reported).  CSV files
hold the raw ``results.json`` values.  The evidence tables come from :mod:`calib_sweep.report.evidence_tables`,
the per-layer ones from :mod:`calib_sweep.report.layers`.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from calib_sweep.report import evidence_tables, layers
from calib_sweep.report.aggregate import Group, Stat, Summary
from calib_sweep.report.display import DASH, Table, fmt
from calib_sweep.report.display import unit as _unit

__all__ = ["DASH", "Table", "build_tables", "fmt", "markdown", "mean_sd", "min_max", "write_csvs"]


def mean_sd(metric: str, stat: Stat | None) -> str:
    """``mean ± SD`` (``mean`` alone for one seed), with ``(+k non-finite)`` when some values were NaN/inf."""
    if stat is None or stat.n == 0:
        return DASH if stat is None or not stat.n_nonfinite else f"non-finite ×{stat.n_nonfinite}"
    text = fmt(metric, stat.mean) + (f" ± {fmt(metric, stat.sd, spread=True)}" if stat.sd is not None else "")
    return text + (f" (+{stat.n_nonfinite} non-finite)" if stat.n_nonfinite else "")


def min_max(metric: str, stat: Stat | None) -> str:
    """``min – max (range)``."""
    if stat is None or stat.n == 0:
        return DASH
    return f"{fmt(metric, stat.min)} – {fmt(metric, stat.max)} ({fmt(metric, stat.range, spread=True)})"


def _seeds(group: Group) -> str:
    text = f"{group.count('ok')}"
    extra = [f"{group.count(s)} {s}" for s in ("failed", "missing") if group.count(s)]
    return text + (f" ({', '.join(extra)})" if extra else "")


def _group_cells(group: Group, with_variant: bool) -> list[str]:
    cells = [group.method, group.source, f"{group.n_samples}×{group.seq_len}"]
    return cells + [group.variant or DASH] if with_variant else cells


def build_tables(summary: Summary) -> list[Table]:
    """Every table of the report, in page order."""
    tables: list[Table] = []
    with_variant = any(g.variant for g in summary.groups)
    group_header = ["method", "source", "n×len"] + (["variant"] if with_variant else [])
    models = list(dict.fromkeys(g.model for g in summary.groups))
    main = summary.main_metrics or summary.metrics
    for model in models:
        groups = [g for g in summary.groups if g.model == model]
        tables.append(Table(
            title=f"Main table — {model}: mean ± SD across calibration sets",
            header=group_header + ["seeds ok"] + [_unit(m) for m in main],
            rows=[_group_cells(g, with_variant) + [_seeds(g)] + [mean_sd(m, g.stats.get(m)) for m in main] for g in groups],
            note="One row per method × source × size; statistics over the calibration sets (seeds) that finished. "
                 "SD: sample standard deviation (ddof=1).",
            anchor=f"main-{model}",
        ))
        tables.append(Table(
            title=f"Spread — {model}: min – max (range) across calibration sets",
            header=group_header + [_unit(m) for m in main],
            rows=[_group_cells(g, with_variant) + [min_max(m, g.stats.get(m)) for m in main] for g in groups],
            anchor=f"spread-{model}",
        ))
    rows = []
    for d in summary.dispersion:
        rows.append([_unit(d.metric), str(d.n_groups), fmt(d.metric, d.mean_sd, spread=True), fmt(d.metric, d.max_sd, spread=True),
                     fmt(d.metric, d.mean_range, spread=True), fmt(d.metric, d.max_range, spread=True), d.widest])
    tables.append(Table(
        title="Dispersion per task: which metrics swing most across calibration sets",
        header=["metric", "groups", "mean SD", "max SD", "mean range", "max range", "widest group"],
        rows=rows,
        note="Over the groups with at least two finished seeds; accuracy metrics first, most dispersed first."
             if rows else "No group has two finished seeds yet: no dispersion to show.",
        anchor="dispersion",
    ))
    if summary.series:
        shown = [m for m in summary.metrics if m.startswith("perplexity/") or m == "zeroshot/mean_acc"] or summary.metrics
        rows = []
        for (model, method, source, seq_len, variant), groups in summary.series.items():
            for g in groups:
                rows.append([model, method, source, str(seq_len), variant or DASH, str(g.n_samples), _seeds(g)]
                            + [mean_sd(m, g.stats.get(m)) for m in shown])
        tables.append(Table(
            title="Sample size: metrics vs number of calibration samples",
            header=["model", "method", "source", "seq_len", "variant", "n_samples", "seeds ok"] + [_unit(m) for m in shown],
            rows=rows, anchor="sample-size",
        ))
    if summary.dense_reference:
        names = list(dict.fromkeys(m for figures in summary.dense_reference.values() for m in figures))
        tables.append(Table(
            title="Dense reference (uncompressed model)",
            header=["model"] + [_unit(m) for m in names],
            rows=[[model] + [fmt(m, figures.get(m)) for m in names] for model, figures in summary.dense_reference.items()],
            anchor="dense",
        ))
    tables += evidence_tables.tables(summary, with_variant)
    tables += layers.tables(summary.layer_families)
    all_rows = []
    for g in summary.groups:
        for metric, stat in g.stats.items():
            all_rows.append([g.model] + _group_cells(g, with_variant) + [
                _unit(metric), str(stat.n), fmt(metric, stat.mean), fmt(metric, stat.sd, spread=True), fmt(metric, stat.min),
                fmt(metric, stat.max), fmt(metric, stat.range, spread=True)])
    tables.append(Table(
        title="Every metric: statistics across calibration sets",
        header=["model"] + group_header + ["metric", "n", "mean", "SD", "min", "max", "range"],
        rows=all_rows, anchor="all-metrics",
    ))
    unfinished = [j for j in summary.jobs if j.status not in ("ok",)]
    tables.append(Table(
        title="Jobs not finished: failed, missing (running or killed), superseded",
        header=["status", "model", "method", "source", "n×len", "seed", "folder", "error"],
        rows=[[j.status, j.model, j.method, j.source, f"{j.n_samples}×{j.seq_len}" if j.n_samples else "?",
               "?" if j.seed is None else str(j.seed), str(j.folder), j.error or ""]
              for j in unfinished],
        note="Every job finished." if not unfinished else "A missing job has a .hydra/ folder but no results.json yet.",
        anchor="jobs",
    ))
    return tables


# ----------------------------------------------------------------------------------------------- CSV

def _group_fields(g: Group) -> dict[str, Any]:
    return {"model": g.model, "method": g.method, "source": g.source, "n_samples": g.n_samples, "seq_len": g.seq_len,
            "variant": g.variant, "seeds_ok": g.count("ok"), "seeds_failed": g.count("failed"), "seeds_missing": g.count("missing")}


def _stat_fields(stat: Stat | None, prefix: str = "") -> dict[str, Any]:
    if stat is None:
        return {f"{prefix}{k}": "" for k in ("n", "mean", "sd", "min", "max", "range")}
    return {f"{prefix}n": stat.n, f"{prefix}mean": _raw(stat.mean), f"{prefix}sd": _raw(stat.sd), f"{prefix}min": _raw(stat.min),
            f"{prefix}max": _raw(stat.max), f"{prefix}range": _raw(stat.range)}


def _raw(value: float | None) -> Any:
    return "" if value is None else value


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    header = list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_csvs(summary: Summary, out: Path) -> list[Path]:
    """Write the CSV files (raw ``results.json`` units; SD with ddof=1; empty cell = undefined).

    Files: ``summary.csv`` (one row per group x metric), ``main_table.csv`` (one row per group, the
    study's columns as ``<metric> mean/sd/min/max/range``), ``dispersion.csv``, ``jobs.csv`` (every job,
    its status, error and metrics), and when present ``sample_size.csv``, ``dense_reference.csv`` and the
    evidence files (:func:`calib_sweep.report.evidence_tables.rows`: ``evidence.csv``, ``dispersion_tests.csv``,
    ``source_comparisons.csv``, ``noise_floor.csv``, ``controls.csv``, ``hardware.csv``).
    """
    written = []
    long_rows = []
    for g in summary.groups:
        for metric, stat in g.stats.items():
            long_rows.append({**_group_fields(g), "metric": metric, **_stat_fields(stat), "n_nonfinite": stat.n_nonfinite,
                              "values": " ".join(f"s{seed}={value!r}" for seed, value in stat.values)})
    long_header = ["model", "method", "source", "n_samples", "seq_len", "variant", "metric", "n", "mean", "sd", "min", "max", "range"]
    written.append(_write_csv(out / "summary.csv", long_rows) if long_rows else _write_empty(out / "summary.csv", long_header))
    main = summary.main_metrics or summary.metrics
    wide = []
    for g in summary.groups:
        row = _group_fields(g)
        for metric in main:
            row.update({f"{metric} {k}": v for k, v in _stat_fields(g.stats.get(metric)).items()})
        wide.append(row)
    written.append(_write_csv(out / "main_table.csv", wide))
    written.append(_write_csv(out / "dispersion.csv", [
        {"metric": d.metric, "groups": d.n_groups, "mean_sd": d.mean_sd, "max_sd": d.max_sd, "mean_range": d.mean_range,
         "max_range": d.max_range, "widest_group": d.widest} for d in summary.dispersion
    ]) if summary.dispersion else _write_empty(out / "dispersion.csv", ["metric", "groups", "mean_sd", "max_sd", "mean_range",
                                                                         "max_range", "widest_group"]))
    jobs = []
    for j in summary.jobs:
        jobs.append({"status": j.status, "model": j.model, "method": j.method, "source": j.source, "n_samples": j.n_samples,
                     "seq_len": j.seq_len, "variant": j.variant, "seed": j.seed, "perturbation": j.perturbation,
                     "noise_repeat": j.repeat, "hardware": j.hardware or "", "wandb_mode": j.wandb_mode or "",
                     "folder": str(j.folder), "error": j.error or "", "calibration_sha256": j.calibration_sha256 or "",
                     **{m: j.metrics.get(m, "") for m in summary.metrics}})
    written.append(_write_csv(out / "jobs.csv", jobs))
    if summary.series:
        rows = []
        for groups in summary.series.values():
            for g in groups:
                for metric, stat in g.stats.items():
                    rows.append({**_group_fields(g), "metric": metric, **_stat_fields(stat)})
        written.append(_write_csv(out / "sample_size.csv", rows))
    for name, rows in {**evidence_tables.rows(summary), **layers.csv_rows(summary.layer_families)}.items():
        written.append(_write_csv(out / f"{name}.csv", rows))
    if summary.dense_reference:
        written.append(_write_csv(out / "dense_reference.csv", [
            {"model": model, "metric": metric, "value": value}
            for model, figures in summary.dense_reference.items() for metric, value in figures.items()
        ]))
    return written


def _write_empty(path: Path, header: list[str]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerow(header)
    return path


# ------------------------------------------------------------------------------------------ Markdown

def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(summary: Summary, tables: list[Table], sources: list[str], figure_files: dict[str, str]) -> str:
    """The whole report as Markdown (figures linked as files under ``figures/``)."""
    counts = summary.counts
    lines = [
        "# Calibration-data sweep report", "",
        "Sweep folders: " + ", ".join(f"`{s}`" for s in sources), "",
        "Jobs: " + ", ".join(f"{counts.get(s, 0)} {s}" for s in ("ok", "failed", "missing", "superseded") if counts.get(s, 0) or s == "ok"),
        "",
        "Statistics are across calibration sets (seeds) of one model × method × source × size. "
        "SD is the sample standard deviation (ddof=1); `–` marks an undefined figure (e.g. SD of a single seed). "
        "Accuracy is shown in percent; perplexity in its own unit. CSV files hold the raw values.", "",
    ]
    for table in tables:
        lines += [f"## {table.title}", ""]
        if table.note:
            lines += [table.note, ""]
        if table.rows:
            lines.append("| " + " | ".join(_md_cell(h) for h in table.header) + " |")
            lines.append("|" + "|".join("---" for _ in table.header) + "|")
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in table.rows]
            lines.append("")
    if figure_files:
        lines += ["## Figures", ""]
        lines += [f"![{title}]({path})" for title, path in figure_files.items()]
        lines.append("")
    return "\n".join(lines)
