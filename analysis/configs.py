"""Configurations: the runs of a study grouped by everything that can change the result except the
seed, named in words, and given one colour each.

A run's *effective* params are its config params minus bookkeeping (where data lie, which device,
how often or in what batch size evaluation ran) with the knobs that had no effect in that run
replaced by `NA`: every mollification knob when mollification is off, npow and bpow without label
smoothing, npow without the noise role, bpow and the blur scales without the blur role (the
rules the study stored in its record, `StudyInfo.active_when`, else contract.ACTIVE_WHEN;
new runs do not log such knobs at all, older ones did). Runs with equal effective params form one configuration; its seeds are its repeats."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.colors import to_hex

from analysis.mlflow_io import META_COLUMNS, METRIC_PREFIX
from contract import ACTIVE_WHEN, LOADER_AUGMENTATION, MOLLIFYING, Rule, rule_holds

NA = "n/a"  # a knob that had no effect in this run (see the module docstring)
BOOKKEEPING = ("data_root", "device", "compile", "eval_every", "eval_batch_size")
MOLLIFY_KNOBS = tuple(k for k, rule in ACTIVE_WHEN.items() if MOLLIFYING[0] in rule)

DATASET_NAMES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "tinyimagenet": "Tiny ImageNet",
                 "imagenet": "ImageNet", "synthetic": "synthetic data"}
AUGMENT_NAMES = {"none": "no augmentation", "fcr": "FCR", "trivaug": "TrivAug", "randaug": "RandAug",
                 "autoaug": "AutoAug", "augmix": "AugMix", "augmix_paper": "AugMix (paper ops)", "ipmix": "IPMix",
                 "mixup": "MixUp", "cutmix": "CutMix"}
ROLE_NAMES = {"n": "noise", "b": "blur", "e": "pure noise"}
# The order in which knobs appear in a label; knobs not listed follow alphabetically.
LABEL_ORDER = ("dataset", "num_classes", "image_size", "model", "epochs", "augment", "jsd", "mollify",
               "alpha", "beta", "smooth_labels", "label_mode", "loss")


# --- effective params -----------------------------------------------------------------------------

def param_columns(runs: pd.DataFrame) -> list[str]:
    """The config-param columns of a `load_runs` frame (metric names contain '/')."""
    return [c for c in runs.columns
            if c not in META_COLUMNS and "/" not in c and not c.startswith(METRIC_PREFIX)]


def _plain(value: Any) -> Any:
    """NaN and pandas' missing markers -> None; numpy scalars -> Python ones (hashable, printable)."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return value.item() if isinstance(value, np.generic) else value


def _effective(params: Mapping[str, Any], rules: Mapping[str, Rule]) -> dict[str, Any]:
    return {k: v if rule_holds(rules.get(k), params) else NA for k, v in params.items()}


def effective_params(runs: pd.DataFrame, rules: Mapping[str, Rule] | None = None) -> pd.DataFrame:
    """The runs' config params that can change the result (see the module docstring), one row
    per run, same index; `NA` marks a knob without effect under `rules` (the study's
    `StudyInfo.active_when`; default ACTIVE_WHEN), None a param that is None."""
    rules = ACTIVE_WHEN if rules is None else rules
    columns = [c for c in param_columns(runs) if c not in BOOKKEEPING]
    rows = [_effective({c: _plain(v) for c, v in zip(columns, values)}, rules)
            for values in runs[columns].itertuples(index=False, name=None)]
    return pd.DataFrame(rows, index=runs.index, columns=columns, dtype=object)


# --- words ----------------------------------------------------------------------------------------

def format_number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return f"{value:.3g}"


def augment_words(augment: Any, dataset: Any = None) -> str:
    """The base augmentation in words, the loader's own first (ImageNet's crop and flip)."""
    loader = LOADER_AUGMENTATION.get(dataset) if isinstance(dataset, str) else None
    parts = augment.split("+") if isinstance(augment, str) and augment != "none" else []
    words = [AUGMENT_NAMES.get(part, part) for part in parts]
    return " + ".join(([loader] if loader else []) + words) or "no augmentation"


def roles_words(roles: str) -> str:
    """'xn' -> 'noise only', 'xnb' -> 'noise + blur'; without 'x' no clean images are kept."""
    kinds = [ROLE_NAMES.get(r, r) for r in roles if r != "x"]
    words = kinds[0] + " only" if len(kinds) == 1 else " + ".join(kinds)
    return words if "x" in roles else words + " (no clean images)"


def _mollification_words(p: Mapping[str, Any], varying: set[str]) -> str | None:
    if p.get("mollify") is False:
        return "no mollification" if "augment" in varying else (
            f"{augment_words(p.get('augment'), p.get('dataset'))}, no mollification")
    roles = p.get("roles")
    return roles_words(roles) if isinstance(roles, str) else "mollification"


def _schedule_words(p: Mapping[str, Any], varying: set[str]) -> str | None:
    if p.get("smooth_labels") is False:
        return "no label smoothing"
    if not {"npow", "bpow"} & varying:
        return "label smoothing"
    parts = [f"{k} {format_number(p[k])}" for k in ("npow", "bpow") if p.get(k) not in (None, NA)]
    return ", ".join(parts) or None


# Knobs named together in one phrase: the key that stands for the group -> its members.
COMPOSITE = {"mollify": ("mollify", "roles"), "smooth_labels": ("smooth_labels", "npow", "bpow")}


def _phrase(key: str, p: Mapping[str, Any], varying: set[str]) -> str | None:
    value = p.get(key)
    if key == "mollify":
        return _mollification_words(p, varying)
    if key == "smooth_labels":
        return None if p.get("mollify") is False else _schedule_words(p, varying)
    if value is NA:
        return None
    if key == "dataset":
        return DATASET_NAMES.get(value, str(value))
    if key == "augment":
        return augment_words(value, p.get("dataset"))
    if key == "jsd":
        return "JSD" if value else None
    if key == "num_classes":
        return f"{value} classes" if value is not None else "all classes"
    if key == "image_size":
        return f"{value} px" if value is not None else "native size"
    return f"{key.replace('_', ' ')} {format_number(value)}"


def _label_keys(varying: set[str]) -> list[str]:
    keys = set(varying)
    for lead, members in COMPOSITE.items():
        if keys & set(members):
            keys = (keys - set(members)) | {lead}
    known = [k for k in LABEL_ORDER if k in keys]
    return known + sorted(keys - set(LABEL_ORDER))


def describe(params: Mapping[str, Any], varying: Iterable[str]) -> str:
    """A configuration in words, naming the knobs in `varying` (those that differ across the
    study): 'noise + blur, beta 4', 'FCR + TrivAug, no mollification', 'npow 2, bpow 0.5'."""
    varying = set(varying)
    phrases = [_phrase(k, params, varying) for k in _label_keys(varying)]
    phrases = [p for p in dict.fromkeys(phrases) if p]  # drop empties and repeats, keep order
    if phrases:
        return ", ".join(phrases)
    mollification = _mollification_words(params, set())  # unmollified: it names the augmentation itself
    if params.get("mollify") is False:
        return mollification
    return f"{augment_words(params.get('augment'), params.get('dataset'))}, {mollification}"


# --- configurations -------------------------------------------------------------------------------

def varying_params(effective: pd.DataFrame) -> list[str]:
    """The effective params that take more than one value, `NA` not counted, across the rows."""
    return [c for c in effective.columns if len(set(effective[c]) - {NA}) > 1]


def _unique_labels(labels: list[str], first_trials: list[Any]) -> list[str]:
    seen: dict[str, int] = {}
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
    return [f"{label} [trial {trial}]" if seen[label] > 1 else label
            for label, trial in zip(labels, first_trials)]


def configurations(runs: pd.DataFrame, rules: Mapping[str, Rule] | None = None) -> tuple[pd.Series, pd.DataFrame]:
    """Group the runs into configurations (knobs acting under `rules`, see `effective_params`).
    Returns (the label of each run's configuration, aligned with `runs`; one row per
    configuration, in the order of its first trial, indexed by label, holding the effective params
    and `n_runs`)."""
    effective = effective_params(runs, rules)
    keys = pd.Series([tuple(row) for row in effective.itertuples(index=False, name=None)],
                     index=runs.index)
    first = ~keys.duplicated()
    table = effective[first]
    varying = varying_params(table)
    labels = [describe(row, varying) for row in table.to_dict("records")]
    labels = _unique_labels(labels, list(runs.loc[first, "trial_number"]))
    label_of = dict(zip(keys[first], labels))
    run_labels = pd.Series([label_of[k] for k in keys], index=runs.index, name="config")
    counts = Counter(keys)
    table = table.assign(n_runs=[counts[k] for k in keys[first]])
    table.index = pd.Index(labels, name="config")
    return run_labels, table


def with_configurations(runs: pd.DataFrame, rules: Mapping[str, Rule] | None = None
                        ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`runs` plus a `config` column (the label), and the configuration table."""
    labels, table = configurations(runs, rules)
    return runs.assign(config=labels), table


BASELINE_COLOUR = "#4d4d4d"  # the configuration without mollification, in every figure
GREYS = {"#7f7f7f", "#c7c7c7"}  # tab10's and tab20's greys: kept for the baseline alone


def palette(n: int) -> list[str]:
    """n distinct colours, none of them grey: tab10, tab20, else evenly spaced along turbo."""
    if n <= 9:
        colours = [to_hex(colormaps["tab10"](i)) for i in range(10)]
    elif n <= 18:
        colours = [to_hex(colormaps["tab20"](i)) for i in range(20)]
    else:
        colours = [to_hex(colormaps["turbo"](x)) for x in np.linspace(0.05, 0.95, n)]
    return [c for c in colours if c not in GREYS][:n]


def colour_map(labels: Sequence[str], baseline: str | None = None) -> dict[str, str]:
    """One colour per configuration label, assigned once per report in the labels' order (the
    configuration table's), so that an arm has the same colour in every figure of a report; the
    `baseline` (the configuration without mollification) is always the same dark grey."""
    others = [label for label in labels if label != baseline]
    colours = dict(zip(others, palette(len(others))))
    return {label: BASELINE_COLOUR if label == baseline else colours[label] for label in labels}
