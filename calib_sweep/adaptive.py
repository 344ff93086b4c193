"""How many calibration sets each cell needs, decided by the sweep itself (``hydra/sweeper=calib_adaptive``).

The sweeper (:mod:`hydra_plugins.calib_adaptive`) runs a grid in rounds of calibration sets.  A *cell* is
a grid point without its seed (e.g. ``method=gptq dataset=offline_news``); the sweeper owns the seed.
Round 1 runs ``min_sets`` seeds of every cell; after each round every cell's 95% CI half-width of the mean
is computed for each target metric with the report's own interval (Student t,
:func:`calib_sweep.report.statistics.t_bounds`), and only cells that miss a target get the next seeds (the
next integers the cell has not used: disjoint calibration sets), until ``max_sets`` per cell or the budget
(``max_jobs`` jobs run by this command, ``max_hours`` of wall clock) is spent.  It stops on precision,
never on a p-value: no test between cells is looked at while it runs (no optional stopping on
significance).

Targets (``hydra.sweeper.targets``) map a metric to a half-width:

* ``perplexity``: every ``perplexity/<text>`` metric of the jobs, each relative to its mean
  (``0.01`` = +-1% of the mean perplexity); the cell's half-width is the worst of them;
* ``mean_acc``: ``zeroshot/mean_acc``, absolute in accuracy units (``0.01`` = +-1 point);
* a full metric key, ``perplexity/<text>`` (relative) or ``zeroshot/<task>/<metric>`` (absolute; a
  ``.../perplexity`` metric relative).

Per cell the sweep records the seeds run, the sets that finished ok, the half-width reached per target
and why it stopped: ``target reached`` (every target met, at ``min_sets`` at the earliest), ``max_sets``,
``budget`` (``max_jobs`` or ``max_hours`` spent), or ``failed`` (a job of the cell failed: its error is in
the sweep's summary; rerunning the command retries it).  The state is written to
``<sweep dir>/adaptive.json`` before every launch and at the end; the sweep's summary
(:func:`calib_sweep.sweep_summary.finish_sweep`) copies it into ``summary.json`` under ``"adaptive"``.

Growth per round: an unmet cell with n sets gets ``min(max_sets - n, max(1, min(needed - n, n)))`` new
seeds, where ``needed`` is :func:`calib_sweep.report.statistics.sets_needed` for its worst target (at most
doubling the cell per round, so a noisy first estimate of the SD cannot spend the budget at once).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from calib_sweep.errors import ConfigError

#: Targets when ``hydra.sweeper.targets`` is not set: +-1% of every perplexity.
DEFAULT_TARGETS = {"perplexity": 0.01}
#: Stopping reasons.
TARGET_REACHED, MAX_SETS, BUDGET, FAILED = "target reached", "max_sets", "budget", "failed"
#: The sweeper's state file in the sweep folder.
STATE_FILE = "adaptive.json"
#: Confidence of the interval (the report's).
CONFIDENCE = 0.95

_KEY = re.compile(r"^(perplexity/[^/\s]+|zeroshot/[^/\s]+/[^/\s]+|zeroshot/mean_acc)$")
_FIX_NAME = ("Fix: use perplexity (every perplexity/* metric, relative), mean_acc (zeroshot/mean_acc, absolute) "
             "or a full metric key such as perplexity/<text> or zeroshot/<task>/acc")


@dataclass(frozen=True)
class Target:
    """One precision target.

    Attributes:
        name: as given (``perplexity``, ``mean_acc`` or a metric key).
        half_width: the CI half-width wanted: a fraction of the mean when ``relative``, else metric units.
        relative: whether the half-width is relative to the mean (perplexities).
    """

    name: str
    half_width: float
    relative: bool

    def keys(self, metrics: Iterable[str]) -> list[str]:
        """The metric keys, among ``metrics``, this target covers (sorted; empty when none)."""
        metrics = set(metrics)
        if self.name == "perplexity":
            return sorted(k for k in metrics if k.startswith("perplexity/"))
        key = "zeroshot/mean_acc" if self.name == "mean_acc" else self.name
        return [key] if key in metrics else []

    def describe(self) -> str:
        """``perplexity +-1% of the mean`` or ``mean_acc +-0.01``."""
        if self.relative:
            return f"{self.name} +-{100 * self.half_width:g}% of the mean"
        return f"{self.name} +-{self.half_width:g}"


def parse_targets(targets: Mapping[str, Any] | None) -> list[Target]:
    """``hydra.sweeper.targets`` as :class:`Target` s (:data:`DEFAULT_TARGETS` when ``None``).

    Raises:
        ConfigError: not a mapping, empty, an unknown metric name, or a half-width that is not a number > 0.
    """
    if targets is None:
        targets = DEFAULT_TARGETS
    if not isinstance(targets, Mapping) or not targets:
        raise ConfigError(f"hydra.sweeper.targets={targets!r} must map metrics to CI half-widths. "
                          "Fix: e.g. 'hydra.sweeper.targets={perplexity:0.01,mean_acc:0.01}'")
    parsed = []
    for name, value in targets.items():
        name = str(name)
        if name not in ("perplexity", "mean_acc") and not _KEY.match(name):
            raise ConfigError(f"hydra.sweeper.targets: unknown metric {name!r}. {_FIX_NAME}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ConfigError(f"hydra.sweeper.targets.{name}={value!r}: a target is a CI half-width and must be a "
                              "number > 0 (0.01 = +-1% of the mean for perplexities, +-1 point for accuracies). "
                              f"Fix: e.g. hydra.sweeper.targets={{{name}:0.01}}")
        relative = name == "perplexity" or name.startswith("perplexity/") or name.endswith("/perplexity")
        parsed.append(Target(name, float(value), relative))
    return parsed


def check_settings(min_sets: Any, max_sets: Any, max_jobs: Any, max_hours: Any) -> None:
    """The sweeper's numbers.

    Raises:
        ConfigError: ``min_sets`` not an integer >= 2, ``max_sets`` not an integer >= ``min_sets``,
            ``max_jobs`` not null or an integer >= 1, ``max_hours`` not null or a number > 0.
    """
    def integer(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if not integer(min_sets):
        raise ConfigError(f"hydra.sweeper.min_sets={min_sets!r} is not an integer (calibration sets per cell). "
                          "Fix: hydra.sweeper.min_sets=3 (the default) or any integer >= 2")
    if min_sets < 2:
        raise ConfigError(f"hydra.sweeper.min_sets={min_sets!r}: a CI half-width needs at least 2 calibration sets "
                          "per cell. Fix: hydra.sweeper.min_sets=3 (the default) or any integer >= 2")
    if not integer(max_sets) or max_sets < min_sets:
        raise ConfigError(f"hydra.sweeper.max_sets={max_sets!r} must be an integer >= hydra.sweeper.min_sets={min_sets}. "
                          f"Fix: hydra.sweeper.max_sets={max(min_sets, 10)}, or a smaller min_sets")
    if max_jobs is not None and (not integer(max_jobs) or max_jobs < 1):
        raise ConfigError(f"hydra.sweeper.max_jobs={max_jobs!r} must be null (no limit) or an integer >= 1. "
                          "Fix: e.g. hydra.sweeper.max_jobs=50")
    if max_hours is not None and (isinstance(max_hours, bool) or not isinstance(max_hours, (int, float))
                                  or not max_hours > 0):
        raise ConfigError(f"hydra.sweeper.max_hours={max_hours!r} must be null (no limit) or a number of hours > 0. "
                          "Fix: e.g. hydra.sweeper.max_hours=12")


def check_produced(targets: Sequence[Target], eval_cfg: Mapping[str, Any], cell: str) -> None:
    """Refuse a target that a cell's jobs cannot produce, from the cell's composed ``eval`` config.

    Args:
        targets: the parsed targets.
        eval_cfg: the cell's ``eval`` config group (``perplexity.texts``, ``perplexity.hub_texts``, ``zeroshot.tasks``).
        cell: the cell's overrides, for the message.

    Raises:
        ConfigError: the cell measures no perplexity / not the named text / no zero-shot task / not the named
            task or metric.
    """
    ppl = eval_cfg.get("perplexity") or {}
    texts = [str(t) for t in [*(ppl.get("texts") or []), *(ppl.get("hub_texts") or [])]]
    tasks = [str(t) for t in ((eval_cfg.get("zeroshot") or {}).get("tasks") or [])]
    where = f"the jobs of cell {cell!r}" if cell else "the jobs"
    for target in targets:
        name = target.name
        if name == "perplexity" and not texts:
            raise ConfigError(f"hydra.sweeper.targets.perplexity: {where} measure no perplexity (eval.perplexity.texts "
                              "and hub_texts are empty). Fix: set eval.perplexity.texts=[<source>], or drop the target")
        if name.startswith("perplexity/") and name.split("/", 1)[1] not in texts:
            raise ConfigError(f"hydra.sweeper.targets.{name}: {where} measure perplexity on {texts or 'no text'}, not "
                              f"{name.split('/', 1)[1]!r}. Fix: target one of " + (", ".join(f"perplexity/{t}" for t in texts)
                                                                                  or "them after setting eval.perplexity.texts"))
        if name in ("mean_acc", "zeroshot/mean_acc") and not tasks:
            raise ConfigError(f"hydra.sweeper.targets.{name}: {where} run no zero-shot task (eval.zeroshot.tasks=[]). "
                              "Fix: set eval.zeroshot.tasks (e.g. [arc_easy,piqa]), or drop the target")
        if name.startswith("zeroshot/") and name != "zeroshot/mean_acc":
            from calib_sweep.evaluation.zero_shot import METRICS

            _, task, metric = name.split("/")
            if task not in tasks:
                raise ConfigError(f"hydra.sweeper.targets.{name}: {where} run the zero-shot tasks {tasks}, not {task!r}. "
                                  f"Fix: add it to eval.zeroshot.tasks, or target one of {tasks}")
            if metric not in METRICS:
                raise ConfigError(f"hydra.sweeper.targets.{name}: zero-shot tasks report {list(METRICS)}, not {metric!r}. "
                                  f"Fix: e.g. zeroshot/{task}/acc")
            from calib_sweep.evaluation.tasks import task_metrics

            reported = task_metrics(task)
            if reported is not None and metric not in reported:
                raise ConfigError(f"hydra.sweeper.targets.{name}: lm-eval's {task} reports {sorted(reported)}, not "
                                  f"{metric!r}. Fix: target " + " or ".join(f"zeroshot/{task}/{m}" for m in sorted(reported)))


def half_width(values: Sequence[float], confidence: float = CONFIDENCE) -> float:
    """The Student t CI half-width of the mean of ``values`` (units of the values; ``inf`` for fewer than 2
    finite values; 0 when they are all equal)."""
    import numpy as np

    from calib_sweep.report.statistics import t_bounds

    x = np.asarray([v for v in values if isinstance(v, (int, float)) and math.isfinite(v)], dtype=float)
    if x.size < 2:
        return math.inf
    if np.all(x == x[0]):
        return 0.0
    low, high = t_bounds(x, confidence)
    return float(high - low) / 2


def assess(target: Target, results: Sequence[Mapping[str, float]]) -> dict[str, Any]:
    """How close a cell is to one target.

    Args:
        target: the target.
        results: the ``metrics`` of the cell's finished jobs (one per calibration set).

    Returns:
        ``{"half_width": the worst over the target's keys (relative to the mean when the target is, else in
        the metric's units; ``inf`` when not computable), "met": bool, "metrics": {key: {"n", "mean",
        "half_width" (metric units), "relative_half_width"}}}``; ``metrics`` is empty when the jobs do not
        produce the target's metric.
    """
    keys = target.keys({k for r in results for k in r})
    per_key: dict[str, dict[str, Any]] = {}
    worst = math.inf if not keys else 0.0
    for key in keys:
        values = [float(r[key]) for r in results if key in r and isinstance(r[key], (int, float))]
        finite = [v for v in values if math.isfinite(v)]
        mean = sum(finite) / len(finite) if finite else math.nan
        hw = half_width(finite)
        relative = hw / abs(mean) if finite and mean != 0 and math.isfinite(hw) else (0.0 if hw == 0 else math.inf)
        per_key[key] = {"n": len(finite), "mean": mean, "half_width": hw, "relative_half_width": relative}
        worst = max(worst, relative if target.relative else hw)
    return {"half_width": worst, "met": bool(keys) and worst <= target.half_width, "metrics": per_key}


def sets_wanted(target: Target, results: Sequence[Mapping[str, float]], max_sets: int) -> int:
    """Sets the cell needs for ``target`` (:func:`calib_sweep.report.statistics.sets_needed` per key from the
    sets it has, 2 or more, the largest; ``max_sets`` when more would be needed; one more than it has when the
    SD is not estimable)."""
    from calib_sweep.report.statistics import NA, sets_needed

    n = len(results)
    wanted = n + 1
    for key, figures in assess(target, results)["metrics"].items():
        width = target.half_width * abs(figures["mean"]) if target.relative else target.half_width
        if not (math.isfinite(width) and width > 0):
            continue
        got = sets_needed([float(r[key]) for r in results if key in r], width, max_sets=max_sets, min_values=2)
        if isinstance(got, NA):
            got = max_sets if "more than" in got.reason else n + 1
        wanted = max(wanted, got)
    return wanted


@dataclass
class Cell:
    """One grid point without its seed, and what has run of it.

    Attributes:
        overrides: the cell's overrides, every one of its jobs' overrides but the seed.
        swept: the keys the grid sweeps over (``("method", "dataset")``): they name the cell.
        seeds: the seeds launched, in order.
        results: seed -> the job's ``metrics`` (finished ok, here or in an earlier sweep: skipped), or
            ``None`` (failed, or no record).
        stop: why no more seeds are added (``None`` while it goes on).
    """

    overrides: list[str]
    swept: tuple[str, ...] = ()
    seeds: list[int] = field(default_factory=list)
    results: dict[int, dict[str, float] | None] = field(default_factory=dict)
    stop: str | None = None

    @property
    def label(self) -> str:
        """The swept overrides (``method=gptq dataset=offline_news``; empty for a grid of one cell)."""
        return " ".join(o for o in self.overrides if o.split("=", 1)[0] in self.swept)

    @property
    def ok(self) -> list[dict[str, float]]:
        return [self.results[s] for s in self.seeds if self.results.get(s) is not None]

    @property
    def failed(self) -> int:
        return sum(self.results.get(s) is None for s in self.seeds if s in self.results)

    def next_seeds(self, k: int) -> list[int]:
        """The next ``k`` integers >= 0 this cell has not used."""
        used, seeds, s = set(self.seeds), [], 0
        while len(seeds) < k:
            if s not in used:
                seeds.append(s)
            s += 1
        return seeds


def plan(cells: Sequence[Cell], targets: Sequence[Target], min_sets: int, max_sets: int) -> list[tuple[Cell, int]]:
    """The next round: ``(cell, seed)`` for every seed to run, interleaved across cells (every cell's first
    new seed, then every cell's second, ...), so a budget cut spreads evenly.  Cells that are done get
    their ``stop`` set (``failed``, ``target reached``, ``max_sets``)."""
    wanted: list[list[int]] = []
    for cell in cells:
        n = len(cell.seeds)
        k = 0
        if cell.stop is not None:
            pass
        elif cell.failed:
            cell.stop = FAILED
        elif n < min_sets:
            k = min_sets - n
        elif all(assess(t, cell.ok)["met"] for t in targets):
            cell.stop = TARGET_REACHED
        elif n >= max_sets:
            cell.stop = MAX_SETS
        else:
            needed = max(sets_wanted(t, cell.ok, max_sets) for t in targets)
            k = min(max_sets - n, max(1, min(needed - n, n)))
        wanted.append(cell.next_seeds(k))
    order = []
    for i in range(max((len(w) for w in wanted), default=0)):
        order += [(cell, seeds[i]) for cell, seeds in zip(cells, wanted) if i < len(seeds)]
    return order


def missing_metric(cells: Sequence[Cell], targets: Sequence[Target]) -> str | None:
    """One line for a target whose metric a cell's finished jobs do not report (``None`` when all do)."""
    for cell in cells:
        ok = cell.ok
        if not ok:
            continue
        produced = sorted({k for r in ok for k in r})
        for target in targets:
            if not target.keys(produced):
                return (f"hydra.sweeper.targets.{target.name}: the jobs of {cell.label or 'the sweep'!r} do not report "
                        f"it (their metrics: {', '.join(produced)}). {_FIX_NAME}, among those the jobs report")
    return None


def _finite_or_none(value: Any) -> Any:
    return value if not isinstance(value, float) or math.isfinite(value) else None


def cell_record(cell: Cell, targets: Sequence[Target]) -> dict[str, Any]:
    """A cell's entry in ``summary.json``: ``cell`` (its overrides, one string), ``overrides``, ``seeds``
    (launched), ``sets`` (finished ok), ``failed``, ``half_widths`` {target: worst half-width reached,
    relative to the mean for perplexity targets; ``null`` when not computable}, ``met`` {target: bool},
    ``metrics`` {key: n, mean, half_width (metric units), relative_half_width}, ``stop`` (reason)."""
    assessed = {t.name: assess(t, cell.ok) for t in targets}
    metrics = {k: {n: _finite_or_none(v) for n, v in figures.items()}
               for a in assessed.values() for k, figures in a["metrics"].items()}
    return {"cell": cell.label, "overrides": list(cell.overrides), "seeds": list(cell.seeds), "sets": len(cell.ok),
            "failed": cell.failed, "half_widths": {n: _finite_or_none(a["half_width"]) for n, a in assessed.items()},
            "met": {n: a["met"] for n, a in assessed.items()}, "metrics": metrics, "stop": cell.stop}


def state(cells: Sequence[Cell], targets: Sequence[Target], settings: Mapping[str, Any], jobs: Sequence[Sequence[str]],
          rounds: int, ran: int) -> dict[str, Any]:
    """The sweeper's record (``adaptive.json``; ``summary.json["adaptive"]`` without ``jobs``): the settings,
    ``targets`` {name: {half_width, relative}}, ``rounds`` (launches), ``jobs_launched``, ``jobs_ran`` (by this
    command: not skipped), ``stops`` {reason: cells}, ``cells`` (:func:`cell_record`), ``jobs`` (every job's
    overrides, by job number)."""
    records = [cell_record(c, targets) for c in cells]
    stops: dict[str, int] = {}
    for r in records:
        stops[str(r["stop"])] = stops.get(str(r["stop"]), 0) + 1
    return {"sweeper": "calib_adaptive", "interval": "Student t 95% CI of the mean (calib_sweep.report.statistics)",
            **settings, "targets": {t.name: {"half_width": t.half_width, "relative": t.relative} for t in targets},
            "rounds": rounds, "jobs_launched": len(jobs), "jobs_ran": ran, "stops": stops, "cells": records,
            "jobs": [list(j) for j in jobs]}


def format_state(record: Mapping[str, Any]) -> str:
    """The stderr block: one line of totals, then one line per cell (sets, half-width per target, stop)."""
    targets = [Target(n, t["half_width"], t["relative"]) for n, t in record["targets"].items()]
    skipped = record["jobs_launched"] - record["jobs_ran"]
    lines = [f"calib_sweep: adaptive sweep: {len(record['cells'])} cells, {record['jobs_launched']} jobs in "
             f"{record['rounds']} rounds ({record['jobs_ran']} ran, {skipped} done before); targets: "
             + ", ".join(t.describe() for t in targets)
             + f"; min_sets {record['min_sets']}, max_sets {record['max_sets']}"
             + (f", max_jobs {record['max_jobs']}" if record.get("max_jobs") is not None else "")
             + (f", max_hours {record['max_hours']:g}" if record.get("max_hours") is not None else "")]
    for cell in record["cells"]:
        widths = []
        for t in targets:
            hw = cell["half_widths"].get(t.name)
            shown = "n/a" if hw is None else (f"+-{100 * hw:.3g}%" if t.relative else f"+-{hw:.3g}")
            widths.append(f"{t.name} {shown}")
        lines.append(f"  {cell['cell'] or '(one cell)'}: {cell['sets']} sets"
                     + (f" ({cell['failed']} failed)" if cell["failed"] else "")
                     + f", {', '.join(widths)}: {cell['stop']}")
    return "\n".join(lines)


def read_state(sweep_dir: str | Path) -> dict[str, Any] | None:
    """``<sweep_dir>/adaptive.json`` (``None`` when absent or unreadable: not an adaptive sweep)."""
    try:
        record = json.loads((Path(sweep_dir) / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None
