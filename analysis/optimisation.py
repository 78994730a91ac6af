"""Optuna studies seen through MLflow: the study rebuilt in memory from the trial runs and the
parent run's search-space tag (no access to Optuna's own storage), parameter importances, and the
Pareto set of a multi-objective comparison."""

from __future__ import annotations

import contextlib
import json
import math
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import optuna
import pandas as pd
from optuna.distributions import (BaseDistribution, CategoricalDistribution, FloatDistribution,
                                  IntDistribution)

OPTUNA_SEARCHES = ("tpe", "gp", "nsga2", "random")
DIRECTIONS = {"min": "minimize", "max": "maximize"}


# --- search space ---------------------------------------------------------------------------------

def distribution(domain: Mapping[str, Any]) -> BaseDistribution:
    """One entry of the `mollify.search_space` tag as an Optuna distribution."""
    kind = domain.get("type")
    if kind == "float":
        return FloatDistribution(domain["low"], domain["high"], log=bool(domain.get("log", False)),
                                 step=domain.get("step"))
    if kind == "int":
        return IntDistribution(domain["low"], domain["high"], log=bool(domain.get("log", False)),
                               step=domain.get("step", 1))
    if kind in ("categorical", "grid"):
        return CategoricalDistribution(domain["choices"] if kind == "categorical" else domain["values"])
    raise ValueError(f"unknown search-space type {kind!r} in {domain}; valid: float, int, "
                     "categorical, grid")


def _token(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def condition_holds(condition: str | None, params: Mapping[str, Any]) -> bool:
    """Whether a conditional parameter was active: `"<key> contains <text>"`, `"<key> == <value>"`
    or `"<key> != <value>"`. No condition, or one in another form, counts as active."""
    if not condition:
        return True
    parts = condition.split(maxsplit=2)
    if len(parts) != 3 or parts[0] not in params:
        return True
    key, op, raw = parts
    value = params[key]
    if op == "contains":
        return isinstance(value, str) and raw in value
    if op in ("==", "!="):
        equal = value == _token(raw) or str(value) == raw
        return equal if op == "==" else not equal
    return True


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def trial_params(row: Mapping[str, Any], space: Mapping[str, Mapping[str, Any]]
                 ) -> tuple[dict[str, Any], dict[str, BaseDistribution]]:
    """The searched params of one run that were active and lie in their domain."""
    params, dists = {}, {}
    for name, domain in space.items():
        value = row.get(name)
        if _missing(value) or not condition_holds(domain.get("condition"), row):
            continue
        dist = distribution(domain)
        if isinstance(value, np.generic):
            value = value.item()
        try:
            if not dist._contains(dist.to_internal_repr(value)):
                continue
        except (ValueError, TypeError):
            continue
        params[name], dists[name] = value, dist
    return params, dists


# --- the study ------------------------------------------------------------------------------------

@contextlib.contextmanager
def _quiet_optuna() -> Iterator[None]:
    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(before)


def rebuild_study(runs: pd.DataFrame, objectives: Sequence[tuple[str, str]],
                  space: Mapping[str, Mapping[str, Any]]) -> optuna.Study:
    """An in-memory Optuna study holding one COMPLETE trial per run that logged every objective,
    with the searched params the run was given."""
    with _quiet_optuna():
        study = optuna.create_study(directions=[DIRECTIONS[d] for _, d in objectives])
    metrics = [m for m, _ in objectives]
    for row in runs.to_dict("records"):
        values = [row.get(m) for m in metrics]
        if any(_missing(v) for v in values):
            continue
        params, dists = trial_params(row, space)
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists,
                                                  values=[float(v) for v in values]))
    return study


def importances(study: optuna.Study, objectives: Sequence[tuple[str, str]], seed: int = 0
                ) -> dict[str, dict[str, float]]:
    """Objective metric -> {param: fANOVA importance} (Optuna's default evaluator, seeded), over
    the params present in every trial."""
    out = {}
    for i, (metric, _) in enumerate(objectives):
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
        target = (lambda t, i=i: t.values[i]) if len(objectives) > 1 else None
        out[metric] = optuna.importance.get_param_importances(study, evaluator=evaluator,
                                                              target=target)
    return out


def pareto_mask(values: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """Rows of `values` (n points x k objectives) that no other row dominates: no other row is at
    least as good in every objective and better in one. `directions`: "min" or "max" per column.
    Rows with a NaN are never on the front; equal rows are both on it."""
    signs = np.array([1.0 if d == "min" else -1.0 for d in directions])
    v = np.asarray(values, dtype=float) * signs
    finite = np.isfinite(v).all(axis=1)
    w = np.where(finite[:, None], v, np.inf)
    # dominates[i, j]: row j dominates row i
    no_worse = (w[None, :, :] <= w[:, None, :]).all(axis=2)
    better = (w[None, :, :] < w[:, None, :]).any(axis=2)
    dominated = ((no_worse & better) & finite[None, :]).any(axis=1)
    return finite & ~dominated
