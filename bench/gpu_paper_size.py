"""GPU benchmark sized for ~10 minutes on one H200: paper-sized calibration (128 x 2,048 tokens) on
both embedded models, the same figures as the CPU scripts: compress time per method, peak GPU memory,
held-out perplexity (dense and compressed), and the compress stage vs llmcompressor's ``oneshot``
called directly (overhead ratio, goal <= 1.05).

    python bench/gpu_paper_size.py [--models smollm2_135m,gemma3_270m] [--methods gptq,wanda,sparsegpt]

The models come from the cache (``$CALIB_SWEEP_CACHE``): on a machine without a package index, run
any job once elsewhere and copy the cache over.
"""

from __future__ import annotations

import argparse
import time

import torch
from datasets import Dataset

from common import calibration, heldout, setup

from calib_sweep import methods, models
from calib_sweep.evaluation import perplexity


def timed(fn) -> float:
    """Wall-clock seconds of ``fn()`` with the GPU synchronised before and after."""
    torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="smollm2_135m,gemma3_270m")
    parser.add_argument("--methods", default="gptq,wanda,sparsegpt")
    parser.add_argument("--overhead-method", default="gptq", help="method compared with oneshot directly ('' = skip)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this script is for a GPU machine")
    print(f"device {torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    for model_name in args.models.split(","):
        cfg, tokenizer, device, dtype = setup([f"model={model_name}", "samples=paper", "device=cuda"])
        bos = models.bos_token_id(cfg.model, tokenizer)
        held = heldout(cfg, tokenizer)
        dense = models.load_model(cfg.model, device, dtype)
        ppl = perplexity(dense, held, 2048, batch_size=8, bos_token_id=bos)["perplexity"]
        print(f"{model_name} dense ({dtype}): held-out ppl {ppl:.3f}", flush=True)
        del dense
        for name in args.methods.split(","):
            cfg, tokenizer, device, dtype = setup([f"model={model_name}", f"method={name}", "samples=paper", "device=cuda"])
            ids = calibration(cfg, tokenizer).input_ids.to(device)
            model = models.load_model(cfg.model, device, dtype)
            torch.cuda.reset_peak_memory_stats()
            holder = {}
            seconds = timed(lambda: holder.setdefault("m", methods.compress(model, ids, cfg.method)))
            peak = torch.cuda.max_memory_allocated() / 2**30
            ppl = perplexity(holder["m"], held, 2048, batch_size=8, bos_token_id=bos)["perplexity"]
            print(f"{model_name} {name:10s} 128 x 2048: compress {seconds:7.1f} s, peak GPU {peak:5.2f} GiB, "
                  f"held-out ppl {ppl:.3f}", flush=True)
            del model, holder
            if name == args.overhead_method:
                from llmcompressor import oneshot

                model = models.load_model(cfg.model, device, dtype)
                rows = ids.cpu()
                data = Dataset.from_dict({"input_ids": rows.tolist(), "attention_mask": torch.ones_like(rows).tolist()})
                direct = timed(lambda: oneshot(model=model, dataset=data, recipe=methods.build_recipe(cfg.method),
                                               num_calibration_samples=rows.shape[0], max_seq_length=rows.shape[1],
                                               shuffle_calibration_samples=False))
                print(f"{model_name} {name:10s} oneshot directly: {direct:7.1f} s, ratio {seconds / direct:.3f} "
                      "(goal <= 1.05; single run each)", flush=True)
                del model
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
