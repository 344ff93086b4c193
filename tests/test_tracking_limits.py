"""W&B's limits are met before upload and a W&B failure shows in the sweep summary (issue 24 item 4).

W&B refuses a tag over 64 characters at ``wandb.init`` (pydantic ``ValidationError`` "Tags must be
between 1 and 64 characters", wandb 0.2x offline too); group and display names over 128 are refused
by the server.
"""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from calib_sweep import sweep_summary, tracking
from calib_sweep.job import run_job
from helpers import compose_cfg, tiny_overrides

FAST = ["method=dense", "eval.dense_baseline=false", "eval.kl_windows=0", "eval.layer_diagnostics=false"]
LONG = "my_own_corpus_of_support_tickets_deduplicated_and_filtered_2026_v3_eng"  # 70 characters


def test_fit_is_deterministic_bounded_and_keeps_distinct_values_distinct():
    assert len(LONG) == 70
    tag = tracking.fit(f"source:{LONG}", tracking.TAG_LIMIT)
    assert len(tag) == 64 and tag.startswith(f"source:{LONG[:48]}-") and tag == tracking.fit(f"source:{LONG}", 64)
    other = tracking.fit(f"source:{LONG[:-1]}4", 64)  # differs in the last character only
    assert len(other) == 64 and other != tag and other[:-8] == tag[:-8]
    assert tracking.fit("source:c4", 64) == "source:c4" and tracking.fit("x" * 64, 64) == "x" * 64
    assert len(tracking.fit("g" * 300, tracking.NAME_LIMIT)) == 128
    with pytest.raises(ValueError, match="limit=5 leaves no room"):
        tracking.fit("abcdefgh", 5)


@pytest.fixture
def offline_wandb(monkeypatch):
    """Real wandb in offline mode; ``wandb.init``'s keyword arguments are recorded."""
    import wandb

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    calls = []
    real = wandb.init

    def init(**kwargs):
        calls.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(wandb, "init", init)
    return calls


def _long_name_cfg(model_dir, corpus, extra=()):
    return compose_cfg(tiny_overrides(model_dir, corpus) + FAST + [
        f"dataset.name={LONG}", f"eval.perplexity.texts=[{LONG}]", "logger=wandb", "logger.mode=offline", *extra])


def test_a_70_character_source_name_still_gets_its_wandb_run(tiny_model_dir, tiny_corpus, tmp_path, isolated_cache,
                                                            offline_wandb):
    cfg = _long_name_cfg(tiny_model_dir, tiny_corpus)
    record = run_job(cfg, tmp_path / "job", group="multirun/" + "g" * 200)
    assert record["status"] == "ok" and record["wandb"]["id"] == record["config_key"][:32]
    assert "error" not in record["wandb"]
    (kwargs,) = offline_wandb
    assert all(1 <= len(tag) <= 64 for tag in kwargs["tags"])
    assert tracking.fit(f"source:{LONG}", 64) in kwargs["tags"] and "method:dense" in kwargs["tags"]
    assert len(kwargs["group"]) == 128 and kwargs["group"].startswith("multirun/ggg")
    assert kwargs["config"]["dataset.name"] == LONG  # the full value stays in the config


def test_failed_wandb_init_is_counted_in_the_sweep_summary(tiny_model_dir, tiny_corpus, tmp_path, isolated_cache,
                                                          monkeypatch, capsys):
    import wandb

    monkeypatch.delenv("WANDB_MODE", raising=False)

    def refuse(**kwargs):
        raise ValueError("1 validation error for Settings\nrun_tags ...")

    monkeypatch.setattr(wandb, "init", refuse)
    sweep = tmp_path / "multirun" / "s"
    job = sweep / "0_dense_local_jsonl_s0"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "hydra.yaml").write_text("hydra:\n  job:\n    num: 0\n")
    record = run_job(_long_name_cfg(tiny_model_dir, tiny_corpus), job)
    assert record["status"] == "ok"
    saved = json.loads((job / "results.json").read_text())
    assert saved["wandb"] == {"mode": "offline", "id": None, "error": "ValueError: 1 validation error for Settings"}
    capsys.readouterr()  # the job's own output
    status = sweep_summary.finish_sweep(OmegaConf.create({"logger": None}), sweep)
    summary = json.loads((sweep / "summary.json").read_text())
    assert status == 0 and summary["tracking_failed"] == 1 and summary["counts"]["ok"] == 1
    assert summary["jobs"][0]["tracking_error"] == "ValueError: 1 validation error for Settings"
    block = capsys.readouterr().err.strip().splitlines()
    assert block[0].endswith("1 jobs: 1 ok, 0 failed, 0 skipped (already done), 0 not started; W&B run not started for 1")
    assert block[1] == f"  W&B run not started: {job}: ValueError: 1 validation error for Settings"
    # A clean sweep says nothing about W&B.
    (job / "results.json").write_text(json.dumps({**saved, "wandb": {"mode": "offline", "id": "abc"}}))
    clean = sweep_summary.summarize(sweep)
    assert clean["tracking_failed"] == 0 and "W&B" not in sweep_summary.format_summary(clean)
