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
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable

from calib_sweep import assets, paths
from calib_sweep.errors import ConfigError


@dataclass(frozen=True)
class Document:
    """One document of a source.

    Attributes:
        doc_id: stable id within the source (e.g. the Wikipedia page id ``"wiki:12"``).
        text: plain text, markup removed; for a chat document, its ``messages`` as canonical JSON
            (so content hashes cover roles and contents; never tokenized as such).
        messages: ``dataset.format=chat`` only: the conversation, a tuple of ``{"role": str,
            "content": str, ...}`` dicts, rendered with the tokenizer's chat template when tokenized
            (:mod:`calib_sweep.data.chat`); ``None`` for plain text.
        chat_template: ``dataset.chat_template`` (a Jinja template that replaces the tokenizer's own),
            attached by :func:`load_documents`; ``None``: the tokenizer's template.
    """

    doc_id: str
    text: str
    messages: tuple[dict[str, Any], ...] | None = field(default=None, hash=False)
    chat_template: str | None = field(default=None, hash=False, repr=False)

    def __post_init__(self):
        if self.messages is not None and not isinstance(self.messages, tuple):
            object.__setattr__(self, "messages", tuple(dict(m) for m in self.messages))

    @property
    def is_empty(self) -> bool:
        """No visible character: a blank (or null) text, or a conversation whose contents are all blank."""
        if self.messages is not None:
            return not any(str(m.get("content") or "").strip() for m in self.messages)
        return not self.text.strip()


class Documents(list):
    """The documents of a source (a ``list`` of :class:`Document`) with what loading dropped.

    Attributes:
        skipped_empty: documents skipped because they were empty (blank or null text, or a
            conversation with blank contents); recorded in the calibration manifest as
            ``documents_skipped_empty``.
    """

    skipped_empty: int = 0


#: ``dataset.format`` values: plain text, or chat messages rendered with a chat template.
FORMATS = ("text", "chat")

#: Loaders that read a record field and so accept ``dataset.format=chat``.
CHAT_LOADERS = ("jsonl", "hf_disk", "hub")


def source_format(source_cfg: Any) -> str:
    """``dataset.format`` (``"text"`` when absent)."""
    value = source_cfg.get("format")
    return "text" if value is None else str(value)


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def make_document(doc_id: str, value: Any, fmt: str, field_name: str, where: str) -> Document:
    """The :class:`Document` of one record's text field.

    Args:
        doc_id: the document's id.
        value: the field's value: a string (``format=text``), or a list of ``{"role", "content"}``
            messages (``format=chat``); ``None`` is an empty document (skipped by :func:`load_documents`).
        fmt: ``"text"`` or ``"chat"`` (``dataset.format``).
        field_name: the field's name (``dataset.text_field``), for messages.
        where: the record's place (``file.jsonl:12``, ``dataset 'c4' row 7``), for messages.

    Raises:
        ConfigError: one line naming the field, its type and the option: a non-string value without
            ``dataset.format=chat``, or with ``format=chat`` a value that is not a list of messages with
            string ``role`` and ``content``.
    """
    if value is None:
        return Document(doc_id=doc_id, text="", messages=() if fmt == "chat" else None)
    if fmt != "chat":
        if isinstance(value, str):
            return Document(doc_id=doc_id, text=value)
        shown = json.dumps(value, ensure_ascii=False, default=str)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        hint = ("dataset.format=chat (chat messages rendered with the tokenizer's chat template)"
                if isinstance(value, (list, tuple)) else
                "dataset.text_field=<a string field> (dataset.format=chat reads a list of chat messages)")
        raise ConfigError(
            f"{where}: dataset.text_field={field_name!r} holds a {_type_name(value)}, not a string ({shown}). Fix: {hint}."
        )
    if isinstance(value, str):
        raise ConfigError(
            f"{where}: dataset.text_field={field_name!r} holds a string, but dataset.format=chat reads a list of "
            '{"role": ..., "content": ...} messages. Fix: dataset.format=text, or point dataset.text_field at the messages.'
        )
    if not isinstance(value, (list, tuple)):
        raise ConfigError(
            f"{where}: dataset.text_field={field_name!r} holds a {_type_name(value)}, not a list of messages "
            '(dataset.format=chat). Fix: point dataset.text_field at a list of {"role": ..., "content": ...}.'
        )
    messages = []
    for turn, message in enumerate(value):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str) or not isinstance(message.get("content"), str):
            got = _type_name(message) if not isinstance(message, dict) else (
                f"role {_type_name(message.get('role'))}, content {_type_name(message.get('content'))}")
            raise ConfigError(
                f"{where}: message {turn} of dataset.text_field={field_name!r} is not a {{\"role\": str, \"content\": str}} "
                f"dict ({got}). Fix: clean the data, or use dataset.format=text with a string field."
            )
        messages.append({k: v for k, v in message.items() if v is not None})
    text = json.dumps(messages, ensure_ascii=False, sort_keys=True)
    return Document(doc_id=doc_id, text=text, messages=tuple(messages))


_CLEANING_VERSION = "1"


def cached_documents(name: str, key: str, build: Callable[[], Iterable[Document]]) -> list[Document]:
    """Read cleaned documents from the cache, or build and write them (atomically).

    Empty documents are stored too (text ``""``), so :func:`load_documents` can count them; a chat
    document's ``messages`` are stored with it.
    """
    path = assets.cache_dir() / "text" / f"{name}-{key[:16]}-v{_CLEANING_VERSION}.jsonl"
    if path.is_file():
        with open(path, encoding="utf-8") as handle:
            return [Document(**json.loads(line)) for line in handle]
    docs = list(build())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".part{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as handle:
        for doc in docs:
            row = {"doc_id": doc.doc_id, "text": doc.text}
            if doc.messages is not None:  # a chat document keeps its turns
                row["messages"] = list(doc.messages)
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
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
    """Documents from a JSON-lines file (local, or a URL read through fsspec) with fields ``id`` (optional) and
    ``text_field`` (a string; with ``dataset.format=chat`` a list of messages, :func:`make_document`)."""
    value = _source_path(source_cfg)
    if paths.is_remote(value):
        paths.check_remote(value, "dataset.path")
        shown = value
    else:
        local = paths.local_path(value)
        if not local.is_file():
            raise ConfigError(f"dataset.path={value!r} does not exist. Fix: point dataset.path at a .jsonl file.")
        shown = str(local)
    field_name = source_cfg.get("text_field", "text")
    fmt = source_format(source_cfg)
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
        if field_name not in row:
            raise ConfigError(
                f"{shown}:{index + 1} has no field {field_name!r} (fields: {sorted(row)}). Fix: set dataset.text_field."
            )
        docs.append(make_document(str(row.get("id", index)), row[field_name], fmt, field_name, f"{shown}:{index + 1}"))
    return docs


def _hf_disk(source_cfg: Any) -> list[Document]:
    """Documents from a pre-built ``datasets`` dataset saved with ``save_to_disk`` (one row = one document).

    Fields: ``path`` (the saved folder, local or a URL ``datasets`` reads through fsspec), ``text_field``
    (strings; with ``format: chat`` lists of messages, :func:`make_document`), optional ``split`` (for a
    DatasetDict) and ``id_field`` (default: the row index).
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
    field_name = source_cfg.get("text_field", "text")
    if field_name not in data.column_names:
        raise ConfigError(f"dataset.text_field={field_name!r} is not a column of {path} ({data.column_names}). Fix: set it.")
    id_field = source_cfg.get("id_field")
    ids = data[id_field] if id_field else range(len(data))
    fmt = source_format(source_cfg)
    return [make_document(str(i), t, fmt, field_name, f"{path} row {row}")
            for row, (i, t) in enumerate(zip(ids, data[field_name]))]


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
        ConfigError: unknown loader, ``heldout_fraction`` outside [0, 1), a bad ``format`` /
            ``chat_template`` (:func:`validate_format`), or whatever the loader's registered validator refuses.
    """
    if source_cfg.get("loader") not in LOADERS:
        raise ConfigError(
            f"dataset.loader={source_cfg.get('loader')!r} is unknown. Fix: use one of {sorted(LOADERS)}."
        )
    fraction = float(source_cfg.get("heldout_fraction", 0.0))
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"dataset.heldout_fraction={fraction} must lie in [0, 1). Fix: e.g. 0.1.")
    validate_format(source_cfg)
    if source_cfg.loader in VALIDATORS:
        VALIDATORS[source_cfg.loader](source_cfg)


def validate_format(source_cfg: Any) -> None:
    """Check ``dataset.format`` (``text`` | ``chat``) and ``dataset.chat_template`` without reading data.

    Raises:
        ConfigError: an unknown format; ``chat`` for a loader that reads no record field (the
            offline corpora are plain text); a ``chat_template`` that is not a non-empty string, or
            one given with ``format=text`` (it would be ignored).
    """
    fmt = source_format(source_cfg)
    if fmt not in FORMATS:
        raise ConfigError(f"dataset.format={fmt!r} is unknown. Fix: dataset.format=text or dataset.format=chat.")
    if fmt == "chat" and source_cfg.get("loader") not in CHAT_LOADERS:
        raise ConfigError(
            f"dataset.format=chat reads chat messages from a record field, but dataset {source_cfg.get('name')!r} "
            f"(loader {source_cfg.get('loader')}) is plain text. Fix: dataset.format=text, or a source with a "
            f"messages field (loader {' | '.join(CHAT_LOADERS)})."
        )
    if fmt == "chat" and source_cfg.get("lines_to_articles"):
        raise ConfigError("dataset.lines_to_articles=true joins text lines, not chat messages. Fix: dataset.lines_to_articles=false.")
    template = source_cfg.get("chat_template")
    if template is not None and (not isinstance(template, str) or not template.strip()):
        raise ConfigError(
            f"dataset.chat_template={template!r} must be a Jinja chat template string or null (the tokenizer's). "
            "Fix: e.g. dataset.chat_template=null."
        )
    if template is not None and fmt != "chat":
        raise ConfigError("dataset.chat_template is set but dataset.format=text ignores it. Fix: dataset.format=chat, or drop it.")


def load_documents(source_cfg: Any) -> Documents:
    """All non-empty documents of a source, in a stable order.

    Empty documents (blank or null text, a conversation with blank contents) are skipped and
    counted (:attr:`Documents.skipped_empty`).  With ``dataset.format=chat`` and
    ``dataset.chat_template`` set, every document carries that template.

    Raises:
        ConfigError: see :func:`validate_source`; or the source holds no (non-empty) document.
        calib_sweep.assets.AssetError: an offline asset cannot be fetched.
    """
    validate_source(source_cfg)
    loaded = LOADERS[source_cfg.loader](source_cfg)
    template = source_cfg.get("chat_template") if source_format(source_cfg) == "chat" else None
    docs = Documents(doc if template is None else replace(doc, chat_template=str(template))
                     for doc in loaded if not doc.is_empty)
    docs.skipped_empty = len(loaded) - len(docs)
    if not docs:
        empty = f" ({docs.skipped_empty} empty ones skipped)" if docs.skipped_empty else ""
        raise ConfigError(f"dataset {source_cfg.name!r} holds no document{empty}. Fix: check its path and text field.")
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
