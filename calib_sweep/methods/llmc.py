"""llmcompressor backend: the runner of rtn, gptq, awq, sparsegpt and wanda, and the fixes it needs here.

Each of those methods' modules builds its own recipe (a list of llmcompressor modifiers) from the parts
here (:data:`IGNORE`, :func:`weight_groups`, :func:`mask_structure`) and registers
:func:`oneshot_compress` of it, which runs it with ``oneshot`` (:func:`run_oneshot`).

Three behaviours of llmcompressor 0.14 are changed, only for the duration of one ``oneshot`` call
(:func:`patched`), each measured on this project's machines:

* GPTQ (``modifiers/gptq/helpers.py: factorize_hessian``) replaces a Hessian whose Cholesky
  factorization fails by the identity, i.e. silently falls back to round-to-nearest, and SparseGPT
  (``sgpt_sparsify.sparsify_weight``) does the same.  Here llmcompressor's own factorization runs
  first (so results are bit-identical to plain llmcompressor when it succeeds); only where it fails
  is the damping raised tenfold at a time (:func:`calib_sweep.methods.hessian.damped_inverse_cholesky`).
  The damping used is recorded per layer.
* AWQ pins its cached intermediates (``IntermediatesCache.pin_memory``), which raises "Cannot access
  accelerator device" on a machine without one; pinning is skipped when CUDA is unavailable.
* AWQ infers layer mappings only for registered architectures (OPT is not); OPT gets explicit ones
  (:data:`calib_sweep.methods.awq.OPT_AWQ_MAPPINGS`).
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable

import torch

from calib_sweep.methods.hessian import damped_inverse_cholesky
from calib_sweep.methods.targets import parse_structure

#: Layers never compressed: the output head (tied to the embeddings in many small models).
IGNORE = ["re:.*lm_head"]


def _weight_args(method_cfg: Any) -> dict:
    group = method_cfg.group_size
    per_channel = group in (None, -1)
    return {
        "num_bits": int(method_cfg.w_bits),
        "type": "int",
        "symmetric": bool(method_cfg.symmetric),
        "strategy": "channel" if per_channel else "group",
        "group_size": None if per_channel else int(group),
    }


def weight_groups(method_cfg: Any) -> dict | None:
    """compressed-tensors ``config_groups`` quantizing every ``Linear``'s weights as ``method`` says
    (``w_bits``, ``group_size``: null = per output channel, ``symmetric``); None without ``w_bits``."""
    return {"group_0": {"targets": ["Linear"], "weights": _weight_args(method_cfg)}} if "w_bits" in method_cfg else None


def mask_structure(method_cfg: Any) -> str:
    """llmcompressor's ``mask_structure`` for ``method.structure``: ``"0:0"`` (unstructured) or ``"N:M"``."""
    pattern = parse_structure(method_cfg.get("structure")) if "sparsity" in method_cfg else None
    return "0:0" if pattern is None else f"{pattern[0]}:{pattern[1]}"


@contextlib.contextmanager
def patched(model: torch.nn.Module, damping: dict[str, float]):
    """Within the block: escalating damping for GPTQ/SparseGPT (recorded into ``damping``
    ``{layer name: fraction of mean diag H used}``), and no memory pinning without CUDA."""
    from llmcompressor.modifiers.gptq import base as gptq_base
    from llmcompressor.modifiers.gptq import gptq_quantize
    from llmcompressor.modifiers.pruning.sparsegpt import base as sgpt_base
    from llmcompressor.pipelines.cache import IntermediatesCache

    names = {module: name for name, module in model.named_modules()}
    current: list[torch.nn.Module] = []
    orig_prepare = gptq_base.prepare_batch
    orig_factorize = gptq_quantize.factorize_hessian
    orig_sparsify = sgpt_base.sparsify_weight
    orig_pin = IntermediatesCache.pin_memory

    def prepare_batch(batch, *args, **kwargs):
        current[:] = list(batch)
        return orig_prepare(batch, *args, **kwargs)

    def factorize_hessian(weights, hessians, percdamp, used_rtn_fallback):
        # llmcompressor's own factorization, one item at a time (its path for batches < 16), so the
        # result is bit-identical to plain llmcompressor whenever it succeeds: GPTQ on a model with
        # activation outliers is so sensitive that a differently rounded damping term alone moved
        # SmolLM2's perplexity by 3%.  An item it would replace by the identity (silent RTN) is
        # redone from a copy of its Hessian with escalating damping instead.
        for index in range(hessians.shape[0]):
            name = names.get(current[index]) if index < len(current) else f"batch item {index}"
            kept = hessians[index].clone()
            failed = torch.zeros(1, dtype=torch.bool, device=used_rtn_fallback.device)
            orig_factorize(weights[index : index + 1], hessians[index : index + 1], percdamp, failed)
            frac = float(percdamp)
            if bool(failed.item()):
                U, frac, _ = damped_inverse_cholesky(kept, percdamp, name)
                hessians[index].copy_(U)
            damping[name] = frac
            del kept
        return hessians

    def sparsify_weight(module, hessians_dict, sparsity, prune_n, prune_m, block_size, dampening_frac, preserve_sparsity_mask):
        name = names.get(module, "layer")
        _, frac, _ = damped_inverse_cholesky(hessians_dict[module], dampening_frac, name)
        damping[name] = frac
        return orig_sparsify(module, hessians_dict, sparsity, prune_n, prune_m, block_size, frac, preserve_sparsity_mask)

    def pin_memory(self, *args, **kwargs):
        if torch.cuda.is_available():
            return orig_pin(self, *args, **kwargs)
        return None

    gptq_base.prepare_batch = prepare_batch
    gptq_quantize.factorize_hessian = factorize_hessian
    sgpt_base.sparsify_weight = sparsify_weight
    IntermediatesCache.pin_memory = pin_memory
    try:
        yield
    finally:
        gptq_base.prepare_batch = orig_prepare
        gptq_quantize.factorize_hessian = orig_factorize
        sgpt_base.sparsify_weight = orig_sparsify
        IntermediatesCache.pin_memory = orig_pin


def run_oneshot(
    model, sequences: list[torch.Tensor], method_cfg: Any, recipe: list, fake_quantize: bool = False
) -> tuple[torch.nn.Module, dict[str, float], dict]:
    """Run llmcompressor's ``oneshot`` with ``recipe`` on unpadded sequences, one per batch (so no padding exists).

    ``fake_quantize``: afterwards write the weights onto their grid (:func:`fake_quantize_in_place`), for
    recipes whose ``QuantizationModifier`` only attaches scales (rtn, awq).

    Returns:
        ``(model, {layer name: damping fraction used}, {layer name: {field: value}})``: damping only for
        GPTQ/SparseGPT; the per-layer figures the library computed, captured by
        :class:`calib_sweep.methods.diagnostics.LibraryCapture` (GPTQ, SparseGPT, Wanda).
    """
    from calib_sweep.methods.diagnostics import LibraryCapture

    from datasets import Dataset
    from llmcompressor import oneshot

    rows = [seq.reshape(-1).tolist() for seq in sequences]
    dataset = Dataset.from_dict({"input_ids": rows, "attention_mask": [[1] * len(r) for r in rows]})
    damping: dict[str, float] = {}
    with patched(model, damping), LibraryCapture(model) as capture:
        model = oneshot(
            model=model,
            dataset=dataset,
            recipe=recipe,
            num_calibration_samples=len(rows),
            max_seq_length=max(len(r) for r in rows),
            shuffle_calibration_samples=False,
            batch_size=1,
        )
    if fake_quantize:
        fake_quantize_in_place(model)
    return model, damping, capture.rows


def oneshot_compress(recipe: Callable[[Any, Any], list], fake_quantize: bool = False):
    """A method's ``compress`` (see :class:`calib_sweep.methods.registry.Method`) that runs
    ``recipe(method_cfg, model)`` with :func:`run_oneshot`, recording into ``record`` the damping used per
    layer (``damping``, GPTQ/SparseGPT) and the library's per-layer figures (``library_layers``)."""

    def compress(model, sequences: list[torch.Tensor], method_cfg: Any, record: dict) -> torch.nn.Module:
        model, damping, captured = run_oneshot(model, sequences, method_cfg, recipe(method_cfg, model), fake_quantize)
        if damping:
            record["damping"] = damping
        if captured:
            record["library_layers"] = captured
        return model

    return compress


def fake_quantize_in_place(model) -> int:
    """Write each quantized layer's weight onto its grid (``QuantizationModifier`` only attaches
    scales and quantizes at forward time, leaving the stored weights as they were).

    Returns:
        The number of layers written.
    """
    from compressed_tensors.quantization import fake_quantize

    done = 0
    with torch.no_grad():
        for module in model.modules():
            scheme = getattr(module, "quantization_scheme", None)
            if scheme is None or scheme.weights is None or not hasattr(module, "weight_scale"):
                continue
            zero = getattr(module, "weight_zero_point", None)
            module.weight.data.copy_(fake_quantize(module.weight, module.weight_scale, zero, scheme.weights))
            done += 1
    return done
