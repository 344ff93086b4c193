"""Compress stage: a method config becomes an llmcompressor recipe, run by ``oneshot``, then verified.

Methods (``conf/method/*.yaml``, field ``name``):

* ``dense``: no compression, the uncompressed reference.
* ``gptq``: GPTQ weight quantization (Frantar et al. 2023, "GPTQ: Accurate Post-Training
  Quantization for Generative Pre-trained Transformers", Alg. 1) via llmcompressor's
  ``GPTQModifier``: ``w_bits``, ``group_size`` (null = per output channel), ``symmetric``,
  ``damp_percent`` (fraction of the mean Hessian diagonal added to it), ``act_order``.
* ``wanda``: Wanda pruning (Sun et al. 2024, "A Simple and Effective Pruning Approach for Large
  Language Models", Eq. 1: score = |W| * ||X||_2 per output row) via ``WandaPruningModifier``:
  ``sparsity`` and ``structure`` (``unstructured`` or ``N:M``).

Every compressed model is verified (:func:`verify`): the achieved sparsity of each pruned layer, or
the number of distinct values per quantization group; a method that changed nothing is an error.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from calib_sweep.errors import CompressionError, ConfigError

#: Layers never compressed: the output head (tied to the embeddings in many small models).
IGNORE = ["re:.*lm_head"]

KINDS = {"dense": "none", "gptq": "quantization", "wanda": "pruning"}


def _target_shapes(shapes: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
    return {name: shape for name, shape in shapes.items() if not name.endswith("lm_head")}


def parse_structure(structure: Any) -> tuple[int, int] | None:
    """``"unstructured"`` -> None; ``"2:4"`` -> (2, 4).

    Raises:
        ConfigError: anything else, or N >= M.
    """
    if structure in (None, "unstructured", "0:0"):
        return None
    match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", str(structure))
    if not match or int(match.group(1)) < 1 or int(match.group(1)) >= int(match.group(2)):
        raise ConfigError(
            f"method.structure={structure!r} is not 'unstructured' or N:M with 0<N<M. Fix: e.g. method.structure=2:4."
        )
    return int(match.group(1)), int(match.group(2))


def validate_method(method_cfg: Any, shapes: dict[str, tuple[int, int]] | None = None) -> None:
    """Check a method config, and, given the model's linear shapes, its fit to the model.

    Args:
        method_cfg: the ``method`` config group.
        shapes: ``{layer name: (out_features, in_features)}`` from :func:`calib_sweep.models.linear_shapes`.

    Raises:
        ConfigError: unknown method, ``w_bits`` outside 2..8, ``group_size`` that does not divide
            every target layer's input width (e.g. 128 on a hidden size of 576), ``damp_percent``
            outside (0, 1), ``sparsity`` outside (0, 1), or an N:M pattern whose M does not divide a
            layer's input width.  The message names the value, the layer and the fix.
    """
    name = method_cfg.get("name")
    if name not in KINDS:
        raise ConfigError(f"method.name={name!r} is unknown. Fix: use one of {sorted(KINDS)}.")
    targets = _target_shapes(shapes or {})
    if KINDS[name] == "quantization":
        bits = method_cfg.w_bits
        if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 8:
            raise ConfigError(f"method.w_bits={bits!r} must be an integer in 2..8. Fix: e.g. method.w_bits=4.")
        damp = method_cfg.damp_percent
        if not isinstance(damp, (int, float)) or not 0 < damp < 1:
            raise ConfigError(f"method.damp_percent={damp!r} must lie in (0, 1). Fix: e.g. method.damp_percent=0.01.")
        group = method_cfg.group_size
        if group not in (None, -1):
            if isinstance(group, bool) or not isinstance(group, int) or group < 1:
                raise ConfigError(
                    f"method.group_size={group!r} must be a positive integer, or null for per-channel. Fix: e.g. 64."
                )
            bad = {n: s for n, s in targets.items() if s[1] % group}
            if bad:
                layer, (_, width) = next(iter(bad.items()))
                widths = sorted({s[1] for s in targets.values()})
                ok = [g for g in (32, 64, 128, 256) if all(w % g == 0 for w in widths)]
                raise ConfigError(
                    f"method.group_size={group} does not divide the input width {width} of {layer} "
                    f"({len(bad)} layers affected; widths {widths}). Fix: method.group_size in {ok or 'null'} "
                    f"or null (per-channel)."
                )
    elif KINDS[name] == "pruning":
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


def build_recipe(method_cfg: Any) -> list | None:
    """Turn a method config into a list of llmcompressor modifiers (``None`` for ``dense``)."""
    name = method_cfg.name
    if name == "dense":
        return None
    if name == "gptq":
        from llmcompressor.modifiers.quantization import GPTQModifier

        group = method_cfg.group_size
        per_channel = group in (None, -1)
        weights = {
            "num_bits": int(method_cfg.w_bits),
            "type": "int",
            "symmetric": bool(method_cfg.symmetric),
            "strategy": "channel" if per_channel else "group",
            "group_size": None if per_channel else int(group),
        }
        return [
            GPTQModifier(
                ignore=IGNORE,
                config_groups={"group_0": {"targets": ["Linear"], "weights": weights}},
                dampening_frac=float(method_cfg.damp_percent),
                actorder="weight" if method_cfg.get("act_order") else None,
                block_size=int(method_cfg.get("block_size", 128)),
            )
        ]
    if name == "wanda":
        from llmcompressor.modifiers.pruning import WandaPruningModifier

        pattern = parse_structure(method_cfg.get("structure"))
        return [
            WandaPruningModifier(
                sparsity=float(method_cfg.sparsity),
                mask_structure="0:0" if pattern is None else f"{pattern[0]}:{pattern[1]}",
                targets=["Linear"],
                ignore=IGNORE,
            )
        ]
    raise ConfigError(f"method.name={name!r} is unknown. Fix: use one of {sorted(KINDS)}.")


def target_linears(model) -> dict[str, torch.nn.Linear]:
    """The ``nn.Linear`` layers a method compresses: every one except the output head."""
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and not name.endswith("lm_head")
    }


def fingerprint(model) -> dict[str, tuple[float, float]]:
    """Per target layer, ``(sum |w|, sum w^2)`` in float64: cheap evidence of whether weights changed."""
    with torch.no_grad():
        return {
            name: (float(m.weight.double().abs().sum()), float(m.weight.double().pow(2).sum()))
            for name, m in target_linears(model).items()
        }


def compress(model, input_ids: torch.Tensor, method_cfg: Any):
    """Compress ``model`` in place with llmcompressor's ``oneshot`` on a calibration set.

    Args:
        model: a Hugging Face causal LM (on any device).
        input_ids: ``int64`` tensor ``[n_samples, seq_len]``, no padding.
        method_cfg: the ``method`` config group.

    Returns:
        The compressed model (the same object for dense).
    """
    recipe = build_recipe(method_cfg)
    if recipe is None:
        return model
    from datasets import Dataset
    from llmcompressor import oneshot

    n_samples, seq_len = input_ids.shape
    dataset = Dataset.from_dict(
        {"input_ids": input_ids.tolist(), "attention_mask": torch.ones_like(input_ids).tolist()}
    )
    return oneshot(
        model=model,
        dataset=dataset,
        recipe=recipe,
        num_calibration_samples=int(n_samples),
        max_seq_length=int(seq_len),
        shuffle_calibration_samples=False,
        batch_size=1,
    )


def _distinct_per_group(weight: torch.Tensor, group: int | None) -> torch.Tensor:
    """Number of distinct values in each quantization group of a 2-D weight; shape ``[out, n_groups]``."""
    w = weight.detach().float()
    out, width = w.shape
    group = width if group in (None, -1) else int(group)
    w = w.reshape(out, width // group, group)
    s, _ = torch.sort(w, dim=-1)
    return 1 + (s[..., 1:] != s[..., :-1]).sum(dim=-1)


def verify(model, method_cfg: Any, before: dict[str, tuple[float, float]], tolerance: float = 0.001) -> dict:
    """Check that compression happened as configured and return the figures for ``results.json``.

    Pruning: the achieved sparsity (share of exact zeros) of every target layer must be within
    ``tolerance`` (absolute, i.e. 0.1%) of ``method.sparsity``; for N:M every block of M along the
    input dimension holds at most N non-zeros.  Quantization: every group holds at most
    ``2**w_bits`` distinct values.  Every method except dense must change at least one layer.

    Args:
        model: the compressed model.
        method_cfg: the ``method`` config group.
        before: :func:`fingerprint` of the model before compression.
        tolerance: allowed absolute sparsity deviation per layer.

    Returns:
        ``{"layers": {name: figures}, "summary": {...}}``.

    Raises:
        CompressionError: NaN/Inf weights, unchanged weights, or a layer off its target.
    """
    name = method_cfg.name
    kind = KINDS[name]
    after = fingerprint(model)
    layers: dict[str, dict] = {}
    problems: list[str] = []
    with torch.no_grad():
        for layer_name, module in target_linears(model).items():
            w = module.weight
            figures: dict[str, Any] = {"changed": after[layer_name] != before.get(layer_name)}
            if not torch.isfinite(w).all():
                problems.append(f"{layer_name} has NaN or Inf weights")
            if kind == "pruning":
                zeros = float((w == 0).float().mean())
                figures["sparsity"] = round(zeros, 6)
                if abs(zeros - float(method_cfg.sparsity)) > tolerance:
                    problems.append(f"{layer_name} sparsity {zeros:.4f} != target {method_cfg.sparsity}")
                pattern = parse_structure(method_cfg.get("structure"))
                if pattern is not None:
                    n, m = pattern
                    nonzero = (w != 0).reshape(w.shape[0], -1, m).sum(-1)
                    figures["nm_ok"] = bool((nonzero <= n).all())
                    if not figures["nm_ok"]:
                        problems.append(f"{layer_name} breaks the {n}:{m} pattern")
            elif kind == "quantization":
                distinct = _distinct_per_group(w, method_cfg.group_size)
                figures["max_distinct_per_group"] = int(distinct.max())
                figures["n_groups"] = int(distinct.numel())
                if int(distinct.max()) > 2 ** int(method_cfg.w_bits):
                    problems.append(
                        f"{layer_name} has a group with {int(distinct.max())} distinct values > 2^{method_cfg.w_bits}"
                    )
            layers[layer_name] = figures
    changed = sum(f["changed"] for f in layers.values())
    if kind != "none" and changed == 0:
        problems.insert(0, f"method {name} changed no weight of the {len(layers)} target layers")
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise CompressionError(f"compression check failed: {problems[0]}{more}")
    summary: dict[str, Any] = {"method": name, "kind": kind, "layers": len(layers), "layers_changed": changed}
    if kind == "pruning":
        values = [f["sparsity"] for f in layers.values()]
        summary.update(
            target_sparsity=float(method_cfg.sparsity),
            mean_sparsity=sum(values) / len(values),
            min_sparsity=min(values),
            max_sparsity=max(values),
        )
    elif kind == "quantization":
        summary.update(
            w_bits=int(method_cfg.w_bits),
            group_size=method_cfg.group_size,
            max_distinct_per_group=max(f["max_distinct_per_group"] for f in layers.values()),
        )
    return {"summary": summary, "layers": layers}
