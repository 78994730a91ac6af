"""What a trial evaluates (METHOD.md sections 4 and 6): the clean test split, the validation split
(clean and under the 4 extra corruptions, what searches select on) and the test corruption grid.
`reevaluate` evaluates a logged model with the same functions."""

from __future__ import annotations

from torch import nn

from contract import METRICS, VALID
from trainables.config import TrialConfig
from trainables.corruptions import evaluate_corruptions
from trainables.data import ImageSet
from trainables.evaluate import classification_metrics, predict_logits, reliability_bins
from trainables.splits import first


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
