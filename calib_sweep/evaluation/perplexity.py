"""Perplexity over non-overlapping windows, with its protocol recorded.

Protocol (the one of the GPTQ/SparseGPT/Wanda reference scripts for WikiText-2): the evaluation text
is one token stream (documents joined by EOS), cut into non-overlapping windows of ``seq_len``
tokens (stride = ``seq_len``); within each window every token after the first is scored given the
tokens before it in that window, so a window scores ``seq_len - 1`` tokens.  Perplexity is
``exp(total negative log-likelihood / tokens scored)``.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from calib_sweep.models.logits import row_chunks, split_head


def stream_windows(
    token_ids: torch.Tensor, seq_len: int, max_windows: int | None = None, bos_token_id: int | None = None
) -> tuple[torch.Tensor, int]:
    """Cut a token stream into non-overlapping windows of ``seq_len`` tokens.

    Args:
        token_ids: ``int64 [n_tokens]``.
        seq_len: tokens per window (including the BOS token when one is put in front).
        max_windows: keep only the first this-many windows (``None`` = all).
        bos_token_id: put this token in front of every window, which then holds ``seq_len - 1``
            stream tokens.

    Returns:
        ``(windows int64 [w, seq_len], windows available in the stream)``; ``w`` may be 0.
    """
    width = seq_len - (bos_token_id is not None)  # stream tokens per window
    available = int(token_ids.numel()) // width if width > 0 else 0
    count = available if max_windows is None else min(available, int(max_windows))
    data = token_ids[: count * width].reshape(count, width)
    if bos_token_id is not None:
        data = torch.cat([torch.full((count, 1), int(bos_token_id), dtype=data.dtype), data], dim=1)
    return data, available


@torch.no_grad()
def perplexity(
    model,
    token_ids: torch.Tensor,
    seq_len: int,
    max_windows: int | None = None,
    batch_size: int = 1,
    text: str = "text",
    bos_token_id: int | None = None,
) -> dict[str, Any]:
    """Perplexity of ``model`` on a token stream.

    Args:
        model: a Hugging Face causal LM (its device is used).
        token_ids: ``int64`` tensor of shape ``[n_tokens]``.
        seq_len: window length in tokens.
        max_windows: use only the first this-many windows (``None`` = all).
        batch_size: windows per forward pass (does not change the result beyond float rounding).  The LM
            head and the loss run on 256 positions at a time (:mod:`calib_sweep.models.logits`), so
            no ``[batch_size, seq_len, V]`` logits tensor is kept.
        text: name of the text, recorded in the protocol.
        bos_token_id: put this token in front of every window (``model.prepend_bos``, e.g. Gemma);
            a window then holds ``seq_len - 1`` text tokens, all of which are scored (the first one
            given only the BOS token).  ``None``: windows of ``seq_len`` text tokens, the first unscored.

    Returns:
        ``{"perplexity": float, "protocol": {...}}`` with the text name, seq_len, stride, windows
        used and available, tokens scored and tokens in the stream.

    Raises:
        ValueError: the stream is shorter than one window, or the loss is not finite.
    """
    data, available = stream_windows(token_ids, seq_len, max_windows, bos_token_id)
    if available < 1:
        raise ValueError(
            f"evaluation text {text!r} has {token_ids.numel()} tokens, fewer than one window of seq_len={seq_len}. "
            f"Fix: lower eval.perplexity.seq_len."
        )
    windows = int(data.shape[0])
    device = next(model.parameters()).device
    total_nll, scored = 0.0, 0
    for start in range(0, windows, batch_size):
        batch = data[start : start + batch_size].to(device)
        states, head = split_head(model, batch)  # the LM head runs on DEFAULT_ROWS positions at a time
        states = states[:, :-1].reshape(-1, states.shape[-1])
        targets = batch[:, 1:].reshape(-1)
        for rows in row_chunks(targets.numel()):
            nll = torch.nn.functional.cross_entropy(head(states[rows]), targets[rows], reduction="none")
            total_nll += float(nll.double().sum())  # float64 accumulation: the sum over many tokens stays exact
        scored += targets.numel()
    mean = total_nll / scored
    if not math.isfinite(mean):
        raise ValueError(f"perplexity on {text!r} is not finite (mean NLL {mean}): the model outputs NaN/Inf.")
    return {
        "perplexity": math.exp(mean),
        "protocol": {
            "text": text,
            "seq_len": seq_len,
            "stride": seq_len - (bos_token_id is not None),
            "bos_token_id": bos_token_id,
            "windows": windows,
            "windows_available": available,
            "tokens_scored": scored,
            "tokens_in_text": int(token_ids.numel()),
            "batch_size": batch_size,
        },
    }


# ---------------------------------------------------------------------------------------------
# Standard perplexity texts from the Hugging Face Hub (opt-in: they need the network)

#: The reference texts of the GPTQ / SparseGPT / Wanda scripts (``datautils.py``), by name.
#: ``join``: separator between documents; ``max_documents``: first N documents only;
#: ``max_windows_ref``: the reference keeps only the first this-many ``seq_len`` windows.
HUB_TEXTS: dict[str, dict[str, Any]] = {
    "wikitext2": {
        "load": {"path": "Salesforce/wikitext", "name": "wikitext-2-raw-v1", "split": "test"},
        "field": "text", "join": "\n\n", "max_documents": None, "max_windows_ref": None,
        "reference": "GPTQ datautils.get_wikitext2: tokenizer('\\n\\n'.join(test['text'])), all non-overlapping windows",
    },
    "c4": {
        "load": {
            "path": "allenai/c4", "data_files": {"validation": "en/c4-validation.00000-of-00008.json.gz"},
            "split": "validation",
        },
        "field": "text", "join": " ", "max_documents": 1100, "max_windows_ref": 256,
        "reference": "GPTQ datautils.get_c4_new: tokenizer(' '.join(val[:1100]['text']))[:, :256 * seq_len]",
    },
}


def _hub_offline() -> str | None:
    import os

    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(var, "").strip().upper() in {"1", "ON", "YES", "TRUE"}:
            return f"{var}={os.environ[var]}"
    return None


def _load_kwargs(name: str, source: Any) -> dict[str, Any]:
    """``load_dataset`` keyword arguments for a Hub text, or for its replacement ``source``.

    A remote ``path`` (see :mod:`calib_sweep.paths`) is named as given: a URL of one file
    (``https://host/wiki.test.parquet``, ``s3://bucket/wiki.test.jsonl``) is read by the builder of its
    suffix; a remote folder needs ``data_files`` (relative to it); ``hf://datasets/<org>/<name>`` is the Hub repo.

    Raises:
        ConfigError: a remote folder without ``data_files``, or files of no known type.
    """
    from calib_sweep import paths
    from calib_sweep.errors import ConfigError

    spec = HUB_TEXTS[name]
    if source is None:
        return dict(spec["load"])
    try:
        from omegaconf import OmegaConf

        source = OmegaConf.to_container(source, resolve=True) if OmegaConf.is_config(source) else source
    except ImportError:  # pragma: no cover
        pass
    kwargs = {"split": spec["load"]["split"], **dict(source)}
    path = kwargs.get("path")
    if not paths.is_remote(path) or str(path).startswith("hf://datasets/") and not paths.builder_for(path):
        return kwargs
    path, split, field = str(path).strip(), str(kwargs["split"]), f"eval.perplexity.hub_sources.{name}.path"
    builder = paths.builder_for(path)
    if builder is not None:  # one file
        return {**kwargs, "path": builder, "data_files": {split: path}}
    files = kwargs.get("data_files")
    if not files:
        raise ConfigError(
            f"{field}={path!r} is a remote folder, whose files must be named. "
            f"Fix: eval.perplexity.hub_sources.{name}.data_files={{{split}: <file under it>}}, or give the file's URL as the path."
        )

    def place(pattern: Any) -> str:
        return str(pattern) if "://" in str(pattern) else paths.join(path, str(pattern))

    if isinstance(files, dict):
        files = {k: [place(p) for p in (v if isinstance(v, list) else [v])] for k, v in files.items()}
    else:
        files = [place(p) for p in (files if isinstance(files, list) else [files])]
    flat = [f for v in (files.values() if isinstance(files, dict) else [files]) for f in v]
    builders = {paths.builder_for(f) for f in flat}
    if None in builders or len(builders) != 1:
        raise ConfigError(
            f"{field}={path!r}: its data_files {flat} name no single file type. Fix: use .parquet, .jsonl, .csv or .txt files."
        )
    return {**kwargs, "path": builders.pop(), "data_files": files}


def check_source(name: str, source: Any) -> None:
    """Validate-time check of ``eval.perplexity.hub_sources.<name>``: every remote location in it
    (``path``, ``data_files``) must be readable (protocol known, package installed, network up).

    Raises:
        ConfigError: one line naming the location exactly as given (see :func:`calib_sweep.paths.check_remote`).
    """
    from calib_sweep import paths

    for field, value in _remote_locations(name, source):
        paths.check_remote(value, field, folder=field.endswith(".path") and paths.builder_for(value) is None)


def _remote_locations(name: str, source: Any) -> list[tuple[str, str]]:
    """``(field, value)`` of every remote location of a hub source: its ``path``, then its data files."""
    from calib_sweep import paths

    if source is None:
        return []
    original = _plain_source(source)
    path = original.get("path") if isinstance(original, dict) else None
    found = [(f"eval.perplexity.hub_sources.{name}.path", str(path).strip())] if paths.is_remote(path) else []
    files = _load_kwargs(name, source).get("data_files")
    values = files.values() if isinstance(files, dict) else [files] if files else []
    for value in values:
        for file in value if isinstance(value, list) else [value]:
            if paths.is_remote(file) and not (found and str(file).startswith(found[0][1])):
                found.append((f"eval.perplexity.hub_sources.{name}.data_files", str(file)))
    return found


def _plain_source(source: Any) -> Any:
    try:
        from omegaconf import OmegaConf

        return OmegaConf.to_container(source, resolve=True) if OmegaConf.is_config(source) else source
    except ImportError:  # pragma: no cover
        return source


def hub_text_tokens(name: str, tokenizer, seq_len: int, source: Any = None) -> tuple[torch.Tensor, dict[str, Any]]:
    """Token stream of a standard perplexity text, prepared exactly as the GPTQ reference scripts do.

    ``wikitext2``: WikiText-2 (raw) test split, all lines joined with ``"\\n\\n"``, tokenized in one
    call with the tokenizer's special tokens (a Llama tokenizer adds one BOS at the start), all
    non-overlapping windows.  ``c4``: the first 1,100 documents of the first C4 (en) validation
    shard joined with ``" "``, cut to the first ``256 * seq_len`` tokens.

    Args:
        name: a key of :data:`HUB_TEXTS`.
        tokenizer: a ``transformers`` tokenizer.
        seq_len: window length (only used for C4's ``256 * seq_len`` cut).
        source: keyword arguments for ``datasets.load_dataset`` replacing the Hub location, e.g.
            ``{"path": "parquet", "data_files": {"test": "wiki.test.parquet"}}`` for a local copy
            with the same field (``text``); ``split`` defaults to the reference split.

    Returns:
        ``(tokens, info)``: ``int64 [n_tokens]`` and ``{"text", "source", "documents", "join",
        "reference", "tokens_in_text"}``.

    Raises:
        ConfigError: unknown name, offline mode, or the Hub / files cannot be read (one line with the fix).
    """
    from calib_sweep.errors import ConfigError

    if name not in HUB_TEXTS:
        raise ConfigError(f"eval.perplexity.hub_texts names unknown text {name!r}. Fix: use some of {sorted(HUB_TEXTS)}.")
    spec = HUB_TEXTS[name]
    kwargs = _load_kwargs(name, source)
    fix = (
        f"Fix: drop {name} from eval.perplexity.hub_texts, or set eval.perplexity.hub_sources.{name} to a local copy "
        "(e.g. {path: parquet, data_files: {...}})."
    )
    offline = _hub_offline()
    if source is None and offline:
        raise ConfigError(f"perplexity text {name!r} needs the Hugging Face Hub, but offline mode is set ({offline}). {fix}")
    import datasets

    try:
        data = datasets.load_dataset(**kwargs)
    except Exception as exc:  # noqa: BLE001 - any loading failure becomes one line with the fix
        from calib_sweep import paths

        remote = _remote_locations(name, source)
        if remote:
            raise paths.read_error(*remote[0], exc) from None
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise ConfigError(f"could not load perplexity text {name!r} ({kwargs}): {type(exc).__name__}: {first}. {fix}") from None
    texts = data[spec["field"]]
    if spec["max_documents"] is not None:
        texts = texts[: spec["max_documents"]]
    ids = tokenizer(spec["join"].join(texts), return_tensors="pt").input_ids[0].to(torch.int64)
    total = int(ids.numel())
    if spec["max_windows_ref"] is not None:
        ids = ids[: spec["max_windows_ref"] * int(seq_len)]
    info = {
        "text": name, "source": {k: v for k, v in kwargs.items()}, "documents": len(texts), "join": spec["join"],
        "reference": spec["reference"], "tokens_in_text": total, "tokens_kept": int(ids.numel()),
        "special_tokens": "tokenizer defaults (add_special_tokens=True)",
    }
    return ids, info
