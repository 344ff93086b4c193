"""Paired item analysis: zero-shot accuracy with both sources of noise, calibration sets and items.

Every job answers the same zero-shot items, and since issue 27 item 4 it keeps them (``items.npz``,
:mod:`calib_sweep.evaluation.items`).  Two analyses use them (the item's ``correct`` = lm-eval ``acc``, so a
job's accuracy over its items is its ``zeroshot/<task>/acc``):

**Item noise vs set spread** (:class:`ItemNoiseRow`, ``item_noise.csv``): per group (:attr:`Job.group`: jobs
that differ only by seed) and task, on the items every job of the group answered (``n_items``), the mean over
the jobs of the binomial standard error of accuracy ``sqrt(p (1 - p) / n_items)``, the SD of accuracy across
calibration sets (ddof=1) and their ratio.  The item SE is how far the accuracy on this item sample may lie from
the accuracy on the task's population of items; the set SD is what the study measures.  Row ``task = mean``:
mean accuracy over the tasks, its SE ``sqrt(sum_t p_t (1 - p_t) / n_t) / T``.

**Paired comparisons** (:class:`PairedRow`, ``paired_comparisons.csv``): for the pairs of groups the report
compares (:mod:`calib_sweep.report.evidence`: sources within a method, selection strategies within a method x
source) and for every pair of data-dependent methods run on the same source, sample size and variant
(``table = method_comparisons``, e.g. SparseGPT vs Wanda on offline_news), per task and (with two or more tasks) for the mean accuracy over the tasks, the difference ``a - b`` in accuracy points on the
items shared by every job of both groups, with a two-way bootstrap (Davison & Hinkley 1997, *Bootstrap Methods
and their Application*, sec. 3.8, resampling both random factors of a crossed design): each of
:data:`REPLICATES` replicates draws the calibration sets (jobs) of each group with replacement, and the shared
items with replacement, **the same item draw for both groups** (the pairing: an item that is hard for both
cancels out of the difference).  Where the two groups were calibrated on the same sets (a method pair whose jobs
have the same calibration-set token SHA-256s, seed for seed: ``sets_paired``), one set draw serves both groups,
so a hard calibration set also cancels out.  The interval is the 95% percentile interval of the replicate differences,
expanded for the few sets a study runs (:func:`expanded`: spread about the effect by
``sqrt(n/(n-1)) t_{n-1}/z``; the plain interval undercovers at n = 3-5); ``p``
is the two-sided bootstrap p ``2 min(P(d <= 0), P(d >= 0))``, floored at ``1 / REPLICATES`` and capped at 1.
A group with fewer than :data:`MIN_SETS` sets gets ``n/a (n=2 < 3)`` instead of an interval and p, and so does a
strategy whose calibration sets are random's own (``n/a (not independent: ...)``, as in the strategy table).

**Random numbers.** Each pair has its own ``numpy.random.default_rng(SEED)``, so a row does not depend on the
others; the draws, in order: ``rng.integers(0, J_a, (B, J_a))`` (sets of ``a``), ``rng.integers(0, J_b, (B, J_b))``
(sets of ``b``; not drawn when ``sets_paired``: ``b`` reuses ``a``'s), then per task in name order ``rng.integers(0, n_t, (B, n_t))`` (items).  The mean row uses the
same draws as the task rows: the mean over tasks of each replicate's per-task differences.

**Jobs without items.npz** (runs from before issue 27 item 4, or zero-shot off) are skipped and counted
(:attr:`PairedItems.skipped`), never an error; so is an unreadable file (:attr:`PairedItems.unreadable`).
Data-free methods (no calibration set) are left out.  A task is used where every job of the group (pair) has it;
``mean`` is the unweighted mean over those leaf tasks (MMLU subjects count one task each, unlike
``zeroshot/mean_acc``, which uses lm-eval's ``mmlu`` aggregate).
"""

from __future__ import annotations

import math
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from calib_sweep.evaluation.items import ItemRecords, load_item_records
from calib_sweep.report.aggregate import Group
from calib_sweep.report.collect import Job

#: Fewest calibration sets per group for an interval and a p (issue 27, bad input).
MIN_SETS = 3
#: Bootstrap replicates per pair.
REPLICATES = 2000
#: Seed of each pair's ``numpy.random.default_rng``.
SEED = 0
LEVEL = 0.95
#: The ``task`` of the rows about the mean accuracy over tasks.
MEAN_TASK = "mean"


@dataclass
class ItemNoiseRow:
    """Item SE beside set SD for one group x task (see the module docstring).

    Attributes:
        n_sets: jobs with items; n_items: items answered by every one of them; accuracy: mean over the jobs
        (fraction 0-1); item_se: mean over the jobs of ``sqrt(p (1 - p) / n_items)`` (fraction);
        set_sd: SD of the jobs' accuracies, ddof=1 (fraction; None with one set); ratio: item_se / set_sd
        (None when set_sd is None or 0); na: why the ratio is missing, else None.
    """

    model: str
    method: str
    source: str
    n_samples: int | None
    seq_len: int | None
    variant: str
    task: str
    n_sets: int
    n_items: int
    accuracy: float
    item_se: float
    set_sd: float | None
    ratio: float | None
    na: str | None = None


@dataclass
class PairedRow:
    """One paired comparison ``a - b`` of accuracy for one task (or :data:`MEAN_TASK`).

    Attributes:
        table: ``source_comparisons``, ``strategy_comparisons`` (the report's pairs it follows) or
        ``method_comparisons``; method: as in that table (``<method> / <source>`` for strategies, ``–`` for method
        pairs); a / b: the sources, strategies or methods; source: the shared source of a method pair, else None;
        sets_paired: both groups ran on the same calibration sets and are resampled together;
        variant: the group's variant (other settings for strategies); n_sets_a / n_sets_b: jobs with items;
        n_items: shared items (summed over tasks for the mean row); effect: ``100 * (acc_a - acc_b)`` on the
        shared items, accuracy points; ci_low / ci_high: 95% percentile two-way bootstrap interval, points;
        p: two-sided bootstrap p; replicates: B; na: ``n/a (n=2 < 3)`` when a group has too few sets, or the
        strategy table's ``n/a (not independent: ...)`` (then ci_low, ci_high and p are None).
    """

    table: str
    model: str
    method: str
    n_samples: int | None
    seq_len: int | None
    variant: str
    a: str
    b: str
    task: str
    n_sets_a: int
    n_sets_b: int
    n_items: int
    effect: float
    ci_low: float | None = None
    ci_high: float | None = None
    p: float | None = None
    replicates: int = REPLICATES
    na: str | None = None
    source: str | None = None
    sets_paired: bool = False

    @property
    def ci_text(self) -> str:
        """``[-1.20, 3.40]`` (points) or the ``n/a (...)`` reason."""
        return self.na if self.na else f"[{self.ci_low:.2f}, {self.ci_high:.2f}]"


@dataclass
class PairedItems:
    """What :func:`compute` found: the item-noise rows, the paired rows and the jobs it could not use."""

    item_noise: list[ItemNoiseRow] = field(default_factory=list)
    comparisons: list[PairedRow] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)  # ok jobs with zero-shot results but no items.npz
    unreadable: list[tuple[Path, str]] = field(default_factory=list)  # items.npz present but not readable
    with_items: int = 0  # jobs whose items were read


# ------------------------------------------------------------------------------------------ arithmetic

def shared_matrix(records: list[ItemRecords]) -> tuple[np.ndarray, np.ndarray]:
    """The items every record answered and their correctness.

    Args:
        records: one task's :class:`ItemRecords` of several jobs (doc ids ascending, as stored).

    Returns:
        ``(doc_id int64 [n], correct uint8 [jobs x n])``, columns in doc-id order; ``n`` may be 0.
    """
    shared = records[0].doc_id
    for rec in records[1:]:
        shared = np.intersect1d(shared, rec.doc_id, assume_unique=True)
    matrix = np.stack([rec.correct[np.isin(rec.doc_id, shared, assume_unique=True)] for rec in records])
    return shared, matrix.astype(np.uint8, copy=False)


def _counts(draws: np.ndarray, k: int) -> np.ndarray:
    """float64 [B x k]: how often each of ``0..k-1`` appears in each row of the int [B x m] ``draws``
    (overwritten: row b is shifted by ``b * k`` so one bincount counts every row)."""
    rows = draws.shape[0]
    draws += k * np.arange(rows)[:, None]
    return np.bincount(draws.ravel(), minlength=rows * k).reshape(rows, k).astype(np.float64)


def _resampled_accuracy(correct: np.ndarray, set_weights: np.ndarray, item_weights: np.ndarray) -> np.ndarray:
    """float64 [B]: mean correctness of each replicate, ``sum_j sum_i v[b,j] w[b,i] C[j,i] / (J n)``.

    ``correct`` [J x n] 0/1, ``set_weights`` [B x J] and ``item_weights`` [B x n] draw counts (rows sum to J, n).
    """
    per_set = correct.astype(np.float64) @ item_weights.T  # [J x B]: correct answers of set j on draw b
    return np.einsum("bj,jb->b", set_weights, per_set) / (correct.shape[0] * correct.shape[1])


def bootstrap_difference(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray], replicates: int = REPLICATES,
                         seed: int = SEED, sets_paired: bool = False) -> dict[str, tuple[float, np.ndarray]]:
    """Two-way paired bootstrap of ``acc_a - acc_b`` (points) per task and for the mean over the tasks.

    Args:
        a, b: task -> correctness [jobs x n_t] (0/1) of the two groups on the same ``n_t`` shared items (same
            columns in both); every task in both, ``n_t >= 1``, at least one job each.
        replicates: B.
        seed: of ``numpy.random.default_rng``; the draw order is the module docstring's.
        sets_paired: row j of ``a`` and of ``b`` come from the same calibration set (equal job counts): one set
            draw serves both groups.

    Returns:
        task (and :data:`MEAN_TASK`) -> ``(effect on the data, float64 [B] replicate differences)``, points.

    Raises:
        ValueError: the tasks or item counts of ``a`` and ``b`` differ, a task has no item, or ``sets_paired``
            with different job counts.
    """
    tasks = sorted(a)
    if sorted(b) != tasks or not tasks:
        raise ValueError(f"paired: tasks differ ({sorted(a)} vs {sorted(b)}); pass the shared tasks only")
    rng = np.random.default_rng(seed)
    ja, jb = next(iter(a.values())).shape[0], next(iter(b.values())).shape[0]
    if sets_paired and ja != jb:
        raise ValueError(f"paired: sets_paired needs the same calibration sets on both sides, got {ja} and {jb} "
                         "jobs; pass sets_paired=False")
    va = _counts(rng.integers(0, ja, size=(replicates, ja)), ja)
    vb = va if sets_paired else _counts(rng.integers(0, jb, size=(replicates, jb)), jb)
    out: dict[str, tuple[float, np.ndarray]] = {}
    for task in tasks:
        ca, cb = a[task], b[task]
        n = ca.shape[1]
        if n == 0 or cb.shape[1] != n or ca.shape[0] != ja or cb.shape[0] != jb:
            raise ValueError(f"paired: task {task!r} has shapes {ca.shape} and {cb.shape}; "
                             "pass both groups' correctness on the same shared items")
        w = _counts(rng.integers(0, n, size=(replicates, n)), n)
        diff = 100.0 * (_resampled_accuracy(ca, va, w) - _resampled_accuracy(cb, vb, w))
        out[task] = (100.0 * (float(ca.mean()) - float(cb.mean())), diff)
    out[MEAN_TASK] = (float(np.mean([out[t][0] for t in tasks])), np.mean([out[t][1] for t in tasks], axis=0))
    return out


def expanded(effect: float, diffs: np.ndarray, n_sets: int, level: float = LEVEL) -> np.ndarray:
    """Replicate differences spread about ``effect`` by ``sqrt(n/(n-1)) * t_{n-1} / z`` (the expanded
    percentile bootstrap, Hesterberg 2015, *The American Statistician* 69(4), sec. 3), ``n`` the smaller
    group's number of calibration sets.

    Resampling n sets underestimates their variance by (n-1)/n and ignores the t quantile; at n = 3 with a
    set SD of about 5 points the plain percentile interval covers 86%, at n = 5 91% (``bench/ci_coverage.py``).
    Expanded, it covers at least 0.93 at n = 3, 5, 10 (conservative where items dominate the noise).
    """
    from scipy.stats import norm, t

    n = max(int(n_sets), 2)
    factor = math.sqrt(n / (n - 1)) * float(t.ppf(0.5 + level / 2, n - 1)) / float(norm.ppf(0.5 + level / 2))
    return effect + (diffs - float(np.mean(diffs))) * factor


def percentile_summary(diffs: np.ndarray, level: float = LEVEL) -> tuple[float, float, float]:
    """``(ci_low, ci_high, p)`` of replicate differences: percentile interval and two-sided bootstrap p."""
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(diffs, [tail, 100 - tail])
    share = min(float(np.mean(diffs <= 0)), float(np.mean(diffs >= 0)))
    p = min(1.0, max(2 * share, 1.0 / diffs.shape[0]))
    return float(low), float(high), p


def item_noise(records: list[Mapping[str, ItemRecords]]) -> dict[str, dict[str, Any]]:
    """Item SE vs set SD of one group: task (and :data:`MEAN_TASK`) -> ItemNoiseRow fields from ``n_sets`` on.

    ``records``: the group's jobs (task -> ItemRecords each); tasks every job has, with shared items.
    """
    tasks = sorted(set.intersection(*(set(r) for r in records)))
    out: dict[str, dict[str, Any]] = {}
    p_by_task, n_by_task = [], []
    for task in tasks:
        _, matrix = shared_matrix([r[task] for r in records])
        n = matrix.shape[1]
        if n == 0:
            continue
        p = matrix.mean(axis=1)
        p_by_task.append(p)
        n_by_task.append(n)
        out[task] = _noise_fields(p, np.sqrt(p * (1 - p) / n), n)
    if len(p_by_task) > 1:
        p = np.mean(p_by_task, axis=0)
        se = np.sqrt(sum(pt * (1 - pt) / nt for pt, nt in zip(p_by_task, n_by_task))) / len(p_by_task)
        out[MEAN_TASK] = _noise_fields(p, se, int(sum(n_by_task)))
    return out


def _noise_fields(p: np.ndarray, se: np.ndarray, n: int) -> dict[str, Any]:
    sets = int(p.shape[0])
    sd = float(np.std(p, ddof=1)) if sets >= 2 else None
    ratio = float(np.mean(se)) / sd if sd else None
    na = f"n={sets} < 2" if sd is None else ("set SD 0" if sd == 0 else None)
    return dict(n_sets=sets, n_items=n, accuracy=float(np.mean(p)), item_se=float(np.mean(se)), set_sd=sd,
                ratio=ratio, na=na)


# ------------------------------------------------------------------------------------------ the report

class _Loader:
    """Reads each job's items.npz once; remembers the jobs without one."""

    def __init__(self) -> None:
        self.cache: dict[Path, dict[str, ItemRecords] | None] = {}
        self.skipped: dict[Path, None] = {}
        self.unreadable: dict[Path, str] = {}

    def __call__(self, job: Job) -> dict[str, ItemRecords] | None:
        if job.folder not in self.cache:
            records = None
            try:
                records = load_item_records(job.folder) or None
            except FileNotFoundError:
                if any(m.startswith("zeroshot/") for m in job.metrics):
                    self.skipped[job.folder] = None
            except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
                self.unreadable[job.folder] = f"{type(exc).__name__}: {exc}"
            self.cache[job.folder] = records
        return self.cache[job.folder]


def _group_records(group: Group, load: _Loader) -> list[dict[str, ItemRecords]]:
    return [r for _, r in _group_jobs_with_records(group, load)]


def _group_jobs_with_records(group: Group, load: _Loader) -> list[tuple[Job, dict[str, ItemRecords]]]:
    """(job, its item records) for the group's finished first runs with items, in seed order."""
    jobs = sorted((j for j in group.jobs if j.status == "ok" and not j.repeat), key=lambda j: (j.seed is None, j.seed or 0))
    return [(j, r) for j, r in ((j, load(j)) for j in jobs) if r]


def _same_sets(ja: list[Job], jb: list[Job]) -> bool:
    """Both lists ran on the same calibration sets in the same order (every token SHA-256 known and equal)."""
    sa, sb = [j.calibration_sha256 for j in ja], [j.calibration_sha256 for j in jb]
    return len(sa) == len(sb) and all(sa) and sa == sb


def _method_pairs(groups: list[Group]) -> list[tuple[str, str, Group, Group]]:
    """(source, group a, group b): data-dependent method pairs on the same model, source, sample size
    and variant, methods in name order; selection sweeps are left to the strategy pairs."""
    cells: dict[tuple, dict[str, Group]] = {}
    for g in groups:
        if g.jobs and any(k.startswith("selection.") for k, _ in g.jobs[0].variant_items):
            continue
        cells.setdefault((g.model, g.source, g.n_samples, g.seq_len, g.variant), {})[g.method] = g
    out = []
    for (_, source, *_), by_method in sorted(cells.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
        names = sorted(by_method)
        out += [(source, by_method[a], by_method[b]) for i, a in enumerate(names) for b in names[i + 1:]]
    return out


def _pairs(groups: list[Group], evidence: Any) -> list[tuple[str, tuple, str, str, Group, Group, str | None]]:
    """(table, (model, method, n, seq, variant), a, b, group a, group b, na) for every pair the report compares;
    ``na`` is the evidence row's ``not independent: ...`` reason (a strategy sharing random's calibration sets,
    issue 27 item 6), else None."""
    from calib_sweep.report.evidence import _split_selection

    if evidence is None:
        return []
    by_key = {g.key: g for g in groups}
    by_strategy = {}
    for g in groups:
        if any(k.startswith("selection.") for k, _ in (g.jobs[0].variant_items if g.jobs else [])):
            other, chosen = _split_selection(g)
            by_strategy[(g.model, f"{g.method} / {g.source}", g.n_samples, g.seq_len, other, chosen)] = g
    out, seen = [], set()
    for table, rows in (("source_comparisons", evidence.comparisons), ("strategy_comparisons", evidence.strategies)):
        for row in rows:
            a, b = row.comparison.a, row.comparison.b
            head = (row.model, row.method, row.n_samples, row.seq_len, row.variant)
            if (table, head, a, b) in seen:
                continue
            seen.add((table, head, a, b))
            if table == "source_comparisons":
                ga = by_key.get((row.model, row.method, a, row.n_samples, row.seq_len, row.variant))
                gb = by_key.get((row.model, row.method, b, row.n_samples, row.seq_len, row.variant))
            else:
                ga, gb = by_strategy.get((*head, a)), by_strategy.get((*head, b))
            reason = str(row.comparison.na) if row.comparison.na and "not independent" in str(row.comparison.na) else None
            if ga is not None and gb is not None:
                out.append((table, head, a, b, ga, gb, reason))
    return out


def _paired_rows(table: str, head: tuple, a: str, b: str, ra: list, rb: list, reason: str | None = None,
                 source: str | None = None, sets_paired: bool = False) -> list[PairedRow]:
    tasks = sorted(set.intersection(*(set(r) for r in ra + rb)))
    ca, cb = {}, {}
    for task in tasks:
        _, matrix = shared_matrix([r[task] for r in ra + rb])
        if matrix.shape[1]:
            ca[task], cb[task] = matrix[:len(ra)], matrix[len(ra):]
    if not ca:
        return []
    n_items = {t: m.shape[1] for t, m in ca.items()}
    n_items[MEAN_TASK] = sum(n_items.values())
    model, method, n, seq, variant = head
    small = min(len(ra), len(rb))
    na = reason or (f"n/a (n={small} < {MIN_SETS})" if small < MIN_SETS else None)
    rows = []
    for task, (effect, diffs) in bootstrap_difference(ca, cb, sets_paired=sets_paired).items():
        if task == MEAN_TASK and len(ca) < 2:
            continue
        low, high, p = (None, None, None) if na else percentile_summary(expanded(effect, diffs, small))
        rows.append(PairedRow(table, model, method, n, seq, variant, a, b, task, len(ra), len(rb), n_items[task],
                              effect, low, high, p, REPLICATES, na, source, sets_paired))
    return rows


def compute(groups: list[Group], evidence: Any = None, data_free: Iterable[str] = frozenset()) -> PairedItems:
    """Item noise per group and paired comparisons for the report's pairs (see the module docstring).

    Args:
        groups: the summary's groups (:func:`calib_sweep.report.aggregate.describe_groups`).
        evidence: the summary's :class:`calib_sweep.report.evidence.Evidence` (its source and strategy
            comparisons name the pairs); None: item noise only.
        data_free: methods without calibration data (left out).
    """
    free = frozenset(data_free)
    load = _Loader()
    result = PairedItems()
    kept = [g for g in groups if g.method not in free]
    records = {g.key: _group_records(g, load) for g in kept}
    for g in kept:
        if records[g.key]:
            for task, fields in item_noise(records[g.key]).items():
                result.item_noise.append(ItemNoiseRow(g.model, g.method, g.source, g.n_samples, g.seq_len, g.variant,
                                                      task, **fields))
    for table, head, a, b, ga, gb, reason in _pairs(kept, evidence):
        ra, rb = records.get(ga.key), records.get(gb.key)
        if ra and rb:
            result.comparisons += _paired_rows(table, head, a, b, ra, rb, reason)
    for source, ga, gb in _method_pairs([g for g in kept if records[g.key]]):
        ja, jb = _group_jobs_with_records(ga, load), _group_jobs_with_records(gb, load)
        head = (ga.model, "–", ga.n_samples, ga.seq_len, ga.variant)
        result.comparisons += _paired_rows("method_comparisons", head, ga.method, gb.method, [r for _, r in ja],
                                           [r for _, r in jb], source=source,
                                           sets_paired=_same_sets([j for j, _ in ja], [j for j, _ in jb]))
    result.skipped = list(load.skipped)
    result.unreadable = sorted(load.unreadable.items())
    result.with_items = sum(1 for v in load.cache.values() if v)
    return result


# ------------------------------------------------------------------------------------------ output

def _note(paired: PairedItems) -> str:
    parts = []
    if paired.skipped:
        parts.append(f"{len(paired.skipped)} finished job(s) with zero-shot results have no items.npz (runs from "
                     "before per-item records, or job folders no longer on disk) and are skipped.")
    if paired.unreadable:
        parts.append(f"{len(paired.unreadable)} items.npz file(s) could not be read and are skipped: "
                     + "; ".join(f"{p} ({why})" for p, why in paired.unreadable[:3]))
    return " ".join(parts)


def csv_rows(paired: PairedItems | None) -> dict[str, list[dict[str, Any]]]:
    """``{"item_noise": rows, "paired_comparisons": rows}`` for the CSVs and W&B (only the non-empty ones)."""
    if paired is None:
        return {}
    out = {}
    if paired.item_noise:
        out["item_noise"] = [asdict(r) for r in paired.item_noise]
    if paired.comparisons:
        rename = {"effect": "effect_points", "ci_low": "ci_low_points", "ci_high": "ci_high_points"}
        out["paired_comparisons"] = [{**{rename.get(k, k): v for k, v in asdict(r).items()},
                                      "ci_method": "two-way paired bootstrap, expanded percentile (Hesterberg 2015)", "ci_text": r.ci_text}
                                     for r in paired.comparisons]
    return out


def write_csvs(paired: PairedItems | None, out: Path) -> list[Path]:
    """Write ``item_noise.csv`` and ``paired_comparisons.csv`` (where there are rows) into ``out``."""
    import csv

    written = []
    for name, rows in csv_rows(paired).items():
        path = Path(out) / f"{name}.csv"
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(dict.fromkeys(k for row in rows for k in row)))
            writer.writeheader()
            writer.writerows([{k: ("" if v is None else v) for k, v in row.items()} for row in rows])
        written.append(path)
    return written


def _pts(value: float | None) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{100 * value:.2f}"


def tables(paired: PairedItems | None) -> list:
    """The report tables (:class:`calib_sweep.report.display.Table`): item noise and paired comparisons; a note
    alone when jobs had zero-shot results but no items; ``[]`` when there is nothing to say."""
    from calib_sweep.report.display import Table

    if paired is None or not (paired.item_noise or paired.comparisons or paired.skipped or paired.unreadable):
        return []
    note = _note(paired)
    if not (paired.item_noise or paired.comparisons):
        return [Table("Paired item analysis", [], [], note=note + " No job has per-item records: no item noise or "
                      "paired comparison to show.", anchor="paired-items")]
    out = []
    out.append(Table(
        "Item noise vs calibration-set spread",
        ["model", "method", "source", "n×len", "variant", "task", "sets", "items", "acc (%)", "item SE (points)",
         "set SD (points)", "item SE / set SD"],
        [[r.model, r.method, r.source, f"{r.n_samples}×{r.seq_len}", r.variant or "–", r.task, str(r.n_sets),
          str(r.n_items), _pts(r.accuracy), _pts(r.item_se), _pts(r.set_sd),
          f"{r.ratio:.2f}" if r.ratio is not None else f"n/a ({r.na})"] for r in paired.item_noise],
        note=("Per group and task, on the items every job of the group answered: the binomial SE of accuracy "
              "sqrt(p(1-p)/n_items), averaged over the calibration sets, beside the SD of accuracy across the sets "
              "(ddof=1). A ratio above 1: the item sample limits what the accuracy says about the task more than the "
              "calibration set does."),
        anchor="item-noise"))
    out.append(Table(
        "Paired comparisons on shared items (sets and items resampled together)",
        ["table", "model", "method", "source", "n×len", "variant", "a", "b", "task", "sets a", "sets b", "same sets",
         "items", "a − b (points)", "95% CI (points)", "p (bootstrap)"],
        [[r.table.replace("_comparisons", ""), r.model, r.method, r.source or "–", f"{r.n_samples}×{r.seq_len}",
          r.variant or "–", r.a, r.b, r.task, str(r.n_sets_a), str(r.n_sets_b), "yes" if r.sets_paired else "no",
          str(r.n_items), f"{r.effect:+.2f}", r.ci_text, "–" if r.p is None else f"{r.p:.4f}"]
         for r in paired.comparisons],
        note=("Every job answers the same zero-shot items, so each of the "
              f"{REPLICATES} bootstrap replicates redraws the calibration sets of each group with replacement and one "
              "sample of the shared items with replacement that both groups use, which removes the items' own "
              "difficulty from the difference while keeping both the set-to-set and the item-sampling noise in the "
              "interval. Method pairs (table method) calibrated on the same sets (same sets: yes) share the set "
              "draw too, so a hard calibration set cancels out as a hard item does. The interval is the 95% percentile "
              "interval of the replicate differences, expanded for the few "
              "sets a study runs (spread about the effect by sqrt(n/(n-1)) t_{n-1}/z, Hesterberg 2015; it covers at "
              "least 93% at n = 3-10, bench/ci_coverage.py), and p the "
              f"two-sided bootstrap p (numpy default_rng({SEED}) per pair; groups with fewer than {MIN_SETS} sets: "
              "n/a). " + note).strip(),
        anchor="paired-items"))
    return out
