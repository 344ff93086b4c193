"""Stopping a sweep: SIGTERM or SIGINT to the command that launched it.

A job stopped by a signal writes its failure record (:class:`calib_sweep.runtime.TerminationSignals`,
``error_type: Terminated``).  A sweep whose jobs run in other processes needs more: under
``hydra/launcher=local_parallel`` (joblib) or ``submitit_local`` the launching command used to exit
143 at once, with no summary, while its job processes kept computing (orphans burning cores); under
SLURM it left the job array queued.  Now the launching command, on its first SIGTERM / SIGINT
(:class:`SweepStopper`, installed for the whole multirun by
:class:`calib_sweep.sweep_summary.SweepSummary`):

* **local parallel launchers** (joblib, submitit_local): writes ``<sweep dir>/.calib_sweep/stop``,
  forwards the signal to every running job process (those registered in
  ``<sweep dir>/.calib_sweep/running/<pid>``, and only its own descendants), waits until each has
  written its record (at most :data:`WAIT_S` seconds; a second signal stops the wait), then kills
  (SIGKILL) every process of the sweep that is left: job processes, joblib workers, submitit
  controllers.  A joblib worker whose job recorded its stop runs its exit handlers and waits there
  to be killed (:func:`hold`), so it never starts a queued job; a job that starts after the stop
  ends at once (:func:`check`); queued jobs never start (``not started`` in the summary).
* **SLURM**: cancels the sweep's job array (``scancel <array id>``, the ids of
  ``<sweep dir>/.submitit/``) and says so in one line; SLURM sends each running task SIGTERM, so
  each writes its failure record; it waits until they have left the queue (at most
  :data:`SLURM_WAIT_S` seconds).
* **in-process** (``basic``): the job in progress handles the signal itself; between jobs the
  sweep stops at once.

Then :class:`calib_sweep.runtime.Terminated` is raised in the launching command, which ends with
the summary block and ``summary.json`` (the stopped jobs listed as killed) and exit status 128 + N
(143 for SIGTERM, 130 for SIGINT).  The control folder ``.calib_sweep/`` is removed by the summary.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from calib_sweep.runtime import _JOBLIB, _SUBMITIT_LOCAL, Terminated

log = logging.getLogger(__name__)

#: Seconds the launching command waits for stopped local jobs to write their records before SIGKILL.
WAIT_S = 30.0
#: Seconds it waits for cancelled SLURM tasks to leave the queue (SLURM's KillWait is 30 s by default).
SLURM_WAIT_S = 90.0
#: Seconds a joblib worker whose job recorded its stop waits to be killed (then it exits by itself:
#: the launching command is gone or stuck).
HOLD_S = 120.0
#: The control folder inside the sweep folder.
CONTROL = ".calib_sweep"

#: Launcher kinds whose jobs run in processes of this machine started by the launching command.
LOCAL_KINDS = ("joblib", "submitit_local")


def launcher_kind(launcher: Any) -> str:
    """``joblib``, ``submitit_local``, ``slurm`` or ``in_process`` for ``hydra.launcher`` (a config
    with ``_target_``, or ``None``)."""
    from calib_sweep.cluster import LAUNCHER_TARGET

    target = str((launcher or {}).get("_target_", "")) if launcher is not None else ""
    if target == _JOBLIB or target.endswith("JoblibLauncher"):
        return "joblib"
    if target == _SUBMITIT_LOCAL:
        return "submitit_local"
    if target == LAUNCHER_TARGET or "submitit" in target:
        return "slurm"
    return "in_process"


def control_dir(sweep_dir: str | Path) -> Path:
    return Path(sweep_dir) / CONTROL


def stop_signal(sweep_dir: str | Path) -> int | None:
    """The signal number that stopped the sweep (``<sweep dir>/.calib_sweep/stop``), or ``None``."""
    try:
        text = (control_dir(sweep_dir) / "stop").read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def register(sweep_dir: str | Path, job_folder: str | Path) -> Path | None:
    """Record this process as a running job of the sweep (``.calib_sweep/running/<pid>``, holding its
    job folder), so a stopping sweep forwards its signal here.  Returns the entry (``None`` if it
    could not be written: the job then runs unregistered)."""
    entry = control_dir(sweep_dir) / "running" / str(os.getpid())
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        entry.write_text(f"{job_folder}\n")
    except OSError as exc:
        log.debug("could not register %s: %s", entry, exc)
        return None
    return entry


def unregister(entry: Path | None) -> None:
    """Remove a :func:`register` entry (its job has written its record); no error if gone."""
    if entry is not None:
        try:
            entry.unlink()
        except OSError:
            pass


def check(sweep_dir: str | Path) -> None:
    """Raise :class:`Terminated` when the sweep is stopping (a job that starts after the stop ends at
    once, before it loads anything)."""
    signum = stop_signal(sweep_dir)
    if signum is not None:
        raise Terminated(signum)


def hold(sweep_dir: str | Path, entry: Path | None, code: int, wait_s: float = 1.0, hold_s: float = HOLD_S) -> None:
    """After a joblib job recorded its stop: if the sweep is stopping (its stop file appears within
    ``wait_s`` seconds), run this process's exit handlers (so it releases what it holds, e.g. the
    semaphores of tqdm's lock, which a killed process leaks), remove its :func:`register` ``entry``
    (the launching command then knows it is done) and wait to be killed by the launching command.
    So this worker never starts a queued job and never exits by itself (joblib would then kill the
    other workers before they finish their records).  Returns at once when the sweep is not stopping
    (this job alone was signalled); ends the process with ``code`` after ``hold_s`` seconds or when
    the launching command is gone."""
    deadline = time.monotonic() + wait_s
    while stop_signal(sweep_dir) is None:
        if time.monotonic() > deadline:
            return
        time.sleep(0.05)
    try:
        import atexit

        logging.shutdown()
        atexit._run_exitfuncs()
    except BaseException as exc:  # noqa: BLE001 - nothing may stop the hand-over
        log.debug("exit handlers: %s", exc)
    unregister(entry)
    parent = os.getppid()
    deadline = time.monotonic() + hold_s
    while time.monotonic() < deadline and os.getppid() == parent:
        time.sleep(0.2)
    os._exit(code)


def _descendants() -> list[Any]:
    import psutil

    try:
        return psutil.Process().children(recursive=True)
    except psutil.Error:
        return []


def _is_helper(process: Any) -> bool:
    """joblib's resource tracker: it ignores SIGTERM/SIGINT and ends when the launching command does."""
    try:
        return "resource_tracker" in " ".join(process.cmdline())
    except Exception:
        return False


def _say(line: str) -> None:
    print(f"calib_sweep: {line}", file=sys.stderr, flush=True)


class SweepStopper:
    """The launching command's SIGTERM / SIGINT handler for one multirun (see the module docstring).

    Args:
        sweep_dir: the sweep folder (``hydra.sweep.dir``).
        kind: :func:`launcher_kind` of its launcher.
        wait_s: seconds to wait for local jobs' records (:data:`WAIT_S`) or SLURM tasks
            (:data:`SLURM_WAIT_S` when ``None``).
    """

    def __init__(self, sweep_dir: str | Path, kind: str, wait_s: float | None = None):
        self.sweep_dir = Path(sweep_dir)
        self.kind = kind
        self.wait_s = (SLURM_WAIT_S if kind == "slurm" else WAIT_S) if wait_s is None else float(wait_s)
        self.signum: int | None = None
        self.force = False
        self._previous: dict[int, Any] = {}

    def install(self) -> "SweepStopper":
        """Handle SIGTERM and SIGINT in this (main) thread; nothing elsewhere."""
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def uninstall(self) -> None:
        """Restore the handlers :meth:`install` replaced; once stopping, ignore SIGTERM / SIGINT instead
        (the process is ending: its summary is written without interruption)."""
        for sig, handler in self._previous.items():
            if signal.getsignal(sig) == self._handle:
                signal.signal(sig, signal.SIG_IGN if self.signum is not None else handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:  # a second signal: stop waiting, kill now
            self.force = True
            return
        self.signum = signum
        self.stop(signum)
        raise Terminated(signum)

    def stop(self, signum: int) -> None:
        """Write the stop file, then stop the jobs as the launcher requires (module docstring)."""
        try:
            control_dir(self.sweep_dir).mkdir(parents=True, exist_ok=True)
            (control_dir(self.sweep_dir) / "stop").write_text(f"{int(signum)}\n")
        except OSError as exc:
            log.warning("could not write the stop file of %s: %s", self.sweep_dir, exc)
        if self.kind in LOCAL_KINDS:
            self._stop_local(signum)
        elif self.kind == "slurm":
            self._cancel_slurm(signum)

    def running(self) -> dict[int, Any]:
        """The registered job processes that are alive descendants of this process: ``{pid: Process}``."""
        folder = control_dir(self.sweep_dir) / "running"
        registered = {int(p.name) for p in folder.iterdir() if p.name.isdigit()} if folder.is_dir() else set()
        found = {}
        for process in _descendants():
            try:
                if process.pid in registered and process.is_running() and process.status() != "zombie":
                    found[process.pid] = process
            except Exception:
                continue
        return found

    def _stop_local(self, signum: int) -> None:
        name = signal.Signals(signum).name
        jobs = self.running()
        for pid in jobs:
            try:
                os.kill(pid, signum)
            except OSError:
                pass
        pids = ", ".join(map(str, sorted(jobs))) or "none"
        _say(f"{name}: stopping the sweep: {name} forwarded to {len(jobs)} running job(s) (pid {pids}); waiting up "
             f"to {self.wait_s:.0f} s for their failure records (a second signal kills them now)")
        deadline = time.monotonic() + self.wait_s
        signalled = set(jobs)
        while time.monotonic() < deadline and not self.force:
            left = self.running()
            for pid in set(left) - signalled:  # a job that started meanwhile (it sees the stop file too)
                try:
                    os.kill(pid, signum)
                except OSError:
                    pass
                signalled.add(pid)
            if not left:
                break
            time.sleep(0.1)
        late = sorted(self.running())
        killed = self._kill_all()
        if late:
            _say(f"killed {len(late)} job(s) that had not written a record in {self.wait_s:.0f} s (pid "
                 f"{', '.join(map(str, late))})")
        log.debug("killed the sweep's remaining processes: %s", killed)

    def _kill_all(self) -> list[int]:
        """SIGKILL every descendant of this process except joblib's resource tracker; wait for them."""
        import psutil

        victims = [p for p in _descendants() if not _is_helper(p)]
        for process in victims:
            try:
                process.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(victims, timeout=10)
        return [p.pid for p in victims]

    def slurm_jobs(self) -> list[str]:
        """The SLURM job (array) ids of the sweep: the numeric prefixes of ``<sweep dir>/.submitit/*``."""
        folder = self.sweep_dir / ".submitit"
        ids = {p.name.split("_")[0] for p in folder.iterdir()} if folder.is_dir() else set()
        return sorted(i for i in ids if i.isdigit())

    def _cancel_slurm(self, signum: int) -> None:
        name = signal.Signals(signum).name
        ids = self.slurm_jobs()
        if not ids:
            _say(f"{name}: stopping the sweep: no SLURM job of it found under {self.sweep_dir}/.submitit "
                 "(nothing submitted yet)")
            return
        try:
            proc = subprocess.run(["scancel", *ids], capture_output=True, text=True, timeout=30)
            failed = proc.returncode != 0 and (proc.stderr.strip() or f"exit status {proc.returncode}")
        except (OSError, subprocess.TimeoutExpired) as exc:
            failed = str(exc)
        if failed:
            _say(f"{name}: scancel {' '.join(ids)} failed: {failed}. Fix: cancel the sweep's jobs by hand "
                 f"(scancel {' '.join(ids)})")
            return
        _say(f"{name}: cancelled the sweep's SLURM job array (scancel {' '.join(ids)}): SLURM stops its running "
             f"tasks with SIGTERM (each writes its failure record) and drops the queued ones; waiting up to "
             f"{self.wait_s:.0f} s for them to leave the queue")
        deadline = time.monotonic() + self.wait_s
        while time.monotonic() < deadline and not self.force:
            try:
                queued = subprocess.run(["squeue", "-h", "-o", "%i", "-j", ",".join(ids)], capture_output=True,
                                        text=True, timeout=30).stdout
            except (OSError, subprocess.TimeoutExpired):
                break
            if not queued.strip():
                break
            time.sleep(1.0)
