"""A data-parallel trial (`resources: {workers: W, ...}`): the Tune trial launches a Ray Train run
of W workers (`TorchTrainer`: one process each, a torch process group over gloo on CPU or NCCL
on CUDA, set up by Ray Train) and relays what its rank 0 reports to Tune.

- The Tune trial holds no resources of its own: it only waits on the run's controller. The
  workers' bundles are the trial's cost (`StudySpec.cpus`), and the study runs as many trials at
  once as their workers fit (`trials_that_fit`), so that no trial waits for workers it cannot get.
- Each worker runs `trainables.run_trial` on its part of every global batch. Rank 0 finds or
  continues the trial's one MLflow run (as a single-process trial does, by its number), logs each
  epoch, writes the checkpoint and reports it (`ray.train.report`); the other ranks report their
  metrics with no checkpoint. `TuneReportCallback` passes rank 0's metrics on to Tune (Optuna,
  ASHA, `study status`); the last epoch only once rank 0 has completed the run (`logger.finish`).
- A worker that dies: Ray Train restarts the whole group (`FailureConfig(max_failures)`, the
  study's `max_failures`: the same number of retries a single-process trial gets) from the newest
  reported checkpoint (`ray.train.get_checkpoint()`), into the same MLflow run; an epoch logged
  before its checkpoint was kept is not logged again (`MlflowTrialLogger.report`).
- A driver that dies: the resumed study's new Ray trial starts a new Train run, whose rank 0 finds
  the kept checkpoint in the dead Train run's folder inside the dead trial's folder
  (`study.reconcile.find_checkpoint`) and every worker continues from it (`resume_from`).
"""

from __future__ import annotations

import math
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

import ray
import ray.train
from mlflow.tracking import MlflowClient
from ray import tune
from ray.train.torch import TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback

from study.reconcile import TRAIN_RUN_PREFIX, final_result, find_checkpoint, run_state
from study.spec import Resources
from trainables.config import TrialConfig
from trainables.distributed import Workers
from trainables.train import run_trial

WORKERS_KEY = "workers"  # the study context's entry for a data-parallel study: how to scale each trial


def worker_context(resources: Resources, max_failures: int) -> dict[str, Any] | None:
    """What each trial needs to launch its workers (in the study context), None for a
    single-process study."""
    if not resources.workers:
        return None
    return {"workers": resources.workers, "cpus": resources.cpus_per_worker, "gpus": resources.gpus_per_worker,
            "max_failures": max_failures}


def trials_that_fit(resources: Resources, cluster: dict[str, float]) -> int:
    """How many data-parallel trials the cluster runs at once: Tune would otherwise start every
    trial (each holds nothing itself) and leave their Train runs waiting for workers."""
    fits = [cluster.get("CPU", 0.0) / resources.total_cpus]
    if resources.total_gpus:
        fits.append(cluster.get("GPU", 0.0) / resources.total_gpus)
    return max(1, math.floor(min(fits) + 1e-9))


def train_parallel(cfg: TrialConfig, study: dict[str, Any], number: int) -> None:
    """Run trial `number` as a Ray Train run from inside its Tune trial; returns when it ended."""
    scale = study[WORKERS_KEY]
    per_worker = {"CPU": scale["cpus"], **({"GPU": scale["gpus"]} if scale["gpus"] else {})}
    context = tune.get_context()
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"config": cfg.to_dict(), "study": study, "number": number,
                           "trial_id": context.get_trial_id()},
        scaling_config=ray.train.ScalingConfig(num_workers=scale["workers"], use_gpu=bool(scale["gpus"]),
                                               resources_per_worker=per_worker),
        run_config=ray.train.RunConfig(
            # A fresh name per attempt: a retried Tune trial starts its own Train run, from the
            # newest checkpoint of any earlier one (`restore_point`), not Ray's record of a failed run.
            name=f"{TRAIN_RUN_PREFIX}{uuid.uuid4().hex[:8]}", storage_path=trial_storage(study, context.get_trial_id()),
            failure_config=ray.train.FailureConfig(max_failures=scale["max_failures"]),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
            callbacks=[TuneReportCallback()]),
    )  # no `resume_from_checkpoint` (Ray Train V2 refuses it): each group start looks itself (`resume_from`)
    try:
        trainer.fit()
    except ray.train.TrainingFailedError as err:  # its retries spent: the run says why, then Tune retries
        record_failure(study, number, err)
        raise


def record_failure(study: dict[str, Any], number: int, err: Exception) -> None:
    """End the trial's run FAILED, saying why (rank 0's error when it failed, else the first
    worker's), once Ray Train has given up on the group. The workers themselves leave the run
    open: a worker that fails while Ray Train restarts the group (an error from its peers' dying
    collective, a moment after the new group reopened the run) would otherwise end a run that
    is still going on."""
    from study.trainable import existing_run, mark_failed  # noqa: PLC0415 (study.trainable imports this module)

    client = MlflowClient(study["tracking_uri"])
    run = existing_run(client, study["name"], number)
    if run is None or run_state(run) in ("finished", "stopped"):
        return  # a finished record is never modified
    failures = getattr(err, "worker_failures", {}) or {}
    cause = failures.get(0) or next(iter(failures.values()), None) or err
    while getattr(cause, "cause", None) is not None:  # Ray wraps a worker's own exception
        cause = cause.cause
    why = (str(cause).strip().splitlines() or [""])[0][:500]
    mark_failed(client, run.info.run_id, f"{type(cause).__name__}: {why}")


def trial_storage(study: dict[str, Any], trial_id: str) -> str:
    """The Ray trial's folder in the study's storage (`study.tuning.trial_dirname`), where a resumed
    driver looks for checkpoints: not `get_trial_dir()`, a local staging folder Tune copies there
    only when the trial reports, which would leave the newest checkpoints behind."""
    return str(Path(study["experiment_dir"]) / f"trial_{trial_id}")


def restore_point(study: dict[str, Any], number: int, cfg: TrialConfig) -> ray.train.Checkpoint | None:
    """The newest checkpoint any Train run of trial `number` kept (an earlier attempt's, or a dead
    driver's trial's), to start this run from."""
    kept = find_checkpoint(Path(study["experiment_dir"]), number, cfg.to_dict()) if "experiment_dir" in study else None
    return ray.train.Checkpoint.from_directory(str(kept)) if kept is not None else None


# --- on each worker --------------------------------------------------------------------------------

def train_worker(loop: dict[str, Any]) -> None:
    """One worker of the trial's Train run (every start of the group runs it again, from the
    newest checkpoint)."""
    from study.trainable import existing_run, start_logger  # noqa: PLC0415 (study.trainable imports this module)

    cfg, study, number = TrialConfig.from_dict(loop["config"]), loop["study"], loop["number"]
    workers = Workers.current()
    run = existing_run(MlflowClient(study["tracking_uri"]), study["name"], number) if workers.main else None
    # A run rank 0 completed just before the group was lost: tell Tune how it ended; a finished
    # record is never modified. Every rank must agree, as every rank reports.
    if workers.share(run is not None and run_state(run) in ("finished", "stopped")):
        client = MlflowClient(study["tracking_uri"])
        ray.train.report(final_result(client, run, cfg.epochs) if workers.main else {"epoch": float(cfg.epochs)})
        return
    logger = start_logger(cfg, study, loop["trial_id"], number, run) if workers.main else None
    folder = Path(tempfile.mkdtemp(prefix="mollify-worker-"))
    checkpoint = resume_from(study, number, cfg, workers)
    if checkpoint is not None:
        checkpoint.to_directory(str(folder))

    def report(metrics: dict[str, float], saved: Path | None) -> None:
        if logger is not None:
            logger.report(metrics, saved)
        if metrics["epoch"] < cfg.epochs:  # the last one goes to Ray once the run is complete, below
            report_to_train(metrics, saved)

    try:  # a failure leaves the run open: Ray Train restarts the group, or ends it (`record_failure`)
        result = run_trial(cfg, report=report, checkpoint_dir=folder, workers=workers)
        if logger is not None:
            logger.finish(result)
        report_to_train(result.history[-1], folder if workers.main else None)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def resume_from(study: dict[str, Any], number: int, cfg: TrialConfig,
                workers: Workers) -> ray.train.Checkpoint | None:
    """The newest checkpoint kept for the trial, the same on every worker (rank 0 looks, and says
    which): Ray Train's (`get_checkpoint`) lags behind what reached storage, as its controller takes
    in one report per poll, so a group restarted right after a few quick epochs would redo them."""
    kept = workers.share(restore_point(study, number, cfg) if workers.main else None)
    return kept or ray.train.get_checkpoint()


def report_to_train(metrics: dict[str, float], checkpoint: Path | None) -> None:
    """A barrier of all workers: Ray copies rank 0's checkpoint folder into the run's storage
    before it returns (rank 0's metrics go with it to Tune)."""
    ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(checkpoint)) if checkpoint else None)
