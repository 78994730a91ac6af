"""Batched building blocks shared by the corruptions: random draws, scipy/cv2/PIL-exact filters and
resampling, written over (B, C, H, W) tensors on any device.

Why hand-written: the reference corruptions call scipy.ndimage (gaussian_filter with mode
'nearest'/'reflect' and truncate 4 or 3, zoom, map_coordinates), OpenCV (filter2D, warpAffine,
resize) and Pillow (BOX resampling). torchvision's gaussian_blur pads with torch 'reflect' (scipy's
'mirror') and takes an explicit kernel size, and its resize/affine ops use other coordinate
conventions, so they do not reproduce those pixels. The helpers below follow each library's
documented convention (kernel radius, boundary mode, coordinate mapping) exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

# ---------------------------------------------------------------------------------------------
# Random draws. Each is made on the generator's device and moved to `device`: a CPU generator with
# CUDA data is allowed and gives the same numbers as on the CPU (slower; pass a CUDA generator for
# speed). generator=None uses torch's default generator of `device`.


def gen_device(generator: torch.Generator | None, device: torch.device) -> torch.device:
    return device if generator is None else generator.device


def rand(shape: Sequence[int], generator: torch.Generator | None, device: torch.device,
         low: float = 0.0, high: float = 1.0) -> Tensor:
    """Uniform on [low, high), float32."""
    u = torch.rand(tuple(shape), generator=generator, device=gen_device(generator, device))
    return (low + (high - low) * u).to(device)


def randn(shape: Sequence[int], generator: torch.Generator | None, device: torch.device,
          mean: float = 0.0, std: float = 1.0) -> Tensor:
    z = torch.randn(tuple(shape), generator=generator, device=gen_device(generator, device))
    return (mean + std * z).to(device)


def randint(low: int, high: int, shape: Sequence[int], generator: torch.Generator | None,
            device: torch.device) -> Tensor:
    """Integers in [low, high) like numpy's randint (high exclusive)."""
    r = torch.randint(low, high, tuple(shape), generator=generator, device=gen_device(generator, device))
    return r.to(device)


def poisson(rates: Tensor, generator: torch.Generator | None) -> Tensor:
    source = gen_device(generator, rates.device)
    return torch.poisson(rates.to(source), generator=generator).to(rates.device)


# ---------------------------------------------------------------------------------------------
# Quantisation


def floor_u8(x: Tensor) -> Tensor:
    """numpy's `np.uint8(v * 255)` on v in [0, 1]: truncation toward zero. The small tolerance keeps
    a value that is a uint8 level up to float32 error (e.g. 101/255*255 = 100.99999) on that level."""
    return torch.floor(x.clamp(0, 1) * 255 + 1e-3).clamp(0, 255) / 255


# ---------------------------------------------------------------------------------------------
# Boundary handling by index: works for any padding width (torch's F.pad reflect does not when the
# padding exceeds the size), and names each library's mode.

PAD_MODES = ("nearest", "reflect", "mirror", "wrap")
"""scipy names: nearest (a a | a b c d | d d), reflect (b a | a b c d | d c; numpy 'symmetric'),
mirror (c b | a b c d | c b; cv2 BORDER_REFLECT_101, torch 'reflect'), wrap."""


def boundary_index(index: Tensor, n: int, mode: str) -> Tensor:
    """Map integer positions (any range) into [0, n) under boundary `mode`."""
    if mode == "nearest":
        return index.clamp(0, n - 1)
    if mode == "wrap":
        return index.remainder(n)
    if mode == "reflect":
        i = index.remainder(2 * n)
        return torch.where(i >= n, 2 * n - 1 - i, i)
    if mode == "mirror":
        if n == 1:
            return torch.zeros_like(index)
        i = index.remainder(2 * n - 2)
        return torch.where(i >= n, 2 * n - 2 - i, i)
    raise ValueError(f"unknown boundary mode {mode!r}; valid: {', '.join(PAD_MODES)}")


def pad(x: Tensor, before: int, after: int, dim: int, mode: str) -> Tensor:
    n = x.shape[dim]
    index = torch.arange(-before, n + after, device=x.device)
    return x.index_select(dim, boundary_index(index, n, mode))


# ---------------------------------------------------------------------------------------------
# Filters


def gaussian_kernel1d(sigma: float, truncate: float) -> Tensor:
    """scipy.ndimage's kernel: radius int(truncate * sigma + 0.5), exp(-x^2 / 2 sigma^2), sum 1."""
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * x**2 / sigma**2)
    return k / k.sum()


def correlate_separable(x: Tensor, ky: Tensor, kx: Tensor, mode: str) -> Tensor:
    """Correlate every (H, W) plane of x (..., H, W) with ky along H and kx along W (odd lengths,
    centred), boundary `mode`. Each 1-D pass is a fixed (n, n) matrix with the boundary folded in
    (`filter_matrix`), so the filter is two batched matmuls: exact for any padding width, and much
    faster than a 1-channel conv2d on the CPU at these image sizes."""
    h, w = x.shape[-2:]
    return resample(x, filter_matrix(h, ky, mode), filter_matrix(w, kx, mode))


def filter_matrix(n: int, kernel: Tensor, mode: str) -> Tensor:
    """(n, n) float64 matrix M with (M v)[i] = sum_j kernel[j] v[i + j - r] under boundary `mode`."""
    key = (n, tuple(kernel.to(torch.float64).tolist()), mode)
    if key not in _FILTER_MATRICES:
        r = len(kernel) // 2
        rows = torch.arange(n)[:, None].expand(n, len(kernel))
        cols = boundary_index(rows + torch.arange(-r, r + 1)[None, :], n, mode)
        m = torch.zeros(n, n, dtype=torch.float64)
        m.index_put_((rows.reshape(-1), cols.reshape(-1)),
                     kernel.to(torch.float64).expand(n, -1).reshape(-1), accumulate=True)
        _FILTER_MATRICES[key] = m
    return _FILTER_MATRICES[key]


_FILTER_MATRICES: dict[tuple, Tensor] = {}


def gaussian_filter(x: Tensor, sigma: float, mode: str = "nearest", truncate: float = 4.0) -> Tensor:
    """scipy.ndimage.gaussian_filter over the last two dims (what skimage.filters.gaussian does with
    its defaults mode='nearest', truncate=4, channel_axis=-1). sigma 0 is the identity, as in scipy."""
    if sigma <= 1e-15:
        return x
    k = gaussian_kernel1d(sigma, truncate)
    return correlate_separable(x, k, k, mode)


def correlate2d(x: Tensor, kernel: Tensor, mode: str) -> Tensor:
    """cv2.filter2D / scipy correlate of every plane of x (..., H, W) with an odd 2-D kernel.

    Zero rows and columns at the kernel's border are cropped first (exact: they contribute
    nothing; the reference's small disks sit in a 17x17 array). The kernel is then split by SVD
    into rank-1 (separable) terms, each applied as two matmuls (`correlate_separable`)."""
    kernel = _crop_zeros(kernel.to(torch.float64))
    u, s, vh = torch.linalg.svd(kernel)
    rank = int((s > s[0] * 1e-9).sum())
    out = 0
    for i in range(rank):
        out = out + correlate_separable(x, u[:, i] * s[i], vh[i], mode)
    return out


def _crop_zeros(kernel: Tensor) -> Tensor:
    """Remove all-zero border rows/columns symmetrically (keeps the kernel odd and centred)."""
    nonzero = kernel != 0
    rows = torch.nonzero(nonzero.any(1)).flatten()
    cols = torch.nonzero(nonzero.any(0)).flatten()
    cy, cx = kernel.shape[0] // 2, kernel.shape[1] // 2
    ry = int(max(cy - rows.min(), rows.max() - cy))
    rx = int(max(cx - cols.min(), cols.max() - cx))
    return kernel[cy - ry:cy + ry + 1, cx - rx:cx + rx + 1]


# ---------------------------------------------------------------------------------------------
# Resampling as matrices: a separable resize is out = Wy @ x @ Wx^T, one batched matmul pair for
# the whole batch on any device.


def linear_matrix(coords: Tensor, n: int, mode: str = "nearest") -> Tensor:
    """(len(coords), n) float64 matrix of 1-D linear interpolation at source `coords` (pixel
    centres at integers), neighbours outside [0, n) mapped by boundary `mode`."""
    coords = coords.to(torch.float64)
    i0 = torch.floor(coords)
    w1 = coords - i0
    i0 = i0.long()
    rows = torch.arange(len(coords))
    m = torch.zeros(len(coords), n, dtype=torch.float64)
    m.index_put_((rows, boundary_index(i0, n, mode)), 1 - w1, accumulate=True)
    m.index_put_((rows, boundary_index(i0 + 1, n, mode)), w1, accumulate=True)
    return m


def scipy_zoom_coords(n_in: int, n_out: int) -> Tensor:
    """Source coordinates of scipy.ndimage.zoom (grid_mode=False): out i -> i (n_in-1)/(n_out-1)."""
    scale = (n_in - 1) / (n_out - 1) if n_out > 1 else 1.0
    return torch.arange(n_out, dtype=torch.float64) * scale


def cv2_linear_coords(n_in: int, n_out: int, inv_scale: float) -> Tensor:
    """Source coordinates of cv2.resize INTER_LINEAR given fx (= inv_scale): half-pixel centres,
    clamped at both ends as OpenCV does (no antialiasing)."""
    src = (torch.arange(n_out, dtype=torch.float64) + 0.5) / inv_scale - 0.5
    return src.clamp(0, n_in - 1)


def pil_box_matrix(n_in: int, n_out: int) -> Tensor:
    """(n_out, n_in) weights of Pillow's BOX resampling (Resample.c precompute_coeffs): each output
    pixel averages the input pixels whose centres fall in its box, scaled support when reducing."""
    scale = n_in / n_out
    filterscale = max(scale, 1.0)
    support = 0.5 * filterscale
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    for xx in range(n_out):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), n_in)
        for x in range(xmin, xmax):
            t = (x - center + 0.5) / filterscale
            m[xx, x] = 1.0 if -0.5 < t <= 0.5 else 0.0
        total = m[xx].sum()
        if total != 0:
            m[xx] /= total
    return m


def resample(x: Tensor, wy: Tensor, wx: Tensor) -> Tensor:
    """x (..., H, W) -> (..., Ho, Wo) = wy @ x @ wx^T."""
    return torch.matmul(torch.matmul(wy.to(x), x), wx.to(x).T)


# ---------------------------------------------------------------------------------------------
# Bilinear sampling at per-image coordinates (elastic transform, warps).


def sample_bilinear(x: Tensor, ys: Tensor, xs: Tensor, mode: str) -> Tensor:
    """x (B, C, H, W) sampled at float coordinates ys, xs (B, Ho, Wo) (pixel centres at integers),
    bilinear, outside points by boundary `mode`; returns (B, C, Ho, Wo).

    'reflect' (scipy map_coordinates) and 'mirror' (cv2 BORDER_REFLECT_101) are grid_sample's
    reflection padding with align_corners False / True: it folds the coordinate about -0.5 and
    n - 0.5 (about 0 and n - 1) and clips, which gives the same values as interpolating between
    boundary-mapped neighbours. Other modes gather the 4 neighbours."""
    b, c, h, w = x.shape
    if mode in ("reflect", "mirror"):
        corners = mode == "mirror"
        gx = 2 * xs / (w - 1) - 1 if corners else (2 * xs + 1) / w - 1
        gy = 2 * ys / (h - 1) - 1 if corners else (2 * ys + 1) / h - 1
        grid = torch.stack([gx, gy], dim=-1).to(x.dtype)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=corners)
    y0, x0 = torch.floor(ys), torch.floor(xs)
    wy, wx = (ys - y0).to(x.dtype), (xs - x0).to(x.dtype)
    y0, x0 = y0.long(), x0.long()
    flat = x.reshape(b, c, h * w)
    out = 0
    for dy, fy in ((0, 1 - wy), (1, wy)):
        rows = boundary_index(y0 + dy, h, mode)
        for dx, fx in ((0, 1 - wx), (1, wx)):
            cols = boundary_index(x0 + dx, w, mode)
            index = (rows * w + cols).reshape(b, 1, -1).expand(b, c, -1)
            out = out + flat.gather(2, index).reshape(b, c, *ys.shape[1:]) * (fy * fx)[:, None]
    return out


def grayscale(x: Tensor) -> Tensor:
    """cv2.cvtColor RGB2GRAY weights on (B, 3, H, W) -> (B, 1, H, W)."""
    w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device)
    return (x * w[:, None, None]).sum(1, keepdim=True)


def next_power_of_2(n: int) -> int:
    return 1 if n <= 1 else 2 ** math.ceil(math.log2(n))
