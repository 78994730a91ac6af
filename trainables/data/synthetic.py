"""``synthetic``: procedural, learnable images, deterministic from the seed, any size and class
count; for tests and CPU-scale smoke studies."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from trainables.data.base import CHUNK, DATASET_STATS, ImageSet, LoadRequest
from trainables.seeds import generator

SYNTHETIC_DEFAULT_SIZE = {"train": 2000, "test": 500}
SYNTHETIC_DEFAULT_CLASSES = 10
SYNTHETIC_DEFAULT_IMAGE_SIZE = 32


def load_synthetic(req: LoadRequest) -> ImageSet:
    names, n = _classes_and_size(req)
    size = req.image_size or SYNTHETIC_DEFAULT_IMAGE_SIZE
    prototypes = torch.stack([_prototype(req.seed, k, size) for k in range(len(names))])
    images, labels = _synthetic_images(prototypes, n, generator(req.seed, "synthetic", req.split))
    mean, std = DATASET_STATS["synthetic"]
    return ImageSet(images, labels, names, mean, std)


def count_synthetic(req: LoadRequest) -> list[tuple[str, int]]:
    """Images per class, as `load_synthetic` makes them (the labels, not the pixels)."""
    names, n = _classes_and_size(req)
    return list(zip(names, torch.bincount(_balanced_labels(n, len(names)), minlength=len(names)).tolist()))


def _classes_and_size(req: LoadRequest) -> tuple[tuple[str, ...], int]:
    num_classes = req.num_classes or SYNTHETIC_DEFAULT_CLASSES
    return tuple(f"synthetic_{k}" for k in range(num_classes)), req.synthetic_size or SYNTHETIC_DEFAULT_SIZE[req.split]


def _balanced_labels(n: int, num_classes: int) -> Tensor:
    """(n,) labels 0, 1, ..., K-1, 0, 1, ...: every class n // K or n // K + 1 times."""
    return torch.arange(n) % num_classes


def _prototype(seed: int, label: int, size: int) -> Tensor:
    """Class `label`'s pattern (3, size, size) in [0, 1]: a few low-frequency coloured waves.

    Seeded per class (not per class count) so class k looks the same whatever num_classes is; the
    integer frequencies make it periodic, so circular shifts in `_synthetic_images` leave no seam.
    """
    g = generator(seed, "prototype", label)
    waves = 3
    freqs = torch.randint(-2, 3, (3, waves, 2), generator=g).float()
    freqs[..., 0] = torch.where(freqs.abs().sum(-1) == 0, 1.0, freqs[..., 0])  # no constant waves
    amps = 0.5 + 0.5 * torch.rand(3, waves, generator=g)
    phases = 2 * math.pi * torch.rand(3, waves, generator=g)
    grid = torch.arange(size, dtype=torch.float32) / size
    angle = 2 * math.pi * (freqs[..., 0, None, None] * grid[:, None] + freqs[..., 1, None, None] * grid)
    pattern = (amps[..., None, None] * torch.cos(angle + phases[..., None, None])).sum(1)
    pattern = pattern / pattern.flatten(1).std(1).clamp_min(1e-6)[:, None, None]
    colour = 0.2 * (torch.rand(3, generator=g) - 0.5)
    return (0.5 + colour[:, None, None] + 0.18 * pattern).clamp(0, 1)


def _synthetic_images(prototypes: Tensor, n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """n class-balanced images: shifted, flipped prototype, blended with a distractor class,
    brightness/contrast jitter and pixel noise, quantised to uint8.

    The distractor blend (up to 45%) and the noise keep the task from being trivially separable.
    Per-image parameters are drawn up front, pixels rendered in chunks (float intermediates of a
    large set would not fit comfortably in memory).
    """
    num_classes, _, size, _ = prototypes.shape
    labels = _balanced_labels(n, num_classes)[torch.randperm(n, generator=g)]
    distractors = torch.randint(0, num_classes, (n,), generator=g)
    rows = _shifted_index(n, size, g)
    cols = _shifted_index(n, size, g)
    cols = torch.where(torch.rand(n, 1, generator=g) < 0.5, size - 1 - cols, cols)  # h-flip
    alpha, contrast, brightness = torch.rand(3, n, 1, 1, 1, generator=g)
    alpha, contrast, brightness = 0.45 * alpha, 0.7 + 0.6 * contrast, 0.3 * (brightness - 0.5)
    out = torch.empty((n, 3, size, size), dtype=torch.uint8)
    for start in range(0, n, CHUNK):
        i = slice(start, start + CHUNK)
        base = (1 - alpha[i]) * prototypes[labels[i]] + alpha[i] * prototypes[distractors[i]]
        base = base[torch.arange(len(base))[:, None, None, None], torch.arange(3)[None, :, None, None],
                    rows[i, None, :, None], cols[i, None, None, :]]
        noise = 0.12 * torch.randn(base.shape, generator=g)
        pixels = 0.5 + contrast[i] * (base - 0.5) + brightness[i] + noise
        out[i] = (pixels.clamp(0, 1) * 255).round()
    return out, labels


def _shifted_index(n: int, size: int, g: torch.Generator) -> Tensor:
    """(n, size) circularly shifted pixel indices, shifts uniform in [-size/4, size/4]."""
    shift = torch.randint(-(size // 4), size // 4 + 1, (n, 1), generator=g)
    return (torch.arange(size) - shift) % size
