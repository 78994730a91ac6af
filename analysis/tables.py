"""Table 1 of the poster: error (%) per corruption, grouped noise / blur / weather / digital, with
the clean error and the mean over all corruption x severity cells; one row per configuration,
`mean ± 95% half-width` over seeds. Written as Markdown, CSV and LaTeX (booktabs) by hand, so that
neither tabulate nor jinja2 is needed."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from analysis.benchmark import (CLEAN_ERROR, CORRUPT_ERROR, CORRUPTION_GROUPS,
                                SHORT_NAMES, corruption_metric)
from analysis.stats import summarise

DIGITS = 2  # errors in % with two decimals: 0.01% is one image in 10,000
DASH = "–"

# (group, heading, full name, metric); group "" for clean and mean.
COLUMNS: tuple[tuple[str, str, str, str], ...] = (
    ("", "clean", "clean", CLEAN_ERROR),
    *((group, SHORT_NAMES[c], c, corruption_metric(c)) for group, names in CORRUPTION_GROUPS.items()
      for c in names),
    ("", "mean", "mean", CORRUPT_ERROR),
)


def table1(runs: pd.DataFrame) -> pd.DataFrame:
    """Errors in %: the `summarise` frame (configuration x (metric, mean|half|n)) over the
    Table 1 metrics of `runs` (which needs a `config` column)."""
    return summarise(runs, [metric for *_, metric in COLUMNS], scale=100.0)


def format_cell(mean: float, half: float, n: int, digits: int = DIGITS, pm: str = " ± ") -> str:
    if not math.isfinite(mean):
        return DASH
    if n >= 2 and math.isfinite(half):
        return f"{mean:.{digits}f}{pm}{half:.{digits}f}"
    return f"{mean:.{digits}f}"


def _seeds(table: pd.DataFrame) -> pd.Series:
    return table.xs("n", axis=1, level="stat").max(axis=1).astype(int)


def _best(table: pd.DataFrame, metric: str) -> float:
    """The lowest mean of the column where the data support calling it lowest: its 95% interval
    lies wholly below every other row's; else NaN (nothing is bold). One seed has no interval, so
    a single-seed study bolds nothing."""
    means, halves = table[(metric, "mean")], table[(metric, "half")]
    if means.notna().sum() < 2:
        return math.nan
    best = means.idxmin()
    others = means.drop(best).dropna()
    top = means[best] + halves[best]
    if not math.isfinite(top) or not (others - halves.drop(best)[others.index] > top).all():
        return math.nan
    return means[best]


def _cells(table: pd.DataFrame, bold: str, pm: str) -> list[list[str]]:
    best = {metric: _best(table, metric) for *_, metric in COLUMNS}
    rows = []
    for config, row in table.iterrows():
        cells = []
        for *_, metric in COLUMNS:
            text = format_cell(row[(metric, "mean")], row[(metric, "half")], row[(metric, "n")], pm=pm)
            cells.append(bold % text if row[(metric, "mean")] == best[metric] else text)
        rows.append(cells)
    return rows


def to_markdown(table: pd.DataFrame) -> str:
    """Markdown table; in bold, a column's lowest mean whose 95% interval lies apart from all others."""
    head = ["configuration", "seeds", *(heading for _, heading, _, _ in COLUMNS)]
    lines = ["| " + " | ".join(head) + " |", "| --- | " + " | ".join("---:" for _ in head[1:]) + " |"]
    for (config, seeds), cells in zip(_seeds(table).items(), _cells(table, "**%s**", " ± ")):
        lines.append("| " + " | ".join([config.replace("|", "\\|"), str(seeds), *cells]) + " |")
    groups = "; ".join(f"{g}: {', '.join(SHORT_NAMES[c] for c in names)}"
                       for g, names in CORRUPTION_GROUPS.items())
    note = (f"Error (%), mean ± 95% t-interval half-width over seeds (no interval for one seed); "
            f"mean = plain mean over all corruption x severity cells. Bold: the lowest mean of a column "
            f"where its interval lies below every other row's interval. Groups: {groups}.")
    return "\n".join(lines) + "\n\n" + note + "\n"


def to_csv(table: pd.DataFrame, path: str | Path) -> None:
    """One row per configuration: seeds, then per column its mean and 95% half-width, in %."""
    out = pd.DataFrame(index=table.index)
    out["seeds"] = _seeds(table)
    for _, _, name, metric in COLUMNS:
        out[f"{name} error (%)"] = table[(metric, "mean")]
        out[f"{name} 95% half-width (%)"] = table[(metric, "half")]
    out.to_csv(path, index_label="configuration", float_format="%.4f")


LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                 "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}",
                 "±": r"$\pm$"}


def latex_escape(text: str) -> str:
    return "".join(LATEX_SPECIAL.get(ch, ch) for ch in text)


def to_latex(table: pd.DataFrame, caption: str = "") -> str:
    """A table environment holding a booktabs tabular (`\\usepackage{booktabs}`) with the
    corruption groups as a spanning header row; 19 columns wide, so wrap it in `\\resizebox` for
    a single-column page."""
    groups = [(g, len(names)) for g, names in CORRUPTION_GROUPS.items()]
    spans, start = [], 4  # columns 1-3: configuration, seeds, clean
    for g, width in groups:
        spans.append((g, start, start + width - 1))
        start += width
    lines = [r"\begin{table}[t]", r"\centering", r"\small",
             r"\begin{tabular}{lr" + "r" * len(COLUMNS) + "}", r"\toprule",
             " & & & " + " & ".join(rf"\multicolumn{{{b - a + 1}}}{{c}}{{{g}}}" for g, a, b in spans)
             + r" & \\",
             " ".join(rf"\cmidrule(lr){{{a}-{b}}}" for _, a, b in spans),
             "configuration & seeds & " + " & ".join(h for _, h, _, _ in COLUMNS) + r" \\",
             r"\midrule"]
    for (config, seeds), cells in zip(_seeds(table).items(),
                                      _cells(table, r"\textbf{%s}", r" $\pm$ ")):
        lines.append(" & ".join([latex_escape(config), str(seeds), *cells]).replace(DASH, "--")
                     + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if caption:
        lines.append(rf"\caption{{{latex_escape(caption)}}}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"
