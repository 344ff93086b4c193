"""The method registry: one :class:`Method` per ``method.name``, and the calls that dispatch on it.

A method is one module of :mod:`calib_sweep.methods` that calls :func:`register_method` when imported
(the package's face imports them all), as selection strategies register with
:func:`calib_sweep.data.selection.register_strategy`; its config is ``conf/method/<name>.yaml``.  The
compress stage asks the registry only: :func:`validate_method` (before anything loads, and again with the
model's layer shapes), :func:`compress`, then :func:`calib_sweep.methods.verification.verify` and
:func:`calib_sweep.methods.saving.save`, which read the method's ``kind``.  :data:`KINDS` and
:data:`DATA_FREE` are live, read-only views of the registry.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch

from calib_sweep.errors import ConfigError, lookup
from calib_sweep.methods.hessian import calibration_sequences
from calib_sweep.methods.targets import target_shapes

#: What a method does to the weights; verification and saving depend on it, results.json records it.
KIND_NAMES = ("none", "quantization", "pruning")
#: Attribute on a compressed model holding what :func:`compress` measured, for ``verify``.
RECORD = "_calib_sweep_compression"
#: compression.json's ``note`` for a method whose save declares nothing (plain weights as compressed).
DENSE_SAVE_NOTE = "no compressed-tensors form for this method: its weights as compressed, stored dense"


@dataclass(frozen=True)
class Method:
    """A registered compression method.

    Attributes:
        name: the value of ``method.name``.
        kind: one of :data:`KIND_NAMES`.  ``quantization``: verify counts distinct values per group of
            ``method.group_size`` against ``2**method.w_bits``; ``pruning``: verify checks
            ``method.sparsity`` and ``method.structure`` per layer, save declares the sparsity; ``none``:
            the model is left as it is (``compress`` is None).
        compress: ``fn(model, sequences, method_cfg, record) -> model``: compress the target layers in
            place on ``sequences`` (unpadded ``int64 [1, len_i]``, see
            :func:`calib_sweep.methods.hessian.calibration_sequences`); measurements for verify go into the
            ``record`` dict (``damping``: ``{layer: fraction}``, ``library_layers``, ``spqr``,
            ``group_perm``).
        validate: ``fn(method_cfg, targets)`` raising :class:`ConfigError` for bad values; ``targets`` is
            ``{layer: (out_features, in_features)}`` without the head, empty before the model is known.
        recipe: ``fn(method_cfg, model) -> list | None``: the llmcompressor modifiers it runs (None: it does
            not run on llmcompressor for that config); a save of such a method is compressed-tensors packed.
        verify: ``fn(model, method_cfg, report)``: checks after the common ones, raising
            :class:`calib_sweep.errors.CompressionError`; may add figures to ``report["summary"]``.
        save_note: compression.json's ``note`` when the save declares no compression: a string, or
            ``fn(method_cfg) -> str``.
        data_free: never reads the calibration set (results identical for every source and seed; the
            report's data-free controls check it).
    """

    name: str
    kind: str
    compress: Callable[[torch.nn.Module, list, Any, dict], torch.nn.Module] | None = None
    validate: Callable[[Any, dict], None] | None = None
    recipe: Callable[[Any, Any], list | None] | None = None
    verify: Callable[[torch.nn.Module, Any, dict], None] | None = None
    save_note: str | Callable[[Any], str] = DENSE_SAVE_NOTE
    data_free: bool = False


#: name -> method; modules add theirs with :func:`register_method`.
METHODS: dict[str, Method] = {}


def register_method(
    name: str, *, kind: str, compress=None, validate=None, recipe=None, verify=None,
    save_note: str | Callable[[Any], str] = DENSE_SAVE_NOTE, data_free: bool = False,
) -> Method:
    """Register a method as ``method.name=name`` (arguments: the fields of :class:`Method`).

    Returns:
        The registered :class:`Method`.

    Raises:
        ValueError: the name is registered already, an unknown ``kind``, or ``compress`` given for kind
            ``none`` / missing for the others.
    """
    if name in METHODS:
        raise ValueError(f"method {name!r} is registered twice (first as {METHODS[name]!r})")
    if kind not in KIND_NAMES:
        raise ValueError(f"method {name!r}: kind={kind!r} is not one of {list(KIND_NAMES)}")
    if (compress is None) != (kind == "none"):
        raise ValueError(f"method {name!r}: kind {kind!r} " + ("takes no compress" if kind == "none" else "needs compress"))
    METHODS[name] = Method(name, kind, compress, validate, recipe, verify, save_note, data_free)
    return METHODS[name]


def get_method(name: Any) -> Method:
    """The method registered as ``name``.

    Raises:
        ConfigError: unknown name (one line listing the registered ones).
    """
    return lookup(METHODS, name, "method.name={name!r} is unknown. Fix: use one of {known}.")


class _Kinds(Mapping):
    """``{name: kind}`` of the registered methods (read-only, always current)."""

    def __getitem__(self, name: str) -> str:
        return METHODS[name].kind

    def __iter__(self) -> Iterator[str]:
        return iter(METHODS)

    def __len__(self) -> int:
        return len(METHODS)

    def __repr__(self) -> str:
        return repr(dict(self))


class _DataFree(Set):
    """Names of the registered methods that never read the calibration set (read-only, always current)."""

    def __contains__(self, name: object) -> bool:
        return name in METHODS and METHODS[name].data_free

    def __iter__(self) -> Iterator[str]:
        return (name for name, method in METHODS.items() if method.data_free)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __repr__(self) -> str:
        return repr(frozenset(self))


#: ``{method name: kind}`` (``none``, ``quantization``, ``pruning``).
KINDS: Mapping[str, str] = _Kinds()
#: Methods that never read the calibration set: their results must be identical for every source and
#: seed (the report checks it: data-free controls).
DATA_FREE: Set[str] = _DataFree()


def validate_method(method_cfg: Any, shapes: dict[str, tuple[int, int]] | None = None) -> None:
    """Check a method config, and, given the model's linear shapes, its fit to the model.

    Args:
        method_cfg: the ``method`` config group.
        shapes: ``{layer name: (out_features, in_features)}`` from :func:`calib_sweep.models.linear_shapes`
            (only ``nn.Linear`` layers: a GPT-2-style model built from ``transformers`` ``Conv1D`` has none
            besides ``lm_head``).

    Raises:
        ConfigError: unknown method; ``save`` not a boolean; a model with no ``nn.Linear`` to compress
            (GPT-2's ``Conv1D``); then what the method's own ``validate`` refuses (``w_bits`` outside
            2..8, a ``group_size`` that does not divide every target layer's input width, ``damp_percent``
            outside (0, 1), ``sparsity`` outside (0, 1) or contradicting N:M, ...).  The message names the
            value, the layer and the fix.
    """
    name = method_cfg.get("name")
    method = get_method(name)
    save = method_cfg.get("save", False)
    if not isinstance(save, bool):
        raise ConfigError(f"method.save={save!r} must be true or false. Fix: method.save=false.")
    targets = target_shapes(shapes or {})
    if shapes is not None and method.kind != "none" and not targets:
        raise ConfigError(
            f"method.name={name}: the model has no nn.Linear layer to compress besides lm_head (GPT-2-style models "
            "use transformers Conv1D, which llmcompressor does not compress). Fix: use a Linear-based model "
            "(Llama, OPT, Qwen, ...) or method=dense."
        )
    if method.validate is not None:
        method.validate(method_cfg, targets)


def build_recipe(method_cfg: Any, model=None) -> list | None:
    """The llmcompressor modifiers for a method config; ``None`` for methods that do not use it
    (``dense``, ``spqr``, ``magnitude``, ``gptq`` with ``backend: optimum``)."""
    method = get_method(method_cfg.name)
    return None if method.recipe is None else method.recipe(method_cfg, model)


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
        :mod:`calib_sweep.methods.diagnostics`) is kept on the model for verify.

    Raises:
        ConfigError: bad shapes or an all-zero mask; CompressionError: NaN/Inf inputs or Hessians
        that cannot be factorized even with 100x damping.
    """
    method = get_method(method_cfg.name)
    if method.compress is None:
        return model
    sequences = calibration_sequences(input_ids, attention_mask)
    record: dict[str, Any] = {"calibration_tokens": int(sum(s.numel() for s in sequences))}
    model = method.compress(model, sequences, method_cfg, record)
    setattr(model, RECORD, record)
    return model


def captured_layers(model) -> dict[str, dict[str, float]]:
    """The per-layer figures the compression library computed during :func:`compress` (``{layer: {field:
    value}}``, see :mod:`calib_sweep.methods.diagnostics`); empty for methods that do not run on it."""
    return dict((getattr(model, RECORD, {}) or {}).get("library_layers", {}))
