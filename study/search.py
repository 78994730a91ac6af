"""How a study searches: an exact grid, or an Optuna search (tpe, gp, nsga2), as two
implementations of one small protocol, so that the rest of `study/` asks the search instead of
branching on its name.

    search = spec.search
    search.configs()          # the configurations the study may run (validation, data, corrupted sets)
    search.total()            # how many trials
    search.param_space(ctx, ended)  # Ray Tune's param space without the trials that ended; search.num_samples: Tune's samples
    search.sampler()          # Optuna's sampler and define-by-run space (search.space_function()),
                              # or None for both when it keeps no Optuna study (a grid enumerates)
    search.planned()          # the trials in advance, where the search fixes them (a grid's), else None
    search.describe()         # what the record says of it: each key's domain and the rule it acts under

Define-by-run spaces live here too: `sample_params` is the only place that calls `suggest_*`.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Protocol

from contract import ACTIVE_WHEN, is_active, rule_data
from trainables.config import TrialConfig

if TYPE_CHECKING:
    import optuna

TRIAL_NUMBER_KEY = "__trial_number"  # Optuna's trial number, or the grid index: the MLflow tag
POINT_KEY = "__point"  # a grid trial's values, under one key of Ray's param space
SAMPLERS = {"tpe": "TPESampler", "gp": "GPSampler", "nsga2": "NSGAIISampler"}  # optuna.samplers.<name>


@dataclass(frozen=True)
class Domain:
    """One searched config key: a float or int range (optionally log), or categorical choices."""

    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple = ()

    def describe(self) -> dict[str, Any]:
        if self.type == "categorical":
            return {"type": "categorical", "choices": list(self.choices)}
        return {"type": self.type, "low": self.low, "high": self.high, "log": self.log}

    def ends(self) -> tuple:
        """The values that bound the domain: every choice, or the range's two ends."""
        if self.type == "categorical":
            return self.choices
        return (int(self.low), int(self.high)) if self.type == "int" else (self.low, self.high)


def sampling_order(keys: Iterable[str]) -> list[str]:
    """`keys` with every key after the keys its rule reads (mollify before roles before npow), so
    that a conditional key is drawn knowing whether it acts; otherwise in the given order."""
    def depth(key: str) -> int:
        return 1 + max((depth(k) for k, _, _ in ACTIVE_WHEN.get(key, ())), default=-1)
    return sorted(keys, key=depth)


def expand_grid(grid: tuple[dict[str, tuple], ...]) -> list[dict[str, Any]]:
    """A union of cartesian products, in order, without duplicates: [{a: [1, 2]}, {b: [3]}]
    -> [{a: 1}, {a: 2}, {b: 3}]."""
    points: list[dict[str, Any]] = []
    for sub in grid or ({},):
        keys = list(sub)
        for values in itertools.product(*(sub[k] for k in keys)):
            point = dict(zip(keys, values))
            if point not in points:
                points.append(point)
    return points


def sample_params(space: Mapping[str, Domain], fixed: Mapping[str, Any], suggest: Any) -> dict[str, Any]:
    """Draw one point of `space` through Optuna's `trial` (passed as `suggest`): a conditional key
    is drawn only where it acts (contract.ACTIVE_WHEN), so Optuna, its importances and
    optuna-dashboard never see a value that had no effect. The only place that calls `suggest_*`."""
    defaults = TrialConfig().to_dict()
    current = {**defaults, **fixed}
    drawn: dict[str, Any] = {}
    for key in sampling_order(space):
        if not is_active(key, current):
            continue
        domain = space[key]
        if domain.type == "categorical":
            value = suggest.suggest_categorical(key, list(domain.choices))
        elif domain.type == "int":
            value = suggest.suggest_int(key, int(domain.low), int(domain.high), log=domain.log)
        else:
            value = suggest.suggest_float(key, domain.low, domain.high, log=domain.log)
        drawn[key] = current[key] = value
    return drawn


@dataclass(frozen=True)
class DefineByRun:
    """Optuna's define-by-run space for one study; a class, not a closure, because Ray pickles
    the searcher (and with it this function) into the study's saved state."""

    space: dict[str, Domain]
    fixed: dict[str, Any]

    def __call__(self, trial: Any) -> dict[str, Any]:
        sample_params(self.space, self.fixed, trial)  # Ray reads the drawn values off the trial
        return {TRIAL_NUMBER_KEY: trial.number}  # constants Ray adds to the trial's config


def _with_rules(space: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    for key, domain in space.items():
        if key in ACTIVE_WHEN:
            domain["active_when"] = rule_data(key)
    return space


# --- the protocol and its two implementations ---------------------------------------------------------

class Search(Protocol):
    algorithm: str  # grid, tpe, gp, nsga2: what the record calls it
    selects: bool  # whether it chooses between configurations (its objectives are selection metrics)
    keeps_optuna_study: bool  # whether it keeps an Optuna study (in the study's Optuna storage)
    num_samples: int  # Ray Tune's samples

    def configs(self) -> list[dict[str, Any]]: ...
    def planned(self) -> list[dict[str, Any]] | None: ...
    def total(self) -> int: ...
    def param_space(self, context: dict[str, Any], ended: frozenset[int] = frozenset()) -> dict[str, Any]: ...
    def sampler(self) -> "optuna.samplers.BaseSampler | None": ...
    def space_function(self) -> DefineByRun | None: ...
    def describe(self) -> dict[str, Any]: ...
    def label_keys(self) -> list[str]: ...


@dataclass(frozen=True)
class GridSearch:
    """An exact grid: every grid point crossed with every seed, run in order, nothing selected."""

    trial: dict[str, Any]
    grid: tuple[dict[str, tuple], ...]
    seeds: tuple[int, ...]
    algorithm: str = "grid"
    selects: bool = False
    keeps_optuna_study: bool = False
    num_samples: int = 1  # one sample of Tune's grid_search over the study's list

    def configs(self) -> list[dict[str, Any]]:
        """Every trial's flat config, in launch order (grid points x seeds)."""
        return [{**self.trial, **point, "seed": seed} for point in expand_grid(self.grid) for seed in self.seeds]

    def planned(self) -> list[dict[str, Any]]:
        return self.configs()

    def total(self) -> int:
        return len(self.configs())

    def param_space(self, context: dict[str, Any], ended: frozenset[int] = frozenset()) -> dict[str, Any]:
        """One grid point per trial: the study's exact list, in order, but for the trials that
        `ended` (a resumed study runs only the rest, under their own numbers)."""
        from ray import tune  # the Ray edge: parsing a spec does not need Ray

        points = [{**point, TRIAL_NUMBER_KEY: i} for i, point in enumerate(self.configs()) if i not in ended]
        return {**context, POINT_KEY: tune.grid_search(points)}

    def sampler(self) -> None:
        return None

    def space_function(self) -> None:
        return None

    def describe(self) -> dict[str, Any]:
        """Each grid key's values across the trials, defaults included where a sub-grid leaves a key
        out, in the trials where the key acts: [{mollify: [false]}, {roles: [xn, xb]}] reads
        mollify: [false, true], roles: [xb, xn]."""
        configs = [TrialConfig.from_dict(c).to_dict() for c in self.configs()]
        keys = sorted({k for g in self.grid for k in g})
        return _with_rules({k: {"type": "grid", "values": sorted({c[k] for c in configs if is_active(k, c)}, key=str)}
                            for k in keys})

    def label_keys(self) -> list[str]:
        """The grid's keys that take more than one value across its trials (the seed aside)."""
        configs = [TrialConfig.from_dict(c).to_dict() for c in self.configs()]
        keys = dict.fromkeys(k for g in self.grid for k in g if k != "seed")
        return [k for k in keys if len({json.dumps(c[k]) for c in configs}) > 1]


@dataclass(frozen=True)
class OptunaSearch:
    """An Optuna search (tpe, gp, nsga2) over a define-by-run space: `num_samples` trials, one seed."""

    algorithm: str
    trial: dict[str, Any]
    space: dict[str, Domain]
    num_samples: int
    seed: int
    selects: bool = True
    keeps_optuna_study: bool = True

    def configs(self) -> list[dict[str, Any]]:
        """What bounds the trials the search may draw: the fixed values with every searched key at
        the first end of its domain, then each searched key at each end (every choice of a
        categorical) with the others there."""
        base = {**self.trial, **{key: domain.ends()[0] for key, domain in self.space.items()}, "seed": self.seed}
        return [base, *({**base, key: value} for key, domain in self.space.items() for value in domain.ends())]

    def planned(self) -> None:
        return None  # drawn as the study goes

    def total(self) -> int:
        return self.num_samples

    def param_space(self, context: dict[str, Any], ended: frozenset[int] = frozenset()) -> dict[str, Any]:
        return {**context, **self.trial, "seed": self.seed}  # Optuna numbers the trials: `ended` is its

    def sampler(self) -> "optuna.samplers.BaseSampler":
        import optuna  # the Optuna edge: parsing a spec needs no Optuna (the GPU check has none)

        return getattr(optuna.samplers, SAMPLERS[self.algorithm])(seed=self.seed)

    def space_function(self) -> DefineByRun:
        return DefineByRun(self.space, self.trial)

    def describe(self) -> dict[str, Any]:
        return _with_rules({key: domain.describe() for key, domain in self.space.items()})

    def label_keys(self) -> list[str]:
        return list(self.space)
