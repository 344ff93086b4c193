"""URLs and remote URIs in path fields (calib_sweep.paths): recognised, named exactly as given, and
the error says whether they can be read (unknown protocol, missing package, network unreachable).

The network is off here except 127.0.0.1: the offline cases mock the reachability probe (deterministic
and instant), and the online reads go through a real ``http.server`` on 127.0.0.1 serving fixture files,
read by fsspec / ``datasets`` exactly as a remote server would be.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import socket
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from calib_sweep import paths
from calib_sweep.data import load_documents, validate_source
from calib_sweep.errors import ConfigError
from calib_sweep.evaluation import validate_eval
from helpers import compose_cfg

UNREACHABLE = "gaierror: [Errno -3] Temporary failure in name resolution"


_REAL_PROBE = paths._probe


@pytest.fixture(autouse=True)
def _fresh_probe_cache():
    _REAL_PROBE.cache_clear()
    yield
    _REAL_PROBE.cache_clear()


@pytest.fixture
def offline(monkeypatch):
    """Every server unreachable (the probe is mocked: deterministic, no wait)."""
    calls = []

    def probe(host, port, timeout):
        calls.append((host, port, timeout))
        return UNREACHABLE

    monkeypatch.setattr(paths, "_probe", probe)
    return calls


@pytest.fixture
def served(tmp_path):
    """A real HTTP server on 127.0.0.1 serving ``tmp_path/www``; yields ``(folder, base URL)``."""
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _write_jsonl(path: Path, rows: list[dict], opener=open) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with opener(path, "wt", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    return path


ROWS = [{"id": f"d{i}", "text": f"remote calibration document number {i}."} for i in range(12)]


def _one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message and "Fix:" in message
    return message


# ------------------------------------------------------------------------------------------------
# The rule


@pytest.mark.parametrize("value, expected", [
    ("s3://bucket/calib.jsonl", "s3"), ("HTTPS://host/x.jsonl", "https"), ("gs://b/x", "gs"), ("gcs://b/x", "gcs"),
    ("hf://datasets/org/name", "hf"), ("az://container/x", "az"), ("foo+bar://x", "foo+bar"),
    ("file:///tmp/x.jsonl", None), ("/data/x.jsonl", None), ("~/x.jsonl", None), ("org/name", None),
    ("C:/data/x.jsonl", None), ("s3:/bucket/x", None), (None, None), (3, None),
])
def test_scheme_recognises_urls_and_nothing_else(value, expected):
    assert paths.scheme(value) == expected
    assert paths.is_remote(value) is (expected is not None)


def test_helpers_keep_double_slashes_and_name_builders():
    assert paths.join("s3://bucket/c4/", "en/x.json.gz") == "s3://bucket/c4/en/x.json.gz"
    assert paths.basename("https://host/a/calib.jsonl?raw=1") == "calib.jsonl"
    assert paths.builder_for("s3://b/en/c4-train.00000-of-01024.json.gz") == "json"
    assert paths.builder_for("https://h/wiki.test.parquet") == "parquet"
    assert paths.builder_for("s3://b/folder") is None
    assert paths.local_path("file:///tmp/x.jsonl") == Path("/tmp/x.jsonl")
    with pytest.raises(ValueError):
        paths.local_path("s3://bucket/x")


def test_endpoints_by_protocol(monkeypatch):
    for var in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "HF_ENDPOINT", "STORAGE_EMULATOR_HOST", "AZURE_STORAGE_ACCOUNT_NAME"):
        monkeypatch.delenv(var, raising=False)
    assert paths.endpoint("s3://bucket/x") == ("s3.amazonaws.com", 443)
    assert paths.endpoint("gs://bucket/x") == ("storage.googleapis.com", 443)
    assert paths.endpoint("hf://datasets/org/name") == ("huggingface.co", 443)
    assert paths.endpoint("http://127.0.0.1:8123/x") == ("127.0.0.1", 8123)
    assert paths.endpoint("https://example.org/x") == ("example.org", 443)
    assert paths.endpoint("abfs://c@acct.dfs.core.windows.net/x") == ("acct.dfs.core.windows.net", 443)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://minio.local:9000")
    assert paths.endpoint("s3://bucket/x") == ("minio.local", 9000)


def test_real_probe_reports_a_refused_port_quickly():
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    start = time.perf_counter()
    why = paths.unreachable(f"http://127.0.0.1:{port}/calib.jsonl", timeout=2.0)
    assert why is not None and why.startswith(f"127.0.0.1:{port} unreachable") and "Refused" in why
    assert time.perf_counter() - start < 2.5


# ------------------------------------------------------------------------------------------------
# dataset.path of local_jsonl / local_hf_disk


def test_s3_path_is_named_verbatim(offline):
    cfg = compose_cfg(["dataset=local_jsonl", "dataset.path=s3://bucket/calib.jsonl"])
    for call in (validate_source, load_documents):
        with pytest.raises(ConfigError) as err:
            call(cfg.dataset)
        message = _one_line(err)
        assert "dataset.path='s3://bucket/calib.jsonl'" in message
        assert "s3:/bucket" not in message.replace("s3://bucket", "")
        # s3fs is not installed here: the package is named; with it installed, the (mocked) network is off.
        assert "pip install s3fs" in message or "network is unreachable" in message


def test_https_offline_fails_quickly_at_validation_with_the_local_copy_fix(offline):
    url = "https://example.org/data/calib.jsonl"
    cfg = compose_cfg(["dataset=local_jsonl", f"dataset.path={url}"])
    start = time.perf_counter()
    with pytest.raises(ConfigError) as err:
        validate_source(cfg.dataset)  # validate time: before any weights (or documents) load
    assert time.perf_counter() - start < 1.0
    message = _one_line(err)
    assert f"dataset.path='{url}'" in message and "network is unreachable" in message and UNREACHABLE in message
    assert "example.org:443" in message and "download it" in message and "dataset.path=/local/calib.jsonl" in message
    assert offline == [("example.org", 443, paths.PROBE_TIMEOUT_S)]


def test_unknown_protocol_is_named(offline):
    cfg = compose_cfg(["dataset=local_jsonl", "dataset.path=foo://bucket/calib.jsonl"])
    with pytest.raises(ConfigError) as err:
        validate_source(cfg.dataset)
    message = _one_line(err)
    assert "dataset.path='foo://bucket/calib.jsonl'" in message and "protocol 'foo'" in message
    assert not offline  # refused before any probe


@pytest.mark.parametrize("url, package", [
    ("s3://bucket/calib.jsonl", "s3fs"), ("gs://bucket/calib.jsonl", "gcsfs"), ("az://container/calib.jsonl", "adlfs"),
])
def test_missing_protocol_package_is_named(url, package, monkeypatch, offline):
    import fsspec

    real = fsspec.get_filesystem_class

    def without(protocol):  # as on a machine without the package, whatever is installed here
        if protocol in ("s3", "gs", "az"):
            raise ImportError(f"Install {package}")
        return real(protocol)

    monkeypatch.setattr(fsspec, "get_filesystem_class", without)
    with pytest.raises(ConfigError) as err:
        validate_source(compose_cfg(["dataset=local_hf_disk", f"dataset.path={url}"]).dataset)
    message = _one_line(err)
    assert f"dataset.path='{url}'" in message and f"pip install {package}" in message
    assert "dataset.path=/local/folder" in message  # a saved dataset is a folder


def test_local_paths_still_work(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "_probe", lambda *a: pytest.fail("probed the network for a local path"))
    corpus = _write_jsonl(tmp_path / "calib.jsonl", ROWS)
    for value in (str(corpus), f"file://{corpus}"):
        docs = load_documents(compose_cfg(["dataset=local_jsonl", f"dataset.path={value}"]).dataset)
        assert [d.doc_id for d in docs] == [r["id"] for r in ROWS]
    with pytest.raises(ConfigError, match=r"dataset.path='/nowhere/x.jsonl' does not exist"):
        load_documents(compose_cfg(["dataset=local_jsonl", "dataset.path=/nowhere/x.jsonl"]).dataset)


def test_jsonl_is_read_over_http(served, tmp_path):
    root, base = served
    _write_jsonl(root / "calib.jsonl", ROWS)
    _write_jsonl(root / "calib.jsonl.gz", ROWS, gzip.open)
    local = load_documents(compose_cfg(["dataset=local_jsonl", f"dataset.path={root / 'calib.jsonl'}"]).dataset)
    for name in ("calib.jsonl", "calib.jsonl.gz"):
        cfg = compose_cfg(["dataset=local_jsonl", f"dataset.path={base}/{name}"])
        validate_source(cfg.dataset)  # the real probe: 127.0.0.1 answers
        assert load_documents(cfg.dataset) == local
    with pytest.raises(ConfigError) as err:
        load_documents(compose_cfg(["dataset=local_jsonl", f"dataset.path={base}/missing.jsonl"]).dataset)
    message = _one_line(err)
    assert f"dataset.path='{base}/missing.jsonl' does not exist (its server answered" in message


# ------------------------------------------------------------------------------------------------
# Hub sources' local-copy path and data files


def test_hub_source_remote_copy_is_read_through_datasets(served, isolated_cache, monkeypatch, tmp_path):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")
    monkeypatch.setattr("calib_sweep.data.hub._probe", lambda *a: pytest.fail("probed the Hub for a remote copy"))
    root, base = served
    rows = [{"text": f"c4 shard 0 document {i}.", "timestamp": "2019", "url": f"https://e.org/{i}"} for i in range(30)]
    _write_jsonl(root / "c4" / "en" / "c4-train.00000-of-01024.json.gz", rows, gzip.open)
    cfg = compose_cfg(["dataset=c4", f"dataset.path={base}/c4", "dataset.max_documents=5"])
    validate_source(cfg.dataset)
    docs = load_documents(cfg.dataset)
    assert [d.text for d in docs] == [f"c4 shard 0 document {i}." for i in range(5)]
    assert [d.doc_id for d in docs] == [f"c4:{i}" for i in range(5)]


def test_hub_source_remote_copy_offline_and_without_files(offline, isolated_cache):
    with pytest.raises(ConfigError) as err:
        validate_source(compose_cfg(["dataset=c4", "dataset.path=https://mirror.example.org/c4"]).dataset)
    message = _one_line(err)
    assert "dataset.path='https://mirror.example.org/c4'" in message and "network is unreachable" in message
    with pytest.raises(ConfigError) as err:
        validate_source(compose_cfg(["dataset=wikitext", "dataset.path=https://mirror.example.org/wikitext",
                                     "dataset.data_files=null"]).dataset)
    message = _one_line(err)
    assert "'https://mirror.example.org/wikitext' is a remote copy" in message and "dataset.data_files" in message


def test_hf_dataset_uri_is_the_hub_repo():
    import calib_sweep.data.hub as hub

    cfg = compose_cfg(["dataset=c4", "dataset.path=hf://datasets/allenai/c4@abc123"])
    assert hub._hub_path(cfg.dataset) == ("allenai/c4", "abc123")
    validate_source(cfg.dataset)  # no network: a Hub id is checked when read
    assert hub._location(cfg.dataset)["path"] == "allenai/c4" and hub._location(cfg.dataset)["revision"] == "abc123"


# ------------------------------------------------------------------------------------------------
# Evaluation: perplexity text copies and StoryCloze files


def _eval_cfg(**over):
    base = {
        "perplexity": {"texts": [], "seq_len": 16, "max_windows": 2, "batch_size": 2, "hub_texts": [], "hub_sources": {}},
        "zeroshot": {"tasks": [], "limit": 5, "batch_size": 4, "num_fewshot": 0, "bootstrap_iters": 100, "local_files": {}},
    }
    for key, value in over.items():
        section, field = key.split("__")
        base[section][field] = value
    return OmegaConf.create(base)


def test_eval_remote_fields_are_checked_at_validation(offline):
    url = "https://example.org/wiki.test.parquet"
    with pytest.raises(ConfigError) as err:
        validate_eval(_eval_cfg(perplexity__hub_texts=["wikitext2"], perplexity__hub_sources={"wikitext2": {"path": url}}))
    message = _one_line(err)
    assert f"eval.perplexity.hub_sources.wikitext2.path='{url}'" in message and "network is unreachable" in message
    files = {"path": "parquet", "data_files": {"test": "s3://bucket/wiki.test.parquet"}}
    with pytest.raises(ConfigError) as err:
        validate_eval(_eval_cfg(perplexity__hub_texts=["wikitext2"], perplexity__hub_sources={"wikitext2": files}))
    assert "eval.perplexity.hub_sources.wikitext2.data_files='s3://bucket/wiki.test.parquet'" in _one_line(err)
    cloze = "gs://bucket/cloze_test.csv"
    with pytest.raises(ConfigError) as err:
        validate_eval(_eval_cfg(zeroshot__tasks=["storycloze_2016"], zeroshot__local_files={"storycloze_2016": cloze}))
    assert f"eval.zeroshot.local_files.storycloze_2016='{cloze}'" in _one_line(err)
    with pytest.raises(ConfigError, match=r"has an unknown format"):
        validate_eval(_eval_cfg(zeroshot__tasks=["storycloze_2016"],
                                zeroshot__local_files={"storycloze_2016": "https://example.org/cloze"}))


def test_perplexity_text_copy_is_read_over_http(served, tiny_model_dir, monkeypatch, tmp_path):
    import datasets
    from transformers import AutoTokenizer

    from calib_sweep.evaluation.perplexity import hub_text_tokens

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")
    root, base = served
    _write_jsonl(root / "wiki.test.jsonl", [{"text": "the city of the river"}, {"text": "was a new school"}])
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    source = {"path": f"{base}/wiki.test.jsonl"}
    validate_eval(_eval_cfg(perplexity__hub_texts=["wikitext2"], perplexity__hub_sources={"wikitext2": source}))
    tokens, info = hub_text_tokens("wikitext2", tokenizer, 8, source)
    assert tokens.tolist() == tokenizer("the city of the river\n\nwas a new school").input_ids
    assert info["source"]["data_files"] == {"test": f"{base}/wiki.test.jsonl"} and info["source"]["path"] == "json"
    with pytest.raises(ConfigError) as err:
        hub_text_tokens("wikitext2", tokenizer, 8, {"path": f"{base}/missing.jsonl"})
    assert f"eval.perplexity.hub_sources.wikitext2.path='{base}/missing.jsonl'" in _one_line(err)


def test_storycloze_url_reaches_lm_eval_verbatim_and_is_hashed(served, isolated_cache):
    from calib_sweep.evaluation import tasks
    from calib_sweep.evaluation.baseline import _file_identity

    root, base = served
    (root / "cloze.csv").write_text("input_sentence_1,answer_right_ending\nA,1\n")
    url = f"{base}/cloze.csv"
    folder = tasks.task_folder(["storycloze_2016"], {"storycloze_2016": url})
    text = (folder / "storycloze_2016.yaml").read_text()
    assert url in text and "http:/127" not in text
    digest = hashlib.sha256((root / "cloze.csv").read_bytes()).hexdigest()
    assert tasks.file_sha256(url) == digest
    assert _file_identity(url) == {"file": url, "sha256": digest}


# ------------------------------------------------------------------------------------------------
# model.path (the helper calib_sweep.models.sources calls)


def test_model_path_helper(offline, monkeypatch, tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    paths.check_model_path(str(tmp_path / "model"))  # a saved model folder: fine
    paths.check_model_path(None)
    with pytest.raises(ConfigError, match=r"model.path='/models/llama' is not a folder \(nothing there\)"):
        paths.check_model_path("/models/llama")
    with pytest.raises(ConfigError, match=r"is a folder without config.json"):
        paths.check_model_path(str(tmp_path))
    # A Hub id offline and not in the local Hugging Face cache: one line, before anything loads.
    with pytest.raises(ConfigError, match=r"model.path='huggyllama/llama-7b' is a Hugging Face Hub id, the Hub is "
                                          r"unreachable .* not in the local Hugging Face cache. Fix: download it"):
        paths.check_model_path("huggyllama/llama-7b")
    monkeypatch.setattr(paths, "_probe", lambda *a: None)  # online: left to from_pretrained
    paths.check_model_path("huggyllama/llama-7b")
    monkeypatch.setattr(paths, "_probe", lambda *a: "ConnectionRefusedError")
    with pytest.raises(ConfigError) as err:
        paths.check_model_path("https://example.org/models/llama")
    message = _one_line(err)
    assert "model.path='https://example.org/models/llama'" in message and "network is unreachable" in message
    assert "model.path=/local/folder" in message
    monkeypatch.setattr(paths, "_probe", lambda *a: None)  # online
    with pytest.raises(ConfigError) as err:
        paths.check_model_path("hf://meta-llama/Llama-2-7b-hf@abc")
    assert "Fix: model.path=meta-llama/Llama-2-7b-hf model.revision=abc" in _one_line(err)
    with pytest.raises(ConfigError) as err:
        paths.check_model_path("https://example.org/models/llama")
    assert "reachable now" in _one_line(err) and "from_pretrained" in str(err.value)
