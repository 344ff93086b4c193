"""Variance components: how much of a method's spread comes from the source, the set, or numerical noise?

Per model x method x size x variant and evidence metric (:func:`calib_sweep.report.evidence.is_evidence_metric`),
every finished job is one observation ``y[source, set, rerun]``: the calibration set is the seed within a
source, the reruns are the noise-floor jobs of that set (``experiment=noise_floor``: ``threads`` /
``perturb.row_order_seed``, :attr:`calib_sweep.report.collect.Job.perturbation`) beside its canonical job.
The nested random-effects model (Searle, Casella & McCulloch 1992, *Variance Components*, ch. 4-6)

    y = mu + a_source + b_set(source) + e_rerun(set),   a ~ N(0, s2_source), b ~ N(0, s2_set), e ~ N(0, s2_noise)

is fitted by REML with :class:`statsmodels.regression.mixed_linear_model.MixedLM` (random intercept per
source, variance component ``set`` within source, residual = rerun noise).  The shares are each variance
over their sum.  Intervals (95%): for ``s2_source`` and ``s2_set`` Wald on the log scale from the standard
errors statsmodels reports for them (``sqrt(scale) * bse``, as in ``MixedLMResults.summary``; crude with few
sources: read the width, not the digits); for ``s2_noise`` the chi-square interval
``df * s2 / chi2_{df}(1 - a/2, a/2)`` with ``df = reruns - sets`` (:func:`scipy.stats.chi2`).

**Duplicates.** Reruns of one set with exactly the same value (e.g. Wanda ignores ``threads``) are collapsed
to one observation before fitting: they carry no degrees of freedom.  Column ``duplicates_collapsed`` counts
them.  When every set's reruns are identical, ``s2_noise = 0`` exactly and the model is fitted as source > set.

**Too little data** gives ``n/a (...)`` text, never a number: fewer than :data:`MIN_SOURCES` sources, no source
with :data:`MIN_SETS` sets, or no set with a rerun (noise and set variance are then not separable).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from calib_sweep.report.collect import Job, finite
from calib_sweep.report.evidence import is_evidence_metric

#: Fewest sources for a source component.
MIN_SOURCES = 2
#: Fewest sets in at least one source for a set component.
MIN_SETS = 2
LEVEL = 0.95
COMPONENTS = ("source", "set", "noise")


@dataclass
class VarianceRow:
    """One method x metric decomposition (see the module docstring).

    Attributes:
        sources / sets / observations: counts after collapsing duplicates; reruns: jobs read (before collapsing);
        duplicates_collapsed: reruns dropped because their value equalled another rerun of the same set;
        var_<c> / ci_<c>_low / ci_<c>_high: variance of component c (metric units squared) and its 95% interval;
        share_<c>: var_c / total (0-1); na: why there is no decomposition (``None`` when there is one);
        estimator: how it was fitted.
    """

    model: str
    method: str
    n_samples: int | None
    seq_len: int | None
    variant: str
    metric: str
    sources: int = 0
    sets: int = 0
    reruns: int = 0
    observations: int = 0
    duplicates_collapsed: int = 0
    var_source: float | None = None
    ci_source_low: float | None = None
    ci_source_high: float | None = None
    var_set: float | None = None
    ci_set_low: float | None = None
    ci_set_high: float | None = None
    var_noise: float | None = None
    ci_noise_low: float | None = None
    ci_noise_high: float | None = None
    share_source: float | None = None
    share_set: float | None = None
    share_noise: float | None = None
    estimator: str = ""
    na: str | None = None

    def share_text(self, component: str) -> str:
        """``63%`` or the ``n/a (...)`` reason."""
        if self.na:
            return f"n/a ({self.na})"
        return f"{100 * getattr(self, f'share_{component}'):.0f}%"


def _collapse(values: list[float]) -> tuple[list[float], int]:
    """Distinct values of one set's reruns (order kept) and how many exact duplicates were dropped."""
    out: list[float] = []
    for v in values:
        if v not in out:
            out.append(v)
    return out, len(values) - len(out)


def _wald_log(var: float, se: float) -> tuple[float | None, float | None]:
    """95% Wald interval for a variance on the log scale (delta method); ``(None, None)`` when var ~ 0.

    A variance estimated at the boundary (tiny against its SE) has an upper limit beyond float range:
    it is ``inf`` (the data bound nothing from above), never an OverflowError.
    """
    from scipy.stats import norm

    if not (var > 0 and math.isfinite(se)):
        return None, None
    z = norm.ppf(0.5 + LEVEL / 2)
    half = z * se / var
    return var * math.exp(-half), (var * math.exp(half) if half < 700 else math.inf)


def decompose(cells: dict[tuple[str, object], list[float]]) -> dict[str, Any]:
    """Fit the nested model to ``{(source, set): [rerun values]}`` (the first value is the canonical job).

    Returns a dict of :class:`VarianceRow` fields (counts, variances, intervals, shares, estimator) or
    ``{"na": reason, ...counts}``.  Exact duplicate reruns of a set are collapsed first.
    """
    import numpy as np
    import pandas as pd
    import statsmodels.formula.api as smf
    from scipy.stats import chi2

    rows, dropped, reruns = [], 0, 0
    for (source, set_id), values in cells.items():
        values = [v for v in values if math.isfinite(v)]
        reruns += len(values)
        kept, d = _collapse(values)
        dropped += d
        rows += [(str(source), f"{source}:{set_id}", v) for v in kept]
    frame = pd.DataFrame(rows, columns=["source", "set", "y"])
    counts = dict(sources=frame["source"].nunique(), sets=frame["set"].nunique(), reruns=reruns,
                  observations=len(frame), duplicates_collapsed=dropped)
    sets_per_source = frame.groupby("source")["set"].nunique()
    rerun_cells = sum(1 for v in cells.values() if len(v) > 1)
    if counts["sources"] < MIN_SOURCES:
        return {**counts, "na": f"sources={counts['sources']} < {MIN_SOURCES}"}
    if sets_per_source.max() < MIN_SETS:
        return {**counts, "na": f"no source with {MIN_SETS} or more sets"}
    if rerun_cells == 0:
        return {**counts, "na": "no reruns: set and numerical noise not separable"}
    noise_df = counts["observations"] - counts["sets"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # boundary / convergence notes of statsmodels; the fit is reported as is
        if noise_df > 0:
            model = smf.mixedlm("y ~ 1", frame, groups="source", re_formula="1", vc_formula={"set": "0 + C(set)"})
            fit = model.fit(reml=True)
            var_source = float(fit.cov_re.iloc[0, 0])
            var_set = float(fit.vcomp[0])
            var_noise = float(fit.scale)
            se = np.sqrt(fit.scale) * np.asarray(fit.bse)[-2:]  # source Var, set Var (as in fit.summary())
            estimator = "MixedLM REML (source > set > rerun)"
        else:  # every rerun equalled its set's canonical value: the noise is exactly 0
            model = smf.mixedlm("y ~ 1", frame, groups="source", re_formula="1")
            fit = model.fit(reml=True)
            var_source = float(fit.cov_re.iloc[0, 0])
            var_set = float(fit.scale)
            var_noise = 0.0
            se = np.array([np.sqrt(fit.scale) * np.asarray(fit.bse)[-1], math.nan])
            estimator = "MixedLM REML (source > set); reruns identical: noise 0"
    out: dict[str, Any] = {**counts, "var_source": var_source, "var_set": var_set, "var_noise": var_noise,
                           "estimator": estimator}
    out["ci_source_low"], out["ci_source_high"] = _wald_log(var_source, float(se[0]))
    if noise_df > 0:
        out["ci_set_low"], out["ci_set_high"] = _wald_log(var_set, float(se[1]))
        a = 1 - LEVEL
        out["ci_noise_low"] = noise_df * var_noise / chi2.ppf(1 - a / 2, noise_df)
        out["ci_noise_high"] = noise_df * var_noise / chi2.ppf(a / 2, noise_df)
    else:  # residual = set variance, chi-square on sets - sources df would ignore the source level; keep None
        out["ci_noise_low"] = out["ci_noise_high"] = 0.0
    total = var_source + var_set + var_noise
    if total <= 0:
        return {**counts, "na": "all values equal"}
    for c in COMPONENTS:
        out[f"share_{c}"] = out[f"var_{c}"] / total
    return out


def components(jobs: list[Job], metrics: list[str], data_free: frozenset[str] = frozenset()) -> list[VarianceRow]:
    """One :class:`VarianceRow` per model x method x size x variant x evidence metric with at least one job.

    Canonical jobs and noise-floor reruns alike (``status == "ok"``); data-free methods (no calibration set)
    are skipped.
    """
    by_key: dict[tuple, dict[tuple, list[Job]]] = {}
    for job in jobs:
        if job.status != "ok" or not job.config or job.method in data_free:
            continue
        model, method, source, n, seq, variant = job.group
        by_key.setdefault((model, method, n, seq, variant), {}).setdefault((source, job.seed), []).append(job)
    rows = []
    for key, cells in sorted(by_key.items(), key=lambda kv: tuple(str(k) for k in kv[0])):
        for metric in metrics:
            if not is_evidence_metric(metric):
                continue
            values = {}
            for cell, members in cells.items():
                members = sorted(members, key=lambda j: j.repeat)  # canonical job first
                got = finite(j.metrics[metric] for j in members if metric in j.metrics)
                if got:
                    values[cell] = got
            if not values:
                continue
            model, method, n, seq, variant = key
            rows.append(VarianceRow(model, method, n, seq, variant, metric, **decompose(values)))
    return rows


def csv_rows(rows: list[VarianceRow] | None) -> dict[str, list[dict[str, Any]]]:
    """``{"variance_components": rows}`` for the CSV and W&B (empty when there are no rows)."""
    if not rows:
        return {}
    return {"variance_components": [{**asdict(r), **{f"share_{c}_text": r.share_text(c) for c in COMPONENTS}}
                                    for r in rows]}


def write_csv(rows: list[VarianceRow] | None, out: Path) -> Path | None:
    """Write ``out/variance_components.csv``; return its path, or ``None`` without rows."""
    import csv

    data = csv_rows(rows).get("variance_components")
    if not data:
        return None
    path = Path(out) / "variance_components.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(data[0]))
        writer.writeheader()
        writer.writerows(data)
    return path


def table(rows: list[VarianceRow] | None):
    """The report table (:class:`calib_sweep.report.display.Table`), or ``None`` without rows."""
    from calib_sweep.report.aggregate import metric_label
    from calib_sweep.report.display import Table

    if not rows:
        return None
    body = [[r.model, r.method, str(r.n_samples), str(r.seq_len), r.variant, metric_label(r.metric), str(r.sources),
             str(r.sets), f"{r.observations} ({r.duplicates_collapsed} dup.)",
             *(r.share_text(c) for c in COMPONENTS)] for r in rows]
    return Table("Variance components", ["model", "method", "n_samples", "seq_len", "variant", "metric", "sources",
                                         "sets", "obs (duplicates collapsed)", "source", "set within source",
                                         "numerical noise"], body,
                 note="Share of variance per component: nested random effects source > calibration set > numerical "
                      "rerun, REML (statsmodels MixedLM); exact duplicate reruns collapsed first. Intervals in "
                      "variance_components.csv.", anchor="variance-components")


def figure(rows: list[VarianceRow] | None):
    """Stacked bars of the shares per method x metric (:class:`calib_sweep.report.figures.Figure`), or ``None``."""
    from calib_sweep.report.aggregate import metric_label
    from calib_sweep.report.figures import _COLOURS, Figure, _png, plt

    done = [r for r in (rows or []) if not r.na]
    if not done:
        return None
    fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * len(done) + 2), 3.6))
    labels = [f"{r.method}\n{metric_label(r.metric)}" for r in done]
    bottom = [0.0] * len(done)
    for i, c in enumerate(COMPONENTS):
        share = [100 * getattr(r, f"share_{c}") for r in done]
        ax.bar(range(len(done)), share, bottom=bottom, color=_COLOURS[i], label=c)
        bottom = [b + s for b, s in zip(bottom, share)]
    ax.set_xticks(range(len(done)), labels, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("share of variance (%)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return Figure("variance_components", "Variance components: source > set > numerical noise", _png(fig))
