"""The process a job runs in: its CPU thread count and how it ends on SIGTERM / SIGINT.

Threads.  Several jobs on one machine (``hydra/launcher=local_parallel``, ``submitit_local``, a
SLURM node shared by array tasks) each used torch's default thread count, one per core: on 2 cores
two GPTQ jobs then ran ~10x slower than one after the other.  :func:`resolve_threads` gives each
job its share of the cores it may use, and :func:`apply_threads` sets torch's intra-op threads and,
through ``threadpoolctl``, the OpenMP / BLAS pools of numpy and scipy (plus ``OMP_NUM_THREADS`` /
``MKL_NUM_THREADS`` for child processes).  The share counts the jobs that actually run at once (a
1-job sweep gets every core, under any launcher): the launching command of a sweep tells its jobs
how many it has (:data:`SWEEP_JOBS_VARIABLE`).  The top-level ``threads`` key overrides it.

Hardware.  The same config and calibration set gave held-out perplexity 28.90 on one 2-core machine and
29.58 on another: kernels (AVX2 vs AVX-512, oneDNN vs BLAS, GPU architecture) and thread counts change
floating-point summation order.  :func:`hardware_record` says what a job ran on, in ``results.json``
(``runtime.hardware``), and :func:`hardware_id` condenses it into the label the report compares.

Termination.  SLURM's ``scancel``, preemption and time limits send SIGTERM; a user sends SIGINT.
:class:`TerminationSignals` turns both into :class:`Terminated` inside the job, so the job's
ordinary failure path writes its failure record (``error_type: Terminated``, the stage) instead of
dying with nothing written; a signal sent to a sweep's launching command is forwarded to its jobs
(:mod:`calib_sweep.stopping`).
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


#: Environment variable the launching command of a multirun sets to the number of jobs that can run at
#: once (the sweep's jobs, or ``hydra.sweeper.max_batch_size`` when smaller); its job processes inherit it.
SWEEP_JOBS_VARIABLE = "CALIB_SWEEP_SWEEP_JOBS"


def _sweep_jobs(environ: dict[str, str]) -> int | None:
    value = str(environ.get(SWEEP_JOBS_VARIABLE, ""))
    return int(value) if value.isdigit() and int(value) > 0 else None


def resolve_threads(threads: Any, launcher: Any = None, environ: dict[str, str] | None = None) -> tuple[int, str]:
    """The thread count a job should use, and why.

    Args:
        threads: the ``threads`` config key: ``auto`` or a positive integer.
        launcher: ``hydra.launcher`` of the run (``None`` for a single run).
        environ: environment (default ``os.environ``), read for ``SLURM_CPUS_PER_TASK`` and
            :data:`SWEEP_JOBS_VARIABLE` (the jobs of the sweep, set by its launching command).

    Returns:
        ``(n, reason)``: ``threads`` itself when an integer; for ``auto``: SLURM's
        ``cpus_per_task`` when set; under the joblib launcher the cores divided by the jobs running
        at once, ``min(n_jobs, jobs in the sweep)`` (``n_jobs`` -1 = one job per core); under
        submitit's local launcher its ``cpus_per_task`` when set, else the cores divided by the jobs in
        the sweep (it starts them all at once; an ``array_parallelism`` key, where a launcher config
        has one, caps that number); else all available cores.  Never below 1; a job never gets fewer
        threads than the cores left to it (a 1-job sweep gets them all).  Without the sweep's size
        (another sweeper) the launcher's own bound is used (``n_jobs``; 256 for submitit_local, its
        unbounded default, i.e. 1 thread).

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
    sweep = _sweep_jobs(environ)
    if target == _JOBLIB:
        n_jobs = launcher.get("n_jobs", -1)
        n_jobs = cores if n_jobs in (None, -1) or int(n_jobs) < 1 else int(n_jobs)
        parallel = min(n_jobs, sweep) if sweep else n_jobs
        why = f"{cores} cores / {parallel} joblib jobs"
        if parallel < n_jobs:
            why += f" (the sweep's {sweep}; n_jobs={n_jobs})"
        return max(cores // parallel, 1), why
    if target == _SUBMITIT_LOCAL:
        if launcher.get("cpus_per_task"):
            return max(min(int(launcher.cpus_per_task), cores), 1), "submitit cpus_per_task"
        # submitit's local executor starts every job of the sweep at once (no array_parallelism option).
        bound = launcher.get("array_parallelism")
        bound = int(bound) if bound else None
        parallel = min(b for b in (sweep, bound) if b) if (sweep or bound) else 256
        why = f"{cores} cores / {parallel} submitit_local jobs"
        if not sweep:
            why = f"{cores} cores / up to {parallel} submitit_local jobs"
        return max(cores // parallel, 1), why
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


#: CPU flags that select different kernels in torch / oneDNN / BLAS (and so can change the last bits of a result).
KERNEL_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
                "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_bf16", "amx_int8", "amx_tile", "asimd", "sve")


def cpu_info(cpuinfo: str | None = None) -> dict[str, Any]:
    """The CPU's model name and its kernel-relevant flags (:data:`KERNEL_FLAGS`).

    Args:
        cpuinfo: text of ``/proc/cpuinfo`` (read when ``None``; absent on macOS/Windows, where
            ``platform.processor()`` gives the model and the flags are unknown).

    Returns:
        ``{"model": str, "flags": [str, ...] | None, "machine": platform.machine()}``.
    """
    import platform

    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
                cpuinfo = handle.read()
        except OSError:
            cpuinfo = ""
    model, flags = None, None
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if model is None and key in ("model name", "hardware", "cpu model"):
            model = value.strip()
        elif flags is None and key in ("flags", "features"):
            present = set(value.split())
            flags = [f for f in KERNEL_FLAGS if f in present]
    return {"model": model or platform.processor() or "unknown", "flags": flags, "machine": platform.machine()}


def hardware_record(device: Any = None) -> dict[str, Any]:
    """What a job's numbers were computed on (``results.json["runtime"]["hardware"]``).

    Args:
        device: the job's ``torch.device`` (``None``: CPU).

    Returns:
        ``cpu`` (:func:`cpu_info`), ``cpu_capability`` (the SIMD level torch's CPU kernels use,
        ``torch.backends.cpu.get_cpu_capability()``), ``blas`` (``BLAS_INFO`` of torch's build),
        ``mkldnn`` (oneDNN available), ``parallel_backend``, ``threads`` (torch intra-op threads now),
        ``deterministic`` (``torch.are_deterministic_algorithms_enabled()``), ``torch`` version, and on
        CUDA ``gpu`` (name, compute capability, CUDA and cuDNN versions); ``id``: :func:`hardware_id`.
    """
    import re

    import torch

    config = torch.__config__.show()
    blas = re.search(r"BLAS_INFO=([^,\s]+)", config)
    backend = re.search(r"ATen parallel backend: (\S+)", torch.__config__.parallel_info())
    record: dict[str, Any] = {
        "cpu": cpu_info(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "blas": blas.group(1) if blas else None,
        "mkldnn": bool(torch.backends.mkldnn.is_available()),
        "parallel_backend": backend.group(1) if backend else None,
        "threads": torch.get_num_threads(),
        "deterministic": bool(torch.are_deterministic_algorithms_enabled()),
        "torch": torch.__version__,
    }
    if device is not None and getattr(device, "type", None) == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        record["gpu"] = {
            "name": props.name, "compute_capability": f"{props.major}.{props.minor}",
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
        }
    record["id"] = hardware_id(record)
    return record


def hardware_id(record: dict[str, Any]) -> str:
    """A short label of what decides a job's floating-point results, e.g.
    ``cpu AMD EPYC [AVX512, mkl] x2 threads`` or ``cuda NVIDIA H200 (sm 9.0) x2 threads``.

    Jobs with different labels may differ in the last bits of every figure; the report flags a group
    whose jobs carry more than one label.
    """
    gpu = record.get("gpu")
    threads = record.get("threads")
    if gpu:
        return f"cuda {gpu.get('name')} (sm {gpu.get('compute_capability')}) x{threads} threads"
    cpu = record.get("cpu") or {}
    return f"cpu {cpu.get('model')} [{record.get('cpu_capability')}, {record.get('blas')}] x{threads} threads"


class Terminated(BaseException):
    """The job was stopped by a signal (SIGTERM from ``scancel``/a time limit, SIGINT from Ctrl-C).

    A ``BaseException`` like ``KeyboardInterrupt``, so no ``except Exception`` swallows it.
    """

    def __init__(self, signum: int):
        self.signum = int(signum)
        super().__init__(f"terminated by {signal.Signals(signum).name} (signal {self.signum})")


class TerminationSignals:
    """Context manager: while active, SIGTERM and SIGINT raise :class:`Terminated` in the main thread.

    The first signal raises; later ones are held (kept in :attr:`pending`, not raised): the job is
    already ending, and a second raise would cut its failure record short (a Ctrl-C reaches a job of a
    parallel sweep twice: from the terminal and forwarded by the sweep).  :attr:`signum` is the signal
    that ended the job (``None`` while none has); setting it holds later signals the same way.
    :meth:`deferred` holds a signal back while a record is being written, and raises it after (unless
    one was raised already).  Nested contexts pass :attr:`signum` on to the enclosing one on exit.
    Outside the main thread (where Python cannot install handlers) it does nothing.  The previous
    handlers are restored on exit.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self._previous: dict[int, Any] = {}
        self._defer = False
        self.pending: int | None = None
        self.signum: int | None = None

    def _handle(self, signum, frame):
        if self._defer or self.signum is not None:
            self.pending = self.pending or signum
            return
        self.signum = signum
        raise Terminated(signum)

    def __enter__(self) -> "TerminationSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            outer = getattr(handler, "__self__", None)
            if isinstance(outer, TerminationSignals) and self.signum is not None and outer.signum is None:
                outer.signum = self.signum  # the enclosing context is ending the same job
            signal.signal(sig, handler)
        self._previous.clear()

    @contextlib.contextmanager
    def deferred(self):
        """Signals that arrive inside the block are raised (as :class:`Terminated`) after it, unless
        a signal already ended the job."""
        self._defer = True
        try:
            yield
        finally:
            self._defer = False
        if self.pending is not None and self.signum is None:
            signum, self.pending = self.pending, None
            self.signum = signum
            raise Terminated(signum)
