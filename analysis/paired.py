"""Headline metrics per configuration, and differences against a baseline paired by seed.

Every configuration of a seeded grid is trained with the same seeds, so configuration c and the
baseline b trained with seed s share the initialisation, the batch order and the evaluated images:
the per-seed difference d_s = m(c, s) - m(b, s) removes that shared variation, and the 95% t
interval of the mean of d_s is what says whether c differs from b. The intervals of the two means
side by side do not say it (they overlap even where every seed moves the same way).
"""

from __future__ import annotations

import math
from typing import Collection, Sequence

import pandas as pd

from analysis.benchmark import CLEAN_ERROR, CORRUPT_ERROR, CORRUPTION_GROUPS, group_metric
from analysis.multiplicity import (ADJUSTMENT_WORDS, Adjusted, adjust, direction, format_level, format_p,
                                   paired_test, t_half)
from analysis.stats import mean_ci
from analysis.tables import DASH, format_cell

# (heading, metric, scale): errors and ECE in %, NLL in nats.
HEADLINE: tuple[tuple[str, str, float], ...] = (
    ("clean error", CLEAN_ERROR, 100.0),
    ("corrupted error", CORRUPT_ERROR, 100.0),
    *((f"{group} error", group_metric(group), 100.0) for group in CORRUPTION_GROUPS),
    ("clean NLL", "clean/nll", 1.0),
    ("corrupted NLL", "corrupt/nll", 1.0),
    ("clean ECE", "clean/ece", 100.0),
    ("corrupted ECE", "corrupt/ece", 100.0),
)


def find_baseline(table: pd.DataFrame) -> str | None:
    """The configuration without mollification, when the study has exactly one."""
    if "mollify" not in table:
        return None
    plain = [label for label, on in table["mollify"].items() if on is False or str(on) == "False"]
    return plain[0] if len(plain) == 1 else None


def paired_differences(runs: pd.DataFrame, baseline: str, columns: Sequence[tuple[str, str, float]] = HEADLINE,
                       by: str = "config") -> pd.DataFrame:
    """For each configuration other than `baseline`: per metric, the mean over shared seeds of
    (configuration - baseline), its 95% half-width, the number of pairs, the paired t test's
    two-sided p-value and the differences' standard deviation. Columns: a MultiIndex
    (heading, mean|half|n|p|sd), in the units of `columns`' scale."""
    base = runs[runs[by] == baseline].drop_duplicates("seed").set_index("seed")
    out = {}
    for config, group in runs[runs[by] != baseline].groupby(by, sort=False):
        group = group.drop_duplicates("seed").set_index("seed")
        seeds = group.index.intersection(base.index)
        out[config] = _test_row(
            columns, lambda metric: group.loc[seeds, metric] - base.loc[seeds, metric] if metric in runs else [])
    return _frame(out, by)


def _test_row(columns: Sequence[tuple[str, str, float]], values) -> dict:
    """{(heading, mean|half|n|p|sd)} of the paired t test of `values(metric)` times the scale."""
    row = {}
    for heading, metric, scale in columns:
        test = paired_test(pd.Series(values(metric), dtype=float) * scale)
        row.update({(heading, "mean"): test.mean, (heading, "half"): test.half, (heading, "n"): test.n,
                    (heading, "p"): test.p, (heading, "sd"): test.sd})
    return row


def _interval_row(columns: Sequence[tuple[str, str, float]], values) -> dict:
    """{(heading, mean|half|n)} of the 95% t interval of `values(metric)` times the scale."""
    row = {}
    for heading, metric, scale in columns:
        mean, half, n = mean_ci(pd.Series(values(metric), dtype=float) * scale)
        row.update({(heading, "mean"): mean, (heading, "half"): half, (heading, "n"): n})
    return row


def _frame(rows: dict, by: str) -> pd.DataFrame:
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.columns = pd.MultiIndex.from_tuples(frame.columns, names=["metric", "stat"])
    frame.index.name = by
    return frame


def verdict(mean: float, half: float, n: int) -> str:
    """Lower / higher where the 95% interval of the paired difference excludes 0, else 'no
    detectable difference'; fewer than 2 pairs give no interval and no verdict. One cell read
    alone: the tables mark a cell by its test adjusted over all they show (`adjust_cells`)."""
    if n < 2 or not math.isfinite(half):
        return "n/a"
    if mean + half < 0:
        return "lower"
    if mean - half > 0:
        return "higher"
    return "no detectable difference"


def _signed(mean: float, half: float, n: int, digits: int) -> str:
    if not math.isfinite(mean):
        return DASH
    text = f"{mean:+.{digits}f}"
    return f"{text} ± {half:.{digits}f}" if n >= 2 and math.isfinite(half) else text


def _markdown(frame: pd.DataFrame, columns: Sequence[tuple[str, str, float]], first: str, count: str,
              cell) -> list[str]:
    """Table lines: a row per configuration, its largest n, then `cell(config, heading, mean, half, n,
    digits)` per column (2 digits for % columns, 3 for NLL)."""
    headings = [h for h, *_ in columns]
    lines = [f"| {first} | {count} | " + " | ".join(headings) + " |",
             "| --- | ---: | " + " | ".join("---:" for _ in headings) + " |"]
    for config, row in frame.iterrows():
        cells = [cell(config, h, row[(h, "mean")], row[(h, "half")], int(row[(h, "n")]), 2 if scale == 100.0 else 3)
                 for h, _, scale in columns]
        n = int(max(row[(h, "n")] for h in headings))
        lines.append(f"| {config.replace('|', '/')} | {n} | " + " | ".join(cells) + " |")
    return lines


def adjust_cells(diffs: pd.DataFrame, columns: Sequence[tuple[str, str, float]] = HEADLINE,
                 method: str = "holm", alpha: float = 0.05,
                 declared: Collection[tuple[str, str]] = ()) -> tuple[pd.DataFrame, Adjusted]:
    """The cells of `paired_differences` as one family, adjusted together: one row per
    (configuration, heading) with mean, half (95%), n, p, p_adjusted, half_adjusted (at the
    family's interval level), mark (lower / higher / '') and declared. Cells in `declared`
    ((configuration, metric) pairs: the study's declared endpoints against this baseline) are
    tested in their own family (analysis/endpoints.py) and left out of this one."""
    rows = [{"config": config, "heading": heading, "declared": (config, metric) in declared,
             **{k: row[(heading, k)] for k in ("mean", "half", "n", "p", "sd")}}
            for config, row in diffs.iterrows() for heading, metric, _ in columns]
    cells = pd.DataFrame(rows, columns=["config", "heading", "declared", "mean", "half", "n", "p", "sd"])
    result = adjust(cells["p"].where(~cells["declared"]).to_numpy(dtype=float), method, alpha)
    cells["p_adjusted"] = result.p_adjusted
    cells["half_adjusted"] = [t_half(sd, int(n), result.level) for sd, n in zip(cells["sd"], cells["n"])]
    cells["mark"] = [direction(m, r) for m, r in zip(cells["mean"], result.rejected)]
    return cells, result


def differences_markdown(diffs: pd.DataFrame, baseline: str,
                         columns: Sequence[tuple[str, str, float]] = HEADLINE, *,
                         adjust: str = "holm", alpha: float = 0.05,
                         declared: Collection[tuple[str, str]] = ()) -> str:
    """The paired differences as Markdown: an overview (a cell is `difference ± 95% half-width`,
    marked (lower) / (higher) where the test survives the adjustment over every cell shown, or
    (declared) for a declared endpoint, read in its own family), then each test with its raw and
    adjusted p-value and adjusted interval."""
    cells, result = adjust_cells(diffs, columns, adjust, alpha, declared)
    marks = {(c.config, c.heading): "declared" if c.declared else c.mark for c in cells.itertuples()}

    def marked(config: str, heading: str, mean: float, half: float, n: int, digits: int) -> str:
        mark = marks[(config, heading)]
        return _signed(mean, half, n, digits) + (f" ({mark})" if mark else "")

    lines = _markdown(diffs, columns, "configuration − baseline", "pairs", marked)
    note = (f"Baseline: {baseline}. Per seed, the configuration's value minus the baseline's with the "
            "same seed; mean ± 95% t-interval half-width over the seeds. Errors and ECE in percentage "
            f"points, NLL in nats. (lower)/(higher): the paired t test survives the adjustment for "
            f"multiplicity, {result.describe()}, the family being every cell shown with 2 pairs or "
            "more; unmarked: no difference this many seeds can detect after that adjustment.")
    if cells["declared"].any():
        note += (" (declared): a pre-registered endpoint, tested in its own family with the study's "
                 "endpoints and left out of this one.")
    return "\n".join(lines) + "\n\n" + note + "\n\n" + "\n".join(_tests_lines(cells, columns, result)) + "\n"


def _tests_lines(cells: pd.DataFrame, columns: Sequence[tuple[str, str, float]], result: Adjusted) -> list[str]:
    """One row per test of the family (declared endpoints are not in it): difference ± 95%, p,
    adjusted p and adjusted interval."""
    digits = {h: 2 if scale == 100.0 else 3 for h, _, scale in columns}
    level = format_level(result.level)
    lines = [f"| configuration − baseline | metric | pairs | difference ± 95% | p | "
             f"p ({ADJUSTMENT_WORDS[result.method]}) | difference ± {level} | result |", "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for cell in cells[(cells["n"] >= 2) & ~cells["declared"]].itertuples():
        d = digits[cell.heading]
        lines.append(f"| {cell.config.replace('|', '/')} | {cell.heading} | {int(cell.n)} | "
                     f"{_signed(cell.mean, cell.half, int(cell.n), d)} | {format_p(cell.p)} | "
                     f"{format_p(cell.p_adjusted)} | "
                     f"{_signed(cell.mean, cell.half_adjusted, int(cell.n), d)} | {cell.mark or '–'} |")
    return lines


def headline_table(runs: pd.DataFrame, columns: Sequence[tuple[str, str, float]] = HEADLINE,
                   by: str = "config") -> pd.DataFrame:
    """Mean, 95% half-width and n over seeds of each headline metric per configuration."""
    out = {config: _interval_row(columns, lambda metric: group[metric] if metric in group else [])
           for config, group in runs.groupby(by, sort=False)}
    return _frame(out, by)


def headline_markdown(table: pd.DataFrame, columns: Sequence[tuple[str, str, float]] = HEADLINE) -> str:
    lines = _markdown(table, columns, "configuration", "seeds",
                      lambda config, heading, mean, half, n, digits: format_cell(mean, half, n, digits=digits))
    note = ("Mean ± 95% t-interval half-width over seeds. Errors and ECE in %, NLL in nats; "
            "corrupted = the plain mean over the 15 x 5 corruption x severity cells; groups as in "
            "METHOD.md section 4.")
    return "\n".join(lines) + "\n\n" + note + "\n"
