"""Calibration-text sources: documents with stable ids, and their calibration / held-out split.

A *source* yields :class:`Document` objects (``doc_id``, ``text``).  Every source is split by
document into a calibration part and a held-out part (``heldout_fraction`` of the documents, chosen
by a hash of the id, so the split never depends on order or seed).  Calibration windows are drawn
only from the calibration part; held-out perplexity reads only the held-out part.

Offline sources come from pinned registry packages (``calib_sweep.assets``); their cleaned text is
cached as JSON lines keyed by the asset checksum and the cleaning version.
"""

from __future__ import annotations

import bz2
import hashlib
import json
import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from calib_sweep import assets, paths
from calib_sweep.errors import ConfigError


@dataclass(frozen=True)
class Document:
    """One document of a source.

    Attributes:
        doc_id: stable id within the source (e.g. the Wikipedia page id ``"wiki:12"``).
        text: plain text, markup removed.
    """

    doc_id: str
    text: str


_CLEANING_VERSION = "1"


def cached_documents(name: str, key: str, build: Callable[[], Iterable[Document]]) -> list[Document]:
    """Read cleaned documents from the cache, or build and write them (atomically)."""
    path = assets.cache_dir() / "text" / f"{name}-{key[:16]}-v{_CLEANING_VERSION}.jsonl"
    if path.is_file():
        with open(path, encoding="utf-8") as handle:
            return [Document(**json.loads(line)) for line in handle]
    docs = list(build())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".part{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as handle:
        for doc in docs:
            handle.write(json.dumps({"doc_id": doc.doc_id, "text": doc.text}, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return docs


_MW_NS = "{http://www.mediawiki.org/xml/export-0.10/}"


def clean_wikitext(markup: str) -> str:
    """Strip MediaWiki markup to plain prose with ``mwparserfromhell``.

    Templates, tables, references, file links and HTML tags are removed; link text is kept;
    section headings are kept as plain lines; runs of blank lines are collapsed.
    """
    import mwparserfromhell

    text = mwparserfromhell.parse(markup).strip_code(normalize=True, collapse=True)
    lines = []
    for line in text.splitlines():
        line = line.strip()
        # Leftovers of image captions and table rows that strip_code keeps as bare fragments.
        if line.lower().startswith(("thumb|", "file:", "image:", "category:")) or line.startswith(("|", "!", "{|", "|}")):
            continue
        lines.append(line)
    text = "\n".join(lines)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


def parse_mediawiki_dump(path: str | os.PathLike, min_chars: int = 200) -> Iterable[Document]:
    """Yield the articles of a MediaWiki XML export (optionally ``.bz2``) as plain-text documents.

    Only main-namespace pages are kept; redirects and pages whose cleaned text is shorter than
    ``min_chars`` characters are skipped.  ``doc_id`` is ``"wiki:<page id>"``.
    """
    opener = bz2.open if str(path).endswith(".bz2") else open
    with opener(path, "rb") as handle:
        for _, elem in ET.iterparse(handle, events=("end",)):
            if elem.tag != f"{_MW_NS}page":
                continue
            ns = elem.findtext(f"{_MW_NS}ns")
            page_id = elem.findtext(f"{_MW_NS}id")
            redirect = elem.find(f"{_MW_NS}redirect")
            markup = elem.findtext(f"{_MW_NS}revision/{_MW_NS}text") or ""
            elem.clear()
            if ns != "0" or redirect is not None or markup.lstrip().upper().startswith("#REDIRECT"):
                continue
            text = clean_wikitext(markup)
            if len(text) >= min_chars:
                yield Document(doc_id=f"wiki:{page_id}", text=text)


def _offline_wikipedia(source_cfg: Any) -> list[Document]:
    asset = assets.ASSETS["gensim_enwiki_sample"]
    min_chars = int(source_cfg.get("min_chars", 200))
    return cached_documents(
        source_cfg.name,
        hashlib.sha256(f"{asset.sha256}:{min_chars}".encode()).hexdigest(),
        lambda: parse_mediawiki_dump(assets.fetch("gensim_enwiki_sample"), min_chars=min_chars),
    )


def _source_path(source_cfg: Any) -> str:
    """``dataset.path`` as given (a missing ``???`` value is an error naming the field)."""
    try:
        value = source_cfg.get("path")
    except Exception:  # OmegaConf's MissingMandatoryValue for ``path: ???``
        value = None
    if value is None or str(value).strip() in ("", "???"):
        raise ConfigError(f"dataset.path is missing for dataset {source_cfg.get('name')!r}. Fix: dataset.path=/path/to/your/data.")
    return str(value).strip()


def _validate_file_source(source_cfg: Any) -> None:
    """``local_jsonl`` / ``local_hf_disk``: a remote ``dataset.path`` must be readable (checked before weights load)."""
    paths.check_remote(_source_path(source_cfg), "dataset.path", folder=source_cfg.get("loader") == "hf_disk")


def _local_jsonl(source_cfg: Any) -> list[Document]:
    """Documents from a JSON-lines file (local, or a URL read through fsspec) with fields ``id`` (optional) and ``text_field``."""
    value = _source_path(source_cfg)
    if paths.is_remote(value):
        paths.check_remote(value, "dataset.path")
        shown = value
    else:
        local = paths.local_path(value)
        if not local.is_file():
            raise ConfigError(f"dataset.path={value!r} does not exist. Fix: point dataset.path at a .jsonl file.")
        shown = str(local)
    field = source_cfg.get("text_field", "text")
    docs = []
    with paths.open_file(value, "dataset.path", "rt", encoding="utf-8") as handle:
        try:
            lines = list(handle)
        except Exception as exc:  # noqa: BLE001 - a remote read that fails midway
            if not paths.is_remote(value):
                raise
            raise paths.read_error("dataset.path", value, exc) from exc
    for index, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise ConfigError(
                f"{shown}:{index + 1} is not a JSON object ({exc}); dataset=local_jsonl reads JSON lines, one "
                '{"id": ..., "text": ...} per line. Fix: point dataset.path at a .jsonl file, or convert the file.'
            ) from None
        if not isinstance(row, dict):
            raise ConfigError(f"{shown}:{index + 1} is not a JSON object. Fix: one {{\"id\": ..., \"text\": ...}} per line.")
        if field not in row:
            raise ConfigError(
                f"{shown}:{index + 1} has no field {field!r} (fields: {sorted(row)}). Fix: set dataset.text_field."
            )
        docs.append(Document(doc_id=str(row.get("id", index)), text=str(row[field])))
    return docs


def _hf_disk(source_cfg: Any) -> list[Document]:
    """Documents from a pre-built ``datasets`` dataset saved with ``save_to_disk`` (one row = one document).

    Fields: ``path`` (the saved folder, local or a URL ``datasets`` reads through fsspec), ``text_field``,
    optional ``split`` (for a DatasetDict) and ``id_field`` (default: the row index).
    """
    import datasets

    value = _source_path(source_cfg)
    if paths.is_remote(value):
        paths.check_remote(value, "dataset.path", folder=True)
        try:
            data = datasets.load_from_disk(value)
        except Exception as exc:  # noqa: BLE001 - one line saying whether it could be read
            raise paths.read_error("dataset.path", value, exc, folder=True) from exc
        path: Any = value
    else:
        path = paths.local_path(value)
        if not path.is_dir():
            raise ConfigError(f"dataset.path={value!r} is not a folder. Fix: point it at a dataset saved with save_to_disk.")
        data = datasets.load_from_disk(str(path))
    if isinstance(data, datasets.DatasetDict):
        split = source_cfg.get("split") or "train"
        if split not in data:
            raise ConfigError(f"dataset.split={split!r} is not in {sorted(data)}. Fix: set dataset.split.")
        data = data[split]
    field = source_cfg.get("text_field", "text")
    if field not in data.column_names:
        raise ConfigError(f"dataset.text_field={field!r} is not a column of {path} ({data.column_names}). Fix: set it.")
    id_field = source_cfg.get("id_field")
    ids = data[id_field] if id_field else range(len(data))
    return [Document(doc_id=str(i), text=str(t)) for i, t in zip(ids, data[field]) if t]


#: Loaders by ``dataset.loader``.  Each takes the dataset config and returns all documents in a
#: stable order.  Modules add theirs with :func:`register_loader`.
LOADERS: dict[str, Callable[[Any], list[Document]]] = {
    "gensim_enwiki": _offline_wikipedia,
    "jsonl": _local_jsonl,
    "hf_disk": _hf_disk,
}


#: Optional cheap validators by loader name: ``fn(dataset_cfg)`` raising ConfigError; they run in
#: :func:`validate_source`, before any data or weights are read.
VALIDATORS: dict[str, Callable[[Any], None]] = {"jsonl": _validate_file_source, "hf_disk": _validate_file_source}


def register_loader(name: str, validate: Callable[[Any], None] | None = None):
    """Decorator: register ``fn(dataset_cfg) -> list[Document]`` as ``dataset.loader=name``.

    Args:
        name: the value of ``dataset.loader`` that selects this loader.
        validate: optional ``fn(dataset_cfg)`` that raises :class:`ConfigError` for bad fields
            without reading any data (it runs before the model loads).
    """

    def wrap(fn: Callable[[Any], list[Document]]):
        if name in LOADERS and LOADERS[name] is not fn:
            raise ValueError(f"loader {name!r} registered twice")
        LOADERS[name] = fn
        if validate is not None:
            VALIDATORS[name] = validate
        return fn

    return wrap


def validate_source(source_cfg: Any) -> None:
    """Check a dataset config without reading any data.

    Raises:
        ConfigError: unknown loader, ``heldout_fraction`` outside [0, 1), or whatever the loader's
            registered validator refuses.
    """
    if source_cfg.get("loader") not in LOADERS:
        raise ConfigError(
            f"dataset.loader={source_cfg.get('loader')!r} is unknown. Fix: use one of {sorted(LOADERS)}."
        )
    fraction = float(source_cfg.get("heldout_fraction", 0.0))
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"dataset.heldout_fraction={fraction} must lie in [0, 1). Fix: e.g. 0.1.")
    if source_cfg.loader in VALIDATORS:
        VALIDATORS[source_cfg.loader](source_cfg)


def load_documents(source_cfg: Any) -> list[Document]:
    """All documents of a source, in a stable order.

    Raises:
        ConfigError: see :func:`validate_source`; or the source holds no document.
        calib_sweep.assets.AssetError: an offline asset cannot be fetched.
    """
    validate_source(source_cfg)
    docs = LOADERS[source_cfg.loader](source_cfg)
    if not docs:
        raise ConfigError(f"dataset {source_cfg.name!r} holds no document. Fix: check its path and text field.")
    return docs


def is_heldout(doc_id: str, heldout_fraction: float) -> bool:
    """Whether a document belongs to the held-out part: a hash of its id, independent of seed and order."""
    if heldout_fraction <= 0:
        return False
    bucket = int.from_bytes(hashlib.sha256(doc_id.encode()).digest()[:8], "big") / 2**64
    return bucket < heldout_fraction


def split_documents(docs: list[Document], heldout_fraction: float) -> tuple[list[Document], list[Document]]:
    """Split documents into (calibration part, held-out part) by :func:`is_heldout`."""
    calibration = [d for d in docs if not is_heldout(d.doc_id, heldout_fraction)]
    heldout = [d for d in docs if is_heldout(d.doc_id, heldout_fraction)]
    return calibration, heldout
