"""``method=gptq``: GPTQ (Frantar et al. 2023, "GPTQ: Accurate Post-Training Quantization for Generative
Pre-trained Transformers", Alg. 1): columns quantized one at a time, each one's error propagated to the
rest through the inverse Hessian of the layer inputs.

``static_groups`` (the name AutoGPTQ and GPTQModel use) chooses when a quantization group's grid (scale,
zero point) is fitted:

* ``false`` (default, the published algorithm and the reference code's default): from the current,
  error-updated weights when the group's first column is reached; act order forms the groups in the
  permuted order.  llmcompressor cannot do this, so it runs :mod:`calib_sweep.methods.gptq_faithful`
  (this project's implementation, checked against the reference code: ``bench/gptq_reference.py``).
* ``true``: every grid from the un-updated weights before the column loop (llmcompressor's
  ``GPTQModifier``, the behaviour of every GPTQ result written before the option existed; act order is
  llmcompressor's ``actorder="weight"``).

Backends for ``static_groups: true``: llmcompressor's ``GPTQModifier`` (default; damping raised tenfold
while the Cholesky factorization fails, recorded per layer, :mod:`calib_sweep.methods.llmc`); ``backend:
optimum`` (extra ``[optimum]``, :mod:`calib_sweep.methods.optimum_backend`) runs gptqmodel with its default
``static_groups=False`` and takes ``static_groups: false`` only.  Per channel (``group_size: null``) there
are no groups: one grid per row, fitted on the un-updated weights, and ``static_groups: true`` is refused.
Config: ``w_bits``, ``group_size`` (null: per output channel), ``symmetric``, ``damp_percent`` (fraction
of the mean Hessian diagonal added to it), ``act_order``, ``static_groups``, ``block_size``.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from calib_sweep.errors import ConfigError
from calib_sweep.methods.llmc import IGNORE, oneshot_compress, weight_groups
from calib_sweep.methods.registry import register_method
from calib_sweep.methods.targets import target_linears
from calib_sweep.methods.validation import check_damp, check_quantization

#: What ``static_groups`` means, for error messages.
_STATIC_HELP = ("false (each group's scale set from the error-updated weights when its first column is reached, "
                "the published GPTQ) or true (all scales from the un-updated weights, llmcompressor)")


def optimum_available() -> bool:
    """True when the ``[optimum]`` extra (optimum 2.3.0 + gptqmodel 7.6.0) is importable."""
    return all(importlib.util.find_spec(m) is not None for m in ("optimum", "gptqmodel"))


def static_groups(method_cfg: Any) -> bool:
    """``method.static_groups``; a config without the key (written before it existed) is ``true`` with the
    llmcompressor backend (what those results ran) and ``false`` with optimum's (gptqmodel's default)."""
    return bool(method_cfg.get("static_groups", method_cfg.get("backend", "llmcompressor") != "optimum"))


def faithful(method_cfg: Any) -> bool:
    """True when the job runs :mod:`calib_sweep.methods.gptq_faithful` (``static_groups: false``, not optimum)."""
    return method_cfg.get("backend", "llmcompressor") != "optimum" and not static_groups(method_cfg)


def validate(method_cfg: Any, targets: dict) -> None:
    """Damping, bits and group size, ``static_groups`` (a boolean; ``true`` needs groups and the llmcompressor
    backend), then ``backend`` (``optimum`` only with the extra installed).

    Raises:
        ConfigError: the first bad value, in one line with its fix.
    """
    check_damp(method_cfg)
    check_quantization(method_cfg, targets, static_groups=True)
    backend = method_cfg.get("backend", "llmcompressor")
    if backend not in ("llmcompressor", "optimum"):
        raise ConfigError(f"method.backend={backend!r} is unknown. Fix: llmcompressor or optimum.")
    if "static_groups" in method_cfg:
        value = method_cfg.get("static_groups")
        if not isinstance(value, bool):
            raise ConfigError(f"method.static_groups={value!r} must be true or false. Fix: method.static_groups={_STATIC_HELP}.")
        if value and method_cfg.group_size in (None, -1):
            raise ConfigError(
                "method.static_groups=true has no groups to fix with method.group_size=null (per channel: one scale per "
                "row, set from the un-updated weights either way). Fix: method.static_groups=false, or a group_size."
            )
        if value and backend == "optimum":
            raise ConfigError(
                "method.static_groups=true is not offered with method.backend=optimum (gptqmodel runs its default "
                "static_groups=False). Fix: method.backend=llmcompressor, or method.static_groups=false."
            )
    if backend == "optimum" and not optimum_available():
        raise ConfigError(
            "method.backend=optimum needs the optional extra (optimum==2.3.0, gptqmodel==7.6.0), which is not "
            "installed. Fix: pip install -e '.[optimum]' or method.backend=llmcompressor."
        )


def recipe(method_cfg: Any, model=None) -> list | None:
    """``[GPTQModifier]`` on every ``Linear`` but the head (``static_groups: true``); None with ``backend:
    optimum`` or ``static_groups: false`` (they do not run on llmcompressor)."""
    if method_cfg.get("backend") == "optimum" or faithful(method_cfg):
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


def _faithful_compress(model, sequences: list, method_cfg: Any, record: dict):
    from calib_sweep.methods.gptq_faithful import gptq_compress

    layers = gptq_compress(model, sequences, method_cfg, target_linears(model))
    record["damping"] = {name: row["result"].damp_used for name, row in layers.items()}
    record["library_layers"] = {name: {k: row[k] for k in ("library_error", "hessian_trace", "fraction_changed")}
                                for name, row in layers.items()}
    if method_cfg.group_size not in (None, -1):  # act order: groups are runs of the permuted columns
        perms = {name: row["result"].perm for name, row in layers.items() if row["result"].perm is not None}
        if perms:
            record["group_perm"] = perms
    return model


def _compress(model, sequences: list, method_cfg: Any, record: dict):
    if faithful(method_cfg):
        return _faithful_compress(model, sequences, method_cfg, record)
    if method_cfg.get("backend") != "optimum":
        return _llmcompressor_compress(model, sequences, method_cfg, record)
    from calib_sweep.methods.optimum_backend import optimum_gptq

    model, group_perms = optimum_gptq(model, sequences, method_cfg)
    if group_perms:  # act_order: groups follow gptqmodel's g_idx, not contiguous columns
        record["group_perm"] = group_perms
    return model


def _verify(model, method_cfg: Any, report: dict) -> None:
    """Record which GPTQ ran (``static_groups``, ``implementation``) and the summed layer loss in the summary."""
    from calib_sweep.methods.gptq_faithful import IMPLEMENTATION
    from calib_sweep.methods.registry import RECORD

    summary = report["summary"]
    summary["static_groups"] = static_groups(method_cfg)
    summary["implementation"] = (IMPLEMENTATION if faithful(method_cfg) else
                                 "optimum/gptqmodel" if method_cfg.get("backend") == "optimum" else "llmcompressor")
    rows = (getattr(model, RECORD, {}) or {}).get("library_layers", {})
    losses = [row["library_error"] for row in rows.values() if isinstance(row.get("library_error"), (int, float))]
    if losses:
        summary["layer_loss"] = float(sum(losses))


def _save_note(method_cfg: Any) -> str:
    if method_cfg.get("backend") == "optimum":
        return "optimum 2.3.0's packed format reloads wrong (gptq_v2 tag): dequantized weights"
    return ("GPTQ with static_groups=false runs calib_sweep's own implementation, which writes no packed format: "
            "dequantized weights")


register_method(
    "gptq", kind="quantization", validate=validate, recipe=recipe, compress=_compress, verify=_verify,
    save_note=_save_note,
)
