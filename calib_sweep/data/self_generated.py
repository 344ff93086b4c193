"""Self-calibration's temperature schedule (Williams, Chrysostomou & Aletras, NAACL 2025, arXiv
2410.17170, Sec. 3.2).

The model writes its own calibration text from its beginning-of-sequence token; the sampling
temperature of token ``i`` (``i`` = tokens generated before it, so the first sampled token has
``i = 0``) is

    t_i = t_initial + (i / n) * (t_final - t_initial)    if i <= n
    t_i = t_final                                        if i > n

(Sec. 3.2; ``n`` = ``schedule_tokens``), and token ``i`` is drawn from ``softmax(u / t_i)`` of the
model's logits ``u``.  The paper's defaults, used here: ``t_initial = t_final = 1.0`` ("to enable a
fair comparison between models", Sec. 5, all main results) and ``n = 10`` (the schedule ablation,
Fig. 3 / Sec. 6.2, which searches ``t_initial, t_final`` in {0, 0.5, 1, 1.5, 2}).  The paper counts
``i`` from the start of generation without fixing the origin; counting from 0 makes the first token
use exactly ``t_initial``.  ``t = 0`` (the paper's greedy corner) is refused: the schedule divides
the logits by ``t``.

Dataset fields (``conf/dataset/self_generated.yaml``):

* ``temperature_schedule: linear`` (default) with ``temperature_initial``, ``temperature_final``,
  ``schedule_tokens``; ``temperature`` must stay null;
* ``temperature_schedule: constant`` with ``temperature`` (null = 1.0): one temperature for every
  token, the behaviour before the schedule existed (same tokens for the same seed).  A config
  without ``temperature_schedule`` (saved before the field existed) is ``constant``, so ``rebuild``
  reproduces its set.

Order inside ``generate`` (checked in transformers 5.17, ``GenerationMixin._get_logits_processor``):
the processors ``generate`` builds from its own arguments (e.g. ``min_new_tokens``, which sets the
end tokens' logits to ``-inf``) come first, then the caller's ``logits_processor`` list is merged in
(appended), then, with ``do_sample=True``, the sampling warpers (temperature, top-k, top-p, ...).
So :class:`TemperatureSchedule` divides the logits before top-k / top-p cut them, as
``TemperatureLogitsWarper`` does; ``generate``'s own ``temperature`` stays 1.0 so the logits are
divided once.  ``tests/test_self_generated_schedule.py`` checks the order against top-p.
"""

from __future__ import annotations

from typing import Any

import torch

from calib_sweep.errors import ConfigError

SCHEDULES = ("linear", "constant")
#: Sec. 5 (t_initial = t_final = 1.0 for all main results) and Fig. 3 (n = 10).
PAPER_DEFAULTS = {"temperature_initial": 1.0, "temperature_final": 1.0, "schedule_tokens": 10}


def scheduled_temperature(step: int, initial: float, final: float, tokens: int) -> float:
    """Temperature of generated token ``step`` (0-based) under the linear schedule of Sec. 3.2:
    ``initial`` at step 0, ``final`` from step ``tokens`` on, linear in between."""
    if step >= tokens:
        return float(final)
    return float(initial) + step / tokens * (float(final) - float(initial))


class TemperatureSchedule:
    """A ``transformers`` logits processor (``processor(input_ids, scores) -> scores``, the call
    ``LogitsProcessorList`` makes; not a subclass, so importing this module, which validation does
    before any weights load, does not import transformers) that divides the next-token logits by the scheduled
    temperature of the token being sampled (:func:`scheduled_temperature`).

    Args:
        initial: ``t_initial`` (> 0).
        final: ``t_final`` (> 0).
        tokens: ``n``, generated tokens over which the temperature moves (>= 1).
        prompt_length: tokens in the prompt (1: the BOS token); the step of a call is
            ``input_ids.shape[-1] - prompt_length``, the number of tokens generated so far (every
            row of a batch has the same length in ``generate``).

    A constant temperature ``t`` is ``TemperatureSchedule(t, t, 1, prompt_length)``.
    """

    def __init__(self, initial: float, final: float, tokens: int, prompt_length: int):
        self.initial, self.final, self.tokens = float(initial), float(final), int(tokens)
        self.prompt_length = int(prompt_length)

    def temperature(self, step: int) -> float:
        """The temperature of generated token ``step`` (0-based)."""
        return scheduled_temperature(step, self.initial, self.final, self.tokens)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        """``scores`` ``[batch, vocab]`` (float) divided by the temperature of this step; ``input_ids``
        ``[batch, prompt_length + generated]`` (int64)."""
        return scores / self.temperature(input_ids.shape[-1] - self.prompt_length)


def _number(dataset_cfg: Any, field: str, default: Any) -> Any:
    value = dataset_cfg.get(field, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"dataset.{field}={value!r} must be a number > 0. Fix: e.g. dataset.{field}=1.0.")
    return float(value)


def temperature_schedule(dataset_cfg: Any) -> dict[str, Any]:
    """The checked schedule of a ``self_generated`` dataset config, as recorded in the manifest's
    ``generation`` block: ``{"temperature_schedule": "linear", "temperature_initial": float,
    "temperature_final": float, "schedule_tokens": int}`` or ``{"temperature_schedule":
    "constant", "temperature": float}``.

    Raises:
        ConfigError: (one line, before any weights load) an unknown schedule name; a temperature
            that is not a number > 0; ``schedule_tokens`` not an integer >= 1; ``temperature`` set
            under the linear schedule (it would be ignored).
    """
    kind = dataset_cfg.get("temperature_schedule", "constant")  # absent: a config saved before the field
    if kind not in SCHEDULES:
        raise ConfigError(
            f"dataset.temperature_schedule={kind!r} is not one of {', '.join(SCHEDULES)}. "
            "Fix: dataset.temperature_schedule=linear (the paper's schedule) or constant."
        )
    temperature = dataset_cfg.get("temperature")
    if temperature is not None:
        temperature = _number(dataset_cfg, "temperature", None)
    if kind == "constant":
        return {"temperature_schedule": "constant", "temperature": 1.0 if temperature is None else temperature}
    if temperature is not None:
        raise ConfigError(
            f"dataset.temperature={dataset_cfg.get('temperature')!r} is used only with temperature_schedule=constant, "
            "but the schedule is linear. Fix: add dataset.temperature_schedule=constant, or set "
            "dataset.temperature_initial / dataset.temperature_final instead."
        )
    tokens = dataset_cfg.get("schedule_tokens", PAPER_DEFAULTS["schedule_tokens"])
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
        raise ConfigError(
            f"dataset.schedule_tokens={tokens!r} must be an integer >= 1. Fix: e.g. dataset.schedule_tokens=10."
        )
    return {
        "temperature_schedule": "linear",
        "temperature_initial": _number(dataset_cfg, "temperature_initial", PAPER_DEFAULTS["temperature_initial"]),
        "temperature_final": _number(dataset_cfg, "temperature_final", PAPER_DEFAULTS["temperature_final"]),
        "schedule_tokens": int(tokens),
    }


def schedule_processor(schedule: dict[str, Any], prompt_length: int) -> TemperatureSchedule:
    """The :class:`TemperatureSchedule` for a schedule from :func:`temperature_schedule`."""
    if schedule["temperature_schedule"] == "constant":
        t = schedule["temperature"]
        return TemperatureSchedule(t, t, 1, prompt_length)
    return TemperatureSchedule(
        schedule["temperature_initial"], schedule["temperature_final"], schedule["schedule_tokens"], prompt_length
    )
