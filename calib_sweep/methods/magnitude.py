"""``method=magnitude``: magnitude pruning (Han et al. 2015; the baseline of SparseGPT and Wanda).

Layer-wise, the smallest ``|W|`` are zeroed, or in every run of ``M`` consecutive inputs of a row all
but the ``N`` largest.  Data-free.  Implemented here because llmcompressor's
``MagnitudePruningModifier`` is a training-time scheduler that changes nothing in ``oneshot``.
Config: ``sparsity``, ``structure`` (``unstructured`` or ``N:M``).
"""

from __future__ import annotations

from typing import Any

import torch

from calib_sweep.methods.registry import register_method
from calib_sweep.methods.targets import parse_structure, target_linears
from calib_sweep.methods.validation import check_pruning


@torch.no_grad()
def magnitude_prune(model, sparsity: float, structure: Any) -> None:
    """Zero the smallest-magnitude weights of every target layer in place.

    Unstructured: exactly ``round(sparsity * numel)`` weights per layer (layer-wise, ties broken by
    position); N:M: in every run of ``M`` consecutive inputs of a row, all but the ``N`` largest.
    """
    pattern = parse_structure(structure)
    for module in target_linears(model).values():
        w = module.weight
        if pattern is None:
            k = int(round(float(sparsity) * w.numel()))
            idx = torch.argsort(w.detach().abs().flatten(), stable=True)[:k]
            w.view(-1)[idx] = 0
        else:
            n, m = pattern
            blocks = w.view(w.shape[0], -1, m)
            drop = torch.argsort(blocks.abs(), dim=-1, stable=True)[..., : m - n]
            blocks.scatter_(-1, drop, 0.0)


def _compress(model, sequences: list, method_cfg: Any, record: dict):
    magnitude_prune(model, method_cfg.sparsity, method_cfg.get("structure"))
    return model


register_method("magnitude", kind="pruning", validate=check_pruning, compress=_compress, data_free=True)
