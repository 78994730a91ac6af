"""Spatter (extra corruption): water drops (severities 1-3 at small sizes) or mud (4-5).

Tables: hendrycks/robustness ImageNet-C/create_c/make_cifar_c.py ("cifar"),
make_tinyimagenet_c.py ("tinyimagenet"), make_imagenet_c.py ("imagenet").

The water branch of the reference runs a chain of OpenCV calls on a uint8 "liquid" layer: Canny
edges (50, 150), an L2 distance transform to the edges (5x5 chamfer mask), truncation at 20, 3x3 box
blurs, histogram equalisation and an embossing filter. OpenCV has no batched or GPU form of these,
so each is written here over (B, 1, H, W) on any device, following OpenCV's definitions (Sobel with
replicated borders, L1 gradient magnitude, 4-direction non-maximum suppression with 8-connected
hysteresis; chamfer costs 1, 1.4, 2.1969; equalizeHist's rounding LUT).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from trainables.corruptions import _ops

Table = dict[str, tuple]

SPATTER: Table = {  # (mean, std, sigma, threshold, intensity or mud sigma, 0 = water / 1 = mud)
    "cifar": ((0.62, 0.1, 0.7, 0.7, 0.5, 0), (0.65, 0.1, 0.8, 0.7, 0.5, 0),  # make_cifar_c.py
              (0.65, 0.3, 1, 0.69, 0.5, 0), (0.65, 0.1, 0.7, 0.69, 0.6, 1), (0.65, 0.1, 0.5, 0.68, 0.6, 1)),
    "tinyimagenet": ((0.62, 0.1, 0.7, 0.7, 0.6, 0), (0.65, 0.1, 0.8, 0.7, 0.6, 0),  # make_tinyimagenet_c.py
                     (0.65, 0.3, 1, 0.69, 0.6, 0), (0.65, 0.1, 0.7, 0.68, 0.6, 1),
                     (0.65, 0.1, 0.5, 0.67, 0.6, 1)),
    "imagenet": ((0.65, 0.3, 4, 0.69, 0.6, 0), (0.65, 0.3, 3, 0.68, 0.6, 0),  # make_imagenet_c.py
                 (0.65, 0.3, 2, 0.68, 0.5, 0), (0.65, 0.3, 1, 0.65, 1.5, 1), (0.67, 0.4, 1, 0.65, 1.5, 1)),
}
WATER_BGR = (175 / 255, 238 / 255, 238 / 255)  # "pale turquoise", added to channels 0, 1, 2 as given
MUD_RGB = (63 / 255, 42 / 255, 20 / 255)


def spatter(x: Tensor, severity: int, table: str, generator: torch.Generator | None) -> Tensor:
    mean, std, sigma, threshold, strength, mud = SPATTER[table][severity - 1]
    b, _, h, w = x.shape
    liquid = _ops.randn((b, 1, h, w), generator, x.device, mean=mean, std=std).to(torch.float64)
    liquid = _ops.gaussian_filter(liquid, sigma)
    liquid = torch.where(liquid < threshold, 0.0, liquid)
    if mud:
        return _mud(x, liquid, threshold, strength)
    return _water(x, liquid, strength)


def _mud(x: Tensor, liquid: Tensor, threshold: float, sigma: float) -> Tensor:
    m = _ops.gaussian_filter((liquid > threshold).to(torch.float32), sigma)
    m = torch.where(m < 0.8, 0.0, m).to(x.dtype)
    colour = torch.tensor(MUD_RGB, dtype=x.dtype, device=x.device)[:, None, None]
    return x * (1 - m) + colour * m


def _water(x: Tensor, liquid: Tensor, strength: float) -> Tensor:
    # (liquid * 255).astype(uint8); values above 1 would wrap in numpy, we saturate (they are rare:
    # the smoothed field stays below 1 for the table's means and spreads)
    liquid8 = torch.floor(liquid * 255).clamp(0, 255)
    dist = 255 - _canny(liquid8, 50, 150)
    dist = _distance_to_zero(dist).clamp(max=20)  # cv2.threshold(..., 20, 20, THRESH_TRUNC)
    dist = torch.floor(_box3(dist))  # cv2.blur(dist, (3, 3)).astype(np.uint8)
    dist = _equalize_hist(dist)
    emboss = torch.tensor([[-2.0, -1, 0], [-1, 1, 1], [0, 1, 2]], dtype=dist.dtype, device=dist.device)
    dist = torch.round(_ops.correlate2d(dist, emboss, mode="mirror")).clamp(0, 255)  # CV_8U output
    dist = _box3(dist)
    m = liquid8 * dist
    peak = m.amax(dim=(2, 3), keepdim=True)
    m = torch.where(peak > 0, m / peak.clamp_min(1e-12), 0.0) * strength
    colour = torch.tensor(WATER_BGR, dtype=torch.float64, device=x.device)[:, None, None]
    return x + (m * colour).to(x.dtype)


def _box3(img: Tensor) -> Tensor:
    """cv2.blur(img, (3, 3)): 3x3 mean, BORDER_REFLECT_101."""
    k = torch.full((3,), 1 / 3, dtype=torch.float64)
    return _ops.correlate_separable(img, k, k, mode="mirror")


def _shift(img: Tensor, dy: int, dx: int, fill: float) -> Tensor:
    """out[r, c] = img[r + dy, c + dx], `fill` outside the image."""
    h, w = img.shape[-2:]
    padded = F.pad(img, (1 + abs(dx), 1 + abs(dx), 1 + abs(dy), 1 + abs(dy)), value=fill)
    oy, ox = 1 + abs(dy) + dy, 1 + abs(dx) + dx
    return padded[..., oy:oy + h, ox:ox + w]


def _canny(img: Tensor, low: float, high: float) -> Tensor:
    """cv2.Canny(img, low, high) (aperture 3, L1 gradient) on (B, 1, H, W) uint8 levels -> 0/255."""
    sobel_dx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=img.dtype)
    # integer kernels on integer levels: round away the float error of the separable split
    dx = torch.round(_ops.correlate2d(img, sobel_dx, mode="nearest"))  # BORDER_REPLICATE
    dy = torch.round(_ops.correlate2d(img, sobel_dx.T.contiguous(), mode="nearest"))
    mag = dx.abs() + dy.abs()
    ax, ay = dx.abs(), dy.abs()
    tg22 = int(0.4142135623730950488016887242097 * (1 << 15) + 0.5)  # OpenCV's fixed-point tan
    horizontal = ay * (1 << 15) < ax * tg22
    vertical = ~horizontal & (ay * (1 << 15) > ax * tg22 + ax * (1 << 16))
    same_sign = (dx * dy) >= 0
    n = {(r, c): _shift(mag, r, c, 0.0) for r in (-1, 0, 1) for c in (-1, 0, 1)}  # zero border
    is_max = torch.where(
        horizontal, (mag > n[0, -1]) & (mag >= n[0, 1]),
        torch.where(vertical, (mag > n[-1, 0]) & (mag >= n[1, 0]),
                    torch.where(same_sign, (mag > n[-1, -1]) & (mag > n[1, 1]),
                                (mag > n[-1, 1]) & (mag > n[1, -1]))))
    candidate = is_max & (mag > low)
    edges = candidate & (mag > high)
    while True:  # hysteresis: grow strong edges through 8-connected candidates
        grown = candidate & (F.max_pool2d(edges.to(img.dtype), 3, 1, 1) > 0)
        if torch.equal(grown | edges, edges):
            return edges.to(img.dtype) * 255
        edges = grown | edges


_CHAMFER_5X5 = [((dy, dx), cost) for dy in range(-2, 3) for dx in range(-2, 3)
                for cost in [{1: 1.0, 2: 1.4, 5: 2.1969}.get(dy * dy + dx * dx)] if cost is not None]


def _distance_to_zero(img: Tensor, cap: float = 20.0) -> Tensor:
    """cv2.distanceTransform(img, DIST_L2, 5): chamfer distance to the nearest zero pixel (costs 1,
    1.4, 2.1969), by min-plus relaxation; exact up to `cap` (enough relaxations for any path up to
    cap, every step costing at least 1), values beyond reported as >= cap."""
    big = 1e4
    d = torch.where(img == 0, 0.0, big).to(torch.float64)
    for _ in range(int(cap) + 1):
        best = d
        for (dy, dx), cost in _CHAMFER_5X5:
            best = torch.minimum(best, _shift(d, dy, dx, big) + cost)
        if torch.equal(best, d):
            break
        d = best
    return d


def _equalize_hist(img: Tensor) -> Tensor:
    """cv2.equalizeHist per image on (B, 1, H, W) integer levels: LUT round(cumsum * 255 / (N - n0))
    from the first occupied level n0's count, that level mapped to 0."""
    b = img.shape[0]
    levels = img.reshape(b, -1).long()
    total = levels.shape[1]
    hist = torch.zeros(b, 256, dtype=torch.float64, device=img.device).scatter_add_(
        1, levels, torch.ones_like(levels, dtype=torch.float64))
    first = (hist > 0).to(torch.int8).argmax(dim=1, keepdim=True)
    first_count = hist.gather(1, first)
    cum = hist.cumsum(1) - first_count  # counts above the first occupied level
    scale = 255 / (total - first_count).clamp_min(1)
    lut = torch.round(cum * scale).clamp(0, 255)
    lut = torch.where(first_count == total, first.to(lut.dtype), lut)  # one level: cv2 keeps it
    return lut.gather(1, levels).reshape(img.shape).to(img.dtype)
