"""The report over 200 jobs: wall time of ``calib_sweep.report.write_report`` (t / chi-square / Bonett CIs,
Brown-Forsythe, Holm-corrected source comparisons with MDE and verdicts, noise floor, figures, CSV/Markdown/HTML)
on a synthetic sweep shaped like replication_cpu: 5 methods x 4 sources x 10 seeds (200 results.json, random but seeded figures, two of them
data-free), plus 12 noise-floor reruns.

Goal: under 30 s on a 2-core machine.

    python bench/report_200.py [--out bench/out/report_200]
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def build(sweep: Path) -> int:
    """Write the synthetic sweep; returns the number of job folders."""
    from test_report import _config, write_job  # the test suite's job-folder writer (Hydra layout + results.json)

    rng = random.Random(0)
    num = 0
    for method, spread in (("gptq", 0.3), ("sparsegpt", 0.8), ("wanda", 0.6), ("rtn", 0.0), ("magnitude", 0.0)):
        for source in ("wikipedia", "news", "science", "fiction"):
            for seed in range(10):
                config = _config(method, source, seed)
                config["threads"], config["perturb"] = "auto", {"row_order_seed": None}
                ppl = 30 + rng.gauss(0, spread)
                acc = {f"zeroshot/{t}/acc": 0.5 + rng.gauss(0, spread / 100) for t in ("arc_easy", "piqa")}
                metrics = {"perplexity/offline_wikipedia": ppl, **acc, "zeroshot/mean_acc": sum(acc.values()) / 2,
                           "compression/kl_from_dense": ppl / 100}
                write_job(sweep, num, config, metrics=metrics, extra={"runtime": {"hardware": {"id": "cpu bench x2 threads"}}})
                num += 1
    for method in ("gptq", "sparsegpt", "wanda"):
        for rows in (1, 2, 3, 4):
            config = _config(method, "wikipedia", 0)
            config["threads"], config["perturb"] = "auto", {"row_order_seed": rows}
            write_job(sweep, num, config, metrics={"perplexity/offline_wikipedia": 30 + rng.gauss(0, 0.1)})
            num += 1
    return num


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/out/report_200"))
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    n = build(args.out / "sweep")
    from calib_sweep.report import write_report

    start = time.perf_counter()
    files = write_report([args.out / "sweep"], args.out / "report", wandb=False, say=lambda m: None)
    wall = time.perf_counter() - start
    ev = files.summary.evidence
    print(f"report over {n} job folders: {wall:.1f} s (goal < 30 s); {len(files.summary.groups)} groups, "
          f"{len(ev.comparisons)} source comparisons, {len(ev.dispersion_tests)} dispersion tests, "
          f"{len(ev.noise)} noise-floor rows, {len(files.csvs)} CSV files, {len(files.figures)} figures")
    return 0


if __name__ == "__main__":
    sys.exit(main())
