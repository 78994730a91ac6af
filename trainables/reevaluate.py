"""Evaluating a logged model again, without retraining, on another clean or corrupted set: the
official CIFAR-10-C once downloaded, another generated set, another folder of images in the
dataset's layout (`python -m trainables evaluate --run-id ID ...`).

The model comes from the run's MLflow model (`model/`, logged at the end of every trial), its
trial settings from the run's `config.yaml`. The results go into the same run under a prefix that
names the set, `eval/<set>/clean/error`, `eval/<set>/corrupt/error`, ..., so the training-time
figures are never touched, and a set already evaluated into a run is refused rather than logged
twice.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow.pytorch
import yaml
from mlflow.exceptions import MlflowException
from mlflow.models import Model
from mlflow.tracking import MlflowClient

from trainables.config import TrialConfig
from trainables.corruptions.provision import resolve_corruption_set
from trainables.data import ImageSet, prepare_dataset
from trainables.evaluation import evaluate_clean, evaluate_corrupted
from trainables.pipeline import resolve_device
from trainables.splits import load_test_split
from trainables.tracking import MODEL_ARTIFACT, log_metrics, resolve_tracking_uri

EVAL_PREFIX = "eval"
EVAL_TAG = "mollify.eval."  # + set name: what was evaluated, as JSON
LABEL_LIMIT = 100  # MLflow keys hold 250 characters; eval/<set>/corrupt/<corruption>/s<k>/<metric> adds ~50


class EvaluateError(ValueError):
    """A logged model that cannot be evaluated as asked; the message says why."""


@dataclass(frozen=True)
class EvaluateRequest:
    run_id: str
    tracking_uri: str | None = None
    corruption_source: str | None = None  # None: the trial's own
    corruption_path: str | None = None
    data_root: str | None = None  # None: the trial's own
    protocol: str | None = None  # corruption protocol (cifar, tinyimagenet, imagenet); None: the trial's own
    name: str | None = None  # the set's name in the metric prefix; None: from the source and folders
    device: str = "auto"


def evaluate_logged_model(req: EvaluateRequest) -> tuple[str, dict[str, float]]:
    """Evaluate the run's model on the set `req` names and log the results into the run;
    returns (set name, metrics as logged)."""
    client = MlflowClient(resolve_tracking_uri(req.tracking_uri))
    run = _get_run(client, req.run_id)
    cfg = _set_config(_trial_config(client, req.run_id), req)
    name = set_label(req.name or set_name(req))
    prefix = f"{EVAL_PREFIX}/{name}/"
    if any(key.startswith(prefix) for key in run.data.metrics):
        raise EvaluateError(f"run {req.run_id} already holds {prefix}* metrics; evaluate under another --name")
    with tempfile.TemporaryDirectory() as tmp:
        model, card = _load_model(client, req.run_id, Path(tmp))
    device = resolve_device(req.device)
    prepare_dataset(cfg.dataset, cfg.data_root)
    test = load_test_split(cfg, device, image_size=_side(card))
    _check_classes(card, test, cfg)
    cfg = resolve_corruption_set(cfg)
    model = model.to(device)
    clean, reliability = evaluate_clean(cfg, model, test)
    corrupted, _ = evaluate_corrupted(cfg, model, test)
    metrics = {prefix + key: value for key, value in (clean | corrupted).items()}
    _log(client, req.run_id, name, metrics, reliability, cfg)
    return name, metrics


def set_name(req: EvaluateRequest) -> str:
    """A readable name for the evaluated set: the clean folder (when another one is given) and
    the corrupted source with its folder, e.g. `official-CIFAR-10-C`."""
    parts = [_folder_name(req.data_root)] if req.data_root else []
    if req.corruption_source and req.corruption_path:
        parts.append(f"{req.corruption_source}-{_folder_name(req.corruption_path)}")
    elif req.corruption_source:
        parts.append(req.corruption_source)
    if req.protocol:
        parts.append(f"{req.protocol}-protocol")
    return "_".join(parts) or "again"


def _folder_name(path: str) -> str:
    return Path(path).expanduser().resolve().name  # `..` or `.` named by the folder they are


def set_label(name: str) -> str:
    """`name` as one segment of a metric key, a tag key and an artifact path, whatever a folder is
    called: accents dropped, any character but ASCII letters, digits, '_', '-' and '.' made '_',
    no '.', '_' or '-' at either end (so never '.' or '..', which MLflow refuses in a key), at most
    LABEL_LIMIT characters; 'set' when nothing is left."""
    bare = "".join(c for c in unicodedata.normalize("NFKD", name) if not unicodedata.combining(c))
    label = re.sub(r"[^A-Za-z0-9_.-]+", "_", bare).strip("._-")
    return label[:LABEL_LIMIT].rstrip("._-") or "set"


def _get_run(client: MlflowClient, run_id: str):
    try:
        return client.get_run(run_id)
    except MlflowException:
        raise EvaluateError(f"no MLflow run {run_id!r} in {client.tracking_uri}") from None


def _trial_config(client: MlflowClient, run_id: str) -> TrialConfig:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run_id, "config.yaml", tmp)
        except (MlflowException, OSError):
            raise EvaluateError(f"run {run_id} has no config.yaml: it is not a trial run") from None
        values = yaml.safe_load(Path(path).read_text())
    return TrialConfig.from_dict(values)


def _set_config(cfg: TrialConfig, req: EvaluateRequest) -> TrialConfig:
    """The trial's config with the evaluated set in place of its own."""
    changes: dict[str, Any] = {"device": req.device, "limit_eval_images": None, "limit_corrupt_images": None}
    if req.data_root:
        changes["data_root"] = req.data_root
    if req.corruption_source:
        changes["corruption_source"] = req.corruption_source
        changes["corruption_path"] = req.corruption_path
    if req.protocol:
        changes["corruption_protocol"] = req.protocol
        changes["corruption_table"] = None  # the protocol's table replaces the trial's
    return cfg.replace(**changes)


def _load_model(client: MlflowClient, run_id: str, tmp: Path):
    """The run's network (eval mode) and its model card (the MLflow model's metadata)."""
    if not client.list_artifacts(run_id, MODEL_ARTIFACT):
        raise EvaluateError(f"run {run_id} has no logged model ({MODEL_ARTIFACT}/): it ended before its last "
                            "epoch, or was trained before trials kept their models")
    local = client.download_artifacts(run_id, MODEL_ARTIFACT, str(tmp))
    return mlflow.pytorch.load_model(local, map_location="cpu").eval(), Model.load(local).metadata or {}


def _side(card: dict) -> int | None:
    size = card.get("image_size")
    return int(size[0]) if size else None


def _check_classes(card: dict, test: ImageSet, cfg: TrialConfig) -> None:
    """The evaluated set must name the model's classes in the model's order."""
    expected = card.get("classes")
    if expected is None or list(test.class_names) == list(expected):
        return
    differ = next((i for i, (a, b) in enumerate(zip(test.class_names, expected)) if a != b),
                  min(len(expected), len(test.class_names)))
    raise EvaluateError(
        f"the set in {cfg.data_root} does not have the model's classes: the model knows {len(expected)} "
        f"({', '.join(expected[:3])}, ...), the set {test.num_classes}; first difference at class {differ}")


def _log(client: MlflowClient, run_id: str, name: str, metrics: dict[str, float], reliability: dict,
         cfg: TrialConfig) -> None:
    log_metrics(client, run_id, metrics, step=0)
    client.log_dict(run_id, reliability, f"{EVAL_PREFIX}/{name}/reliability_clean.json")
    what = {"data_root": cfg.data_root, "corruption_source": cfg.corruption_source,
            "corruption_path": cfg.corruption_path, "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    client.set_tag(run_id, EVAL_TAG + name, json.dumps(what))
