"""Find a sweep's jobs and read them: finished (``ok``), ``failed`` (with its error) and ``missing``.

A *job folder* is a folder that holds ``results.json`` or a Hydra ``.hydra/`` folder.  A job folder with
``.hydra/`` but no ``results.json`` has not finished (still running, or killed): it is reported as
``missing`` and placed in its group from ``.hydra/config.yaml``.  Folders are searched recursively, so a
``multirun/`` root, one sweep (``multirun/<date>/<time>``), one job folder or ``outputs/`` all work, and
several may be combined.  When the same job (same config and seed) appears more than once (a rerun in a
second sweep), the best record wins: ``ok`` over ``failed`` over ``missing``, then the newest; the others
are kept as ``superseded``.

Numerical perturbations (``threads``, ``perturb.row_order_seed``; ``experiment=noise_floor``) do not split
groups: reruns of one job under them are kept side by side, each labelled with its ``perturbation``.  Per
group and seed one *canonical* job represents the calibration set (drawn row order, preferably
``threads=auto``); the others are ``repeat`` jobs, used only for the noise floor.  Jobs with random weights (``model.init=random``, ``results.json`` says
``weights: random``: timing and memory only) are never reported beside jobs with real weights.
"""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from calib_sweep.tracking import DEFAULT_SELECTION

RESULTS_FILE = "results.json"
HYDRA_DIR = ".hydra"

# Config keys that never change the numbers (where a run is logged, how it is named, resume bookkeeping): they do not split
# groups.  Everything else that varies between jobs of a sweep (method.sparsity, eval.*, dtype, ...) does.
IGNORED_CONFIG_PREFIXES = ("logger.", "hydra.", "resume.")
# Numerical perturbations that leave the data unchanged: reruns under them are noise-floor repeats of
# one job, not other groups (see the module docstring).
PERTURBATION_KEYS = ("threads", "perturb.row_order_seed")
GROUP_KEYS = ("model", "method", "source", "n_samples", "seq_len")
_GROUP_PATHS = {
    "model": "model.name", "method": "method.name", "source": "dataset.name",
    "n_samples": "samples.n_samples", "seq_len": "samples.seq_len", "seed": "seed",
}


class ReportError(Exception):
    """Bad input for the report (no such folder, no jobs in it): one line, exit code 2 at the CLI."""


@dataclass
class Job:
    """One job of a sweep, as read from its folder.

    Attributes:
        folder: the job folder.
        status: ``ok``, ``failed``, ``missing`` (no ``results.json`` yet) or ``superseded``.
        config: the resolved config (``results.json``) or the composed one (``.hydra/config.yaml``).
        metrics: metric name -> float (``perplexity/<text>``, ``zeroshot/<task>/acc``, ...); empty unless ok.
        dense_metrics: the dense reference figures (``results.json["dense"]["metrics"]``), if any.
        error: ``"<error_type> at <stage>: <error>"`` for failed jobs.
        wandb_mode: ``results.json["wandb"]["mode"]`` (``online``, ``offline``, ``disabled``) or None.
        wandb_id: ``results.json["wandb"]["id"]``: the run's id, None when no run was made (``logger=none``).
        mtime: modification time of ``results.json`` (seconds since the epoch), 0 when missing.
        weights: ``results.json["weights"]``: ``pretrained`` or ``random`` (``model.init=random``); from the
            config (``model.init``) for records without the key.
        hardware: ``results.json["runtime"]["hardware"]["id"]`` (CPU/GPU, kernels, threads), with
            ``", <dtype>"`` appended unless the job ran in float32, None when the record predates it.
        repeat: True for a noise-floor rerun of a seed that another (canonical) job represents.
        layers: ``results.json["layers"]`` (per-layer diagnostics: names, output_error, ...), empty if absent.
        base_grid: the warning of :func:`calib_sweep.models.storage.grid_warning` when the job quantized
            weights already stored on a grid at or near its own (``results.json["weights_storage"]``), else None.
        predictors: ``results.json["predictors"]``: the calibration set's predictors (numeric ones), empty if absent.
        calibration_sha256: ``results.json["calibration"]["token_sha256"]``: the calibration set's identity
            (two jobs with the same hash calibrated on the same tokens), None when not recorded.
    """

    folder: Path
    status: str
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    dense_metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    wandb_mode: str | None = None
    wandb_id: str | None = None
    mtime: float = 0.0
    variant: str = ""
    weights: str = "pretrained"
    hardware: str | None = None
    repeat: bool = False
    variant_items: list[tuple[str, str]] = field(default_factory=list)
    layers: dict[str, Any] = field(default_factory=dict)
    stage: str | None = None
    base_grid: str | None = None
    predictors: dict[str, float] = field(default_factory=dict)
    calibration_sha256: str | None = None

    @property
    def config_refused(self) -> bool:
        """Failed at validate: its config was refused (a typo), so it defines no group or variant."""
        return self.status == "failed" and self.stage == "validate"

    @property
    def perturbation(self) -> str:
        """The job's numerical perturbation: ``threads=1, rows=seed 2``; ``""`` for none (threads=auto, drawn order)."""
        parts = []
        threads = self.get("threads", "auto")
        if threads not in (None, "auto"):
            parts.append(f"threads={threads}")
        rows = self.get("perturb.row_order_seed")
        if rows is not None:
            parts.append(f"rows=seed {rows}")
        return ", ".join(parts)

    def get(self, dotted: str, default: Any = None) -> Any:
        """A config value by dotted path (``samples.n_samples``), or ``default``."""
        node: Any = self.config
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node

    @property
    def offline_runs(self) -> list[Path]:
        """The job's offline W&B run folders (``wandb/offline-run-*``) that ``wandb sync`` can upload.

        Empty unless the job recorded ``wandb.mode: offline``; a recorded run id without its folder
        (moved, or W&B wrote elsewhere) still counts as one run to sync, so the list then holds the
        job's ``wandb`` folder.
        """
        if self.wandb_mode != "offline":
            return []
        found = sorted(p for p in (self.folder / "wandb").glob("offline-run-*") if p.is_dir())
        if found:
            return found
        return [self.folder / "wandb"] if self.wandb_id else []

    @property
    def model(self) -> str:
        return str(self.get("model.name", "?"))

    @property
    def method(self) -> str:
        return str(self.get("method.name", "?"))

    @property
    def source(self) -> str:
        return str(self.get("dataset.name", "?"))

    @property
    def n_samples(self) -> int | None:
        return _as_int(self.get("samples.n_samples"))

    @property
    def seq_len(self) -> int | None:
        return _as_int(self.get("samples.seq_len"))

    @property
    def seed(self) -> int | None:
        return _as_int(self.get("seed"))

    @property
    def group(self) -> tuple:
        """(model, method, source, n_samples, seq_len, variant): the jobs that differ only by seed."""
        return (self.model, self.method, self.source, self.n_samples, self.seq_len, self.variant)


def _as_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def as_float(value: Any) -> float | None:
    """A metric value as a float (``"nan"``/``"inf"`` strings as written by ``write_results``), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _numeric(metrics: Any) -> dict[str, float]:
    if not isinstance(metrics, dict):
        return {}
    out = {}
    for key, value in metrics.items():
        number = as_float(value)
        if number is not None:
            out[str(key)] = number
    return out


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists become their JSON text."""
    if not isinstance(config, dict):
        return {prefix.rstrip("."): json.dumps(config, sort_keys=True) if isinstance(config, list) else config}
    out: dict[str, Any] = {}
    for key, value in config.items():
        out.update(flatten(value, f"{prefix}{key}."))
    return out


def find_job_folders(root: Path) -> list[Path]:
    """Every job folder under ``root`` (``root`` itself when it is one), sorted; job folders are not entered."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if RESULTS_FILE in filenames or HYDRA_DIR in dirnames:
            found.append(here)
            dirnames[:] = []
            continue
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "wandb")
    return sorted(found)


def read_job(folder: Path) -> Job:
    """Read one job folder (see the module docstring for the statuses)."""
    results = folder / RESULTS_FILE
    if not results.is_file() and (folder / "skipped.json").is_file():
        # A job resume skipped: its result is the earlier identical job's results.json.
        try:
            earlier = Path(json.loads((folder / "skipped.json").read_text())["results"])
        except (OSError, ValueError, KeyError, TypeError):
            earlier = None
        if earlier is not None and earlier.is_file():
            job = read_job(earlier.parent)
            job.folder = folder
            return job
    if not results.is_file():
        config = _hydra_config(folder)
        return Job(folder=folder, status="missing", config=config, error="no results.json (running or killed)",
                   weights=_weights(None, config))
    mtime = results.stat().st_mtime
    try:
        record = json.loads(results.read_text(encoding="utf-8"))
        if not isinstance(record, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        return Job(folder=folder, status="failed", config=_hydra_config(folder),
                   error=f"unreadable results.json: {exc}", mtime=mtime)
    config = record.get("config") if isinstance(record.get("config"), dict) else _hydra_config(folder)
    wandb_info = record.get("wandb") if isinstance(record.get("wandb"), dict) else {}
    dense = record.get("dense") if isinstance(record.get("dense"), dict) else {}
    job = Job(folder=folder, status=str(record.get("status", "failed")), config=config,
              wandb_mode=wandb_info.get("mode"), wandb_id=wandb_info.get("id") or None, mtime=mtime, dense_metrics=_numeric(dense.get("metrics")))
    job.weights = _weights(record.get("weights"), config)
    runtime = record.get("runtime") if isinstance(record.get("runtime"), dict) else {}
    hardware = runtime.get("hardware") if isinstance(runtime.get("hardware"), dict) else {}
    job.hardware = str(hardware["id"]) if hardware.get("id") else None
    if job.hardware and runtime.get("dtype") not in (None, "torch.float32"):  # a numerical variant too (issue 31)
        job.hardware += f", {runtime['dtype']}"
    if isinstance(record.get("weights_storage"), dict):
        from calib_sweep.models.storage import grid_warning

        job.base_grid = grid_warning(record["weights_storage"], config.get("method") or {})
    calibration = record.get("calibration") if isinstance(record.get("calibration"), dict) else {}
    job.calibration_sha256 = str(calibration["token_sha256"]) if calibration.get("token_sha256") else None
    if job.status == "ok":
        job.metrics = _numeric(record.get("metrics"))
        job.predictors = _numeric(record.get("predictors"))
        if isinstance(record.get("layers"), dict) and isinstance(record["layers"].get("names"), list):
            job.layers = record["layers"]
    else:
        if job.status not in ("failed", "missing"):  # "running" or anything unexpected: not a result
            job.error = f"status {job.status!r} in results.json"
            job.status = "missing"
        else:
            job.stage = record.get("stage")
            job.error = f"{record.get('error_type', 'Error')} at {record.get('stage', '?')}: {record.get('error', '')}".strip()
    return job


def _weights(recorded: Any, config: dict[str, Any]) -> str:
    """``random`` when the record says so or the config has ``model.init: random``, else ``pretrained``."""
    model = config.get("model") if isinstance(config, dict) else None
    init = model.get("init") if isinstance(model, dict) else None
    return "random" if recorded == "random" or init == "random" else "pretrained"


def check_weights(jobs: list[Job]) -> None:
    """Refuse to report jobs with random weights (``model.init=random``) beside jobs with real ones.

    Random-weight jobs exist for timing and memory (bench/gpu_paper_size.py on an air-gapped GPU); their
    perplexity and accuracy mean nothing, so a table that holds both would mislead.  A report of
    random-weight jobs alone is written, with a note on stderr.

    Raises:
        ReportError: both kinds are present (superseded records are not counted).
    """
    counted = [job for job in jobs if job.status != "superseded"]
    random = [job for job in counted if job.weights == "random"]
    if random and len(random) < len(counted):
        raise ReportError(
            f"{len(random)} job(s) have random weights (model.init=random, weights: random in results.json: timing and "
            f"memory only, e.g. {random[0].folder}) and {len(counted) - len(random)} have real weights: the report "
            "does not put them side by side. Fix: report the random-weight sweeps separately (or not at all)"
        )
    if random:
        print(f"calib-sweep-report: note: all {len(random)} jobs have random weights (model.init=random): "
              "their metrics measure nothing; only timings and memory mean something", file=sys.stderr)


def _hydra_config(folder: Path) -> dict[str, Any]:
    path = folder / HYDRA_DIR / "config.yaml"
    if not path.is_file():
        return {}
    try:
        from omegaconf import OmegaConf

        loaded = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        return loaded if isinstance(loaded, dict) else {}
    except Exception:  # a half-written config must not stop the report
        return {}


_CONTEXT = {"method.": "method.name", "dataset.": "dataset.name", "model.": "model.name", "samples.": None}


def _context(key: str, flat: dict[str, Any]) -> Any:
    """Jobs compare a key only with jobs of the same method (``method.*``), source (``dataset.*``) or model."""
    for prefix, name_key in _CONTEXT.items():
        if key.startswith(prefix) and name_key:
            return flat.get(name_key)
    return None


def with_defaults(config: dict[str, Any]) -> dict[str, Any]:
    """A job's config with the values an older config had implicitly, for comparison with newer ones.

    A config written before the selection group existed used the random draw (bit-identical sets): it is
    ``selection=random``, so it compares with the strategies of a selection sweep.  A GPTQ config written
    before ``method.static_groups`` existed ran llmcompressor's static group scales: ``static_groups=true``
    (``false`` with ``backend: optimum``, gptqmodel's default; :func:`calib_sweep.methods.gptq.static_groups`).
    """
    if not config:
        return config
    config = {"selection": DEFAULT_SELECTION, **config}
    method = config.get("method")
    if isinstance(method, dict) and method.get("name") == "gptq" and "static_groups" not in method:
        config["method"] = {**method, "static_groups": method.get("backend", "llmcompressor") != "optimum"}
    return config


def _assign_variants(jobs: list[Job]) -> None:
    """Label each job with the config values (besides the group keys and seed) that vary between comparable jobs.

    A key varies when jobs of the same context (same method for ``method.*``, same source for
    ``dataset.*``, same model for ``model.*``, all jobs otherwise) that have the key hold different values;
    a key missing from a job (an older config) is not a difference, except ``selection`` and GPTQ's
    ``method.static_groups``, which an older config had implicitly (:func:`with_defaults`).
    """
    jobs = [job for job in jobs if not job.config_refused]  # a refused config (a typo) is no variant
    flat = [flatten(with_defaults(job.config)) for job in jobs]
    skip = set(_GROUP_PATHS.values()) | set(PERTURBATION_KEYS)
    seen: dict[tuple, set[str]] = {}
    for f in flat:
        for key, value in f.items():
            if key in skip or key.startswith(IGNORED_CONFIG_PREFIXES):
                continue
            seen.setdefault((key, json.dumps(_context(key, f), default=str)), set()).add(json.dumps(value, sort_keys=True, default=str))
    for job, f in zip(jobs, flat):
        job.variant_items = [(key, str(value)) for key, value in sorted(f.items())
                             if len(seen.get((key, json.dumps(_context(key, f), default=str)), ())) > 1]
        job.variant = ", ".join(f"{key}={value}" for key, value in job.variant_items)


_RANK = {"ok": 0, "failed": 1, "missing": 2}


def load_jobs(paths: Iterable[str | os.PathLike]) -> list[Job]:
    """Read every job under the given sweep folders (see the module docstring).

    Returns:
        The jobs, sorted by group then seed; duplicates of one job are marked ``superseded``.

    Raises:
        ReportError: a path does not exist or is not a folder, or no job folder is found under any of
            them (folders without jobs beside ones with jobs are skipped with a note on stderr), or
            random-weight jobs are mixed with real ones (:func:`check_weights`).
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise ReportError("no sweep folder given. Fix: calib-sweep-report multirun/<date>/<time> [more folders]")
    folders: list[Path] = []
    empty: list[Path] = []
    for path in paths:
        if not path.exists():
            raise ReportError(f"{path}: no such folder. Fix: pass a sweep folder, e.g. multirun/<date>/<time>")
        if not path.is_dir():
            raise ReportError(f"{path}: not a folder. Fix: pass the sweep folder that holds the job folders")
        found = find_job_folders(path)
        if not found:
            empty.append(path)
        folders.extend(f.resolve() for f in found)
    if not folders:
        raise ReportError(
            f"{', '.join(map(str, empty))}: no job folders (results.json or .hydra/) under it. "
            "Fix: pass a sweep folder, e.g. multirun/<date>/<time> (single runs: outputs/)"
        )
    for path in empty:  # e.g. `multirun outputs` after single runs only: report what exists
        print(f"calib-sweep-report: note: {path} holds no job folder; skipped", file=sys.stderr)
    jobs = [read_job(folder) for folder in dict.fromkeys(folders)]
    _assign_variants(jobs)
    best: dict[tuple, Job] = {}
    for job in jobs:
        key = (*job.group, job.seed, job.perturbation) if job.config and not job.config_refused else (str(job.folder),)
        current = best.get(key)
        if current is None or (_RANK.get(job.status, 3), -job.mtime) < (_RANK.get(current.status, 3), -current.mtime):
            if current is not None:
                current.status, current.error = "superseded", f"superseded by {job.folder}"
            best[key] = job
        else:
            job.status, job.error = "superseded", f"superseded by {current.folder}"
    check_weights(jobs)
    mark_repeats(jobs)
    return sorted(jobs, key=lambda j: (tuple(str(x) for x in j.group), j.seed if j.seed is not None else -1, str(j.folder)))


def mark_repeats(jobs: list[Job]) -> None:
    """Per group and seed, keep one canonical job and mark the other perturbation reruns ``repeat``.

    Canonical: drawn row order (``perturb.row_order_seed`` null), then ``threads=auto`` before an explicit
    count (then the lowest count).  Row-permuted jobs are always repeats: a seed with only permuted jobs
    has no canonical job.  Superseded jobs are left as they are.
    """
    cells: dict[tuple, list[Job]] = {}
    for job in jobs:
        if job.config and job.status != "superseded" and not job.config_refused:
            cells.setdefault((*job.group, job.seed), []).append(job)
    for members in cells.values():
        drawn = [j for j in members if j.get("perturb.row_order_seed") is None]

        def rank(job: Job) -> tuple:
            threads = job.get("threads", "auto")
            return (threads not in (None, "auto"), str(threads))

        canonical = min(drawn, key=rank) if drawn else None
        for job in members:
            job.repeat = job is not canonical


def finite(values: Iterable[float]) -> list[float]:
    """The finite values (NaN and infinities dropped)."""
    return [v for v in values if math.isfinite(v)]


JOBS_CSV_FIELDS = ("status", "model", "method", "source", "n_samples", "seq_len", "variant", "seed", "perturbation",
                   "noise_repeat", "hardware", "wandb_mode", "folder", "error")
OPTIONAL_JOBS_CSV_FIELDS = ("calibration_sha256",)  # newer reports write it; older jobs.csv files lack it


def _split_items(text: str) -> list[tuple[str, str]]:
    """``"a.b=1, c=x"`` -> ``[("a.b", "1"), ("c", "x")]`` (the ``variant`` / ``perturbation`` columns)."""
    import re

    items = []
    for part in re.split(r", (?=[\w.]+=)", text.strip()) if text.strip() else []:
        key, sep, value = part.partition("=")
        if not sep:
            raise ReportError(f"jobs.csv: cannot read {text!r} as key=value pairs. Fix: pass a jobs.csv the report wrote")
        items.append((key.strip(), value.strip()))
    return items


def _nest(config: dict[str, Any], dotted: str, value: Any) -> None:
    node = config
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def load_jobs_csv(path: str | os.PathLike) -> list[Job]:
    """Rebuild the report's jobs from a ``jobs.csv`` that an earlier report wrote (``tables.write_csvs``).

    For reports whose job folders are gone (``docs/replication/jobs.csv`` after the sweep folders were
    deleted): every column the tables need is in the CSV (group, seed, perturbation, noise-floor
    repeat, hardware, metrics), so the statistics can be recomputed with today's code.  What a CSV
    does not hold is left empty: per-layer diagnostics, per-item records (``items.npz``), predictors and
    the base-grid warning.  A ``dense_reference.csv`` beside the file (``model,metric,value``) becomes the
    jobs' dense reference.  Superseded rows are kept as ``superseded`` (they count in the summary only).

    Args:
        path: the ``jobs.csv`` file.

    Returns:
        The jobs, in the file's order.

    Raises:
        ReportError: no such file, a column the report writes is missing, or a perturbation / variant
            cell that is not ``key=value`` pairs.
    """
    import csv

    path = Path(path)
    if not path.is_file():
        raise ReportError(f"{path}: no such file. Fix: pass the jobs.csv an earlier calib-sweep-report wrote, e.g. docs/replication/jobs.csv")
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    missing = [c for c in JOBS_CSV_FIELDS if rows and c not in rows[0]]
    if not rows or missing:
        raise ReportError(f"{path}: {'no rows' if not rows else 'missing column(s) ' + ', '.join(missing)}. "
                          "Fix: pass a jobs.csv written by calib-sweep-report")
    dense: dict[str, dict[str, float]] = {}
    reference = path.parent / "dense_reference.csv"
    if reference.is_file():
        with open(reference, newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                number = as_float(row.get("value"))
                if number is not None:
                    dense.setdefault(row["model"], {})[row["metric"]] = number
    metric_columns = [c for c in rows[0] if c not in JOBS_CSV_FIELDS + OPTIONAL_JOBS_CSV_FIELDS]
    jobs = []
    for row in rows:
        config: dict[str, Any] = {"model": {"name": row["model"]}, "method": {"name": row["method"]},
                                  "dataset": {"name": row["source"]},
                                  "samples": {"n_samples": _as_int(row["n_samples"]), "seq_len": _as_int(row["seq_len"])},
                                  "seed": _as_int(row["seed"])}
        for key, value in _split_items(row["perturbation"]):
            if key == "threads":
                _nest(config, "threads", _as_int(value) if _as_int(value) is not None else value)
            elif key == "rows":
                _nest(config, "perturb.row_order_seed", _as_int(value.removeprefix("seed ").strip()))
            else:
                raise ReportError(f"{path}: unknown perturbation {key}={value}. Fix: pass a jobs.csv the report wrote")
        variant_items = _split_items(row["variant"])
        for key, value in variant_items:
            _nest(config, key, value)
        status = row["status"] or "missing"
        job = Job(folder=Path(row["folder"]), status=status, config=config,
                  metrics={m: v for m in metric_columns if (v := as_float(row[m])) is not None},
                  dense_metrics=dict(dense.get(row["model"], {})), error=row["error"] or None,
                  wandb_mode=row["wandb_mode"] or None, variant=row["variant"], hardware=row["hardware"] or None,
                  repeat=row["noise_repeat"] == "True", variant_items=variant_items,
                  calibration_sha256=row.get("calibration_sha256") or None)
        jobs.append(job)
    return jobs


def load(paths: Iterable[str | os.PathLike]) -> list[Job]:
    """The report's input: sweep folders (:func:`load_jobs`) or one ``jobs.csv`` (:func:`load_jobs_csv`).

    Raises:
        ReportError: a jobs.csv beside sweep folders, more than one jobs.csv, or what the loader raises.
    """
    paths = [Path(p) for p in paths]
    csv_files = [p for p in paths if p.suffix == ".csv" and not p.is_dir()]
    if csv_files and len(csv_files) != len(paths):
        raise ReportError(f"{csv_files[0]}: a jobs.csv cannot be combined with sweep folders. Fix: pass either "
                          "sweep folders or one jobs.csv")
    if len(csv_files) > 1:
        raise ReportError(f"{len(csv_files)} jobs.csv files given. Fix: pass one jobs.csv")
    return load_jobs_csv(csv_files[0]) if csv_files else load_jobs(paths)
