"""Evaluation overhead: calib_sweep's perplexity and zero-shot stage vs lm-eval called directly.

Same in-memory model and items. Perplexity: our non-overlapping-window perplexity vs lm-eval's
``loglikelihood_rolling`` on the same held-out tokens (the figures differ slightly by protocol, see
tests/test_perplexity_protocol.py; the time is what is compared). Zero-shot: our ``zero_shot`` vs
``lm_eval.simple_evaluate`` on the same local task folder, limit and batch size. Each is timed
``--repeats`` times, alternating which goes first; the best time is reported. Goal: ratios <= 1.05.

    python bench/eval_overhead.py [--task arc_easy] [--limit 50] [--windows 8]
"""

from __future__ import annotations

import argparse
import time

from lm_eval import evaluator
from lm_eval.api.instance import Instance
from lm_eval.tasks import TaskManager
from omegaconf import OmegaConf

from common import heldout, setup, threads

from calib_sweep import models
from calib_sweep.evaluation import perplexity
from calib_sweep.evaluation.tasks import task_folder
from calib_sweep.evaluation.zero_shot import make_lm, zero_shot


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="arc_easy")
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument("--windows", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    cfg, tokenizer, device, dtype = setup([])
    model = models.load_model(cfg.model, device, dtype)
    tokens = heldout(cfg, tokenizer)[: args.windows * args.seq_len]
    text = tokenizer.decode(tokens.tolist())
    request = Instance(request_type="loglikelihood_rolling", doc={}, arguments=(text,), idx=0)
    zs_cfg = OmegaConf.create({"tasks": [args.task], "limit": args.limit, "batch_size": args.batch_size,
                               "num_fewshot": 0, "bootstrap_iters": 0})
    zero_shot(model, tokenizer, zs_cfg)  # warm-up: converts and caches the task items once
    manager = TaskManager(include_path=str(task_folder([args.task])), include_defaults=False)
    found: dict[str, float] = {}

    def ppl_ours() -> None:
        found["ppl"] = perplexity(model, tokens, args.seq_len, batch_size=args.batch_size)["perplexity"]

    def ppl_lmeval() -> None:
        make_lm(model, tokenizer, args.batch_size, max_length=args.seq_len).loglikelihood_rolling([request], disable_tqdm=True)

    def zs_ours() -> None:
        found["acc"] = zero_shot(model, tokenizer, zs_cfg)[0][f"zeroshot/{args.task}/acc"]

    def zs_lmeval() -> None:  # lm-eval's own entry point on the same task folder, items and batch size
        result = evaluator.simple_evaluate(model=make_lm(model, tokenizer, args.batch_size), tasks=[args.task],
                                           num_fewshot=0, limit=args.limit, bootstrap_iters=0, task_manager=manager,
                                           batch_size=args.batch_size)
        found["acc_direct"] = result["results"][args.task]["acc,none"]

    t: dict[str, list[float]] = {}
    for repeat in range(args.repeats):  # alternate which goes first; best time of each is reported
        for pair in ((ppl_ours, ppl_lmeval), (zs_ours, zs_lmeval)):
            for fn in (pair if repeat % 2 == 0 else pair[::-1]):
                start = time.perf_counter()
                fn()
                t.setdefault(fn.__name__, []).append(time.perf_counter() - start)
    t = {k: min(v) for k, v in t.items()}
    ours, acc, acc_direct = found["ppl"], found["acc"], found["acc_direct"]

    print(f"evaluation overhead ({device}, {threads()})")
    print(f"  perplexity {args.windows} x {args.seq_len}: calib_sweep {t['ppl_ours']:.2f} s (ppl {ours:.3f}), "
          f"lm-eval rolling {t['ppl_lmeval']:.2f} s, ratio {t['ppl_ours'] / t['ppl_lmeval']:.3f}  (goal <= 1.05)")
    print(f"  {args.task} x {args.limit}: calib_sweep {t['zs_ours']:.2f} s (acc {acc:.3f}), "
          f"lm-eval {t['zs_lmeval']:.2f} s (acc {acc_direct:.3f}), ratio {t['zs_ours'] / t['zs_lmeval']:.3f}  (goal <= 1.05)")


if __name__ == "__main__":
    main()
