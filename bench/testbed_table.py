"""The quantization testbed table (issue 26 item 3): RTN vs GPTQ on finished testbed jobs.

Reads the committed records ``docs/testbed/records/<point>.json`` (results.json copies that
``scripts/run_testbed.sh`` makes as each point finishes, so a new checkout keeps them) and every job
folder under ``multirun/testbed`` (a job that resume skipped is read through its ``skipped.json``), groups the ``ok`` jobs by (model, w_bits, group_size, symmetric,
variant), where variant is ``rtn``, ``gptq static`` (``method.static_groups=true``, llmcompressor's
GPTQModifier) or ``gptq faithful`` (``static_groups=false``, methods/gptq_faithful.py), and writes

* ``docs/testbed/testbed.csv``: one row per group: ``n_sets`` (distinct calibration seeds), mean and SD
  (ddof=1; empty for n < 2) of held-out perplexity (``metrics["perplexity/<text>"]``, 8 x 512 tokens),
  mean KL from the dense model (``metrics["compression/kl_from_dense"]``, nats per token), mean compress
  time (``timings["compress"]``, seconds), the RTN perplexity at the same model, bits, group and
  symmetry, GPTQ minus RTN, and the base grid (``results.json["weights_storage"]`` via
  :func:`calib_sweep.models.storage.describe`; ``grid_warning`` when the job's grid is at or near it);
* ``docs/testbed/README.md``: the command, machine and date, status (jobs finished of the grid's total)
  and a plain reading.

    python bench/testbed_table.py [--root multirun/testbed] [--archive docs/testbed/records] [--out docs/testbed] [--total 64]

Only the standard library and calib_sweep's storage helpers; runs in well under a second.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from calib_sweep.models.storage import describe, grid_warning  # noqa: E402

#: Jobs in scripts/run_testbed.sh: per (model, setting) 2 RTN + 4 GPTQ variants x 3 seeds; 4 SmolLM2
#: settings + 1 gemma setting; per-channel (3-bit, group null) has no static-groups variant (2 x 3 fewer).
TOTAL_JOBS = 5 * (2 + 4 * 3) - 2 * 3

COLUMNS = ["model", "w_bits", "group_size", "symmetric", "variant", "n_sets", "perplexity_mean", "perplexity_sd",
           "kl_mean", "compress_s_mean", "rtn_perplexity", "gptq_minus_rtn", "dense_perplexity", "base_grid",
           "grid_warning"]
SHOWN = 13  # columns in the README table (the base grid and its warning are in the CSV and the reading)

#: A setting is a usable testbed only while the compressed model is still a language model: best faithful
#: GPTQ perplexity at most this many times the dense model's (2-bit and 3-bit per-channel SmolLM2 are not).
USABLE_RATIO = 4.0
#: The model the study's pruning rows run on (experiment=replication_cpu): preferred, so the quantization
#: and pruning halves share one model.
STUDY_MODEL = "smollm2-135m-instruct"

COMMAND = "nohup scripts/run_testbed.sh > multirun/testbed/run.log 2>&1 &"


def _results_of(folder: Path) -> dict[str, Any] | None:
    """The results.json record of a job folder (following ``skipped.json`` to the earlier job), or None."""
    path = folder / "results.json"
    if not path.is_file() and (folder / "skipped.json").is_file():
        try:
            path = Path(json.loads((folder / "skipped.json").read_text())["results"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def variant(method: dict[str, Any]) -> str:
    """``rtn``, ``gptq static`` or ``gptq faithful`` from a job's ``config.method``.

    Raises:
        ValueError: another method (the testbed has only RTN and GPTQ).
    """
    if method.get("name") == "rtn":
        return "rtn"
    if method.get("name") == "gptq":
        return "gptq static" if method.get("static_groups", True) else "gptq faithful"
    raise ValueError(f"method {method.get('name')!r} is not in the testbed (rtn, gptq)")


def collect(root: Path, measured: dict[str, set[str]] | None = None,
            archive: Path | None = None) -> tuple[dict[tuple, dict[str, Any]], int]:
    """Finished testbed jobs by point, deduplicated by (model, w_bits, group_size, symmetric, variant, seed).

    Args:
        root: the testbed folder (may be missing: a new checkout has only the archive).
        archive: the committed records (``docs/testbed/records/*.json``, copied by scripts/run_testbed.sh),
            read first, so a job both there and under ``root`` counts once.
        measured: filled, when given, with hardware label -> days (UTC) the counted jobs finished on.

    Returns:
        ``({(model, w_bits, group_size, symmetric, variant): {"seeds": {seed: (ppl, kl, compress_s)},
        "storage": weights_storage}}, jobs_ok)``.
    """
    groups: dict[tuple, dict[str, Any]] = {}
    seen: set[tuple] = set()
    markers = [*root.glob("**/results.json"), *root.glob("**/skipped.json")] if root.is_dir() else []
    archived = sorted(archive.glob("*.json")) if archive is not None and archive.is_dir() else []
    for marker in [*archived, *sorted(markers)]:  # archived records first: they are the committed ones
        record = _read(marker) if marker in archived else _results_of(marker.parent)
        if not record or record.get("status") != "ok":
            continue
        config = record.get("config") or {}
        method, model = config.get("method") or {}, (config.get("model") or {}).get("name")
        metrics = record.get("metrics") or {}
        ppl = next((v for k, v in sorted(metrics.items()) if k.startswith("perplexity/")), None)
        if ppl is None:
            continue
        kind = variant(method)
        key = (model, int(method["w_bits"]), method.get("group_size"), bool(method.get("symmetric", True)), kind)
        seed = int(config.get("seed", 0))
        if key + (seed,) in seen:
            continue
        seen.add(key + (seed,))
        group = groups.setdefault(key, {"seeds": {}, "storage": record.get("weights_storage"), "method": method})
        dense = ((record.get("dense") or {}).get("metrics") or {}).get(next(k for k in sorted(metrics) if k.startswith("perplexity/")))
        if isinstance(dense, (int, float)):
            group["dense"] = float(dense)
        group["seeds"][seed] = (float(ppl), metrics.get("compression/kl_from_dense"),
                                (record.get("timings") or {}).get("compress"))
        hardware = ((record.get("runtime") or {}).get("hardware") or {}).get("id") or "hardware not recorded"
        if measured is not None:
            measured.setdefault(hardware, set()).add(_day(record, marker))
    return groups, len(seen)


def _read(path: Path) -> dict[str, Any] | None:
    """An archived record (``docs/testbed/records/<point>.json``: a copied results.json), or None."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _day(record: dict[str, Any], marker: Path) -> str:
    """The UTC day a job finished: its ``finished`` field, else (records before it) the file's mtime."""
    import datetime

    if isinstance(record.get("finished"), str):
        return record["finished"][:10]
    path = marker if marker.name.endswith(".json") and marker.name not in ("results.json", "skipped.json") else (
        marker.parent / "results.json" if (marker.parent / "results.json").is_file() else marker)
    return datetime.datetime.fromtimestamp(path.stat().st_mtime, datetime.timezone.utc).strftime("%Y-%m-%d")


def measured_text(measured: dict[str, set[str]]) -> str:
    """``"2026-12-04 on cpu AMD EPYC [AVX512, mkl] x2 threads"`` (several: joined with ``; ``) from
    :func:`collect`'s ``measured`` (hardware label -> days, UTC, its jobs finished on): where and when."""
    if not measured:
        return "no job finished yet"
    return "; ".join(f"{', '.join(sorted(days))} on `{hw}`" for hw, days in sorted(measured.items()))


def _mean(values: list) -> float | None:
    values = [v for v in values if isinstance(v, (int, float))]
    return statistics.fmean(values) if values else None


def rows(groups: dict[tuple, dict[str, Any]]) -> list[dict[str, Any]]:
    """One CSV row per group (see the module docstring), sorted by model, bits desc, group, symmetry, variant."""
    order = {"rtn": 0, "gptq faithful": 1, "gptq static": 2}
    out = []
    for key in sorted(groups, key=lambda k: (k[0], -k[1], k[2] is None, k[2] or 0, not k[3], order[k[4]])):
        model, bits, group_size, symmetric, kind = key
        seeds = groups[key]["seeds"]
        ppls = [seeds[s][0] for s in sorted(seeds)]
        rtn = groups.get((model, bits, group_size, symmetric, "rtn"))
        rtn_ppl = _mean([v[0] for v in rtn["seeds"].values()]) if rtn else None
        mean = statistics.fmean(ppls)
        storage = groups[key]["storage"]
        out.append({
            "model": model, "w_bits": bits, "group_size": "per-channel" if group_size is None else group_size,
            "symmetric": symmetric, "variant": kind, "n_sets": len(ppls), "perplexity_mean": round(mean, 4),
            "perplexity_sd": round(statistics.stdev(ppls), 4) if len(ppls) > 1 else "",
            "kl_mean": _round(_mean([seeds[s][1] for s in seeds]), 5),
            "compress_s_mean": _round(_mean([seeds[s][2] for s in seeds]), 1),
            "rtn_perplexity": _round(rtn_ppl, 4),
            "gptq_minus_rtn": "" if kind == "rtn" or rtn_ppl is None else round(mean - rtn_ppl, 4),
            "dense_perplexity": _round(groups[key].get("dense"), 4),
            "base_grid": describe(storage) if isinstance(storage, dict) else "",
            "grid_warning": (grid_warning(storage, groups[key]["method"]) or "") if isinstance(storage, dict) else "",
        })
    return out


def _round(value: float | None, digits: int) -> float | str:
    return "" if value is None else round(value, digits)


def reading(table: list[dict[str, Any]]) -> list[str]:
    """Plain-text lines: per (model, w_bits, group_size) whether the base grid is near, the best RTN and
    the best faithful GPTQ, and the recommended study setting.

    The rule: a setting qualifies when (a) faithful GPTQ beats RTN of the same symmetry in every symmetry
    by more than two calibration-set SDs (so the base grid does not decide the ranking), and (b) the best
    faithful GPTQ perplexity is at most :data:`USABLE_RATIO` x the dense model's (still a language model).
    Among those: :data:`STUDY_MODEL` first, then the largest GPTQ-over-RTN gap in set SDs.  ``provisional``
    while any GPTQ group has n < 3 sets."""
    lines, candidates = [], []
    settings = sorted({(r["model"], r["w_bits"], r["group_size"]) for r in table}, key=str)
    for model, bits, group in settings:
        here = [r for r in table if (r["model"], r["w_bits"], r["group_size"]) == (model, bits, group)]
        rtn = [r for r in here if r["variant"] == "rtn"]
        faithful = [r for r in here if r["variant"] == "gptq faithful"]
        near = any(r["grid_warning"] for r in here)
        if not rtn or not faithful:
            lines.append(f"- {model} {bits}-bit g{group}: not enough finished jobs yet (RTN {len(rtn)}, faithful GPTQ {len(faithful)} rows).")
            continue
        best_rtn = min(rtn, key=lambda r: r["perplexity_mean"])
        best_gptq = min(faithful, key=lambda r: r["perplexity_mean"])
        n = min(r["n_sets"] for r in faithful)
        wins = [r for r in faithful if r["gptq_minus_rtn"] != "" and r["gptq_minus_rtn"] < 0]
        margins = [-r["gptq_minus_rtn"] / r["perplexity_sd"] for r in wins if r["perplexity_sd"] not in ("", 0)]
        dense = best_gptq["dense_perplexity"]
        ratio = best_gptq["perplexity_mean"] / dense if dense not in ("", 0) else None
        sym = lambda r: "symmetric" if r["symmetric"] else "asymmetric"  # noqa: E731
        verdicts = []
        if ratio is not None and ratio > USABLE_RATIO:
            verdicts.append(f"not usable: {ratio:.1f}x the dense perplexity > {USABLE_RATIO:g}x")
        if len(margins) < len(faithful) or min(margins, default=0) <= 2:
            verdicts.append("RTN ties or wins in some symmetry: the base grid may decide the ranking")
        lines.append(
            f"- {model} {bits}-bit g{group}: base grid {'NEAR' if near else 'not near'}; best RTN "
            f"{best_rtn['perplexity_mean']:.3f} ({sym(best_rtn)}), best faithful GPTQ {best_gptq['perplexity_mean']:.3f} "
            f"({sym(best_gptq)}, n={best_gptq['n_sets']}"
            + (f", {ratio:.2f}x dense {dense:.2f}" if ratio is not None else "") + "); faithful GPTQ beats RTN of the "
            f"same symmetry in {len(wins)} of {len(faithful)} symmetries"
            + (f" by {min(margins):.1f}-{max(margins):.1f} set SDs" if margins else "")
            + (f"; {'; '.join(verdicts)}." if verdicts else "; qualifies."))
        if not verdicts:
            candidates.append((model != STUDY_MODEL, -min(margins), model, bits, group, n, best_gptq, best_rtn, ratio))
    if candidates:
        _, margin, model, bits, group, n, best_gptq, best_rtn, ratio = sorted(candidates, key=lambda c: c[:2])[0]
        lines.append(
            f"\nRecommended for the study{' (provisional: n=' + str(n) + ' < 3 calibration sets)' if n < 3 else ''}: "
            f"{model} {bits}-bit g{group} (faithful GPTQ {best_gptq['perplexity_mean']:.2f} vs RTN "
            f"{best_rtn['perplexity_mean']:.2f}, {ratio:.2f}x dense; GPTQ ahead by at least {-margin:.1f} set SDs in both "
            f"symmetries), by the rule in bench/testbed_table.py `reading`: GPTQ beats RTN by more than two set SDs in "
            f"every symmetry (the base grid does not decide the ranking), the model stays within {USABLE_RATIO:g}x the "
            f"dense perplexity, and {STUDY_MODEL} (the pruning rows' model) is preferred.")
    else:
        lines.append("\nNo setting qualifies yet (see the rule in bench/testbed_table.py `reading`): no recommendation.")
    return lines


def write(table: list[dict[str, Any]], jobs_ok: int, out: Path, total: int = TOTAL_JOBS,
          measured: dict[str, set[str]] | None = None) -> None:
    """Write ``testbed.csv`` and ``README.md`` into ``out`` (created)."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "testbed.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(table)
    head = "| " + " | ".join(COLUMNS[:SHOWN]) + " |"
    body = ["| " + " | ".join(str(r[c]) for c in COLUMNS[:SHOWN]) + " |" for r in table]
    text = [
        "# Quantization testbed (issue 26 item 3)", "",
        "RTN (data-free) vs GPTQ (`static_groups` true = llmcompressor's GPTQModifier, false = the published",
        "algorithm, methods/gptq_faithful.py; symmetric and asymmetric) on the default calibration (32 x 256",
        "tokens of offline_wikipedia, seeds 0-2), held-out perplexity (8 x 512 tokens) and KL from the dense",
        f"model. Measured {measured_text(measured or {})} (this project's 2-core dev VM; GPTQ's numbers depend on the CPU's",
        "kernels: the same 4-bit g64 symmetric faithful job gave 27.958 on 2026-12-03's Intel Xeon VM and",
        "27.626 on 2026-12-04's AMD EPYC VM, same calibration set); figures from [testbed.csv](testbed.csv).", "",
        "    " + COMMAND + "   # runs or resumes the grid (multirun/testbed/<point>/)",
        "    python bench/testbed_table.py                             # this folder", "",
        f"Status: {jobs_ok} of {total} jobs finished. Resume: the same command (a point with a record in "
        "[records/](records) is skipped, other finished jobs by config key).", "",
        "## Reading", "", *reading(table), "", "## Table", "", head, "|" + "---|" * SHOWN, *body, "",
    ]
    (out / "README.md").write_text("\n".join(text), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """CLI: see the module docstring.  Exit 0; 2 with one line when ``--root`` is missing."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT / "multirun" / "testbed")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "testbed")
    parser.add_argument("--archive", type=Path, default=ROOT / "docs" / "testbed" / "records")
    parser.add_argument("--total", type=int, default=TOTAL_JOBS)
    args = parser.parse_args(argv)
    if not args.root.is_dir() and not args.archive.is_dir():
        print(f"testbed_table: neither --root {args.root} nor --archive {args.archive} is a folder. "
              "Fix: run scripts/run_testbed.sh first", file=sys.stderr)
        return 2
    measured: dict[str, set[str]] = {}
    groups, jobs_ok = collect(args.root, measured, args.archive)
    table = rows(groups)
    write(table, jobs_ok, args.out, args.total, measured)
    print(f"testbed_table: {jobs_ok} of {args.total} jobs -> {args.out}/testbed.csv, README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
