"""Paired item analysis (calib_sweep.report.paired): item SE vs set SD, and the two-way paired bootstrap
checked against a brute-force loop, on simulated data with a known effect and a null, and end to end on fake
sweeps whose jobs keep items.npz (written with save_item_records; no model runs)."""

from __future__ import annotations

import csv
import time

import math

import numpy as np
import pytest

from calib_sweep.evaluation.items import ItemRecords, save_item_records
from calib_sweep.report import write_report
from calib_sweep.report.paired import (MEAN_TASK, REPLICATES, bootstrap_difference, expanded, item_noise, percentile_summary,
                                       shared_matrix)
from test_report import _config, write_job


def records(correct, doc_id=None) -> ItemRecords:
    """ItemRecords of one task with two choices per item; ``correct`` 0/1 per item."""
    correct = np.asarray(correct, dtype=np.uint8)
    n = correct.shape[0]
    doc_id = np.arange(n, dtype=np.int64) if doc_id is None else np.asarray(doc_id, dtype=np.int64)
    target = np.zeros(n, dtype=np.int16)
    pred = np.where(correct == 1, 0, 1).astype(np.int16)
    loglik = np.stack([np.where(correct == 1, -1.0, -2.0), np.where(correct == 1, -2.0, -1.0)], 1).ravel()
    return ItemRecords(doc_id=doc_id, target=target, pred=pred, correct=correct, correct_norm=None,
                       loglik=loglik.astype(np.float32), choice_offsets=np.arange(0, 2 * n + 1, 2, dtype=np.int64),
                       is_greedy=np.zeros(2 * n, dtype=bool))


def brute_force(a: dict, b: dict, replicates: int, seed: int = 0) -> dict:
    """The same bootstrap as one loop per replicate: draws in the documented order, means by fancy indexing."""
    rng = np.random.default_rng(seed)
    tasks = sorted(a)
    ja, jb = a[tasks[0]].shape[0], b[tasks[0]].shape[0]
    sets_a = rng.integers(0, ja, size=(replicates, ja))
    sets_b = rng.integers(0, jb, size=(replicates, jb))
    items = {t: rng.integers(0, a[t].shape[1], size=(replicates, a[t].shape[1])) for t in tasks}
    out = {}
    for t in tasks:
        diffs = []
        for r in range(replicates):
            acc_a = a[t][sets_a[r]][:, items[t][r]].mean()
            acc_b = b[t][sets_b[r]][:, items[t][r]].mean()
            diffs.append(100 * (acc_a - acc_b))
        out[t] = (100 * (a[t].mean() - b[t].mean()), np.array(diffs))
    out[MEAN_TASK] = (np.mean([out[t][0] for t in tasks]), np.mean([out[t][1] for t in tasks], axis=0))
    return out


def test_vectorised_bootstrap_equals_brute_force_loop():
    rng = np.random.default_rng(7)
    a = {"boolq": rng.integers(0, 2, (3, 7)).astype(np.uint8), "rte": rng.integers(0, 2, (3, 5)).astype(np.uint8)}
    b = {"boolq": rng.integers(0, 2, (4, 7)).astype(np.uint8), "rte": rng.integers(0, 2, (4, 5)).astype(np.uint8)}
    fast, slow = bootstrap_difference(a, b, replicates=300), brute_force(a, b, 300)
    assert sorted(fast) == ["boolq", MEAN_TASK, "rte"]
    for task in fast:
        assert fast[task][0] == pytest.approx(slow[task][0], abs=1e-12)
        np.testing.assert_allclose(fast[task][1], slow[task][1], rtol=0, atol=1e-10)
        # the summary, by hand: percentile interval and 2 x the smaller share on either side of 0
        d = slow[task][1]
        low, high, p = percentile_summary(fast[task][1])
        assert (low, high) == pytest.approx(tuple(np.percentile(d, [2.5, 97.5])), abs=1e-10)
        assert p == pytest.approx(max(1 / 300, min(1.0, 2 * min(np.mean(d <= 0), np.mean(d >= 0)))))
    assert fast["boolq"][0] == pytest.approx(100 * (a["boolq"].mean() - b["boolq"].mean()))
    # the draws are seeded: the same call gives the same numbers
    np.testing.assert_array_equal(bootstrap_difference(a, b, replicates=300)["rte"][1], fast["rte"][1])


def test_p_is_floored_and_capped():
    assert percentile_summary(np.full(2000, 3.0))[2] == pytest.approx(1 / 2000)
    assert percentile_summary(np.zeros(2000))[2] == 1.0


def _coupled(rng, sets: int, n_items: int, shift: float, flip: float = 0.03, set_sd: float = 0.0):
    """Two groups' uint8 [sets x items] answers on the same items with a known effect.

    Item i has difficulty p_i ~ U(0.25, 0.7) and one latent u_i ~ U(0, 1) shared by both groups (the pairing):
    group a answers it iff u_i < p_i + shift + e_j, group b iff u_i < p_i + e_j (e_j ~ N(0, set_sd) per set),
    then every set flips each answer with probability ``flip``.  The expected difference over items and sets is
    ``100 * shift * (1 - 2 flip)`` points."""
    p, u = rng.uniform(0.25, 0.7, n_items), rng.random(n_items)
    out = []
    for s in (shift, 0.0):
        answers = u[None, :] < p[None, :] + s + rng.normal(0, set_sd, (sets, 1))
        out.append((answers ^ (rng.random((sets, n_items)) < flip)).astype(np.uint8))
    return out


def test_known_five_point_effect_is_covered_and_a_null_contains_zero():
    rng = np.random.default_rng(1)
    a, b = _coupled(rng, 5, 600, 0.05)
    truth = 100 * 0.05 * (1 - 2 * 0.03)
    effect, diffs = bootstrap_difference({"boolq": a}, {"boolq": b})["boolq"]
    low, high, p = percentile_summary(diffs)
    assert low < truth < high and low > 0 and p == pytest.approx(1 / REPLICATES)
    assert abs(effect - truth) < (high - low) / 2
    a0, b0 = _coupled(rng, 5, 600, 0.0)
    effect0, diffs0 = bootstrap_difference({"boolq": a0}, {"boolq": b0})["boolq"]
    low0, high0, p0 = percentile_summary(diffs0)
    assert low0 < 0 < high0 and p0 > 0.05


def test_interval_covers_the_known_effect_in_repeated_simulation():
    # 150 simulated studies (5 sets per group, 600 items, set-to-set SD of 1 point): the 95% interval covers the
    # true 4.7-point difference in at least 90% of them (binomial SE of the share ~1.8%)
    rng = np.random.default_rng(2)
    truth, hits = 100 * 0.05 * (1 - 2 * 0.03), 0
    for _ in range(150):
        a, b = _coupled(rng, 5, 600, 0.05, set_sd=0.01)
        low, high, _ = percentile_summary(bootstrap_difference({"t": a}, {"t": b})["t"][1])
        hits += low <= truth <= high
    assert hits / 150 >= 0.90


def test_exact_one_point_effect_on_shared_items_is_detected_by_the_pairing():
    # b's sets all answer the same 300 of 600 items; a also answers 6 more (a 1.00-point effect on every set).
    base = np.zeros(600, dtype=np.uint8)
    base[:300] = 1
    better = base.copy()
    better[300:306] = 1
    a, b = {"rte": np.tile(better, (4, 1))}, {"rte": np.tile(base, (4, 1))}
    effect, diffs = bootstrap_difference(a, b)["rte"]
    low, high, p = percentile_summary(diffs)
    assert effect == pytest.approx(1.0)
    assert 0 < low < 1.0 < high and p < 0.05
    # unpaired (independent item draws per group), the same data gives an interval that contains 0
    rng = np.random.default_rng(0)
    unpaired = [100 * (better[rng.integers(0, 600, 600)].mean() - base[rng.integers(0, 600, 600)].mean())
                for _ in range(2000)]
    assert np.percentile(unpaired, 2.5) < 0 < np.percentile(unpaired, 97.5)


def test_shared_matrix_and_item_noise_by_hand():
    r1 = records([1, 0, 1, 1], doc_id=[0, 1, 2, 5])
    r2 = records([0, 0, 1], doc_id=[1, 2, 5])
    ids, m = shared_matrix([r1, r2])
    assert ids.tolist() == [1, 2, 5] and m.tolist() == [[0, 1, 1], [0, 0, 1]]
    jobs = [{"boolq": records([1, 1, 0, 0]), "rte": records([1, 0])},
            {"boolq": records([1, 1, 1, 0]), "rte": records([1, 1])},
            {"boolq": records([1, 0, 0, 0]), "rte": records([0, 0])}]
    got = item_noise(jobs)
    p = np.array([0.5, 0.75, 0.25])
    assert got["boolq"]["n_items"] == 4 and got["boolq"]["accuracy"] == pytest.approx(0.5)
    assert got["boolq"]["item_se"] == pytest.approx(np.mean(np.sqrt(p * (1 - p) / 4)))
    assert got["boolq"]["set_sd"] == pytest.approx(0.25)  # SD of 0.5, 0.75, 0.25 with ddof=1
    assert got["boolq"]["ratio"] == pytest.approx(got["boolq"]["item_se"] / 0.25)
    rte = np.array([0.5, 1.0, 0.0])
    assert got["rte"]["set_sd"] == pytest.approx(0.5) and got["rte"]["item_se"] == pytest.approx(np.mean(np.sqrt(rte * (1 - rte) / 2)))
    mean_se = np.sqrt(p * (1 - p) / 4 + rte * (1 - rte) / 2) / 2
    assert got[MEAN_TASK]["item_se"] == pytest.approx(mean_se.mean())
    assert got[MEAN_TASK]["set_sd"] == pytest.approx(np.std((p + rte) / 2, ddof=1))
    single = item_noise(jobs[:1])["boolq"]
    assert single["set_sd"] is None and single["ratio"] is None and single["na"] == "n=1 < 2"


def test_speed_ten_groups_five_sets_600_items():
    rng = np.random.default_rng(0)
    groups = [{"boolq": rng.integers(0, 2, (5, 600)).astype(np.uint8)} for _ in range(10)]
    start = time.perf_counter()
    for i in range(10):  # every pair of 10 sources within one method: 45 comparisons
        for j in range(i + 1, 10):
            percentile_summary(bootstrap_difference(groups[i], groups[j])[MEAN_TASK][1])
    assert time.perf_counter() - start < 1.0


# ----------------------------------------------------------------------------------- end to end


def _csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _job_with_items(sweep, num, method, source, seed, items: dict | None, selection=None, sha=None):
    """A finished job whose metrics are its items' accuracies; ``items=None``: an older job without items.npz;
    ``sha``: its calibration set's token SHA-256."""
    config = _config(method, source, seed)
    if selection:
        config["selection"] = selection
    accs = {t: float(np.mean(c)) for t, c in (items or {"boolq": [1, 0], "rte": [1, 0]}).items()}
    metrics = {f"zeroshot/{t}/acc": v for t, v in accs.items()}
    metrics.update({"zeroshot/mean_acc": float(np.mean(list(accs.values()))), "perplexity/wikitext": 20.0 + seed})
    folder = write_job(sweep, num, config, metrics=metrics, extra={"calibration": {"token_sha256": sha}} if sha else None)
    if items is not None:
        save_item_records(folder, {t: records(c) for t, c in items.items()})
    return folder


def test_report_writes_item_noise_and_paired_comparisons(tmp_path):
    rng = np.random.default_rng(3)
    sweep, num = tmp_path / "s", 0
    truth = {}
    for method, sources in (("gptq", {"c4": 3, "wikitext": 3}), ("wanda", {"c4": 3, "wikitext": 2})):
        for source, sets in sources.items():
            shift = 0.1 if source == "c4" else 0.0
            for seed in range(sets):
                items = {"boolq": (rng.random(40) < 0.5 + shift).astype(np.uint8),
                         "rte": (rng.random(30) < 0.6).astype(np.uint8)}
                truth.setdefault((method, source), []).append(items)
                _job_with_items(sweep, num, method, source, seed, items)
                num += 1
    old = _job_with_items(sweep, num, "gptq", "c4", 7, None)  # an older run: zero-shot results, no items.npz
    out = tmp_path / "r"
    files = write_report([sweep], out, wandb=False, say=lambda _: None)
    paired = files.summary.paired
    assert paired.skipped == [old] and paired.with_items == 11
    assert {p.name for p in files.csvs} >= {"item_noise.csv", "paired_comparisons.csv"}

    noise = {(r["method"], r["source"], r["task"]): r for r in _csv(out / "item_noise.csv")}
    acc = np.array([m["boolq"].mean() for m in truth[("gptq", "c4")]])
    row = noise[("gptq", "c4", "boolq")]
    assert int(row["n_sets"]) == 3 and int(row["n_items"]) == 40
    assert float(row["accuracy"]) == pytest.approx(acc.mean())
    assert float(row["item_se"]) == pytest.approx(np.mean(np.sqrt(acc * (1 - acc) / 40)))
    assert float(row["set_sd"]) == pytest.approx(np.std(acc, ddof=1))
    assert float(row["ratio"]) == pytest.approx(float(row["item_se"]) / float(row["set_sd"]))
    assert ("gptq", "c4", MEAN_TASK) in noise

    rows = {(r["method"], r["task"]): r for r in _csv(out / "paired_comparisons.csv")}
    g = rows[("gptq", "boolq")]
    assert (g["table"], g["a"], g["b"]) == ("source_comparisons", "c4", "wikitext")
    assert (int(g["n_sets_a"]), int(g["n_sets_b"]), int(g["n_items"]), int(g["replicates"])) == (3, 3, 40, REPLICATES)
    a = {t: np.stack([m[t] for m in truth[("gptq", "c4")]]) for t in ("boolq", "rte")}
    b = {t: np.stack([m[t] for m in truth[("gptq", "wikitext")]]) for t in ("boolq", "rte")}
    expected = bootstrap_difference(a, b)
    for task in ("boolq", "rte", MEAN_TASK):
        r = rows[("gptq", task)]
        low, high, p = percentile_summary(expanded(expected[task][0], expected[task][1], 3))  # 3 sets a side
        assert float(r["effect_points"]) == pytest.approx(expected[task][0])
        assert (float(r["ci_low_points"]), float(r["ci_high_points"]), float(r["p"])) == pytest.approx((low, high, p))
    assert float(rows[("gptq", "boolq")]["effect_points"]) == pytest.approx(100 * (a["boolq"].mean() - b["boolq"].mean()))
    assert int(rows[("gptq", MEAN_TASK)]["n_items"]) == 70
    w = rows[("wanda", "boolq")]  # wikitext has 2 sets: no interval, no p, a reason
    assert w["ci_text"] == "n/a (n=2 < 3)" and w["ci_low_points"] == "" and w["p"] == ""

    md = files.markdown.read_text()
    assert "## Paired comparisons on shared items" in md and "## Item noise vs calibration-set spread" in md
    assert "both groups use" in md
    assert "1 finished job(s) with zero-shot results have no items.npz" in md
    assert "n/a (n=2 < 3)" in md
    assert "Paired comparisons on shared items" in files.html.read_text()


def test_strategy_pairs_and_items_shared_by_both_groups(tmp_path):
    sweep = tmp_path / "s"
    for seed in range(3):
        items = np.array([1, 0, 1, 0, 1, 1], dtype=np.uint8)
        folder = _job_with_items(sweep, seed, "gptq", "c4", seed, {"boolq": items},
                                 selection={"name": "random", "pool_factor": 1})
        if seed == 0:  # this job missed doc 5: the pair uses docs 0-4 only
            save_item_records(folder, {"boolq": records(items[:5], doc_id=range(5))})
        better = items.copy()
        better[1] = 1
        _job_with_items(sweep, 10 + seed, "gptq", "c4", seed, {"boolq": better},
                        selection={"name": "perplexity", "pool_factor": 4})
    files = write_report([sweep], tmp_path / "r", wandb=False, say=lambda _: None)
    (row,) = [r for r in files.summary.paired.comparisons]
    assert (row.table, row.method, row.task) == ("strategy_comparisons", "gptq / c4", "boolq")
    assert (row.a, row.b) == ("name=perplexity, pool_factor=4", "name=random, pool_factor=1")
    assert row.n_items == 5 and row.effect == pytest.approx(20.0)  # one more of 5 shared items right
    # sets identical within each group: only the item draw varies; item 1 is missed by (4/5)^5 = 33% of draws
    # the report's interval is that draw expanded for few sets (paired.expanded), about the effect
    assert row.na is None and row.ci_low < 0.0 < row.effect < row.ci_high and row.ci_high > 60.0
    assert 0.55 < row.p < 0.8


def test_strategy_sharing_randoms_sets_is_not_an_independent_pair(tmp_path):
    sweep = tmp_path / "s"
    rng = np.random.default_rng(4)
    for seed in range(3):
        items = {"boolq": (rng.random(50) < 0.6).astype(np.uint8)}
        _job_with_items(sweep, seed, "gptq", "c4", seed, items, selection={"name": "random", "pool_factor": 4},
                        sha=f"set{seed}")
        _job_with_items(sweep, 10 + seed, "gptq", "c4", seed, items, selection={"name": "dedup", "pool_factor": 4},
                        sha=f"set{seed}")  # dedup removed nothing: random's own sets
    files = write_report([sweep], tmp_path / "r", wandb=False, say=lambda _: None)
    (row,) = files.summary.paired.comparisons
    assert row.na.startswith("n/a (not independent: 3 of its 3 calibration sets")
    assert row.effect == 0.0 and row.ci_low is None and row.p is None


def test_jobs_without_items_are_skipped_with_a_note_never_an_error(tmp_path):
    sweep = tmp_path / "s"
    for seed in range(3):
        _job_with_items(sweep, seed, "gptq", "c4", seed, None)
        _job_with_items(sweep, 10 + seed, "gptq", "wikitext", seed, None)
    broken = _job_with_items(sweep, 20, "gptq", "c4", 9, None)
    (broken / "items.npz").write_bytes(b"not a zip file")
    out = tmp_path / "r"
    files = write_report([sweep], out, wandb=False, say=lambda _: None)
    paired = files.summary.paired
    assert len(paired.skipped) == 6 and [p for p, _ in paired.unreadable] == [broken]
    assert not paired.item_noise and not paired.comparisons
    assert not (out / "item_noise.csv").exists() and not (out / "paired_comparisons.csv").exists()
    md = files.markdown.read_text()
    assert "## Paired item analysis" in md and "6 finished job(s) with zero-shot results have no items.npz" in md
    assert "1 items.npz file(s) could not be read" in md


def test_wandb_gets_the_item_noise_and_paired_tables(tmp_path, monkeypatch):
    import sys

    from test_report import _FakeWandb

    sweep, rng = tmp_path / "s", np.random.default_rng(5)
    for num, (source, seed) in enumerate((s, k) for s in ("c4", "wikitext") for k in range(3)):
        folder = _job_with_items(sweep, num, "gptq", source, seed, {"boolq": (rng.random(20) < 0.6).astype(np.uint8)})
        record = folder / "results.json"
        record.write_text(record.read_text().replace('"offline"', '"online"'))
    fake = _FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.setenv("WANDB_MODE", "online")
    write_report([sweep], tmp_path / "r", say=lambda _: None)
    logged = [c for c in fake.calls if c[0] == "log"][0][1]
    table = logged["report/paired_comparisons"]
    row = dict(zip(table.columns, table.data[0]))
    assert (row["a"], row["b"], row["task"], row["n_items"], row["replicates"]) == ("c4", "wikitext", "boolq", 20, 2000)
    noise = logged["report/item_noise"]
    assert len(noise.data) == 2 and "item_se" in noise.columns


def test_expanded_interval_widens_by_the_small_n_factor():
    """Hesterberg's expansion: deviations about the effect scaled by sqrt(n/(n-1)) t_{n-1,0.975} / z_0.975."""
    from scipy.stats import norm, t

    diffs = np.random.default_rng(3).normal(1.0, 2.0, 4000)
    for n, factor in ((3, math.sqrt(1.5) * t.ppf(0.975, 2) / norm.ppf(0.975)), (10, math.sqrt(10 / 9) * t.ppf(0.975, 9) / norm.ppf(0.975))):
        out = expanded(0.5, diffs, n)
        assert np.mean(out) == pytest.approx(0.5) and np.std(out) == pytest.approx(factor * np.std(diffs))
    assert 2.6 < math.sqrt(1.5) * t.ppf(0.975, 2) / norm.ppf(0.975) < 2.7  # n = 3: 2.69x as wide


def test_same_sets_bootstrap_equals_a_loop_with_one_set_draw_for_both_groups():
    rng = np.random.default_rng(11)
    a = {"boolq": rng.integers(0, 2, (4, 9)).astype(np.uint8)}
    b = {"boolq": rng.integers(0, 2, (4, 9)).astype(np.uint8)}
    fast = bootstrap_difference(a, b, replicates=200, sets_paired=True)
    draw = np.random.default_rng(0)  # documented order: sets (once), then items
    sets = draw.integers(0, 4, size=(200, 4))
    items = draw.integers(0, 9, size=(200, 9))
    slow = [100 * (a["boolq"][sets[r]][:, items[r]].mean() - b["boolq"][sets[r]][:, items[r]].mean()) for r in range(200)]
    np.testing.assert_allclose(fast["boolq"][1], slow, rtol=0, atol=1e-10)
    with pytest.raises(ValueError, match="sets_paired needs the same calibration sets on both sides, got 4 and 3"):
        bootstrap_difference(a, {"boolq": b["boolq"][:3]}, sets_paired=True)


def test_shared_set_effect_cancels_when_the_sets_are_paired():
    # set j makes items 0..k_j wrong for both methods (a big shared set effect); method a is right on exactly
    # one more item than b on every set: the difference is 1 item in 100 on every set
    rng = np.random.default_rng(5)
    base = (rng.random((5, 100)) < 0.6).astype(np.uint8)
    for j, k in enumerate((0, 10, 20, 30, 40)):
        base[j, :k] = 0
    a, b = base.copy(), base.copy()
    a[:, 99], b[:, 99] = 1, 0
    paired = bootstrap_difference({"t": a}, {"t": b}, sets_paired=True)["t"]
    unpaired = bootstrap_difference({"t": a}, {"t": b})["t"]
    assert paired[0] == unpaired[0] == pytest.approx(1.0)
    lo_p, hi_p, p_p = percentile_summary(expanded(*paired, 5))
    lo_u, hi_u, _ = percentile_summary(expanded(*unpaired, 5))
    assert hi_p - lo_p < 0.25 * (hi_u - lo_u)  # the shared set effect is gone from the paired interval
    assert lo_u < 0 < hi_u  # unpaired: the 1-point effect is lost in the set spread


def test_report_compares_methods_on_the_same_source_paired_by_set(tmp_path):
    rng = np.random.default_rng(8)
    sweep, num = tmp_path / "s", 0
    answers = {}
    for method in ("sparsegpt", "wanda", "gptq"):
        for seed in range(3):
            items = {"boolq": (rng.random(40) < 0.6).astype(np.uint8)}
            answers.setdefault(method, []).append(items["boolq"])
            sha = f"set{seed}" if method != "gptq" else f"other{seed}"  # gptq ran on other sets
            _job_with_items(sweep, num, method, "c4", seed, items, sha=sha)
            num += 1
    files = write_report([sweep], tmp_path / "r", wandb=False, say=lambda _: None)
    rows = {(r.a, r.b): r for r in files.summary.paired.comparisons if r.table == "method_comparisons"}
    assert sorted(rows) == [("gptq", "sparsegpt"), ("gptq", "wanda"), ("sparsegpt", "wanda")]
    sw = rows[("sparsegpt", "wanda")]
    assert (sw.method, sw.source, sw.sets_paired, sw.n_sets_a, sw.n_items) == ("–", "c4", True, 3, 40)
    assert rows[("gptq", "wanda")].sets_paired is False
    a, b = np.stack(answers["sparsegpt"]), np.stack(answers["wanda"])
    effect, diffs = bootstrap_difference({"boolq": a}, {"boolq": b}, sets_paired=True)["boolq"]
    assert sw.effect == pytest.approx(100 * (a.mean() - b.mean()))
    assert (sw.ci_low, sw.ci_high, sw.p) == pytest.approx(percentile_summary(expanded(effect, diffs, 3)))
    csv_rows = [r for r in _csv(tmp_path / "r" / "paired_comparisons.csv") if r["table"] == "method_comparisons"]
    assert {(r["a"], r["b"], r["source"], r["sets_paired"]) for r in csv_rows} >= {("sparsegpt", "wanda", "c4", "True")}
    assert "| method | toy-7b | – | c4 |" in files.markdown.read_text()
