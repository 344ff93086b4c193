"""``python -m calib_sweep.report <sweep folder...>`` / ``calib-sweep-report``: write the sweep report.

Exit codes: 0 written; 2 bad input (no such folder, no job folder under it, an unknown ``--family``, a
negative or unknown-metric ``--equivalence`` margin), with one line on stderr.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from calib_sweep.report.collect import ReportError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="calib-sweep-report",
        description="The study's tables and figures from one or more sweeps: per model x method x source, mean, "
                    "SD (ddof=1), min, max and range across calibration sets (seeds) of every metric; dispersion per "
                    "task; sample-size curves; Student t / chi-square CIs, sets needed, Brown-Forsythe, Holm-corrected source "
                    "and strategy comparisons with minimum detectable effect, equivalence test and verdict, the numerical "
                    "noise floor and data-free controls. Writes report.html, report.md, CSV files and figures/*.png.",
    )
    parser.add_argument("folders", nargs="+", type=Path, help="sweep folders (multirun/<date>/<time>, multirun/, job folders), or one jobs.csv an earlier report wrote "
                             "(the statistics recomputed from its rows)")
    parser.add_argument("-o", "--out", type=Path, default=None,
                        help="report folder (default: <folder>/report for one folder, ./sweep_report for several)")
    parser.add_argument("--test", choices=("welch", "mannwhitney"), default="welch",
                        help="how sources are compared within a method (Holm-corrected): Welch t-test (default) or Mann-Whitney U")
    parser.add_argument("--family", default="within", metavar="{within,global}",
                        help="Holm families: 'within' (default: pairs within one model x method(/source) x size x metric; "
                             "dispersion tests uncorrected) or 'global' (one Holm family over each whole table)")
    parser.add_argument("--equivalence", action="append", default=[], metavar="METRIC=MARGIN",
                        help="equivalence margin (report.equivalence), repeatable: METRIC is accuracy, perplexity, kl, "
                             "sd_ratio or one metric (perplexity/wikitext); MARGIN in display units (accuracy points) or "
                             "N%% of the compared means; defaults accuracy=1 perplexity=1%% kl=1%% sd_ratio=1.5")
    parser.add_argument("--no-wandb", action="store_true", help="do not send the summary to W&B even when the runs were online")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns (and exits with) the exit code."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from calib_sweep.report.evidence import check_family, parse_equivalence

    try:  # bad options are refused before anything is read or printed
        check_family(args.family)
        parse_equivalence(args.equivalence)
    except ReportError as exc:
        print(f"calib-sweep-report: error: {exc}", file=sys.stderr)
        return 2
    out = args.out or (args.folders[0] / "report" if len(args.folders) == 1 else Path("sweep_report"))
    from calib_sweep.sweep_summary import format_summary, summarize_folder, sweep_folders

    for sweep in sweep_folders([f for f in args.folders if f.suffix != ".csv"]):  # what happened to every job, before the tables
        print(format_summary(summarize_folder(sweep)).replace("calib_sweep: sweep ", "sweep ", 1))
    try:
        from calib_sweep.report import write_report

        files = write_report(args.folders, out, wandb=not args.no_wandb, test=args.test, family=args.family,
                             equivalence=args.equivalence)
    except ReportError as exc:
        print(f"calib-sweep-report: error: {exc}", file=sys.stderr)
        return 2
    counts = files.summary.counts
    print("jobs: " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items())))
    print(f"report: {files.html}")
    print(f"        {files.markdown}")
    print(f"        {len(files.csvs)} CSV files, {len(files.figures)} figures in {files.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
