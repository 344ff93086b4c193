"""Resume never returns results for data that changed (issue 24 item 1).

The config key covers a path, not the file: the skip check compares the content fingerprints of the
local inputs (:mod:`calib_sweep.inputs`) recorded by the finished job with this job's.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import logging
import os
import shutil
import threading

import pytest

from calib_sweep import inputs
from calib_sweep.job import run_job
from helpers import compose_cfg, tiny_overrides

#: The cheapest whole job on the tiny model: no compression, no dense baseline, no KL, no diagnostics.
FAST = ["method=dense", "eval.dense_baseline=false", "eval.kl_windows=0", "eval.layer_diagnostics=false"]


def _sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _rerun_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("rerunning:")]


def test_changed_file_reruns_with_one_line_unchanged_and_touched_skip(tiny_model_dir, tiny_corpus, tmp_path,
                                                                      isolated_cache, caplog, monkeypatch):
    cfg = compose_cfg(tiny_overrides(tiny_model_dir, tiny_corpus) + FAST)
    first = run_job(cfg, tmp_path / "a", resume=True)
    recorded = first["inputs"]["dataset.path"]
    assert first["status"] == "ok" and recorded["kind"] == "file" and recorded["sha256"] == _sha(tiny_corpus)
    assert recorded["bytes"] == tiny_corpus.stat().st_size and recorded["mtime_ns"] == tiny_corpus.stat().st_mtime_ns
    assert set(first["inputs"]) == {"dataset.path", "model.path"}  # the tiny model is a local folder too
    saved = json.loads((tmp_path / "a" / "results.json").read_text())
    assert saved["inputs"] == json.loads(json.dumps(first["inputs"]))
    # Unchanged: skipped, without reading the file again (the hash cache answers by path, size, mtime).
    reads = []
    real = inputs.assets.sha256_file
    monkeypatch.setattr(inputs.assets, "sha256_file", lambda p, *a: reads.append(str(p)) or real(p, *a))
    assert run_job(cfg, tmp_path / "b", resume=True)["status"] == "skipped" and reads == []
    # Touched, same bytes: read again once (new mtime), same SHA-256, still skipped.
    stat = tiny_corpus.stat()
    os.utime(tiny_corpus, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    assert run_job(cfg, tmp_path / "c", resume=True)["status"] == "skipped"
    assert reads == [str(tiny_corpus.resolve())]
    assert run_job(cfg, tmp_path / "c2", resume=True)["status"] == "skipped" and len(reads) == 1  # cached now
    assert _rerun_lines(caplog) == []
    # Changed content, same path: the job reruns and says why in one line.
    old_sha = _sha(tiny_corpus)
    lines = tiny_corpus.read_text().splitlines()
    tiny_corpus.write_text("\n".join(lines[1:]) + "\n")
    caplog.set_level(logging.INFO, logger="calib_sweep.job")
    again = run_job(cfg, tmp_path / "d", resume=True)
    assert again["status"] == "ok" and again["config_key"] == first["config_key"]  # the key is unchanged
    assert again["inputs"]["dataset.path"]["sha256"] == _sha(tiny_corpus) != old_sha
    assert again["calibration"]["token_sha256"] != first["calibration"]["token_sha256"]
    (line,) = _rerun_lines(caplog)
    assert line == (f"rerunning: dataset.path {tiny_corpus.resolve()} changed since the finished job "
                    f"(sha256 {old_sha[:12]} -> sha256 {_sha(tiny_corpus)[:12]}) "
                    f"[finished job: {(tmp_path / 'a' / 'results.json').resolve()}]")
    # The index now points at the rerun: the next sweep skips it.
    assert run_job(cfg, tmp_path / "e", resume=True)["status"] == "skipped"
    assert json.loads((tmp_path / "e" / "skipped.json").read_text())["results"] == str((tmp_path / "d" / "results.json").resolve())


def test_changed_model_folder_reruns_and_old_results_without_inputs_skip(tiny_model_dir, tiny_corpus, tmp_path,
                                                                         isolated_cache, caplog):
    model_dir = shutil.copytree(tiny_model_dir, tmp_path / "model")
    cfg = compose_cfg(tiny_overrides(model_dir, tiny_corpus) + FAST)
    first = run_job(cfg, tmp_path / "a", resume=True)
    entry = first["inputs"]["model.path"]
    assert entry["kind"] == "folder" and entry["files"] == len([p for p in model_dir.iterdir() if p.is_file()])
    # A hidden folder (e.g. huggingface_hub's .cache/) is not part of the model.
    (model_dir / ".cache").mkdir()
    (model_dir / ".cache" / "lock").write_text("x")
    assert run_job(cfg, tmp_path / "b", resume=True)["status"] == "skipped"
    caplog.set_level(logging.INFO, logger="calib_sweep.job")
    (model_dir / "README.md").write_text("a model card added after the first sweep\n")
    rerun = run_job(cfg, tmp_path / "c", resume=True)
    assert rerun["status"] == "ok" and rerun["inputs"]["model.path"]["files"] == entry["files"] + 1
    (line,) = _rerun_lines(caplog)
    assert line.startswith(f"rerunning: model.path {model_dir.resolve()} changed since the finished job (sha256 "
                           f"{entry['sha256'][:12]} -> sha256 {rerun['inputs']['model.path']['sha256'][:12]})")
    # Results written before inputs were recorded (the committed replication's) still count as finished.
    results = tmp_path / "c" / "results.json"
    old = json.loads(results.read_text())
    del old["inputs"]
    results.write_text(json.dumps(old))
    (model_dir / "README.md").write_text("edited again\n")
    assert run_job(cfg, tmp_path / "d", resume=True)["status"] == "skipped"


def test_folder_source_fingerprint_follows_content_not_mtime(tmp_path, isolated_cache):
    folder = tmp_path / "saved"
    folder.mkdir()
    (folder / "data-00000-of-00001.arrow").write_bytes(b"rows" * 100)
    (folder / "state.json").write_text("{}")
    cfg = {"dataset": {"loader": "hf_disk", "path": str(folder)}}
    first = inputs.job_inputs(cfg)
    assert first["dataset.path"]["kind"] == "folder" and first["dataset.path"]["files"] == 2
    assert first["dataset.path"]["bytes"] == 402
    os.utime(folder / "state.json", ns=(0, 10**18))
    assert inputs.changed(first, inputs.job_inputs(cfg)) is None
    (folder / "state.json").write_text('{"x": 1}')
    reason = inputs.changed(first, inputs.job_inputs(cfg))
    assert reason.startswith(f"dataset.path {folder.resolve()} changed since the finished job (sha256 ")
    # A Hub source's local copy: only the files its data_files name.
    (folder / "other.parquet").write_bytes(b"unused")
    hub = {"dataset": {"loader": "hub", "path": str(folder), "data_files": {"train": "data-*.arrow"}}}
    assert inputs.job_inputs(hub)["dataset.path"]["files"] == 1
    # A Hub id is not a local input; a missing local_jsonl file is recorded as missing.
    assert inputs.job_inputs({"dataset": {"loader": "hub", "path": "allenai/c4"}}) == {}
    missing = inputs.job_inputs({"dataset": {"loader": "jsonl", "path": str(tmp_path / "gone.jsonl")}})
    assert missing == {"dataset.path": {"path": str(tmp_path / "gone.jsonl"), "missing": True}}
    assert "(sha256 " in inputs.changed(inputs.job_inputs({"dataset": {"loader": "hf_disk", "path": str(folder)}}),
                                         {"dataset.path": missing["dataset.path"]})


def test_storycloze_file_is_an_input_only_when_its_task_runs(tmp_path, isolated_cache):
    cloze = tmp_path / "cloze_test.csv"
    cloze.write_text("input_sentence_1,answer_right_ending\na,1\n")
    cfg = {"eval": {"zeroshot": {"tasks": ["storycloze_2016"], "local_files": {"storycloze_2016": str(cloze)}}}}
    first = inputs.job_inputs(cfg)
    assert first["eval.zeroshot.local_files.storycloze_2016"]["sha256"] == _sha(cloze)
    cloze.write_text("input_sentence_1,answer_right_ending\nb,2\n")
    assert inputs.changed(first, inputs.job_inputs(cfg)).startswith(
        f"eval.zeroshot.local_files.storycloze_2016 {cloze.resolve()} changed since the finished job")
    cfg["eval"]["zeroshot"]["tasks"] = ["piqa"]
    assert inputs.job_inputs(cfg) == {}


@pytest.fixture
def http_folder(tmp_path):
    """A local HTTP server over ``tmp_path/www`` (it sends Last-Modified and Content-Length, no ETag)."""
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_remote_url_is_keyed_by_url_and_http_headers(http_folder, tmp_path):
    root, base = http_folder
    (root / "docs.jsonl").write_text('{"id": "a", "text": "x"}\n')
    os.utime(root / "docs.jsonl", (1_700_000_000, 1_700_000_000))
    cfg = {"dataset": {"loader": "jsonl", "path": f"{base}/docs.jsonl"}}
    first = inputs.job_inputs(cfg)["dataset.path"]
    assert first == {"remote": f"{base}/docs.jsonl", "fingerprint": "http headers",
                     "last_modified": "Tue, 14 Nov 2023 22:13:20 GMT", "bytes": "25"}
    os.utime(root / "docs.jsonl", (1_700_000_100, 1_700_000_100))
    reason = inputs.changed({"dataset.path": first}, inputs.job_inputs(cfg))
    assert reason == (f"dataset.path {base}/docs.jsonl changed since the finished job (ETag None Last-Modified "
                      "Tue, 14 Nov 2023 22:13:20 GMT -> ETag None Last-Modified Tue, 14 Nov 2023 22:15:00 GMT)")
    # No server (or a protocol without headers): keyed by the URL only.
    s3 = {"dataset": {"loader": "jsonl", "path": "s3://bucket/docs.jsonl"}}
    entry = inputs.job_inputs(s3)["dataset.path"]
    assert entry == {"remote": "s3://bucket/docs.jsonl", "fingerprint": "remote: not fingerprinted"}
    assert inputs.changed({"dataset.path": first}, {"dataset.path": {**first, "last_modified": None}}) is None
