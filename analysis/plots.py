"""The figures, each a pure function of summary frames returning a matplotlib `Figure`. They use
the object-oriented API (`matplotlib.figure.Figure`), never pyplot, so no backend or global
figure state is involved; `save` writes PNG and PDF.

Conventions: errors and ECE in %, NLL in nats, one colour per configuration given once per report
(`colour_map`: the same arm the same colour in every figure, the baseline always dark grey), error
bars = 95% t-intervals over seeds (none for a single seed) unless a figure says otherwise."""

from __future__ import annotations

import functools
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, ParamSpec, Sequence

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from analysis.benchmark import CLEAN_ERROR, CORRUPT_ERROR, CORRUPTION_GROUPS, group_metric

P = ParamSpec("P")
DPI = 150
GREY = "#9a9a9a"
STYLE = {"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8,
          "xtick.labelsize": 8, "ytick.labelsize": 8}

METRIC_WORDS = {"clean/error": "clean error", "corrupt/error": "corrupted error",
                "clean/ece": "clean ECE", "corrupt/ece": "corrupted ECE",
                "clean/nll": "clean NLL", "corrupt/nll": "corrupted NLL",
                "clean/ece_batch100": "clean ECE (batches of 100)",
                "corrupt/ece_batch100": "corrupted ECE (batches of 100)",
                "valid/error": "validation error", "valid/corrupt/error": "validation corrupted error",
                "valid/ece": "validation ECE", "valid/corrupt/ece": "validation corrupted ECE",
                "valid/nll": "validation NLL", "valid/corrupt/nll": "validation corrupted NLL",
                "valid/ece_batch100": "validation ECE (batches of 100)",
                "valid/corrupt/ece_batch100": "validation corrupted ECE (batches of 100)"}
PERCENT_METRICS = ("error", "ece", "ece_batch100")


def metric_scale(metric: str) -> float:
    """100 for fractions shown in % (errors, ECE), else 1."""
    return 100.0 if metric.rsplit("/", 1)[-1] in PERCENT_METRICS else 1.0


def metric_label(metric: str) -> str:
    """An axis label with units: 'corrupted error (%)', 'clean NLL (nats)'."""
    words = METRIC_WORDS.get(metric, metric)
    last = metric.rsplit("/", 1)[-1]
    unit = " (%)" if last in PERCENT_METRICS else " (nats)" if last == "nll" else ""
    return words + unit


CHARS_PER_INCH = 11  # title characters of the module's font size that fit in an inch, with a margin


def _figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def styled(draw: Callable[P, Figure]) -> Callable[P, Figure]:
    """Draw under the module's font sizes (matplotlib reads rcParams as artists are made)."""
    @functools.wraps(draw)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Figure:
        with matplotlib.rc_context(STYLE):
            return draw(*args, **kwargs)
    return wrapper


def save(fig: Figure, out_dir: Path, stem: str) -> list[Path]:
    """Write `stem.png` and `stem.pdf` into out_dir. The saved area grows to hold every title,
    label and legend (`bbox_inches="tight"`): a long arm name must never be cut off."""
    paths = [out_dir / f"{stem}.png", out_dir / f"{stem}.pdf"]
    for path in paths:
        fig.savefig(path, dpi=DPI, bbox_inches="tight", pad_inches=0.1)
    return paths


def _errorbar_halves(half: pd.Series | np.ndarray) -> np.ndarray | None:
    half = np.asarray(half, dtype=float)
    return None if np.isnan(half).all() else np.nan_to_num(half, nan=0.0)


def _legend_below(fig: Figure, handles: list, labels: list[str], title: str | None = None) -> None:
    ncol = 1 if max((len(t) for t in labels), default=0) > 45 else min(3, len(labels))
    fig.legend(handles, labels, loc="outside lower center", ncol=ncol, frameon=False, title=title)


# --- severity curves (poster Fig. 6) ----------------------------------------------------------------

def seeds_note(summary: pd.DataFrame) -> str:
    """What the error bars of a `summarise` frame stand on, for the figure's title: 'one seed per
    configuration: no interval', '3 seeds per configuration', or the range when the counts differ."""
    n = summary.xs("n", axis=1, level="stat").max(axis=1).astype(int)
    if n.max() <= 1:
        return "one seed per configuration: no interval"
    if n.min() == n.max():
        return f"error bars: 95% interval over {n.max()} seeds"
    if n.min() <= 1:
        return f"error bars: 95% interval over up to {n.max()} seeds; configurations with one seed have none"
    return f"error bars: 95% interval over {n.min()} to {n.max()} seeds"


@styled
def severity_figure(curves: Mapping[str, pd.DataFrame], colours: Mapping[str, str], title: str | None = None) -> Figure:
    """One panel per metric (e.g. {"error (%)": frame, "ECE (%)": frame}); each frame is a
    `summarise` frame over severity columns 0..5 (already in display units), one row per
    configuration. `title` replaces the first line of the default title (what is plotted)."""
    fig = _figure(max(4.2 * len(curves), 6.0), 3.6)
    axes = fig.subplots(1, len(curves), squeeze=False)[0]
    for ax, (ylabel, frame) in zip(axes, curves.items()):
        severities = list(frame.columns.get_level_values(0).unique())
        offsets = np.linspace(-0.12, 0.12, len(frame)) if len(frame) > 1 else [0.0]
        for dx, (config, row) in zip(offsets, frame.iterrows()):
            means = [row[(s, "mean")] for s in severities]
            halves = _errorbar_halves([row[(s, "half")] for s in severities])
            ax.errorbar(np.asarray(severities, dtype=float) + dx, means, yerr=halves, marker="o",
                        ms=3.5, lw=1.4, capsize=2.5, color=colours[config], label=config)
        ax.set_xticks(severities, ["clean" if s == 0 else str(s) for s in severities])
        ax.set_xlabel("corruption severity (0 = clean test set)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    shown = " and ".join(label.split(" (")[0] for label in curves)
    title = title or f"{shown[0].upper()}{shown[1:]} against corruption severity (mean over corruptions)"
    fig.suptitle(f"{title}\n{seeds_note(next(iter(curves.values())))}")
    handles, labels = axes[0].get_legend_handles_labels()
    _legend_below(fig, handles, labels)
    return fig


# --- ablation panels (poster Fig. 7) ----------------------------------------------------------------

ERROR_BARS = (("clean", CLEAN_ERROR), ("corrupted\n(mean)", CORRUPT_ERROR),
              *((g, group_metric(g)) for g in CORRUPTION_GROUPS))
CALIBRATION_BARS = {"nll": (("clean", "clean/nll"), ("corrupted", "corrupt/nll")),
                    "ece": (("clean", "clean/ece"), ("corrupted", "corrupt/ece"))}


def _bars(ax, summary: pd.DataFrame, configs: Sequence[str], bars: Sequence[tuple[str, str]],
          colours: Mapping[str, str]) -> int:
    """Grouped bars for the metrics some configuration logged; returns how many groups were drawn
    (an axis with none says 'not logged')."""
    bars = [(name, m) for name, m in bars
            if (m, "mean") in summary and summary.loc[list(configs), (m, "mean")].notna().any()]
    if not bars:
        ax.text(0.5, 0.5, "not logged", transform=ax.transAxes, ha="center", va="center",
                color=GREY)
        ax.set_xticks([])
        return 0
    x = np.arange(len(bars))
    width = 0.8 / len(configs)
    metrics = [m for _, m in bars]
    scale = np.array([metric_scale(m) for m in metrics])
    for i, config in enumerate(configs):
        means = np.array([summary.loc[config, (m, "mean")] for m in metrics]) * scale
        halves = np.array([summary.loc[config, (m, "half")] for m in metrics]) * scale
        ax.bar(x + (i - (len(configs) - 1) / 2) * width, means, width * 0.92,
               yerr=_errorbar_halves(halves), capsize=2, color=colours[config], label=config,
               error_kw={"lw": 0.8})
    ax.set_xticks(x, [name for name, _ in bars])
    ax.grid(axis="y", alpha=0.3)
    return len(bars)


def shared_phrases(labels: Sequence[str]) -> tuple[list[str], str]:
    """Configuration labels without the comma-separated phrases they all share, and those phrases:
    ('noise + blur, beta 2, npow 1', 'noise + blur, beta 2, no label smoothing') ->
    (['npow 1', 'no label smoothing'], 'noise + blur, beta 2')."""
    split = [label.split(", ") for label in labels]
    common = [p for p in split[0] if all(p in s for s in split[1:])] if len(split) > 1 else []
    short = [", ".join(p for p in s if p not in common) for s in split]
    if not all(short) or len(set(short)) < len(short):
        return list(labels), ""
    return short, ", ".join(common)


@styled
def ablation_figure(summary: pd.DataFrame, configs: Sequence[str], colours: Mapping[str, str],
                    title: str) -> Figure:
    """Grouped bars, one per configuration: error (%) on the clean and corrupted test sets and per
    corruption group; NLL (nats) and ECE (%) on the clean and corrupted sets. `summary` is a
    `summarise` frame of raw metrics (fractions) indexed by configuration. The legend names each
    configuration by what sets it apart; what they share goes into the title."""
    fig = _figure(10.5, 3.8)
    ax_err, ax_nll, ax_ece = fig.subplots(1, 3, gridspec_kw={"width_ratios": [3.2, 1.2, 1.2]})
    if _bars(ax_err, summary, configs, ERROR_BARS, colours) > 2:
        ax_err.axvline(1.5, color=GREY, ls=":", lw=1)  # the mean | its split by group
    ax_err.set_ylabel("error (%)")
    ax_err.set_title("error; corrupted split by corruption group")
    _bars(ax_nll, summary, configs, CALIBRATION_BARS["nll"], colours)
    ax_nll.set_ylabel("NLL (nats)")
    ax_nll.set_title("negative log-likelihood")
    _bars(ax_ece, summary, configs, CALIBRATION_BARS["ece"], colours)
    ax_ece.set_ylabel("ECE (%)")
    ax_ece.set_title("calibration error (15 bins)")
    short, common = shared_phrases(configs)
    heading = f"{title}: {common}" if common and common not in title else title
    fig.suptitle(f"{heading}\n{seeds_note(summary.loc[list(configs)])}")
    _legend_below(fig, [Patch(color=colours[c]) for c in configs], short)
    return fig


# --- reliability diagrams ---------------------------------------------------------------------------

SET_WORDS = {"clean": "clean", "corrupt_s5": "severity 5"}


def reliability_ece(bins: Mapping[str, np.ndarray]) -> float:
    """ECE (fraction) from binned counts, mean confidences and accuracies."""
    count = np.asarray(bins["count"], dtype=float)
    if count.sum() == 0:
        return float("nan")
    gap = np.abs(np.asarray(bins["accuracy"]) - np.asarray(bins["confidence"]))
    return float((count * gap).sum() / count.sum())


RELIABILITY_MARKER = (6.0, 160.0)  # marker area (pt^2) of an empty bin and of a bin holding every image


@styled
def reliability_figure(pooled: Mapping[str, Mapping[str, Mapping[str, np.ndarray]]],
                       sets: Mapping[str, str], colours: Mapping[str, str],
                       ece: Mapping[str, Mapping[str, tuple[float, int]]] | None = None) -> Figure:
    """Reliability diagrams: accuracy against confidence per configuration (bins pooled over
    seeds), one column per evaluation set (`sets`: name -> title), each bin's marker area by the
    share of images in it, and that share per bin in a panel below, so that a near-empty bin does
    not read at full weight. `pooled`: configuration -> set name -> bins; `ece`: configuration ->
    set name -> (ECE as a fraction, seeds it is the mean over), shown in the legend as the tables
    show it; without it the legend gives the ECE of the pooled bins, labelled pooled."""
    fig = _figure(max(4.0 * len(sets), 6.0), 5.4)
    grid = fig.subplots(2, len(sets), squeeze=False, sharex=True,
                        gridspec_kw={"height_ratios": [3, 1.1]})
    small, large = RELIABILITY_MARKER
    for col, (name, title) in enumerate(sets.items()):
        top, bottom = grid[0, col], grid[1, col]
        top.plot([0, 100], [0, 100], color=GREY, ls="--", lw=1, label="perfect calibration")
        for config, by_set in pooled.items():
            if name not in by_set:
                continue
            bins = by_set[name]
            count = np.asarray(bins["count"], dtype=float)
            share = count / max(count.sum(), 1)
            shown = count > 0
            centres = (np.arange(len(count)) + 0.5) * 100 / len(count)
            x, y = 100 * np.asarray(bins["confidence"])[shown], 100 * np.asarray(bins["accuracy"])[shown]
            top.plot(x, y, lw=1.0, alpha=0.6, color=colours[config], label=config)
            top.scatter(x, y, s=small + (large - small) * share[shown], color=colours[config], alpha=0.8,
                        edgecolors="white", linewidths=0.4, zorder=3)
            bottom.plot(centres, 100 * share, drawstyle="steps-mid", lw=1.2, color=colours[config])
        top.set(xlim=(0, 100), ylim=(0, 100), title=title, ylabel="accuracy (%)")
        top.grid(alpha=0.3)
        bottom.set(xlabel="confidence (%)", ylabel="images in bin (%)")
        bottom.grid(alpha=0.3)
    handles, labels = grid[0, 0].get_legend_handles_labels()
    words = [ece_words(label, pooled.get(label, {}), sets, ece) for label in labels]
    _legend_below(fig, handles, [f"{label}{w}" for label, w in zip(labels, words)])
    how = ("ECE in the legend: mean over seeds of each seed's ECE, as in the tables" if ece is not None
           else "ECE in the legend: of the bins pooled over seeds")
    fig.suptitle("Reliability diagrams, 15 confidence bins\n"
                 f"curves: bins pooled over seeds; marker area: images in the bin\n{how}")
    return fig


def ece_words(config: str, by_set: Mapping[str, Mapping[str, np.ndarray]], sets: Mapping[str, str],
              ece: Mapping[str, Mapping[str, tuple[float, int]]] | None) -> str:
    """' (ECE clean 3.1%, severity 5 12.0%; mean over 3 seeds)', or '(pooled ECE ...)' without `ece`."""
    if ece is None:
        parts = [f"{SET_WORDS.get(name, name)} {100 * reliability_ece(by_set[name]):.1f}%"
                 for name in sets if name in by_set]
        return f" (pooled ECE {', '.join(parts)})" if parts else ""
    mine = ece.get(config, {})
    parts = [f"{SET_WORDS.get(name, name)} {100 * mine[name][0]:.1f}%" for name in sets if name in mine]
    seeds = sorted({mine[name][1] for name in sets if name in mine})
    counted = "/".join(str(n) for n in seeds)
    return f" (ECE {', '.join(parts)}; mean over {counted} seed{'s' if seeds != [1] else ''})" if parts else ""


# --- paired differences (forest plots) ----------------------------------------------------------------

@dataclass(frozen=True)
class ForestRow:
    label: str  # e.g. "corrupted error: noise only − no mollification"
    mean: float
    half: float  # of the interval drawn (NaN: none)
    colour: str  # the arm's
    marked: bool  # the test rejects (after its family's adjustment)


@styled
def forest_figure(panels: Sequence[tuple[str, Sequence[ForestRow]]], xlabel: str, title: str) -> Figure:
    """Paired differences with their intervals, one panel per family (`panels`: (title, rows)),
    each row an endpoint; a zero line; a rejected test filled, the others hollow."""
    heights = [max(len(rows), 1) for _, rows in panels]
    fig = _figure(7.5, 1.4 + 0.38 * sum(heights) + 0.5 * len(panels))
    axes = fig.subplots(len(panels), 1, squeeze=False, sharex=True, gridspec_kw={"height_ratios": heights})[:, 0]
    for ax, (heading, rows) in zip(axes, panels):
        y = np.arange(len(rows))[::-1]
        for yi, row in zip(y, rows):
            half = row.half if np.isfinite(row.half) else None
            ax.errorbar(row.mean, yi, xerr=half, fmt="o", ms=6, capsize=3, lw=1.6, color=row.colour,
                        mfc=row.colour if row.marked else "white", mew=1.5)
        ax.axvline(0, color=GREY, lw=1, ls="--")
        ax.set_yticks(y, [row.label for row in rows])
        ax.set_ylim(-0.6, len(rows) - 0.4)
        ax.set_title(heading, loc="left")
        ax.grid(axis="x", alpha=0.3)
    axes[-1].set_xlabel(xlabel)
    fig.suptitle(title)
    return fig


# --- Optuna studies ---------------------------------------------------------------------------------

@styled
def history_figure(trials: pd.DataFrame, objectives: Sequence[tuple[str, str]]) -> Figure:
    """Each objective against the trial number, with the best value so far (on that objective
    alone). `trials`: trial_number plus one column per objective metric (raw values)."""
    fig = _figure(4.6 * len(objectives), 3.4)
    axes = fig.subplots(1, len(objectives), squeeze=False)[0]
    ordered = trials.sort_values("trial_number")
    for ax, (metric, direction) in zip(axes, objectives):
        values = ordered[metric] * metric_scale(metric)
        best = values.cummin() if direction == "min" else values.cummax()
        ax.scatter(ordered["trial_number"], values, s=14, color="#4c72b0", alpha=0.8,
                   label="trial")
        ax.step(ordered["trial_number"], best, where="post", color="#c44e52", lw=1.5,
                label=f"best so far ({'lowest' if direction == 'min' else 'highest'})")
        ax.set(xlabel="trial number", ylabel=metric_label(metric),
               title=f"{metric_label(metric).split(' (')[0]} ({direction}imise)")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", frameon=False)
    fig.suptitle("Optimisation history")
    return fig


@styled
def importance_figure(values: Mapping[str, Mapping[str, float]], n_trials: int, caution: str = "") -> Figure:
    """Horizontal bars: each searched param's fANOVA importance for each objective, from `n_trials`
    trials; `caution` (e.g. too few trials for a stable ranking) goes under the title."""
    params = sorted({p for imp in values.values() for p in imp},
                    key=lambda p: -max(imp.get(p, 0.0) for imp in values.values()))
    fig = _figure(5.5, 1.2 + 0.45 * len(params) * max(1, len(values)) ** 0.5)
    ax = fig.subplots()
    y = np.arange(len(params))
    height = 0.8 / len(values)
    for i, (metric, imp) in enumerate(values.items()):
        ax.barh(y + (i - (len(values) - 1) / 2) * height, [imp.get(p, 0.0) for p in params],
                height * 0.9, label=metric_label(metric).split(" (")[0])
    ax.set_yticks(y, params)
    ax.invert_yaxis()
    ax.set_xlabel("importance (fANOVA; sums to 1 per objective)")
    # Wrapped to the figure's width: a long caution on one line runs past the figure's edge, clipped.
    wrapped = textwrap.fill(caution, width=int(CHARS_PER_INCH * fig.get_figwidth())) if caution else ""
    ax.set_title(f"Parameter importances from {n_trials} trials" + (f"\n{wrapped}" if wrapped else ""),
                 color="black")
    ax.grid(axis="x", alpha=0.3)
    if len(values) > 1:
        ax.legend(frameon=False, loc="lower right")
    return fig


@styled
def pareto_figure(points: pd.DataFrame, x: str, y: str) -> Figure:
    """Trials as points of (x, y) metrics (both minimised); `points` holds trial_number, x, y and
    a boolean `pareto` column. Pareto-optimal trials filled, joined and numbered."""
    fig = _figure(5.2, 4.2)
    ax = fig.subplots()
    sx, sy = metric_scale(x), metric_scale(y)
    rest, front = points[~points["pareto"]], points[points["pareto"]].sort_values(x)
    ax.scatter(rest[x] * sx, rest[y] * sy, s=22, facecolors="none", edgecolors=GREY,
               label="dominated trial")
    ax.step(front[x] * sx, front[y] * sy, where="post", color="#c44e52", lw=1, alpha=0.7)
    ax.scatter(front[x] * sx, front[y] * sy, s=30, color="#c44e52", zorder=3,
               label="Pareto-optimal trial")
    for _, row in front.iterrows():
        ax.annotate(f"#{row['trial_number']}", (row[x] * sx, row[y] * sy), fontsize=7,
                    xytext=(4, 3), textcoords="offset points")
    ax.set(xlabel=metric_label(x), ylabel=metric_label(y),
           title="Pareto front (both minimised; #trial number)")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, loc="best")
    return fig
