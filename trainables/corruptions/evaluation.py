"""Evaluating a model on the corruption benchmark: every (corruption, severity) cell of a spec,
from one of three sources, summarised into the named metrics a trial logs.

Sources: "on_the_fly" (corrupt the clean test set on its device, seeded per cell, nothing written;
under a protocol with the JPEG round trip, cells go through it), "generated" (our files,
`generate.py`) and "official" (the benchmark authors' download, `releases.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from contract import corruption_metric_names, summarize_cells  # noqa: F401 (its names and summaries: the contract's)
from trainables.corruptions.cells import cell_generator, corrupt_cell
from trainables.corruptions.registry import (
    BENCHMARK, SEVERITIES, validate_corruptions, validate_severities, validate_table,
)
from trainables.corruptions.protocols import effective_jpeg
from trainables.corruptions.releases import load_corrupted_cell, tree_cell_files
from trainables.data.base import FileSplit
from trainables.data.streamed import Split, StreamedSplit, eval_batches_of, interleave_classes
from trainables.evaluate import classification_metrics, predict_batches, predict_logits, reliability_bins

SOURCES = ("on_the_fly", "generated", "official")


@dataclass(frozen=True)
class CorruptionSpec:
    """What corrupted evaluation a trial runs.

    source: "on_the_fly" | "generated" | "official"; path: the folder of a generated or official set
    (required for those two; the release folder itself or its parent); table: severity table,
    default from the image size; jpeg: whether on-the-fly cells take the release's JPEG round trip
    (None: as the dataset's release, Tiny-ImageNet-C and ImageNet-C; a protocol sets it, `protocols.py`);
    seed: on-the-fly randomness (each cell gets its own stream).
    """

    source: str = "on_the_fly"
    path: str | None = None
    corruptions: tuple[str, ...] = BENCHMARK
    severities: tuple[int, ...] = SEVERITIES
    seed: int = 0
    table: str | None = None
    jpeg: bool | None = None

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"unknown corruption source {self.source!r}; valid: {', '.join(SOURCES)}")
        if self.source != "on_the_fly" and not self.path:
            raise ValueError(f"corruption source {self.source!r} needs a path to the corrupted set")
        object.__setattr__(self, "corruptions", validate_corruptions(self.corruptions))
        object.__setattr__(self, "severities", validate_severities(self.severities))
        if self.table is not None:
            validate_table(self.table)


# ---------------------------------------------------------------------------------------------
# Evaluation


def evaluate_corruptions(
    model: nn.Module,
    test: Split,
    spec: CorruptionSpec,
    *,
    dataset: str,
    batch_size: int = 500,
    precision: str = "auto",
    data_root: str | Path | None = None,
) -> tuple[dict[str, float], dict[str, dict]]:
    """Evaluate `model` on every (corruption, severity) cell of `spec`.

    test: the clean test set (on the model's device), whose class subset and image size the
    corrupted sets follow; data_root: the clean dataset's root (Tiny ImageNet: for wnids.txt).
    Returns (metrics, extras): metrics named corrupt/<c>/s<k>/<m>, corrupt/<c>/<m> (mean over
    severities), corrupt/s<k>/<m> (mean over corruptions), corrupt/group/<g>/<m> and corrupt/<m>
    (the last three over benchmark cells only; the 4 extra corruptions never enter them), m in error, nll, ece, ece_batch100; extras holds
    "corrupt_s<k>": reliability bins pooled over the benchmark cells (all cells if none) at the
    highest evaluated severity k, the most corrupted evaluation.
    """
    cells: dict[tuple[str, int], dict[str, float]] = {}
    top = max(spec.severities)
    pooled: list[dict[str, list[float]]] = []
    pool_names = [c for c in spec.corruptions if c in BENCHMARK] or list(spec.corruptions)
    for name in spec.corruptions:
        for severity in spec.severities:
            logits, labels = _cell_logits(model, test, spec, name, severity, dataset=dataset,
                                          batch_size=batch_size, precision=precision, data_root=data_root)
            cells[name, severity] = classification_metrics(logits, labels)
            if severity == top and name in pool_names:
                pooled.append(reliability_bins(logits.softmax(dim=1), labels))
    return summarize_cells(cells), {f"corrupt_s{top}": merge_reliability(pooled)}


def merge_reliability(parts: Sequence[dict[str, list[float]]]) -> dict[str, list[float]]:
    """Pool reliability bins of several sets: counts add, means are count-weighted."""
    count = np.sum([p["count"] for p in parts], axis=0)
    safe = np.maximum(count, 1)
    conf = np.sum([np.multiply(p["confidence"], p["count"]) for p in parts], axis=0) / safe
    acc = np.sum([np.multiply(p["accuracy"], p["count"]) for p in parts], axis=0) / safe
    return {"count": count.tolist(), "confidence": conf.tolist(), "accuracy": acc.tolist()}


def _cell_logits(model: nn.Module, test: Split, spec: CorruptionSpec, name: str, severity: int, *,
                 dataset: str, batch_size: int, precision: str,
                 data_root: str | Path | None) -> tuple[Tensor, Tensor]:
    if spec.source == "on_the_fly":
        g = cell_generator(spec.seed, name, severity, test.device)
        jpeg = effective_jpeg(dataset, spec.jpeg)

        def transform(x: Tensor) -> Tensor:
            return corrupt_cell(x, name, severity, g, table=spec.table, jpeg=jpeg)

        return predict_batches(model, eval_batches_of(test, batch_size), test.mean, test.std,
                               num_classes=test.num_classes, precision=precision, transform=transform)
    if isinstance(test, StreamedSplit):  # a release too large to hold: its files, streamed like the test split
        files = tree_cell_files(dataset, spec.path, name, severity, source=spec.source, wnids=test.files.wnids)
        # The release's files are the test split's images, already resized and centre-cropped: they
        # are only resized to the trial's image size (`resize` = image_size: no second crop).
        cell = StreamedSplit(first_files(interleave_classes(files), len(test)), test.image_size, test.device,
                             resize=test.image_size)
        return predict_batches(model, eval_batches_of(cell, batch_size), test.mean, test.std,
                               num_classes=test.num_classes, precision=precision)
    cell = load_corrupted_cell(dataset, spec.path, name, severity, source=spec.source,
                               num_classes=test.num_classes, image_size=test.images.shape[-1],
                               device=test.images.device, data_root=data_root)
    # A limited test set (limit_corrupt_images) takes the cell's first images, as on the fly.
    images, labels = cell.images[:len(test)], cell.labels[:len(test)]
    logits = predict_logits(model, images, test.mean, test.std, num_classes=test.num_classes,
                            batch_size=batch_size, precision=precision)
    return logits, labels


def first_files(files: FileSplit, n: int) -> FileSplit:
    return files.subset(torch.arange(min(n, len(files))))
