"""The validation split (METHOD.md section 6): images held out of the training split, the same in
every trial of a study."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from torch import Tensor

from trainables.data.base import FileSplit, ImageSet
from trainables.seeds import generator


def split_validation(train: ImageSet, per_class: int, seed: int) -> tuple[ImageSet, ImageSet]:
    """Hold out `per_class` images of every class of the training split: (train, valid).

    Selection on the test set biases the reported number, so searches select on images carved from
    the training split and never trained on. Which images is `holdout_index`'s draw. per_class 0
    returns `train` itself and an empty set. Torch ops only.
    """
    if per_class == 0:
        return train, subset(train, train.labels[:0])
    keep, valid = holdout_index(train.labels, train.class_names, per_class, seed)
    return subset(train, keep), subset(train, valid)


def split_validation_files(files: FileSplit, per_class: int, seed: int) -> tuple[FileSplit, FileSplit]:
    """`split_validation` for a split streamed from its files: the same draw (it depends on the
    labels only), so a dataset holds out the same positions whether it is loaded or streamed."""
    if per_class == 0:
        return files, files.subset(files.labels[:0])
    keep, valid = holdout_index(files.labels, files.class_names, per_class, seed)
    return files.subset(keep), files.subset(valid)


def holdout_index(labels: Tensor, class_names: Sequence[str], per_class: int, seed: int) -> tuple[Tensor, Tensor]:
    """(keep, valid): the positions kept for training and the `per_class` positions of every class
    held out, from the labels (N,) alone.

    The draw depends only on the labels, the class count and `seed` (a stream of its own, not the
    training seed), so every trial of a study holds out the same images. The kept positions stay in
    their order; the held-out ones are interleaved by class (each class's first draw, then each
    class's second, ...), so that their first N are as balanced as N allows.
    """
    if per_class < 0:
        raise ValueError(f"per_class must be >= 0, got {per_class}")
    n, k = len(labels), len(class_names)
    counts = torch.bincount(labels, minlength=k)
    if per_class > 0:
        check_holdout(list(zip(class_names, counts.tolist())), per_class)
    perm = torch.randperm(n, generator=generator(seed, "validation")).to(labels.device)
    by_class = perm[labels[perm].argsort(stable=True)]  # (N,) class by class, random within a class
    starts = counts.cumsum(0) - counts  # (K,) where each class begins in by_class
    rank = torch.arange(n, device=labels.device) - starts[labels[by_class]]  # (N,) rank within its class
    chosen, sorted_labels = rank < per_class, labels[by_class]
    valid = by_class[chosen][(rank[chosen] * k + sorted_labels[chosen]).argsort()]  # interleaved by class
    keep = torch.ones(n, dtype=torch.bool, device=labels.device)
    keep[valid] = False
    return keep.nonzero().squeeze(1), valid


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
