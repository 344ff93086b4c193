"""Hugging Face Hub calibration sources (C4, CNN/DailyMail, RedPajama, RefinedWeb, Wikipedia, WikiText, Pile).

One loader, ``dataset.loader: hub``, reads any text dataset through :func:`datasets.load_dataset`.
The configs in ``conf/dataset/`` (``c4``, ``cnn_dailymail``, ``redpajama``, ``refinedweb``,
``wikipedia``, ``wikitext``, ``pile``) name the repository, config, split, files and text field:

- ``path``: Hub repo id (``org/name``, also ``hf://datasets/org/name[@revision]``), a local folder holding
  the same files (a mirror: the same relative ``data_files`` paths and the same columns), or a remote copy
  (``s3://bucket/c4``, ``https://host/c4``, ...: its ``data_files`` are read through fsspec by ``builder``
  or the builder of their suffix; see :mod:`calib_sweep.paths`).  A local folder needs no network.
- ``hf_name``: the repo's config name (``null``: none).  On a local folder it is passed only when
  the folder's ``README.md`` declares it (a mirror without the card has only the default config).
- ``split``, ``data_files`` (relative to ``path``; a string, list or ``{split: pattern}``),
  ``revision`` (``null``: main), ``builder`` (``null``; or a packaged builder such as ``json`` for
  repos whose loading script ``datasets>=4`` refuses: the files are then read as
  ``hf://datasets/<path>@<revision>/<file>``), ``interleave_files`` (streaming only: take rows from the
  files in turn, so a sample made of per-subset files is not read one subset after another).
- ``text_field``, ``id_field`` (``null``: ``doc_id`` is ``"<name>:<row index>"`` in stream order),
  ``lines_to_articles`` (WikiText: rows are lines; lines are grouped into articles at the
  ``" = Title = "`` headings), ``streaming``, ``max_documents`` (the first N documents in stream
  order, so the draw is deterministic; ``null``: all).
- ``format`` (``text``; ``chat``: the text field holds ``[{role, content}, ...]`` messages, rendered with
  the tokenizer's chat template or ``chat_template`` when tokenized, see :mod:`calib_sweep.data.chat`),
  ``doc_id_prefix`` (``null``: the config's ``name``; two configs with one prefix share document ids,
  hence their held-out split).

Documents are cached as JSON lines (:func:`calib_sweep.data.sources.cached_documents`) keyed by these
fields (and, for local files, their sizes and modification times), so a sweep streams a source once.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Iterable, Iterator

from calib_sweep import paths
from calib_sweep.data.sources import Document, cached_documents, make_document, register_loader, source_format
from calib_sweep.errors import ConfigError

_CONF_DIR = Path(__file__).resolve().parent.parent / "conf" / "dataset"

#: Builders shipped inside ``datasets`` (``load_dataset("json", data_files=...)``); a path equal to
#: one of these is not a repo id.
PACKAGED_BUILDERS = frozenset(
    "arrow audiofolder csv imagefolder json pandas parquet pdffolder sql text videofolder webdataset xml hdf5 "
    "niftifolder lance".split()
)

#: Script-era canonical names (no namespace) and removed repos -> the accepted form today.
_MOVED = {
    "c4": "dataset.path=allenai/c4 dataset.hf_name=en dataset.data_files={train:en/c4-train.00000-of-01024.json.gz} (or dataset=c4)",
    "allenai/c4": "dataset.path=allenai/c4 dataset.hf_name=en dataset.data_files={train:en/c4-train.00000-of-01024.json.gz} (or dataset=c4)",
    "cnn_dailymail": "dataset.path=abisee/cnn_dailymail dataset.hf_name=3.0.0 dataset.text_field=article (or dataset=cnn_dailymail)",
    "wikipedia": "dataset.path=wikimedia/wikipedia dataset.hf_name=20231101.en dataset.data_files={train:20231101.en/train-*.parquet} (or dataset=wikipedia)",
    "wikitext": "dataset.path=Salesforce/wikitext dataset.hf_name=wikitext-2-raw-v1 (or dataset=wikitext)",
    "pile": "dataset.path=monology/pile-uncopyrighted dataset.hf_name=null dataset.data_files={validation:val.jsonl.zst} dataset.split=validation (or dataset=pile)",
    "ptb_text_only": "a data-only copy as dataset.path=<org>/<name> with its text field (dataset.text_field=sentence for the PTB), a local folder, or dataset=wikitext",
    "refinedweb": "dataset.path=tiiuae/falcon-refinedweb dataset.text_field=content (or dataset=refinedweb)",
    "red_pajama": "dataset=redpajama (json files of togethercomputer/RedPajama-Data-1T-Sample)",
}
for _alias in ("the_pile", "eleutherai/pile", "eleutherai/the_pile"):
    _MOVED[_alias] = _MOVED["pile"]
_MOVED["legacy-datasets/wikipedia"] = _MOVED["wikipedia"]
_MOVED["legacy-datasets/c4"] = _MOVED["c4"]
_MOVED["togethercomputer/redpajama-data-1t-sample"] = (
    "dataset.builder=json with dataset.data_files naming its .jsonl files (its loading script is refused; or dataset=redpajama)"
)
_MOVED["togethercomputer/redpajama-data-1t"] = _MOVED["togethercomputer/redpajama-data-1t-sample"]
#: Repos that exist but whose only loader is a script (datasets>=4 refuses it) unless a builder reads the files.
_SCRIPT_REPOS = frozenset({"togethercomputer/redpajama-data-1t-sample", "togethercomputer/redpajama-data-1t"})
#: Repos that were removed (DMCA) or only ever worked through a script.
_GONE = frozenset({"eleutherai/pile", "eleutherai/the_pile"})

#: Repos whose config names are the top folders of their files (a data_files/hf_name mismatch is a mistake).
_CONFIG_DIR_REPOS = frozenset({"allenai/c4", "abisee/cnn_dailymail", "wikimedia/wikipedia", "salesforce/wikitext"})

_WIKIPEDIA_DUMP = re.compile(r"^(\d{8})\.([\w-]+)$")
_FIRST_HUB_WIKIPEDIA_DUMP = "20231101"


def _get(cfg: Any, key: str, default: Any = None) -> Any:
    """``cfg.get(key)``, treating a missing mandatory value (``???``) as absent."""
    try:
        value = cfg.get(key, default)
    except Exception:  # omegaconf.MissingMandatoryValue
        return default
    return default if value == "???" else value


def _data_file_patterns(data_files: Any) -> list[str]:
    """The file patterns of ``data_files`` (string, list or mapping split -> patterns), in order."""
    if data_files is None:
        return []
    if isinstance(data_files, str):
        return [data_files]
    if hasattr(data_files, "items"):
        out: list[str] = []
        for value in data_files.values():
            out.extend(_data_file_patterns(value))
        return out
    return [str(item) for item in data_files]


def _plain(value: Any) -> Any:
    """OmegaConf containers -> plain dict / list (``load_dataset`` wants plain ones)."""
    try:
        from omegaconf import OmegaConf

        if OmegaConf.is_config(value):
            return OmegaConf.to_container(value, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    return value


def _is_local(path: str) -> bool:
    return not paths.is_remote(path) and paths.local_path(path).exists()


_HF_REPO = re.compile(r"^hf://datasets/([^/@]+/[^/@]+)(?:@([^/]+))?/?$", re.IGNORECASE)


def _hub_path(cfg: Any) -> tuple[str, Any]:
    """``(path, revision)``: ``hf://datasets/<org>/<name>[@rev]`` is the Hub repo ``<org>/<name>`` (at ``rev``)."""
    path = str(_get(cfg, "path")).strip()
    revision = _get(cfg, "revision")
    match = _HF_REPO.match(path)
    if match:
        return match.group(1), match.group(2) or revision
    return path, revision


def _remote_mirror(path: str) -> bool:
    """A remote copy of the files (``s3://``, ``https://``, ``hf://buckets/...``), read by a packaged builder."""
    return paths.is_remote(path)


def _remote_builder(cfg: Any, path: str) -> str:
    """The packaged builder for a remote copy: ``dataset.builder`` or the data files' suffix.

    Raises:
        ConfigError: no data files named, or their suffix names no builder.
    """
    builder = _get(cfg, "builder")
    if builder is not None:
        return str(builder)
    patterns = _data_file_patterns(_plain(_get(cfg, "data_files")))
    if not patterns:
        raise ConfigError(
            f"dataset.path={path!r} is a remote copy, whose files must be named. "
            "Fix: dataset.data_files={train: <file or pattern under it>} (and dataset.builder=json|parquet|csv|text)."
        )
    builders = {paths.builder_for(p) for p in patterns}
    if None in builders or len(builders) != 1:
        raise ConfigError(
            f"dataset.data_files={patterns} under the remote copy dataset.path={path!r} name no single file type. "
            "Fix: set dataset.builder=json|parquet|csv|text."
        )
    return builders.pop()


def _legacy_path_message(path: str) -> str | None:
    """The one-line refusal for a legacy ``dataset.path``, or None when the path is an accepted form."""
    low = path.lower()
    if "--" in path:
        repo = path[len("datasets--"):] if path.startswith("datasets--") else path
        repo = repo.replace("--", "/", 1)
        fix = _MOVED.get(repo.lower(), f"dataset.path={repo}")
        return (
            f"dataset.path={path!r} is a legacy builder name that datasets>=3 no longer resolves "
            f"(Hub repo ids are 'org/name', never with '--'). Fix: {fix}"
        )
    if low in _GONE:
        return f"dataset.path={path!r} was removed from the Hub (its loading script no longer runs either). Fix: {_MOVED[low]}"
    if low.startswith("legacy-datasets/"):
        fix = _MOVED.get(low, "a data-only repo id 'org/name' (its Hub page names one) or a local folder")
        return f"dataset.path={path!r} is a script-based legacy repo that datasets>=4 refuses to run. Fix: {fix}"
    if "/" not in path and path not in PACKAGED_BUILDERS:
        fix = _MOVED.get(low, "the namespaced repo id 'org/name' shown on its Hub page, or a local folder")
        return (
            f"dataset.path={path!r} is a script-era canonical dataset name (no namespace); datasets>=4 runs no "
            f"loading scripts and these names survive only as redirects. Fix: {fix}"
        )
    return None


def validate_hub_source(cfg: Any) -> None:
    """Check a ``loader: hub`` dataset config without reading data.

    Only a remote ``dataset.path`` or data file (``s3://``, ``https://``, ... see :mod:`calib_sweep.paths`)
    touches the network: a quick probe of its server, so an unreachable one fails here, before weights load.

    Refuses (C01) legacy names that newer ``datasets`` releases no longer accept: any path or
    config name with ``--`` (the old ``allenai--c4`` builder / cache names), script-era canonical
    names without a namespace (``c4``, ``wikipedia``, ``wikitext``, ``ptb_text_only``, ``the_pile``,
    ...), removed or script-only repos (``EleutherAI/pile``, ``legacy-datasets/*``, RedPajama's script
    unless ``builder`` reads its files), Wikipedia dumps older than ``20231101`` (built by the removed
    script), and ``trust_remote_code``.  Local folders and files are accepted as they are.

    Raises:
        ConfigError: one line naming the field, the bad value and the accepted form.
    """
    path = _get(cfg, "path")
    if path is None or str(path).strip() == "":
        raise ConfigError("dataset.path is missing. Fix: dataset.path=<org>/<name> (a Hub repo id) or a local folder.")
    path, _ = _hub_path(cfg)
    for field, example in (("text_field", "text"), ("split", "train")):
        value = _get(cfg, field)
        if value is None or str(value).strip() == "":
            raise ConfigError(f"dataset.{field} is missing. Fix: e.g. dataset.{field}={example}.")
    if _get(cfg, "trust_remote_code"):
        raise ConfigError(
            "dataset.trust_remote_code=true asks for a loading script, which datasets>=4 no longer runs. "
            "Fix: remove it and use a data-only repo (dataset.path=<org>/<name>) or dataset.builder=json|parquet with dataset.data_files."
        )
    local = _is_local(path)
    builder = _get(cfg, "builder")
    if builder is not None and str(builder) not in PACKAGED_BUILDERS:
        raise ConfigError(
            f"dataset.builder={builder!r} is not a packaged datasets builder. Fix: null or one of {sorted(PACKAGED_BUILDERS)}."
        )
    remote = _remote_mirror(path)
    if remote:
        _remote_builder(cfg, path)
        paths.check_remote(path, "dataset.path", folder=True)  # protocol, its package, the network
    for pattern in _data_file_patterns(_plain(_get(cfg, "data_files"))):
        paths.check_remote(pattern, "dataset.data_files", folder=False)
    if not local and not remote and (path.startswith(("/", ".", "~")) or path.count("/") > 1):
        raise ConfigError(
            f"dataset.path={path!r} is neither an existing local folder nor a Hub repo id. "
            "Fix: point dataset.path at the folder holding the files, or use a repo id <org>/<name>."
        )
    if not local and not remote:
        message = _legacy_path_message(path)
        if message:
            raise ConfigError(message)
        if path.lower() in _SCRIPT_REPOS and builder is None:
            raise ConfigError(
                f"dataset.path={path!r} is loaded by a script, which datasets>=4 refuses. Fix: {_MOVED[path.lower()]}"
            )
    hf_name = _get(cfg, "hf_name")
    if hf_name is not None:
        hf_name = str(hf_name)
        if "--" in hf_name:
            fix = "dataset.hf_name=en" if path.lower() == "allenai/c4" else "dataset.hf_name=null (dataset.data_files picks the files) or one of the repo's config names"
            raise ConfigError(
                f"dataset.hf_name={hf_name!r} is a legacy builder name that datasets>=3 no longer resolves. Fix: {fix}"
            )
        dump = _WIKIPEDIA_DUMP.match(hf_name)
        if path.lower() in ("wikimedia/wikipedia", "wikipedia") and dump and dump.group(1) < _FIRST_HUB_WIKIPEDIA_DUMP:
            raise ConfigError(
                f"dataset.hf_name={hf_name!r} is a Wikipedia dump built by the removed wikipedia.py script; "
                f"wikimedia/wikipedia holds dumps from {_FIRST_HUB_WIKIPEDIA_DUMP} on. "
                f"Fix: dataset.hf_name={_FIRST_HUB_WIKIPEDIA_DUMP}.{dump.group(2)} "
                f"dataset.data_files={{train:{_FIRST_HUB_WIKIPEDIA_DUMP}.{dump.group(2)}/train-*.parquet}}"
            )
    patterns = _data_file_patterns(_plain(_get(cfg, "data_files")))
    if hf_name is not None and patterns and path.lower() in _CONFIG_DIR_REPOS:
        tops = {p.split("/", 1)[0] for p in patterns if "/" in p}
        if tops and tops != {hf_name}:
            raise ConfigError(
                f"dataset.data_files={patterns} lie under {sorted(tops)} but dataset.hf_name={hf_name!r}. "
                f"Fix: set dataset.data_files to paths under {hf_name}/ (or null for the whole config)."
            )
    streaming = _get(cfg, "streaming", False)
    if not isinstance(streaming, bool):
        raise ConfigError(f"dataset.streaming={streaming!r} must be true or false. Fix: dataset.streaming=true.")
    if streaming and "[" in str(_get(cfg, "split")):
        raise ConfigError(
            f"dataset.split={_get(cfg, 'split')!r} slices a split, which streaming cannot do. "
            "Fix: dataset.split=train and dataset.max_documents=N."
        )
    if _get(cfg, "interleave_files") and not streaming:
        raise ConfigError("dataset.interleave_files=true needs dataset.streaming=true. Fix: dataset.streaming=true.")
    max_documents = _get(cfg, "max_documents")
    if max_documents is not None and (isinstance(max_documents, bool) or not isinstance(max_documents, int) or max_documents < 1):
        raise ConfigError(f"dataset.max_documents={max_documents!r} must be a positive integer or null (all). Fix: e.g. 20000.")


# ---------------------------------------------------------------------------------------------
# Offline mode


def offline_sources() -> list[str]:
    """Names of the dataset configs in ``conf/dataset/`` that need no Hub (``loader`` is not ``hub``)."""
    from omegaconf import OmegaConf

    names = []
    for file in sorted(_CONF_DIR.glob("*.yaml")):
        try:
            loader = OmegaConf.load(file).get("loader")
        except Exception:
            continue
        if loader != "hub":
            names.append(file.stem)
    return names


def _env_offline() -> str | None:
    return paths.hf_offline_setting()


def _probe(host: str, port: int, timeout: float) -> str | None:
    """None when ``host:port`` accepts a TCP connection within ``timeout`` seconds, else why not
    (:func:`calib_sweep.paths._probe`, cached per process)."""
    return paths._probe(host, port, timeout)


def _hub_endpoint() -> tuple[str, int]:
    return paths.endpoint("hf://datasets")  # HF_ENDPOINT or huggingface.co


def _offline_error(cfg: Any, why: str) -> ConfigError:
    return ConfigError(
        f"offline mode ({why}): dataset {_get(cfg, 'name')!r} reads {_get(cfg, 'path')!r} from the Hugging Face Hub. "
        f"Fix: use an offline source (dataset={' | dataset='.join(offline_sources())}) "
        "or set dataset.path to a local folder holding the same files."
    )


def check_hub_reachable(cfg: Any, timeout: float = 3.0) -> None:
    """Fail fast when a Hub source cannot be read: offline mode is set or the Hub does not answer.

    Local sources (``path`` an existing folder or file, or ``builder`` with local ``data_files``)
    are never probed.

    Raises:
        ConfigError: one line naming offline mode and listing the offline dataset configs.
    """
    loc = _location(cfg)
    if loc["local"]:
        return
    path, _ = _hub_path(cfg)
    for pattern in ([path] if _remote_mirror(path) else []) + _data_file_patterns(_plain(_get(cfg, "data_files"))):
        paths.check_remote(pattern, "dataset.path" if pattern == path else "dataset.data_files", folder=pattern == path)
    if _remote_mirror(path) or (
        _get(cfg, "builder") is not None and not any(str(f).startswith("hf://") for f in _data_file_patterns(loc["data_files"]))
    ):
        return  # nothing on the Hub (remote copies were checked above, each against its own server)
    why = _env_offline()
    if why is None:
        host, port = _hub_endpoint()
        failure = _probe(host, port, timeout)
        if failure:
            why = f"{host}:{port} unreachable, {failure}"
    if why:
        raise _offline_error(cfg, why)


def check_codecs(cfg: Any) -> None:
    """Check that the packages needed to decompress the source's files are installed.

    Raises:
        ConfigError: ``.zst`` data files (the Pile) and no ``zstandard`` package.
    """
    import importlib.util

    patterns = _data_file_patterns(_plain(_get(cfg, "data_files")))
    if any(p.endswith(".zst") for p in patterns) and importlib.util.find_spec("zstandard") is None:
        raise ConfigError(
            f"dataset.data_files={patterns} are zstd-compressed and the zstandard package is missing. Fix: pip install zstandard."
        )


def _is_connection_error(exc: BaseException) -> bool:
    return paths.is_connection_error(exc)


# ---------------------------------------------------------------------------------------------
# Loading


def _local_declares_config(folder: Path, name: str) -> bool:
    card = folder / "README.md"
    if not card.is_file():
        return False
    text = card.read_text(encoding="utf-8", errors="replace")
    return re.search(rf"^\s*-?\s*config_name:\s*['\"]?{re.escape(name)}['\"]?\s*$", text, re.MULTILINE) is not None


def _location(cfg: Any) -> dict[str, Any]:
    """How to call ``load_dataset``: path, name, data_files, revision, and whether all of it is local.

    A remote copy (``dataset.path=s3://bucket/c4``, ``https://host/c4``, ...) is read with a packaged
    builder (``dataset.builder`` or the data files' suffix) on ``<path>/<data file>`` URLs, through fsspec.
    """
    path, revision = _hub_path(cfg)
    hf_name = _get(cfg, "hf_name")
    builder = _get(cfg, "builder")
    data_files = _plain(_get(cfg, "data_files"))
    remote = _remote_mirror(path)
    folder = None if remote else paths.local_path(path)
    local = folder is not None and folder.exists()
    if remote:
        builder = _remote_builder(cfg, path)
    if builder is not None:
        def place(pattern: str) -> str:
            if os.path.isabs(pattern) or "://" in pattern:
                return pattern
            if remote:
                return paths.join(path, pattern)
            if local:
                return str(folder / pattern)
            return f"hf://datasets/{path}@{revision or 'main'}/{pattern}"

        if isinstance(data_files, dict):
            data_files = {split: [place(p) for p in _data_file_patterns(v)] for split, v in data_files.items()}
        elif data_files is not None:
            data_files = [place(p) for p in _data_file_patterns(data_files)]
        files = _data_file_patterns(data_files)
        local = bool(files) and not any(paths.is_remote(f) for f in files)
        return {"path": str(builder), "name": None, "data_files": data_files, "revision": None, "local": local}
    if local and hf_name is not None and not (folder.is_dir() and _local_declares_config(folder, str(hf_name))):
        hf_name = None  # a mirror without the dataset card has only the default config; data_files pick the files
    return {
        "path": str(folder) if local else path, "name": hf_name, "data_files": data_files,
        "revision": None if local else revision, "local": local,
    }


def _local_fingerprint(cfg: Any, loc: dict[str, Any]) -> list:
    """Sizes and mtimes of the local files a source reads, so edits invalidate the document cache."""
    base = Path(loc["path"]) if _get(cfg, "builder") is None else None
    patterns = _data_file_patterns(loc["data_files"]) or ["**/*"]
    stats = []
    for pattern in patterns:
        full = pattern if base is None or os.path.isabs(pattern) else str(base / pattern)
        for file in sorted(glob.glob(full, recursive=True)):
            if os.path.isfile(file):
                st = os.stat(file)
                stats.append([file, st.st_size, st.st_mtime_ns])
    return stats


def _rows(cfg: Any, loc: dict[str, Any]) -> Iterator[dict]:
    """Rows of the split in stream order (files in turn when ``interleave_files``)."""
    import datasets

    kwargs: dict[str, Any] = {"split": str(cfg.split), "streaming": bool(_get(cfg, "streaming", False))}
    if loc["data_files"] is not None:
        kwargs["data_files"] = loc["data_files"]
    if loc["revision"] is not None:
        kwargs["revision"] = str(loc["revision"])
    ds = datasets.load_dataset(loc["path"], loc["name"], **kwargs)
    if not _get(cfg, "interleave_files"):
        yield from ds
        return
    shards = [iter(ds.shard(num_shards=ds.num_shards, index=i)) for i in range(ds.num_shards)]
    while shards:
        alive = []
        for shard in shards:
            row = next(shard, None)
            if row is not None:
                yield row
                alive.append(shard)
        shards = alive


_HEADING = re.compile(r"^ = ([^=](?:.*[^=])?) = $")


def wikitext_articles(lines: Iterable[str]) -> Iterator[tuple[str | None, str]]:
    """Group WikiText line rows into ``(title, text)`` articles at the ``" = Title = "`` headings.

    Section headings (``" = = Section = = "``) stay inside their article; the heading line starts
    the article's text; blank rows (``""``) become blank lines, as in the raw ``wiki.*.raw`` files.  Lines before the first heading form an untitled article if not blank.
    """
    title: str | None = None
    buffer: list[str] = []
    for line in lines:
        line = line if line.endswith("\n") else line + "\n"  # blank rows are "" in the Hub files
        match = _HEADING.match(line.rstrip("\n"))
        if match:
            text = "".join(buffer).strip()
            if text:
                yield title, text
            title, buffer = match.group(1).strip(), [line]
        else:
            buffer.append(line)
    text = "".join(buffer).strip()
    if text:
        yield title, text


def _documents(cfg: Any, loc: dict[str, Any]) -> Iterator[Document]:
    """The source's documents in stream order, empty ones included (text ``""``; not counted
    toward ``max_documents``; :func:`calib_sweep.data.sources.load_documents` skips and counts them)."""
    name = str(cfg.name)
    prefix = str(_get(cfg, "doc_id_prefix") or name)
    field = str(cfg.text_field)
    fmt = source_format(cfg)
    id_field = _get(cfg, "id_field")
    limit = _get(cfg, "max_documents")
    seen: set[str] = set()
    count = 0

    def texts() -> Iterator[tuple[int, Any, str]]:
        for index, row in enumerate(_rows(cfg, loc)):
            if field not in row:
                raise ConfigError(
                    f"dataset {name!r} rows have no field {field!r} (fields: {sorted(row)}). Fix: set dataset.text_field."
                )
            if id_field is not None and id_field not in row:
                raise ConfigError(
                    f"dataset {name!r} rows have no field {id_field!r} (fields: {sorted(row)}). Fix: set dataset.id_field (or null)."
                )
            yield index, (row[id_field] if id_field is not None else None), row[field]

    if _get(cfg, "lines_to_articles"):
        stream: Iterable[tuple[int, Any, str]] = (
            (index, None, text) for index, (_, text) in enumerate(wikitext_articles(t or "" for _, _, t in texts()))
        )
    else:
        stream = texts()
    for index, own_id, text in stream:
        doc_id = f"{prefix}:{own_id if own_id is not None else index}"
        if doc_id in seen:
            doc_id = f"{doc_id}#{index}"
        seen.add(doc_id)
        doc = make_document(doc_id, text, fmt, field, f"dataset {name!r} row {index}")
        yield doc
        if doc.is_empty:
            continue
        count += 1
        if limit is not None and count >= int(limit):
            return


#: Bump when what the document cache holds changes (2: empty rows kept, so they are counted).
_DOCUMENTS_VERSION = 2

_HUB_FIELDS = (
    "path", "hf_name", "split", "data_files", "revision", "builder", "text_field", "id_field",
    "lines_to_articles", "interleave_files", "max_documents",
)


@register_loader("hub", validate=validate_hub_source)
def load_hub_documents(cfg: Any) -> list[Document]:
    """Documents of a Hugging Face dataset (or a local folder with the same files), in stream order.

    Sources: the ``conf/dataset`` configs ``c4`` (allenai/c4), ``cnn_dailymail`` (abisee/cnn_dailymail),
    ``redpajama`` (togethercomputer/RedPajama-Data-1T-Sample), ``refinedweb`` (tiiuae/falcon-refinedweb),
    ``wikipedia`` (wikimedia/wikipedia), ``wikitext`` (Salesforce/wikitext), ``pile``
    (monology/pile-uncopyrighted), or any config with ``loader: hub``.

    Returns:
        The first ``max_documents`` non-empty documents in stream order (all when null) and the empty
        rows met before them (skipped and counted by :func:`~calib_sweep.data.sources.load_documents`),
        ``doc_id`` ``"<prefix>:<id_field value>"`` or ``"<prefix>:<row index>"`` (article index for
        WikiText; ``prefix``: ``doc_id_prefix``, default the config's ``name``).  With
        ``format: chat`` the text field holds ``[{role, content}, ...]`` messages
        (:func:`~calib_sweep.data.sources.make_document`).  Cached as JSON lines after the first read.

    Raises:
        ConfigError: bad fields (see :func:`validate_hub_source`); a missing codec package
            (:func:`check_codecs`); offline mode or the Hub unreachable
            (one line listing the offline sources); the repo missing, gated or script-only; a row
            without the text field.
    """
    validate_hub_source(cfg)
    loc = _location(cfg)
    key_fields = {field: _plain(_get(cfg, field)) for field in _HUB_FIELDS}
    key_fields["documents"] = _DOCUMENTS_VERSION
    for field in ("format", "doc_id_prefix"):  # only when set: text sources keep their cache keys' other fields
        if _get(cfg, field) not in (None, "text"):
            key_fields[field] = _plain(_get(cfg, field))
    if loc["local"]:
        key_fields["local_files"] = _local_fingerprint(cfg, loc)
    key = hashlib.sha256(json.dumps(key_fields, sort_keys=True, default=str).encode()).hexdigest()

    def build() -> list[Document]:
        check_codecs(cfg)
        check_hub_reachable(cfg)
        try:
            return list(_documents(cfg, loc))
        except ConfigError:
            raise
        except Exception as exc:  # map datasets' failures to one line; anything else propagates
            remote_path = _hub_path(cfg)[0]
            if _remote_mirror(remote_path) and (_is_connection_error(exc) or isinstance(exc, (FileNotFoundError, PermissionError))
                                                or type(exc).__name__ in {"DataFilesNotFoundError", "FileNotFoundDatasetsError"}):
                raise paths.read_error("dataset.path", remote_path, exc, folder=True) from exc
            if not loc["local"] and _is_connection_error(exc):
                raise _offline_error(cfg, f"{type(exc).__name__}: {exc}".replace("\n", " ")[:300]) from exc
            kind = type(exc).__name__
            message = str(exc).replace("\n", " ")
            if kind in {"DatasetNotFoundError", "DataFilesNotFoundError", "FileNotFoundDatasetsError", "FileNotFoundError"}:
                raise ConfigError(
                    f"dataset.path={_get(cfg, 'path')!r} / dataset.data_files={_plain(_get(cfg, 'data_files'))!r}: {message[:300]} "
                    "Fix: check the repo id (or local folder), the files and access rights (gated repos need a token)."
                ) from exc
            if "scripts are no longer supported" in message:
                raise ConfigError(
                    f"dataset.path={_get(cfg, 'path')!r} is loaded by a script, which datasets>=4 refuses ({message}). "
                    "Fix: dataset.builder=json|parquet with dataset.data_files naming its data files, or a data-only repo."
                ) from exc
            if kind == "ValueError" and message.startswith("BuilderConfig"):
                raise ConfigError(f"dataset.hf_name={_get(cfg, 'hf_name')!r}: {message} Fix: use one of those names.") from exc
            raise

    return cached_documents(str(cfg.name), key, build)
