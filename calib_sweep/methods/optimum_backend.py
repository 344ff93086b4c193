"""GPTQ through optimum's ``GPTQQuantizer`` (``method.backend: optimum``; extra ``[optimum]``:
optimum 2.3.0 with gptqmodel 7.6.0).

The same algorithm as the llmcompressor backend (Frantar et al. 2023, Alg. 1), in the
implementation most of the literature used (AutoGPTQ, now gptqmodel); offered to compare backends on
one calibration set.  Weights are written back dequantized (fake quantization) so that evaluation and
:func:`calib_sweep.methods.verify` see the grid.  Saving this backend's packed format is not offered:
optimum 2.3.0 tags v1-packed weights as ``gptq_v2`` and the reloaded model's perplexity is wrong.
"""

from __future__ import annotations

from typing import Any

import torch

from calib_sweep.errors import CompressionError, ConfigError


def optimum_gptq(model, sequences: list[torch.Tensor], method_cfg: Any):
    """Quantize ``model`` with optimum's GPTQQuantizer on unpadded ``int64 [1, len]`` sequences.

    Raises:
        ConfigError: the extra is not installed (pip install -e '.[optimum]').
        CompressionError: the quantizer produced no dequantizable layer.
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
        sym=bool(method_cfg.symmetric),
        true_sequential=True,
        model_seqlen=max(s.numel() for s in sequences),
        batch_size=1,
    )
    quantizer.quantize_model(model, tokenizer=None)
    return dequantize_in_place(model)


def dequantize_in_place(model):
    """Replace gptqmodel's packed QuantLinear modules by ``nn.Linear`` holding dequantized weights."""
    replaced = 0
    for name, module in list(model.named_modules()):
        if hasattr(module, "dequantize_weight") and hasattr(module, "qweight"):
            weight = module.dequantize_weight().T.contiguous().float()  # [in, out] -> [out, in]
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
    return model
