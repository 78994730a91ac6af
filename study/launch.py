"""The commands: launching, resuming and inspecting studies. Ray Tune schedules the trials, Optuna
searches (or an exact grid enumerates), MLflow records one parent run per study and one child run
per trial.

What a study records, and where, is study/record.py's job; the Ray and Optuna glue is
study/tuning.py's; this module runs the commands with them. A study's folder `<runs dir>/<name>/` holds its record (`study.json`), Ray's
experiment folder (`tune/`) and the log of everything Ray, Optuna and MLflow print (`study.log`),
so that `resume` needs only the name and the console shows only the study's own lines.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import uuid
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Iterator

import optuna
import ray
from mlflow.tracking import MlflowClient

from study import estimate_record  # issue 21: the estimate at launch and the actual times at the end
from study.console import quiet_console, say
from study.guards import (DRIVER_LOCK, StoreGoneError, StudyError, check_experiment_free, check_name, check_resources, claim,
                          driver_running, file_lock, prepare_data, probe_storage, probe_tracking, store_lock)
from study.reconcile import Plan, plan_resume
from study.record import (CORRUPTION_SETS_TAG, RECORD_FILE, STATE_TAG, RecordError, StudyRecord, Tally,
                          find_parent_run, safe_uri, set_parent_state, start_parent_run, study_dir, tally,
                          trial_runs, ui_link, update_parent)
from study.spec import StudySpec
from study.stores import resolve_stores
from study.tuning import make_tuner
from trainables.config import TrialConfig
from trainables.corruptions.provision import resolve_corruption_set
from trainables.tracking import ensure_experiment

LOG_FILE = "study.log"


def read_record(runs_dir: Path, name: str) -> StudyRecord:
    folder = study_dir(runs_dir, name)
    if not (folder / RECORD_FILE).exists():
        known = ", ".join(list_studies(runs_dir)) or "none"
        raise StudyError(f"no study {name!r} under {runs_dir.resolve()}; studies there: {known}")
    try:
        return StudyRecord.read(folder)
    except RecordError as err:
        raise StudyError(str(err)) from None


def list_studies(runs_dir: Path) -> list[str]:
    return sorted(p.parent.name for p in runs_dir.resolve().glob(f"*/{RECORD_FILE}"))


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
    configs = spec.search.configs()
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
    refusal leaves nothing behind (no folder, run or Optuna study). From the claim on, a driver
    killed at any moment leaves a study that `resume` continues (study/reconcile.py)."""
    check_name(spec.name)
    spec = absolute_paths(spec)
    folder = study_dir(runs_dir, spec.name)
    stores = resolve_stores(tracking_uri, storage)  # absolute, credentials moved into the environment
    uri, storage = stores.tracking_uri, stores.optuna_storage
    probe_tracking(uri)
    probe_storage(storage)
    record = StudyRecord(name=spec.name, preset=spec.preset, spec=spec.effective(), overrides=overrides or {},
                         tracking_uri=uri, optuna_storage=storage, parent_run_id=None, address=address,
                         created=time.time(), launch_id=uuid.uuid4().hex)
    with claim(folder, record), quiet_console(folder / LOG_FILE, verbose), file_lock(folder / DRIVER_LOCK):
        prepare_data(spec)  # before Ray starts: data that cannot serve the trials fails in seconds
        with connected(address):
            check_resources(spec)
            with store_lock(storage):
                if spec.search.keeps_optuna_study and spec.name in optuna.get_all_study_names(storage):
                    raise StudyError(f"the Optuna storage {safe_uri(storage)} already holds a study {spec.name!r}; "
                                     "choose another --name")
            with store_lock(uri):
                check_experiment_free(MlflowClient(uri), spec.name)
                record = recorded_parent(spec, record, folder)
            announce(spec, record, runs_dir)
            estimate_record.at_launch(spec, record, folder, ray.cluster_resources())  # issue 21
            return record, run(spec, record, runs_dir, Plan.fresh(spec))


def recorded_parent(spec: StudySpec, record: StudyRecord, folder: Path) -> StudyRecord:
    """The record with its parent run: the one it names, else one its launch made before dying
    unrecorded (found by the launch id), else a new one; written into the study's folder."""
    if record.parent_run_id is not None:
        return record
    client = MlflowClient(record.tracking_uri)
    found = find_parent_run(client, ensure_experiment(client, spec.name), record.launch_id) \
        if record.launch_id else None
    record = replace(record, parent_run_id=found or start_parent_run(spec, record.tracking_uri, record.launch_id))
    record.write(folder)
    return record


def resume(name: str, *, runs_dir: Path, verbose: bool = False) -> tuple[StudyRecord, Outcome]:
    """Continue a study from its durable record, whatever moment its last driver died at: the
    trials that ended stay as they are, the others run (study/reconcile.py). A study that
    finished is left untouched."""
    record = read_record(runs_dir, name)
    folder = study_dir(runs_dir, name)
    with file_lock(folder / DRIVER_LOCK, blocking=False) as mine:
        if not mine:
            raise StudyError(f"study {name!r} is being run by another process now; `python -m study status {name}`")
        spec = record.load_spec()
        check_stores(spec, record)
        ended = already_ended(spec, record)
        if ended is not None:
            say(f"[study] {name} had already {ended.state}: {ended.ended}/{ended.total} trials ended, "
                f"{ended.failed} failed; nothing to run, nothing changed")
            return record, ended
        with quiet_console(folder / LOG_FILE, verbose), connected(record.address):
            check_resources(spec)
            prepare_data(spec)
            if record.parent_run_id is None and spec.search.keeps_optuna_study:
                with store_lock(record.optuna_storage):  # made before the parent run, as a launch does
                    optuna.get_all_study_names(record.optuna_storage)
            with store_lock(record.tracking_uri):
                record = recorded_parent(spec, record, folder)
            client = MlflowClient(record.tracking_uri)
            plan, repaired = plan_resume(spec, client, ensure_experiment(client, name), record.optuna_storage)
            for line in repaired:
                say(f"[study] {line}")
            set_parent_state(record.tracking_uri, record.parent_run_id, "running")
            announce(spec, record, runs_dir)
            return record, run(spec, record, runs_dir, plan)


def check_stores(spec: StudySpec, record: StudyRecord) -> None:
    """Resume only into the stores the study was recorded in: a SQLite file that is gone would be
    recreated empty, and the study would run its trials again into it. A launch made both files
    before it recorded its parent run; one that died earlier may have made neither."""
    if record.parent_run_id is None:
        return
    stores = [("MLflow store", record.tracking_uri)]
    if spec.search.keeps_optuna_study:
        stores.append(("Optuna storage", record.optuna_storage))
    for what, uri in stores:
        if sqlite_gone(uri):
            raise StoreGoneError(f"the study's {what} {safe_uri(uri)} is gone; put it back to resume {spec.name!r}")
    probe_tracking(record.tracking_uri)
    experiment = MlflowClient(record.tracking_uri).get_experiment_by_name(spec.name)
    if experiment is None or experiment.lifecycle_stage == "deleted":
        raise StoreGoneError(f"the MLflow experiment {spec.name!r} is {'deleted' if experiment else 'gone'} from "
                             f"{safe_uri(record.tracking_uri)}; restore it (`mlflow experiments restore`) to resume")


def sqlite_gone(uri: str) -> bool:
    """A SQLite store whose file is not there (a server's store is probed instead)."""
    return uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file()


def already_ended(spec: StudySpec, record: StudyRecord) -> Outcome | None:
    """How the study ended, if a driver saw it end (its parent run says finished or failed and
    every trial ended); None when there is anything left to run or record."""
    if record.parent_run_id is None:
        return None
    client = MlflowClient(record.tracking_uri)
    parent = client.get_run(record.parent_run_id)
    if parent.data.tags.get(STATE_TAG) not in ("finished", "failed") or parent.info.status == "RUNNING":
        return None
    runs = tally(trial_runs(client, ensure_experiment(client, spec.name)), spec.objectives[0])
    outcome = judge(0, runs, spec)
    return outcome if outcome.state != "interrupted" else None


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


def run(spec: StudySpec, record: StudyRecord, runs_dir: Path, plan: Plan) -> Outcome:
    prepare_corruption_sets(spec, record)
    # Objectives arrive only on evaluated epochs (eval_every) and the test grid only at the end;
    # ASHA and PruneAwareOptunaSearch skip results without their metric, and parse_spec has already
    # checked every metric name, which is what Ray's strict check is for.
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    errors = 0
    if plan.left:
        with sigterm_as_sigint():
            errors = make_tuner(spec, record, runs_dir, plan).fit().num_errors  # Ctrl-C: returns, trials unfinished
    outcome = judge(errors, update_parent(spec, record.tracking_uri, record.parent_run_id), spec)
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


@dataclass(frozen=True)
class Best:
    """The best trial so far by the study's first objective."""

    metric: str
    value: float
    run_id: str
    run_name: str
    params: dict[str, str]  # its searched params that acted


@dataclass(frozen=True)
class Status:
    """Where a study stands (`study status`; `--json` prints `asdict`)."""

    name: str
    preset: str
    algorithm: str
    total: int
    state: str  # running, or one of OUTCOMES
    finished: int
    stopped_early: int
    failed: int
    running: int  # trials a driver is on now
    interrupted: int  # trials left running by a driver that is gone
    never_started: int
    parent_status: str  # the parent run's MLflow status ("none": the launch died before making it)
    best: Best | None
    tracking_uri: str  # without credentials
    runs_link: str
    notes: tuple[str, ...] = ()  # what else a user must know (a store gone, a launch cut short)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def status(name: str, *, runs_dir: Path) -> Status:
    """Where the study stands, from its MLflow runs and whether a driver runs it now: the study's
    state (running, finished, failed, interrupted) and its trials finished, stopped early, failed,
    running (a driver is on them) or interrupted (none is), and never started. Reads only: a store
    that is gone is reported, never recreated."""
    record = read_record(runs_dir, name)
    spec = record.load_spec()
    live = driver_running(study_dir(runs_dir, name))
    notes = optuna_notes(spec, record)
    if record.parent_run_id is None:  # claimed; the launch died (or is starting) before MLflow knew
        return unrecorded_status(spec, record, live, notes)
    client = MlflowClient(record.tracking_uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is None or experiment.lifecycle_stage == "deleted":
        raise StoreGoneError(f"study {name!r}: its MLflow experiment is {'deleted' if experiment else 'gone'} from "
                             f"{safe_uri(record.tracking_uri)}; restore it (`mlflow experiments restore`) to see "
                             "or resume the study")
    runs = trial_runs(client, experiment.experiment_id)
    state = tally(runs, spec.objectives[0])
    parent = client.get_run(record.parent_run_id)
    study_state = "running" if live else parent.data.tags.get(STATE_TAG)
    if study_state not in ("running", *OUTCOMES) or study_state == "running" and not live:
        # no driver, and none said how it ended: it died without a word (SIGKILL, a lost machine)
        study_state = "interrupted"
    return Status(
        name=name, preset=record.preset, algorithm=spec.algorithm, total=spec.total_trials(), state=study_state,
        finished=state.finished, stopped_early=state.stopped_early, failed=state.failed,
        running=state.running if live else 0, interrupted=0 if live else state.running,
        never_started=max(spec.total_trials() - len(runs), 0), parent_status=parent.info.status,
        best=best_of(spec, state), tracking_uri=safe_uri(record.tracking_uri),
        runs_link=ui_link(record.tracking_uri, experiment.experiment_id), notes=notes)


def unrecorded_status(spec: StudySpec, record: StudyRecord, live: bool, notes: tuple[str, ...]) -> Status:
    said = () if live else (f"the launch stopped before it recorded the study in MLflow; `python -m study resume "
                            f"{spec.name}` starts it",)
    return Status(name=spec.name, preset=record.preset, algorithm=spec.algorithm, total=spec.total_trials(),
                  state="running" if live else "interrupted", finished=0, stopped_early=0, failed=0, running=0,
                  interrupted=0, never_started=spec.total_trials(), parent_status="none", best=None,
                  tracking_uri=safe_uri(record.tracking_uri), runs_link="", notes=notes + said)


def optuna_notes(spec: StudySpec, record: StudyRecord) -> tuple[str, ...]:
    """A search's Optuna storage, if its SQLite file is gone (the trials' MLflow runs still read)."""
    uri = record.optuna_storage
    if record.parent_run_id is not None and spec.search.keeps_optuna_study and sqlite_gone(uri):
        return (f"its Optuna storage {uri} is gone: the search cannot be resumed, its MLflow runs still read",)
    return ()


def best_of(spec: StudySpec, state: Tally) -> Best | None:
    """The best run by what was searched (for a grid: the objective it names)."""
    if state.best is None:
        return None
    metric, run = spec.objectives[0][0], state.best
    searched = sorted(spec.search_space_description())
    return Best(metric=metric, value=run.data.metrics[metric], run_id=run.info.run_id, run_name=run.info.run_name,
                params={k: run.data.params[k] for k in searched if k in run.data.params})
