"""A split as evaluation reads it, whole in memory (`ImageSet`) or streamed from its files
(`StreamedSplit`): its length, classes, normalisation, its first N images (`first`) and its
images in evaluation batches (`eval_batches_of`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from trainables.data.base import ImageSet
from trainables.data.base import FileSplit

# ImageNet's training crop and evaluation crop when the config sets no image_size: the standard 224 px
# (evaluated as the shorter side resized to 256, then the centre 224: `trainables.data.stream`).
STREAM_IMAGE_SIZE = 224


@dataclass(frozen=True, eq=False)
class StreamedSplit:
    """A split read from its files batch by batch: `files` in sample order, evaluated at `image_size`
    after resizing the shorter side to `resize` (None: the standard image_size * 256/224; equal to
    image_size: the image is only centre-cropped, as for ImageNet-C's 224 px files), on `device`."""

    files: FileSplit
    image_size: int
    device: torch.device
    resize: int | None = None

    @property
    def num_classes(self) -> int:
        return self.files.num_classes

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.files.class_names

    @property
    def mean(self) -> tuple[float, float, float]:
        return self.files.mean

    @property
    def std(self) -> tuple[float, float, float]:
        return self.files.std

    @property
    def labels(self) -> Tensor:
        return self.files.labels.to(self.device)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return 3, self.image_size, self.image_size

    def __len__(self) -> int:
        return len(self.files)

    def first(self, n: int | None) -> StreamedSplit:
        if not n or n >= len(self):
            return self
        return dataclasses.replace(self, files=self.files.subset(torch.arange(n)))


Split = ImageSet | StreamedSplit


def first(images: Split, n: int | None) -> Split:
    """The first n images (all when n is None)."""
    if isinstance(images, StreamedSplit):
        return images.first(n)
    return dataclasses.replace(images, images=images.images[:n], labels=images.labels[:n]) if n else images


def image_shape(split: Split) -> tuple[int, ...]:
    """(C, H, W) of the images the network sees from `split`."""
    return split.image_shape if isinstance(split, StreamedSplit) else tuple(split.images.shape[1:])


def eval_batches_of(split: Split, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
    """The split's uint8 images (b, C, H, W) and labels (b,) in order, in batches of `batch_size`, on
    its device: slices of a split in memory; decoded, resized and centre-cropped files of a
    streamed one."""
    if isinstance(split, StreamedSplit):
        from trainables.data.stream import eval_batches  # DALI is imported only by streamed trials
        yield from eval_batches(split.files, image_size=split.image_size, batch_size=batch_size,
                                device=split.device, resize=split.resize)
        return
    for start in range(0, len(split), batch_size):
        yield split.images[start:start + batch_size], split.labels[start:start + batch_size]


def interleave_classes(files: FileSplit) -> FileSplit:
    """The files reordered class by class in turn (each class's first file, then each class's
    second, ...; within a class in the listing's order), so that the first N of a test split that
    is listed class by class (ImageNet's val/<wnid>/) cover all classes evenly: a quick run's
    `limit_eval_images` then measures every class, not the first few. A corrupted set listed the
    same way (ImageNet-C's <corruption>/<severity>/<wnid>/) is reordered the same way, so its first
    N are the same images."""
    labels = files.labels
    order = labels.argsort(stable=True)
    counts = torch.bincount(labels, minlength=files.num_classes)
    starts = counts.cumsum(0) - counts
    rank = torch.empty_like(labels)
    rank[order] = torch.arange(len(labels)) - starts[labels[order]]
    return files.subset((rank * files.num_classes + labels).argsort())
