"""Means over seeds with 95% confidence intervals, and the per-run quantities derived from the
logged metrics (error at each severity)."""

from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from analysis.benchmark import CORRUPTIONS, SEVERITIES, corruption_metric, severity_metric


def mean_ci(values: Iterable[float], level: float = 0.95) -> tuple[float, float, int]:
    """(mean, half-width of the two-sided t interval, n) over the finite values; the half-width
    is t_{(1+level)/2, n-1} * s / sqrt(n) with the sample standard deviation s, NaN for n < 2."""
    x = np.asarray([v for v in values if v is not None], dtype=float)
    x = x[np.isfinite(x)]
    n = len(x)
    if n == 0:
        return math.nan, math.nan, 0
    if n == 1:
        return float(x[0]), math.nan, 1
    half = stats.t.ppf(0.5 + level / 2, n - 1) * x.std(ddof=1) / math.sqrt(n)
    return float(x.mean()), float(half), n


def summarise(runs: pd.DataFrame, columns: Sequence[str], by: str = "config",
              scale: float = 1.0) -> pd.DataFrame:
    """Mean, 95% half-width and n over the runs of each group (`by`, in order of appearance) for
    each column, times `scale` (100 for errors in %). Columns: a MultiIndex (column, stat) with
    stat in mean / half / n; a column absent from `runs` gives NaN."""
    out = {}
    for key, group in runs.groupby(by, sort=False):
        row = {}
        for column in columns:
            values = group[column] if column in group else []
            mean, half, n = mean_ci(values)
            row.update({(column, "mean"): mean * scale, (column, "half"): half * scale,
                        (column, "n"): n})
        out[key] = row
    frame = pd.DataFrame.from_dict(out, orient="index")
    frame.columns = pd.MultiIndex.from_tuples(frame.columns, names=["metric", "stat"])
    frame.index.name = by
    return frame


def severity_columns(runs: pd.DataFrame, metric: str = "error") -> pd.DataFrame:
    """Per run, `metric` at severity 0 (the clean test set) to 5 (the mean over the corruptions at
    that severity: the run's `corrupt/s<k>/<metric>`, or for runs logged before that summary
    existed, the mean of their per-cell metrics); columns 0..5, NaN where nothing was logged."""
    missing = pd.Series(np.nan, index=runs.index)
    columns = {0: runs.get(f"clean/{metric}", missing)}
    for s in SEVERITIES:
        cells = [n for n in (corruption_metric(c, metric, s) for c in CORRUPTIONS) if n in runs]
        from_cells = runs[cells].mean(axis=1) if cells else missing
        columns[s] = runs.get(severity_metric(s, metric), missing).fillna(from_cells)
    return pd.DataFrame(columns, index=runs.index)


def corruption_severity_columns(runs: pd.DataFrame, corruption: str, metric: str = "error",
                                cells: Mapping[str, pd.DataFrame] | None = None) -> pd.DataFrame:
    """Per run, `metric` of one corruption at severity 0 (the clean test set) to 5: the run's cell
    metrics `corrupt/<corruption>/s<k>/<metric>` (runs logged before the cells became a table),
    else its `corrupt/cells.json` table (`cells`: run_id -> table); NaN where neither has it."""
    out = pd.DataFrame(np.nan, index=runs.index, columns=[0, *SEVERITIES])
    out[0] = runs.get(f"clean/{metric}", out[0])
    for s in SEVERITIES:
        name = corruption_metric(corruption, metric, s)
        if name in runs:
            out[s] = runs[name]
    for index, run_id in runs["run_id"].items():
        table = (cells or {}).get(run_id)
        if table is None or metric not in table:
            continue
        mine = table[table["corruption"] == corruption].set_index("severity")[metric]
        for s in SEVERITIES:
            if pd.isna(out.loc[index, s]) and s in mine.index:
                out.loc[index, s] = float(mine[s])
    return out


def has_severity_metrics(runs: pd.DataFrame) -> bool:
    return any(severity_metric(s) in runs or any(corruption_metric(c, "error", s) in runs for c in CORRUPTIONS)
               for s in SEVERITIES)


def rank_configurations(runs: pd.DataFrame, metric: str, mode: str = "min", by: str = "config") -> list[str]:
    """Configuration labels ordered by the mean of `metric`, best first (lowest for mode "min",
    highest for "max"; missing last); in order of appearance when no run logged `metric`."""
    if metric not in runs:
        return list(dict.fromkeys(runs[by]))
    means = runs.groupby(by, sort=False)[metric].mean()
    return list(means.sort_values(ascending=mode == "min", na_position="last", kind="stable").index)


def pool_bins(bins: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Reliability bins of several runs (seeds) as one set: counts summed, mean confidence and
    accuracy weighted by count (empty bins report 0, as the trial logs them)."""
    count = np.sum([np.asarray(b["count"], dtype=float) for b in bins], axis=0)
    safe = np.maximum(count, 1.0)
    pooled = {"count": count}
    for key in ("confidence", "accuracy"):
        total = np.sum([np.asarray(b["count"], dtype=float) * np.asarray(b[key], dtype=float)
                        for b in bins], axis=0)
        pooled[key] = total / safe
    return pooled
