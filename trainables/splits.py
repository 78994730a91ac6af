"""The splits a trial reads: training (less the held-out validation images) and the clean test split.
The caller prepared the data (`prepare_dataset`): a trial only reads it, it never downloads.

A small dataset's split is an `ImageSet`, whole on the training device. ImageNet's is a
`StreamedSplit`: its list of files, decoded batch by batch on the device
(`trainables.data.stream`, NVIDIA DALI), so memory stays bounded whatever its size. Both
answer what evaluation asks of a split: its length, classes, normalisation, its first N images
(`first`) and its images in evaluation batches (`eval_batches_of`)."""

from __future__ import annotations

import torch

from trainables.config import ConfigError, TrialConfig
from trainables.data import STREAMED, load_dataset, split_validation, split_validation_files
from trainables.data.streamed import (STREAM_IMAGE_SIZE, Split, StreamedSplit, eval_batches_of, first,  # noqa: F401
                                      image_shape, interleave_classes)



def streamed(cfg: TrialConfig) -> bool:
    return cfg.dataset in STREAMED


def load_splits(cfg: TrialConfig, device: torch.device) -> tuple[Split, Split | None, Split]:
    """(train, validation or None when `valid_per_class` is 0, test)."""
    if streamed(cfg):
        return _streamed_splits(cfg, device)
    # The caller prepared the data (prepare_dataset): a trial only reads it, it never downloads.
    train = load_dataset(cfg.dataset, cfg.data_root, "train", num_classes=cfg.num_classes, download=False,
                         image_size=cfg.image_size, device=device, seed=cfg.seed, synthetic_size=cfg.train_size)
    if not cfg.valid_per_class:
        return train, None, load_test_split(cfg, device)
    try:
        train, valid = split_validation(train, cfg.valid_per_class, cfg.valid_seed)
    except ValueError as err:
        raise ConfigError(f"config key 'valid_per_class': {err}") from None
    return train, valid, load_test_split(cfg, device)


def _streamed_splits(cfg: TrialConfig, device: torch.device) -> tuple[Split, Split | None, Split]:
    files = STREAMED[cfg.dataset](cfg.data_root, "train", cfg.num_classes)
    size = cfg.image_size or STREAM_IMAGE_SIZE
    valid = None
    if cfg.valid_per_class:
        try:
            files, held_out = split_validation_files(files, cfg.valid_per_class, cfg.valid_seed)
        except ValueError as err:
            raise ConfigError(f"config key 'valid_per_class': {err}") from None
        valid = StreamedSplit(held_out, size, device)
    return StreamedSplit(files, size, device), valid, load_test_split(cfg, device)


def load_test_split(cfg: TrialConfig, device: torch.device, image_size: int | None = None) -> Split:
    """The clean test split the trial evaluates on (its first `limit_eval_images`), resized to
    `image_size` (default: the config's)."""
    if streamed(cfg):
        files = interleave_classes(STREAMED[cfg.dataset](cfg.data_root, "test", cfg.num_classes))
        split = StreamedSplit(files, image_size or cfg.image_size or STREAM_IMAGE_SIZE, device)
        return first(split, cfg.limit_eval_images)
    test = load_dataset(cfg.dataset, cfg.data_root, "test", num_classes=cfg.num_classes, download=False,
                        image_size=image_size or cfg.image_size, device=device, seed=cfg.seed)
    return first(test, cfg.limit_eval_images)
