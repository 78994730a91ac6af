"""One trial: train a classifier with or without supervised mollification, evaluate it, report.

The training split lives on the device as uint8; each step draws a batch there, augments it as a
whole batch, normalises, mollifies, and takes one SGD step. Per-step statistics stay on the device
and are read once per epoch, so the loop never waits on the host. `run_trial` is a plain function
of the config and a `report(metrics, checkpoint)` callback: Ray sits outside it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contract import VALID, trial_metric_names, validation_metric_names  # noqa: F401
from trainables.augment import Augmentation, stages
from trainables.augment.registry import chain
from trainables.config import ConfigError, TrialConfig
from trainables.consistency import consistency_loss, mollify_views, three_views
from trainables.corruptions import evaluate_corruptions
from trainables.corruptions.provision import resolve_corruption_set
from trainables.data import ImageSet, load_dataset, split_validation
from trainables.evaluate import METRICS, classification_metrics, float32_digits, predict_logits, reliability_bins
from trainables.losses import create_loss
from trainables.models import create_model
from trainables.mollify import mollify
from trainables.pipeline import autocast, normalize, resolve_device, to_unit

CHECKPOINT_FILE = "checkpoint.pt"
# Settings that change where or how fast a trial runs, not what it computes: a checkpoint made with
# other values of these continues as the same trial.
RESUMABLE_CHANGES = ("device", "eval_batch_size", "data_root", "corruption_path", "compile")


class CheckpointError(ValueError):
    """A checkpoint that cannot be continued: unreadable, or made with another configuration."""


class TrialDivergedError(RuntimeError):
    """The training loss became NaN or infinite: the trial failed, and has no score."""
Report = Callable[[dict[str, float], "Path | None"], None]
FINAL_PREFIXES = ("clean/", "corrupt/", "train/", f"{VALID}/")


@dataclass
class TrialResult:
    metrics: dict[str, float]  # final metrics, named as MLflow stores them (clean/error, valid/error, ...)
    history: list[dict[str, float]] = field(default_factory=list)  # one entry per epoch
    reliability: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # per eval set
    model: nn.Module | None = None  # the final network (eval mode), kept with the run
    model_card: dict = field(default_factory=dict)  # what using the network needs (`model_card`)


def model_card(cfg: TrialConfig, test: ImageSet) -> dict:
    """What a user of the saved network needs besides its weights: its input (size, value range,
    normalisation) and its outputs (classes, in order; a sink class is an extra last output)."""
    return {"dataset": cfg.dataset, "model": cfg.model, "num_classes": test.num_classes,
            "classes": list(test.class_names), "outputs": test.num_classes + cfg.sink_class,
            "image_size": list(test.images.shape[-2:]), "mean": list(test.mean), "std": list(test.std),
            "input": "float32 (B, 3, H, W): RGB in [0, 1], then (x - mean) / std per channel"}


@dataclass
class TrainState:
    """Everything a restarted trial needs to continue exactly where it stopped."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    generator: torch.Generator  # draws batch order, augmentation and mollification
    config: dict = field(default_factory=dict)  # the trial's config: a checkpoint continues only it
    epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)

    def save(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / (CHECKPOINT_FILE + ".tmp")
        torch.save(
            {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "generator": self.generator.get_state(),
                "config": self.config,
                "epoch": self.epoch,
                "history": self.history,
            },
            tmp,
        )
        os.replace(tmp, folder / CHECKPOINT_FILE)  # atomic: a crash never leaves half a file
        return folder

    def load(self, folder: Path) -> None:
        state = read_checkpoint(folder, self.config)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        self.epoch, self.history = state["epoch"], state["history"]


def has_checkpoint(folder: Path | None) -> bool:
    return folder is not None and (Path(folder) / CHECKPOINT_FILE).exists()


def read_checkpoint(folder: Path, config: dict) -> dict:
    """The checkpoint in `folder`, checked to be readable and made with `config` (but for
    RESUMABLE_CHANGES): continuing another configuration's weights, optimizer and schedule under
    this one's name would record a trial that never ran."""
    path = Path(folder) / CHECKPOINT_FILE
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state["model"], state["epoch"]
    except Exception as err:  # torch raises several kinds on a truncated or foreign file
        raise CheckpointError(f"the checkpoint {path} is unreadable ({type(err).__name__}); delete it to start "
                              "the trial over, or point --checkpoint-dir elsewhere") from None
    made = state.get("config") or {}  # checkpoints from before configs were kept: not checked
    differ = sorted(k for k in made.keys() & config.keys() if made[k] != config[k] and k not in RESUMABLE_CHANGES)
    if differ:
        changes = ", ".join(f"{k} {made[k]!r} -> {config[k]!r}" for k in differ)
        raise CheckpointError(f"the checkpoint {path} belongs to a trial with another configuration ({changes}); "
                              "rerun with its settings to continue it, or use another --checkpoint-dir")
    return state


# --- setup -----------------------------------------------------------------------------------------

def load_splits(cfg: TrialConfig, device: torch.device) -> tuple[ImageSet, ImageSet | None, ImageSet]:
    """(train, validation or None when `valid_per_class` is 0, test)."""
    # The caller prepared the data (prepare_dataset): a trial only reads it, it never downloads.
    train = load_dataset(cfg.dataset, cfg.data_root, "train", num_classes=cfg.num_classes, download=False,
                         image_size=cfg.image_size, device=device, seed=cfg.seed, synthetic_size=cfg.train_size)
    if not cfg.valid_per_class:
        return train, None, load_test_split(cfg, device)
    try:
        train, valid = split_validation(train, cfg.valid_per_class, cfg.valid_seed)
    except ValueError as err:
        raise ConfigError(f"config key 'valid_per_class': {err}") from None
    return train, valid, load_test_split(cfg, device)


def load_test_split(cfg: TrialConfig, device: torch.device, image_size: int | None = None) -> ImageSet:
    """The clean test split the trial evaluates on (its first `limit_eval_images`), resized to
    `image_size` (default: the config's)."""
    test = load_dataset(cfg.dataset, cfg.data_root, "test", num_classes=cfg.num_classes, download=False,
                        image_size=image_size or cfg.image_size, device=device, seed=cfg.seed)
    return first(test, cfg.limit_eval_images)


def first(images: ImageSet, n: int | None) -> ImageSet:
    """The first n images (all when n is None)."""
    return dataclasses.replace(images, images=images.images[:n], labels=images.labels[:n]) if n else images


def build_state(cfg: TrialConfig, num_classes: int, steps: int, device: torch.device) -> TrainState:
    torch.manual_seed(cfg.seed)  # model initialisation
    model = create_model(cfg.model, num_classes + cfg.sink_class).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay)
    # Cosine annealing per step rather than per epoch: identical over long runs, and a 1-3 epoch
    # CPU study still sees the schedule.
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    return TrainState(model, optimizer, scheduler, generator, config=cfg.to_dict())


def check_input_size(cfg: TrialConfig, model: nn.Module, train: ImageSet) -> None:
    """One image through the fresh network before any training: an image size too small for the
    model (its pooling would shrink the maps below one pixel) fails here, in one line, instead
    of in the first step."""
    x = torch.zeros((1, *train.images.shape[1:]), device=train.images.device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    except RuntimeError as err:
        side = train.images.shape[-1]
        raise ConfigError(f"images of {side} px are too small for model {cfg.model!r} ({str(err).splitlines()[0]}); "
                          "use a larger image_size") from None
    finally:
        model.train(was_training)


def steps_per_epoch(cfg: TrialConfig, n_train: int) -> int:
    steps = max(1, n_train // cfg.batch_size)  # full batches only, as fast trainers do
    return min(steps, cfg.limit_train_batches) if cfg.limit_train_batches else steps


# --- one epoch -------------------------------------------------------------------------------------

def build_augmentation(cfg: TrialConfig) -> tuple[Augmentation, Augmentation | None]:
    """The trial's augmentation, and None; with `jsd`, the clean view's stages (all but the last)
    and the mixing stage whose two draws the consistency loss compares."""
    try:
        parts = stages(cfg.augment, cfg.ipmix_mixing_set)
    except ValueError as err:  # a bad mixing folder: one line naming it
        raise ConfigError(str(err)) from None
    if not cfg.jsd:
        return chain(parts, cfg.augment), None
    return chain(parts[:-1], cfg.augment.rpartition("+")[0] or "none"), parts[-1]


def mollify_options(cfg: TrialConfig) -> dict:
    """`mollify`'s keywords from the config."""
    return dict(roles=cfg.roles, alpha=cfg.alpha, beta=cfg.beta, npow=cfg.npow, bpow=cfg.bpow,
                label_mode=cfg.label_mode, smooth_labels=cfg.smooth_labels, sigma_min=cfg.sigma_min,
                sigma_max=cfg.sigma_max)


def make_batch(cfg: TrialConfig, train: ImageSet, index: Tensor, generator: torch.Generator,
               augment: Callable) -> tuple[Tensor, Tensor]:
    """Draw, augment, normalise and mollify one batch on the device: (x, soft labels)."""
    x = to_unit(train.images[index])  # (B, C, H, W) in [0, 1]
    y = F.one_hot(train.labels[index], train.num_classes).float()  # (B, K)
    x, y = augment(x, y, generator)
    x = normalize(x, train.mean, train.std)
    if cfg.mollify:
        x, y, _, _ = mollify(x, y, generator=generator, **mollify_options(cfg))
    if x.device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y


def make_views(cfg: TrialConfig, train: ImageSet, index: Tensor, generator: torch.Generator,
               base: Augmentation, mixer: Augmentation) -> tuple[Tensor, Tensor]:
    """`make_batch` for the JSD loss: the three views of each image as one batch (3B, C, H, W),
    normalised and mollified with one draw per image; the clean view's soft labels (B, K)."""
    x = to_unit(train.images[index])
    y = F.one_hot(train.labels[index], train.num_classes).float()
    x, y = three_views(x, y, generator, base, mixer)
    x = normalize(x, train.mean, train.std)
    if cfg.mollify:
        x, y = mollify_views(x, y, generator, **mollify_options(cfg))
    if x.device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y


def forward_loss(cfg: TrialConfig, net: nn.Module, x: Tensor, y: Tensor, loss_fn: Callable) -> tuple[Tensor, Tensor]:
    """The step's loss and the logits of the clean (or only) view."""
    with autocast(x.device, cfg.precision):
        logits = net(x)
    if not cfg.jsd:
        return loss_fn(logits, y), logits
    return consistency_loss(logits, y, loss_fn, cfg.jsd_weight), logits[: y.shape[0]]


def train_epoch(cfg: TrialConfig, state: TrainState, net: nn.Module, train: ImageSet,
                steps: int) -> dict[str, float]:
    (augment, mixer), loss_fn = build_augmentation(cfg), create_loss(cfg.loss)
    device, k = train.images.device, train.num_classes
    net.train()
    order = torch.randperm(len(train), device=device, generator=state.generator)
    loss_sum = torch.zeros((), device=device)
    wrong = torch.zeros((), device=device)
    start = time.perf_counter()
    for step in range(steps):
        index = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
        x, y = (make_batch(cfg, train, index, state.generator, augment) if mixer is None
                else make_views(cfg, train, index, state.generator, augment, mixer))  # fmt: skip
        loss, logits = forward_loss(cfg, net, x, y, loss_fn)
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        state.optimizer.step()
        state.scheduler.step()
        loss_sum += loss.detach()
        wrong += (logits[:, :k].argmax(dim=1) != train.labels[index]).sum()
    mean_loss, n_wrong = (loss_sum / steps).item(), wrong.item()  # the epoch's only device sync
    if not math.isfinite(mean_loss):
        raise TrialDivergedError(f"the training loss became {mean_loss} in epoch {state.epoch + 1} (lr {cfg.lr}): "
                                 "the trial failed and has no score; lower lr or check the inputs")
    seconds = time.perf_counter() - start  # after the sync, so it covers all queued device work
    # Training images, not forward passes: under `jsd` each is three (see docs/augmentations.md).
    images = steps * min(cfg.batch_size, len(train))
    return {"train/loss": mean_loss, "train/error": n_wrong / images, "train/images_per_s": images / seconds}


def evaluate_corrupted(cfg: TrialConfig, model: nn.Module, test: ImageSet) -> tuple[dict[str, float], dict]:
    """The corruption grid (METHOD.md section 4); nothing when `corruption_source` is none."""
    spec = cfg.corruption_spec
    if spec is None:
        return {}, {}
    return evaluate_corruptions(model, first(test, cfg.limit_corrupt_images), spec, dataset=cfg.dataset, batch_size=cfg.eval_batch_size,
                                precision=cfg.precision, data_root=cfg.data_root)


def evaluate_clean(cfg: TrialConfig, model: nn.Module, test: ImageSet) -> tuple[dict[str, float], dict]:
    logits = predict_logits(model, test.images, test.mean, test.std, num_classes=test.num_classes,
                            batch_size=cfg.eval_batch_size, precision=cfg.precision)
    metrics = {f"clean/{name}": value for name, value in classification_metrics(logits, test.labels).items()}
    return metrics, reliability_bins(logits.softmax(dim=1), test.labels)


def evaluate_validation(cfg: TrialConfig, model: nn.Module, valid: ImageSet) -> dict[str, float]:
    """What searches select on (METHOD.md section 6): the held-out training images clean, and the
    first `valid_corrupt_images` of them under the 4 extra corruptions (never the 15 of the test
    benchmark), summarised as the plain mean over those 20 cells and per corruption."""
    logits = predict_logits(model, valid.images, valid.mean, valid.std, num_classes=valid.num_classes,
                            batch_size=cfg.eval_batch_size, precision=cfg.precision)
    metrics = {f"{VALID}/{name}": value for name, value in classification_metrics(logits, valid.labels).items()}
    spec = cfg.valid_corruption_spec
    cells, _ = evaluate_corruptions(model, first(valid, cfg.valid_corrupt_images), spec, dataset=cfg.dataset,
                                    batch_size=cfg.eval_batch_size, precision=cfg.precision)
    # Every corruption has the same severities, so the mean of the per-corruption means is the mean
    # over the cells (evaluate_corruptions' own corrupt/<m> covers the benchmark's cells only).
    for m in METRICS:
        per_corruption = {c: cells[f"corrupt/{c}/{m}"] for c in spec.corruptions}
        metrics |= {f"{VALID}/corrupt/{c}/{m}": value for c, value in per_corruption.items()}
        metrics[f"{VALID}/corrupt/{m}"] = sum(per_corruption.values()) / len(per_corruption)
    return metrics


# --- the trial -----------------------------------------------------------------------------------

def run_trial(cfg: TrialConfig, report: Report | None = None, checkpoint_dir: str | Path | None = None,
              ) -> TrialResult:
    """Train and evaluate one configuration. After each epoch, `report(metrics, checkpoint)` gets
    that epoch's metrics and, when `checkpoint_dir` is given, the folder holding a checkpoint.
    A `checkpoint_dir` that already holds one is resumed from: the trial continues where it stopped."""
    cfg = resolve_corruption_set(cfg)  # callers resolve it first, to log what runs; a no-op then
    device = resolve_device(cfg.device)
    train, valid, test = load_splits(cfg, device)
    steps = steps_per_epoch(cfg, len(train))
    state = build_state(cfg, train.num_classes, steps * cfg.epochs, device)
    check_input_size(cfg, state.model, train)
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if has_checkpoint(folder):
        state.load(folder)
    net = torch.compile(state.model) if cfg.compile else state.model
    reliability: dict = {}
    while state.epoch < cfg.epochs:
        metrics = {"epoch": float(state.epoch + 1), "lr": state.scheduler.get_last_lr()[0]}
        metrics |= train_epoch(cfg, state, net, train, steps)
        state.epoch += 1
        if state.epoch % cfg.eval_every == 0 or state.epoch == cfg.epochs:
            clean, reliability["clean"] = evaluate_clean(cfg, state.model, test)
            metrics |= clean | (evaluate_validation(cfg, state.model, valid) if valid is not None else {})
        if state.epoch == cfg.epochs:  # the final report carries the corruption grid too
            corrupted, extras = evaluate_corrupted(cfg, state.model, test)
            metrics |= corrupted
            reliability |= extras
        metrics = float32_digits(metrics)
        state.history.append(metrics)
        saved = state.save(folder) if folder is not None else None
        if report is not None:
            report(metrics, saved)
    if not reliability:  # resumed after the last epoch had already finished
        clean, reliability["clean"] = evaluate_clean(cfg, state.model, test)
        corrupted, extras = evaluate_corrupted(cfg, state.model, test)
        state.history[-1] |= float32_digits(clean | corrupted)
        reliability |= extras
    final = {k: v for k, v in state.history[-1].items() if k.startswith(FINAL_PREFIXES)}
    return TrialResult(metrics=final, history=state.history, reliability=reliability,
                       model=state.model.eval(), model_card=model_card(cfg, test))
