"""Cost of the per-layer diagnostics (``eval.layer_diagnostics``): the default job (embedded SmolLM2-135M,
32 x 256 calibration tokens, eval=cpu) for each method given, with the diagnostics on; prints the time of
the ``diagnostics`` stage against the whole job, and the layers with the largest library error and output
error (the figures quoted in the README).

Goal: diagnostics under 10% of the job.

    python bench/diagnostics_cost.py [--methods gptq,wanda] [--out bench/out/diagnostics]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="gptq,wanda")
    parser.add_argument("--out", type=Path, default=Path("bench/out/diagnostics"))
    args = parser.parse_args()
    for method in args.methods.split(","):
        folder = args.out / method
        shutil.rmtree(folder, ignore_errors=True)  # a claimed folder is never reused: start clean
        shutil.rmtree(f"{folder}_2", ignore_errors=True)
        proc = subprocess.run([sys.executable, "-m", "calib_sweep", f"method={method}", "logger=none",
                               "eval.layer_diagnostics=true", f"hydra.run.dir={folder}"], capture_output=True, text=True)
        if proc.returncode:
            print(proc.stderr[-2000:])
            return proc.returncode
        record = json.loads((folder / "results.json").read_text())
        timings, layers = record["timings"], record["layers"]
        total = sum(timings.values())
        share = timings["diagnostics"] / total
        print(f"{method}: job {total:.1f} s, diagnostics {timings['diagnostics']:.2f} s = {100 * share:.1f}% "
              f"(goal < 10%); {len(layers['names'])} layers, {len(json.dumps(layers)) / 1024:.1f} KB in results.json")
        for field in ("library_error", "output_error"):
            if field in layers:
                top = sorted(zip(layers[field], layers["names"]), key=lambda t: -(t[0] or 0))[:3]
                print(f"  largest {field}: " + ", ".join(f"{name} {value:.3g}" for value, name in top))
        print(f"  perplexity {record['metrics']['perplexity/offline_wikipedia']:.2f}, "
              f"KL {record['metrics'].get('compression/kl_from_dense', float('nan')):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
