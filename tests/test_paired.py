"""analysis/paired.py and the bolding rule of Table 1: paired differences carry exactly the
per-seed differences' mean and t interval, verdicts follow the interval, and nothing is bold or
called lower that the intervals do not support."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis import paired, tables
from analysis.benchmark import CORRUPT_ERROR

SEEDS = (0, 1, 2)


def _runs(offsets: dict[str, list[float]], base: list[float] = (0.30, 0.34, 0.29)) -> pd.DataFrame:
    """One row per (configuration, seed): corrupted error = the baseline's plus the offset."""
    rows = [{"config": "base", "seed": s, CORRUPT_ERROR: base[i], "clean/error": 0.1 + 0.01 * i}
            for i, s in enumerate(SEEDS)]
    for config, offset in offsets.items():
        rows += [{"config": config, "seed": s, CORRUPT_ERROR: base[i] + offset[i], "clean/error": 0.1 + 0.01 * i}
                 for i, s in enumerate(SEEDS)]
    return pd.DataFrame(rows)


def test_paired_differences_are_the_mean_and_t_interval_of_per_seed_differences() -> None:
    offsets = [-0.05, -0.04, -0.06]
    diffs = paired.paired_differences(_runs({"molly": offsets}), "base")
    d = np.array(offsets) * 100
    half = stats.t.ppf(0.975, 2) * d.std(ddof=1) / math.sqrt(3)
    row = diffs.loc["molly"]
    assert row[("corrupted error", "mean")] == pytest.approx(d.mean())
    assert row[("corrupted error", "half")] == pytest.approx(half)
    assert row[("corrupted error", "n")] == 3
    assert row[("clean error", "mean")] == pytest.approx(0.0)  # identical clean errors
    assert "base" not in diffs.index


def test_pairing_removes_the_seed_to_seed_variation() -> None:
    """Every seed improves by exactly 1 point while seeds differ by 5 points among themselves: the
    unpaired intervals overlap, the paired one is a point at -1."""
    runs = _runs({"molly": [-0.01, -0.01, -0.01]}, base=[0.30, 0.35, 0.25])
    diffs = paired.paired_differences(runs, "base")
    assert diffs.loc["molly", ("corrupted error", "mean")] == pytest.approx(-1.0)
    assert diffs.loc["molly", ("corrupted error", "half")] == pytest.approx(0.0, abs=1e-9)
    table = paired.headline_table(runs)
    low, high = (table.loc[c, ("corrupted error", "mean")] for c in ("molly", "base"))
    assert low + table.loc["molly", ("corrupted error", "half")] > high - table.loc["base", ("corrupted error", "half")]


def test_only_shared_seeds_are_paired() -> None:
    runs = _runs({"molly": [-0.05, -0.04, -0.06]})
    runs = runs[~((runs["config"] == "molly") & (runs["seed"] == 2))]
    diffs = paired.paired_differences(runs, "base")
    assert diffs.loc["molly", ("corrupted error", "n")] == 2
    assert diffs.loc["molly", ("corrupted error", "mean")] == pytest.approx(-4.5)


@pytest.mark.parametrize(("mean", "half", "n", "word"), [
    (-2.0, 1.0, 3, "lower"), (2.0, 1.0, 3, "higher"), (-0.5, 1.0, 3, "no detectable difference"),
    (-2.0, math.nan, 1, "n/a"), (0.0, 0.0, 3, "no detectable difference")])
def test_verdict_follows_the_interval(mean: float, half: float, n: int, word: str) -> None:
    assert paired.verdict(mean, half, n) == word


def test_markdown_marks_only_intervals_that_exclude_zero() -> None:
    runs = _runs({"clear": [-0.05, -0.04, -0.06], "noisy": [-0.05, 0.04, 0.0]})
    text = paired.differences_markdown(paired.paired_differences(runs, "base"), "base", adjust="none")
    clear = next(line for line in text.splitlines() if line.startswith("| clear"))
    noisy = next(line for line in text.splitlines() if line.startswith("| noisy"))
    assert "-5.00 ± " in clear and "(lower)" in clear
    assert "(lower)" not in noisy and "(higher)" not in noisy


def test_marks_follow_the_p_values_adjusted_over_every_cell_shown() -> None:
    """'clear' has p = 0.013 alone (t = -8.66, 2 df); Holm over the 4 cells with pairs (corrupted
    and clean error of both configurations) makes it 0.052: no mark. Over the 2 corrupted cells
    only it is 0.026: marked."""
    runs = _runs({"clear": [-0.05, -0.04, -0.06], "noisy": [-0.05, 0.04, 0.0]})
    diffs = paired.paired_differences(runs, "base")
    base = np.array([0.30, 0.34, 0.29])
    p = stats.ttest_rel(base + np.array([-0.05, -0.04, -0.06]), base).pvalue
    assert diffs.loc["clear", ("corrupted error", "p")] == pytest.approx(p)
    cells, result = paired.adjust_cells(diffs)
    assert result.m == 4 and result.method == "holm"
    clear = cells.set_index(["config", "heading"]).loc[("clear", "corrupted error")]
    assert clear["p_adjusted"] == pytest.approx(4 * p) and clear["mark"] == ""
    text = paired.differences_markdown(diffs, "base")
    row = next(line for line in text.splitlines() if line.startswith("| clear"))
    assert "-5.00 ± " in row and "(lower)" not in row
    assert "Holm over 4 tests, alpha 0.05" in text
    assert f"| clear | corrupted error | 3 | -5.00 ± 2.48 | 0.013 | {4 * p:.3f} | " in text
    only = [("corrupted error", CORRUPT_ERROR, 100.0)]
    text = paired.differences_markdown(paired.paired_differences(runs, "base", only), "base", only)
    assert "(lower)" in next(line for line in text.splitlines() if line.startswith("| clear"))
    assert "Holm over 2 tests" in text


def test_find_baseline_needs_exactly_one_configuration_without_mollification() -> None:
    table = pd.DataFrame({"mollify": [False, True, True]}, index=["fcr", "xn", "xb"])
    assert paired.find_baseline(table) == "fcr"
    assert paired.find_baseline(pd.DataFrame({"mollify": [True, True]}, index=["a", "b"])) is None
    assert paired.find_baseline(pd.DataFrame({"mollify": [False, False]}, index=["a", "b"])) is None


def _summary(means: list[float], halves: list[float]) -> pd.DataFrame:
    frame = pd.DataFrame({(CORRUPT_ERROR, "mean"): means, (CORRUPT_ERROR, "half"): halves,
                          (CORRUPT_ERROR, "n"): [3] * len(means)}, index=[f"c{i}" for i in range(len(means))])
    frame.columns = pd.MultiIndex.from_tuples(frame.columns, names=["metric", "stat"])
    return frame


def test_table1_bolds_only_a_lowest_mean_whose_interval_is_apart() -> None:
    assert tables._best(_summary([10.0, 20.0, 21.0], [1.0, 1.0, 1.0]), CORRUPT_ERROR) == 10.0
    assert math.isnan(tables._best(_summary([10.0, 11.0], [1.0, 1.0]), CORRUPT_ERROR))  # overlapping
    assert math.isnan(tables._best(_summary([10.0, 20.0], [math.nan, math.nan]), CORRUPT_ERROR))  # one seed
