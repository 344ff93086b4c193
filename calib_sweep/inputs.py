"""Fingerprints of the local files a job reads, so resume never returns results for data that changed.

The config key (:func:`calib_sweep.tracking.config_key`) hashes the config, so it covers a path, not
what the file at that path holds.  :func:`job_inputs` fingerprints every input a job reads from a
user's disk, by field:

- ``dataset.path`` (a ``local_jsonl`` file, a ``local_hf_disk`` folder, a Hub source's local copy;
  a local copy with relative ``dataset.data_files`` is fingerprinted over the files they match) and
  absolute ``dataset.data_files``;
- ``model.path`` and ``model.tokenizer`` when they name a local file or folder;
- ``eval.zeroshot.local_files.<task>`` of the tasks in ``eval.zeroshot.tasks`` (a StoryCloze file, ...);
- ``eval.perplexity.hub_sources.<name>`` (its ``path`` and absolute ``data_files``) of the texts in
  ``eval.perplexity.hub_texts``.

A local file's fingerprint is ``{"path", "kind": "file", "bytes", "mtime_ns", "sha256"}``; a folder's
is ``{"path", "kind": "folder", "files", "bytes", "mtime_ns", "sha256"}`` with the SHA-256 over the
lines ``"<relative path>\\0<file sha256>\\n"`` of its files in sorted order (names starting with ``.``
at any depth, such as ``.cache/`` or ``.git/``, are left out); a path that does not exist is
``{"path", "missing": True}``.  Each file's SHA-256 is cached under
``calib_sweep.assets.cache_dir()/input_hashes/`` by (absolute path, size, mtime in ns), so an
unchanged file is read once, and a file whose mtime changed is read again (a ``touch`` with the
same content gives the same SHA-256, and so still matches).

A remote value (``https://``, ``s3://``, ``hf://``, ... see :mod:`calib_sweep.paths`) is
``{"remote": <value as given>, "fingerprint": "remote: not fingerprinted"}``: it is keyed by its URL
only.  For an ``http(s)`` file URL one ``HEAD`` request (at most :data:`HEAD_TIMEOUT_S` seconds)
records the server's ``ETag`` / ``Last-Modified`` / ``Content-Length`` when it sends them; those are
compared only when both the finished job and this one have them.

Registry assets (the embedded model, the offline sources and the packaged zero-shot items) are pinned
by version + SHA-256 in :mod:`calib_sweep.assets`, so they need no fingerprint here; Hub ids are
keyed by repo id + ``revision``.  A finished job whose ``results.json`` has no ``inputs`` (written
before this module) is treated as matching.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import urllib.request
from pathlib import Path
from typing import Any

from calib_sweep import assets, paths
from calib_sweep.tracking import write_json

log = logging.getLogger(__name__)

#: Cache folder (under ``assets.cache_dir()``) of file SHA-256s keyed by (path, size, mtime).
HASH_CACHE = "input_hashes"

#: Seconds one ``HEAD`` request for an ``http(s)`` file URL may take.
HEAD_TIMEOUT_S = 3.0

#: What a remote input records when nothing cheap pins its content.
NOT_FINGERPRINTED = "remote: not fingerprinted"

#: Loaders whose ``dataset.path`` must be a local (or remote) file or folder, never a Hub id.
_FILE_LOADERS = ("jsonl", "hf_disk")


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a local file, cached by (absolute path, size in bytes, mtime in ns).

    Raises:
        OSError: the file cannot be read.
    """
    path = Path(path).resolve()
    st = path.stat()
    key = hashlib.sha256(json.dumps([str(path), st.st_size, st.st_mtime_ns]).encode()).hexdigest()[:24]
    entry = assets.cache_dir() / HASH_CACHE / f"{key}.json"
    try:
        cached = json.loads(entry.read_text())
        if cached.get("path") == str(path) and cached.get("bytes") == st.st_size and cached.get("mtime_ns") == st.st_mtime_ns:
            return str(cached["sha256"])
    except (OSError, ValueError, KeyError, AttributeError):
        pass
    digest = assets.sha256_file(path)
    try:
        write_json(entry, {"path": str(path), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest})
    except OSError as exc:  # a read-only cache costs time, never the job
        log.debug("could not cache the SHA-256 of %s: %s", path, exc)
    return digest


def _visible(rel: Path) -> bool:
    return not any(part.startswith(".") for part in rel.parts)


def _files_fingerprint(shown: str, root: Path | None, files: list[Path]) -> dict[str, Any]:
    """The fingerprint of a set of files: names relative to ``root`` (absolute when ``root`` is None)."""
    digest, total, newest = hashlib.sha256(), 0, 0
    named = sorted(((f.relative_to(root).as_posix() if root is not None else str(f)), f) for f in files)
    for name, file in named:
        st = file.stat()
        total, newest = total + st.st_size, max(newest, st.st_mtime_ns)
        digest.update(f"{name}\0{file_sha256(file)}\n".encode())
    return {"path": shown, "kind": "folder" if root is not None else "files", "files": len(named), "bytes": total,
            "mtime_ns": newest, "sha256": digest.hexdigest()}


def _remote(value: str) -> dict[str, Any]:
    """A remote input: its URL, plus ``ETag`` / ``Last-Modified`` / ``Content-Length`` of an ``http(s)`` file."""
    entry: dict[str, Any] = {"remote": value, "fingerprint": NOT_FINGERPRINTED}
    if paths.scheme(value) not in ("http", "https") or any(c in value for c in "*?[") or paths.builder_for(value) is None:
        return entry
    try:
        request = urllib.request.Request(value, method="HEAD")
        with urllib.request.urlopen(request, timeout=HEAD_TIMEOUT_S) as response:  # noqa: S310 - the user's own URL
            found = {name: response.headers.get(header) for name, header in
                     (("etag", "ETag"), ("last_modified", "Last-Modified"), ("bytes", "Content-Length"))}
    except Exception as exc:  # noqa: BLE001 - offline or refused: keyed by URL only
        log.debug("no HEAD metadata for %s: %s", value, exc)
        return entry
    found = {k: v for k, v in found.items() if v}
    if found.get("etag") or found.get("last_modified"):
        entry.update(found, fingerprint="http headers")
    return entry


def fingerprint(value: Any, patterns: list[str] | None = None) -> dict[str, Any]:
    """The fingerprint of one path field's value (see the module docstring for its fields).

    Args:
        value: a local file or folder, ``file://`` path, or remote URL.
        patterns: for a local folder, only the files these glob patterns match (relative to it; the
            ``data_files`` of a Hub source's local copy); ``None``: every visible file.

    Returns:
        The fingerprint; ``{"path", "error"}`` when a file cannot be read (the job then fails on it).
    """
    text = str(value).strip()
    if paths.is_remote(text):
        return _remote(text)
    path = paths.local_path(text)
    shown = str(path.resolve()) if path.exists() else str(path)
    try:
        if path.is_file():
            st = path.stat()
            return {"path": shown, "kind": "file", "bytes": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": file_sha256(path)}
        if path.is_dir():
            root = path.resolve()
            if patterns:
                found = {Path(f).resolve() for p in patterns for f in glob.glob(str(root / p), recursive=True)}
            else:
                found = {f for f in root.rglob("*")}
            files = [f for f in found if f.is_file() and _visible(f.relative_to(root) if f.is_relative_to(root) else Path(f.name))]
            return _files_fingerprint(shown, root, files)
    except OSError as exc:
        return {"path": shown, "error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__}
    return {"path": shown, "missing": True}


def _patterns(data_files: Any) -> list[str]:
    """The file patterns of ``data_files`` (a string, list or ``{split: pattern(s)}``), in order."""
    if data_files is None:
        return []
    if isinstance(data_files, str):
        return [data_files]
    if isinstance(data_files, dict):
        return [str(p) for v in data_files.values() for p in ([v] if isinstance(v, str) else list(v or []))]
    return [str(p) for p in data_files]


def _source_inputs(prefix: str, source: dict[str, Any], file_loader: bool) -> dict[str, dict[str, Any]]:
    """Inputs of a source config with ``path`` and ``data_files`` (``dataset`` or a hub source)."""
    found: dict[str, dict[str, Any]] = {}
    path, patterns = source.get("path"), _patterns(source.get("data_files"))
    relative = [p for p in patterns if not os.path.isabs(p) and not paths.is_remote(p)]
    absolute = [p for p in patterns if p not in relative]
    if path is not None and str(path).strip():
        local = not paths.is_remote(path) and paths.local_path(path).exists()
        if paths.is_remote(path) or local or file_loader:
            found[f"{prefix}.path"] = fingerprint(path, relative if local and paths.local_path(path).is_dir() else None)
    remote = [p for p in absolute if paths.is_remote(p)]
    local_files = sorted({Path(f).resolve() for p in absolute if p not in remote for f in glob.glob(p, recursive=True)})
    if remote or local_files:
        entry = _files_fingerprint(", ".join(absolute), None, [f for f in local_files if f.is_file()]) if local_files else {}
        if remote:
            entry["remote"] = [_remote(p) for p in remote]
        found[f"{prefix}.data_files"] = entry
    return found


def job_inputs(resolved: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Fingerprints of every local input a job reads, by config field (see the module docstring).

    Args:
        resolved: the job's resolved config (a plain dict).

    Returns:
        ``{field: fingerprint}``, e.g. ``{"dataset.path": {"path": "/d/x.jsonl", "kind": "file",
        "bytes": 812, "mtime_ns": ..., "sha256": "ab12..."}}``; ``{}`` for a job that reads only
        registry assets and Hub ids.  Never raises for an unreadable file (its entry holds ``error``).
    """
    found: dict[str, dict[str, Any]] = {}
    dataset = resolved.get("dataset") or {}
    if isinstance(dataset, dict):
        found.update(_source_inputs("dataset", dataset, dataset.get("loader") in _FILE_LOADERS))
    model = resolved.get("model") or {}
    if isinstance(model, dict) and model.get("source") != "embedded":
        for field in ("path", "tokenizer"):
            value = model.get(field)
            if value and (paths.is_remote(value) or paths.local_path(value).exists()):
                found[f"model.{field}"] = fingerprint(value)
    evaluation = resolved.get("eval") or {}
    zeroshot = evaluation.get("zeroshot") or {}
    local_files = zeroshot.get("local_files") or {}
    for task in zeroshot.get("tasks") or []:
        if local_files.get(task) is not None:
            found[f"eval.zeroshot.local_files.{task}"] = fingerprint(local_files[task])
    perplexity = evaluation.get("perplexity") or {}
    hub_sources = perplexity.get("hub_sources") or {}
    for name in perplexity.get("hub_texts") or []:
        if isinstance(hub_sources.get(name), dict):
            found.update(_source_inputs(f"eval.perplexity.hub_sources.{name}", hub_sources[name], False))
    return found


def _state(entry: dict[str, Any]) -> str:
    """What an entry says about the content, for the rerun line (``sha256 ab12cd34ef56``, ``missing``, ...)."""
    if entry.get("missing"):
        return "missing"
    if entry.get("error"):
        return f"unreadable ({entry['error']})"
    if entry.get("sha256"):
        return f"sha256 {entry['sha256'][:12]}"
    if entry.get("etag") or entry.get("last_modified"):
        return f"ETag {entry.get('etag')} Last-Modified {entry.get('last_modified')}"
    return "unknown"


def _same(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether two fingerprints of one field name the same content (remote URLs: same URL, and same
    ``ETag`` / ``Last-Modified`` where both recorded them; local: same SHA-256 or both missing)."""
    if isinstance(old.get("remote"), str) or isinstance(new.get("remote"), str):
        if old.get("remote") != new.get("remote"):
            return False
        checked = [k for k in ("etag", "last_modified") if old.get(k) and new.get(k)]
        return all(old[k] == new[k] for k in checked)
    return _same_files(old, new) and _same_remotes(old.get("remote"), new.get("remote"))


def _same_files(old: dict[str, Any], new: dict[str, Any]) -> bool:
    return (old.get("sha256"), bool(old.get("missing")), old.get("error")) == (
        new.get("sha256"), bool(new.get("missing")), new.get("error"))


def _same_remotes(old: Any, new: Any) -> bool:
    old, new = list(old or []), list(new or [])
    return len(old) == len(new) and all(_same(a, b) for a, b in zip(old, new))


def changed(previous: dict[str, Any] | None, current: dict[str, Any]) -> str | None:
    """Why a finished job's inputs no longer match this job's, in one line; ``None`` when they match.

    Args:
        previous: the finished job's ``results.json["inputs"]`` (``None``: written before inputs were
            recorded, treated as matching).
        current: :func:`job_inputs` of this job.

    Returns:
        e.g. ``"dataset.path /d/x.jsonl changed since the finished job (sha256 ab12cd34ef56 -> cd34ab12ef56)"``
        (the first changed field, ``"(and N more changed)"`` appended when several did), or ``None``.
    """
    if previous is None:
        return None
    diffs = []
    for field, new in current.items():
        old = previous.get(field)
        if old is not None and not _same(old, new):
            where = new.get("path") or new.get("remote") or old.get("path") or old.get("remote")
            diffs.append(f"{field} {where} changed since the finished job ({_state(old)} -> {_state(new)})")
    for field, old in previous.items():
        if field not in current:  # e.g. a local model.path folder that is gone (now read as a Hub id)
            diffs.append(f"{field} {old.get('path') or old.get('remote')} changed since the finished job "
                         f"({_state(old)} -> not found locally)")
    if not diffs:
        return None
    return diffs[0] + (f" (and {len(diffs) - 1} more changed)" if len(diffs) > 1 else "")
