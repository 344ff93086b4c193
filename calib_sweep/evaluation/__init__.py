"""Evaluate stage: perplexity on held-out text (zero-shot tasks through lm-eval come later)."""

from __future__ import annotations

import logging
from typing import Any

import torch

from calib_sweep.evaluation.perplexity import perplexity

log = logging.getLogger(__name__)

__all__ = ["evaluate_model", "perplexity"]


def evaluate_model(model, tokenizer, eval_cfg: Any, texts: dict[str, torch.Tensor]) -> tuple[dict[str, float], dict[str, Any]]:
    """Evaluate a (compressed) model in memory as the ``eval`` config group says.

    Args:
        model: a Hugging Face causal LM.
        tokenizer: its tokenizer.
        eval_cfg: the ``eval`` config group (``perplexity.seq_len``, ``max_windows``, ``batch_size``).
        texts: held-out token streams by source name, each ``int64`` ``[n_tokens]``.

    Returns:
        ``(metrics, details)``: ``metrics`` maps ``perplexity/<text>`` to floats; ``details`` maps
        the same keys to the evaluation protocol (windows, tokens scored, ...).
    """
    metrics: dict[str, float] = {}
    details: dict[str, Any] = {}
    ppl_cfg = eval_cfg.perplexity
    for name, tokens in texts.items():
        result = perplexity(
            model, tokens, int(ppl_cfg.seq_len), ppl_cfg.max_windows, int(ppl_cfg.batch_size), text=f"{name}/heldout"
        )
        metrics[f"perplexity/{name}"] = result["perplexity"]
        details[f"perplexity/{name}"] = result["protocol"]
        log.info("perplexity/%s = %.3f", name, result["perplexity"])
    return metrics, details
