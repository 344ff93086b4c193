"""``method=gptq``: GPTQ (Frantar et al. 2023, "GPTQ: Accurate Post-Training Quantization for Generative
Pre-trained Transformers", Alg. 1): columns quantized one at a time, each one's error propagated to the
rest through the inverse Hessian of the layer inputs.

Two backends (``backend``): llmcompressor's ``GPTQModifier`` (default; damping raised tenfold while the
Cholesky factorization fails, recorded per layer, :mod:`calib_sweep.methods.llmc`) or optimum's
``GPTQQuantizer`` (``backend: optimum``, extra ``[optimum]``, :mod:`calib_sweep.methods.optimum_backend`).
Config: ``w_bits``, ``group_size`` (null: per output channel), ``symmetric``, ``damp_percent`` (fraction
of the mean Hessian diagonal added to it), ``act_order``, ``block_size``.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from calib_sweep.errors import ConfigError
from calib_sweep.methods.llmc import IGNORE, oneshot_compress, weight_groups
from calib_sweep.methods.registry import register_method
from calib_sweep.methods.validation import check_damp, check_quantization


def optimum_available() -> bool:
    """True when the ``[optimum]`` extra (optimum 2.3.0 + gptqmodel 7.6.0) is importable."""
    return all(importlib.util.find_spec(m) is not None for m in ("optimum", "gptqmodel"))


def validate(method_cfg: Any, targets: dict) -> None:
    """Damping, bits and group size, then ``backend`` (``optimum`` only with the extra installed)."""
    check_damp(method_cfg)
    check_quantization(method_cfg, targets)
    backend = method_cfg.get("backend", "llmcompressor")
    if backend not in ("llmcompressor", "optimum"):
        raise ConfigError(f"method.backend={backend!r} is unknown. Fix: llmcompressor or optimum.")
    if backend == "optimum" and not optimum_available():
        raise ConfigError(
            "method.backend=optimum needs the optional extra (optimum==2.3.0, gptqmodel==7.6.0), which is not "
            "installed. Fix: pip install -e '.[optimum]' or method.backend=llmcompressor."
        )


def recipe(method_cfg: Any, model=None) -> list | None:
    """``[GPTQModifier]`` on every ``Linear`` but the head; None with ``backend: optimum``."""
    if method_cfg.get("backend") == "optimum":
        return None
    from llmcompressor.modifiers.quantization import GPTQModifier

    return [
        GPTQModifier(
            ignore=IGNORE,
            config_groups=weight_groups(method_cfg),
            dampening_frac=float(method_cfg.damp_percent),
            actorder="weight" if method_cfg.get("act_order") else None,
            block_size=int(method_cfg.get("block_size", 128)),
        )
    ]


_llmcompressor_compress = oneshot_compress(recipe)


def _compress(model, sequences: list, method_cfg: Any, record: dict):
    if method_cfg.get("backend") != "optimum":
        return _llmcompressor_compress(model, sequences, method_cfg, record)
    from calib_sweep.methods.optimum_backend import optimum_gptq

    model, group_perms = optimum_gptq(model, sequences, method_cfg)
    if group_perms:  # act_order: groups follow gptqmodel's g_idx, not contiguous columns
        record["group_perm"] = group_perms
    return model


register_method(
    "gptq", kind="quantization", validate=validate, recipe=recipe, compress=_compress,
    save_note="optimum 2.3.0's packed format reloads wrong (gptq_v2 tag): dequantized weights",
)
