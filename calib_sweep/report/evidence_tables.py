"""The evidence tables of the report (:mod:`calib_sweep.report.evidence`): display rows for Markdown/HTML and
raw rows for CSV and W&B, built from one place so the three never disagree.

Every figure names its test, n and correction (in the table's note or its columns); a figure that cannot
be computed is shown as ``n/a (reason)`` in every format, never as 0 or NaN.
"""

from __future__ import annotations

from typing import Any

from calib_sweep.report.aggregate import Summary, metric_label
from calib_sweep.report.display import Table, fmt
from calib_sweep.report.display import unit as _unit
from calib_sweep.report.evidence import FAMILIES, GLOBAL_FAMILY, POOLED, Inference
from calib_sweep.report.statistics import ALPHA, BONETT_MIN_N, MEAN_CI_METHOD, NA, POWER, Interval, Test, sd_ci_method


def _fmt(metric: str, value: float | None) -> str:
    return fmt(metric, value, spread=True)


def _p(p: float) -> str:
    return f"{p:.3g}"


def _ci(metric: str, estimate: float | None, ci: Interval | NA | None) -> str:
    if ci is None:
        return "–"
    if isinstance(ci, NA):
        return (f"{_fmt(metric, estimate)} " if estimate is not None else "") + str(ci)
    return f"{_fmt(metric, ci.estimate)} [{_fmt(metric, ci.low)}, {_fmt(metric, ci.high)}]"


def _raw(x: Any) -> Any:
    """CSV cell: numbers as they are, n/a with its reason, None as empty."""
    if x is None:
        return ""
    if isinstance(x, NA):
        return str(x)
    return x


def _size(n: Any, seq: Any) -> str:
    return f"{n}×{seq}"


def _num(x: float) -> str:
    """A raw number in a CSV sentence (4 significant digits)."""
    return f"{x:.4g}"


def mde_text(metric: str, inf: Inference | None, *, raw: bool = False, dispersion: bool = False) -> str:
    """The minimum detectable effect in words: ``4.51 (7.1 SD)``, ``SD ratio 3.2 (SD 0.52)``, or ``n/a (reason)``;
    display units (accuracy in points) unless ``raw``."""
    if inf is None:
        return ""
    if isinstance(inf.mde_sd, NA):
        return str(inf.mde_sd)
    show = _num if raw else (lambda x: _fmt(metric, x))
    units = str(inf.mde) if isinstance(inf.mde, NA) else show(inf.mde)
    if dispersion:
        return f"SD ratio {inf.mde_sd:.2g} (SD {units})"
    return f"{units} ({inf.mde_sd:.2g} SD)"


def verdict_text(metric: str, inf: Inference | None, *, raw: bool = False, dispersion: bool = False) -> str:
    """``different``, ``equivalent within ±m`` (``within SD ratio r`` for dispersion), ``inconclusive (MDE ...)``
    or ``n/a (reason)``: the only words the report uses for the outcome of a comparison."""
    if inf is None:
        return ""
    if inf.verdict == "equivalent":
        if dispersion:
            return f"equivalent within SD ratio {inf.margin:g}"
        return f"equivalent within ±{_num(inf.margin) if raw else _fmt(metric, inf.margin)}"
    if inf.verdict == "inconclusive":
        if isinstance(inf.mde_sd, NA):
            return f"inconclusive ({inf.mde_sd.reason})"
        return f"inconclusive (MDE {mde_text(metric, inf, raw=raw, dispersion=dispersion)})"
    return inf.verdict


def _inference_fields(metric: str, inf: Inference | None, *, dispersion: bool = False) -> dict[str, Any]:
    """CSV fields of an :class:`~calib_sweep.report.evidence.Inference` (raw units)."""
    if inf is None:
        return {}
    return {
        "family": inf.family, "family_size": inf.family_size, "alpha_per_test": inf.alpha,
        "mde": _raw(inf.mde), "mde_sd_ratio" if dispersion else "mde_sd": _raw(inf.mde_sd),
        "power": (f"{POWER:.0%}, Brown-Forsythe, simulated (normal data, seeded) at alpha/m" if dispersion
                  else f"{POWER:.0%}, two-sided t (statsmodels TTestIndPower.solve_power) at alpha/m"),
        "equivalence_margin": _raw(inf.margin), "equivalence_rule": inf.margin_rule,
        "equivalence_test": ("TOST on SD ratios: two one-sided F tests per pair, intersection-union" if dispersion
                             else "TOST, Welch (statsmodels ttost_ind, usevar=unequal)"),
        "equivalence_p": _raw(inf.equivalence_p), "equivalence_p_holm": _raw(inf.equivalence_p_adjusted),
        "verdict": verdict_text(metric, inf, raw=True, dispersion=dispersion),
    }


def _comparison_fields(s, side: str, correction: str) -> dict[str, Any]:
    """CSV fields of one pairwise comparison (:class:`calib_sweep.report.evidence.SourceComparison`);
    ``side`` names the compared things (``source``, ``strategy``)."""
    c = s.comparison
    return {
        "n_samples": s.n_samples, "seq_len": s.seq_len, "variant": s.variant, "metric": s.metric,
        f"{side}_a": c.a, f"{side}_b": c.b, "n_a": c.n_a, "n_b": c.n_b, "mean_a": _raw(c.mean_a), "mean_b": _raw(c.mean_b),
        "test": "Welch t (scipy.stats.ttest_ind, equal_var=False)" if c.test == "welch"
        else "Mann-Whitney U (scipy.stats.mannwhitneyu, two-sided)",
        "statistic": _raw(c.na or c.statistic), "p": _raw(c.na or c.p), "p_holm": _raw(c.na or c.p_holm),
        "correction": f"Holm over {correction}", "effect": _raw(c.na or c.effect), "effect_size": c.effect_name,
        **_inference_fields(s.metric, s.inference),
    }


def _comparison_cells(s) -> list[str]:
    """Display cells of one pairwise comparison: pair, n, means, statistic, p, p (Holm), effect, MDE, verdict."""
    c = s.comparison
    return [f"{c.a} vs {c.b}", f"{c.n_a}, {c.n_b}", f"{_fmt(s.metric, c.mean_a)} vs {_fmt(s.metric, c.mean_b)}",
            str(c.na) if c.na else f"{c.statistic:.3g}", "" if c.na else _p(c.p), "" if c.na or c.p_holm is None else _p(c.p_holm),
            "" if c.na else f"{c.effect:+.2f}", mde_text(s.metric, s.inference), verdict_text(s.metric, s.inference)]


def _family_note(ev, table: str) -> str:
    family = GLOBAL_FAMILY if ev.family == "global" else FAMILIES[table]
    return (f"Holm family: {family}. MDE: the difference of means detectable with {POWER:.0%} power at this row's n and "
            f"alpha = {ALPHA}/m (m: tested rows of its family; Holm's first step, so conservative), in the metric's units "
            "and in pooled SDs (statsmodels TTestIndPower.solve_power, two-sided). Verdict: 'different' when p (Holm) < "
            f"{ALPHA}; 'equivalent within ±m' when a TOST (two one-sided Welch t tests, statsmodels ttost_ind) against "
            f"the equivalence margin gives Holm-corrected p < {ALPHA}; else 'inconclusive (MDE ...)': not rejecting is not "
            "evidence of no effect. Margins: " + _margins_note(ev) + ".")


def _margins_note(ev) -> str:
    return "; ".join(f"{key} ±{m.rule}" if key != "sd_ratio" else f"dispersion within {m.rule}"
                     for key, m in ev.margins.items())


def rows(summary: Summary) -> dict[str, list[dict[str, Any]]]:
    """Raw rows per evidence CSV: ``evidence``, ``dispersion_tests``, ``source_comparisons``, ``noise_floor``,
    ``strategy_comparisons``, ``controls``, ``hardware``, ``base_grid`` (name -> list of dicts; empty lists are left out)."""
    ev = summary.evidence
    if ev is None:
        return {}
    out: dict[str, list[dict[str, Any]]] = {}
    evidence = []
    for g in summary.groups:
        ge = ev.groups.get(g.key)
        if ge is None:
            continue
        for metric in ge.ci_mean:
            stat = g.stats[metric]
            cm, cs = ge.ci_mean[metric], ge.ci_sd[metric]
            evidence.append({
                "model": g.model, "method": g.method, "source": g.source, "n_samples": g.n_samples, "seq_len": g.seq_len,
                "variant": g.variant, "metric": metric, "n": stat.n, "mean": _raw(stat.mean),
                "sd": _raw(stat.sd if stat.sd is not None else NA(f"n={stat.n} < 2")),
                "mean_ci_low": _raw(cm if isinstance(cm, NA) else cm.low), "mean_ci_high": _raw(cm if isinstance(cm, NA) else cm.high),
                "sd_ci_low": _raw(cs if isinstance(cs, NA) else cs.low), "sd_ci_high": _raw(cs if isinstance(cs, NA) else cs.high),
                "mean_ci_method": f"95% {MEAN_CI_METHOD}", "sd_ci_method": f"95% {sd_ci_method(stat.n)}",
                "sets_needed": _raw(ge.needed.get(metric)),
                "sets_needed_target": ge.target.get(metric, ""),
                "hardware": "; ".join(sorted({j.hardware or "not recorded" for j in g.jobs if j.status == "ok"})),
            })
    out["evidence"] = evidence
    out["dispersion_tests"] = [{
        "model": d.model, "source": d.source, "n_samples": d.n_samples, "seq_len": d.seq_len, "variant": d.variant,
        "metric": d.metric, "test": d.result.name if isinstance(d.result, Test) else "Brown-Forsythe (levene, center=median)",
        "n": "" if isinstance(d.result, NA) else " ".join(f"{k}={v}" for k, v in d.result.n.items()),
        "statistic": _raw(d.result if isinstance(d.result, NA) else d.result.statistic),
        "p": _raw(d.result if isinstance(d.result, NA) else d.result.p),
        "p_holm": _raw(d.result if isinstance(d.result, NA) else (d.inference.p_adjusted if d.inference else "")),
        "excluded": " ".join(d.excluded), **_inference_fields(d.metric, d.inference, dispersion=True),
    } for d in ev.dispersion_tests]
    out["source_comparisons"] = [
        {"model": s.model, "method": s.method, **_comparison_fields(s, "source", s.inference.family if s.inference else FAMILIES["source_comparisons"])}
        for s in ev.comparisons]
    out["strategy_comparisons"] = [
        {"model": s.model, "method_source": s.method,
         **_comparison_fields(s, "strategy", s.inference.family if s.inference else FAMILIES["strategy_comparisons"])}
        for s in ev.strategies]
    out["noise_floor"] = [{
        "model": r.model, "method": r.method, "source": r.source, "n_samples": r.n_samples, "seq_len": r.seq_len,
        "variant": r.variant, "metric": r.metric, "noise_sd": _raw(r.noise_sd), "noise_df": r.noise_df,
        "noise_sets": r.noise_cells, "noise_runs": r.noise_runs, "noise_duplicates": r.noise_duplicates, "perturbations": "; ".join(r.perturbations),
        "calibration_sd": _raw(r.calib_sd), "calibration_df": r.calib_df,
        "F": _raw(r.test if isinstance(r.test, NA) else r.test.statistic), "p": _raw(r.test if isinstance(r.test, NA) else r.test.p),
        "test": "one-sided F test of variances (scipy.stats.f.sf)",
        "clearly_above_noise": "" if r.clearly_above is None else r.clearly_above,
    } for r in ev.noise]
    out["controls"] = [{
        "model": c.model, "method": c.method, "n_samples": c.n_samples, "seq_len": c.seq_len, "variant": c.variant,
        "jobs": c.n_jobs, "sources": " ".join(c.sources), "seeds": " ".join(map(str, c.seeds)), "identical": c.identical,
        "differing": "; ".join(f"{m} range {v!r}" for m, v in c.differing.items()),
    } for c in ev.controls]
    counts: dict[str, int] = {}
    for job in summary.jobs:
        if job.status == "ok":
            counts[job.hardware or "not recorded"] = counts.get(job.hardware or "not recorded", 0) + 1
    out["hardware"] = [{"hardware": k, "jobs_ok": v} for k, v in sorted(counts.items())]
    out["base_grid"] = [{"group": label, "warning": w} for label, warnings in ev.base_grid_flags for w in warnings]
    return {k: v for k, v in out.items() if v}


def families_table(ev) -> Table | None:
    """What each Holm family is, per table, with the number of families, their sizes and the verdicts counted
    (None when the report has no comparison or dispersion test)."""
    out = []
    for name, title, items, dispersion in (("source_comparisons", "Sources compared", ev.comparisons, False),
                                           ("strategy_comparisons", "Selection strategies compared", ev.strategies, False),
                                           ("dispersion_tests", "Equal dispersion (Brown–Forsythe)", ev.dispersion_tests, True)):
        if not items:
            continue
        infs = [r.inference for r in items if r.inference is not None]
        if dispersion:
            keys = ([0] * len(items) if ev.family == "global" else list(range(len(items))))
        else:
            keys = [0 if ev.family == "global" else (r.model, r.method, r.n_samples, r.seq_len, r.variant, r.metric) for r in items]
        sizes = sorted({inf.family_size for inf in infs if inf.p_adjusted is not None})
        counts: dict[str, int] = {}
        for inf in infs:
            word = inf.verdict if inf.verdict in ("different", "equivalent", "inconclusive") else "n/a"
            counts[word] = counts.get(word, 0) + 1
        out.append([title, GLOBAL_FAMILY if ev.family == "global" else FAMILIES[name], str(len(set(keys))),
                    str(sum(inf.p_adjusted is not None for inf in infs)),
                    f"{sizes[0]}–{sizes[-1]}" if len(sizes) > 1 else (str(sizes[0]) if sizes else "0"),
                    ", ".join(f"{counts.get(w, 0)} {w}" for w in ("different", "equivalent", "inconclusive", "n/a") if counts.get(w))])
    if not out:
        return None
    return Table(
        title="Holm families, power and equivalence",
        header=["table", "one Holm family is", "families", "tested rows", "family size m", "verdicts"],
        rows=out,
        note=f"--family {ev.family}" + (" (default; --family global makes each table one family)." if ev.family == "within"
                                         else ": one Holm family over each whole table.")
             + f" Each row's minimum detectable effect (MDE) is at {POWER:.0%} power and alpha = {ALPHA}/m for its family's "
               "size m (conservative: Holm's first step). A row is 'different' only when its corrected p < "
               f"{ALPHA}, 'equivalent' only when an equivalence test (TOST) against the margin rejects (Holm-corrected), and "
               "otherwise 'inconclusive' with its MDE: a failure to reject is never reported as no effect. Equivalence "
               "margins (report.equivalence, --equivalence METRIC=MARGIN): " + _margins_note(ev) + ".",
        anchor="families",
    )


def tables(summary: Summary, with_variant: bool) -> list[Table]:
    """The evidence tables (:class:`calib_sweep.report.display.Table`), in page order."""
    ev = summary.evidence
    if ev is None:
        return []
    out = []
    vh = ["variant"] if with_variant else []

    def v(x: str) -> list[str]:
        return [x or "–"] if with_variant else []

    if ev.splits:
        out.append(Table(
            title="Why groups are split",
            header=["setting", "kind", "values"],
            rows=[[key, kind, " | ".join(values)] for key, kind, values in ev.splits],
            note="These settings differ between comparable jobs, so their jobs are in separate groups (the variant column) "
                 "and are never pooled. An evaluation-protocol difference means the figures are not comparable.",
            anchor="splits",
        ))
    hw = rows(summary).get("hardware", [])
    flagged = ev.hardware_flags
    out.append(Table(
        title="Hardware the jobs ran on",
        header=["group with jobs on different hardware", "hardware"] if flagged else ["hardware (runtime.hardware.id)", "jobs ok"],
        rows=[[label, " | ".join(ids)] for label, ids in flagged] if flagged else [[r["hardware"], str(r["jobs_ok"])] for r in hw],
        note=("FLAGGED: these groups mix hardware (CPU kernels, BLAS, GPU or thread count); their spread includes "
              "hardware noise. " if flagged else "Every group's finished jobs ran on one hardware label. ")
             + "Labels: " + "; ".join(f"{r['hardware']} ({r['jobs_ok']} jobs)" for r in hw),
        anchor="hardware",
    ))
    if ev.base_grid_flags:
        out.append(Table(
            title="Base weights already on a quantization grid",
            header=["group", "base grid"],
            rows=[[label, " | ".join(warnings)] for label, warnings in ev.base_grid_flags],
            note="FLAGGED: these jobs quantized a model whose stored weights (results.json weights_storage: the embedded "
                 "GGUF file's tensor types) already lie on a grid at or within one bit of the job's. Rounding can return "
                 "to that grid, so RTN is favoured over calibration-based methods by construction; rank methods on a "
                 "setting where the base grid does not decide (docs/testbed).",
            anchor="base_grid",
        ))
    if ev.controls:
        out.append(Table(
            title="Data-free controls: identical whatever the calibration set?",
            header=["model", "method", "n×len"] + vh + ["jobs", "sources", "seeds", "identical (SD exactly 0)"],
            rows=[[c.model, c.method, _size(c.n_samples, c.seq_len)] + v(c.variant)
                  + [str(c.n_jobs), " ".join(c.sources), " ".join(map(str, c.seeds)),
                     "yes" if c.identical else "NO: " + "; ".join(f"{metric_label(m)} range {_fmt(m, r)}" for m, r in c.differing.items())]
                  for c in ev.controls],
            note="RTN, magnitude pruning and the dense model never read calibration data: every figure of their jobs must be "
                 "bit-identical across sources and seeds. A NO means the pipeline leaks calibration data or is not deterministic.",
            anchor="controls",
        ))
    if ev.noise:
        shown = [r for r in ev.noise]
        out.append(Table(
            title="Numerical noise floor vs spread across calibration sets",
            header=["model", "method", "n×len"] + vh + ["source", "metric", "noise SD (df; distinct runs)", "calibration SD (df)", "F", "p",
                                                         "verdict"],
            rows=[[r.model, r.method, _size(r.n_samples, r.seq_len)] + v(r.variant) + [
                r.source, _unit(r.metric),
                str(r.noise_sd) if isinstance(r.noise_sd, NA) else f"{_fmt(r.metric, r.noise_sd)} ({r.noise_df}; {r.noise_runs}"
                + (f" + {r.noise_duplicates} dup." if r.noise_duplicates else "") + ")",
                str(r.calib_sd) if isinstance(r.calib_sd, NA) else f"{_fmt(r.metric, r.calib_sd)} ({r.calib_df})",
                str(r.test) if isinstance(r.test, NA) else (f"{r.test.statistic:.3g}"),
                "" if isinstance(r.test, NA) else _p(r.test.p),
                "n/a" if r.clearly_above is None else ("above noise" if r.clearly_above else "NOT clearly above noise"),
            ] for r in shown],
            note="Noise SD: pooled SD of reruns of one calibration set under perturbations that leave the data unchanged "
                 f"({'; '.join(sorted({p for r in shown for p in r.perturbations}))}); calibration SD: SD across calibration "
                 f"sets (seeds) of the group, or pooled within sources for '{POOLED}'. A rerun equal to another rerun of the "
                 f"same set in every metric is one observation (+ N dup.: left out, no degree of freedom). Verdict: one-sided F test of the two "
                 f"variances (scipy.stats.f.sf), 'above noise' when p < {ALPHA}; no multiple-comparison correction.",
            anchor="noise-floor",
        ))
    ev_rows = []
    for g in summary.groups:
        ge = ev.groups.get(g.key)
        if ge is None:
            continue
        for metric in ge.ci_mean:
            stat = g.stats[metric]
            needed = ge.needed.get(metric)
            ev_rows.append([g.model, g.method, g.source, _size(g.n_samples, g.seq_len)] + v(g.variant) + [
                _unit(metric), str(stat.n), _ci(metric, stat.mean, ge.ci_mean[metric]), _ci(metric, stat.sd, ge.ci_sd[metric]),
                (str(needed) if isinstance(needed, NA) else f"{needed} ({ge.target.get(metric)})") if needed is not None else "–",
            ])
    if ev_rows:
        out.append(Table(
            title="Confidence intervals and calibration sets needed",
            header=["model", "method", "source", "n×len"] + vh + ["metric", "n", "mean [95% CI]", "SD [95% CI]", "sets needed"],
            rows=ev_rows,
            note="95% CIs over the calibration sets of each group. Mean: Student t (scipy.stats.t.ppf). SD: chi-square "
                 f"(scipy.stats.chi2.ppf, normal theory) for n < {BONETT_MIN_N}, Bonett's kurtosis-adjusted interval (Bonett 2006) "
                 f"from n = {BONETT_MIN_N}; each covers at least 93% at n = 3, 4, 5, 10, 20 for normal and lognormal (sigma 0.25) "
                 "data (bench/ci_coverage.py), where a BCa bootstrap covers 66-85% at n = 5. Sets needed: smallest n whose "
                 "Student-t 95% CI of the mean is no wider than the target (±0.5 accuracy points; ±1% of the mean perplexity), "
                 "from the observed SD. n < 3 or all values equal: n/a (reason).",
            anchor="evidence",
        ))
    families = families_table(ev)
    if families is not None:
        out.append(families)
    if ev.dispersion_tests:
        out.append(Table(
            title="Equal dispersion between methods on the same source (Brown–Forsythe)",
            header=["model", "source", "n×len"] + vh + ["metric", "methods (n)", "W", "p", "p (family)", "MDE (80%)", "verdict",
                                                         "left out"],
            rows=[[d.model, d.source, _size(d.n_samples, d.seq_len)] + v(d.variant) + [
                _unit(d.metric), "–" if isinstance(d.result, NA) else ", ".join(f"{k} ({n})" for k, n in d.result.n.items()),
                str(d.result) if isinstance(d.result, NA) else f"{d.result.statistic:.3g}",
                "" if isinstance(d.result, NA) else _p(d.result.p),
                "" if isinstance(d.result, NA) or d.inference is None or d.inference.p_adjusted is None else _p(d.inference.p_adjusted),
                mde_text(d.metric, d.inference, dispersion=True), verdict_text(d.metric, d.inference, dispersion=True),
                ", ".join(d.excluded) + (" (data-free)" if d.excluded else ""),
            ] for d in ev.dispersion_tests],
            note="scipy.stats.levene(center='median') across the data-dependent methods' values on one source (one value per "
                 f"calibration set). Family: {GLOBAL_FAMILY if ev.family == 'global' else FAMILIES['dispersion_tests']}. "
                 f"MDE: the SD ratio (one method's SD over the others') that Brown-Forsythe detects with {POWER:.0%} power at "
                 f"these n and alpha = {ALPHA}/m (seeded simulation of normal data), and that SD in the metric's units. "
                 f"Verdict: 'different' when p (family) < {ALPHA}; 'equivalent within SD ratio r' when two one-sided F tests "
                 f"per pair of methods (intersection-union, Holm over the family) give p < {ALPHA}; else 'inconclusive (MDE "
                 "...)': not rejecting is not evidence of equal spread.",
            anchor="dispersion-tests",
        ))
    if ev.comparisons:
        name = "Welch t" if ev.test == "welch" else "Mann–Whitney U"
        effect = "Hedges' g" if ev.test == "welch" else "rank-biserial r"
        out.append(Table(
            title=f"Sources compared within each method ({name}, Holm-corrected)",
            header=["model", "method", "n×len"] + vh + ["metric", "sources", "n", "means", "t" if ev.test == "welch" else "U",
                                                         "p", "p (Holm)", effect, "MDE (80%)", "verdict"],
            rows=[[s.model, s.method, _size(s.n_samples, s.seq_len)] + v(s.variant) + [_unit(s.metric)] + _comparison_cells(s)
                  for s in ev.comparisons],
            note=f"{name} per pair of sources, two-sided; p (Holm): Holm's correction over the family (statsmodels "
                 f"multipletests). {effect}: positive when the first source's mean is larger. Data-free methods are not "
                 "compared (see the controls). " + _family_note(ev, "source_comparisons"),
            anchor="source-comparisons",
        ))
    if ev.strategies:
        name = "Welch t" if ev.test == "welch" else "Mann–Whitney U"
        effect = "Hedges' g" if ev.test == "welch" else "rank-biserial r"
        out.append(Table(
            title=f"Selection strategies compared within each method and source ({name}, Holm-corrected)",
            header=["model", "method / source", "n×len", "other settings", "metric", "strategies", "n", "means",
                    "t" if ev.test == "welch" else "U", "p", "p (Holm)", effect, "MDE (80%)", "verdict"],
            rows=[[s.model, s.method, _size(s.n_samples, s.seq_len), s.variant or "–", _unit(s.metric)] + _comparison_cells(s)
                  for s in ev.strategies],
            note=f"Groups that differ only in their selection.* settings (the calibration selection strategy), compared over "
                 f"their calibration sets (seeds): each strategy (first) against the random draw (second) when random ran in the "
                 f"same model × method × source × size, else every pair. {effect}: positive when the first strategy's mean is "
                 "larger (for perplexity, larger is worse). " + _family_note(ev, "strategy_comparisons"),
            anchor="strategy-comparisons",
        ))
    return out
