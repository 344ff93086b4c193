"""Issue 29 items 1-2: set predictors on hand-made token sets and the tiny Llama, ``inspect --predictors``
and its bad input, and the report's check of predictors against outcomes (planted correlation, n/a)."""

from __future__ import annotations

import csv
import io
import itertools
import math

import numpy as np
import pytest
import torch

from calib_sweep.data import cli
from calib_sweep.data.predictors import PREDICTORS, SetContext, compute, resolve_names
from calib_sweep.data.predictors.outlier_channel_coverage import weighted_coverage
from calib_sweep.data.predictors.unigram_js import js_distance
from calib_sweep.data.predictors.zipf_alpha import zipf_exponent
from calib_sweep.errors import ConfigError
from calib_sweep.report import write_report
from calib_sweep.report.predictors import rho_mde, spearman
from helpers import tiny_overrides

SEQUENCES = [{"slot": 0, "pieces": [{"doc_id": "a", "start": 0, "end": 6}]},
             {"slot": 1, "pieces": [{"doc_id": "b", "start": 10, "end": 12}, {"doc_id": "c", "start": 0, "end": 4}]}]


def test_token_predictors_on_a_hand_made_set():
    rows = np.array([[1, 2, 3, 1, 2, 3], [4, 5, 6, 7, 8, 9]])
    context = SetContext(input_ids=rows, sequences=SEQUENCES, heldout_tokens=rows.reshape(-1)[::-1].copy())
    got = compute(context)
    # 3-grams: row 0 has 123, 231, 312, 123 (3 distinct of 4), row 1 four distinct: 7 / 8
    assert got["distinct_3gram_ratio"] == 0.875
    assert got["unigram_js_distance"] == 0.0  # the held-out text holds the same tokens, reversed
    assert got["documents_per_window"] == 1.5 and got["mean_piece_tokens"] == 4.0 and got["median_piece_tokens"] == 4.0
    assert "mean_dense_perplexity" not in got  # no model: only the token-only predictors
    # a BOS column is left out: the same figures
    with_bos = SetContext(input_ids=np.concatenate([np.full((2, 1), 99), rows], axis=1), sequences=SEQUENCES,
                          bos_token_id=99, heldout_tokens=rows.reshape(-1))
    assert compute(with_bos)["distinct_3gram_ratio"] == 0.875 and compute(with_bos)["unigram_js_distance"] == 0.0


def test_zipf_exponent_and_js_distance_known_values():
    assert zipf_exponent([60, 30, 20, 15, 12]) == pytest.approx(1.0, abs=1e-12)  # 60 / r
    assert zipf_exponent([16, 4, 16 / 9, 1]) == pytest.approx(2.0, abs=1e-12)  # 16 / r^2, any order
    assert js_distance({1: 5, 2: 5}, {3: 2}) == pytest.approx(1.0)  # disjoint supports, base 2
    # p = (1/2, 1/2), q = (1, 0): JS divergence = H(3/4, 1/4) - 1/2 bits
    h = -(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25))
    assert js_distance({1: 1, 2: 1}, {1: 4}) == pytest.approx(math.sqrt(h - 0.5))
    context = SetContext(input_ids=np.array([[5, 5, 5]]), sequences=SEQUENCES)
    got = compute(context)
    assert got["zipf_alpha"] is None and got["zipf_alpha_na"] == "1 token type(s): a Zipf fit needs at least 2"
    assert got["unigram_js_distance"] is None and got["unigram_js_distance_na"] == "no held-out text of the source"


def test_weighted_coverage_by_hand():
    # 8 channels, 4 tokens: sums of squares 16, 36, 4 x 6 -> RMS sqrt(76/32), tau = 6 x 1.541 = 9.25;
    # peaks 10 and 12 are outliers, weights sqrt(16/4) = 2 and sqrt(36/4) = 3
    reference = {"l": {"peak": np.array([10, 12, 1, 1, 1, 1, 1, 1.0]), "sq": np.array([16, 36, 4, 4, 4, 4, 4, 4.0]),
                       "tokens": 4}}
    assert weighted_coverage(reference, {"l": np.array([10, 0, 0, 0, 0, 0, 0, 0.0])}) == {"l": pytest.approx(0.4)}
    assert weighted_coverage(reference, {"l": np.array([0, 9.3, 0, 0, 0, 0, 0, 0.0])}) == {"l": pytest.approx(0.6)}
    assert weighted_coverage(reference, {"l": np.zeros(8)}) == {"l": 0.0}


def _planted_model(tiny_model_dir):
    """The tiny Llama with channel 0 of every input norm scaled 50x: an outlier channel for q/k/v and gate/up."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.input_layernorm.weight[0] = 50.0
            layer.post_attention_layernorm.weight[0] = 50.0
    return model.eval()


def test_model_predictors_on_the_tiny_llama(tiny_model_dir):
    from calib_sweep.data.selection.scoring import window_features

    model = _planted_model(tiny_model_dir)
    heldout = torch.randint(2, 60, (8 * 32,), generator=torch.Generator().manual_seed(0)).numpy()
    rows = heldout[: 4 * 32].reshape(4, 32)
    context = SetContext(input_ids=rows, sequences=SEQUENCES, heldout_tokens=heldout, model=model)
    got = compute(context, ["mean_dense_perplexity", "outlier_channel_coverage"])
    nll = window_features(model, torch.as_tensor(rows), "nll")
    assert got["mean_dense_perplexity"] == pytest.approx(math.exp(float(np.mean(nll))), rel=1e-6)
    # the same NLL a job already has gives the same figure without the model
    cached = compute(SetContext(input_ids=rows, features={"nll": nll}), ["mean_dense_perplexity"], only_cheap=True)
    assert cached["mean_dense_perplexity"] == pytest.approx(got["mean_dense_perplexity"], rel=1e-6)
    assert 0.0 < got["outlier_channel_coverage"] < 1.0
    # the reference windows themselves drive every outlier channel above threshold: coverage 1
    whole = SetContext(input_ids=heldout.reshape(8, 32), heldout_tokens=heldout, model=model)
    assert compute(whole, ["outlier_channel_coverage"])["outlier_channel_coverage"] == pytest.approx(1.0)
    # a job without the features leaves model-based predictors out
    assert "outlier_channel_coverage" not in compute(SetContext(input_ids=rows, sequences=SEQUENCES), only_cheap=True)


def test_predictor_names_bad_input():
    assert resolve_names(None, use_model=False) == [n for n, p in PREDICTORS.items() if not p.needs_model]
    with pytest.raises(ConfigError, match=r"^predictor 'nope' is unknown\. Fix: --predictors with names from \["):
        resolve_names(["nope"])
    with pytest.raises(ConfigError, match=r"^predictor 'outlier_channel_coverage' needs the dense model, but --no-model was given\. Fix: drop --no-model"):
        resolve_names(["zipf_alpha", "outlier_channel_coverage"], use_model=False)


@pytest.mark.parametrize("args, message", [
    (["--predictors", "nope"], "predictor 'nope' is unknown"),
    (["--no-model", "--predictors", "mean_dense_perplexity"], "predictor 'mean_dense_perplexity' needs the dense model"),
])
def test_inspect_refuses_bad_predictors_in_one_line_exit_2(args, message, tiny_model_dir, tiny_corpus, capsys, monkeypatch):
    from calib_sweep import models

    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("weights loaded before the refusal"))
    assert cli.main(["inspect", *args, *tiny_overrides(tiny_model_dir, tiny_corpus)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "Fix:" in err[0]


def test_inspect_prints_the_token_predictors_without_the_model(tiny_model_dir, tiny_corpus):
    out = io.StringIO()
    cli.cmd_inspect(None, tiny_overrides(tiny_model_dir, tiny_corpus), show=0, out=out, use_model=False, predictors=[])
    text = out.getvalue()
    assert "predictors of the set (6):" in text and "distinct_3gram_ratio" in text and "mean_dense_perplexity" not in text
    line = next(s for s in text.splitlines() if s.strip().startswith("documents_per_window"))
    assert float(line.split()[1]) >= 1.0


# --------------------------------------------------------------------------------- the report's check
def _sweep(root, n_per_source: int, sources=("c4", "wikipedia")):
    """gptq jobs whose perplexity rises with zipf_alpha exactly (rho = 1) and is unrelated to the JS distance."""
    from test_report import _config, write_job

    sweep = root / "sweep"
    rng = np.random.default_rng(0)
    num = 0
    for s_index, source in enumerate(sources):
        for seed in range(n_per_source):
            alpha = 0.5 + 0.05 * seed + 0.01 * s_index
            write_job(sweep, num, _config("gptq", source, seed),
                      metrics={"perplexity/wikitext": 10 + 20 * alpha, "zeroshot/mean_acc": 0.5},
                      extra={"predictors": {"zipf_alpha": alpha, "unigram_js_distance": float(rng.uniform(0.1, 0.3))}})
            num += 1
    return sweep


def test_report_finds_a_planted_correlation(tmp_path):
    files = write_report([_sweep(tmp_path, 6)], tmp_path / "r", wandb=False, say=lambda m: None)
    rows = list(csv.DictReader(open(tmp_path / "r" / "predictors.csv")))
    key = lambda r: (r["metric"], r["predictor"], r["scope"])  # noqa: E731
    by = {key(r): r for r in rows}
    planted = by[("perplexity/wikitext", "zipf_alpha", "all")]
    assert float(planted["rho"]) == 1.0 and int(planted["n"]) == 12 and float(planted["ci_low"]) == 1.0
    assert float(planted["p_holm"]) < 1e-6 and int(planted["family_size"]) == 2
    # MDE at n = 12, alpha = 0.05 / 2, 80% power, by simulation (test_rho_mde_is_the_rho_spearmanr_detects_80_percent_of_the_time)
    assert float(planted["mde_rho"]) == pytest.approx(rho_mde(12, 2)) == pytest.approx(0.80)
    assert float(by[("perplexity/wikitext", "zipf_alpha", "source=c4")]["rho"]) == 1.0
    assert float(by[("perplexity/wikitext", "zipf_alpha", "leave out wikipedia")]["rho"]) == 1.0
    assert by[("perplexity/wikitext", "zipf_alpha", "across sources")]["text"] == "n/a (n=2 < 5)"
    assert by[("zeroshot/mean_acc", "zipf_alpha", "all")]["text"] == "n/a (outcome constant over the 12 sets)"
    noise = float(by[("perplexity/wikitext", "unigram_js_distance", "all")]["p_holm"])
    assert noise > 0.05
    md = files.markdown.read_text()
    assert "## Set predictors against outcomes" in md and "| toy-7b | gptq | perplexity/wikitext | all | zipf_alpha | 12 | 1.00 [1.00, 1.00] |" in md
    assert sum(p.name.startswith("predictor_") for p in files.figures) == 2  # one per (predictor, method)


def test_report_says_na_below_five_sets(tmp_path):
    write_report([_sweep(tmp_path, 3, sources=("c4",))], tmp_path / "r", wandb=False, say=lambda m: None)
    rows = list(csv.DictReader(open(tmp_path / "r" / "predictors.csv")))
    alls = [r for r in rows if r["scope"] == "all"]
    assert alls and all(r["text"] == "n/a (n=3 < 5)" and r["rho"] == "" for r in alls)
    assert "n/a (n=3 < 5)" in (tmp_path / "r" / "report.md").read_text()


def test_spearman_matches_scipy_and_its_interval_covers_it():
    from scipy.stats import spearmanr

    x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    y = [2.0, 1.0, 4.0, 3.0, 7.0, 5.0, 6.0]
    rho, low, high, p, na = spearman(x, y)
    assert na is None and rho == pytest.approx(spearmanr(x, y).statistic)
    assert low < rho < high <= 1.0
    # below 10 sets the p is the exact permutation one: spearmanr over all 7! reorderings of y, by brute force
    observed = abs(spearmanr(x, y).statistic)
    exact = np.mean([abs(spearmanr(x, [y[i] for i in order]).statistic) >= observed - 1e-12
                     for order in itertools.permutations(range(7))])
    assert p == pytest.approx(exact) and p != pytest.approx(spearmanr(x, y).pvalue, rel=0.05)
    x10 = list(range(10))
    y10 = [1, 0, 3, 2, 5, 4, 9, 6, 8, 7]
    assert spearman(x10, y10)[3] == pytest.approx(spearmanr(x10, y10).pvalue)  # from 10 sets: spearmanr's


def test_a_perfect_ranking_of_five_sets_gets_its_exact_p_not_the_t_tail():
    """spearmanr gives ~1e-24 for rho = 1 at n = 5; only 2 of the 120 pairings reach |rho| = 1."""
    rho, _, _, p, na = spearman([1, 2, 3, 4, 5], [10, 20, 30, 40, 50])
    assert na is None and rho == pytest.approx(1.0) and p == pytest.approx(2 / 120)
    # so a family of 6 predictors at n = 5 can never reach Holm p < 0.05, and no MDE exists there
    assert rho_mde(5, 6) is None and rho_mde(8, 1) == 0.88


@pytest.mark.parametrize("n, m", [(10, 7), (20, 7)])
def test_rho_mde_is_the_rho_spearmanr_detects_80_percent_of_the_time(n, m):
    """Checked against scipy.stats.spearmanr itself on fresh draws (another seed): power at the MDE is
    about 0.8 and at MDE - 0.03 below it; the Fisher-z formula's answer at n = 10 (0.88) falls short."""
    from scipy.stats import spearmanr

    def power(rho_s, reps=1500):
        rng = np.random.default_rng(7)
        r = 2 * np.sin(np.pi * rho_s / 6)
        hits = 0
        for _ in range(reps):
            x = rng.standard_normal(n)
            y = r * x + np.sqrt(1 - r * r) * rng.standard_normal(n)
            hits += spearmanr(x, y).pvalue < 0.05 / m
        return hits / reps

    mde = rho_mde(n, m)
    assert mde == {10: 0.91, 20: 0.71}[n]
    assert power(mde) >= 0.77 and power(mde - 0.03) < 0.8
    if n == 10:
        assert power(0.88) < 0.76  # the Fisher-z MDE: optimistic at small n


# --------------------------------------------------------------------------------- bench/predictors_outcomes.py
def _bench():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "bench" / "predictors_outcomes.py"
    spec = importlib.util.spec_from_file_location("predictors_outcomes", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_redraws_a_set_and_computes_every_predictor(tiny_model_dir, tiny_corpus, isolated_cache):
    """``--model-predictors``: the bench's redraw gives the job's own set (same token hash) and all nine
    predictors, the dense perplexity equal to the model's own loss on those rows."""
    from calib_sweep import models
    from calib_sweep.data import build_calibration_set
    from calib_sweep.data.cli import compose
    from transformers import AutoModelForCausalLM

    bench = _bench()
    cfg = compose(tiny_overrides(tiny_model_dir, tiny_corpus) + ["seed=1"])
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    heldout: dict = {}
    cheap = bench.set_values(cfg, None, heldout, with_model_predictors=False)
    full = bench.set_values(cfg, model, heldout, with_model_predictors=True)
    model_based = {n for n, p in PREDICTORS.items() if p.needs_model}
    assert model_based == {"mean_dense_perplexity", "activation_coverage", "outlier_channel_coverage"}
    assert set(PREDICTORS) <= set(full) and not model_based & set(cheap)
    assert {k: v for k, v in full.items() if k not in model_based} == cheap  # the token ones do not change
    tokenizer = models.load_tokenizer(cfg.model)
    calib = build_calibration_set(cfg.dataset, tokenizer, int(cfg.samples.n_samples), int(cfg.samples.seq_len), 1,
                                  separator_token_id=models.document_separator(cfg.model, tokenizer))
    assert full["sha256"] == calib.token_sha256
    with torch.no_grad():  # independent: the model's own mean cross-entropy, row by row (equal-length rows)
        losses = [float(model(row[None], labels=row[None]).loss) for row in calib.input_ids]
    assert full["mean_dense_perplexity"] == pytest.approx(math.exp(float(np.mean(losses))), rel=1e-5)
    assert 0.0 < full["activation_coverage"] <= 1.0 and 0.0 <= full["outlier_channel_coverage"] <= 1.0
