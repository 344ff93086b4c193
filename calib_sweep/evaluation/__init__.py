"""Evaluate stage: perplexity on held-out (and, opt-in, standard Hub) text and zero-shot tasks via lm-eval.

``evaluate_model`` is the one entry point the job calls; ``validate_eval`` checks an ``eval`` config
without loading anything; :mod:`calib_sweep.evaluation.baseline` caches the dense model's figures.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

from calib_sweep.errors import ConfigError
from calib_sweep.evaluation.perplexity import HUB_TEXTS, check_source, hub_text_tokens, perplexity
from calib_sweep.evaluation.zero_shot import _get, _is_int, validate_zero_shot, zero_shot

log = logging.getLogger(__name__)

__all__ = ["evaluate_model", "perplexity", "validate_eval", "zero_shot", "hub_text_tokens"]


def validate_eval(eval_cfg: Any) -> None:
    """Check an ``eval`` config group without loading any file, model or dataset.

    Checks ``perplexity.seq_len`` (int >= 2), ``max_windows`` (int >= 1 or null), ``batch_size``
    (int >= 1), ``texts`` (a list), ``hub_texts`` (names of :data:`HUB_TEXTS`), ``hub_sources``
    (only for listed names; a remote location in one must be readable, see :mod:`calib_sweep.paths`), and ``zeroshot`` (see
    :func:`calib_sweep.evaluation.zero_shot.validate_zero_shot`: known task names, ``limit`` >= 1 or
    null, ``batch_size`` >= 1, ``num_fewshot`` = 0, StoryCloze only with a local file).

    Raises:
        ConfigError: the first invalid value, named with its fix.
    """
    ppl = _get(eval_cfg, "perplexity")
    if ppl is not None:
        seq_len = _get(ppl, "seq_len")
        if not _is_int(seq_len) or seq_len < 2:
            raise ConfigError(f"eval.perplexity.seq_len={seq_len!r} must be an integer >= 2. Fix: e.g. 512.")
        windows = _get(ppl, "max_windows")
        if windows is not None and (not _is_int(windows) or windows < 1):
            raise ConfigError(f"eval.perplexity.max_windows={windows!r} must be >= 1 or null (all). Fix: e.g. 16.")
        batch = _get(ppl, "batch_size", 1)
        if not _is_int(batch) or batch < 1:
            raise ConfigError(f"eval.perplexity.batch_size={batch!r} must be an integer >= 1. Fix: e.g. 4.")
        texts = _get(ppl, "texts") or []
        if isinstance(texts, str):
            raise ConfigError(f"eval.perplexity.texts={texts!r} must be a list. Fix: eval.perplexity.texts=[{texts}].")
        hub = _get(ppl, "hub_texts") or []
        if isinstance(hub, str):
            raise ConfigError(f"eval.perplexity.hub_texts={hub!r} must be a list. Fix: eval.perplexity.hub_texts=[{hub}].")
        for name in hub:
            if str(name) not in HUB_TEXTS:
                raise ConfigError(f"eval.perplexity.hub_texts names unknown text {name!r}. Fix: use some of {sorted(HUB_TEXTS)}.")
        hub_sources = dict(_get(ppl, "hub_sources") or {})
        for name in hub_sources:
            if str(name) not in HUB_TEXTS:
                raise ConfigError(f"eval.perplexity.hub_sources names unknown text {name!r}. Fix: use some of {sorted(HUB_TEXTS)}.")
        for name in hub:  # a remote copy (s3://, https://, ...) must be readable: checked here, before weights load
            check_source(str(name), hub_sources.get(name))
    validate_zero_shot(_get(eval_cfg, "zeroshot"))


def evaluate_model(
    model, tokenizer, eval_cfg: Any, texts: dict[str, torch.Tensor], bos_token_id: int | None = None,
    item_records: dict | None = None,
) -> tuple[dict[str, float], dict[str, Any]]:
    """Evaluate a (compressed) model in memory as the ``eval`` config group says.

    Args:
        model: a Hugging Face causal LM (evaluated where it lies, in its dtype; never saved).
        tokenizer: its ``transformers`` tokenizer (used for Hub texts and zero-shot tasks).
        eval_cfg: the ``eval`` config group: ``perplexity`` (``seq_len``, ``max_windows``,
            ``batch_size``, opt-in ``hub_texts`` / ``hub_sources``) and ``zeroshot`` (``tasks``,
            ``limit``, ``batch_size``, ...; absent or empty ``tasks`` = none).
        texts: held-out token streams by source name, each ``int64`` ``[n_tokens]``.
        bos_token_id: put in front of every perplexity window of the held-out texts
            (``model.prepend_bos``; see :func:`calib_sweep.evaluation.perplexity.perplexity`).  Hub
            texts keep the reference protocol (one BOS where the tokenizer adds it).
        item_records: when given, filled with per-item zero-shot records ``{task: ItemRecords}``
            (:mod:`calib_sweep.evaluation.items`).

    Returns:
        ``(metrics, details)``: ``metrics`` maps ``perplexity/<text>`` (held-out sources and Hub
        texts), ``zeroshot/<task>/acc``, ``zeroshot/<task>/acc_norm``, ``zeroshot/mean_acc`` (and
        ``zeroshot/lambada_openai/perplexity``) to floats; ``details`` maps the same prefixes to
        their protocols (windows, tokens scored; per task stderr, items, batch size, lm-eval version).

    Raises:
        ConfigError: invalid config, or an opt-in Hub text that cannot be loaded.
        ValueError: a text shorter than one window, or a non-finite loss.
    """
    validate_eval(eval_cfg)
    metrics: dict[str, float] = {}
    details: dict[str, Any] = {}
    ppl_cfg = eval_cfg.perplexity
    seq_len, max_windows, batch = int(ppl_cfg.seq_len), _get(ppl_cfg, "max_windows"), int(ppl_cfg.batch_size)
    for name, tokens in texts.items():
        result = perplexity(model, tokens, seq_len, max_windows, batch, text=f"{name}/heldout", bos_token_id=bos_token_id)
        metrics[f"perplexity/{name}"] = result["perplexity"]
        details[f"perplexity/{name}"] = result["protocol"]
        log.info("perplexity/%s = %.3f", name, result["perplexity"])
    sources = dict(_get(ppl_cfg, "hub_sources") or {})
    for name in [str(n) for n in (_get(ppl_cfg, "hub_texts") or [])]:
        tokens, info = hub_text_tokens(name, tokenizer, seq_len, sources.get(name))
        result = perplexity(model, tokens, seq_len, max_windows, batch, text=name)
        metrics[f"perplexity/{name}"] = result["perplexity"]
        details[f"perplexity/{name}"] = {**result["protocol"], **info}
        log.info("perplexity/%s = %.3f", name, result["perplexity"])
    zs_cfg = _get(eval_cfg, "zeroshot")
    if zs_cfg is not None and _get(zs_cfg, "tasks"):
        start = time.perf_counter()
        zs_metrics, zs_details = zero_shot(model, tokenizer, zs_cfg, item_records)
        zs_details.setdefault("zeroshot", {})["seconds"] = round(time.perf_counter() - start, 3)
        metrics.update(zs_metrics)
        details.update(zs_details)
    return metrics, details
