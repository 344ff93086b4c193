"""Which layers carry the calibration effect: the report's view of the per-layer diagnostics
(``results.json["layers"]``, :mod:`calib_sweep.methods.diagnostics`).

Per method family (model x method x size x variant), over its finished calibration sets (canonical jobs):

* each layer's output error (log10 of the relative Frobenius norm vs dense; layers x calibration sets,
  sets grouped by source), drawn as a heatmap by :func:`calib_sweep.report.figures.layer_heatmap`;
* the layers whose error varies most across sets (SD of log10 error, ddof=1);
* the Spearman rank correlation (``scipy.stats.spearmanr``) between each layer's error and the job's
  perplexity and KL from dense across sets: a layer with a high correlation is where a worse calibration
  set shows up.  p-values are Holm-corrected over the layers of one family x metric.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

from calib_sweep.report.collect import Job
from calib_sweep.report.display import Table
from calib_sweep.report.statistics import NA, holm

#: Layers listed per family in the "varies most" and correlation tables.
TOP = 10
#: Job metrics each layer's error is correlated with.
TARGETS = ("perplexity", "compression/kl_from_dense")


@dataclass
class LayerFamily:
    """The per-layer output errors of one method family's calibration sets.

    Attributes:
        key: (model, method, n_samples, seq_len, variant); names: layer names (in layer order);
        jobs: the sets, ordered by source then seed; errors: ``errors[i][j]`` = layer i, set j (None: absent);
        spread: ``[(layer, SD of log10 error)]``, largest first; correlations: ``[(metric, layer, rho, p,
        p_holm, n) | (metric, layer, NA)]``.
    """

    key: tuple
    names: list[str]
    jobs: list[Job]
    errors: list[list[float | None]]
    spread: list[tuple[str, float]] = field(default_factory=list)
    correlations: list[tuple] = field(default_factory=list)

    @property
    def label(self) -> str:
        model, method, n, seq, variant = self.key
        return f"{model} / {method} / {n}x{seq}" + (f" [{variant}]" if variant else "")


def log10_error(x: float | None) -> float | None:
    """log10 of a layer's output error; None when absent, not finite or not positive."""
    if x is None or not isinstance(x, (int, float)) or not math.isfinite(x) or x <= 0:
        return None
    return math.log10(x)


def _metric(job: Job, target: str) -> tuple[str, float] | None:
    if target == "perplexity":
        names = sorted(m for m in job.metrics if m.startswith("perplexity/"))
        return (names[0], job.metrics[names[0]]) if names else None
    return (target, job.metrics[target]) if target in job.metrics else None


def families(jobs: list[Job]) -> list[LayerFamily]:
    """Group finished canonical jobs that recorded ``layers.output_error`` with the same layer names."""
    grouped: dict[tuple, list[Job]] = {}
    for job in jobs:
        if job.status != "ok" or job.repeat or not job.layers.get("output_error"):
            continue
        key = (job.model, job.method, job.n_samples, job.seq_len, job.variant)
        grouped.setdefault(key, []).append(job)
    out = []
    for key, members in sorted(grouped.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
        names = members[0].layers["names"]
        members = sorted((j for j in members if j.layers["names"] == names), key=lambda j: (j.source, j.seed or 0))
        errors = [[_value(j.layers["output_error"][i]) for j in members] for i in range(len(names))]
        family = LayerFamily(key, list(names), members, errors)
        family.spread = _spread(family)
        family.correlations = _correlations(family)
        out.append(family)
    return out


def _value(x) -> float | None:
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def _spread(family: LayerFamily) -> list[tuple[str, float]]:
    import statistics

    rows = []
    for name, row in zip(family.names, family.errors):
        logs = [v for v in (log10_error(x) for x in row) if v is not None]
        if len(logs) >= 2:
            rows.append((name, statistics.stdev(logs)))
    return sorted(rows, key=lambda r: -r[1])


def _correlations(family: LayerFamily) -> list[tuple]:
    from scipy import stats

    out = []
    for target in TARGETS:
        pairs = [(_metric(j, target), i) for i, j in enumerate(family.jobs)]
        usable = [(m, i) for m, i in pairs if m is not None and math.isfinite(m[1])]
        if len(usable) < 3:
            if usable:
                out.append((usable[0][0][0], None, NA(f"n={len(usable)} < 3")))
            continue
        metric = usable[0][0][0]
        ys = [m[1] for m, _ in usable]
        rows = []
        for name, row in zip(family.names, family.errors):
            xs = [row[i] for _, i in usable]
            if any(x is None or not math.isfinite(x) for x in xs):
                continue
            if len(set(xs)) == 1 or len(set(ys)) == 1:
                rows.append((metric, name, NA("constant values")))
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = stats.spearmanr(xs, ys)
            rows.append((metric, name, float(result.statistic), float(result.pvalue), len(xs)))
        tested = [i for i, r in enumerate(rows) if len(r) == 5]
        corrected = holm([rows[i][3] for i in tested])
        for i, p in zip(tested, corrected):
            metric_, name, rho, p_raw, n = rows[i]
            rows[i] = (metric_, name, rho, p_raw, p, n)
        out.extend(rows)
    return out


def top_correlations(family: LayerFamily, metric_prefix: str, top: int = TOP) -> list[tuple]:
    """The ``top`` layers by |rho| for the metric starting with ``metric_prefix``."""
    rows = [r for r in family.correlations if r[0].startswith(metric_prefix) and len(r) == 6 and math.isfinite(r[2])]
    return sorted(rows, key=lambda r: -abs(r[2]))[:top]


def set_labels(family: LayerFamily) -> list[str]:
    """The heatmap's column labels, one per calibration set: ``<source> s<seed>``, grouped by source."""
    return [f"{j.source} s{j.seed}" for j in family.jobs]


def short_name(name: str) -> str:
    """A layer name for an axis: ``model.layers.3.self_attn.q_proj`` -> ``L3.q_proj``."""
    return name.replace("model.layers.", "L").replace("self_attn.", "").replace("mlp.", "")


def tables(fams: list[LayerFamily]) -> list[Table]:
    """Markdown/HTML tables: layers that vary most, and layers most correlated with perplexity / KL."""
    if not fams:
        return []
    varying, corr = [], []
    for family in fams:
        moving = [(name, sd) for name, sd in family.spread if sd > 0][:TOP]
        if not moving:
            why = f"n={len(family.jobs)} set(s)" if len(family.jobs) < 2 else "every layer's error is identical across sets"
            varying.append([family.label, "–", str(NA(why)), "", str(len(family.jobs))])
        for name, sd in moving:
            row = family.errors[family.names.index(name)]
            finite = [x for x in row if x is not None and math.isfinite(x)]
            varying.append([family.label, name, f"{sd:.3f}", f"{min(finite):.3g} – {max(finite):.3g}", str(len(finite))])
        for prefix in ("perplexity/", "compression/kl_from_dense"):
            top = top_correlations(family, prefix)
            for metric, name, rho, p, p_holm, n in top:
                corr.append([family.label, metric, name, f"{rho:+.2f}", f"{p:.3g}", f"{p_holm:.3g}", str(n)])
            if top:
                continue
            reasons = sorted({str(r[2]) for r in family.correlations if r[0].startswith(prefix) and len(r) == 3})
            metric = next((r[0] for r in family.correlations if r[0].startswith(prefix)), prefix.rstrip("/"))
            corr.append([family.label, metric, "–", "; ".join(reasons) or str(NA(f"n={len(family.jobs)} < 3")), "", "", ""])
    return [
        Table(title="Layers whose output error varies most across calibration sets", anchor="layers-varying",
              header=["family", "layer", "SD of log10 error", "error min – max", "sets"], rows=varying,
              note="Output error: relative Frobenius norm of the layer's output, compressed vs dense, on held-out windows "
                   "(results.json layers.output_error). Heatmaps: figures/layers_*.png."),
        Table(title="Layers whose error tracks the job's perplexity / KL across calibration sets (Spearman)",
              anchor="layers-correlation", header=["family", "metric", "layer", "rho", "p", "p (Holm)", "n"], rows=corr,
              note=f"scipy.stats.spearmanr between a layer's output error and the job's metric over the family's "
                   f"calibration sets; p Holm-corrected over the layers of one family x metric; top {TOP} by |rho|."),
    ]


def csv_rows(fams: list[LayerFamily]) -> dict[str, list[dict]]:
    """``layers.csv`` (one row per layer x set) and ``layer_correlations.csv``."""
    errors, corr = [], []
    for family in fams:
        model, method, n, seq, variant = family.key
        base = {"model": model, "method": method, "n_samples": n, "seq_len": seq, "variant": variant}
        for name, row in zip(family.names, family.errors):
            for job, value in zip(family.jobs, row):
                errors.append({**base, "layer": name, "source": job.source, "seed": job.seed,
                               "output_error": "" if value is None else value})
        for r in family.correlations:
            if len(r) == 6:
                corr.append({**base, "metric": r[0], "layer": r[1], "spearman_rho": r[2], "p": r[3], "p_holm": r[4], "n": r[5]})
            else:
                corr.append({**base, "metric": r[0], "layer": r[1] or "", "spearman_rho": str(r[2]), "p": "", "p_holm": "", "n": ""})
    return {k: v for k, v in {"layers": errors, "layer_correlations": corr}.items() if v}
