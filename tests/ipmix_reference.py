"""IPMix's primitives per image, written after the reference code (`hzlsaber/IPMix`, `IPMix_utils.py`)
with PIL and NumPy, each taking the value the reference draws as an argument (its `sample_level`,
sign coin, `get_ab` and mask draws) so that the batched kernels can be compared with it draw for
draw. Only the tests import this."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps


def int_parameter(level: float, maxval: float) -> int:
    return int(level * maxval / 10)


def float_parameter(level: float, maxval: float) -> float:
    return float(level) * maxval / 10.0


def _affine(img: Image.Image, data: tuple) -> Image.Image:
    return img.transform(img.size, Image.AFFINE, data, resample=Image.BILINEAR)


def image_op(img: Image.Image, name: str, level: float, negate: bool) -> Image.Image:
    """One of `IPMix_utils.augmentations` at `level`; `negate` is the reference's sign coin. (The
    reference transforms to (IMAGE_SIZE, IMAGE_SIZE), a module constant; here the image's size.)"""
    width, height = img.size
    sign = -1 if negate else 1
    if name == "equalize":
        return ImageOps.equalize(img)
    if name == "posterize":
        return ImageOps.posterize(img, 4 - int_parameter(level, 4))
    if name == "rotate":
        return img.rotate(sign * int_parameter(level, 30), resample=Image.BILINEAR)
    if name == "solarize":
        return ImageOps.solarize(img, 256 - int_parameter(level, 256))
    if name == "shear_x":
        return _affine(img, (1, sign * float_parameter(level, 0.3), 0, 0, 1, 0))
    if name == "shear_y":
        return _affine(img, (1, 0, 0, sign * float_parameter(level, 0.3), 1, 0))
    if name == "translate_x":
        return _affine(img, (1, 0, sign * int_parameter(level, width / 3), 0, 1, 0))
    if name == "translate_y":
        return _affine(img, (1, 0, 0, 0, 1, sign * int_parameter(level, height / 3)))
    if name == "mirror":
        return ImageOps.mirror(img)
    if name == "invert":
        return ImageOps.invert(img)
    raise ValueError(name)


# --- pixel level: img1, img2 float32 (C, h, w) in [0, 1] as ToTensor gives them ---------------------

def add(img1: np.ndarray, img2: np.ndarray, a: float, b: float) -> np.ndarray:
    img1, img2 = img1 * 2 - 1, img2 * 2 - 1
    out = np.float32(a) * img1 + np.float32(b) * img2
    return (out + 1) / 2


def multiply(img1: np.ndarray, img2: np.ndarray, a: float, b: float) -> np.ndarray:
    img1, img2 = img1 * 2, img2 * 2
    out = (img1 ** np.float32(a)) * (img2.clip(1e-37) ** np.float32(b))
    return out / 2


def select(img1: np.ndarray, img2: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """random_pixels (mask (1, h, w)) and random_elems (mask (C, h, w)): mask * img1 + (1 - mask) * img2."""
    return mask * img1 + (1 - mask.astype(np.float32)) * img2


def get_ab(beta: float, first: bool, u: float, v: float) -> tuple[float, float]:
    """`get_ab` with its Beta draws given by inversion from u, v (see mixing_coefficients)."""
    if first:
        return u ** (1 / beta), 1 - v ** (1 / beta)
    return 1 + (1 - u ** (1 / beta)), -(1 - v ** (1 / beta))


def patch_mixing(img: np.ndarray, picture: np.ndarray, box: tuple[int, int, int, int], mixed) -> np.ndarray:
    """`patch_mixing` on float (C, H, W) images: the box (top, left, height, width) of the image and
    of the picture (the same place) through `mixed(img_patch, picture_patch)`, pasted back. Clipped
    to [0, 1] where the reference's ToPILImage wraps around (the paper's intent; docs/augmentations.md)."""
    top, left, h, w = box
    out = img.copy()
    patch = mixed(img[:, top:top + h, left:left + w], picture[:, top:top + h, left:left + w])
    out[:, top:top + h, left:left + w] = np.clip(patch, 0.0, 1.0)
    return out
