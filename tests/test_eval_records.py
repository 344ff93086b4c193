"""What the records say: the zero-shot batch size lm-eval actually used (read back from its result, with
the configured value beside it), and the report's ``wandb sync`` hint only where there are offline runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from calib_sweep.errors import ConfigError
from calib_sweep.evaluation import validate_eval
from calib_sweep.evaluation.zero_shot import used_batch_size, zero_shot
from calib_sweep.report import write_report
from calib_sweep.tracking import write_results

from helpers import tiny_arc_file


def _eval_cfg(**zeroshot):
    return OmegaConf.create({
        "perplexity": {"texts": [], "seq_len": 16, "max_windows": 2, "batch_size": 2},
        "zeroshot": {"tasks": ["arc_easy"], "limit": None, "batch_size": 4, "num_fewshot": 0, "bootstrap_iters": 0,
                     "local_files": {}, **zeroshot},
    })


# ------------------------------------------------------------------------------------------------
# Zero-shot batch size: used (from lm-eval) and configured


@pytest.mark.parametrize("value", [1, 8, "auto", "auto:2"])
def test_batch_size_accepts_ints_and_auto(value):
    validate_eval(_eval_cfg(batch_size=value))


@pytest.mark.parametrize("value", [0, "big", "auto:0", "auto:x", 2.5, True])
def test_batch_size_rejects_the_rest(value):
    with pytest.raises(ConfigError) as err:
        validate_eval(_eval_cfg(batch_size=value))
    assert f"batch_size={value!r}" in str(err.value) and "auto" in str(err.value) and "Fix:" in str(err.value)


def test_used_batch_size_is_read_from_lm_evals_result():
    assert used_batch_size({"config": {"batch_size": 8, "batch_sizes": []}}, 8) == (8, [])
    assert used_batch_size({"config": {"batch_size": "auto", "batch_sizes": [32]}}, "auto") == (32, [32])
    assert used_batch_size({"config": {"batch_size": "auto:2", "batch_sizes": [16, 64]}}, "auto:2") == (64, [16, 64])
    assert used_batch_size({"config": {"batch_size": "auto", "batch_sizes": []}}, "auto") == (None, [])


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


def test_auto_batch_size_records_the_size_lm_eval_used(tiny, tmp_path):
    model, tokenizer = tiny
    local = {"arc_easy": str(tiny_arc_file(tmp_path))}
    fixed_metrics, fixed = zero_shot(model, tokenizer, _eval_cfg(batch_size=4, local_files=local).zeroshot)
    assert fixed["zeroshot/arc_easy"]["batch_size"] == 4 and fixed["zeroshot/arc_easy"]["batch_size_configured"] == 4
    assert "batch_sizes_detected" not in fixed["zeroshot/arc_easy"]

    # auto: lm-eval's HFLM starts at max_batch_size and halves on out-of-memory; on this CPU the first size
    # fits. (The default fast scorer batches by a token budget instead, recorded as scorer_token_budget.)
    cfg = _eval_cfg(batch_size="auto", local_files=local)
    cfg.zeroshot.max_batch_size = 16
    cfg.zeroshot.scorer = "hflm"
    metrics, details = zero_shot(model, tokenizer, cfg.zeroshot)
    entry = details["zeroshot/arc_easy"]
    assert entry["batch_size"] == 16 and isinstance(entry["batch_size"], int)
    assert entry["batch_size_configured"] == "auto" and entry["batch_sizes_detected"] == [16]
    assert details["zeroshot"]["batch_size"] == 16 and details["zeroshot"]["batch_size_configured"] == "auto"
    assert metrics["zeroshot/arc_easy/acc"] == pytest.approx(fixed_metrics["zeroshot/arc_easy/acc"])
    assert details["zeroshot"]["scorer"] == "hflm" and fixed["zeroshot"]["scorer"] == "fast"
    assert fixed["zeroshot"]["scorer_token_budget"] > 0


# ------------------------------------------------------------------------------------------------
# The report's `wandb sync` hint


def _job(sweep: Path, num: int, wandb: dict, offline_folder: bool = False) -> Path:
    config = {
        "seed": num, "model": {"name": "toy"}, "dataset": {"name": "src", "loader": "jsonl"},
        "samples": {"n_samples": 4, "seq_len": 16}, "method": {"name": "rtn"}, "eval": {},
        "logger": {"enabled": wandb.get("mode") != "disabled"},
    }
    folder = sweep / f"{num}_rtn_src_s{num}"
    folder.mkdir(parents=True)
    if offline_folder:
        (folder / "wandb" / f"offline-run-20261130_000000-{wandb['id']}" / "files").mkdir(parents=True)
    write_results(folder, {"status": "ok", "config": config, "metrics": {"perplexity/src": 10.0 + num}, "wandb": wandb})
    return folder


def _messages(sweep: Path, out: Path) -> list[str]:
    said: list[str] = []
    write_report([sweep], out, say=said.append)
    return [m for m in said if m.startswith("W&B")]


def test_no_sync_hint_for_a_logger_none_sweep(tmp_path):
    sweep = tmp_path / "multirun" / "none"
    for num in range(2):
        _job(sweep, num, {"mode": "disabled", "id": None})
    (message,) = _messages(sweep, tmp_path / "report")
    assert "wandb sync" not in message and "nothing to sync" in message and "disabled" in message


def test_sync_hint_when_the_sweep_has_offline_runs(tmp_path):
    sweep = tmp_path / "multirun" / "offline"
    _job(sweep, 0, {"mode": "offline", "id": "abc0", "dir": "x"}, offline_folder=True)
    _job(sweep, 1, {"mode": "offline", "id": "abc1", "dir": "x"}, offline_folder=True)
    _job(sweep, 2, {"mode": "disabled", "id": None})
    (message,) = _messages(sweep, tmp_path / "report")
    assert "upload the 2 offline runs with `wandb sync " in message
    assert f"{sweep.resolve()}/*/wandb/offline-run-*" in message


def test_offline_mode_without_a_run_is_not_a_run_to_sync(tmp_path):
    sweep = tmp_path / "multirun" / "failed_init"
    _job(sweep, 0, {"mode": "offline", "id": None})  # W&B init failed: mode recorded, no run made
    (message,) = _messages(sweep, tmp_path / "report")
    assert "wandb sync" not in message and "nothing to sync" in message
