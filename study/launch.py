"""Launching, resuming and inspecting studies: Ray Tune schedules the trials, Optuna searches (or an
exact grid enumerates), MLflow records one parent run per study and one child run per trial.

Each study keeps a record in `<runs dir>/<name>/study.json` (the spec, where its MLflow and Optuna
stores are, its parent run) beside Ray's experiment folder `<runs dir>/<name>/tune/`, so that
`resume` needs only the name.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna
import ray
from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search.optuna import OptunaSearch

from study.spec import TRIAL_NUMBER_KEY, DefineByRun, StudySpec, parse_spec
from study.trainable import STOPPED_EARLY_TAG, STUDY_KEY, existing_run, mark_stopped_early, train_trial
from trainables.config import TrialConfig
from trainables.corruptions.provision import resolve_corruption_set
from trainables.tracking import ensure_experiment, ensure_sqlite_folder, git_commit, resolve_tracking_uri

RECORD_FILE = "study.json"
TUNE_DIR = "tune"
DEFAULT_OPTUNA_DB = "optuna.db"


class StudyError(RuntimeError):
    """A study that cannot be launched or resumed as asked; the message says why and what to do."""


@dataclass(frozen=True)
class StudyRecord:
    """What `resume` and `status` need, written once at launch."""

    name: str
    preset: str
    spec: dict[str, Any]  # the YAML as given
    overrides: dict[str, Any]  # --set values
    tracking_uri: str
    optuna_storage: str
    parent_run_id: str
    address: str | None
    created: float

    def load_spec(self) -> StudySpec:
        return parse_spec(self.spec, preset=self.preset, name=self.name, overrides=self.overrides)


def study_dir(runs_dir: Path, name: str) -> Path:
    return runs_dir.resolve() / name


def read_record(runs_dir: Path, name: str) -> StudyRecord:
    path = study_dir(runs_dir, name) / RECORD_FILE
    if not path.exists():
        known = ", ".join(list_studies(runs_dir)) or "none"
        raise StudyError(f"no study {name!r} under {runs_dir.resolve()}; studies there: {known}")
    return StudyRecord(**json.loads(path.read_text()))


def list_studies(runs_dir: Path) -> list[str]:
    return sorted(p.parent.name for p in runs_dir.resolve().glob(f"*/{RECORD_FILE}"))


def default_optuna_storage() -> str:
    return f"sqlite:///{Path.cwd() / DEFAULT_OPTUNA_DB}"


# --- MLflow parent run ---------------------------------------------------------------------------

def start_parent_run(spec: StudySpec, tracking_uri: str) -> str:
    client = MlflowClient(tracking_uri)
    experiment_id = ensure_experiment(client, spec.name)
    tags = {"mollify.study": spec.name, "mollify.kind": "study", "mollify.preset": spec.preset,
            "mollify.search": spec.algorithm, "mollify.objectives": json.dumps([list(o) for o in spec.objectives]),
            "mollify.search_space": json.dumps(spec.search_space_description()),
            "mollify.total_trials": str(spec.total_trials()), "mlflow.source.git.commit": git_commit(),
            "mollify.select_on_test": str(spec.select_on_test).lower()}
    run = client.create_run(experiment_id, run_name=spec.name, tags=tags)
    client.log_dict(run.info.run_id, spec.source, "spec.yaml")
    return run.info.run_id


def end_parent_run(record: StudyRecord, complete: bool) -> None:
    client = MlflowClient(record.tracking_uri)
    status = RunStatus.FINISHED if complete else RunStatus.FAILED
    client.set_terminated(record.parent_run_id, RunStatus.to_string(status))


# --- Ray Tune pieces ------------------------------------------------------------------------------

class PruneAwareOptunaSearch(OptunaSearch):
    """OptunaSearch that tells Optuna a trial stopped early by the scheduler was PRUNED, with the
    value it was stopped on (Ray tells it COMPLETE with its partial score, which misleads TPE), and
    ignores intermediate results that lack the objective (evaluated only every `eval_every` epochs).
    Reaches into OptunaSearch's private `_ot_study`, `_ot_trials` and `_completed_trials`
    (Ray 2.60); tests/test_study.py's ASHA study checks it still does what it says."""

    def __init__(self, *args: Any, max_epochs: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._max_epochs = max_epochs  # the trials' epochs unless a trial drew its own

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if isinstance(self.metric, str) and self.metric not in result:
            return
        super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials or not self._stopped_early(trial_id, result, error):
            return super().on_trial_complete(trial_id, result, error)
        trial = self._ot_trials[trial_id]
        # Ray does not pass the result a scheduler stops on to on_trial_result: report it, so that
        # the PRUNED trial keeps it as its last intermediate value (Optuna's value of a pruned trial).
        if isinstance(self.metric, str) and self.metric in result:
            trial.report(result[self.metric], result["training_iteration"])
        self._ot_study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        self._completed_trials.add(trial_id)

    def _stopped_early(self, trial_id: str, result: dict | None, error: bool) -> bool:
        if result is None or error or "epoch" not in result:
            return False
        budget = int(self._ot_trials[trial_id].params.get("epochs", self._max_epochs))
        return result["epoch"] < budget


class MarkStoppedEarly(tune.Callback):
    """Closes the MLflow run of a trial the scheduler stopped (see study/trainable.py): a trial that
    ran its epochs finishes its run before it reports its last epoch, so a run still open when Ray
    says the trial completed belongs to a stopped one."""

    def __init__(self, tracking_uri: str, experiment: str) -> None:
        self.tracking_uri, self.experiment = tracking_uri, experiment

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        client = MlflowClient(self.tracking_uri)
        run_id = existing_run(client, self.experiment, trial.trial_id)
        if run_id is not None and client.get_run(run_id).info.status == "RUNNING":
            mark_stopped_early(client, run_id)


class Progress(tune.Callback):
    """A line per finished trial: done (and how many of those the scheduler stopped early) /
    running / failed, the best objective so far among the trials that ran to the end, time left."""

    def __init__(self, total: int, objective: tuple[str, str], concurrency: int) -> None:
        self.total, (self.metric, self.mode), self.concurrency = total, objective, max(concurrency, 1)
        self.started: dict[str, float] = {}
        self.durations: list[float] = []
        self.failed = 0
        self.stopped = 0  # by the scheduler, before their last epoch
        self.best: float | None = None
        self.launched = time.monotonic()

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.started.setdefault(trial.trial_id, time.monotonic())
        if len(self.started) == 1:
            print(f"[study] first trial started {time.monotonic() - self.launched:.1f} s after launch", flush=True)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.durations.append(time.monotonic() - self.started.get(trial.trial_id, self.launched))
        result = trial.last_result or {}
        if result.get("epoch", float("inf")) < trial_epochs(trial.config):
            self.stopped += 1  # its partial value is no score: it never enters "best"
        elif (value := result.get(self.metric)) is not None and (
                self.best is None or (value < self.best) == (self.mode == "min")):
            self.best = value
        self.print_line(trials, trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.failed += 1
        self.print_line(trials, trial)

    def print_line(self, trials: list, ended: Any) -> None:
        done = len(self.durations)
        running = sum(t.status == "RUNNING" and t is not ended for t in trials)  # `ended` is not marked yet
        left = max(self.total - done - self.failed, 0)
        eta = sum(self.durations) / done * left / self.concurrency if done else float("nan")
        best = f"{self.best:.4f}" if self.best is not None else "n/a"
        stopped = f" ({self.stopped} stopped early)" if self.stopped else ""
        print(f"[study] {done}/{self.total} trials done{stopped}, {running} running, {self.failed} failed; "
              f"best {self.metric} {best}; about {eta / 60:.1f} min left", flush=True)


def trial_epochs(config: dict[str, Any]) -> int:
    """The epochs a trial was to run: its grid point's, else its drawn or fixed value, else the
    TrialConfig default."""
    return int(config.get("__point", {}).get("epochs", config.get("epochs", TrialConfig().epochs)))


def make_searcher(spec: StudySpec, record: StudyRecord) -> OptunaSearch | None:
    if spec.algorithm == "grid":
        return None
    samplers = {"tpe": optuna.samplers.TPESampler, "gp": optuna.samplers.GPSampler,
                "nsga2": optuna.samplers.NSGAIISampler}
    metrics, modes = [m for m, _ in spec.objectives], [m for _, m in spec.objectives]
    return PruneAwareOptunaSearch(
        space=DefineByRun(spec.space, spec.trial),
        metric=metrics if spec.multi_objective else metrics[0],
        mode=modes if spec.multi_objective else modes[0],
        sampler=samplers[spec.algorithm](seed=spec.seeds[0]),
        storage=optuna.storages.RDBStorage(record.optuna_storage),  # an object, not a URL (Ray 2.60)
        study_name=spec.name,
        max_epochs=spec.max_epochs,
    )


def make_scheduler(spec: StudySpec):
    s = spec.scheduler
    if s.type == "fifo":
        return FIFOScheduler()
    return ASHAScheduler(metric=s.metric, mode=s.mode, time_attr="training_iteration",
                         max_t=spec.max_epochs, grace_period=s.grace_period,
                         reduction_factor=s.reduction_factor)


def param_space(spec: StudySpec, record: StudyRecord) -> dict[str, Any]:
    context = {"name": spec.name, "tracking_uri": record.tracking_uri, "parent_run_id": record.parent_run_id}
    if spec.algorithm == "grid":  # one grid point per trial: the study's exact list, in order
        points = [{**point, TRIAL_NUMBER_KEY: i} for i, point in enumerate(spec.trial_configs())]
        return {STUDY_KEY: context, "__point": tune.grid_search(points)}
    return {STUDY_KEY: context, **spec.trial, "seed": spec.seeds[0]}


def trainable(spec: StudySpec):
    return tune.with_resources(flatten_point, {"cpu": spec.cpus, "gpu": spec.gpus})


def flatten_point(config: dict[str, Any]) -> None:
    """Grid trials carry their values under `__point`; Optuna trials carry them at the top."""
    point = config.get("__point", {})
    train_trial({**{k: v for k, v in config.items() if k != "__point"}, **point})


def trial_dirname(trial: Any) -> str:
    """Short trial folders (Ray's default spells out the whole config)."""
    return f"trial_{trial.trial_id}"


def make_tuner(spec: StudySpec, record: StudyRecord, runs_dir: Path) -> tune.Tuner:
    objective = spec.objectives[0]
    tune_config = tune.TuneConfig(search_alg=make_searcher(spec, record), scheduler=make_scheduler(spec),
                                  num_samples=1 if spec.algorithm == "grid" else spec.num_samples,
                                  max_concurrent_trials=spec.max_concurrent or None,
                                  trial_dirname_creator=trial_dirname)
    run_config = tune.RunConfig(
        name=TUNE_DIR, storage_path=str(study_dir(runs_dir, spec.name)),
        failure_config=tune.FailureConfig(max_failures=spec.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        callbacks=[Progress(spec.total_trials(), objective, spec.max_concurrent or spec.total_trials()),
                   MarkStoppedEarly(record.tracking_uri, spec.name)],
        verbose=0,
    )
    return tune.Tuner(trainable(spec), param_space=param_space(spec, record), tune_config=tune_config,
                      run_config=run_config)


# --- the commands --------------------------------------------------------------------------------

PATH_KEYS = ("data_root", "corruption_path")


def absolute_paths(spec: StudySpec) -> StudySpec:
    """Trials run in their own working directories: make the data and corrupted-set folders absolute."""
    trial = {k: str(Path(v).resolve()) if k in PATH_KEYS and v else v for k, v in spec.trial.items()}
    return StudySpec(**{**spec.__dict__, "trial": trial})


def prepare_corruption_sets(spec: StudySpec, record: StudyRecord) -> None:
    """Make `corruption_source: auto` concrete before any trial starts: the official release where
    the spec points, else a generated set, made here once for every trial that evaluates on it.
    The parent run says which (tag `mollify.corruption_sets`)."""
    configs = spec.trial_configs() if spec.algorithm == "grid" else [{**spec.trial, "seed": spec.seeds[0]}]
    found: dict[str, dict[str, Any]] = {}
    for values in configs:
        cfg = TrialConfig.from_dict(values)
        if cfg.corruption_source != "auto":
            continue
        resolved = resolve_corruption_set(cfg, progress=lambda line: print(f"[study] {line}", flush=True))
        found.setdefault(resolved.corruption_path, {
            "dataset": cfg.dataset, "num_classes": cfg.num_classes, "image_size": cfg.image_size,
            "source": resolved.corruption_source, "path": resolved.corruption_path})
    if found:
        sets = list(found.values())
        MlflowClient(record.tracking_uri).set_tag(record.parent_run_id, "mollify.corruption_sets", json.dumps(sets))
        for s in sets:
            print(f"[study] corrupted set for {s['dataset']}: {s['source']} ({s['path']})", flush=True)


def init_ray(address: str | None) -> None:
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=True)


def launch(spec: StudySpec, *, runs_dir: Path, tracking_uri: str | None = None, storage: str | None = None,
           address: str | None = None, overrides: dict[str, Any] | None = None) -> StudyRecord:
    folder = study_dir(runs_dir, spec.name)
    if (folder / RECORD_FILE).exists():
        raise StudyError(f"study {spec.name!r} exists in {folder}: `python -m study resume {spec.name}` "
                         "continues it, or choose another --name")
    storage = storage or default_optuna_storage()
    ensure_sqlite_folder(storage)
    if spec.algorithm != "grid" and spec.name in optuna.get_all_study_names(storage):
        raise StudyError(f"the Optuna storage {storage} already holds a study {spec.name!r}; choose another --name")
    uri = resolve_tracking_uri(tracking_uri)
    record = StudyRecord(name=spec.name, preset=spec.preset, spec=spec.source, overrides=overrides or {},
                         tracking_uri=uri, optuna_storage=storage, parent_run_id=start_parent_run(spec, uri),
                         address=address, created=time.time())
    folder.mkdir(parents=True, exist_ok=True)
    (folder / RECORD_FILE).write_text(json.dumps(asdict(record), indent=2))
    print(f"[study] {spec.name}: {spec.total_trials()} trials ({spec.algorithm}); MLflow {uri}, "
          f"parent run {record.parent_run_id}", flush=True)
    run(spec, record, runs_dir, tune_restore=False)
    return record


def resume(name: str, *, runs_dir: Path) -> StudyRecord:
    record = read_record(runs_dir, name)
    if not tune.Tuner.can_restore(str(study_dir(runs_dir, name) / TUNE_DIR)):
        raise StudyError(f"study {name!r} has no Ray experiment state to resume from yet; launch it again "
                         f"after removing {study_dir(runs_dir, name)}")
    run(record.load_spec(), record, runs_dir, tune_restore=True)
    return record


def run(spec: StudySpec, record: StudyRecord, runs_dir: Path, *, tune_restore: bool) -> None:
    spec = absolute_paths(spec)
    prepare_corruption_sets(spec, record)
    # Objectives arrive only on evaluated epochs (eval_every) and the test grid only at the end;
    # ASHA and PruneAwareOptunaSearch skip results without their metric, and parse_spec has already
    # checked every metric name, which is what Ray's strict check is for.
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    init_ray(record.address)
    if tune_restore:
        # Trials that were running when the driver died continue from their last checkpoint;
        # errored ones are not re-run (FailureConfig already retried them), so Optuna stays truthful.
        tuner = tune.Tuner.restore(str(study_dir(runs_dir, spec.name) / TUNE_DIR), trainable=trainable(spec),
                                   resume_unfinished=True, resume_errored=False, restart_errored=False)
    else:
        tuner = make_tuner(spec, record, runs_dir)
    results = tuner.fit()
    complete = not results.errors and len(results) == spec.total_trials()
    end_parent_run(record, complete)
    print(f"[study] {spec.name}: {len(results)} trials, {len(results.errors)} failed", flush=True)


def status(name: str, *, runs_dir: Path) -> dict[str, Any]:
    """Trials done / running / failed and the best so far, from the study's MLflow runs."""
    record = read_record(runs_dir, name)
    spec = record.load_spec()
    client = MlflowClient(record.tracking_uri)
    experiment_id = ensure_experiment(client, name)
    runs = client.search_runs([experiment_id], filter_string="tags.`mollify.kind` = 'trial'", max_results=10_000)
    counts = {s: sum(r.info.status == s for r in runs) for s in ("FINISHED", "RUNNING", "FAILED", "KILLED")}
    stopped = sum(r.data.tags.get(STOPPED_EARLY_TAG) == "true" for r in runs)
    metric, mode = spec.objectives[0]  # what was searched (for a grid: the objective it names)
    scored = [r for r in runs if r.info.status == "FINISHED" and metric in r.data.metrics]
    best = (min if mode == "min" else max)(scored, key=lambda r: r.data.metrics[metric], default=None)
    return {
        "name": name, "preset": record.preset, "algorithm": spec.algorithm, "total": spec.total_trials(),
        "finished": counts["FINISHED"], "running": counts["RUNNING"], "stopped_early": stopped,
        "failed": counts["FAILED"] + counts["KILLED"] - stopped,
        "parent_status": client.get_run(record.parent_run_id).info.status,
        "best": None if best is None else {
            "metric": metric, "value": best.data.metrics[metric], "run_id": best.info.run_id,
            "params": {k: best.data.params[k] for k in sorted(spec.search_space_description()) if k in best.data.params},
        },
        "tracking_uri": record.tracking_uri,
    }
