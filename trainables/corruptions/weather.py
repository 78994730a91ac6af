"""Weather corruptions: snow, frost, fog, brightness.

Tables: hendrycks/robustness ImageNet-C/create_c/make_cifar_c.py ("cifar"),
make_tinyimagenet_c.py ("tinyimagenet"), make_imagenet_c.py ("imagenet").
"""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path

import torch
from torch import Tensor
from torchvision.io import ImageReadMode, decode_image, read_file

from trainables.corruptions import _ops
from trainables.corruptions.blur import clipped_zoom_matrix, line_blur

Table = dict[str, tuple]

# ---------------------------------------------------------------------------------------------
# Snow: a thresholded, zoomed gaussian field, motion-blurred (Wand in the reference; the same
# kernel as motion_blur here) and added twice (once rotated 180 degrees) over a whitened image.

SNOW: Table = {  # (mean, std, zoom, threshold, blur radius, blur sigma, image weight)
    "cifar": ((0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9),  # make_cifar_c.py
              (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9), (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
              (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)),
    "tinyimagenet": ((0.1, 0.2, 1, 0.6, 8, 3, 0.8), (0.1, 0.2, 1, 0.5, 10, 4, 0.8),  # make_tinyimagenet_c.py
                     (0.15, 0.3, 1.75, 0.55, 10, 4, 0.7), (0.25, 0.3, 2.25, 0.6, 12, 6, 0.65),
                     (0.3, 0.3, 1.25, 0.65, 14, 12, 0.6)),
    "imagenet": ((0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7),  # make_imagenet_c.py
                 (0.55, 0.3, 4, 0.9, 12, 8, 0.7), (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
                 (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55)),
}


def snow(x: Tensor, severity: int, table: str, generator: torch.Generator | None) -> Tensor:
    mean, std, zoom, threshold, radius, sigma, weight = SNOW[table][severity - 1]
    b, _, h, w = x.shape
    layer = _ops.randn((b, 1, h, w), generator, x.device, mean=mean, std=std)
    layer = _ops.resample(layer, clipped_zoom_matrix(h, zoom), clipped_zoom_matrix(w, zoom))
    layer = torch.where(layer < threshold, 0.0, layer)
    layer = _ops.floor_u8(layer)  # written as an 8-bit PNG for Wand: (clip * 255).astype(uint8)
    angles = _ops.rand((b,), generator, x.device, -135.0, -45.0)
    layer = _ops.floor_u8(line_blur(layer, radius, sigma, angles))  # ImageMagick's 8-bit output
    whitened = torch.maximum(x, _ops.grayscale(x) * 1.5 + 0.5)
    x = weight * x + (1 - weight) * whitened
    return x + layer + layer.flip(-2, -1)  # np.rot90(layer, k=2)


# ---------------------------------------------------------------------------------------------
# Frost: a random crop of one of the frost photographs shipped with the benchmark (and with
# bethgelab/imagecorruptions), blended in. The scripts pick randint(5), i.e. frost1..frost5 (never
# frost6), shrink the photographs by a per-table factor with cv2.resize (bilinear) and crop at
# randint(0, size - image size) per axis.

FROST: Table = {  # (image weight, frost weight)
    "cifar": ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)),  # make_cifar_c.py
    "tinyimagenet": ((1, 0.3), (0.9, 0.4), (0.8, 0.45), (0.75, 0.5), (0.7, 0.55)),  # make_tinyimagenet_c.py
    "imagenet": ((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)),  # make_imagenet_c.py
}
FROST_SCALE = {"cifar": 0.2, "tinyimagenet": 0.3, "imagenet": 1.0}  # cv2.resize fx=fy in the scripts
FROST_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg")


class FrostImagesNotFoundError(FileNotFoundError):
    """The frost photographs (shipped by the imagecorruptions package) are not installed."""


def frost(x: Tensor, severity: int, table: str, generator: torch.Generator | None) -> Tensor:
    b, _, h, w = x.shape
    textures = frost_textures(table, h, w, str(x.device))
    choice = _ops.randint(0, len(textures), (b,), generator, x.device)  # randint(5)
    u = _ops.rand((b, 2), generator, x.device)
    room = torch.tensor([[t.shape[1] - h, t.shape[2] - w] for t in textures], device=x.device)
    start = (u * room[choice]).long()  # randint(0, size - image size) per axis
    return frost_with_draws(x, severity, table, choice, start)


def frost_with_draws(x: Tensor, severity: int, table: str, choice: Tensor, start: Tensor) -> Tensor:
    """Frost given its draws: choice (B,) photograph index, start (B, 2) crop row and column."""
    image_weight, frost_weight = FROST[table][severity - 1]
    b, _, h, w = x.shape
    textures = frost_textures(table, h, w, str(x.device))
    layer = torch.empty_like(x)
    for k, tex in enumerate(textures):
        chosen = torch.nonzero(choice == k).flatten()
        rows = start[chosen, 0, None] + torch.arange(h, device=x.device)  # (n, h)
        cols = start[chosen, 1, None] + torch.arange(w, device=x.device)
        crop = tex[:, rows[:, :, None], cols[:, None, :]]  # (3, n, h, w)
        layer[chosen] = crop.permute(1, 0, 2, 3).to(x.dtype) / 255
    return image_weight * x + frost_weight * layer


@functools.lru_cache(maxsize=16)
def frost_textures(table: str, h: int, w: int, device: str) -> tuple[Tensor, ...]:
    """The five photographs as uint8 (3, H, W), shrunk by the table's factor; enlarged (x1.1 of the
    fitting scale, the imagecorruptions rule) only when an image would not fit inside."""
    out = []
    for name in FROST_FILES:
        tex = decode_image(read_file(str(frost_dir() / name)), mode=ImageReadMode.RGB)
        th, tw = tex.shape[1:]
        scale = FROST_SCALE[table]
        if round(th * scale) <= h or round(tw * scale) <= w:
            scale = 1.1 * max(h / th, w / tw)
        out.append(_cv2_resize_linear(tex, scale).to(device))
    return tuple(out)


def _cv2_resize_linear(tex: Tensor, scale: float) -> Tensor:
    """cv2.resize(img, (0, 0), fx=scale, fy=scale) with INTER_LINEAR on uint8 (3, H, W)."""
    if scale == 1.0:
        return tex
    th, tw = tex.shape[1:]
    oh, ow = round(th * scale), round(tw * scale)
    wy = _ops.linear_matrix(_ops.cv2_linear_coords(th, oh, scale), th)
    wx = _ops.linear_matrix(_ops.cv2_linear_coords(tw, ow, scale), tw)
    return _ops.resample(tex.to(torch.float64), wy, wx).round().clamp(0, 255).to(torch.uint8)


FROST_DIR_ENV = "MOLLIFY_FROST_DIR"


def frost_dir() -> Path:
    """The folder of the frost photographs: $MOLLIFY_FROST_DIR if set, else the frost/ folder of
    the installed imagecorruptions package, found without importing it (its __init__ imports
    pkg_resources and old numpy names that current installs lack)."""
    folder = Path(os.environ[FROST_DIR_ENV]) if os.environ.get(FROST_DIR_ENV) else None
    spec = importlib.util.find_spec("imagecorruptions") if folder is None else None
    if spec is not None and spec.submodule_search_locations:
        folder = Path(next(iter(spec.submodule_search_locations))) / "frost"
    if folder is None or not all((folder / f).is_file() for f in FROST_FILES):
        raise FrostImagesNotFoundError(
            "the frost corruption overlays the benchmark's frost photographs "
            f"({', '.join(FROST_FILES)}), which the imagecorruptions package ships: "
            f"pip install imagecorruptions (or set {FROST_DIR_ENV} to a folder holding them)")
    return folder


# ---------------------------------------------------------------------------------------------
# Fog: a plasma fractal (diamond-square) added, then rescaled by the image's maximum.

FOG: Table = {  # (fog strength, wibble decay)
    "cifar": ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)),  # make_cifar_c.py
    "tinyimagenet": ((0.4, 3), (0.7, 3), (1, 2.5), (1.5, 2), (2, 1.75)),  # make_tinyimagenet_c.py
    "imagenet": ((1.5, 2), (2, 2), (2.5, 1.7), (2.5, 1.5), (3, 1.4)),  # make_imagenet_c.py
}


def fog(x: Tensor, severity: int, table: str, generator: torch.Generator | None) -> Tensor:
    strength, decay = FOG[table][severity - 1]
    b, _, h, w = x.shape
    # map size: 32 / 64 / 256 in the three scripts = the next power of two of the image side
    size = _ops.next_power_of_2(max(h, w))
    fractal = plasma_fractal(b, size, decay, generator, x.device)[:, None, :h, :w].to(x.dtype)
    max_val = x.amax(dim=(1, 2, 3), keepdim=True)
    return (x + strength * fractal) * max_val / (max_val + strength)


def plasma_fractal(b: int, size: int, decay: float, generator: torch.Generator | None,
                   device: torch.device) -> Tensor:
    """(B, size, size) diamond-square height maps in [0, 1], the reference's `plasma_fractal`
    (after FLHerne/mapgen) vectorised over the batch."""
    m = torch.zeros(b, size, size, dtype=torch.float64, device=device)
    step, wibble = size, 100.0

    def wibbled_mean(a: Tensor) -> Tensor:
        return a / 4 + wibble * _ops.rand(a.shape, generator, device, -wibble, wibble).to(a.dtype)

    while step >= 2:
        half = step // 2
        corners = m[:, 0::step, 0::step]  # squares: centre = mean of 4 corners + noise
        acc = corners + corners.roll(-1, 1)
        acc = acc + acc.roll(-1, 2)
        m[:, half::step, half::step] = wibbled_mean(acc)
        centres = m[:, half::step, half::step]  # diamonds: edge midpoints
        corners = m[:, 0::step, 0::step]
        m[:, 0::step, half::step] = wibbled_mean(centres + centres.roll(1, 1) + corners + corners.roll(-1, 2))
        m[:, half::step, 0::step] = wibbled_mean(centres + centres.roll(1, 2) + corners + corners.roll(-1, 1))
        step //= 2
        wibble /= decay
    m = m - m.amin(dim=(1, 2), keepdim=True)
    return m / m.amax(dim=(1, 2), keepdim=True)


# ---------------------------------------------------------------------------------------------
# Brightness: V += c in HSV (skimage rgb2hsv / hsv2rgb). With hue and saturation fixed every RGB
# channel is proportional to V, so the round trip is rgb * V' / V (grey V' for black pixels): the
# same numbers without the colour-space conversion. torchvision's adjust_brightness multiplies
# instead, which is a different corruption.

BRIGHTNESS: Table = {  # added to V
    "cifar": (0.05, 0.1, 0.15, 0.2, 0.3),  # make_cifar_c.py
    "tinyimagenet": (0.1, 0.2, 0.3, 0.4, 0.5),  # make_tinyimagenet_c.py
    "imagenet": (0.1, 0.2, 0.3, 0.4, 0.5),  # make_imagenet_c.py
}


def brightness(x: Tensor, severity: int, table: str, generator: torch.Generator | None) -> Tensor:
    c = BRIGHTNESS[table][severity - 1]
    v = x.amax(dim=1, keepdim=True)
    v_new = (v + c).clamp(0, 1)
    return torch.where(v > 0, x * v_new / v.clamp_min(1e-12), v_new)
