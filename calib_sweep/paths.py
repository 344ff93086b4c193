"""The one rule for path fields that may hold a URL or remote URI.

Every config field that names a file or folder (``dataset.path`` of ``local_jsonl`` / ``local_hf_disk`` /
Hub sources' local copies, ``dataset.data_files``, ``eval.perplexity.hub_sources.*``,
``eval.zeroshot.local_files.*``, ``model.path``) goes through this module:

- :func:`scheme` / :func:`is_remote` recognise ``<protocol>://...`` (``http(s)``, ``s3``, ``gs``/``gcs``,
  ``hf``, ``az``/``abfs``, ...); such a value is never passed through :class:`pathlib.Path` (which turns
  ``s3://bucket`` into ``s3:/bucket``) and every message names it exactly as given.  ``file://`` is local.
- :func:`check_remote` (cheap, at validate time, before any weights load) refuses a protocol that
  ``fsspec`` does not know, names the pip package a known protocol still needs (``s3fs``, ``gcsfs``,
  ``adlfs``, ...), and, when the value's server does not accept a TCP connection within a few seconds
  (or ``HF_HUB_OFFLINE`` is set for ``hf://``), says the network is unreachable and how to use a local
  copy.
- :func:`open_file` reads a remote file through ``fsspec`` (and :func:`read_error` turns a failed read
  into one line that says whether the file was missing, refused or unreachable); ``datasets`` reads
  remote ``data_files`` itself, through the same ``fsspec`` filesystems.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlparse

from calib_sweep.errors import ConfigError

_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")

#: Seconds the reachability probe waits for a TCP connection.
PROBE_TIMEOUT_S = 3.0

#: pip package for protocols whose fsspec class lives in fsspec itself but needs a third-party package.
_EXTRA_PACKAGES = {
    "http": "aiohttp", "https": "aiohttp", "sftp": "paramiko", "ssh": "paramiko", "hdfs": "pyarrow",
    "arrow_hdfs": "pyarrow", "smb": "smbprotocol", "webhdfs": "requests", "github": "requests",
}

#: Default ports by protocol (for the reachability probe of ``<protocol>://host/...`` values).
_PORTS = {"http": 80, "https": 443, "ftp": 21, "sftp": 22, "ssh": 22, "smb": 445, "webhdfs": 9870, "hdfs": 8020}

#: Data-file suffixes -> the ``datasets`` packaged builder that reads them (compression suffixes stripped first).
_BUILDERS = {
    ".jsonl": "json", ".json": "json", ".ndjson": "json", ".parquet": "parquet", ".csv": "csv", ".tsv": "csv",
    ".txt": "text", ".arrow": "arrow",
}
_COMPRESSION = (".gz", ".bz2", ".xz", ".zst", ".zstd", ".lz4", ".zip")


def scheme(value: Any) -> str | None:
    """The lower-case protocol of a ``<protocol>://...`` value (``"s3"``, ``"https"``, ...), else None.

    ``file://`` counts as local (None).  Windows drive paths (``C:/x``, ``C:\\x``) have no ``://``.
    """
    if value is None or isinstance(value, (bool, int, float)):
        return None
    match = _URI.match(str(value).strip())
    if match is None:
        return None
    protocol = match.group(1).lower()
    return None if protocol == "file" else protocol


def is_remote(value: Any) -> bool:
    """Whether a path field holds a URL or remote URI (anything ``<protocol>://`` but ``file://``)."""
    return scheme(value) is not None


def local_path(value: Any) -> Path:
    """A local path field as a :class:`Path` (``~`` expanded, ``file://`` dropped); never call it on a remote value."""
    text = str(value).strip()
    if is_remote(text):
        raise ValueError(f"{text!r} is remote; it is not a local path")
    if text.lower().startswith("file://"):
        text = text[len("file://"):]
    return Path(text).expanduser()


def join(base: str, relative: str) -> str:
    """``base/relative`` for a remote base (no :class:`Path`, so ``//`` stays)."""
    return f"{str(base).rstrip('/')}/{str(relative).lstrip('/')}"


def basename(value: Any) -> str:
    """The last component of a path or URL (for the ``/local/<name>`` hint)."""
    text = str(value).rstrip("/")
    if is_remote(text):
        text = urlparse(text).path.rstrip("/") or text
    return text.rsplit("/", 1)[-1].split("@", 1)[0] or "file"


def builder_for(value: Any) -> str | None:
    """The ``datasets`` packaged builder for a data file by its suffix (``x.jsonl.gz`` -> ``json``), else None."""
    name = basename(value).lower()
    for suffix in _COMPRESSION:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return _BUILDERS.get(os.path.splitext(name)[1])


# ---------------------------------------------------------------------------------------------
# Protocol packages


def _implementation(protocol: str) -> dict[str, str] | None:
    from fsspec.registry import known_implementations, registry

    if protocol in registry:
        cls = registry[protocol]
        return {"class": f"{cls.__module__}.{cls.__name__}"}
    return known_implementations.get(protocol)


def missing_package(protocol: str) -> str | None:
    """The pip package that ``fsspec`` still needs for ``protocol`` (``s3`` -> ``s3fs``), None when it can read it.

    Raises:
        KeyError: ``fsspec`` does not know the protocol.
    """
    impl = _implementation(protocol)
    if impl is None:
        raise KeyError(protocol)
    import fsspec

    try:
        fsspec.get_filesystem_class(protocol)
        return None
    except (ImportError, ValueError):
        pass
    if protocol in _EXTRA_PACKAGES:
        return _EXTRA_PACKAGES[protocol]
    return impl["class"].split(".", 1)[0]  # s3fs, gcsfs, adlfs, ocifs, ... (pip name = module name)


# ---------------------------------------------------------------------------------------------
# Reachability


def _truthy_env(var: str) -> bool:
    return os.environ.get(var, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def endpoint(value: str) -> tuple[str, int] | None:
    """``(host, port)`` that must answer for ``value`` to be read, or None when it cannot be told."""
    protocol = scheme(value)
    if protocol is None:
        return None
    url = urlparse(str(value).strip())

    def from_env(*names: str, default: str) -> tuple[str, int]:
        for name in names:
            if os.environ.get(name):
                parsed = urlparse(os.environ[name] if "://" in os.environ[name] else f"https://{os.environ[name]}")
                return parsed.hostname or default, parsed.port or (80 if parsed.scheme == "http" else 443)
        return default, 443

    if protocol in ("s3", "s3a"):
        return from_env("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", default="s3.amazonaws.com")
    if protocol in ("gs", "gcs"):
        return from_env("STORAGE_EMULATOR_HOST", default="storage.googleapis.com")
    if protocol == "hf":
        return from_env("HF_ENDPOINT", default="huggingface.co")
    if protocol in ("az", "abfs", "abfss", "adl"):
        host = (url.netloc.rsplit("@", 1)[-1] if "@" in url.netloc else "")
        if "." in host:
            return host, 443
        account = os.environ.get("AZURE_STORAGE_ACCOUNT_NAME")
        return (f"{account}.blob.core.windows.net" if account else "management.azure.com"), 443
    if url.hostname:
        try:
            port = url.port
        except ValueError:
            port = None
        return url.hostname, port or _PORTS.get(protocol, 443)
    return None


@functools.lru_cache(maxsize=32)
def _probe(host: str, port: int, timeout: float) -> str | None:
    """None when ``host:port`` accepts a TCP connection within ``timeout`` seconds, else why not.

    Name resolution runs in a thread so a slow resolver cannot stretch the wait past ``timeout``.
    """
    import socket

    outcome: list[str | None] = []

    def attempt() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except OSError as exc:
            outcome.append(f"{type(exc).__name__}: {exc}".replace("\n", " "))

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    if not outcome:
        return f"no answer within {timeout:g} s"
    return outcome[0]


def hf_offline_setting() -> str | None:
    """``"HF_HUB_OFFLINE=1"`` (or ``HF_DATASETS_OFFLINE``) when the user switched the Hub off, else None."""
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if _truthy_env(var):
            return f"{var}={os.environ[var]}"
    return None


def unreachable(value: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Why ``value`` cannot be reached now (offline setting, or its server does not answer), else None."""
    protocol = scheme(value)
    if protocol is None:
        return None
    if protocol == "hf" and hf_offline_setting():
        return hf_offline_setting()
    where = endpoint(value)
    if where is None:
        return None
    failure = _probe(where[0], where[1], float(timeout))
    return None if failure is None else f"{where[0]}:{where[1]} unreachable, {failure}"


# ---------------------------------------------------------------------------------------------
# Errors


def _local_hint(field: str, value: str, folder: bool) -> str:
    return f"{field}=/local/{basename(value)}" if not folder else f"{field}=/local/folder"


def offline_error(field: str, value: str, why: str, folder: bool = False) -> ConfigError:
    """The one-line error for a remote value while the network (or its server) is unreachable."""
    return ConfigError(
        f"{field}={value!r} is a remote {scheme(value)}:// location and the network is unreachable ({why}). "
        f"Fix: download it where the network is available, then {_local_hint(field, value, folder)} "
        f"(a local copy needs no network)."
    )


def check_remote(value: Any, field: str, *, folder: bool = False, network: bool = True,
                 timeout: float = PROBE_TIMEOUT_S) -> None:
    """Check that a remote path field can be read, without reading it; local values pass untouched.

    Args:
        value: the field's value.
        field: its dotted name (``dataset.path``), for the message.
        folder: the field names a folder (the local-copy hint says ``/local/folder``).
        network: also probe the value's server (a TCP connection within ``timeout`` seconds).

    Raises:
        ConfigError: one line naming the value exactly as given: a protocol ``fsspec`` does not know; a
            protocol whose package is missing (``pip install s3fs``); or the network unreachable (with
            how to use a local copy).
    """
    protocol = scheme(value)
    if protocol is None:
        return
    value = str(value).strip()
    try:
        package = missing_package(protocol)
    except KeyError:
        raise ConfigError(
            f"{field}={value!r} uses the protocol {protocol!r} ({protocol}://), which no fsspec filesystem reads. "
            f"Fix: use a local path, or a URL of a known protocol (http(s)://, s3://, gs://, hf://, az://, ...)."
        ) from None
    if package is not None:
        raise ConfigError(
            f"{field}={value!r} is a remote {protocol}:// location and reading it needs the {package} package, which is "
            f"not installed. Fix: pip install {package} (or download it and set {_local_hint(field, value, folder)})."
        )
    if network:
        why = unreachable(value, timeout)
        if why is not None:
            raise offline_error(field, value, why, folder)


def is_connection_error(exc: BaseException | None) -> bool:
    """Whether an exception (or one it was raised from) is a failed connection rather than a missing file."""
    seen = 0
    while exc is not None and seen < 10:
        names = {cls.__name__ for cls in type(exc).__mro__}
        if names & {"ConnectionError", "TimeoutError", "TransportError", "OfflineModeIsEnabled", "ConnectTimeout",
                    "ClientConnectorError", "ClientConnectionError", "ServerTimeoutError", "EndpointConnectionError",
                    "gaierror"}:
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def read_error(field: str, value: str, exc: BaseException, folder: bool = False) -> ConfigError:
    """One line for a failed read of a remote value: unreachable, missing, refused, or the error itself."""
    first = (str(exc).splitlines() or [""])[0][:200]
    detail = f"{type(exc).__name__}: {first}".rstrip(": ")
    if is_connection_error(exc):
        return offline_error(field, value, detail, folder)
    if isinstance(exc, ImportError):
        protocol = scheme(value) or "?"
        try:
            package = missing_package(protocol) or "fsspec"
        except KeyError:
            package = "fsspec"
        return ConfigError(
            f"{field}={value!r} is a remote {protocol}:// location and reading it needs the {package} package ({detail}). "
            f"Fix: pip install {package}."
        )
    if isinstance(exc, FileNotFoundError):
        return ConfigError(
            f"{field}={value!r} does not exist (its server answered; nothing at that location). "
            f"Fix: check the URL, or download the {'folder' if folder else 'file'} and set {_local_hint(field, value, folder)}."
        )
    if isinstance(exc, PermissionError) or any(c.__name__ in {"NoCredentialsError", "ClientAuthenticationError"}
                                               for c in type(exc).__mro__):
        return ConfigError(
            f"{field}={value!r} cannot be read: access denied ({detail}). "
            "Fix: set the credentials for that storage (or download it and use a local copy)."
        )
    return ConfigError(f"{field}={value!r} cannot be read ({detail}). Fix: check the URL, or use a local copy.")


@contextmanager
def open_file(value: str, field: str, mode: str = "rb", **kwargs: Any) -> Iterator[Any]:
    """Open a local or remote file (``fsspec``, compression inferred from the suffix for remote files).

    Raises:
        ConfigError: the remote file cannot be read (see :func:`read_error`).
    """
    if not is_remote(value):
        with open(local_path(value), mode, **kwargs) as handle:
            yield handle
        return
    import fsspec

    check_remote(value, field, network=False)
    try:
        handle = fsspec.open(str(value).strip(), mode, compression="infer", **kwargs).open()
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - every failure to open becomes one line
        raise read_error(field, str(value), exc) from exc
    try:
        yield handle
    finally:
        handle.close()


def sha256(value: Any, chunk_bytes: int = 1 << 20) -> str:
    """Hex SHA-256 of a local or remote file."""
    digest = hashlib.sha256()
    with open_file(str(value), "file", "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_bytes), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# model.path


def _check_local_or_hub_model(value: Any, field: str, revision: Any = None) -> None:
    """A local folder must exist and hold ``config.json``; a Hub id (``org/name``) must be reachable
    now or already in the local Hugging Face cache (else ``from_pretrained`` retries, then fails
    with a traceback after the job started)."""
    if value is None or not str(value).strip():
        return  # empty: model_path() says so
    text = str(value).strip()
    path = Path(os.path.expanduser(text))
    looks_local = text.startswith(("/", "./", "../", "~")) or path.exists() or text.count("/") != 1
    if looks_local:
        if not path.is_dir():
            raise ConfigError(
                f"{field}={text!r} is not a folder (nothing there) and not a Hub id (org/name). "
                f"Fix: {field}=/path/to/a/model/folder (with config.json) or a Hub id such as org/name."
            )
        if not (path / "config.json").is_file():
            raise ConfigError(
                f"{field}={text!r} is a folder without config.json, so not a saved model. "
                f"Fix: point {field} at the folder save_pretrained wrote (it holds config.json and the weights)."
            )
        return
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(text, "config.json", revision=None if revision is None else str(revision))
    except Exception:  # noqa: BLE001 - a malformed id: from_pretrained's own message is clear enough then
        return
    if isinstance(cached, str):
        return  # in the local Hugging Face cache: loads without the network
    why = unreachable(f"hf://{text}")  # offline setting, or the Hub (HF_ENDPOINT) does not answer
    if why is not None:
        raise ConfigError(
            f"{field}={text!r} is a Hugging Face Hub id, the Hub is unreachable ({why}) and the model is not in the "
            f"local Hugging Face cache. Fix: download it where the network is available (huggingface-cli download "
            f"{text} --local-dir <folder>), then {field}=<folder>."
        )


def check_model_path(value: Any, field: str = "model.path", revision: Any = None) -> None:
    """Refuse a URL in ``model.path`` in one line (``from_pretrained`` reads only Hub ids and local folders).

    A local folder must exist and hold ``config.json``; a Hub id (``org/name``) must be reachable or in
    the local Hugging Face cache (a short TCP probe of huggingface.co, once per process).  For a remote value the message names it
    exactly as given, says whether it could be read (unknown protocol, missing package, network
    unreachable, or reachable) and how to use it: ``hf://org/name`` -> ``model.path=org/name``; anything
    else -> download the folder, then ``model.path=/local/folder``.

    Raises:
        ConfigError: ``value`` is a URL or remote URI, a missing folder, a folder without config.json,
            or a Hub id that cannot be loaded now.
    """
    protocol = scheme(value)
    if protocol is None:
        _check_local_or_hub_model(value, field, revision)
        return
    value = str(value).strip()
    check_remote(value, field, folder=True)  # unknown protocol / missing package / offline
    if protocol == "hf":
        repo = urlparse(value).netloc + urlparse(value).path
        repo = repo[len("models/"):] if repo.startswith("models/") else repo
        repo = repo.strip("/")
        fix = f"{field}={repo.split('@', 1)[0]}" + (f" {field.rsplit('.', 1)[0]}.revision={repo.split('@', 1)[1]}" if "@" in repo else "")
        raise ConfigError(f"{field}={value!r} is an hf:// URI; from_pretrained takes the Hub id itself. Fix: {fix}")
    raise ConfigError(
        f"{field}={value!r} is a remote {protocol}:// location (reachable now), but from_pretrained reads only Hub ids "
        f"and local folders. Fix: download the folder (e.g. fsspec's get(..., recursive=True)), then {field}=/local/folder."
    )
