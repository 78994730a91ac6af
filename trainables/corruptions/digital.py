"""Digital corruptions: contrast, elastic transform, pixelate, JPEG, and saturate (extra).

Tables: hendrycks/robustness ImageNet-C/create_c/make_cifar_c.py ("cifar"),
make_tinyimagenet_c.py ("tinyimagenet"), make_imagenet_c.py ("imagenet").
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor
from torchvision.io import ImageReadMode, decode_jpeg, encode_jpeg

from trainables.corruptions import _ops

Table = dict[str, tuple]

# ---------------------------------------------------------------------------------------------
# Contrast: (x - m) c + m with m the per-image, per-channel mean (np.mean over axes (0, 1)).
# torchvision's adjust_contrast blends towards the mean of the *greyscale* image instead.

CONTRAST: Table = {
    "cifar": (0.75, 0.5, 0.4, 0.3, 0.15),  # make_cifar_c.py
    "tinyimagenet": (0.4, 0.3, 0.2, 0.1, 0.05),  # make_tinyimagenet_c.py
    "imagenet": (0.4, 0.3, 0.2, 0.1, 0.05),  # make_imagenet_c.py
}


def contrast(x: Tensor, severity: int, table: str, generator: torch.Generator | None) -> Tensor:
    c = CONTRAST[table][severity - 1]
    means = x.mean(dim=(2, 3), keepdim=True)
    return (x - means) * c + means


# ---------------------------------------------------------------------------------------------
# Elastic transform (the scripts' version, with a random affine first; bethgelab/imagecorruptions
# dropped the affine). Per image: move three points by U(-c2, c2), warp with that affine
# (cv2.warpAffine, bilinear, BORDER_REFLECT_101), then displace every pixel by c0 times a
# U(-1, 1) field smoothed by a gaussian of sigma c1 (skimage, mode 'reflect', truncate 3), sampled
# bilinearly (scipy map_coordinates order 1, mode 'reflect').

ELASTIC_TRANSFORM: Table = {  # (alpha, sigma, affine range) in pixels at the native size
    "cifar": tuple((32 * a, 32 * s, 32 * r) for a, s, r in  # make_cifar_c.py, IMSIZE = 32
                   ((0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05), (0.1, 0.03, 0.03))),
    "tinyimagenet": tuple((64 * a, 64 * s, 64 * r) for a, s, r in  # make_tinyimagenet_c.py, IMSIZE = 64
                          ((0, 0, 0.08), (0.05, 0.3, 0.06), (0.1, 0.08, 0.06), (0.1, 0.03, 0.03),
                           (0.16, 0.03, 0.02))),
    "imagenet": tuple((244 * a, 244 * s, 244 * r) for a, s, r in  # make_imagenet_c.py ("244 should
                      ((2, 0.7, 0.1), (2, 0.08, 0.2), (0.05, 0.01, 0.02),  # have been 224")
                       (0.07, 0.01, 0.02), (0.12, 0.01, 0.02))),
}
NATIVE_SIZE = {"cifar": 32, "tinyimagenet": 64, "imagenet": 224}


def elastic_transform(x: Tensor, severity: int, table: str, generator: torch.Generator | None) -> Tensor:
    b, _, h, w = x.shape
    # pixel constants scale with the image when it is not the table's native size
    alpha, sigma, affine_range = (v * min(h, w) / NATIVE_SIZE[table]
                                  for v in ELASTIC_TRANSFORM[table][severity - 1])
    jitter = _ops.rand((b, 3, 2), generator, x.device, -affine_range, affine_range)
    fields = _ops.rand((b, 2, h, w), generator, x.device, -1.0, 1.0).to(torch.float64)
    return elastic_with_draws(x, alpha, sigma, jitter, fields)


def elastic_with_draws(x: Tensor, alpha: float, sigma: float, jitter: Tensor, fields: Tensor) -> Tensor:
    """Elastic transform given its random draws: jitter (B, 3, 2) added to the three affine points,
    fields (B, 2, H, W) the raw U(-1, 1) displacement fields (dx first, as the reference draws)."""
    b, _, h, w = x.shape
    warped = _warp_affine(x, _affine_from_jitter(h, w, jitter))
    displacement = _ops.gaussian_filter(fields, sigma, mode="reflect", truncate=3.0) * alpha
    rows = torch.arange(h, device=x.device, dtype=torch.float64)[None, :, None]
    cols = torch.arange(w, device=x.device, dtype=torch.float64)[None, None, :]
    ys = (rows + displacement[:, 1].to(torch.float32)).expand(b, h, w)  # float32 as the reference
    xs = (cols + displacement[:, 0].to(torch.float32)).expand(b, h, w)
    return _ops.sample_bilinear(warped, ys, xs, mode="reflect")


def _affine_from_jitter(h: int, w: int, jitter: Tensor) -> Tensor:
    """(B, 2, 3) cv2.getAffineTransform(pts1, pts1 + jitter), points as in the scripts."""
    c0, c1 = float(h // 2), float(w // 2)  # np.float32(shape_size) // 2
    s = float(min(h, w) // 3)
    src = torch.tensor([[c0 + s, c1 + s], [c0 + s, c1 - s], [c0 - s, c1 - s]], dtype=torch.float64,
                       device=jitter.device)
    dst = (src.to(torch.float32) + jitter.to(torch.float32)).to(torch.float64)  # float32 as cv2 gets
    ones = torch.ones(3, 1, dtype=torch.float64, device=jitter.device)
    a = torch.cat([src, ones], dim=1)  # (3, 3): [x, y, 1] rows
    return torch.linalg.solve(a, dst).transpose(1, 2)  # (B, 2, 3) with M @ [x, y, 1] = dst


def _warp_affine(x: Tensor, m: Tensor) -> Tensor:
    """cv2.warpAffine(img, M, (W, H), INTER_LINEAR, BORDER_REFLECT_101): dst(p) = src(M^-1 p), the
    source coordinates rounded to 1/32 pixel as OpenCV's fixed-point remap does."""
    b, _, h, w = x.shape
    full = torch.cat([m, torch.tensor([0.0, 0.0, 1.0], dtype=m.dtype, device=m.device).expand(b, 1, 3)], 1)
    inv = torch.linalg.inv(full)[:, :2]  # (B, 2, 3)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64, device=x.device),
                            torch.arange(w, dtype=torch.float64, device=x.device), indexing="ij")
    src_x = inv[:, 0, 0, None, None] * xs + inv[:, 0, 1, None, None] * ys + inv[:, 0, 2, None, None]
    src_y = inv[:, 1, 0, None, None] * xs + inv[:, 1, 1, None, None] * ys + inv[:, 1, 2, None, None]
    src_x, src_y = torch.floor(src_x * 32 + 0.5) / 32, torch.floor(src_y * 32 + 0.5) / 32
    return _ops.sample_bilinear(x, src_y, src_x, mode="mirror")


# ---------------------------------------------------------------------------------------------
# Pixelate: Pillow BOX down to int(size c), BOX back up (the scripts; imagecorruptions uses NEAREST
# up). Pillow resamples horizontally then vertically, rounding to uint8 after each pass.

PIXELATE: Table = {  # relative size of the intermediate image
    "cifar": (0.95, 0.9, 0.85, 0.75, 0.65),  # make_cifar_c.py
    "tinyimagenet": (0.9, 0.8, 0.7, 0.6, 0.5),  # make_tinyimagenet_c.py
    "imagenet": (0.6, 0.5, 0.4, 0.3, 0.25),  # make_imagenet_c.py
}


def pixelate(x: Tensor, severity: int, table: str, generator: torch.Generator | None) -> Tensor:
    c = PIXELATE[table][severity - 1]
    _, _, h, w = x.shape
    levels = torch.round(x.clamp(0, 1) * 255)  # the reference resizes a uint8 PIL image
    small = _pil_box_resize(levels, int(h * c), int(w * c))
    return _pil_box_resize(small, h, w) / 255


def _pil_box_resize(levels: Tensor, h_out: int, w_out: int) -> Tensor:
    h, w = levels.shape[-2:]
    horizontal = torch.matmul(levels, _box(w, w_out).to(levels).T)
    horizontal = torch.floor(horizontal + 0.5)  # Pillow's 8-bit rounding (half up)
    return torch.floor(torch.matmul(_box(h, h_out).to(levels), horizontal) + 0.5)


@functools.lru_cache(maxsize=64)
def _box(n_in: int, n_out: int) -> Tensor:
    return _ops.pil_box_matrix(n_in, n_out)


# ---------------------------------------------------------------------------------------------
# JPEG: a real libjpeg round trip at the table's quality (PIL's encoder in the scripts; torchvision
# wraps the same libjpeg, 4:2:0 chroma subsampling by default in both). Encoding runs on the CPU:
# it is inherently per image and libjpeg is a CPU library (nvjpeg on CUDA would give other pixels);
# torchvision takes the whole batch as a list in one call each way.

JPEG_COMPRESSION: Table = {  # JPEG quality
    "cifar": (80, 65, 58, 50, 40),  # make_cifar_c.py
    "tinyimagenet": (65, 58, 50, 40, 25),  # make_tinyimagenet_c.py
    "imagenet": (25, 18, 15, 10, 7),  # make_imagenet_c.py
}


def jpeg_compression(x: Tensor, severity: int, table: str, generator: torch.Generator | None) -> Tensor:
    return jpeg_round_trip(x, JPEG_COMPRESSION[table][severity - 1])


def jpeg_round_trip(x: Tensor, quality: int) -> Tensor:
    images = list(torch.round(x.clamp(0, 1) * 255).to(torch.uint8).cpu())
    decoded = decode_jpeg(encode_jpeg(images, quality=quality), mode=ImageReadMode.RGB)
    return torch.stack(decoded).to(device=x.device, dtype=x.dtype) / 255


# ---------------------------------------------------------------------------------------------
# Saturate (extra): S <- clip(S c0 + c1, 0, 1) in HSV (skimage). With H and V fixed each channel is
# V (1 - S g(H)), so the new value is V - (S'/S)(V - x); grey pixels (S = 0, hue 0 in skimage) turn
# into (V, V (1 - S'), V (1 - S')). Same numbers as the HSV round trip, without it; torchvision's
# adjust_saturation blends with greyscale instead.

SATURATE: Table = {  # (factor, offset) on S
    "cifar": ((0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)),  # make_cifar_c.py
    "tinyimagenet": ((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (30, 0.2)),  # make_tinyimagenet_c.py
    "imagenet": ((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2)),  # make_imagenet_c.py
}


def saturate(x: Tensor, severity: int, table: str, generator: torch.Generator | None) -> Tensor:
    factor, offset = SATURATE[table][severity - 1]
    v = x.amax(dim=1, keepdim=True)
    delta = v - x.amin(dim=1, keepdim=True)
    s = torch.where(delta > 0, delta / v.clamp_min(1e-12), 0.0)
    s_new = (s * factor + offset).clamp(0, 1)
    coloured = v - (s_new / s.clamp_min(1e-12)) * (v - x)
    grey = torch.cat([v, v * (1 - s_new), v * (1 - s_new)], dim=1)
    return torch.where(s > 0, coloured, grey)
