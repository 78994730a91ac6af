"""What a launch checks and claims before Ray starts a trial, so that a mistake fails in seconds, in
one line, and leaves nothing behind: the study's name (a safe one, claimed atomically), the MLflow
and Optuna stores (reachable, created once under a lock), the cluster's resources, the datasets
(prepared once, here, for every trial).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import ray
import sqlalchemy
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from contract import KIND_TAG
from study.record import RECORD_FILE, StudyRecord, safe_uri
from study.spec import StudySpec
from trainables.config import TrialConfig
from trainables.corruptions.provision import check_corrupted_set
from trainables.data import (CIFAR_CLASSES, DatasetError, DatasetNotFoundError, check_holdout, class_counts,
                             prepare_dataset)

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
PROBE_TIMEOUT_S = 5
DRIVER_LOCK = "driver.lock"  # held by the process driving the study (launch or resume)


class StudyError(RuntimeError):
    """A study that cannot be launched or resumed as asked; the message says why and what to do."""


class StoreGoneError(StudyError):
    """A store the study was recorded in is gone or deleted: the environment, not the command, is at
    fault (its own exit code, study/__main__.py)."""


def check_name(name: str) -> None:
    """Study names become folders, MLflow experiments and Optuna studies: letters, digits, '.',
    '_' and '-' only, so that no name reaches outside the runs folder (`../x`) or clashes in a URL."""
    if not NAME.fullmatch(name) or name in (".", ".."):
        raise StudyError(f"study name {name!r}: use letters, digits, '.', '_' and '-' (at most 100, "
                         "starting with a letter or digit)")


# --- locks and the claim ---------------------------------------------------------------------------

@contextlib.contextmanager
def file_lock(path: Path, *, blocking: bool = True) -> Iterator[bool]:
    """An exclusive lock on `path` (created if missing) for the block; yields whether it was taken
    (always, when blocking). An flock: the kernel releases it when its process dies."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def driver_running(folder: Path) -> bool:
    """Whether a process drives the study in `folder` now (holds its driver lock)."""
    if not (folder / DRIVER_LOCK).exists():
        return False
    with file_lock(folder / DRIVER_LOCK, blocking=False) as taken:
        return not taken


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Serialise the first use of a SQLite store: MLflow and Optuna create their tables on first
    contact, and two launches doing it at once fail ('duplicate column name'). Servers need none."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    with file_lock(Path(uri.removeprefix("sqlite:///") + ".lock")):
        yield


@contextlib.contextmanager
def claim(folder: Path, record: StudyRecord) -> Iterator[None]:
    """Claim study `record.name` by writing its record, whole and only if none exists (two launches
    of one name: one wins, the other is refused). If the block fails before the launch recorded its
    parent run, what the claim created is removed again (the folder, and the runs folder if this
    claim made it), so a refused launch leaves nothing behind."""
    made = [p for p in (folder.parent, folder) if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    try:
        taken = record.claim(folder)
    except OSError:  # a full disk, a read-only folder: leave nothing
        remove_made(made, folder)
        raise
    if not taken:
        raise StudyError(f"study {record.name!r} exists in {folder} (or is being launched): `python -m study resume "
                         f"{record.name}` continues it, or choose another --name")
    try:
        yield
    except BaseException:
        if StudyRecord.read(folder).parent_run_id is None:  # claimed, nothing recorded elsewhere
            (folder / RECORD_FILE).unlink()
            remove_made(made, folder)
        raise


def remove_made(made: list[Path], folder: Path) -> None:
    """Remove what a claim made: the study's folder, then the runs folder if it is empty now."""
    for path in reversed(made):
        if path == folder or not any(path.iterdir()):
            shutil.rmtree(path, ignore_errors=True)


# --- the stores ------------------------------------------------------------------------------------

def _writable_sqlite(uri: str, what: str) -> None:
    path = Path(uri.removeprefix("sqlite:///"))
    folder = path.parent
    if folder.exists() and not os.access(folder, os.W_OK) or path.exists() and not os.access(path, os.W_OK):
        raise StudyError(f"the {what} {uri} is not writable; pass another one")


def probe_tracking(uri: str) -> None:
    """The MLflow tracking store answers within seconds (a server's /health) and accepts the
    environment's credentials, or is a writable file."""
    if uri.startswith("sqlite:///"):
        return _writable_sqlite(uri, "MLflow store")
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(f"{safe_uri(uri).rstrip('/')}/health", timeout=PROBE_TIMEOUT_S):
            pass
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise StudyError(f"the MLflow server {safe_uri(uri)} does not answer within {PROBE_TIMEOUT_S} s ({reason}); "
                         "start it or pass another --tracking-uri") from None
    try:  # /health needs no credentials: ask for something that does
        MlflowClient(uri).search_experiments(max_results=1)
    except MlflowException as err:
        if unauthenticated(err):
            raise unauthenticated_error(uri) from None
        raise


def unauthenticated(err: BaseException) -> bool:
    """Whether an MLflow server refused a request for want of (valid) credentials."""
    return isinstance(err, MlflowException) and err.get_http_status_code() == 401


def unauthenticated_error(uri: str = "") -> StudyError:
    """What to do about a 401. A study's record holds no credentials: they come from the
    environment, at launch (or the URL's, moved there: study/stores.py) as on `resume`."""
    server = f"the MLflow server {safe_uri(uri)}" if uri else "the MLflow server"
    return StudyError(f"{server} refused the request (401 unauthenticated): set MLFLOW_TRACKING_USERNAME and "
                      "MLFLOW_TRACKING_PASSWORD in the environment")


def probe_storage(url: str) -> None:
    """The Optuna storage accepts a connection within seconds, or is a writable file."""
    if url.startswith("sqlite:///"):
        return _writable_sqlite(url, "Optuna storage")
    args = {"connect_timeout": PROBE_TIMEOUT_S} if url.startswith("postgresql") else {}
    try:
        engine = sqlalchemy.create_engine(url, connect_args=args)
        with engine.connect():
            pass
        engine.dispose()
    except Exception as err:  # the drivers raise their own kinds: any failure means no storage
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise StudyError(f"the Optuna storage {safe_uri(url)} cannot be reached ({first}); pass another --storage") \
            from None


def check_experiment_free(client: MlflowClient, name: str) -> None:
    """One study per MLflow experiment: the same name launched from another runs folder would
    merge two studies into one experiment."""
    found = client.get_experiment_by_name(name)
    if found is None:
        return
    parents = client.search_runs([found.experiment_id], filter_string=f"tags.`{KIND_TAG}` = 'study'", max_results=1)
    if parents:
        raise StudyError(f"the MLflow experiment {name!r} at {safe_uri(client.tracking_uri)} already holds a study "
                         f"(parent run {parents[0].info.run_id}, perhaps launched from another --runs-dir); "
                         "choose another --name")


# --- the cluster and the data -------------------------------------------------------------------------

def check_resources(spec: StudySpec) -> None:
    """A trial asking for more than the whole cluster has would wait forever: fail now, saying
    what there is. A data-parallel trial asks for all its workers' CPUs and GPUs at once."""
    have = ray.cluster_resources()
    cpus, gpus = have.get("CPU", 0.0), have.get("GPU", 0.0)
    if spec.gpus <= gpus and spec.cpus <= cpus:
        return
    if spec.resources.workers:
        r = spec.resources
        raise StudyError(f"each trial asks for {r.workers} workers of {r.cpus_per_worker:g} CPU and "
                         f"{r.gpus_per_worker:g} GPU ({spec.cpus:g} CPU and {spec.gpus:g} GPU), but the Ray cluster "
                         f"has {cpus:g} CPU and {gpus:g} GPU in all; use fewer resources.workers or less per worker")
    raise StudyError(f"each trial asks for {spec.cpus:g} CPU and {spec.gpus:g} GPU, but the Ray cluster has "
                     f"{cpus:g} CPU and {gpus:g} GPU in all; use --cpus-per-trial / --gpus-per-trial within that")


def datasets(spec: StudySpec) -> list[tuple[str, str]]:
    """The (dataset, data_root) pairs the study's trials read: its grid's, or its search's fixed
    values and searched choices."""
    return sorted({(c.dataset, c.data_root) for c in map(TrialConfig.from_dict, spec.search.configs())})


# CIFAR is downloaded on first use; without a network the Makefile runs the quickstart on the
# Tiny ImageNet images the machine already has.
OFFLINE_HINT = "; without a network, `make quickstart-offline` runs the quickstart on Tiny ImageNet"


def prepare_data(spec: StudySpec) -> None:
    """Download or find every dataset the trials read, once, here (see trainables.data.prepare_dataset),
    check that the data can serve every trial's validation split (`check_holdouts`) and that an
    official or generated corrupted set holds every cell a trial is scored on (not found missing
    after the trials trained)."""
    for name, root in datasets(spec):
        try:
            prepare_dataset(name, root)
        except DatasetNotFoundError as err:  # one line: where the files must be, where they come from
            raise StudyError(f"{err}{OFFLINE_HINT if name in CIFAR_CLASSES else ''}") from None
    check_holdouts(spec)
    for cfg in map(TrialConfig.from_dict, spec.search.configs()):
        try:
            check_corrupted_set(cfg)
        except FileNotFoundError as err:
            raise StudyError(str(err)) from None


def check_holdouts(spec: StudySpec) -> None:
    """Each trial holds `valid_per_class` training images of every class out (trainables/splits.py);
    a class left with none would fail every trial, one after another. Count the classes here instead,
    once per dataset and class subset, as the loader would load them (none decoded), and check the
    largest valid_per_class of the configurations the study can run against them."""
    largest: dict[tuple, int] = {}
    for cfg in map(TrialConfig.from_dict, spec.search.configs()):
        key = (cfg.dataset, cfg.data_root, cfg.num_classes, cfg.train_size)
        largest[key] = max(largest.get(key, 0), cfg.valid_per_class)
    for (name, root, num_classes, train_size), per_class in largest.items():
        if not per_class:
            continue
        try:
            counts = class_counts(name, root, "train", num_classes=num_classes, synthetic_size=train_size)
        except (DatasetError, DatasetNotFoundError) as err:  # e.g. more classes asked for than it has
            raise StudyError(str(err).splitlines()[0]) from None
        try:
            check_holdout(counts, per_class)
        except ValueError as err:
            raise StudyError(f"valid_per_class {per_class} on {name} ({root}): {err}") from None
