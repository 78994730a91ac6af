"""IPMix's primitives as batched kernels with per-image parameters, written after the reference code
(`hzlsaber/IPMix`, `IPMix_utils.py`): the image-level ops (PIL arithmetic on float images) and the
patch- and pixel-level mixing with a mixing picture.

The reference works on uint8 PIL images and rounds after every step; these kernels stay in float in
[0, 1] (the ops defined on 256 levels, equalize and posterize, round to them first, as the
torchvision-policy kernels do). Two deliberate departures, both documented in docs/augmentations.md:
- add and multiply can leave [0, 1]; the reference turns the patch back into an image with
  `ToPILImage` (`mul(255).byte()`), which wraps values around modulo 256 (1.1 becomes 25/255). The
  paper describes a mixing of the two images, so the result is clipped to [0, 1] instead.
- the reference truncates each mixed patch to uint8 (`byte()` floors); floats are kept here.
"""

from __future__ import annotations

import torch
from torch import Tensor

from trainables.augment.common import per_image
from trainables.augment.geometry import pil_affine
from trainables.augment.kernels import batch_equalize, batch_posterize, batch_solarize

# Image level: `IPMix_utils.augmentations` (AugMix's CIFAR ops plus mirror and invert), in its order.
IMAGE_OPS: tuple[str, ...] = (
    "equalize", "posterize", "rotate", "solarize", "shear_x", "shear_y", "translate_x", "translate_y",
    "mirror", "invert",
)  # fmt: skip
AFFINE_OPS: tuple[str, ...] = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")  # one warp
SIGNED_OPS: tuple[str, ...] = AFFINE_OPS  # the reference negates these with probability 1/2
# Pixel level: `IPMix_utils.mixings`, in its order.
PIXEL_OPS: tuple[str, ...] = ("add", "multiply", "random_pixels", "random_elems")
MIN_LEVEL = 0.1  # sample_level(n) = uniform(0.1, n)
PARAMETER_MAX = 10  # int_parameter / float_parameter divide by 10


# --- the reference's magnitude functions of the level (float64, Python's arithmetic order) --------

def int_parameter(level: Tensor, maxval: float) -> Tensor:
    """int(level * maxval / 10), per element."""
    return torch.trunc(level.double() * maxval / PARAMETER_MAX)


def float_parameter(level: Tensor, maxval: float) -> Tensor:
    """float(level) * maxval / 10, per element."""
    return level.double() * maxval / PARAMETER_MAX


def posterize_bits(level: Tensor) -> Tensor:
    """ImageOps.posterize(img, 4 - int_parameter(level, 4)): 4 or 3 bits at severity 3."""
    return 4 - int_parameter(level, 4)


def solarize_threshold(level: Tensor) -> Tensor:
    """ImageOps.solarize(img, 256 - int_parameter(level, 256)): invert the uint8 values >= it."""
    return 256 - int_parameter(level, 256)


# --- image level ----------------------------------------------------------------------------------

def rotate_coefficients(degrees: Tensor, height: int, width: int) -> Tensor:
    """PIL `Image.rotate(degrees)`'s affine coefficients (B, 6) (counter-clockwise about the centre
    (W / 2, H / 2); PIL rounds the matrix to 15 decimals, below float64's resolution here)."""
    angle = -torch.deg2rad(degrees.double())
    cos, sin = torch.cos(angle), torch.sin(angle)
    cx, cy = width / 2.0, height / 2.0
    c = cos * -cx + sin * -cy + cx
    f = -sin * -cx + cos * -cy + cy
    return torch.stack([cos, sin, c, -sin, cos, f], dim=-1)


def affine_coefficients(op: Tensor, level: Tensor, negate: Tensor, height: int, width: int) -> Tensor:
    """The PIL AFFINE data (B, 6) of each image's geometric op (`AFFINE_OPS`, indices into
    IMAGE_OPS) at its level, with the reference's sign: rotate by int_parameter(level, 30) degrees,
    shear by float_parameter(level, 0.3), translate by int_parameter(level, size / 3) pixels."""
    sign = torch.where(negate, -1.0, 1.0).double()
    is_op = {name: op == IMAGE_OPS.index(name) for name in AFFINE_OPS}
    shear = sign * float_parameter(level, 0.3)
    zero, one = torch.zeros_like(shear), torch.ones_like(shear)
    coefficients = rotate_coefficients(sign * int_parameter(level, 30), height, width)
    per_op = {  # (a, b, c, d, e, f) as the reference passes them to Image.transform
        "shear_x": (one, shear, zero, zero, one, zero),
        "shear_y": (one, zero, zero, shear, one, zero),
        "translate_x": (one, zero, sign * int_parameter(level, width / 3), zero, one, zero),
        "translate_y": (one, zero, zero, zero, one, sign * int_parameter(level, height / 3)),
    }
    for name, data in per_op.items():
        coefficients = torch.where(is_op[name].unsqueeze(-1), torch.stack(data, dim=-1), coefficients)
    return coefficients


def image_affine(x: Tensor, op: Tensor, level: Tensor, negate: Tensor) -> Tensor:
    """rotate / shear_x / shear_y / translate_x / translate_y, one bilinear PIL warp per image."""
    return pil_affine(x, affine_coefficients(op, level, negate, *x.shape[-2:]))


def image_posterize(x: Tensor, level: Tensor) -> Tensor:
    return batch_posterize(x, posterize_bits(level))


def image_solarize(x: Tensor, level: Tensor) -> Tensor:
    # threshold / 255 in x's dtype: the same division that made x from uint8, so ties compare exactly
    return batch_solarize(x, solarize_threshold(level).to(x.dtype) / 255.0)


def image_equalize(x: Tensor) -> Tensor:
    return batch_equalize(x)  # torchvision's equalize is PIL's ImageOps.equalize (tested)


def image_mirror(x: Tensor) -> Tensor:
    return x.flip(-1)


def image_invert(x: Tensor) -> Tensor:
    return 1.0 - x


# --- pixel level: two images (B, C, H, W) in [0, 1], per-image coefficients (B,) ---------------

def pixel_add(x: Tensor, picture: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """add: ((a (2x - 1) + b (2p - 1)) + 1) / 2, in [-1, 1] space as the reference; clipped."""
    out = per_image(a) * (x * 2 - 1) + per_image(b) * (picture * 2 - 1)
    return ((out + 1) / 2).clamp(0.0, 1.0)


def pixel_multiply(x: Tensor, picture: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """multiply: (2x)^a (max(2p, 1e-37))^b / 2, in [0, 2] space as the reference; clipped.
    b < 0 (half the draws) divides by the picture: the clip keeps 0^b finite, as the reference's."""
    out = (x * 2).pow(per_image(a)) * (picture * 2).clamp(min=1e-37).pow(per_image(b))
    return (out / 2).clamp(0.0, 1.0)


def pixel_select(x: Tensor, picture: Tensor, keep: Tensor) -> Tensor:
    """random_pixels / random_elems: x where `keep` (the reference's rand < rand()), else the picture;
    keep (B, 1, H, W) selects whole pixels, (B, C, H, W) single elements."""
    return torch.where(keep, x, picture)


def mixing_coefficients(beta: float, first: Tensor, u: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """The reference's `get_ab`: (Beta(beta, 1), Beta(1, beta)) where `first`, else
    (1 + Beta(1, beta), -Beta(1, beta)), from uniform draws u, v by inversion (Beta(beta, 1) is
    U^(1/beta), Beta(1, beta) is 1 - U^(1/beta)): two independent draws either way."""
    root_u, root_v = u.pow(1.0 / beta), v.pow(1.0 / beta)
    a = torch.where(first, root_u, 2.0 - root_u)  # 1 + (1 - U^(1/beta))
    b = torch.where(first, 1.0 - root_v, root_v - 1.0)  # -(1 - V^(1/beta))
    return a, b


def box_mask(box: Tensor, height: int, width: int) -> Tensor:
    """(B, 1, H, W) bool: inside each image's box (top, left, box height, box width) (B, 4) long."""
    top, left, h, w = (v.view(-1, 1, 1, 1) for v in box.unbind(-1))
    rows = torch.arange(height, device=box.device).view(1, 1, height, 1)
    cols = torch.arange(width, device=box.device).view(1, 1, 1, width)
    return (rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)


def patch_mix(x: Tensor, picture: Tensor, pixel_op: Tensor, box: Tensor, a: Tensor, b: Tensor,
              threshold: Tensor, noise: Tensor) -> Tensor:  # fmt: skip
    """The reference's `patch_mixing`: inside each image's box, its pixel op (`PIXEL_OPS` index) of the
    image and the picture at the same place; outside, the image. threshold (B,) and noise (B, C, H, W)
    are the random masks' draws: random_pixels keeps the image where noise[:, :1] < threshold,
    random_elems where noise < threshold. All four ops are elementwise, so all are computed and each
    image keeps its own: cheaper than dispatching."""
    keep_pixels, keep_elements = noise[:, :1] < per_image(threshold), noise < per_image(threshold)
    results = (pixel_add(x, picture, a, b), pixel_multiply(x, picture, a, b),
               pixel_select(x, picture, keep_pixels), pixel_select(x, picture, keep_elements))
    mixed = results[0]
    for index in range(1, len(PIXEL_OPS)):
        mixed = torch.where(per_image(pixel_op == index), results[index], mixed)
    return torch.where(box_mask(box, *x.shape[-2:]), mixed, x)

