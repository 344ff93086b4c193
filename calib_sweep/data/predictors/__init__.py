"""Predictors of a calibration set: numbers computed before compression that may say how well it will do.

A predictor is one module of this package that registers ``fn(context) -> float | None`` by name with
:func:`register_predictor`, as selection strategies register with
:func:`calib_sweep.data.selection.register_strategy`.  ``context`` is a :class:`SetContext` (the set's
token rows and manifest sequences, the held-out text of its source and, for model-based predictors, the
dense model or features a job already computed).  ``None`` means "cannot be computed here" and comes with
a reason (:func:`compute`).

Token-only predictors (``needs_model=False``): ``distinct_3gram_ratio``, ``zipf_alpha``,
``unigram_js_distance``, ``mean_piece_tokens``, ``median_piece_tokens``, ``documents_per_window``.
Model-based ones: ``mean_dense_perplexity``, ``activation_coverage``, ``outlier_channel_coverage``.
``python -m calib_sweep.data inspect ... --predictors`` prints them; every job records the token-only
ones (and the model-based ones it has the features for) in ``results.json["predictors"]``;
:mod:`calib_sweep.report.predictors` checks them against the sweeps' outcomes.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from calib_sweep.errors import ConfigError, lookup


@dataclass
class SetContext:
    """What predictors read about one calibration set.

    Attributes:
        input_ids: ``int64 [n_samples, seq_len]`` the set's rows (BOS included when the model needs one).
        sequences: the manifest's ``sequences`` (``{"slot", "pieces": [{"doc_id", "start", "end"}]}``).
        bos_token_id: the BOS token in front of every row (``None``: none); left out of token statistics.
        separator_token_id: the end-of-text token joining documents (``None``: none); left out of unigram
            statistics.
        heldout_tokens: ``int64 [n_tokens]`` the held-out stream of the set's source (``None``: unknown).
        model: the dense model (``None``: model-based predictors use ``features`` or are skipped).
        features: features a job already computed, by name: ``"nll"`` ``float64 [n_samples]`` (mean
            next-token NLL of each row on the dense model, nats per token), or a predictor's value.
        calib, dataset_cfg, tokenizer, selection: the :class:`~calib_sweep.data.CalibrationSet` and its
            source config, tokenizer and ``selection`` config (``activation_coverage`` clusters the source).
        batch_size: rows per forward pass for model-based predictors.
    """

    input_ids: np.ndarray
    sequences: list[dict[str, Any]] = field(default_factory=list)
    bos_token_id: int | None = None
    separator_token_id: int | None = None
    heldout_tokens: np.ndarray | None = None
    model: Any = None
    features: dict[str, Any] = field(default_factory=dict)
    calib: Any = None
    dataset_cfg: Any = None
    tokenizer: Any = None
    selection: Any = None
    batch_size: int = 8

    def text_rows(self) -> np.ndarray:
        """``int64 [n_samples, seq_len (- 1 with BOS)]``: the rows without their BOS column."""
        rows = np.asarray(self.input_ids, dtype=np.int64)
        return rows[:, 1:] if self.bos_token_id is not None else rows


@dataclass(frozen=True)
class Predictor:
    """A registered predictor.

    Attributes:
        name: its name (``inspect --predictors NAME,...``, ``results.json["predictors"][name]``).
        fn: ``fn(context) -> float | None`` (raises :class:`Unavailable` with a reason when it cannot).
        needs_model: it reads the dense model (or features computed with it).
        unit: what the value means, with its unit and direction.
    """

    name: str
    fn: Callable[[SetContext], float | None]
    needs_model: bool
    unit: str


class Unavailable(Exception):
    """A predictor cannot be computed for this set (the message says why, e.g. no held-out text)."""


#: name -> predictor, in registration order; modules add theirs with :func:`register_predictor`.
PREDICTORS: dict[str, Predictor] = {}

#: The modules that register the built-in predictors (one per predictor).
_MODULES = ("ngram_ratio", "zipf_alpha", "unigram_js", "length_stats", "dense_perplexity", "activation_coverage",
            "outlier_channel_coverage")


def register_predictor(name: str, needs_model: bool = False, unit: str = ""):
    """Decorator: register ``fn(context) -> float | None`` as predictor ``name``.

    Raises:
        ValueError: the name is registered twice.
    """

    def wrap(fn):
        if name in PREDICTORS and PREDICTORS[name].fn is not fn:
            raise ValueError(f"predictor {name!r} registered twice")
        PREDICTORS[name] = Predictor(name, fn, bool(needs_model), unit)
        return fn

    return wrap


def get_predictor(name: str) -> Predictor:
    """The predictor registered as ``name``.

    Raises:
        ConfigError: unknown name (the message lists the known ones).
    """
    return lookup(PREDICTORS, name, "predictor {name!r} is unknown. Fix: --predictors with names from {known} (or no names: all).")


def resolve_names(names: list[str] | None, use_model: bool = True) -> list[str]:
    """The predictors to compute: ``names`` (``None`` or empty: all; without the model: the token-only ones).

    Raises:
        ConfigError: an unknown name, or a model-based predictor named with ``use_model=False``
            (``--no-model``); one line naming it and the fix.
    """
    if not names:
        return [n for n, p in PREDICTORS.items() if use_model or not p.needs_model]
    for name in names:
        if get_predictor(name).needs_model and not use_model:
            raise ConfigError(f"predictor {name!r} needs the dense model, but --no-model was given. "
                              f"Fix: drop --no-model, or name only token-only predictors "
                              f"({', '.join(n for n, p in PREDICTORS.items() if not p.needs_model)}).")
    return list(dict.fromkeys(names))


def compute(context: SetContext, names: list[str] | None = None, only_cheap: bool = False) -> dict[str, Any]:
    """The predictors ``names`` (all when ``None``) of one set.

    Args:
        context: the set (:class:`SetContext`).
        names: predictor names (see :func:`resolve_names`).
        only_cheap: skip model-based predictors unless ``context.features`` already holds what they need
            (what a job does: it never runs the model for a predictor); skipped ones are left out.

    Returns:
        ``{name: value}`` in registration order; a value that cannot be computed is ``None`` with
        ``"<name>_na"``: the reason.

    Raises:
        ConfigError: see :func:`resolve_names`.
    """
    out: dict[str, Any] = {}
    for name in resolve_names(names, use_model=context.model is not None or only_cheap):
        predictor = PREDICTORS[name]
        try:
            value = predictor.fn(context)
        except Unavailable as why:
            if only_cheap and predictor.needs_model:
                continue
            out[name], out[f"{name}_na"] = None, str(why)
            continue
        out[name] = None if value is None else round(float(value), 6)
    return out


def unigram_counts(tokens: np.ndarray, exclude: tuple[int | None, ...] = ()) -> dict[int, int]:
    """Token id -> count over ``tokens`` (``int64``, any shape), without the ids in ``exclude``."""
    ids, counts = np.unique(np.asarray(tokens, dtype=np.int64).reshape(-1), return_counts=True)
    drop = {int(e) for e in exclude if e is not None}
    return {int(i): int(c) for i, c in zip(ids, counts) if int(i) not in drop}


for _module in _MODULES:
    importlib.import_module(f"{__name__}.{_module}")
