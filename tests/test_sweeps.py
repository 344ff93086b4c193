"""Sweeps as users launch them: launchers (C09), resume by config key, offline W&B (C10), presets."""

from __future__ import annotations

import itertools
import json
import os

import pytest
from hydra import compose, initialize_config_module

from helpers import run_cli, tiny_overrides


def sweep_records(root):
    return {p.parent.name: json.loads(p.read_text()) for p in root.rglob("results.json")}


def test_submitit_local_runs_both_jobs_c09(tiny_model_dir, tiny_corpus, tmp_path):
    args = ["-m", "hydra/launcher=submitit_local", *tiny_overrides(tiny_model_dir, tiny_corpus), "method=wanda",
            "seed=0,1", "hydra.sweep.dir=multirun/c09"]
    proc = run_cli(args, tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    records = sweep_records(tmp_path / "multirun" / "c09")
    assert sorted(records) == ["0_wanda_local_jsonl_s0", "1_wanda_local_jsonl_s1"]
    assert all(r["status"] == "ok" for r in records.values())
    assert {r["calibration"]["seed"] for r in records.values()} == {0, 1}
    # Each job ran in its own submitit process with its own log files.
    logs = list((tmp_path / "multirun" / "c09" / ".submitit").rglob("*_log.err"))
    assert len(logs) == 2


def test_joblib_launcher_runs_jobs_in_parallel_processes(tiny_model_dir, tiny_corpus, tmp_path):
    args = ["-m", "hydra/launcher=local_parallel", *tiny_overrides(tiny_model_dir, tiny_corpus), "method=dense",
            "seed=0,1", "hydra.sweep.dir=multirun/jl"]
    proc = run_cli(args, tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    records = sweep_records(tmp_path / "multirun" / "jl").values()
    assert [r["status"] for r in records] == ["ok", "ok"]
    # Two jobs at once: each takes half the cores (fault 5: default threads oversubscribed the CPU).
    cores = len(os.sched_getaffinity(0))
    for record in records:
        assert record["runtime"]["threads"] == max(cores // 2, 1), record["runtime"]
        assert record["runtime"]["threads_reason"] == f"{cores} cores / 2 joblib jobs"


def test_rerun_skips_finished_jobs_and_force_reruns(tiny_model_dir, tiny_corpus, tmp_path):
    base = ["-m", *tiny_overrides(tiny_model_dir, tiny_corpus), "method=dense"]
    assert run_cli([*base, "seed=0,1", "hydra.sweep.dir=multirun/first"], tmp_path).returncode == 0
    second = run_cli([*base, "seed=0,1,2", "hydra.sweep.dir=multirun/second"], tmp_path)
    assert second.returncode == 0
    assert second.stdout.count("skipping: a finished job with this config exists") == 2
    folder = tmp_path / "multirun" / "second"
    assert sorted(p.parent.name for p in folder.rglob("skipped.json")) == ["0_dense_local_jsonl_s0", "1_dense_local_jsonl_s1"]
    assert list(sweep_records(folder)) == ["2_dense_local_jsonl_s2"]
    pointer = json.loads((folder / "0_dense_local_jsonl_s0" / "skipped.json").read_text())
    assert pointer["results"].endswith("first/0_dense_local_jsonl_s0/results.json")
    forced = run_cli([*base, "seed=0", "resume.force=true", "hydra.sweep.dir=multirun/forced"], tmp_path)
    assert forced.returncode == 0 and list(sweep_records(tmp_path / "multirun" / "forced")) == ["0_dense_local_jsonl_s0"]
    # A single run (not -m) never skips.
    single = run_cli([*base[1:], "seed=0", "hydra.run.dir=single"], tmp_path)
    assert single.returncode == 0 and (tmp_path / "single" / "results.json").is_file()


def test_offline_wandb_two_job_sweep_c10(tiny_model_dir, tiny_corpus, tmp_path):
    overrides = [o for o in tiny_overrides(tiny_model_dir, tiny_corpus) if o != "logger=none"]
    proc = run_cli(["-m", *overrides, "method=dense", "seed=0,1", "logger.project=c10",
                    "hydra.sweep.dir=multirun/c10"], tmp_path, env={"WANDB_MODE": "offline"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    records = sweep_records(tmp_path / "multirun" / "c10")
    assert len(records) == 2
    for name, record in records.items():
        assert record["status"] == "ok" and record["wandb"]["mode"] == "offline"
        assert record["wandb"]["id"] == record["config_key"][:32]
        runs = list((tmp_path / "multirun" / "c10" / name / "wandb").glob("offline-run-*"))
        assert len(runs) == 1 and any(runs[0].rglob("*.wandb"))  # a syncable offline run
        assert (tmp_path / "multirun" / "c10" / name / "calibration.json").is_file()


def test_resumed_job_without_a_wandb_run_gets_one_replayed(tiny_model_dir, tiny_corpus, tmp_path):
    """Fault 6: a job first run with logger=none, skipped later under a W&B logger, still reaches W&B."""
    overrides = [o for o in tiny_overrides(tiny_model_dir, tiny_corpus) if o != "logger=none"]
    base = ["-m", *overrides, "method=dense", "seed=0"]
    assert run_cli([*base, "logger=none", "hydra.sweep.dir=multirun/plain"], tmp_path).returncode == 0
    (first,) = sweep_records(tmp_path / "multirun" / "plain").values()
    assert first["wandb"]["id"] is None
    proc = run_cli([*base, "hydra.sweep.dir=multirun/logged"], tmp_path, env={"WANDB_MODE": "offline"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    job = tmp_path / "multirun" / "logged" / "0_dense_local_jsonl_s0"
    pointer = json.loads((job / "skipped.json").read_text())
    assert pointer["wandb"]["replayed"] is True and pointer["wandb"]["mode"] == "offline"
    assert pointer["wandb"]["id"] == first["config_key"][:32]
    (run,) = list((job / "wandb").glob("offline-run-*"))
    assert run.name.endswith(first["config_key"][:32]) and any(run.rglob("*.wandb"))
    # Made once: a third sweep in the same mode skips without another replay.
    assert run_cli([*base, "hydra.sweep.dir=multirun/again"], tmp_path, env={"WANDB_MODE": "offline"}).returncode == 0
    again = json.loads((tmp_path / "multirun" / "again" / "0_dense_local_jsonl_s0" / "skipped.json").read_text())
    assert "wandb" not in again and not (tmp_path / "multirun" / "again" / "0_dense_local_jsonl_s0" / "wandb").exists()


def _sweep_params(preset: str) -> dict[str, list[str]]:
    with initialize_config_module(config_module="calib_sweep.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"experiment={preset}"], return_hydra_config=True)
    params = {}
    for key, value in cfg.hydra.sweeper.params.items():
        text = str(value)
        if text.startswith("range("):
            lo, hi = map(int, text[6:-1].split(","))
            params[key] = [str(v) for v in range(lo, hi)]
        else:
            params[key] = text.split(",")
    return params


@pytest.mark.parametrize("preset, jobs", [("paper", 200), ("sample_size", 60), ("offline", 40)])
def test_presets_compose_every_job(preset, jobs):
    params = _sweep_params(preset)
    combos = list(itertools.product(*[[f"{k}={v}" for v in values] for k, values in params.items()]))
    assert len(combos) == jobs
    seen_groups = set()
    for combo in combos:
        key = tuple(c for c in combo if not c.startswith(("seed=", "samples.n_samples=")))
        if key in seen_groups:
            continue
        seen_groups.add(key)
        with initialize_config_module(config_module="calib_sweep.conf", version_base="1.3"):
            cfg = compose(config_name="config", overrides=[f"experiment={preset}", *combo])
        assert cfg.method.name == dict(c.split("=") for c in combo)["method"]
    if preset == "paper":
        assert params["dataset"] == ["c4", "cnn_dailymail", "redpajama", "refinedweb", "wikipedia"]
        assert params["seed"] == [str(s) for s in range(10)]


@pytest.mark.parametrize("launcher, target, gpus", [("slurm", "SlurmLauncher", 1), ("slurm_large", "SlurmLauncher", 2)])
def test_slurm_launchers_compose_with_gpu_defaults(launcher, target, gpus):
    with initialize_config_module(config_module="calib_sweep.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith(target)
    assert cfg.hydra.launcher.gpus_per_node == gpus and cfg.hydra.launcher.mem_gb >= 96
    assert cfg.hydra.launcher.timeout_min >= 720
