"""Optuna studies seen through MLflow: the study rebuilt in memory from the trial runs and the
study's recorded search space (no access to Optuna's own storage), each run holding the searched
params that acted in it, as Optuna's own trial does; parameter importances, as Optuna computes
them; and the Pareto set of a multi-objective study."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import optuna
import pandas as pd
from optuna.distributions import (BaseDistribution, CategoricalDistribution, FloatDistribution,
                                  IntDistribution)

from contract import ACTIVE_WHEN, is_missing, rule_holds

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


def acted(name: str, domain: Mapping[str, Any], row: Mapping[str, Any]) -> bool:
    """Whether searched key `name` acted in the run `row`: the record's `active_when` clauses, or
    for a study recorded before them, the contract's rule (contract.ACTIVE_WHEN)."""
    return rule_holds(domain.get("active_when", ACTIVE_WHEN.get(name)), row)


def trial_params(row: Mapping[str, Any], space: Mapping[str, Mapping[str, Any]]
                 ) -> tuple[dict[str, Any], dict[str, BaseDistribution]]:
    """The searched params of one run that acted in it and lie in their domain: what Optuna's own
    trial holds (a conditional key is drawn only where it acts)."""
    params, dists = {}, {}
    for name, domain in space.items():
        value = row.get(name)
        if is_missing(value) or not acted(name, domain, row):
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
        if any(is_missing(v) for v in values):
            continue
        params, dists = trial_params(row, space)
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists,
                                                  values=[float(v) for v in values]))
    return study


def importances(study: optuna.Study, objectives: Sequence[tuple[str, str]], seed: int = 0,
                params: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    """Objective metric -> {param: fANOVA importance} (Optuna's default evaluator, seeded), as
    `optuna.importance.get_param_importances` computes them: over `params`, from the trials that
    hold all of them; by default over the params present in every trial, so a conditional key
    enters only where it acted in every trial (see `conditional_importances`)."""
    out = {}
    for i, (metric, _) in enumerate(objectives):
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
        target = (lambda t, i=i: t.values[i]) if len(objectives) > 1 else None
        out[metric] = optuna.importance.get_param_importances(study, evaluator=evaluator, params=params,
                                                              target=target)
    return out


def param_presence(study: optuna.Study) -> dict[str, int]:
    """Param -> the number of complete trials that hold it (that it acted in)."""
    counts: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        for name in trial.params:
            counts[name] = counts.get(name, 0) + 1
    return counts


def conditional_importances(study: optuna.Study, objectives: Sequence[tuple[str, str]], seed: int = 0,
                            min_trials: int = 3) -> dict[str, tuple[int, dict[str, float]]]:
    """For each param absent from some trials (a conditional key): (the number of trials where it
    acted, objective metric -> its importance among the always-present params and itself, from
    those trials alone). Params that acted in fewer than `min_trials` trials are left out."""
    presence = param_presence(study)
    total = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
    always = [p for p, n in presence.items() if n == total]
    out = {}
    for name, n in presence.items():
        if n == total or n < min_trials:
            continue
        try:
            values = importances(study, objectives, seed, params=[*always, name])
        except (RuntimeError, ValueError):
            continue
        out[name] = (n, {metric: imp.get(name, 0.0) for metric, imp in values.items()})
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
