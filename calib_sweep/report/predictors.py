"""Do the set predictors (:mod:`calib_sweep.data.predictors`) predict what the sweeps measured?

For every model x method (data-dependent methods only) x size x variant (the ``selection.*`` keys do not
split: sets chosen by different strategies are sets alike) and every outcome metric (perplexities, mean
zero-shot accuracy, KL from the dense model), with each finished, canonical job as one calibration set and
the predictors its ``results.json["predictors"]`` recorded:

* ``scope = all``: Spearman's rho (:func:`scipy.stats.spearmanr`) of predictor and outcome over every set;
* ``scope = source=<name>``: the same within one source (does it rank the sets of one source?);
* ``scope = across sources``: rho of the sources' mean predictor and mean outcome (n = sources);
* ``scope = leave out <name>``: the direction (sign of rho) learnt on the other sources' sets, applied to
  rank the held-out source's sets: ``sign(rho_train) x rho_held_out`` (positive = the predictor ranked the
  unseen source's sets the right way round); no p-value.

Each rho comes with a 95% percentile bootstrap interval (:func:`scipy.stats.bootstrap`, sets resampled
in pairs, :data:`BOOTSTRAP_RESAMPLES` resamples, seed :data:`BOOTSTRAP_SEED`), the p-value of
``spearmanr`` (from :data:`EXACT_BELOW` sets up; below, the exact permutation p, :func:`exact_p`), Holm's adjustment over the predictors of one (model, method, metric, scope) family
(:func:`calib_sweep.report.statistics.holm`, statsmodels' ``multipletests``; Holm 1979) and the family's minimum
detectable ``|rho|`` at 80% power and level ``alpha / m`` (two-sided; Fisher z with Spearman's variance
``1.06 / (n - 3)``, Fieller, Hartley & Pearson 1957).  Fewer than :data:`MIN_SETS` sets: ``n/a (n=3 < 5)``,
never a coefficient.  ``predictors.csv`` holds every row; ``report.md`` the ``all`` and ``across sources``
rows and a count of the leave-one-source-out checks; one scatter figure per (predictor, method).
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from calib_sweep.report.collect import Job
from calib_sweep.report.statistics import ALPHA, POWER, holm

#: Fewest sets for a coefficient (below: ``n/a (n=3 < 5)``).
MIN_SETS = 5
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
#: Below this many sets the p-value is the exact permutation one (:func:`exact_p`), not spearmanr's t approximation.
EXACT_BELOW = 10
#: Simulated samples per grid point of :func:`rho_mde`'s power curve.
MDE_REPLICATES = 4000


@dataclass
class PredictorRow:
    """One predictor against one outcome in one scope (see the module docstring).

    Attributes:
        rho: Spearman's rho (``None`` when ``na``); ci_low / ci_high its 95% bootstrap interval;
        p: two-sided p of ``spearmanr``; p_holm: Holm-adjusted over the family's predictors;
        family_size: predictors in the family (m); mde_rho: minimum detectable ``|rho|`` (80% power, alpha/m);
        na: why no coefficient (``n=3 < 5``, ``predictor constant``), else ``None``.
    """

    model: str
    method: str
    n_samples: int | None
    seq_len: int | None
    variant: str
    metric: str
    predictor: str
    scope: str
    n: int
    rho: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    p: float | None = None
    p_holm: float | None = None
    family_size: int = 0
    mde_rho: float | None = None
    na: str | None = None

    @property
    def text(self) -> str:
        """``0.62 [0.21, 0.85]`` or ``n/a (n=3 < 5)``."""
        if self.rho is None:
            return f"n/a ({self.na})"
        ci = f" [{self.ci_low:.2f}, {self.ci_high:.2f}]" if self.ci_low is not None else ""
        return f"{self.rho:.2f}{ci}"


@dataclass
class PredictorChecks:
    """All rows, and the (predictor, method) scatter data: ``points[(model, method, predictor)]`` =
    ``[(predictor value, outcome, source)]`` of the first outcome metric ``metric_for_points``."""

    rows: list[PredictorRow] = field(default_factory=list)
    points: dict[tuple[str, str, str], list[tuple[float, float, str]]] = field(default_factory=dict)
    metric_for_points: str | None = None


def is_outcome(metric: str) -> bool:
    """Perplexities, mean zero-shot accuracy and the KL from the dense model."""
    return metric.startswith("perplexity/") or metric in ("zeroshot/mean_acc", "compression/kl_from_dense")


def _spearman_along(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Spearman's rho along ``axis`` (vectorised, average ranks; 0 where one side is constant)."""
    from scipy.stats import rankdata

    rx, ry = rankdata(x, axis=axis), rankdata(y, axis=axis)
    rx = rx - rx.mean(axis=axis, keepdims=True)
    ry = ry - ry.mean(axis=axis, keepdims=True)
    den = np.sqrt((rx * rx).sum(axis=axis) * (ry * ry).sum(axis=axis))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (rx * ry).sum(axis=axis) / np.where(den > 0, den, 1.0), 0.0)


def spearman(x, y) -> tuple[float | None, float | None, float | None, float | None, str | None]:
    """``(rho, ci_low, ci_high, p, na)`` of paired values; ``na`` names why there is no coefficient."""
    from scipy.stats import bootstrap, spearmanr

    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    n = int(x.size)
    if n < MIN_SETS:
        return None, None, None, None, f"n={n} < {MIN_SETS}"
    if np.ptp(x) == 0:
        return None, None, None, None, f"predictor constant over the {n} sets"
    if np.ptp(y) == 0:
        return None, None, None, None, f"outcome constant over the {n} sets"
    result = spearmanr(x, y)
    p = exact_p(x, y) if n < EXACT_BELOW else float(result.pvalue)
    ci = bootstrap((x, y), _spearman_along, paired=True, vectorized=True, n_resamples=BOOTSTRAP_RESAMPLES,
                   method="percentile", random_state=np.random.default_rng(BOOTSTRAP_SEED)).confidence_interval
    return float(result.statistic), float(ci.low), float(ci.high), p, None


@functools.lru_cache(maxsize=16)
def _permutations(n: int) -> np.ndarray:
    """``int64 [n!, n]``: every permutation of ``range(n)``."""
    import itertools

    return np.array(list(itertools.permutations(range(n))), dtype=np.int64)


def exact_p(x, y) -> float:
    """Two-sided exact permutation p of Spearman's rho: the share of the ``n!`` pairings of ``y``'s ranks
    with ``x``'s whose ``|rho|`` is at least the observed one (ties: average ranks, as in spearmanr).

    Used below :data:`EXACT_BELOW` sets, where spearmanr's t approximation is far off in the tail (at n = 5 a
    perfect rank agreement gets p ~ 1e-24 from it, while its exact p is 2/120 = 0.0167).
    """
    from scipy.stats import rankdata

    rx, ry = rankdata(x), rankdata(y)
    perms = _permutations(len(rx))
    observed = abs(float(_spearman_along(rx, ry)))
    null = np.abs(_spearman_along(np.broadcast_to(rx, perms.shape), ry[perms], axis=1))
    return float(np.mean(null >= observed - 1e-12))


@functools.lru_cache(maxsize=16)
def _exact_critical(n: int, level: float) -> float | None:
    """Smallest ``|rho|`` whose exact two-sided p (untied ranks) is at most ``level``; ``None``: none is."""
    perms = _permutations(n)
    base = np.arange(n, dtype=np.float64)
    null = np.sort(np.abs(_spearman_along(np.broadcast_to(base, perms.shape), base[perms].astype(np.float64), axis=1)))
    for value in np.unique(np.round(null, 12)):
        if np.mean(null >= value - 1e-12) <= level:
            return float(value)
    return None


@functools.lru_cache(maxsize=256)
def rho_mde(n: int, m: int, alpha: float = ALPHA, power: float = POWER, reps: int = MDE_REPLICATES) -> float | None:
    """Smallest population Spearman ``|rho|`` that :func:`scipy.stats.spearmanr`'s two-sided test at level
    ``alpha / m`` detects with ``power`` from ``n`` sets; ``None`` for ``n <= 3`` or when not even
    ``|rho| = 0.99`` reaches it.

    By simulation (seeded, ``reps`` bivariate-normal samples of size ``n`` per grid point, rho on a
    0.01 grid; population Spearman rho = (6/pi) arcsin(r/2) for Pearson r), because the Fisher-z formula
    (``var = 1.06 / (n - 3)``, Fieller et al. 1957) is optimistic at the n a study runs: at n = 10 and
    alpha = 0.05/7 it gives 0.88, which spearmanr detects only 72% of the time (issue 29).  The p-value
    is spearmanr's own (t with n - 2 df on the rank correlation), computed vectorised, from
    :data:`EXACT_BELOW` sets up; below it, the exact permutation test's (:func:`exact_p`).
    """
    from scipy.stats import rankdata, t

    if n <= 3:
        return None
    level = alpha / max(m, 1)
    rng = np.random.default_rng(20261204)
    noise = rng.standard_normal((2, reps, n))
    critical = t.ppf(1 - level / 2, n - 2)
    exact = _exact_critical(n, level) if n < EXACT_BELOW else None
    if n < EXACT_BELOW and exact is None:
        return None  # no ranking of n sets reaches the level
    for rho_s in np.arange(0.05, 0.995, 0.01):
        r = 2 * math.sin(math.pi * rho_s / 6)  # Pearson r of the normal pair with Spearman rho_s
        x = noise[0]
        y = r * noise[0] + math.sqrt(1 - r * r) * noise[1]
        rx = rankdata(x, axis=1) - (n + 1) / 2
        ry = rankdata(y, axis=1) - (n + 1) / 2
        rs = (rx * ry).sum(1) / np.sqrt((rx * rx).sum(1) * (ry * ry).sum(1))
        if exact is not None:
            detected = np.abs(rs) >= exact - 1e-12
        else:
            with np.errstate(divide="ignore", invalid="ignore"):
                detected = np.abs(rs) * np.sqrt((n - 2) / np.maximum(1 - rs * rs, 1e-300)) > critical
        if float(np.mean(detected)) >= power:
            return round(float(rho_s), 2)
    return None


def _holm(rows: list[PredictorRow]) -> None:
    for row in rows:
        row.family_size = len(rows)
        row.mde_rho = rho_mde(row.n, len(rows)) if row.n >= MIN_SETS else None
    tested = [r for r in rows if r.p is not None]
    if tested:
        for row, p in zip(tested, holm([r.p for r in tested])):
            row.p_holm = p


def _sets(jobs: list[Job], data_free: frozenset[str]) -> dict[tuple, list[Job]]:
    """Finished canonical jobs with recorded predictors, by (model, method, n_samples, seq_len, variant
    without ``selection.*``)."""
    out: dict[tuple, list[Job]] = {}
    for job in jobs:
        if job.status != "ok" or job.repeat or not job.predictors or job.method == "dense" or job.method in data_free:
            continue
        variant = ", ".join(f"{k}={v}" for k, v in job.variant_items if not k.startswith("selection"))
        out.setdefault((job.model, job.method, job.n_samples, job.seq_len, variant), []).append(job)
    return out


def check(jobs: list[Job], metrics: list[str], data_free: frozenset[str] = frozenset()) -> PredictorChecks:
    """Every :class:`PredictorRow` of the jobs (see the module docstring).

    Args:
        jobs: the report's jobs (:func:`calib_sweep.report.collect.load_jobs`).
        metrics: the report's metrics (outcomes are those :func:`is_outcome` keeps).
        data_free: methods that never read calibration data (left out).
    """
    checks = PredictorChecks()
    outcomes = [m for m in metrics if is_outcome(m)]
    checks.metric_for_points = next(iter(outcomes), None)
    for (model, method, n_samples, seq_len, variant), members in sorted(_sets(jobs, data_free).items(), key=str):
        names = sorted({p for j in members for p, v in j.predictors.items() if isinstance(v, (int, float))})
        sources = sorted({j.source for j in members})
        for metric in outcomes:
            def pairs(subset, name):
                got = [(j.predictors[name], j.metrics[metric], j.source) for j in subset
                       if isinstance(j.predictors.get(name), (int, float)) and metric in j.metrics
                       and math.isfinite(j.metrics[metric])]
                return got

            def row(name, scope, n, stats=None, na=None):
                rho, low, high, p, why = stats if stats is not None else (None, None, None, None, na)
                return PredictorRow(model, method, n_samples, seq_len, variant, metric, name, scope, n, rho, low, high,
                                    p, na=why)

            families: dict[str, list[PredictorRow]] = {}
            for name in names:
                got = pairs(members, name)
                if metric == checks.metric_for_points:
                    checks.points[(model, method, name)] = got
                families.setdefault("all", []).append(
                    row(name, "all", len(got), spearman([g[0] for g in got], [g[1] for g in got])))
                for source in sources:
                    own = [g for g in got if g[2] == source]
                    families.setdefault(f"source={source}", []).append(
                        row(name, f"source={source}", len(own), spearman([g[0] for g in own], [g[1] for g in own])))
                means = [(np.mean([g[0] for g in got if g[2] == s]), np.mean([g[1] for g in got if g[2] == s]))
                         for s in sources if any(g[2] == s for g in got)]
                families.setdefault("across sources", []).append(
                    row(name, "across sources", len(means), spearman([a for a, _ in means], [b for _, b in means])))
                for source in sources:
                    train = [g for g in got if g[2] != source]
                    held = [g for g in got if g[2] == source]
                    scope = f"leave out {source}"
                    rho_train = spearman([g[0] for g in train], [g[1] for g in train])
                    rho_held = spearman([g[0] for g in held], [g[1] for g in held])
                    if rho_train[0] is None or rho_held[0] is None:
                        why = rho_train[4] if rho_train[0] is None else rho_held[4]
                        which = "other sources" if rho_train[0] is None else source
                        checks.rows.append(row(name, scope, len(held), na=f"{which}: {why}"))
                        continue
                    sign = 1.0 if rho_train[0] >= 0 else -1.0
                    lo, hi = sorted((sign * rho_held[1], sign * rho_held[2]))
                    checks.rows.append(row(name, scope, len(held), (sign * rho_held[0], lo, hi, None, None)))
            for family in families.values():
                _holm(family)
                checks.rows.extend(family)
    return checks


def csv_rows(checks: PredictorChecks | None) -> dict[str, list[dict[str, Any]]]:
    """``{"predictors": rows}`` for ``predictors.csv`` and W&B (empty when no job recorded predictors)."""
    if checks is None or not checks.rows:
        return {}
    return {"predictors": [{**asdict(r), "text": r.text} for r in checks.rows]}


def _p(value: float | None) -> str:
    return "" if value is None else (f"{value:.3f}" if value >= 0.001 else f"{value:.1e}")


def markdown(checks: PredictorChecks | None) -> str:
    """The ``report.md`` section: the ``all`` and ``across sources`` rows with n, rho [95% CI], p, Holm p, m and
    MDE, and per method how many leave-one-source-out checks ranked the held-out source the right way."""
    if checks is None or not checks.rows:
        return ""
    lines = ["## Set predictors against outcomes", "",
             f"Spearman rho of each predictor (results.json `predictors`) with each outcome across calibration sets "
             f"(95% percentile bootstrap CI, {BOOTSTRAP_RESAMPLES} resamples; Holm over the predictors of one model x "
             f"method x metric x scope, m = family size; MDE = smallest |rho| detectable at 80% power and alpha/m; "
             f"fewer than {MIN_SETS} sets: n/a). Every scope, and the within-source rows, in `predictors.csv`.", "",
             "| model | method | metric | scope | predictor | n | rho [95% CI] | p | Holm p | m | MDE |rho| |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in checks.rows:
        if r.scope not in ("all", "across sources"):
            continue
        mde = (("> 0.99" if r.n >= MIN_SETS else "") if r.mde_rho is None else f"{r.mde_rho:.2f}")
        lines.append(f"| {r.model} | {r.method}{f' [{r.variant}]' if r.variant else ''} | {r.metric} | {r.scope} | "
                     f"{r.predictor} | {r.n} | {r.text} | {_p(r.p)} | {_p(r.p_holm)} | {r.family_size} | {mde} |")
    loso = [r for r in checks.rows if r.scope.startswith("leave out")]
    if loso:
        lines += ["", "Leave one source out (direction learnt on the other sources, applied to the held-out source's "
                  "sets; rho > 0 = ranked the right way round):", "",
                  "| model | method | metric | predictor | checks | right way | n/a |", "|---|---|---|---|---|---|---|"]
        keyed: dict[tuple, list[PredictorRow]] = {}
        for r in loso:
            keyed.setdefault((r.model, r.method, r.metric, r.predictor), []).append(r)
        for (model, method, metric, predictor), rows in keyed.items():
            done = [r for r in rows if r.rho is not None]
            lines.append(f"| {model} | {method} | {metric} | {predictor} | {len(done)} | "
                         f"{sum(r.rho > 0 for r in done)} | {len(rows) - len(done)} |")
    return "\n".join(lines) + "\n"


def figures(checks: PredictorChecks | None) -> list:
    """One scatter (:class:`calib_sweep.report.figures.Figure`) per (model, method, predictor): predictor value
    against the first outcome metric, one colour per source."""
    from calib_sweep.report.figures import _COLOURS, Figure, _png, _slug, plt

    if checks is None:
        return []
    out = []
    for (model, method, predictor), points in sorted(checks.points.items()):
        if not points:
            continue
        fig, ax = plt.subplots(figsize=(4.8, 3.6))
        sources = sorted({s for _, _, s in points})
        for index, source in enumerate(sources):
            xs = [x for x, _, s in points if s == source]
            ys = [y for _, y, s in points if s == source]
            ax.scatter(xs, ys, s=18, color=_COLOURS[index % len(_COLOURS)], label=source)
        ax.set_xlabel(predictor)
        ax.set_ylabel(checks.metric_for_points or "")
        title = f"{model}: {method}, {predictor}"
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
        out.append(Figure(_slug(f"predictor_{model}_{method}_{predictor}"), f"Predictor {predictor} vs "
                          f"{checks.metric_for_points} ({model}, {method})", _png(fig)))
    return out


def write_csv(checks: PredictorChecks | None, out) -> Any:
    """Write ``out/predictors.csv`` (every row of :func:`csv_rows`); return its path, or ``None`` when no job
    recorded predictors."""
    import csv
    from pathlib import Path

    rows = csv_rows(checks).get("predictors")
    if not rows:
        return None
    path = Path(out) / "predictors.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path
