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


def test_multirun_with_cfg_is_one_line_and_exit_2(tmp_path):
    """Issue 31 item 3: `-m ... --cfg job` is refused in one line (Hydra's own refusal is a traceback, exit 1)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "calib_sweep", "-m", "method=dense,gptq", "--cfg", "job"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "--cfg" in lines[0] and "without -m" in lines[0] and "Traceback" not in done.stderr
    from calib_sweep.__main__ import command_line_conflict

    assert command_line_conflict(["--cfg", "job", "method=gptq"]) is None
    assert command_line_conflict(["--multirun", "--info=config"]).startswith("--info with -m")


def test_git_probe_is_silent_outside_a_checkout(tmp_path):
    """Issue 31 item 3: lm-eval's git-hash probe printed 'fatal: not a git repository' on every job's stderr."""
    import subprocess
    import sys

    code = ("from lm_eval import evaluator\n"
            "from calib_sweep.evaluation.zero_shot import _quiet_git_probe, quiet_git_hash\n"
            "original = evaluator.get_git_commit_hash\n"
            "with _quiet_git_probe(evaluator):\n"
            "    assert evaluator.get_git_commit_hash is quiet_git_hash\n"
            "    print(repr(evaluator.get_git_commit_hash()))\n"
            "assert evaluator.get_git_commit_hash is original\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120,
                          env={**__import__("os").environ, "GIT_CEILING_DIRECTORIES": str(tmp_path.parent)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "None" and "fatal" not in done.stderr
