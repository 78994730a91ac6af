"""The Ray Tune trial: a few lines around `trainables.run_trial`.

MLflow is logged from inside each trial (`MlflowTrialLogger`, one batched request per epoch) rather
than by Ray's `MLflowLoggerCallback`: the callback runs in the driver and sends one request per
metric (slow with the corruption grid's hundreds of metrics), and it starts a fresh run whenever
the driver restarts, which would duplicate runs on `study resume`. Here a restarted trial finds
its own run by the `mollify.trial_id` tag and continues it. A data-parallel trial (`resources:
{workers: W}`) runs the same steps on its Ray Train workers instead (study/parallel.py).

A scheduler (ASHA) stops a trial inside `tune.report`, which then raises SystemExit in the trial's
thread while Ray tears its actor down: the trial cannot be relied on to write anything after that.
So its last epoch is reported to Ray only once its MLflow run is complete, and a run that a stopped
trial left open is closed by the driver (`study.launch.MarkStoppedEarly`, `mark_stopped_early`).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from mlflow.entities import Run, RunStatus
from mlflow.tracking import MlflowClient
from ray import tune

from contract import (DESCRIPTION_TAG, KIND_TAG, STATUS_TAG, STOPPED_EARLY_TAG, STUDY_TAG, TRIAL_ID_TAG,
                      TRIAL_NUMBER_TAG)
from study.reconcile import final_result, find_checkpoint, run_of, run_state
from study.record import describe_trial, trial_run_name
from study.search import TRIAL_NUMBER_KEY
from trainables.config import TrialConfig
from trainables.corruptions.provision import resolve_corruption_set
from trainables.tracking import MlflowTrialLogger, ensure_experiment
from trainables.train import run_trial
from study.parallel import WORKERS_KEY, train_parallel

STUDY_KEY = "__study"  # the param_space entry carrying the study's context to every trial


def existing_run(client: MlflowClient, experiment: str, number: int) -> Run | None:
    """The MLflow run of trial `number` (Optuna's number or the grid index: what identifies a
    trial across drivers; Ray's trial id changes when a study is resumed)."""
    return run_of(client, ensure_experiment(client, experiment), number)


def mark_stopped_early(client: MlflowClient, run_id: str) -> None:
    """The run of a trial the scheduler stopped: KILLED (it did not run its epochs; no test
    corruption grid, no model) but not FAILED, and tagged so that status and analysis say why."""
    client.set_tag(run_id, STOPPED_EARLY_TAG, "true")
    client.set_tag(run_id, STATUS_TAG, "stopped early by the scheduler")
    client.set_terminated(run_id, RunStatus.to_string(RunStatus.KILLED))


def mark_failed(client: MlflowClient, run_id: str, why: str) -> None:
    """The run of a trial whose worker died without a word (Ray gave up on it)."""
    client.set_tag(run_id, STATUS_TAG, f"failed: {why}")
    client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))


def start_logger(cfg: TrialConfig, study: dict[str, Any], trial_id: str, number: int,
                 run: Run | None) -> MlflowTrialLogger:
    run_id = run.info.run_id if run is not None else None
    if run_id is not None and run.data.tags.get(TRIAL_ID_TAG) != trial_id:  # continued under a new Ray trial
        MlflowClient(study["tracking_uri"]).set_tag(run_id, TRIAL_ID_TAG, trial_id)
    values, keys = cfg.to_dict(), study.get("label_keys", ())
    tags = {STUDY_TAG: study["name"], KIND_TAG: "trial", TRIAL_ID_TAG: trial_id, TRIAL_NUMBER_TAG: str(number),
            DESCRIPTION_TAG: describe_trial(number, values, keys, study["name"])}
    return MlflowTrialLogger(cfg, experiment=study["name"], tracking_uri=study["tracking_uri"],
                             run_name=trial_run_name(number, values, keys),
                             parent_run_id=study["parent_run_id"], run_id=run_id, tags=tags,
                             keep=study.get("keep_metrics", ()))


def restore_checkpoint(folder: Path, study: dict[str, Any], number: int, cfg: TrialConfig) -> None:
    """Copy the trial's newest checkpoint into `folder`: Ray's (this Ray trial restarted after a
    failure), else one an earlier driver's Ray trial kept for this trial number (a resumed study)."""
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        checkpoint.to_directory(str(folder))
        return
    kept = find_checkpoint(Path(study["experiment_dir"]), number, cfg.to_dict()) if "experiment_dir" in study else None
    if kept is not None:
        shutil.copytree(kept, folder, dirs_exist_ok=True)


def train_trial(config: dict[str, Any]) -> None:
    """The function trainable: config = the flat TrialConfig values plus the study's context and
    the trial's number (Optuna's, or the grid index)."""
    study, number = config[STUDY_KEY], config[TRIAL_NUMBER_KEY]
    cfg = TrialConfig.from_dict({k: v for k, v in config.items() if k not in (STUDY_KEY, TRIAL_NUMBER_KEY)})
    client = MlflowClient(study["tracking_uri"])
    run = existing_run(client, study["name"], number)
    if run is not None and run_state(run) in ("finished", "stopped"):
        # It ended under a driver that died before it could say so: tell Ray how it ended, and
        # leave its run as it is (a finished record is never modified).
        report_to_ray(final_result(client, run, cfg.epochs), None)
        return
    cfg = resolve_corruption_set(cfg)  # the study made the set before its trials: found, not made
    if study.get(WORKERS_KEY):  # data-parallel: its Ray Train workers train, log and report
        train_parallel(cfg, study, number)
        return
    logger = start_logger(cfg, study, tune.get_context().get_trial_id(), number, run)
    folder = Path(tempfile.mkdtemp(prefix="mollify-trial-"))
    restore_checkpoint(folder, study, number, cfg)

    def report(metrics: dict[str, float], checkpoint: Path | None) -> None:
        logger.report(metrics, checkpoint)
        if metrics["epoch"] < cfg.epochs:  # the last one goes to Ray once the run is complete, below
            report_to_ray(metrics, checkpoint)

    try:
        result = run_trial(cfg, report=report, checkpoint_dir=folder)
        logger.finish(result)
        report_to_ray(result.history[-1], folder)
    except SystemExit:  # tune.report: the scheduler stopped this trial (the driver closes its run)
        raise
    except BaseException as err:
        logger.fail(err)
        raise
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def report_to_ray(metrics: dict[str, float], checkpoint: Path | None) -> None:
    """Ray copies the checkpoint folder into the study's storage before this returns."""
    tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(checkpoint)) if checkpoint else None)
