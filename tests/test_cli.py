"""The Hydra app as users launch it (subprocess), on the tiny model: help, config, bad input, sweeps."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from helpers import run_cli, tiny_overrides


def test_help_lists_every_group(tmp_path):
    proc = run_cli(["--help"], tmp_path)
    assert proc.returncode == 0
    for group in ("dataset:", "eval:", "experiment:", "logger:", "method:", "model:", "samples:"):
        assert group in proc.stdout
    assert "method: awq, dense, gptq, magnitude, rtn, sparsegpt, spqr, wanda" in proc.stdout


def test_cfg_job_and_job_name(tmp_path):
    job = run_cli(["--cfg", "job", "method=wanda", "samples.n_samples=7"], tmp_path)
    assert job.returncode == 0 and "n_samples: 7" in job.stdout and "name: wanda" in job.stdout
    hydra = run_cli(["--cfg", "hydra"], tmp_path)
    assert "name: calib_sweep" in hydra.stdout


def test_console_script_is_installed(tmp_path):
    script = __import__("shutil").which("calib-sweep") or str(
        __import__("pathlib").Path(sys.executable).parent / "calib-sweep"
    )
    proc = subprocess.run([script, "--cfg", "job"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "offline_wikipedia" in proc.stdout


def test_unknown_group_option_names_the_choices(tmp_path):
    proc = run_cli(["method=gptqq"], tmp_path)
    assert proc.returncode != 0
    assert "Could not find 'method/gptqq'" in proc.stderr and "wanda" in proc.stderr
    assert not (tmp_path / "outputs").exists()


def test_bad_n_samples_is_one_line_before_anything_loads(tmp_path):
    start = time.monotonic()
    proc = run_cli(["samples.n_samples=0", "logger=none"], tmp_path)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.startswith("calib_sweep: error:")]
    assert len(lines) == 1 and "samples.n_samples=0 must be a positive integer" in lines[0] and "Fix:" in lines[0]
    assert "Traceback" not in proc.stderr
    assert time.monotonic() - start < 60
    (results,) = (tmp_path / "outputs").rglob("results.json")
    record = json.loads(results.read_text())
    assert record["status"] == "failed" and record["stage"] == "validate"


def test_multirun_goes_on_after_a_failed_job(tiny_model_dir, tiny_corpus, tmp_path):
    proc = run_cli(["-m", *tiny_overrides(tiny_model_dir, tiny_corpus), "method=wanda", "method.sparsity=0.5,1.5"], tmp_path)
    assert proc.returncode == 1, proc.stderr[-2000:]  # the sweep went on, and its exit status says one job failed
    records = {p.parent.name: json.loads(p.read_text()) for p in (tmp_path / "multirun").rglob("results.json")}
    assert sorted(r["status"] for r in records.values()) == ["failed", "ok"]
    (failed,) = [r for r in records.values() if r["status"] == "failed"]
    assert "method.sparsity=1.5" in failed["error"]
    assert all(name.split("_")[0] in {"0", "1"} for name in records)
