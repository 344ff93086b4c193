"""``outlier_channel_coverage``: how much of the dense model's outlier input channels the set drives above threshold.

Outlier rule: the 6x-RMS rule of ``data inspect --activations``
(:data:`calib_sweep.methods.diagnostics.OUTLIER_RMS`; a scale-free form of LLM.int8's magnitude-6
outliers, Dettmers et al. 2022).  For every target layer (each ``nn.Linear`` but the head), on the
*reference* text (the first ``REFERENCE_WINDOWS`` windows of the source's held-out text):

* ``tau`` = ``6 x RMS`` of all the layer's input entries;
* outlier channels = input channels with some entry ``|x| > tau``; weight of channel ``c`` = its RMS
  over the reference tokens (its magnitude);
* the set *covers* channel ``c`` when some entry of the set's inputs on ``c`` exceeds ``tau``.

Per layer, coverage = weight of the covered outlier channels / weight of all outlier channels; the
predictor is the mean over layers that have outlier channels (COVERCAL, Shihab, Akter & Sharma 2026,
arXiv 2604.24008, Sec. 3: weighted outlier-channel coverage; ``selection=outlier_coverage`` maximises it).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from calib_sweep.data.predictors import SetContext, Unavailable, register_predictor

#: Held-out windows the dense model's outlier channels are found on (at most 512 tokens each).
REFERENCE_WINDOWS = 8


@torch.no_grad()
def channel_statistics(model, input_ids: torch.Tensor, layers: list[str] | None = None, batch_size: int = 8,
                       per_row: bool = False) -> dict[str, dict[str, Any]]:
    """Per target layer, statistics of its input activations on ``input_ids`` (float32, on the CPU).

    Args:
        model: the dense causal LM (any device/dtype).
        input_ids: ``int64 [rows, seq_len]``.
        layers: target layer names (default: :func:`calib_sweep.methods.targets.target_linears`).
        batch_size: rows per forward pass.
        per_row: also keep each row's per-channel peak (``[rows, in_features]``) and mean square.

    Returns:
        ``{layer: {"peak": float32 [in_features] max |x| per channel, "sq": float64 [in_features] sum of
        squares per channel, "tokens": int, "row_peak": float32 [rows, in_features] (per_row),
        "row_mean_sq": float64 [rows] (per_row)}}``.
    """
    from calib_sweep.methods.targets import target_linears

    modules = dict(model.named_modules())
    layers = list(target_linears(model)) if layers is None else layers
    stats: dict[str, dict[str, Any]] = {n: {"peak": None, "sq": None, "tokens": 0, "row_peak": [], "row_mean_sq": []}
                                        for n in layers}

    def hook(name):
        def fn(module, inputs):
            x = inputs[0].detach().float()  # [b, t, c]
            s = stats[name]
            peak_rows = x.abs().amax(dim=1).cpu()  # [b, c]
            peak = peak_rows.amax(dim=0)
            sq = x.square().sum(dim=(0, 1)).double().cpu()
            s["peak"] = peak if s["peak"] is None else torch.maximum(s["peak"], peak)
            s["sq"] = sq if s["sq"] is None else s["sq"] + sq
            s["tokens"] += x.shape[0] * x.shape[1]
            if per_row:
                s["row_peak"].append(peak_rows)
                s["row_mean_sq"].append(x.square().mean(dim=(1, 2)).double().cpu())
        return fn

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    handles = [modules[n].register_forward_pre_hook(hook(n)) for n in layers]
    try:
        for batch in torch.split(input_ids, batch_size):
            getattr(model, "base_model", model)(batch.to(device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    out = {}
    for name, s in stats.items():
        out[name] = {"peak": s["peak"].numpy(), "sq": s["sq"].numpy(), "tokens": s["tokens"]}
        if per_row:
            out[name]["row_peak"] = torch.cat(s["row_peak"]).numpy()
            out[name]["row_mean_sq"] = torch.cat(s["row_mean_sq"]).numpy()
    return out


def outlier_channels(reference: dict[str, Any]) -> tuple[float, np.ndarray, np.ndarray]:
    """``(tau, outlier mask bool [in_features], weight float64 [in_features])`` of one layer's reference
    statistics (:func:`channel_statistics`): ``tau = 6 x RMS`` of all entries, outliers = channels whose
    peak exceeds ``tau``, weight = each channel's RMS over the reference tokens."""
    from calib_sweep.methods.diagnostics import OUTLIER_RMS

    tokens = max(int(reference["tokens"]), 1)
    rms = float(np.sqrt(reference["sq"].sum() / (tokens * reference["sq"].size)))
    tau = OUTLIER_RMS * rms
    return tau, reference["peak"] > tau, np.sqrt(reference["sq"] / tokens)


def weighted_coverage(reference: dict[str, dict[str, Any]], peaks: dict[str, np.ndarray]) -> dict[str, float]:
    """Per layer that has outlier channels: weight of the outlier channels ``peaks`` (the set's max |x| per
    channel, ``[in_features]``) drives above ``tau`` over the weight of all outlier channels, in [0, 1]."""
    out = {}
    for name, ref in reference.items():
        tau, mask, weight = outlier_channels(ref)
        total = float(weight[mask].sum())
        if total > 0:
            out[name] = float(weight[mask & (peaks[name] > tau)].sum()) / total
    return out


@register_predictor("outlier_channel_coverage", needs_model=True,
                    unit="mean over layers of the weighted share of held-out outlier channels the set drives above 6x RMS, [0, 1]")
def outlier_channel_coverage(context: SetContext) -> float:
    """Mean of :func:`weighted_coverage` over layers (reference: the held-out text's first windows).

    Raises:
        Unavailable: no model, no held-out text, or no layer has an outlier channel on it.
    """
    if "outlier_channel_coverage" in context.features:
        return float(context.features["outlier_channel_coverage"])
    if context.model is None:
        raise Unavailable("needs the dense model")
    if context.heldout_tokens is None or len(context.heldout_tokens) == 0:
        raise Unavailable("no held-out text of the source to find the outlier channels on")
    from calib_sweep.evaluation.perplexity import stream_windows

    seq_len = min(int(np.asarray(context.input_ids).shape[1]), 512)
    windows, _ = stream_windows(torch.as_tensor(np.asarray(context.heldout_tokens)), seq_len, REFERENCE_WINDOWS,
                                context.bos_token_id)
    if windows.shape[0] == 0:
        raise Unavailable(f"the held-out text is shorter than one window of {seq_len} tokens")
    reference = channel_statistics(context.model, windows, batch_size=context.batch_size)
    own = channel_statistics(context.model, torch.as_tensor(np.asarray(context.input_ids)), list(reference),
                             batch_size=context.batch_size)
    per_layer = weighted_coverage(reference, {n: s["peak"] for n, s in own.items()})
    if not per_layer:
        raise Unavailable("no layer has an outlier channel on the held-out text")
    return float(np.mean(list(per_layer.values())))
