"""Caches of calibration-set-independent work (issue 13): keys, damaged entries, concurrent writers, reuse in jobs."""

from __future__ import annotations

import json
import multiprocessing
import random

import numpy as np
import pytest
import torch

from calib_sweep import cache
from calib_sweep.data.sampling import token_stream, tokenize_documents
from calib_sweep.data.sources import Document
from calib_sweep.methods.kl import reference_logprobs, reference_logprobs_cached
from conftest import make_text
from helpers import compose_cfg, tiny_overrides


@pytest.fixture
def docs():
    rng = random.Random(1)
    return [Document(f"d{i}", make_text(rng, rng.randint(20, 60))) for i in range(30)]


@pytest.fixture
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_token_stream_is_computed_once_then_memory_mapped(isolated_cache, docs, tokenizer):
    stream, starts, info = token_stream(docs, tokenizer, 1)
    assert info["reused"] is False
    again, starts_again, info_again = token_stream(docs, tokenizer, 1)
    assert info_again == {"reused": True, "key": info["key"]}
    assert isinstance(again, np.memmap) and not again.flags.writeable
    expected = [t for ids in tokenize_documents(docs, tokenizer, 1) for t in ids]
    assert again.tolist() == stream.tolist() == expected
    assert starts_again.tolist() == starts.tolist() and starts[-1] == len(expected)


def test_changed_source_tokenizer_or_separator_never_reuses_an_entry(isolated_cache, docs, tokenizer):
    _, _, base = token_stream(docs, tokenizer, 1)
    edited = [*docs[:-1], Document(docs[-1].doc_id, docs[-1].text + " river")]
    assert token_stream(edited, tokenizer, 1)[2]["reused"] is False
    assert token_stream(docs, tokenizer, 0)[2]["reused"] is False  # another separator
    tokenizer.add_tokens(["riverside"])  # another vocabulary
    changed = token_stream(docs, tokenizer, 1)[2]
    assert changed["reused"] is False and changed["key"] != base["key"]


def test_damaged_entry_is_computed_again(isolated_cache, docs, tokenizer):
    stream, _, info = token_stream(docs, tokenizer, 1)
    data = isolated_cache / "token_streams" / f"{info['key']}.stream.npy"
    data.write_bytes(data.read_bytes()[:-40])  # a half-written (truncated) file
    again, _, info_again = token_stream(docs, tokenizer, 1)
    assert info_again["reused"] is False and again.tolist() == stream.tolist()
    assert token_stream(docs, tokenizer, 1)[2]["reused"] is True  # repaired
    (isolated_cache / "token_streams" / f"{info['key']}.json").write_text("{not json")
    assert token_stream(docs, tokenizer, 1)[2]["reused"] is False


def _write_entry(args):
    folder, value = args
    import os

    os.environ["CALIB_SWEEP_CACHE"] = folder
    arrays, info = cache.cached_arrays("demo", {"x": 1}, lambda: {"a": np.full(2_000_000, value, dtype=np.int64)})
    return int(arrays["a"][0]), info["reused"]


def test_concurrent_writers_leave_one_valid_entry(isolated_cache):
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        results = pool.map(_write_entry, [(str(isolated_cache), 7), (str(isolated_cache), 7)])
    assert [v for v, _ in results] == [7, 7]
    arrays, info = cache.cached_arrays("demo", {"x": 1}, lambda: pytest.fail("must be reused"))
    assert info["reused"] is True and int(arrays["a"][-1]) == 7
    assert not list((isolated_cache / "demo").glob(".*.part"))


def test_kl_reference_is_cached_per_model_windows_and_dtype(isolated_cache, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    ids = torch.randint(2, 60, (2, 16), generator=torch.Generator().manual_seed(0))
    ident = {"name": "tiny"}
    first, info = reference_logprobs_cached(model, ids, ident)
    second, info2 = reference_logprobs_cached(model, ids, ident)
    direct = reference_logprobs(model, ids)
    assert (info["reused"], info2["reused"]) == (False, True)
    assert torch.equal(second.values, direct.values) and torch.equal(second.indices, direct.indices)
    assert reference_logprobs_cached(model, ids[:, :8].contiguous(), ident)[1]["reused"] is False
    assert reference_logprobs_cached(model.to(torch.bfloat16), ids, ident)[1]["reused"] is False
    assert reference_logprobs_cached(model, ids, {"name": "other"})[1]["reused"] is False


def test_second_job_reuses_every_cache_and_says_so(isolated_cache, tiny_model_dir, tiny_corpus, tmp_path):
    from calib_sweep.job import run_job

    cfg = compose_cfg([*tiny_overrides(tiny_model_dir, tiny_corpus), "method=rtn", "threads=1"])
    before = torch.get_num_threads()
    try:
        first = run_job(cfg, tmp_path / "a")
        second = run_job(compose_cfg([*tiny_overrides(tiny_model_dir, tiny_corpus), "method=rtn", "threads=1",
                                      "seed=1"]), tmp_path / "b")
    finally:
        torch.set_num_threads(before)
    assert {k: v["reused"] for k, v in first["caches"].items()} == {
        "token_stream": False, "heldout_stream/local_jsonl": False, "kl_reference": False, "dense_baseline": False}
    assert all(v["reused"] for v in second["caches"].values()), second["caches"]
    assert second["calibration"]["token_sha256"] != first["calibration"]["token_sha256"]  # another set
    assert json.loads((tmp_path / "b" / "results.json").read_text())["caches"] == second["caches"]
