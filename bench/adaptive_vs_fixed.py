"""Adaptive vs fixed number of calibration sets (issue 30 item 5): jobs spent and precision reached.

Compares one or more finished adaptive sweeps (``hydra/sweeper=calib_adaptive``; their folders hold
``adaptive.json``, :mod:`calib_sweep.adaptive`) with the fixed grid that runs ``--fixed-sets`` seeds
(0, 1, ..., k-1) of every cell, read from finished job records (``results.json`` files below
``--records``, e.g. the committed archive ``docs/replication_v2/records``).  A cell is matched to its fixed
jobs by ``method.name`` and ``dataset.name`` (jobs with a row-order perturbation, the noise floor, are left
out; the records must hold one setting per method, as an experiment's archive does).  For each cell it prints, with the adaptive sweep's own targets and interval
(:func:`calib_sweep.adaptive.assess`: Student t 95% CI half-width of the mean, relative to the mean for
perplexity, absolute for accuracy):

    cell, fixed sets, fixed half-width per target, adaptive sets, adaptive half-width per target, stop reason,
    CPU time of the jobs each spends (sum of the jobs' ``timings`` stages but the once-per-machine
    ``dense_baseline``, seconds; an adaptive job missing from ``--records`` counts 0 s: point ``--records`` at
    every folder the sweep's jobs were recorded in)

and totals: jobs, job-hours, and cells meeting every target under each design.  ``--csv`` writes the
rows (one per cell) for docs.

    python bench/adaptive_vs_fixed.py multirun/adaptive_v2_gptq multirun/adaptive_v2_pruning \\
        --records docs/replication_v2/records --fixed-sets 5 --csv docs/replication_v2/adaptive_vs_fixed.csv

Only reads JSON; runs in a second or two (scipy for the t quantile).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from calib_sweep import adaptive  # noqa: E402
from calib_sweep.report.adaptive import states  # noqa: E402


def load_records(roots: list[Path]) -> dict[tuple[str, str], dict[int, dict]]:
    """(method, dataset) -> seed -> results.json of finished ok jobs without a row-order perturbation."""
    out: dict[tuple[str, str], dict[int, dict]] = {}
    for root in roots:
        for path in sorted(root.rglob("results.json")):
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            config = record.get("config") or {}
            if record.get("status") != "ok" or (config.get("perturb") or {}).get("row_order_seed") is not None:
                continue
            key = ((config.get("method") or {}).get("name"), (config.get("dataset") or {}).get("name"))
            out.setdefault(key, {}).setdefault(int(config.get("seed", -1)), record)
    return out


def job_seconds(record: dict) -> float:
    """CPU-machine seconds of one job: its stages, without the dense baseline it shares with every job."""
    return sum(float(v) for k, v in (record.get("timings") or {}).items()
               if k != "dense_baseline" and isinstance(v, (int, float)))


def cell_key(overrides: list[str]) -> tuple[str | None, str | None]:
    values = dict(o.split("=", 1) for o in overrides if "=" in o)
    return values.get("method"), values.get("dataset")


def compare(sweeps: list[Path], records: dict, fixed_sets: int) -> tuple[list[dict], list[str]]:
    """The per-cell rows and the target names, for every cell of the adaptive sweeps."""
    rows, names = [], []
    for folder, record in states(sweeps):
        targets = [adaptive.Target(n, t["half_width"], t["relative"]) for n, t in record["targets"].items()]
        names = names or [t.name for t in targets]
        for cell in record["cells"]:
            key = cell_key(cell.get("overrides") or [])
            jobs = records.get(key, {})
            fixed = [jobs[s] for s in range(fixed_sets) if s in jobs]
            ran = [jobs[s] for s in cell.get("seeds", []) if s in jobs]
            row = {"sweep": folder.name, "cell": cell.get("cell"), "method": key[0], "dataset": key[1],
                   "fixed_sets": len(fixed) if len(fixed) == fixed_sets else f"{len(fixed)} of {fixed_sets} found",
                   "adaptive_sets": cell.get("sets"), "stop": cell.get("stop"),
                   "fixed_seconds": round(sum(map(job_seconds, fixed)), 1),
                   "adaptive_seconds": round(sum(map(job_seconds, ran)), 1)}
            fixed_met = True
            for t in targets:
                got = adaptive.assess(t, [r["metrics"] for r in fixed])
                row[f"fixed_{t.name}_half_width"] = got["half_width"]
                row[f"adaptive_{t.name}_half_width"] = (cell.get("half_widths") or {}).get(t.name)
                row[f"{t.name}_target"] = t.half_width
                fixed_met = fixed_met and got["met"]
            row["fixed_met"] = fixed_met
            row["adaptive_met"] = all((cell.get("met") or {}).values()) if cell.get("met") else False
            rows.append(row)
    return rows, names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweeps", nargs="+", type=Path, help="adaptive sweep folders (or folders above them)")
    parser.add_argument("--records", nargs="+", type=Path, required=True, help="folders of the fixed grid's results.json")
    parser.add_argument("--fixed-sets", type=int, default=5, help="sets per cell of the fixed grid (seeds 0..k-1)")
    parser.add_argument("--csv", type=Path, help="write the per-cell rows here")
    args = parser.parse_args(argv)
    if args.fixed_sets < 2:
        parser.error(f"--fixed-sets={args.fixed_sets}: a CI half-width needs at least 2 sets")
    missing = [str(p) for p in [*args.sweeps, *args.records] if not p.is_dir()]
    if missing:
        parser.error(f"no such folder: {', '.join(missing)}. Fix: adaptive sweep folders, and --records folders of "
                     "results.json (e.g. docs/replication_v2/records)")
    rows, names = compare(args.sweeps, load_records(args.records), args.fixed_sets)
    if not rows:
        print(f"no adaptive sweep (adaptive.json) at or below {' '.join(map(str, args.sweeps))}", file=sys.stderr)
        return 1

    def pct(v, relative):
        return "n/a" if v is None else (f"{100 * v:.2f}%" if relative else f"{100 * v:.2f} pt")

    relative = {n: n.startswith("perplexity") for n in names}
    header = ["cell", "fixed sets", *[f"fixed {n}" for n in names], "adaptive sets", *[f"adaptive {n}" for n in names], "stop"]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for r in rows:
        print("| " + " | ".join([str(r["cell"]), str(r["fixed_sets"]),
                                 *[pct(r[f"fixed_{n}_half_width"], relative[n]) for n in names], str(r["adaptive_sets"]),
                                 *[pct(r[f"adaptive_{n}_half_width"], relative[n]) for n in names], str(r["stop"])]) + " |")
    fixed_jobs = sum(r["fixed_sets"] if isinstance(r["fixed_sets"], int) else 0 for r in rows)
    adaptive_jobs = sum(int(r["adaptive_sets"] or 0) for r in rows)
    fixed_h = sum(r["fixed_seconds"] for r in rows) / 3600
    adaptive_h = sum(r["adaptive_seconds"] for r in rows) / 3600
    print(f"cells {len(rows)}; jobs fixed {fixed_jobs} adaptive {adaptive_jobs}; job-hours fixed {fixed_h:.2f} "
          f"adaptive {adaptive_h:.2f}; cells meeting every target fixed {sum(r['fixed_met'] for r in rows)} "
          f"adaptive {sum(r['adaptive_met'] for r in rows)}")
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        with args.csv.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
