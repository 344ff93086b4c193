"""Per-window features of the dense model for model-based selection (perplexity, activations).

A job scores only the candidate windows of its seed's share (``n_samples x pool_factor`` slots, not
the whole source: a large source such as C4 holds millions of windows), once per (model weights,
source content + tokenizer + separator, slot length, BOS, dtype, device type, feature, layer, share),
cached with :func:`calib_sweep.cache.cached_arrays` (kind ``selection_features``): the methods and
strategies of a sweep that use the same share read it from the cache, so each window is scored once.
``inspect --coverage`` scores every slot of the source (one cache entry of its own).
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import numpy as np
import torch

FEATURES = ("nll", "pooled", "channel_peaks")


def model_fingerprint(model) -> str:
    """SHA-256 of a model's config, parameter names/shapes/dtypes and the first and last 256 values of
    every parameter: what identifies the weights for the features cache (cheap: no full pass over them)."""
    digest = hashlib.sha256()
    config = getattr(model, "config", None)
    digest.update((config.to_json_string() if hasattr(config, "to_json_string") else repr(config)).encode())
    with torch.no_grad():
        for name, param in model.named_parameters():
            flat = param.detach().reshape(-1)
            digest.update(f"{name}:{tuple(param.shape)}:{param.dtype}".encode())
            for part in (flat[:256], flat[-256:]):
                digest.update(part.float().cpu().numpy().astype("<f4").tobytes())
    return digest.hexdigest()


def resolve_layer(model_config, layer: int | None) -> int:
    """``layer`` as an index into ``output_hidden_states`` (``None``: ``num_hidden_layers // 2``).

    ``model_config``: the model's ``transformers`` config (``model.config``, or
    :func:`calib_sweep.models.load_config` before the weights load).

    Raises:
        ConfigError: outside ``[-(L+1), L]`` for a model of ``L`` layers.
    """
    from calib_sweep.errors import ConfigError

    layers = int(getattr(model_config, "num_hidden_layers", 0))
    if layer is None:
        return layers // 2
    if not -(layers + 1) <= layer <= layers:
        raise ConfigError(f"selection.layer={layer} does not exist in a model of {layers} layers. Fix: 0 <= selection.layer <= {layers}.")
    return layer % (layers + 1)


def check_model_fit(selection_cfg, model_config) -> None:
    """Check a ``selection`` config's model-dependent parameters (``selection.layer``) against the model's
    ``transformers`` config, so a bad layer is refused before the weights load.

    Raises:
        ConfigError: see :func:`resolve_layer`, and the errors of :func:`calib_sweep.data.selection.resolve`.
    """
    from calib_sweep.data.selection import resolve

    _, params = resolve(selection_cfg)
    if "layer" in params:
        resolve_layer(model_config, params["layer"])


@torch.no_grad()
def window_features(model, rows: torch.Tensor, feature: str, layer: int = 0, batch_size: int = 8,
                    desc: str = "selection: scoring windows") -> np.ndarray:
    """One feature of the dense model for every row, batched, with a tqdm progress bar.

    Args:
        model: a causal LM (any dtype; runs in it, reductions in float32).
        rows: ``int64 [m, L]`` token ids (BOS included when the model needs one).
        feature: ``"nll"``: mean next-token negative log-likelihood of each row, nats per token,
            ``float64 [m]``; ``"pooled"``: the mean over positions of hidden state ``layer`` (index into
            ``output_hidden_states``), ``float32 [m, hidden]``; ``"channel_peaks"``: per target layer each
            row's max ``|x|`` per input channel and mean square input (:func:`split_channel_peaks`).
        layer: see ``feature`` (ignored for ``"nll"`` and ``"channel_peaks"``).
        batch_size: rows per forward pass.

    Returns:
        The feature array (see ``feature``).
    """
    from tqdm.auto import tqdm

    if feature == "channel_peaks":
        return channel_peaks(model, rows, batch_size)
    device = next(model.parameters()).device
    out = []
    was_training = model.training
    model.eval()
    for begin in tqdm(range(0, rows.shape[0], batch_size), desc=desc, unit="batch", leave=False):
        batch = rows[begin : begin + batch_size].to(device)
        if feature == "nll":
            logits = model(input_ids=batch).logits[:, :-1].float()
            nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), batch[:, 1:], reduction="none")
            out.append(nll.mean(dim=1).double().cpu().numpy())
        else:
            hidden = model(input_ids=batch, output_hidden_states=True).hidden_states[layer]
            out.append(hidden.float().mean(dim=1).cpu().numpy())
    model.train(was_training)
    return np.concatenate(out) if out else np.zeros((0,))


def channel_peaks(model, rows: torch.Tensor, batch_size: int = 8) -> np.ndarray:
    """``float32 [m, sum over target layers of (in_features + 2)]``: per layer, in model order, a block
    ``[-in_features, mean square input of the row, max |x| of each input channel over the row's tokens]``
    (self-describing, so :func:`split_channel_peaks` needs no model), for ``selection=outlier_coverage``."""
    from calib_sweep.data.predictors.outlier_channel_coverage import channel_statistics

    stats = channel_statistics(model, rows, batch_size=batch_size, per_row=True)
    blocks = []
    for s in stats.values():
        peak = s["row_peak"]
        blocks.append(np.concatenate([np.full((peak.shape[0], 1), -peak.shape[1]), s["row_mean_sq"][:, None], peak], axis=1))
    return np.concatenate(blocks, axis=1).astype(np.float32) if blocks else np.zeros((rows.shape[0], 0), np.float32)


def split_channel_peaks(features: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """:func:`channel_peaks`'s array as ``(peaks float32 [m, sum widths], mean_sq float64 [m, layers], widths)``."""
    features = np.asarray(features)
    peaks, mean_sq, widths = [], [], []
    begin = 0
    while begin < features.shape[1]:
        width = int(round(-float(features[0, begin])))
        mean_sq.append(features[:, begin + 1].astype(np.float64))
        peaks.append(features[:, begin + 2 : begin + 2 + width])
        widths.append(width)
        begin += width + 2
    m = features.shape[0]
    return (np.concatenate(peaks, axis=1) if peaks else np.zeros((m, 0), np.float32),
            np.stack(mean_sq, axis=1) if mean_sq else np.zeros((m, 0)), widths)


def slot_rows(stream: np.ndarray, slots: np.ndarray, slot_len: int, bos_token_id: int | None) -> np.ndarray:
    """``int64 [len(slots), slot_len (+1 with BOS)]``: the stream tokens of each slot, BOS in front if given."""
    rows = np.stack([stream[s * slot_len : (s + 1) * slot_len] for s in slots]) if len(slots) else np.zeros((0, slot_len), np.int64)
    if bos_token_id is not None:
        rows = np.concatenate([np.full((len(rows), 1), int(bos_token_id), dtype=np.int64), rows], axis=1)
    return rows.astype(np.int64)


def source_features(
    model, stream: np.ndarray, slot_len: int, n_slots: int, needs: tuple[str, ...], params: dict[str, Any],
    bos_token_id: int | None = None, stream_key: str | None = None, slots: np.ndarray | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The features ``needs`` of the given slots of a stream (all ``0..n_slots-1`` when ``slots`` is
    None), from the cache or computed.

    Args:
        model: the dense model, already loaded.
        stream: ``int64 [n_tokens]`` the source's token stream.
        slot_len: stream tokens per slot.
        n_slots: slots in the stream (``n_tokens // slot_len``).
        needs: feature names (:data:`FEATURES`).
        params: the strategy's parameters (``layer``, ``batch_size``).
        bos_token_id: put in front of every row when the model needs it.
        stream_key: the stream's cache key (content, tokenizer, separator); ``None``: nothing cached.
        slots: ``int64 [m]`` the slots to score, in the order of the returned rows (a seed's share);
            part of the cache key.

    Returns:
        ``({feature: array with one row per slot of `slots` (or per slot 0..n_slots-1)},
        {"seconds", "windows", "reused", "keys"})``: ``windows`` is how many slots the call covers,
        ``seconds`` the wall time of this call (scoring plus cache reads).

    Raises:
        ValueError: a slot outside ``0..n_slots-1``.
    """
    from calib_sweep import cache

    start = time.perf_counter()
    chosen = np.arange(n_slots) if slots is None else np.asarray(slots, dtype=np.int64)
    if len(chosen) and (chosen.min() < 0 or chosen.max() >= n_slots):
        raise ValueError(f"slots must lie in 0..{n_slots - 1}; got {int(chosen.min())}..{int(chosen.max())}")
    layer = resolve_layer(model.config, params.get("layer")) if "pooled" in needs else None
    batch_size = int(params.get("batch_size", 8))
    rows = torch.from_numpy(slot_rows(stream, chosen, slot_len, bos_token_id))
    share = None if slots is None else hashlib.sha256(chosen.astype("<i8").tobytes()).hexdigest()
    arrays, info = {}, {"windows": int(len(chosen)), "reused": True, "keys": {}}
    fingerprint = model_fingerprint(model) if stream_key is not None else None
    for feature in needs:
        compute = lambda feature=feature: {feature: window_features(model, rows, feature, layer or 0, batch_size)}  # noqa: E731
        if stream_key is None:
            arrays.update(compute())
            info["reused"] = False
            continue
        param = next(model.parameters())
        ident = {"model": fingerprint, "stream": stream_key, "slot_len": slot_len, "bos_token_id": bos_token_id,
                 "n_slots": n_slots, "feature": feature, "layer": layer if feature == "pooled" else None,
                 "dtype": str(param.dtype), "device": param.device.type}
        if share is not None:
            ident["slots_sha256"] = share  # a share of the source; absent: every slot (inspect --coverage)
        got, hit = cache.cached_arrays("selection_features", json.loads(json.dumps(ident)), compute)
        arrays[feature] = np.asarray(got[feature])
        info["reused"] = info["reused"] and hit["reused"]
        info["keys"][feature] = hit["key"]
    info["seconds"] = round(time.perf_counter() - start, 3)
    return arrays, info
