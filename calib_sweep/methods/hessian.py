"""Calibration statistics shared by the methods: unpadded sequences, per-layer Hessians, damping.

The GPTQ family (GPTQ, SparseGPT, SpQR) works on the layer-wise proxy Hessian ``H = 2 X X^T`` of a
linear layer's inputs ``X`` (Frantar et al. 2023, "GPTQ", Sec. 3, Eq. 1-2) and needs the Cholesky
factor of ``(H + lambda I)^-1`` (GPTQ Sec. 4 "Step 3: Cholesky Reformulation").  Two things here
make that robust:

* padding never enters a statistic: a calibration batch with an attention mask is turned into a
  list of unpadded sequences (:func:`calibration_sequences`), and every statistic is accumulated
  over those real tokens only;
* a singular or ill-conditioned Hessian (e.g. case C05: two samples that repeat one token) gets its
  damping raised tenfold at a time until the factorization succeeds (:func:`damped_inverse_cholesky`),
  and the damping actually used is returned so that it can be recorded per layer.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from calib_sweep.errors import CompressionError, ConfigError

#: Damping fractions are raised by this factor after each failed factorization ...
DAMP_STEP = 10.0
#: ... up to this fraction of the mean Hessian diagonal (beyond it the layer is near round-to-nearest).
DAMP_MAX = 100.0


def calibration_sequences(
    input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> list[torch.Tensor]:
    """Split a calibration batch into unpadded sequences.

    Args:
        input_ids: ``int64 [n_samples, seq_len]``.
        attention_mask: ``[n_samples, seq_len]`` of 0/1 (any int or bool dtype) or ``None`` (no
            padding).  Positions with mask 0 are dropped wherever they are (left or right padding).

    Returns:
        ``n`` tensors ``int64 [1, len_i]`` on ``input_ids.device``; rows with no real token are
        skipped.

    Raises:
        ConfigError: wrong rank, mismatched shapes, or no real token at all.
    """
    if input_ids.ndim != 2:
        raise ConfigError(f"calibration input_ids has shape {tuple(input_ids.shape)}; expected [n_samples, seq_len].")
    if attention_mask is None:
        return [row.unsqueeze(0) for row in input_ids]
    if attention_mask.shape != input_ids.shape:
        raise ConfigError(
            f"calibration attention_mask shape {tuple(attention_mask.shape)} != input_ids shape "
            f"{tuple(input_ids.shape)}. Fix: pass the mask returned with the batch."
        )
    keep = attention_mask.to(input_ids.device).bool()
    sequences = [row[m].unsqueeze(0) for row, m in zip(input_ids, keep) if bool(m.any())]
    if not sequences:
        raise ConfigError("the calibration attention_mask is all zeros: no real token to calibrate on.")
    return sequences


class _StopForward(Exception):
    """Raised by a hook to end a forward pass once the layers of interest have run."""


def accumulate_hessians(
    model: torch.nn.Module,
    sequences: Iterable[torch.Tensor],
    layers: dict[str, torch.nn.Linear],
    stop_after: torch.nn.Module | None = None,
) -> dict[str, torch.Tensor]:
    """Per-token mean Hessian ``H = 2 X X^T / n_tokens`` of each layer's input, from forward hooks.

    Args:
        model: the causal LM (any device); run in ``eval`` mode under ``no_grad``.
        sequences: unpadded ``int64 [1, len]`` token tensors (see :func:`calibration_sequences`), so
            no pad position can enter ``H``.
        layers: ``{name: nn.Linear}`` to hook.
        stop_after: optional module whose forward ends the pass early (the decoder block holding
            ``layers``), so later blocks are not run.

    Returns:
        ``{name: float32 [in_features, in_features]}`` on the layer's device.

    Raises:
        CompressionError: a layer input holds NaN or Inf.
    """
    hessians: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    bad: list[str] = []

    def hook_for(name: str):
        def hook(module, args, _output):
            x = args[0].detach().reshape(-1, args[0].shape[-1]).float()
            if not torch.isfinite(x).all():
                bad.append(name)
            if name not in hessians:
                hessians[name] = torch.zeros(x.shape[1], x.shape[1], device=x.device, dtype=torch.float32)
                counts[name] = 0
            hessians[name].addmm_(x.t(), x, alpha=2.0)
            counts[name] += x.shape[0]

        return hook

    def stop(*_):
        raise _StopForward

    handles = [module.register_forward_hook(hook_for(name)) for name, module in layers.items()]
    if stop_after is not None:
        handles.append(stop_after.register_forward_hook(stop))
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            for seq in sequences:
                try:
                    model(input_ids=seq.to(device), use_cache=False)
                except _StopForward:
                    pass
    finally:
        for handle in handles:
            handle.remove()
    if bad:
        raise CompressionError(f"layer input of {bad[0]} holds NaN or Inf: the model overflows on the calibration data")
    return {name: h / max(counts[name], 1) for name, h in hessians.items()}


def damped_inverse_cholesky(
    hessian: torch.Tensor, damp_percent: float, name: str = "layer"
) -> tuple[torch.Tensor, float, torch.Tensor]:
    """Upper Cholesky factor of ``(H + d * mean(diag H) * I)^-1``, raising ``d`` until it exists.

    GPTQ (Frantar et al. 2023, Sec. 4, Step 3) dampens with ``d = 0.01``; when the factorization
    fails or is not finite, ``d`` is multiplied by :data:`DAMP_STEP` (10) up to :data:`DAMP_MAX`.
    Dead inputs (zero diagonal: never-active features) get diagonal 1, as in GPTQ's reference code.

    Args:
        hessian: ``[n, n]`` symmetric (any float dtype; not modified).
        damp_percent: the first damping fraction ``d`` (> 0).
        name: the layer's name, for the error message.

    Returns:
        ``(U float32 [n, n] upper triangular, d actually used, dead bool [n])``.

    Raises:
        CompressionError: ``H`` holds NaN/Inf, or no ``d <= DAMP_MAX`` gives a factorization.
    """
    H = hessian.detach().to(torch.float32).clone()
    if not torch.isfinite(H).all():
        raise CompressionError(f"the Hessian of {name} holds NaN or Inf; cannot compress it")
    diag = torch.diagonal(H)
    dead = diag == 0
    diag[dead] = 1.0
    mean_diag = float(diag.mean())
    frac = float(damp_percent)
    while frac <= DAMP_MAX * (1 + 1e-9):
        Hd = H.clone()
        torch.diagonal(Hd).add_(frac * mean_diag)
        L, info = torch.linalg.cholesky_ex(Hd)
        if int(info) == 0:
            U, info = torch.linalg.cholesky_ex(torch.cholesky_inverse(L), upper=True)
            if int(info) == 0 and torch.isfinite(U).all():
                return U, frac, dead
        frac *= DAMP_STEP
    raise CompressionError(
        f"the Hessian of {name} could not be factorized even with damping {DAMP_MAX} x mean diagonal"
    )
