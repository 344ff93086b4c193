"""Layer-wise diagnostics: where in the network a calibration set's effect arises.

Two kinds of figures per target layer (every ``nn.Linear`` but the output head), in layer order:

* **What the compression library computed**, captured from its own return values and arguments while it
  runs (:class:`LibraryCapture`, a context manager around llmcompressor's functions, never parsed from log
  text): GPTQ's reconstruction loss (``quantize_weight``'s per-layer ``losses``: sum over rows of the
  OBS error ``sum (w - q)^2 / [H^-1]_jj / 2``, Frantar et al. 2023, Alg. 1), SparseGPT's loss
  (``sparsify_weight``'s first return value, Frantar & Alistarh 2023), the trace of the layer's Hessian
  ``H = 2/n X X^T`` before damping (units: squared activations), the fraction of weights the method
  changed, and for Wanda the input-activation norm statistics of its ``row_scalars`` (per input channel
  ``||X_j||_2^2 / n``, Sun et al. 2024, Eq. 1).  Damping used per layer comes from the compress record.
* **Output error on held-out windows** (:func:`capture_outputs`, :func:`output_errors`): the relative
  Frobenius norm ``||Y_c - Y_d||_F / ||Y_d||_F`` of the layer's output in the compressed vs the dense
  model, both run on the KL windows, at :data:`POSITIONS` token positions spread evenly over them (so the
  dense outputs kept in memory are ``POSITIONS x out_features`` floats per layer: 224 layers of a 7B model
  ~0.6 GB in bfloat16, on the CPU).  The error includes what earlier layers passed on: it is the layer's
  output as the compressed network computes it.

:func:`layer_record` packs both into ``results.json["layers"]``: the layer names once, then one list per
field in the same order (``null`` where a method has no such figure); 224 layers take ~40 KB.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import torch

from calib_sweep.methods.targets import target_linears

#: Token positions (spread evenly over the KL windows) at which layer outputs are compared.
POSITIONS = 128

#: Fields of ``results.json["layers"]`` (besides ``names``), with their units.
FIELDS = {
    "output_error": "relative Frobenius norm ||Y_compressed - Y_dense|| / ||Y_dense|| on held-out windows",
    "library_error": "the library's own reconstruction loss (GPTQ / SparseGPT), in its units (squared weights / H^-1)",
    "hessian_trace": "trace of H = 2/n X X^T before damping (squared activation units)",
    "damping": "fraction of the mean Hessian diagonal added before the inverse",
    "fraction_changed": "fraction of the layer's weights that differ from the dense weights",
    "act_norm_mean": "Wanda: mean over input channels of ||X_j||^2 / n",
    "act_norm_max_ratio": "Wanda: largest over mean input-channel ||X_j||^2 / n (outlier channels)",
}


def _changed(before: torch.Tensor, after: torch.Tensor) -> float:
    return float((before.reshape(after.shape) != after).float().mean())


class LibraryCapture:
    """Context manager: records what llmcompressor computes per layer during one ``oneshot`` call.

    Wraps (and restores on exit) ``gptq.base.prepare_batch`` / ``quantize_weight`` (loss, Hessian trace,
    changed fraction), ``pruning.sparsegpt.base.sparsify_weight`` (loss, trace, changed fraction) and
    ``pruning.wanda.base.sparsify_weight`` (activation norms, changed fraction).  The library's results
    are passed through unchanged.

    Attributes:
        rows: ``{layer name: {field: float}}``, fields as in :data:`FIELDS`.
    """

    def __init__(self, model: torch.nn.Module):
        self.names = {module: name for name, module in model.named_modules()}
        self.rows: dict[str, dict[str, float]] = {}
        self._batch: list[torch.nn.Module] = []
        self._restore: list[tuple[Any, str, Any]] = []

    def _set(self, module: Any, **fields: float) -> None:
        self.rows.setdefault(self.names.get(module, str(module)), {}).update(fields)

    def _wrap(self, owner: Any, attr: str, make) -> None:
        original = getattr(owner, attr)
        self._restore.append((owner, attr, original))
        setattr(owner, attr, make(original))

    def __enter__(self) -> "LibraryCapture":
        from llmcompressor.modifiers.gptq import base as gptq_base
        from llmcompressor.modifiers.pruning.sparsegpt import base as sgpt_base
        from llmcompressor.modifiers.pruning.wanda import base as wanda_base

        def prepare_batch(original):
            def wrapper(batch, *args, **kwargs):
                self._batch = list(batch)
                return original(batch, *args, **kwargs)
            return wrapper

        def quantize_weight(original):
            def wrapper(*args, **kwargs):
                weights, hessians = kwargs.get("weights", args[0] if args else None), kwargs.get("hessians", args[1] if len(args) > 1 else None)
                before = weights.clone()
                traces = [float(torch.diagonal(h).sum()) for h in hessians]  # before factorize_hessian damps it
                quantized, losses, fallback = original(*args, **kwargs)
                for index, module in enumerate(self._batch[: quantized.shape[0]]):
                    self._set(module, library_error=float(losses[index]), hessian_trace=traces[index],
                              fraction_changed=_changed(before[index], quantized[index].to(before.dtype)))
                return quantized, losses, fallback
            return wrapper

        def sgpt_sparsify(original):
            def wrapper(module, hessians_dict, *args, **kwargs):
                trace = float(torch.diagonal(hessians_dict[module]).sum())
                before = module.weight.detach().clone()
                loss, weight = original(module, hessians_dict, *args, **kwargs)
                self._set(module, library_error=float(loss), hessian_trace=trace, fraction_changed=_changed(before, weight))
                return loss, weight
            return wrapper

        def wanda_sparsify(original):
            def wrapper(module, row_scalars_dict, *args, **kwargs):
                norms = row_scalars_dict[module].detach().float().reshape(-1)
                mean = float(norms.mean())
                before = module.weight.detach().clone()
                weight = original(module, row_scalars_dict, *args, **kwargs)
                self._set(module, act_norm_mean=mean, act_norm_max_ratio=float(norms.max()) / mean if mean > 0 else math.inf,
                          fraction_changed=_changed(before, weight))
                return weight
            return wrapper

        self._wrap(gptq_base, "prepare_batch", prepare_batch)
        self._wrap(gptq_base, "quantize_weight", quantize_weight)
        self._wrap(sgpt_base, "sparsify_weight", sgpt_sparsify)
        self._wrap(wanda_base, "sparsify_weight", wanda_sparsify)
        return self

    def __exit__(self, *exc) -> None:
        while self._restore:
            owner, attr, original = self._restore.pop()
            setattr(owner, attr, original)


def positions(n_windows: int, seq_len: int, count: int = POSITIONS) -> torch.Tensor:
    """``count`` (or fewer) flat token indices spread evenly over ``n_windows x seq_len`` tokens, int64."""
    total = n_windows * seq_len
    return torch.unique(torch.linspace(0, total - 1, min(count, total)).round().long())


@torch.no_grad()
def capture_outputs(model: torch.nn.Module, token_ids: torch.Tensor, layers: list[str],
                    count: int = POSITIONS) -> dict[str, torch.Tensor]:
    """Each named layer's output at :func:`positions` of the windows.

    Args:
        model: a causal LM (any device/dtype).  All windows go through its decoder (``base_model``: the
            output head, which no method compresses, is skipped) in one batch.
        token_ids: ``int64 [n_windows, seq_len]`` (the KL windows).
        layers: names of ``nn.Linear`` modules in ``model``.

    Returns:
        ``{name: float32 [P, out_features]}`` on the CPU, rows in position order.
    """
    modules = dict(model.named_modules())
    where = positions(token_ids.shape[0], token_ids.shape[1], count)
    captured: dict[str, torch.Tensor] = {}

    def hook(name):
        def fn(module, inputs, output):
            flat = output.reshape(-1, output.shape[-1])
            captured[name] = flat[where.to(flat.device)].float().cpu()
        return fn

    handles = [modules[name].register_forward_hook(hook(name)) for name in layers]
    device = next(model.parameters()).device
    body = getattr(model, "base_model", model)  # the decoder without the LM head (same modules)
    try:
        body(token_ids.to(device))
    finally:
        for handle in handles:
            handle.remove()
    return captured


def output_errors(model: torch.nn.Module, token_ids: torch.Tensor, dense: dict[str, torch.Tensor],
                  count: int = POSITIONS) -> dict[str, float]:
    """Relative Frobenius norm ``||Y_c - Y_d|| / ||Y_d||`` of each layer's output (``dense`` from
    :func:`capture_outputs` on the dense model, same windows and ``count``); 0.0 when unchanged."""
    compressed = capture_outputs(model, token_ids, list(dense), count)
    out = {}
    for name, reference in dense.items():
        norm = float(torch.linalg.norm(reference))
        diff = float(torch.linalg.norm(compressed[name] - reference))
        out[name] = diff / norm if norm > 0 else (0.0 if diff == 0 else math.inf)
    return out


def layer_record(names: list[str], captured: dict[str, dict[str, float]], damping: dict[str, float] | None,
                 output_error: dict[str, float] | None, n_positions: int | None,
                 changed: dict[str, float] | None = None) -> dict[str, Any]:
    """``results.json["layers"]``: names once, then one list per field (see :data:`FIELDS`) in their order.

    ``changed`` (from :func:`fraction_changed`) replaces the library's ``fraction_changed`` when given.

    Fields no layer has are left out; a layer without a value gets ``null``.  Non-finite floats are
    written as strings (``"inf"``) by the results writer.
    """
    columns: dict[str, list[Any]] = {}
    sources = {"output_error": output_error or {}, "damping": damping or {}}
    if changed is not None:
        sources["fraction_changed"] = changed
    for field in FIELDS:
        values = [sources[field].get(n) if field in sources else captured.get(n, {}).get(field) for n in names]
        if any(v is not None for v in values):
            columns[field] = values
    return {"names": list(names), **columns, "positions": n_positions,
            "units": {k: v for k, v in FIELDS.items() if k in columns}}


#: An activation entry is an outlier when its magnitude exceeds this many times its layer input's RMS.
OUTLIER_RMS = 6.0


@torch.no_grad()
def activation_stats(model: torch.nn.Module, input_ids: torch.Tensor, layers: list[str] | None = None,
                     batch_size: int = 8) -> dict[str, dict[str, float]]:
    """Per target layer, statistics of the calibration set's inputs to it on the dense model.

    For a layer with input activations X (all tokens of all rows, ``[tokens, in_features]``):
    ``mean_norm`` = mean over tokens of ``||x_t||_2``; ``max_channel_ratio`` = largest over mean
    per-channel RMS (outlier channels, as Wanda's and AWQ's activation-aware scores see them);
    ``outlier_fraction`` = share of entries with ``|x| > 6 * RMS(X)`` (a scale-free form of LLM.int8's
    magnitude-6 outliers, Dettmers et al. 2022).

    Args:
        model: the dense causal LM (any device/dtype; statistics in float32).
        input_ids: ``int64 [n_samples, seq_len]``, run ``batch_size`` rows at a time through the decoder.
        layers: target layer names (default: every ``nn.Linear`` but the output head).

    Returns:
        ``{layer: {"mean_norm", "max_channel_ratio", "outlier_fraction"}}`` in layer order.
    """
    modules = dict(model.named_modules())
    layers = list(target_linears(model)) if layers is None else layers
    sums = {name: {"tokens": 0, "norm": 0.0, "sq": 0.0, "channel_sq": None, "entries": 0} for name in layers}
    batches = list(torch.split(input_ids, batch_size))

    # pass 1: norms, per-channel energy and the layer's RMS; pass 2 counts entries above 6 x that RMS
    def first(name):
        def fn(module, inputs):
            x = inputs[0].detach().float().reshape(-1, inputs[0].shape[-1])
            s = sums[name]
            s["tokens"] += x.shape[0]
            s["norm"] += float(torch.linalg.norm(x, dim=1).sum())
            s["sq"] += float(x.square().sum())
            s["entries"] += x.numel()
            channel = x.square().sum(dim=0).cpu()
            s["channel_sq"] = channel if s["channel_sq"] is None else s["channel_sq"] + channel
        return fn

    device = next(model.parameters()).device
    body = getattr(model, "base_model", model)

    def run(make_hook) -> None:  # one pass over the set with a pre-hook on every layer
        handles = [modules[name].register_forward_pre_hook(make_hook(name)) for name in layers]
        try:
            for batch in batches:
                body(batch.to(device))
        finally:
            for handle in handles:
                handle.remove()

    run(first)
    rms = {name: math.sqrt(s["sq"] / max(s["entries"], 1)) for name, s in sums.items()}
    outliers = {name: 0 for name in layers}

    def second(name):
        def fn(module, inputs):
            outliers[name] += int((inputs[0].detach().float().abs() > OUTLIER_RMS * rms[name]).sum())
        return fn

    run(second)
    out = {}
    for name in layers:
        s = sums[name]
        channel_rms = (s["channel_sq"] / max(s["tokens"], 1)).sqrt()
        mean_channel = float(channel_rms.mean())
        out[name] = {
            "mean_norm": s["norm"] / max(s["tokens"], 1),
            "max_channel_ratio": float(channel_rms.max()) / mean_channel if mean_channel > 0 else math.inf,
            "outlier_fraction": outliers[name] / max(s["entries"], 1),
        }
    return out


#: Largest total size of target weights :func:`weight_snapshot` copies to the CPU (bytes).
SNAPSHOT_BUDGET = 2 * 2**30


@torch.no_grad()
def weight_snapshot(model: torch.nn.Module, layers: list[str], budget: int = SNAPSHOT_BUDGET) -> dict[str, torch.Tensor] | None:
    """CPU copies of the named layers' dense weights, for :func:`fraction_changed` of every method (RTN,
    magnitude, AWQ, SpQR included); ``None`` when they would take more than ``budget`` bytes (e.g. a 7B
    model: then only the methods whose library figures are captured record ``fraction_changed``)."""
    modules = dict(model.named_modules())
    size = sum(modules[n].weight.numel() * modules[n].weight.element_size() for n in layers)
    if size > budget:
        return None
    return {n: modules[n].weight.detach().to("cpu", copy=True) for n in layers}


@torch.no_grad()
def fraction_changed(model: torch.nn.Module, snapshot: dict[str, torch.Tensor]) -> dict[str, float]:
    """Per layer, the share of weights that differ from :func:`weight_snapshot`'s dense copy."""
    modules = dict(model.named_modules())
    return {n: _changed(w, modules[n].weight.detach().to("cpu", w.dtype)) for n, w in snapshot.items()}
