"""One entry point for the calibrate stage: any dataset config -> a :class:`CalibrationSet`.

Three kinds of dataset config (``conf/dataset/*.yaml``):

* a **document source** (``loader`` = ``gensim_enwiki``, ``jsonl``, ``hub``, ``offline_*`` ...):
  windows drawn by :func:`calib_sweep.data.sampling.draw_calibration_set`;
* a **mixture** (``loader: mixture``, ``components: [{dataset: <name>, weight: w}, ...]``): the
  ``n_samples`` sequences are split across the components in proportion to their weights
  (largest-remainder rounding, so the counts add up to ``n_samples``), each component drawn with the
  same disjoint-by-seed policy from its own source, as in RedPajama-style data mixtures;
* **self-generated** text (``loader: self_generated``): the model being compressed writes its own
  calibration set by sampling from its beginning-of-sequence token (self-calibration, Williams,
  Chrysostomou & Aletras 2025), at the temperature schedule of its Sec. 3.2
  (:mod:`calib_sweep.data.self_generated`: ``temperature_schedule``, ``temperature_initial``,
  ``temperature_final``, ``schedule_tokens``, or ``temperature`` when constant).  ``top_p``, ``top_k`` and
  ``generation_seed`` are config fields too; the job's ``seed`` is added to ``generation_seed``, so
  seeds give different sets.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from calib_sweep.data.sampling import CalibrationSet, draw_calibration_set, resolve_separator, token_stream
from calib_sweep.data.self_generated import schedule_processor, temperature_schedule
from calib_sweep.data.sources import (
    Document,
    load_documents,
    register_loader,
    source_format,
    split_documents,
    validate_source,
)
from calib_sweep.errors import ConfigError

CONF_DATASET_DIR = Path(__file__).resolve().parent.parent / "conf" / "dataset"


def dataset_config(name: str) -> DictConfig:
    """The dataset config ``conf/dataset/<name>.yaml`` as composed by Hydra (no overrides).

    Raises:
        ConfigError: no such config (the message lists the known ones).
    """
    path = CONF_DATASET_DIR / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in CONF_DATASET_DIR.glob("*.yaml"))
        raise ConfigError(f"dataset {name!r} has no config in conf/dataset. Fix: use one of {known}.")
    return OmegaConf.load(path)


def needs_model(dataset_cfg: Any, selection: Any = None) -> bool:
    """Whether drawing this calibration set needs the loaded model: self-generated text, or a
    selection strategy that scores windows with the dense model (``selection``: the ``selection``
    config; ``None`` = random)."""
    from calib_sweep.data.selection import selection_needs_model

    return dataset_cfg.get("loader") == "self_generated" or selection_needs_model(selection)


def check_selection(
    dataset_cfg: Any, selection: Any, tokenizer, n_samples: int, seq_len: int, seed: int,
    allow_fewer: bool = False, docs: list[Document] | None = None, bos_token_id: int | None = None,
    separator_token_id: int | None = -1,
) -> None:
    """Check the ``selection`` config and whether the source's pool holds seed's share, before the
    model loads (reads the source's token stream, which is cached, never the weights).

    Args:
        dataset_cfg, tokenizer, n_samples, seq_len, seed, allow_fewer, docs, bos_token_id,
        separator_token_id: as for :func:`build_calibration_set`.
        selection: the ``selection`` config (``None``: random).

    Raises:
        ConfigError: unknown strategy, band or parameter; a strategy that scores windows with
            ``dataset=self_generated``; a pool too small for ``seed + 1`` shares of
            ``n_samples * pool_factor`` windows (the message says how many disjoint sets it can give).
    """
    from calib_sweep.data.sampling import pool_error
    from calib_sweep.data.selection import resolve, validate_selection

    validate_selection(selection, dataset_cfg)
    strategy, params = resolve(selection)
    if strategy.name == "random" or dataset_cfg.get("loader") in ("self_generated",) or allow_fewer:
        return  # random: the draw itself says so, as it always has
    factor = int(params["pool_factor"])
    slot_len = seq_len - (bos_token_id is not None)
    if dataset_cfg.loader == "mixture":
        parts = _components(dataset_cfg)
        sources = [(c, n) for (c, _), n in zip(parts, split_counts(n_samples, [w for _, w in parts])) if n]
    else:
        sources = [(dataset_cfg, n_samples)]
    for source_cfg, count in sources:
        source_docs = docs if source_cfg is dataset_cfg and docs else load_documents(source_cfg)
        calib_docs, _ = split_documents(source_docs, float(source_cfg.heldout_fraction))
        _, starts, _ = token_stream(calib_docs, tokenizer, separator_token_id)
        total = int(starts[-1])
        if total // slot_len < (seed + 1) * count * factor:
            raise pool_error(str(source_cfg.name), strategy.name, factor, total, total // slot_len, count, seq_len,
                             seed, bos_token_id is not None)


# ----------------------------------------------------------------------------------- mixtures
def _components(dataset_cfg: Any) -> list[tuple[DictConfig, float]]:
    parts = []
    for entry in dataset_cfg.get("components") or []:
        weight = entry.get("weight")
        if not isinstance(weight, (int, float)) or isinstance(weight, bool) or weight <= 0:
            raise ConfigError(
                f"dataset.components weight={weight!r} for {entry.get('dataset')!r} must be > 0. Fix: e.g. weight: 0.5."
            )
        parts.append((dataset_config(str(entry.get("dataset"))), float(weight)))
    return parts


def _validate_mixture(dataset_cfg: Any) -> None:
    parts = _components(dataset_cfg)
    if len(parts) < 2:
        raise ConfigError(
            f"dataset {dataset_cfg.get('name')!r} (loader: mixture) needs at least 2 components. "
            "Fix: components: [{dataset: offline_wikipedia, weight: 0.5}, {dataset: <other>, weight: 0.5}]."
        )
    for component, _ in parts:
        if component.get("loader") in ("mixture", "self_generated"):
            raise ConfigError(
                f"mixture component {component.name!r} is itself a {component.loader}. Fix: mix document sources only."
            )
        validate_source(component)


@register_loader("mixture", validate=_validate_mixture)
def _mixture_documents(dataset_cfg: Any) -> list[Document]:
    """All documents of every component, ids prefixed ``<component>/`` (used for held-out text)."""
    docs = []
    for component, _ in _components(dataset_cfg):
        docs += [replace(d, doc_id=f"{component.name}/{d.doc_id}") for d in load_documents(component)]
    return docs


def split_counts(n_samples: int, weights: list[float]) -> list[int]:
    """Split ``n_samples`` in proportion to ``weights`` by largest remainder; the counts sum to ``n_samples``."""
    total = sum(weights)
    exact = [n_samples * w / total for w in weights]
    counts = [math.floor(x) for x in exact]
    for index in sorted(range(len(exact)), key=lambda i: (counts[i] - exact[i], i))[: n_samples - sum(counts)]:
        counts[index] += 1
    return counts


# ------------------------------------------------------------------------------ self-generated
def _validate_self_generated(dataset_cfg: Any) -> None:
    temperature_schedule(dataset_cfg)  # raises ConfigError for a bad schedule or temperature
    top_p = dataset_cfg.get("top_p", 1.0)
    if not isinstance(top_p, (int, float)) or not 0 < top_p <= 1:
        raise ConfigError(f"dataset.top_p={top_p!r} must lie in (0, 1]. Fix: e.g. dataset.top_p=0.95.")


@register_loader("self_generated", validate=_validate_self_generated)
def _self_generated_documents(dataset_cfg: Any) -> list[Document]:
    raise ConfigError(
        f"dataset {dataset_cfg.name!r} is generated by the model and has no documents (no held-out text). "
        "Fix: evaluate perplexity on a document source, e.g. eval.perplexity.texts=[offline_wikipedia]."
    )


def end_token_ids(model, tokenizer, separator_token_id: int | None = -1) -> list[int]:
    """Every token that ends a text for this model: the generation config's EOS id(s), the
    tokenizer's EOS and the document separator (sorted, no duplicates)."""
    ids: set[int] = set()
    generation = getattr(model, "generation_config", None)
    configured = getattr(generation, "eos_token_id", None)
    if configured is not None:
        ids.update(int(i) for i in (configured if isinstance(configured, (list, tuple)) else [configured]))
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    separator = resolve_separator(tokenizer, separator_token_id)
    if separator is not None:
        ids.add(int(separator))
    return sorted(ids)


@torch.no_grad()
def generate_calibration_set(
    model, tokenizer, dataset_cfg: Any, n_samples: int, seq_len: int, seed: int, separator_token_id: int | None = -1
) -> CalibrationSet:
    """Self-calibration: the model samples ``n_samples`` sequences of ``seq_len`` tokens.

    Each row starts with the tokenizer's BOS token (the separator when it has none) and continues
    with ``seq_len - 1`` sampled tokens.  The model's end tokens (:func:`end_token_ids`: its
    generation config's EOS ids, the tokenizer's EOS and the document separator) are the stop
    tokens of generation and are kept out of the rows (``min_new_tokens``), so a row is one
    uninterrupted text, never a chat-start or BOS token used as a stop.  Sampling is seeded by
    ``generation_seed + seed`` in a forked RNG, so the global RNG is untouched.  The sampling
    temperature follows the dataset's schedule (:mod:`calib_sweep.data.self_generated`, Sec. 3.2 of
    the paper: linear from ``temperature_initial`` to ``temperature_final`` over the first
    ``schedule_tokens`` sampled tokens, or ``constant``), applied by a logits processor before top-k /
    top-p.

    Returns:
        A :class:`CalibrationSet` (``input_ids`` ``[n_samples, seq_len]`` int64) whose manifest
        records the generation settings (the schedule included) and the end tokens.

    Raises:
        ConfigError: a bad schedule (:func:`calib_sweep.data.self_generated.temperature_schedule`),
            or a tokenizer with neither BOS nor EOS.
    """
    from transformers import LogitsProcessorList

    ends = end_token_ids(model, tokenizer, separator_token_id)
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else (ends[0] if ends else None)
    if start is None:
        raise ConfigError("self-generated calibration needs a tokenizer with a BOS or EOS token.")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (ends[0] if ends else start)
    device = next(model.parameters()).device
    batch_size = int(dataset_cfg.get("batch_size", 16))
    schedule = temperature_schedule(dataset_cfg)
    gen_seed = int(dataset_cfg.get("generation_seed", 0)) + int(seed)
    rows = []
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(gen_seed)
        for begin in range(0, n_samples, batch_size):
            count = min(batch_size, n_samples - begin)
            prompt = torch.full((count, 1), start, dtype=torch.long, device=device)
            out = model.generate(
                input_ids=prompt,
                attention_mask=torch.ones_like(prompt),
                do_sample=True,
                temperature=1.0,  # the schedule divides the logits (before top-k / top-p, see self_generated)
                logits_processor=LogitsProcessorList([schedule_processor(schedule, prompt.shape[1])]),
                top_p=float(dataset_cfg.get("top_p", 1.0)),
                top_k=int(dataset_cfg.get("top_k", 0)) or None,
                max_new_tokens=seq_len - 1,
                min_new_tokens=seq_len - 1,
                eos_token_id=ends or None,
                pad_token_id=pad,
            )
            rows.append(out[:, :seq_len].cpu())
    input_ids = torch.cat(rows).long()
    sequences = [
        {"slot": i, "pieces": [{"doc_id": f"generated:{gen_seed}:{i}", "start": 0, "end": seq_len}]}
        for i in range(n_samples)
    ]
    calib = CalibrationSet(
        input_ids=input_ids, sequences=sequences, source=str(dataset_cfg.name), seed=int(seed),
        slots_available=n_samples, documents_used=n_samples, n_samples_requested=n_samples,
    )
    calib.extra = {
        "generation": {
            **schedule, "top_p": float(dataset_cfg.get("top_p", 1.0)),
            "top_k": int(dataset_cfg.get("top_k", 0)), "generation_seed": gen_seed, "start_token": int(start),
            "end_token_ids": ends,
        }
    }
    return calib


# ------------------------------------------------------------------------------------- entry
def build_calibration_set(
    dataset_cfg: Any,
    tokenizer,
    n_samples: int,
    seq_len: int,
    seed: int,
    allow_fewer: bool = False,
    model=None,
    docs: list[Document] | None = None,
    bos_token_id: int | None = None,
    separator_token_id: int | None = -1,
    selection: Any = None,
) -> CalibrationSet:
    """Draw the calibration set a dataset config describes (see the module docstring).

    Args:
        dataset_cfg: the ``dataset`` config group.
        tokenizer: the model's tokenizer.
        n_samples: sequences in the set.
        seq_len: tokens per sequence.
        seed: which disjoint set (document sources, mixtures) or generation seed offset.
        allow_fewer: see :func:`calib_sweep.data.sampling.draw_calibration_set`.
        model: the loaded model; required for self-generated sets only.
        docs: the source's documents when the caller already loaded them (document sources only).
        bos_token_id: put this token in front of every row of a document source or mixture (see
            :func:`calib_sweep.data.sampling.draw_calibration_set`; self-generated rows start with
            BOS anyway).
        separator_token_id: the model's end-of-text token, put after every document
            (:func:`calib_sweep.models.document_separator`; ``-1``: the tokenizer's EOS token).
        selection: the ``selection`` config (``None``: random; :mod:`calib_sweep.data.selection`);
            a mixture applies it to each component's share.

    Returns:
        A :class:`CalibrationSet` with ``input_ids`` of shape ``[n, seq_len]`` (int64).

    Raises:
        ConfigError: invalid config, bad selection, or too little data (see ``draw_calibration_set``).
    """
    from calib_sweep.data.selection import validate_selection

    validate_source(dataset_cfg)
    validate_selection(selection, dataset_cfg)
    if dataset_cfg.get("loader") == "self_generated":
        if model is None:
            raise ValueError("self-generated calibration needs the model: call after loading it")
        return generate_calibration_set(model, tokenizer, dataset_cfg, n_samples, seq_len, seed, separator_token_id)
    if dataset_cfg.loader == "mixture":
        parts = _components(dataset_cfg)
        counts = split_counts(n_samples, [w for _, w in parts])
        drawn = []
        for (component, weight), count in zip(parts, counts):
            if count == 0:
                continue
            component_docs = load_documents(component)
            calib_docs, _ = split_documents(component_docs, float(component.heldout_fraction))
            drawn.append((component, weight, draw_calibration_set(
                calib_docs, tokenizer, count, seq_len, seed, source=str(component.name),
                permutation_seed=int(component.get("permutation_seed", 0)), allow_fewer=allow_fewer,
                bos_token_id=bos_token_id, separator_token_id=separator_token_id, selection=selection, model=model,
            )))
            drawn[-1][2].extra.update(source_record(component, component_docs, tokenizer))
        sequences = [
            {**seq, "source": str(component.name)} for component, _, calib in drawn for seq in calib.sequences
        ]
        selected = [calib.extra["selection"] for _, _, calib in drawn if "selection" in calib.extra]
        combined = CalibrationSet(
            input_ids=torch.cat([calib.input_ids for _, _, calib in drawn]),
            sequences=sequences, source=str(dataset_cfg.name), seed=int(seed),
            slots_available=min(c.slots_available * n_samples // max(c.n_samples, 1) for _, _, c in drawn),
            documents_used=sum(c.documents_used for _, _, c in drawn), n_samples_requested=n_samples,
            bos_token_id=bos_token_id, separator_token_id=drawn[0][2].separator_token_id,
        )
        combined.extra = {
            "components": [
                {"dataset": str(comp.name), "weight": weight, "n_samples": calib.n_samples,
                 "slots_available": calib.slots_available, "token_sha256": calib.token_sha256,
                 **{k: calib.extra[k] for k in _SOURCE_RECORD if k in calib.extra}}
                for comp, weight, calib in drawn
            ],
            "documents_skipped_empty": sum(calib.extra["documents_skipped_empty"] for _, _, calib in drawn),
        }
        if selected:  # one strategy for all components; the shares differ per component
            combined.extra["selection"] = {**{k: v for k, v in selected[0].items() if k not in ("pool", "info")},
                                           "pool": {str(c.name): calib.extra["selection"]["pool"] for c, _, calib in drawn}}
            scored = {str(c.name): calib.selection_scoring for c, _, calib in drawn if calib.selection_scoring}
            if scored:
                combined.selection_scoring = {"seconds": round(sum(v["seconds"] for v in scored.values()), 3),
                                              "components": scored}
        return combined
    docs = docs or load_documents(dataset_cfg)
    calib_docs, _ = split_documents(docs, float(dataset_cfg.heldout_fraction))
    calib = draw_calibration_set(
        calib_docs, tokenizer, n_samples, seq_len, seed, source=str(dataset_cfg.name),
        permutation_seed=int(dataset_cfg.get("permutation_seed", 0)), allow_fewer=allow_fewer,
        bos_token_id=bos_token_id, separator_token_id=separator_token_id, selection=selection, model=model,
    )
    calib.extra.update(source_record(dataset_cfg, docs, tokenizer))
    return calib


#: Manifest keys of :func:`source_record`.
_SOURCE_RECORD = ("format", "chat_template", "documents_skipped_empty")


def source_record(source_cfg: Any, docs: list[Document], tokenizer) -> dict[str, Any]:
    """The manifest fields of a document source's text: ``format`` (``text`` | ``chat``),
    ``documents_skipped_empty`` (empty documents skipped while loading; :class:`~calib_sweep.data.sources.Documents`,
    0 for a plain list) and, for chat, ``chat_template`` (``{"sha256", "source", "leading_bos_dropped"}``,
    :func:`calib_sweep.data.chat.template_record`)."""
    from calib_sweep.data import chat

    record: dict[str, Any] = {"format": source_format(source_cfg),
                              "documents_skipped_empty": int(getattr(docs, "skipped_empty", 0))}
    template = chat.template_record(docs, tokenizer)
    if template is not None:
        record["chat_template"] = template
    return record


def heldout_token_ids(
    dataset_cfg: Any, tokenizer, docs: list[Document] | None = None, separator_token_id: int | None = -1,
    info: dict[str, Any] | None = None,
) -> torch.Tensor:
    """The held-out part of a source as one token stream; ``[n_tokens]`` int64.

    Documents are joined by ``separator_token_id`` as calibration streams are (``-1``: the tokenizer's
    EOS token).  ``docs``: the source's documents when the caller already loaded them.  The stream is
    cached (:func:`calib_sweep.data.sampling.token_stream`); ``info``, if given, receives
    ``{"reused", "key"}``.

    Raises:
        ConfigError: the source has no held-out document.
    """
    docs = docs or load_documents(dataset_cfg)
    _, held = split_documents(docs, float(dataset_cfg.get("heldout_fraction", 0.0)))
    if not held:
        raise ConfigError(
            f"dataset {dataset_cfg.name!r} has no held-out document. Fix: set its heldout_fraction > 0."
        )
    stream, _, cache_info = token_stream(held, tokenizer, separator_token_id)
    if info is not None:
        info.update(cache_info)
    return torch.from_numpy(np.array(stream, dtype=np.int64))
