"""GPU benchmark sized for ~10 minutes on one H200: paper-sized calibration (128 x 2,048 tokens) on
the embedded model, the same figures as the CPU scripts (compress time per method, peak GPU memory,
perplexity, overhead vs oneshot).

    python bench/gpu_paper_size.py [--methods gptq,wanda,sparsegpt]
"""

from __future__ import annotations

import argparse
import time

import torch

from common import calibration, heldout, setup

from calib_sweep import methods, models
from calib_sweep.evaluation import perplexity


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="gptq,wanda,sparsegpt")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this script is for a GPU machine")
    for name in args.methods.split(","):
        cfg, tokenizer, device, dtype = setup([f"method={name}", "samples=paper", "device=cuda"])
        ids = calibration(cfg, tokenizer).input_ids
        model = models.load_model(cfg.model, device, dtype)
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
        start = time.perf_counter()
        methods.compress(model, ids.to(device), cfg.method)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        ppl = perplexity(model, heldout(cfg, tokenizer), 2048, batch_size=8)["perplexity"]
        print(f"{name:10s} 128 x 2048 on {torch.cuda.get_device_name()}: compress {seconds:7.1f} s, "
              f"peak GPU {torch.cuda.max_memory_allocated() / 2**30:5.2f} GiB, held-out ppl {ppl:.3f}", flush=True)


if __name__ == "__main__":
    main()
