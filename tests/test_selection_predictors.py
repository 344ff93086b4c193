"""Issue 29 item 3: selection=zipf_diversity and selection=outlier_coverage, on hand-made candidates and in a
job on the tiny Llama; their bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from calib_sweep.data.selection import Candidates, resolve
from calib_sweep.data.selection.outlier_coverage import cover_elements, greedy_cover
from calib_sweep.data.selection.scoring import channel_peaks, split_channel_peaks
from calib_sweep.data.selection.zipf_diversity import zipf_information
from calib_sweep.errors import ConfigError
from calib_sweep.job import run_job
from helpers import compose_cfg, tiny_overrides


def _candidates(rows, features=None) -> Candidates:
    rows = np.asarray(rows, dtype=np.int64)
    m = rows.shape[0]
    return Candidates(slots=np.arange(m), rows=rows, n_documents=np.ones(m, np.int64),
                      longest_document=np.full(m, rows.shape[1]), features=features or {})


def _choose(name, cands, n, **params):
    strategy, full = resolve({"name": name, **params})
    return strategy.choose(cands, n, full)


def test_zipf_information_follows_the_fitted_law():
    # counts 60/r for ids 5, 6, 7, 8, 9 (60, 30, 20, 15, 12 occurrences): alpha = 1 exactly
    rows = np.repeat([5, 6, 7, 8, 9], [60, 30, 20, 15, 12]).reshape(1, -1)
    info, alpha = zipf_information(rows)
    assert alpha == pytest.approx(1.0, abs=1e-9)
    log_h = math.log(sum(1 / r for r in range(1, 6)))
    assert info[5] == pytest.approx(log_h) and info[9] == pytest.approx(math.log(5) + log_h)


def test_zipf_diversity_takes_the_windows_of_rare_varied_tokens():
    rows = [[1, 1, 1, 1, 1, 1], [1, 1, 2, 2, 1, 1], [7, 8, 9, 10, 11, 12], [1, 2, 1, 2, 1, 2], [3, 4, 5, 6, 1, 2],
            [1, 1, 1, 2, 2, 2], [1, 1, 1, 1, 2, 2], [2, 2, 2, 2, 2, 2]]
    choice = _choose("zipf_diversity", _candidates(rows), 2)
    assert choice.indices.tolist() == [2, 4]  # the only windows of once-seen tokens, rarest first
    assert choice.scores[0] > choice.scores[1] > 0 and choice.info["zipf_alpha"] > 0


def test_outlier_coverage_greedy_weighted_cover_on_hand_made_peaks():
    # one layer of 4 channels; every window's mean square 1 -> tau = 6; element weights peak/tau normalised:
    # c0 7/36, c1 20/36, c3 9/36 (c2 is never above tau)
    peaks = np.array([[7, 0, 0, 0], [0, 20, 0, 0], [7, 20, 0, 0], [0, 0, 0, 9]], dtype=np.float32)
    features = np.concatenate([np.full((4, 1), -4.0), np.ones((4, 1)), peaks], axis=1).astype(np.float32)
    got_peaks, mean_sq, widths = split_channel_peaks(features)
    assert widths == [4] and np.array_equal(got_peaks, peaks) and mean_sq.tolist() == [[1.0]] * 4
    covers, weight = cover_elements(got_peaks, mean_sq, widths)
    assert np.allclose(weight, [7 / 36, 20 / 36, 9 / 36])
    choice = _choose("outlier_coverage", _candidates(np.zeros((4, 3)), {"channel_peaks": features}), 3)
    # w2 covers c0 + c1 (27/36), then w3 the rest (9/36); all covered: a second cover starts, w1 (20/36)
    assert choice.indices.tolist() == [2, 3, 1]
    assert np.allclose(choice.scores, [27 / 36, 9 / 36, 20 / 36])
    assert choice.info == {"outlier_elements": 3, "covered_weight": 1.0}
    # no outlier anywhere: pool order
    assert greedy_cover(np.zeros((3, 0), bool), np.zeros(0), 2)[0].tolist() == [0, 1]


def test_channel_peaks_of_the_tiny_model_split_per_layer(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    rows = torch.randint(2, 50, (3, 16))
    features = channel_peaks(model, rows, batch_size=2)
    peaks, mean_sq, widths = split_channel_peaks(features)
    # 2 layers x (q, k, v, o: 64 inputs; gate, up: 64; down: 128)
    assert widths == [64] * 6 + [128] + [64] * 6 + [128] and peaks.shape == (3, 1024) and mean_sq.shape == (3, 14)
    with torch.no_grad():  # the first layer's q_proj input peak of row 0, by hand
        seen = {}
        handle = model.model.layers[0].self_attn.q_proj.register_forward_pre_hook(lambda m, i: seen.update(x=i[0]))
        model.model(rows[:1])
        handle.remove()
    assert np.allclose(peaks[0, :64], seen["x"][0].abs().amax(dim=0).numpy(), rtol=1e-5)
    assert mean_sq[0, 0] == pytest.approx(float(seen["x"][0].square().mean()), rel=1e-5)


@pytest.mark.parametrize("strategy", ["zipf_diversity", "outlier_coverage"])
def test_strategy_runs_in_a_job_and_records_predictors(strategy, tiny_model_dir, tiny_corpus, isolated_cache, tmp_path):
    record = run_job(compose_cfg(tiny_overrides(tiny_model_dir, tiny_corpus) + ["method=dense", f"selection={strategy}"]),
                     tmp_path / "job")
    assert record["status"] == "ok"
    selection = record["calibration"]["selection"]
    assert selection["strategy"] == strategy and len(selection["pool"]["slots"]) == 4 * record["calibration"]["n_samples"]
    assert ("selection_features" in record["caches"]) == (strategy == "outlier_coverage")
    predictors = record["predictors"]
    assert set(predictors) == {"distinct_3gram_ratio", "zipf_alpha", "unigram_js_distance", "documents_per_window",
                               "mean_piece_tokens", "median_piece_tokens"}  # no model-based one: no extra forward pass
    assert 0 < predictors["unigram_js_distance"] < 1 and predictors["documents_per_window"] >= 1


def test_bad_outlier_coverage_parameter_is_one_line():
    with pytest.raises(ConfigError, match=r"selection.batch_size=0 must be an integer >= 1"):
        resolve({"name": "outlier_coverage", "batch_size": 0})
    with pytest.raises(ConfigError, match=r"selection.ngram is not a parameter of selection=zipf_diversity"):
        resolve({"name": "zipf_diversity", "ngram": 3})
