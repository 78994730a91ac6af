"""What a study has done, from its durable record: the MLflow trial runs (one per trial number)
and the Optuna trials of a search. Ray's saved experiment is only a cache of this; a driver can die
at any moment (SIGKILL, OOM, a lost node) and leave it behind or ahead of the record, so `resume`
starts from here instead:

- a trial whose run ended (FINISHED, FAILED, or KILLED by the scheduler) is never run again, and
  Optuna is told its end if the dead driver had not told it yet;
- a trial whose run is still RUNNING was cut off: it runs again under the same number, in its own
  run, from its newest checkpoint (`find_checkpoint`);
- a trial with no run starts (a grid point), or an Optuna trial the dead driver had asked for is
  taken up again (`PruneAwareOptunaSearch` adopts it) instead of asking Optuna for another.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from contract import STOPPED_EARLY_TAG, TRIAL_NUMBER_TAG
from study.record import (OPTUNA_RUN_ATTR, OPTUNA_RUN_NAME_ATTR, OPTUNA_RUN_URL_ATTR, save_dashboard_note,
                          trial_note, trial_runs, ui_link)
from study.search import POINT_KEY, TRIAL_NUMBER_KEY
from trainables.tracking import EPOCH_KEY
from trainables.checkpoint import CHECKPOINT_FILE, CheckpointError, read_checkpoint

logger = logging.getLogger(__name__)

ENDED = ("finished", "stopped", "failed")
# A data-parallel trial's Ray Train runs sit in its Ray trial's folder, each named with this prefix
# (study/parallel.py); their checkpoints are the trial's.
TRAIN_RUN_PREFIX = "train_"


def run_state(run: Run) -> str:
    """finished, stopped (early, by the scheduler), failed, or running (cut off, or running now)."""
    status = run.info.status
    if status == "FINISHED":
        return "finished"
    if status == "KILLED" and run.data.tags.get(STOPPED_EARLY_TAG) == "true":
        return "stopped"
    if status in ("FAILED", "KILLED"):
        return "failed"
    return "running"


RANK = {"finished": 0, "stopped": 1, "failed": 2, "running": 3}  # which of several runs of a number counts


def runs_by_number(client: MlflowClient, experiment_id: str) -> dict[int, Run]:
    """Each trial number's run. Should a number have several (a study recorded before trials were
    found by number), the one that got furthest counts: finished over stopped over failed over running."""
    found: dict[int, Run] = {}
    for run in trial_runs(client, experiment_id):
        number = run.data.tags.get(TRIAL_NUMBER_TAG)
        if number is None or not number.isdigit():
            continue
        n = int(number)
        if n not in found or RANK[run_state(run)] < RANK[run_state(found[n])]:
            found[n] = run
    return found


def run_of(client: MlflowClient, experiment_id: str, number: int) -> Run | None:
    """Trial `number`'s run, if one was started."""
    runs = client.search_runs([experiment_id], filter_string=f"tags.`{TRIAL_NUMBER_TAG}` = '{number}'")
    return min(runs, key=lambda r: RANK[run_state(r)], default=None)


def ended_numbers(runs: dict[int, Run]) -> set[int]:
    return {n for n, run in runs.items() if run_state(run) in ENDED}


def final_result(client: MlflowClient, run: Run, epochs: int) -> dict[str, Any]:
    """What Ray is told for a trial that had already ended: its run's last values and epoch."""
    history = client.get_metric_history(run.info.run_id, EPOCH_KEY)
    last_epoch = epochs if run_state(run) == "finished" else max((m.step for m in history), default=0)
    return {**run.data.metrics, "epoch": last_epoch}


# --- the plan of a driver ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Plan:
    """What one driver runs: the trial numbers that already ended (left out of a grid), how many
    trials are left, and Ray's num_samples (a grid's one sample of the list of the rest; a search's
    trials left)."""

    ended: frozenset[int]
    left: int
    samples: int

    @classmethod
    def fresh(cls, spec: Any) -> "Plan":
        return cls(frozenset(), spec.total_trials(), spec.search.num_samples)


def plan_resume(spec: Any, client: MlflowClient, experiment_id: str, storage: str) -> tuple[Plan, list[str]]:
    """The plan of a resumed study from its MLflow runs and Optuna trials, made consistent first
    (`reconcile_optuna`); with what was repaired, in words."""
    runs = runs_by_number(client, experiment_id)
    said: list[str] = []
    if not spec.search.keeps_optuna_study:
        ended = frozenset(n for n in ended_numbers(runs) if n < spec.total_trials())
        left = spec.total_trials() - len(ended)
        return Plan(ended, left, 1 if left else 0), said
    import optuna  # noqa: PLC0415

    if spec.name not in optuna.get_all_study_names(storage):  # the dead driver never made it
        return Plan.fresh(spec), said
    study = optuna.load_study(study_name=spec.name, storage=storage)
    repair = reconcile_optuna(study, runs, [m for m, _ in spec.objectives], client)
    if repair.told:
        said.append(f"told Optuna the end of trials {', '.join(map(str, repair.told))} (their runs had ended)")
    if repair.closed:
        said.append(f"closed the runs of trials {', '.join(map(str, repair.closed))} as Optuna had ended them")
    done = sum(t.state.is_finished() for t in study.get_trials(deepcopy=False))
    left = max(spec.total_trials() - done, 0)
    return Plan(frozenset(ended_numbers(runs_by_number(client, experiment_id))), left, left), said


# --- Optuna ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class OptunaRepair:
    """What `reconcile_optuna` changed: Optuna trials told their end, MLflow runs closed."""

    told: tuple[int, ...]
    closed: tuple[int, ...]


def reconcile_optuna(study: Any, runs: dict[int, Run], metrics: list[str], client: MlflowClient) -> OptunaRepair:
    """Bring Optuna in line with MLflow where a driver died between the two: an Optuna trial still
    RUNNING whose run ended is told that end (COMPLETE with the run's values, PRUNED, or FAIL); a
    run still RUNNING whose Optuna trial ended PRUNED or FAIL (the driver died before closing the
    run) is closed so. A RUNNING trial with a RUNNING run or none is left to continue."""
    import optuna  # noqa: PLC0415 (the Optuna edge; study.record imports without it)
    from study.trainable import mark_failed, mark_stopped_early  # noqa: PLC0415

    states = optuna.trial.TrialState
    told, closed = [], []
    for trial in study.get_trials(deepcopy=False):
        run = runs.get(trial.number)
        ran = run_state(run) if run is not None else None
        if trial.state == states.RUNNING and run is not None:
            link(optuna_trial(study, trial.number), run, client.tracking_uri)  # before it ends: Optuna freezes an ended trial
        if trial.state == states.RUNNING and ran in ENDED:
            tell_from_run(study, trial.number, run, ran, metrics)
            told.append(trial.number)
        elif ran == "running" and trial.state == states.PRUNED:
            mark_stopped_early(client, run.info.run_id)
            closed.append(trial.number)
        elif ran == "running" and trial.state == states.FAIL:
            mark_failed(client, run.info.run_id, "the trial failed and its retries were spent")
            closed.append(trial.number)
    return OptunaRepair(tuple(told), tuple(closed))


def optuna_trial(study: Any, number: int) -> Any:
    """Trial `number` of `study` as a live trial (to run, to tell, to annotate), by Optuna's public
    storage API."""
    import optuna  # noqa: PLC0415

    storage = study._storage  # noqa: SLF001 (the study's storage: Optuna's public storage API needs it)
    study_id = storage.get_study_id_from_name(study.study_name)
    return optuna.trial.Trial(study, storage.get_trial_id_from_study_id_trial_number(study_id, number))


def link(trial: Any, run: Run, tracking_uri: str) -> None:
    """Name the trial's MLflow run in its Optuna trial (what optuna-dashboard shows): its id, name
    and UI address as attributes, and a link in the trial's note (attributes show as plain text)."""
    trial.set_user_attr(OPTUNA_RUN_ATTR, run.info.run_id)
    trial.set_user_attr(OPTUNA_RUN_NAME_ATTR, run.info.run_name)
    trial.set_user_attr(OPTUNA_RUN_URL_ATTR, ui_link(tracking_uri, run.info.experiment_id, run.info.run_id))
    save_dashboard_note(trial, trial_note(run, tracking_uri))


def tell_from_run(study: Any, number: int, run: Run, ran: str, metrics: list[str]) -> None:
    import optuna  # noqa: PLC0415

    states = optuna.trial.TrialState
    values = [run.data.metrics.get(m) for m in metrics]
    if ran == "finished" and None not in values:
        study.tell(number, values if len(values) > 1 else values[0], state=states.COMPLETE)
    elif ran == "stopped":
        study.tell(number, state=states.PRUNED)
    else:
        study.tell(number, state=states.FAIL)


# --- checkpoints ----------------------------------------------------------------------------------

def trial_number_of(params: dict[str, Any]) -> int | None:
    """The trial number in a Ray trial's config: at the top (a search), or in its grid point."""
    number = params.get(TRIAL_NUMBER_KEY, params.get(POINT_KEY, {}).get(TRIAL_NUMBER_KEY))
    return int(number) if number is not None else None


def find_checkpoint(experiment_dir: Path, number: int, config: dict[str, Any]) -> Path | None:
    """The newest readable checkpoint any Ray trial of this study kept for trial `number` (each Ray
    trial's folder holds its config in params.json and its checkpoints beside it, or those of its
    Ray Train runs for a data-parallel trial): a trial cut off under one driver continues from it
    under the next, whatever Ray trial id it runs under now."""
    best: tuple[int, Path] | None = None
    for params in experiment_dir.glob("trial_*/params.json"):
        try:
            if trial_number_of(json.loads(params.read_text())) != number:
                continue
        except (ValueError, OSError):  # a folder a dying driver left half-written
            continue
        kept = [*params.parent.glob("checkpoint_*"), *params.parent.glob(f"{TRAIN_RUN_PREFIX}*/checkpoint_*")]
        for folder in kept:
            epoch = checkpoint_epoch(folder, config)
            if epoch is not None and (best is None or epoch > best[0]):
                best = (epoch, folder)
    return best[1] if best else None


def checkpoint_epoch(folder: Path, config: dict[str, Any]) -> int | None:
    if not (folder / CHECKPOINT_FILE).is_file():
        return None
    try:
        return int(read_checkpoint(folder, config)["epoch"])
    except CheckpointError as err:
        logger.warning("skipping checkpoint %s: %s", folder, err)
        return None
