"""Docs that cannot drift (issue 27 item 7): every number quoted in docs/replication/README.md,
docs/replication_v2/README.md and docs/selection/README.md's findings is recomputed here from the
committed CSV it cites and must appear in the README as written."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
SOURCES = ["offline_fiction", "offline_news", "offline_science", "offline_wikipedia"]


def _rows(folder: str, name: str) -> list[dict[str, str]]:
    with open(DOCS / folder / name, newline="") as handle:
        return list(csv.DictReader(handle))


def _one(rows, **where):
    found = [r for r in rows if all(r[k] == str(v) for k, v in where.items())]
    assert len(found) == 1, (where, len(found))
    return found[0]


def _readme(folder: str) -> str:
    return " ".join((DOCS / folder / "README.md").read_text().split())


V2_SOURCES = ["offline_news", "offline_science", "offline_wikipedia"]
ACC, PPL, KL = "zeroshot/mean_acc", "perplexity/offline_wikipedia", "compression/kl_from_dense"
NAMES = (("GPTQ", "gptq"), ("SparseGPT", "sparsegpt"), ("Wanda", "wanda"))


def _stat(method, source, metric, column, scale=1.0, folder="replication"):
    return float(_one(_rows(folder, "summary.csv"), method=method, source=source, metric=metric,
                      n_samples=16)[column]) * scale


def _sd_range(method, metric, scale, folder="replication", column="sd"):
    sources = SOURCES if folder == "replication" else V2_SOURCES
    values = [_stat(method, s, metric, column, scale, folder) for s in sources]
    return min(values), max(values)


def _pct(rows, method, metric, k):
    share = 100 * float(_one(rows, method=method, metric=metric, n_samples=16)["share_" + k])
    return f"{share:.0f}%" if share >= 1 else f"{share:.1g}%"


def replication_claims() -> list[str]:
    acc, ppl = "zeroshot/mean_acc", "perplexity/offline_wikipedia"
    out = []
    for name, method in (("GPTQ", "gptq"), ("SparseGPT", "sparsegpt"), ("Wanda", "wanda")):
        lo, hi = _sd_range(method, acc, 100)
        out.append(f"{name} {lo:.2f}-{hi:.2f}")
        lo, hi = _sd_range(method, ppl, 1)
        out.append(f"{lo:.2f}-{hi:.2f} ({name})")
    wider = sum(_stat("sparsegpt", s, acc, "sd") > _stat("gptq", s, acc, "sd") for s in SOURCES)
    out.append(f"larger than GPTQ's on {wider} of 4 sources")
    bf = {r["source"]: r for r in _rows("replication", "dispersion_tests.csv")
          if r["metric"] == acc and r["n_samples"] == "16"}
    for source, label in (("offline_fiction", "fiction"), ("offline_news", "news"), ("offline_science", "science"),
                          ("offline_wikipedia", "wikipedia")):
        out.append(f"{float(bf[source]['p']):.2g} ({label})")
        assert bf[source]["verdict"].startswith("inconclusive (80% power not reached at any SD ratio up to 100")
    for method, source, task, label in (("sparsegpt", "offline_news", "arc_easy", "SparseGPT ARC-Easy"),
                                        ("gptq", "offline_science", "arc_easy", "GPTQ ARC-Easy"),
                                        ("wanda", "offline_fiction", "arc_easy", "Wanda ARC-Easy")):
        metric = f"zeroshot/{task}/acc"
        out.append(f"{label} {_stat(method, source, metric, 'min', 100):.1f}-{_stat(method, source, metric, 'max', 100):.1f}")
    # the widest Wanda ARC-Easy range is fiction's (not wikipedia's 32.5-38.8)
    ranges = {s: _stat("wanda", s, "zeroshot/arc_easy/acc", "range") for s in SOURCES}
    assert max(ranges, key=ranges.get) == "offline_fiction"
    comparisons = _rows("replication", "source_comparisons.csv")
    verdicts = [r["verdict"].split(" ")[0] for r in comparisons]
    out.append(f"{verdicts.count('different')} of {len(comparisons)} source pairs are `different`")
    out.append(f"{verdicts.count('inconclusive')} `inconclusive`")
    assert "equivalent" not in verdicts
    for method, unit_acc in (("gptq", "GPTQ"), ("sparsegpt", "SparseGPT"), ("wanda", "Wanda")):
        mde = [float(r["mde"]) for r in comparisons if r["method"] == method and r["metric"] == ppl]
        out.append(f"{min(mde):.3g}-{max(mde):.3g} ({unit_acc})")
    pair = lambda m, a, b, metric=ppl: _one(comparisons, method=m, source_a=a, source_b=b, metric=metric)  # noqa: E731
    out.append(f"Holm p = {float(pair('wanda', 'offline_science', 'offline_wikipedia')['p_holm']):.2g}")
    out.append(f"Holm p = {float(pair('gptq', 'offline_fiction', 'offline_science')['p_holm']):.2g}")
    out.append(f"Holm p = {float(pair('gptq', 'offline_fiction', 'offline_wikipedia', acc)['p_holm']):.2g}")
    worst = max(float(pair("sparsegpt", s, "offline_wikipedia")["p_holm"]) for s in SOURCES[:3])
    out.append(f"Holm p ≤ {worst:.2g}")
    noise = {(r["method"], r["metric"]): r for r in _rows("replication", "noise_floor.csv")
             if r["source"] == "all sources (pooled)"}
    assert noise[("wanda", acc)]["noise_df"] == "2" and noise[("wanda", acc)]["noise_duplicates"] == "3"
    assert noise[("gptq", acc)]["noise_df"] == "5"
    out.append(f"GPTQ perplexity p = {float(noise[('gptq', ppl)]['p']):.2g}, mean accuracy p = {float(noise[('gptq', acc)]['p']):.2g}")
    out.append(f"SparseGPT p = {float(noise[('sparsegpt', ppl)]['p']):.2g} / {float(noise[('sparsegpt', acc)]['p']):.2g}")
    out.append(f"perplexity p = {float(noise[('wanda', ppl)]['p']):.2g}, mean accuracy p = {float(noise[('wanda', acc)]['p']):.2g}")
    shares = {(r["method"], r["metric"]): r for r in _rows("replication", "variance_components.csv") if r["n_samples"] == "16"}
    def pct(m, metric, k):
        share = 100 * float(shares[(m, metric)]["share_" + k])
        return f"{share:.0f}%" if share >= 1 else f"{share:.1g}%"

    out.append(f"GPTQ {pct('gptq', ppl, 'source')} source, {pct('gptq', ppl, 'set')} set, {pct('gptq', ppl, 'noise')} noise")
    out.append(f"SparseGPT {pct('sparsegpt', ppl, 'source')} / {pct('sparsegpt', ppl, 'set')} / {pct('sparsegpt', ppl, 'noise')}")
    out.append(f"GPTQ {pct('gptq', acc, 'source')} / {pct('gptq', acc, 'set')} / {pct('gptq', acc, 'noise')}")
    out.append(f"Wanda {pct('wanda', ppl, 'source')} / {pct('wanda', ppl, 'set')} / {pct('wanda', ppl, 'noise')}")
    out.append(f"SparseGPT {pct('sparsegpt', acc, 'source')} / {pct('sparsegpt', acc, 'set')} / {pct('sparsegpt', acc, 'noise')}")
    testbed = _rows("testbed", "testbed.csv")
    bed = lambda bits, sym, variant: float(_one(testbed, model="smollm2-135m-instruct", w_bits=bits, group_size=64,  # noqa: E731
                                                 symmetric=sym, variant=variant)["perplexity_mean"])
    for bits in (4, 3):
        for sym, word in (("True", "symmetric"), ("False", "asymmetric")):
            out.append(f"{word} {bed(bits, sym, 'gptq static'):.2f} vs {bed(bits, sym, 'gptq faithful'):.2f}")
    out.append("(RTN: " + ", ".join(f"{bed(b, sym, 'rtn'):.2f}" for b in (4, 3) for sym in ("True", "False")) + ")")
    needed = [int(r["sets_needed"]) for r in _rows("replication", "evidence.csv")
              if r["method"] == "gptq" and r["metric"] == acc and r["n_samples"] == "16"]
    out.append(f"{min(needed)}-{max(needed)} sets per source")
    return out


def replication_v2_claims() -> list[str]:
    v2 = "replication_v2"
    out = []
    for name, method in NAMES:
        lo, hi = _sd_range(method, ACC, 100, v2)
        out.append(f"{name} {lo:.2f}-{hi:.2f}")
        lo, hi = _sd_range(method, PPL, 1, v2)
        out.append(f"{lo:.2f}-{hi:.2f} ({name})")
        lo, hi = _sd_range(method, ACC, 100, v2, "range")
        out.append(f"range {lo:.2f}-{hi:.2f} ({name})")
    for metric in (ACC, PPL):
        wider = sum(_stat("gptq", s, metric, "sd", folder=v2) > _stat("sparsegpt", s, metric, "sd", folder=v2)
                    for s in V2_SOURCES)
        out.append(f"larger than SparseGPT's on {wider} of 3 sources ({'mean accuracy' if metric == ACC else 'perplexity'})")
    bf = {(r["source"], r["metric"]): r for r in _rows(v2, "dispersion_tests.csv")}
    for metric, word in ((PPL, "different"), (ACC, "inconclusive")):
        ps = ", ".join(f"{float(bf[(s, metric)]['p']):.2g}" for s in V2_SOURCES)
        out.append(f"p = {ps}")
        assert all(bf[(s, metric)]["verdict"].startswith(word) for s in V2_SOURCES)
    ratios = {re.search(r"SD ratio ([\d.]+)", bf[(s, ACC)]["verdict"]).group(1) for s in V2_SOURCES}
    assert len(ratios) == 1
    out.append(f"MDE SD ratio {ratios.pop()}")
    ranges = []
    for name, method, source in (("GPTQ", "gptq", "offline_wikipedia"), ("GPTQ", "gptq", "offline_news"),
                                 ("SparseGPT", "sparsegpt", "offline_news"), ("Wanda", "wanda", "offline_science")):
        metric = "zeroshot/arc_easy/acc"
        ranges.append(f"{name} {_stat(method, source, metric, 'min', 100, v2):.2f}-{_stat(method, source, metric, 'max', 100, v2):.2f}")
    out += ranges
    comparisons = _rows(v2, "source_comparisons.csv")
    verdicts = [r["verdict"].split(" ")[0] for r in comparisons]
    out.append(f"{verdicts.count('different')} of {len(comparisons)} source pairs are `different`, "
               f"{verdicts.count('equivalent')} `equivalent`, {verdicts.count('inconclusive')} `inconclusive`")
    pair = lambda m, a, b, metric=PPL: _one(comparisons, method=m, source_a=a, source_b=b, metric=metric)  # noqa: E731
    holm = lambda m, a, b, metric=PPL: f"Holm p = {float(pair(m, a, b, metric)['p_holm']):.2g}"  # noqa: E731
    out.append(holm("sparsegpt", "offline_news", "offline_wikipedia"))
    out.append(holm("sparsegpt", "offline_science", "offline_wikipedia"))
    out.append(holm("wanda", "offline_science", "offline_wikipedia"))
    out.append(holm("gptq", "offline_news", "offline_science"))
    out.append(holm("gptq", "offline_news", "offline_wikipedia"))
    out.append(holm("wanda", "offline_news", "offline_science", ACC))
    out.append(holm("sparsegpt", "offline_news", "offline_science", ACC))
    assert pair("wanda", "offline_news", "offline_wikipedia")["verdict"].startswith("inconclusive")
    assert pair("wanda", "offline_news", "offline_wikipedia", ACC)["verdict"].startswith("equivalent")
    assert pair("sparsegpt", "offline_science", "offline_wikipedia", ACC)["verdict"].startswith("equivalent")
    for name, method in NAMES:
        mde = [float(r["mde"]) * 100 for r in comparisons if r["method"] == method and r["metric"] == ACC]
        out.append(f"{min(mde):.2f}-{max(mde):.2f} points ({name})")
    noise = {(r["method"], r["metric"]): r for r in _rows(v2, "noise_floor.csv") if r["source"] == "all sources (pooled)"}
    for name, method in NAMES:
        out.append(f"{name}: perplexity p = {float(noise[(method, PPL)]['p']):.2g}, mean accuracy p = "
                   f"{float(noise[(method, ACC)]['p']):.2g}")
    out.append(f"noise SD {float(noise[('gptq', PPL)]['noise_sd']):.2f} vs {float(noise[('gptq', PPL)]['calibration_sd']):.2f}")
    jobs = _rows(v2, "jobs.csv")
    reruns = sorted(float(r[PPL]) for r in jobs if r["method"] == "gptq" and r["source"] == "offline_wikipedia"
                    and r["seed"] == "0")
    out.append(" / ".join(f"{x:.2f}" for x in reruns))
    shares = _rows(v2, "variance_components.csv")
    for name, method in NAMES:
        out.append(f"{name} {_pct(shares, method, PPL, 'source')} / {_pct(shares, method, PPL, 'set')} / "
                   f"{_pct(shares, method, PPL, 'noise')} (perplexity)")
        out.append(f"{name} {_pct(shares, method, ACC, 'source')} / {_pct(shares, method, ACC, 'set')} / "
                   f"{_pct(shares, method, ACC, 'noise')} (mean accuracy)")
    evidence = _rows(v2, "evidence.csv")
    for name, method in NAMES:
        for metric, unit in ((ACC, "±0.5 points"), (PPL, "±1%")):
            needed = [int(r["sets_needed"]) for r in evidence if r["method"] == method and r["metric"] == metric]
            out.append(f"{name} {min(needed)}-{max(needed)} sets ({unit})")
    rtn = _stat("rtn", "offline_wikipedia", PPL, "mean", folder=v2)
    gptq = [float(r[PPL]) for r in jobs if r["method"] == "gptq" and not r["perturbation"]]
    out.append(f"{sum(x < rtn for x in gptq)} of {len(gptq)} GPTQ sets below RTN's {rtn:.2f}")
    paired = _rows(v2, "paired_comparisons.csv")
    for table in ("source_comparisons", "method_comparisons"):
        rows = [r for r in paired if r["table"] == table]
        out.append(f"{sum(float(r['p']) < 0.05 for r in rows)} of {len(rows)} {table.split('_')[0]} rows")
    half = [(float(r["ci_high_points"]) - float(r["ci_low_points"])) / 2 for r in paired if r["task"] == "mean"]
    out.append(f"half-widths {min(half):.2f}-{max(half):.2f} points")
    gap = [_stat("gptq", s, PPL, "mean", folder=v2) - _stat("gptq", "offline_news", PPL, "mean", folder=v2)
           for s in ("offline_wikipedia", "offline_science")]
    out.append(f"{gap[0]:.2f} and {gap[1]:.2f} perplexity")
    best = _one(paired, table="method_comparisons", source="offline_news", a="gptq", b="sparsegpt", task="mean")
    out.append(f"+{float(best['effect_points']):.2f} points [{float(best['ci_low_points']):.2f}, "
               f"{float(best['ci_high_points']):.2f}]")
    for name, fixed_csv in (("preset", "adaptive_vs_fixed_max10.csv"), ("loose", "adaptive_vs_fixed_loose_max10.csv")):
        rows = _rows(v2, fixed_csv)
        jobs_a = sum(int(r["adaptive_sets"]) for r in rows)
        hours = [sum(float(r[k]) for r in rows) / 3600 for k in ("fixed_seconds", "adaptive_seconds")]
        met = [sum(r[k] == "True" for r in rows) for k in ("fixed_met", "adaptive_met")]
        out.append(f"| {sum(int(r['fixed_sets']) for r in rows)} / {jobs_a} | {hours[0]:.2f} / {hours[1]:.2f} | "
                   f"{met[0]} / {met[1]} |")
    return out


def predictors_claims() -> list[str]:
    """docs/predictors/README.md, section "Fresh sets": docs/replication_v2/predictors.csv."""
    rows = _rows("replication_v2", "predictors.csv")
    row = lambda m, scope, pred, metric=PPL: _one(rows, method=m, scope=scope, predictor=pred, metric=metric)  # noqa: E731

    def rho(r, holm=True):
        text = f"{float(r['rho']):.2f} [{float(r['ci_low']):.2f}, {float(r['ci_high']):.2f}]"
        return text + (f", Holm p {float(r['p_holm']):.2g}" if holm else "")

    out = [f"rho {rho(row('wanda', 'all', 'zipf_alpha'))}", rho(row("sparsegpt", "all", "zipf_alpha"))]
    for name, method in (("SparseGPT's", "sparsegpt"), ("Wanda's", "wanda")):
        loso = [float(r["rho"]) > 0 for r in rows if r["method"] == method and r["metric"] == PPL
                and r["predictor"] == "zipf_alpha" and r["scope"].startswith("leave out")]
        out.append(f"{name} {'sets the right way in ' if method == 'sparsegpt' else 'in '}{sum(loso)} of {len(loso)}")
    news = row("wanda", "source=offline_news", "zipf_alpha")
    out.append(f"{rho(news, holm=False)} (uncorrected p {float(news['p']):.2g}, Holm p {float(news['p_holm']):.2g})")
    out.append(f"on offline_science {float(row('wanda', 'source=offline_science', 'zipf_alpha')['rho']):.2f}, "
               f"on offline_wikipedia {float(row('wanda', 'source=offline_wikipedia', 'zipf_alpha')['rho']):.2f}")
    out.append(f"`mean_piece_tokens` {rho(row('gptq', 'source=offline_news', 'mean_piece_tokens'))}")
    within = [r for r in rows if r["scope"].startswith("source=") and r["p_holm"] and float(r["p_holm"]) < 0.05]
    assert {(r["method"], r["metric"], r["scope"]) for r in within} == {("gptq", PPL, "source=offline_news")}
    shares = [100 * float(r["share_source"]) for r in _rows("replication_v2", "variance_components.csv")
              if r["metric"] == PPL and r["method"] in ("sparsegpt", "wanda")]
    out.append(f"explaining {min(shares):.0f}-{max(shares):.0f}% of pruned perplexity")
    return out


def fresh_claims() -> list[str]:
    """docs/predictors/README.md, section "Fresh sets only": docs/predictors/fresh/*.csv (and its README.md
    summary line); the fresh sets share no token hash with the first check's sets.csv."""
    seen = {r["sha256"] for r in _rows("predictors", "sets.csv")}
    fresh = _rows("predictors/fresh", "sets.csv")
    assert fresh and not seen & {r["sha256"] for r in fresh}
    rows = _rows("predictors/fresh", "predictors.csv")
    row = lambda m, pred, metric=PPL, scope="all": _one(rows, method=m, scope=scope, predictor=pred, metric=metric)  # noqa: E731
    rho = lambda r: f"{float(r['rho']):.2f} [{float(r['ci_low']):.2f}, {float(r['ci_high']):.2f}]"  # noqa: E731
    sparse, wanda = row("sparsegpt", "zipf_alpha"), row("wanda", "zipf_alpha")
    n = {int(r["n"]) for r in rows if r["scope"] == "all"}
    assert n == {len(fresh)}
    out = [f"{len(fresh)} sets per method", f"pooled n = {len(fresh)}, MDE |rho| {float(sparse['mde_rho']):.2f}",
           f"`zipf_alpha` rho {rho(sparse)}, Holm p {float(sparse['p_holm']):.2g}",
           f"{rho(row('sparsegpt', 'zipf_alpha', 'compression/kl_from_dense'))}, Holm p "
           f"{float(row('sparsegpt', 'zipf_alpha', 'compression/kl_from_dense')['p_holm']):.2g}",
           f"{rho(wanda)}, uncorrected p {float(wanda['p']):.2g}, Holm p {float(wanda['p_holm']):.2g}"]
    science = row("wanda", "zipf_alpha", scope="leave out offline_science")
    out.append(f"(offline_science: {float(science['rho']):.2f})")
    median = row("gptq", "median_piece_tokens")
    out.append(f"0.80 [0.47, 0.94], Holm p {float(median['p_holm']):.2g}")
    assert rho(median) == "0.80 [0.47, 0.94]"
    acc = [float(r["p_holm"]) for r in rows if r["scope"] == "all" and r["metric"] == ACC]
    out.append(f"smallest Holm p {min(acc):.2f}")
    within = [r for r in rows if r["scope"].startswith("source=") and r["p_holm"] and float(r["p_holm"]) < 0.05]
    assert not within
    readme = " ".join((DOCS.parent / "README.md").read_text().split())
    assert (f"SparseGPT (rho {rho(sparse)}, Holm p {float(sparse['p_holm']):.2g}) but not, after Holm, for Wanda "
            f"({float(wanda['rho']):.2f}, Holm p {float(wanda['p_holm']):.2g})") in readme
    return out


def selection_claims() -> list[str]:
    rows = _rows("selection", "strategy_comparisons.csv")
    out = [f"Every one of the {len(rows)} strategy-vs-random comparisons is `inconclusive`"]
    assert all(r["verdict"].startswith("inconclusive") for r in rows)
    nominal = [r for r in rows if float(r["p"]) < 0.05]
    out.append(f"**{len(nominal)} comparisons have an uncorrected p < 0.05**")
    out.append(f"about {0.0345 * len(rows):.1f} of {len(rows)}")
    mde_sd = {f"{float(r['mde_sd']):.1f}" for r in rows}
    assert len(mde_sd) == 1
    out.append(f"is {mde_sd.pop()} SDs of the pair")
    lex = _one(rows, method_source="wanda / offline_news", metric="perplexity/offline_wikipedia",
               strategy_a="name=lexical_diversity, pool_factor=4")
    out.append(f"{float(lex['mde']):.4g} perplexity for Wanda lexical_diversity")
    out.append(f"perplexity {float(lex['mean_a']):.2f} vs {float(lex['mean_b']):.2f} (uncorrected p = "
               f"{float(lex['p']):.2g}, Holm p = {float(lex['p_holm']):.2g})")
    low = _one(rows, method_source="wanda / offline_wikipedia", metric="zeroshot/arc_easy/acc",
               strategy_a="band=low, name=perplexity, pool_factor=4")
    out.append(f"{100 * float(low['mde']):.2f} ARC-Easy points")
    return out


def sample_size_claims() -> list[str]:
    """docs/replication_v2/README.md, section "Sample size": docs/replication_v2/sample_size/*.csv."""
    from scipy import stats
    from statsmodels.stats.power import TTestIndPower

    folder = "replication_v2/sample_size"
    curve = _rows(folder, "sample_size.csv")
    sizes = ["1", "2", "4", "8", "16", "32", "64", "128"]
    out = []
    for metric, label, scale in ((PPL, "GPTQ perplexity", 1), (ACC, "GPTQ mean accuracy (%)", 100),
                                 ("compression/kl_from_dense", "GPTQ KL from dense", 1)):
        cells = [_one(curve, metric=metric, n_samples=n) for n in sizes]
        out.append(f"| {label} | " + " | ".join(f"{float(c['mean']) * scale:.2f} ± {float(c['sd']) * scale:.2f}"
                                              for c in cells) + " |")
    jobs = _rows(folder, "jobs.csv")
    assert len(jobs) == 24 and all(r["status"] == "ok" and r["method"] == "gptq" for r in jobs)
    ppl = {n: [float(r[PPL]) for r in jobs if r["n_samples"] == n] for n in sizes}
    n_samples = [int(r["n_samples"]) for r in jobs]
    trend = stats.spearmanr(n_samples, [float(r[PPL]) for r in jobs])
    out.append(f"over the 24 jobs {trend.statistic:.2f}, p {trend.pvalue:.2g}")
    rtn = _stat("rtn", "offline_wikipedia", PPL, "mean", folder="replication_v2")
    out.append(f"(RTN {rtn:.2f};")
    assert sum(x < rtn for x in ppl["8"]) == 1 and all(x < rtn for n in sizes[4:] for x in ppl[n])
    assert all(float(_one(curve, metric=PPL, n_samples=n)["mean"]) > rtn for n in sizes[:4])
    welch = stats.ttest_ind(ppl["32"], ppl["128"], equal_var=False)
    pooled_sd = ((stats.tvar(ppl["32"]) + stats.tvar(ppl["128"])) / 2) ** 0.5
    mde = TTestIndPower().solve_power(nobs1=3, ratio=1, alpha=0.05, power=0.8) * pooled_sd
    out.append(f"Welch p {welch.pvalue:.2g} with 3 sets each")
    out.append(f"power at alpha 0.05 is {mde:.2f} perplexity")
    acc = stats.spearmanr(n_samples, [float(r[ACC]) for r in jobs])
    out.append(f"(Spearman rho {acc.statistic:.2f}, p {acc.pvalue:.2g}, 24 jobs)")
    dense = _one(_rows(folder, "dense_reference.csv"), metric=PPL)
    out.append(f"Dense perplexity {float(dense['value']):.2f}")
    return out


def strategies_claims() -> list[str]:
    """docs/predictors/README.md, section "Selection strategies": docs/predictors/strategies/*.csv, and the
    one-line summary in README.md's "Selection strategies"."""
    folder = "predictors/strategies"
    rows = _rows(folder, "strategy_comparisons.csv")
    verdicts = [r["verdict"].split(" ")[0] for r in rows]
    out = [f"{verdicts.count('different')} of {len(rows)} comparisons are `different`, "
           f"{verdicts.count('inconclusive')} `inconclusive`, {verdicts.count('equivalent')} `equivalent`",
           f"{sum(float(r['p']) < 0.05 for r in rows)} have an uncorrected p < 0.05, where chance alone gives about "
           f"{0.0345 * len(rows):.1f}"]
    assert all(float(r["mean_a"]) < float(r["mean_b"]) for r in rows
               if r["verdict"] == "different" and r["metric"] != "compression/kl_from_dense")
    assert all(float(r["mean_a"]) > float(r["mean_b"]) for r in rows
               if r["verdict"] == "different" and r["metric"] == "compression/kl_from_dense")

    def row(cell, metric, strategy):
        return _one(rows, method_source=cell, metric=metric, strategy_a=f"name={strategy}")

    def acc(r):
        return f"{100 * float(r['mean_a']):.2f} vs {100 * float(r['mean_b']):.2f}, Holm p {float(r['p_holm']):.2g}"

    for cell, metric in (("gptq / offline_news", "zeroshot/piqa/acc"), ("sparsegpt / offline_news", "zeroshot/piqa/acc"),
                         ("sparsegpt / offline_news", ACC)):
        out.append(f"(outlier_coverage {acc(row(cell, metric, 'outlier_coverage'))}; "
                   f"zipf_diversity {acc(row(cell, metric, 'zipf_diversity'))})")
    kl = row("sparsegpt / offline_wikipedia", "compression/kl_from_dense", "outlier_coverage")
    out.append(f"({float(kl['mean_a']):.3f} vs {float(kl['mean_b']):.3f}, Holm p {float(kl['p_holm']):.2g})")
    paired = [r for r in _rows(folder, "paired_comparisons.csv") if r["table"] == "strategy_comparisons"]
    ps = [float(r["p"]) for r in paired]
    half = [(float(r["ci_high_points"]) - float(r["ci_low_points"])) / 2 for r in paired if r["task"] == "mean"]
    out.append(f"there {sum(p < 0.05 for p in ps)} of {len(paired)} strategy rows have p < 0.05 "
               f"(p {min(ps):.2f}-{max(ps):.2f}), with 95% half-widths of {min(half):.2f}-{max(half):.2f} points")
    out.append(f"Welch MDE {100 * float(row('gptq / offline_news', 'zeroshot/piqa/acc', 'outlier_coverage')['mde']):.2f} points")
    summary = _rows(folder, "summary.csv")

    def mean(method, source, strategy):
        return float(_one(summary, method=method, source=source, variant=f"selection.name={strategy}", metric=ACC)["mean"])

    cells = [(m, s, st) for m in ("gptq", "sparsegpt", "wanda") for s in ("offline_news", "offline_wikipedia")
             for st in ("zipf_diversity", "outlier_coverage")]
    higher = {(m, s) for m, s, st in cells if mean(m, s, st) >= mean(m, s, "random")}
    assert higher == {("gptq", "offline_wikipedia"), ("wanda", "offline_wikipedia")}
    out.append(f"below random's in {sum(mean(*c) < mean(c[0], c[1], 'random') for c in cells)} of 12")
    for name, method, source in (("GPTQ", "gptq", "offline_wikipedia"), ("SparseGPT", "sparsegpt", "offline_news")):
        a, b = (row(f"{method} / {source}", PPL, st) for st in ("outlier_coverage", "zipf_diversity"))
        out.append(f"{name} on {source} {float(a['mean_a']):.2f} (outlier_coverage) and {float(b['mean_a']):.2f} "
                   f"(zipf_diversity) vs {float(a['mean_b']):.2f} (Welch p {float(a['p']):.2g}, {float(b['p']):.2g})")
    others = [r for r in rows if r["metric"] == PPL and r["method_source"] not in
              ("gptq / offline_wikipedia", "sparsegpt / offline_news")]
    assert all(abs(float(r["mean_a"]) - float(r["mean_b"])) < 2 for r in others)
    acc_mde = [100 * float(r["mde"]) for r in rows if r["metric"] == ACC]
    ppl_mde = [float(r["mde"]) for r in rows if r["metric"] == PPL]
    out.append(f"{min(acc_mde):.2f}-{max(acc_mde):.2f} points of mean accuracy and {min(ppl_mde):.2f}-{max(ppl_mde):.2f} perplexity")
    return out


def test_the_readme_strategy_summary_matches_its_csv():
    rows = _rows("predictors/strategies", "strategy_comparisons.csv")
    paired = [r for r in _rows("predictors/strategies", "paired_comparisons.csv") if r["table"] == "strategy_comparisons"]
    acc_mde = [100 * float(r["mde"]) for r in rows if r["metric"] == ACC]
    claim = (f"({sum(float(r['p']) < 0.05 for r in paired)} of {len(paired)} paired rows at p < 0.05; "
             f"MDE {min(acc_mde):.2f}-{max(acc_mde):.2f} mean-accuracy points")
    readme = " ".join((DOCS.parent / "README.md").read_text().split())
    assert claim in readme


@pytest.mark.parametrize("folder, claims", [("replication", replication_claims), ("replication_v2", replication_v2_claims),
                                            ("replication_v2", sample_size_claims),
                                            ("predictors", predictors_claims), ("predictors", strategies_claims),
                                            ("predictors", fresh_claims),
                                            ("selection", selection_claims)])
def test_every_quoted_number_matches_its_csv(folder, claims):
    text = _readme(folder)
    missing = [claim for claim in claims() if claim not in text]
    assert not missing, f"docs/{folder}/README.md does not say (recomputed from its CSVs): {missing}"


def test_the_claims_the_review_found_wrong_are_gone():
    replication, selection = _readme("replication"), _readme("selection")
    assert "2 of 4 sources" not in replication and "32.5-38.8" not in replication
    assert "~10 that chance" not in selection and "group 128" not in selection


def model_predictor_claims() -> list[str]:
    """docs/predictors/README.md, section "Model-based predictors": docs/predictors/predictors.csv (rows
    n_samples=16) and docs/predictors/fresh/predictors.csv, Holm over the 9 predictors."""
    first = [r for r in _rows("predictors", "predictors.csv") if r["n_samples"] == "16"]
    fresh = _rows("predictors/fresh", "predictors.csv")
    model_based = ("mean_dense_perplexity", "activation_coverage", "outlier_channel_coverage")
    sig = lambda r: r["p_holm"] != "" and float(r["p_holm"]) < 0.05  # noqa: E731
    assert {r["family_size"] for r in first + fresh if r["rho"] and (r["scope"] == "all" or r["scope"].startswith("source="))} == {"9"}

    def one(rows, m, metric, scope, pred):
        return _one(rows, method=m, metric=metric, scope=scope, predictor=pred)

    def rho(r, p=True):
        text = f"{float(r['rho']):.2f} [{float(r['ci_low']):.2f}, {float(r['ci_high']):.2f}]"
        return text + (f", Holm p {float(r['p_holm']):.2g}" if p else "")

    cov = "activation_coverage"
    out = [f"SparseGPT perplexity {rho(one(first, 'sparsegpt', PPL, 'all', cov))}",
           f"SparseGPT KL from dense {rho(one(first, 'sparsegpt', KL, 'all', cov))}",
           f"GPTQ KL {rho(one(first, 'gptq', KL, 'all', cov))}"]
    assert not [r for r in first if r["predictor"] == cov and r["scope"].startswith("source=") and sig(r)]
    f = one(fresh, "sparsegpt", PPL, "all", cov)
    out.append(f"perplexity gives {rho(f, False)}, Holm p {float(f['p_holm']):.2g}")
    dense = [one(first, m, PPL, "all", "mean_dense_perplexity") for m in ("gptq", "sparsegpt", "wanda")]
    out.append(f"(GPTQ {float(dense[0]['rho']):.2f}, SparseGPT {float(dense[1]['rho']):.2f}, Wanda "
               f"{float(dense[2]['rho']):.2f}; smallest Holm p {min(float(r['p_holm']) for r in dense):.2f})")
    out.append(f"offline_news {rho(one(first, 'gptq', ACC, 'source=offline_news', 'mean_dense_perplexity'))}")
    out.append(f"offline_wikipedia {rho(one(first, 'wanda', ACC, 'source=offline_wikipedia', 'mean_dense_perplexity'))}")
    out.append(f"offline_wikipedia {rho(one(first, 'sparsegpt', ACC, 'source=offline_wikipedia', 'outlier_channel_coverage'))}")
    outlier = [r for r in first if r["predictor"] == "outlier_channel_coverage" and sig(r)]
    assert [(r["method"], r["metric"], r["scope"]) for r in outlier] == [("sparsegpt", ACC, "source=offline_wikipedia")]
    assert not [r for r in fresh if r["predictor"] in model_based and sig(r)]
    g = one(fresh, "gptq", PPL, "all", "outlier_channel_coverage")
    out.append(f"GPTQ perplexity {rho(g, False)}, uncorrected p {float(g['p']):.2g}, Holm p {float(g['p_holm']):.2g}")
    out.append(f"still has Holm p {float(one(fresh, 'sparsegpt', PPL, 'all', 'zipf_alpha')['p_holm']):.2g}")
    readme = " ".join((DOCS.parent / "README.md").read_text().split())
    assert (f"activation coverage ranked SparseGPT perplexity on the first check's 56 sets "
            f"({float(one(first, 'sparsegpt', PPL, 'all', cov)['rho']):.2f}, Holm p "
            f"{float(one(first, 'sparsegpt', PPL, 'all', cov)['p_holm']):.2g})") in readme
    # the token figures of the first reading, over the family of 9
    for m, scope, claim in (("wanda", "all", "rho 0.80 [0.66, 0.88], Holm p 8.6e-13"),
                            ("sparsegpt", "all", "SparseGPT 0.71 [0.55, 0.82], Holm p 5.6e-09"),
                            ("wanda", "source=offline_news", "offline_news 0.79 [0.58, 0.88], Holm p 5.9e-05"),
                            ("sparsegpt", "source=offline_wikipedia", "0.53 [0.12, 0.80], Holm p 0.071")):
        r = one(first, m, PPL, scope, "zipf_alpha")
        assert claim.endswith(rho(r)), (claim, rho(r))
        out.append(claim)
    mde = {(r["n"], r["mde_rho"][:4]) for r in first + fresh if r["scope"] in ("all", "source=offline_news") and r["rho"]}
    assert {("56", "0.47"), ("23", "0.68"), ("14", "0.82")} <= {(n, f"{float(m):.2f}") for n, m in mde if m}
    return out


def test_the_model_based_reading_matches_its_csvs():
    text = _readme("predictors")
    missing = [claim for claim in model_predictor_claims() if claim not in text]
    assert not missing, f"docs/predictors/README.md does not say (recomputed from its CSVs): {missing}"
