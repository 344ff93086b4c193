"""``method=sparsegpt``: SparseGPT (Frantar & Alistarh 2023, "SparseGPT: Massive Language Models Can Be
Accurately Pruned in One-Shot", Alg. 1): OBS-style pruning with the inverse Hessian of the layer inputs.

Via llmcompressor's ``SparseGPTModifier``; damping raised tenfold while the Cholesky factorization fails
(:mod:`calib_sweep.methods.llmc`), recorded per layer.  Config: ``sparsity``, ``structure``
(``unstructured`` or ``N:M``), ``damp_percent``, ``block_size``.
"""

from __future__ import annotations

from typing import Any

from calib_sweep.methods.llmc import IGNORE, mask_structure, oneshot_compress
from calib_sweep.methods.registry import register_method
from calib_sweep.methods.validation import check_damp, check_pruning


def validate(method_cfg: Any, targets: dict) -> None:
    """``damp_percent`` in (0, 1), then sparsity and structure (:func:`check_pruning`)."""
    check_damp(method_cfg)
    check_pruning(method_cfg, targets)


def recipe(method_cfg: Any, model=None) -> list:
    """``[SparseGPTModifier]`` on every ``Linear`` but the head."""
    from llmcompressor.modifiers.pruning import SparseGPTModifier

    return [
        SparseGPTModifier(
            sparsity=float(method_cfg.sparsity),
            mask_structure=mask_structure(method_cfg),
            dampening_frac=float(method_cfg.damp_percent),
            block_size=int(method_cfg.get("block_size", 128)),
            targets=["Linear"],
            ignore=IGNORE,
        )
    ]


register_method("sparsegpt", kind="pruning", validate=validate, recipe=recipe, compress=oneshot_compress(recipe))
