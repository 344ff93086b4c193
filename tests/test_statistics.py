"""The report's statistics (calib_sweep.report.statistics) against values computed by hand or by scipy
directly on fixed data, and the n/a cases (n < 3, all values equal) that must never print 0 or NaN."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from calib_sweep.report import statistics as st

# Five calibration sets of one group (GPTQ perplexities measured on SmolLM2, rounded) and a wider one.
A = [29.80, 30.05, 30.35, 30.16, 29.90]
B = [31.10, 30.40, 31.90, 30.95, 31.60]
C = [29.00, 33.00, 30.00, 35.00, 28.00]


def test_mean_interval_is_the_student_t_interval():
    ci = st.mean_interval(A)
    # by hand: mean 30.052, s = 0.21626, t_{0.975, 4} = 2.7764 -> half-width 0.26853
    s = np.std(A, ddof=1)
    half = stats.t.ppf(0.975, 4) * s / math.sqrt(5)
    assert (ci.low, ci.high) == (pytest.approx(30.052 - half), pytest.approx(30.052 + half))
    assert (ci.low, ci.high) == pytest.approx((29.78347311, 30.32052689))
    low, high = stats.t.interval(0.95, 4, loc=np.mean(A), scale=stats.sem(A))  # scipy's own t interval
    assert (ci.low, ci.high) == (pytest.approx(low), pytest.approx(high))
    assert (ci.statistic, ci.estimate, ci.n, ci.confidence) == ("mean", pytest.approx(30.052), 5, 0.95)
    assert ci.method == "Student t (scipy.stats.t.ppf)"


def test_sd_interval_is_chi_square_below_5_and_bonett_from_5():
    x = [29.80, 30.05, 30.35, 30.16]  # n = 4: chi-square, s = 0.2296
    ci = st.sd_interval(x)
    s = np.std(x, ddof=1)
    assert ci.method == st.SD_CI_CHI2 and ci.estimate == pytest.approx(s)
    assert ci.low == pytest.approx(s * math.sqrt(3 / stats.chi2.ppf(0.975, 3)))
    assert ci.high == pytest.approx(s * math.sqrt(3 / stats.chi2.ppf(0.025, 3)))
    assert (ci.low, ci.high) == pytest.approx((0.130087, 0.856214), abs=1e-6)
    # n = 5: Bonett (2006) by hand: c = n/(n - z), trimmed mean (trim 1/(2 sqrt(1)) = 0.5 -> the median),
    # kurtosis k = n sum((x - m)^4) / sum((x - mean)^2)^2, se = c sqrt((k - (n-3)/n) / (n-1))
    bon = st.sd_interval(A)
    z = stats.norm.ppf(0.975)
    n, var, m = 5, np.var(A, ddof=1), np.median(A)
    k = n * np.sum((np.array(A) - m) ** 4) / np.sum((np.array(A) - np.mean(A)) ** 2) ** 2
    c = n / (n - z)
    se = c * math.sqrt((k - (n - 3) / n) / (n - 1))
    assert bon.method == st.SD_CI_BONETT
    assert (bon.low, bon.high) == (pytest.approx(math.sqrt(c * var * math.exp(-z * se))), pytest.approx(math.sqrt(c * var * math.exp(z * se))))
    assert bon.low < np.std(A, ddof=1) < bon.high


def test_intervals_and_sets_needed_say_why_they_cannot_be_computed():
    assert str(st.mean_interval([1.0, 2.0])) == "n/a (n=2 < 3)"
    assert str(st.sd_interval([1.0, 2.0])) == "n/a (n=2 < 3)"
    assert str(st.mean_interval([0.5, 0.5, 0.5, 0.5])) == "n/a (all 4 values equal)"
    assert str(st.sets_needed([0.5], 0.005)) == "n/a (n=1 < 3)"
    assert str(st.sets_needed([0.5, 0.5, 0.5], 0.005)) == "n/a (all 3 values equal)"
    assert str(st.mean_difference_mde(2, 5, 0.05)) == "n/a (n=2 < 3)"
    assert str(st.tost([1.0, 2.0], A, 0.3)) == "n/a (n=2 < 3)"
    assert str(st.dispersion_mde([2, 5], 0.05)) == "n/a (n=2 < 3)"
    with pytest.raises(ValueError, match="half_width=0"):
        st.sets_needed(A, 0)
    with pytest.raises(ValueError, match="margin=-0.1"):
        st.tost(A, B, -0.1)


def test_mde_is_statsmodels_solve_power_at_the_holm_alpha():
    from statsmodels.stats.power import TTestIndPower

    # 3 vs 3 calibration sets, Holm family of 6 source pairs -> alpha 0.05 / 6
    d = st.mean_difference_mde(3, 3, 0.05 / 6)
    assert d == pytest.approx(TTestIndPower().solve_power(effect_size=None, nobs1=3, alpha=0.05 / 6, power=0.8, ratio=1.0))
    assert d == pytest.approx(5.0377, abs=1e-3)  # about 5 SDs: a 3-vs-3 study detects only huge effects
    assert TTestIndPower().power(d, nobs1=3, alpha=0.05 / 6, ratio=1.0) == pytest.approx(0.8)
    assert st.mean_difference_mde(5, 5, 0.05) == pytest.approx(2.0249, abs=1e-3)
    assert st.mann_whitney_min_p(3, 3) == pytest.approx(0.1)  # 2 / C(6, 3): never below 0.05


def test_tost_equivalent_different_and_inconclusive_on_constructed_data():
    from statsmodels.stats.weightstats import ttost_ind

    base = [30.0, 30.1, 29.9, 30.05, 29.95]
    close = [v + 0.02 for v in base]           # means 0.02 apart, SD 0.079: inside a margin of 0.3
    far = [v + 2.0 for v in base]              # 2.0 apart: outside
    wide = [29.0, 31.5, 28.0, 32.0, 30.5]      # same mean region, SD 1.6: neither shown
    p_close = st.tost(base, close, 0.3)
    assert p_close == pytest.approx(ttost_ind(np.array(base), np.array(close), -0.3, 0.3, usevar="unequal")[0])
    assert p_close < 1e-3
    assert st.tost(base, far, 0.3) > 0.5 and st.tost(base, wide, 0.3) > 0.05
    p_far = stats.ttest_ind(base, far, equal_var=False).pvalue
    assert st.verdict(p_far, st.tost(base, far, 0.3)) == "different"
    assert st.verdict(stats.ttest_ind(base, close, equal_var=False).pvalue, p_close) == "equivalent"
    p_wide = stats.ttest_ind(base, wide, equal_var=False).pvalue
    assert p_wide > 0.05 and st.verdict(p_wide, st.tost(base, wide, 0.3)) == "inconclusive"


def test_brown_forsythe_power_and_sd_ratio_equivalence():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(7, 5)), rng.normal(size=(7, 6)) * 2
    dev = [np.abs(v - np.median(v, axis=1, keepdims=True)) for v in (x, y)]
    w = st.brown_forsythe_w(dev)
    assert w == pytest.approx([stats.levene(x[i], y[i], center="median").statistic for i in range(7)])
    # 10 vs 10 sets: an SD ratio of about 3.2 is detected with 80% power (simulation: 0.89 at 5x, 0.31 at 2x)
    r = st.dispersion_mde([10, 10], 0.05)
    assert 2.5 < r < 4.0 and st.dispersion_mde([10, 10], 0.05) == r  # seeded (and cached)
    # 5 vs 5: Brown-Forsythe's power levels off near 54% however large the ratio: no MDE at all
    assert str(st.dispersion_mde([5, 5], 0.05)) == "n/a (80% power not reached at any SD ratio up to 100)"
    # equivalence of SDs within 1.5x: shown for 40 vs 40 near-identical spreads, not for 5 vs 5
    big = list(np.linspace(-1, 1, 40))
    p = st.sd_ratio_equivalence({"a": big, "b": [v * 1.02 for v in big]}, 1.5)
    f = (1 / 1.02 ** 2)
    assert p == pytest.approx(max(stats.f.cdf(f / 2.25, 39, 39), stats.f.sf(f * 2.25, 39, 39))) and p < 0.05
    assert st.sd_ratio_equivalence({"a": A, "b": C}, 1.5) > 0.05
    assert str(st.sd_ratio_equivalence({"a": A, "b": [1.0, 2.0]}, 1.5)) == "n/a (n=2 < 3)"


def test_brown_forsythe_is_levene_median_and_anova_on_absolute_deviations():
    result = st.equal_dispersion({"gptq": A, "sparsegpt": C})
    w, p = stats.levene(A, C, center="median")
    assert (result.statistic, result.p) == (pytest.approx(w), pytest.approx(p))
    # by hand: one-way ANOVA on |x - median| (Brown & Forsythe 1974)
    dev = [np.abs(np.array(x) - np.median(x)) for x in (A, C)]
    assert result.statistic == pytest.approx(stats.f_oneway(*dev).statistic)
    assert result.n == {"gptq": 5, "sparsegpt": 5} and result.p < 0.05
    assert str(st.equal_dispersion({"gptq": A})) == "n/a (1 sample(s) with n >= 2; need 2)"
    assert str(st.equal_dispersion({"rtn": [1.0, 1.0], "magnitude": [2.0, 2.0]})) == "n/a (every sample's values are all equal)"


def test_welch_pairs_hedges_g_and_holm_by_hand():
    out = st.pairwise({"wiki": A, "news": B, "code": C}, "welch")
    assert [(c.a, c.b) for c in out] == [("code", "news"), ("code", "wiki"), ("news", "wiki")]
    news_wiki = out[2]
    # Welch t by hand
    ma, mb, va, vb = np.mean(B), np.mean(A), np.var(B, ddof=1), np.var(A, ddof=1)
    t = (ma - mb) / math.sqrt(va / 5 + vb / 5)
    assert news_wiki.statistic == pytest.approx(t)
    assert news_wiki.p == pytest.approx(stats.ttest_ind(B, A, equal_var=False).pvalue)
    # Hedges' g by hand: pooled SD, J = 1 - 3 / (4 * 10 - 9)
    g = (ma - mb) / math.sqrt((va + vb) / 2) * (1 - 3 / 31)
    assert news_wiki.effect == pytest.approx(g) and news_wiki.effect_name == "hedges_g" and g > 0
    # Holm by hand: sort p ascending, multiply by (m - rank), running maximum, capped at 1
    ps = [c.p for c in out]
    order = sorted(range(3), key=lambda i: ps[i])
    expected, running = [0.0] * 3, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (3 - rank) * ps[i]))
        expected[i] = running
    assert [c.p_holm for c in out] == pytest.approx(expected)
    assert all(c.p_holm >= c.p for c in out)


def test_many_to_one_against_a_reference_holm_over_k_minus_1():
    out = st.pairwise({"random": A, "news": B, "code": C}, "welch", reference="random")
    assert [(c.a, c.b) for c in out] == [("code", "random"), ("news", "random")]
    for c, other in zip(out, (C, B)):
        assert c.p == pytest.approx(stats.ttest_ind(other, A, equal_var=False).pvalue)
    lo, hi = sorted(c.p for c in out)
    expected = {lo: min(1.0, 2 * lo), hi: min(1.0, max(2 * lo, hi))}  # Holm over 2 comparisons, not 3
    assert [c.p_holm for c in out] == pytest.approx([expected[c.p] for c in out])
    with pytest.raises(ValueError, match="reference='rnd' is not one of the samples"):
        st.pairwise({"a": A, "b": B}, "welch", reference="rnd")


def test_mann_whitney_u_and_rank_biserial_by_hand():
    a, b = [1.0, 2.0, 3.0, 4.0], [3.5, 5.0, 6.0, 7.0]
    (c,) = st.pairwise({"a": a, "b": b}, "mannwhitney")
    # U of a: pairs (x in a, y in b) with x > y count 1, ties 1/2: only 4 > 3.5 -> U = 1
    assert c.statistic == 1.0 and c.effect == pytest.approx(2 * 1 / 16 - 1) and c.effect_name == "rank_biserial"
    assert c.p == pytest.approx(stats.mannwhitneyu(a, b, alternative="two-sided").pvalue)
    assert c.p_holm == c.p  # a family of one


def test_pairs_that_cannot_be_tested_are_left_out_of_the_holm_family():
    out = st.pairwise({"a": A, "b": B, "short": [30.0, 31.0], "flat": [30.0, 30.0, 30.0]}, "welch")
    by = {(c.a, c.b): c for c in out}
    assert str(by[("a", "short")].na) == "n/a (n=2 < 3)" and by[("a", "short")].p is None
    assert by[("a", "b")].p_holm == pytest.approx(min(1.0, 3 * by[("a", "b")].p)) or by[("a", "b")].p_holm >= by[("a", "b")].p
    tested = [c for c in out if c.na is None]
    assert len(tested) == 3  # a-b, a-flat, b-flat
    with pytest.raises(ValueError, match="test='anova'"):
        st.pairwise({"a": A, "b": B}, "anova")


def test_sets_needed_is_the_smallest_n_of_the_student_t_interval():
    values = [0.55, 0.56, 0.57, 0.54, 0.55]  # accuracy fractions, SD 0.0114
    s = np.std(values, ddof=1)
    n = st.sets_needed(values, 0.005)
    width = lambda k: stats.t.ppf(0.975, k - 1) * s / math.sqrt(k)  # noqa: E731
    assert width(n) <= 0.005 < width(n - 1)
    assert n == 23
    # 1% of a perplexity of 30 = 0.3 with A's SD 0.2163: n=4 gives 3.182 * 0.2163 / 2 = 0.344 > 0.3,
    # n=5 gives 2.776 * 0.2163 / sqrt(5) = 0.269 <= 0.3
    assert st.sets_needed(A, 0.30) == 5


def test_noise_floor_pooled_variance_and_f_test_by_hand():
    cells = [[1.0, 1.2, 1.1], [2.0, 2.4], [5.0]]
    var, df = st.pooled_variance(cells)
    assert df == 3 and var == pytest.approx((2 * np.var(cells[0], ddof=1) + 1 * np.var(cells[1], ddof=1)) / 3)
    assert str(st.pooled_variance([[1.0], [2.0]])) == "n/a (no cell with 2 or more values)"
    # identical reruns (Wanda's ARC-Easy accuracy 31/80 six times) are exactly 0, not np.var's 3.7e-33
    assert np.var([0.39] * 6, ddof=1) > 0 and st.pooled_variance([[0.39] * 6]) == (0.0, 5)
    test = st.variance_ratio((0.4, 4), (0.1, 10))
    assert test.statistic == pytest.approx(4.0) and test.p == pytest.approx(stats.f.sf(4.0, 4, 10))
    assert st.variance_ratio((0.4, 4), (0.0, 10)).p == 0.0  # bit-identical reruns: any spread is above noise
    assert str(st.variance_ratio((0.0, 4), (0.0, 10))) == "n/a (no variation across calibration sets or reruns)"
