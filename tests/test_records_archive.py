"""Records archive (``resume.archive_dir``): a long grid resumes from committed records on a new checkout,
where its sweep folders and ``multirun/.index`` are gone, and the report reads the archive."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from calib_sweep import job, tracking
from calib_sweep.errors import ConfigError
from helpers import compose_cfg, run_cli, tiny_overrides

KEY = "ab" * 32


def _finished(folder, key=KEY, status="ok", items=True):
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({"status": status, "config_key": key, "metrics": {"x": 1.5}}))
    if items:
        (folder / "items.npz").write_bytes(b"PK\x03\x04 not really a zip")
    return folder / "results.json"


def test_archive_copies_record_and_items_and_finds_them_by_key(tmp_path):
    results = _finished(tmp_path / "sweep" / "0_job")
    target = tracking.archive_finished(KEY, results, tmp_path / "records")
    assert target == tmp_path / "records" / KEY[:16]
    assert json.loads((target / "results.json").read_text())["metrics"] == {"x": 1.5}
    assert (target / "items.npz").read_bytes() == b"PK\x03\x04 not really a zip"
    assert sorted(p.name for p in target.iterdir()) == ["items.npz", "results.json"]  # no temporary files left
    assert tracking.find_archived(KEY, tmp_path / "records") == (target / "results.json").resolve()
    assert tracking.find_archived("cd" * 32, tmp_path / "records") is None  # another key
    assert tracking.find_archived(KEY, None) is None and tracking.find_archived(KEY, 7) is None


def test_a_failed_or_foreign_record_in_the_archive_is_not_a_finished_job(tmp_path):
    failed = _finished(tmp_path / "a", status="failed", items=False)
    tracking.archive_finished(KEY, failed, tmp_path / "records")
    assert tracking.find_archived(KEY, tmp_path / "records") is None
    # a record whose key only shares the 16-digit prefix is not this job
    other = KEY[:16] + "0" * 48
    _finished(tmp_path / "b", key=other, items=False)
    shutil.copy(tmp_path / "b" / "results.json", tmp_path / "records" / KEY[:16] / "results.json")
    assert tracking.find_archived(KEY, tmp_path / "records") is None
    assert tracking.find_archived(other, tmp_path / "records") is not None


@pytest.mark.parametrize("value", ["''", "3", "[a,b]"])
def test_bad_archive_dir_is_one_line(value):
    with pytest.raises(ConfigError, match=r"resume.archive_dir=.* is not a folder path. Fix: resume.archive_dir=<folder>"):
        job.validate(compose_cfg([f"resume.archive_dir={value}"]))


def test_archive_dir_that_is_a_file_or_not_writable_is_refused_before_work(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match=r"resume.archive_dir=.*file' is a file, not a folder. Fix:"):
        job.validate(compose_cfg([f"resume.archive_dir={tmp_path / 'file'}"]))
    # no write access (root ignores mode bits, so that case is simulated through os.access)
    real_access = os.access
    os.access = lambda path, mode: False if str(path).endswith("locked") else real_access(path, mode)
    try:
        (tmp_path / "locked").mkdir()
        with pytest.raises(ConfigError, match=r"no write access to .*locked'. Fix:"):
            job.validate(compose_cfg([f"resume.archive_dir={tmp_path / 'locked' / 'records'}"]))
    finally:
        os.access = real_access
    job.validate(compose_cfg([f"resume.archive_dir={tmp_path / 'new' / 'records'}"]))  # creatable: accepted


def test_new_checkout_resumes_from_the_archive_and_reports_it(tiny_model_dir, tiny_corpus, tmp_path):
    base = ["-m", *tiny_overrides(tiny_model_dir, tiny_corpus), "method=wanda", "seed=0,1", "resume.archive_dir=records"]
    first = run_cli([*base, "hydra.sweep.dir=multirun/first"], tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    archived = sorted((tmp_path / "records").glob("*/results.json"))
    assert len(archived) == 2
    records = [json.loads(p.read_text()) for p in archived]
    assert {r["status"] for r in records} == {"ok"} and {r["config"]["seed"] for r in records} == {0, 1}
    assert all(p.parent.name == r["config_key"][:16] for p, r in zip(archived, records))
    # A new checkout: the sweep folders and the index are gone, the committed records remain.
    shutil.rmtree(tmp_path / "multirun")
    again = run_cli([*base, "hydra.sweep.dir=multirun/again"], tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    pointers = [json.loads(p.read_text()) for p in (tmp_path / "multirun/again").rglob("skipped.json")]
    assert sorted(p["results"] for p in pointers) == sorted(str(p.resolve()) for p in archived)
    assert not list((tmp_path / "multirun/again").rglob("results.json"))  # nothing recomputed
    from calib_sweep.report import collect

    jobs = collect.load([tmp_path / "records"])
    assert sorted(j.seed for j in jobs if j.status == "ok") == [0, 1]
    by_seed = {r["config"]["seed"]: r["metrics"] for r in records}
    assert {j.seed: j.metrics for j in jobs} == by_seed
