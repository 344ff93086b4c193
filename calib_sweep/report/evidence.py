"""The study's question, answered with statistics: is a difference between calibration sets real, and is it
larger than the numbers' own numerical noise?

Computed from the grouped jobs of :mod:`calib_sweep.report.aggregate` with the tests of
:mod:`calib_sweep.report.statistics`, for the *evidence metrics* (per-task accuracy, mean accuracy,
perplexities, KL from the dense model):

- per group: CIs of the mean (Student t) and SD (chi-square; Bonett from n = 5), and the calibration sets
  needed for a CI half-width of 0.5 accuracy points or 1% of the mean perplexity (:class:`GroupEvidence`);
- per source: Brown-Forsythe test of equal dispersion between the data-dependent methods
  (:class:`DispersionTest`);
- per method: every pair of sources, Welch t (or Mann-Whitney U), Holm-corrected within one method x
  metric (:class:`SourceComparison`), and likewise every pair of calibration selection strategies
  (``selection.*`` settings) within one method x source (:func:`strategy_comparisons`);
- the numerical noise floor: reruns of one calibration set under ``threads`` / ``perturb.row_order_seed``
  (``experiment=noise_floor``) against the across-calibration-sets SD, per group and pooled per method
  (:class:`NoiseRow`), flagged when not clearly (one-sided F test, p < 0.05) above it;
- for every row of the source comparisons, strategy comparisons and dispersion tests, its Holm family
  (:data:`FAMILIES`; ``family="global"``: one family per table), the minimum detectable effect at 80% power
  for its n and the family's alpha / m, an equivalence test (TOST) against the margins of
  ``report.equivalence`` (:func:`parse_equivalence`, defaults :data:`DEFAULT_EQUIVALENCE`) and one verdict:
  ``different``, ``equivalent`` or ``inconclusive`` (:class:`Inference`);
- data-free controls (RTN, magnitude, dense): every job must give identical numbers whatever the
  calibration set (:class:`ControlCheck`);
- why groups are split (:func:`split_reasons`), groups whose jobs ran on different hardware
  (:func:`hardware_flags`) and groups that quantized weights already on a grid near their own
  (:func:`base_grid_flags`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from calib_sweep.report.aggregate import Group
from calib_sweep.report.collect import Job, ReportError, finite
from calib_sweep.report.statistics import (
    ALPHA,
    NA,
    Comparison,
    Interval,
    Test,
    dispersion_mde,
    equal_dispersion,
    holm,
    mann_whitney_min_p,
    mean_difference_mde,
    mean_interval,
    pairwise,
    pooled_sd,
    pooled_variance,
    sd_interval,
    sd_ratio_equivalence,
    sets_needed,
    tost,
    variance_ratio,
    verdict,
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


#: ``report.equivalence`` defaults (``--equivalence KEY=MARGIN`` overrides): accuracy in points (1 = 1 point;
#: results.json holds fractions), ``N%`` relative to the mean of the two compared groups, ``sd_ratio`` a factor
#: on SDs for the dispersion tests.
DEFAULT_EQUIVALENCE = {"accuracy": "1", "perplexity": "1%", "kl": "1%", "sd_ratio": "1.5"}
EQUIVALENCE_CLASSES = ("accuracy", "perplexity", "kl", "sd_ratio")

#: ``family`` options: ``within`` (default) = the narrow families of :data:`FAMILIES`; ``global`` = one Holm
#: family over each whole table.
FAMILY_OPTIONS = ("within", "global")
#: What one Holm family is, per table, for ``family="within"``.
FAMILIES = {
    "source_comparisons": "model × method × size × variant × metric: every pair of that method's sources",
    "strategy_comparisons": "model × method × source × size × other settings × metric: each strategy vs random "
                            "when random ran (k-1 comparisons), else every pair",
    "dispersion_tests": "one test (model × source × size × variant × metric): uncorrected",
}
GLOBAL_FAMILY = "the whole table (--family global)"


@dataclass(frozen=True)
class Margin:
    """An equivalence margin for one metric (class): ``value`` in the metric's raw units (accuracy as a
    fraction), or a fraction of the compared means when ``relative``; ``text`` as given (``perplexity=1%``)."""

    key: str
    value: float
    relative: bool
    text: str

    def absolute(self, mean: float | None) -> float | None:
        """The margin in the metric's units for a pair whose means average ``mean`` (None when undefined)."""
        if not self.relative:
            return self.value
        return None if mean is None or not math.isfinite(mean) or mean == 0 else self.value * abs(mean)

    @property
    def rule(self) -> str:
        """In words: ``1% of the mean``, ``1 accuracy point``, ``SD ratio 1.5``, ``0.5``."""
        if self.key == "sd_ratio":
            return f"SD ratio {self.value:g}"
        if self.relative:
            return f"{self.value * 100:g}% of the mean"
        if self.key == "accuracy" or self.key.startswith("zeroshot/"):
            points = self.value * 100
            return f"{points:g} accuracy point" + ("" if points == 1 else "s")
        return f"{self.value:g}"


def _equivalence_fix(key: str) -> str:
    return f"--equivalence {key}={DEFAULT_EQUIVALENCE.get(key, '1%')}"


def parse_equivalence(items: Iterable[str] | Mapping[str, object] | None = None) -> dict[str, Margin]:
    """``report.equivalence``: the equivalence margins, defaults (:data:`DEFAULT_EQUIVALENCE`) updated by ``items``.

    Args:
        items: ``KEY=MARGIN`` strings (the ``--equivalence`` option) or a mapping KEY -> MARGIN. KEY is a class
            (``accuracy``: every zero-shot accuracy, in points; ``perplexity``; ``kl``: compression/kl_from_dense;
            ``sd_ratio``: the dispersion tests, a factor > 1) or one evidence metric (``perplexity/wikitext``,
            ``zeroshot/boolq/acc``), which takes precedence over its class. MARGIN is a number in the metric's
            display units (accuracy points, perplexity) or ``N%`` of the compared means.

    Returns:
        KEY -> :class:`Margin`.

    Raises:
        ReportError: no ``=``, an unknown KEY, a MARGIN that is not a positive number (or an ``sd_ratio``
            not > 1), each as one line that names the value and the fix.
    """
    merged: dict[str, str] = dict(DEFAULT_EQUIVALENCE)
    given: list[tuple[str, str, str]] = []
    if isinstance(items, Mapping):
        given = [(str(k), str(v), f"{k}={v}") for k, v in items.items()]
    else:
        for item in items or []:
            if "=" not in item:
                raise ReportError(f"--equivalence {item!r}: expected METRIC=MARGIN. Fix: e.g. --equivalence perplexity=1% "
                                  "or --equivalence accuracy=1 (points)")
            key, value = item.split("=", 1)
            given.append((key.strip(), value.strip(), item))
    for key, value, item in given:
        if key not in EQUIVALENCE_CLASSES and not is_evidence_metric(key):
            raise ReportError(f"--equivalence {item}: unknown metric {key!r}. Fix: one of {', '.join(EQUIVALENCE_CLASSES)} "
                              "or an evidence metric such as perplexity/wikitext or zeroshot/boolq/acc")
        merged[key] = value
    out = {}
    for key, value in merged.items():
        item = f"{key}={value}"
        relative = value.endswith("%")
        try:
            number = float(value[:-1] if relative else value)
        except ValueError:
            raise ReportError(f"--equivalence {item}: margin {value!r} is not a number. Fix: e.g. "
                              f"{_equivalence_fix(key if key in DEFAULT_EQUIVALENCE else 'perplexity')}") from None
        if key == "sd_ratio":
            if relative or not (math.isfinite(number) and number > 1):
                raise ReportError(f"--equivalence {item}: the SD-ratio margin must be a number > 1. Fix: e.g. "
                                  f"{_equivalence_fix('sd_ratio')}")
        elif not (math.isfinite(number) and number > 0):
            raise ReportError(f"--equivalence {item}: the margin must be > 0. Fix: e.g. "
                              f"{_equivalence_fix(key if key in DEFAULT_EQUIVALENCE else 'perplexity')}")
        if relative:
            number /= 100
        elif key == "accuracy" or key.startswith("zeroshot/"):
            number /= 100  # points -> fraction
        out[key] = Margin(key, number, relative, item)
    return out


def margin_for(metric: str, margins: Mapping[str, Margin]) -> Margin | None:
    """The margin that applies to ``metric``: its own entry, else its class's (None: no margin)."""
    if metric in margins:
        return margins[metric]
    if metric.startswith("zeroshot/"):
        return margins.get("accuracy")
    if metric.startswith("perplexity/"):
        return margins.get("perplexity")
    if metric == "compression/kl_from_dense":
        return margins.get("kl")
    return None


def check_family(family: str) -> str:
    """``family`` itself when it is one of :data:`FAMILY_OPTIONS`.

    Raises:
        ReportError: any other value (one line with the fix).
    """
    if family not in FAMILY_OPTIONS:
        raise ReportError(f"--family {family!r} is not a Holm-family option. Fix: --family within (default: the "
                          "families stated in report.md) or --family global (one Holm family over each whole table)")
    return family


@dataclass(frozen=True)
class Inference:
    """Power, equivalence and verdict of one comparison or dispersion test.

    Attributes:
        family: what its Holm family is (:data:`FAMILIES` or :data:`GLOBAL_FAMILY`); family_size: m, the
            tested rows of that family; alpha: ALPHA / m, the per-test level of the MDE (Holm's first step,
            so conservative); p_adjusted: the test's Holm-corrected p (None: not tested);
        mde: minimum detectable effect at 80% power in the metric's units (difference of means; for a
            dispersion test the SD one method needs, given the others' pooled SD), or :class:`NA`;
        mde_sd: the same in SDs (Cohen's d on the pooled SD; for a dispersion test the SD ratio);
        margin: the equivalence margin (metric units; SD ratio for dispersion) or None; margin_rule: in words;
        equivalence_p / equivalence_p_adjusted: the TOST p and its Holm correction over the family;
        verdict: ``different``, ``equivalent``, ``inconclusive``, or ``n/a (reason)``.
    """

    family: str
    family_size: int
    alpha: float
    p_adjusted: float | None
    mde: float | NA
    mde_sd: float | NA
    margin: float | None
    margin_rule: str
    equivalence_p: float | NA | None
    equivalence_p_adjusted: float | None
    verdict: str


def _values(group: Group, metric: str) -> list[float]:
    stat = group.stats.get(metric)
    return finite(v for _, v in stat.values) if stat else []


@dataclass
class GroupEvidence:
    """Per metric of one group: CIs of the mean (Student t) and SD (chi-square / Bonett), sets needed and its target."""

    ci_mean: dict[str, Interval | NA] = field(default_factory=dict)
    ci_sd: dict[str, Interval | NA] = field(default_factory=dict)
    needed: dict[str, int | NA] = field(default_factory=dict)
    target: dict[str, str] = field(default_factory=dict)


def group_evidence(group: Group) -> GroupEvidence:
    """CIs (:func:`~calib_sweep.report.statistics.mean_interval`, :func:`~calib_sweep.report.statistics.sd_interval`)
    and sets needed for every evidence metric of ``group``."""
    out = GroupEvidence()
    for metric in group.stats:
        if not is_evidence_metric(metric):
            continue
        values = _values(group, metric)
        out.ci_mean[metric] = mean_interval(values)
        out.ci_sd[metric] = sd_interval(values)
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
    samples: dict[str, list[float]] = field(default_factory=dict)
    inference: Inference | None = None


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
    values_a: list[float] = field(default_factory=list)
    values_b: list[float] = field(default_factory=list)
    inference: Inference | None = None


@dataclass
class NoiseRow:
    """The noise floor of one method next to the across-calibration-sets spread of one group (or pooled).

    Attributes:
        source: the group's source, or :data:`POOLED`; noise_sd / noise_df: pooled SD of reruns of one
        calibration set and its degrees of freedom; noise_cells / noise_runs: calibration sets rerun and
        distinct runs; noise_duplicates: reruns left out because every metric equalled an earlier rerun of
        the same set (the perturbation changed nothing: no degree of freedom, issue 27); perturbations: the perturbation labels seen; calib_sd / calib_df: SD across calibration sets
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
    noise_duplicates: int
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
    family: str = "within"
    margins: dict[str, Margin] = field(default_factory=dict)


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
            out.append(DispersionTest(model, source, n, seq, variant, metric, equal_dispersion(samples), excluded, samples))
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
                out.append(SourceComparison(model, method, n, seq, variant, metric, comparison,
                                            samples[comparison.a], samples[comparison.b]))
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

    A strategy that shares calibration sets with random (the same token SHA-256: ``dedup`` that removed
    nothing draws random's own windows) is not an independent sample: its row carries
    ``n/a (not independent: k of its n calibration sets are the reference's own ...)`` and stays out of
    the Holm family (issue 27 item 6).

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
            shared: dict[str, tuple[int, int]] = {}
            if reference is not None:
                ref_sets = _set_hashes(dict(members)[reference])
                for label, g in members:
                    mine = _set_hashes(g)
                    if label != reference and label in samples and mine & ref_sets:
                        shared[label] = (len(mine & ref_sets), len(mine))
            tested = {label: values for label, values in samples.items() if label not in shared}
            rows = pairwise(tested, test, reference=reference) if len(tested) >= 2 else []
            for label, (common, total) in sorted(shared.items()):
                xa, xb = samples[label], samples[reference]
                rows.append(Comparison(a=label, b=reference, n_a=len(xa), n_b=len(xb), mean_a=sum(xa) / len(xa),
                                       mean_b=sum(xb) / len(xb), test=test, na=NA(
                                           f"not independent: {common} of its {total} calibration sets are the reference's own "
                                           "(same token SHA-256)")))
            for comparison in rows:
                out.append(SourceComparison(model, method_source, n, seq, other, metric, comparison,
                                            samples[comparison.a], samples[comparison.b]))
    return out


def _set_hashes(group: Group) -> set[str]:
    """The token SHA-256 of the group's calibration sets (``results.json["calibration"]["token_sha256"]``)."""
    return {j.calibration_sha256 for j in group.jobs if j.status == "ok" and not j.repeat and j.calibration_sha256}


def _distinct_runs(cell: list[Job]) -> list[Job]:
    """The reruns of one calibration set whose metrics are not all equal to an earlier rerun's (order kept).

    A rerun that reproduces another bit for bit (Wanda under threads=1 vs threads=2) is one observation,
    not two: counting it would add a degree of freedom that the data do not have.
    """
    seen: set[tuple] = set()
    out = []
    for job in cell:
        key = tuple(sorted(job.metrics.items()))
        if key not in seen:
            seen.add(key)
            out.append(job)
    return out


def noise_floor(jobs: list[Job], groups: list[Group], metrics: list[str]) -> list[NoiseRow]:
    """Noise-floor SD per method (reruns of one calibration set under numerical perturbations) beside the
    SD across calibration sets of each of its groups and pooled over its sources.

    A noise cell is one group x seed with finished jobs under at least two different perturbations
    (:attr:`calib_sweep.report.collect.Job.perturbation`).  The noise floor is assumed not to depend on the
    source: a method's cells (any source) give its noise SD.  Reruns identical to an earlier rerun of the
    same set in every metric are dropped first (:func:`_distinct_runs`): their df would be fictitious.
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
        distinct_cells = [_distinct_runs(cell) for cell in noise_cells]
        duplicates = sum(len(c) for c in noise_cells) - sum(len(c) for c in distinct_cells)
        for metric in metrics:
            if not is_evidence_metric(metric):
                continue
            cell_values = [finite(j.metrics[metric] for j in cell if metric in j.metrics) for cell in distinct_cells]
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
                    noise_duplicates=duplicates,
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


def _families(rows: list, key, family: str) -> dict[object, list[int]]:
    out: dict[object, list[int]] = {}
    for i, row in enumerate(rows):
        out.setdefault("all" if family == "global" else key(row), []).append(i)
    return out


def _finite_p(p: float | NA | None) -> bool:
    return isinstance(p, float) and math.isfinite(p)


def infer_comparisons(rows: list[SourceComparison], table: str, family: str, margins: Mapping[str, Margin],
                      test: str = "welch") -> list[SourceComparison]:
    """Each row with its Holm family's correction, MDE, TOST and verdict (:class:`Inference`).

    The family is :data:`FAMILIES` ``[table]`` (the rows of one model × method(/source) × size × variant ×
    metric) or, for ``family="global"``, the whole table; ``comparison.p_holm`` is recomputed over it. The MDE
    is :func:`~calib_sweep.report.statistics.mean_difference_mde` at alpha = ALPHA / m (m: tested rows of the
    family) times the pair's pooled SD; for Mann-Whitney it is the t test's divided by sqrt(3/pi) (asymptotic
    relative efficiency), or n/a when its smallest possible p is not below alpha / m. The TOST
    (:func:`~calib_sweep.report.statistics.tost`, Welch) uses :func:`margin_for` of the metric, a relative
    margin taken of the mean of the two means; its p-values are Holm-corrected over the same family.
    """
    rule = GLOBAL_FAMILY if family == "global" else FAMILIES[table]
    out = list(rows)
    for members in _families(rows, lambda r: (r.model, r.method, r.n_samples, r.seq_len, r.variant, r.metric), family).values():
        tested = [i for i in members if rows[i].comparison.na is None and _finite_p(rows[i].comparison.p)]
        m = len(tested)
        alpha = ALPHA / max(m, 1)
        p_adj = dict(zip(tested, holm([rows[i].comparison.p for i in tested])))
        margin_of: dict[int, Margin | None] = {}
        eq_p: dict[int, float | NA | None] = {}
        for i in members:
            r = rows[i]
            margin = margin_for(r.metric, margins)
            c = r.comparison
            mean = None if c.mean_a is None or c.mean_b is None else (c.mean_a + c.mean_b) / 2
            value = margin.absolute(mean) if margin else None
            margin_of[i] = margin
            eq_p[i] = (c.na if c.na else (tost(r.values_a, r.values_b, value) if value else None))
        eq_tested = [i for i in tested if _finite_p(eq_p[i])]
        eq_adj = dict(zip(eq_tested, holm([eq_p[i] for i in eq_tested])))
        for i in members:
            r = rows[i]
            c = r.comparison
            margin = margin_of[i]
            mean = None if c.mean_a is None or c.mean_b is None else (c.mean_a + c.mean_b) / 2
            if c.na is not None:
                mde_sd: float | NA = c.na
                mde: float | NA = c.na
                word = str(c.na)
            else:
                mde_sd = mean_difference_mde(c.n_a, c.n_b, alpha)
                if test == "mannwhitney" and not isinstance(mde_sd, NA):
                    lowest = mann_whitney_min_p(c.n_a, c.n_b)
                    mde_sd = (NA(f"Mann-Whitney's smallest p at n={c.n_a}, {c.n_b} is {lowest:.3g}, not below alpha/m = {alpha:.3g}")
                              if lowest >= alpha else mde_sd / math.sqrt(3 / math.pi))
                sd = pooled_sd(r.values_a, r.values_b)
                mde = mde_sd if isinstance(mde_sd, NA) else (mde_sd * sd if sd > 0 else NA("pooled SD 0"))
                word = verdict(p_adj.get(i), eq_adj.get(i))
            out[i] = dataclasses.replace(r, comparison=dataclasses.replace(c, p_holm=p_adj.get(i)), inference=Inference(
                family=rule, family_size=m, alpha=alpha, p_adjusted=p_adj.get(i), mde=mde, mde_sd=mde_sd,
                margin=margin.absolute(mean) if margin else None, margin_rule=margin.rule if margin else "no margin",
                equivalence_p=eq_p[i], equivalence_p_adjusted=eq_adj.get(i), verdict=word))
    return out


def infer_dispersion(rows: list[DispersionTest], family: str, margins: Mapping[str, Margin]) -> list[DispersionTest]:
    """Each Brown-Forsythe row with its family's correction (uncorrected, or Holm over the table for
    ``family="global"``), its minimum detectable SD ratio (:func:`~calib_sweep.report.statistics.dispersion_mde`
    at alpha / m; in metric units: that ratio times the samples' pooled SD), an equivalence test of the SDs within
    the ``sd_ratio`` margin (:func:`~calib_sweep.report.statistics.sd_ratio_equivalence`, Holm over the family)
    and the verdict."""
    rule = GLOBAL_FAMILY if family == "global" else FAMILIES["dispersion_tests"]
    margin = margins.get("sd_ratio")
    out = list(rows)
    for members in _families(rows, lambda r: id(r), family).values():
        tested = [i for i in members if isinstance(rows[i].result, Test)]
        m = len(tested)
        alpha = ALPHA / max(m, 1)
        p_adj = dict(zip(tested, holm([rows[i].result.p for i in tested])))
        eq_p = {i: (sd_ratio_equivalence(rows[i].samples, margin.value) if margin else None) for i in tested}
        eq_tested = [i for i in tested if _finite_p(eq_p[i])]
        eq_adj = dict(zip(eq_tested, holm([eq_p[i] for i in eq_tested])))
        for i in members:
            r = rows[i]
            if isinstance(r.result, NA):
                ratio: float | NA = r.result
                mde: float | NA = r.result
                word = str(r.result)
            else:
                ratio = dispersion_mde([len(v) for v in r.samples.values()], alpha)
                pooled = pooled_variance(list(r.samples.values()))
                sd = pooled if isinstance(pooled, NA) else pooled[0] ** 0.5
                mde = ratio if isinstance(ratio, NA) else (ratio * sd if not isinstance(sd, NA) and sd > 0 else NA("pooled SD 0"))
                small = min(len(v) for v in r.samples.values())
                word = str(NA(f"n={small} < 3")) if small < 3 else verdict(p_adj.get(i), eq_adj.get(i))
            out[i] = dataclasses.replace(r, inference=Inference(
                family=rule, family_size=m, alpha=alpha, p_adjusted=p_adj.get(i), mde=mde, mde_sd=ratio,
                margin=margin.value if margin else None, margin_rule=margin.rule if margin else "no margin",
                equivalence_p=eq_p.get(i), equivalence_p_adjusted=eq_adj.get(i), verdict=word))
    return out


def check_margins(margins: Mapping[str, Margin], metrics: Iterable[str]) -> None:
    """Every metric named in ``margins`` (not a class) was reported by some job.

    Raises:
        ReportError: one that was not (one line with the metrics that were).
    """
    present = sorted(m for m in metrics if is_evidence_metric(m))
    for key, margin in margins.items():
        if key not in EQUIVALENCE_CLASSES and key not in present:
            raise ReportError(f"--equivalence {margin.text}: no job reported metric {key!r}. Fix: one of "
                              f"{', '.join(EQUIVALENCE_CLASSES)} or a reported metric ({', '.join(present) or 'none'})")


def compute(jobs: list[Job], groups: list[Group], metrics: list[str], test: str = "welch", family: str = "within",
            equivalence: Iterable[str] | Mapping[str, object] | None = None) -> Evidence:
    """Every statistic of this module for one report.

    Args:
        test: ``welch`` or ``mannwhitney`` for sources and strategies.
        family: ``within`` (the families of :data:`FAMILIES`) or ``global`` (one Holm family per table).
        equivalence: ``report.equivalence`` margins (:func:`parse_equivalence`; None: the defaults).

    Raises:
        ReportError: an unknown ``family``, a bad margin, or a margin for a metric no job reported.
    """
    check_family(family)
    margins = parse_equivalence(equivalence)
    check_margins(margins, metrics)
    return Evidence(
        groups={g.key: group_evidence(g) for g in groups},
        dispersion_tests=infer_dispersion(dispersion_tests(groups, metrics), family, margins),
        comparisons=infer_comparisons(source_comparisons(groups, metrics, test), "source_comparisons", family, margins, test),
        strategies=infer_comparisons(strategy_comparisons(groups, metrics, test), "strategy_comparisons", family, margins, test),
        noise=noise_floor(jobs, groups, metrics),
        controls=data_free_controls(groups),
        splits=split_reasons([j for j in jobs if j.status != "superseded"]),
        hardware_flags=hardware_flags(groups),
        base_grid_flags=base_grid_flags(groups),
        test=test,
        family=family,
        margins=margins,
    )
