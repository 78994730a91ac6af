"""The Ray Tune and Optuna glue of a study: the searcher (`PruneAwareOptunaSearch`), the scheduler,
the callbacks that close the runs of stopped trials and print a line per ended trial, and the
Tuner that puts them together. The commands (`launch`, `resume`, `status`) are study/launch.py's.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import time
from pathlib import Path
from typing import Any

import optuna
from mlflow.tracking import MlflowClient
from optuna.exceptions import UpdateFinishedTrialError
import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import Searcher

from study.console import say
from study.record import (StudyRecord, Tally, label_keys,
                          optuna_study_attrs, optuna_study_note, save_dashboard_note, study_dir,
                          update_parent)
from study.reconcile import Plan, link, optuna_trial, trial_number_of
from study.search import POINT_KEY, DefineByRun
from study.parallel import WORKERS_KEY, trials_that_fit, worker_context
from study.spec import StudySpec
from study.trainable import STUDY_KEY, existing_run, mark_failed, mark_stopped_early, train_trial

TUNE_DIR = "tune"
TRIALS_TRACKING_VAR = "MOLLIFY_TRIALS_TRACKING_URI"  # where the trials log, if not the study's store
RUNNING = optuna.trial.TrialState.RUNNING
logger = logging.getLogger(__name__)


class PruneAwareOptunaSearch(Searcher):
    """Ray's searcher over one Optuna study, through Optuna's public ask-and-tell API; it owns the
    study and its trials (Ray's OptunaSearch keeps them private), so that it can:
    - tell Optuna that a trial the scheduler stopped early was PRUNED, with the value it was stopped
      on (Ray's OptunaSearch tells it COMPLETE with its partial score, which misleads TPE);
    - skip intermediate results that lack the objective (evaluated only every `eval_every` epochs);
    - take up, on a resumed study, the Optuna trials a dead driver had asked for and not ended
      (`orphans`), instead of asking for more trials than the study has; never tell a trial twice;
    - link Optuna to MLflow: the study gets its metric names and the record's attributes, each
      trial its MLflow run's id and name.
    tests/test_study.py's ASHA and resume studies, the smoke study and tests/test_crash.py check it."""

    def __init__(self, *, space: DefineByRun, metric: str | list[str], mode: str | list[str],
                 sampler: optuna.samplers.BaseSampler, storage: optuna.storages.BaseStorage, study_name: str,
                 max_epochs: int, study_attrs: dict[str, str], note: str, tracking_uri: str,
                 experiment: str) -> None:
        super().__init__(metric=metric, mode=mode)
        modes = mode if isinstance(mode, list) else [mode]
        self.space = space
        self.study = optuna.create_study(storage=storage, sampler=sampler, pruner=optuna.pruners.NopPruner(),
                                         study_name=study_name, load_if_exists=True,
                                         directions=["minimize" if m == "min" else "maximize" for m in modes])
        self.study.set_metric_names(metric if isinstance(metric, list) else [metric])
        for key, value in study_attrs.items():
            self.study.set_user_attr(key, value)
        save_dashboard_note(self.study, note)
        self.trials: dict[str, optuna.Trial] = {}  # Ray's trial id -> its Optuna trial
        self.told: set[str] = set()  # trials whose end Optuna knows
        self.linked: set[str] = set()  # trials whose MLflow run Optuna knows
        # A fresh study has none; a resumed one, the trials its dead driver asked for and never ended.
        self.orphans = sorted(t.number for t in self.study.get_trials(deepcopy=False, states=(RUNNING,)))
        self.max_epochs = max_epochs  # the trials' epochs unless a trial drew its own
        self.tracking_uri, self.experiment = tracking_uri, experiment

    def suggest(self, trial_id: str) -> dict[str, Any]:
        if trial_id not in self.trials:
            self.trials[trial_id] = self._adopt() if self.orphans else self.study.ask()
        trial = self.trials[trial_id]
        constants = self.space(trial)  # draws the trial's values (define-by-run; an adopted trial's are kept)
        return {**trial.params, **constants}

    def _adopt(self) -> optuna.Trial:
        """The first orphan, as a trial to run (under its own number, so in its own MLflow run)."""
        return optuna_trial(self.study, self.orphans.pop(0))

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self._link(trial_id)
        if isinstance(self.metric, list) or self.metric not in result or trial_id in self.told:
            return  # Optuna keeps no intermediate values of several objectives
        with contextlib.suppress(UpdateFinishedTrialError):  # it ended under an earlier driver
            self.trials[trial_id].report(result[self.metric], int(result["epoch"]))

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self.told:
            return
        self._link(trial_id)  # before Optuna closes the trial
        trial = self.trials[trial_id]
        try:
            if self._stopped_early(trial, result, error):
                # Ray does not pass the result a scheduler stops on to on_trial_result: report it, so that
                # the PRUNED trial keeps it as its last intermediate value (Optuna's value of a pruned trial).
                if isinstance(self.metric, str) and self.metric in result:
                    trial.report(result[self.metric], int(result["epoch"]))
                self.study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            else:
                self._tell_ended(trial, result, error)
        except UpdateFinishedTrialError:  # told by an earlier driver (or by `resume`'s reconciliation)
            pass
        self.told.add(trial_id)

    def _tell_ended(self, trial: optuna.Trial, result: dict | None, error: bool) -> None:
        """As Ray's OptunaSearch: the objective's value, FAIL without one after an error, else PRUNED."""
        metrics = self.metric if isinstance(self.metric, list) else None
        value = None if not result else [result.get(m) for m in metrics] if metrics else result.get(self.metric)
        state = optuna.trial.TrialState.COMPLETE
        if value is None:
            state = optuna.trial.TrialState.FAIL if error else optuna.trial.TrialState.PRUNED
        try:
            self.study.tell(trial, value, state=state)
        except UpdateFinishedTrialError:
            raise
        except Exception as err:  # e.g. a NaN value: Optuna refuses it, the study goes on
            logger.warning(err)

    def _stopped_early(self, trial: optuna.Trial, result: dict | None, error: bool) -> bool:
        if result is None or error or "epoch" not in result:
            return False
        return result["epoch"] < int(trial.params.get("epochs", self.max_epochs))

    def _link(self, trial_id: str) -> None:
        """Name the trial's MLflow run in its Optuna trial, once the run exists."""
        if trial_id in self.linked or trial_id not in self.trials:
            return
        trial = self.trials[trial_id]
        run = existing_run(MlflowClient(self.tracking_uri), self.experiment, trial.number)
        if run is None:
            return
        with contextlib.suppress(UpdateFinishedTrialError):  # ended (and linked) under an earlier driver
            link(trial, run, self.tracking_uri)
        self.linked.add(trial_id)

    def save(self, checkpoint_path: str) -> None:
        """Ray saves the searcher with the experiment (`study resume` restores it)."""
        with open(checkpoint_path, "wb") as file:
            pickle.dump(self.__dict__.copy(), file)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as file:
            self.__dict__.update(pickle.load(file))


class MarkStoppedEarly(tune.Callback):
    """Closes the MLflow run of a trial that ended without closing it: one the scheduler stopped (a
    trial that ran its epochs finishes its run before it reports its last epoch, so a run still
    open when Ray says the trial completed belongs to a stopped one: see study/trainable.py), and
    one whose worker died every time Ray tried it (FAILED, saying so)."""

    def __init__(self, tracking_uri: str, experiment: str) -> None:
        self.tracking_uri, self.experiment = tracking_uri, experiment

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        client = MlflowClient(self.tracking_uri)
        run = existing_run(client, self.experiment, trial_number_of(trial.config))
        if run is not None and run.info.status == "RUNNING":
            mark_stopped_early(client, run.info.run_id)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        client = MlflowClient(self.tracking_uri)
        run = existing_run(client, self.experiment, trial_number_of(trial.config))
        if run is not None and run.info.status == "RUNNING":
            mark_failed(client, run.info.run_id, f"Ray gave up on it: {error_line(trial)}")


class Progress(tune.Callback):
    """A console line per ended trial, counted from the study's MLflow runs (so a resumed study
    counts the trials of its earlier drivers too): done (and how many of those the scheduler
    stopped early) / running / failed, the best objective among trials that ran to the end, time
    left. Each ended trial also updates the MLflow parent run (`record.update_parent`); runs after
    MarkStoppedEarly."""

    def __init__(self, spec: StudySpec, record: StudyRecord, plan: Plan) -> None:
        self.spec, self.tracking_uri, self.parent_run_id = spec, record.tracking_uri, record.parent_run_id
        self.metric, self.mode = spec.objectives[0]
        self.concurrency = max(min(spec.max_concurrent or plan.samples, plan.samples), 1)
        self.started: dict[str, float] = {}
        self.durations: list[float] = []
        self.launched = time.monotonic()

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if trial.trial_id in self.started:  # restarted after a failure: not a new trial
            return
        self.started[trial.trial_id] = time.monotonic()
        if len(self.started) == 1:
            say(f"[study] first trial started {time.monotonic() - self.launched:.1f} s after launch")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.ended(trials, trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        say(f"[study] trial {trial.trial_id} failed: {error_line(trial)}")
        self.ended(trials, trial)

    def ended(self, trials: list, trial: Any) -> None:
        self.durations.append(time.monotonic() - self.started.get(trial.trial_id, self.launched))
        state = update_parent(self.spec, self.tracking_uri, self.parent_run_id)
        running = sum(t.status == "RUNNING" for t in trials if t is not trial)  # `trial` is not marked yet
        # A trial's run finishes just before its last report reaches Ray: count it done, not running.
        running = min(running, max(self.spec.total_trials() - state.finished - state.stopped_early - state.failed, 0))
        say(self.line(state, running))

    def line(self, state: Tally, running: int) -> str:
        total = self.spec.total_trials()
        done = state.finished + state.stopped_early
        best = f"{state.best.data.metrics[self.metric]:.4f}" if state.best is not None else "n/a"
        left = max(total - done - state.failed, 0)
        mean = sum(self.durations) / len(self.durations)
        stopped_words = f" ({state.stopped_early} stopped early)" if state.stopped_early else ""
        return (f"[study] {done}/{total} trials done{stopped_words}, {running} running, "
                f"{state.failed} failed; best {self.metric} {best}; about {mean * left / self.concurrency / 60:.1f} min left")


def error_line(trial: Any) -> str:
    """The last line of the trial's error (the exception), and where the whole traceback is."""
    path = Path(trial.error_file) if getattr(trial, "error_file", None) else None
    if path is None or not path.exists():
        return "see the study log"
    lines = [line for line in path.read_text().strip().splitlines() if line.strip()]
    return f"{lines[-1] if lines else 'no message'} (traceback: {path})"


def make_searcher(spec: StudySpec, record: StudyRecord) -> PruneAwareOptunaSearch | None:
    """The study's searcher, or None when its search keeps no Optuna study (a grid enumerates)."""
    search = spec.search
    sampler = search.sampler()
    if sampler is None:
        return None
    metrics, modes = [m for m, _ in spec.objectives], [m for _, m in spec.objectives]
    return PruneAwareOptunaSearch(
        space=search.space_function(),
        metric=metrics if spec.multi_objective else metrics[0],
        mode=modes if spec.multi_objective else modes[0],
        sampler=sampler,
        storage=optuna.storages.RDBStorage(record.optuna_storage),  # an object, not a URL (Ray 2.60)
        study_name=spec.name,
        max_epochs=spec.max_epochs,
        study_attrs=optuna_study_attrs(spec, record.tracking_uri, record.parent_run_id),
        note=optuna_study_note(spec, record.tracking_uri, record.parent_run_id),
        tracking_uri=record.tracking_uri, experiment=spec.name,
    )


def make_scheduler(spec: StudySpec):
    s = spec.scheduler
    if s.type == "fifo":
        return FIFOScheduler()
    # Epochs, not Ray's training_iteration: a trial continued by a resumed study runs under a new
    # Ray trial, whose iterations count from 1 again.
    return ASHAScheduler(metric=s.metric, mode=s.mode, time_attr="epoch",
                         max_t=spec.max_epochs, grace_period=s.grace_period,
                         reduction_factor=s.reduction_factor)


def param_space(spec: StudySpec, record: StudyRecord, runs_dir: Path, ended: frozenset[int]) -> dict[str, Any]:
    # A Slurm job on several nodes serves the study's SQLite store over HTTP for its trials
    # (study/slurm.py); the driver keeps the store itself, which its record names.
    trials_uri = os.environ.get(TRIALS_TRACKING_VAR) or record.tracking_uri
    context = {"name": spec.name, "tracking_uri": trials_uri, "parent_run_id": record.parent_run_id,
               "label_keys": label_keys(spec), "experiment_dir": str(study_dir(runs_dir, spec.name) / TUNE_DIR),
               # what the study reads back from each run (objectives, ASHA's metric) stays a metric
               "keep_metrics": sorted({m for m, _ in spec.objectives} | {m for m, _ in spec.selection_metrics}),
               WORKERS_KEY: worker_context(spec.resources, spec.max_failures)}
    return spec.search.param_space({STUDY_KEY: context}, ended)


# What a data-parallel trial's own process reserves: no CPU or GPU (it only waits on its Ray Train
# run, whose workers hold those), but Ray refuses an empty request, so the memory its Python holds.
TRIAL_DRIVER_MEMORY = 512 * 2**20


def trainable(spec: StudySpec):
    if spec.resources.workers:
        return tune.with_resources(flatten_point, {"cpu": 0, "gpu": 0, "memory": TRIAL_DRIVER_MEMORY})
    return tune.with_resources(flatten_point, {"cpu": spec.resources.cpus, "gpu": spec.resources.gpus})


def max_concurrent(spec: StudySpec) -> int | None:
    """Ray's limit on trials at once (None: none but the resources). A data-parallel trial holds
    nothing itself, so without a limit Tune would start them all: as many as their workers fit."""
    if spec.resources.workers:
        fit = trials_that_fit(spec.resources, ray.cluster_resources())
        return min(spec.max_concurrent, fit) if spec.max_concurrent else fit
    return spec.max_concurrent or None


def flatten_point(config: dict[str, Any]) -> None:
    """Grid trials carry their values under `__point`; Optuna trials carry them at the top."""
    point = config.get(POINT_KEY, {})
    train_trial({**{k: v for k, v in config.items() if k != POINT_KEY}, **point})


def trial_dirname(trial: Any) -> str:
    """Short trial folders (Ray's default spells out the whole config)."""
    return f"trial_{trial.trial_id}"


def make_tuner(spec: StudySpec, record: StudyRecord, runs_dir: Path, plan: Plan) -> tune.Tuner:
    """A Tuner for the trials `plan` leaves to run. Each driver (launch, every resume) makes a new
    one from the study's durable record; Ray's saved experiment of an earlier driver is not restored
    (see study/reconcile.py), only its trials' checkpoints are read."""
    tune_config = tune.TuneConfig(search_alg=make_searcher(spec, record), scheduler=make_scheduler(spec),
                                  num_samples=plan.samples, max_concurrent_trials=max_concurrent(spec),
                                  trial_dirname_creator=trial_dirname)
    run_config = tune.RunConfig(
        name=TUNE_DIR, storage_path=str(study_dir(runs_dir, spec.name)),
        failure_config=tune.FailureConfig(max_failures=spec.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        callbacks=[MarkStoppedEarly(record.tracking_uri, spec.name), Progress(spec, record, plan)],
        verbose=0,
    )
    return tune.Tuner(trainable(spec), param_space=param_space(spec, record, runs_dir, plan.ended),
                      tune_config=tune_config, run_config=run_config)
