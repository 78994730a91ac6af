"""Multiplicity for the 64-px study (evidence-cpu-20261201-142521), recomputed from the paired
intervals printed in docs/results.md: its trained models and MLflow store are no longer at hand, so
the p-values come from the rounded mean and 95% half-width of each cell (t with 2 degrees of
freedom). Prints how many of the 70 intervals exclude zero raw, under Holm and under
Benjamini-Hochberg, and the cells that survive Holm.

    .venv/bin/python docs/results/adjust_64px.py
"""

from __future__ import annotations

import re
from pathlib import Path

from scipy import stats
from statsmodels.stats.multitest import multipletests

CELL = re.compile(r"([+-]\d+\.\d+) ± (\d+\.\d+)")


def paired_cells(text: str) -> list[tuple[str, float, float]]:
    """(label, mean, half) of every interval in the section on differences against fcr alone."""
    section = text.split("## Differences against `fcr` alone")[1].split("## Figures")[0]
    section = section.split("### ")[0] if "### Exploratory" in section else section
    out, header = [], []
    for line in section.splitlines():
        cols = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| configuration"):
            header = cols
        elif line.startswith("| ") and header and CELL.search(line):
            for name, cell in zip(header, cols):
                if (m := CELL.search(cell)):
                    out.append((f"{cols[0]}: {name}", float(m[1]), float(m[2])))
        elif line.startswith("Label smoothing itself"):
            header = []
    tail = section.split("Label smoothing itself")[1] if "Label smoothing itself" in section else ""
    for m in CELL.finditer(tail):
        out.append(("xnb without − with label smoothing", float(m[1]), float(m[2])))
    return out


def main() -> None:
    cells = paired_cells((Path(__file__).parents[1] / "results.md").read_text())
    crit = stats.t.ppf(0.975, 2)
    p = [2 * stats.t.sf(abs(mean) / (half / crit), 2) for _, mean, half in cells]
    print(f"{len(cells)} intervals; {sum(x < 0.05 for x in p)} exclude 0 unadjusted")
    for method, name in (("holm", "Holm"), ("fdr_bh", "Benjamini-Hochberg")):
        keep = multipletests(p, 0.05, method=method)[0]
        print(f"{name}: {int(keep.sum())} survive")
        if method == "holm":
            for (label, mean, half), k in zip(cells, keep):
                if k:
                    print(f"  {label}: {mean:+.2f} ± {half:.2f}")


if __name__ == "__main__":
    main()
