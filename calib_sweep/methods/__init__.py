"""Compress stage: a method config compresses a model in place, then the result is verified.

Methods (``conf/method/*.yaml``, field ``name``) and their backends:

* ``dense``: no compression, the uncompressed reference.
* ``rtn``: round-to-nearest weight quantization (llmcompressor ``QuantizationModifier``, min-max
  observer): ``w_bits``, ``group_size`` (null = per output channel), ``symmetric``.
* ``gptq``: GPTQ (Frantar et al. 2023, "GPTQ: Accurate Post-Training Quantization for Generative
  Pre-trained Transformers", Alg. 1) via llmcompressor's ``GPTQModifier`` (``backend:
  llmcompressor``) or optimum's ``GPTQQuantizer`` (``backend: optimum``, extra ``[optimum]``):
  ``w_bits``, ``group_size``, ``symmetric``, ``damp_percent`` (fraction of the mean Hessian
  diagonal added to it; raised tenfold while the Cholesky factorization fails, recorded per layer),
  ``act_order``.
* ``awq``: AWQ (Lin et al. 2024, "AWQ: Activation-aware Weight Quantization", Sec. 3.2: per-channel
  scales searched on a grid to minimise the output error) via llmcompressor's ``AWQModifier`` then
  ``QuantizationModifier``: ``w_bits``, ``group_size``, ``symmetric``, ``duo_scaling``, ``n_grid``.
* ``spqr``: SpQR (Dettmers et al. 2023), implemented here (:mod:`calib_sweep.methods.spqr`):
  ``w_bits``, ``group_size`` (beta_1), ``stat_bits``, ``stat_group`` (beta_2),
  ``outlier_threshold`` (tau), ``damp_percent``, ``act_order``.
* ``sparsegpt``: SparseGPT (Frantar & Alistarh 2023, Alg. 1) via ``SparseGPTModifier``:
  ``sparsity``, ``structure``, ``damp_percent``.
* ``wanda``: Wanda (Sun et al. 2024, Eq. 1: score = |W| * ||X||_2 per output row) via
  ``WandaPruningModifier``: ``sparsity`` and ``structure`` (``unstructured`` or ``N:M``).
* ``magnitude``: magnitude pruning (Han et al. 2015; the baseline of SparseGPT/Wanda), layer-wise
  smallest ``|W|``, or the ``N`` largest of every ``M`` inputs; data-free, implemented here because
  llmcompressor's ``MagnitudePruningModifier`` is a training-time scheduler that changes nothing
  in ``oneshot``.

Every method may set ``save: true``; the job then calls :func:`save` (compressed-tensors
``pack-quantized`` for llmcompressor's quantization methods; pruned models dense with a
compressed-tensors sparsity declaration; see :func:`save` for why, and ``compression.json``).
Calibration statistics never include padding: :func:`compress` takes an optional attention mask and
drops masked positions before any statistic is accumulated.

Every compressed model is verified (:func:`verify`): the achieved sparsity and N:M pattern of each
pruned layer, or the number of distinct values per quantization group; a method that changed nothing
is an error.  :func:`reference_logprobs` and :func:`kl_from_reference` measure the KL divergence of
the compressed model from the dense one on held-out text.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import re
from pathlib import Path
from typing import Any

import torch

from calib_sweep.errors import CompressionError, ConfigError  # noqa: F401 (re-exported)
from calib_sweep.methods.hessian import calibration_sequences
from calib_sweep.methods.kl import TopKLogprobs, kl_from_reference, reference_logprobs, reference_logprobs_cached
from calib_sweep.methods.llmc import IGNORE, awq_family

log = logging.getLogger(__name__)

__all__ = [
    "KINDS", "DATA_FREE", "IGNORE", "parse_structure", "validate_method", "build_recipe", "compress", "fingerprint",
    "verify", "target_linears", "save", "sparsity_config", "SAVE_RECORD", "reference_logprobs", "reference_logprobs_cached", "kl_from_reference", "TopKLogprobs",
    "calibration_sequences", "captured_layers", "DATA_FREE",
]

KINDS = {
    "dense": "none",
    "rtn": "quantization",
    "gptq": "quantization",
    "awq": "quantization",
    "spqr": "quantization",
    "sparsegpt": "pruning",
    "wanda": "pruning",
    "magnitude": "pruning",
}
#: Methods that never read the calibration set: their results must be identical for every source and
#: seed (the report checks it: data-free controls).
DATA_FREE = frozenset({"dense", "rtn", "magnitude"})
#: Methods whose Hessian is dampened (``damp_percent``).
_DAMPED = {"gptq", "spqr", "sparsegpt"}
#: Attribute on a compressed model holding what :func:`compress` measured, for :func:`verify`.
_RECORD = "_calib_sweep_compression"


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


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_group(
    key: str, group: Any, targets: dict, dim: int, allow_null: bool, candidates: tuple = (32, 64, 128, 256)
) -> None:
    if allow_null and group in (None, -1):
        return
    if not _is_int(group) or group < 1:
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


def optimum_available() -> bool:
    """True when the ``[optimum]`` extra (optimum 2.3.0 + gptqmodel 7.6.0) is importable."""
    return all(importlib.util.find_spec(m) is not None for m in ("optimum", "gptqmodel"))


def validate_method(method_cfg: Any, shapes: dict[str, tuple[int, int]] | None = None) -> None:
    """Check a method config, and, given the model's linear shapes, its fit to the model.

    Args:
        method_cfg: the ``method`` config group.
        shapes: ``{layer name: (out_features, in_features)}`` from :func:`calib_sweep.models.linear_shapes`
            (only ``nn.Linear`` layers: a GPT-2-style model built from ``transformers`` ``Conv1D`` has none
            besides ``lm_head``).

    Raises:
        ConfigError: unknown method; ``w_bits`` outside 2..8; ``group_size`` that does not divide
            every target layer's input width (e.g. 128 on a hidden size of 576); ``damp_percent``
            outside (0, 1); ``sparsity`` outside (0, 1) or contradicting N:M; an N:M pattern whose M
            does not divide a layer's input width; SpQR ``stat_bits``/``stat_group``/``outlier_threshold``
            out of range; ``backend: optimum`` without the extra installed; AWQ on an architecture with
            no layer mappings; a model with no ``nn.Linear`` to compress (GPT-2's ``Conv1D``).  The
            message names the value, the layer and the fix.
    """
    name = method_cfg.get("name")
    if name not in KINDS:
        raise ConfigError(f"method.name={name!r} is unknown. Fix: use one of {sorted(KINDS)}.")
    save = method_cfg.get("save", False)
    if not isinstance(save, bool):
        raise ConfigError(f"method.save={save!r} must be true or false. Fix: method.save=false.")
    targets = _target_shapes(shapes or {})
    kind = KINDS[name]
    if shapes is not None and kind != "none" and not targets:
        raise ConfigError(
            f"method.name={name}: the model has no nn.Linear layer to compress besides lm_head (GPT-2-style models "
            "use transformers Conv1D, which llmcompressor does not compress). Fix: use a Linear-based model "
            "(Llama, OPT, Qwen, ...) or method=dense."
        )
    if name in _DAMPED:
        damp = method_cfg.damp_percent
        if isinstance(damp, bool) or not isinstance(damp, (int, float)) or not 0 < damp < 1:
            raise ConfigError(f"method.damp_percent={damp!r} must lie in (0, 1). Fix: e.g. method.damp_percent=0.01.")
    if kind == "quantization":
        bits = method_cfg.w_bits
        if not _is_int(bits) or not 2 <= bits <= 8:
            raise ConfigError(f"method.w_bits={bits!r} must be an integer in 2..8. Fix: e.g. method.w_bits=4.")
        small = (8, 16, 32, 64) if name == "spqr" else (32, 64, 128, 256)
        _check_group("group_size", method_cfg.group_size, targets, 1, allow_null=name != "spqr", candidates=small)
        if name == "gptq":
            backend = method_cfg.get("backend", "llmcompressor")
            if backend not in ("llmcompressor", "optimum"):
                raise ConfigError(f"method.backend={backend!r} is unknown. Fix: llmcompressor or optimum.")
            if backend == "optimum" and not optimum_available():
                raise ConfigError(
                    "method.backend=optimum needs the optional extra (optimum==2.3.0, gptqmodel==7.6.0), which is not "
                    "installed. Fix: pip install -e '.[optimum]' or method.backend=llmcompressor."
                )
        if name == "spqr":
            stat_bits = method_cfg.get("stat_bits")
            if stat_bits is not None and (not _is_int(stat_bits) or not 1 <= stat_bits <= 8):
                raise ConfigError(f"method.stat_bits={stat_bits!r} must be an integer in 1..8 or null (fp16). Fix: 3.")
            _check_group("stat_group", method_cfg.get("stat_group", 16), targets, 0, False, (8, 16, 32, 64))
            tau = method_cfg.get("outlier_threshold")
            if tau not in (None, "inf") and (isinstance(tau, bool) or not isinstance(tau, (int, float)) or not tau > 0):
                raise ConfigError(
                    f"method.outlier_threshold={tau!r} must be > 0, or null/inf for no outliers. Fix: e.g. 0.2."
                )
        if name == "awq":
            n_grid = method_cfg.get("n_grid", 20)
            if not _is_int(n_grid) or n_grid < 3:
                raise ConfigError(f"method.n_grid={n_grid!r} must be an integer >= 3. Fix: e.g. method.n_grid=20.")
            if not isinstance(method_cfg.get("duo_scaling", True), bool):
                raise ConfigError(f"method.duo_scaling={method_cfg.get('duo_scaling')!r} must be true or false. Fix: true.")
        if name == "awq" and targets and awq_family(targets) is None:
            raise ConfigError(
                f"method.name=awq has no layer mappings for this architecture (layers like {next(iter(targets))}). "
                "Fix: use a Llama/Qwen/Mistral- or OPT-style model, or method=gptq."
            )
    elif kind == "pruning":
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


def build_recipe(method_cfg: Any, model=None) -> list | None:
    """The llmcompressor modifiers for a method config; ``None`` for methods that do not use it
    (``dense``, ``spqr``, ``magnitude``, ``gptq`` with ``backend: optimum``)."""
    name = method_cfg.name
    if name in ("dense", "spqr", "magnitude") or (name == "gptq" and method_cfg.get("backend") == "optimum"):
        return None
    from calib_sweep.methods.llmc import build_recipe as llmc_recipe

    return llmc_recipe(method_cfg, model)


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


@torch.no_grad()
def magnitude_prune(model, sparsity: float, structure: Any) -> None:
    """Zero the smallest-magnitude weights of every target layer in place.

    Unstructured: exactly ``round(sparsity * numel)`` weights per layer (layer-wise, ties broken by
    position); N:M: in every run of ``M`` consecutive inputs of a row, all but the ``N`` largest.
    """
    pattern = parse_structure(structure)
    for module in target_linears(model).values():
        w = module.weight
        if pattern is None:
            k = int(round(float(sparsity) * w.numel()))
            idx = torch.argsort(w.detach().abs().flatten(), stable=True)[:k]
            w.view(-1)[idx] = 0
        else:
            n, m = pattern
            blocks = w.view(w.shape[0], -1, m)
            drop = torch.argsort(blocks.abs(), dim=-1, stable=True)[..., : m - n]
            blocks.scatter_(-1, drop, 0.0)


def compress(model, input_ids: torch.Tensor, method_cfg: Any, attention_mask: torch.Tensor | None = None):
    """Compress ``model`` in place on a calibration set.

    Args:
        model: a Hugging Face causal LM (on any device).
        input_ids: ``int64 [n_samples, seq_len]``.
        method_cfg: the ``method`` config group (validated by :func:`validate_method`).
        attention_mask: optional ``[n_samples, seq_len]`` 0/1; positions with 0 (padding, e.g. from a
            tokenizer with no pad token padded with EOS) are removed before calibration, so they enter
            no Hessian, activation norm or AWQ statistic (case C06).

    Returns:
        The compressed model (the same object for dense).  What was measured on the way (damping
        per layer, SpQR outliers and bits, the library's per-layer figures for
        :mod:`calib_sweep.methods.diagnostics`) is kept on the model for :func:`verify`.

    Raises:
        ConfigError: bad shapes or an all-zero mask; CompressionError: NaN/Inf inputs or Hessians
        that cannot be factorized even with 100x damping.
    """
    name = method_cfg.name
    if name == "dense":
        return model
    sequences = calibration_sequences(input_ids, attention_mask)
    record: dict[str, Any] = {"calibration_tokens": int(sum(s.numel() for s in sequences))}
    if name == "magnitude":
        magnitude_prune(model, method_cfg.sparsity, method_cfg.get("structure"))
    elif name == "spqr":
        from calib_sweep.methods.spqr import spqr_compress

        result = spqr_compress(model, sequences, method_cfg, target_linears(model))
        record["spqr"] = result
        record["damping"] = {k: r.damp_used for k, r in result["layers"].items()}
    elif name == "gptq" and method_cfg.get("backend") == "optimum":
        from calib_sweep.methods.optimum_backend import optimum_gptq

        model, group_perms = optimum_gptq(model, sequences, method_cfg)
        if group_perms:  # act_order: groups follow gptqmodel's g_idx, not contiguous columns
            record["group_perm"] = group_perms
    else:
        from calib_sweep.methods.llmc import run_oneshot

        model, damping, captured = run_oneshot(model, sequences, method_cfg)
        if damping:
            record["damping"] = damping
        if captured:
            record["library_layers"] = captured
    setattr(model, _RECORD, record)
    return model


def captured_layers(model) -> dict[str, dict[str, float]]:
    """The per-layer figures the compression library computed during :func:`compress` (``{layer: {field:
    value}}``, see :mod:`calib_sweep.methods.diagnostics`); empty for methods that do not run on it."""
    return dict((getattr(model, _RECORD, {}) or {}).get("library_layers", {}))


def _distinct_per_group(weight: torch.Tensor, group: int | None, perm: torch.Tensor | None = None) -> torch.Tensor:
    """Number of distinct values in each quantization group of a 2-D weight; shape ``[out, n_groups]``."""
    w = weight.detach().float()
    if perm is not None:
        w = w[:, perm.to(w.device)]
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
    ``2**w_bits`` distinct values (SpQR: plus its full-precision outliers in that group, groups taken
    in its act-order column order; gptq with ``backend: optimum`` and ``act_order``: groups taken as
    gptqmodel's ``g_idx`` formed them).  Every method except dense must change at least one layer.

    Args:
        model: the compressed model.
        method_cfg: the ``method`` config group.
        before: :func:`fingerprint` of the model before compression.
        tolerance: allowed absolute sparsity deviation per layer.

    Returns:
        ``{"summary": {...}, "layers": {name: figures}}``, plus ``"damping"`` (``{layer: fraction of
        the mean Hessian diagonal used}``) for gptq/sparsegpt/spqr; summary has ``max_damp`` and, for
        SpQR, ``avg_bits``, ``outliers``, ``outlier_fraction``.

    Raises:
        CompressionError: NaN/Inf weights, unchanged weights, or a layer off its target.
    """
    name = method_cfg.name
    kind = KINDS[name]
    record = getattr(model, _RECORD, {}) or {}
    spqr_layers = (record.get("spqr") or {}).get("layers", {})
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
                allowed = 2 ** int(method_cfg.w_bits)
                spqr = spqr_layers.get(layer_name)
                perm = spqr.perm if spqr else record.get("group_perm", {}).get(layer_name)
                distinct = _distinct_per_group(w, method_cfg.group_size, perm)
                figures["max_distinct_per_group"] = int(distinct.max())
                figures["n_groups"] = int(distinct.numel())
                excess = distinct
                if spqr is not None:
                    excess = distinct - spqr.outlier_counts.to(distinct.device).long()
                    figures["outliers"] = spqr.outliers
                    figures["max_distinct_per_group_without_outliers"] = int(excess.max())
                if int(excess.max()) > allowed:
                    problems.append(
                        f"{layer_name} has a group with {int(excess.max())} distinct values > 2^{method_cfg.w_bits}"
                    )
            if layer_name in record.get("damping", {}):
                figures["damp"] = record["damping"][layer_name]
            layers[layer_name] = figures
    changed = sum(f["changed"] for f in layers.values())
    if kind != "none" and changed == 0:
        problems.insert(0, f"method {name} changed no weight of the {len(layers)} target layers")
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise CompressionError(f"compression check failed: {problems[0]}{more}")
    summary: dict[str, Any] = {"method": name, "kind": kind, "layers": len(layers), "layers_changed": changed}
    if "calibration_tokens" in record:
        summary["calibration_tokens"] = record["calibration_tokens"]
    if kind == "pruning":
        values = [f["sparsity"] for f in layers.values()]
        summary.update(
            target_sparsity=float(method_cfg.sparsity),
            structure=str(method_cfg.get("structure", "unstructured")),
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
    report: dict[str, Any] = {"summary": summary, "layers": layers}
    if record.get("damping"):
        report["damping"] = dict(record["damping"])
        summary["max_damp"] = max(record["damping"].values())
        summary["damp_raised_layers"] = sum(
            1 for v in record["damping"].values() if v > float(method_cfg.damp_percent) * (1 + 1e-9)
        )
    if record.get("spqr"):
        summary.update(record["spqr"]["summary"])
    return report


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

    * quantization through llmcompressor (``rtn``, ``gptq`` with ``backend: llmcompressor``, ``awq``):
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
      weights ``gptq_v2`` and the reloaded model's perplexity is wrong), dense size.

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
    kind = KINDS[name]
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
    elif name in ("dense", "spqr") or not llmcompressor:  # dense, spqr, gptq with backend: optimum
        fmt, declared_in = "dense", None
        note = {
            "dense": "uncompressed reference",
            "spqr": "no compressed-tensors form for SpQR's outliers and 3-bit statistics: dequantized weights",
        }.get(name, "optimum 2.3.0's packed format reloads wrong (gptq_v2 tag): dequantized weights")
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
