"""A sweep's exit status and last lines say what happened to every job (issue 18)."""

from __future__ import annotations

import json

import pytest

from calib_sweep import sweep_summary
from calib_sweep.report.__main__ import main as report_main
from helpers import run_cli, tiny_overrides


def _summary(folder):
    return json.loads((folder / "summary.json").read_text())


@pytest.mark.parametrize("launcher", ["basic", "submitit_local"])
def test_sweep_with_a_failed_job_exits_1_and_lists_both(tiny_model_dir, tiny_corpus, tmp_path, launcher, capsys):
    # The second job's calibration file is missing: it fails after it started; the first succeeds.
    args = ["-m", f"hydra/launcher={launcher}", *tiny_overrides(tiny_model_dir, tiny_corpus), "method=dense",
            f"dataset.path={tiny_corpus},{tmp_path}/missing.jsonl", "threads=1", "hydra.sweep.dir=multirun/mixed"]
    proc = run_cli(args, tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]
    folder = tmp_path / "multirun" / "mixed"
    summary = _summary(folder)
    assert summary["counts"] == {"ok": 1, "failed": 1, "skipped": 0, "not_started": 0}
    assert summary["exit_status"] == 1
    states = {j["folder"].rsplit("/", 1)[1]: j for j in summary["jobs"]}
    assert states["0_dense_local_jsonl_s0"]["state"] == "ok"
    failed = states["1_dense_local_jsonl_s0"]
    assert failed["state"] == "failed" and "missing.jsonl" in failed["error"] and failed["stage"] == "calibrate"
    # The block at the end of the output says the same, with the failed job's folder and error.
    tail = proc.stderr.strip().splitlines()
    block = tail[tail.index(next(line for line in tail if "2 jobs: 1 ok, 1 failed" in line)):]
    assert any(f"multirun/mixed/1_dense_local_jsonl_s0: {failed['error']}" in line for line in block), block
    # The report prints the same counts at its top and still lists the failed job.
    assert report_main([str(folder), "--no-wandb", "-o", str(tmp_path / "rep")]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert "2 jobs: 1 ok, 1 failed, 0 skipped (already done), 0 not started" in first


def test_all_ok_sweep_exits_0_and_a_rerun_that_skips_everything_too(tiny_model_dir, tiny_corpus, tmp_path, capsys):
    base = ["-m", *tiny_overrides(tiny_model_dir, tiny_corpus), "method=dense", "seed=0,1", "threads=1"]
    first = run_cli([*base, "hydra.sweep.dir=multirun/a"], tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    assert _summary(tmp_path / "multirun" / "a")["counts"] == {"ok": 2, "failed": 0, "skipped": 0, "not_started": 0}
    again = run_cli([*base, "hydra.sweep.dir=multirun/b"], tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "2 jobs: 0 ok, 0 failed, 2 skipped (already done), 0 not started" in again.stderr
    # The report of the rerun's folder follows skipped.json to the earlier results: 2 ok, none missing.
    assert report_main([str(tmp_path / "multirun" / "b"), "--no-wandb", "-o", str(tmp_path / "rep")]) == 0
    assert "jobs: 2 ok" in capsys.readouterr().out


def test_config_error_before_any_job_exits_2(tmp_path):
    proc = run_cli(["-m", "method=nope"], tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "nope" in proc.stderr


def test_summary_counts_jobs_that_never_started_and_records_that_are_missing(tmp_path):
    sweep = tmp_path / "sweep"
    for num, name, files in [(0, "0_a", {"results.json": {"status": "ok"}}),
                             (1, "1_b", {"results.json": {"status": "failed", "error": "terminated by SIGTERM (signal 15)",
                                                          "error_type": "Terminated", "stage": "compress"}}),
                             (2, "2_c", {})]:
        (sweep / name / ".hydra").mkdir(parents=True)
        (sweep / name / ".hydra" / "hydra.yaml").write_text(f"hydra:\n  job:\n    num: {num}\n")
        for file, record in files.items():
            (sweep / name / file).write_text(json.dumps(record))
    expected = [["seed=0"], ["seed=1"], ["seed=2"], ["seed=3"]]
    summary = sweep_summary.summarize(sweep, expected)
    assert summary["counts"] == {"ok": 1, "failed": 2, "skipped": 0, "not_started": 1}
    text = sweep_summary.format_summary(summary)
    assert f"killed in compress: {sweep}/1_b: terminated by SIGTERM (signal 15)" in text
    assert f"failed: {sweep}/2_c: no record" in text
    assert "not started: job 3 (seed=3)" in text
    assert sweep_summary.exit_status(summary) == 1


def test_summary_records_the_exit_status_of_a_stopped_sweep(tmp_path):
    from omegaconf import OmegaConf

    sweep = tmp_path / "sweep"
    (sweep / "0_a" / ".hydra").mkdir(parents=True)
    (sweep / "0_a" / ".hydra" / "hydra.yaml").write_text("hydra:\n  job:\n    num: 0\n")
    (sweep / "0_a" / "results.json").write_text('{"status": "ok"}')
    config = OmegaConf.create({"hydra": {"sweeper": {"params": {}}, "overrides": {"task": ["seed=0"]}},
                               "logger": {"enabled": False}})
    assert sweep_summary.finish_sweep(config, sweep) == 0
    assert sweep_summary.finish_sweep(config, sweep, at_least=143) == 143  # SIGTERM stopped it
    assert _summary(sweep)["exit_status"] == 143


def test_every_job_refused_at_validate_exits_2_like_a_single_run():
    from calib_sweep.sweep_summary import exit_status

    refused = {"state": "failed", "stage": "validate", "error_type": "ConfigError"}
    counts = {"ok": 0, "failed": 2, "skipped": 0, "not_started": 0}
    assert exit_status({"counts": counts, "jobs": [refused, refused]}) == 2
    other = {"state": "failed", "stage": "compress", "error_type": "RuntimeError"}
    assert exit_status({"counts": counts, "jobs": [refused, other]}) == 1
    assert exit_status({"counts": {**counts, "failed": 1, "ok": 1}, "jobs": [refused, {"state": "ok"}]}) == 1


def test_refused_at_prepare_exits_2_and_a_stopped_sweep_counts_its_unrecorded_jobs_killed(tmp_path):
    """Issue 32 items 1-2: refused = ConfigError at validate or prepare; a folder with no record in a
    sweep stopped by a signal is a job the stop killed."""
    from calib_sweep.sweep_summary import exit_status

    sweep = tmp_path / "sweep"
    for num, name, files in [(0, "0_a", {"results.json": {"status": "failed", "error": "method.group_size=100 ...",
                                                          "error_type": "ConfigError", "stage": "prepare"}}),
                             (1, "1_b", {})]:
        (sweep / name / ".hydra").mkdir(parents=True)
        (sweep / name / ".hydra" / "hydra.yaml").write_text(f"hydra:\n  job:\n    num: {num}\n")
        for file, record in files.items():
            (sweep / name / file).write_text(json.dumps(record))
    summary = sweep_summary.summarize(sweep, [["seed=0"], ["seed=1"]], stopped_by=15)
    assert (summary["refused"], summary["killed"], summary["stopped_by"]) == (1, 1, "SIGTERM")
    text = sweep_summary.format_summary(summary)
    assert "2 jobs: 0 ok, 2 failed, 0 skipped (already done), 0 not started; stopped by SIGTERM; 1 killed by a signal; " \
           "1 refused by a config check before weights load" in text
    assert f"  refused in prepare: {sweep}/0_a: method.group_size=100 ..." in text
    assert f"  killed: {sweep}/1_b: stopped by SIGTERM before it wrote a record" in text
    refused = {"state": "failed", "stage": "prepare", "error_type": "ConfigError"}
    counts = {"ok": 0, "failed": 2, "skipped": 0, "not_started": 0}
    assert exit_status({"counts": counts, "jobs": [refused, {**refused, "stage": "validate"}]}) == 2
    assert exit_status({"counts": counts, "jobs": [refused, {**refused, "stage": "load"}]}) == 1
    # Not stopped: the same folder is a job that ended without a record.
    assert sweep_summary.summarize(sweep, [["seed=0"], ["seed=1"]])["jobs"][1]["error_type"] == "NoRecord"


def test_export_sweep_size_counts_the_jobs_that_run_at_once():
    """Issue 31 item 2: the launching command tells its jobs how many the sweep has (thread share)."""
    from omegaconf import OmegaConf

    config = OmegaConf.create({"hydra": {"sweeper": {"params": {"seed": "0,1,2"}, "max_batch_size": None},
                                         "overrides": {"task": ["method=dense,rtn"]}}})
    environ = {}
    assert sweep_summary.export_sweep_size(config, environ) == 6 and environ == {"CALIB_SWEEP_SWEEP_JOBS": "6"}
    config.hydra.sweeper.max_batch_size = 4
    assert sweep_summary.export_sweep_size(config, environ) == 4 and environ["CALIB_SWEEP_SWEEP_JOBS"] == "4"
    assert sweep_summary.export_sweep_size(OmegaConf.create({}), environ) is None and environ == {}
