"""GPTQ through optimum's ``GPTQQuantizer`` (``method.backend: optimum``; extra ``[optimum]``:
optimum 2.3.0 with gptqmodel 7.6.0).

The same algorithm as the llmcompressor backend (Frantar et al. 2023, Alg. 1), in the
implementation most of the literature used (AutoGPTQ, now gptqmodel); offered to compare backends on
one calibration set.  optimum 2.3.0's ``GPTQQuantizer`` defaults to ``act_group_aware=True``
(gptqmodel's "group-aware reordering", GAR: columns reordered within and across groups by the Hessian
diagonal before Alg. 1 runs), which is not plain GPTQ and which gptqmodel refuses together with
``desc_act`` or per-channel ``group_size=-1``; :func:`optimum_gptq` passes ``act_group_aware=False``.
Weights are written back dequantized (fake quantization) so that evaluation and
:func:`calib_sweep.methods.verify` see the grid; with ``act_order`` a layer's quantization groups are
not contiguous columns but follow gptqmodel's ``g_idx``, returned as a column permutation for verify.
Saving this backend's packed format is not offered: optimum 2.3.0 tags v1-packed weights as
``gptq_v2`` and the reloaded model's perplexity is wrong.
"""

from __future__ import annotations

from typing import Any

import torch

from calib_sweep.errors import CompressionError, ConfigError


def optimum_gptq(model, sequences: list[torch.Tensor], method_cfg: Any):
    """Quantize ``model`` with optimum's GPTQQuantizer on unpadded ``int64 [1, len]`` sequences.

    Plain GPTQ: ``act_group_aware=False`` (optimum 2.3.0's default ``True`` is gptqmodel's group-aware
    reordering); ``method.act_order`` is GPTQ's ``desc_act`` (columns processed by decreasing Hessian
    diagonal, groups formed in that order), ``method.group_size: null`` is gptqmodel's ``-1``.

    Returns:
        ``(model, group_perms)``: the model with dequantized ``nn.Linear`` weights (see
        :func:`dequantize_in_place`) and ``{layer name: int64 [in_features]}``, for every layer whose
        quantization groups are not contiguous columns (only with ``act_order``), the column order in
        which its groups are contiguous (``group_size`` columns each), for
        :func:`calib_sweep.methods.verify`.

    Raises:
        ConfigError: the extra is not installed (pip install -e '.[optimum]').
        CompressionError: the quantizer produced no dequantizable layer, or groups of unequal size.
    """
    try:
        from optimum.gptq import GPTQQuantizer
    except Exception as exc:  # ImportError, or gptqmodel failing to import its kernels
        raise ConfigError(
            f"method.backend=optimum: optimum/gptqmodel cannot be imported ({type(exc).__name__}: {exc}). "
            "Fix: pip install -e '.[optimum]' or method.backend=llmcompressor."
        ) from exc
    group = method_cfg.group_size
    dataset = [{"input_ids": s.reshape(1, -1).cpu(), "attention_mask": torch.ones_like(s.reshape(1, -1)).cpu()} for s in sequences]
    quantizer = GPTQQuantizer(
        bits=int(method_cfg.w_bits),
        dataset=dataset,
        group_size=-1 if group in (None, -1) else int(group),
        damp_percent=float(method_cfg.damp_percent),
        desc_act=bool(method_cfg.get("act_order", False)),
        act_group_aware=False,  # plain GPTQ (Alg. 1), not gptqmodel's group-aware reordering
        sym=bool(method_cfg.symmetric),
        true_sequential=True,
        model_seqlen=max(s.numel() for s in sequences),
        batch_size=1,
    )
    quantizer.quantize_model(model, tokenizer=None)
    return dequantize_in_place(model)


def group_permutation(g_idx: torch.Tensor, name: str = "layer") -> torch.Tensor | None:
    """The column order in which a packed layer's quantization groups are contiguous.

    Args:
        g_idx: ``int [in_features]``, gptqmodel's group index of every input column.
        name: the layer, for the error message.

    Returns:
        None when the groups already are contiguous runs (``g_idx == arange(in) // group``), else
        ``int64 [in_features]``: ``argsort(g_idx)`` (stable), the columns of group 0, then group 1, ...

    Raises:
        CompressionError: the groups do not all hold the same number of columns (verify counts
            distinct values per run of ``group_size`` columns in this order).
    """
    g_idx = g_idx.detach().long().cpu()
    counts = torch.bincount(g_idx)
    if not bool((counts == counts[0]).all()):
        raise CompressionError(f"{name}: gptqmodel's groups have unequal sizes {sorted(set(counts.tolist()))}")
    perm = torch.argsort(g_idx, stable=True)
    if torch.equal(perm, torch.arange(g_idx.numel())):
        return None
    return perm


def dequantize_in_place(model):
    """Replace gptqmodel's packed QuantLinear modules by ``nn.Linear`` holding dequantized weights.

    Returns:
        ``(model, group_perms)``: ``group_perms`` is ``{layer name: int64 [in_features]}`` from
        :func:`group_permutation` of each layer's ``g_idx``, for layers whose groups are not contiguous.

    Raises:
        CompressionError: no QuantLinear was found, or a layer's groups have unequal sizes.
    """
    replaced = 0
    group_perms: dict[str, torch.Tensor] = {}
    for name, module in list(model.named_modules()):
        if hasattr(module, "dequantize_weight") and hasattr(module, "qweight"):
            # scales[g_idx] * (q - zeros[g_idx]): column i uses group g_idx[i]'s scale and zero.
            weight = module.dequantize_weight().T.contiguous().float()  # [in, out] -> [out, in]
            perm = group_permutation(module.g_idx, name)
            if perm is not None:
                group_perms[name] = perm
            linear = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=module.bias is not None)
            linear.weight.data.copy_(weight)
            if module.bias is not None:
                linear.bias.data.copy_(module.bias.float())
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, linear)
            replaced += 1
    if replaced == 0:
        raise CompressionError("optimum GPTQ produced no quantized layer to dequantize")
    # The model now holds plain dequantized weights: drop optimum's GPTQ tags so that save_pretrained
    # writes a dense checkpoint (optimum 2.3.0 would tag v1-packed weights "gptq_v2": wrong on reload).
    for attr in ("is_quantized", "quantization_method"):
        vars(model).pop(attr, None)
    if hasattr(model.config, "quantization_config"):
        delattr(model.config, "quantization_config")
    return model, group_perms
