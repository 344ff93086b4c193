"""``hydra/sweeper=calib_adaptive``: a grid run in rounds of calibration sets until each cell is precise enough.

::

    python -m calib_sweep -m hydra/sweeper=calib_adaptive method=gptq,wanda dataset=offline_news,offline_code \\
        'hydra.sweeper.targets={perplexity:0.01,mean_acc:0.01}' hydra.sweeper.max_sets=10

Same override grammar as Hydra's basic sweeper (``a=1,2 b=range(3)``, ``hydra.sweeper.params``), except
that the sweeper owns the seed: a ``seed`` override is refused.  Each round is one ``launch`` through the
configured launcher (basic, joblib, submitit, SLURM: one job array per round).  Rerunning the same command
continues: finished jobs are skipped by the project's resume by config key, and their results count.
The rules (targets, growth, stopping reasons) are in :mod:`calib_sweep.adaptive`; this module is the
Hydra side, here because Hydra discovers sweepers only in the ``hydra_plugins`` package.

Settings (``hydra.sweeper.*``): ``targets`` (default ``{perplexity: 0.01}``), ``min_sets`` (3),
``max_sets`` (10), ``max_jobs`` (null: jobs this command may run; skipped jobs are free), ``max_hours``
(null: wall clock of this command; checked before each round), ``params`` (as the basic sweeper's; a
param set to null is dropped).
Bad settings print one line ``calib_sweep: error: ... Fix: ...`` and exit 2 before any job starts.
"""

# No `from __future__ import annotations`: Hydra imports plugins without registering them in sys.modules
# first, and dataclasses then cannot resolve string annotations.

import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, ListConfig, OmegaConf

from calib_sweep import adaptive
from calib_sweep.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class AdaptiveSweeperConf:
    """``hydra.sweeper`` of ``hydra/sweeper=calib_adaptive`` (untyped numbers: the sweeper checks them and
    names a bad one in one line)."""

    _target_: str = "hydra_plugins.calib_adaptive.AdaptiveSweeper"
    params: Optional[Dict[str, Any]] = None
    targets: Any = None  # Any: OmegaConf cannot merge a dict into a None Optional[Dict]
    min_sets: Any = 3
    max_sets: Any = 10
    max_jobs: Any = None
    max_hours: Any = None


ConfigStore.instance().store(group="hydra/sweeper", name="calib_adaptive", node=AdaptiveSweeperConf,
                             provider="calib_sweep")


def _refuse(line: str, sweep_dir: Path | None = None, jobs_started: bool = False) -> None:
    """Print ``calib_sweep: error: <line>`` and exit 2.  Before any job: the sweep is forgotten (no summary
    block) and its still empty folder removed."""
    from calib_sweep import sweep_summary
    from calib_sweep.claims import FOLDER_CLAIM

    if not jobs_started:
        sweep_summary.discard_active()
        if sweep_dir is not None and sweep_dir.is_dir() and [p.name for p in sweep_dir.iterdir()] == [FOLDER_CLAIM]:
            (sweep_dir / FOLDER_CLAIM).unlink()
            sweep_dir.rmdir()
    print(f"calib_sweep: error: {line}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def _read_json(path: Path) -> dict[str, Any] | None:
    import json

    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def job_outcome(folder: Path) -> tuple[dict[str, float] | None, bool]:
    """``(metrics or None, ran)`` of a job folder: ``metrics`` of an ok job (its own ``results.json``, or the
    earlier one its ``skipped.json`` points at), ``None`` for a failed job or one without a record;
    ``ran``: whether this sweep ran it (not skipped)."""
    results = _read_json(folder / "results.json")
    if results is not None and results.get("status") in ("ok", "failed"):
        return (dict(results.get("metrics") or {}) if results["status"] == "ok" else None), True
    skipped = _read_json(folder / "skipped.json")
    if skipped is not None and skipped.get("results"):
        earlier = _read_json(Path(str(skipped["results"])))
        if earlier is not None and earlier.get("status") == "ok":
            return dict(earlier.get("metrics") or {}), False
        return None, False
    return None, True


class AdaptiveSweeper(Sweeper):
    """Hydra sweeper running each cell's calibration sets in rounds until its CI targets are met (see the
    module docstring and :mod:`calib_sweep.adaptive`)."""

    def __init__(self, params: Optional[Dict[str, str]] = None, targets: Optional[Dict[str, Any]] = None,
                 min_sets: Any = 3, max_sets: Any = 10, max_jobs: Any = None, max_hours: Any = None) -> None:
        super().__init__()
        # A param set to null is dropped: an experiment can take another's grid without its seed range
        # (experiment=replication_adaptive: hydra.sweeper.params.seed: null).
        self.params = {k: v for k, v in dict(params or {}).items() if v is not None}
        # kept as given when not a mapping (e.g. targets=5): parse_targets refuses it in one line, exit 2
        self.targets = (OmegaConf.to_container(targets) if isinstance(targets, (DictConfig, ListConfig))
                        else dict(targets) if isinstance(targets, dict) else targets)
        self.min_sets, self.max_sets, self.max_jobs, self.max_hours = min_sets, max_sets, max_jobs, max_hours
        self.hydra_context: Optional[HydraContext] = None
        self.config: Optional[DictConfig] = None
        self.launcher: Optional[Launcher] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context = hydra_context
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(hydra_context=hydra_context,
                                                                task_function=task_function, config=config)

    def _check(self, arguments: List[str], sweep_dir: Path) -> tuple[list[adaptive.Target], list[adaptive.Cell]]:
        """The targets and the cells, or one line and exit 2 (nothing has started)."""
        assert self.hydra_context is not None and self.config is not None
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        lines = [f"{k}={v}" for k, v in self.params.items()] + list(arguments)
        overrides = parser.parse_overrides(lines)
        for override in overrides:
            if override.key_or_group == "seed":
                _refuse(f"{override.input_line}: the calib_adaptive sweeper owns the seed (each cell runs seeds 0, 1, "
                        "2, ... in rounds). Fix: drop the seed override (and any hydra.sweeper.params.seed); set "
                        "hydra.sweeper.min_sets / hydra.sweeper.max_sets instead", sweep_dir)
        try:
            targets = adaptive.parse_targets(self.targets)
            adaptive.check_settings(self.min_sets, self.max_sets, self.max_jobs, self.max_hours)
        except ConfigError as exc:
            _refuse(str(exc), sweep_dir)
        swept = tuple(o.get_key_element() for o in overrides if o.is_sweep_override())
        cells = [adaptive.Cell(list(c), swept) for c in BasicSweeper.split_arguments(overrides, None)[0]]
        for cell in cells:
            composed = self.hydra_context.config_loader.load_sweep_config(self.config, [*cell.overrides, "seed=0"])
            try:
                adaptive.check_produced(targets, composed.eval, cell.label)
            except ConfigError as exc:
                _refuse(str(exc), sweep_dir)
        return targets, cells

    def sweep(self, arguments: List[str]) -> Any:
        """Run the rounds (see the module docstring); returns every launch's job returns."""
        from calib_sweep.runtime import SWEEP_JOBS_VARIABLE
        from calib_sweep.tracking import write_json

        assert self.config is not None and self.launcher is not None
        start = time.monotonic()
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        targets, cells = self._check(arguments, sweep_dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        settings = {"min_sets": self.min_sets, "max_sets": self.max_sets, "max_jobs": self.max_jobs,
                    "max_hours": self.max_hours}
        # Jobs at once, for each job's thread share (calib_sweep.runtime.resolve_threads): round 1's size,
        # the same in every round and every rerun, so resume.match=strict finds earlier jobs.
        os.environ[SWEEP_JOBS_VARIABLE] = str(len(cells) * self.min_sets)
        jobs: list[list[str]] = []
        folders: dict[int, Path] = {}
        returns: list[Sequence[Any]] = []
        ran = rounds = 0

        def save() -> dict[str, Any]:
            record = adaptive.state(cells, targets, settings, jobs, rounds, ran)
            write_json(sweep_dir / adaptive.STATE_FILE, record)
            return record

        while True:
            wanted = adaptive.plan(cells, targets, self.min_sets, self.max_sets)
            if not wanted:
                break
            left = len(wanted)
            if self.max_jobs is not None:
                left = min(left, self.max_jobs - ran)
            if self.max_hours is not None and time.monotonic() - start >= 3600 * float(self.max_hours):
                left = 0
            if left <= 0:
                for cell, _ in wanted:
                    cell.stop = adaptive.BUDGET
                break
            batch = wanted[:left]
            first = len(jobs)
            overrides = [[*cell.overrides, f"seed={seed}"] for cell, seed in batch]
            for cell, seed in batch:
                cell.seeds.append(seed)
            jobs += overrides
            save()  # a sweep killed during the round still says what it launched
            self.validate_batch_is_legal(overrides)
            returns.append(self.launcher.launch(overrides, initial_job_idx=first))
            rounds += 1
            self._find_folders(sweep_dir, folders)
            for num, (cell, seed) in enumerate(batch, start=first):
                folder = folders.get(num)
                metrics, did_run = job_outcome(folder) if folder is not None else (None, True)
                cell.results[seed] = metrics
                ran += did_run
            missing = adaptive.missing_metric(cells, targets)
            if missing:
                save()
                _refuse(missing, jobs_started=True)
        record = save()
        print(adaptive.format_state(record), file=sys.stderr, flush=True)
        return returns

    @staticmethod
    def _find_folders(sweep_dir: Path, folders: dict[int, Path]) -> None:
        """Add the job folders of ``sweep_dir`` not in ``folders`` yet: job number (``.hydra/hydra.yaml``) -> folder."""
        known = set(folders.values())
        for path in sorted(p for p in sweep_dir.iterdir() if p not in known and (p / ".hydra" / "hydra.yaml").is_file()):
            try:
                folders[int(OmegaConf.load(path / ".hydra" / "hydra.yaml").hydra.job.num)] = path
            except Exception as exc:
                log.debug("no job number in %s: %s", path, exc)
