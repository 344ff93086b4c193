"""The layers a method compresses, the N:M structure of a pruning pattern, and a fingerprint of the weights.

Imported by every other module of :mod:`calib_sweep.methods` (the registry, the llmcompressor runner,
diagnostics, verification, saving) and by nothing it imports, so that none of them has to reach back
into the package's face.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from calib_sweep.errors import ConfigError


def target_shapes(shapes: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
    """``{layer name: (out_features, in_features)}`` without the output head (``*lm_head``)."""
    return {name: shape for name, shape in shapes.items() if not name.endswith("lm_head")}


def target_linears(model) -> dict[str, torch.nn.Linear]:
    """The ``nn.Linear`` layers a method compresses: every one except the output head."""
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and not name.endswith("lm_head")
    }


def parse_structure(structure: Any) -> tuple[int, int] | None:
    """``"unstructured"`` -> None; ``"2:4"`` -> (2, 4).

    Raises:
        ConfigError: anything else, or N >= M.
    """
    if structure in (None, "unstructured", "0:0"):
        return None
    match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", str(structure))
    if not match or int(match.group(1)) < 1 or int(match.group(1)) >= int(match.group(2)):
        raise ConfigError(
            f"method.structure={structure!r} is not 'unstructured' or N:M with 0<N<M. Fix: e.g. method.structure=2:4."
        )
    return int(match.group(1)), int(match.group(2))


def fingerprint(model) -> dict[str, tuple[float, float]]:
    """Per target layer, ``(sum |w|, sum w^2)`` in float64: cheap evidence of whether weights changed."""
    with torch.no_grad():
        return {
            name: (float(m.weight.double().abs().sum()), float(m.weight.double().pow(2).sum()))
            for name, m in target_linears(model).items()
        }
