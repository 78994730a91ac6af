"""Launching, resuming and inspecting studies: Ray Tune schedules the trials, Optuna searches (or an
exact grid enumerates), MLflow records one parent run per study and one child run per trial.

What a study records, and where, is study/record.py's job; this module wires Ray, Optuna and the
record together. A study's folder `<runs dir>/<name>/` holds its record (`study.json`), Ray's
experiment folder (`tune/`) and the log of everything Ray, Optuna and MLflow print (`study.log`),
so that `resume` needs only the name and the console shows only the study's own lines.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import optuna
import ray
from mlflow.tracking import MlflowClient
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search.optuna import OptunaSearch

from study import estimate_record  # issue 21: the estimate at launch and the actual times at the end
from study.console import quiet_console, say
from study.guards import (DRIVER_LOCK, StudyError, check_experiment_free, check_name, check_resources, claim,
                          driver_running, file_lock, prepare_data, probe_storage, probe_tracking, store_lock)
from study.record import (CORRUPTION_SETS_TAG, OPTUNA_RUN_ATTR, OPTUNA_RUN_NAME_ATTR, RECORD_FILE, STATE_TAG,
                          StudyRecord, Tally, label_keys, optuna_study_attrs, safe_uri, set_parent_state,
                          start_parent_run, tally, trial_runs, ui_link, update_parent)
from study.spec import TRIAL_NUMBER_KEY, DefineByRun, StudySpec
from study.trainable import STUDY_KEY, existing_run, mark_stopped_early, train_trial
from trainables.config import TrialConfig
from trainables.corruptions.provision import resolve_corruption_set
from trainables.tracking import ensure_experiment, ensure_sqlite_folder, resolve_tracking_uri

TUNE_DIR = "tune"
LOG_FILE = "study.log"
DEFAULT_OPTUNA_DB = "optuna.db"


def study_dir(runs_dir: Path, name: str) -> Path:
    return runs_dir.resolve() / name


def read_record(runs_dir: Path, name: str) -> StudyRecord:
    folder = study_dir(runs_dir, name)
    if not (folder / RECORD_FILE).exists():
        known = ", ".join(list_studies(runs_dir)) or "none"
        raise StudyError(f"no study {name!r} under {runs_dir.resolve()}; studies there: {known}")
    return StudyRecord.read(folder)


def list_studies(runs_dir: Path) -> list[str]:
    return sorted(p.parent.name for p in runs_dir.resolve().glob(f"*/{RECORD_FILE}"))


def default_optuna_storage() -> str:
    return f"sqlite:///{Path.cwd() / DEFAULT_OPTUNA_DB}"


# --- Ray Tune pieces ------------------------------------------------------------------------------

class PruneAwareOptunaSearch(OptunaSearch):
    """OptunaSearch that tells Optuna a trial stopped early by the scheduler was PRUNED, with the
    value it was stopped on (Ray tells it COMPLETE with its partial score, which misleads TPE),
    ignores intermediate results that lack the objective (evaluated only every `eval_every` epochs),
    and links Optuna to MLflow: the study gets its metric names and the record's attributes, each
    trial its MLflow run's id and name. Reaches into OptunaSearch's private `_setup_study`,
    `_ot_study`, `_ot_trials` and `_completed_trials` (Ray 2.60); tests/test_study.py's ASHA and
    smoke studies check it still does what it says."""

    def __init__(self, *args: Any, max_epochs: int, study_attrs: dict[str, str], tracking_uri: str,
                 experiment: str, **kwargs: Any) -> None:
        self._max_epochs = max_epochs  # the trials' epochs unless a trial drew its own
        self._study_attrs, self._tracking_uri, self._experiment = study_attrs, tracking_uri, experiment
        self._linked: set[str] = set()
        super().__init__(*args, **kwargs)  # creates the Optuna study: _setup_study below

    def _setup_study(self, mode: str | list) -> None:
        super()._setup_study(mode)
        metrics = self._metric if isinstance(self._metric, list) else [self._metric]
        self._ot_study.set_metric_names(metrics)
        for key, value in self._study_attrs.items():
            self._ot_study.set_user_attr(key, value)

    def _link(self, trial_id: str) -> None:
        """Name the trial's MLflow run in its Optuna trial, once the run exists."""
        if trial_id in self._linked or trial_id not in self._ot_trials:
            return
        client = MlflowClient(self._tracking_uri)
        run_id = existing_run(client, self._experiment, trial_id)
        if run_id is None:
            return
        trial = self._ot_trials[trial_id]
        trial.set_user_attr(OPTUNA_RUN_ATTR, run_id)
        trial.set_user_attr(OPTUNA_RUN_NAME_ATTR, client.get_run(run_id).info.run_name)
        self._linked.add(trial_id)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self._link(trial_id)
        if isinstance(self.metric, str) and self.metric not in result:
            return
        super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id not in self._completed_trials:
            self._link(trial_id)  # before Optuna closes the trial
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
    """A console line per ended trial, counted from Ray's trials (so a resumed study counts the
    trials of its earlier drivers too): done (and how many of those the scheduler stopped early) /
    running / failed, the best objective among trials that ran to the end, time left. Each ended
    trial also updates the MLflow parent run (`record.update_parent`); runs after MarkStoppedEarly."""

    def __init__(self, spec: StudySpec, record: StudyRecord) -> None:
        self.spec, self.tracking_uri, self.parent_run_id = spec, record.tracking_uri, record.parent_run_id
        self.metric, self.mode = spec.objectives[0]
        self.concurrency = max(spec.max_concurrent or spec.total_trials(), 1)
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
        self.ended(trials, trial, "TERMINATED")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        say(f"[study] trial {trial.trial_id} failed: {error_line(trial)}")
        self.ended(trials, trial, "ERROR")

    def ended(self, trials: list, trial: Any, status: str) -> None:
        self.durations.append(time.monotonic() - self.started.get(trial.trial_id, self.launched))
        update_parent(self.spec, self.tracking_uri, self.parent_run_id)
        say(self.line([(status if t is trial else t.status, t) for t in trials]))  # `trial` is not marked yet

    def line(self, trials: list[tuple[str, Any]]) -> str:
        full = [t for status, t in trials if status == "TERMINATED" and not stopped_early(t)]
        done = sum(status == "TERMINATED" for status, _ in trials)
        stopped = done - len(full)
        failed = sum(status == "ERROR" for status, _ in trials)
        running = sum(status == "RUNNING" for status, _ in trials)
        values = [t.last_result[self.metric] for t in full if self.metric in (t.last_result or {})]
        best = f"{(min if self.mode == 'min' else max)(values):.4f}" if values else "n/a"
        left = max(self.spec.total_trials() - done - failed, 0)
        mean = sum(self.durations) / len(self.durations)
        stopped_words = f" ({stopped} stopped early)" if stopped else ""
        return (f"[study] {done}/{self.spec.total_trials()} trials done{stopped_words}, {running} running, "
                f"{failed} failed; best {self.metric} {best}; about {mean * left / self.concurrency / 60:.1f} min left")


def stopped_early(trial: Any) -> bool:
    """A trial that ended before its last epoch: the scheduler stopped it; its value is no score."""
    return (trial.last_result or {}).get("epoch", float("inf")) < trial_epochs(trial.config)


def error_line(trial: Any) -> str:
    """The last line of the trial's error (the exception), and where the whole traceback is."""
    path = Path(trial.error_file) if getattr(trial, "error_file", None) else None
    if path is None or not path.exists():
        return "see the study log"
    lines = [line for line in path.read_text().strip().splitlines() if line.strip()]
    return f"{lines[-1] if lines else 'no message'} (traceback: {path})"


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
        study_attrs=optuna_study_attrs(spec, record.tracking_uri, record.parent_run_id),
        tracking_uri=record.tracking_uri, experiment=spec.name,
    )


def make_scheduler(spec: StudySpec):
    s = spec.scheduler
    if s.type == "fifo":
        return FIFOScheduler()
    return ASHAScheduler(metric=s.metric, mode=s.mode, time_attr="training_iteration",
                         max_t=spec.max_epochs, grace_period=s.grace_period,
                         reduction_factor=s.reduction_factor)


def param_space(spec: StudySpec, record: StudyRecord) -> dict[str, Any]:
    context = {"name": spec.name, "tracking_uri": record.tracking_uri, "parent_run_id": record.parent_run_id,
               "label_keys": label_keys(spec)}
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
    tune_config = tune.TuneConfig(search_alg=make_searcher(spec, record), scheduler=make_scheduler(spec),
                                  num_samples=1 if spec.algorithm == "grid" else spec.num_samples,
                                  max_concurrent_trials=spec.max_concurrent or None,
                                  trial_dirname_creator=trial_dirname)
    run_config = tune.RunConfig(
        name=TUNE_DIR, storage_path=str(study_dir(runs_dir, spec.name)),
        failure_config=tune.FailureConfig(max_failures=spec.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        callbacks=[MarkStoppedEarly(record.tracking_uri, spec.name), Progress(spec, record)],
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
        resolved = resolve_corruption_set(cfg, progress=lambda line: say(f"[study] {line}"))
        found.setdefault(resolved.corruption_path, {
            "dataset": cfg.dataset, "num_classes": cfg.num_classes, "image_size": cfg.image_size,
            "source": resolved.corruption_source, "path": resolved.corruption_path})
    if found:
        sets = list(found.values())
        MlflowClient(record.tracking_uri).set_tag(record.parent_run_id, CORRUPTION_SETS_TAG, json.dumps(sets))
        for s in sets:
            say(f"[study] corrupted set for {s['dataset']}: {s['source']} ({s['path']})")


def init_ray(address: str | None) -> bool:
    """Connect to (or start) Ray; True when this call did, so the caller disconnects at the end."""
    if ray.is_initialized():
        return False
    ray.init(address=address, include_dashboard=False, log_to_driver=True)
    return True


def announce(spec: StudySpec, record: StudyRecord, runs_dir: Path) -> None:
    client = MlflowClient(record.tracking_uri)
    experiment_id = ensure_experiment(client, spec.name)
    server = "" if record.tracking_uri.startswith("http") else \
        f" (after `mlflow ui --backend-store-uri {record.tracking_uri}`)"
    say(f"[study] {spec.name}: {spec.total_trials()} trials ({spec.algorithm}); MLflow {safe_uri(record.tracking_uri)}")
    say(f"[study] runs: {ui_link(record.tracking_uri, experiment_id)}{server}")
    say(f"[study] Ray, Optuna and MLflow messages: {study_dir(runs_dir, spec.name) / LOG_FILE} "
        "(--verbose shows them here)")


@dataclass(frozen=True)
class Outcome:
    """How a launch or resume ended: every trial ended (finished or stopped early by the
    scheduler), some failed, or the driver was interrupted before all ended."""

    state: str  # one of OUTCOMES
    ended: int  # trials that ran to their end or were stopped by the scheduler
    failed: int
    total: int

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.state]


OUTCOMES = ("finished", "failed", "interrupted")
EXIT_CODES = {"finished": 0, "failed": 1, "interrupted": 130}  # 130: the shell's code for Ctrl-C


def launch(spec: StudySpec, *, runs_dir: Path, tracking_uri: str | None = None, storage: str | None = None,
           address: str | None = None, overrides: dict[str, Any] | None = None,
           verbose: bool = False) -> tuple[StudyRecord, Outcome]:
    """Check everything that can be checked, claim the name, record the study and run it. A
    refusal leaves nothing behind (no folder, run or Optuna study)."""
    check_name(spec.name)
    spec = absolute_paths(spec)
    folder = study_dir(runs_dir, spec.name)
    storage = storage or default_optuna_storage()
    try:
        ensure_sqlite_folder(storage)
        uri = resolve_tracking_uri(tracking_uri)
    except OSError as err:
        raise StudyError(f"cannot make the folder of a SQLite store: {err}") from None
    probe_tracking(uri)
    probe_storage(storage)
    with claim(folder, spec.name), quiet_console(folder / LOG_FILE, verbose), \
            file_lock(folder / DRIVER_LOCK), connected(address):
        check_resources(spec)
        prepare_data(spec)
        with store_lock(storage):
            if spec.algorithm != "grid" and spec.name in optuna.get_all_study_names(storage):
                raise StudyError(f"the Optuna storage {safe_uri(storage)} already holds a study {spec.name!r}; "
                                 "choose another --name")
        with store_lock(uri):
            check_experiment_free(MlflowClient(uri), spec.name)
            parent_run_id = start_parent_run(spec, uri)
        record = StudyRecord(name=spec.name, preset=spec.preset, spec=spec.effective(), overrides=overrides or {},
                             tracking_uri=uri, optuna_storage=storage, parent_run_id=parent_run_id,
                             address=address, created=time.time())
        record.write(folder)
        announce(spec, record, runs_dir)
        estimate_record.at_launch(spec, record, folder, ray.cluster_resources())  # issue 21
        return record, run(spec, record, runs_dir, tune_restore=False)


def resume(name: str, *, runs_dir: Path, verbose: bool = False) -> tuple[StudyRecord, Outcome]:
    record = read_record(runs_dir, name)
    folder = study_dir(runs_dir, name)
    if not tune.Tuner.can_restore(str(folder / TUNE_DIR)):
        raise StudyError(f"study {name!r} has no Ray experiment state to resume from yet; launch it again "
                         f"after removing {folder}")
    with file_lock(folder / DRIVER_LOCK, blocking=False) as mine:
        if not mine:
            raise StudyError(f"study {name!r} is being run by another process now; `python -m study status {name}`")
        with quiet_console(folder / LOG_FILE, verbose), connected(record.address):
            spec = record.load_spec()
            check_resources(spec)
            prepare_data(spec)
            set_parent_state(record.tracking_uri, record.parent_run_id, "running")
            announce(spec, record, runs_dir)
            return record, run(spec, record, runs_dir, tune_restore=True)


@contextlib.contextmanager
def connected(address: str | None) -> Iterator[None]:
    """Ray for the block: connected to `address` (or a local Ray started), disconnected after if
    this block connected, inside the quiet console so the trials' last forwarded lines go to the log."""
    started = init_ray(address)
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def run(spec: StudySpec, record: StudyRecord, runs_dir: Path, *, tune_restore: bool) -> Outcome:
    prepare_corruption_sets(spec, record)
    # Objectives arrive only on evaluated epochs (eval_every) and the test grid only at the end;
    # ASHA and PruneAwareOptunaSearch skip results without their metric, and parse_spec has already
    # checked every metric name, which is what Ray's strict check is for.
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    if tune_restore:
        # Trials that were running when the driver died continue from their last checkpoint;
        # errored ones are not re-run (FailureConfig already retried them), so Optuna stays truthful.
        tuner = tune.Tuner.restore(str(study_dir(runs_dir, spec.name) / TUNE_DIR), trainable=trainable(spec),
                                   resume_unfinished=True, resume_errored=False, restart_errored=False)
    else:
        tuner = make_tuner(spec, record, runs_dir)
    with sigterm_as_sigint():
        results = tuner.fit()  # Ctrl-C: Tune saves its state and returns, trials unfinished
    outcome = judge(results.num_errors, update_parent(spec, record.tracking_uri, record.parent_run_id), spec)
    set_parent_state(record.tracking_uri, record.parent_run_id, outcome.state)
    estimate_record.at_end(spec, record, study_dir(runs_dir, spec.name), outcome.state)  # issue 21
    if outcome.state == "interrupted":
        say(f"[study] interrupted: {outcome.ended}/{outcome.total} trials done, {outcome.failed} failed; "
            f"`python -m study resume {spec.name}` continues it")
    else:
        say(f"[study] {spec.name} {outcome.state}: {outcome.ended}/{outcome.total} trials ended, {outcome.failed} failed")
    return outcome


def judge(errors: int, runs: Tally, spec: StudySpec) -> Outcome:
    """A study is finished only when every one of its trials ended: its MLflow run FINISHED (it
    reported its last epoch) or stopped early by the scheduler. Ray's statuses cannot say it: on
    Ctrl-C, Tune marks the trials it stops TERMINATED, as if they had ended, and counts those
    never created as nothing. Failures are Ray's errors (a trial whose worker died leaves no word
    in its run)."""
    ended, total = runs.finished + runs.stopped_early, spec.total_trials()
    failed = max(errors, runs.failed)
    state = "interrupted" if ended + failed < total else "failed" if failed else "finished"
    return Outcome(state, ended, failed, total)


@contextlib.contextmanager
def sigterm_as_sigint() -> Iterator[None]:
    """SIGTERM (a scheduler's or `kill`'s stop) ends the study as Ctrl-C does: Tune saves its
    state and returns, and the study says it was interrupted, instead of dying mid-write."""
    before = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, lambda *_: signal.raise_signal(signal.SIGINT))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def status(name: str, *, runs_dir: Path) -> dict[str, Any]:
    """Where the study stands, from its MLflow runs and whether a driver runs it now: the study's
    state (running, finished, failed, interrupted) and its trials finished, stopped early, failed,
    running (a driver is on them) or interrupted (none is), and never started."""
    record = read_record(runs_dir, name)
    spec = record.load_spec()
    client = MlflowClient(record.tracking_uri)
    experiment_id = ensure_experiment(client, name)
    metric = spec.objectives[0][0]  # what was searched (for a grid: the objective it names)
    runs = trial_runs(client, experiment_id)
    state = tally(runs, spec.objectives[0])
    parent = client.get_run(record.parent_run_id)
    live = driver_running(study_dir(runs_dir, name))
    study_state = "running" if live else parent.data.tags.get(STATE_TAG)
    if study_state not in ("running", *OUTCOMES) or study_state == "running" and not live:
        # no driver, and none said how it ended: it died without a word (SIGKILL, a lost machine)
        study_state = {"FINISHED": "finished", "FAILED": "failed"}.get(parent.info.status, "interrupted")
    best = state.best
    return {
        "name": name, "preset": record.preset, "algorithm": spec.algorithm, "total": spec.total_trials(),
        "state": study_state, "finished": state.finished, "stopped_early": state.stopped_early,
        "failed": state.failed, "running": state.running if live else 0,
        "interrupted": 0 if live else state.running, "never_started": max(spec.total_trials() - len(runs), 0),
        "parent_status": parent.info.status,
        "best": None if best is None else {
            "metric": metric, "value": best.data.metrics[metric], "run_id": best.info.run_id,
            "run_name": best.info.run_name,
            "params": {k: best.data.params[k] for k in sorted(spec.search_space_description()) if k in best.data.params},
        },
        "tracking_uri": safe_uri(record.tracking_uri),
        "runs_link": ui_link(record.tracking_uri, experiment_id),
    }
