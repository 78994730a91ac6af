"""Geometric kernels over (B, C, H, W) batches with one set of parameters per image: flips, padded
crops and affine warps. `batch_affine` reproduces torchvision's tensor kernel (the TrivialAugment,
RandAugment, AutoAugment and AugMix ops); `pil_affine` reproduces PIL's `Image.transform(AFFINE)`
(the AugMix / IPMix reference code's ops)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from trainables.augment.common import per_image

def inverse_affine_matrix(angle: Tensor, translate: Tensor, shear: Tensor, center: Tensor) -> Tensor:
    """Per-image port of torchvision's `_get_inverse_affine_matrix` (scale 1, inverted=True).

    angle (B,) degrees; translate (B, 2) pixels (x, y); shear (B, 2) degrees (x, y); center (B, 2)
    pixels relative to the image centre. Returns (B, 2, 3) float64: maps an output pixel (centred
    coordinates) to the input pixel it samples. float64 because torchvision does this in Python floats.
    """
    rot = torch.deg2rad(angle.double())
    sx, sy = torch.deg2rad(shear.double()).unbind(-1)
    cx, cy = center.double().unbind(-1)
    tx, ty = translate.double().unbind(-1)
    # RotateScaleShear = R(a) * SHy(sy) * SHx(sx); det == 1 so its inverse is [[d, -b], [-c, a]].
    a = torch.cos(rot - sy) / torch.cos(sy)
    b = -(a * torch.tan(sx) + torch.sin(rot))
    c = torch.sin(rot - sy) / torch.cos(sy)
    d = torch.cos(rot) - c * torch.tan(sx)
    m0, m1, m3, m4 = d, -b, -c, a
    # C * RSS^-1 * C^-1 * T^-1
    m2 = cx - m0 * (cx + tx) - m1 * (cy + ty)
    m5 = cy - m3 * (cx + tx) - m4 * (cy + ty)
    return torch.stack([m0, m1, m2, m3, m4, m5], dim=-1).view(-1, 2, 3)


def batch_affine(x: Tensor, matrix: Tensor, interpolation: str = "nearest") -> Tensor:
    """Warp each image by its own inverse affine `matrix` (B, 2, 3) (see `inverse_affine_matrix`).

    interpolation "nearest" (torchvision's default for RandomRotation, TrivialAugmentWide, RandAugment,
    AutoAugment) or "bilinear" (AugMix's); fill 0 outside. The grid is built exactly like
    torchvision's `_affine_grid` (pixel-centred coordinates, rescaled after applying theta) rather than
    with `F.affine_grid`, so that nearest sampling hits the same source pixel as torchvision, including
    at exact half-pixel ties.
    x (B, C, H, W) -> (B, C, H, W).
    """
    B, C, H, W = x.shape
    theta = matrix.to(x.dtype)
    xs = torch.linspace((1.0 - W) * 0.5, (W - 1.0) * 0.5, steps=W, device=x.device, dtype=x.dtype)
    ys = torch.linspace((1.0 - H) * 0.5, (H - 1.0) * 0.5, steps=H, device=x.device, dtype=x.dtype)
    ones = torch.ones(H, W, device=x.device, dtype=x.dtype)
    base = torch.stack([xs.expand(H, W), ys.unsqueeze(-1).expand(H, W), ones], dim=-1)  # (H, W, 3)
    theta_t = theta.transpose(1, 2)  # (B, 3, 2)
    rescaled = torch.stack([theta_t[..., 0] / (0.5 * W), theta_t[..., 1] / (0.5 * H)], dim=-1)
    grid = torch.matmul(base.view(1, H * W, 3), rescaled).view(B, H, W, 2)
    # padding_mode="zeros" == torchvision's fill=None (plain grid_sample), and its fill=0 for nearest.
    return F.grid_sample(x, grid, mode=interpolation, padding_mode="zeros", align_corners=False)


def batch_rotate(x: Tensor, angles: Tensor) -> Tensor:
    """Rotate each image counter-clockwise by `angles` (B,) degrees about its centre, nearest, fill 0,
    same size: torchvision `F.rotate(img, angle)` per image. x (B, C, H, W) -> (B, C, H, W)."""
    zeros = angles.new_zeros(angles.shape[0], 2)
    # torchvision's rotate builds the matrix from -angle (its rotate and affine disagree on direction).
    return batch_affine(x, inverse_affine_matrix(-angles, zeros, zeros, zeros))


def batch_flip(x: Tensor, flip: Tensor) -> Tensor:
    """Mirror left-right the images where `flip` (B,) bool is set. x (B, C, H, W) -> (B, C, H, W)."""
    return torch.where(per_image(flip), x.flip(-1), x)


def batch_crop(x: Tensor, offsets: Tensor, padding: int = 4) -> Tensor:
    """Zero-pad by `padding`, then cut each image's H x W window at its own `offsets` (B, 2) long
    (top, left) in [0, 2 * padding]: torchvision `F.crop(F.pad(img, [padding]), top, left, H, W)`.
    x (B, C, H, W) -> (B, C, H, W)."""
    B, _, H, W = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))  # (B, C, H + 2p, W + 2p)
    return windows(padded, torch.arange(B, device=x.device), offsets, (H, W))


def windows(source: Tensor, rows: Tensor, offsets: Tensor, size: tuple[int, int]) -> Tensor:
    """Cut from image `rows` (B,) of `source` (N, C, H', W') the `size` (h, w) window at `offsets`
    (B, 2) long (top, left). One indexing op on the view of all windows instead of a per-image slice
    (4x faster on CPU than two gathers). -> (B, C, h, w)."""
    h, w = size
    every = source.unfold(2, h, 1).unfold(3, w, 1)  # view (N, C, H' - h + 1, W' - w + 1, h, w)
    return every[rows, :, offsets[:, 0], offsets[:, 1]]


def pil_affine(x: Tensor, coefficients: Tensor) -> Tensor:
    """PIL's `Image.transform(size, AFFINE, (a, b, c, d, e, f), BILINEAR)` with per-image
    `coefficients` (B, 6): the output pixel (i, j) samples the input at (a (i + .5) + b (j + .5) + c,
    d (i + .5) + e (j + .5) + f) (PIL's pixel-centre convention); a sample outside [0, W) x [0, H)
    is 0 (PIL's fill), one inside blends its neighbours with the edge pixels repeated (PIL clamps
    the neighbour indices, which is grid_sample's border padding for align_corners=False).
    Float throughout, where PIL rounds the result to uint8. x (B, C, H, W) -> (B, C, H, W)."""
    B, _, H, W = x.shape
    a, b, c, d, e, f = coefficients.to(torch.float64).view(B, 6, 1, 1).unbind(1)  # each (B, 1, 1)
    cols = torch.arange(W, device=x.device, dtype=torch.float64) + 0.5  # (W,)
    rows = torch.arange(H, device=x.device, dtype=torch.float64).unsqueeze(1) + 0.5  # (H, 1)
    x_in, y_in = a * cols + b * rows + c, d * cols + e * rows + f  # (B, H, W) input coordinates
    inside = (x_in >= 0) & (x_in < W) & (y_in >= 0) & (y_in < H)  # (B, H, W)
    grid = torch.stack([2 * x_in / W - 1, 2 * y_in / H - 1], dim=-1).to(x.dtype)  # (B, H, W, 2)
    sampled = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return torch.where(inside.unsqueeze(1), sampled, 0.0)
