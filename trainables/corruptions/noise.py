"""Noise corruptions: gaussian, shot (Poisson), impulse (salt and pepper), speckle.

Every table has one row per resolution table and one entry per severity 1..5, copied from the
benchmark authors' scripts in hendrycks/robustness, ImageNet-C/create_c/: make_cifar_c.py ("cifar"),
make_tinyimagenet_c.py ("tinyimagenet"), make_imagenet_c.py ("imagenet"; the same constants as
bethgelab/imagecorruptions). Functions take x float (B, C, H, W) in [0, 1] and return the corrupted
batch unclipped-or-clipped; `corrupt` clips and quantises.
"""

from __future__ import annotations

import torch
from torch import Tensor

from trainables.corruptions import _ops

Table = dict[str, tuple]

GAUSSIAN_NOISE: Table = {  # noise standard deviation on [0, 1]
    "cifar": (0.04, 0.06, 0.08, 0.09, 0.10),  # make_cifar_c.py
    "tinyimagenet": (0.04, 0.08, 0.12, 0.15, 0.18),  # make_tinyimagenet_c.py
    "imagenet": (0.08, 0.12, 0.18, 0.26, 0.38),  # make_imagenet_c.py
}


def gaussian_noise(x: Tensor, severity: int, table: str, generator: torch.Generator | None) -> Tensor:
    """x + N(0, c^2), independently per pixel and channel."""
    c = GAUSSIAN_NOISE[table][severity - 1]
    return x + _ops.randn(x.shape, generator, x.device, std=c)


SHOT_NOISE: Table = {  # photons per unit intensity: Poisson(x c) / c
    "cifar": (500, 250, 100, 75, 50),  # make_cifar_c.py
    "tinyimagenet": (250, 100, 50, 30, 15),  # make_tinyimagenet_c.py
    "imagenet": (60, 25, 12, 5, 3),  # make_imagenet_c.py
}


def shot_noise(x: Tensor, severity: int, table: str, generator: torch.Generator | None) -> Tensor:
    """Poisson(x c) / c: photon noise, variance x / c."""
    c = SHOT_NOISE[table][severity - 1]
    return _ops.poisson(x * c, generator) / c


IMPULSE_NOISE: Table = {  # share of values replaced (skimage random_noise 's&p' amount)
    "cifar": (0.01, 0.02, 0.03, 0.05, 0.07),  # make_cifar_c.py
    "tinyimagenet": (0.01, 0.02, 0.05, 0.08, 0.14),  # make_tinyimagenet_c.py
    "imagenet": (0.03, 0.06, 0.09, 0.17, 0.27),  # make_imagenet_c.py
}


def impulse_noise(x: Tensor, severity: int, table: str, generator: torch.Generator | None) -> Tensor:
    """skimage.util.random_noise(mode='s&p', amount=c, salt_vs_pepper=0.5) as skimage >= 0.19 does
    it: every value (each channel of each pixel separately) is replaced with probability c, by 1 or
    0 with equal odds. (skimage <= 0.18, which the 2018 release used, drew ceil(c N / 2) positions
    with replacement for salt and again for pepper: the same expected share up to collisions.)"""
    c = IMPULSE_NOISE[table][severity - 1]
    flipped = _ops.rand(x.shape, generator, x.device) <= c
    salted = _ops.rand(x.shape, generator, x.device) <= 0.5
    return torch.where(flipped, salted.to(x.dtype), x)


SPECKLE_NOISE: Table = {  # multiplicative noise standard deviation
    "cifar": (0.06, 0.1, 0.12, 0.16, 0.2),  # make_cifar_c.py
    "tinyimagenet": (0.15, 0.2, 0.25, 0.3, 0.35),  # make_tinyimagenet_c.py
    "imagenet": (0.15, 0.2, 0.35, 0.45, 0.6),  # make_imagenet_c.py
}


def speckle_noise(x: Tensor, severity: int, table: str, generator: torch.Generator | None) -> Tensor:
    """x + x N(0, c^2)."""
    c = SPECKLE_NOISE[table][severity - 1]
    return x + x * _ops.randn(x.shape, generator, x.device, std=c)
