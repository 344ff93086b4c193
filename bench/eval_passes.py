"""Perplexity and KL passes: the LM head on 256 positions at a time (calib_sweep.models.logits) vs the
model's full-vocabulary logits for every position (the code before 2026-12-06), on the embedded models.

Per model and mode, in this process: held-out offline Wikipedia perplexity (``--windows`` x ``--seq-len``
tokens, ``--batch-size`` windows per pass, the default job's evaluation) and the KL passes (dense top-64
reference, then KL of the same model from it) on ``--kl-windows`` windows; best of ``--repeats``
seconds, and the peak resident memory above the resident memory before the pass (Linux: VmHWM reset
through /proc/self/clear_refs), and the figures of both modes.  One line per (model, pass)::

    <model> <pass> chunked <s> s full <s> s ratio <x> peak_extra_mb chunked <m> full <m> same <True|False>

    python bench/eval_passes.py [--models smollm2_135m gemma3_270m] [--windows 8] [--batch-size 4]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from common import heldout, setup, threads

from calib_sweep import models
from calib_sweep.evaluation import perplexity as perplexity_module
from calib_sweep.evaluation.perplexity import perplexity, stream_windows
from calib_sweep.methods import kl_from_reference, reference_logprobs
from calib_sweep.models import logits as logits_module

MODELS = ("smollm2_135m", "gemma3_270m")
#: The library's chunked split (kept before any mode switch replaces the module attribute).
_CHUNKED = logits_module.split_head


def _full_logits(model, input_ids):
    """The pre-2026-12-06 path: the model's own forward pass, logits ``[batch, seq_len, V]`` for every position."""
    return model(input_ids=input_ids, use_cache=False).logits, lambda rows: rows.float()


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _measure(fn, repeats: int):
    """``(value, best seconds, peak extra MiB)`` of ``fn()``."""
    best, extra, value = float("inf"), 0.0, None
    for _ in range(repeats):
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        before = _status_kb("VmRSS")
        start = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - start)
        extra = max(extra, (_status_kb("VmHWM") - before) / 1024)
    return value, best, extra


def _set_mode(chunked: bool) -> None:
    split = _CHUNKED if chunked else _full_logits
    perplexity_module.split_head = split
    logits_module.split_head = split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--windows", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--kl-windows", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    print(threads())
    for name in args.models:
        cfg, tokenizer, device, dtype = setup([f"model={name}"])
        model = models.load_model(cfg.model, device, dtype)
        bos = models.bos_token_id(cfg.model, tokenizer)
        tokens = heldout(cfg, tokenizer)
        kl_ids, _ = stream_windows(tokens, args.seq_len, args.kl_windows, bos)
        passes = {
            "perplexity": lambda: perplexity(model, tokens, args.seq_len, args.windows, args.batch_size,
                                             bos_token_id=bos)["perplexity"],
            "kl": lambda: kl_from_reference(model, kl_ids, reference_logprobs(model, kl_ids, top_k=64)),
        }
        for label, fn in passes.items():
            results = {}
            for chunked in (False, True):
                _set_mode(chunked)
                with torch.no_grad():
                    results[chunked] = _measure(fn, args.repeats)
            (v_full, s_full, m_full), (v_chunk, s_chunk, m_chunk) = results[False], results[True]
            same = abs(v_full - v_chunk) <= 1e-5 * max(1.0, abs(v_full))
            print(f"{name} {label} chunked {s_chunk:.2f} s full {s_full:.2f} s ratio {s_full / s_chunk:.2f} "
                  f"peak_extra_mb chunked {m_chunk:.0f} full {m_full:.0f} same {same}")
            print(f"    values: chunked {v_chunk:.6f} full {v_full:.6f}")
        _set_mode(True)
        del model


if __name__ == "__main__":
    main()
