"""calib_sweep's SLURM launcher: Hydra's submitit SLURM launcher with one-line ``sbatch`` errors.

It lives here because Hydra instantiates launchers only from the ``hydra_plugins`` package; the
logic is in :mod:`calib_sweep.cluster`.
"""

from __future__ import annotations

from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as _HydraSlurmLauncher

from calib_sweep.cluster import refuse, submission_error


class SlurmLauncher(_HydraSlurmLauncher):
    """Hydra's submitit SLURM launcher (same config fields) with one-line submission errors.

    ``launch`` raises ``SystemExit(2)`` after printing ``calib_sweep: error: SLURM refused the
    sweep's jobs: <sbatch's message> (...). Fix: ...`` when ``sbatch`` refuses the job array or is
    not installed; every other error propagates unchanged.
    """

    def launch(self, job_overrides, initial_job_idx):
        try:
            return super().launch(job_overrides, initial_job_idx)
        except FileNotFoundError as exc:
            if "sbatch" not in str(exc):
                raise
            refuse("sbatch not found: this machine cannot submit SLURM jobs. Fix: run the sweep on the "
                   "cluster's login node, or start a one-node cluster here with scripts/local_slurm.sh start "
                   "(or use hydra/launcher=submitit_local)")
        except RuntimeError as exc:  # submitit's FailedJobError carries sbatch's stderr
            message = submission_error(exc)
            if message is None:
                raise
            fields = {k: self.params.get(k) for k in ("partition", "account", "qos", "gpus_per_node",
                                                        "cpus_per_task", "mem_gb", "timeout_min")}
            given = ", ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
            refuse(f"SLURM refused the sweep's jobs: {message} (hydra.launcher: {given}). Fix: set "
                   "hydra.launcher.partition/account/qos/gpus_per_node/mem_gb/timeout_min to values your "
                   "cluster allows (sinfo -s lists partitions; sacctmgr show assoc user=$USER your accounts and QoS)")
