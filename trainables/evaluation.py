"""What a trial evaluates (METHOD.md sections 4 and 6): the clean test split, the validation split
(clean and under the 4 extra corruptions, what searches select on) and the test corruption grid.
`reevaluate` evaluates a logged model with the same functions."""

from __future__ import annotations

from torch import Tensor, nn

from contract import METRICS, VALID
from trainables.config import TrialConfig
from trainables.corruptions import evaluate_corruptions
from trainables.evaluate import classification_metrics, predict_batches, reliability_bins
from trainables.splits import Split, eval_batches_of, first


def evaluate_corrupted(cfg: TrialConfig, model: nn.Module, test: Split) -> tuple[dict[str, float], dict]:
    """The corruption grid (METHOD.md section 4); nothing when `corruption_source` is none."""
    spec = cfg.corruption_spec
    if spec is None:
        return {}, {}
    return evaluate_corruptions(model, first(test, cfg.limit_corrupt_images), spec, dataset=cfg.dataset, batch_size=cfg.eval_batch_size,
                                precision=cfg.precision, data_root=cfg.data_root)


def evaluate_clean(cfg: TrialConfig, model: nn.Module, test: Split) -> tuple[dict[str, float], dict]:
    logits, labels = predict_split(cfg, model, test)
    metrics = {f"clean/{name}": value for name, value in classification_metrics(logits, labels).items()}
    return metrics, reliability_bins(logits.softmax(dim=1), labels)


def predict_split(cfg: TrialConfig, model: nn.Module, split: Split) -> tuple[Tensor, Tensor]:
    """Logits (N, K) of a split in memory or streamed, and its labels (N,), on its device."""
    return predict_batches(model, eval_batches_of(split, cfg.eval_batch_size), split.mean, split.std,
                           num_classes=split.num_classes, precision=cfg.precision)


def evaluate_validation(cfg: TrialConfig, model: nn.Module, valid: Split) -> dict[str, float]:
    """What searches select on (METHOD.md section 6): the held-out training images clean, and the
    first `valid_corrupt_images` of them under the 4 extra corruptions (never the 15 of the test
    benchmark), summarised as the plain mean over those 20 cells and per corruption."""
    logits, labels = predict_split(cfg, model, valid)
    metrics = {f"{VALID}/{name}": value for name, value in classification_metrics(logits, labels).items()}
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
