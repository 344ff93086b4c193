"""How a model's weights were stored before calib_sweep loaded them: the base grid of its checkpoint.

The embedded models are GGUF files whose tensors are already quantized (SmolLM2-135M-Instruct: every
decoder linear ``Q4_1``, 4-bit, blocks of 32 input columns, a scale and a minimum per block;
gemma-3-270m: a ``Q4_K_M`` mix of ``Q5_0``, ``Q4_K``, ``Q6_K`` and ``Q8_0``).  Dequantized to floats they
still lie on that grid, so quantizing them again at the same or a nearby bit width favours plain
rounding: asymmetric RTN at 4 bits, group 64 nearly returns to the file's grid (issue 26).  Every job
records :func:`weights_storage` (``results.json["weights_storage"]``), and :func:`grid_warning` says
when a quantization job's grid is at or near the base one.

GGUF block formats (ggml's ``ggml-quants`` definitions; each block runs along a row, i.e. over
consecutive input columns, the direction GPTQ's groups run):

======  ====  =====  ==========================================================
type    bits  block  per-block parameters
======  ====  =====  ==========================================================
Q4_0    4     32     scale (symmetric)
Q4_1    4     32     scale + minimum (asymmetric)
Q5_0    5     32     scale (symmetric)
Q5_1    5     32     scale + minimum (asymmetric)
Q8_0    8     32     scale (symmetric)
Q2_K    2     16     4-bit scale + minimum per 16, super-block of 256
Q3_K    3     16     6-bit scale per 16, super-block of 256 (symmetric)
Q4_K    4     32     6-bit scale + minimum per 32, super-block of 256
Q5_K    5     32     6-bit scale + minimum per 32, super-block of 256
Q6_K    6     16     8-bit scale per 16, super-block of 256 (symmetric)
======  ====  =====  ==========================================================
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

#: ``{GGUF type name: (bits, block size in input columns, symmetric)}`` of the quantized types.
GGUF_GRIDS: dict[str, tuple[int, int, bool]] = {
    "Q4_0": (4, 32, True), "Q4_1": (4, 32, False), "Q5_0": (5, 32, True), "Q5_1": (5, 32, False),
    "Q8_0": (8, 32, True), "Q8_1": (8, 32, False), "Q2_K": (2, 16, False), "Q3_K": (3, 16, True),
    "Q4_K": (4, 32, False), "Q5_K": (5, 32, False), "Q6_K": (6, 16, True), "Q8_K": (8, 256, True),
}

#: GGUF tensor family (name without ``blk.<i>.``) -> the Hugging Face module it becomes.
GGUF_FAMILIES = {
    "attn_q.weight": "self_attn.q_proj", "attn_k.weight": "self_attn.k_proj", "attn_v.weight": "self_attn.v_proj",
    "attn_output.weight": "self_attn.o_proj", "ffn_gate.weight": "mlp.gate_proj", "ffn_up.weight": "mlp.up_proj",
    "ffn_down.weight": "mlp.down_proj", "token_embd.weight": "embed_tokens", "output.weight": "lm_head",
}

#: A base grid is "near" a quantization job's when it has at most this many more bits than the job's.
NEAR_BITS = 1


def gguf_storage(gguf_path) -> dict[str, Any]:
    """The storage of a GGUF file's tensors, read from its header (memory-mapped, no weights decoded).

    Returns:
        ``{"format": "gguf", "file": <file name>, "families": {<HF module family>: {<GGUF type>: count}},
        "linear_params": {<GGUF type>: number of decoder-linear weights}, "grids": {<type>: {"bits",
        "group_size", "symmetric"}}}``; unquantized types (``F32``, ``F16``, ``BF16``) have no grid.
    """
    from gguf import GGUFReader

    reader = GGUFReader(str(gguf_path))
    families: dict[str, Counter] = {}
    linear: Counter = Counter()
    for tensor in reader.tensors:
        gguf_family = re.sub(r"^blk\.\d+\.", "", tensor.name)
        family = GGUF_FAMILIES.get(gguf_family, gguf_family)
        kind = tensor.tensor_type.name
        families.setdefault(family, Counter())[kind] += 1
        if family.startswith(("self_attn.", "mlp.")):
            linear[kind] += int(tensor.n_elements)
    kinds = sorted({kind for counts in families.values() for kind in counts})
    return {
        "format": "gguf",
        "file": str(getattr(gguf_path, "name", gguf_path)).rsplit("/", 1)[-1],
        "families": {family: dict(sorted(counts.items())) for family, counts in sorted(families.items())},
        "linear_params": dict(sorted(linear.items())),
        "grids": {kind: {"bits": GGUF_GRIDS[kind][0], "group_size": GGUF_GRIDS[kind][1], "symmetric": GGUF_GRIDS[kind][2]}
                  for kind in kinds if kind in GGUF_GRIDS},
    }


def weights_storage(model_cfg: Any) -> dict[str, Any]:
    """How the job's base weights were stored: :func:`gguf_storage` for an embedded model (its registry
    asset, fetched if needed), ``{"format": "random"}`` for ``model.init=random``, else the checkpoint's
    declared dtype and ``quantization_config`` from its ``config.json`` (``{"format": "checkpoint",
    "torch_dtype": ..., "quantization_config": ... or None}``).

    Raises:
        calib_sweep.assets.AssetError: the embedded asset cannot be fetched.
    """
    from calib_sweep import assets
    from calib_sweep.models.validation import is_random_init

    if is_random_init(model_cfg):
        return {"format": "random"}
    if model_cfg.get("source") == "embedded":
        return gguf_storage(assets.fetch(model_cfg.asset))
    from calib_sweep.models.architecture import load_config

    config = load_config(model_cfg)
    quant = getattr(config, "quantization_config", None)
    return {"format": "checkpoint", "torch_dtype": str(getattr(config, "torch_dtype", None) or getattr(config, "dtype", None)),
            "quantization_config": quant if isinstance(quant, dict) or quant is None else quant.to_dict()}


def describe(storage: dict[str, Any]) -> str:
    """One line naming the base grid of the decoder linears, e.g. ``GGUF SmolLM2-...gguf: Q4_1 (4-bit
    g32 asymmetric) 100% of linear weights``."""
    if storage.get("format") != "gguf":
        quant = storage.get("quantization_config")
        return f"{storage.get('format')} weights" + (f", quantization_config {quant}" if quant else "")
    total = sum(storage["linear_params"].values()) or 1
    parts = []
    for kind, count in sorted(storage["linear_params"].items(), key=lambda item: -item[1]):
        grid = storage["grids"].get(kind)
        what = (f"{grid['bits']}-bit g{grid['group_size']} {'symmetric' if grid['symmetric'] else 'asymmetric'}"
                if grid else "unquantized")
        parts.append(f"{kind} ({what}) {count / total:.0%}")
    return f"GGUF {storage['file']}: " + ", ".join(parts) + " of linear weights"


def grid_warning(storage: dict[str, Any] | None, method_cfg: Any) -> str | None:
    """A warning when a weight-quantization job's grid is at or near the base grid, else ``None``.

    "Near": the base type has at most :data:`NEAR_BITS` more bits than ``method.w_bits``, for at least
    half of the decoder-linear weights.  Pruning methods, dense and 16-bit jobs get ``None``.
    """
    if not storage or storage.get("format") != "gguf" or "w_bits" not in method_cfg:
        return None
    w_bits = method_cfg.get("w_bits")
    if not isinstance(w_bits, int) or w_bits >= 16:
        return None
    total = sum(storage["linear_params"].values())
    near = {kind: count for kind, count in storage["linear_params"].items()
            if kind in storage["grids"] and storage["grids"][kind]["bits"] <= w_bits + NEAR_BITS}
    if not total or sum(near.values()) < total / 2:
        return None
    kind = max(near, key=near.get)
    grid = storage["grids"][kind]
    group = method_cfg.get("group_size")
    return (f"{w_bits}-bit {'g' + str(group) if group else 'per-channel'} on weights already on a "
            f"{grid['bits']}-bit g{grid['group_size']} {'symmetric' if grid['symmetric'] else 'asymmetric'} grid "
            f"(GGUF {kind}, {sum(near.values()) / total:.0%} of linear weights within {NEAR_BITS} bit of the job's): "
            + ("rounding is favoured" if grid["bits"] <= w_bits else "rounding may be favoured"))
