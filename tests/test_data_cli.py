"""The data commands: inspection flags, manifest rebuild with hash check, source listing."""

from __future__ import annotations

import io
import json
import random

from calib_sweep.data import cli
from calib_sweep.data.inspect import flags, guess_language, sample_stats
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
