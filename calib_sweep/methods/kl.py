"""KL divergence of a compressed model from its dense reference on held-out text.

``KL(P_dense || Q_compressed) = sum_v p_v (log p_v - log q_v)`` per scored position, averaged over
positions, in nats.  The dense log-probabilities are computed once before compression and kept on
the CPU, either in full (float32 ``[n, L, V]``) or, to bound memory, as the dense model's top-k
tokens per position (:class:`TopKLogprobs`).  With top-k, the remaining vocabulary is folded into one
"rest" bucket for both models, which gives the KL of the coarsened distributions: a lower bound on
the full KL (data-processing inequality), exact when ``k = V``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from calib_sweep.errors import CompressionError, ConfigError


class TopKLogprobs(NamedTuple):
    """The dense model's ``k`` most likely tokens per position: float32 log-probs and int64 ids,
    each ``[n_windows, seq_len, k]``, on the CPU."""

    values: torch.Tensor
    indices: torch.Tensor


def _check_ids(token_ids: torch.Tensor) -> None:
    if not isinstance(token_ids, torch.Tensor) or token_ids.ndim != 2 or token_ids.dtype != torch.long:
        raise ConfigError("token_ids must be an int64 tensor [n_windows, seq_len]. Fix: stack equal-length windows.")


def non_finite_error(figure: str, value: float, dtype: torch.dtype) -> CompressionError:
    """The error that stops a job at its first non-finite figure, naming the dtype as the likely cause.

    A NaN or infinite KL, loss or log-probability of a model that loaded fine is, in practice, an
    overflow of its activations in a 16-bit dtype (float16's largest value is 65,504; Gemma-3
    exceeds it: huggingface/transformers#36822), so the fix names a wider dtype.

    Args:
        figure: what was computed, e.g. ``"kl_from_dense"``.
        value: its value (NaN or +-inf).
        dtype: the model's parameter dtype.
    """
    name = str(dtype).removeprefix("torch.")
    if dtype == torch.float16:
        cause = "float16 overflows on this model; use dtype=bfloat16 or float32"
    elif dtype == torch.bfloat16:
        cause = "the model overflowed in bfloat16; use dtype=float32"
    else:
        cause = f"in {name}, so not a 16-bit overflow: the model's weights or inputs hold NaN/Inf"
    return CompressionError(f"{figure} is {value}: {cause}")


def _logprob_chunks(model, ids: torch.Tensor):
    """``(positions slice, float32 log-probs [r, V])`` of one window ``int64 [seq_len]``, a chunk of
    positions at a time (:mod:`calib_sweep.models.logits`: the decoder once, the head per chunk)."""
    from calib_sweep.models.logits import row_chunks, split_head

    device = next(model.parameters()).device
    states, head = split_head(model, ids.unsqueeze(0).to(device))
    for rows in row_chunks(states.shape[1]):
        yield rows, torch.log_softmax(head(states[0, rows]), dim=-1)


@torch.no_grad()
def reference_logprobs(model, token_ids: torch.Tensor, top_k: int | None = 64) -> torch.Tensor | TopKLogprobs:
    """Dense-model log-probabilities of the next token at every position of each window.

    Call on the dense model before compression.  One window per forward pass; the LM head and the
    log-softmax run on 256 positions at a time (:mod:`calib_sweep.models.logits`).

    Args:
        model: causal LM (any device, any dtype; log-softmax is taken in float32).
        token_ids: ``int64 [n_windows, seq_len]``.
        top_k: keep only the ``top_k`` largest log-probs per position (memory
            ``n * L * k * 12`` bytes); ``None`` keeps all (``n * L * V * 4`` bytes, e.g. 1.6 GB for
            16 x 512 positions at V = 49,152).

    Returns:
        float32 ``[n_windows, seq_len, V]`` (``top_k=None``) or :class:`TopKLogprobs`, on the CPU.

    Raises:
        ConfigError: ``token_ids`` is not int64 2-D, or ``top_k < 1``.
        CompressionError: a log-probability is NaN (the dense model overflowed: :func:`non_finite_error`).
    """
    _check_ids(token_ids)
    if top_k is not None and (isinstance(top_k, bool) or int(top_k) < 1):
        raise ConfigError(f"top_k={top_k!r} must be >= 1 or None (all). Fix: e.g. 64.")
    values, indices = [], []
    for ids in token_ids:
        window_values, window_indices = [], []
        for _, logp in _logprob_chunks(model, ids):
            if torch.isnan(logp).any():  # inf/NaN logits (log_softmax of a row holding them is NaN)
                raise non_finite_error("the dense model's log-probabilities on the KL windows", float("nan"),
                                       next(model.parameters()).dtype)
            if top_k is None:
                window_values.append(logp.cpu())
            else:
                top = torch.topk(logp, min(int(top_k), logp.shape[-1]), dim=-1)
                window_values.append(top.values.cpu())
                window_indices.append(top.indices.cpu())
        values.append(torch.cat(window_values))
        if top_k is not None:
            indices.append(torch.cat(window_indices))
    if top_k is None:
        return torch.stack(values)
    return TopKLogprobs(torch.stack(values), torch.stack(indices))


@torch.no_grad()
def kl_from_reference(model, token_ids: torch.Tensor, reference: torch.Tensor | TopKLogprobs) -> float:
    """Mean per-token ``KL(dense || model)`` in nats over all positions of ``token_ids``.

    Args:
        model: the compressed model.
        token_ids: the same ``int64 [n_windows, seq_len]`` given to :func:`reference_logprobs`.
        reference: what :func:`reference_logprobs` returned.

    Returns:
        Mean KL in nats (>= 0 up to float rounding); with top-k, the KL over the top-k tokens and
        one "rest" bucket (a lower bound on the full KL).

    Raises:
        ConfigError: shapes of ``token_ids`` and ``reference`` disagree.
        CompressionError: the KL is NaN or infinite (:func:`non_finite_error`).
    """
    _check_ids(token_ids)
    ref_values = reference.values if isinstance(reference, TopKLogprobs) else reference
    if tuple(ref_values.shape[:2]) != tuple(token_ids.shape):
        raise ConfigError(
            f"reference covers {tuple(ref_values.shape[:2])} positions but token_ids is {tuple(token_ids.shape)}. "
            "Fix: pass the token_ids used for reference_logprobs."
        )
    total, count = 0.0, 0
    for i, ids in enumerate(token_ids):
        for rows, logq in _logprob_chunks(model, ids):
            logq = logq.cpu()
            if isinstance(reference, TopKLogprobs):
                logp_k = reference.values[i, rows]
                logq_k = torch.gather(logq, -1, reference.indices[i, rows])
                kl = (logp_k.exp() * (logp_k - logq_k)).sum(-1)
                # The rest bucket, in float64; a mass below 1e-9 (rounding when k ~ V) contributes nothing.
                p_rest = (1 - logp_k.double().exp().sum(-1)).clamp_min(0)
                q_rest = (1 - logq_k.double().exp().sum(-1)).clamp_min(1e-12)
                rest = torch.where(p_rest > 1e-9, p_rest * (p_rest.clamp_min(1e-12).log() - q_rest.log()), 0.0)
                kl = kl + rest.float()
            else:
                logp = reference[i, rows]
                kl = (logp.exp() * (logp - logq)).sum(-1)
            total += float(kl.double().sum())
            count += kl.numel()
        if not math.isfinite(total):  # stop at the first window that makes it so
            raise non_finite_error("kl_from_dense", total, next(model.parameters()).dtype)
    return max(total / max(count, 1), 0.0)


def reference_logprobs_cached(
    model, token_ids: torch.Tensor, model_ident: dict, top_k: int | None = 64
) -> tuple[torch.Tensor | TopKLogprobs, dict]:
    """:func:`reference_logprobs`, computed once per (model, windows, dtype, device type, top-k,
    library versions) and then read from the cache (:func:`calib_sweep.cache.cached_arrays`).

    The dense model's predictions on the KL windows do not depend on the calibration set, so every
    job of a sweep over sets shares them.

    Args:
        model: the dense model (before compression).
        token_ids: ``int64 [n_windows, seq_len]`` (BOS included when the model needs one).
        model_ident: what identifies the weights (:func:`calib_sweep.models.model_identity`).
        top_k: as for :func:`reference_logprobs`.

    Returns:
        ``(reference, {"reused": bool, "key": str})``; the reference as :func:`reference_logprobs`
        returns it.
    """
    import hashlib
    import importlib.metadata

    import numpy as np

    from calib_sweep import cache

    _check_ids(token_ids)
    param = next(model.parameters())
    ident = {
        "model": model_ident,
        "tokens": hashlib.sha256(np.ascontiguousarray(token_ids.cpu().numpy().astype("<i8")).tobytes()).hexdigest(),
        "shape": list(token_ids.shape),
        "top_k": top_k,
        "dtype": str(param.dtype),
        "device_type": param.device.type,
        "libraries": {name: importlib.metadata.version(name) for name in ("torch", "transformers")},
    }

    def compute() -> dict:
        ref = reference_logprobs(model, token_ids, top_k)
        if isinstance(ref, TopKLogprobs):
            return {"values": ref.values.numpy(), "indices": ref.indices.numpy()}
        return {"full": ref.numpy()}

    arrays, info = cache.cached_arrays("kl_reference", ident, compute, mmap=False)
    if "full" in arrays:
        return torch.from_numpy(np.array(arrays["full"])), info
    return TopKLogprobs(torch.from_numpy(np.array(arrays["values"])), torch.from_numpy(np.array(arrays["indices"]))), info
