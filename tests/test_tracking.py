"""Record stage: atomic results.json and the W&B mode decision (never waits on the network)."""

from __future__ import annotations

import json
import time

import pytest
from omegaconf import OmegaConf

from calib_sweep import tracking


def test_results_are_written_atomically(tmp_path):
    tracking.write_results(tmp_path, {"status": "ok", "metrics": {"perplexity/x": 12.5, "bad": float("nan")}})
    data = json.loads((tmp_path / "results.json").read_text())
    assert data == {"status": "ok", "metrics": {"perplexity/x": 12.5, "bad": "nan"}}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temporary file left


def test_failed_write_keeps_the_old_file(tmp_path):
    tracking.write_results(tmp_path, {"status": "ok"})
    with pytest.raises(TypeError):
        tracking.write_results(tmp_path, {"status": object()})
    assert json.loads((tmp_path / "results.json").read_text()) == {"status": "ok"}
    assert len(list(tmp_path.iterdir())) == 1


@pytest.fixture
def no_wandb_env(monkeypatch, tmp_path):
    for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.setenv("NETRC", str(tmp_path / "missing"))


def test_auto_mode_is_offline_without_api_key(no_wandb_env):
    assert tracking.resolve_mode(OmegaConf.create({"mode": "auto"})) == "offline"


def test_auto_mode_with_key_but_no_server_is_offline_quickly(no_wandb_env, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    start = time.monotonic()
    assert tracking.resolve_mode(OmegaConf.create({"mode": "auto", "probe_timeout_s": 2})) == "offline"
    assert time.monotonic() - start < 3


def test_wandb_mode_env_wins(no_wandb_env, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert tracking.resolve_mode(OmegaConf.create({"mode": "online"})) == "disabled"
    monkeypatch.setenv("WANDB_MODE", "dryrun")
    assert tracking.resolve_mode(OmegaConf.create({"mode": "auto"})) == "offline"


def test_disabled_logger_makes_no_run(tmp_path):
    run = tracking.WandbRun(OmegaConf.create({"enabled": False}), {}, tmp_path, "job")
    assert run.info == {"mode": "disabled", "id": None}
    run.log({"a": 1.0})
    run.finish()


def test_resolved_dtype_is_part_of_the_config_key():
    from calib_sweep.tracking import config_key

    resolved = {"dtype": "auto", "method": {"name": "gptq"}, "logger": {"mode": "offline"}}
    assert config_key(resolved, "torch.float32") != config_key(resolved, "torch.bfloat16")
    assert config_key(resolved, "torch.float32") == config_key({**resolved, "logger": None}, "torch.float32")


def test_layer_diagnostics_off_keeps_the_key_of_a_config_without_the_switch():
    from calib_sweep.tracking import config_key

    base = {"method": {"name": "gptq"}, "eval": {"kl_windows": 4}}
    off = {"method": {"name": "gptq"}, "eval": {"kl_windows": 4, "layer_diagnostics": False}}
    on = {"method": {"name": "gptq"}, "eval": {"kl_windows": 4, "layer_diagnostics": True}}
    assert config_key(off) == config_key(base) != config_key(on)
