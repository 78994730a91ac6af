"""A study's pre-registered endpoints, read from its record and tested.

A grid study may declare, before it runs (study/endpoints.py), one *primary* endpoint and a
*secondary* family; its record (`study/record.json`, key `endpoints`) stores each as a metric, an
arm and a baseline with the grid trial numbers of both. The rule this module applies:

- the primary endpoint is the one test the study was run for: it is read at `alpha` on its own,
  with the plain 1 - alpha t interval, whatever else the study shows;
- the secondary endpoints are one family, adjusted together by the declared `adjust` (holm | bh |
  none; `--adjust` may ask for another), with the intervals that go with it
  (analysis/multiplicity.py);
- everything else a report or `python -m analysis paired` shows is exploratory and labelled so;
  a study without declared endpoints is exploratory throughout.

Each endpoint pairs the arm's and the baseline's runs by seed (the grid trains both with the same
seeds) and tests the mean of the per-seed differences, arm minus baseline, in the metric's display
units (errors and ECE in percentage points, NLL in nats).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import pandas as pd

from analysis.multiplicity import (ADJUSTMENT_WORDS, ADJUSTMENTS, Adjusted, PairedTest, adjust, direction,
                                   format_level, format_p, paired_test)
from analysis.plots import METRIC_WORDS, metric_scale

UNITS = {100.0: "percentage points", 1.0: "nats"}


@dataclass(frozen=True)
class Endpoint:
    """One declared comparison: `metric` of the arm's trials minus the baseline's, paired by seed."""

    metric: str
    arm: dict[str, Any]
    baseline: dict[str, Any]
    arm_trials: tuple[int, ...]
    baseline_trials: tuple[int, ...]


@dataclass(frozen=True)
class Endpoints:
    primary: Endpoint
    secondary: tuple[Endpoint, ...]
    adjust: str
    alpha: float


def read_endpoints(recorded: Mapping[str, Any] | None) -> Endpoints | None:
    """The record's `endpoints` (StudyInfo.endpoints) as data; None when the study declared none."""
    if not recorded:
        return None

    def one(item: Mapping[str, Any]) -> Endpoint:
        return Endpoint(str(item["metric"]), dict(item["arm"]), dict(item["baseline"]),
                        tuple(int(t) for t in item["arm_trials"]), tuple(int(t) for t in item["baseline_trials"]))

    method = recorded.get("adjust", "holm")
    if method not in ADJUSTMENTS:
        raise ValueError(f"the study's record declares adjust {method!r}; valid: {', '.join(ADJUSTMENTS)}")
    return Endpoints(one(recorded["primary"]), tuple(one(e) for e in recorded.get("secondary") or ()),
                     method, float(recorded.get("alpha", 0.05)))


# --- testing them -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Result:
    """An endpoint's paired test: `test` at 1 - alpha; `p_adjusted`, `half_adjusted` and `rejected`
    as its family reads it (for the primary, alone: the raw ones)."""

    endpoint: Endpoint
    arm: str  # the configurations' labels
    baseline: str
    test: PairedTest
    p_adjusted: float
    half_adjusted: float
    rejected: bool

    @property
    def mark(self) -> str:
        return direction(self.test.mean, self.rejected)

    @property
    def unit(self) -> str:
        return UNITS.get(metric_scale(self.endpoint.metric), "")


@dataclass(frozen=True)
class Evaluation:
    primary: Result
    secondary: tuple[Result, ...]
    family: Adjusted | None  # the secondary family's adjustment; None without secondary endpoints
    alpha: float


def _label(runs: pd.DataFrame, trials: Sequence[int], arm: Mapping[str, Any]) -> str:
    chosen = runs[runs["trial_number"].isin(trials)]
    if "config" in chosen and len(chosen):
        return str(chosen["config"].iloc[0])
    return ", ".join(f"{k} {v}" for k, v in arm.items())


def differences(runs: pd.DataFrame, endpoint: Endpoint) -> pd.Series:
    """Per seed shared by both arms: the arm's value minus the baseline's, in display units."""
    if endpoint.metric not in runs:
        return pd.Series(dtype=float)

    def by_seed(trials: Sequence[int]) -> pd.Series:
        chosen = runs[runs["trial_number"].isin(trials)].drop_duplicates("seed", keep="last")
        return chosen.set_index("seed")[endpoint.metric].astype(float)

    arm, base = by_seed(endpoint.arm_trials), by_seed(endpoint.baseline_trials)
    seeds = arm.index.intersection(base.index)
    return (arm[seeds] - base[seeds]) * metric_scale(endpoint.metric)


def evaluate(runs: pd.DataFrame, endpoints: Endpoints, method: str | None = None) -> Evaluation:
    """Test the endpoints on `runs` (FINISHED runs; a `config` column names the arms): the primary
    alone at alpha, the secondary family adjusted by `method` (default: the declared one)."""
    alpha = endpoints.alpha
    level = 1 - alpha

    def result(e: Endpoint, p_adjusted: float, half_adjusted: float, rejected: bool, test: PairedTest) -> Result:
        return Result(e, _label(runs, e.arm_trials, e.arm), _label(runs, e.baseline_trials, e.baseline), test,
                      p_adjusted, half_adjusted, rejected)

    first = paired_test(differences(runs, endpoints.primary), level)
    primary = result(endpoints.primary, first.p, first.half, math.isfinite(first.p) and first.p <= alpha, first)
    tests = [paired_test(differences(runs, e), level) for e in endpoints.secondary]
    if not tests:
        return Evaluation(primary, (), None, alpha)
    family = adjust([t.p for t in tests], method or endpoints.adjust, alpha)
    secondary = tuple(result(e, p, t.half_at(family.level), bool(r), t)
                      for e, t, p, r in zip(endpoints.secondary, tests, family.p_adjusted, family.rejected))
    return Evaluation(primary, secondary, family, alpha)


def declared_cells(evaluation: Evaluation | None, baseline: str) -> set[tuple[str, str]]:
    """(arm label, metric) of each declared endpoint against `baseline`: the cells of a paired
    table against it that belong to the declared families, not to the exploratory one."""
    if evaluation is None:
        return set()
    return {(r.arm, r.endpoint.metric) for r in (evaluation.primary, *evaluation.secondary) if r.baseline == baseline}


# --- in words -------------------------------------------------------------------------------------

def metric_words(metric: str) -> str:
    """'corrupt/gaussian_noise/error' -> 'gaussian noise error', 'corrupt/group/blur/ece' -> 'blur ECE'."""
    if metric in METRIC_WORDS:
        return METRIC_WORDS[metric]
    parts = metric.split("/")
    if parts[0] != "corrupt" or len(parts) < 3:
        return metric
    last = parts[-1].upper() if parts[-1] in ("ece", "nll") else parts[-1].replace("_", " ")
    return " ".join([*(p.replace("_", " ") for p in parts[1:-1] if p != "group"), last])


def _signed(mean: float, half: float, digits: int = 2) -> str:
    if not math.isfinite(mean):
        return "–"
    return f"{mean:+.{digits}f} ± {half:.{digits}f}" if math.isfinite(half) else f"{mean:+.{digits}f}"


def verdict_words(r: Result, alpha: float) -> str:
    if r.test.n < 2 or not math.isfinite(r.test.p):
        return f"no test ({r.test.n} seed pair{'s' if r.test.n != 1 else ''})"
    if r.mark:
        return f"{r.mark} than the baseline at alpha {alpha:g}"
    return f"no difference detected at alpha {alpha:g}"


def primary_sentence(evaluation: Evaluation) -> str:
    """The primary result in words: arm − baseline, mean ± interval, p, verdict, pairs."""
    r, alpha = evaluation.primary, evaluation.alpha
    digits = 2 if metric_scale(r.endpoint.metric) == 100.0 else 3
    return (f"**Primary endpoint** ({metric_words(r.endpoint.metric)}, `{r.endpoint.metric}`): "
            f"{r.arm} − {r.baseline} = **{_signed(r.test.mean, r.test.half, digits)} {r.unit}** "
            f"(mean over {r.test.n} seed pairs ± {format_level(1 - alpha)} t-interval half-width), "
            f"p = {format_p(r.test.p)}: **{verdict_words(r, alpha)}**. One pre-declared test, read at "
            f"alpha {alpha:g} on its own.")


def secondary_lines(evaluation: Evaluation) -> list[str]:
    """The secondary family as a Markdown table with raw and adjusted p-values, and its note."""
    family, alpha = evaluation.family, evaluation.alpha
    if family is None:
        return ["The study declares no secondary endpoints."]
    adjusted = ADJUSTMENT_WORDS[family.method]
    head = (f"| endpoint | arm − baseline | pairs | difference ± {format_level(1 - alpha)} | p | "
            f"p ({adjusted}) | difference ± {format_level(family.level)} | result |")
    lines = [f"**Secondary endpoints**: a family of {len(evaluation.secondary)} tests adjusted together: "
             f"{family.describe()}.", "", head, "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in evaluation.secondary:
        digits = 2 if metric_scale(r.endpoint.metric) == 100.0 else 3
        lines.append(f"| {metric_words(r.endpoint.metric)} | {r.arm} − {r.baseline} | {r.test.n} | "
                     f"{_signed(r.test.mean, r.test.half, digits)} | {format_p(r.test.p)} | {format_p(r.p_adjusted)} | "
                     f"{_signed(r.test.mean, r.half_adjusted, digits)} | {r.mark or '–'} |")
    lines += ["", f"Differences arm − baseline paired by seed, in percentage points (errors, ECE) or nats "
              f"(NLL). result: lower / higher where the {adjusted}-adjusted p-value is at most alpha {alpha:g}."]
    return lines


def endpoints_markdown(evaluation: Evaluation) -> str:
    return "\n".join([primary_sentence(evaluation), "", *secondary_lines(evaluation)]) + "\n"
