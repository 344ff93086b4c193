"""Per-item zero-shot records (``items.npz`` beside a job's ``results.json``).

Issue 27 item 4: each job keeps, for every zero-shot item, its doc id, target, chosen answer,
correctness and per-choice loglikelihoods, so the report can pair items across jobs.  The records
come from lm-eval's per-sample output (``simple_evaluate(..., log_samples=True)["samples"]``).

File format (``numpy.savez_compressed``), for each task ``T`` (lm-eval leaf task name):

====================  =========  =================  ==============================================
key                   dtype      shape              meaning
====================  =========  =================  ==============================================
``T/doc_id``          int64      [n]                lm-eval doc id (position in the task's split)
``T/target``          int16      [n]                gold choice index (0 for single-choice tasks)
``T/pred``            int16      [n]                argmax of the raw per-choice loglikelihood
``T/correct``         uint8      [n]                lm-eval ``acc`` of the item (0/1)
``T/correct_norm``    uint8      [n]                lm-eval ``acc_norm`` (only where the task has it)
``T/loglik``          float32    [total choices]    per-choice loglikelihood, nats, items concatenated
``T/choice_offsets``  int64      [n+1]              item i's choices are ``loglik[o[i]:o[i+1]]``
``T/is_greedy``       bool       [total choices]    continuation is the greedy decode (lm-eval)
====================  =========  =================  ==============================================

Items are sorted by doc id.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

FILENAME = "items.npz"


@dataclasses.dataclass
class ItemRecords:
    """Per-item records of one task of one job (see the module docstring for the file format).

    Attributes:
        doc_id: int64 [n], lm-eval doc ids, ascending.
        target: int16 [n], gold choice index.
        pred: int16 [n], argmax over the item's choices of ``loglik`` (raw, not length-normalised).
        correct: uint8 [n], lm-eval ``acc`` per item (0/1).
        correct_norm: uint8 [n] lm-eval ``acc_norm`` per item, or ``None`` where the task has none.
        loglik: float32 [total choices], per-choice loglikelihood in nats.
        choice_offsets: int64 [n+1], ``choice_offsets[0] == 0``, ``choice_offsets[-1] == len(loglik)``.
        is_greedy: bool [total choices].
    """

    doc_id: np.ndarray
    target: np.ndarray
    pred: np.ndarray
    correct: np.ndarray
    correct_norm: np.ndarray | None
    loglik: np.ndarray
    choice_offsets: np.ndarray
    is_greedy: np.ndarray

    @property
    def n(self) -> int:
        """Number of items."""
        return int(self.doc_id.shape[0])

    def choices(self, i: int) -> np.ndarray:
        """float32 [k_i]: loglikelihoods of item ``i``'s choices."""
        return self.loglik[self.choice_offsets[i]:self.choice_offsets[i + 1]]


def _target_index(target: Any) -> int:
    """Gold index of an lm-eval sample's ``target``; a string/list target (single-choice task) is 0."""
    if isinstance(target, (bool, np.bool_)):
        return int(target)
    if isinstance(target, (int, np.integer)):
        return int(target)
    if isinstance(target, str) and target.strip().lstrip("-").isdigit():
        return int(target.strip())
    return 0


def _pair(resp: Any) -> tuple[float, bool]:
    """``(loglik, is_greedy)`` from one entry of lm-eval's ``filtered_resps`` / ``resps``."""
    while isinstance(resp, (list, tuple)) and len(resp) == 1 and isinstance(resp[0], (list, tuple)):
        resp = resp[0]
    if isinstance(resp, (list, tuple)) and len(resp) == 2:
        return float(resp[0]), bool(resp[1])
    return float(resp), False


def records_from_samples(samples: Iterable[Mapping[str, Any]]) -> ItemRecords:
    """ItemRecords of one task from lm-eval's per-sample dicts (``result["samples"][task]``).

    Each sample needs ``doc_id``, ``target``, ``filtered_resps`` (or ``resps``; one
    ``(loglik, is_greedy)`` per choice) and ``acc``; ``acc_norm`` is kept when every sample has it.

    Raises:
        ValueError: a sample lacks ``doc_id`` or its responses, or two samples share a doc id.
    """
    rows = sorted(samples, key=lambda s: int(s["doc_id"]))
    doc_ids = [int(s["doc_id"]) for s in rows]
    if len(set(doc_ids)) != len(doc_ids):
        raise ValueError("items: duplicate doc_id in lm-eval samples; pass one task's samples at a time")
    target, pred, correct, norm, loglik, greedy, offsets = [], [], [], [], [], [], [0]
    has_norm = bool(rows) and all("acc_norm" in s for s in rows)
    for s in rows:
        resps = s.get("filtered_resps", s.get("resps"))
        if resps is None:
            raise ValueError(f"items: sample doc_id={s['doc_id']} has no filtered_resps/resps")
        pairs = [_pair(r) for r in resps]
        ll = [p[0] for p in pairs]
        loglik.extend(ll)
        greedy.extend(p[1] for p in pairs)
        offsets.append(offsets[-1] + len(pairs))
        target.append(_target_index(s.get("target", 0)))
        pred.append(int(np.argmax(ll)) if ll else -1)
        correct.append(int(round(float(s.get("acc", 0)))))
        if has_norm:
            norm.append(int(round(float(s["acc_norm"]))))
    return ItemRecords(
        doc_id=np.asarray(doc_ids, dtype=np.int64), target=np.asarray(target, dtype=np.int16),
        pred=np.asarray(pred, dtype=np.int16), correct=np.asarray(correct, dtype=np.uint8),
        correct_norm=np.asarray(norm, dtype=np.uint8) if has_norm else None,
        loglik=np.asarray(loglik, dtype=np.float32), choice_offsets=np.asarray(offsets, dtype=np.int64),
        is_greedy=np.asarray(greedy, dtype=bool),
    )


def save_item_records(job_dir: str | Path, records: Mapping[str, ItemRecords]) -> Path:
    """Write ``records`` (task -> ItemRecords) to ``<job_dir>/items.npz``; returns the path."""
    arrays: dict[str, np.ndarray] = {}
    for task, rec in records.items():
        for field in dataclasses.fields(ItemRecords):
            value = getattr(rec, field.name)
            if value is not None:
                arrays[f"{task}/{field.name}"] = value
    path = Path(job_dir) / FILENAME
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    return path


def load_item_records(job_dir: str | Path) -> dict[str, ItemRecords]:
    """Read ``<job_dir>/items.npz`` (or the ``.npz`` path itself) into task -> ItemRecords.

    Returns the dtypes/shapes of the module docstring; ``correct_norm`` is ``None`` where absent.

    Raises:
        FileNotFoundError: no ``items.npz`` there (a job from before issue 27, or zero-shot off).
    """
    path = Path(job_dir)
    if path.is_dir():
        path = path / FILENAME
    if not path.exists():
        raise FileNotFoundError(f"items: no {FILENAME} at {path}; rerun the job's evaluate stage")
    out: dict[str, ItemRecords] = {}
    with np.load(path, allow_pickle=False) as data:
        tasks = sorted({k.rsplit("/", 1)[0] for k in data.files})
        for task in tasks:
            kw = {f.name: (data[f"{task}/{f.name}"] if f"{task}/{f.name}" in data.files else None)
                  for f in dataclasses.fields(ItemRecords)}
            out[task] = ItemRecords(**kw)
    return out
