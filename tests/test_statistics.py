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


def test_bootstrap_ci_is_scipy_bca_with_the_recorded_seed():
    ci = st.bootstrap_ci(A, "mean")
    direct = stats.bootstrap((np.array(A),), np.mean, confidence_level=0.95, n_resamples=9999, method="BCa",
                             rng=np.random.default_rng(0), vectorized=True, axis=-1)
    assert (ci.low, ci.high) == (direct.confidence_interval.low, direct.confidence_interval.high)
    assert ci.estimate == pytest.approx(30.052) and ci.low < 30.052 < ci.high
    assert (ci.method, ci.n, ci.n_resamples, ci.seed, ci.confidence) == ("BCa", 5, 9999, 0, 0.95)
    # same data, same seed -> same interval; the SD's interval brackets the sample SD (ddof=1)
    assert st.bootstrap_ci(A, "mean") == ci
    sd = st.bootstrap_ci(A, "sd")
    assert sd.estimate == pytest.approx(np.std(A, ddof=1)) and sd.low < sd.estimate < sd.high


def test_bootstrap_and_sets_needed_say_why_they_cannot_be_computed():
    assert str(st.bootstrap_ci([1.0, 2.0])) == "n/a (n=2 < 3)"
    assert str(st.bootstrap_ci([0.5, 0.5, 0.5, 0.5])) == "n/a (all 4 values equal)"
    assert str(st.sets_needed([0.5], 0.005)) == "n/a (n=1 < 3)"
    assert str(st.sets_needed([0.5, 0.5, 0.5], 0.005)) == "n/a (all 3 values equal)"
    with pytest.raises(ValueError, match="statistic='median'"):
        st.bootstrap_ci(A, "median")
    with pytest.raises(ValueError, match="half_width=0"):
        st.sets_needed(A, 0)


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
