"""Compression overhead: calib_sweep's compress stage vs llmcompressor's ``oneshot`` called directly.

Same model weights, calibration set and recipe; each measured ``--repeats`` times alternately, best
time reported; the order alternates between repeats. Goal: ratio <= 1.05.

    python bench/compress_overhead.py [--method gptq|wanda] [--n-samples 16] [--seq-len 128]
"""

from __future__ import annotations

import argparse

import torch
from datasets import Dataset
from llmcompressor import oneshot

from common import calibration, setup, threads, timer

from calib_sweep import methods, models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="wanda")
    parser.add_argument("--n-samples", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cfg, tokenizer, device, dtype = setup([f"method={args.method}"])
    ids = calibration(cfg, tokenizer, args.n_samples, args.seq_len).input_ids
    times: dict[str, list[float]] = {"calib_sweep": [], "oneshot": []}
    data = Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist()})

    def run_ours() -> None:
        model = models.load_model(cfg.model, device, dtype)
        out: dict[str, float] = {}
        with timer(out, "t"):
            methods.compress(model, ids.to(device), cfg.method)
        times["calib_sweep"].append(out["t"])

    def run_theirs() -> None:
        model = models.load_model(cfg.model, device, dtype)
        out: dict[str, float] = {}
        with timer(out, "t"):
            oneshot(model=model, dataset=data, recipe=methods.build_recipe(cfg.method),
                    num_calibration_samples=ids.shape[0], max_seq_length=ids.shape[1], shuffle_calibration_samples=False)
        times["oneshot"].append(out["t"])

    for repeat in range(args.repeats):  # alternate which goes first, so warm-up and drift hit both
        for run in ((run_ours, run_theirs) if repeat % 2 == 0 else (run_theirs, run_ours)):
            run()
    ours, theirs = min(times["calib_sweep"]), min(times["oneshot"])
    print(f"compress overhead ({args.method}, {args.n_samples} x {args.seq_len} tokens, {device}, {threads()})")
    print(f"  calib_sweep compress stage: {ours:8.2f} s   (runs: {', '.join(f'{t:.2f}' for t in times['calib_sweep'])})")
    print(f"  llmcompressor oneshot     : {theirs:8.2f} s   (runs: {', '.join(f'{t:.2f}' for t in times['oneshot'])})")
    print(f"  ratio                     : {ours / theirs:8.3f}   (goal <= 1.05)")


if __name__ == "__main__":
    main()
