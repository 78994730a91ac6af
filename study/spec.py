"""A study, declared in YAML and validated before anything starts.

    name: paper-amount                 # default study name; --name overrides
    trial: {dataset: cifar10, valid_per_class: 50, ...}   # fixed TrialConfig values, for every trial
    search:
      algorithm: grid                  # grid | tpe | gp | nsga2
      objectives: [[valid/corrupt/error, min]]   # nsga2: two, e.g. [[valid/corrupt/error, min], [valid/ece, min]]
      grid: [{roles: [xnb], beta: [2, 4, 9]}]     # grid: a union of cartesian products
      space: {beta: {type: float, low: 1, high: 10, log: true}}   # Optuna: one domain per config key
      num_samples: 20                  # Optuna: number of trials
    seeds: [0, 1, 2]                   # repeats: grid searches cross them with every grid point
    scheduler: {type: asha, metric: valid/error, mode: min, grace_period: 1, reduction_factor: 2}
    resources: {cpus: 1, gpus: 0}      # per trial; fractional GPUs share one device
    # or, each trial data-parallel over W Ray Train workers (docs/cluster.md):
    # resources: {workers: 2, cpus_per_worker: 1, gpus_per_worker: 1}
    max_concurrent: 2                  # trials at once (0: as many as resources allow)
    max_failures: 2                    # retries of a failed trial, from its last checkpoint
    select_on_test: false              # true: accept an Optuna search or ASHA on test metrics (tagged)
    endpoints: {primary: {metric: ..., arm: {...}, baseline: {...}}, secondary: [...]}   # grids: study/endpoints.py

Every key of `trial`, `grid` and `space` is a `TrialConfig` field; every trial the study can run is
checked as a `TrialConfig` here, so a bad value fails before Ray starts, naming the problem.

Selection without the test set (METHOD.md section 6): an Optuna search's objectives and ASHA's
stopping metric choose between configurations, so they must be validation metrics (`valid/...`,
measured on `valid_per_class` held-out training images per class) unless the spec says
`select_on_test: true`; a grid with the fifo scheduler only enumerates, and its objectives (default
clean/error) only name what `study status` reports. An Optuna search's default objective is
valid/error.

The format, its parser and every check a spec gets are one module (about 530 lines), so that what
a key means and how it is checked read together; how a study searches is study/search.py.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from study.endpoints import EndpointError, Endpoints, parse_endpoints
from contract import trial_metric_names
from study.search import (TRIAL_NUMBER_KEY, DefineByRun, Domain, GridSearch, OptunaSearch,  # noqa: F401
                          Search, expand_grid, sample_params, sampling_order)
from trainables.config import FIELD_TYPES, ConfigError, TrialConfig
from trainables.yamlfile import load_yaml

PRESETS_DIR = Path(__file__).parent / "presets"
ALGORITHMS = ("grid", "tpe", "gp", "nsga2")
SCHEDULERS = ("fifo", "asha")
MODES = ("min", "max")
DOMAIN_TYPES = ("float", "int", "categorical")
TEST_PREFIXES = ("clean/", "corrupt/")  # metrics measured on the test split and its corruptions
DEFAULT_OBJECTIVES = {"grid": ("clean/error", "min"), "search": ("valid/error", "min")}


class SpecError(ValueError):
    """A study spec that cannot run; the message names the key and what is valid."""


@dataclass(frozen=True)
class Scheduler:
    type: str = "fifo"
    metric: str = "valid/error"  # asha: what it stops trials on (fifo: unused)
    mode: str = "min"
    grace_period: int = 1
    reduction_factor: int = 2


@dataclass(frozen=True)
class Resources:
    """What each trial asks Ray for: `cpus` and `gpus` for the trial's one process (fractional GPUs
    share one device), or, with `workers` W >= 1, a Ray Train run of W data-parallel workers of
    `cpus_per_worker` and `gpus_per_worker` each (the Tune trial itself then holds nothing)."""

    cpus: float = 1.0
    gpus: float = 0.0
    workers: int = 0  # 0: no Ray Train, the trial trains in its own process
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0

    @property
    def total_cpus(self) -> float:
        """The CPUs one trial holds while it runs."""
        return self.workers * self.cpus_per_worker if self.workers else self.cpus

    @property
    def total_gpus(self) -> float:
        return self.workers * self.gpus_per_worker if self.workers else self.gpus

    def effective(self) -> dict[str, float]:
        """The keys of the kind given, in the YAML schema (the two kinds exclude each other)."""
        if self.workers:
            return {"workers": self.workers, "cpus_per_worker": self.cpus_per_worker,
                    "gpus_per_worker": self.gpus_per_worker}
        return {"cpus": self.cpus, "gpus": self.gpus}


@dataclass(frozen=True)
class StudySpec:
    name: str
    trial: dict[str, Any]
    algorithm: str = "tpe"
    objectives: tuple[tuple[str, str], ...] = (("clean/error", "min"),)
    grid: tuple[dict[str, tuple], ...] = ()
    space: dict[str, Domain] = field(default_factory=dict)
    num_samples: int = 1
    seeds: tuple[int, ...] = (0,)
    scheduler: Scheduler = Scheduler()
    resources: Resources = Resources()
    max_concurrent: int = 0
    max_failures: int = 2
    select_on_test: bool = False  # the spec accepts an Optuna search or ASHA on test metrics
    endpoints: Endpoints | None = None  # pre-registered comparisons (grids only)
    preset: str = "custom"
    source: dict[str, Any] = field(default_factory=dict)  # the YAML as given, for the record

    @property
    def search(self) -> Search:
        """How the study searches (study/search.py): the one place its algorithm's name is read."""
        if self.algorithm == "grid":
            return GridSearch(self.trial, self.grid, self.seeds)
        return OptunaSearch(self.algorithm, self.trial, self.space, self.num_samples, self.seeds[0])

    @property
    def cpus(self) -> float:
        """The CPUs one trial holds (all its workers' for a data-parallel trial)."""
        return self.resources.total_cpus

    @property
    def gpus(self) -> float:
        return self.resources.total_gpus

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def selection_metrics(self) -> tuple[tuple[str, str], ...]:
        """(metric, where it is set) for the metrics that choose between configurations: an Optuna
        search's objectives and ASHA's stopping metric. A grid under fifo only enumerates."""
        out = [(m, "search.objectives") for m, _ in self.objectives] if self.search.selects else []
        if self.scheduler.type == "asha":
            out.append((self.scheduler.metric, "scheduler.metric"))
        return tuple(out)

    @property
    def max_epochs(self) -> int:
        """The longest trial's epochs (a searched `epochs`: its domain's maximum): ASHA's horizon."""
        default = TrialConfig().epochs
        return max(int(c.get("epochs", default)) for c in self.search.configs())

    def effective(self) -> dict[str, Any]:
        """The spec as it runs, in the YAML schema: the preset with the command line's changes and
        --set overrides folded in and every default spelled out, so that parsing it again gives
        this spec (the study's record stores it)."""
        search: dict[str, Any] = {"algorithm": self.algorithm, "objectives": [list(o) for o in self.objectives]}
        if self.grid:
            search["grid"] = [{k: list(v) for k, v in sub.items()} for sub in self.grid]
        if self.space:
            search["space"] = {k: d.describe() for k, d in self.space.items()}
        if self.search.selects:  # a search draws its trials; a grid lists them
            search["num_samples"] = self.num_samples
        out = {"name": self.name, "trial": dict(self.trial), "search": search, "seeds": list(self.seeds),
               "scheduler": dataclasses.asdict(self.scheduler), "resources": self.resources.effective(),
               "max_concurrent": self.max_concurrent, "max_failures": self.max_failures,
               "select_on_test": self.select_on_test}
        if self.endpoints is not None:
            out["endpoints"] = self.endpoints.effective()
        if "description" in self.source:
            out["description"] = self.source["description"]
        return out

    def trial_configs(self) -> list[dict[str, Any]]:
        """Grid searches: every trial's flat config, in launch order (grid points x seeds)."""
        return [{**self.trial, **point, "seed": seed} for point in expand_grid(self.grid) for seed in self.seeds]

    def total_trials(self) -> int:
        return self.search.total()

    def search_space_description(self) -> dict[str, Any]:
        """Each searched key's domain and the rule under which it acts (`active_when`, data: see
        `contract.rule_data`); a grid's keys list the values its trials take (`GridSearch.describe`)."""
        return self.search.describe()


# --- loading and validation ---------------------------------------------------------------------------

SPEC_KEYS = ("name", "description", "trial", "search", "seeds", "scheduler", "resources",
             "max_concurrent", "max_failures", "select_on_test", "endpoints")
SEARCH_KEYS = ("algorithm", "objectives", "grid", "space", "num_samples")
RESOURCE_KEYS = tuple(f.name for f in dataclasses.fields(Resources))


def _mapping(value: Any, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SpecError(f"{where} must be a mapping, got {type(value).__name__}")
    return value


def _known(mapping: Mapping, valid: tuple[str, ...] | Any, where: str) -> None:
    unknown = sorted(set(mapping) - set(valid))
    if unknown:
        raise SpecError(f"unknown key(s) {unknown} in {where}; valid: {', '.join(valid)}")


def _config_keys(mapping: Mapping, where: str) -> None:
    unknown = sorted(set(mapping) - set(FIELD_TYPES))
    if unknown:
        raise SpecError(f"unknown config key(s) {unknown} in {where}; valid: {', '.join(FIELD_TYPES)}")


def _domain(key: str, raw: Any) -> Domain:
    where = f"search.space.{key}"
    if isinstance(raw, list):
        raw = {"type": "categorical", "choices": raw}
    raw = dict(_mapping(raw, where))
    if "choices" in raw:
        raw.setdefault("type", "categorical")
    _known(raw, ("type", "low", "high", "log", "choices"), where)
    kind = raw.get("type", "float")
    if kind not in DOMAIN_TYPES:
        raise SpecError(f"{where}: unknown type {kind!r}; valid: {', '.join(DOMAIN_TYPES)}")
    if kind == "categorical":
        return Domain("categorical", choices=_choices(raw.get("choices"), where))
    try:
        low, high = (None if isinstance(raw[k], bool) else float(raw[k]) for k in ("low", "high"))
    except (KeyError, TypeError, ValueError):
        low = high = None
    if low is None or high is None:
        raise SpecError(f"{where}: a {kind} domain needs numeric 'low' and 'high'")
    if not low < high or (raw.get("log") and low <= 0):
        raise SpecError(f"{where}: need low < high (and low > 0 with log), got {low}, {high}")
    if kind == "int" and not (low.is_integer() and high.is_integer()):  # Optuna would draw 1.5..4 from 1..4
        raise SpecError(f"{where}: an int domain needs integer low and high, got {low:g}, {high:g}")
    return Domain(kind, low, high, bool(raw.get("log", False)))


def _choices(raw: Any, where: str) -> tuple:
    """Optuna stores categorical choices only as null, booleans, numbers or strings."""
    if not raw or not isinstance(raw, list):
        raise SpecError(f"{where}: a categorical domain needs a non-empty 'choices' list")
    odd = [c for c in raw if not isinstance(c, (type(None), bool, int, float, str))]
    if odd:
        raise SpecError(f"{where}: choice {odd[0]!r} is not a scalar; valid: null, true/false, numbers, strings")
    return tuple(raw)


def _objectives(raw: Any) -> tuple[tuple[str, str], ...]:
    items = raw if isinstance(raw, list) and raw and isinstance(raw[0], list) else [raw]
    out = []
    for item in items:
        if not (isinstance(item, list) and len(item) == 2 and item[1] in MODES):
            raise SpecError(f"search.objectives: each objective is [metric, min|max], got {item!r}")
        out.append((_metric(str(item[0]), "search.objectives"), item[1]))
    return tuple(out)


def _metric(name: str, where: str) -> str:
    """A metric a trial reports; Ray's own check is off (objectives arrive only on evaluated epochs)."""
    if name not in trial_metric_names():
        raise SpecError(f"{where}: unknown metric {name!r}; e.g. valid/error, valid/corrupt/error, valid/ece, "
                        "clean/error, corrupt/error (README: What gets logged)")
    return name


def validation_counterpart(metric: str) -> str:
    """The validation metric to select on instead of a test metric: clean/X -> valid/X,
    corrupt/X -> valid/corrupt/X (the held-out corruptions' mean where X names a test corruption
    or group, which the validation split does not have)."""
    if metric.startswith("clean/"):
        return "valid/" + metric.removeprefix("clean/")
    same = "valid/" + metric
    return same if same in trial_metric_names() else "valid/corrupt/" + metric.rsplit("/", 1)[-1]


def _check_selection(spec: StudySpec) -> None:
    """METHOD.md section 6: selecting on the test set biases the number the study reports."""
    if spec.select_on_test:
        return
    for metric, where in spec.selection_metrics:
        if metric.startswith(TEST_PREFIXES):
            chooser = "the ASHA scheduler stops trials" if where == "scheduler.metric" else \
                f"the {spec.algorithm} search selects configurations"
            raise SpecError(
                f"{where} {metric!r} is measured on the test set, and {chooser} on it: the best value the "
                f"study reports would be selected on the test set and optimistically biased (METHOD.md "
                f"section 6). Use the validation metric {validation_counterpart(metric)!r} (with trial "
                "valid_per_class > 0, e.g. 50 for CIFAR), or set select_on_test: true at the top of the spec "
                "to accept test-set selection (the study run is tagged mollify.select_on_test)")


def _holds_out(spec: StudySpec) -> bool:
    """Whether every trial the study can run holds out a validation split."""
    return all(TrialConfig.from_dict(c).valid_per_class > 0 for c in spec.search.configs())


def _check_validation_split(spec: StudySpec) -> None:
    metrics = [(m, "search.objectives") for m, _ in spec.objectives]
    metrics += [(spec.scheduler.metric, "scheduler.metric")] if spec.scheduler.type == "asha" else []
    needing = [(m, where) for m, where in metrics if m.startswith("valid/")]
    if needing and not _holds_out(spec):
        metric, where = needing[0]
        raise SpecError(f"{where} {metric!r} is measured on the validation split, but not every trial holds one "
                        "out: set trial valid_per_class > 0 (training images held out per class, e.g. 50 for "
                        "CIFAR), or search it over positive values only")


def _grid(raw: Any) -> tuple[dict[str, tuple], ...]:
    subs = raw if isinstance(raw, list) else [raw]
    out = []
    for i, sub in enumerate(subs):
        sub = _mapping(sub, f"search.grid[{i}]")
        _config_keys(sub, f"search.grid[{i}]")
        empty = [k for k, v in sub.items() if isinstance(v, list) and not v]
        if empty:
            raise SpecError(f"search.grid[{i}].{empty[0]} is an empty list: a grid key needs at least one value")
        out.append({k: tuple(v) if isinstance(v, list) else (v,) for k, v in sub.items()})
    return tuple(out)


def _check_trials(spec: StudySpec) -> None:
    """Build every trial the study can run (a grid's) or what bounds them (a search's) as a TrialConfig."""
    try:
        for values in spec.search.configs():
            TrialConfig.from_dict(values)
    except ConfigError as err:
        raise SpecError(f"study {spec.name!r}: {err}") from None


def _check_search(spec: StudySpec) -> None:
    search = spec.search
    if not search.selects and not spec.grid:
        raise SpecError("search.algorithm 'grid' needs search.grid")
    if search.selects:
        if not spec.space:
            raise SpecError(f"search.algorithm {spec.algorithm!r} needs search.space")
        if len(spec.seeds) > 1:
            raise SpecError("repeats over seeds (several seeds) are for grid searches; an Optuna search "
                            "draws one seed per trial: put 'seed' in trial, or use algorithm 'grid'")
    if spec.algorithm == "nsga2" and not spec.multi_objective:
        raise SpecError("search.algorithm 'nsga2' is multi-objective: give two search.objectives")
    if spec.multi_objective and search.selects and spec.algorithm != "nsga2":
        raise SpecError(f"several objectives need algorithm 'nsga2' (or 'grid'), not {spec.algorithm!r}")
    if spec.multi_objective and spec.scheduler.type == "asha":
        raise SpecError("the ASHA scheduler stops trials on one metric; use scheduler fifo with several objectives")
    overlap = sorted(set(spec.space) & set(spec.trial))
    if overlap:
        raise SpecError(f"key(s) {overlap} are both fixed in trial and searched in search.space; keep one")


def parse_spec(raw: Mapping[str, Any], *, preset: str = "custom", name: str | None = None,
               overrides: Mapping[str, Any] | None = None) -> StudySpec:
    """Validate a study spec (a dict read from YAML); `overrides` are fixed trial values (--set)."""
    raw = _mapping(raw, "the study spec")
    _known(raw, SPEC_KEYS, "the study spec")
    _check_overrides(raw, overrides or {})
    trial = {**_mapping(raw.get("trial"), "trial"), **(overrides or {})}
    _config_keys(trial, "trial")
    search = _mapping(raw.get("search"), "search")
    _known(search, SEARCH_KEYS, "search")
    algorithm = search.get("algorithm", "tpe")
    if algorithm not in ALGORITHMS:
        raise SpecError(f"unknown search.algorithm {algorithm!r}; valid: {', '.join(ALGORITHMS)}")
    space_raw = _mapping(search.get("space"), "search.space")
    _config_keys(space_raw, "search.space")
    sched_raw = _mapping(raw.get("scheduler"), "scheduler")
    _known(sched_raw, ("type", "metric", "mode", "grace_period", "reduction_factor"), "scheduler")
    if sched_raw.get("type", "fifo") not in SCHEDULERS:
        raise SpecError(f"unknown scheduler type {sched_raw.get('type')!r}; valid: {', '.join(SCHEDULERS)}")
    if "metric" in sched_raw:
        _metric(str(sched_raw["metric"]), "scheduler.metric")
    if sched_raw.get("mode", "min") not in MODES:
        raise SpecError(f"scheduler.mode must be min or max, got {sched_raw['mode']!r}")
    select_on_test = raw.get("select_on_test", False)
    if not isinstance(select_on_test, bool):
        raise SpecError(f"select_on_test must be true or false, got {select_on_test!r}")
    resources = _mapping(raw.get("resources"), "resources")
    _known(resources, RESOURCE_KEYS, "resources")
    seeds = _seeds(raw["seeds"], "seeds", algorithm) if "seeds" in raw else \
        _seeds([trial.get("seed", 0)], "trial.seed", algorithm)
    study_name = name or raw.get("name") or preset
    default_objective = DEFAULT_OBJECTIVES["grid" if algorithm == "grid" else "search"]
    spec = StudySpec(
        name=str(study_name), trial={k: v for k, v in trial.items() if k != "seed"},
        algorithm=algorithm, objectives=_objectives(search.get("objectives", list(default_objective))),
        grid=_grid(search["grid"]) if "grid" in search else (),
        space={k: _domain(k, v) for k, v in space_raw.items()},
        num_samples=_count(search.get("num_samples", 1), "search.num_samples"), seeds=seeds,
        scheduler=Scheduler(**{**sched_raw, **{k: _count(sched_raw[k], f"scheduler.{k}")
                                               for k in ("grace_period", "reduction_factor") if k in sched_raw}}),
        resources=_resources(resources),
        max_concurrent=_count(raw.get("max_concurrent", 0), "max_concurrent"),
        max_failures=_count(raw.get("max_failures", 2), "max_failures"),
        select_on_test=select_on_test, preset=preset, source=dict(raw),
    )
    _check_search(spec)
    _check_trials(spec)
    _check_horizon(spec)
    if "endpoints" in raw:
        spec = dataclasses.replace(spec, endpoints=_endpoints(spec, raw["endpoints"]))
    _check_selection(spec)
    _check_validation_split(spec)
    return spec


def _endpoints(spec: StudySpec, raw: Any) -> Endpoints:
    """Pre-registered comparisons name configurations of a grid; a search has none fixed in advance."""
    if spec.search.planned() is None:
        raise SpecError(f"endpoints compare configurations fixed in advance: they need search.algorithm grid, "
                        f"not {spec.algorithm!r}")
    try:
        return parse_endpoints(raw, expand_grid(spec.grid), spec.trial, _metric)
    except EndpointError as err:
        raise SpecError(str(err)) from None


def _check_overrides(raw: Mapping[str, Any], overrides: Mapping[str, Any]) -> None:
    """--set fixes a key for every trial; on a key the study searches it would either be silently
    overridden (a grid) or clash (a space): refuse it, naming where the key is searched."""
    search = raw.get("search") if isinstance(raw.get("search"), dict) else {}
    grid = search.get("grid") or []
    searched = {k: "search.space" for k in (search.get("space") or {})}
    searched |= {k: "search.grid" for sub in (grid if isinstance(grid, list) else [grid]) if isinstance(sub, dict)
                 for k in sub}
    clash = sorted(set(overrides) & set(searched))
    if clash:
        raise SpecError(f"--set {clash[0]}=... fixes a key the study searches ({searched[clash[0]]}); drop the --set, "
                        "or copy the spec and change its search")


# --- numbers: what Ray and Optuna would refuse (or quietly change) after the launch claimed the name ---

# Each count's least value and what it means: Ray asserts grace_period >= 1 and reduction_factor > 1
# in ASHAScheduler, max_concurrent_trials >= 1 when given (0 here: no limit, passed as None).
# max_failures -1 (Ray: retry forever) is not offered: a trial that always fails would never end.
COUNTS = {
    "search.num_samples": (1, "the trials an Optuna search draws"),
    "max_concurrent": (0, "trials at once; 0: as many as resources allow"),
    "max_failures": (0, "retries of a failed trial"),
    "scheduler.grace_period": (1, "epochs before ASHA may stop a trial"),
    "scheduler.reduction_factor": (2, "ASHA keeps 1 in reduction_factor trials at each rung"),
}
TORCH_SEEDS = (-2**63, 2**64 - 1)  # what torch.manual_seed takes (a grid's trials)
SAMPLER_SEEDS = (0, 2**32 - 1)  # what Optuna's samplers take (numpy's RandomState): an Optuna search's


def _whole(raw: Any) -> int | None:
    """An integer as written (3, 3.0 or "3"), else None: 2.7 would run as 2, and true is no count."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, float):
        return int(raw) if raw.is_integer() else None
    try:
        return int(raw) if isinstance(raw, (int, str)) else None
    except ValueError:
        return None


def _count(raw: Any, where: str) -> int:
    least, meaning = COUNTS[where]
    value = _whole(raw)
    if value is None or value < least:
        raise SpecError(f"{where} must be an integer >= {least} ({meaning}), got {raw!r}")
    return value


def _float(raw: Any, where: str) -> float:
    try:
        value = float(raw) if not isinstance(raw, bool) else None
    except (TypeError, ValueError):
        value = None
    if value is None:
        raise SpecError(f"{where} must be a number, got {raw!r}")
    if value != value or value in (float("inf"), float("-inf")):
        raise SpecError(f"{where} must be finite, got {raw!r}")
    return value


PROCESS_KEYS, WORKER_KEYS = ("cpus", "gpus"), ("workers", "cpus_per_worker", "gpus_per_worker")


def _resources(raw: Mapping[str, Any]) -> Resources:
    """Ray's rule for a GPU request: a fraction of one device, or whole devices (1.5 never fits)."""
    if "workers" in raw:
        return _worker_resources(raw)
    per_worker = [k for k in WORKER_KEYS if k in raw]
    if per_worker:
        raise SpecError(f"resources.{per_worker[0]} needs resources.workers (the trial's data-parallel workers)")
    res = Resources(**{k: _float(v, f"resources.{k}") for k, v in raw.items()})
    if res.cpus <= 0:
        raise SpecError(f"resources.cpus must be > 0 (CPUs per trial, fractions allowed), got {res.cpus:g}")
    if res.gpus < 0 or res.gpus > 1 and not res.gpus.is_integer():
        raise SpecError(f"resources.gpus must be 0, a fraction below 1 (trials share a GPU) or a whole number, "
                        f"got {res.gpus:g}")
    return res


def _worker_resources(raw: Mapping[str, Any]) -> Resources:
    """A data-parallel trial: W Ray Train workers. Fractional GPUs per worker only for W = 1: NCCL
    refuses two ranks of one process group on one device."""
    both = [k for k in PROCESS_KEYS if k in raw]
    if both:
        raise SpecError(f"resources.workers and resources.{both[0]} exclude each other: give either cpus/gpus "
                        f"(one process per trial) or {', '.join(WORKER_KEYS)} (a data-parallel trial)")
    workers = _whole(raw["workers"])
    if workers is None or workers < 1:
        raise SpecError(f"resources.workers must be an integer >= 1 (data-parallel workers per trial), "
                        f"got {raw['workers']!r}")
    cpus = _float(raw.get("cpus_per_worker", 1.0), "resources.cpus_per_worker")
    gpus = _float(raw.get("gpus_per_worker", 0.0), "resources.gpus_per_worker")
    if cpus <= 0:
        raise SpecError(f"resources.cpus_per_worker must be > 0 (fractions allowed), got {cpus:g}")
    if gpus < 0 or not gpus.is_integer() and (workers > 1 or gpus > 1):
        raise SpecError(f"resources.gpus_per_worker must be 0 or a whole number (a fraction below 1 only with "
                        f"workers: 1: NCCL takes one GPU per worker), got {gpus:g}")
    return Resources(workers=workers, cpus_per_worker=cpus, gpus_per_worker=gpus)


def _seeds(raw: list, where: str, algorithm: str) -> tuple[int, ...]:
    """The trials' seeds (`seeds`, else `trial.seed`); an Optuna search also seeds its sampler with the first."""
    if not (isinstance(raw, list) and raw and all(_whole(s) is not None and not isinstance(s, str) for s in raw)):
        what = "a non-empty list of integers" if where == "seeds" else "an integer"
        raise SpecError(f"{where} must be {what}, got {raw if where == 'seeds' else raw[0]!r}")
    seeds = tuple(_whole(s) for s in raw)
    (low, high), who = (TORCH_SEEDS, "torch.manual_seed takes") if algorithm == "grid" else \
        (SAMPLER_SEEDS, "Optuna's samplers take")
    outside = [s for s in seeds if not low <= s <= high]
    if outside:
        raise SpecError(f"{where}: seed {outside[0]} is outside {low}..{high}, what {who}")
    return seeds


def _check_horizon(spec: StudySpec) -> None:
    """ASHA's max_t is the longest trial's epochs; Ray asserts grace_period <= max_t."""
    s, horizon = spec.scheduler, spec.max_epochs
    if s.type == "asha" and s.grace_period > horizon:
        raise SpecError(f"scheduler.grace_period {s.grace_period} exceeds the longest trial's epochs ({horizon}), "
                        f"ASHA's max_t: valid 1..{horizon}")


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def read_source(preset_or_file: str) -> tuple[dict[str, Any], str]:
    """The raw spec of a preset by name (study/presets/NAME.yaml) or of a YAML file, and the
    preset's name ('custom' for a file)."""
    path = Path(preset_or_file)
    if path.suffix in (".yaml", ".yml") and path.exists():
        preset = "custom"
    elif (PRESETS_DIR / f"{preset_or_file}.yaml").exists():
        preset, path = preset_or_file, PRESETS_DIR / f"{preset_or_file}.yaml"
    else:
        raise SpecError(f"no preset or spec file {preset_or_file!r}; presets: {', '.join(preset_names())}")
    try:
        return _mapping(load_yaml(path.read_text()), str(path)), preset  # a key given twice is refused
    except yaml.YAMLError as err:
        raise SpecError(f"{path}: not valid YAML: {' '.join(str(err).split())}") from None  # with its line


def load_spec(preset_or_file: str, *, name: str | None = None,
              overrides: Mapping[str, Any] | None = None) -> StudySpec:
    raw, preset = read_source(preset_or_file)
    return parse_spec(raw, preset=preset, name=name, overrides=overrides)
