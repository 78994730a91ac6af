"""Batch mixing: MixUp and CutMix, the two augmentations that change the labels."""

from __future__ import annotations

import torch
from torch import Tensor

from trainables.augment.common import dirichlet

# ---------------------------------------------------------------------------------------------------
# mixup, cutmix: torchvision.transforms.v2.MixUp / CutMix(alpha=1.0) on soft labels. These are PER BATCH
# by design: one lambda ~ Beta(1, 1) (and one box) per batch, each image paired with the batch rolled
# by one, as torchvision does and as the authors use it (they call torchvision's MixUp / CutMix on the
# whole batch in their training_step); the batch order is random, so the pairs are. Written by hand
# because torchvision's classes draw from the global RNG (no generator argument) and need a host sync
# (float(lam)); the arithmetic is theirs, and the tests compare with them given the same draws.
# ---------------------------------------------------------------------------------------------------

MIX_ALPHA = 1.0  # Beta(alpha, alpha) for lambda


def _mix(t: Tensor, lam: Tensor) -> Tensor:
    """lam * t + (1 - lam) * t.roll(1), torchvision's `t.roll(1, 0).mul_(1 - lam).add_(t.mul(lam))`
    with its rounding: 1 - lam in float64 (a Python float there), each factor cast to t's dtype."""
    lam = lam.double()
    return t.roll(1, 0) * (1.0 - lam).to(t.dtype) + t * lam.to(t.dtype)


def mixup_params(generator: torch.Generator, device: torch.device) -> Tensor:
    """lambda ~ Beta(alpha, alpha), one per batch: a 0-dim float32 tensor on `device`."""
    return dirichlet(MIX_ALPHA, (2,), generator, torch.device(device))[0]


def mixup_apply(x: Tensor, y: Tensor, lam: Tensor) -> tuple[Tensor, Tensor]:
    """MixUp of images x (B, C, H, W) and soft labels y (B, K) with the batch rolled by one."""
    return _mix(x, lam).clamp(0.0, 1.0), _mix(y, lam)  # clamp: 1-ulp overshoot of lam + (1 - lam)


def mixup(x: Tensor, y: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """MixUp(alpha=1): x, y -> lam (x, y) + (1 - lam) (x, y).roll(1), one lam per batch."""
    return mixup_apply(x, y, mixup_params(generator, x.device))


def cutmix_params(
    generator: torch.Generator, device: torch.device, size: tuple[int, int]
) -> tuple[Tensor, Tensor]:
    """One draw per batch, in torchvision's order: lambda ~ Beta(alpha, alpha) (0-dim float32) and
    the box centre (x, y) (2,) long, uniform over the pixels of an image of `size` (H, W)."""
    height, width = size
    device = torch.device(device)
    lam = dirichlet(MIX_ALPHA, (2,), generator, device)[0]
    r_x = torch.randint(width, (), generator=generator, device=device)
    r_y = torch.randint(height, (), generator=generator, device=device)
    return lam, torch.stack([r_x, r_y])


def cutmix_box(lam: Tensor, centre: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """torchvision `CutMix.make_params` from its draws: the box (x1, y1, x2, y2) (4,) long of half-
    sides int(0.5 sqrt(1 - lam) * side) about `centre`, clipped to the image, and lambda corrected to
    the area actually pasted, 1 - box area / image area (0-dim float64, as torchvision's Python float)."""
    height, width = size
    r = 0.5 * torch.sqrt(1.0 - lam.double())
    r_x, r_y = centre.unbind()
    half_w, half_h = torch.trunc(r * width).long(), torch.trunc(r * height).long()
    x1, y1 = (r_x - half_w).clamp(min=0), (r_y - half_h).clamp(min=0)
    x2, y2 = (r_x + half_w).clamp(max=width), (r_y + half_h).clamp(max=height)
    lam_adjusted = 1.0 - ((x2 - x1) * (y2 - y1)).double() / (width * height)
    return torch.stack([x1, y1, x2, y2]), lam_adjusted


def cutmix_apply(x: Tensor, y: Tensor, box: Tensor, lam_adjusted: Tensor) -> tuple[Tensor, Tensor]:
    """Paste the `box` (x1, y1, x2, y2) of the batch rolled by one into x (B, C, H, W) and mix the soft
    labels y (B, K) with `lam_adjusted`. A mask instead of slicing: the box stays on the device."""
    H, W = x.shape[-2:]
    x1, y1, x2, y2 = box.unbind()
    rows = torch.arange(H, device=x.device).unsqueeze(1)  # (H, 1)
    cols = torch.arange(W, device=x.device)  # (W,)
    inside = (rows >= y1) & (rows < y2) & (cols >= x1) & (cols < x2)  # (H, W)
    return torch.where(inside, x.roll(1, 0), x), _mix(y, lam_adjusted)


def cutmix(x: Tensor, y: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """CutMix(alpha=1): one box of the rolled batch pasted into every image, labels mixed by area."""
    size = x.shape[-2:]
    box, lam_adjusted = cutmix_box(*cutmix_params(generator, x.device, size), size)
    return cutmix_apply(x, y, box, lam_adjusted)
