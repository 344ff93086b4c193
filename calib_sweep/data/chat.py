"""Tokenization of document text and of chat documents (``dataset.format=chat``).

Document text is tokenized *as text*: a literal ``<|endoftext|>`` in a SmolLM2 document becomes the
pieces of that string, not id 0 (the document separator), and ``<bos>`` in a Gemma document is not a
second BOS mid-row (``split_special_tokens=True`` of Hugging Face tokenizers).  The only control ids
in a calibration row are then calib_sweep's own: the separator after every document and the BOS in
front of every row (``model.prepend_bos``).

A chat document (``messages``: ``[{"role", "content"}, ...]``, the shape of ultrachat-style
instruction data) is rendered with the tokenizer's chat template (``apply_chat_template(messages,
tokenize=False)``, no generation prompt), or ``dataset.chat_template`` when set.  The template's
own markup (``<|im_start|>``, ``<start_of_turn>``, ...) stays special, the message contents are
tokenized as text: the template is rendered once more with a placeholder for every content, the
markup between placeholders is found verbatim in the real rendering (a content the template trims
is found trimmed), and markup and contents are tokenized separately (a token never spans both).  A
template that changes contents in another way falls back to tokenizing its whole rendering with
special tokens recognized (logged, with the number of such conversations).  A BOS token the
template writes at the very start is dropped, as calib_sweep puts its own BOS in front of every row.
"""

from __future__ import annotations

import hashlib
import logging
import re
from typing import Any, Sequence

from calib_sweep.errors import ConfigError

log = logging.getLogger(__name__)

#: Bump when the chat tokenization below changes: it is part of every token-stream cache key of chat documents.
CHAT_ENCODING_VERSION = "1"

_PLACEHOLDER = re.compile("\ue000(\\d+)\ue001")  # private-use characters: never in a template's markup


def is_hf_tokenizer(tokenizer) -> bool:
    """Whether ``tokenizer`` is a Hugging Face tokenizer (it takes ``split_special_tokens``)."""
    try:
        from transformers import PreTrainedTokenizerBase
    except ImportError:  # pragma: no cover
        return False
    return isinstance(tokenizer, PreTrainedTokenizerBase)


def encode_text(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text, special-token strings tokenized as text, no special tokens added.

    Args:
        tokenizer: a Hugging Face tokenizer (other tokenizers are called with ``add_special_tokens=False``
            only: they have no special-token strings to split).
        texts: the texts.

    Returns:
        One list of token ids per text.
    """
    if not texts:
        return []
    kwargs = {"split_special_tokens": True} if is_hf_tokenizer(tokenizer) else {}
    return [list(ids) for ids in tokenizer(list(texts), add_special_tokens=False, **kwargs)["input_ids"]]


def _markup_ids(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of template markup: special-token strings ARE special tokens here."""
    if not texts:
        return []
    return [list(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]


def resolve_template(tokenizer, override: str | None) -> tuple[str, str]:
    """The chat template to render with and where it came from.

    Args:
        tokenizer: the model's tokenizer.
        override: ``dataset.chat_template`` (``None``: the tokenizer's own template).

    Returns:
        ``(template, source)`` with ``source`` ``"dataset.chat_template"`` or ``"tokenizer"``.

    Raises:
        ConfigError: no override and the tokenizer has no chat template (a base model's tokenizer).
    """
    if override:
        return str(override), "dataset.chat_template"
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):  # named templates: the default one
        template = template.get("default")
    if not template or not hasattr(tokenizer, "apply_chat_template"):
        name = getattr(tokenizer, "name_or_path", None) or type(tokenizer).__name__
        raise ConfigError(
            f"dataset.format=chat needs a chat template, but the tokenizer {name!r} has none (a base model's tokenizer). "
            "Fix: dataset.chat_template='<Jinja template>' (e.g. the instruct model's, from its tokenizer_config.json), "
            "or a tokenizer that has one (model.tokenizer=...)."
        )
    return str(template), "tokenizer"


def template_sha256(template: str) -> str:
    """SHA-256 (hex) of a chat template's text (UTF-8), as recorded in the manifest."""
    return hashlib.sha256(template.encode("utf-8")).hexdigest()


def render(messages: Sequence[dict[str, Any]], tokenizer, template: str) -> str:
    """The conversation as the template writes it: ``apply_chat_template(messages, tokenize=False)``.

    Raises:
        ConfigError: the template fails on these messages (one line with Jinja's message).
    """
    try:
        return tokenizer.apply_chat_template([dict(m) for m in messages], chat_template=template, tokenize=False,
                                             add_generation_prompt=False)
    except Exception as exc:  # noqa: BLE001 - jinja2's TemplateError and the template's raise_exception
        message = str(exc).replace("\n", " ")[:200]
        raise ConfigError(
            f"the chat template failed on a conversation ({type(exc).__name__}: {message}). "
            "Fix: check the messages' roles (the template may require alternating user/assistant turns) or set dataset.chat_template."
        ) from None


def _leading_bos(tokenizer, template: str) -> str | None:
    """The BOS string when the template writes ``bos_token`` (it would be a second BOS in a row), else None."""
    bos = getattr(tokenizer, "bos_token", None)
    return bos if bos and "bos_token" in template else None


def _segments(messages: Sequence[dict[str, Any]], rendered: str, tokenizer, template: str) -> list[tuple[str, bool]] | None:
    """``[(piece, is_content), ...]`` whose concatenation is ``rendered``, or None when the contents
    cannot be found verbatim (or trimmed) between the template's markup."""
    probe = [{**m, "content": f"\ue000{i}\ue001"} for i, m in enumerate(messages)]
    marked = render(probe, tokenizer, template)
    parts = _PLACEHOLDER.split(marked)  # markup, index, markup, index, ..., markup
    markup, order = parts[0::2], [int(i) for i in parts[1::2]]
    out: list[tuple[str, bool]] = []
    position = 0
    for k, piece in enumerate(markup):
        if not rendered.startswith(piece, position):
            return None
        if piece:
            out.append((piece, False))
        position += len(piece)
        if k == len(order):
            break
        content = str(messages[order[k]]["content"])
        following = markup[k + 1]
        for candidate in (content, content.strip()):
            if rendered.startswith(candidate + following, position):
                break
        else:
            return None
        if candidate:
            out.append((candidate, True))
        position += len(candidate)
    return out if position == len(rendered) else None


def conversation_segments(messages: Sequence[dict[str, Any]], tokenizer, template: str) -> tuple[list[tuple[str, bool]], bool]:
    """The rendered conversation as pieces, a leading BOS the template writes dropped.

    Returns:
        ``(segments, found)``: ``segments`` is ``[(piece, is_content), ...]`` (markup pieces are
        tokenized with special tokens, contents as text; module docstring); ``found`` is false when
        the template changes contents beyond trimming, and ``segments`` is then one markup piece
        (the whole rendering).

    Raises:
        ConfigError: the template fails on these messages (:func:`render`).
    """
    rendered = render(messages, tokenizer, template)
    segments = _segments(messages, rendered, tokenizer, template)
    found = segments is not None
    if segments is None:
        segments = [(rendered, False)]
    bos = _leading_bos(tokenizer, template)
    if bos and segments and not segments[0][1] and segments[0][0].startswith(bos):
        rest = segments[0][0][len(bos):]
        segments = ([(rest, False)] if rest else []) + segments[1:]
    return segments, found


def encode_conversations(conversations: Sequence[Sequence[dict[str, Any]]], tokenizer, template: str) -> list[list[int]]:
    """Token ids of chat documents rendered with ``template`` (see the module docstring).

    Args:
        conversations: one list of ``{"role", "content"}`` messages per document.
        tokenizer: a Hugging Face tokenizer.
        template: the Jinja chat template (:func:`resolve_template`).

    Returns:
        One list of token ids per document (no BOS at its start).

    Raises:
        ConfigError: the template fails on a conversation.
    """
    results = [conversation_segments(messages, tokenizer, template) for messages in conversations]
    pieces = [segments for segments, _ in results]
    fallbacks = sum(not found for _, found in results)
    if fallbacks:
        log.warning("chat template: %d of %d conversations change their contents beyond trimming; their whole "
                    "rendering is tokenized with special tokens recognized", fallbacks, len(conversations))
    flat = [(text, content) for segments in pieces for text, content in segments]
    content_ids = iter(encode_text(tokenizer, [t for t, c in flat if c]))
    markup_ids = iter(_markup_ids(tokenizer, [t for t, c in flat if not c]))
    out = []
    for segments in pieces:
        ids: list[int] = []
        for _, content in segments:
            ids += next(content_ids) if content else next(markup_ids)
        out.append(ids)
    return out


def template_record(docs, tokenizer) -> dict[str, Any] | None:
    """The manifest's ``chat_template`` block for a source's documents, or None for plain text.

    Returns:
        ``{"sha256", "source", "leading_bos_dropped"}`` of the template the first chat document
        renders with (``source``: ``tokenizer`` or ``dataset.chat_template``; ``leading_bos_dropped``:
        the template writes a BOS token at the start, which is dropped).

    Raises:
        ConfigError: see :func:`resolve_template` and :func:`render`.
    """
    first = next((d for d in docs if d.messages is not None), None)
    if first is None:
        return None
    template, source = resolve_template(tokenizer, first.chat_template)
    bos = _leading_bos(tokenizer, template)
    dropped = bool(bos) and render(first.messages, tokenizer, template).startswith(bos)
    return {"sha256": template_sha256(template), "source": source, "leading_bos_dropped": dropped}
