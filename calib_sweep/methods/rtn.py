"""``method=rtn``: round-to-nearest weight quantization, the data-free quantization baseline.

Min-max scales per group of ``group_size`` input columns (null: one per output channel), ``w_bits``
bits, ``symmetric`` or with a zero point; llmcompressor's ``QuantizationModifier`` (min-max observer),
whose scales are then written onto the stored weights (:func:`calib_sweep.methods.llmc.fake_quantize_in_place`).
Config: ``w_bits``, ``group_size``, ``symmetric``.
"""

from __future__ import annotations

from typing import Any

from calib_sweep.methods.llmc import IGNORE, oneshot_compress, weight_groups
from calib_sweep.methods.registry import register_method
from calib_sweep.methods.validation import check_quantization


def recipe(method_cfg: Any, model=None) -> list:
    """``[QuantizationModifier]`` quantizing every ``Linear`` but the head as configured."""
    from llmcompressor.modifiers.quantization import QuantizationModifier

    return [QuantizationModifier(ignore=IGNORE, config_groups=weight_groups(method_cfg))]


register_method(
    "rtn", kind="quantization", validate=check_quantization, recipe=recipe,
    compress=oneshot_compress(recipe, fake_quantize=True), data_free=True,
)
