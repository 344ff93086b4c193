"""calib_sweep.cluster without a scheduler: the SLURM record, one-line sbatch errors, launcher configs."""

from __future__ import annotations

import subprocess

import pytest
from hydra import compose, initialize_config_module

from calib_sweep.cluster import LAUNCHER_TARGET, is_scheduler_launcher, scheduler_record, submission_error


def test_scheduler_record_of_an_array_task_names_its_submitit_folder():
    env = {"SLURM_JOB_ID": "812", "SLURM_ARRAY_JOB_ID": "800", "SLURM_ARRAY_TASK_ID": "12", "SLURM_JOB_PARTITION": "gpu",
           "SLURM_CPUS_PER_TASK": "8", "SLURMD_NODENAME": "node07", "SLURM_MEM_PER_NODE": "98304", "HOME": "/root"}
    assert scheduler_record(env) == {"slurm": {
        "array_job_id": "800", "array_task_id": "12", "cpus_per_task": "8", "job_id": "800_12",
        "mem_per_node_mb": "98304", "node": "node07", "partition": "gpu", "slurm_job_id": "812"}}


def test_scheduler_record_of_a_plain_job_and_outside_slurm():
    assert scheduler_record({"SLURM_JOB_ID": "5"}) == {"slurm": {"job_id": "5", "slurm_job_id": "5"}}
    assert scheduler_record({"PATH": "/bin"}) == {}


def test_submission_error_joins_sbatch_lines_and_ignores_other_errors():
    exc = RuntimeError("sbatch: error: invalid partition specified: nosuch\n"
                       "sbatch: error: Batch job submission failed: Invalid partition name specified\n")
    assert submission_error(exc) == ("sbatch: error: invalid partition specified: nosuch; "
                                     "Batch job submission failed: Invalid partition name specified")
    assert submission_error(RuntimeError("Job 3_1 has not produced any output (state: CANCELLED)")) is None


@pytest.mark.parametrize("target, expected", [
    (LAUNCHER_TARGET, True),
    ("hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher", True),
    ("hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", False),
])
def test_is_scheduler_launcher(target, expected):
    assert is_scheduler_launcher({"_target_": target}) is expected
    assert is_scheduler_launcher(None) is False


@pytest.mark.parametrize("launcher, partition, gpus, mem", [("slurm", None, 1, 96), ("slurm_large", None, 2, 320),
                                                            ("slurm_cpu", "cpu", None, 4)])
def test_slurm_configs_use_our_launcher_and_name_every_cluster_field(launcher, partition, gpus, mem):
    with initialize_config_module(config_module="calib_sweep.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True)
    lc = cfg.hydra.launcher
    assert lc._target_ == LAUNCHER_TARGET
    assert lc.partition == partition and lc.gpus_per_node == gpus and lc.mem_gb == mem
    for field in ("account", "qos", "timeout_min", "array_parallelism", "cpus_per_task", "setup"):
        assert field in lc, field


@pytest.mark.parametrize("name", ["slurm.yaml", "slurm_large.yaml"])
def test_slurm_configs_mark_the_fields_a_user_must_change(name):
    from pathlib import Path

    text = (Path(__file__).parents[1] / "calib_sweep" / "conf" / "hydra" / "launcher" / name).read_text()
    marked = {line.split(":")[0] for line in text.splitlines() if "# CHANGE" in line}
    assert {"partition", "account", "qos", "gpus_per_node", "timeout_min", "mem_gb", "array_parallelism"} <= marked


def test_local_slurm_script_usage_and_status_without_root_changes():
    from pathlib import Path

    script = Path(__file__).parents[1] / "scripts" / "local_slurm.sh"
    proc = subprocess.run(["bash", str(script), "bogus"], capture_output=True, text=True)
    assert proc.returncode == 2 and "usage:" in proc.stderr and "start|stop|status" in proc.stderr
    status = subprocess.run(["bash", str(script), "status"], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin",
                            "LOCAL_SLURM_DIR": "/nonexistent/calib_sweep_slurm"})
    assert status.returncode == 3
    assert status.stdout.splitlines() == ["munged: stopped", "slurmctld: stopped", "slurmd: stopped"]
