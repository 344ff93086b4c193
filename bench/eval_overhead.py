"""Evaluation overhead: calib_sweep's perplexity and zero-shot stage vs lm-eval called directly.

Same in-memory model and items. Perplexity: our non-overlapping-window perplexity vs lm-eval's
``loglikelihood_rolling`` on the same held-out tokens (the figures differ slightly by protocol, see
tests/test_perplexity_protocol.py; the time is what is compared). Zero-shot: our ``zero_shot`` vs
``lm_eval.simple_evaluate`` on the same local task folder, limit and batch size. Goal: ratios <= 1.05.

    python bench/eval_overhead.py [--task arc_easy] [--limit 50] [--windows 8]
"""

from __future__ import annotations

import argparse

from omegaconf import OmegaConf

from common import heldout, setup, threads, timer

from calib_sweep import models
from calib_sweep.evaluation import perplexity
from calib_sweep.evaluation.zero_shot import make_lm, run_lm_eval, zero_shot


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="arc_easy")
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument("--windows", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    cfg, tokenizer, device, dtype = setup([])
    model = models.load_model(cfg.model, device, dtype)
    tokens = heldout(cfg, tokenizer)[: args.windows * args.seq_len]
    t: dict[str, float] = {}

    with timer(t, "ppl_ours"):
        ours = perplexity(model, tokens, args.seq_len, batch_size=args.batch_size)["perplexity"]
    lm = make_lm(model, tokenizer, args.batch_size, max_length=args.seq_len)
    from lm_eval.api.instance import Instance

    text = tokenizer.decode(tokens.tolist())
    request = Instance(request_type="loglikelihood_rolling", doc={}, arguments=(text,), idx=0)
    with timer(t, "ppl_lmeval"):
        lm.loglikelihood_rolling([request], disable_tqdm=True)

    zs_cfg = OmegaConf.create({"tasks": [args.task], "limit": args.limit, "batch_size": args.batch_size,
                               "num_fewshot": 0, "bootstrap_iters": 0})
    zero_shot(model, tokenizer, zs_cfg)  # warm-up: converts and caches the task items once
    with timer(t, "zs_ours"):
        metrics, _ = zero_shot(model, tokenizer, zs_cfg)
    with timer(t, "zs_lmeval"):
        direct = run_lm_eval(make_lm(model, tokenizer, args.batch_size), [args.task], args.limit, bootstrap_iters=0)

    print(f"evaluation overhead ({device}, {threads()})")
    print(f"  perplexity {args.windows} x {args.seq_len}: calib_sweep {t['ppl_ours']:.2f} s (ppl {ours:.3f}), "
          f"lm-eval rolling {t['ppl_lmeval']:.2f} s, ratio {t['ppl_ours'] / t['ppl_lmeval']:.3f}")
    acc_direct = direct["results"][args.task]["acc,none"]
    print(f"  {args.task} x {args.limit}: calib_sweep {t['zs_ours']:.2f} s (acc {metrics[f'zeroshot/{args.task}/acc']:.3f}), "
          f"lm-eval {t['zs_lmeval']:.2f} s (acc {acc_direct:.3f}), ratio {t['zs_ours'] / t['zs_lmeval']:.3f}  (goal <= 1.05)")


if __name__ == "__main__":
    main()
