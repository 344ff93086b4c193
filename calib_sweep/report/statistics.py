"""The report's statistical tests and intervals, each a thin wrapper over ``scipy.stats`` or statsmodels.

Every function takes plain lists of floats (one value per calibration set: the finished seeds of a group)
and returns either a result that names its test, n and correction, or :class:`NA` with the reason a figure
cannot be computed (``n=2 < 3``, ``all 5 values equal``), which the tables print as ``n/a (reason)``,
never as 0 or NaN.

Intervals (chosen because they cover at the n the report runs, ``bench/ci_coverage.py``; a bootstrap
(BCa) interval undercovers there: 85% for the mean and 66% for the SD at n = 5, issue 27):

- :func:`mean_interval`: 95% Student t interval of a group's mean (``scipy.stats.t.ppf``).
- :func:`sd_interval`: 95% interval of a group's SD (ddof=1): chi-square (``scipy.stats.chi2.ppf``, normal
  theory) for n = 3, 4, Bonett's kurtosis-adjusted interval (Bonett 2006) from n = :data:`BONETT_MIN_N` = 5 on,
  where a skewed distribution makes the chi-square interval undercover (92% at n = 5, 90% at n = 20 for
  lognormal data with log-SD 0.25); Bonett is conservative at n = 5-9 (97-99%, up to 1.8x chi-square's width).

Tests, power and equivalence:

- :func:`equal_dispersion`: Brown-Forsythe test of equal variances between methods on one source
  (``scipy.stats.levene(center="median")``; Brown & Forsythe 1974); :func:`dispersion_mde` its minimum
  detectable SD ratio (seeded simulation), :func:`sd_ratio_equivalence` a TOST on SD ratios (F tests).
- :func:`pairwise`: every pair of sources within a method, Welch's t-test (``ttest_ind(equal_var=False)``)
  with Hedges' g, or Mann-Whitney U with the rank-biserial correlation; p-values Holm-corrected within the
  family (``statsmodels.stats.multitest.multipletests(method="holm")``; Holm 1979).
- :func:`mean_difference_mde`: minimum detectable difference of two means at 80% power
  (``statsmodels.stats.power.TTestIndPower.solve_power``); :func:`tost`: two one-sided t tests of
  equivalence (``statsmodels.stats.weightstats.ttost_ind``); :func:`verdict`: ``different``,
  ``equivalent`` or ``inconclusive``.
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

CONFIDENCE = 0.95
#: Significance level at which a flag is raised (after correction where one applies).
ALPHA = 0.05
#: Power at which the minimum detectable effect is stated.
POWER = 0.80
#: From this n on, the SD interval is Bonett's (kurtosis-adjusted; defined from n = 5); below it, chi-square.
BONETT_MIN_N = 5
#: Smallest n for an interval, a power figure or a test (below it: ``n/a (n=2 < 3)``).
MIN_N = 3
#: Seed and replicates of the simulation behind :func:`dispersion_mde`.
SIMULATION_SEED = 0
SIMULATION_REPLICATES = 4000

MEAN_CI_METHOD = "Student t (scipy.stats.t.ppf)"
SD_CI_CHI2 = "chi-square (scipy.stats.chi2.ppf; normal theory)"
SD_CI_BONETT = "Bonett 2006 (kurtosis-adjusted; n >= 5)"


@dataclass(frozen=True)
class NA:
    """A statistic that cannot be computed, and why (printed ``n/a (reason)``)."""

    reason: str

    def __str__(self) -> str:
        return f"n/a ({self.reason})"


@dataclass(frozen=True)
class Interval:
    """A confidence interval of a group's mean or SD.

    Attributes:
        statistic: ``mean`` or ``sd`` (sample SD, ddof=1); estimate: its value on the data;
        low / high: the interval's ends (units of the metric); confidence: e.g. 0.95;
        method: how it was computed (:data:`MEAN_CI_METHOD`, :data:`SD_CI_CHI2`, :data:`SD_CI_BONETT`);
        n: values.
    """

    statistic: str
    estimate: float
    low: float
    high: float
    confidence: float
    method: str
    n: int


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


def t_bounds(x: np.ndarray, confidence: float = CONFIDENCE) -> tuple[np.ndarray, np.ndarray]:
    """Student t interval of the mean along the last axis of ``x`` (shape ``[..., n]``, n >= 2):
    ``mean -+ t_{(1+confidence)/2, n-1} * s / sqrt(n)`` (``scipy.stats.t.ppf``), arrays of shape ``[...]``."""
    from scipy import stats

    x = np.asarray(x, dtype=float)
    n = x.shape[-1]
    half = stats.t.ppf((1 + confidence) / 2, n - 1) * np.std(x, ddof=1, axis=-1) / math.sqrt(n)
    mean = np.mean(x, axis=-1)
    return mean - half, mean + half


def chi2_sd_bounds(x: np.ndarray, confidence: float = CONFIDENCE) -> tuple[np.ndarray, np.ndarray]:
    """Chi-square interval of the SD along the last axis of ``x`` (normal theory):
    ``s * sqrt((n-1) / chi2_{(1+c)/2, n-1})`` to ``s * sqrt((n-1) / chi2_{(1-c)/2, n-1})`` (``scipy.stats.chi2.ppf``)."""
    from scipy import stats

    x = np.asarray(x, dtype=float)
    n = x.shape[-1]
    s = np.std(x, ddof=1, axis=-1)
    return (s * math.sqrt((n - 1) / stats.chi2.ppf((1 + confidence) / 2, n - 1)),
            s * math.sqrt((n - 1) / stats.chi2.ppf((1 - confidence) / 2, n - 1)))


def bonett_sd_bounds(x: np.ndarray, confidence: float = CONFIDENCE) -> tuple[np.ndarray, np.ndarray]:
    """Bonett's (2006, Comput. Stat. Data Anal. 50:775) interval of the SD along the last axis of ``x`` (n >= 5):
    ``sqrt(c s^2 exp(-+ z se))`` with ``c = n / (n - z)``, ``se = c sqrt((k - (n-3)/n) / (n-1))`` and the kurtosis
    ``k = n sum((x - m)^4) / sum((x - mean)^2)^2`` around the trimmed mean m (trim ``1 / (2 sqrt(n - 4))``,
    ``scipy.stats.trim_mean``); z = ``scipy.stats.norm.ppf((1 + confidence) / 2)``."""
    from scipy import stats

    x = np.asarray(x, dtype=float)
    n = x.shape[-1]
    if n < 5:
        raise ValueError(f"Bonett's interval needs n >= 5 (got {n})")
    z = stats.norm.ppf((1 + confidence) / 2)
    var = np.var(x, ddof=1, axis=-1)
    m = stats.trim_mean(x, 1 / (2 * math.sqrt(n - 4)), axis=-1)
    dev2 = np.sum((x - np.mean(x, axis=-1, keepdims=True)) ** 2, axis=-1)
    kurt = n * np.sum((x - np.expand_dims(m, -1)) ** 4, axis=-1) / dev2 ** 2
    c = n / (n - z)
    se = c * np.sqrt(np.maximum(kurt - (n - 3) / n, 0.0) / (n - 1))
    return np.sqrt(c * var * np.exp(-z * se)), np.sqrt(c * var * np.exp(z * se))


def sd_ci_method(n: int) -> str:
    """The SD interval used at ``n``: chi-square below :data:`BONETT_MIN_N`, Bonett from it on."""
    return SD_CI_BONETT if n >= BONETT_MIN_N else SD_CI_CHI2


def mean_interval(values: Sequence[float], *, confidence: float = CONFIDENCE) -> Interval | NA:
    """Student t confidence interval of the mean of ``values`` (:func:`t_bounds`).

    Returns:
        :class:`Interval` (units of the values), or :class:`NA` when n < 3 or all values are equal.
    """
    values = [float(v) for v in values]
    bad = _why_not(values, MIN_N)
    if bad:
        return bad
    low, high = t_bounds(np.asarray(values), confidence)
    return Interval("mean", float(np.mean(values)), float(low), float(high), confidence, MEAN_CI_METHOD, len(values))


def sd_interval(values: Sequence[float], *, confidence: float = CONFIDENCE) -> Interval | NA:
    """Confidence interval of the sample SD (ddof=1) of ``values``: chi-square (:func:`chi2_sd_bounds`) for
    n < 5, Bonett's (:func:`bonett_sd_bounds`) from n = 5 on (:func:`sd_ci_method`).

    Returns:
        :class:`Interval` (units of the values), or :class:`NA` when n < 3 or all values are equal.
    """
    values = [float(v) for v in values]
    bad = _why_not(values, MIN_N)
    if bad:
        return bad
    data = np.asarray(values)
    method = sd_ci_method(len(values))
    low, high = (bonett_sd_bounds if method == SD_CI_BONETT else chi2_sd_bounds)(data, confidence)
    return Interval("sd", float(np.std(data, ddof=1)), float(low), float(high), confidence, method, len(values))


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
    import gc

    from statsmodels.stats.multitest import multipletests

    # statsmodels' holm branch ends with gc.collect(), which walks the whole heap on every call (about 0.2 s
    # in a process holding torch, 53 calls in one report). Freezing the heap first leaves that collection
    # only the objects made since; the corrected p-values are the same.
    gc.freeze()
    try:
        adjusted = multipletests(list(p_values), method="holm")[1]
    finally:
        gc.unfreeze()
    return [float(p) for p in adjusted]


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
                max_sets: int = 1_000_000, min_values: int = 3) -> int | NA:
    """Calibration sets needed for a ``confidence`` CI of the mean no wider than ``±half_width``.

    From the observed sample SD s (ddof=1) of ``values``: the smallest n >= 2 with
    ``t_{(1+confidence)/2, n-1} * s / sqrt(n) <= half_width`` (Student t interval, ``scipy.stats.t.ppf``).

    Args:
        values: the group's values (one per calibration set), in the metric's units.
        half_width: the target half-width, same units (e.g. 0.005 = 0.5 accuracy points; 1% of the mean
            perplexity).
        max_sets: the most sets worth answering with.
        min_values: the fewest values the SD is estimated from (3 in the report; the adaptive sweeper
            plans from 2, its smallest ``min_sets``, since its next round re-estimates).

    Returns:
        n, or :class:`NA` when fewer than ``min_values`` values are given, they are all equal, or more than
        ``max_sets`` would be needed.

    Raises:
        ValueError: ``half_width`` not positive.
    """
    from scipy import stats

    if not half_width > 0:
        raise ValueError(f"half_width={half_width!r} must be > 0")
    values = [float(v) for v in values]
    bad = _why_not(values, max(2, int(min_values)))
    if bad:
        return bad
    s = float(np.std(values, ddof=1))
    q = (1 + confidence) / 2
    # the t width exceeds the normal one, so the answer is >= n0; and t_{n0-1} bounds t from n0 on, so it is <= n1
    n0 = max(2, math.ceil((stats.norm.ppf(q) * s / half_width) ** 2))
    if n0 > max_sets:
        return NA(f"more than {max_sets} sets")
    n1 = max(n0, math.ceil((stats.t.ppf(q, n0 - 1) * s / half_width) ** 2) if n0 > 2 else n0 + 10_000)
    n = np.arange(2 if n0 <= 2 else n0 - 1, min(n1, max_sets) + 1)
    widths = stats.t.ppf(q, n - 1) * s / np.sqrt(n)
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


# ---------------------------------------------------------------------------------- power and equivalence

def mean_difference_mde(n_a: int, n_b: int, alpha: float, *, power: float = POWER) -> float | NA:
    """Minimum detectable difference of two means in SDs (Cohen's d on the pooled SD) at ``power``:
    ``statsmodels.stats.power.TTestIndPower().solve_power(nobs1=n_a, ratio=n_b/n_a, alpha=alpha, power=power)``,
    two-sided (the pooled-variance t test: Welch's test at these n has slightly less power).

    Args:
        n_a, n_b: values per sample; alpha: the per-test level (e.g. ``ALPHA / m`` for a Holm family of m).

    Returns:
        d (> 0), or :class:`NA` when a sample has fewer than 3 values.
    """
    if min(n_a, n_b) < MIN_N:
        return NA(f"n={min(n_a, n_b)} < {MIN_N}")
    from statsmodels.stats.power import TTestIndPower

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = TTestIndPower().solve_power(effect_size=None, nobs1=n_a, alpha=alpha, power=power, ratio=n_b / n_a,
                                        alternative="two-sided")
    return float(np.asarray(d).reshape(-1)[0])


def mann_whitney_min_p(n_a: int, n_b: int) -> float:
    """Smallest two-sided exact p-value Mann-Whitney U can give at these n: ``2 / C(n_a + n_b, n_a)``."""
    return min(1.0, 2 / math.comb(n_a + n_b, n_a))


def pooled_sd(a: Sequence[float], b: Sequence[float]) -> float:
    """Pooled SD of two samples (ddof=1 each): ``sqrt(((n_a-1) s_a^2 + (n_b-1) s_b^2) / (n_a + n_b - 2))``."""
    va = 0.0 if max(a) == min(a) else float(np.var(a, ddof=1))
    vb = 0.0 if max(b) == min(b) else float(np.var(b, ddof=1))
    return math.sqrt(((len(a) - 1) * va + (len(b) - 1) * vb) / (len(a) + len(b) - 2))


def tost(a: Sequence[float], b: Sequence[float], margin: float) -> float | NA:
    """Two one-sided Welch t tests that ``mean_a - mean_b`` lies within ``(-margin, +margin)``:
    ``statsmodels.stats.weightstats.ttost_ind(a, b, -margin, margin, usevar="unequal")``; p < alpha means
    the two means are equivalent within the margin (Schuirmann 1987).

    Returns:
        the TOST p-value (the larger of the two one-sided p-values), or :class:`NA` when a sample has
        fewer than 3 values or neither sample varies.

    Raises:
        ValueError: ``margin`` not positive.
    """
    if not margin > 0:
        raise ValueError(f"margin={margin!r} must be > 0")
    a, b = [float(v) for v in a], [float(v) for v in b]
    if min(len(a), len(b)) < MIN_N:
        return NA(f"n={min(len(a), len(b))} < {MIN_N}")
    if max(a) == min(a) and max(b) == min(b):
        return NA("both samples constant: t undefined")
    from statsmodels.stats.weightstats import ttost_ind

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = ttost_ind(np.asarray(a), np.asarray(b), -margin, margin, usevar="unequal")[0]
    return float(p)


def sd_ratio_equivalence(samples: Mapping[str, Sequence[float]], ratio: float) -> float | NA:
    """Equivalence of the samples' SDs within a factor ``ratio`` (> 1): for every pair, two one-sided F tests
    of ``s_i^2 / s_j^2`` against ``ratio^2`` and ``1 / ratio^2`` (``scipy.stats.f``; normal theory), joined as
    an intersection-union test (the largest p over pairs; Berger 1982).

    Returns:
        p (< alpha: every pair's SD ratio is within ``[1/ratio, ratio]``), or :class:`NA` when a sample has
        fewer than 3 values or every sample is constant.

    Raises:
        ValueError: ``ratio`` not > 1.
    """
    from scipy import stats

    if not ratio > 1:
        raise ValueError(f"ratio={ratio!r} must be > 1")
    usable = {k: [float(v) for v in vals] for k, vals in samples.items()}
    if min(len(v) for v in usable.values()) < MIN_N:
        return NA(f"n={min(len(v) for v in usable.values())} < {MIN_N}")
    variances = {k: 0.0 if max(v) == min(v) else float(np.var(v, ddof=1)) for k, v in usable.items()}
    if not any(variances.values()):
        return NA("every sample's values are all equal")
    worst = 0.0
    for i, j in itertools.combinations(sorted(usable), 2):
        vi, vj, di, dj = variances[i], variances[j], len(usable[i]) - 1, len(usable[j]) - 1
        if vj == 0 or vi == 0:
            return 1.0  # a constant sample beside a varying one: no equivalence can be shown
        f = vi / vj
        worst = max(worst, float(stats.f.cdf(f / ratio ** 2, di, dj)), float(stats.f.sf(f * ratio ** 2, di, dj)))
    return worst


_DISPERSION_MDE: dict[tuple, float | NA] = {}


def brown_forsythe_w(deviations: Sequence[np.ndarray]) -> np.ndarray:
    """Brown-Forsythe's W (levene's statistic with ``center="median"``) from each sample's absolute deviations
    from its median, ``[replicates, n_i]`` per sample: one-way ANOVA F of the deviations, shape ``[replicates]``."""
    counts = np.asarray([d.shape[-1] for d in deviations], dtype=float)
    k, total = len(deviations), counts.sum()
    means = np.stack([d.mean(axis=-1) for d in deviations], axis=-1)
    grand = (means * counts).sum(axis=-1, keepdims=True) / total
    between = ((means - grand) ** 2 * counts).sum(axis=-1) / (k - 1)
    within = sum(((d - d.mean(axis=-1, keepdims=True)) ** 2).sum(axis=-1) for d in deviations) / (total - k)
    with np.errstate(divide="ignore", invalid="ignore"):  # 0/0: no spread around the medians -> NaN, never rejects
        return between / within


def dispersion_mde(ns: Sequence[int], alpha: float, *, power: float = POWER, seed: int = SIMULATION_SEED,
                   replicates: int = SIMULATION_REPLICATES, max_ratio: float = 100.0) -> float | NA:
    """Minimum SD ratio the Brown-Forsythe test detects at ``power``: normal samples of sizes ``ns``, the
    smallest sample's SD ``r`` times the others'; the smallest r on a geometric grid (1 to ``max_ratio``,
    241 points) at which ``replicates`` seeded simulations (``numpy.random.default_rng(seed)``, the same draws
    for every r) reject at ``alpha`` in at least ``power`` of cases. The statistic is levene's (one-way ANOVA on
    absolute deviations from each sample's median), its p from ``scipy.stats.f.sf``. Results are cached.

    Returns:
        r (> 1), or :class:`NA` when a sample has fewer than 3 values, or the power stays below ``power``
        up to ``max_ratio``.
    """
    from scipy import stats

    ns = sorted(int(n) for n in ns)
    if ns[0] < MIN_N:
        return NA(f"n={ns[0]} < {MIN_N}")
    key = (tuple(ns), float(alpha), power, seed, replicates, max_ratio)
    if key in _DISPERSION_MDE:
        return _DISPERSION_MDE[key]
    rng = np.random.default_rng(seed)
    dev = []
    for n in ns:
        x = rng.standard_normal((replicates, n))
        dev.append(np.abs(x - np.median(x, axis=1, keepdims=True)))
    result: float | NA = NA(f"{power:.0%} power not reached at any SD ratio up to {max_ratio:g}")
    for r in np.geomspace(1.0, max_ratio, 241)[1:]:
        w = brown_forsythe_w([dev[0] * r] + dev[1:])  # scaling a sample scales its deviations from its median
        p = stats.f.sf(w, len(ns) - 1, sum(ns) - len(ns))
        if np.mean(p < alpha) >= power:
            result = float(r)
            break
    _DISPERSION_MDE[key] = result
    return result


def verdict(p_adjusted: float | None, equivalence_p_adjusted: float | None, *, alpha: float = ALPHA) -> str:
    """``different`` (the test's corrected p < alpha), ``equivalent`` (the TOST's corrected p < alpha) or
    ``inconclusive`` (neither: a failure to reject, never a finding of no effect)."""
    if p_adjusted is not None and p_adjusted < alpha:
        return "different"
    if equivalence_p_adjusted is not None and equivalence_p_adjusted < alpha:
        return "equivalent"
    return "inconclusive"
