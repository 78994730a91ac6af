"""One trial: train a classifier with or without supervised mollification, evaluate it, report.

The training split lives on the device as uint8; each step draws a batch there, augments it as a
whole batch, normalises, mollifies, and takes one SGD step. Per-step statistics stay on the device
and are read once per epoch, so the loop never waits on the host. `run_trial` is a plain function
of the config and a `report(metrics, checkpoint)` callback: Ray sits outside it.

This module is the loop; its parts live beside it: the splits it reads (`splits`), how a batch is
made (`batches`), what it evaluates (`evaluation`), its checkpoint format (`checkpoint`) and the
names of the metrics it reports (`contract`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn

from contract import VALID, trial_metric_names, validation_metric_names  # noqa: F401 (their old home)
from trainables.batches import Batches, epoch_batches
from trainables.checkpoint import (CHECKPOINT_FILE, CheckpointError, TrainState, has_checkpoint,  # noqa: F401
                                   read_checkpoint)
from trainables.config import ConfigError, TrialConfig
from trainables.consistency import consistency_loss
from trainables.corruptions.provision import check_corrupted_set, resolve_corruption_set
from trainables.distributed import Workers, global_batch_norm, swap_batch_norm
from trainables.evaluate import float32_digits
from trainables.evaluation import evaluate_clean, evaluate_corrupted, evaluate_validation
from trainables.losses import create_loss
from trainables.models import create_model
from trainables.pipeline import autocast, resolve_device
from trainables.splits import Split, image_shape, load_splits, load_test_split  # noqa: F401 (load_test_split: its old home)


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


def model_card(cfg: TrialConfig, test: Split) -> dict:
    """What a user of the saved network needs besides its weights: its input (size, value range,
    normalisation) and its outputs (classes, in order; a sink class is an extra last output)."""
    return {"dataset": cfg.dataset, "model": cfg.model, "num_classes": test.num_classes,
            "classes": list(test.class_names), "outputs": test.num_classes + cfg.sink_class,
            "image_size": list(image_shape(test)[-2:]), "mean": list(test.mean), "std": list(test.std),
            "input": "float32 (B, 3, H, W): RGB in [0, 1], then (x - mean) / std per channel"}


# --- setup -----------------------------------------------------------------------------------------

def build_state(cfg: TrialConfig, num_classes: int, steps: int, device: torch.device,
                workers: Workers = Workers()) -> TrainState:
    torch.manual_seed(cfg.seed)  # model initialisation: the same on every worker
    model = create_model(cfg.model, num_classes + cfg.sink_class)
    if workers.world > 1:
        # Batch norm over the global batch, not each worker's B/W images: W workers then compute
        # what one process with the whole batch computes (the trial's definition does not depend
        # on how many workers run it), and small per-worker parts do not get noisy statistics.
        # The cost: per BN layer, two all-reduces of C sums in the forward pass and two in the
        # backward, a synchronisation point per layer rather than one per step. On CUDA, torch's
        # SyncBatchNorm (fused kernels); on the CPU, which it refuses (a gloo trial), GlobalBatchNorm.
        model = (nn.SyncBatchNorm.convert_sync_batchnorm(model) if device.type == "cuda"
                 else global_batch_norm(model))
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay)
    # Cosine annealing per step rather than per epoch: identical over long runs, and a 1-3 epoch
    # CPU study still sees the schedule.
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    generator = torch.Generator(device=device).manual_seed(workers.seed(cfg.seed))
    return TrainState(model, optimizer, scheduler, generator, config=cfg.to_dict())


def check_input_size(cfg: TrialConfig, model: nn.Module, train: Split) -> None:
    """One image through the fresh network before any training: an image size too small for the
    model (its pooling would shrink the maps below one pixel) fails here, in one line, instead
    of in the first step."""
    x = torch.zeros((1, *image_shape(train)), device=model_device(model))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    except RuntimeError as err:
        side = image_shape(train)[-1]
        raise ConfigError(f"images of {side} px are too small for model {cfg.model!r} ({str(err).splitlines()[0]}); "
                          "use a larger image_size") from None
    finally:
        model.train(was_training)


def steps_per_epoch(cfg: TrialConfig, n_train: int) -> int:
    steps = max(1, n_train // cfg.batch_size)  # full batches only, as fast trainers do
    return min(steps, cfg.limit_train_batches) if cfg.limit_train_batches else steps


# --- one epoch -------------------------------------------------------------------------------------

def forward_loss(cfg: TrialConfig, net: nn.Module, x: Tensor, y: Tensor, loss_fn: Callable) -> tuple[Tensor, Tensor]:
    """The step's loss and the logits of the clean (or only) view."""
    with autocast(x.device, cfg.precision):
        logits = net(x)
    if not cfg.jsd:
        return loss_fn(logits, y), logits
    return consistency_loss(logits, y, loss_fn, cfg.jsd_weight), logits[: y.shape[0]]


def train_step(cfg: TrialConfig, state: TrainState, net: nn.Module, x: Tensor, y: Tensor,
               loss_fn: Callable) -> tuple[Tensor, Tensor]:
    """One SGD step on this worker's part of a global batch: (loss, logits of the clean view).
    Under DDP `backward` averages the gradients over workers, so every worker takes the step one
    process would take on the whole batch."""
    loss, logits = forward_loss(cfg, net, x, y, loss_fn)
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    state.optimizer.step()
    state.scheduler.step()
    return loss, logits


def train_epoch(cfg: TrialConfig, state: TrainState, net: nn.Module, train: Split, steps: int,
                batches: Batches, loss_fn: Callable, workers: Workers = Workers()) -> dict[str, float]:
    """One epoch of `steps` SGD steps on this worker's part of each global batch; the epoch's
    loss, error and throughput, over all workers."""
    device, k = state.device, train.num_classes
    net.train()
    loss_sum = torch.zeros((), device=device)
    wrong = torch.zeros((), device=device)
    start = time.perf_counter()
    for images, labels in epoch_batches(cfg, train, state.epoch, steps, device, workers):
        x, y = batches.prepare(images, labels, train, state.generator)
        loss, logits = train_step(cfg, state, net, x, y, loss_fn)
        loss_sum += loss.detach()
        wrong += (logits[:, :k].argmax(dim=1) != labels).sum()
    loss_sum, wrong = workers.sum(loss_sum) / workers.world, workers.sum(wrong)
    mean_loss, n_wrong = (loss_sum / steps).item(), wrong.item()  # the epoch's only device sync
    if not math.isfinite(mean_loss):
        raise TrialDivergedError(f"the training loss became {mean_loss} in epoch {state.epoch + 1} (lr {cfg.lr}): "
                                 "the trial failed and has no score; lower lr or check the inputs")
    seconds = time.perf_counter() - start  # after the sync, so it covers all queued device work
    # Training images, not forward passes: under `jsd` each is three (see docs/augmentations.md).
    images = steps * min(cfg.batch_size, len(train))  # over all workers: the global batches
    return {"train/loss": mean_loss, "train/error": n_wrong / images, "train/images_per_s": images / seconds}


# --- the trial -----------------------------------------------------------------------------------

def run_trial(cfg: TrialConfig, report: Report | None = None, checkpoint_dir: str | Path | None = None,
              workers: Workers = Workers()) -> TrialResult:
    """Train and evaluate one configuration. After each epoch, `report(metrics, checkpoint)` gets
    that epoch's metrics and, when `checkpoint_dir` is given, the folder holding a checkpoint.
    A `checkpoint_dir` that already holds one is resumed from: the trial continues where it stopped.

    Run on each of several data-parallel `workers` (Ray Train sets up the process group), each
    trains on its part of every global batch; only the main worker (rank 0) evaluates, writes the
    checkpoint and reports one (the others report their metrics with no checkpoint), and only its
    result holds evaluation metrics."""
    cfg = resolve_corruption_set(cfg)  # callers resolve it first, to log what runs; a no-op then
    check_corrupted_set(cfg)  # before training, not after its last epoch
    device = resolve_device(cfg.device)
    train, valid, test = load_splits(cfg, device)
    steps = steps_per_epoch(cfg, len(train))
    state = build_state(cfg, train.num_classes, steps * cfg.epochs, device, workers)
    check_input_size(cfg, state.model, train)
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if has_checkpoint(folder):
        state.load(folder, workers.rank)
    net = wrap(cfg, state.model, workers)
    batches, loss_fn = Batches.for_trial(cfg), create_loss(cfg.loss)
    reliability: dict = {}
    while state.epoch < cfg.epochs:
        metrics = {"epoch": float(state.epoch + 1), "lr": state.scheduler.get_last_lr()[0]}
        metrics |= train_epoch(cfg, state, net, train, steps, batches, loss_fn, workers)
        state.epoch += 1
        # The epoch's last collective: the other ranks then wait for rank 0's evaluation at the
        # report (a barrier of Ray's, with no timeout), not in a gloo/NCCL call that would time out.
        state.worker_generators = workers.gather(state.generator.get_state())
        if workers.main:
            metrics |= evaluate_epoch(cfg, state, valid, test, reliability)
        metrics = float32_digits(metrics)
        state.history.append(metrics)
        saved = state.save(folder) if folder is not None and workers.main else None
        if report is not None:
            report(metrics, saved)
    if not reliability and workers.main:  # resumed after the last epoch had already finished
        clean, reliability["clean"] = evaluate_clean(cfg, state.model, test)
        corrupted, extras = evaluate_corrupted(cfg, state.model, test)
        state.history[-1] |= float32_digits(clean | corrupted)
        reliability |= extras
    final = {k: v for k, v in state.history[-1].items() if k.startswith(FINAL_PREFIXES)}
    return TrialResult(metrics=final, history=state.history, reliability=reliability,
                       model=swap_batch_norm(state.model, nn.BatchNorm2d).eval(), model_card=model_card(cfg, test))


def wrap(cfg: TrialConfig, model: nn.Module, workers: Workers) -> nn.Module:
    """The network the loop steps: the model, under DDP on several workers (gradients averaged in
    `backward`), compiled if asked. Plain torch DDP rather than `ray.train.torch.prepare_model`:
    `trainables` runs without Ray, and the model is already on its device."""
    net = model
    if workers.world > 1:
        ids = [model_device(model).index] if model_device(model).type == "cuda" else None
        net = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    return torch.compile(net) if cfg.compile else net


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def evaluate_epoch(cfg: TrialConfig, state: TrainState, valid: Split | None, test: Split,
                   reliability: dict) -> dict[str, float]:
    """The epoch's evaluation on the unwrapped model (no collectives): clean and validation every
    `eval_every` epochs and at the end, the corruption grid at the end."""
    metrics: dict[str, float] = {}
    if state.epoch % cfg.eval_every == 0 or state.epoch == cfg.epochs:
        clean, reliability["clean"] = evaluate_clean(cfg, state.model, test)
        metrics |= clean | (evaluate_validation(cfg, state.model, valid) if valid is not None else {})
    if state.epoch == cfg.epochs:  # the final report carries the corruption grid too
        corrupted, extras = evaluate_corrupted(cfg, state.model, test)
        metrics |= corrupted
        reliability |= extras
    return metrics
