"""Output folders are claimed atomically, so no job or sweep ever writes into another one's folder.

Two sweeps started in the same second (or a reused ``hydra.sweep.dir``) used to write into the same
job folders: results, ``.hydra/`` configs, ``multirun.yaml`` and logs of one overwrote or interleaved
with the other's.  Two claims prevent it:

* **Sweep and run folders** (:class:`ClaimFolders`, a Hydra callback in ``conf/config.yaml``):
  before Hydra writes anything, the sweep folder (``hydra.sweep.dir``) or single-run folder
  (``hydra.run.dir``) is claimed by creating ``.calib_sweep_claim.json`` in it with ``O_EXCL``.
  A folder that another sweep or run has claimed (running or finished) is never reused: this one
  moves to the first free ``<folder>_2``, ``<folder>_3``, ... and says so in one line.  Resuming a
  sweep needs no shared folder: finished jobs are found by config key (``multirun/.index``).
* **Job folders** (:func:`claim_job_folder`, called by :func:`calib_sweep.job.run_job` before it
  writes anything): the folder records the config key of its job.  A job with another key stops
  at once with one line naming the folder; the same job run again (a rerun or a requeued SLURM
  task) takes the folder over, unless its earlier process is still running on this host.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, open_dict, read_write

from calib_sweep.errors import ConfigError
from calib_sweep.tracking import write_json

log = logging.getLogger(__name__)

#: Claim file of a sweep or single-run folder.
FOLDER_CLAIM = ".calib_sweep_claim.json"
#: Claim file of a job folder.
JOB_CLAIM = ".job_claim.json"


class FolderInUse(ConfigError):
    """A job folder belongs to another job (or to a job still running on this host)."""


def _owner() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "claimed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def _create_exclusive(path: Path, record: dict[str, Any]) -> bool:
    """Create ``path`` holding ``record`` if it does not exist (atomic: ``O_CREAT | O_EXCL``)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as handle:
        json.dump(record, handle)
    return True


def _alive(owner: dict[str, Any]) -> bool:
    """Whether the process that made a claim still runs (only knowable on the same host)."""
    if owner.get("host") != socket.gethostname() or not isinstance(owner.get("pid"), int):
        return False
    if owner["pid"] == os.getpid():
        return False
    try:
        os.kill(owner["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim_folder(folder: str | os.PathLike, kind: str) -> Path:
    """Claim ``folder`` for one sweep or run, or the first free ``<folder>_N`` (N = 2, 3, ...).

    Args:
        folder: the folder Hydra would write to.
        kind: ``"sweep"`` or ``"run"`` (recorded in the claim).

    Returns:
        The claimed folder (created if needed), ``folder`` itself when it was free.
    """
    base = Path(folder)
    for n in range(1, 10_000):
        candidate = base if n == 1 else base.with_name(f"{base.name}_{n}")
        candidate.mkdir(parents=True, exist_ok=True)
        if _create_exclusive(candidate / FOLDER_CLAIM, {"kind": kind, **_owner()}):
            return candidate
    raise ConfigError(f"{kind} folder {base} and 9,999 numbered variants are all in use. Fix: choose a new folder.")


def claim_job_folder(folder: str | os.PathLike, config_key: str) -> Path:
    """Claim a job folder for the job with ``config_key`` before anything is written into it.

    Returns:
        The claim file.

    Raises:
        FolderInUse: the folder holds another config's job, or this job still running in another
            process on this host.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / JOB_CLAIM
    record = {"config_key": config_key, **_owner()}
    if _create_exclusive(path, record):
        return path
    try:
        owner = json.loads(path.read_text())
    except (OSError, ValueError):
        owner = {}
    if owner.get("config_key") not in (None, config_key):
        raise FolderInUse(
            f"job folder {folder} is in use by another job (config key {str(owner.get('config_key'))[:12]}, "
            f"pid {owner.get('pid')} on {owner.get('host')}); nothing was written. "
            "Fix: give this sweep its own folder (hydra.sweep.dir=<new folder>)."
        )
    if _alive(owner):
        raise FolderInUse(
            f"job folder {folder} is in use by the same job still running (pid {owner.get('pid')} on {owner.get('host')}). "
            "Fix: wait for it, or give this sweep its own folder (hydra.sweep.dir=<new folder>)."
        )
    write_json(path, record)
    log.info("taking over job folder %s from an earlier run of the same config", folder)
    return path


class ClaimFolders(Callback):
    """Hydra callback: claim the sweep folder (multirun) or run folder (single run) before Hydra
    writes into it, moving to ``<folder>_N`` when another sweep or run has it (see the module
    docstring)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._claim(config, "sweep")

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._claim(config, "run")

    @staticmethod
    def _claim(config: DictConfig, kind: str) -> None:
        wanted = str(config.hydra[kind].dir)
        claimed = claim_folder(wanted, kind)
        if str(claimed) == wanted:
            return
        print(f"calib_sweep: {kind} folder {wanted} already belongs to another {kind} (running or finished); "
              f"writing to {claimed}", file=sys.stderr)
        with read_write(config.hydra), open_dict(config.hydra):
            config.hydra[kind].dir = str(claimed)
            # Jobs of a sweep are composed again from these overrides (Hydra's load_sweep_config),
            # in this process or in launcher workers: they must name the new folder too.
            quoted = "'" + str(claimed).replace("\\", "\\\\").replace("'", "\\'") + "'"
            kept = [o for o in config.hydra.overrides.hydra if not str(o).startswith(f"hydra.{kind}.dir=")]
            config.hydra.overrides.hydra = [*kept, f"hydra.{kind}.dir={quoted}"]
