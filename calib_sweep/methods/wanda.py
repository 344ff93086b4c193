"""``method=wanda``: Wanda pruning (Sun et al. 2024, "A Simple and Effective Pruning Approach for Large
Language Models", Eq. 1: score ``|W_ij| * ||X_j||_2``, compared within each output row).

Via llmcompressor's ``WandaPruningModifier``.  Config: ``sparsity``, ``structure`` (``unstructured``
or ``N:M``).
"""

from __future__ import annotations

from typing import Any

from calib_sweep.methods.llmc import IGNORE, mask_structure, oneshot_compress
from calib_sweep.methods.registry import register_method
from calib_sweep.methods.validation import check_pruning


def recipe(method_cfg: Any, model=None) -> list:
    """``[WandaPruningModifier]`` on every ``Linear`` but the head."""
    from llmcompressor.modifiers.pruning import WandaPruningModifier

    return [WandaPruningModifier(sparsity=float(method_cfg.sparsity), mask_structure=mask_structure(method_cfg),
                                 targets=["Linear"], ignore=IGNORE)]


register_method("wanda", kind="pruning", validate=check_pruning, recipe=recipe, compress=oneshot_compress(recipe))
