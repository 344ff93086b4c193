"""The report's evidence (calib_sweep.report.evidence) on synthetic sweeps with known values: noise-floor
reruns kept out of the groups and set against the across-calibration-sets SD, data-free controls, mixed
evaluation protocols split (never pooled) with the reason, mixed hardware flagged, and n/a reasons in
every output format (never 0 or NaN)."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
from scipy import stats

from calib_sweep.report import load_jobs, summarize, write_report
from test_report import _config, write_job

HW = "cpu AMD EPYC [AVX512, mkl] x2 threads"


def _job(sweep, num, method, source, seed, ppl, acc, *, threads="auto", rows=None, hardware=HW, sha=None, **config_extra):
    config = _config(method, source, seed)
    config["threads"] = threads
    config["perturb"] = {"row_order_seed": rows}
    for dotted, value in config_extra.items():
        node = config
        *parents, leaf = dotted.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    metrics = {"perplexity/wikitext": ppl, "zeroshot/boolq/acc": acc, "zeroshot/mean_acc": acc,
               "compression/kl_from_dense": ppl / 100}
    extra = {"runtime": {"hardware": {"id": hardware}}, **({"calibration": {"token_sha256": sha}} if sha else {})}
    return write_job(sweep, num, config, metrics=metrics, extra=extra)


def _csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


GPTQ_SEEDS = [30.0, 30.4, 29.7, 30.9, 30.2]       # across calibration sets
GPTQ_NOISE = [30.0, 30.01, 29.99, 30.02]          # seed 0 rerun: drawn order, threads=1, rows seed 1, rows seed 2
WANDA_SEEDS = [40.0, 40.1, 39.9, 40.05, 39.95]
WANDA_NOISE = [40.0, 41.0, 39.0, 40.5]            # noise larger than the spread across sets


def _noise_sweep(root):
    sweep = root / "s"
    num = 0
    for method, seeds, noise in (("gptq", GPTQ_SEEDS, GPTQ_NOISE), ("wanda", WANDA_SEEDS, WANDA_NOISE)):
        for seed, ppl in enumerate(seeds):
            _job(sweep, num, method, "c4", seed, ppl, 0.6 + seed / 100)
            num += 1
        for (threads, rows), ppl in zip(((1, None), ("auto", 1), ("auto", 2)), noise[1:]):
            _job(sweep, num, method, "c4", 0, ppl, 0.6, threads=threads, rows=rows,
                 hardware=HW.replace("x2", f"x{threads}") if threads != "auto" else HW)
            num += 1
    return sweep


def test_noise_floor_reruns_stay_out_of_groups_and_are_tested_against_the_spread(tmp_path):
    jobs = load_jobs([_noise_sweep(tmp_path)])
    summary = summarize(jobs)
    assert sum(j.repeat for j in jobs) == 6 and all(j.status == "ok" for j in jobs)
    gptq = next(g for g in summary.groups if g.method == "gptq")
    assert gptq.stats["perplexity/wikitext"].n == 5  # the 3 reruns of seed 0 are not calibration sets
    assert gptq.stats["perplexity/wikitext"].sd == pytest.approx(np.std(GPTQ_SEEDS, ddof=1))
    rows = {(r.method, r.source): r for r in summary.evidence.noise if r.metric == "perplexity/wikitext"}
    g = rows[("gptq", "c4")]
    assert g.noise_sd == pytest.approx(np.std(GPTQ_NOISE, ddof=1)) and g.noise_df == 3 and g.noise_runs == 4
    assert g.calib_sd == pytest.approx(np.std(GPTQ_SEEDS, ddof=1)) and g.calib_df == 4
    f = np.var(GPTQ_SEEDS, ddof=1) / np.var(GPTQ_NOISE, ddof=1)
    assert g.test.statistic == pytest.approx(f) and g.test.p == pytest.approx(stats.f.sf(f, 4, 3))
    assert g.clearly_above is True
    assert g.perturbations == ["none", "rows=seed 1", "rows=seed 2", "threads=1"]
    assert rows[("wanda", "c4")].clearly_above is False
    out = tmp_path / "r"
    write_report([tmp_path / "s"], out, wandb=False)
    md = (out / "report.md").read_text()
    assert "NOT clearly above noise" in md and "above noise" in md
    noise_csv = [r for r in _csv(out / "noise_floor.csv") if r["metric"] == "perplexity/wikitext"]
    assert {(r["method"], r["clearly_above_noise"]) for r in noise_csv} == {("gptq", "True"), ("wanda", "False")}
    # hardware: the reruns ran with other thread counts, but every group's canonical jobs on one label
    assert "Every group's finished jobs ran on one hardware label" in md
    jobs_csv = _csv(out / "jobs.csv")
    assert sum(r["noise_repeat"] == "True" for r in jobs_csv) == 6
    assert {r["perturbation"] for r in jobs_csv} == {"", "threads=1", "rows=seed 1", "rows=seed 2"}


def test_statistics_across_sources_in_every_format(tmp_path):
    sweep = tmp_path / "s"
    num = 0
    values = {"c4": [30.0, 30.4, 29.7, 30.9, 30.2], "wikipedia": [32.0, 32.5, 31.8, 32.9, 32.2], "pile": [30.1, 30.0]}
    for source, ppls in values.items():
        for seed, ppl in enumerate(ppls):
            _job(sweep, num, "sparsegpt", source, seed, ppl, 0.55 + seed / 200)
            _job(sweep, num + 100, "gptq", source, seed, 28 + (ppl - 30) / 4, 0.60)
            num += 1
    out = tmp_path / "r"
    files = write_report([sweep], out, wandb=False)
    ev = files.summary.evidence
    # Holm family: 3 pairs of sources within sparsegpt x perplexity; pile has n=2 -> n/a, out of the family
    pairs = {(c.comparison.a, c.comparison.b): c.comparison for c in ev.comparisons
             if c.method == "sparsegpt" and c.metric == "perplexity/wikitext"}
    assert str(pairs[("c4", "pile")].na) == "n/a (n=2 < 3)"
    cw = pairs[("c4", "wikipedia")]
    assert cw.p == pytest.approx(stats.ttest_ind(values["c4"], values["wikipedia"], equal_var=False).pvalue)
    assert cw.p_holm == pytest.approx(cw.p)  # the only testable pair
    assert cw.effect < 0 and cw.p_holm < 0.05
    # Brown-Forsythe between gptq and sparsegpt on c4 (gptq's values are sparsegpt's / 4 around 28)
    bf = next(d for d in ev.dispersion_tests if d.source == "c4" and d.metric == "perplexity/wikitext")
    gptq_c4 = [28 + (p - 30) / 4 for p in values["c4"]]
    assert bf.result.statistic == pytest.approx(stats.levene(gptq_c4, values["c4"], center="median").statistic)
    # gptq's accuracy is 0.60 in every job: its CI and sets needed say why they are n/a
    gptq = next(g for g in files.summary.groups if g.method == "gptq" and g.source == "c4")
    assert str(ev.groups[gptq.key].ci_mean["zeroshot/boolq/acc"]) == "n/a (all 5 values equal)"
    rows = _csv(out / "evidence.csv")
    pile = next(r for r in rows if r["method"] == "sparsegpt" and r["source"] == "pile" and r["metric"] == "perplexity/wikitext")
    assert pile["mean_ci_low"] == "n/a (n=2 < 3)" and pile["sets_needed"] == "n/a (n=2 < 3)"
    c4 = next(r for r in rows if r["method"] == "sparsegpt" and r["source"] == "c4" and r["metric"] == "perplexity/wikitext")
    assert float(c4["mean_ci_low"]) < float(c4["mean"]) < float(c4["mean_ci_high"])
    low, high = stats.t.interval(0.95, 4, loc=np.mean(values["c4"]), scale=stats.sem(values["c4"]))
    assert (float(c4["mean_ci_low"]), float(c4["mean_ci_high"])) == (pytest.approx(low), pytest.approx(high))
    assert c4["mean_ci_method"] == "95% Student t (scipy.stats.t.ppf)"
    assert c4["sd_ci_method"] == "95% Bonett 2006 (kurtosis-adjusted; n >= 5)"
    assert pile["sd_ci_low"] == "n/a (n=2 < 3)" and pile["sd_ci_method"].startswith("95% chi-square")
    half = 0.01 * float(c4["mean"])
    n = int(c4["sets_needed"])
    s = float(c4["sd"])
    assert stats.t.ppf(0.975, n - 1) * s / math.sqrt(n) <= half < stats.t.ppf(0.975, n - 2) * s / math.sqrt(n - 1)
    md = (out / "report.md").read_text()
    assert "n/a (n=2 < 3)" in md and "Holm" in md and "Brown–Forsythe" in md
    assert not any(word in md.lower().split() for word in ("nan", "nan,", "nan]"))
    html = (out / "report.html").read_text()
    assert "n/a (n=2 &lt; 3)" in html and "noise" not in html.split("<h2")[0]


def test_data_free_controls_mixed_protocols_and_mixed_hardware(tmp_path):
    sweep = tmp_path / "s"
    num = 0
    for source in ("c4", "wikipedia"):
        for seed in range(2):
            _job(sweep, num, "rtn", source, seed, 27.65, 0.5)
            # magnitude leaks: one job differs
            _job(sweep, num + 50, "magnitude", source, seed, 40.0 + (0.5 if (source, seed) == ("wikipedia", 1) else 0), 0.4)
            num += 1
    # gptq on c4 evaluated on 20 and on 100 items: two groups, never pooled
    for seed in range(3):
        _job(sweep, 200 + seed, "gptq", "c4", seed, 30 + seed, 0.6, eval__zeroshot__limit=20)
        _job(sweep, 210 + seed, "gptq", "c4", seed, 31 + seed, 0.62, eval__zeroshot__limit=100,
             hardware=HW if seed < 2 else "cuda NVIDIA H200 (sm 9.0) x2 threads")
    files = write_report([sweep], tmp_path / "r", wandb=False)
    ev = files.summary.evidence
    controls = {c.method: c for c in ev.controls}
    assert controls["rtn"].identical and controls["rtn"].n_jobs == 4 and controls["rtn"].sources == ["c4", "wikipedia"]
    assert not controls["magnitude"].identical
    assert controls["magnitude"].differing["perplexity/wikitext"] == pytest.approx(0.5)
    gptq = [g for g in files.summary.groups if g.method == "gptq"]
    assert len(gptq) == 2 and {g.stats["perplexity/wikitext"].n for g in gptq} == {3}
    assert ("eval.zeroshot.limit", "evaluation protocol", ["100", "20"]) in ev.splits
    (flag,) = ev.hardware_flags
    assert "eval.zeroshot.limit=100" in flag[0] and flag[1] == sorted([HW, "cuda NVIDIA H200 (sm 9.0) x2 threads"])
    md = (tmp_path / "r" / "report.md").read_text()
    assert "Why groups are split" in md and "evaluation protocol" in md
    assert "FLAGGED" in md and "cuda NVIDIA H200" in md
    assert "NO: compression/kl_from_dense range 0.005; ppl wikitext range 0.5 |" in md
    controls_csv = {r["method"]: r for r in _csv(tmp_path / "r" / "controls.csv")}
    assert controls_csv["rtn"]["identical"] == "True" and controls_csv["magnitude"]["identical"] == "False"


def test_layer_diagnostics_heatmap_spread_and_spearman(tmp_path):
    from calib_sweep.report import layers

    sweep = tmp_path / "s"
    names = [f"model.layers.{i}.mlp.down_proj" for i in range(4)]
    num = 0
    for source in ("c4", "wikipedia"):
        for seed in range(3):
            ppl = 30 + num  # layer 3's error rises with perplexity; layer 0's is constant; layer 1 falls
            folder = _job(sweep, num, "gptq", source, seed, ppl, 0.6)
            import json as _json
            record = _json.loads((folder / "results.json").read_text())
            record["layers"] = {"names": names, "output_error": [0.01, 0.5 / (num + 1), 0.02 + 0.001 * (num % 2), 10.0 ** num]}
            (folder / "results.json").write_text(_json.dumps(record))
            num += 1
    files = write_report([sweep], tmp_path / "r", wandb=False)
    (family,) = files.summary.layer_families
    assert layers.set_labels(family) == ["c4 s0", "c4 s1", "c4 s2", "wikipedia s0", "wikipedia s1", "wikipedia s2"]
    assert family.spread[0][0] == names[3] and family.spread[0][1] == pytest.approx(np.std(range(6), ddof=1))
    corr = {(r[0], r[1]): r for r in family.correlations}
    assert corr[("perplexity/wikitext", names[3])][2] == pytest.approx(1.0)
    assert corr[("perplexity/wikitext", names[1])][2] == pytest.approx(-1.0)
    assert str(corr[("perplexity/wikitext", names[0])][2]) == "n/a (constant values)"
    rho, p = stats.spearmanr([0.02, 0.021] * 3, range(30, 36))
    assert corr[("perplexity/wikitext", names[2])][2] == pytest.approx(rho)
    assert any(p.name.startswith("layers_") for p in files.figures)
    rows = _csv(tmp_path / "r" / "layers.csv")
    assert len(rows) == 4 * 6 and {r["source"] for r in rows} == {"c4", "wikipedia"}
    md = (tmp_path / "r" / "report.md").read_text()
    assert "varies most" in md and "Spearman" in md


def test_selection_strategies_are_compared_within_method_and_source(tmp_path):
    sweep = tmp_path / "s"
    random_ppl, low_ppl = [30.0, 30.4, 29.7, 30.9, 30.2], [28.1, 28.4, 27.9, 28.6, 28.0]
    for seed in range(5):
        _job(sweep, seed, "gptq", "c4", seed, random_ppl[seed], 0.6, selection={"name": "random", "pool_factor": 1})
        _job(sweep, 10 + seed, "gptq", "c4", seed, low_ppl[seed], 0.6,
             selection={"name": "perplexity", "pool_factor": 4, "band": "low"})
    files = write_report([sweep], tmp_path / "r", wandb=False)
    rows = [s for s in files.summary.evidence.strategies if s.metric == "perplexity/wikitext"]
    assert len(rows) == 1 and rows[0].method == "gptq / c4"
    c = rows[0].comparison
    # band exists only in the perplexity jobs, so it is no difference; name and pool_factor are
    assert (c.a, c.b) == ("name=perplexity, pool_factor=4", "name=random, pool_factor=1")
    assert c.p == pytest.approx(stats.ttest_ind(low_ppl, random_ppl, equal_var=False).pvalue) and c.p_holm == pytest.approx(c.p)
    assert c.effect < 0  # the low-perplexity strategy's perplexity is lower
    assert not files.summary.evidence.comparisons  # one source: no source pairs
    csv_rows = _csv(tmp_path / "r" / "strategy_comparisons.csv")
    assert {r["metric"] for r in csv_rows} >= {"perplexity/wikitext"}
    assert "Selection strategies compared" in (tmp_path / "r" / "report.md").read_text()


def test_strategies_are_compared_against_random_not_every_pair(tmp_path):
    sweep = tmp_path / "s"
    ppl = {"random": [30.0, 30.4, 29.7], "low": [28.1, 28.4, 27.9], "high": [33.0, 33.9, 32.8]}
    for i, (band, values) in enumerate(ppl.items()):
        selection = ({"name": "random", "pool_factor": 1} if band == "random"
                     else {"name": "perplexity", "pool_factor": 4, "band": band})
        for seed, value in enumerate(values):
            _job(sweep, 10 * i + seed, "wanda", "c4", seed, value, 0.6, selection=selection)
    files = write_report([sweep], tmp_path / "r", wandb=False)
    rows = [s.comparison for s in files.summary.evidence.strategies if s.metric == "perplexity/wikitext"]
    assert [(c.a, c.b) for c in rows] == [("band=high, name=perplexity, pool_factor=4", "name=random, pool_factor=1"),
                                          ("band=low, name=perplexity, pool_factor=4", "name=random, pool_factor=1")]
    high, low = rows
    assert low.p == pytest.approx(stats.ttest_ind(ppl["low"], ppl["random"], equal_var=False).pvalue)
    assert high.effect > 0 > low.effect
    assert max(c.p_holm for c in rows) == pytest.approx(max(max(c.p for c in rows), 2 * min(c.p for c in rows)))


def test_jobs_older_than_the_selection_group_count_as_random(tmp_path):
    # replication_cpu jobs run before the selection group existed have no `selection` in their config;
    # a selection sweep reuses them as its random jobs, so they must be the random side of the comparison.
    sweep = tmp_path / "s"
    for seed, (old, dedup) in enumerate(zip([30.0, 30.4, 29.7], [29.0, 29.2, 28.8])):
        assert "selection" not in _job(sweep, seed, "wanda", "c4", seed, old, 0.6).joinpath(".hydra", "config.yaml").read_text()
        _job(sweep, 10 + seed, "wanda", "c4", seed, dedup, 0.6, selection={"name": "dedup", "pool_factor": 2})
    summary = summarize(load_jobs([sweep]))
    (row,) = [s.comparison for s in summary.evidence.strategies if s.metric == "perplexity/wikitext"]
    assert (row.a, row.b) == ("name=dedup, pool_factor=2", "name=random, pool_factor=1") and row.n_b == 3


def test_jobs_refused_at_validate_form_no_group_or_variant(tmp_path):
    sweep = tmp_path / "s"
    _job(sweep, 0, "gptq", "c4", 0, 30.0, 0.6, eval__layer_diagnostics=True)
    config = _config("gptq", "c4", 0)
    config["eval"]["layer_diagnostics"] = "maybe"
    write_job(sweep, 1, config, status="failed", error="eval.layer_diagnostics='maybe' must be true or false",
              extra={"stage": "validate", "error_type": "ConfigError"})
    jobs = load_jobs([sweep])
    summary = summarize(jobs)
    assert [g.variant for g in summary.groups] == [""] and len(summary.groups) == 1
    assert summary.counts == {"ok": 1, "failed": 1} and not summary.evidence.splits
    refused = next(j for j in jobs if j.status == "failed")
    assert refused.config_refused and not refused.repeat


def _power_sweep(root):
    """gptq x 3 sources x 3 sets (perplexity): c4 and fiction 0.01 apart with a tiny SD (equivalent within 1%),
    wikipedia 2.5 higher (different); sparsegpt x 2 sources wide apart in spread (inconclusive); pile n=2."""
    sweep = root / "s"
    ppl = {("gptq", "c4"): [30.00, 30.02, 29.98], ("gptq", "fiction"): [30.01, 30.03, 29.99],
           ("gptq", "wikipedia"): [32.50, 32.55, 32.45], ("gptq", "pile"): [30.0, 30.1],
           ("sparsegpt", "c4"): [40.0, 43.0, 38.0], ("sparsegpt", "fiction"): [41.0, 37.0, 44.0]}
    num = 0
    for (method, source), values in ppl.items():
        for seed, value in enumerate(values):
            _job(sweep, num, method, source, seed, value, 0.6 + seed / 100 + (0.001 if source == "fiction" else 0))
            num += 1
    return sweep, ppl


def test_every_comparison_has_its_mde_and_one_verdict(tmp_path):
    from statsmodels.stats.power import TTestIndPower
    from statsmodels.stats.weightstats import ttost_ind

    sweep, ppl = _power_sweep(tmp_path)
    files = write_report([sweep], tmp_path / "r", wandb=False)
    rows = {(r["method"], r["source_a"], r["source_b"]): r for r in _csv(tmp_path / "r" / "source_comparisons.csv")
            if r["metric"] == "perplexity/wikitext"}
    # gptq: 6 pairs, 3 testable (pile has n=2) -> Holm family of m=3, MDE at alpha 0.05/3 for 3 vs 3
    cf = rows[("gptq", "c4", "fiction")]
    d = TTestIndPower().solve_power(effect_size=None, nobs1=3, alpha=0.05 / 3, power=0.8, ratio=1.0)
    a, b = ppl[("gptq", "c4")], ppl[("gptq", "fiction")]
    pooled = math.sqrt((np.var(a, ddof=1) + np.var(b, ddof=1)) / 2)
    assert (cf["family_size"], float(cf["alpha_per_test"])) == ("3", pytest.approx(0.05 / 3))
    assert float(cf["mde_sd"]) == pytest.approx(d) and float(cf["mde"]) == pytest.approx(d * pooled)
    margin = 0.01 * (np.mean(a) + np.mean(b)) / 2  # 1% of the pair's mean perplexity
    assert float(cf["equivalence_margin"]) == pytest.approx(margin)
    assert float(cf["equivalence_p"]) == pytest.approx(ttost_ind(np.array(a), np.array(b), -margin, margin, usevar="unequal")[0])
    assert cf["verdict"] == f"equivalent within ±{margin:.4g}"
    assert rows[("gptq", "c4", "wikipedia")]["verdict"] == "different"
    assert rows[("gptq", "c4", "pile")]["verdict"] == "n/a (n=2 < 3)" and rows[("gptq", "c4", "pile")]["mde"] == "n/a (n=2 < 3)"
    wide = rows[("sparsegpt", "c4", "fiction")]  # a family of one: alpha 0.05
    d1 = TTestIndPower().solve_power(effect_size=None, nobs1=3, alpha=0.05, power=0.8, ratio=1.0)
    assert wide["family_size"] == "1" and float(wide["mde_sd"]) == pytest.approx(d1)
    assert wide["verdict"] == f"inconclusive (MDE {float(wide['mde']):.4g} ({d1:.2g} SD))"
    assert {r["verdict"].split(" ")[0] for r in rows.values()} == {"equivalent", "different", "n/a", "inconclusive"}
    # the Markdown says what each family is, and never calls a non-rejection "no effect"
    md = (tmp_path / "r" / "report.md").read_text()
    assert "## Holm families, power and equivalence" in md and "one Holm family is" in md
    assert "model × method × size × variant × metric: every pair of that method's sources" in md
    assert "perplexity ±1% of the mean" in md and "accuracy ±1 accuracy point" in md
    assert "inconclusive (MDE" in md and "no effect" not in md.replace("never reported as no effect", "").replace(
        "not evidence of no effect", "")
    # dispersion tests: gptq vs sparsegpt on c4 and fiction (3 vs 3): Brown-Forsythe at n=3 never reaches 80%
    disp = [r for r in _csv(tmp_path / "r" / "dispersion_tests.csv") if r["metric"] == "perplexity/wikitext"]
    assert {r["source"] for r in disp} == {"c4", "fiction"}
    assert all(r["mde_sd_ratio"] == "n/a (80% power not reached at any SD ratio up to 100)" for r in disp)
    assert all(r["verdict"].startswith(("different", "inconclusive")) for r in disp)
    assert files.summary.evidence.family == "within"


def test_family_global_is_one_holm_family_over_the_table(tmp_path):
    from calib_sweep.report.statistics import holm

    sweep, _ = _power_sweep(tmp_path)
    summary = summarize(load_jobs([sweep]), family="global")
    tested = [s for s in summary.evidence.comparisons if s.comparison.na is None]
    assert len(tested) == 4 * 4  # (3 gptq pairs + 1 sparsegpt pair) x 4 evidence metrics
    assert [s.comparison.p_holm for s in tested] == pytest.approx(holm([s.comparison.p for s in tested]))
    assert {s.inference.family_size for s in tested} == {16}
    assert [s.inference.alpha for s in tested] == pytest.approx([0.05 / 16] * 16)
    within = summarize(load_jobs([sweep]))
    assert {s.inference.family_size for s in within.evidence.comparisons if s.comparison.na is None} == {1, 3}
    # a wider family can only raise the corrected p-values
    by_key = {(s.method, s.metric, s.comparison.a, s.comparison.b): s.comparison.p_holm for s in within.evidence.comparisons}
    assert all(s.comparison.p_holm >= by_key[(s.method, s.metric, s.comparison.a, s.comparison.b)] for s in tested)


def test_equivalence_margins_can_be_set(tmp_path):
    sweep, ppl = _power_sweep(tmp_path)
    summary = summarize(load_jobs([sweep]), equivalence=["perplexity/wikitext=0.005", "accuracy=2"])
    margins = summary.evidence.margins
    assert margins["perplexity/wikitext"].value == 0.005 and not margins["perplexity/wikitext"].relative
    assert margins["accuracy"].value == pytest.approx(0.02)  # 2 points as a fraction
    cf = next(s for s in summary.evidence.comparisons if s.metric == "perplexity/wikitext"
              and (s.comparison.a, s.comparison.b) == ("c4", "fiction"))
    assert cf.inference.margin == 0.005 and cf.inference.verdict == "inconclusive"  # 0.005 is too tight for 3 vs 3


@pytest.mark.parametrize("args, expected", [
    (["--family", "holm"], "--family 'holm' is not a Holm-family option. Fix: --family within"),
    (["--equivalence", "perplexity=-1%"], "--equivalence perplexity=-1%: the margin must be > 0. Fix: e.g. --equivalence perplexity=1%"),
    (["--equivalence", "ppl=1%"], "--equivalence ppl=1%: unknown metric 'ppl'. Fix: one of accuracy, perplexity, kl, sd_ratio"),
    (["--equivalence", "sd_ratio=0.8"], "--equivalence sd_ratio=0.8: the SD-ratio margin must be a number > 1. Fix: e.g. "
                                        "--equivalence sd_ratio=1.5"),
    (["--equivalence", "accuracy"], "--equivalence 'accuracy': expected METRIC=MARGIN."),
    (["--equivalence", "perplexity/c4=1%"], "--equivalence perplexity/c4=1%: no job reported metric 'perplexity/c4'. Fix:"),
])
def test_bad_report_options_are_one_line_and_exit_2(tmp_path, capsys, args, expected):
    from calib_sweep.report.__main__ import main

    sweep, _ = _power_sweep(tmp_path)
    assert main([str(sweep), "-o", str(tmp_path / "r"), "--no-wandb", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("calib-sweep-report: error: " + expected) and "\n" not in err
    assert not (tmp_path / "r" / "report.md").exists()


def test_noise_floor_counts_a_bit_identical_rerun_once(tmp_path):
    """Wanda's committed noise floor (docs/replication/jobs.csv, offline_wikipedia seed 0): threads=1
    reproduces threads=2 bit for bit, so the 6 reruns are 3 observations (df 2, not 5). Against its
    pooled calibration SD 0.01515 (df 16) the F test gives p = 0.055, not 0.0015 (issue 27)."""
    sweep = tmp_path / "s"
    num = 0
    calib = [0.49375, 0.52, 0.5, 0.51, 0.48]
    for seed, acc in enumerate(calib):
        _job(sweep, num, "wanda", "c4", seed, 40.0 + seed, acc)
        num += 1
    reruns = {("auto", 1): 0.49375, ("auto", 2): 0.4875, (1, None): 0.49375, (1, 1): 0.49375, (1, 2): 0.4875}
    ppl_of = {None: 40.0, 1: 40.0435, 2: 39.9870}
    for (threads, rows), acc in reruns.items():
        _job(sweep, num, "wanda", "c4", 0, ppl_of[rows], acc, threads=threads, rows=rows)
        num += 1
    summary = summarize(load_jobs([sweep]))
    row = next(r for r in summary.evidence.noise if r.metric == "zeroshot/mean_acc" and r.source == "c4")
    distinct = [0.49375, 0.49375, 0.4875]  # drawn order, rows seed 1, rows seed 2 (the threads=1 copies dropped)
    assert (row.noise_runs, row.noise_duplicates, row.noise_df) == (3, 3, 2)
    assert row.noise_sd == pytest.approx(np.std(distinct, ddof=1))
    f = np.var(calib, ddof=1) / np.var(distinct, ddof=1)
    assert row.test.statistic == pytest.approx(f) and row.test.p == pytest.approx(stats.f.sf(f, 4, 2))
    # The committed numbers: pooled calibration SD 0.01515 over df 16 against these 3 runs.
    assert stats.f.sf(0.01515 ** 2 / np.var(distinct, ddof=1), 16, 2) == pytest.approx(0.05496, abs=5e-5)


def test_a_strategy_that_shares_sets_with_random_is_not_compared_as_independent(tmp_path):
    """dedup that removed nothing draws random's own windows (same token SHA-256): its row is n/a with the
    reason and leaves the Holm family; length, with its own sets, is tested (issue 27 item 6)."""
    sweep = tmp_path / "s"
    values = {"random": [30.0, 30.4, 29.7], "dedup": [30.0, 30.4, 29.7], "length": [31.0, 31.5, 30.9]}
    for i, (name, ppl) in enumerate(values.items()):
        for seed, value in enumerate(ppl):
            sha = f"{'own-' + name if name == 'length' else 'random'}-{seed}"
            if name == "dedup" and seed == 2:
                sha = "dedup-own-2"  # 2 of its 3 sets are random's
            _job(sweep, 10 * i + seed, "wanda", "c4", seed, value, 0.6, sha=sha,
                 selection={"name": name, "pool_factor": 4})
    files = write_report([sweep], tmp_path / "r", wandb=False)
    rows = {s.comparison.a: s for s in files.summary.evidence.strategies if s.metric == "perplexity/wikitext"}
    dedup, length = rows["name=dedup"], rows["name=length"]
    assert str(dedup.comparison.na) == "n/a (not independent: 2 of its 3 calibration sets are the reference's own (same token SHA-256))"
    assert dedup.comparison.p is None and dedup.inference.verdict.startswith("n/a (not independent")
    assert length.comparison.p == pytest.approx(stats.ttest_ind(values["length"], values["random"], equal_var=False).pvalue)
    assert length.inference.family_size == 1 and length.comparison.p_holm == pytest.approx(length.comparison.p)
    csv_rows = {r["strategy_a"]: r for r in _csv(tmp_path / "r" / "strategy_comparisons.csv") if r["metric"] == "perplexity/wikitext"}
    assert csv_rows["name=dedup"]["verdict"].startswith("n/a (not independent: 2 of its 3")
    assert {r["calibration_sha256"] for r in _csv(tmp_path / "r" / "jobs.csv")} >= {"random-0", "own-length-1", "dedup-own-2"}
