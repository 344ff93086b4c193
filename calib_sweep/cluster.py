"""SLURM: what a job records about the scheduler job it ran in, and a launcher whose submission errors are one line.

Record.  A job run by SLURM (``hydra/launcher=slurm``, any ``slurm*`` preset) records its scheduler
job in ``results.json`` under ``slurm`` (:func:`scheduler_record`): ``job_id`` is the id submitit
uses, ``<array job id>_<array task id>`` for the array jobs a sweep submits, which is also the name
of the job's log folder ``<sweep dir>/.submitit/<job_id>/`` (stdout ``<job_id>_0_log.out``, stderr
``<job_id>_0_log.err``), so ``scontrol show job``, ``sacct -j`` and the logs can be found from a
result.  Outside SLURM nothing is recorded.

Launcher.  ``hydra_plugins.calib_sweep_slurm.SlurmLauncher`` (the ``_target_`` of ``conf/hydra/launcher/slurm*.yaml``) is Hydra's submitit SLURM launcher, except that a sweep ``sbatch``
refuses (unknown partition, account or QoS, GPUs on a partition without them, a time or memory
over the partition's limit) ends with SLURM's own message in one line and the fix, exit status 2,
instead of a Python traceback.
"""

from __future__ import annotations

import os
import sys
from typing import Any

#: SLURM environment variables recorded by :func:`scheduler_record` (record key: variable).
SLURM_VARIABLES = {
    "slurm_job_id": "SLURM_JOB_ID",
    "array_job_id": "SLURM_ARRAY_JOB_ID",
    "array_task_id": "SLURM_ARRAY_TASK_ID",
    "job_name": "SLURM_JOB_NAME",
    "partition": "SLURM_JOB_PARTITION",
    "account": "SLURM_JOB_ACCOUNT",
    "qos": "SLURM_JOB_QOS",
    "cluster": "SLURM_CLUSTER_NAME",
    "node": "SLURMD_NODENAME",
    "cpus_per_task": "SLURM_CPUS_PER_TASK",
    "mem_per_node_mb": "SLURM_MEM_PER_NODE",
    "gpus": "SLURM_GPUS_ON_NODE",
    "submit_dir": "SLURM_SUBMIT_DIR",
}


def scheduler_record(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """The SLURM job this process runs in, for ``results.json``.

    Args:
        environ: environment to read (default ``os.environ``).

    Returns:
        ``{}`` outside SLURM (no ``SLURM_JOB_ID``); otherwise ``{"slurm": {...}}`` with ``job_id``
        (``<array job id>_<array task id>`` for an array task, else ``SLURM_JOB_ID``: the name of
        the job's ``.submitit/`` log folder) and the variables of :data:`SLURM_VARIABLES` that are
        set (strings as SLURM gives them; ``mem_per_node_mb`` in MB).
    """
    environ = os.environ if environ is None else environ
    if not environ.get("SLURM_JOB_ID"):
        return {}
    record = {key: environ[name] for key, name in SLURM_VARIABLES.items() if environ.get(name)}
    array, task = record.get("array_job_id"), record.get("array_task_id")
    record["job_id"] = f"{array}_{task}" if array and task else record["slurm_job_id"]
    return {"slurm": dict(sorted(record.items()))}


def is_scheduler_launcher(launcher: Any) -> bool:
    """Whether ``hydra.launcher`` (a config with ``_target_``, or ``None``) runs each job as its own
    scheduler job (submitit: local or SLURM), where a job's failure record speaks for it."""
    target = str((launcher or {}).get("_target_", "")) if launcher is not None else ""
    return "submitit" in target or target == LAUNCHER_TARGET


def submission_error(exc: BaseException) -> str | None:
    """SLURM's refusal in one line (``sbatch: error: ...; ...``), or ``None`` when ``exc`` is not an
    ``sbatch`` failure (then it is not ours to rephrase)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("sbatch:")]
    if not errors:
        return None
    first, rest = errors[0], [line.split("error:", 1)[-1].strip() for line in errors[1:]]
    return "; ".join([first, *rest])


#: ``_target_`` of calib_sweep's SLURM launcher (:class:`hydra_plugins.calib_sweep_slurm.SlurmLauncher`;
#: Hydra accepts launchers only from the ``hydra_plugins`` package).
LAUNCHER_TARGET = "hydra_plugins.calib_sweep_slurm.SlurmLauncher"


def refuse(line: str) -> None:
    """Print ``calib_sweep: error: <line>`` to stderr and raise ``SystemExit(2)`` (nothing was submitted)."""
    print(f"calib_sweep: error: {line}", file=sys.stderr, flush=True)
    raise SystemExit(2)
