"""Coverage of the report's 95% confidence intervals at the n the report runs (issue 27 item 1).

Simulates ``--replicates`` (default 10,000) samples of n = 3, 4, 5, 10, 20 values from a normal distribution
and from a right-skewed lognormal one (log-SD 0.25: skewness 0.78, excess kurtosis 1.1), seeded
(``numpy.random.default_rng(seed + k)`` for the k-th distribution x n), computes the report's own intervals
(:mod:`calib_sweep.report.statistics`: Student t for the mean, chi-square for the SD at n = 3, 4, Bonett's
kurtosis-adjusted interval from n = 5) and prints the share of intervals that contain the true mean / SD.
Rows the report does not emit at that n (chi-square from n = 5) are shown for comparison and
left out of the last line, ``min coverage <value>``, the smallest coverage of an interval the report uses.

The paired two-way bootstrap of :mod:`calib_sweep.report.paired` (issue 27 item 4) is checked the same way
on simulated zero-shot items (``--paired-replicates``, default 400 per n; 1000 bootstrap draws each): two
groups of n = 3, 5, 10 calibration sets answer the same 600 items; item i is correct with probability
``sigmoid(d_i + s + mu_g)`` (item difficulty ``d_i ~ N(0, 1.5^2)``, set effect ``s ~ N(0, 0.1^2)`` or
``N(0, 0.3^2)``: about 2 or 5 accuracy points of SD across sets; ``mu_a = 0.2``, ``mu_b = 0``), the interval
the report's (:func:`calib_sweep.report.paired.expanded` percentile), and the true difference is the expected
accuracy difference over items and sets (Monte Carlo, 4 million draws). The report emits the paired interval
from :data:`calib_sweep.report.paired.MIN_SETS` sets.  A third case checks the method pairs calibrated on the
same sets (``sets_paired=True``): both groups share each set's effect ``s ~ N(0, 0.3^2)`` and add their own
set-by-method effect ``N(0, 0.1^2)``, and one set draw serves both groups.

Usage: ``python bench/ci_coverage.py [--replicates 10000] [--seed 0] [--paired-replicates 400]``; about
2 s on one core, plus about 30 s for the paired rows (0 skips them).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from calib_sweep.report.statistics import (  # noqa: E402
    BONETT_MIN_N,
    CONFIDENCE,
    SD_CI_BONETT,
    bonett_sd_bounds,
    chi2_sd_bounds,
    sd_ci_method,
    t_bounds,
)

NS = (3, 4, 5, 10, 20)
LOG_SD = 0.25
PAIRED_NS = (3, 5, 10)
ITEMS, ITEM_SD, MU_A, MU_B = 600, 1.5, 0.2, 0.0
SET_SDS = (0.1, 0.3)  # logit SD of a calibration set's effect: about 2 and 5 accuracy points
SHARED_SET_SD, INTERACTION_SD = 0.3, 0.1  # same-sets case: a set effect both groups share, and each group's own


def distributions():
    """(name, draw(rng, shape), true mean, true SD) of the simulated data."""
    s2 = LOG_SD ** 2
    return [
        ("normal", lambda rng, shape: rng.normal(0.0, 1.0, shape), 0.0, 1.0),
        (f"lognormal(sigma={LOG_SD})", lambda rng, shape: rng.lognormal(0.0, LOG_SD, shape),
         math.exp(s2 / 2), math.sqrt((math.exp(s2) - 1) * math.exp(s2))),
    ]


def coverage(replicates: int, seed: int) -> list[tuple[str, str, int, float, bool]]:
    """Rows (interval, distribution, n, coverage, used by the report at this n)."""
    rows = []
    k = 0
    for name, draw, mean, sd in distributions():
        for n in NS:
            x = draw(np.random.default_rng(seed + k), (replicates, n))
            k += 1
            low, high = t_bounds(x, CONFIDENCE)
            rows.append(("mean: Student t", name, n, float(np.mean((low <= mean) & (mean <= high))), True))
            low, high = chi2_sd_bounds(x, CONFIDENCE)
            rows.append(("SD: chi-square", name, n, float(np.mean((low <= sd) & (sd <= high))),
                         sd_ci_method(n) != SD_CI_BONETT))
            if n >= BONETT_MIN_N:
                low, high = bonett_sd_bounds(x, CONFIDENCE)
                rows.append(("SD: Bonett", name, n, float(np.mean((low <= sd) & (sd <= high))),
                             sd_ci_method(n) == SD_CI_BONETT))
    return rows


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def paired_coverage(replicates: int, seed: int) -> list[tuple[str, str, int, float, bool]]:
    """Rows for the paired two-way bootstrap CI of an accuracy difference (see the module docstring)."""
    from calib_sweep.report.paired import MIN_SETS, bootstrap_difference, expanded, percentile_summary

    rows = []
    for j, set_sd in enumerate(SET_SDS):
        truth_rng = np.random.default_rng(seed + 1000 + j)
        d = truth_rng.normal(0, ITEM_SD, 4_000_000)
        s = truth_rng.normal(0, set_sd, 4_000_000)
        truth = 100 * float(np.mean(_sigmoid(d + s + MU_A)) - np.mean(_sigmoid(d + s + MU_B)))
        for k, n in enumerate(PAIRED_NS):
            rng = np.random.default_rng(seed + 2000 + 10 * j + k)
            hits = 0
            for _ in range(replicates):
                items = rng.normal(0, ITEM_SD, ITEMS)
                groups = []
                for mu in (MU_A, MU_B):
                    p = _sigmoid(items[None, :] + rng.normal(0, set_sd, (n, 1)) + mu)
                    groups.append({"task": (rng.random((n, ITEMS)) < p).astype(np.float64)})
                effect, diffs = bootstrap_difference(*groups, replicates=1000, seed=int(rng.integers(1 << 31)))["task"]
                low, high, _ = percentile_summary(expanded(effect, diffs, n))
                hits += low <= truth <= high
            rows.append(("paired bootstrap", f"items, set logit SD {set_sd}", n, hits / replicates, n >= MIN_SETS))
    rows += _same_sets_coverage(replicates, seed)
    return rows


def _same_sets_coverage(replicates: int, seed: int) -> list[tuple[str, str, int, float, bool]]:
    """Rows for two groups calibrated on the same sets (``sets_paired=True``, see the module docstring)."""
    from calib_sweep.report.paired import MIN_SETS, bootstrap_difference, expanded, percentile_summary

    truth_rng = np.random.default_rng(seed + 3000)
    d = truth_rng.normal(0, ITEM_SD, 4_000_000)
    s = truth_rng.normal(0, SHARED_SET_SD, 4_000_000)
    ea, eb = truth_rng.normal(0, INTERACTION_SD, (2, 4_000_000))
    truth = 100 * float(np.mean(_sigmoid(d + s + ea + MU_A)) - np.mean(_sigmoid(d + s + eb + MU_B)))
    rows = []
    for k, n in enumerate(PAIRED_NS):
        rng = np.random.default_rng(seed + 4000 + k)
        hits = 0
        for _ in range(replicates):
            items = rng.normal(0, ITEM_SD, ITEMS)
            shared = rng.normal(0, SHARED_SET_SD, (n, 1))
            groups = []
            for mu in (MU_A, MU_B):
                p = _sigmoid(items[None, :] + shared + rng.normal(0, INTERACTION_SD, (n, 1)) + mu)
                groups.append({"task": (rng.random((n, ITEMS)) < p).astype(np.float64)})
            effect, diffs = bootstrap_difference(*groups, replicates=1000, seed=int(rng.integers(1 << 31)),
                                                 sets_paired=True)["task"]
            low, high, _ = percentile_summary(expanded(effect, diffs, n))
            hits += low <= truth <= high
        rows.append(("paired bootstrap", f"same sets, SD {SHARED_SET_SD}+{INTERACTION_SD}", n, hits / replicates,
                     n >= MIN_SETS))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicates", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--paired-replicates", type=int, default=400)
    args = parser.parse_args(argv)
    rows = coverage(args.replicates, args.seed)
    if args.paired_replicates > 0:
        rows += paired_coverage(args.paired_replicates, args.seed)
    print(f"{CONFIDENCE:.0%} intervals, {args.replicates} replicates per row, seed {args.seed}")
    print(f"{'interval':<17} {'data':<28} {'n':>3} {'coverage':>9}  used by the report")
    for interval, name, n, cov, used in rows:
        print(f"{interval:<17} {name:<28} {n:>3} {cov:>9.4f}  {'yes' if used else 'no'}")
    print(f"min coverage {min(cov for *_, cov, used in rows if used):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
