"""A report rebuilt from a committed jobs.csv (``calib-sweep-report docs/replication/jobs.csv``) when the job
folders are gone: the same groups, statistics and noise floor as the report read from the folders."""

from __future__ import annotations

import csv

import pytest

from calib_sweep.report import write_report
from calib_sweep.report.__main__ import main as report_main
from test_report_evidence import _noise_sweep


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_report_from_its_jobs_csv_equals_the_report_from_the_folders(tmp_path):
    first = write_report([_noise_sweep(tmp_path)], tmp_path / "a", wandb=False)
    again = write_report([first.out / "jobs.csv"], tmp_path / "b", wandb=False)
    names = sorted(p.name for p in first.out.glob("*.csv"))
    assert {"summary.csv", "noise_floor.csv", "evidence.csv", "jobs.csv", "main_table.csv"} <= set(names)
    assert names == sorted(p.name for p in again.out.glob("*.csv"))
    for name in names:
        a, b = _rows(first.out / name), _rows(again.out / name)
        assert a == b, name
    assert len(_rows(first.out / "noise_floor.csv")) >= 2  # the perturbations were read back from the CSV
    assert [j.repeat for j in first.summary.jobs] == [j.repeat for j in again.summary.jobs]


@pytest.mark.parametrize("content, message", [
    ("status,model\nok,m\n", "missing column(s) method, source"),
    ("", "no rows"),
])
def test_a_csv_that_is_not_a_jobs_csv_is_refused_in_one_line(tmp_path, capsys, content, message):
    path = tmp_path / "jobs.csv"
    path.write_text(content)
    assert report_main([str(path), "--out", str(tmp_path / "r"), "--no-wandb"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Fix:" in err


def test_a_jobs_csv_beside_a_sweep_folder_is_refused(tmp_path, capsys):
    first = write_report([_noise_sweep(tmp_path)], tmp_path / "a", wandb=False)
    assert report_main([str(first.out / "jobs.csv"), str(tmp_path / "s"), "--out", str(tmp_path / "r"), "--no-wandb"]) == 2
    assert "cannot be combined with sweep folders" in capsys.readouterr().err
