"""Measure what one trial shape costs on the local device: a few training steps and one evaluation
batch of each kind, run through the trial's own functions (trainables.train), so that `study
estimate` (study/estimate.py) extrapolates measured seconds, not guesses. Cached per shape, device
and torch version under ~/.cache/mollify-lab/estimates/ ($XDG_CACHE_HOME respected).

It drives the trial's own parts: trainables.train's loop pieces (load_splits, steps_per_epoch,
build_state, train_epoch, the evaluations), trainables.batches and trainables.splits.first.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from trainables.config import TrialConfig
from trainables.data import load_dataset, split_validation
from trainables.corruptions.provision import resolve_corruption_set
from trainables.pipeline import resolve_device
from trainables.batches import Batches
from trainables.losses import create_loss
from trainables.splits import first
from trainables.train import (TrainState, TrialDivergedError, build_state, evaluate_clean, evaluate_corrupted,
                              evaluate_validation, load_splits, steps_per_epoch, train_epoch)

CACHE_SCHEMA = 2
# Config keys that change what a trial computes but not what it costs: trials differing only in
# these are one shape. Mollification draws noise and blur for the whole batch and selects per image
# (trainables.mollify), so its roles and amounts cost the same; epochs and eval_every are
# extrapolated, not measured.
COST_FREE = ("seed", "lr", "momentum", "weight_decay", "alpha", "beta", "npow", "bpow", "smooth_labels",
             "label_mode", "roles", "sigma_min", "sigma_max", "jsd_weight", "valid_seed", "epochs", "eval_every",
             "loss")
CALIBRATION_IMAGES = 64  # test images through the corruption grid, validation images through theirs
# The official sizes, for a dataset not on this machine yet: (training images per class, test images
# per class, classes, native image size). Calibrated then on synthetic images of that size.
# ImageNet's classes hold 732 to 1,300 training images (1,281,167 in all): 1,281 a class is the total.
OFFICIAL_SIZES = {"cifar10": (5000, 1000, 10, 32), "cifar100": (500, 100, 100, 32), "tinyimagenet": (500, 50, 200, 64),
                  "imagenet": (1281, 50, 1000, 224)}
STAND_IN_TRAIN = 2048  # synthetic training images to time steps on (what is timed does not depend on the count)


@dataclass(frozen=True)
class Settings:
    """How hard to measure: steps per repeat, repeats, warm-up steps."""

    steps: int = 5
    repeats: int = 3
    warmup: int = 2
    budget_s: float = 30.0  # fewer timed steps per repeat when they would take longer (a large model on a CPU)


@dataclass(frozen=True)
class Calibration:
    """Seconds measured for one shape on one device, and the sizes they scale with."""

    device: str
    threads: int
    load_s: float  # loading the splits and building the model, once per trial
    warmup_s: float  # the first steps' cost beyond the steady one (cuDNN autotuning, torch.compile)
    step_s: tuple[float, ...]  # seconds per training step, one figure per timed repeat
    checkpoint_s: float  # writing one checkpoint
    clean_image_s: float  # one clean test (or validation) image evaluated
    valid_image_s: float  # one validation image under the 4 extra corruptions x 5 severities
    grid_image_s: float  # one test image through every cell of the corruption grid
    generate_image_s: float  # making an `auto` set that does not exist yet, per test image; 0: it exists
    grid_source: str  # on_the_fly, official, generated, none (auto resolved)
    n_train: int
    n_valid: int
    n_valid_corrupt: int
    n_test: int
    n_test_full: int  # the whole test split (what a generated set is made from)
    n_grid: int  # test images per corruption cell
    cells: int
    steps_per_epoch: int
    measured_s: float  # how long this calibration took
    stand_in: str = ""  # non-empty: the data was not here; what was timed instead

    @property
    def step_median(self) -> float:
        return statistics.median(self.step_s)


def shape_key(values: dict[str, Any]) -> dict[str, Any]:
    """The cost-relevant part of a trial's config (every default spelled out)."""
    full = TrialConfig.from_dict(values).to_dict()
    return {k: v for k, v in sorted(full.items()) if k not in COST_FREE}


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mollify-lab" / "estimates"


def cache_file(shape: dict[str, Any], device: str, threads: int, settings: Settings) -> Path:
    ident = json.dumps({"schema": CACHE_SCHEMA, "shape": shape, "device": device, "threads": threads,
                        "torch": torch.__version__, "settings": dataclasses.asdict(settings)}, sort_keys=True)
    return cache_dir() / f"{hashlib.sha256(ident.encode()).hexdigest()[:20]}.json"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return "cpu"


def calibrate(values: dict[str, Any], *, threads: int, settings: Settings = Settings(),
              use_cache: bool = True) -> tuple[Calibration, bool]:
    """The calibration of the shape of the trial config `values`, and whether it came from the cache."""
    shape = shape_key(values)
    device = resolve_device(shape["device"])
    path = cache_file(shape, device_name(device), threads, settings)
    if use_cache and path.is_file():
        data = json.loads(path.read_text())
        return Calibration(**{**data, "step_s": tuple(data["step_s"])}), True
    with torch_threads(threads if device.type == "cpu" else None):
        cal = measure(TrialConfig.from_dict(values).replace(device=str(device)), settings, threads)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(dataclasses.asdict(cal), indent=1))
    os.replace(tmp, path)
    return cal, False


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """CPU trials run with as many threads as CPUs they hold (Ray sets OMP_NUM_THREADS so)."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# --- the measurements ------------------------------------------------------------------------------

class _WouldGenerate(Exception):
    """Raised from resolve_corruption_set's progress line before it starts making a set."""


def resolve_grid(cfg: TrialConfig) -> tuple[TrialConfig, bool]:
    """`cfg` with an `auto` corrupted set made concrete when it exists; else on the fly for timing,
    and True: the study will make the set first."""
    if cfg.corruption_source != "auto":
        return cfg, False

    def refuse(line: str) -> None:
        if "generating" in line:
            raise _WouldGenerate

    try:
        return resolve_corruption_set(cfg, progress=refuse), False
    except _WouldGenerate:
        return cfg.replace(corruption_source="on_the_fly", corruption_path=None), True


def timed(fn, *args: Any) -> tuple[float, Any]:
    sync()
    start = time.perf_counter()
    out = fn(*args)
    sync()
    return time.perf_counter() - start, out


def sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def measure(cfg: TrialConfig, settings: Settings, threads: int) -> Calibration:
    began = time.perf_counter()
    cfg, generates = resolve_grid(cfg)
    device = resolve_device(cfg.device)
    start = time.perf_counter()
    train, valid, test_full, counts, stand_in = load_or_stand_in(cfg, device)
    test = first(test_full, cfg.limit_eval_images)
    steps = steps_per_epoch(cfg, counts["train"])
    state = build_state(cfg, train.num_classes, steps * cfg.epochs, device)
    net = torch.compile(state.model) if cfg.compile else state.model
    load_s = time.perf_counter() - start
    warm_s = run_steps(cfg, state, net, train, settings.warmup)
    per_step = warm_s / max(settings.warmup, 1)
    timed_steps = max(1, min(settings.steps, int(settings.budget_s / settings.repeats / max(per_step, 1e-9))))
    step_s = tuple(run_steps(cfg, state, net, train, timed_steps) / timed_steps for _ in range(settings.repeats))
    checkpoint_s = time_checkpoint(state)
    clean_s = per_image(lambda s: evaluate_clean(cfg, state.model, s), test, cfg.eval_batch_size)
    valid_image_s, n_valid_corrupt = 0.0, 0
    if valid is not None:
        n_valid_corrupt = min(cfg.valid_corrupt_images or counts["valid"], counts["valid"])
        part = first(valid, min(CALIBRATION_IMAGES, n_valid_corrupt, len(valid)))
        t, _ = timed(evaluate_validation, cfg.replace(valid_corrupt_images=len(part)), state.model, part)
        valid_image_s = max(t / len(part) - clean_s, 0.0)  # the clean pass is counted per image apart
    n_test = min(cfg.limit_eval_images or counts["test"], counts["test"])
    grid_image_s, generate_image_s, n_grid, cells = grid_costs(cfg, state, test, clean_s, generates)
    if stand_in:
        n_grid = min(cfg.limit_corrupt_images or n_test, n_test) if cells else 0
    return Calibration(
        device=device_name(device), threads=threads, load_s=load_s,
        warmup_s=max(warm_s - settings.warmup * statistics.median(step_s), 0.0), step_s=step_s,
        checkpoint_s=checkpoint_s, clean_image_s=clean_s, valid_image_s=valid_image_s, grid_image_s=grid_image_s,
        generate_image_s=generate_image_s, grid_source=cfg.corruption_source, n_train=counts["train"],
        n_valid=counts["valid"], n_valid_corrupt=n_valid_corrupt, n_test=n_test, n_test_full=counts["test"],
        n_grid=n_grid, cells=cells, steps_per_epoch=steps, measured_s=time.perf_counter() - began, stand_in=stand_in)


def load_or_stand_in(cfg: TrialConfig, device: torch.device):
    """(train, validation or None, the whole test split, their real sizes, a note): the trial's own
    data when it is here; else synthetic images of the dataset's official size and classes, the
    sizes then the official ones, and the note says so."""
    try:
        train, valid, test = load_splits(cfg.replace(limit_eval_images=None), device)
        counts = {"train": len(train), "valid": len(valid) if valid is not None else 0, "test": len(test)}
        return train, valid, test, counts, ""
    except FileNotFoundError:
        if cfg.dataset not in OFFICIAL_SIZES:
            raise
    per_train, per_test, all_classes, native = OFFICIAL_SIZES[cfg.dataset]
    classes, size = cfg.num_classes or all_classes, cfg.image_size or native
    made = lambda split, n: load_dataset("synthetic", "", split, num_classes=classes, image_size=size, device=device,
                                         synthetic_size=n)
    train = made("train", max(STAND_IN_TRAIN, cfg.batch_size, 2 * classes * (cfg.valid_per_class + 1)))
    valid = None
    if cfg.valid_per_class:
        train, valid = split_validation(train, min(cfg.valid_per_class, len(train) // (2 * classes)), cfg.valid_seed)
    test = made("test", min(per_test * classes, 2 * cfg.eval_batch_size))
    n_valid = cfg.valid_per_class * classes
    counts = {"train": per_train * classes - n_valid, "valid": n_valid, "test": per_test * classes}
    note = (f"{cfg.dataset} is not under {cfg.data_root}: timed on synthetic {size} px images, sizes taken as the "
            f"official {counts['train'] + n_valid:,} training and {counts['test']:,} test images of {classes} classes")
    return train, valid, test, counts, note


def run_steps(cfg: TrialConfig, state: TrainState, net: torch.nn.Module, train: Any, steps: int) -> float:
    """Seconds for `steps` training steps (train_epoch ends on its one host sync); a diverged loss
    still took its time."""
    batches, loss_fn = Batches.for_trial(cfg), create_loss(cfg.loss)  # built once a trial, as the loop does
    sync()
    start = time.perf_counter()
    with contextlib.suppress(TrialDivergedError):
        train_epoch(cfg, state, net, train, steps, batches, loss_fn)
    sync()
    return time.perf_counter() - start


def time_checkpoint(state: TrainState) -> float:
    with tempfile.TemporaryDirectory(prefix="mollify-estimate-") as tmp:
        start = time.perf_counter()
        state.save(Path(tmp))
        return time.perf_counter() - start


def per_image(evaluate, images: Any, batch: int) -> float:
    """Seconds per image of `evaluate` on one evaluation batch (the second call: the first warms)."""
    part = first(images, min(batch, len(images)))
    evaluate(part)
    t, _ = timed(evaluate, part)
    return t / len(part)


def grid_costs(cfg: TrialConfig, state: TrainState, test: Any, clean_s: float,
               generates: bool) -> tuple[float, float, int, int]:
    """(seconds per test image through every cell, seconds per image of making an `auto` set,
    images per cell, cells). On the fly: measured on a few images through every cell (corruptions
    differ a lot in cost). From files (official or generated sets): one whole cell read and
    evaluated, times the cells; a set the study has yet to make: the forward passes only."""
    if cfg.corruption_source == "none":
        return 0.0, 0.0, 0, 0
    corruptions, severities = cfg.corruption_cells
    cells = len(corruptions) * len(severities)
    n_grid = min(cfg.limit_corrupt_images or len(test), len(test))
    if cfg.corruption_source != "on_the_fly":
        one = cfg.replace(corruptions=corruptions[0], severities=str(severities[0]))
        t, _ = timed(evaluate_corrupted, one, state.model, first(test, n_grid))
        return t / n_grid * cells, 0.0, n_grid, cells
    part = min(CALIBRATION_IMAGES, n_grid)
    t, _ = timed(evaluate_corrupted, cfg.replace(limit_corrupt_images=part), state.model, test)
    on_the_fly = t / part
    if generates:  # the study makes the set once (from the whole test split), then every trial reads it
        return clean_s * cells, max(on_the_fly - clean_s * cells, 0.0), n_grid, cells
    return on_the_fly, 0.0, n_grid, cells
