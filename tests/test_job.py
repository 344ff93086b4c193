"""A whole job in-process on the tiny model: the results.json contract and failure records."""

from __future__ import annotations

import json
import math

import pytest

from calib_sweep.errors import ConfigError
from calib_sweep.job import run_job
from helpers import compose_cfg, tiny_overrides


def test_job_writes_complete_results(tiny_model_dir, tiny_corpus, tmp_path, isolated_cache):
    cfg = compose_cfg(tiny_overrides(tiny_model_dir, tiny_corpus) + ["method=wanda", "seed=3"])
    record = run_job(cfg, tmp_path / "job")
    saved = json.loads((tmp_path / "job" / "results.json").read_text())
    assert saved["status"] == "ok" and saved["metrics"] == record["metrics"]
    assert set(saved) >= {"config", "metrics", "timings", "memory", "versions", "calibration", "compression", "evaluation"}
    assert saved["config"]["method"]["name"] == "wanda" and saved["config"]["seed"] == 3
    ppl = saved["metrics"]["perplexity/local_jsonl"]
    assert math.isfinite(ppl) and 10 < ppl < 1000  # random 81-token model: near the vocabulary size
    assert saved["evaluation"]["perplexity/local_jsonl"]["seq_len"] == 64
    assert set(saved["timings"]) == {
        "validate", "prepare", "calibrate", "load", "compress", "verify", "diagnostics", "evaluate", "dense_baseline"
    }
    # The dense reference: computed once (isolated cache), then reused; deltas are ours minus dense.
    dense_ppl = saved["dense"]["metrics"]["perplexity/local_jsonl"]
    assert saved["dense"]["reused"] is False and 10 < dense_ppl < 1000
    assert saved["deltas"]["perplexity/local_jsonl"] == pytest.approx(ppl - dense_ppl)
    kl = saved["compression"]["summary"]["kl_from_dense"]
    assert kl > 0 and saved["metrics"]["compression/kl_from_dense"] == kl  # 50% pruning moves the outputs
    again = run_job(cfg, tmp_path / "job2")
    assert again["dense"]["reused"] is True and again["dense"]["metrics"] == saved["dense"]["metrics"]
    assert saved["memory"]["peak_rss_bytes"] > 100 * 2**20
    assert saved["versions"]["torch"] and saved["versions"]["llmcompressor"] == "0.14.0.1"
    calib = saved["calibration"]
    assert calib["n_samples"] == 4 and calib["seq_len"] == 64 and calib["seed"] == 3 and len(calib["sequences"]) == 4
    assert saved["compression"]["summary"]["mean_sparsity"] == pytest.approx(0.5, abs=1e-3)


def test_bad_group_size_fails_before_loading_with_a_record(tiny_model_dir, tiny_corpus, tmp_path):
    cfg = compose_cfg(tiny_overrides(tiny_model_dir, tiny_corpus) + ["method=gptq", "method.group_size=48"])
    with pytest.raises(ConfigError, match="method.group_size=48 does not divide the input width 64"):
        run_job(cfg, tmp_path / "job")
    saved = json.loads((tmp_path / "job" / "results.json").read_text())
    assert saved["status"] == "failed" and saved["stage"] == "prepare" and saved["error_type"] == "ConfigError"
    assert "load" not in saved["timings"]  # no weights were loaded
    assert (tmp_path / "job" / "traceback.txt").is_file()


def test_same_seed_same_set_across_methods(tiny_model_dir, tiny_corpus, tmp_path):
    hashes = []
    for method in ("dense", "gptq"):
        cfg = compose_cfg(tiny_overrides(tiny_model_dir, tiny_corpus) + [f"method={method}", "method.group_size=32"]
                          if method == "gptq" else tiny_overrides(tiny_model_dir, tiny_corpus) + ["method=dense"])
        hashes.append(run_job(cfg, tmp_path / method)["calibration"]["token_sha256"])
    assert hashes[0] == hashes[1]


def test_prepend_bos_reaches_calibration_perplexity_and_kl(tiny_model_dir, tiny_corpus, tmp_path, isolated_cache):
    from conftest import build_tiny_model_dir

    from calib_sweep.data import cli
    from calib_sweep.data.sampling import token_hash

    bos_dir = build_tiny_model_dir(tmp_path / "tiny-bos", bos=True)
    cfg = compose_cfg(tiny_overrides(bos_dir, tiny_corpus) + ["method=wanda", "model.prepend_bos=true"])
    record = run_job(cfg, tmp_path / "job")
    assert record["status"] == "ok" and record["calibration"]["bos_token_id"] == 1
    rebuilt = cli.rebuild_input_ids(record)
    assert (rebuilt[:, 0] == 1).all() and token_hash(rebuilt) == record["calibration"]["token_sha256"]
    protocol = record["evaluation"]["perplexity/local_jsonl"]
    assert protocol["bos_token_id"] == 1 and protocol["tokens_scored"] == protocol["windows"] * 63
    assert record["compression"]["kl_protocol"]["seq_len"] == 64
    from calib_sweep.evaluation.baseline import baseline_path

    dense = json.loads(baseline_path(record["dense"]["key"]).read_text())
    assert dense["details"]["perplexity/local_jsonl"]["bos_token_id"] == 1  # the dense model: same protocol
    # A tokenizer without a BOS token: refused before any weights load.
    cfg = compose_cfg(tiny_overrides(tiny_model_dir, tiny_corpus) + ["method=wanda", "model.prepend_bos=true"])
    with pytest.raises(ConfigError, match="model.prepend_bos=true but the tokenizer of 'tiny-llama' has no BOS token"):
        run_job(cfg, tmp_path / "nobos")
    assert json.loads((tmp_path / "nobos" / "results.json").read_text())["stage"] == "prepare"


def test_bos_with_seq_len_1_fails_at_validate(tiny_model_dir, tiny_corpus, tmp_path):
    cfg = compose_cfg(tiny_overrides(tiny_model_dir, tiny_corpus) + ["model.prepend_bos=true", "samples.seq_len=1"])
    with pytest.raises(ConfigError, match="samples.seq_len=1 leaves no text after the BOS token"):
        run_job(cfg, tmp_path / "job")
    assert json.loads((tmp_path / "job" / "results.json").read_text())["stage"] == "validate"


def test_same_config_twice_gives_bit_identical_metrics_and_a_hardware_record(tiny_model_dir, tiny_corpus, tmp_path):
    """The noise floor's premise: on one machine a config reproduces every figure exactly (GPTQ, the most
    order-sensitive method); a row permutation keeps the set (same token hash) and records its order."""
    cfg = compose_cfg(tiny_overrides(tiny_model_dir, tiny_corpus) + ["method=gptq", "seed=1"])
    first, second = run_job(cfg, tmp_path / "a"), run_job(cfg, tmp_path / "b")
    assert first["metrics"] == second["metrics"] and first["compression"]["summary"] == second["compression"]["summary"]
    hardware = first["runtime"]["hardware"]
    assert hardware["threads"] == first["runtime"]["threads"] and hardware["cpu"]["model"]
    assert hardware["deterministic"] is False and hardware["cpu_capability"] and hardware["id"].startswith("cpu ")
    permuted = run_job(compose_cfg(tiny_overrides(tiny_model_dir, tiny_corpus) + ["method=gptq", "seed=1",
                                                                                   "perturb.row_order_seed=5"]), tmp_path / "p")
    order = permuted["calibration"]["row_order"]
    assert order["seed"] == 5 and sorted(order["order"]) == [0, 1, 2, 3] and order["order"] != [0, 1, 2, 3]
    assert permuted["calibration"]["token_sha256"] == first["calibration"]["token_sha256"]
    with pytest.raises(ConfigError, match="perturb.row_order_seed='x' must be null"):
        run_job(compose_cfg(tiny_overrides(tiny_model_dir, tiny_corpus) + ["perturb.row_order_seed=x"]), tmp_path / "bad")
