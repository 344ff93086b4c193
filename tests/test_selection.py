"""Selection strategies (issue 16): each strategy's choice on hand-made candidates, disjoint shares
across seeds, the random draw unchanged, model-based scoring on the tiny model, rebuild, bad input."""

from __future__ import annotations

import hashlib
import io
import json
import random

import numpy as np
import pytest
import torch

from calib_sweep.data import Document, build_calibration_set, check_selection, draw_calibration_set, needs_model
from calib_sweep.data.selection import STRATEGIES, Candidates, get_strategy, resolve, validate_selection
from calib_sweep.errors import ConfigError
from conftest import make_text
from helpers import compose_cfg, tiny_overrides


def docs_of(lengths: list[int], seed: int = 0) -> list[Document]:
    rng = random.Random(seed)
    return [Document(f"d{i}", make_text(rng, n)) for i, n in enumerate(lengths)]


def candidates(m: int = 6, **kw) -> Candidates:
    base = dict(slots=np.arange(100, 100 + m), rows=np.arange(m * 8).reshape(m, 8), n_documents=np.ones(m, np.int64),
                longest_document=np.full(m, 10), features={})
    return Candidates(**{**base, **kw})


def choose(name: str, cands: Candidates, n: int, **params):
    strategy, full = resolve({"name": name, **params})
    return strategy.choose(cands, n, full)


# ------------------------------------------------------------------------------- random is unchanged
def test_random_draw_hash_and_manifest_are_unchanged(word_tokenizer):
    # Recorded with the sampler before selection strategies existed (commit 0493f7b).
    docs = docs_of([900] * 40)
    for selection in (None, {"name": "random", "pool_factor": 1}):
        calib = draw_calibration_set(docs, word_tokenizer, 8, 128, 3, "src", selection=selection)
        assert calib.token_sha256 == "6d15ff4026a142a5ed1704e8abf34645ca2310759739932e843baba39e0b4e1a"
        manifest = json.dumps(calib.manifest(), sort_keys=True).encode()
        assert hashlib.sha256(manifest).hexdigest() == "0715f712cdac92aafedd57a4d3f1fbd4a1fbd6e94763631ea66b15fd49ee8493"
        assert "selection" not in calib.manifest() and "score" not in calib.sequences[0]


def test_default_selection_keeps_job_config_keys():
    from omegaconf import OmegaConf

    from calib_sweep.tracking import config_key

    resolved = OmegaConf.to_container(compose_cfg([]), resolve=True)
    assert resolved["selection"] == {"name": "random", "pool_factor": 1}
    without = {k: v for k, v in resolved.items() if k != "selection"}
    assert config_key(resolved, "torch.float32") == config_key(without, "torch.float32")
    other = OmegaConf.to_container(compose_cfg(["selection=dedup"]), resolve=True)
    assert config_key(other, "torch.float32") != config_key(resolved, "torch.float32")


def test_selection_experiment_draws_every_strategy_from_the_same_share():
    # Issue 27 item 6: in experiment=selection every strategy, random and dedup included, has pool_factor 4,
    # so for a seed all choose from the same 64 windows; random's sets are therefore not replication_cpu's
    # (pool_factor 1, whose seeds 0-2 lie inside seed 0's share) and get their own config key.
    from omegaconf import OmegaConf

    from calib_sweep.tracking import config_key

    def resolved(*overrides):
        return OmegaConf.to_container(compose_cfg(list(overrides)), resolve=True)

    job = ("method=wanda", "dataset=offline_news", "seed=1")
    pools = {option: resolved("experiment=selection", f"selection={option}", *job)["selection"]["pool_factor"]
             for option in ("random", "dedup", "length", "perplexity_mid", "activation_diversity")}
    assert pools == {option: 4 for option in pools}
    replication = config_key(resolved("experiment=replication_cpu", *job), "torch.float32")
    assert config_key(resolved("experiment=selection", "selection=random", *job), "torch.float32") != replication
    assert resolved("experiment=replication_cpu", *job)["selection"]["pool_factor"] == 1
    # and every one of those configs passes the job's own validation (random at pool_factor 4 was refused once)
    for option in ("random", "dedup", "length", "zipf_diversity", "outlier_coverage"):
        cfg = compose_cfg(["experiment=selection", f"selection={option}", *job])
        validate_selection(cfg.selection, cfg.dataset)


def test_random_with_a_pool_takes_the_first_n_of_its_share(word_tokenizer):
    # pool_factor 4: seed 1's share is slots [32, 64) of the permutation, the set its first 8 in that order,
    # the same windows the other strategies choose from (issue 27 item 6)
    docs = docs_of([900] * 80)
    pooled = draw_calibration_set(docs, word_tokenizer, 8, 128, 1, "src", selection={"name": "random", "pool_factor": 4})
    wide = draw_calibration_set(docs, word_tokenizer, 32, 128, 1, "src")  # seed 1 of n=32: the same 32 slots
    assert torch.equal(pooled.input_ids, wide.input_ids[:8])
    plain = draw_calibration_set(docs, word_tokenizer, 8, 128, 1, "src")  # seed 1 at pool 1: slots [8, 16)
    assert not torch.equal(pooled.input_ids, plain.input_ids)


# ----------------------------------------------------------------------- each strategy, hand-made
def test_registry_has_every_strategy_and_random_is_default():
    assert set(STRATEGIES) == {"random", "length", "perplexity", "lexical_diversity", "activation_diversity", "dedup",
                               "zipf_diversity", "outlier_coverage"}
    assert resolve(None)[0].name == "random" and resolve(None)[1] == {"pool_factor": 1}
    assert [n for n, s in STRATEGIES.items() if s.needs] == ["perplexity", "activation_diversity", "outlier_coverage"]


def test_perplexity_bands_take_lowest_middle_highest():
    ppl = np.array([5.0, 1.0, 9.0, 3.0, 7.0, 2.0, 8.0, 4.0])
    cands = candidates(8, features={"nll": np.log(ppl)})
    low = choose("perplexity", cands, 3, band="low")
    assert low.indices.tolist() == [1, 5, 3] and np.allclose(low.scores, [1.0, 2.0, 3.0])
    high = choose("perplexity", cands, 3, band="high")
    assert high.indices.tolist() == [2, 6, 4] and np.allclose(high.scores, [9.0, 8.0, 7.0])
    mid = choose("perplexity", cands, 2, band="mid")  # sorted 1 2 3 4 5 7 8 9: the middle two are 4 and 5
    assert sorted(np.round(mid.scores, 6).tolist()) == [4.0, 5.0] and sorted(mid.indices.tolist()) == [0, 7]


def test_length_prefers_single_document_windows_then_longest_documents():
    cands = candidates(5, n_documents=np.array([2, 1, 3, 1, 1]), longest_document=np.array([40, 10, 900, 300, 20]))
    single = choose("length", cands, 2)
    assert single.indices.tolist() == [1, 3] and single.scores.tolist() == [1.0, 1.0]
    assert single.info == {"single_document_windows": 2}
    filled = choose("length", cands, 4)  # only 3 single-document windows: the least-joined fills the 4th
    assert filled.indices.tolist() == [1, 3, 4, 0] and filled.info == {"single_document_windows": 3}
    longest = choose("length", cands, 2, mode="longest_document")
    assert longest.indices.tolist() == [2, 3] and longest.scores.tolist() == [900.0, 300.0]


def test_lexical_diversity_skips_rows_that_repeat_the_set():
    diverse = np.arange(2, 18)
    rows = np.stack([np.full(16, 5), diverse, diverse, np.arange(40, 56), np.concatenate([diverse[:8], np.arange(60, 68)])])
    cands = candidates(5, rows=rows)
    got = choose("lexical_diversity", cands, 3)
    # Rows 1 and 3 both have 14 distinct 3-grams (row 1 first: pool order); row 2 then adds nothing,
    # row 4 adds the 8 3-grams that do not start inside its copied half.
    assert got.indices.tolist() == [1, 3, 4] and got.scores.tolist() == [14.0, 14.0, 8.0]


def test_activation_diversity_takes_the_window_nearest_each_centre():
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    points = []
    for c in centres:  # each cluster: its centre plus two points symmetric about it
        points += [c + [1, 0], c, c - [1, 0]]
    cands = candidates(9, features={"pooled": np.array(points, dtype=np.float32)})
    got = choose("activation_diversity", cands, 3)
    assert sorted(got.indices.tolist()) == [1, 4, 7] and np.allclose(got.scores, 0.0)


def test_dedup_removes_near_duplicates_before_drawing():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 50_000, 64)
    near = base.copy()
    near[-1] += 1  # one token of 64 changed: Jaccard of 5-token shingles 59/61
    rows = np.stack([base, near, rng.integers(0, 50_000, 64), rng.integers(0, 50_000, 64)])
    got = choose("dedup", candidates(4, rows=rows), 3)
    assert got.indices.tolist() == [0, 2, 3] and got.info == {"near_duplicates_removed": 1}
    assert max(got.scores) < 0.5
    with pytest.raises(ConfigError, match=r"selection=dedup kept only 3 of the 4 candidate windows .* Fix: raise selection.pool_factor"):
        choose("dedup", candidates(4, rows=rows), 4)


# ------------------------------------------------------------------------ draws: shares, disjointness
@pytest.mark.parametrize("name", ["length", "lexical_diversity", "dedup"])
def test_seeds_choose_from_disjoint_shares(word_tokenizer, name):
    docs = docs_of([50, 400, 20, 130, 700, 90] * 8)
    sets = [draw_calibration_set(docs, word_tokenizer, 4, 32, seed, "src", selection={"name": name}) for seed in range(3)]
    factor = resolve({"name": name})[1]["pool_factor"]
    shares = [set(s.manifest()["selection"]["pool"]["slots"]) for s in sets]
    chosen = [{q["slot"] for q in s.sequences} for s in sets]
    for k, calib in enumerate(sets):
        m = calib.manifest()
        assert m["selection"]["strategy"] == name and m["selection"]["params"]["pool_factor"] == factor
        assert len(shares[k]) == 4 * factor and len(chosen[k]) == 4 and chosen[k] <= shares[k]
        assert m["selection"]["pool"]["positions"] == [k * 4 * factor, (k + 1) * 4 * factor]
        assert all(isinstance(q["score"], float) for q in m["sequences"])
        assert m["max_disjoint_sets"] == calib.slots_available // (4 * factor)
        assert f"selection {name} chooses n of them" in m["policy"]
    assert not (shares[0] & shares[1] or shares[0] & shares[2] or shares[1] & shares[2])
    # Rows are the chosen slots' tokens, rebuilt from the manifest pieces.
    by_id = {d.doc_id: word_tokenizer([d.text])["input_ids"][0] + [word_tokenizer.eos_token_id] for d in docs}
    for row, seq in zip(sets[1].input_ids.tolist(), sets[1].sequences):
        assert row == [t for p in seq["pieces"] for t in by_id[p["doc_id"]][p["start"] : p["end"]]]


def test_length_picks_single_document_windows_from_the_share(word_tokenizer):
    docs = docs_of([50, 400, 20, 130, 700, 90] * 8)
    calib = draw_calibration_set(docs, word_tokenizer, 4, 32, 0, "src", selection={"name": "length"})
    assert all(len(q["pieces"]) == 1 and q["score"] == 1.0 for q in calib.sequences)
    assert calib.manifest()["selection"]["info"] == {"single_document_windows": 4}


def test_pool_too_small_says_how_many_sets(word_tokenizer):
    docs = docs_of([1000] * 4)  # 4,004 tokens = 62 windows of 64: 3 shares of 4 x 4 = 16 candidates
    draw_calibration_set(docs, word_tokenizer, 4, 64, 2, "small", selection={"name": "lexical_diversity"})
    with pytest.raises(ConfigError) as err:
        draw_calibration_set(docs, word_tokenizer, 4, 64, 3, "small", selection={"name": "lexical_diversity"})
    message = str(err.value)
    assert "\n" not in message and "selection=lexical_diversity (pool_factor=4) can give 3 disjoint set(s)" in message
    assert "seed=3 needs 64 windows" in message and "Fix: use seed<3, lower selection.pool_factor" in message
    # 62 - 3 x 16 = 14 candidates are left for seed 3: allow_fewer would choose from them
    assert "or samples.allow_fewer=true to choose from the 14 candidate(s) left" in message


# ---------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("selection, match", [
    ({"name": "best"}, r"selection.name='best' is unknown. Fix: selection=<one of \['activation_diversity', 'dedup'"),
    ({"name": "perplexity", "band": "top"}, r"selection.band='top' is unknown. Fix: selection.band=<one of \['low', 'mid', 'high'\]>"),
    ({"name": "perplexity", "bnd": "low"}, r"selection.bnd is not a parameter of selection=perplexity. Fix: use one of"),
    ({"name": "dedup", "pool_factor": 0}, r"selection.pool_factor=0 must be an integer >= 1. Fix: selection.pool_factor=2 "),
    ({"name": "random", "pool_factor": -1}, r"selection.pool_factor=-1 must be an integer >= 1. Fix: selection.pool_factor=1 "),
    ({"name": "length", "pool_factor": 2.5}, r"selection.pool_factor=2.5 must be an integer >= 1. Fix: selection.pool_factor=4 "),
    # a non-random strategy choosing n of n candidates would be the random set under another name
    ({"name": "lexical_diversity", "pool_factor": 1},
     r"selection.pool_factor=1 with selection=lexical_diversity leaves nothing to choose .* Fix: selection.pool_factor=4 "
     r"\(its default\), or selection=random"),
    ({"name": "perplexity", "pool_factor": 1}, r"selection.pool_factor=1 with selection=perplexity leaves nothing to choose"),
    ({"name": "length", "mode": "short"}, r"selection.mode='short' is unknown for selection=length"),
])
def test_bad_selection_is_one_line_naming_the_fix(selection, match):
    with pytest.raises(ConfigError, match=match) as err:
        validate_selection(selection)
    assert "\n" not in str(err.value)


def test_model_based_strategy_with_self_generated_fails_before_the_model():
    cfg = compose_cfg(["dataset=self_generated", "selection=perplexity"])
    with pytest.raises(ConfigError, match=r"selection=perplexity chooses among a source's windows, but "
                                          r"dataset=self_generated .* Fix: selection=random"):
        check_selection(cfg.dataset, cfg.selection, None, 4, 64, 0)
    assert needs_model(cfg.dataset, compose_cfg([]).selection)
    assert not needs_model(compose_cfg([]).dataset, compose_cfg([]).selection)
    assert needs_model(compose_cfg([]).dataset, compose_cfg(["selection=activation_diversity"]).selection)


def test_hydra_selection_configs_resolve():
    for name in ("random", "length", "perplexity", "perplexity_mid", "perplexity_high", "lexical_diversity",
                 "activation_diversity", "dedup"):
        strategy, params = resolve(compose_cfg([f"selection={name}"]).selection)
        assert strategy.name == name.split("_mid")[0].split("_high")[0]
    assert resolve(compose_cfg(["selection=perplexity_high"]).selection)[1]["band"] == "high"


def test_selection_sweep_folders_name_the_group_option():
    # The three perplexity bands share selection.name 'perplexity'; their job folders must differ.
    from hydra import compose, initialize_config_module
    from hydra.core.hydra_config import HydraConfig

    folders = []
    for option in ("perplexity", "perplexity_mid", "random"):
        with initialize_config_module(config_module="calib_sweep.conf", version_base="1.3"):
            cfg = compose("config", overrides=["experiment=selection", f"selection={option}", "method=wanda"],
                          return_hydra_config=True)
        cfg.hydra.job.num = 7
        HydraConfig.instance().set_config(cfg)
        folders.append(cfg.hydra.sweep.subdir)
    assert folders == ["7_wanda_offline_wikipedia_perplexity_s0", "7_wanda_offline_wikipedia_perplexity_mid_s0",
                       "7_wanda_offline_wikipedia_random_s0"]


# ---------------------------------------------------------------------- model-based, tiny model
def _tiny(tiny_model_dir, tiny_corpus, *extra):
    from calib_sweep import models

    cfg = compose_cfg(tiny_overrides(tiny_model_dir, tiny_corpus) + ["dataset.heldout_fraction=0.0", *extra])
    tokenizer = models.load_tokenizer(cfg.model)
    model = models.load_model(cfg.model, torch.device("cpu"), torch.float32)
    return cfg, tokenizer, model


def _plain(node):
    from omegaconf import OmegaConf

    return OmegaConf.to_container(node, resolve=True)


def test_perplexity_selection_on_the_tiny_model_is_cached_and_rebuilds(tiny_model_dir, tiny_corpus, isolated_cache, tmp_path):
    from calib_sweep.data import cli
    from calib_sweep.data.selection.scoring import slot_rows, window_features
    from calib_sweep.data.sampling import token_stream
    from calib_sweep.data.sources import load_documents

    cfg, tokenizer, model = _tiny(tiny_model_dir, tiny_corpus, "selection=perplexity", "selection.band=low")
    draw = lambda seed: build_calibration_set(cfg.dataset, tokenizer, 4, 64, seed, model=model, selection=cfg.selection)  # noqa: E731
    first = draw(0)
    # only the share's 4 x 4 = 16 candidates are scored, not the whole source
    assert first.selection_scoring["reused"] is False and first.selection_scoring["windows"] == 16 < first.slots_available
    second = draw(1)
    assert second.selection_scoring["reused"] is False  # another share: its own 16 windows
    high = build_calibration_set(cfg.dataset, tokenizer, 4, 64, 0, model=model,
                                 selection={**_plain(cfg.selection), "band": "high"})
    assert high.selection_scoring["reused"] is True  # the same share for another band (or method): read from the cache
    # Band low: the chosen windows are the 4 lowest-perplexity of the 16 candidates, by direct scoring.
    stream, _, _ = token_stream(load_documents(cfg.dataset), tokenizer)
    pool = np.array(first.manifest()["selection"]["pool"]["slots"])
    ppl = np.exp(window_features(model, torch.from_numpy(slot_rows(np.asarray(stream), pool, 64, None)), "nll"))
    chosen = [q["slot"] for q in first.sequences]
    assert sorted(chosen) == sorted(pool[np.argsort(ppl)[:4]].tolist())
    assert np.allclose([q["score"] for q in first.sequences], np.sort(ppl)[:4], rtol=1e-5)
    assert not set(chosen) & {q["slot"] for q in second.sequences}
    # rebuild from the manifest reproduces the set (hash check) and checks the share.
    from omegaconf import OmegaConf

    record = {"config": OmegaConf.to_container(cfg, resolve=True), "calibration": first.manifest()}
    (tmp_path / "results.json").write_text(json.dumps(record))
    out = io.StringIO()
    assert cli.cmd_rebuild(str(tmp_path / "results.json"), None, out=out) is True
    assert "OK: rebuilt 4 x 64 tokens" in out.getvalue() and "4 of 4 windows lie in the recorded share" in out.getvalue()
    record["calibration"]["sequences"][0]["slot"] = int(second.sequences[0]["slot"])  # claim another seed's window
    (tmp_path / "results.json").write_text(json.dumps(record))
    assert cli.cmd_rebuild(str(tmp_path / "results.json"), None, out=io.StringIO()) is False


def test_activation_diversity_on_the_tiny_model_and_inspect_stats(tiny_model_dir, tiny_corpus, isolated_cache):
    from calib_sweep.data import cli

    cfg, tokenizer, model = _tiny(tiny_model_dir, tiny_corpus, "selection=activation_diversity")
    calib = build_calibration_set(cfg.dataset, tokenizer, 4, 64, 0, model=model, selection=cfg.selection)
    m = calib.manifest()
    assert m["selection"]["strategy"] == "activation_diversity" and len(m["selection"]["pool"]["slots"]) == 16
    assert len({q["slot"] for q in m["sequences"]}) == 4 and all(q["score"] >= 0 for q in m["sequences"])
    out = io.StringIO()
    overrides = tiny_overrides(tiny_model_dir, tiny_corpus) + ["dataset.heldout_fraction=0.0", "selection=activation_diversity"]
    cli.cmd_inspect(None, overrides, show=0, out=out, coverage=True)
    line = [x for x in out.getvalue().splitlines() if x.startswith("set (selection=activation_diversity)")][0]
    ratio = float(line.split("distinct 3-gram ratio ")[1].split(",")[0])
    ppl = float(line.split("mean dense perplexity ")[1].split(",")[0])
    coverage = float(line.split("activation coverage ")[1].split(" ")[0])
    assert 0.5 < ratio <= 1.0 and 10 < ppl < 1000 and 0.25 <= coverage <= 1.0
    out = io.StringIO()
    cli.cmd_inspect(None, overrides[:-1], show=0, out=out, use_model=False)
    assert "mean dense perplexity n/a (no model (--no-model))" in out.getvalue()
    out = io.StringIO()
    cli.cmd_inspect(None, overrides[:-1], show=0, out=out)  # with the model, without --coverage
    assert "activation coverage n/a (not requested: inspect --coverage" in out.getvalue()
