"""Checks of method config values that several methods share, each raising one-line :class:`ConfigError`.

A method's ``validate`` (see :func:`calib_sweep.methods.registry.register_method`) calls those it needs,
in the order its values should be reported: damping (:func:`check_damp`), bits and group size
(:func:`check_quantization`), sparsity and N:M pattern (:func:`check_pruning`).  ``targets`` is always
``{layer name: (out_features, in_features)}`` of the layers to compress (empty before the model's shapes
are known: checks against the model then pass).
"""

from __future__ import annotations

from typing import Any

from calib_sweep.errors import ConfigError
from calib_sweep.methods.targets import parse_structure


def is_int(value: Any) -> bool:
    """An ``int`` that is not a ``bool``."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_group(
    key: str, group: Any, targets: dict, dim: int, allow_null: bool, candidates: tuple = (32, 64, 128, 256)
) -> None:
    """``method.<key>`` is a positive integer dividing every target's width along ``dim`` (1: inputs, 0: outputs).

    Raises:
        ConfigError: naming the first layer it does not divide and the ``candidates`` that divide them all.
    """
    if allow_null and group in (None, -1):
        return
    if not is_int(group) or group < 1:
        null = ", or null for per-channel" if allow_null else ""
        raise ConfigError(f"method.{key}={group!r} must be a positive integer{null}. Fix: e.g. method.{key}=64.")
    bad = {n: s for n, s in targets.items() if s[dim] % group}
    if bad:
        layer, shape = next(iter(bad.items()))
        widths = sorted({s[dim] for s in targets.values()})
        ok = [g for g in candidates if all(w % g == 0 for w in widths)]
        what = "input width" if dim == 1 else "output width"
        raise ConfigError(
            f"method.{key}={group} does not divide the {what} {shape[dim]} of {layer} "
            f"({len(bad)} layers affected; widths {widths}). Fix: method.{key} in {ok or 'null'}"
            + (" or null (per-channel)." if allow_null else ".")
        )


def check_damp(method_cfg: Any) -> None:
    """``method.damp_percent`` (fraction of the mean Hessian diagonal added to it) lies in (0, 1).

    Raises:
        ConfigError: otherwise (booleans included).
    """
    damp = method_cfg.damp_percent
    if isinstance(damp, bool) or not isinstance(damp, (int, float)) or not 0 < damp < 1:
        raise ConfigError(f"method.damp_percent={damp!r} must lie in (0, 1). Fix: e.g. method.damp_percent=0.01.")


def refuse_static_groups(method_cfg: Any) -> None:
    """``method.static_groups`` is GPTQ's option alone (:mod:`calib_sweep.methods.gptq`): on any other method
    (RTN and AWQ have no error updates, so their group scales are static by construction; SpQR fits its
    groups as it reaches them; pruning has no quantization groups) it is refused rather than ignored.

    Raises:
        ConfigError: the key is present (one line naming the value and the fix).
    """
    if "static_groups" in method_cfg:
        value = method_cfg.get("static_groups")
        raise ConfigError(
            f"method.static_groups={value!r} is an option of method=gptq with a group_size only; method.name="
            f"{method_cfg.get('name')} has no GPTQ quantization groups to compute statically or as they are reached. "
            "Fix: drop method.static_groups, or use method=gptq."
        )


def check_quantization(
    method_cfg: Any, targets: dict, allow_null: bool = True, candidates: tuple = (32, 64, 128, 256),
    static_groups: bool = False,
) -> None:
    """``method.w_bits`` is an integer in 2..8 and ``method.group_size`` fits every target's input width;
    ``method.static_groups`` is refused unless ``static_groups`` (GPTQ checks it itself).

    Raises:
        ConfigError: see :func:`check_group` (``allow_null``: null means one group per output channel) and
            :func:`refuse_static_groups`.
    """
    if not static_groups:
        refuse_static_groups(method_cfg)
    bits = method_cfg.w_bits
    if not is_int(bits) or not 2 <= bits <= 8:
        raise ConfigError(f"method.w_bits={bits!r} must be an integer in 2..8. Fix: e.g. method.w_bits=4.")
    check_group("group_size", method_cfg.group_size, targets, 1, allow_null=allow_null, candidates=candidates)


def check_pruning(method_cfg: Any, targets: dict) -> None:
    """``method.sparsity`` lies in (0, 1); ``method.structure`` is ``unstructured`` or an N:M that agrees
    with it (sparsity ``1 - N/M``) and whose M divides every target's input width.

    Raises:
        ConfigError: the first of these that fails, with the fix (and ``method.static_groups``, a
            quantization option, see :func:`refuse_static_groups`).
    """
    refuse_static_groups(method_cfg)
    sparsity = method_cfg.sparsity
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0 < sparsity < 1:
        raise ConfigError(f"method.sparsity={sparsity!r} must lie in (0, 1). Fix: e.g. method.sparsity=0.5.")
    pattern = parse_structure(method_cfg.get("structure"))
    if pattern is not None:
        n, m = pattern
        if abs(sparsity - (1 - n / m)) > 1e-9:
            raise ConfigError(
                f"method.sparsity={sparsity} contradicts method.structure={n}:{m} (which means sparsity "
                f"{1 - n / m:g}). Fix: method.sparsity={1 - n / m:g}."
            )
        bad = [n_ for n_, s in targets.items() if s[1] % m]
        if bad:
            raise ConfigError(
                f"method.structure={n}:{m}: M={m} does not divide the input width {targets[bad[0]][1]} of "
                f"{bad[0]}. Fix: choose another N:M or unstructured."
            )
