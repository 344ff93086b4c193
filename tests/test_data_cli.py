"""The data commands: inspection flags, manifest rebuild with hash check, source listing."""

from __future__ import annotations

import io
import json
import random

import pytest

from calib_sweep.data import cli
from calib_sweep.data.inspect import flags, guess_language, sample_stats
from calib_sweep.errors import ConfigError
from calib_sweep.job import run_job
from conftest import make_text, write_jsonl
from helpers import compose_cfg, tiny_overrides


def test_stats_and_flags_on_known_samples():
    prose = "The river runs through the city and it was known for its bridges. " * 3
    ok = sample_stats(prose, list(range(40)))
    assert ok["language"] == "en" and ok["non_alpha"] < 0.1 and flags(ok) == []
    junk = sample_stats("|---|---|\n|---|---|\n|---|---|\n" * 4, [5] * 64)
    found = flags(junk)
    assert junk["repeated_lines"] == 1.0 and junk["distinct_tokens"] == round(1 / 64, 4)
    assert any("non-alphabetic" in f for f in found) and any("repeated lines" in f for f in found)
    assert any("distinct tokens" in f for f in found)
    assert guess_language("import os\ndef main():\n    return os.getcwd()\n") == "code"


def test_inspect_flags_a_repeated_token_sample(tiny_model_dir, tmp_path):
    rng = random.Random(0)
    docs = [make_text(rng, 300) for _ in range(20)] + ["the " * 400]
    corpus = write_jsonl(tmp_path / "c.jsonl", docs)
    overrides = tiny_overrides(tiny_model_dir, corpus) + ["samples.n_samples=60", "samples.seq_len=64",
                                                          "dataset.heldout_fraction=0.0"]
    out = io.StringIO()
    rows = cli.cmd_inspect(None, overrides, show=1, out=out)
    assert len(rows) == 60
    flagged = [r for r in rows if any("distinct tokens" in f for f in r["flags"])]
    # Only windows inside the 400-token "the the ..." document (at most 7 of them) are flagged.
    assert 1 <= len(flagged) <= 7 and all(r["distinct_tokens"] <= 0.2 for r in flagged)
    assert all("the" in r["text"] for r in flagged)
    assert f"{len([r for r in rows if r['flags']])} of 60 samples flagged" in out.getvalue()
    assert "base weights: checkpoint weights\n" in out.getvalue() and "warning:" not in out.getvalue()


def test_inspect_warns_when_the_default_gptq_grid_is_the_embedded_models_own():
    out = io.StringIO()
    cli.cmd_inspect(None, ["samples=tiny"], show=0, out=out, use_model=False)
    lines = out.getvalue().splitlines()
    assert "base weights: GGUF SmolLM2-135M-Instruct.Q4_1.gguf: Q4_1 (4-bit g32 asymmetric) 100% of linear weights" in lines
    assert ("warning: method=gptq: 4-bit g64 on weights already on a 4-bit g32 asymmetric grid (GGUF Q4_1, 100% of "
            "linear weights within 1 bit of the job's): rounding is favoured") in lines


def test_rebuild_from_manifest_checks_the_hash(tiny_model_dir, tiny_corpus, tmp_path):
    record = run_job(compose_cfg(tiny_overrides(tiny_model_dir, tiny_corpus) + ["method=dense"]), tmp_path / "job")
    results = tmp_path / "job" / "results.json"
    out = io.StringIO()
    assert cli.cmd_rebuild(str(results), str(tmp_path / "set.jsonl"), out=out) is True
    assert out.getvalue().startswith("OK: rebuilt 4 x 64 tokens")
    exported = [json.loads(line) for line in (tmp_path / "set.jsonl").read_text().splitlines()]
    assert len(exported) == 4 and exported[0]["pieces"] == record["calibration"]["sequences"][0]["pieces"]
    # Tamper with one span: the rebuilt tokens no longer match the recorded hash.
    record["calibration"]["sequences"][0]["pieces"][0]["start"] += 1
    record["calibration"]["sequences"][0]["pieces"][0]["end"] += 1
    results.write_text(json.dumps(record))
    out = io.StringIO()
    assert cli.cmd_rebuild(str(results), None, out=out) is False and "MISMATCH" in out.getvalue()
    assert cli.main(["rebuild", str(results)]) == 1


def test_sources_lists_local_sizes(tiny_model_dir, tiny_corpus):
    out = io.StringIO()
    rows = {r["name"]: r for r in cli.cmd_sources(tiny_overrides(tiny_model_dir, tiny_corpus), out=out)}
    assert rows["c4"]["loader"] == "hub" and "Hub" in rows["c4"]["note"]
    assert "sources for tokenizer of tiny-llama" in out.getvalue()


def test_rebuild_refuses_a_selection_manifest_without_pool_or_with_an_unknown_strategy(tiny_model_dir, tiny_corpus, tmp_path):
    overrides = tiny_overrides(tiny_model_dir, tiny_corpus) + ["method=dense", "selection=lexical_diversity"]
    run_job(compose_cfg(overrides), tmp_path / "job")
    results = tmp_path / "job" / "results.json"
    original = results.read_text()
    out = io.StringIO()
    assert cli.cmd_rebuild(str(results), None, out=out) is True
    assert "selection=lexical_diversity: 4 of 4 windows lie in the recorded share" in out.getvalue()
    damaged = json.loads(results.read_text())
    del damaged["calibration"]["selection"]["pool"]
    results.write_text(json.dumps(damaged))
    out = io.StringIO()
    assert cli.cmd_rebuild(str(results), None, out=out) is False  # no KeyError: a clear verdict
    assert out.getvalue().startswith("OK: rebuilt") and "MISMATCH: selection=lexical_diversity records no pool" in out.getvalue()
    renamed = json.loads(original)
    renamed["calibration"]["selection"]["strategy"] = "bogus"
    results.write_text(json.dumps(renamed))
    out = io.StringIO()
    assert cli.cmd_rebuild(str(results), None, out=out) is False
    assert "MISMATCH: selection strategy 'bogus' is not one of" in out.getvalue()


@pytest.mark.parametrize("overrides, kwargs, match", [
    (["selection=best"], {}, r"Could not find 'selection/best' .*Available options in 'selection': .*activation_diversity"),
    (["selection.bnd=low"], {}, r"Could not override 'selection.bnd'. .*\+selection.bnd=low"),
    (["selection=perplexity"], {"use_model": False}, r"--no-model was given, but selection=perplexity chooses windows by "
                                                     r"the scores of the dense model. Fix: drop --no-model."),
    (["dataset=self_generated"], {"use_model": False}, r"--no-model was given, but dataset=self_generated is generated by"),
    ([], {"use_model": False, "coverage": True}, r"--coverage needs the dense model, but --no-model was given"),
    (["selection=activation_diversity", "selection.layer=999"], {}, r"selection.layer=999 does not exist in a model of 2 layers"),
    (["selection=perplexity", "dataset=self_generated"], {}, r"selection=perplexity chooses among a source's windows"),
    (["samples.allow_fewer=maybe"], {}, r"samples.allow_fewer='maybe' must be true or false\. Fix: samples.allow_fewer=true"),
    (["samples.n_samples=0"], {"use_model": False}, r"samples.n_samples=0 must be a positive integer"),
])
def test_inspect_refuses_bad_input_in_one_line_before_weights(tiny_model_dir, tiny_corpus, monkeypatch, overrides, kwargs, match):
    from calib_sweep import models

    def no_weights(*args, **kw):
        raise AssertionError("the weights were loaded")

    monkeypatch.setattr(models, "load_model", no_weights)
    base = tiny_overrides(tiny_model_dir, tiny_corpus)
    if any(o.startswith("dataset=") for o in overrides):  # another source: drop the local corpus's fields
        base = [o for o in base if not o.startswith("dataset")]
    with pytest.raises(ConfigError, match=match) as err:
        cli.cmd_inspect(None, base + overrides, show=0, out=io.StringIO(), **kwargs)
    assert "\n" not in str(err.value)
    assert cli.main(["inspect", *base, *overrides]
                    + (["--no-model"] if kwargs.get("use_model") is False else [])
                    + (["--coverage"] if kwargs.get("coverage") else [])) == 2
