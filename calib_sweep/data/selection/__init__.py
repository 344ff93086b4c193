"""Selection strategies: which candidate windows of a source go into a calibration set.

The candidate pool is the source's fixed slot permutation (:mod:`calib_sweep.data.sampling`).  With
``selection.pool_factor = f`` (``random``: 1), seed ``k``'s *share* is the slots at permutation
positions ``[k*n*f, (k+1)*n*f)``, and the strategy chooses ``n`` of those ``n*f`` candidates.  Shares
of different seeds never overlap, so sets of different seeds never share a window whatever the
strategy chooses; the manifest lists the share (``selection.pool.slots``) and the chosen slots.
``random`` chooses the whole share (``f = 1``): exactly the draw calibration sets had before this
group existed (same rows, same hash, same manifest).

A strategy is one module of this package that registers a *choose* function by name with
:func:`register_strategy`, as sources register loaders with
:func:`calib_sweep.data.sources.register_loader`; the calibrate stage asks :func:`get_strategy`.
Strategies that need the dense model (``needs``: ``"nll"``, ``"pooled"``) get its per-window features
from :mod:`calib_sweep.data.selection.scoring`, computed after the model loads and cached.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from calib_sweep.errors import ConfigError, lookup


@dataclass
class Candidates:
    """The candidate windows of one share, in permutation order.

    Attributes:
        slots: ``int64 [m]`` slot ids (slot ``s`` = stream tokens ``[s*L, (s+1)*L)``, ``L`` the slot length).
        rows: ``int64 [m, L]`` the windows' stream tokens (no BOS).
        n_documents: ``int64 [m]`` how many documents each window touches (1 = no separator join inside).
        longest_document: ``int64 [m]`` token length (separator included) of the longest document a
            window touches.
        features: model features of the windows, by name: ``"nll"`` ``float64 [m]`` (mean next-token
            negative log-likelihood of the dense model, nats per token), ``"pooled"`` ``float32 [m, d]``
            (mean-pooled hidden states of one layer), ``"channel_peaks"`` ``float32 [m, ...]`` (per target layer
            each window's max ``|x|`` per input channel, :func:`~calib_sweep.data.selection.scoring.channel_peaks`).
            Only those the strategy ``needs``.
    """

    slots: np.ndarray
    rows: np.ndarray
    n_documents: np.ndarray
    longest_document: np.ndarray
    features: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.slots.shape[0])


@dataclass
class Choice:
    """A strategy's answer.

    Attributes:
        indices: ``int64 [n]`` positions in the :class:`Candidates` chosen, in row order.
        scores: ``float64 [n]`` each chosen window's score (meaning: the strategy's ``score``).
        info: strategy-specific manifest fields (e.g. how many near-duplicates were removed).
    """

    indices: np.ndarray
    scores: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Strategy:
    """A registered selection strategy.

    Attributes:
        name: the value of ``selection.name``.
        choose: ``fn(candidates, n, params) -> Choice``.
        defaults: every parameter with its default (``pool_factor`` included); other keys are refused.
        needs: model features it reads (``"nll"``, ``"pooled"``); non-empty means it runs after the
            model loads.
        validate: ``fn(params)`` raising :class:`ConfigError` for bad values (runs before anything loads).
        score: what a window's score means, with its unit (recorded in the manifest).
    """

    name: str
    choose: Callable[[Candidates, int, dict[str, Any]], Choice]
    defaults: dict[str, Any]
    needs: tuple[str, ...] = ()
    validate: Callable[[dict[str, Any]], None] | None = None
    score: str = ""


#: name -> strategy; modules add theirs with :func:`register_strategy`.
STRATEGIES: dict[str, Strategy] = {}

#: The modules that register the built-in strategies (one per strategy).
_MODULES = ("random", "length", "perplexity", "lexical_diversity", "activation_diversity", "dedup", "zipf_diversity",
            "outlier_coverage")


def register_strategy(
    name: str, defaults: dict[str, Any], needs: tuple[str, ...] = (),
    validate: Callable[[dict[str, Any]], None] | None = None, score: str = "",
):
    """Decorator: register ``fn(candidates, n, params) -> Choice`` as ``selection.name=name``.

    Args:
        name: the strategy's name.
        defaults: its parameters with defaults; must include ``pool_factor`` (int >= 2; ``random``: 1).
        needs: model features it reads (see :class:`Candidates`).
        validate: optional check of the parameters, raising :class:`ConfigError`.
        score: what the recorded score means (unit).

    Raises:
        ValueError: the name is registered twice.
    """

    def wrap(fn):
        if name in STRATEGIES and STRATEGIES[name].choose is not fn:
            raise ValueError(f"selection strategy {name!r} registered twice")
        STRATEGIES[name] = Strategy(name, fn, dict(defaults), tuple(needs), validate, score)
        return fn

    return wrap


def get_strategy(name: str) -> Strategy:
    """The strategy registered as ``name``.

    Raises:
        ConfigError: unknown name (the message lists the known ones).
    """
    return lookup(STRATEGIES, name, "selection.name={name!r} is unknown. Fix: selection=<one of {known}>.")


def resolve(selection_cfg: Any) -> tuple[Strategy, dict[str, Any]]:
    """The strategy and its full parameters (defaults filled in) of a ``selection`` config.

    ``None`` (a config from before the group existed) means ``random``.

    Raises:
        ConfigError: unknown strategy, unknown parameter, ``pool_factor`` not an integer >= 1 (at least 2
            for the strategies that choose, which would otherwise take the whole share; ``random`` takes the
            first ``n`` of its share in permutation order, so ``pool_factor`` > 1 makes it the paired reference
            of experiment=selection, drawn from the strategies' own pool), or a
            value the strategy's validator refuses; one line naming the fix.
    """
    from omegaconf import OmegaConf

    raw = {} if selection_cfg is None else (
        OmegaConf.to_container(selection_cfg, resolve=True) if OmegaConf.is_config(selection_cfg) else dict(selection_cfg)
    )
    strategy = get_strategy(str(raw.pop("name", "random")))
    unknown = sorted(set(raw) - set(strategy.defaults))
    if unknown:
        raise ConfigError(
            f"selection.{unknown[0]} is not a parameter of selection={strategy.name}. "
            f"Fix: use one of {sorted(strategy.defaults)}."
        )
    params = {**strategy.defaults, **raw}
    factor, default = params["pool_factor"], strategy.defaults["pool_factor"]
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
        raise ConfigError(
            f"selection.pool_factor={factor!r} must be an integer >= 1. "
            f"Fix: selection.pool_factor={default} (the default of selection={strategy.name})."
        )
    if strategy.name != "random" and factor < 2:
        # n of n candidates is the whole share: the random set, recorded under another strategy's name
        raise ConfigError(
            f"selection.pool_factor={factor} with selection={strategy.name} leaves nothing to choose (it would take "
            f"the whole share: the random set). Fix: selection.pool_factor={default} (its default), or selection=random."
        )
    if strategy.validate is not None:
        strategy.validate(params)
    return strategy, params


def validate_selection(selection_cfg: Any, dataset_cfg: Any = None) -> None:
    """Check a ``selection`` config (and its fit with the dataset) without reading data or weights.

    Raises:
        ConfigError: see :func:`resolve`; also a strategy that needs the model's scores with a
            self-generated dataset (it has no candidate windows to score).
    """
    strategy, _ = resolve(selection_cfg)
    if dataset_cfg is not None and dataset_cfg.get("loader") == "self_generated" and strategy.name != "random":
        raise ConfigError(
            f"selection={strategy.name} chooses among a source's windows, but dataset={dataset_cfg.get('name')} is "
            "generated by the model and has none. Fix: selection=random, or a document source (e.g. dataset=offline_wikipedia)."
        )


def selection_needs_model(selection_cfg: Any) -> bool:
    """Whether the strategy scores windows with the dense model (then it runs after the model loads)."""
    return bool(resolve(selection_cfg)[0].needs)


def take_order(scores: np.ndarray, n: int, descending: bool = False) -> np.ndarray:
    """Indices of the ``n`` lowest (or highest) ``scores``; ties keep pool order (stable sort).  ``int64 [n]``."""
    keys = -np.asarray(scores, dtype=np.float64) if descending else np.asarray(scores, dtype=np.float64)
    return np.argsort(keys, kind="stable")[:n].astype(np.int64)


for _module in _MODULES:
    importlib.import_module(f"{__name__}.{_module}")
