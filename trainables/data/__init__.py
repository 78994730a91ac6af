"""Dataset loading: a whole split as uint8 tensors on the training device.

The training loop draws and augments batches directly from `ImageSet.images` on its device, so this
package only loads: once per trial, in one go, with no DataLoader and no per-image work per step.
What every loader shares is `base`; the validation split is `validation`.

Datasets (`DATASETS`, a plain registry of loaders taking a `LoadRequest`), one module each:

- ``synthetic``: procedural, deterministic from the seed, any size and class count; for tests and
  CPU-scale smoke studies.
- ``cifar10`` / ``cifar100`` (`cifar`): torchvision's classes over the official python-pickle files
  (``root/cifar-10-batches-py/``, ``root/cifar-100-python/``); CIFAR-100 uses the fine labels.
- ``tinyimagenet`` (`tiny`): the official ``tiny-imagenet-200/`` folder layout; "test" means the labelled
  ``val/`` split ("val" is accepted as an alias). Decoded tensors are cached on disk.

Streamed datasets (`STREAMED`, listing functions returning a `FileSplit`), too large to load whole:

- ``imagenet`` (`imagenet`): the ILSVRC-2012 layout (``train/<wnid>/``, ``val/<wnid>/``); batches are
  decoded as training reads them by `trainables.data.stream` (NVIDIA DALI). `load_dataset` refuses it.

Order of samples is deterministic and part of the contract (tests rely on it): CIFAR keeps the file
order; Tiny ImageNet train is class by class in ``wnids.txt`` order, files sorted by name within a
class; Tiny ImageNet val follows the row order of ``val/val_annotations.txt``; ImageNet is class by
class in sorted wnid order, files sorted by name within a class, in both splits.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from trainables.data.base import (DATASET_STATS, DatasetChecksumWarning, DatasetError, DatasetNotFoundError,
                                  FileSplit, ImageSet, Loader, LoadRequest, canonical_split, positive_or_none)
from trainables.data.cifar import (CIFAR_CLASSES, _cifar_missing, _download_cifar, cifar_missing_message,
                                   count_cifar10, count_cifar100, load_cifar10, load_cifar100)
from trainables.data.imagenet import check_imagenet, count_imagenet, imagenet_files, imagenet_missing_message
from trainables.data.synthetic import count_synthetic, load_synthetic
from trainables.data.tiny import (JPEG_BACKEND, TINY_IMAGENET_URL, _tiny_root, count_tinyimagenet, load_tinyimagenet,
                                  tiny_missing_message)
from trainables.data.validation import check_holdout, holdout_index, split_validation, split_validation_files

__all__ = [
    "DATASETS",
    "DATASET_STATS",
    "DatasetChecksumWarning",
    "DatasetError",
    "DatasetNotFoundError",
    "FileSplit",
    "ImageSet",
    "JPEG_BACKEND",
    "LoadRequest",
    "STREAMED",
    "TINY_IMAGENET_URL",
    "check_holdout",
    "cifar_missing_message",
    "class_counts",
    "holdout_index",
    "imagenet_files",
    "imagenet_missing_message",
    "load_dataset",
    "prepare_dataset",
    "split_validation",
    "split_validation_files",
    "tiny_missing_message",
]

DATASETS: dict[str, Loader] = {
    "synthetic": load_synthetic,
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
    "tinyimagenet": load_tinyimagenet,
}

# Datasets too large to load whole (ImageNet: 1.28M JPEGs, about 140 GB): listed as files, which
# `trainables.data.stream` decodes batch by batch. Keyed like DATASETS; never in DATASETS.
STREAMED: dict[str, Callable[..., FileSplit]] = {
    "imagenet": imagenet_files,
}

# How many images of each class a split holds, as its loader would load it, without making the images:
# Tiny ImageNet lists its folders, CIFAR reads its pickles' labels, synthetic computes its labels.
COUNTERS: dict[str, Callable[[LoadRequest], list[tuple[str, int]]]] = {
    "synthetic": count_synthetic,
    "cifar10": count_cifar10,
    "cifar100": count_cifar100,
    "tinyimagenet": count_tinyimagenet,
    "imagenet": count_imagenet,
}


def load_dataset(
    name: str,
    root: str | Path,
    split: str,
    *,
    num_classes: int | None = None,
    image_size: int | None = None,
    device: str | torch.device = "cpu",
    download: bool = True,
    seed: int = 0,
    synthetic_size: int | None = None,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
) -> ImageSet:
    """Load split `split` of dataset `name` whole, as uint8 tensors on `device`.

    num_classes: keep the first N classes in canonical order, labels remapped to 0..N-1.
    image_size: resize (antialiased) once at load time to image_size x image_size.
    download: CIFAR only; Tiny ImageNet is never downloaded (it is large; see the error message).
    seed, synthetic_size: synthetic only.
    cache_dir, use_cache: Tiny ImageNet's decoded-tensor cache (default ``root/.mollify-cache/`` if
    writable, else ``~/.cache/mollify-lab/``).
    """
    if name in STREAMED:
        raise DatasetError(f"dataset {name!r} is streamed from its files (trainables.data.stream: "
                           f"STREAMED[{name!r}] lists them), never loaded whole")
    request = _request(name, root, split, num_classes=num_classes, image_size=image_size, download=download,
                       seed=seed, synthetic_size=synthetic_size,
                       cache_dir=None if cache_dir is None else Path(cache_dir).expanduser(), use_cache=use_cache)
    return DATASETS[name](request).to(device)


def class_counts(name: str, root: str | Path, split: str, *, num_classes: int | None = None,
                 synthetic_size: int | None = None, download: bool = False) -> list[tuple[str, int]]:
    """(class name, images) for each class of split `split` that `load_dataset` with these
    arguments would load, in class order, without decoding or making an image (see COUNTERS)."""
    request = _request(name, root, split, num_classes=num_classes, synthetic_size=synthetic_size, download=download)
    return COUNTERS[name](request)


def _request(name: str, root: str | Path, split: str, **fields) -> LoadRequest:
    if name not in COUNTERS:
        raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(sorted(COUNTERS))}")
    for key in ("num_classes", "image_size", "synthetic_size"):
        positive_or_none(key, fields.get(key))
    return LoadRequest(root=Path(root).expanduser(), split=canonical_split(name, split), **fields)


def prepare_dataset(name: str, root: str | Path, download: bool = True) -> None:
    """Make sure dataset `name` is under `root` before any trial reads it: CIFAR is downloaded there
    when missing (once, by the caller: a study's driver, or the trial CLI), Tiny ImageNet and
    ImageNet are looked for (ImageNet's class folders checked, no image listed). A study's trials
    then only read (`load_dataset(download=False)`), so they neither
    download at once into one folder nor each fail on their own without a network. Raises
    DatasetNotFoundError saying where the files must be."""
    root = Path(root).expanduser()
    if name in CIFAR_CLASSES and _cifar_missing(CIFAR_CLASSES[name], root):
        _download_cifar(CIFAR_CLASSES[name], root, True, download)
    elif name == "tinyimagenet":
        _tiny_root(root)
    elif name == "imagenet":
        check_imagenet(root)
