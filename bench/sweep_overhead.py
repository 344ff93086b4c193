"""Sweep overhead: an 8-job offline sweep's wall time vs the sum of its jobs' compress + evaluate time.

Runs ``python -m calib_sweep -m`` (wanda x 4 offline sources x 2 seeds, small sets) into a fresh
sweep folder, then reads every results.json: the difference is process start-up, loading, data
preparation and recording. Also counts how often the dense baseline was computed (goal: once).

    python bench/sweep_overhead.py [--out bench/out/sweep]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "out" / "sweep"))
    args = parser.parse_args()
    cmd = [sys.executable, "-m", "calib_sweep", "-m", "method=wanda",
           "dataset=offline_wikipedia,offline_news,offline_science,offline_fiction", "seed=0,1",
           "samples.n_samples=8", "samples.seq_len=128", "eval.perplexity.max_windows=4",
           "eval.zeroshot.limit=10", "logger=none", "resume.enabled=false", f"hydra.sweep.dir={args.out}"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode:
        sys.exit(proc.stderr[-3000:])
    records = [json.loads(p.read_text()) for p in Path(args.out).rglob("results.json")]
    stages = sum(r["timings"].get("compress", 0) + r["timings"].get("evaluate", 0) for r in records)
    computed = sum(1 for r in records if r.get("dense") and not r["dense"]["reused"])
    totals: dict[str, float] = {}
    for r in records:
        for stage, seconds in r["timings"].items():
            totals[stage] = totals.get(stage, 0.0) + seconds
    outside = wall - sum(totals.values())
    print(f"sweep of {len(records)} jobs: wall {wall:.1f} s, sum of compress + evaluate {stages:.1f} s, "
          f"overhead {wall - stages:.1f} s ({(wall - stages) / len(records):.1f} s per job), ratio {wall / stages:.2f}")
    others = ", ".join(f"{k} {v:.1f} s" for k, v in sorted(totals.items(), key=lambda kv: -kv[1]) if k not in ("compress", "evaluate"))
    print(f"the rest, summed over jobs: {others}; outside any stage (Hydra, imports, W&B, writing) {outside:.1f} s")
    print(f"dense baseline computed {computed} time(s), reused {len(records) - computed} time(s) "
          "(one per eval text set and model; reused from the cache when already there)")


if __name__ == "__main__":
    main()
