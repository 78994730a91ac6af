"""Evaluation of a classifier on one set: error, NLL and ECE (METHOD.md section 4).

ECE is dataset-level (15 equal-width confidence bins, L1, torchmetrics). The authors average ECE
over batches of 100 images, which inflates it; that variant is kept under its own name
(`ece_batch100`) for comparison with their numbers only."""

from __future__ import annotations

from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.functional.classification import multiclass_calibration_error

from contract import METRICS  # noqa: F401 (the names classification_metrics returns)
from trainables.pipeline import autocast, normalize, to_unit

N_BINS = 15
AUTHORS_ECE_BATCH = 100

Transform = Callable[[Tensor], Tensor]  # float (B, C, H, W) in [0, 1] -> same, e.g. a corruption


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    images: Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    num_classes: int,
    batch_size: int = 500,
    precision: str = "auto",
    transform: Transform | None = None,
) -> Tensor:
    """Logits (N, K) in float32 for uint8 images (N, C, H, W) on the model's device; a network
    with a sink class emits K+1 outputs, and predictions use the first K."""
    model.eval()
    return torch.cat([batch_logits(model, images[start:start + batch_size], mean, std, num_classes, precision,
                                   transform) for start in range(0, len(images), batch_size)])


@torch.no_grad()
def predict_batches(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    mean: Sequence[float],
    std: Sequence[float],
    *,
    num_classes: int,
    precision: str = "auto",
    transform: Transform | None = None,
) -> tuple[Tensor, Tensor]:
    """`predict_logits` for (uint8 images (b, C, H, W), labels (b,)) batches as they come, e.g.
    streamed from files: (logits (N, K), labels (N,))."""
    model.eval()
    logits, labels = [], []
    for images, y in batches:
        logits.append(batch_logits(model, images, mean, std, num_classes, precision, transform))
        labels.append(y)
    return torch.cat(logits), torch.cat(labels)


def batch_logits(model: nn.Module, images: Tensor, mean: Sequence[float], std: Sequence[float], num_classes: int,
                 precision: str, transform: Transform | None) -> Tensor:
    x = to_unit(images)
    x = normalize(transform(x) if transform else x, mean, std)
    if images.device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    with autocast(images.device, precision):
        return model(x)[:, :num_classes].float()


def expected_calibration_error(probs: Tensor, labels: Tensor) -> Tensor:
    return multiclass_calibration_error(probs, labels, num_classes=probs.shape[1], n_bins=N_BINS, norm="l1")


def batch_averaged_ece(probs: Tensor, labels: Tensor, batch: int = AUTHORS_ECE_BATCH) -> Tensor:
    """The authors' ECE: the mean of per-batch ECEs over consecutive batches of 100 images."""
    per_batch = [expected_calibration_error(p, l) for p, l in zip(probs.split(batch), labels.split(batch))]
    return torch.stack(per_batch).mean()


def reliability_bins(probs: Tensor, labels: Tensor, n_bins: int = N_BINS) -> dict[str, list[float]]:
    """Per confidence bin (equal width on [0, 1]): count, mean confidence and accuracy; what a
    reliability diagram plots. Empty bins report 0 for both means."""
    confidence, predicted = probs.max(dim=1)
    correct = (predicted == labels).float()
    # Bin b holds (b/n, (b+1)/n], as torchmetrics bins it; confidence 0 falls in bin 0.
    index = (torch.ceil(confidence * n_bins).long() - 1).clamp(0, n_bins - 1)
    count = torch.zeros(n_bins, device=probs.device).index_add_(0, index, torch.ones_like(confidence))
    conf_sum = torch.zeros(n_bins, device=probs.device).index_add_(0, index, confidence)
    acc_sum = torch.zeros(n_bins, device=probs.device).index_add_(0, index, correct)
    safe = count.clamp(min=1)
    return {
        "count": count.tolist(),
        "confidence": (conf_sum / safe).tolist(),
        "accuracy": (acc_sum / safe).tolist(),
    }


def classification_metrics(logits: Tensor, labels: Tensor) -> dict[str, float]:
    """error (fraction in [0, 1]), NLL (mean cross-entropy), ECE and the authors' ECE."""
    probs = logits.softmax(dim=1)
    return {
        "error": (probs.argmax(dim=1) != labels).float().mean().item(),
        "nll": F.cross_entropy(logits, labels).item(),
        "ece": expected_calibration_error(probs, labels).item(),
        "ece_batch100": batch_averaged_ece(probs, labels).item(),
    }


def float32_digits(values: Mapping[str, float]) -> dict[str, float]:
    """Each value as the shortest decimal that reads back as the same float32: metrics are computed
    in float32, so 0.538 arrives as 0.5379999876...; the digits past float32's precision are noise,
    and they would show in the MLflow UI and in Optuna. Applied once where a trial reports, so Ray,
    Optuna and MLflow all hold the same number."""
    return {key: float(str(np.float32(value))) for key, value in values.items()}
