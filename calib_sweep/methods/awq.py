"""``method=awq``: AWQ (Lin et al. 2024, "AWQ: Activation-aware Weight Quantization for LLM Compression
and Acceleration", Sec. 3.2): per-channel scales searched on a grid to minimise the output error, then
round-to-nearest quantization.

Via llmcompressor's ``AWQModifier`` then ``QuantizationModifier`` (scales written onto the stored
weights).  Layer mappings: llmcompressor's registry (Llama, Qwen, Mistral, ...) or :data:`OPT_AWQ_MAPPINGS`.
Config: ``w_bits``, ``group_size``, ``symmetric``, ``duo_scaling``, ``n_grid``.
"""

from __future__ import annotations

from typing import Any

from calib_sweep.errors import ConfigError
from calib_sweep.methods.llmc import IGNORE, oneshot_compress, weight_groups
from calib_sweep.methods.registry import register_method
from calib_sweep.methods.validation import check_quantization, is_int

#: AWQ mappings (smooth layer -> balanced layers) for OPT, after AutoAWQ's OPT model definition
#: (ReLU between fc1 and fc2 is positively homogeneous, so fc1's outputs can be rescaled).
OPT_AWQ_MAPPINGS = [
    ("re:.*self_attn_layer_norm$", ["re:.*q_proj$", "re:.*k_proj$", "re:.*v_proj$"]),
    ("re:.*v_proj$", ["re:.*out_proj$"]),
    (r"re:.*layers\.\d+\.final_layer_norm$", ["re:.*fc1$"]),  # not the decoder-level one
    ("re:.*fc1$", ["re:.*fc2$"]),
]

#: Linear-layer name suffixes by which :func:`awq_family` recognises an architecture's blocks.
_LLAMA_LIKE = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
_OPT_LIKE = {"q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"}


def awq_family(layer_names) -> str | None:
    """``"llama"`` or ``"opt"`` when every target layer name fits that family's AWQ mappings, else None."""
    suffixes = {name.rsplit(".", 1)[-1] for name in layer_names}
    if suffixes and suffixes <= _LLAMA_LIKE:
        return "llama"
    if suffixes and suffixes <= _OPT_LIKE:
        return "opt"
    return None


def validate(method_cfg: Any, targets: dict) -> None:
    """Bits and group size, ``n_grid`` >= 3, boolean ``duo_scaling``, and layer mappings for the architecture."""
    check_quantization(method_cfg, targets)
    n_grid = method_cfg.get("n_grid", 20)
    if not is_int(n_grid) or n_grid < 3:
        raise ConfigError(f"method.n_grid={n_grid!r} must be an integer >= 3. Fix: e.g. method.n_grid=20.")
    if not isinstance(method_cfg.get("duo_scaling", True), bool):
        raise ConfigError(f"method.duo_scaling={method_cfg.get('duo_scaling')!r} must be true or false. Fix: true.")
    if targets and awq_family(targets) is None:
        raise ConfigError(
            f"method.name=awq has no layer mappings for this architecture (layers like {next(iter(targets))}). "
            "Fix: use a Llama/Qwen/Mistral- or OPT-style model, or method=gptq."
        )


def recipe(method_cfg: Any, model=None) -> list:
    """``[AWQModifier, QuantizationModifier]``; OPT models (by class name) get :data:`OPT_AWQ_MAPPINGS`."""
    from llmcompressor.modifiers.quantization import QuantizationModifier
    from llmcompressor.modifiers.transform.awq import AWQMapping, AWQModifier

    mappings = None
    if model is not None and type(model).__name__.startswith("OPT"):
        mappings = [AWQMapping(smooth, balance) for smooth, balance in OPT_AWQ_MAPPINGS]
    return [
        AWQModifier(
            mappings=mappings,
            duo_scaling=bool(method_cfg.get("duo_scaling", True)),
            n_grid=int(method_cfg.get("n_grid", 20)),
            offload_device=None,
        ),
        QuantizationModifier(ignore=IGNORE, config_groups=weight_groups(method_cfg)),
    ]


register_method(
    "awq", kind="quantization", validate=validate, recipe=recipe, compress=oneshot_compress(recipe, fake_quantize=True)
)
