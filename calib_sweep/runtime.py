"""The process a job runs in: its CPU thread count and how it ends on SIGTERM / SIGINT.

Threads.  Several jobs on one machine (``hydra/launcher=local_parallel``, ``submitit_local``, a
SLURM node shared by array tasks) each used torch's default thread count, one per core: on 2 cores
two GPTQ jobs then ran ~10x slower than one after the other.  :func:`resolve_threads` gives each
job its share of the cores it may use, and :func:`apply_threads` sets torch's intra-op threads and,
through ``threadpoolctl``, the OpenMP / BLAS pools of numpy and scipy (plus ``OMP_NUM_THREADS`` /
``MKL_NUM_THREADS`` for child processes).  The top-level ``threads`` key overrides it.

Termination.  SLURM's ``scancel``, preemption and time limits send SIGTERM; a user sends SIGINT.
:class:`TerminationSignals` turns both into :class:`Terminated` inside the job, so the job's
ordinary failure path writes its failure record (``error_type: Terminated``, the stage) instead of
dying with nothing written.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Any

from calib_sweep.errors import ConfigError

#: Import paths of the Hydra launchers that run several jobs at once on one machine.
_JOBLIB = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
_SUBMITIT_LOCAL = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask: honours SLURM/cgroup limits)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # macOS, Windows
        return max(os.cpu_count() or 1, 1)


def resolve_threads(threads: Any, launcher: Any = None, environ: dict[str, str] | None = None) -> tuple[int, str]:
    """The thread count a job should use, and why.

    Args:
        threads: the ``threads`` config key: ``auto`` or a positive integer.
        launcher: ``hydra.launcher`` of the run (``None`` for a single run).
        environ: environment (default ``os.environ``), read for ``SLURM_CPUS_PER_TASK``.

    Returns:
        ``(n, reason)``: ``threads`` itself when an integer; for ``auto``: SLURM's
        ``cpus_per_task`` when set, else the cores divided by the parallel jobs of the joblib
        launcher (``n_jobs``; -1 = one job per core) or ``cpus_per_task`` of submitit's local
        launcher (without it: the cores divided by ``array_parallelism``), else all available cores.

    Raises:
        ConfigError: ``threads`` is neither ``auto`` nor a positive integer.
    """
    environ = os.environ if environ is None else environ
    if threads != "auto":
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ConfigError(f"threads={threads!r} must be auto or a positive integer. Fix: threads=auto or e.g. threads=2.")
        return threads, "threads config key"
    cores = available_cores()
    slurm = environ.get("SLURM_CPUS_PER_TASK")
    if slurm and slurm.isdigit() and int(slurm) > 0:
        return min(int(slurm), cores), "SLURM_CPUS_PER_TASK"
    target = str((launcher or {}).get("_target_", "")) if launcher is not None else ""
    if target == _JOBLIB:
        n_jobs = launcher.get("n_jobs", -1)
        n_jobs = cores if n_jobs in (None, -1) or int(n_jobs) < 1 else int(n_jobs)
        return max(cores // n_jobs, 1), f"{cores} cores / {n_jobs} joblib jobs"
    if target == _SUBMITIT_LOCAL:
        if launcher.get("cpus_per_task"):
            return max(min(int(launcher.cpus_per_task), cores), 1), "submitit cpus_per_task"
        # submitit's local executor starts up to array_parallelism jobs at once.
        parallel = int(launcher.get("array_parallelism") or 256)
        return max(cores // parallel, 1), f"{cores} cores / up to {parallel} submitit_local jobs"
    return cores, "all available cores"


def apply_threads(n: int) -> dict[str, Any]:
    """Set torch's intra-op threads and the OpenMP/BLAS pools (numpy, scipy) to ``n``.

    Returns:
        What is now in force: ``{"threads", "interop_threads", "blas": [{"api", "num_threads"}...]}``.
    """
    import torch
    from threadpoolctl import threadpool_info, threadpool_limits

    torch.set_num_threads(n)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = str(n)  # for child processes (tokenizers, lm-eval workers)
    threadpool_limits(limits=n)
    return {
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "blas": sorted({(p["internal_api"], p["num_threads"]) for p in threadpool_info()}),
    }


class Terminated(BaseException):
    """The job was stopped by a signal (SIGTERM from ``scancel``/a time limit, SIGINT from Ctrl-C).

    A ``BaseException`` like ``KeyboardInterrupt``, so no ``except Exception`` swallows it.
    """

    def __init__(self, signum: int):
        self.signum = int(signum)
        super().__init__(f"terminated by {signal.Signals(signum).name} (signal {self.signum})")


class TerminationSignals:
    """Context manager: while active, SIGTERM and SIGINT raise :class:`Terminated` in the main thread.

    :meth:`deferred` holds a signal back while a record is being written, and raises it after.
    Outside the main thread (where Python cannot install handlers) it does nothing.  The previous
    handlers are restored on exit.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self._previous: dict[int, Any] = {}
        self._defer = False
        self.pending: int | None = None

    def _handle(self, signum, frame):
        if self._defer:
            self.pending = signum
            return
        raise Terminated(signum)

    def __enter__(self) -> "TerminationSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    @contextlib.contextmanager
    def deferred(self):
        """Signals that arrive inside the block are raised (as :class:`Terminated`) after it."""
        self._defer = True
        try:
            yield
        finally:
            self._defer = False
        if self.pending is not None:
            signum, self.pending = self.pending, None
            raise Terminated(signum)
