"""Report: the study's tables and figures from one or more sweeps.

``python -m calib_sweep.report <sweep folder...>`` (or ``calib-sweep-report``) reads every job under the
folders (:mod:`calib_sweep.report.collect`), computes per model x method x source x size the mean, sample
SD (ddof=1), min, max and range across seeds of every metric (:mod:`calib_sweep.report.aggregate`), and
computes the evidence (:mod:`calib_sweep.report.evidence`: Student t / chi-square CIs, sets needed,
Brown-Forsythe between methods, Holm-corrected source and strategy comparisons, each with its minimum
detectable effect, equivalence test and verdict, the numerical noise floor, data-free controls, hardware
and eval-protocol checks; tests in :mod:`calib_sweep.report.statistics`), and writes CSV, Markdown and one
self-contained HTML page with box plots and sample-size curves; when the runs were online, the summary also
goes to W&B (:mod:`calib_sweep.report.wandb_upload`).

The modules import in one direction (``tests/test_import_graph.py``): collect -> aggregate -> statistics ->
evidence -> display / evidence_tables / layers / tables / figures / predictors / variance / paired -> html / wandb_upload -> this face, which
puts the summary together (:func:`summarize`) and writes the files (:func:`write_report`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping

from calib_sweep.report.aggregate import Summary, describe, describe_groups
from calib_sweep.report.collect import Job, ReportError, load, load_jobs
from calib_sweep.report.evidence import compute as compute_evidence
from calib_sweep.report.evidence import data_free_methods
from calib_sweep.report.layers import families as layer_families
from calib_sweep.report.predictors import check as predictor_checks
from calib_sweep.report.variance import components as variance_components
from calib_sweep.report.paired import compute as paired_items

__all__ = ["Job", "ReportError", "Summary", "ReportFiles", "describe", "load_jobs", "summarize", "write_report"]


def summarize(jobs: list[Job], test: str = "welch", family: str = "within",
              equivalence: Iterable[str] | Mapping[str, object] | None = None) -> Summary:
    """Group the jobs and compute every statistic of the report: the per-group statistics
    (:func:`calib_sweep.report.aggregate.describe_groups`), the evidence (:mod:`calib_sweep.report.evidence`)
    and the per-layer families (:mod:`calib_sweep.report.layers`).

    Noise-floor repeats (:attr:`Job.repeat`) are left out of the groups and used only for the noise floor;
    ``test`` (``welch`` or ``mannwhitney``) compares sources; ``family`` (``within`` or ``global``) and
    ``equivalence`` (``report.equivalence``: ``KEY=MARGIN`` strings or a mapping, see
    :func:`calib_sweep.report.evidence.parse_equivalence`) set the Holm families and equivalence margins.

    Raises:
        ReportError: an unknown ``family`` or a bad equivalence margin.
    """
    summary = describe_groups(jobs)
    summary.evidence = compute_evidence(jobs, summary.groups, summary.metrics, test, family, equivalence)
    summary.layer_families = layer_families(jobs)
    summary.predictors = predictor_checks(jobs, summary.metrics, data_free_methods())
    summary.variance = variance_components(jobs, summary.metrics, data_free_methods())
    summary.paired = paired_items(summary.groups, summary.evidence, data_free_methods())
    return summary


@dataclass
class ReportFiles:
    """What :func:`write_report` wrote: the folder, the HTML page, the Markdown file, CSVs and figure PNGs."""

    out: Path
    html: Path
    markdown: Path
    csvs: list[Path] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    summary: Summary | None = None


def write_report(paths: Iterable[str | Path], out: str | Path, *, wandb: bool = True,
                 say: Callable[[str], None] = print, test: str = "welch", family: str = "within",
                 equivalence: Iterable[str] | Mapping[str, object] | None = None) -> ReportFiles:
    """Read the sweeps under ``paths`` and write the report into ``out`` (created if needed).

    Files: ``report.html`` (self-contained), ``report.md``, ``summary.csv``, ``main_table.csv``,
    ``dispersion.csv``, ``jobs.csv``, ``variance_components.csv`` (:mod:`.variance`), ``item_noise.csv`` and
    ``paired_comparisons.csv`` where jobs kept per-item records (:mod:`.paired`), ``sample_size.csv`` and
    ``dense_reference.csv`` when they apply,
    and ``figures/*.png``.

    Args:
        paths: sweep folders (``multirun/<date>/<time>``, ``multirun/``, a job folder, ...), or one
            ``jobs.csv`` an earlier report wrote (:func:`.collect.load_jobs_csv`: the statistics recomputed
            from its rows when the job folders are gone).
        out: the report folder.
        wandb: also send the summary to W&B when the runs were online (see :mod:`.wandb_upload`).
        say: where one-line progress messages go.
        test: how sources are compared within a method: ``welch`` (Welch t) or ``mannwhitney``.
        family: ``within`` (default: the Holm families stated in report.md) or ``global`` (one per table).
        equivalence: ``report.equivalence`` margins, e.g. ``["perplexity=2%", "accuracy=0.5"]`` (None: defaults).

    Raises:
        ReportError: a path does not exist, or holds no job folder; a jobs.csv beside folders, or more
            than one; an unknown ``family``; a bad margin.
    """
    from calib_sweep.report.figures import all_figures
    from calib_sweep.report.predictors import figures as predictor_figures
    from calib_sweep.report.predictors import markdown as predictor_markdown
    from calib_sweep.report.predictors import write_csv as write_predictor_csv
    from calib_sweep.report.html import render_html
    from calib_sweep.report.tables import build_tables, markdown, write_csvs
    from calib_sweep.report import adaptive, paired, variance

    from calib_sweep.report.evidence import check_family, parse_equivalence

    check_family(family)
    parse_equivalence(equivalence)  # bad input is refused before the jobs are read
    paths = [Path(p) for p in paths]
    jobs = load(paths)
    summary = summarize(jobs, test, family, equivalence)
    out = Path(out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    tables = build_tables(summary) + [t for t in [variance.table(summary.variance), adaptive.table(paths)] if t is not None]
    tables += paired.tables(summary.paired)
    figures = all_figures(summary) + predictor_figures(summary.predictors)
    figures += [f for f in [variance.figure(summary.variance)] if f is not None]
    figure_paths = []
    for figure in figures:
        path = out / "figures" / f"{figure.name}.png"
        path.write_bytes(figure.png)
        figure_paths.append(path)
    sources = [str(p) for p in paths]
    csvs = write_csvs(summary, out)
    csvs += [p for p in [write_predictor_csv(summary.predictors, out)] if p is not None]
    csvs += [p for p in [variance.write_csv(summary.variance, out)] if p is not None]
    csvs += paired.write_csvs(summary.paired, out)
    md = out / "report.md"
    md.write_text(markdown(summary, tables, sources, {f.title: f"figures/{f.name}.png" for f in figures})
                  + predictor_markdown(summary.predictors), encoding="utf-8")
    page = out / "report.html"
    page.write_text(render_html(summary, tables, figures, sources), encoding="utf-8")
    if wandb:
        from calib_sweep.report.wandb_upload import upload

        upload(summary, out, {f.title: p for f, p in zip(figures, figure_paths)}, say=say)
    return ReportFiles(out=out, html=page, markdown=md, csvs=csvs, figures=figure_paths, summary=summary)
