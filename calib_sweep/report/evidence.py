"""The study's question, answered with statistics: is a difference between calibration sets real, and is it
larger than the numbers' own numerical noise?

Computed from the grouped jobs of :mod:`calib_sweep.report.aggregate` with the tests of
:mod:`calib_sweep.report.statistics`, for the *evidence metrics* (per-task accuracy, mean accuracy,
perplexities, KL from the dense model):

- per group: bootstrap CIs of the mean and SD, and the calibration sets needed for a CI half-width of
  0.5 accuracy points or 1% of the mean perplexity (:class:`GroupEvidence`);
- per source: Brown-Forsythe test of equal dispersion between the data-dependent methods
  (:class:`DispersionTest`);
- per method: every pair of sources, Welch t (or Mann-Whitney U), Holm-corrected within one method x
  metric (:class:`SourceComparison`), and likewise every pair of calibration selection strategies
  (``selection.*`` settings) within one method x source (:func:`strategy_comparisons`);
- the numerical noise floor: reruns of one calibration set under ``threads`` / ``perturb.row_order_seed``
  (``experiment=noise_floor``) against the across-calibration-sets SD, per group and pooled per method
  (:class:`NoiseRow`), flagged when not clearly (one-sided F test, p < 0.05) above it;
- data-free controls (RTN, magnitude, dense): every job must give identical numbers whatever the
  calibration set (:class:`ControlCheck`);
- why groups are split (:func:`split_reasons`), groups whose jobs ran on different hardware
  (:func:`hardware_flags`) and groups that quantized weights already on a grid near their own
  (:func:`base_grid_flags`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from calib_sweep.report.aggregate import Group
from calib_sweep.report.collect import Job, finite
from calib_sweep.report.statistics import (
    ALPHA,
    NA,
    Comparison,
    Interval,
    Test,
    bootstrap_ci,
    equal_dispersion,
    pairwise,
    pooled_variance,
    sets_needed,
    variance_ratio,
)

#: Target CI half-widths for "sets needed": accuracy (a fraction in results.json) and perplexity (relative).
ACCURACY_HALF_WIDTH = 0.005  # 0.5 accuracy points
PERPLEXITY_RELATIVE_HALF_WIDTH = 0.01  # 1% of the mean perplexity
POOLED = "all sources (pooled)"


def data_free_methods() -> frozenset[str]:
    """Methods that never read calibration data (:data:`calib_sweep.methods.DATA_FREE`)."""
    from calib_sweep.methods import DATA_FREE

    return DATA_FREE


def is_evidence_metric(metric: str) -> bool:
    """Per-task accuracy, mean accuracy, perplexities and KL from the dense model."""
    parts = metric.split("/")
    return (
        (len(parts) == 3 and parts[0] == "zeroshot" and parts[2] == "acc")
        or metric == "zeroshot/mean_acc"
        or metric.startswith("perplexity/")
        or metric == "compression/kl_from_dense"
    )


def target_half_width(metric: str, mean: float | None) -> tuple[float, str] | None:
    """The "sets needed" target for a metric: (half-width in its units, label), or None (no target)."""
    if metric.startswith("zeroshot/"):
        return ACCURACY_HALF_WIDTH, "±0.5 points"
    if metric.startswith("perplexity/") and mean:
        return PERPLEXITY_RELATIVE_HALF_WIDTH * mean, "±1% of mean"
    return None


def _values(group: Group, metric: str) -> list[float]:
    stat = group.stats.get(metric)
    return finite(v for _, v in stat.values) if stat else []


@dataclass
class GroupEvidence:
    """Per metric of one group: bootstrap CIs (mean, SD), sets needed and its target."""

    ci_mean: dict[str, Interval | NA] = field(default_factory=dict)
    ci_sd: dict[str, Interval | NA] = field(default_factory=dict)
    needed: dict[str, int | NA] = field(default_factory=dict)
    target: dict[str, str] = field(default_factory=dict)


def group_evidence(group: Group) -> GroupEvidence:
    """Bootstrap CIs and sets needed for every evidence metric of ``group``."""
    out = GroupEvidence()
    for metric in group.stats:
        if not is_evidence_metric(metric):
            continue
        values = _values(group, metric)
        out.ci_mean[metric] = bootstrap_ci(values, "mean")
        out.ci_sd[metric] = bootstrap_ci(values, "sd")
        target = target_half_width(metric, group.stats[metric].mean)
        if target is None:
            out.needed[metric] = NA("no target for this metric")
        else:
            out.needed[metric] = sets_needed(values, target[0])
            out.target[metric] = target[1]
    return out


@dataclass
class DispersionTest:
    """Brown-Forsythe test between methods on one source (same model, size and variant)."""

    model: str
    source: str
    n_samples: int | None
    seq_len: int | None
    variant: str
    metric: str
    result: Test | NA
    excluded: list[str] = field(default_factory=list)


@dataclass
class SourceComparison:
    """One pair of sources within a method (a Holm family is one model x method x size x variant x metric)."""

    model: str
    method: str
    n_samples: int | None
    seq_len: int | None
    variant: str
    metric: str
    comparison: Comparison


@dataclass
class NoiseRow:
    """The noise floor of one method next to the across-calibration-sets spread of one group (or pooled).

    Attributes:
        source: the group's source, or :data:`POOLED`; noise_sd / noise_df: pooled SD of reruns of one
        calibration set and its degrees of freedom; noise_cells / noise_runs: calibration sets rerun and
        runs; perturbations: the perturbation labels seen; calib_sd / calib_df: SD across calibration sets
        (pooled within sources for the pooled row); test: one-sided F test; clearly_above: test p < 0.05
        (None when the test is n/a).
    """

    model: str
    method: str
    source: str
    n_samples: int | None
    seq_len: int | None
    variant: str
    metric: str
    noise_sd: float | NA
    noise_df: int
    noise_cells: int
    noise_runs: int
    perturbations: list[str]
    calib_sd: float | NA
    calib_df: int
    test: Test | NA
    clearly_above: bool | None


@dataclass
class ControlCheck:
    """A data-free method's jobs across calibration sets: identical figures expected (SD exactly 0)."""

    model: str
    method: str
    n_samples: int | None
    seq_len: int | None
    variant: str
    n_jobs: int
    sources: list[str]
    seeds: list[int | None]
    identical: bool
    differing: dict[str, float] = field(default_factory=dict)  # metric -> max - min


@dataclass
class Evidence:
    """Everything :mod:`calib_sweep.report.evidence` computes for one report."""

    groups: dict[tuple, GroupEvidence]
    dispersion_tests: list[DispersionTest]
    comparisons: list[SourceComparison]
    strategies: list[SourceComparison]
    noise: list[NoiseRow]
    controls: list[ControlCheck]
    splits: list[tuple[str, str, list[str]]]
    hardware_flags: list[tuple[str, list[str]]]
    test: str
    base_grid_flags: list[tuple[str, list[str]]] = field(default_factory=list)


def _method_key(group: Group) -> tuple:
    return (group.model, group.method, group.n_samples, group.seq_len, group.variant)


def dispersion_tests(groups: list[Group], metrics: list[str]) -> list[DispersionTest]:
    """Per model x source x size x variant x evidence metric: Brown-Forsythe between its data-dependent methods."""
    free = data_free_methods()
    cells: dict[tuple, list[Group]] = {}
    for g in groups:
        cells.setdefault((g.model, g.source, g.n_samples, g.seq_len, g.variant), []).append(g)
    out = []
    for (model, source, n, seq, variant), members in cells.items():
        used = [g for g in members if g.method not in free]
        if len(used) < 2:
            continue
        excluded = sorted(g.method for g in members if g.method in free)
        for metric in metrics:
            if not is_evidence_metric(metric):
                continue
            samples = {g.method: _values(g, metric) for g in used if _values(g, metric)}
            if len(samples) < 2:
                continue
            out.append(DispersionTest(model, source, n, seq, variant, metric, equal_dispersion(samples), excluded))
    return out


def source_comparisons(groups: list[Group], metrics: list[str], test: str = "welch") -> list[SourceComparison]:
    """Per data-dependent method: every pair of its sources, per evidence metric, Holm within the metric."""
    free = data_free_methods()
    families: dict[tuple, list[Group]] = {}
    for g in groups:
        if g.method not in free:
            families.setdefault(_method_key(g), []).append(g)
    out = []
    for (model, method, n, seq, variant), members in families.items():
        if len({g.source for g in members}) < 2:
            continue
        for metric in metrics:
            if not is_evidence_metric(metric):
                continue
            samples = {g.source: _values(g, metric) for g in members if _values(g, metric)}
            if len(samples) < 2:
                continue
            for comparison in pairwise(samples, test):
                out.append(SourceComparison(model, method, n, seq, variant, metric, comparison))
    return out


def _split_selection(group: Group) -> tuple[str, str]:
    """(variant without ``selection.*`` settings, the selection settings) of a group."""
    items = group.jobs[0].variant_items if group.jobs else []
    other = ", ".join(f"{k}={v}" for k, v in items if not k.startswith("selection."))
    chosen = ", ".join(f"{k.removeprefix('selection.')}={v}" for k, v in items if k.startswith("selection."))
    return other, chosen or "selection (default)"


def strategy_comparisons(groups: list[Group], metrics: list[str], test: str = "welch") -> list[SourceComparison]:
    """Per model x method x source x size: each calibration selection strategy (groups that differ only in
    ``selection.*`` settings) against the random draw when random ran in that family (``a`` = the strategy,
    ``b`` = random; Holm over those k-1 comparisons), else every pair of strategies; per evidence metric.

    The returned rows reuse :class:`SourceComparison`; ``comparison.a`` / ``.b`` name the strategies
    (their ``selection.*`` settings) and ``variant`` holds the other settings, the source is in ``method``'s
    row as ``<method> / <source>``.
    """
    families: dict[tuple, list[tuple[str, Group]]] = {}
    for g in groups:
        other, chosen = _split_selection(g)
        if not any(k.startswith("selection.") for k, _ in (g.jobs[0].variant_items if g.jobs else [])):
            continue
        families.setdefault((g.model, f"{g.method} / {g.source}", g.n_samples, g.seq_len, other), []).append((chosen, g))
    out = []
    for (model, method_source, n, seq, other), members in families.items():
        if len(members) < 2:
            continue
        for metric in metrics:
            if not is_evidence_metric(metric):
                continue
            samples = {label: _values(g, metric) for label, g in members if _values(g, metric)}
            if len(samples) < 2:
                continue
            reference = next((label for label, g in members if label in samples
                              and dict(g.jobs[0].variant_items).get("selection.name") == "random"), None)
            for comparison in pairwise(samples, test, reference=reference):
                out.append(SourceComparison(model, method_source, n, seq, other, metric, comparison))
    return out


def noise_floor(jobs: list[Job], groups: list[Group], metrics: list[str]) -> list[NoiseRow]:
    """Noise-floor SD per method (reruns of one calibration set under numerical perturbations) beside the
    SD across calibration sets of each of its groups and pooled over its sources.

    A noise cell is one group x seed with finished jobs under at least two different perturbations
    (:attr:`calib_sweep.report.collect.Job.perturbation`).  The noise floor is assumed not to depend on the
    source: a method's cells (any source) give its noise SD.
    """
    cells: dict[tuple, list[Job]] = {}
    for job in jobs:
        if job.status == "ok" and job.config:
            cells.setdefault((*job.group, job.seed), []).append(job)
    by_method: dict[tuple, list[list[Job]]] = {}
    for key, members in cells.items():
        if len({j.perturbation for j in members}) >= 2:
            model, method, _source, n, seq, variant = key[:6]
            by_method.setdefault((model, method, n, seq, variant), []).append(members)
    out = []
    for key, noise_cells in by_method.items():
        members = [g for g in groups if _method_key(g) == key]
        labels = sorted({j.perturbation or "none" for cell in noise_cells for j in cell})
        for metric in metrics:
            if not is_evidence_metric(metric):
                continue
            cell_values = [finite(j.metrics[metric] for j in cell if metric in j.metrics) for cell in noise_cells]
            noise = pooled_variance(cell_values)
            runs = sum(len(v) for v in cell_values)
            rows = [(g.source, [_values(g, metric)]) for g in members if _values(g, metric)]
            if len(rows) > 1:
                rows.append((POOLED, [v for _, (v,) in rows]))
            for source, value_sets in rows:
                signal = pooled_variance(value_sets)
                if isinstance(signal, NA):
                    signal = NA(f"n={len(value_sets[0])} < 2 calibration sets" if source != POOLED
                                else "no source with 2 or more calibration sets")
                if isinstance(noise, NA) or isinstance(signal, NA):
                    test: Test | NA = noise if isinstance(noise, NA) else signal
                else:
                    test = variance_ratio(signal, noise)
                out.append(NoiseRow(
                    model=key[0], method=key[1], source=source, n_samples=key[2], seq_len=key[3], variant=key[4],
                    metric=metric,
                    noise_sd=noise if isinstance(noise, NA) else noise[0] ** 0.5,
                    noise_df=0 if isinstance(noise, NA) else noise[1], noise_cells=len(noise_cells), noise_runs=runs,
                    perturbations=labels,
                    calib_sd=signal if isinstance(signal, NA) else signal[0] ** 0.5,
                    calib_df=0 if isinstance(signal, NA) else signal[1],
                    test=test, clearly_above=None if isinstance(test, NA) else test.p < ALPHA,
                ))
    return out


def data_free_controls(groups: list[Group]) -> list[ControlCheck]:
    """For each data-free method (model x size x variant) with 2+ finished jobs: are all figures identical?"""
    free = data_free_methods()
    families: dict[tuple, list[Group]] = {}
    for g in groups:
        if g.method in free:
            families.setdefault(_method_key(g), []).append(g)
    out = []
    for (model, method, n, seq, variant), members in families.items():
        jobs = [j for g in members for j in g.jobs if j.status == "ok" and not j.repeat]
        if len(jobs) < 2:
            continue
        differing = {}
        for metric in sorted({m for j in jobs for m in j.metrics}):
            values = [j.metrics[metric] for j in jobs if metric in j.metrics]
            if len(set(values)) > 1:
                good = finite(values)
                differing[metric] = (max(good) - min(good)) if good else float("nan")
        out.append(ControlCheck(model, method, n, seq, variant, len(jobs), sorted({j.source for j in jobs}),
                                sorted({j.seed for j in jobs}, key=lambda s: -1 if s is None else s),
                                not differing, differing))
    return out


def _kind(key: str) -> str:
    if key.startswith("eval."):
        return "evaluation protocol"
    if key.startswith(("samples.", "dataset.")):
        return "calibration setting"
    if key.startswith("method."):
        return "method setting"
    if key.startswith("model."):
        return "model setting"
    return "run setting"


def split_reasons(jobs: list[Job]) -> list[tuple[str, str, list[str]]]:
    """Config keys whose values differ between comparable jobs, so their jobs sit in separate groups:
    ``(key, kind, values seen)``, kind e.g. ``evaluation protocol``.  Jobs are never pooled across them."""
    seen: dict[str, set[str]] = {}
    for job in jobs:
        for key, value in job.variant_items:
            seen.setdefault(key, set()).add(value)
    return [(key, _kind(key), sorted(values)) for key, values in sorted(seen.items())]


def hardware_flags(groups: list[Group]) -> list[tuple[str, list[str]]]:
    """Groups whose finished jobs ran on more than one hardware label (``runtime.hardware.id``): (label, ids)."""
    out = []
    for g in groups:
        ids = sorted({j.hardware or "not recorded" for j in g.jobs if j.status == "ok" and not j.repeat})
        if len(ids) > 1:
            out.append((g.label, ids))
    return out


def base_grid_flags(groups: list[Group]) -> list[tuple[str, list[str]]]:
    """Groups whose finished jobs quantized weights already on a grid at or near their own: (label, warnings)
    (:func:`calib_sweep.models.storage.grid_warning`; on such a testbed rounding is favoured)."""
    out = []
    for g in groups:
        warnings = sorted({j.base_grid for j in g.jobs if j.status == "ok" and j.base_grid})
        if warnings:
            out.append((g.label, warnings))
    return out


def compute(jobs: list[Job], groups: list[Group], metrics: list[str], test: str = "welch") -> Evidence:
    """Every statistic of this module for one report (``test``: ``welch`` or ``mannwhitney`` for sources)."""
    return Evidence(
        groups={g.key: group_evidence(g) for g in groups},
        dispersion_tests=dispersion_tests(groups, metrics),
        comparisons=source_comparisons(groups, metrics, test),
        strategies=strategy_comparisons(groups, metrics, test),
        noise=noise_floor(jobs, groups, metrics),
        controls=data_free_controls(groups),
        splits=split_reasons([j for j in jobs if j.status != "superseded"]),
        hardware_flags=hardware_flags(groups),
        base_grid_flags=base_grid_flags(groups),
        test=test,
    )
