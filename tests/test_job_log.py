"""A failed job's own ``calib_sweep.log`` ends with its one-line error and stage (issue 24 item 6)."""

from __future__ import annotations

import json
import logging

import pytest

from calib_sweep.job import run_job
from helpers import compose_cfg, run_cli, tiny_overrides

FAST = ["eval.dense_baseline=false", "eval.kl_windows=0", "eval.layer_diagnostics=false", "threads=1"]


def test_failed_jobs_logs_end_with_the_error_and_the_stage(tiny_model_dir, tiny_corpus, tmp_path):
    # Four jobs (dataset.path x method.sparsity): ok; refused at validate (sparsity 1.5, twice); failing
    # at calibrate (the file is missing).
    missing = tmp_path / "missing.jsonl"
    args = ["-m", *tiny_overrides(tiny_model_dir, tiny_corpus), "method=wanda", *FAST, "hydra.sweep.dir=multirun/logs",
            f"dataset.path={tiny_corpus},{missing}", "method.sparsity=0.5,1.5"]
    proc = run_cli(args, tmp_path)
    assert proc.returncode == 1, proc.stderr[-2000:]
    folders = sorted((tmp_path / "multirun" / "logs").glob("[0-9]*"))
    assert len(folders) == 4
    stages = {}
    for folder in folders:
        record = json.loads((folder / "results.json").read_text())
        last = (folder / "calib_sweep.log").read_text().rstrip("\n").splitlines()[-1]
        if record["status"] == "ok":
            assert "job failed" not in (folder / "calib_sweep.log").read_text()
            continue
        error = record["error"] if record["error_type"] == "ConfigError" else f"{record['error_type']}: {record['error']}"
        assert last.endswith(f"[calib_sweep.job][ERROR] - job failed in stage {record['stage']}: {error} "
                             f"(traceback in {folder}/traceback.txt)"), last
        stages[folder.name.split("_")[0]] = (record["stage"], record["error_type"])
    # Job order: path x sparsity = (corpus, 0.5) ok, (corpus, 1.5), (missing, 0.5), (missing, 1.5).
    assert stages["1"] == ("validate", "ConfigError") and stages["3"] == ("validate", "ConfigError")
    assert stages["2"][0] == "calibrate"
    # On stderr the one-line error is still one line per refused job (the log line goes to the log file and stdout).
    errors = [line for line in proc.stderr.splitlines() if line.startswith("calib_sweep: error:")]
    assert len(errors) == 3 and sum("method.sparsity=1.5" in line for line in errors) == 2
    assert sum("missing.jsonl" in line for line in errors) == 1
    assert "job failed in stage" not in proc.stderr and proc.stdout.count("job failed in stage") == 3


def test_in_process_failure_logs_the_stage_last(tiny_model_dir, tiny_corpus, tmp_path, caplog):
    cfg = compose_cfg(tiny_overrides(tiny_model_dir, tiny_corpus) + ["method=gptq", "method.group_size=48"])
    caplog.set_level(logging.INFO, logger="calib_sweep")
    with pytest.raises(Exception, match="method.group_size=48 does not divide"):
        run_job(cfg, tmp_path / "job")
    last = caplog.records[-1]
    assert last.levelno == logging.ERROR and last.getMessage() == (
        f"job failed in stage prepare: {json.loads((tmp_path / 'job' / 'results.json').read_text())['error']} "
        f"(traceback in {tmp_path / 'job' / 'traceback.txt'})")
