"""Caches of what a job computes although it does not depend on the calibration set.

A calibration study is hundreds of jobs that differ only in the calibration set.  Work that depends
only on (model, text) is done once and reused, next to the dense baseline cache
(``calib_sweep.assets.cache_dir()``):

* ``token_streams/``: a source part (calibration or held-out documents) tokenized and joined with
  the separator, keyed by (content hash of the documents, tokenizer hash, separator).  Stored as
  ``.npy`` and read memory-mapped, so drawing a set is a slice.
* ``kl_reference/``: the dense model's top-k log-probabilities on the KL windows, keyed by (model
  config, window token hash, dtype, device type, top-k, library versions).

Every entry is a set of data files plus a ``<key>.json`` written last, naming each file's size and
SHA-256.  Files are written under temporary names and renamed, so concurrent jobs (joblib, a SLURM
array) never see half a file; an entry whose record is missing or does not match its files (a
crash mid-write, a truncated copy) is computed again and replaced.  Keys hash everything that
shapes the content, so a changed tokenizer, source, dtype or model can never reuse a stale entry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from calib_sweep import assets
from calib_sweep.tracking import make_readable, write_json

log = logging.getLogger(__name__)

#: Bump when an entry's layout or meaning changes: part of every key.
CACHE_VERSION = "1"


def make_key(kind: str, ident: dict[str, Any]) -> str:
    """Hex SHA-256 (first 24 characters) of ``kind``, :data:`CACHE_VERSION` and ``ident`` (JSON)."""
    blob = json.dumps({"kind": kind, "version": CACHE_VERSION, **ident}, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _valid(folder: Path, key: str, names: list[str]) -> bool:
    try:
        record = json.loads((folder / f"{key}.json").read_text())
        for name in names:
            path = folder / f"{key}.{name}.npy"
            meta = record["files"][name]
            if path.stat().st_size != meta["bytes"] or _sha256(path) != meta["sha256"]:
                return False
        return True
    except (OSError, ValueError, KeyError, TypeError):
        return False


def cached_arrays(
    kind: str, ident: dict[str, Any], compute: Callable[[], dict[str, np.ndarray]], mmap: bool = True
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Arrays for ``ident`` from the cache, or ``compute()`` them and store them.

    Args:
        kind: cache folder name (``token_streams``, ``kl_reference``).
        ident: everything that shapes the arrays (hashed into the key).
        compute: returns ``{name: array}``; called only on a miss or a damaged entry.
        mmap: read stored arrays memory-mapped (read-only).

    Returns:
        ``(arrays, info)`` with ``info = {"reused": bool, "key": str}``.  On a miss the computed
        arrays are returned as they are (not re-read).
    """
    key = make_key(kind, ident)
    folder = assets.cache_dir() / kind
    record_path = folder / f"{key}.json"
    if record_path.is_file():
        names = list(json.loads(record_path.read_text()).get("files", {})) if _readable(record_path) else []
        if names and _valid(folder, key, names):
            arrays = {n: np.load(folder / f"{key}.{n}.npy", mmap_mode="r" if mmap else None) for n in names}
            return arrays, {"reused": True, "key": key}
        log.warning("cache entry %s/%s is incomplete or damaged: computing it again", kind, key)
    arrays = compute()
    try:
        _store(folder, key, ident, arrays)
    except OSError as exc:  # a full disk or read-only cache costs speed, never the job
        log.warning("could not store cache entry %s/%s: %s", kind, key, exc)
    return arrays, {"reused": False, "key": key}


def _readable(path: Path) -> bool:
    try:
        json.loads(path.read_text())
        return True
    except (OSError, ValueError):
        return False


def _store(folder: Path, key: str, ident: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, array in arrays.items():
        target = folder / f"{key}.{name}.npy"
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{key}.{name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as handle:
                np.save(handle, np.ascontiguousarray(array))
            make_readable(tmp)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        files[name] = {"bytes": target.stat().st_size, "sha256": _sha256(target)}
    write_json(folder / f"{key}.json", {"files": files, "ident": ident})  # last: it makes the entry valid


def tokenizer_fingerprint(tokenizer) -> str | None:
    """SHA-256 of a Hugging Face fast tokenizer's full definition (vocabulary, merges, normalizer,
    added tokens) and its special tokens; ``None`` for other tokenizers (then nothing is cached)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or not hasattr(backend, "to_str"):
        return None
    special = {name: getattr(tokenizer, f"{name}_token_id", None) for name in ("bos", "eos", "unk", "pad")}
    return hashlib.sha256((backend.to_str() + json.dumps(special, sort_keys=True)).encode()).hexdigest()


def documents_fingerprint(docs) -> str:
    """SHA-256 of documents' ids and texts, in order (the content of a source part)."""
    digest = hashlib.sha256()
    for doc in docs:
        digest.update(doc.doc_id.encode("utf-8", "surrogatepass") + b"\0")
        digest.update(doc.text.encode("utf-8", "surrogatepass") + b"\0")
    return digest.hexdigest()
