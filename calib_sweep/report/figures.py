"""The report's figures (matplotlib, rendered off-screen to PNG bytes).

* Box plots, per model: each metric's values across calibration sets (one box per method × source × size),
  one panel with its own y axis per data-dependent method and one for the data-free controls, boxes
  coloured by source.  Mean accuracy and every task's accuracy when zero-shot results exist; every
  perplexity text always.
* Sample-size curves, per model: mean ± SD (error bars, ddof=1) of perplexity and mean accuracy against
  ``n_samples`` (log2 axis), one line per method × source × seq_len, drawn when n_samples varies.
* Per-layer heatmaps (:func:`layer_heatmap`), per method family: output error per layer x calibration set
  (:mod:`calib_sweep.report.layers`).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")  # no display, no GUI toolkit
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from calib_sweep.report.aggregate import Group, Summary, is_accuracy, is_task_accuracy, metric_label  # noqa: E402
from calib_sweep.report.collect import finite  # noqa: E402
from calib_sweep.report.evidence import data_free_methods  # noqa: E402
from calib_sweep.report.layers import LayerFamily, log10_error, set_labels, short_name  # noqa: E402

_COLOURS = plt.get_cmap("tab10").colors


@dataclass
class Figure:
    """One rendered figure: ``name`` (file stem), ``title`` and the PNG bytes."""

    name: str
    title: str
    png: bytes


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def _scale(metric: str) -> float:
    return 100.0 if is_accuracy(metric) else 1.0


def _ylabel(metric: str) -> str:
    return f"{metric_label(metric)} accuracy (%)" if is_accuracy(metric) else metric_label(metric)


def _short_variant(items: list[tuple[str, str]]) -> str:
    """A variant label for an axis, from a job's ``variant_items``: ``selection.band=high,
    selection.name=perplexity`` -> ``perplexity band=high`` (the config group prefix and ``name=``
    dropped, the name first)."""
    names = [value for key, value in items if key.rsplit(".", 1)[-1] == "name"]
    rest = [f"{key.rsplit('.', 1)[-1]}={value}" for key, value in items if key.rsplit(".", 1)[-1] != "name"]
    return " ".join(names + rest)


def _box_axes(ax, groups: list[Group], metric: str, show_size: bool, sources: list[str], title: str) -> bool:
    """Draw one metric's boxes of one panel's groups on ``ax`` (titled ``title``); False when no group has a
    finite value. A box's label names its method only when the panel holds more than one method."""
    positions, data, colours, labels = [], [], [], []
    x = 0.0
    last_method = None
    several = len({g.method for g in groups}) > 1
    for g in groups:
        stat = g.stats.get(metric)
        values = finite(v for _, v in stat.values) if stat else []
        if not values:
            continue
        if last_method is not None and g.method != last_method:
            x += 0.8  # a gap between methods
        last_method = g.method
        x += 1
        positions.append(x)
        data.append([v * _scale(metric) for v in values])
        colours.append(_COLOURS[sources.index(g.source) % len(_COLOURS)])
        parts = ([g.method] if several else []) + ([g.source] if len(sources) > 1 else []) + ([f"n={g.n_samples}"] if show_size else [])
        parts += [_short_variant(g.jobs[0].variant_items)] if g.variant and g.jobs else []
        labels.append(parts or [g.source])
    if not data:
        return False
    boxes = ax.boxplot(data, positions=positions, widths=0.6, patch_artist=True, showmeans=True, showfliers=False,
                       medianprops={"color": "black"},
                       meanprops={"marker": "D", "markerfacecolor": "white", "markeredgecolor": "black", "markersize": 4})
    for patch, colour in zip(boxes["boxes"], colours):
        patch.set_facecolor(colour)
        patch.set_alpha(0.75)
    for pos, values in zip(positions, data):  # every calibration set as a dot
        ax.scatter([pos] * len(values), values, s=9, color="black", zorder=3, alpha=0.6)
    ax.set_xticks(positions)
    if len(positions) <= 4:  # few boxes: stacked lines, horizontal
        ax.set_xticklabels(["\n".join(parts) for parts in labels], fontsize=7)
    else:  # many boxes: one line each, vertical, so neighbouring labels never overlap
        ax.set_xticklabels([" · ".join(parts) for parts in labels], fontsize=6, rotation=90)
    ax.set_ylabel(_ylabel(metric), fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.tick_params(axis="y", labelsize=7)
    return True


def method_panels(groups: list[Group]) -> list[tuple[str, list[Group]]]:
    """The box plots' panels: (title, groups) per data-dependent method in order of first appearance, then one
    panel ``data-free controls`` holding every data-free method (dense, RTN, magnitude), so that each panel
    has its own y axis (magnitude pruning's perplexity of hundreds would flatten every other box)."""
    free = data_free_methods()
    panels: dict[str, list[Group]] = {}
    for g in groups:
        if g.method not in free:
            panels.setdefault(g.method, []).append(g)
    controls = [g for g in groups if g.method in free]
    return list(panels.items()) + ([("data-free controls", controls)] if controls else [])


def box_plots(summary: Summary) -> list[Figure]:
    """Box plots of each model's metrics across calibration sets: one figure per metric set, one row per
    metric, one panel (own y axis) per method (:func:`method_panels`), boxes coloured by source."""
    figures = []
    for model in dict.fromkeys(g.model for g in summary.groups):
        groups = sorted((g for g in summary.groups if g.model == model), key=lambda g: (g.method, g.source, g.n_samples or 0))
        sources = list(dict.fromkeys(g.source for g in groups))
        show_size = len({(g.n_samples, g.seq_len) for g in groups}) > 1
        figure_sets = []
        if "zeroshot/mean_acc" in summary.metrics:
            figure_sets.append(("accuracy_mean", "Mean zero-shot accuracy across calibration sets", ["zeroshot/mean_acc"]))
        tasks = [m for m in summary.metrics if is_task_accuracy(m)]
        if tasks:
            figure_sets.append(("accuracy_tasks", "Zero-shot accuracy per task across calibration sets", tasks))
        for metric in summary.metrics:
            if metric.startswith("perplexity/"):
                figure_sets.append((f"perplexity_{metric.split('/', 1)[1]}", f"Perplexity ({metric_label(metric)}) across calibration sets", [metric]))
        if not figure_sets:  # neither accuracy nor perplexity: box the first metrics generically
            figure_sets = [(f"metric_{m}", f"{m} across calibration sets", [m]) for m in summary.metrics[:4]]
        for stem, title, metrics in figure_sets:
            figure = _box_figure(model, title, metrics, groups, show_size, sources)
            if figure is not None:
                figures.append(Figure(_slug(f"box_{model}_{stem}"), f"{model}: {title}", figure))
    return figures


def _box_figure(model: str, title: str, metrics: list[str], groups: list[Group], show_size: bool,
                sources: list[str]) -> bytes | None:
    """One figure's PNG: rows = metrics, columns = method panels; None when nothing finite was drawn."""
    panels = method_panels(groups)
    widths = [max(2.6, 0.5 * len(members) + 1.2) for _, members in panels]
    rows = len(metrics)
    fig, axes = plt.subplots(rows, len(panels), figsize=(min(sum(widths) + 0.5, 22), 3.2 * rows), squeeze=False,
                             layout="constrained", gridspec_kw={"width_ratios": widths})
    drawn = 0
    for row, metric in enumerate(metrics):
        for col, (name, members) in enumerate(panels):
            ax = axes[row][col]
            label = name if rows == 1 else f"{metric_label(metric)}: {name}"
            if _box_axes(ax, members, metric, show_size, sources, label):
                drawn += 1
            else:
                ax.set_visible(False)
    if not drawn:
        plt.close(fig)
        return None
    handles = [plt.Rectangle((0, 0), 1, 1, color=_COLOURS[i % len(_COLOURS)], alpha=0.75) for i in range(len(sources))]
    fig.legend(handles, sources, title="calibration source", loc="outside lower center", ncols=min(len(sources), 6), fontsize=7, title_fontsize=7)
    fig.suptitle(f"{model}: {title} (each panel its own axis)", fontsize=10)
    return _png(fig)


def sample_size_plots(summary: Summary) -> list[Figure]:
    """Perplexity (and mean accuracy) vs n_samples, mean ± SD across seeds, per model; empty when n_samples never varies."""
    if not summary.series:
        return []
    figures = []
    metrics = [m for m in summary.metrics if m.startswith("perplexity/") or m == "zeroshot/mean_acc"]
    for model in dict.fromkeys(key[0] for key in summary.series):
        series = {key: groups for key, groups in summary.series.items() if key[0] == model}
        for metric in metrics:
            fig, ax = plt.subplots(figsize=(6.5, 4), layout="constrained")
            drawn = False
            for i, ((_, method, source, seq_len, variant), groups) in enumerate(series.items()):
                points = [(g.n_samples, g.stats[metric]) for g in groups if metric in g.stats and g.stats[metric].mean is not None]
                if not points:
                    continue
                xs = [n for n, _ in points]
                ys = [s.mean * _scale(metric) for _, s in points]
                errs = [(s.sd or 0.0) * _scale(metric) for _, s in points]
                label = f"{method} / {source} / len {seq_len}" + (f" [{variant}]" if variant else "")
                ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=3, label=label, color=_COLOURS[i % len(_COLOURS)])
                drawn = True
            if not drawn:
                plt.close(fig)
                continue
            ax.set_xscale("log", base=2)
            sizes = sorted({g.n_samples for groups in series.values() for g in groups})
            ax.set_xticks(sizes, [str(n) for n in sizes])
            ax.minorticks_off()
            ax.set_xlabel("calibration samples (n_samples)")
            ax.set_ylabel(_ylabel(metric))
            ax.set_title(f"{model}: {metric_label(metric)} vs sample size (mean ± SD across seeds)", fontsize=9)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
            figures.append(Figure(_slug(f"samples_{model}_{metric_label(metric)}"), f"{model}: {_ylabel(metric)} vs n_samples", _png(fig)))
    return figures


def layer_heatmap(family: LayerFamily) -> Figure | None:
    """The family's per-layer output error (log10, layers x calibration sets) as a heatmap; None without finite errors."""
    data = np.array([[np.nan if log10_error(x) is None else log10_error(x) for x in row] for row in family.errors])
    if not np.isfinite(data).any():
        return None
    height = max(3.0, 0.12 * len(family.names) + 1.5)
    width = max(4.0, 0.35 * len(family.jobs) + 3)
    fig, ax = plt.subplots(figsize=(min(width, 16), min(height, 30)))
    image = ax.imshow(data, aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_xticks(range(len(family.jobs)))
    ax.set_xticklabels(set_labels(family), rotation=90, fontsize=7)
    step = max(1, len(family.names) // 40)
    ax.set_yticks(range(0, len(family.names), step))
    ax.set_yticklabels([short_name(n) for n in family.names[::step]], fontsize=6)
    for boundary in [i for i in range(1, len(family.jobs)) if family.jobs[i].source != family.jobs[i - 1].source]:
        ax.axvline(boundary - 0.5, color="white", linewidth=1)
    fig.colorbar(image, ax=ax, label="log10 output error vs dense")
    ax.set_title(f"{family.label}: per-layer output error across calibration sets", fontsize=9)
    return Figure(name=f"layers_{_slug(family.label)}", title=f"{family.label}: per-layer output error (log10)", png=_png(fig))


def all_figures(summary: Summary) -> list[Figure]:
    """Box plots, then sample-size curves, then per-layer heatmaps."""
    heatmaps = [f for f in (layer_heatmap(family) for family in summary.layer_families) if f is not None]
    return box_plots(summary) + sample_size_plots(summary) + heatmaps
