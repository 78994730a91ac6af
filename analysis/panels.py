"""Which configurations make up each ablation panel of the poster's Fig. 7, decided from the
params alone.

A panel has a *knob* (a set of params): (a) mollification type = `roles`, (b) amount = `beta`,
(c) label-smoothing schedule = `smooth_labels`, `npow`, `bpow`. Its candidates are the mollified
configurations. Two candidates belong to one comparison when they agree on every other effective
param, where a param without effect in one of them (`NA`: npow without the noise role, bpow
without the blur role, ...) matches anything. A comparison is built around each candidate in turn,
most specific first (fewest `NA`s), keeps one configuration per knob value, and counts when it
shows at least two knob values and is not contained in an earlier one. Panel (a) also takes the
unmollified configuration that agrees on every non-mollification param as its baseline.
A study without such a comparison skips the panel, and the reason says what was missing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from analysis.configs import BASELINE_COLOUR, MOLLIFY_KNOBS, NA, describe, palette


SEEN_SHOWN = 6  # knob values listed in a skip message


@dataclass(frozen=True)
class Panel:
    key: str  # file stem: ablation_<key>
    title: str
    knob: tuple[str, ...]
    baseline: bool  # add the unmollified configuration as the reference
    knob_words: str  # what the knob is, for the skip message


PANELS: tuple[Panel, ...] = (
    Panel("type", "(a) Mollification type", ("roles",), True, "the roles (noise / blur)"),
    Panel("amount", "(b) Amount of mollification", ("beta",), False, "beta"),
    Panel("schedule", "(c) Label-smoothing schedule", ("smooth_labels", "npow", "bpow"), False,
          "the label-smoothing schedule (smooth_labels, npow, bpow)"),
)


@dataclass(frozen=True)
class Comparison:
    panel: Panel
    configs: tuple[str, ...]  # configuration labels, baseline first, then by knob value
    anchor: str  # the most specific configuration the comparison was built around


def _compatible(a: pd.Series, b: pd.Series, columns: list[str]) -> bool:
    return all(a[c] == b[c] or a[c] is NA or b[c] is NA for c in columns)


def _knob_value(row: pd.Series, knob: tuple[str, ...]) -> tuple[Any, ...]:
    return tuple(row.get(k) for k in knob)


def _sort_key(value: tuple[Any, ...]) -> tuple:
    """Knob values in reading order: roles as noise, blur, both; numbers ascending; 'no label
    smoothing' (smooth_labels False, npow/bpow NA) first."""
    def one(v: Any) -> tuple:
        if v is NA or v is None:
            return (0,)
        if isinstance(v, str):
            return (1, len(v), "b" in v, v)
        return (1, float(v))
    return tuple(one(v) for v in value)


def _mollified(table: pd.DataFrame) -> pd.DataFrame:
    return table[table["mollify"] != False] if "mollify" in table else table  # noqa: E712


def _baseline(table: pd.DataFrame, anchor: pd.Series) -> list[str]:
    """The first unmollified configuration that agrees with `anchor` on every
    non-mollification param, as a one-element list (empty when there is none)."""
    if "mollify" not in table:
        return []
    columns = [c for c in table.columns if c not in MOLLIFY_KNOBS and c not in ("mollify", "n_runs")]
    plain = table[table["mollify"] == False]  # noqa: E712
    return [label for label, row in plain.iterrows() if _compatible(anchor, row, columns)][:1]


def _comparison(candidates: pd.DataFrame, anchor: str, panel: Panel, context: list[str]) -> dict:
    """Knob value -> configuration, for the candidates compatible with `anchor` (itself first)."""
    members = {_knob_value(candidates.loc[anchor], panel.knob): anchor}
    for label, row in candidates.iterrows():
        value = _knob_value(row, panel.knob)
        if value not in members and _compatible(candidates.loc[anchor], row, context):
            members[value] = label
    return members


def find_comparisons(table: pd.DataFrame, panel: Panel) -> list[Comparison]:
    """The panel's comparisons in a configuration table (see `configs.configurations`): rows are
    configurations, columns their effective params."""
    candidates = _mollified(table)
    context = [c for c in table.columns if c not in panel.knob and c not in ("mollify", "n_runs")]
    unknown = candidates[context].apply(lambda r: sum(v is NA for v in r), axis=1)
    found: list[Comparison] = []
    for anchor in unknown.sort_values(kind="stable").index:
        members = _comparison(candidates, anchor, panel, context)
        if len(members) < 2 or any(set(members.values()) <= set(c.configs) for c in found):
            continue
        ordered = [members[v] for v in sorted(members, key=_sort_key)]
        baseline = _baseline(table, candidates.loc[anchor]) if panel.baseline else []
        found.append(Comparison(panel, tuple(baseline + ordered), anchor))
    return found


def comparison_name(table: pd.DataFrame, comparison: Comparison) -> tuple[str, str]:
    """(file key, title) saying what a comparison compares: a schedule comparison of two
    configurations that differ only in whether labels are smoothed is 'label smoothing on vs off',
    not a schedule."""
    panel = comparison.panel
    if panel.key == "schedule" and len(comparison.configs) == 2:
        if {table.loc[c, "smooth_labels"] for c in comparison.configs} == {True, False}:
            return "label_smoothing_on_vs_off", "(c) Label smoothing on vs off"
    return panel.key, panel.title


def _words(panel: Panel, value: tuple[Any, ...]) -> str:
    return describe(dict(zip(panel.knob, value)), panel.knob)


def skip_reason(table: pd.DataFrame, panel: Panel) -> str:
    """Why `find_comparisons` found nothing, in words."""
    missing = [k for k in panel.knob if k not in table]
    if missing:
        return f"the runs have no param {', '.join(missing)}"
    candidates = _mollified(table)
    if candidates.empty:
        return "the study has no mollified runs"
    seen = sorted({_knob_value(row, panel.knob) for _, row in candidates.iterrows()}, key=_sort_key)
    words = list(dict.fromkeys(_words(panel, v) for v in seen))
    listed = "; ".join(words[:SEEN_SHOWN])
    if len(words) > SEEN_SHOWN:
        listed += f"; ... {len(words)} in all"
    return f"no two mollified configurations differ only in {panel.knob_words} (seen: {listed})"


def knob_colours(table: pd.DataFrame, comparisons: list[Comparison]) -> dict[str, str]:
    """Configuration label -> colour for a panel's figures: by the knob's value, the same value the
    same colour in every comparison of the panel (beta 4 is one colour whether the roles are noise
    or noise + blur), the unmollified baseline dark grey. The report does not use it: there an arm
    keeps one colour across every figure (`configs.colour_map`)."""
    panel = comparisons[0].panel
    members = [label for c in comparisons for label in c.configs]
    baseline = set(_baseline_labels(table, members))
    values = sorted({_knob_value(table.loc[label], panel.knob) for label in members if label not in baseline},
                    key=_sort_key)
    colours = dict(zip(values, palette(len(values))))
    return {label: BASELINE_COLOUR if label in baseline else colours[_knob_value(table.loc[label], panel.knob)]
            for label in members}


def _baseline_labels(table: pd.DataFrame, labels: list[str]) -> list[str]:
    if "mollify" not in table:
        return []
    return [label for label in labels if table.loc[label, "mollify"] is False]
