"""The report's Optuna part: for a study searched by an Optuna sampler, the best configuration
it selected, the optimisation history, parameter importances (with a caution when trials are few)
and the Pareto front of two objectives. A part of analysis/report.py, apart so that each stays
readable; `optuna_section` is called by `write_report` with the report's context."""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Sequence

import pandas as pd

from analysis import plots
from analysis.benchmark import CLEAN_ERROR, CORRUPT_ERROR
from analysis.optimisation import (OPTUNA_SEARCHES, conditional_importances, importances, param_presence,
                                   pareto_mask, rebuild_study)

if TYPE_CHECKING:
    from analysis.report import _Context

MIN_IMPORTANCE_TRIALS = 3  # fewer: no importances at all
TRIALS_PER_PARAM = 10  # fewer per searched param: the importances carry a caution
TEST_HEADLINES = (CLEAN_ERROR, CORRUPT_ERROR)  # reported beside configurations selected on other metrics


def words(metric: str) -> str:
    """'valid/corrupt/error' -> 'validation corrupted error'."""
    return plots.metric_label(metric).split(" (")[0]


def _importance_lines(values: Mapping[str, Mapping[str, float]]) -> list[str]:
    metrics = list(values)
    params = list(dict.fromkeys(p for imp in values.values() for p in imp))
    lines = ["| param | " + " | ".join(metrics) + " |", "| --- |" + " ---: |" * len(metrics)]
    lines += [f"| {p} | " + " | ".join(f"{values[m].get(p, 0.0):.3f}" for m in metrics) + " |"
              for p in params]
    return lines + [""]


def optuna_section(ctx: _Context) -> None:
    ctx.report.lines += ["### Optuna study", ""]
    info = ctx.info
    if info is None:
        return ctx.skip("Optuna figures", "the experiment has no study parent run "
                        "(tag mollify.kind=study)")
    if info.search not in OPTUNA_SEARCHES:
        return ctx.skip("Optuna figures", f"the study's search is {info.search!r}, not one of "
                        f"Optuna's samplers ({', '.join(OPTUNA_SEARCHES)})")
    missing = [m for m, _ in info.objectives if m not in ctx.runs]
    if not info.objectives or missing:
        return ctx.skip("Optuna figures", f"objective metric(s) {missing or 'none'} not logged")
    trials = ctx.runs.dropna(subset=["trial_number", *(m for m, _ in info.objectives)])
    ctx.figure(plots.history_figure(trials, info.objectives), "optuna_history",
               "Optimisation history: objective per trial and best so far")
    _selected_part(ctx, trials)
    _importance_part(ctx, trials)
    _pareto_part(ctx, trials)


def _percent_or_raw(metric: str, value: float) -> str:
    return "–" if pd.isna(value) else f"{plots.metric_scale(metric) * value:.2f}"


def _selected_part(ctx: _Context, trials: pd.DataFrame) -> None:
    """The trial a single-objective search selected, with its test figures beside it."""
    if len(ctx.info.objectives) != 1 or trials.empty:
        return
    metric, mode = ctx.info.objectives[0]
    best = trials.loc[trials[metric].idxmin() if mode == "min" else trials[metric].idxmax()]
    tests = [f"{words(m)} {_percent_or_raw(m, best[m])}" for m in TEST_HEADLINES if m != metric and m in best]
    line = (f"Selected by {metric} ({mode}imised): trial run '{best['run_name']}' ({best['config']}), "
            f"{words(metric)} {_percent_or_raw(metric, best[metric])}")
    ctx.report.lines += [line + (f"; on the test set: {', '.join(tests)}." if tests else "."), ""]


def _importance_part(ctx: _Context, trials: pd.DataFrame) -> None:
    """Importances as Optuna computes them (`optuna.importance.get_param_importances`): each run
    holds the searched params that acted in it, the figure covers the params that acted in every
    trial, and each conditional param is assessed apart, on the trials where it acted."""
    info = ctx.info
    study = rebuild_study(trials, info.objectives, info.search_space)
    n = len(study.trials)
    if n < MIN_IMPORTANCE_TRIALS or not info.search_space:
        return ctx.skip("Parameter importances", f"{n} complete trial(s) and {len(info.search_space)} searched "
                        f"param(s); need at least {MIN_IMPORTANCE_TRIALS} trials")
    try:
        values = importances(study, info.objectives)
    except (RuntimeError, ValueError) as err:
        return ctx.skip("Parameter importances", f"Optuna could not compute them ({err})")
    if not any(values.values()):
        return ctx.skip("Parameter importances", "no param that acted in every trial took two values")
    n_params = max(len(v) for v in values.values())
    caution = "" if n >= TRIALS_PER_PARAM * n_params else (
        f"Caution: {n} trials for {n_params} params; a stable ranking needs about {TRIALS_PER_PARAM * n_params}. "
        "Indicative only.")
    ctx.figure(plots.importance_figure(values, n, caution), "optuna_importance",
               f"Parameter importances (fANOVA, as Optuna computes them, from {n} trials)")
    ctx.report.lines += ([f"**{caution}**", ""] if caution else []) + _importance_lines(values)
    _conditional_lines(ctx, study)


def _conditional_lines(ctx: _Context, study) -> None:
    presence, n = param_presence(study), len(study.trials)
    partial = {p: k for p, k in presence.items() if k < n}
    if not partial:
        return
    assessed = conditional_importances(study, ctx.info.objectives, min_trials=MIN_IMPORTANCE_TRIALS)
    lines = ["Searched params that acted in only some trials (a conditional knob is drawn only where it "
             "acts) are not in the figure. Each is assessed on the trials where it acted, beside the "
             "params that acted in all of them:", ""]
    for param, k in sorted(partial.items()):
        if param in assessed:
            values = ", ".join(f"{words(m)} {v:.3f}" for m, v in assessed[param][1].items())
            lines.append(f"- {param}: acted in {k} of {n} trials; importance there {values}")
        else:
            lines.append(f"- {param}: acted in {k} of {n} trials, too few to assess")
    ctx.report.lines += lines + [""]


def pareto_axes(objectives: Sequence[tuple[str, str]]) -> tuple[tuple[str, str], tuple[str, str]] | None:
    """The two (metric, mode) a Pareto front is drawn over: a multi-objective study's first two
    objectives; None for a single objective, which has no front to speak of."""
    return (objectives[0], objectives[1]) if len(objectives) >= 2 else None


def pareto_points(runs: pd.DataFrame, x: str, y: str, modes: Sequence[str] = ("min", "min")) -> pd.DataFrame:
    """trial_number, config, x, y and `pareto` (True where no other run is at least as good in
    both, in their `modes`, and better in one) for the runs that logged both metrics."""
    points = runs.dropna(subset=[x, y])[["trial_number", "config", x, y]].copy()
    points["pareto"] = pareto_mask(points[[x, y]].to_numpy(dtype=float), list(modes))
    return points


def _pareto_part(ctx: _Context, trials: pd.DataFrame) -> None:
    axes = pareto_axes(ctx.info.objectives)
    if axes is None:
        return
    (x, mode_x), (y, mode_y) = axes
    if x not in trials or y not in trials:
        return ctx.skip("Pareto front", f"the runs lack {x} or {y}")
    points = pareto_points(trials, x, y, (mode_x, mode_y))
    ctx.figure(plots.pareto_figure(points, x, y), "optuna_pareto", f"Pareto front of {words(x)} against {words(y)}")
    tests = [m for m in TEST_HEADLINES if m not in (x, y) and m in trials]  # what the selected trials score
    front = points[points["pareto"]].sort_values(x).join(trials[tests])
    head = [plots.metric_label(x), plots.metric_label(y), *(f"test: {plots.metric_label(m)}" for m in tests)]
    ctx.report.lines += ["Pareto-optimal trials:", "", "| trial | configuration | " + " | ".join(head) + " |",
                         "| ---: | --- |" + " ---: |" * len(head)]
    ctx.report.lines += [f"| {r.trial_number} | {r.config} | "
                         + " | ".join(_percent_or_raw(m, r[m]) for m in (x, y, *tests)) + " |"
                         for _, r in front.iterrows()] + [""]
