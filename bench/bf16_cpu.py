"""bf16 on the CPU: the default job's time and figures in float32 vs bfloat16, against the spread across
calibration sets.

Runs the default job (SmolLM2, GPTQ 4-bit g64, 32 x 256 offline Wikipedia) for seeds 0..N-1 in both
dtypes (one sweep each, fresh folders, no resume), then prints per dtype: mean job time (stages),
dense perplexity and mean zero-shot accuracy, GPTQ perplexity and accuracy per seed; and the
across-set SD (ddof=1, float32) next to the mean |bf16 - fp32| change per set.  ``dtype=auto``
should pick bf16 on CPUs only if that change is well below the SD.

    python bench/bf16_cpu.py [--seeds 4] [--out bench/out/bf16]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

PPL = "perplexity/offline_wikipedia"
ACC = "zeroshot/mean_acc"


def sweep(folder: Path, dtype: str, seeds: int) -> dict[int, dict]:
    cmd = [sys.executable, "-m", "calib_sweep", "-m", f"dtype={dtype}", f"seed=range(0,{seeds})", "logger=none",
           "resume.enabled=false", f"hydra.sweep.dir={folder}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(proc.stderr[-3000:])
    records = [json.loads(p.read_text()) for p in folder.rglob("results.json")]
    return {r["config"]["seed"]: r for r in records}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--out", default=str(Path(__file__).parent / "out" / "bf16"))
    args = parser.parse_args()
    out = Path(args.out) / time.strftime("%Y%m%d-%H%M%S")
    runs = {dtype: sweep(out / dtype, dtype, args.seeds) for dtype in ("float32", "bfloat16")}
    for dtype, records in runs.items():
        times = [sum(v for k, v in r["timings"].items() if k != "dense_baseline") for r in records.values()]
        dense = next(iter(records.values()))["dense"]["metrics"]
        print(f"{dtype}: job time (stages, dense baseline excluded) mean {statistics.mean(times):.1f} s "
              f"(compress {statistics.mean(r['timings']['compress'] for r in records.values()):.1f} s, evaluate "
              f"{statistics.mean(r['timings']['evaluate'] for r in records.values()):.1f} s); dense ppl {dense[PPL]:.3f}, "
              f"dense mean acc {dense[ACC]:.4f}; GPTQ ppl per seed "
              + ", ".join(f"{records[s]['metrics'][PPL]:.3f}" for s in sorted(records))
              + "; GPTQ mean acc per seed " + ", ".join(f"{records[s]['metrics'][ACC]:.3f}" for s in sorted(records)))
    fp32, bf16 = runs["float32"], runs["bfloat16"]
    for metric in (PPL, ACC):
        sd = statistics.stdev(fp32[s]["metrics"][metric] for s in fp32)
        change = statistics.mean(abs(bf16[s]["metrics"][metric] - fp32[s]["metrics"][metric]) for s in fp32)
        dense_change = abs(next(iter(bf16.values()))["dense"]["metrics"][metric] - next(iter(fp32.values()))["dense"]["metrics"][metric])
        print(f"{metric}: across-set SD (fp32, n={len(fp32)}) {sd:.4f}; mean |bf16 - fp32| per set {change:.4f} "
              f"({change / sd:.2f} SD); dense |bf16 - fp32| {dense_change:.4f}")


if __name__ == "__main__":
    main()
