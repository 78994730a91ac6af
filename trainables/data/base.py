"""What every loader shares: the split in memory (`ImageSet`), a split as a list of files for the
streamed datasets (`FileSplit`), the request a loader serves (`LoadRequest`), the errors, the
datasets' normalisation statistics and the helpers for class subsets and resizing."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision.transforms.v2.functional as TF
from torch import Tensor

Stats = tuple[float, float, float]

# Per-channel mean/std of the FULL dataset (fixed by the project spec, not recomputed per subset, so
# that a class subset or a resize normalises exactly like the full dataset).
DATASET_STATS: dict[str, tuple[Stats, Stats]] = {
    "synthetic": ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)),
    "cifar10": ((0.491, 0.482, 0.446), (0.247, 0.243, 0.261)),
    "cifar100": ((0.507, 0.487, 0.441), (0.267, 0.256, 0.276)),
    "tinyimagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}

# Images are decoded, resized and generated in chunks so peak memory stays near the final tensor.
CHUNK = 2048


class DatasetNotFoundError(FileNotFoundError):
    """The dataset's files are not where they must be (and could not be downloaded)."""


class DatasetError(ValueError):
    """The dataset's files are there but cannot serve the config: an undecodable image, images of
    different sizes without image_size, more classes asked for than it has."""


class DatasetChecksumWarning(UserWarning):
    """Files in the official format are present but their checksums are not the official ones."""


@dataclass(frozen=True, eq=False)  # eq=False: comparing tensors with == is elementwise, not a bool
class ImageSet:
    """A whole split in memory: uint8 images (N, 3, H, W) and int64 labels (N,) on one device."""

    images: Tensor
    labels: Tensor
    class_names: tuple[str, ...]
    mean: Stats
    std: Stats

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[1] != 3:
            raise ValueError(f"images must be uint8 (N, 3, H, W), got {self.images.dtype} "
                             f"{tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.shape != self.images.shape[:1]:
            raise ValueError(f"labels must be int64 ({self.images.shape[0]},), got "
                             f"{self.labels.dtype} {tuple(self.labels.shape)}")
        if self.labels.device != self.images.device:
            raise ValueError("images and labels must be on the same device")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def device(self) -> torch.device:
        return self.images.device

    def to(self, device: str | torch.device) -> ImageSet:
        """The same set with its tensors on `device` (no copy when already there)."""
        return dataclasses.replace(self, images=self.images.to(device), labels=self.labels.to(device))


@dataclass(frozen=True, eq=False)
class FileSplit:
    """A split as a list of image files, nothing decoded: what a streamed dataset (too large to hold
    decoded, e.g. ImageNet) hands to `trainables.data.stream`. Labels are int64 (N,) on the CPU."""

    root: Path
    paths: tuple[str, ...]  # absolute; str, not Path: a Path per file costs seconds at ImageNet's 1.28M
    labels: Tensor
    class_names: tuple[str, ...]
    wnids: tuple[str, ...]
    mean: Stats
    std: Stats

    def __post_init__(self) -> None:
        if self.labels.dtype != torch.int64 or tuple(self.labels.shape) != (len(self.paths),):
            raise ValueError(f"labels must be int64 ({len(self.paths)},), got {self.labels.dtype} "
                             f"{tuple(self.labels.shape)}")
        if len(self.wnids) != len(self.class_names):
            raise ValueError(f"{len(self.wnids)} wnids but {len(self.class_names)} class names")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, index: Tensor) -> FileSplit:
        """The rows at `index`, in that order (classes and statistics unchanged)."""
        index = index.cpu()
        return dataclasses.replace(self, paths=tuple(self.paths[i] for i in index.tolist()), labels=self.labels[index])


@dataclass(frozen=True)
class LoadRequest:
    """Everything a registered loader is asked for; `split` is already canonical ("train"/"test")."""

    root: Path
    split: str
    num_classes: int | None = None
    image_size: int | None = None
    download: bool = True
    seed: int = 0
    synthetic_size: int | None = None
    cache_dir: Path | None = None
    use_cache: bool = True


Loader = Callable[[LoadRequest], ImageSet]


SPLIT_ALIASES: dict[str, dict[str, str]] = {"tinyimagenet": {"val": "test"}, "imagenet": {"val": "test"}}


def canonical_split(name: str, split: str) -> str:
    aliases = {"train": "train", "test": "test", **SPLIT_ALIASES.get(name, {})}
    if split not in aliases:
        raise ValueError(f"unknown split {split!r} for dataset {name!r}; valid: {', '.join(aliases)}")
    return aliases[split]


def positive_or_none(what: str, value: int | None) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{what} must be a positive int or None, got {value!r}")
    return value


def class_subset(names: Sequence[str], num_classes: int | None, dataset: str) -> tuple[str, ...]:
    """The first `num_classes` class names (all when None); too many is an error, not a clamp."""
    if num_classes is None:
        return tuple(names)
    if num_classes > len(names):
        raise DatasetError(f"num_classes={num_classes} but {dataset} has only {len(names)} classes")
    return tuple(names[:num_classes])


def resize(images: Tensor, size: int | None) -> Tensor:
    """Antialiased resize of a uint8 batch to size x size, in chunks into one preallocated tensor."""
    if size is None or tuple(images.shape[-2:]) == (size, size):
        return images
    out = torch.empty((images.shape[0], 3, size, size), dtype=torch.uint8)
    for start in range(0, images.shape[0], CHUNK):
        chunk = images[start:start + CHUNK]
        out[start:start + len(chunk)] = TF.resize(chunk, [size, size], antialias=True)
    return out
