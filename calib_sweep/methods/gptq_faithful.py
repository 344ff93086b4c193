"""GPTQ as its authors published it: group grids fitted as each group is reached (``method.static_groups: false``).

Frantar, Ashkboos, Hoefler & Alistarh 2023, "GPTQ: Accurate Post-Training Quantization for Generative
Pre-trained Transformers" (ICLR 2023, arXiv 2210.17323), and their reference code (IST-DASLab/gptq,
``gptq.py`` / ``quant.py``; AutoGPTQ and GPTQModel keep its default ``static_groups=False``).
llmcompressor 0.14 cannot run this variant: its ``quantize_weight`` receives the scales and zero points
its observer computed from the un-updated weights before the column loop starts, and it refuses the
deprecated ``actorder="group"`` ("Only 'weight' and 'static' are supported"); so this module implements
it, and ``method.static_groups: true`` keeps llmcompressor's path (:mod:`calib_sweep.methods.gptq`).

The algorithm, per linear layer ``W`` (``m`` outputs x ``n`` inputs), with the numbers of the paper:

* Objective (Eq. 1): ``argmin_Q ||W X - Q X||_2^2`` over the grid, ``X`` the layer's calibration inputs.
  Its Hessian is ``H = 2 X X^T``; here, as in the reference and llmcompressor, averaged over calibration
  sequences: ``H = 2/S sum_s X_s X_s^T`` (:class:`HessianHook`, a running mean in float32; GPTQ's result
  does not depend on the scale of ``H``, its loss does).
* Greedy column order and optimal update (Eq. 2, from OBQ): quantizing column ``j`` to ``q`` costs
  ``(w_j - q)^2 / [H^-1]_jj`` and is compensated on the columns not yet quantized by
  ``-(w_j - q) / [H^-1]_jj * [H^-1]_{j,:}``; GPTQ quantizes the columns in one fixed order for all rows
  (Sec. 4 "Step 1: arbitrary order"), removing each from ``H^-1`` by Gaussian elimination (Eq. 3).
* Cholesky reformulation (Sec. 4 "Step 3"): the rows of ``H^-1`` that Eq. 3 would produce are the rows
  of the upper Cholesky factor ``U`` of ``(H + lambda I)^-1``, scaled by ``U_jj``, so the update of
  column ``j`` is ``err_j = (w_j - q_j) / U_jj`` and ``W_{:, k} -= err_j U_jk`` for ``k > j``.  Damping
  ``lambda = damp_percent * mean(diag H)`` (the paper's 1%, ``method.damp_percent: 0.01``), computed and
  added in float32 as the reference and llmcompressor do (GPTQ on SmolLM2 is so sensitive that a damping
  term rounded differently moves its perplexity by a percent or more); raised tenfold only where the
  factorization fails (:func:`calib_sweep.methods.hessian.damped_inverse_cholesky`; the reference stops
  with an error there).  Inputs never active (``H_jj = 0``) get ``H_jj = 1``
  and zero weights, as in the reference.
* Lazy batch updates (Sec. 4 "Step 2", Eq. 4-5, Algorithm 1): columns are processed in blocks of
  ``B = block_size`` (128); inside a block every column's update is applied at once to the rest of the
  block, and the block's errors ``E`` (``m x B``) reach the later columns in one product
  ``W_{:, b2:} -= E U_{b1:b2, b2:}`` when the block ends.
* Quantization grid (reference ``quant.py``, min-max per output row): asymmetric
  ``scale = (max(x, 0) - min(x, 0)) / (2^b - 1)``, ``zero = round(-min(x, 0) / scale)``; symmetric
  ``scale = 2 max|x| / (2^b - 1)``, ``zero = 2^(b-1)``; an all-zero row gets ``[-1, 1]``;
  ``q = scale * (clamp(round(w / scale) + zero, 0, 2^b - 1) - zero)``.  Per channel (``group_size:
  null``) one grid per row is fitted once on the un-updated weights.
* Groups (the paper's grouped quantization, one grid per ``g`` consecutive input columns; reference
  ``fasterquant(groupsize=g)``): when column ``j`` with
  ``j % g == 0`` is reached, the grid of columns ``j .. j+g-1`` is fitted on the weights as the lazy
  updates have left them: updated by every earlier block, while the updates of earlier columns of the
  same block are still pending (applied to the block's working copy only), exactly as the reference
  does (so with ``B = 128, g = 64`` the second group of every block is fitted before the first group's
  updates reach it; in block 0 both grids are the static ones).  ``static_groups=True`` (for tests and comparisons; the job runs
  llmcompressor for it) fits every group once on the un-updated weights before the loop instead
  (reference ``static_groups=True``).
* Act order (reference ``--act-order``, described in its README; not in the paper's first version):
  columns are permuted by decreasing ``diag(H)`` before the loop, and groups are formed of ``g``
  consecutive columns *in that order* with dynamic grids (as the reference with ``static_groups=False``);
  the quantized weight is permuted back, so a group's columns are ``perm[k g : (k + 1) g]``, recorded
  for :func:`calib_sweep.methods.verify` (``group_perm``).  With ``static_groups=True`` groups stay
  contiguous in the original order and column ``perm[j]`` uses its original group's grid (llmcompressor's
  ``actorder="weight"``).
* Layers are quantized in sequence, decoder block by decoder block (Sec. 4 and the reference
  ``llama.py``), in the order of :func:`calib_sweep.methods.spqr.block_plan`: the inputs of block 0 and
  every block's other arguments (attention mask, position embeddings) are captured in one dense pass;
  then each block's layers get their Hessians from the block run on its cached inputs, are quantized,
  and the quantized block's outputs become the next block's inputs (:class:`BlockRunner`; all layers of a
  block see the block's inputs before it is quantized: the reference's default, without
  ``--true-sequential``).  Where the model does not chain its blocks that way (a block's input is not the
  previous block's output), each block's Hessians come from a forward pass of the whole model stopped
  after the block instead (SpQR's runner: the same inputs, quadratic in the depth).

Everything is computed in float32 and written back as dequantized weights ("fake quantization") in the
layer's dtype.  The layer loss recorded (``library_error`` in ``results.json`` ``layers``) is the
reference's ``sum((w - q)^2 / U_jj^2) / 2`` over the layer, in the units of ``H = 2/S sum_s X_s X_s^T``
(the reference's and llmcompressor's), so it compares with the ``static_groups: true`` rows directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from calib_sweep.errors import CompressionError
from calib_sweep.methods.hessian import damped_inverse_cholesky

#: ``results.json`` ``compression.summary.implementation`` of this module.
IMPLEMENTATION = "calib_sweep.methods.gptq_faithful"


def fit_grid(x: torch.Tensor, bits: int, symmetric: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Min-max grid of each row of ``x`` (the reference ``quant.py``'s per-channel weight grid).

    Args:
        x: ``float32 [m, k]``, the columns of one group (or all of them, per channel).
        bits: bits per weight (2..8).
        symmetric: zero point fixed at ``2^(bits-1)``; else fitted.

    Returns:
        ``(scale, zero)``, each ``float32 [m, 1]``; ``zero`` holds integers.
    """
    maxq = 2**bits - 1
    zeros = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
    lo = torch.minimum(x.amin(1), zeros)
    hi = torch.maximum(x.amax(1), zeros)
    if symmetric:
        hi = torch.maximum(lo.abs(), hi)
        lo = torch.where(lo < 0, -hi, lo)
    flat = (lo == 0) & (hi == 0)
    lo = torch.where(flat, -torch.ones_like(lo), lo)
    hi = torch.where(flat, torch.ones_like(hi), hi)
    scale = (hi - lo) / maxq
    if symmetric:
        zero = torch.full_like(scale, (maxq + 1) / 2)
    else:
        zero = torch.round(-lo / scale)
    return scale.unsqueeze(1), zero.unsqueeze(1)


def quantize(x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int) -> torch.Tensor:
    """Dequantized ``scale * (clamp(round(x / scale) + zero, 0, 2^bits - 1) - zero)`` (shapes broadcast)."""
    return scale * (torch.clamp(torch.round(x / scale) + zero, 0, 2**bits - 1) - zero)


def inverse_cholesky(hessian: torch.Tensor, damp_percent: float, name: str = "layer") -> tuple[torch.Tensor, float]:
    """Upper Cholesky factor ``U`` of ``(H + lambda I)^-1``, ``lambda = damp_percent * mean(diag H)`` in float32.

    The damping term is a float32 product (the mean of a contiguous copy of the diagonal) added in float32,
    then ``cholesky``, ``cholesky_inverse``,
    ``cholesky(upper=True)`` (GPTQ Sec. 4 Step 3, the operations of the reference and llmcompressor).  If
    that fails, :func:`calib_sweep.methods.hessian.damped_inverse_cholesky` raises the damping tenfold
    at a time.

    Args:
        hessian: ``float32 [n, n]``, dead inputs already given diagonal 1; not modified.
        damp_percent: the first damping fraction.
        name: the layer, for error messages.

    Returns:
        ``(U float32 [n, n], damping fraction used)``.

    Raises:
        CompressionError: not finite, or no factorization up to 100x damping.
    """
    if not torch.isfinite(hessian).all():
        raise CompressionError(f"the Hessian of {name} holds NaN or Inf; cannot compress it")
    H = hessian.clone()
    damp = damp_percent * torch.mean(torch.diag(H))  # the mean of a copy: a strided view sums in another order
    torch.diagonal(H).add_(damp)
    L, info = torch.linalg.cholesky_ex(H)
    if int(info) == 0:
        U, info = torch.linalg.cholesky_ex(torch.cholesky_inverse(L), upper=True)
        if int(info) == 0 and torch.isfinite(U).all():
            return U, float(damp_percent)
    U, frac, _ = damped_inverse_cholesky(hessian, damp_percent, name)
    return U, frac


@dataclass
class GPTQLayerResult:
    """What GPTQ did to one layer.

    Attributes:
        loss: ``sum((w - q)^2 / U_jj^2) / 2`` over the layer (the reference's ``error``), in the units of
            the Hessian passed in.
        damp_used: fraction of the mean Hessian diagonal added before the inverse.
        perm: ``int64 [n]``, the act-order column order (groups of contiguous columns in it), or None.
        scale: ``float32 [m, n_groups]``, the grid scale of each row and group (groups in processing
            order: ``perm`` order with act order and dynamic groups, original order otherwise).
        zero: ``float32 [m, n_groups]``, likewise the zero points.
    """

    loss: float
    damp_used: float
    perm: torch.Tensor | None
    scale: torch.Tensor
    zero: torch.Tensor


@torch.no_grad()
def gptq_quantize_layer(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    *,
    w_bits: int,
    group_size: int | None,
    symmetric: bool,
    damp_percent: float,
    act_order: bool = False,
    static_groups: bool = False,
    block_size: int = 128,
    name: str = "layer",
) -> tuple[torch.Tensor, GPTQLayerResult]:
    """Quantize one weight matrix with GPTQ (Algorithm 1 with lazy batches, see the module docstring).

    Args:
        weight: ``[m, n]`` (out, in) weights, any float dtype; not modified.
        hessian: ``[n, n]``, ``2 X X^T`` of the layer inputs (any positive scale), any float dtype.
        w_bits: bits per weight.
        group_size: input columns per grid (divides ``n``), or None for one grid per output row.
        symmetric: symmetric grid (zero point ``2^(bits-1)``) or min-max asymmetric.
        damp_percent: first damping fraction of the mean Hessian diagonal.
        act_order: process columns by decreasing ``diag(H)``.
        static_groups: fit every group's grid on the un-updated weights before the loop (reference
            ``static_groups=True``) instead of when its first column is reached.
        block_size: columns per lazy batch ``B``.
        name: the layer, for error messages.

    Returns:
        ``(dequantized weight [m, n] in weight.dtype, GPTQLayerResult)``.

    Raises:
        CompressionError: the Hessian is not finite, or cannot be factorized even with 100x damping.
    """
    m, n = weight.shape
    W = weight.detach().to(torch.float32).clone()
    H = hessian.detach().to(device=W.device, dtype=torch.float32).clone()
    per_channel = group_size in (None, -1)
    g = n if per_channel else int(group_size)
    if per_channel:  # fitted once, on the weights as given (the reference fits before zeroing dead inputs)
        row_scale, row_zero = fit_grid(W, w_bits, symmetric)
    dead = torch.diagonal(H) == 0
    torch.diagonal(H)[dead] = 1.0
    W[:, dead] = 0
    if static_groups and not per_channel:  # every grid from the un-updated weights, original column groups
        fitted = [fit_grid(W[:, k : k + g], w_bits, symmetric) for k in range(0, n, g)]
        static_scale = torch.cat([s for s, _ in fitted], 1)
        static_zero = torch.cat([z for _, z in fitted], 1)
    perm = None
    if act_order:
        perm = torch.argsort(torch.diagonal(H), descending=True)
        W = W[:, perm]
        H = H[perm][:, perm]
    U, damp_used = inverse_cholesky(H, damp_percent, name)
    del H

    Q = torch.zeros_like(W)
    loss = torch.zeros(m, dtype=torch.float64, device=W.device)
    scales, zeros = [], []
    scale = zero = None
    if per_channel:
        scale, zero = row_scale, row_zero
    for b1 in range(0, n, block_size):
        b2 = min(b1 + block_size, n)
        block = W[:, b1:b2].clone()  # working copy: receives the updates of this block's columns at once
        errors = torch.zeros(m, b2 - b1, dtype=W.dtype, device=W.device)
        for j in range(b1, b2):
            if not per_channel:
                if static_groups:
                    k = (int(perm[j]) if perm is not None else j) // g
                    scale, zero = static_scale[:, k : k + 1], static_zero[:, k : k + 1]
                elif j % g == 0:  # W as the lazy updates left it: earlier blocks' updates in, this block's pending
                    scale, zero = fit_grid(W[:, j : j + g], w_bits, symmetric)
                    scales.append(scale)
                    zeros.append(zero)
            w = block[:, j - b1]
            q = quantize(w.unsqueeze(1), scale, zero, w_bits).flatten()
            d = U[j, j]
            err = (w - q) / d
            loss += err.double().square()
            block[:, j - b1 :] -= err.unsqueeze(1) * U[j, j:b2].unsqueeze(0)
            errors[:, j - b1] = err
            Q[:, j] = q
        W[:, b2:] -= errors @ U[b1:b2, b2:]

    if per_channel:
        scales, zeros = [row_scale], [row_zero]
    elif static_groups:
        scales, zeros = [static_scale], [static_zero]
    if perm is not None:
        Q = Q[:, torch.argsort(perm)]
    result = GPTQLayerResult(
        loss=float(loss.sum()) / 2, damp_used=damp_used, perm=None if perm is None else perm.cpu(),
        scale=torch.cat(scales, 1).cpu(), zero=torch.cat(zeros, 1).cpu(),
    )
    return Q.to(weight.dtype), result


class HessianHook:
    """Forward hook accumulating ``H = 2/S sum_s X_s X_s^T`` of a linear layer's input, one call per sequence.

    A running mean in float32 (``H <- H * S/(S+1) + (sqrt(2/(S+1)) X)^T (sqrt(2/(S+1)) X)``, the reference's
    and llmcompressor's form), each call's input ``[..., T, in]`` counted as one sequence per leading
    batch item.

    Attributes:
        H: ``float32 [in, in]`` (None before the first call); sequences: calls' batch items so far;
        finite: False once an input held NaN or Inf.
    """

    def __init__(self) -> None:
        self.H: torch.Tensor | None = None
        self.sequences = 0
        self.finite = True

    def __call__(self, module, args, _output) -> None:
        x = args[0].detach()
        batch = x.shape[0] if x.ndim == 3 else 1
        x = x.reshape(-1, x.shape[-1])
        if not torch.isfinite(x).all():
            self.finite = False
        if self.H is None:
            self.H = torch.zeros(x.shape[1], x.shape[1], device=x.device, dtype=torch.float32)
        self.H *= self.sequences / (self.sequences + batch)
        self.sequences += batch
        x = math.sqrt(2 / self.sequences) * x.float()
        self.H += x.t() @ x


class _Stop(Exception):
    """Ends a capture pass after the last decoder block."""


def _hidden(args: tuple, kwargs: dict) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


def _first(output):
    return output[0] if isinstance(output, (tuple, list)) else output


class BlockRunner:
    """Runs a model's decoder blocks one at a time on cached inputs (the reference ``llama.py``'s scheme).

    :meth:`capture` runs the dense model once per sequence, keeping block 0's input and every block's other
    arguments (attention mask, position embeddings: they depend on the token positions only); it checks that
    each block's input is the previous block's output, else returns None (the caller then runs whole forward
    passes).  :meth:`hessians` runs block ``i`` on the current inputs with :class:`HessianHook` on its
    layers; :meth:`advance` replaces the inputs by block ``i``'s outputs (after its layers are quantized).
    """

    def __init__(self, blocks: list[torch.nn.Module], inputs: list[torch.Tensor], calls: list[list[tuple]]):
        self.blocks = blocks
        self.inputs = inputs  # [sequence] hidden states entering the next block
        self.calls = calls  # [sequence][block] (other positional args, kwargs)

    @classmethod
    @torch.no_grad()
    def capture(cls, model: torch.nn.Module, sequences: list[torch.Tensor], blocks: list[torch.nn.Module]):
        """The runner for ``blocks`` (in order), or None when the model does not chain them output to input."""
        if not blocks:
            return None
        inputs: list[torch.Tensor] = []
        calls: list[list[tuple]] = []
        chained = [True]
        last_output: list[torch.Tensor | None] = [None]

        def pre_hook(index: int):
            def hook(module, args, kwargs):
                hidden = _hidden(args, kwargs)
                if index == 0:
                    inputs.append(hidden)
                elif last_output[0] is None or not torch.equal(hidden, last_output[0]):
                    chained[0] = False
                rest = {k: v for k, v in kwargs.items() if k != "hidden_states"}
                calls[-1].append((tuple(args[1:]) if args else (), rest))
            return hook

        def post_hook(index: int):
            def hook(module, args, kwargs, output):
                last_output[0] = _first(output)
                if index == len(blocks) - 1:
                    raise _Stop
            return hook

        handles = []
        for index, block in enumerate(blocks):
            handles.append(block.register_forward_pre_hook(pre_hook(index), with_kwargs=True))
            handles.append(block.register_forward_hook(post_hook(index), with_kwargs=True))
        device = next(model.parameters()).device
        try:
            for seq in sequences:
                calls.append([])
                last_output[0] = None
                try:
                    model(input_ids=seq.to(device), use_cache=False)
                except _Stop:
                    pass
                if len(calls[-1]) != len(blocks):
                    chained[0] = False
        finally:
            for handle in handles:
                handle.remove()
        return cls(blocks, inputs, calls) if chained[0] and len(inputs) == len(sequences) else None

    @torch.no_grad()
    def _run(self, index: int) -> list[torch.Tensor]:
        block = self.blocks[index]
        return [_first(block(hidden, *self.calls[s][index][0], **self.calls[s][index][1]))
                for s, hidden in enumerate(self.inputs)]

    def hessians(self, index: int, layers: dict[str, torch.nn.Module]) -> dict[str, HessianHook]:
        """Run block ``index`` on the current inputs, accumulating the Hessians of ``layers`` (inside it)."""
        hooks = {name: HessianHook() for name in layers}
        handles = [layers[name].register_forward_hook(hook) for name, hook in hooks.items()]
        try:
            self._run(index)
        finally:
            for handle in handles:
                handle.remove()
        return hooks

    def advance(self, index: int) -> None:
        """The next block's inputs: block ``index``'s outputs on the current inputs."""
        self.inputs = self._run(index)


@torch.no_grad()
def forward_hessians(model: torch.nn.Module, sequences: list[torch.Tensor], layers: dict[str, torch.nn.Module],
                     stop_after: torch.nn.Module | None = None) -> dict[str, HessianHook]:
    """:class:`HessianHook` of ``layers`` from forward passes of the whole model (stopped after ``stop_after``)."""
    hooks = {name: HessianHook() for name in layers}
    handles = [layers[name].register_forward_hook(hook) for name, hook in hooks.items()]

    def stop(*_):
        raise _Stop

    if stop_after is not None:
        handles.append(stop_after.register_forward_hook(stop))
    device = next(model.parameters()).device
    try:
        for seq in sequences:
            try:
                model(input_ids=seq.to(device), use_cache=False)
            except _Stop:
                pass
    finally:
        for handle in handles:
            handle.remove()
    return hooks


def gptq_compress(
    model: torch.nn.Module, sequences: list[torch.Tensor], method_cfg: Any, layers: dict[str, torch.nn.Linear]
) -> dict[str, dict[str, Any]]:
    """Quantize ``layers`` of ``model`` in place with :func:`gptq_quantize_layer`, block after block.

    Args:
        model: causal LM (any device).
        sequences: unpadded calibration sequences, ``int64 [1, len_i]``.
        method_cfg: the ``method`` config (``w_bits``, ``group_size``, ``symmetric``, ``damp_percent``,
            ``act_order``, ``block_size``).
        layers: ``{name: nn.Linear}`` to quantize.

    Returns:
        ``{name: {"result": GPTQLayerResult, "library_error": loss, "hessian_trace": trace of H before
        damping, "fraction_changed": share of weights changed}}``; loss and trace in the units of
        ``H = 2/S sum_s X_s X_s^T`` (the reference's and llmcompressor's).

    Raises:
        CompressionError: a layer input holds NaN or Inf, or a Hessian cannot be factorized.
    """
    from calib_sweep.methods.spqr import block_plan, decoder_blocks

    out: dict[str, dict[str, Any]] = {}

    def quantize_group(group: dict[str, torch.nn.Linear], hooks: dict[str, HessianHook]) -> None:
        for name, layer in group.items():
            hook = hooks.pop(name)
            if not hook.finite:
                raise CompressionError(f"layer input of {name} holds NaN or Inf: the model overflows on the calibration data")
            H = hook.H
            trace = float(torch.diagonal(H).sum())
            q, result = gptq_quantize_layer(
                layer.weight, H, w_bits=int(method_cfg.w_bits), group_size=method_cfg.group_size,
                symmetric=bool(method_cfg.symmetric), damp_percent=float(method_cfg.damp_percent),
                act_order=bool(method_cfg.get("act_order", False)), static_groups=False,
                block_size=int(method_cfg.get("block_size", 128)), name=name,
            )
            changed = float((q != layer.weight).float().mean())
            layer.weight.data.copy_(q)
            out[name] = {"result": result, "library_error": result.loss, "hessian_trace": trace,
                         "fraction_changed": changed}

    plan = block_plan(model, layers)
    blocks = [block for _, block in decoder_blocks(model, layers)]
    runner = BlockRunner.capture(model, sequences, blocks)
    groups = {id(block): group for block, group in plan if block is not None}
    if runner is not None:
        last = max((i for i, block in enumerate(blocks) if groups.get(id(block))), default=-1)
        for index, block in enumerate(blocks[: last + 1]):
            group = groups.get(id(block))
            if group:
                quantize_group(group, runner.hessians(index, group))
            if index < last:
                runner.advance(index)
    else:
        for block, group in plan:
            if block is not None:
                quantize_group(group, forward_hessians(model, sequences, group, stop_after=block))
    for block, group in plan:
        if block is None:  # layers outside the decoder blocks, after them
            quantize_group(group, forward_hessians(model, sequences, group))
    return out
