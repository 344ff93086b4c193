"""Dense baseline: computed once per (model, eval config), cached under a lock, reused; deltas."""

from __future__ import annotations

import json
import multiprocessing
import time
from pathlib import Path

import pytest
import torch

from calib_sweep.evaluation import baseline
from calib_sweep.evaluation.baseline import baseline_key, deltas, dense_baseline

from helpers import compose_cfg, tiny_overrides

TEXTS = {"local_jsonl": torch.arange(100, dtype=torch.int64)}


def _cfg(tmp_path: Path, *extra: str):
    return compose_cfg(tiny_overrides(tmp_path / "model", tmp_path / "corpus.jsonl") + list(extra))


def _fake(counter: list, value: float = 10.0):
    def compute():
        counter.append(1)
        return {"perplexity/local_jsonl": value, "zeroshot/arc_easy/acc": 0.5}, {"perplexity/local_jsonl": {"windows": 2}}

    return compute


def test_computed_once_then_reused(isolated_cache, tmp_path):
    calls: list = []
    cfg = _cfg(tmp_path, "method=gptq", "seed=0")
    first = dense_baseline(cfg, _fake(calls), texts=TEXTS)
    assert first["reused"] is False and len(calls) == 1
    path = isolated_cache / "baselines" / f"{first['key']}.json"
    assert Path(first["path"]) == path and path.is_file()
    # Another job of the sweep: other method, seed, calibration size -> same baseline.
    other = _cfg(tmp_path, "method=wanda", "seed=3", "samples.n_samples=2")
    second = dense_baseline(other, _fake(calls, value=99.0), texts=TEXTS)
    assert second["reused"] is True and len(calls) == 1
    assert second["key"] == first["key"] and second["metrics"] == first["metrics"]
    assert json.loads(path.read_text())["details"] == {"perplexity/local_jsonl": {"windows": 2}}


def test_key_follows_model_eval_and_texts(tmp_path):
    base = baseline_key(_cfg(tmp_path), TEXTS)
    assert baseline_key(_cfg(tmp_path, "method=wanda", "seed=5"), TEXTS) == base
    assert baseline_key(_cfg(tmp_path, "eval.perplexity.seq_len=32"), TEXTS) != base
    assert baseline_key(_cfg(tmp_path, "model.name=other-llama"), TEXTS) != base
    assert baseline_key(_cfg(tmp_path, "dtype=bfloat16"), TEXTS) != base
    assert baseline_key(_cfg(tmp_path), {"local_jsonl": torch.arange(101, dtype=torch.int64)}) != base
    assert baseline_key(_cfg(tmp_path, "eval.zeroshot.limit=7"), TEXTS) != base


def test_dense_job_stores_its_own_figures(isolated_cache, tmp_path):
    calls: list = []
    cfg = _cfg(tmp_path, "method=dense")
    own = ({"perplexity/local_jsonl": 12.5}, {"perplexity/local_jsonl": {"windows": 8}})
    stored = dense_baseline(cfg, _fake(calls), own=own, texts=TEXTS)
    assert calls == [] and stored["metrics"] == own[0] and stored["reused"] is False
    later = dense_baseline(_cfg(tmp_path, "method=gptq"), _fake(calls), texts=TEXTS)
    assert calls == [] and later["reused"] is True and later["metrics"] == own[0]


def test_corrupt_cache_file_is_recomputed(isolated_cache, tmp_path):
    calls: list = []
    cfg = _cfg(tmp_path)
    key = baseline_key(cfg, TEXTS)
    path = baseline.baseline_path(key)
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    out = dense_baseline(cfg, _fake(calls), texts=TEXTS)
    assert len(calls) == 1 and out["reused"] is False and json.loads(path.read_text())["metrics"] == out["metrics"]


def test_failed_compute_caches_nothing(isolated_cache, tmp_path):
    cfg = _cfg(tmp_path)

    def boom():
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        dense_baseline(cfg, boom, texts=TEXTS)
    assert not baseline.baseline_path(baseline_key(cfg, TEXTS)).exists()


def _worker(cfg_yaml: str, cache: str, log: str, out: str) -> None:
    import os

    from omegaconf import OmegaConf

    os.environ["CALIB_SWEEP_CACHE"] = cache
    cfg = OmegaConf.create(cfg_yaml)

    def compute():
        with open(log, "a") as handle:
            handle.write("computed\n")
        time.sleep(1.0)
        return {"perplexity/local_jsonl": 3.0}, {}

    result = dense_baseline(cfg, compute, texts=TEXTS)
    Path(out).write_text(json.dumps({"reused": result["reused"], "key": result["key"]}))


def test_parallel_jobs_compute_it_once(isolated_cache, tmp_path):
    from omegaconf import OmegaConf

    cfg_yaml = OmegaConf.to_yaml(_cfg(tmp_path), resolve=True)
    log = tmp_path / "computed.log"
    ctx = multiprocessing.get_context("fork")
    procs = [
        ctx.Process(target=_worker, args=(cfg_yaml, str(isolated_cache), str(log), str(tmp_path / f"out{i}.json")))
        for i in range(3)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    assert log.read_text().count("computed") == 1
    outs = [json.loads((tmp_path / f"out{i}.json").read_text()) for i in range(3)]
    assert sorted(o["reused"] for o in outs) == [False, True, True] and len({o["key"] for o in outs}) == 1


def test_deltas_are_differences_on_shared_finite_keys():
    job = {"perplexity/wiki": 25.0, "zeroshot/arc_easy/acc": 0.40, "zeroshot/mean_acc": 0.5, "only/job": 1.0,
           "compression/mean_sparsity": 0.5, "bad": float("nan"), "flag": True}
    dense = {"perplexity/wiki": 21.6, "zeroshot/arc_easy/acc": 0.55, "zeroshot/mean_acc": 0.6, "bad": 1.0, "flag": False}
    out = deltas(job, dense)
    assert set(out) == {"perplexity/wiki", "zeroshot/arc_easy/acc", "zeroshot/mean_acc"}
    assert out["perplexity/wiki"] == pytest.approx(3.4) and out["zeroshot/arc_easy/acc"] == pytest.approx(-0.15)


def test_compute_does_not_change_the_global_generators(isolated_cache, tmp_path):
    import random

    def reseeding():
        random.seed(0)
        torch.manual_seed(1234)
        return {"perplexity/local_jsonl": 1.0}, {}

    torch.manual_seed(7)
    random.seed(7)
    expected = (torch.rand(3), random.random())
    torch.manual_seed(7)
    random.seed(7)
    dense_baseline(_cfg(tmp_path), reseeding, texts=TEXTS)
    assert torch.equal(torch.rand(3), expected[0]) and random.random() == expected[1]
