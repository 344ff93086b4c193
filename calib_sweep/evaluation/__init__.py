"""Evaluate stage: perplexity on held-out text (zero-shot tasks through lm-eval come later)."""

from calib_sweep.evaluation.perplexity import perplexity

__all__ = ["perplexity"]
