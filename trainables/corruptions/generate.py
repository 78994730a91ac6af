"""Generating a corrupted test set in the official format from the clean test split, so that the
benchmark is there without the multi-gigabyte download (`python -m trainables.corruptions generate`).
Deterministic for a seed: each cell draws from its own stream (`cells.cell_generator`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torchvision.io import encode_jpeg

from trainables.corruptions.cells import cell_generator, corrupt_cell, to_uint8
from trainables.corruptions.protocols import RELEASE_JPEG_QUALITY, effective_jpeg
from trainables.corruptions.registry import BENCHMARK, SEVERITIES, validate_corruptions, validate_severities
from trainables.corruptions.releases import NPY_DATASETS, TREE_DATASETS, read_wnids
from trainables.data import load_dataset

_CHUNK = 1000


@dataclass(frozen=True)
class GenerateRequest:
    dataset: str
    out: Path
    data_root: Path
    corruptions: tuple[str, ...] = BENCHMARK
    severities: tuple[int, ...] = SEVERITIES
    seed: int = 0
    data_seed: int = 0  # synthetic only: the seed its clean test split is drawn with
    num_classes: int | None = None
    image_size: int | None = None
    table: str | None = None
    jpeg: bool | None = None  # the release's JPEG round trip; None: as the dataset's release
    device: str = "cpu"
    batch_size: int = _CHUNK
    progress: Callable[[str], None] = field(default=print, compare=False)


def generate_corrupted_set(req: GenerateRequest) -> Path:
    """Write the corrupted versions of the clean test split in the official format; returns the
    folder written. Deterministic for a seed (each cell draws from `cell_generator`). A tree
    dataset under a protocol without the JPEG round trip is written as .npy (lossless), since JPEG
    files would be that round trip; an .npy dataset under a JPEG protocol gets it applied."""
    validate_corruptions(req.corruptions)
    severities = validate_severities(req.severities)
    if req.dataset not in NPY_DATASETS + TREE_DATASETS:
        raise ValueError(f"cannot generate for dataset {req.dataset!r}; valid: "
                         f"{', '.join(NPY_DATASETS + TREE_DATASETS)}")
    test = load_dataset(req.dataset, req.data_root, "test", num_classes=req.num_classes,
                        image_size=req.image_size, device=req.device, seed=req.data_seed)
    out = req.out.expanduser()
    out.mkdir(parents=True, exist_ok=True)
    as_tree = req.dataset in TREE_DATASETS and effective_jpeg(req.dataset, req.jpeg)
    if not as_tree:
        if set(severities) != set(SEVERITIES):
            raise ValueError("the .npy format holds all 5 severities; pass none or all of them")
        np.save(out / "labels.npy", test.labels.cpu().repeat(5).numpy().astype(np.uint8 if
                test.num_classes <= 256 else np.int64))
    wnids = read_wnids(req.data_root, req.num_classes) if as_tree else []
    for name in req.corruptions:
        start = time.perf_counter()
        cells = {s: _corrupted_u8(test.images, name, s, req) for s in severities}
        if not as_tree:
            stacked = torch.cat([cells[s] for s in SEVERITIES]).permute(0, 2, 3, 1).contiguous()
            np.save(out / f"{name}.npy", stacked.numpy())
        else:
            for s, images in cells.items():
                _write_tree(out / name / str(s), images, test.labels.cpu(), wnids)
        req.progress(f"{name}: {len(test)} images x {len(severities)} severities -> {out} "
                     f"in {time.perf_counter() - start:.1f}s")
    return out


def _corrupted_u8(images: Tensor, name: str, severity: int, req: GenerateRequest) -> Tensor:
    """uint8 (N, 3, H, W) on the CPU; batches of req.batch_size from one cell generator."""
    g = cell_generator(req.seed, name, severity, images.device)
    # A tree set is written as JPEG files, which is the round trip itself; an .npy set under a JPEG
    # protocol takes it here.
    jpeg = effective_jpeg(req.dataset, req.jpeg) and req.dataset not in TREE_DATASETS
    parts = []
    for start in range(0, len(images), req.batch_size):
        x = images[start:start + req.batch_size].float() / 255
        parts.append(to_uint8(corrupt_cell(x, name, severity, g, table=req.table, jpeg=jpeg)).cpu())
    return torch.cat(parts)


def _write_tree(folder: Path, images: Tensor, labels: Tensor, wnids: Sequence[str]) -> None:
    """JPEG files <folder>/<wnid>/val_<i>.JPEG at the authors' quality 85 (JPEG adds its own
    compression, as in the official Tiny-ImageNet-C); i is the image's index in the clean test set."""
    encoded = encode_jpeg(list(images), quality=RELEASE_JPEG_QUALITY)
    for wnid in set(wnids[int(k)] for k in labels.unique()):
        (folder / wnid).mkdir(parents=True, exist_ok=True)
    for i, (data, label) in enumerate(zip(encoded, labels.tolist())):
        (folder / wnids[label] / f"val_{i}.JPEG").write_bytes(data.numpy().tobytes())
