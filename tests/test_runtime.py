"""A job's process: thread share when jobs share a machine (fault 5), SIGTERM/SIGINT records (fault 4)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from omegaconf import OmegaConf

from calib_sweep import runtime
from calib_sweep.errors import ConfigError
from helpers import compose_cfg, tiny_overrides

JOBLIB = {"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs": 2}
LOCAL = {"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher", "cpus_per_task": None,
         "array_parallelism": 4}
#: submitit_local as Hydra composes it: no array_parallelism key (it starts every job at once).
LOCAL_HYDRA = {"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher", "cpus_per_task": None}


@pytest.fixture
def eight_cores(monkeypatch):
    monkeypatch.setattr(runtime, "available_cores", lambda: 8)


@pytest.mark.parametrize(
    "threads, launcher, environ, expected",
    [
        ("auto", None, {}, (8, "all available cores")),
        ("auto", JOBLIB, {}, (4, "8 cores / 2 joblib jobs")),
        ("auto", {**JOBLIB, "n_jobs": -1}, {}, (1, "8 cores / 8 joblib jobs")),
        ("auto", {**JOBLIB, "n_jobs": 16}, {}, (1, "8 cores / 16 joblib jobs")),
        ("auto", LOCAL, {}, (2, "8 cores / up to 4 submitit_local jobs")),
        ("auto", {**LOCAL, "cpus_per_task": 3}, {}, (3, "submitit cpus_per_task")),
        ("auto", JOBLIB, {"SLURM_CPUS_PER_TASK": "6"}, (6, "SLURM_CPUS_PER_TASK")),
        (3, JOBLIB, {"SLURM_CPUS_PER_TASK": "6"}, (3, "threads config key")),
        # Issue 31 item 2: the share fits the sweep (CALIB_SWEEP_SWEEP_JOBS, set by the launching command).
        ("auto", JOBLIB, {"CALIB_SWEEP_SWEEP_JOBS": "1"}, (8, "8 cores / 1 joblib jobs (the sweep's 1; n_jobs=2)")),
        ("auto", JOBLIB, {"CALIB_SWEEP_SWEEP_JOBS": "5"}, (4, "8 cores / 2 joblib jobs")),
        ("auto", {**JOBLIB, "n_jobs": -1}, {"CALIB_SWEEP_SWEEP_JOBS": "3"}, (2, "8 cores / 3 joblib jobs (the sweep's 3; n_jobs=8)")),
        ("auto", LOCAL_HYDRA, {"CALIB_SWEEP_SWEEP_JOBS": "1"}, (8, "8 cores / 1 submitit_local jobs")),
        ("auto", LOCAL_HYDRA, {"CALIB_SWEEP_SWEEP_JOBS": "2"}, (4, "8 cores / 2 submitit_local jobs")),
        ("auto", LOCAL_HYDRA, {"CALIB_SWEEP_SWEEP_JOBS": "12"}, (1, "8 cores / 12 submitit_local jobs")),
        ("auto", LOCAL, {"CALIB_SWEEP_SWEEP_JOBS": "2"}, (4, "8 cores / 2 submitit_local jobs")),
        ("auto", LOCAL_HYDRA, {}, (1, "8 cores / up to 256 submitit_local jobs")),
        ("auto", None, {"CALIB_SWEEP_SWEEP_JOBS": "4"}, (8, "all available cores")),
    ],
)
def test_thread_share(eight_cores, threads, launcher, environ, expected):
    launcher = OmegaConf.create(launcher) if launcher else None
    assert runtime.resolve_threads(threads, launcher, environ) == expected


@pytest.mark.parametrize("bad", [0, -2, "many", True, 1.5])
def test_bad_thread_count_is_a_config_error(bad):
    with pytest.raises(ConfigError, match=r"threads=.* must be auto or a positive integer. Fix: threads=auto"):
        runtime.resolve_threads(bad)


def test_apply_threads_sets_torch_and_blas():
    before = torch.get_num_threads()
    try:
        applied = runtime.apply_threads(1)
        assert applied["threads"] == 1 == torch.get_num_threads()
        assert os.environ["OMP_NUM_THREADS"] == "1"
        assert all(n == 1 for _, n in applied["blas"])
    finally:
        torch.set_num_threads(before)


def test_signals_raise_terminated_and_defer_while_recording():
    with runtime.TerminationSignals() as signals:
        with pytest.raises(runtime.Terminated, match=r"terminated by SIGTERM \(signal 15\)"):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        assert signals.signum == signal.SIGTERM
    with runtime.TerminationSignals() as signals:
        with pytest.raises(runtime.Terminated, match="SIGINT"):
            with signals.deferred():
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.2)
                written = True  # the block finishes before the signal is raised
        assert written
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_second_signal_does_not_cut_the_failure_record_short():
    """Issue 32: a Ctrl-C reaches a job of a parallel sweep twice (terminal + forwarded by the sweep)."""
    with runtime.TerminationSignals() as outer:
        with runtime.TerminationSignals() as inner:
            with pytest.raises(runtime.Terminated, match="SIGTERM"):
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)
            os.kill(os.getpid(), signal.SIGINT)  # held: the job is already ending
            time.sleep(0.1)
            with inner.deferred():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.1)
            recorded = True  # not raised after the block either
        assert recorded and inner.pending == signal.SIGINT
        assert outer.signum == signal.SIGTERM  # passed on: the enclosing handler holds signals too
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.1)
        assert outer.pending == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


SLOW_COMPRESS = """
import sys, time
from pathlib import Path
import calib_sweep.methods as methods
def slow(*args, **kwargs):
    Path("compressing").write_text("")
    time.sleep(120)
methods.compress = slow
from calib_sweep.__main__ import main
sys.argv = ["calib_sweep", *sys.argv[1:]]
main()
"""


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_mid_job_leaves_a_failure_record(tiny_model_dir, tiny_corpus, tmp_path, sig, code):
    script = tmp_path / "slow.py"
    script.write_text(SLOW_COMPRESS)
    args = [*tiny_overrides(tiny_model_dir, tiny_corpus), "method=rtn", "hydra.run.dir=job"]
    proc = subprocess.Popen([sys.executable, str(script), *args], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "WANDB_MODE": "offline"})
    deadline = time.time() + 300
    while not (tmp_path / "compressing").exists():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-2000:]
        time.sleep(0.2)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr[-2000:]
    record = json.loads((tmp_path / "job" / "results.json").read_text())
    assert record["status"] == "failed" and record["error_type"] == "Terminated" and record["stage"] == "compress"
    assert record["error"] == f"terminated by {sig.name} (signal {int(sig)})"
    assert f"terminated by {sig.name}" in stderr and "Traceback" not in stderr
    assert (tmp_path / "job" / "traceback.txt").is_file()
    assert (tmp_path / "job" / "calibration.json").is_file()
    assert not list((tmp_path / "job").glob(".results-*")), "no half-written results file"


def test_rerun_in_the_same_folder_removes_a_stale_traceback(tiny_model_dir, tiny_corpus, tmp_path):
    from calib_sweep.job import run_job

    folder = tmp_path / "job"
    folder.mkdir()
    (folder / "traceback.txt").write_text("old failure")
    cfg = compose_cfg([*tiny_overrides(tiny_model_dir, tiny_corpus), "method=rtn", "eval.dense_baseline=false",
                       "threads=1"])
    before = torch.get_num_threads()
    try:
        record = run_job(cfg, folder)
    finally:
        torch.set_num_threads(before)
    assert record["status"] == "ok" and not (folder / "traceback.txt").exists()
    assert record["runtime"]["threads"] == 1 and record["runtime"]["threads_reason"] == "threads config key"
    assert (record["runtime"]["dtype"], record["runtime"]["device"]) == ("torch.float32", "cpu")
    # Every file of the job folder is readable by others (results.json used to be 0600).
    assert (folder / "results.json").stat().st_mode & 0o777 == 0o644 & ~_umask()
    assert (folder / "calibration.json").is_file()
    assert json.loads((folder / "calibration.json").read_text()) == record["calibration"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
