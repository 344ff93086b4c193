"""The cluster path against a running SLURM controller: sweeps submitted with sbatch, as users launch them.

CI starts a one-node cluster first (``scripts/local_slurm.sh start`` in ``.ci/run``).  Without
``sbatch``, or with ``sbatch`` but no controller answering (slurm-wlm installed, cluster stopped), these
tests skip and say how to start one; ``CALIB_SWEEP_REQUIRE_SLURM=1`` (set by ``.ci/run``) turns the
second skip into a failure, so CI cannot pass without running them.  The partition
is the cluster's default one (``CALIB_SWEEP_SLURM_PARTITION`` overrides it), resources are sized
for a CPU node.  Every test waits for its SLURM jobs (and cancels leftovers) before it returns.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import run_cli, slow_compress_env, tiny_overrides

pytestmark = pytest.mark.slurm

if shutil.which("sbatch") is None:
    pytest.skip("sbatch not found: no SLURM here (start a one-node cluster with scripts/local_slurm.sh start)",
                allow_module_level=True)


@pytest.fixture(scope="module")
def sinfo() -> str:
    """``sinfo -h -o "%P %a"`` of the running controller; skips (fails under CALIB_SWEEP_REQUIRE_SLURM=1)
    when none answers."""
    proc = subprocess.run(["sinfo", "-h", "-o", "%P %a"], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        why = (f"sbatch is installed but no SLURM controller answers ({proc.stderr.strip()}). "
               "Fix: scripts/local_slurm.sh start")
        if os.environ.get("CALIB_SWEEP_REQUIRE_SLURM") == "1":
            pytest.fail(why)
        pytest.skip(why)
    return proc.stdout


@pytest.fixture(scope="module")
def partition(sinfo: str) -> str:
    """The partition the tests submit to: ``CALIB_SWEEP_SLURM_PARTITION`` or the cluster's default."""
    if os.environ.get("CALIB_SWEEP_SLURM_PARTITION"):
        return os.environ["CALIB_SWEEP_SLURM_PARTITION"]
    default = [line.split()[0].rstrip("*") for line in sinfo.splitlines() if line.split()[0].endswith("*")]
    assert default, f"no default partition in sinfo: {sinfo!r}"
    return default[0]


def cpu_node(partition: str) -> list[str]:
    """``hydra/launcher=slurm`` overridden for a CPU node: no GPU, 1 CPU, 4 GB, 30 min per job."""
    return ["hydra/launcher=slurm", f"hydra.launcher.partition={partition}", "hydra.launcher.gpus_per_node=null",
            "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=4", "hydra.launcher.timeout_min=30"]


@pytest.fixture
def cancel_leftovers(tmp_path):
    """After the test: cancel any job array still queued or running from the test's sweeps, wait until gone."""
    yield
    arrays = {p.name.split("_")[0] for p in tmp_path.rglob(".submitit/*") if p.name.split("_")[0].isdigit()}
    if not arrays:
        return
    subprocess.run(["scancel", *arrays], capture_output=True)
    deadline = time.time() + 90
    while time.time() < deadline:
        queued = subprocess.run(["squeue", "-h", "-j", ",".join(arrays)], capture_output=True, text=True).stdout
        if not queued.strip():
            return
        time.sleep(1)


def job_records(sweep: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(sweep.glob("*/results.json"))}


def test_two_job_sweep_runs_as_two_slurm_jobs_with_offline_wandb(partition, tiny_model_dir, tiny_corpus, tmp_path,
                                                                  cancel_leftovers):
    sweep = tmp_path / "multirun" / "two"
    proc = run_cli(["-m", *tiny_overrides(tiny_model_dir, tiny_corpus), "method=gptq", "seed=0,1", *cpu_node(partition),
                    "logger=wandb", "logger.mode=offline", "logger.project=slurm-test", f"hydra.sweep.dir={sweep}"],
                   tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 jobs: 2 ok, 0 failed" in proc.stderr
    records = job_records(sweep)
    assert sorted(records) == ["0_gptq_local_jsonl_s0", "1_gptq_local_jsonl_s1"]
    slurm = [r["slurm"] for r in records.values()]
    # Two SLURM jobs: the two tasks of one array, each recorded with the id naming its submitit folder.
    assert len({s["slurm_job_id"] for s in slurm}) == 2
    assert {s["array_task_id"] for s in slurm} == {"0", "1"} and len({s["array_job_id"] for s in slurm}) == 1
    for name, record in records.items():
        s = record["slurm"]
        assert record["status"] == "ok" and record["calibration"]["seed"] == int(name[-1])
        assert s["job_id"] == f"{s['array_job_id']}_{s['array_task_id']}" and s["partition"] == partition
        assert s["cpus_per_task"] == "1" and s["mem_per_node_mb"] == "4096"
        assert record["runtime"]["threads"] == 1 and record["runtime"]["threads_reason"] == "SLURM_CPUS_PER_TASK"
        logs = sweep / ".submitit" / s["job_id"]
        out, err = logs / f"{s['job_id']}_0_log.out", logs / f"{s['job_id']}_0_log.err"
        assert out.is_file() and err.is_file()
        assert f"seed={name[-1]}" in out.read_text()  # its own log: the job's overrides are logged there
        assert (sweep / name / "calib_sweep.log").is_file()
        # W&B offline on the node: one run folder per job, its id from the config key.
        runs = list((sweep / name / "wandb").glob("offline-run-*"))
        assert len(runs) == 1 and runs[0].name.endswith(record["config_key"][:32])
        assert record["wandb"] == {**record["wandb"], "mode": "offline", "id": record["config_key"][:32]}
        assert (runs[0] / f"run-{record['config_key'][:32]}.wandb").is_file()
    # One `wandb sync` command from the login node uploads the sweep: two job runs and its summary run.
    globs = [str(p) for p in sorted(sweep.glob("*/wandb/offline-run-*")) + sorted(sweep.glob("wandb/offline-run-*"))]
    wandb_cli = Path(sys.executable).with_name("wandb")
    dry = subprocess.run([str(wandb_cli), "sync", "--dry-run", *globs], capture_output=True, text=True, timeout=120)
    assert dry.returncode == 0, dry.stderr
    listed = dry.stdout + dry.stderr
    assert "Would sync 3 run(s)" in listed
    for record in records.values():
        assert listed.count(f"run-{record['config_key'][:32]}.wandb") == 1


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def test_scancel_leaves_failure_record_and_rerun_redoes_only_it(partition, tiny_model_dir, tiny_corpus, tmp_path,
                                                               cancel_leftovers):
    args = ["-m", *tiny_overrides(tiny_model_dir, tiny_corpus), "method=gptq", "seed=0,1", *cpu_node(partition)]
    first = tmp_path / "multirun" / "first"
    # Array task 1 hangs in compress (the tiny model compresses in well under a second); task 0 runs through.
    slow, marks = slow_compress_env(tmp_path, slurm_task=1)
    env = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0", **slow}
    sweep = subprocess.Popen([sys.executable, "-m", "calib_sweep", *args, f"hydra.sweep.dir={first}"], cwd=tmp_path,
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        job_log = first / "1_gptq_local_jsonl_s1" / "calib_sweep.log"
        # Mid-run: the calibration set is drawn and task 1 is in compress.
        _wait_for(lambda: len(list(marks.iterdir())) == 1, 300, "SLURM task 1 in compress")
        assert job_log.is_file() and "calibration set:" in job_log.read_text()
        (task,) = [p.name for p in (first / ".submitit").glob("*_1")]
        subprocess.run(["scancel", task], check=True, timeout=30)
        stdout, stderr = sweep.communicate(timeout=600)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert sweep.returncode == 1, stderr[-3000:]
    assert "2 jobs: 1 ok, 1 failed" in stderr
    records = job_records(first)
    ok, killed = records["0_gptq_local_jsonl_s0"], records["1_gptq_local_jsonl_s1"]
    assert ok["status"] == "ok"
    assert killed["status"] == "failed" and killed["error_type"] == "Terminated"
    assert killed["error"] == "terminated by SIGTERM (signal 15)"
    assert killed["stage"] == "compress"
    assert killed["slurm"]["job_id"] == task and "metrics" not in killed
    assert f"killed in {killed['stage']}:" in stderr
    # Rerun the same sweep: the finished job is skipped (resume by config key), the cancelled one runs again.
    second = tmp_path / "multirun" / "second"
    proc = run_cli([*args, f"hydra.sweep.dir={second}"], tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 jobs: 1 ok, 0 failed, 1 skipped" in proc.stderr
    pointer = json.loads((second / "0_gptq_local_jsonl_s0" / "skipped.json").read_text())
    assert pointer["results"].endswith("first/0_gptq_local_jsonl_s0/results.json")
    assert list(job_records(second)) == ["1_gptq_local_jsonl_s1"]
    redone = job_records(second)["1_gptq_local_jsonl_s1"]
    assert redone["status"] == "ok" and redone["config_key"] == killed["config_key"]
    assert redone["slurm"]["slurm_job_id"] != killed["slurm"]["slurm_job_id"]


def test_raising_job_shows_its_error_in_its_own_log_and_the_other_finishes(partition, tiny_model_dir, tiny_corpus,
                                                                          tmp_path, cancel_leftovers):
    sweep = tmp_path / "multirun" / "raise"
    # seed=999 asks for a calibration set beyond the tiny corpus: that job raises while drawing it.
    proc = run_cli(["-m", *tiny_overrides(tiny_model_dir, tiny_corpus), "method=dense", "seed=0,999", *cpu_node(partition),
                    f"hydra.sweep.dir={sweep}"], tmp_path, timeout=600)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "2 jobs: 1 ok, 1 failed" in proc.stderr
    records = job_records(sweep)
    good, bad = records["0_dense_local_jsonl_s0"], records["1_dense_local_jsonl_s999"]
    assert good["status"] == "ok" and bad["status"] == "failed" and bad["error"]
    logs = {name: "".join(p.read_text() for p in (sweep / ".submitit" / r["slurm"]["job_id"]).glob("*_log.*"))
            for name, r in records.items()}
    lines = [line for line in logs["1_dense_local_jsonl_s999"].splitlines() if bad["error"] in line]
    # Once on stderr as the CLI's error line, once as the job log's last line naming the stage (issue 24 item 6).
    assert len(lines) == 2, logs["1_dense_local_jsonl_s999"][-2000:]
    assert sum(line.startswith("calib_sweep: error: ") for line in lines) == 1, lines
    assert sum("job failed in stage calibrate: " in line for line in lines) == 1, lines
    assert bad["error"] not in logs["0_dense_local_jsonl_s0"]
    assert "Traceback" not in logs["1_dense_local_jsonl_s999"]


def test_unknown_partition_fails_at_submission_in_one_line(sinfo, tmp_path):
    proc = run_cli(["-m", "experiment=smoke", "seed=0,1", *cpu_node("no_such_partition"),
                    f"hydra.sweep.dir={tmp_path / 'multirun' / 'bad'}"], tmp_path, timeout=300)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    (line,) = [line for line in proc.stderr.splitlines() if line.startswith("calib_sweep: error: ")]
    assert "SLURM refused the sweep's jobs: sbatch: error:" in line
    assert "Invalid partition name specified" in line and "partition=no_such_partition" in line and "Fix:" in line
    assert "2 not started" in proc.stderr


def test_signal_to_the_launching_command_cancels_the_array(partition, tiny_model_dir, tiny_corpus, tmp_path,
                                                           cancel_leftovers):
    """Issue 32 item 1: SIGTERM to the command waiting for a SLURM sweep cancels its job array (scancel)
    and says so; each running task writes its failure record; summary and exit 143 follow."""
    env, marks = slow_compress_env(tmp_path)
    sweep = tmp_path / "multirun" / "stop"
    args = ["-m", *tiny_overrides(tiny_model_dir, tiny_corpus), "method=rtn", "eval.dense_baseline=false", "seed=0,1",
            *cpu_node(partition), f"hydra.sweep.dir={sweep}"]
    proc = subprocess.Popen([sys.executable, "-m", "calib_sweep", *args], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0", **env})
    try:
        _wait_for(lambda: len(list(marks.iterdir())) == 2, 300, "both SLURM tasks in compress")
        arrays = sorted({p.name.split("_")[0] for p in (sweep / ".submitit").iterdir() if p.name[0].isdigit()})
        assert len(arrays) == 1, arrays
        proc.send_signal(15)
        _, stderr = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, stderr[-3000:]
    assert f"SIGTERM: cancelled the sweep's SLURM job array (scancel {arrays[0]})" in stderr, stderr[-3000:]
    queued = subprocess.run(["squeue", "-h", "-j", arrays[0]], capture_output=True, text=True).stdout
    assert not queued.strip(), queued  # nothing of the array left queued or running
    records = job_records(sweep)
    assert sorted(records) == ["0_rtn_local_jsonl_s0", "1_rtn_local_jsonl_s1"]
    for record in records.values():
        assert record["status"] == "failed" and record["error_type"] == "Terminated" and record["stage"] == "compress"
        assert record["slurm"]["array_job_id"] == arrays[0]
    summary = json.loads((sweep / "summary.json").read_text())
    assert summary["killed"] == 2 and summary["stopped_by"] == "SIGTERM" and summary["exit_status"] == 143
    assert "2 jobs: 0 ok, 2 failed, 0 skipped (already done), 0 not started; stopped by SIGTERM; 2 killed" in stderr
