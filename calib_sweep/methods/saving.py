"""Save formats: a compressed model written so that ``from_pretrained`` reloads the same weights.

:func:`save` chooses the format by what the method is (see its docstring): compressed-tensors
``pack-quantized`` for quantization that ran on llmcompressor, dense weights with a compressed-tensors
sparsity declaration (:func:`sparsity_config`) for pruning, plain weights otherwise, and writes
``compression.json`` (:data:`SAVE_RECORD`) beside them.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import torch

from calib_sweep.errors import CompressionError
from calib_sweep.methods.registry import build_recipe, get_method
from calib_sweep.methods.targets import parse_structure, target_linears

log = logging.getLogger(__name__)

#: What :func:`save` writes beside the model: the format each method family got and its size.
SAVE_RECORD = "compression.json"
#: Names of the quantization parameters compressed-tensors attaches to a module (not part of a dense save).
_QPARAMS = re.compile(r"\.(weight|input|output)_(scale|zero_point|g_idx|global_scale)$")


def _tensor_bytes(model) -> int:
    """Bytes of the tensors a plain (dense) ``save_pretrained`` of ``model`` writes: its state dict, tied
    tensors once, without compressed-tensors quantization parameters (scales, zero points, g_idx)."""
    seen, total = set(), 0
    for key, tensor in model.state_dict().items():
        if _QPARAMS.search(key) or tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        total += tensor.numel() * tensor.element_size()
    return total


@torch.no_grad()
def sparsity_config(model, method_cfg: Any) -> dict:
    """The compressed-tensors sparsity declaration of a pruned ``model`` (inferred from its weights).

    A :class:`compressed_tensors.config.DenseSparsityConfig` dumped to a dict: ``format: dense`` (the
    weights are stored dense, see :func:`save`), ``sparsity_structure`` (``unstructured`` or the
    configured ``N:M``, checked against every target layer), ``global_sparsity`` (share of exact zeros
    over all of the model's parameters, tied tensors once, as compressed-tensors defines it),
    ``targets: [Linear]`` and ``ignore`` (the ``nn.Linear`` layers left dense: the output head).

    Raises:
        CompressionError: a target layer breaks the configured N:M pattern.
    """
    from compressed_tensors.config import DenseSparsityConfig

    targets = target_linears(model)
    pattern = parse_structure(method_cfg.get("structure"))
    if pattern is not None:
        n, m = pattern
        for name, module in targets.items():
            if not bool(((module.weight != 0).reshape(module.weight.shape[0], -1, m).sum(-1) <= n).all()):
                raise CompressionError(f"{name} breaks the {n}:{m} pattern: cannot declare it {n}:{m}-sparse")
    seen, zeros, total = set(), 0, 0
    for param in model.parameters():
        if param.data_ptr() not in seen:
            seen.add(param.data_ptr())
            zeros += int((param == 0).sum())
            total += param.numel()
    ignore = sorted(
        name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear) and name not in targets
    )
    declared = DenseSparsityConfig(
        targets=["Linear"],
        ignore=ignore,
        global_sparsity=round(zeros / max(total, 1), 6),
        sparsity_structure="unstructured" if pattern is None else f"{pattern[0]}:{pattern[1]}",
    ).model_dump()
    declared.pop("registry_requires_subclass", None)  # the registry's class flag, not a config field
    return declared


def save(model, method_cfg: Any, directory: str | Path, tokenizer=None) -> Path:
    """Write the compressed model to ``directory`` so that ``AutoModelForCausalLM.from_pretrained`` loads it
    with the same weights (same perplexity, same zero pattern), its compression declared in ``config.json``.

    What each method family gets (pinned stack: llmcompressor 0.14.0.1, compressed-tensors 0.19.0,
    transformers 5.17):

    * quantization through llmcompressor (``rtn``, ``gptq`` with ``static_groups: true`` and ``backend:
      llmcompressor``, ``awq``):
      compressed-tensors ``pack-quantized`` (``save_pretrained(..., save_compressed=True)``): int weights
      packed into int32 with their scales (and zero points when asymmetric, ``g_idx`` with act-order);
      ``config.json`` holds ``quantization_config`` (``quant_method: compressed-tensors``, ``format``,
      ``config_groups`` with ``num_bits``, ``group_size``, ``symmetric``).  4-bit weights take about 1/8
      of their fp32 bytes.  This packs the in-memory model too: call :func:`save` last, after evaluation.
    * pruning (``sparsegpt``, ``wanda``, ``magnitude``, any structure): dense weights, and ``config.json``
      gets a top-level ``sparsity_config``: compressed-tensors' ``DenseSparsityConfig`` from
      :func:`sparsity_config` (``format: dense``, ``sparsity_structure``, ``global_sparsity``, ``targets``,
      ``ignore``).  No smaller format exists that transformers can reload: compressed-tensors 0.19.0
      removed its sparse compressors (``sparse-bitmask``, ``sparse-24-bitmask``, ``marlin-24`` are only
      legacy config names, none is registered; its ``ModelCompressor.update_config`` writes
      ``sparsity_config: {}`` "sparsity is removed for now"), and a ``quantization_config`` that holds only
      a ``sparsity_config`` makes transformers 5.17's compressed-tensors loader fail
      (``'NoneType' object has no attribute 'config_groups'``), hence the top-level key.  Same size as
      the dense save.
    * ``dense``: plain weights, nothing to declare.
    * ``spqr``: plain dequantized weights: compressed-tensors has no form for its fp16 outliers and
      3-bit group statistics, so it is saved as its effective (dequantized) weights, dense size.
    * ``gptq`` with ``backend: optimum``: plain dequantized weights (optimum 2.3.0 tags its v1-packed
      weights ``gptq_v2`` and the reloaded model's perplexity is wrong), dense size; ``gptq`` with
      ``static_groups: false`` (:mod:`calib_sweep.methods.gptq_faithful`, no packer): likewise.
    * any other method: plain weights as it compressed them, ``note`` its registered ``save_note``.

    Every save also writes ``compression.json`` (:data:`SAVE_RECORD`): ``method``, ``kind``, ``format``,
    ``declared_in`` (the ``config.json`` key, or null), ``weight_bytes`` (the ``*.safetensors`` files),
    ``dense_bytes`` (tensor bytes of a dense save of the same model) and ``note``.  ``tokenizer``, if
    given, is saved beside the model.

    Returns:
        The folder.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    name = method_cfg.name
    method = get_method(name)
    kind = method.kind
    dense_bytes = _tensor_bytes(model)
    sparse = sparsity_config(model, method_cfg) if kind == "pruning" else None
    llmcompressor = build_recipe(method_cfg) is not None
    if llmcompressor:
        model.save_pretrained(directory, save_compressed=True)
    else:
        model.save_pretrained(directory)
    config_path = directory / "config.json"
    config = json.loads(config_path.read_text())
    if sparse is not None:
        config["sparsity_config"] = sparse
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    quantization = config.get("quantization_config") or {}
    if quantization.get("quant_method") == "compressed-tensors" and quantization.get("config_groups"):
        fmt, declared_in, note = quantization.get("format"), "quantization_config", "compressed-tensors quantization"
    elif sparse is not None:
        fmt, declared_in = "dense", "sparsity_config"
        note = ("compressed-tensors 0.19.0 has no sparse compressor and transformers 5.17 cannot load a "
                "sparsity-only quantization_config: dense weights, sparsity declared at the top level of config.json")
    elif not llmcompressor:  # dense, spqr, gptq with backend: optimum: the method's own note
        fmt, declared_in = "dense", None
        note = method.save_note(method_cfg) if callable(method.save_note) else method.save_note
    else:
        raise CompressionError(f"method {name}: the save in {directory} declares no compression in config.json")
    record = {
        "method": name,
        "kind": kind,
        "format": fmt,
        "declared_in": declared_in,
        "weight_bytes": sum(p.stat().st_size for p in directory.glob("*.safetensors")),
        "dense_bytes": dense_bytes,
        "note": note,
    }
    if sparse is not None:
        record["sparsity_structure"] = sparse["sparsity_structure"]
    (directory / SAVE_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    log.info("saved %s: %s", directory, record)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
    return directory
