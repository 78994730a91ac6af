"""What every augmentation module shares: the `Augmentation` signature, per-image broadcasting,
symmetric Dirichlet draws with an explicit generator, and per-group dispatch over a batch."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

Augmentation = Callable[[Tensor, Tensor, torch.Generator], tuple[Tensor, Tensor]]
"""(x, y, generator) -> (x, y). x: float (B, C, H, W) in [0, 1]; y: soft labels (B, K). Pure: never
modifies its inputs. The generator lives on x's device."""

Kernel = Callable[..., Tensor]
"""(x (n, C, H, W), *params (n, ...)) -> (n, C, H, W): one group's computation on its images."""


def per_image(v: Tensor) -> Tensor:
    """(B,) -> (B, 1, 1, 1), to broadcast one value per image over (B, C, H, W)."""
    return v.view(-1, 1, 1, 1)


def dirichlet(concentration: float, shape: tuple[int, ...], generator: torch.Generator,
              device: torch.device) -> Tensor:  # fmt: skip
    """Symmetric Dirichlet draws (*shape), the last axis summing to 1. torch.distributions' Dirichlet
    and Beta take no generator, so this calls the kernel they sample with (as torchvision's AugMix
    does); Beta(a, a) is the first entry of a Dirichlet(a, a) draw, as torch's Beta computes it."""
    alphas = torch.full(shape, concentration, device=device)
    return torch._sample_dirichlet(alphas, generator=generator)


def dispatch_masked(x: Tensor, group: Tensor, kernels: Sequence[Kernel | None], *params: Tensor) -> Tensor:
    """Every group's kernel on the whole batch, picked per image with torch.where (group (B,) long
    indexes `kernels`; None is the identity): a few cheap full-batch passes, but static shapes and
    no host sync, which is what an accelerator wants."""
    out = x
    for index, kernel in enumerate(kernels):
        if kernel is not None:
            out = torch.where(per_image(group == index), kernel(x, *params), out)
    return out


def dispatch_gathered(x: Tensor, group: Tensor, kernels: Sequence[Kernel | None], *params: Tensor) -> Tensor:
    """Each group's kernel only on the images that drew it. The sub-batch sizes are read on the host,
    which costs nothing on CPU (and would be a sync on a GPU); several times faster than
    `dispatch_masked` there. Same result up to float rounding: every kernel works per image."""
    out = x.clone()
    for index, kernel in enumerate(kernels):
        if kernel is None:
            continue
        rows = (group == index).nonzero().squeeze(1)
        if rows.numel():
            out[rows] = kernel(x[rows], *(p[rows] for p in params))
    return out


def dispatch(x: Tensor, group: Tensor, kernels: Sequence[Kernel | None], *params: Tensor) -> Tensor:
    """Apply to each image the kernel of its group; params are per image (first axis B).
    Gathered on CPU, masked on accelerators (see the two functions)."""
    apply = dispatch_gathered if x.device.type == "cpu" else dispatch_masked
    return apply(x, group, kernels, *params)
