"""GPU benchmark at the paper's size: GPTQ, SparseGPT and Wanda on 128 x 2,048 calibration tokens, on the
Llama-2-7B shape with random weights (``model=llama2_7b_random``) and on both embedded models; for each:
compress time and peak GPU memory through calib_sweep, the same through llmcompressor's ``oneshot``
called directly, and their ratio (goal <= 1.05).  Sized for under 8 minutes on one H200.

    python bench/gpu_paper_size.py                      # the GPU run (one command; prints a summary table)
    python bench/gpu_paper_size.py --check              # CPU dry run of the same steps on tiny shapes (~1 min)

Nothing here needs weights to travel, a package index or the Hugging Face Hub:

* The 7B shape is the architecture of ``conf/model/llama2_7b_random.yaml`` with seeded random weights
  (``model.init=random``): timing and memory only.  By default only its first ``--layers-7b`` (4) of
  32 decoder layers are built and timed, and the full-model time is estimated by scaling with the
  layer count (x 32/4; fixed costs such as tracing are scaled too, so this errs high); peak memory is
  estimated as the measured peak plus the weights of the layers not built.  ``--layers-7b 32`` times
  the whole model (about 8x longer).
* The embedded models are used with their real weights when their converted folders are in the cache
  (``$CALIB_SWEEP_CACHE``); otherwise (an air-gapped machine: their assets are 93 and 240 MB) their
  architectures with random weights (``smollm2_135m_random``, ``gemma3_270m_random``), said so per line.
* Calibration text is ``offline_code`` (the running Python's standard library: nothing to fetch).
* The tokenizer is the embedded SmolLM2's: from the cache when converted there, else from
  ``bench/out/gpu_bundle/tokenizer-smollm2`` (``bench/gpu_bundle.sh`` puts it there), or ``--tokenizer``.

Steps run in order of importance (7B shape first) and a step is skipped, with a line saying so, once
``--budget`` seconds have passed, so the run ends in time even on a slower GPU.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

import torch

from common import calibration, heldout, setup

from calib_sweep import assets, methods, models
from calib_sweep.evaluation import perplexity

BUNDLE_TOKENIZER = Path(__file__).resolve().parent / "out" / "gpu_bundle" / "tokenizer-smollm2"
EMBEDDED = {"smollm2_135m": ("smollm2-135m-instruct", "smollm2_135m_instruct_gguf"),
            "gemma3_270m": ("gemma-3-270m", "gemma3_270m_gguf")}
LLAMA2_7B_LAYERS = 32


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def reset_peak() -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def peak_gib() -> float:
    """Peak allocated GPU memory since :func:`reset_peak`, GiB (0 without CUDA: the --check run)."""
    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0


def free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def timed(fn) -> float:
    """Wall-clock seconds of ``fn()`` with the GPU synchronised before and after."""
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def embedded_cached(name: str) -> bool:
    """Whether the embedded model's converted folder is in the cache (nothing is fetched to find out)."""
    folder_name, asset = EMBEDDED[name]
    sha = assets.ASSETS[asset].sha256[:12]
    return (assets.cache_dir() / "models" / f"{folder_name}-{sha}-c{models.CONVERSION_VERSION}" / "config.json").is_file()


def tokenizer_override(choice: str) -> list[str]:
    """``model.tokenizer=...`` for the random-weight configs (they name ``smollm2_135m`` by default)."""
    if choice != "auto":
        return [f"model.tokenizer={choice}"]
    if embedded_cached("smollm2_135m"):
        return []
    if (BUNDLE_TOKENIZER / "tokenizer.json").is_file():
        return [f"model.tokenizer={BUNDLE_TOKENIZER}"]
    raise SystemExit(
        "no SmolLM2 tokenizer here: the embedded model is not in the cache and bench/out/gpu_bundle/tokenizer-smollm2 "
        "is missing. Fix: run bench/gpu_bundle.sh on a machine with the cache and carry bench/out/gpu_bundle, "
        "or pass --tokenizer <folder with tokenizer.json>."
    )


def plan(args) -> list[dict]:
    """The models to run, most important first: overrides, label, layer scaling."""
    tok = tokenizer_override(args.tokenizer)
    runs = []
    for name in args.models.split(","):
        if name == "llama2_7b":
            layers = LLAMA2_7B_LAYERS if args.layers_7b <= 0 else min(args.layers_7b, LLAMA2_7B_LAYERS)
            overrides = ["model=llama2_7b_random", *tok]
            if args.check:  # CPU dry run: the same code on a narrow 1-layer version of the shape
                layers = 1
                overrides += ["model.config.hidden_size=256", "model.config.intermediate_size=512",
                              "model.config.num_attention_heads=4", "model.config.num_key_value_heads=4"]
            if layers < LLAMA2_7B_LAYERS:
                overrides.append(f"model.config.num_hidden_layers={layers}")
            runs.append({"name": name, "overrides": overrides, "random": True, "layers": layers,
                         "label": f"Llama-2-7B shape, random weights, first {layers} of {LLAMA2_7B_LAYERS} decoder layers"
                         if layers < LLAMA2_7B_LAYERS else "Llama-2-7B shape, random weights, all 32 decoder layers"})
        elif name in EMBEDDED:
            real = args.embedded == "real" or (args.embedded == "auto" and not args.check and embedded_cached(name))
            if real:
                runs.append({"name": name, "overrides": [f"model={name}"], "random": False, "layers": None,
                             "label": f"{name}, real weights (embedded)"})
            else:
                overrides = [f"model={name}_random", *tok] + (["model.config.num_hidden_layers=1"] if args.check else [])
                why = "1 layer (--check)" if args.check else "embedded model not in the cache" if args.embedded == "auto" else "--embedded random"
                runs.append({"name": name, "overrides": overrides, "random": True, "layers": None,
                             "label": f"{name} shape, random weights ({why})"})
        else:
            raise SystemExit(f"--models: unknown {name!r}; use llama2_7b, smollm2_135m, gemma3_270m")
    return runs


def warm_up(args, tok: list[str], device) -> None:
    """One tiny compression first, so CUDA/cuBLAS start-up and first-call costs hit neither timed side."""
    cfg, tokenizer, device, dtype = setup(["model=llama2_7b_random", *tok, "model.config.num_hidden_layers=1",
                                           "model.config.hidden_size=128", "model.config.intermediate_size=256",
                                           "model.config.num_attention_heads=2", "model.config.num_key_value_heads=2",
                                           "method=gptq", "method.group_size=64", "samples=tiny", f"dataset={args.dataset}",
                                           f"device={args.device}"])
    ids = calibration(cfg, tokenizer).input_ids.to(device)
    methods.compress(models.load_model(cfg.model, device, dtype), ids, cfg.method)
    free()


def direct_oneshot(cfg, ids: torch.Tensor, device, dtype) -> tuple[float, float]:
    """llmcompressor's ``oneshot`` called directly on a fresh copy of the model, same rows and recipe."""
    from datasets import Dataset
    from llmcompressor import oneshot

    model = models.load_model(cfg.model, device, dtype)
    rows = ids.cpu()
    data = Dataset.from_dict({"input_ids": rows.tolist(), "attention_mask": torch.ones_like(rows).tolist()})
    recipe = methods.build_recipe(cfg.method, model)
    reset_peak()
    seconds = timed(lambda: oneshot(model=model, dataset=data, recipe=recipe, num_calibration_samples=rows.shape[0],
                                    max_seq_length=rows.shape[1], shuffle_calibration_samples=False, batch_size=1))
    peak = peak_gib()
    del model
    free()
    return seconds, peak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="llama2_7b,smollm2_135m,gemma3_270m")
    parser.add_argument("--methods", default="gptq,sparsegpt,wanda")
    parser.add_argument("--layers-7b", type=int, default=4, help="decoder layers of the 7B shape to build and time (0 = all 32)")
    parser.add_argument("--direct", default="llama2_7b:gptq,sparsegpt,wanda;smollm2_135m:gptq;gemma3_270m:gptq",
                        help="model:methods also timed through oneshot directly ('' = none)")
    parser.add_argument("--embedded", choices=("auto", "real", "random"), default="auto",
                        help="embedded models: real weights from the cache, or their shapes with random weights")
    parser.add_argument("--tokenizer", default="auto", help="folder with the SmolLM2 tokenizer files (auto: cache, then the bundle)")
    parser.add_argument("--dataset", default="offline_code")
    parser.add_argument("--budget", type=float, default=420.0, help="seconds after which remaining steps are skipped")
    parser.add_argument("--check", action="store_true", help="CPU dry run on tiny shapes and 4 x 64 tokens (no timings worth reading)")
    args = parser.parse_args()
    start = time.perf_counter()
    if args.check:
        args.device = "cpu"
        print("CPU check only (--check): tiny shapes, 4 x 64 tokens, float32; timings mean nothing", flush=True)
    elif not torch.cuda.is_available():
        print("no CUDA device: this script times the paper-sized run on a GPU and has nothing to measure here. "
              "`python bench/gpu_paper_size.py --check` runs the same steps on tiny shapes on this CPU.", file=sys.stderr)
        return 1
    else:
        args.device = "cuda"
    import llmcompressor
    import transformers

    device_name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(f"device {device_name}, torch {torch.__version__}, transformers {transformers.__version__}, "
          f"llmcompressor {llmcompressor.__version__}; calibration {args.dataset}, "
          f"{'4 x 64 (check)' if args.check else '128 x 2048'} tokens", flush=True)
    direct = {}
    for part in filter(None, args.direct.split(";")):
        model_name, _, names = part.partition(":")
        direct[model_name] = set(names.split(","))
    runs = plan(args)
    samples = "samples=tiny" if args.check else "samples=paper"
    warm_up(args, tokenizer_override(args.tokenizer), args.device)
    print(f"warm-up done at {time.perf_counter() - start:.0f} s", flush=True)
    summary = []
    for run in runs:
        print(f"\n{run['label']}:", flush=True)
        base = [*run["overrides"], samples, f"dataset={args.dataset}", f"device={args.device}"]
        ids = held = None
        for name in args.methods.split(","):
            if time.perf_counter() - start > args.budget:
                print(f"  {name:10s} skipped: --budget {args.budget:.0f} s used up", flush=True)
                summary.append((run, name, None, None, None, None))
                continue
            group = ["method.group_size=128"] if name == "gptq" and run["name"] == "llama2_7b" and not args.check else []
            cfg, tokenizer, device, dtype = setup([*base, f"method={name}", *group])
            if ids is None:
                t0 = time.perf_counter()
                ids = calibration(cfg, tokenizer).input_ids
                print(f"  calibration set {tuple(ids.shape)} in {time.perf_counter() - t0:.1f} s; dtype {dtype}", flush=True)
                if not run["random"]:
                    held = heldout(cfg, tokenizer, args.dataset)
            bos = models.bos_token_id(cfg.model, tokenizer)
            order = ["ours", "direct"] if len(summary) % 2 == 0 else ["direct", "ours"]  # alternate who goes first
            wants_direct = name in direct.get(run["name"], set())
            result = {}
            for side in order:
                if side == "direct" and not wants_direct:
                    continue
                if side == "direct":
                    result["direct"] = direct_oneshot(cfg, ids, device, dtype)
                    continue
                model = models.load_model(cfg.model, device, dtype)
                reset_peak()
                holder = {}
                seconds = timed(lambda: holder.setdefault("m", methods.compress(model, ids.to(device), cfg.method)))
                result["ours"] = (seconds, peak_gib())
                if held is not None:
                    result["ppl"] = perplexity(holder["m"], held, 2048 if not args.check else 64, batch_size=8,
                                               bos_token_id=bos, max_windows=None if not args.check else 4)["perplexity"]
                del model, holder
                free()
            ours_s, ours_peak = result["ours"]
            line = f"  {name:10s} calib_sweep {ours_s:7.1f} s, peak GPU {ours_peak:6.2f} GiB"
            if "direct" in result:
                line += f" | oneshot directly {result['direct'][0]:7.1f} s, peak {result['direct'][1]:6.2f} GiB" \
                        f" | ratio {ours_s / result['direct'][0]:.3f} (goal <= 1.05)"
            if "ppl" in result:
                line += f" | held-out ppl {result['ppl']:.2f}"
            print(line, flush=True)
            full_s = full_peak = None
            if run["layers"] is not None and run["layers"] < LLAMA2_7B_LAYERS:
                scale = LLAMA2_7B_LAYERS / run["layers"]
                config = models.load_config(cfg.model)
                layer_bytes = sum(p.numel() for p in _one_layer_params(config)) * torch.finfo(dtype).bits // 8
                full_s = ours_s * scale
                full_peak = ours_peak + (LLAMA2_7B_LAYERS - run["layers"]) * layer_bytes / 2**30
                print(f"  {'':10s} full 32 layers (ESTIMATE: {run['layers']}-layer time x {scale:g} by layer count; peak "
                      f"+ {LLAMA2_7B_LAYERS - run['layers']} layers' {dtype} weights): ~{full_s:.0f} s, peak GPU ~{full_peak:.1f} GiB",
                      flush=True)
            summary.append((run, name, result["ours"], result.get("direct"), full_s, full_peak))
        free()
    size = "4 x 64 (--check: timings mean nothing)" if args.check else "128 x 2048"
    print(f"\nsummary ({device_name}, {size} tokens of {args.dataset}; total wall time {time.perf_counter() - start:.0f} s):")
    print("| model | method | calib_sweep s | peak GiB | oneshot s | ratio | full 7B estimate |")
    print("|---|---|---|---|---|---|---|")
    for run, name, ours, theirs, full_s, full_peak in summary:
        if ours is None:
            print(f"| {run['label']} | {name} | skipped (budget) | | | | |")
            continue
        ratio = f"{ours[0] / theirs[0]:.3f}" if theirs else "-"
        est = f"~{full_s:.0f} s, ~{full_peak:.1f} GiB" if full_s is not None else "-"
        print(f"| {run['label']} | {name} | {ours[0]:.1f} | {ours[1]:.2f} | {f'{theirs[0]:.1f}' if theirs else '-'} | {ratio} | {est} |")
    return 0


def _one_layer_params(config):
    """The parameters of one decoder layer of ``config``'s architecture (built on the meta device)."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        one = AutoModelForCausalLM.from_config(config)
    return list(one.model.layers[0].parameters())


if __name__ == "__main__":
    sys.exit(main())
