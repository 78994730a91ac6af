"""The splits a trial reads: training (less the held-out validation images) and the clean test split.
The caller prepared the data (`prepare_dataset`): a trial only reads it, it never downloads."""

from __future__ import annotations

import dataclasses

import torch

from trainables.config import ConfigError, TrialConfig
from trainables.data import ImageSet, load_dataset, split_validation


def load_splits(cfg: TrialConfig, device: torch.device) -> tuple[ImageSet, ImageSet | None, ImageSet]:
    """(train, validation or None when `valid_per_class` is 0, test)."""
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


def load_test_split(cfg: TrialConfig, device: torch.device, image_size: int | None = None) -> ImageSet:
    """The clean test split the trial evaluates on (its first `limit_eval_images`), resized to
    `image_size` (default: the config's)."""
    test = load_dataset(cfg.dataset, cfg.data_root, "test", num_classes=cfg.num_classes, download=False,
                        image_size=image_size or cfg.image_size, device=device, seed=cfg.seed)
    return first(test, cfg.limit_eval_images)


def first(images: ImageSet, n: int | None) -> ImageSet:
    """The first n images (all when n is None)."""
    return dataclasses.replace(images, images=images.images[:n], labels=images.labels[:n]) if n else images
