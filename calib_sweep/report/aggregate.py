"""Statistics across calibration sets: per group (model x method x source x n_samples x seq_len x variant)
the mean, SD, min, max and range across seeds of every metric; dispersion per metric; sample-size series.

SD is the **sample** standard deviation (``ddof=1``, divisor n-1), as in the study; with one finished seed
it is undefined (``None``).  Statistics use the finite values only; NaN/inf values (a collapsed model) are
counted in ``n_nonfinite``.  Values keep the units of ``results.json``: accuracy is a fraction (0-1),
perplexity is a perplexity.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any, Iterable

from calib_sweep.report.collect import Job, finite


@dataclass
class Stat:
    """Statistics of one metric across the finished seeds of one group.

    Attributes:
        n: finite values used; mean/min/max: over them (None when n == 0); range: max - min (None when n < 2);
        sd: sample standard deviation, ddof=1 (None when n < 2); n_nonfinite: NaN/inf values left out;
        values: (seed, value) of every finished seed, in seed order.
    """

    n: int
    mean: float | None
    sd: float | None
    min: float | None
    max: float | None
    range: float | None
    n_nonfinite: int = 0
    values: list[tuple[int | None, float]] = field(default_factory=list)


def describe(values: Iterable[float], seeds: Iterable[int | None] | None = None) -> Stat:
    """Mean, sample SD (ddof=1), min, max and range of ``values`` (non-finite values are left out)."""
    values = list(values)
    seeds = list(seeds) if seeds is not None else [None] * len(values)
    good = finite(values)
    n = len(good)
    return Stat(
        n=n,
        mean=statistics.fmean(good) if n else None,
        sd=statistics.stdev(good) if n >= 2 else None,  # sample SD: divisor n - 1
        min=min(good) if n else None,
        max=max(good) if n else None,
        range=(max(good) - min(good)) if n >= 2 else None,  # one value has no range
        n_nonfinite=len(values) - n,
        values=list(zip(seeds, values)),
    )


def is_accuracy(metric: str) -> bool:
    """True for zero-shot accuracy metrics (``zeroshot/<task>/acc``, ``.../acc_norm``, ``zeroshot/mean_acc``)."""
    return metric.startswith("zeroshot/") and metric.rsplit("/", 1)[-1].startswith(("acc", "mean_acc"))


def is_task_accuracy(metric: str) -> bool:
    """True for one task's plain accuracy, ``zeroshot/<task>/acc`` (the study's table columns)."""
    parts = metric.split("/")
    return len(parts) == 3 and parts[0] == "zeroshot" and parts[2] == "acc"


def metric_order(metric: str) -> tuple:
    """Sort key: task accuracies (by task), other zero-shot figures, mean accuracy, perplexities, the rest."""
    if is_task_accuracy(metric):
        rank = 0
    elif metric == "zeroshot/mean_acc":
        rank = 2
    elif metric.startswith("zeroshot/"):
        rank = 1
    elif metric.startswith("perplexity/"):
        rank = 3
    else:
        rank = 4
    return (rank, metric)


def metric_label(metric: str) -> str:
    """Short display name: ``zeroshot/boolq/acc`` -> ``boolq``, ``perplexity/wikitext`` -> ``ppl wikitext``."""
    parts = metric.split("/")
    if metric == "zeroshot/mean_acc":
        return "mean acc"
    if is_task_accuracy(metric):
        return parts[1]
    if parts[0] == "zeroshot" and len(parts) == 3:
        return f"{parts[1]} {parts[2]}"
    if parts[0] == "perplexity" and len(parts) == 2:
        return f"ppl {parts[1]}"
    return metric


@dataclass
class Group:
    """The jobs of one configuration that differ only by seed (calibration set), and their statistics."""

    key: tuple
    jobs: list[Job]
    stats: dict[str, Stat] = field(default_factory=dict)

    model = property(lambda self: self.key[0])
    method = property(lambda self: self.key[1])
    source = property(lambda self: self.key[2])
    n_samples = property(lambda self: self.key[3])
    seq_len = property(lambda self: self.key[4])
    variant = property(lambda self: self.key[5])

    def count(self, status: str) -> int:
        """How many of the group's jobs have ``status`` (ok, failed, missing, superseded)."""
        return sum(job.status == status for job in self.jobs)

    @property
    def label(self) -> str:
        """``model / method / source / n x seq_len [variant]``."""
        text = f"{self.model} / {self.method} / {self.source} / {self.n_samples}x{self.seq_len}"
        return f"{text} [{self.variant}]" if self.variant else text


@dataclass
class Dispersion:
    """How much one metric swings across calibration sets, over the groups with >= 2 finished seeds.

    Attributes:
        metric; n_groups; mean_sd / max_sd: mean and largest per-group SD (ddof=1);
        mean_range / max_range: mean and largest per-group max - min; widest: label of the group with max_range.
    """

    metric: str
    n_groups: int
    mean_sd: float
    max_sd: float
    mean_range: float
    max_range: float
    widest: str


@dataclass
class Summary:
    """Everything the report shows, computed from the jobs of one or more sweeps."""

    jobs: list[Job]
    groups: list[Group]
    metrics: list[str]
    dispersion: list[Dispersion]
    series: dict[tuple, list[Group]]
    dense_reference: dict[str, dict[str, float]]
    evidence: Any = None  # calib_sweep.report.evidence.Evidence, filled by calib_sweep.report.summarize
    layer_families: list = field(default_factory=list)  # calib_sweep.report.layers.LayerFamily, likewise
    predictors: Any = None  # calib_sweep.report.predictors.PredictorChecks, likewise
    variance: Any = None  # list of calib_sweep.report.variance.VarianceRow, likewise
    paired: Any = None  # calib_sweep.report.paired.PairedItems, likewise

    @property
    def counts(self) -> dict[str, int]:
        """Jobs per status."""
        out: dict[str, int] = {}
        for job in self.jobs:
            out[job.status] = out.get(job.status, 0) + 1
        return out

    @property
    def accuracy_metrics(self) -> list[str]:
        return [m for m in self.metrics if is_accuracy(m)]

    @property
    def main_metrics(self) -> list[str]:
        """The study's table columns: per-task accuracy, mean accuracy, perplexities."""
        return [m for m in self.metrics if is_task_accuracy(m) or m == "zeroshot/mean_acc" or m.startswith("perplexity/")]

    @property
    def wandb_modes(self) -> set[str]:
        return {job.wandb_mode for job in self.jobs if job.wandb_mode}


def _sort_key(key: tuple) -> tuple:
    return tuple((0, v) if isinstance(v, int) else (1, str(v)) for v in key)


def describe_groups(jobs: list[Job]) -> Summary:
    """Group the jobs and compute the per-group statistics of the report (see the module docstring).

    Noise-floor repeats (:attr:`Job.repeat`) are left out of the groups (they serve only the noise floor).
    The returned summary has no evidence and no layer families yet: :func:`calib_sweep.report.summarize`
    adds them (:mod:`calib_sweep.report.evidence`, :mod:`calib_sweep.report.layers`), which sit above this
    module.
    """
    by_group: dict[tuple, list[Job]] = {}
    for job in jobs:
        # a job folder with no readable config, or whose config was refused at validate, is listed among the
        # jobs (failed), in no group
        if job.config and not job.repeat and not job.config_refused:
            by_group.setdefault(job.group, []).append(job)
    groups = []
    metrics: set[str] = set()
    for key in sorted(by_group, key=_sort_key):
        members = by_group[key]
        ok = sorted((j for j in members if j.status == "ok"), key=lambda j: (j.seed is None, j.seed or 0))
        names = sorted({m for j in ok for m in j.metrics}, key=metric_order)
        metrics.update(names)
        stats = {
            name: describe([j.metrics[name] for j in ok if name in j.metrics], [j.seed for j in ok if name in j.metrics])
            for name in names
        }
        groups.append(Group(key=key, jobs=members, stats=stats))
    ordered = sorted(metrics, key=metric_order)
    return Summary(
        jobs=jobs, groups=groups, metrics=ordered, dispersion=dispersion(groups, ordered),
        series=sample_size_series(groups), dense_reference=dense_reference(jobs),
    )


def dispersion(groups: list[Group], metrics: list[str]) -> list[Dispersion]:
    """Per metric, the per-group SDs and ranges summarized over groups with >= 2 finished seeds.

    Sorted: accuracy metrics first, most dispersed (mean SD) first; then the other metrics likewise.
    """
    rows = []
    for metric in metrics:
        spread = [(g.stats[metric], g) for g in groups if metric in g.stats and g.stats[metric].sd is not None]
        if not spread:
            continue
        sds = [s.sd for s, _ in spread]
        ranges = [s.range for s, _ in spread]
        widest = max(spread, key=lambda sg: sg[0].range)[1]
        rows.append(Dispersion(metric, len(spread), statistics.fmean(sds), max(sds), statistics.fmean(ranges),
                               max(ranges), widest.label))
    return sorted(rows, key=lambda r: (not is_accuracy(r.metric), -r.mean_sd if math.isfinite(r.mean_sd) else 0))


def sample_size_series(groups: list[Group]) -> dict[tuple, list[Group]]:
    """Groups that differ only by ``n_samples`` (at least two sizes): (model, method, source, seq_len, variant) -> groups by n."""
    series: dict[tuple, list[Group]] = {}
    for group in groups:
        if group.n_samples is None:
            continue
        series.setdefault((group.model, group.method, group.source, group.seq_len, group.variant), []).append(group)
    return {
        key: sorted(members, key=lambda g: g.n_samples)
        for key, members in sorted(series.items(), key=lambda kv: _sort_key(kv[0]))
        if len({g.n_samples for g in members}) >= 2
    }


def dense_reference(jobs: list[Job]) -> dict[str, dict[str, float]]:
    """Per model, the mean of each dense reference figure (``results.json["dense"]["metrics"]``) over its jobs."""
    collected: dict[str, dict[str, list[float]]] = {}
    for job in jobs:
        if job.status != "ok":
            continue
        for metric, value in job.dense_metrics.items():
            collected.setdefault(job.model, {}).setdefault(metric, []).append(value)
    out: dict[str, dict[str, float]] = {}
    for model, metrics in sorted(collected.items()):
        out[model] = {}
        for metric in sorted(metrics, key=metric_order):
            values = finite(metrics[metric])
            out[model][metric] = statistics.fmean(values) if values else float("nan")
    return out
