"""The report's statistical tests, each a thin wrapper over ``scipy.stats`` (or statsmodels for Holm).

Every function takes plain lists of floats (one value per calibration set: the finished seeds of a group)
and returns either a result that names its test, n and correction, or :class:`NA` with the reason a figure
cannot be computed (``n=2 < 3``, ``all 5 values equal``), which the tables print as ``n/a (reason)``,
never as 0 or NaN.

- :func:`bootstrap_ci`: 95% bootstrap confidence interval of a group's mean or SD
  (``scipy.stats.bootstrap``, BCa, seeded; seed and resamples recorded).
- :func:`equal_dispersion`: Brown-Forsythe test of equal variances between methods on one source
  (``scipy.stats.levene(center="median")``; Brown & Forsythe 1974).
- :func:`pairwise`: every pair of sources within a method, Welch's t-test (``ttest_ind(equal_var=False)``)
  with Hedges' g, or Mann-Whitney U with the rank-biserial correlation; p-values Holm-corrected within the
  family (``statsmodels.stats.multitest.multipletests(method="holm")``; Holm 1979).
- :func:`sets_needed`: how many calibration sets give a 95% CI half-width of a target, from the observed SD
  (Student t interval: smallest n with ``t_{0.975, n-1} * SD / sqrt(n) <= target``).
- :func:`pooled_variance` and :func:`variance_ratio`: the numerical noise floor (pooled within-cell
  variance of reruns of one calibration set) against the across-calibration-sets variance, one-sided F test
  (``scipy.stats.f.sf``).
"""

from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

#: Seed and resamples of every bootstrap in the report (recorded in its CSVs).
BOOTSTRAP_SEED = 0
BOOTSTRAP_RESAMPLES = 9999
CONFIDENCE = 0.95
#: Significance level at which a flag is raised (after correction where one applies).
ALPHA = 0.05


@dataclass(frozen=True)
class NA:
    """A statistic that cannot be computed, and why (printed ``n/a (reason)``)."""

    reason: str

    def __str__(self) -> str:
        return f"n/a ({self.reason})"


@dataclass(frozen=True)
class Interval:
    """A bootstrap confidence interval.

    Attributes:
        statistic: ``mean`` or ``sd`` (sample SD, ddof=1); estimate: its value on the data;
        low / high: the interval's ends (units of the metric); confidence: e.g. 0.95;
        method: scipy's interval method (``BCa``); n: values; n_resamples, seed: of the bootstrap.
    """

    statistic: str
    estimate: float
    low: float
    high: float
    confidence: float
    method: str
    n: int
    n_resamples: int
    seed: int


@dataclass(frozen=True)
class Test:
    """A hypothesis test's result: ``name`` (test and options), ``statistic``, ``p``, ``n`` per sample."""

    name: str
    statistic: float
    p: float
    n: dict[str, int]


@dataclass(frozen=True)
class Comparison:
    """One pair of samples (``a`` vs ``b``) compared within a family of comparisons.

    Attributes:
        a, b: sample names; n_a, n_b: sizes; mean_a, mean_b: means; test: ``welch`` or ``mannwhitney``;
        statistic: t (Welch) or U of ``a`` (Mann-Whitney); p: uncorrected two-sided p-value;
        p_holm: Holm-corrected over the family's computable comparisons; effect: Hedges' g (Welch) or
        rank-biserial r (Mann-Whitney), positive when ``a`` is larger; effect_name: which;
        na: set instead of the figures when the pair cannot be tested.
    """

    a: str
    b: str
    n_a: int
    n_b: int
    mean_a: float | None
    mean_b: float | None
    test: str
    statistic: float | None = None
    p: float | None = None
    p_holm: float | None = None
    effect: float | None = None
    effect_name: str = ""
    na: NA | None = None


def _why_not(values: Sequence[float], minimum: int) -> NA | None:
    n = len(values)
    if n < minimum:
        return NA(f"n={n} < {minimum}")
    if max(values) == min(values):
        return NA(f"all {n} values equal")
    return None


def _sd(x, axis=-1):
    return np.std(x, ddof=1, axis=axis)


def bootstrap_ci(values: Sequence[float], statistic: str = "mean", *, confidence: float = CONFIDENCE,
                 n_resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> Interval | NA:
    """Bootstrap confidence interval of the mean or the sample SD (ddof=1) of ``values``.

    ``scipy.stats.bootstrap`` with its default BCa method (Efron 1987), ``n_resamples`` resamples drawn
    by ``numpy.random.default_rng(seed)``, so the same values always give the same interval.

    Args:
        values: one value per calibration set (finite floats).
        statistic: ``mean`` or ``sd``.

    Returns:
        :class:`Interval`, or :class:`NA` when n < 3, all values are equal, or BCa is undefined.

    Raises:
        ValueError: ``statistic`` is neither ``mean`` nor ``sd``.
    """
    from scipy import stats

    if statistic not in ("mean", "sd"):
        raise ValueError(f"statistic={statistic!r} must be 'mean' or 'sd'")
    values = [float(v) for v in values]
    bad = _why_not(values, 3)
    if bad:
        return bad
    data = np.asarray(values, dtype=float)
    func = np.mean if statistic == "mean" else _sd
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # DegenerateDataWarning: handled below as n/a
        result = stats.bootstrap((data,), func, confidence_level=confidence, n_resamples=n_resamples,
                                 method="BCa", rng=np.random.default_rng(seed), vectorized=True, axis=-1)
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    if not (math.isfinite(low) and math.isfinite(high)):
        return NA("BCa interval undefined for these values")
    return Interval(statistic, float(func(data, axis=-1)), low, high, confidence, "BCa", len(values), n_resamples, seed)


def equal_dispersion(samples: Mapping[str, Sequence[float]]) -> Test | NA:
    """Brown-Forsythe test that the samples (e.g. one per method, same source) have equal variance.

    ``scipy.stats.levene(*samples, center="median")``: one-way ANOVA on absolute deviations from each
    sample's median (Brown & Forsythe 1974).  Samples with fewer than 2 values are left out.

    Returns:
        :class:`Test` (W statistic, p, n per sample), or :class:`NA` when fewer than two samples have
        n >= 2, or every sample is constant (the statistic is 0/0).
    """
    from scipy import stats

    usable = {name: [float(v) for v in vals] for name, vals in samples.items() if len(vals) >= 2}
    if len(usable) < 2:
        return NA(f"{len(usable)} sample(s) with n >= 2; need 2")
    if all(max(v) == min(v) for v in usable.values()):
        return NA("every sample's values are all equal")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 0/0 when no sample varies around its median: handled below
        statistic, p = stats.levene(*usable.values(), center="median")
    if not (math.isfinite(statistic) and math.isfinite(p)):
        return NA("statistic undefined (no spread around the medians)")
    return Test("Brown-Forsythe (levene, center=median)", float(statistic), float(p), {k: len(v) for k, v in usable.items()})


def hedges_g(a: Sequence[float], b: Sequence[float]) -> float:
    """Hedges' g of ``a`` vs ``b``: (mean_a - mean_b) / pooled SD, times the small-sample correction
    J = 1 - 3 / (4 (n_a + n_b) - 9) (Hedges 1981).  Needs n_a + n_b > 2 and a nonzero pooled SD."""
    na_, nb_ = len(a), len(b)
    va, vb = np.var(a, ddof=1), np.var(b, ddof=1)
    pooled = math.sqrt(((na_ - 1) * va + (nb_ - 1) * vb) / (na_ + nb_ - 2))
    return float((np.mean(a) - np.mean(b)) / pooled * (1 - 3 / (4 * (na_ + nb_) - 9)))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down correction of a family of p-values (statsmodels ``multipletests``, ``holm``)."""
    if not p_values:
        return []
    from statsmodels.stats.multitest import multipletests

    return [float(p) for p in multipletests(list(p_values), method="holm")[1]]


def pairwise(samples: Mapping[str, Sequence[float]], test: str = "welch", reference: str | None = None) -> list[Comparison]:
    """Every pair of samples compared (e.g. the sources within one method), Holm-corrected as one family;
    or, with ``reference``, every other sample against that one (many-to-one, e.g. each selection strategy
    against random), Holm over those k-1 comparisons only (more power than all k(k-1)/2 pairs).

    Args:
        samples: name -> values (one per calibration set).
        test: ``welch`` (``scipy.stats.ttest_ind(equal_var=False)``, effect Hedges' g) or
            ``mannwhitney`` (``scipy.stats.mannwhitneyu``, two-sided, effect rank-biserial
            r = 2U/(n_a n_b) - 1).
        reference: a key of ``samples``; each comparison is then ``a`` = another sample, ``b`` = it.

    Returns:
        One :class:`Comparison` per pair in name order; a pair with n < 3 on a side, or with no
        variation at all, carries :class:`NA` and is not part of the Holm family.

    Raises:
        ValueError: unknown ``test``, or ``reference`` not among the samples.
    """
    if test not in ("welch", "mannwhitney"):
        raise ValueError(f"test={test!r} must be 'welch' or 'mannwhitney'")
    if reference is not None and reference not in samples:
        raise ValueError(f"reference={reference!r} is not one of the samples {sorted(samples)}")
    pairs = ([(name, reference) for name in sorted(samples) if name != reference] if reference is not None
             else list(itertools.combinations(sorted(samples), 2)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy's precision-loss note on near-constant samples
        out = _compare_pairs(samples, test, pairs)
    tested = [i for i, c in enumerate(out) if c.na is None]
    for i, corrected in zip(tested, holm([out[i].p for i in tested])):
        c = out[i]
        out[i] = Comparison(**{**c.__dict__, "p_holm": corrected})
    return out


def _compare_pairs(samples: Mapping[str, Sequence[float]], test: str, pairs: list[tuple[str, str]]) -> list[Comparison]:
    from scipy import stats

    out: list[Comparison] = []
    for a, b in pairs:
        xa, xb = [float(v) for v in samples[a]], [float(v) for v in samples[b]]
        base = dict(a=a, b=b, n_a=len(xa), n_b=len(xb), mean_a=float(np.mean(xa)) if xa else None,
                    mean_b=float(np.mean(xb)) if xb else None, test=test)
        if min(len(xa), len(xb)) < 3:
            out.append(Comparison(**base, na=NA(f"n={min(len(xa), len(xb))} < 3")))
            continue
        if max(xa + xb) == min(xa + xb):
            out.append(Comparison(**base, na=NA(f"all {len(xa) + len(xb)} values equal")))
            continue
        if test == "welch":
            if max(xa) == min(xa) and max(xb) == min(xb):
                out.append(Comparison(**base, na=NA("both samples constant: t undefined")))
                continue
            result = stats.ttest_ind(xa, xb, equal_var=False)
            out.append(Comparison(**base, statistic=float(result.statistic), p=float(result.pvalue),
                                  effect=hedges_g(xa, xb), effect_name="hedges_g"))
        else:
            result = stats.mannwhitneyu(xa, xb, alternative="two-sided")
            r = 2 * float(result.statistic) / (len(xa) * len(xb)) - 1
            out.append(Comparison(**base, statistic=float(result.statistic), p=float(result.pvalue),
                                  effect=r, effect_name="rank_biserial"))
    return out


def sets_needed(values: Sequence[float], half_width: float, *, confidence: float = CONFIDENCE,
                max_sets: int = 1_000_000) -> int | NA:
    """Calibration sets needed for a ``confidence`` CI of the mean no wider than ``±half_width``.

    From the observed sample SD s (ddof=1) of ``values``: the smallest n >= 2 with
    ``t_{(1+confidence)/2, n-1} * s / sqrt(n) <= half_width`` (Student t interval, ``scipy.stats.t.ppf``).

    Args:
        values: the group's values (one per calibration set), in the metric's units.
        half_width: the target half-width, same units (e.g. 0.005 = 0.5 accuracy points; 1% of the mean
            perplexity).

    Returns:
        n, or :class:`NA` when n < 3, the values are all equal, or more than ``max_sets`` would be needed.

    Raises:
        ValueError: ``half_width`` not positive.
    """
    from scipy import stats

    if not half_width > 0:
        raise ValueError(f"half_width={half_width!r} must be > 0")
    values = [float(v) for v in values]
    bad = _why_not(values, 3)
    if bad:
        return bad
    s = float(np.std(values, ddof=1))
    n = np.arange(2, max_sets + 1)
    widths = stats.t.ppf((1 + confidence) / 2, n - 1) * s / np.sqrt(n)
    ok = np.nonzero(widths <= half_width)[0]
    if not ok.size:
        return NA(f"more than {max_sets} sets")
    return int(n[ok[0]])


def pooled_variance(cells: Sequence[Sequence[float]]) -> tuple[float, int] | NA:
    """Pooled within-cell variance and its degrees of freedom: sum((k_i - 1) s_i^2) / sum(k_i - 1).

    A cell is the reruns of one configuration (e.g. one calibration set under numerical perturbations,
    or the seeds of one source); cells with one value add nothing; a cell whose values are all equal adds
    exactly 0 (not the ~1e-33 rounding residue of ``np.var``, which would make an F ratio of 1e29).

    Returns:
        ``(variance, df)``, or :class:`NA` when no cell has two values.
    """
    used = [np.asarray(c, dtype=float) for c in cells if len(c) >= 2]
    df = sum(len(c) - 1 for c in used)
    if not df:
        return NA("no cell with 2 or more values")
    return float(sum((len(c) - 1) * (0.0 if c.max() == c.min() else np.var(c, ddof=1)) for c in used) / df), int(df)


def variance_ratio(signal: tuple[float, int], noise: tuple[float, int]) -> Test | NA:
    """One-sided F test that the across-calibration-sets variance exceeds the noise-floor variance.

    F = var_signal / var_noise with (df_signal, df_noise) degrees of freedom, p = ``scipy.stats.f.sf(F)``.
    A noise floor of exactly 0 (bit-identical reruns) gives F = inf and p = 0 when the signal varies.

    Returns:
        :class:`Test` (statistic F, p), or :class:`NA` when both variances are 0.
    """
    from scipy import stats

    (vs, dfs), (vn, dfn) = signal, noise
    if vs == 0 and vn == 0:
        return NA("no variation across calibration sets or reruns")
    if vn == 0:
        return Test("F (variance ratio, one-sided)", math.inf, 0.0, {"signal_df": dfs, "noise_df": dfn})
    f = vs / vn
    return Test("F (variance ratio, one-sided)", float(f), float(stats.f.sf(f, dfs, dfn)), {"signal_df": dfs, "noise_df": dfn})
