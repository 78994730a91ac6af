"""The validation split (METHOD.md section 6): images held out of the training split, the same in
every trial of a study."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from torch import Tensor

from trainables.data.base import ImageSet
from trainables.seeds import generator


def split_validation(train: ImageSet, per_class: int, seed: int) -> tuple[ImageSet, ImageSet]:
    """Hold out `per_class` images of every class of the training split: (train, valid).

    Selection on the test set biases the reported number, so searches select on images carved from
    the training split and never trained on. The draw depends only on the labels and `seed` (a
    stream of its own, not the training seed), so every trial of a study holds out the same images.
    The kept training images stay in their order; the held-out ones are interleaved by class
    (each class's first draw, then each class's second, ...), so that their first N are as
    balanced as N allows. per_class 0 returns `train` itself and an empty set. Torch ops only.
    """
    if per_class < 0:
        raise ValueError(f"per_class must be >= 0, got {per_class}")
    labels, k = train.labels, train.num_classes
    if per_class == 0:
        return train, subset(train, labels[:0])
    check_holdout(list(zip(train.class_names, torch.bincount(labels, minlength=k).tolist())), per_class)
    n = len(train)
    perm = torch.randperm(n, generator=generator(seed, "validation")).to(labels.device)
    by_class = perm[labels[perm].argsort(stable=True)]  # (N,) class by class, random within a class
    counts = torch.bincount(labels, minlength=k)
    starts = counts.cumsum(0) - counts  # (K,) where each class begins in by_class
    rank = torch.arange(n, device=labels.device) - starts[labels[by_class]]  # (N,) rank within its class
    chosen, sorted_labels = rank < per_class, labels[by_class]
    valid = by_class[chosen][(rank[chosen] * k + sorted_labels[chosen]).argsort()]  # interleaved by class
    keep = torch.ones(n, dtype=torch.bool, device=labels.device)
    keep[valid] = False
    return subset(train, keep.nonzero().squeeze(1)), subset(train, valid)


def check_holdout(counts: Sequence[tuple[str, int]], per_class: int) -> None:
    """Every class must keep at least one training image after `per_class` are held out; `counts`
    are (class name, training images) pairs, from the labels or from a loader's count."""
    short = [(name, n) for name, n in counts if n <= per_class]
    if not short:
        return
    sizes = sorted({n for _, n in counts})
    each = f"{sizes[0]}" if len(sizes) == 1 else f"{sizes[0]} to {sizes[-1]}"
    named = ", ".join(f"{name!r} ({n})" for name, n in short[:5])
    more = f" and {len(short) - 5} more" if len(short) > 5 else ""
    raise ValueError(f"cannot hold out {per_class} validation images per class: class(es) {named}{more} "
                     f"have no more training images than that (at most {max(sizes[0] - 1, 0)} per class "
                     f"leaves every class one to train on; the training split has {each} images per class)")


def subset(images: ImageSet, index: Tensor) -> ImageSet:
    return dataclasses.replace(images, images=images.images[index], labels=images.labels[index])
