"""Stopping a parallel sweep (issue 32): a signal to the launching command stops every job with its
failure record, writes the summary, exits 128 + N and leaves no process behind; a sweep whose every job
is refused before weights load exits 2; thread shares fit the sweep (issue 31 item 2).

Real processes on the tiny model: the jobs hang in compress (``helpers.slow_compress_env``) until the
sweep is signalled.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import psutil
import pytest

from helpers import run_cli, slow_compress_env, tiny_overrides


def _wait_for(predicate, timeout: float, what: str, proc=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the sweep ended (exit {proc.returncode}) before {what}: {proc.communicate()[1][-3000:]}")
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    return [p for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


@pytest.mark.parametrize("launcher, sig, code, group", [
    ("local_parallel", signal.SIGTERM, 143, False),
    ("submitit_local", signal.SIGTERM, 143, False),
    # Ctrl-C in a terminal: SIGINT to the whole process group, so each job gets it twice (terminal + forwarded).
    ("local_parallel", signal.SIGINT, 130, True),
    ("submitit_local", signal.SIGINT, 130, True),
])
def test_signal_stops_a_parallel_sweep_with_records_summary_and_no_orphans(tiny_model_dir, tiny_corpus, tmp_path,
                                                                         launcher, sig, code, group):
    env, marks = slow_compress_env(tmp_path)
    sweep = tmp_path / "multirun" / "stop"
    args = ["-m", f"hydra/launcher={launcher}", *tiny_overrides(tiny_model_dir, tiny_corpus), "method=rtn",
            "eval.dense_baseline=false", "seed=0,1", f"hydra.sweep.dir={sweep}"]
    proc = subprocess.Popen([sys.executable, "-m", "calib_sweep", *args], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0", **env},
                            start_new_session=True)  # its own process group, for the Ctrl-C case
    try:
        # Both jobs are mid-compress, each in its own process (joblib worker / submitit task).
        pids = _wait_for(lambda: len(list(marks.iterdir())) == 2 and [int(p.name) for p in marks.iterdir()], 300,
                         "both jobs in compress", proc)
        children = psutil.Process(proc.pid).children(recursive=True)
        assert set(pids) <= {c.pid for c in children}
        started = time.time()
        if group:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=90)
        took = time.time() - started
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, stderr[-3000:]
    assert took < 40, f"the stop took {took:.0f} s"
    if group:  # the jobs got the terminal's SIGINT too: some may have ended before the launcher forwarded it
        assert re.search(r"SIGINT forwarded to [012] running job\(s\)", stderr), stderr[-3000:]
    else:
        assert "forwarded to 2 running job(s)" in stderr, stderr[-3000:]
    # No process of the sweep outlives it (joblib's resource tracker ends with it).
    deadline = time.time() + 60
    while _alive(children) and time.time() < deadline:
        time.sleep(0.5)
    assert not _alive(children), [(p.pid, p.cmdline()) for p in _alive(children)]
    # Each job wrote its failure record, in the stage it was in.
    records = {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/results.json")}
    assert sorted(records) == ["0_rtn_local_jsonl_s0", "1_rtn_local_jsonl_s1"]
    for record in records.values():
        assert record["status"] == "failed" and record["error_type"] == "Terminated", record.get("error")
        assert record["stage"] == "compress" and record["error"] == f"terminated by {sig.name} (signal {int(sig)})"
    # The summary lists both as killed, in summary.json and in the block at the end.
    summary = json.loads((sweep / "summary.json").read_text())
    assert summary["counts"] == {"ok": 0, "failed": 2, "skipped": 0, "not_started": 0}
    assert summary["killed"] == 2 and summary["stopped_by"] == sig.name and summary["exit_status"] == code
    assert all(j["killed"] for j in summary["jobs"])
    assert f"2 jobs: 0 ok, 2 failed, 0 skipped (already done), 0 not started; stopped by {sig.name}; 2 killed" in stderr
    assert stderr.count("killed in compress:") == 2
    assert "Traceback" not in stderr and "leaked semaphore" not in stderr
    assert stderr.strip().splitlines()[-1].startswith("  killed in compress: "), stderr[-1500:]  # the block ends it
    # The control folder and submitit's unexpanded %j folder are gone.
    assert not (sweep / ".calib_sweep").exists() and not (sweep / ".submitit" / "%j").exists()


def test_every_job_refused_at_prepare_exits_2_and_says_refused(tiny_model_dir, tiny_corpus, tmp_path):
    # group_size=100 does not divide the tiny model's widths (64, 128): refused at prepare, before weights load.
    sweep = tmp_path / "multirun" / "refused"
    proc = run_cli(["-m", *tiny_overrides(tiny_model_dir, tiny_corpus), "method=gptq", "method.group_size=100",
                    "seed=0,1", f"hydra.sweep.dir={sweep}"], tmp_path, timeout=600)
    assert proc.returncode == 2, proc.stderr[-3000:]
    summary = json.loads((sweep / "summary.json").read_text())
    assert summary["refused"] == 2 and summary["exit_status"] == 2
    assert {(j["stage"], j["error_type"]) for j in summary["jobs"]} == {("prepare", "ConfigError")}
    assert proc.stderr.count("  refused in prepare: ") == 2, proc.stderr[-3000:]
    assert "2 refused by a config check before weights load" in proc.stderr
    for job in summary["jobs"]:
        assert not (sweep / job["folder"].rsplit("/", 1)[1] / "model").exists()


def test_one_job_submitit_local_sweep_uses_every_core(tiny_model_dir, tiny_corpus, tmp_path):
    sweep = tmp_path / "multirun" / "one"
    proc = run_cli(["-m", "hydra/launcher=submitit_local", *tiny_overrides(tiny_model_dir, tiny_corpus), "method=rtn",
                    "eval.dense_baseline=false", "seed=0", f"hydra.sweep.dir={sweep}"], tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = sweep.glob("*/results.json")
    runtime = json.loads(path.read_text())["runtime"]
    cores = len(os.sched_getaffinity(0))
    assert runtime["threads"] == cores and runtime["threads_reason"] == f"{cores} cores / 1 submitit_local jobs"
    assert not (sweep / ".submitit" / "%j").exists()
    assert len(list((sweep / ".submitit").iterdir())) == 1  # the job's own log folder only
