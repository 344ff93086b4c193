"""Parallel jobs on one machine: 4 jobs through ``hydra/launcher=local_parallel`` (joblib) vs the same 4
one at a time (``basic``), each job with ``threads=auto`` (its share of the cores).

Goal: parallel no slower than serial on 2 cores, faster on more.  Both sweeps use fresh folders and
``resume.enabled=false``; the caches of calibration-independent work (token streams, KL reference,
dense baseline) are warmed by a first job before either is timed, so both sides do the same work.

    python bench/parallel_vs_serial.py [--n-jobs 2] [--out bench/out/parallel]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

JOBS = ["method=wanda", "dataset=offline_wikipedia", "seed=0,1,2,3", "samples.n_samples=8", "samples.seq_len=128",
        "eval.perplexity.max_windows=4", "eval.zeroshot.limit=10", "logger=none", "resume.enabled=false"]


def sweep(folder: Path, launcher: list[str]) -> tuple[float, list[dict]]:
    """Run the 4-job sweep into ``folder``; return (wall seconds, records)."""
    cmd = [sys.executable, "-m", "calib_sweep", "-m", *JOBS, *launcher, f"hydra.sweep.dir={folder}"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode:
        sys.exit(proc.stderr[-3000:])
    return wall, [json.loads(p.read_text()) for p in folder.rglob("results.json")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-jobs", type=int, default=2, help="joblib workers (default 2)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "out" / "parallel"))
    args = parser.parse_args()
    out = Path(args.out) / time.strftime("%Y%m%d-%H%M%S")
    subprocess.run([sys.executable, "-m", "calib_sweep", *[j.split(",")[0] for j in JOBS], f"hydra.run.dir={out}/warm"],
                   capture_output=True, text=True, check=True)  # warm the caches once
    serial, serial_records = sweep(out / "serial", [])
    parallel, parallel_records = sweep(out / "parallel", ["hydra/launcher=local_parallel", f"hydra.launcher.n_jobs={args.n_jobs}"])
    cores = len(os.sched_getaffinity(0))
    threads = sorted({r["runtime"]["threads"] for r in parallel_records})
    print(f"{cores} cores; 4 Wanda jobs (8 x 128 calibration tokens, small eval), caches warm")
    print(f"serial (basic launcher, {serial_records[0]['runtime']['threads']} threads per job): {serial:.1f} s")
    print(f"parallel (joblib n_jobs={args.n_jobs}, {threads} threads per job): {parallel:.1f} s; "
          f"ratio parallel/serial {parallel / serial:.2f} (goal <= 1.00 on 2 cores, < 1 on more)")


if __name__ == "__main__":
    main()
