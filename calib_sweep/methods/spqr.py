"""SpQR: sparse-quantized representation (Dettmers et al. 2023, arXiv 2306.03078), on GPTQ's machinery.

No library offers SpQR, so it is implemented here after the paper's Algorithm 1 (Sec. 4.1-4.2):

* **GPTQ core** (Sec. 4.1, Alg. 1 lines 1-20): columns are quantized one at a time, each column's
  error ``(w - q) / U_jj`` is propagated to the not-yet-quantized columns through the upper Cholesky
  factor ``U`` of ``(H + lambda I)^-1``, ``H = 2 X X^T`` (the proxy Hessian of the layer inputs,
  accumulated with forward hooks over unpadded calibration sequences).  Optional ``act_order``
  permutes the columns by decreasing ``diag(H)`` first (the paper's "act order" permutation).
* **Small groups with quantized statistics** (Sec. 4.1 "bilevel quantization", Alg. 1 lines 6-9):
  each run of ``group_size`` (beta_1, e.g. 16) input columns gets, per output row, an asymmetric
  min-max scale and zero; the scales of ``stat_group`` (beta_2, e.g. 16) consecutive rows are then
  quantized to ``stat_bits`` (3) bits by their own min-max quantizer, and the zeros likewise.
* **Unstructured outliers** (Sec. 4.1 "high-sensitivity outliers", Alg. 1 ``get_outliers`` and
  lines 12-14): a weight whose leave-one-out removal from its group's quantizer reduces the
  group's Hessian-weighted error ``sum(((w - q) / U_jj)^2)`` by more than ``tau * s`` is left out
  of the statistics fit, and a weight whose own error ``((w - q) / U_jj)^2`` exceeds ``tau * s`` is
  kept in full precision (no error propagated).  ``s = mean_j(Var_i(W_ij) / U_jj^2)`` is the mean
  normalised error scale of the layer (as in the authors' reference code); ``tau`` is
  ``outlier_threshold`` (``inf``: no outliers).

Average storage per parameter (Sec. 4.2 and the reference implementation's
``get_average_number_of_bits``)::

    bits = w_bits + (stat_bits_scale + stat_bits_zero) / beta_1
                  + 2 * (16 + 16) / (beta_1 * beta_2)        # fp16 scale and zero of each 2nd-level group
                  + 32 * outliers / params                   # 16-bit value + 16-bit index per outlier

e.g. 3 bits, beta_1 = beta_2 = 16, 3-bit statistics, 1% outliers: 3 + 6/16 + 64/256 + 0.32 = 3.945.
Weights are stored back dequantized ("fake quantization") in the layer's dtype.

Registered as ``method=spqr``; config: ``w_bits``, ``group_size`` (beta_1), ``stat_bits``,
``stat_group`` (beta_2), ``outlier_threshold`` (tau), ``damp_percent``, ``act_order``, ``block_size``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from calib_sweep.errors import ConfigError
from calib_sweep.methods.hessian import accumulate_hessians, damped_inverse_cholesky
from calib_sweep.methods.registry import register_method
from calib_sweep.methods.targets import target_linears
from calib_sweep.methods.validation import check_damp, check_group, check_quantization, is_int

STAT_FP_BITS = 16


def average_bits(
    w_bits: int, group_size: int, stat_bits: int | None, stat_group: int, outlier_fraction: float
) -> float:
    """Average bits per parameter of SpQR storage (Dettmers et al. 2023, Sec. 4.2; see module doc).

    Args:
        w_bits: bits per weight.
        group_size: beta_1, input columns per first-level group.
        stat_bits: bits of the quantized scales and zeros (``None``: kept in fp16).
        stat_group: beta_2, first-level statistics per second-level group.
        outlier_fraction: outliers / parameters, in [0, 1].

    Returns:
        Bits per parameter (float).
    """
    if stat_bits:
        stats = 2 * stat_bits / group_size + 2 * (2 * STAT_FP_BITS) / (group_size * stat_group)
    else:
        stats = 2 * STAT_FP_BITS / group_size
    return float(w_bits + stats + 32 * outlier_fraction)


def _fit(x: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Asymmetric min-max quantizer along the last dim: ``(scale, zero)``, each ``[..., 1]``, float zero."""
    maxq = 2**bits - 1
    xmin = x.amin(-1, keepdim=True)
    xmax = x.amax(-1, keepdim=True)
    scale = (xmax - xmin) / maxq
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return scale, -xmin / scale


def _quant(x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int) -> torch.Tensor:
    """Dequantized ``(clamp(round(x / scale + zero), 0, 2^bits - 1) - zero) * scale``."""
    return (torch.clamp(torch.round(x / scale + zero), 0, 2**bits - 1) - zero) * scale


def _quantize_stat(stat: torch.Tensor, bits: int | None, stat_group: int) -> torch.Tensor:
    """Second-level quantization of a per-row statistic ``[m, 1]`` in groups of ``stat_group`` rows."""
    if not bits:
        return stat
    groups = stat.reshape(-1, stat_group)
    scale, zero = _fit(groups, bits)
    return _quant(groups, scale, zero, bits).reshape_as(stat)


def _leave_one_out_reduction(group: torch.Tensor, u_diag: torch.Tensor, bits: int) -> torch.Tensor:
    """Reduction of each row's error ``sum(((w - q) / u)^2)`` when each weight is left out of the fit.

    Args:
        group: ``[m, g]`` weights of one group; u_diag: ``[g]`` diagonal of U for its columns.

    Returns:
        ``[m, g]``: baseline error minus the error of the other ``g - 1`` weights under a quantizer
        fitted without weight ``k`` (SpQR Alg. 1, ``get_outliers``).
    """
    g = group.shape[1]
    idx = torch.arange(g, device=group.device)
    loo = idx[1:] - (idx[:, None] >= idx[1:]).to(idx.dtype)  # [g, g-1]: all columns but k
    data = group[:, loo]  # [m, g, g-1]
    scale, zero = _fit(data, bits)
    loo_err = ((_quant(data, scale, zero, bits) - data) / u_diag[loo]).square().sum(-1)
    scale, zero = _fit(group, bits)
    base_err = ((_quant(group, scale, zero, bits) - group) / u_diag).square().sum(-1, keepdim=True)
    return base_err - loo_err


@dataclass
class LayerResult:
    """What SpQR did to one layer (perm and outlier_counts serve :func:`calib_sweep.methods.verify`)."""

    outliers: int
    params: int
    damp_used: float
    perm: torch.Tensor | None  # int64 [n]: column order in which groups were formed, or None
    outlier_counts: torch.Tensor  # uint8 [m, n / group_size]: outliers per group (permuted order)


@torch.no_grad()
def spqr_quantize_layer(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    *,
    w_bits: int,
    group_size: int,
    stat_bits: int | None,
    stat_group: int,
    outlier_threshold: float,
    damp_percent: float,
    act_order: bool,
    block_size: int = 128,
    name: str = "layer",
) -> tuple[torch.Tensor, LayerResult]:
    """Quantize one weight matrix with SpQR (Dettmers et al. 2023, Alg. 1).

    Args:
        weight: ``[m, n]`` (out, in) weights, any float dtype; not modified.
        hessian: ``[n, n]`` ``2 X X^T`` (per-token mean) of the layer inputs.
        w_bits: bits per weight; group_size: beta_1 (divides ``n``); stat_bits: bits of scales and
            zeros (``None``/0 = fp16); stat_group: beta_2 (divides ``m``); outlier_threshold: tau
            (``inf`` disables outliers); damp_percent: first damping fraction (raised on failure, see
            :func:`calib_sweep.methods.hessian.damped_inverse_cholesky`); act_order: permute columns by
            decreasing ``diag(H)``; block_size: lazy-update block (a multiple of group_size).

    Returns:
        ``(dequantized weight [m, n] in weight.dtype, LayerResult)``.

    Raises:
        CompressionError: the Hessian is not finite or cannot be factorized.
    """
    m, n = weight.shape
    W = weight.detach().to(torch.float32).clone()
    H = hessian.detach().to(device=W.device, dtype=torch.float32)
    W[:, torch.diagonal(H) == 0] = 0  # dead inputs (GPTQ reference code)
    perm = None
    if act_order:
        perm = torch.argsort(torch.diagonal(H), descending=True)
        W = W[:, perm]
        H = H[perm][:, perm]
    U, damp_used, _ = damped_inverse_cholesky(H, damp_percent, name)
    u_diag = torch.diagonal(U)
    block_size = max(group_size, (block_size // group_size) * group_size)

    finite = math.isfinite(outlier_threshold)
    threshold = float("inf")
    if finite:
        threshold = float(outlier_threshold) * float((W.var(dim=0) / u_diag.square()).mean())

    Q = torch.zeros_like(W)
    outlier_mask = torch.zeros(m, n, dtype=torch.bool, device=W.device)
    scale = zero = None
    for b1 in range(0, n, block_size):
        b2 = min(b1 + block_size, n)
        errors = torch.zeros(m, b2 - b1, device=W.device)
        for j in range(b1, b2):
            if (j - b1) % group_size == 0 or scale is None:
                group = W[:, j : j + group_size]
                if finite:
                    likely = _leave_one_out_reduction(group, u_diag[j : j + group_size], w_bits) > threshold
                    keep = (~likely).float()
                    mean = (group * keep).sum(1, keepdim=True) / keep.sum(1, keepdim=True).clamp_min(1)
                    group = torch.where(likely, mean, group)
                scale, zero = _fit(group, w_bits)
                scale = _quantize_stat(scale, stat_bits, stat_group).clamp_min(1e-12)
                zero = _quantize_stat(zero, stat_bits, stat_group)
            w = W[:, j : j + 1]
            q = _quant(w, scale, zero, w_bits)
            err = (w - q) / u_diag[j]
            if finite:
                is_outlier = err.square() > threshold
                q = torch.where(is_outlier, w, q)
                err = torch.where(is_outlier, torch.zeros_like(err), err)
                outlier_mask[:, j] = is_outlier[:, 0]
            Q[:, j : j + 1] = q
            errors[:, j - b1 : j - b1 + 1] = err
            W[:, j + 1 : b2] -= err * U[j, j + 1 : b2]
        W[:, b2:] -= errors @ U[b1:b2, b2:]

    counts = outlier_mask.reshape(m, n // group_size, group_size).sum(-1).to(torch.uint8).cpu()
    if perm is not None:
        Q = Q[:, torch.argsort(perm)]
    result = LayerResult(
        outliers=int(outlier_mask.sum()), params=m * n, damp_used=damp_used,
        perm=None if perm is None else perm.cpu(), outlier_counts=counts,
    )
    return Q.to(weight.dtype), result


def decoder_blocks(model: torch.nn.Module, layers: dict[str, torch.nn.Module]) -> list[tuple[str, torch.nn.Module]]:
    """The model's decoder blocks (``[(name, module)]``): the ModuleList holding the target layers."""
    n_layers = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    for list_name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) and (n_layers is None or len(module) == n_layers):
            if any(name.startswith(list_name + ".") for name in layers):
                return [(f"{list_name}.{i}", block) for i, block in enumerate(module)]
    return []


def block_plan(model: torch.nn.Module, layers: dict[str, torch.nn.Module]) -> list[tuple[torch.nn.Module | None, dict]]:
    """The order in which GPTQ-style methods quantize ``layers`` (GPTQ Sec. 4, reference ``llama.py``).

    Returns:
        ``[(decoder block, {name: layer inside it})]`` in block order, for blocks holding target layers,
        then ``(None, {the layers outside every block})`` if any.  Quantizing the groups in this order,
        each one's Hessians accumulated by a forward pass stopped after its block
        (:func:`calib_sweep.methods.hessian.accumulate_hessians` with ``stop_after=block``), gives every
        block inputs computed by the already-quantized blocks before it.
    """
    plan: list[tuple[torch.nn.Module | None, dict]] = []
    remaining = dict(layers)
    for block_name, block in decoder_blocks(model, layers):
        inside = {k: v for k, v in layers.items() if k.startswith(block_name + ".")}
        for k in inside:
            remaining.pop(k)
        if inside:
            plan.append((block, inside))
    if remaining:
        plan.append((None, remaining))
    return plan


def spqr_compress(model: torch.nn.Module, sequences: list[torch.Tensor], method_cfg: Any, layers: dict) -> dict:
    """Compress ``layers`` of ``model`` in place with SpQR, one decoder block at a time.

    Block ``i``'s Hessians come from a forward pass (stopped after block ``i``) through the model whose
    blocks ``< i`` are already quantized, as in GPTQ's sequential scheme (GPTQ Sec. 4).  Layers
    outside any block are quantized last from one more pass (:func:`block_plan`).

    Args:
        model: causal LM; sequences: unpadded ``int64 [1, len]`` tensors; method_cfg: ``method``
            config (``w_bits``, ``group_size``, ``stat_bits``, ``stat_group``, ``outlier_threshold``,
            ``damp_percent``, ``act_order``, ``block_size``); layers: ``{name: nn.Linear}``.

    Returns:
        ``{"layers": {name: LayerResult}, "summary": {avg_bits, outlier_fraction, ...}}``.
    """
    plan = block_plan(model, layers)
    threshold = method_cfg.get("outlier_threshold")
    threshold = float("inf") if threshold in (None, "inf", float("inf")) else float(threshold)
    results: dict[str, LayerResult] = {}
    for block, group in plan:
        hessians = accumulate_hessians(model, sequences, group, stop_after=block)
        for name, layer in group.items():
            q, res = spqr_quantize_layer(
                layer.weight, hessians.pop(name),
                w_bits=int(method_cfg.w_bits), group_size=int(method_cfg.group_size),
                stat_bits=method_cfg.get("stat_bits"), stat_group=int(method_cfg.get("stat_group", 16)),
                outlier_threshold=threshold, damp_percent=float(method_cfg.damp_percent),
                act_order=bool(method_cfg.get("act_order", False)),
                block_size=int(method_cfg.get("block_size", 128)), name=name,
            )
            layer.weight.data.copy_(q)
            results[name] = res
    params = sum(r.params for r in results.values())
    outliers = sum(r.outliers for r in results.values())
    fraction = outliers / max(params, 1)
    summary = {
        "outliers": outliers,
        "outlier_fraction": fraction,
        "avg_bits": average_bits(
            int(method_cfg.w_bits), int(method_cfg.group_size), method_cfg.get("stat_bits"),
            int(method_cfg.get("stat_group", 16)), fraction,
        ),
    }
    return {"layers": results, "summary": summary}


def validate(method_cfg: Any, targets: dict) -> None:
    """Damping, bits, a ``group_size`` (no per-channel null) and a ``stat_group`` that fit the layers,
    ``stat_bits`` in 1..8 or null (fp16), ``outlier_threshold`` > 0 or null/inf.

    Raises:
        ConfigError: the first value out of range, with the fix.
    """
    check_damp(method_cfg)
    check_quantization(method_cfg, targets, allow_null=False, candidates=(8, 16, 32, 64))
    stat_bits = method_cfg.get("stat_bits")
    if stat_bits is not None and (not is_int(stat_bits) or not 1 <= stat_bits <= 8):
        raise ConfigError(f"method.stat_bits={stat_bits!r} must be an integer in 1..8 or null (fp16). Fix: 3.")
    check_group("stat_group", method_cfg.get("stat_group", 16), targets, 0, False, (8, 16, 32, 64))
    tau = method_cfg.get("outlier_threshold")
    if tau not in (None, "inf") and (isinstance(tau, bool) or not isinstance(tau, (int, float)) or not tau > 0):
        raise ConfigError(f"method.outlier_threshold={tau!r} must be > 0, or null/inf for no outliers. Fix: e.g. 0.2.")


def _compress(model, sequences: list[torch.Tensor], method_cfg: Any, record: dict):
    result = spqr_compress(model, sequences, method_cfg, target_linears(model))
    record["spqr"] = result
    record["damping"] = {k: r.damp_used for k, r in result["layers"].items()}
    return model


register_method(
    "spqr", kind="quantization", validate=validate, compress=_compress,
    save_note="no compressed-tensors form for SpQR's outliers and 3-bit statistics: dequantized weights",
)
