"""Verification: a compressed model is checked against its config before it is evaluated.

:func:`verify` checks, per target layer (every ``nn.Linear`` but the output head), what the method's
``kind`` promises: the achieved sparsity and N:M pattern of a pruned layer, or the number of distinct
values per quantization group (SpQR: plus its full-precision outliers); every method but a kind ``none``
one must change at least one layer, and no weight may be NaN or Inf.  A method's own ``verify`` (see
:func:`calib_sweep.methods.registry.register_method`) runs after these checks.
"""

from __future__ import annotations

from typing import Any

import torch

from calib_sweep.errors import CompressionError
from calib_sweep.methods.registry import RECORD, get_method
from calib_sweep.methods.targets import fingerprint, parse_structure, target_linears


def _distinct_per_group(weight: torch.Tensor, group: int | None, perm: torch.Tensor | None = None) -> torch.Tensor:
    """Number of distinct values in each quantization group of a 2-D weight; shape ``[out, n_groups]``."""
    w = weight.detach().float()
    if perm is not None:
        w = w[:, perm.to(w.device)]
    out, width = w.shape
    group = width if group in (None, -1) else int(group)
    w = w.reshape(out, width // group, group)
    s, _ = torch.sort(w, dim=-1)
    return 1 + (s[..., 1:] != s[..., :-1]).sum(dim=-1)


def verify(model, method_cfg: Any, before: dict[str, tuple[float, float]], tolerance: float = 0.001) -> dict:
    """Check that compression happened as configured and return the figures for ``results.json``.

    Pruning: the achieved sparsity (share of exact zeros) of every target layer must be within
    ``tolerance`` (absolute, i.e. 0.1%) of ``method.sparsity``; for N:M every block of M along the
    input dimension holds at most N non-zeros.  Quantization: every group holds at most
    ``2**w_bits`` distinct values (SpQR: plus its full-precision outliers in that group, groups taken
    in its act-order column order; gptq with ``backend: optimum`` and ``act_order``: groups taken as
    gptqmodel's ``g_idx`` formed them).  Every method except dense must change at least one layer.
    Then the method's own ``verify``, if it registered one.

    Args:
        model: the compressed model.
        method_cfg: the ``method`` config group.
        before: :func:`fingerprint` of the model before compression.
        tolerance: allowed absolute sparsity deviation per layer.

    Returns:
        ``{"summary": {...}, "layers": {name: figures}}``, plus ``"damping"`` (``{layer: fraction of
        the mean Hessian diagonal used}``) for gptq/sparsegpt/spqr; summary has ``max_damp`` and, for
        SpQR, ``avg_bits``, ``outliers``, ``outlier_fraction``.

    Raises:
        CompressionError: NaN/Inf weights, unchanged weights, a layer off its target, or what the method's
            own ``verify`` refuses.
    """
    name = method_cfg.name
    method = get_method(name)
    kind = method.kind
    record = getattr(model, RECORD, {}) or {}
    spqr_layers = (record.get("spqr") or {}).get("layers", {})
    after = fingerprint(model)
    layers: dict[str, dict] = {}
    problems: list[str] = []
    with torch.no_grad():
        for layer_name, module in target_linears(model).items():
            w = module.weight
            figures: dict[str, Any] = {"changed": after[layer_name] != before.get(layer_name)}
            if not torch.isfinite(w).all():
                problems.append(f"{layer_name} has NaN or Inf weights")
            if kind == "pruning":
                zeros = float((w == 0).float().mean())
                figures["sparsity"] = round(zeros, 6)
                if abs(zeros - float(method_cfg.sparsity)) > tolerance:
                    problems.append(f"{layer_name} sparsity {zeros:.4f} != target {method_cfg.sparsity}")
                pattern = parse_structure(method_cfg.get("structure"))
                if pattern is not None:
                    n, m = pattern
                    nonzero = (w != 0).reshape(w.shape[0], -1, m).sum(-1)
                    figures["nm_ok"] = bool((nonzero <= n).all())
                    if not figures["nm_ok"]:
                        problems.append(f"{layer_name} breaks the {n}:{m} pattern")
            elif kind == "quantization":
                allowed = 2 ** int(method_cfg.w_bits)
                spqr = spqr_layers.get(layer_name)
                perm = spqr.perm if spqr else record.get("group_perm", {}).get(layer_name)
                distinct = _distinct_per_group(w, method_cfg.group_size, perm)
                figures["max_distinct_per_group"] = int(distinct.max())
                figures["n_groups"] = int(distinct.numel())
                excess = distinct
                if spqr is not None:
                    excess = distinct - spqr.outlier_counts.to(distinct.device).long()
                    figures["outliers"] = spqr.outliers
                    figures["max_distinct_per_group_without_outliers"] = int(excess.max())
                if int(excess.max()) > allowed:
                    problems.append(
                        f"{layer_name} has a group with {int(excess.max())} distinct values > 2^{method_cfg.w_bits}"
                    )
            if layer_name in record.get("damping", {}):
                figures["damp"] = record["damping"][layer_name]
            layers[layer_name] = figures
    changed = sum(f["changed"] for f in layers.values())
    if kind != "none" and changed == 0:
        problems.insert(0, f"method {name} changed no weight of the {len(layers)} target layers")
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise CompressionError(f"compression check failed: {problems[0]}{more}")
    summary: dict[str, Any] = {"method": name, "kind": kind, "layers": len(layers), "layers_changed": changed}
    if "calibration_tokens" in record:
        summary["calibration_tokens"] = record["calibration_tokens"]
    if kind == "pruning":
        values = [f["sparsity"] for f in layers.values()]
        summary.update(
            target_sparsity=float(method_cfg.sparsity),
            structure=str(method_cfg.get("structure", "unstructured")),
            mean_sparsity=sum(values) / len(values),
            min_sparsity=min(values),
            max_sparsity=max(values),
        )
    elif kind == "quantization":
        summary.update(
            w_bits=int(method_cfg.w_bits),
            group_size=method_cfg.group_size,
            max_distinct_per_group=max(f["max_distinct_per_group"] for f in layers.values()),
        )
    report: dict[str, Any] = {"summary": summary, "layers": layers}
    if record.get("damping"):
        report["damping"] = dict(record["damping"])
        summary["max_damp"] = max(record["damping"].values())
        summary["damp_raised_layers"] = sum(
            1 for v in record["damping"].values() if v > float(method_cfg.damp_percent) * (1 + 1e-9)
        )
    if record.get("spqr"):
        summary.update(record["spqr"]["summary"])
    if method.verify is not None:
        method.verify(model, method_cfg, report)
    return report
