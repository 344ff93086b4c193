"""The report's table of adaptive sweeps (``hydra/sweeper=calib_adaptive``, issue 30 item 3).

An adaptive sweep's folder holds ``adaptive.json`` (:func:`calib_sweep.adaptive.read_state`): per cell
(grid point without its seed) the calibration sets run, the 95% Student-t CI half-width reached per
target and why it stopped (``target reached``, ``max_sets``, ``budget``, ``failed``).  The report shows
one row per cell and marks the cells that stopped on ``budget`` or ``max_sets``: their precision is below the
target the sweep was asked for, so their intervals are wider than planned; a cell with no stop reason
(the sweep was refused after a round, or killed) says so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

#: Stop reasons whose cells did not reach their target.
BELOW_TARGET = ("budget", "max_sets")


def _signature(record: dict) -> str:
    """What makes two adaptive sweeps the same sweep: the cells (their overrides) and the targets."""
    cells = sorted(tuple(c.get("overrides") or [c.get("cell")]) for c in record["cells"])
    return json.dumps([cells, record.get("targets")], sort_keys=True, default=str)


def states(paths: Iterable[str | Path]) -> list[tuple[Path, dict]]:
    """``(sweep folder, adaptive.json record)`` for every adaptive sweep at or below ``paths`` (sorted by folder).

    A rerun of the same command continues the sweep in a new folder (a claimed ``hydra.sweep.dir`` becomes
    ``<dir>_2``, :mod:`calib_sweep.claims`) and its record covers every set of the earlier one (finished jobs
    are skipped and counted), so of the sweeps with the same cells and targets only the latest record (by
    the state file's modification time) is kept; its record gets ``superseded``: the earlier folders' names.
    """
    from calib_sweep.adaptive import STATE_FILE, read_state

    found: dict[Path, tuple[float, dict]] = {}
    for path in map(Path, paths):
        if not path.is_dir():
            continue
        for marker in sorted(path.rglob(STATE_FILE)):  # the folder itself and every sweep below it
            record = read_state(marker.parent)
            if record is not None and isinstance(record.get("cells"), list):
                found[marker.parent.resolve()] = (marker.stat().st_mtime, record)
    groups: dict[str, list[tuple[float, Path, dict]]] = {}
    for folder, (mtime, record) in found.items():
        groups.setdefault(_signature(record), []).append((mtime, folder, record))
    out = []
    for group in groups.values():
        _, folder, record = max(group, key=lambda item: (item[0], str(item[1])))
        earlier = sorted(other.name for _, other, _ in group if other != folder)
        out.append((folder, {**record, "superseded": earlier} if earlier else record))
    return sorted(out, key=lambda item: item[0])


def table(paths: Iterable[str | Path]):
    """The report table (:class:`calib_sweep.report.display.Table`), or ``None`` when no sweep is adaptive."""
    from calib_sweep.report.display import Table

    rows = []
    for folder, record in states(paths):
        targets = record.get("targets") or {}
        for cell in record["cells"]:
            widths = []
            for name, target in targets.items():
                hw = (cell.get("half_widths") or {}).get(name)
                goal = target.get("half_width")
                shown = "n/a" if hw is None else (f"±{100 * hw:.3g}%" if target.get("relative") else f"±{hw:.3g}")
                aim = f"±{100 * goal:.3g}%" if target.get("relative") else f"±{goal:.3g}"
                widths.append(f"{name} {shown} (target {aim})")
            stop = cell.get("stop")
            if stop is None:
                shown = "not finished (the sweep was refused or stopped mid-round)"
            elif stop in BELOW_TARGET:
                shown = f"**{stop}: below target**"
            else:
                shown = str(stop)
            name = folder.name + (f" (continues {', '.join(record['superseded'])})" if record.get("superseded") else "")
            rows.append([name, cell.get("cell") or "(one cell)", str(cell.get("sets")), "; ".join(widths), shown])
    if not rows:
        return None
    return Table("Adaptive sweeps: calibration sets per cell and why each stopped",
                 ["sweep", "cell", "sets", "95% CI half-width reached", "stopped on"], rows,
                 note="hydra/sweeper=calib_adaptive added calibration sets (seeds) to each cell until its Student-t 95% "
                      "CI half-width met every target (relative for perplexity, absolute for accuracy), max_sets, or the "
                      "budget (max_jobs / max_hours). Cells marked 'budget' or 'max_sets' stopped before reaching their target. It "
                      "stops on precision, never on a p-value. A rerun of the same sweep (same cells and targets) "
                      "continues it: only its latest record is listed, naming the folders it continues.", anchor="adaptive")
