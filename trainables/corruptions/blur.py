"""Blur corruptions: defocus (disk), glass (local pixel copies), motion, zoom, gaussian.

Tables: hendrycks/robustness ImageNet-C/create_c/make_cifar_c.py ("cifar"),
make_tinyimagenet_c.py ("tinyimagenet"), make_imagenet_c.py ("imagenet").
"""

from __future__ import annotations

import functools
import math
import warnings

import numpy as np
import torch
from torch import Tensor

from trainables.corruptions import _ops

Table = dict[str, tuple]

# ---------------------------------------------------------------------------------------------
# Defocus blur: correlate with an anti-aliased disk (cv2.filter2D, BORDER_REFLECT_101).

DEFOCUS_BLUR: Table = {  # (disk radius, alias_blur sigma)
    "cifar": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),  # make_cifar_c.py
    "tinyimagenet": ((0.5, 0.6), (1, 0.1), (1.5, 0.1), (2.5, 0.01), (3, 0.1)),  # make_tinyimagenet_c.py
    "imagenet": ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)),  # make_imagenet_c.py
}


def defocus_blur(x: Tensor, severity: int, table: str, generator: torch.Generator | None) -> Tensor:
    radius, alias_blur = DEFOCUS_BLUR[table][severity - 1]
    return _ops.correlate2d(x, disk_kernel(radius, alias_blur), mode="mirror")


@functools.lru_cache(maxsize=64)
def disk_kernel(radius: float, alias_blur: float) -> Tensor:
    """The reference's `disk`: a normalised binary disk on a grid of half-width max(8, radius),
    smoothed by cv2.GaussianBlur (3x3, or 5x5 beyond radius 8; BORDER_REFLECT_101) to antialias."""
    half = 8 if radius <= 8 else radius
    ksize = 3 if radius <= 8 else 5
    grid = torch.arange(-half, half + 1, dtype=torch.float64)
    aliased = ((grid[None, :] ** 2 + grid[:, None] ** 2) <= radius**2).to(torch.float32)
    aliased = (aliased / aliased.sum()).to(torch.float64)
    g = _cv2_gaussian_kernel(ksize, alias_blur)
    return _ops.correlate_separable(aliased, g, g, mode="mirror").to(torch.float32)


def _cv2_gaussian_kernel(ksize: int, sigma: float) -> Tensor:
    """cv2.getGaussianKernel(ksize, sigma) for sigma > 0."""
    x = torch.arange(ksize, dtype=torch.float64) - (ksize - 1) / 2
    k = torch.exp(-0.5 * x**2 / sigma**2)
    return k / k.sum()


# ---------------------------------------------------------------------------------------------
# Glass blur: gaussian, quantise to uint8, local pixel "swaps", gaussian.
#
# The reference loops over positions (h, w), h and w from size - d down to d + 1, and does
# `x[h, w], x[h', w'] = x[h', w'], x[h, w]` with (dx, dy) = randint(-d, d, 2). On a numpy image
# the right-hand side holds *views* of the two RGB rows, so after the first assignment the second
# writes x[h', w'] back onto itself: the "swap" is a copy x[h, w] <- x[h', w']. We reproduce what
# the code does. Each step copies into p = (h, w) the *current* value of q = p + (dy, dx); q's value
# is final if q was already visited this pass (visits go in decreasing raster order), else it is
# still the pass's input. So the pass is a gather x_out = x_in[src] whose index we resolve by
# pointer jumping on (B, H*W) integer tensors: exact, batched, O(log chain) steps per pass.

GLASS_BLUR: Table = {  # (sigma, max_delta d, iterations)
    "cifar": ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),  # make_cifar_c.py
    "tinyimagenet": ((0.1, 1, 1), (0.5, 1, 1), (0.6, 1, 2), (0.7, 2, 1), (0.9, 2, 2)),  # make_tinyimagenet_c.py
    "imagenet": ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)),  # make_imagenet_c.py
}


def glass_blur(x: Tensor, severity: int, table: str, generator: torch.Generator | None) -> Tensor:
    sigma, delta, iterations = GLASS_BLUR[table][severity - 1]
    b, c, h, w = x.shape
    n = len(_glass_positions(h, w, delta))
    # Offsets per (image, pass, visited position): (dx, dy), each in [-d, d - 1] like randint.
    offsets = _ops.randint(-delta, delta, (b, iterations, n, 2), generator, x.device)
    return glass_blur_with_offsets(x, sigma, delta, offsets)


def glass_blur_with_offsets(x: Tensor, sigma: float, delta: int, offsets: Tensor) -> Tensor:
    """Glass blur given the random offsets (B, iterations, positions, 2) as (dx, dy) in visiting
    order; public so that tests can feed the reference the same draws."""
    b, c, h, w = x.shape
    y = _ops.floor_u8(_ops.gaussian_filter(x, sigma))  # np.uint8(gaussian(x) * 255)
    src = torch.arange(h * w, device=x.device).expand(b, -1)
    for k in range(offsets.shape[1]):
        src = src.gather(1, _glass_pass_source(offsets[:, k], h, w, delta))
    y = y.reshape(b, c, h * w).gather(2, src[:, None].expand(b, c, -1)).reshape(b, c, h, w)
    return _ops.gaussian_filter(y, sigma)


@functools.lru_cache(maxsize=16)
def _glass_positions(h: int, w: int, delta: int) -> tuple[int, ...]:
    """Flat indices of the visited positions, in visiting order (h, then w, both decreasing)."""
    return tuple(r * w + col for r in range(h - delta, delta, -1) for col in range(w - delta, delta, -1))


def _glass_pass_source(offsets: Tensor, h: int, w: int, delta: int) -> Tensor:
    """(B, H*W) index: one pass's output at p is its input at the returned index."""
    b = offsets.shape[0]
    device = offsets.device
    pos = torch.tensor(_glass_positions(h, w, delta), device=device)  # (n,)
    q = pos + offsets[..., 1] * w + offsets[..., 0]  # (B, n) the position each step reads
    visited = torch.zeros(h * w, dtype=torch.bool, device=device)
    visited[pos] = True
    # q was already written in this pass iff it is a visited position later in raster order.
    linked = visited[q] & (q > pos)
    ident = torch.arange(h * w, device=device).expand(b, -1)
    pointer = ident.scatter(1, pos.expand(b, -1), torch.where(linked, q, pos))
    read = ident.scatter(1, pos.expand(b, -1), q)  # what an unlinked step reads from the input
    while True:  # pointer jumping: follow links to the step that read the pass's input
        jumped = pointer.gather(1, pointer)
        if torch.equal(jumped, pointer):
            break
        pointer = jumped
    return read.gather(1, pointer)


# ---------------------------------------------------------------------------------------------
# Motion blur. The reference calls ImageMagick's MotionBlurImage through Wand; we follow
# bethgelab/imagecorruptions' numpy re-implementation `_motion_blur`: a one-sided gaussian kernel of
# width 2 radius + 1 along a line at `angle`, taps at integer offsets ceil(i sin / cos - 0.5),
# edge pixels replicated, taps beyond the image dropped. ImageMagick's 8-bit output truncates: with
# ImageMagick 6.9.11 (Q16) the scripts' Wand call equals floor(255 * this blur) up to 0.003/255 mean
# absolute difference, where rounding (imagecorruptions' choice) is off by 0.5/255 on average.

MOTION_BLUR: Table = {  # (radius, sigma); angle ~ U(-45, 45) degrees per image
    "cifar": ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),  # make_cifar_c.py
    "tinyimagenet": ((10, 1), (10, 1.5), (10, 2), (10, 2.5), (12, 3)),  # make_tinyimagenet_c.py
    "imagenet": ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)),  # make_imagenet_c.py
}


def motion_blur(x: Tensor, severity: int, table: str, generator: torch.Generator | None) -> Tensor:
    radius, sigma = MOTION_BLUR[table][severity - 1]
    angles = _ops.rand((x.shape[0],), generator, x.device, -45.0, 45.0)
    return _ops.floor_u8(line_blur(x, radius, sigma, angles))


def line_blur(x: Tensor, radius: int, sigma: float, angles: Tensor) -> Tensor:
    """imagecorruptions' `_motion_blur` over a batch: x (B, C, H, W), angles (B,) in degrees."""
    b, c, h, w = x.shape
    width = 2 * radius + 1
    i = torch.arange(width, dtype=torch.float64, device=x.device)
    kernel = torch.exp(-(i**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    rad = torch.deg2rad(angles.to(torch.float64))
    px, py = width * torch.sin(rad), width * torch.cos(rad)
    hyp = torch.hypot(px, py)
    dy = -torch.ceil(i * px[:, None] / hyp[:, None] - 0.5).long()  # (B, width)
    dx = -torch.ceil(i * py[:, None] / hyp[:, None] - 0.5).long()
    # the reference stops at the first tap that leaves the image (`break`), per image
    keep = torch.cumprod(((dy.abs() < h) & (dx.abs() < w)).long(), dim=1)
    weights = (kernel * keep).to(x.dtype)  # (B, width)
    flat = x.reshape(b, c, h * w)
    rows, cols = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    out = torch.zeros_like(x)
    for t in range(width):
        r = (rows[None, :] - dy[:, t, None]).clamp(0, h - 1)  # shifted[h] = x[clamp(h - dy)]
        s = (cols[None, :] - dx[:, t, None]).clamp(0, w - 1)
        index = (r[:, :, None] * w + s[:, None, :]).reshape(b, 1, h * w).expand(b, c, -1)
        out += weights[:, t, None, None, None] * flat.gather(2, index).reshape(b, c, h, w)
    return out


# ---------------------------------------------------------------------------------------------
# Zoom blur: the mean of the image and its centre zooms by each factor (the authors' clipped_zoom:
# crop ceil(size / z) centred, scipy.ndimage.zoom order 1, trim the centre). Deterministic, so the
# whole average is one fixed sparse linear operator per (size, severity), applied as one matmul.

ZOOM_BLUR: Table = {  # zoom factors; np.arange exactly as in the scripts (float quirks included)
    "cifar": (np.arange(1, 1.06, 0.01), np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01),  # make_cifar_c.py
              np.arange(1, 1.21, 0.01), np.arange(1, 1.26, 0.01)),
    "tinyimagenet": (np.arange(1, 1.06, 0.01), np.arange(1, 1.11, 0.01),  # make_tinyimagenet_c.py
                     np.arange(1, 1.16, 0.01), np.arange(1, 1.21, 0.01), np.arange(1, 1.26, 0.01)),
    "imagenet": (np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01), np.arange(1, 1.21, 0.02),  # make_imagenet_c.py
                 np.arange(1, 1.26, 0.02), np.arange(1, 1.31, 0.03)),
}


def zoom_blur(x: Tensor, severity: int, table: str, generator: torch.Generator | None) -> Tensor:
    b, c, h, w = x.shape
    operator = _zoom_operator(h, w, table, severity, str(x.device)).to(x.dtype)
    planes = x.reshape(b * c, h * w).T  # (HW, B C)
    return torch.sparse.mm(operator, planes).T.reshape(b, c, h, w)


@functools.lru_cache(maxsize=32)
def _zoom_operator(h: int, w: int, table: str, severity: int, device: str) -> Tensor:
    """(HW, HW) sparse CSR: (identity + sum of zooms) / (number of factors + 1). A 2-D zoom is the
    Kronecker product of the two 1-D maps; built from their non-zeros (2 per row) directly."""
    factors = [float(z) for z in ZOOM_BLUR[table][severity - 1]]
    rows, cols, vals = [torch.arange(h * w)], [torch.arange(h * w)], [torch.ones(h * w, dtype=torch.float64)]
    for z in factors:
        (ry, cy, vy), (rx, cx, vx) = _nonzeros(clipped_zoom_matrix(h, z)), _nonzeros(clipped_zoom_matrix(w, z))
        rows.append((ry[:, None] * w + rx[None, :]).flatten())
        cols.append((cy[:, None] * w + cx[None, :]).flatten())
        vals.append((vy[:, None] * vx[None, :]).flatten())
    values = torch.cat(vals) / (len(factors) + 1)
    with warnings.catch_warnings():  # "sparse CSR is beta": matmul with it is all we use
        warnings.simplefilter("ignore", UserWarning)
        coo = torch.sparse_coo_tensor(torch.stack([torch.cat(rows), torch.cat(cols)]), values,
                                      (h * w, h * w), check_invariants=True).coalesce()
        return coo.to_sparse_csr().to(torch.float32).to(device)


def _nonzeros(m: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    r, c = torch.nonzero(m, as_tuple=True)
    return r, c, m[r, c]


def clipped_zoom_matrix(n: int, z: float) -> Tensor:
    """(n, n) 1-D linear map of the authors' clipped_zoom along one axis."""
    ch = int(math.ceil(n / z))
    top = (n - ch) // 2
    n_out = int(round(ch * z))  # scipy.ndimage.zoom's output size
    trim = (n_out - n) // 2
    coords = _ops.scipy_zoom_coords(ch, n_out)[trim:trim + n]
    m = torch.zeros(n, n, dtype=torch.float64)
    m[:, top:top + ch] = _ops.linear_matrix(coords, ch, mode="nearest")
    return m


# ---------------------------------------------------------------------------------------------
# Gaussian blur (extra): skimage.filters.gaussian, i.e. scipy gaussian_filter, mode 'nearest',
# truncate 4.

GAUSSIAN_BLUR: Table = {  # sigma in pixels
    "cifar": (0.4, 0.6, 0.7, 0.8, 1.0),  # make_cifar_c.py
    "tinyimagenet": (0.5, 0.75, 1.0, 1.25, 1.5),  # make_tinyimagenet_c.py
    "imagenet": (1, 2, 3, 4, 6),  # make_imagenet_c.py
}


def gaussian_blur(x: Tensor, severity: int, table: str, generator: torch.Generator | None) -> Tensor:
    return _ops.gaussian_filter(x, GAUSSIAN_BLUR[table][severity - 1])
