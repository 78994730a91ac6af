"""MLflow logging of one trial: params (the config's knobs that act in it: `active_params`),
per-epoch metrics, final metrics, tags (git commit, seed), the whole config as `config.yaml`, the
corruption grid as a table and the final network as an MLflow model.

What is a metric and what an artifact (`contract.charted`): the per-epoch curves and the summaries
a researcher compares (clean and corrupted error/NLL/ECE, per group, per severity's error,
validation), about 37, are metrics, charted by the MLflow UI and read by `analysis`. The grid's
cells (`corrupt/<corruption>/s<k>/<metric>`: 75 cells x 4 metrics, one value each) go into one
table, `corrupt/cells.json` (`mlflow.log_table` format), from which `contract.summarize_cells`
rebuilds the per-corruption and per-severity means (a hundred one-point charts otherwise); the
validation's per-corruption means go into `valid/corrupt/corruptions.json` when the run
finishes, a row per evaluated epoch.

It uses an explicit `MlflowClient` bound to one tracking URI rather than MLflow's fluent API, whose
active run and tracking URI are process-wide state: a trial must not depend on, or change, what
else runs in its process. Default store: `sqlite:///<cwd>/mlflow.db`; `MLFLOW_TRACKING_URI`
overrides it, and an explicit URI overrides both; a relative SQLite file is taken from the working
directory and kept absolute.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import re
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterable, Mapping

import mlflow.pytorch
import pandas as pd
import torch
import torchvision
from mlflow.entities import Metric, Param, RunStatus
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from contract import (CELLS_ARTIFACT, CONFIG_ARTIFACT, GIT_COMMIT_TAG, MODEL_ARTIFACT,  # noqa: F401
                      PARENT_TAG, RELIABILITY_DIR, SEED_TAG, STATUS_TAG, VALID, VALID_TABLE, absolute_location,
                      charted, tracking_uri)
from trainables.config import TrialConfig, active_params
from trainables.evaluate import float32_digits

DEFAULT_EXPERIMENT = "mollify-lab"
BATCH_LIMIT = 1000  # MLflow's log_batch accepts at most 1000 metrics per call
EPOCH_KEY = "train/loss"  # logged once per epoch: its history tells which epochs a run holds
CELL = re.compile(r"^(?P<prefix>(?:.+/)?corrupt)/(?P<corruption>[a-z_]+)/s(?P<severity>\d+)/(?P<metric>\w+)$")
VALID_CORRUPTION = re.compile(rf"^{VALID}/corrupt/(?P<corruption>[a-z_]+)/(?P<metric>\w+)$")


def resolve_tracking_uri(uri: str | None = None) -> str:
    """`contract.tracking_uri` (explicit, else $MLFLOW_TRACKING_URI, else a SQLite file
    in the working directory), a relative SQLite file or folder made absolute against the working
    directory (what it names must not change if a later step runs elsewhere), with a SQLite
    file's folder created if missing (SQLite creates the file, not its folder)."""
    uri = absolute_location(tracking_uri(uri))
    ensure_sqlite_folder(uri)
    return uri


def ensure_sqlite_folder(uri: str) -> None:
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)


def git_commit() -> str:
    """The commit of the code that ran, or 'unknown' outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=10, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def ensure_experiment(client: MlflowClient, name: str) -> str:
    """The id of experiment `name`, created if missing. A SQLite store keeps artifacts in
    `mlartifacts/` beside its database file, so that moving the two together keeps the runs whole."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    uri = client.tracking_uri
    location = None
    if uri.startswith("sqlite:///"):
        location = (Path(uri.removeprefix("sqlite:///")).resolve().parent / "mlartifacts" / name).as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:  # created meanwhile by a concurrent trial
        return client.get_experiment_by_name(name).experiment_id


@contextlib.contextmanager
def _quiet(logger_name: str):
    """Raise a library logger to ERROR for the duration of a block."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _metrics(values: Mapping[str, float], step: int) -> list[Metric]:
    now = int(time.time() * 1000)
    return [Metric(key, value, now, step) for key, value in values.items() if key != "epoch"]


def split_cells(values: Mapping[str, float]) -> tuple[dict[str, float], dict[str, pd.DataFrame]]:
    """(the metrics that are not grid cells, {table artifact path: the cells as a table}): one
    row per (corruption, severity), one column per metric, per prefix (corrupt, eval/<set>/corrupt)."""
    rest: dict[str, float] = {}
    rows: dict[str, dict[tuple[str, int], dict[str, float]]] = {}
    for key, value in values.items():
        match = CELL.match(key)
        if match is None:
            rest[key] = value
            continue
        cell = rows.setdefault(match["prefix"], {}).setdefault((match["corruption"], int(match["severity"])), {})
        cell[match["metric"]] = value
    tables = {f"{prefix}/{CELLS_ARTIFACT}": pd.DataFrame([{"corruption": c, "severity": s, **m}
                                                         for (c, s), m in cells.items()])
              for prefix, cells in rows.items()}
    return rest, tables


def validation_table(history: list[Mapping[str, float]]) -> pd.DataFrame:
    """The validation's per-corruption means `valid/corrupt/<corruption>/<metric>` of every
    evaluated epoch: a row per epoch and extra corruption (empty without a validation split)."""
    rows: dict[tuple[int, str], dict[str, float]] = {}
    for metrics in history:
        for key, value in metrics.items():
            match = VALID_CORRUPTION.match(key)
            if match is not None:
                rows.setdefault((int(metrics["epoch"]), match["corruption"]), {})[match["metric"]] = value
    return pd.DataFrame([{"epoch": e, "corruption": c, **m} for (e, c), m in rows.items()])


def log_metrics(client: MlflowClient, run_id: str, values: Mapping[str, float], step: int,
                keep: frozenset[str] = frozenset()) -> None:
    """`values` into the run at `step`: the names `contract.charted` keeps, and those in `keep`
    (a study's objectives), as metrics in batches of MLflow's per-call limit (`epoch` left out);
    grid cells as one table per prefix (see the module docstring); the other summaries not at all
    (`contract.summarize_cells` rebuilds them from the cells; the validation's per-corruption
    means go into their table when the run finishes). One request per epoch: a table logged per
    epoch would cost five (MLflow appends by downloading and uploading it whole). Values are stored
    as their float32 digits (`float32_digits`, a no-op on what `run_trial` already rounded)."""
    values = float32_digits(values)
    rest, tables = split_cells(values)
    metrics = _metrics({k: v for k, v in values.items() if k in keep or k in rest and charted(k)}, step)
    for start in range(0, len(metrics), BATCH_LIMIT):
        client.log_batch(run_id, metrics=metrics[start : start + BATCH_LIMIT])
    for path, table in tables.items():
        log_table_once(client, run_id, table, path)


def log_table_once(client: MlflowClient, run_id: str, table: pd.DataFrame, path: str) -> None:
    """`table` as the run's artifact `path`, unless the run has it: MLflow's `log_table` appends to
    an existing table, so a trial restarted after logging its end (killed before its run was
    closed) would otherwise hold every row twice. What a run logs there at its end is the same
    each time (its cells, its checkpointed history)."""
    folder = path.rsplit("/", 1)[0] if "/" in path else None
    if any(item.path == path for item in client.list_artifacts(run_id, folder)):
        return
    client.log_table(run_id, data=table, artifact_file=path)


class FinishedRunError(ValueError):
    """Asked to continue a run that already finished."""


class MlflowTrialLogger:
    """One trial's MLflow run. `report` is the trial's per-epoch callback; `finish`, `fail` and
    `interrupt` end the run. Pass `run_id` to continue a run after a restart instead of starting a
    second one; `keep`: metric names kept as metrics though `contract.charted` puts them in a
    table (a study's objectives, which its status and Optuna read back from the run)."""

    def __init__(self, cfg: TrialConfig, *, experiment: str = DEFAULT_EXPERIMENT,
                 tracking_uri: str | None = None, run_name: str | None = None,
                 parent_run_id: str | None = None, run_id: str | None = None,
                 tags: Mapping[str, str] | None = None, refuse_finished: bool = False,
                 keep: Iterable[str] = ()) -> None:
        self.client = MlflowClient(resolve_tracking_uri(tracking_uri))
        self.keep = frozenset(keep)
        if run_id is not None and refuse_finished and self.client.get_run(run_id).info.status == "FINISHED":
            raise FinishedRunError(f"MLflow run {run_id} already finished; a finished record is never reopened "
                                   "(start a new trial without that --checkpoint-dir)")
        if run_id is not None:  # a restarted trial continues its run
            self.run_id = run_id
            self.logged_through = self._last_logged_epoch()
            self.client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
            return
        self.logged_through = 0
        all_tags = {SEED_TAG: str(cfg.seed), GIT_COMMIT_TAG: git_commit(),
                    **({PARENT_TAG: parent_run_id} if parent_run_id else {}), **(tags or {})}
        experiment_id = ensure_experiment(self.client, experiment)
        run = self.client.create_run(experiment_id, run_name=run_name, tags=all_tags)
        self.run_id = run.info.run_id
        # A knob left unset (None: "the image width", "no folder") is not a value: no 'None' strings.
        params = [Param(key, str(value)) for key, value in active_params(cfg).items() if value is not None]
        self.client.log_batch(self.run_id, params=params)
        self.client.log_dict(self.run_id, cfg.to_dict(), CONFIG_ARTIFACT)

    def log_metrics(self, values: Mapping[str, float], step: int) -> None:
        log_metrics(self.client, self.run_id, values, step, self.keep)

    def _last_logged_epoch(self) -> int:
        history = self.client.get_metric_history(self.run_id, EPOCH_KEY)
        return max((m.step for m in history), default=0)

    def report(self, metrics: Mapping[str, float], checkpoint: Path | None = None) -> None:
        """Log one epoch. An epoch already logged before a restart (the process died after logging
        it but before its checkpoint was kept) is not logged twice."""
        epoch = int(metrics["epoch"])
        if epoch <= self.logged_through:
            return
        self.log_metrics(metrics, step=epoch)
        self.logged_through = epoch

    def finish(self, result) -> None:
        """Log the final metrics not already logged at the last epoch, the reliability bins as
        JSON artifacts, and mark the run finished."""
        last = result.history[-1] if result.history else {}
        fresh = {k: v for k, v in result.metrics.items() if last.get(k) != v}
        self.log_metrics(fresh, step=int(last.get("epoch", 0)))
        validation = validation_table(result.history)
        if not validation.empty:
            log_table_once(self.client, self.run_id, validation, VALID_TABLE)
        for name, bins in result.reliability.items():
            self.client.log_dict(self.run_id, bins, f"{RELIABILITY_DIR}/{name}.json")
        if result.model is not None:
            self.log_model(result.model, result.model_card)
        self.client.set_tag(self.run_id, STATUS_TAG, "finished")
        self.client.set_terminated(self.run_id, RunStatus.to_string(RunStatus.FINISHED))

    def log_model(self, model: torch.nn.Module, card: Mapping) -> None:
        """The network as an MLflow model under `model/`, with `card` (classes, input size,
        normalisation) as its metadata and this package's code beside it, so that
        `mlflow.pytorch.load_model` rebuilds it without the repository. Pickled rather than
        exported (pt2): an exported graph fixes the batch size of its example input."""
        with tempfile.TemporaryDirectory() as tmp, _quiet("mlflow.pytorch"):  # its pickle warning, per trial
            path = Path(tmp) / MODEL_ARTIFACT
            mlflow.pytorch.save_model(
                copy.deepcopy(model).cpu().eval(), path, serialization_format="pickle", metadata=dict(card),
                code_paths=[str(Path(__file__).parent)],
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}",
                                  f"torchvision=={torchvision.__version__.split('+')[0]}"])
            self.client.log_artifacts(self.run_id, str(path), MODEL_ARTIFACT)

    def interrupt(self, how_to_continue: str) -> None:
        """End the run KILLED, not FAILED (stopped by Ctrl-C or SIGTERM, nothing went wrong), its
        `mollify.status` tag saying after which epoch and how to continue it."""
        status = f"interrupted after epoch {self.logged_through}; {how_to_continue}"
        self.client.set_tag(self.run_id, STATUS_TAG, status)
        self.client.set_terminated(self.run_id, RunStatus.to_string(RunStatus.KILLED))

    def fail(self, reason: BaseException | str | None = None) -> None:
        """End the run FAILED, saying why in its `mollify.status` tag (the error's first line)."""
        if reason is not None and str(reason).strip():
            why = str(reason).strip().splitlines()[0][:500]
            self.client.set_tag(self.run_id, STATUS_TAG, f"failed: {type(reason).__name__}: {why}"
                                if isinstance(reason, BaseException) else f"failed: {why}")
        self.client.set_terminated(self.run_id, RunStatus.to_string(RunStatus.FAILED))
