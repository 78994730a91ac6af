"""IPMix's mixing pictures: a procedural set generated once, seeded, on the device, or a folder of the
user's pictures (config key `ipmix_mixing_set`).

The reference reads an ImageFolder of structurally complex pictures (the authors distribute their
"IPMix set" of fractal pictures separately; it cannot be downloaded here) through Resize(36) and a
random 32 px crop per draw. The procedural set stands in for it: half iterated-function-system
fractals (random contractive affine maps, chaos game, log-density coloured on black, as fractal
renders are), half spectral noise (1/f^e power spectra with random exponents and colour mixing).
How it differs from the paper's set is listed in docs/augmentations.md. Pictures are stored square,
uint8, at `picture_side` = 36/32 of the image side, and cropped per draw by `ipmix`.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from torch import Tensor

MIXING_SET_SIZE = 1024  # pictures: half fractals, half spectral noise
MIXING_SET_SEED = 0  # fixed: every trial mixes with the same set, as with a folder
PICTURE_SCALE = 36 / 32  # the reference's Resize(36) before its 32 px random crop
IFS_MAPS = (2, 4)  # affine maps per system, inclusive
IFS_SINGULAR = (0.25, 0.85)  # the maps' singular values: contractive, so the attractor is bounded
IFS_POINTS = 2048  # chaos-game points per picture
IFS_BURN_IN, IFS_ITERATIONS = 12, 40  # iterations before points are on the attractor; then drawn
SPECTRAL_EXPONENTS = (1.0, 3.0)  # power spectrum 1/f^e, e uniform: from rough (1) to smooth (3)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")


def picture_side(size: tuple[int, int]) -> int:
    return round(max(size) * PICTURE_SCALE)


# --- iterated function systems ----------------------------------------------------------------------

def _rotation(angle: Tensor) -> Tensor:
    """(...,) radians -> (..., 2, 2)."""
    cos, sin = torch.cos(angle), torch.sin(angle)
    return torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)


def ifs_systems(count: int, generator: torch.Generator, device: torch.device) -> tuple[Tensor, Tensor]:
    """`count` random systems: maps (count, M, 2, 3) = [A | t] with A = R(theta) diag(s1, +-s2) R(phi),
    and each map's probability (count, M), proportional to |det A| (the area it covers) and 0 for
    the unused maps of systems with fewer than M = IFS_MAPS[1] maps."""
    M = IFS_MAPS[1]
    low, high = IFS_SINGULAR
    rand = functools.partial(torch.rand, generator=generator, device=device)
    angles = rand((count, M, 2)) * (2 * math.pi)
    singular = low + rand((count, M, 2)) * (high - low)
    singular[..., 1] *= torch.where(rand((count, M)) < 0.5, -1.0, 1.0)  # reflections too
    linear = _rotation(angles[..., 0]) @ torch.diag_embed(singular) @ _rotation(angles[..., 1])
    shift = rand((count, M, 2, 1)) * 2 - 1
    used = torch.randint(IFS_MAPS[0], M + 1, (count, 1), generator=generator, device=device)
    probability = singular.prod(-1).abs() * (torch.arange(M, device=device) < used)
    return torch.cat([linear, shift], dim=-1), probability / probability.sum(-1, keepdim=True)


def _chaos_step(points: Tensor, maps: Tensor, probability: Tensor, generator: torch.Generator) -> Tensor:
    """One chaos-game iteration: each point (n, P, 2) moves by a map drawn by `probability`.
    Written out elementwise: a batched 2 x 2 matmul per point is ten times slower."""
    n, P, _ = points.shape
    pick = torch.multinomial(probability, P, replacement=True, generator=generator)  # (n, P)
    m = maps.flatten(2).gather(1, pick.unsqueeze(-1).expand(n, P, 6))  # (n, P, 6): a b tx c d ty
    x, y = points.unbind(-1)
    return torch.stack([m[..., 0] * x + m[..., 1] * y + m[..., 2], m[..., 3] * x + m[..., 4] * y + m[..., 5]], -1)


def ifs_fractals(count: int, side: int, generator: torch.Generator, device: torch.device) -> Tensor:
    """`count` fractal pictures (count, 3, side, side) float in [0, 1]: each system's attractor
    rendered by the chaos game as a log point density, framed by its bounding box after the burn-in,
    coloured between two random colours, on black."""
    maps, probability = ifs_systems(count, generator, device)
    points = torch.rand((count, IFS_POINTS, 2), generator=generator, device=device) * 2 - 1
    for _ in range(IFS_BURN_IN):
        points = _chaos_step(points, maps, probability, generator)
    low, high = points.amin(1, keepdim=True), points.amax(1, keepdim=True)  # (n, 1, 2)
    centre, span = (low + high) / 2, (high - low).amax(-1, keepdim=True).clamp(min=1e-6)
    hits = torch.zeros(count * side * side, device=device)
    picture = torch.arange(count, device=device).view(count, 1) * (side * side)
    for _ in range(IFS_ITERATIONS):
        points = _chaos_step(points, maps, probability, generator)
        pixel = ((points - centre) / span * 0.95 + 0.5) * side  # the attractor fills 95% of the frame
        col, row = pixel.long().clamp(0, side - 1).unbind(-1)
        hits.index_add_(0, (picture + row * side + col).flatten(), torch.ones(col.numel(), device=device))
    density = torch.log1p(hits.view(count, 1, side, side))
    density = density / density.amax(dim=(-2, -1), keepdim=True).clamp(min=1e-6)
    dim, bright = torch.rand((2, count, 3, 1, 1), generator=generator, device=device).unbind(0)
    return torch.where(density > 0, dim * 0.5 + (bright - dim * 0.5) * density, 0.0).clamp(0.0, 1.0)


# --- spectral noise -----------------------------------------------------------------------------------

def spectral_noise(count: int, side: int, generator: torch.Generator, device: torch.device) -> Tensor:
    """`count` pictures (count, 3, side, side) float in [0, 1]: white noise shaped to a 1/f^e power
    spectrum (e per picture, SPECTRAL_EXPONENTS), its 3 fields mixed by a random colour matrix, and
    stretched to [0, 1] per picture."""
    white = torch.randn((count, 3, side, side), generator=generator, device=device)
    low, high = SPECTRAL_EXPONENTS
    exponent = low + torch.rand((count, 1, 1, 1), generator=generator, device=device) * (high - low)
    fy, fx = torch.fft.fftfreq(side, device=device).view(-1, 1), torch.fft.fftfreq(side, device=device)
    frequency = torch.sqrt(fy**2 + fx**2).clamp(min=1.0 / side)  # (side, side); the DC term as the lowest
    field = torch.fft.ifft2(torch.fft.fft2(white) * frequency.pow(-exponent / 2)).real  # amplitude f^(-e/2)
    colours = torch.rand((count, 3, 3), generator=generator, device=device)
    mixed = torch.einsum("nij,njhw->nihw", colours, field)
    low_v, high_v = mixed.amin(dim=(1, 2, 3), keepdim=True), mixed.amax(dim=(1, 2, 3), keepdim=True)
    return (mixed - low_v) / (high_v - low_v).clamp(min=1e-6)


def procedural_pictures(count: int, side: int, seed: int, device: torch.device) -> Tensor:
    """The generated mixing set: uint8 (count, 3, side, side), the fractals first."""
    generator = torch.Generator(device=device).manual_seed(seed)
    fractals = ifs_fractals(count // 2, side, generator, device)
    noise = spectral_noise(count - count // 2, side, generator, device)
    return torch.round(torch.cat([fractals, noise]) * 255).to(torch.uint8)


@functools.lru_cache(maxsize=None)
def procedural_mixing_set(size: tuple[int, int], device: torch.device) -> Tensor:
    """The procedural set for images of `size`, generated on the first call per size and device."""
    return procedural_pictures(MIXING_SET_SIZE, picture_side(size), MIXING_SET_SEED, torch.device(device))


# --- a folder of the user's pictures ------------------------------------------------------------------

@functools.lru_cache(maxsize=8)
def read_folder(folder: str) -> tuple[Image.Image, ...]:
    """Every picture under `folder` (recursively, as an ImageFolder; sorted), decoded as RGB. A
    missing or empty folder or an unreadable picture fails with one line naming it."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise ValueError(f"ipmix_mixing_set {folder!r}: no such folder")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ValueError(f"ipmix_mixing_set {folder!r}: no pictures ({', '.join(IMAGE_SUFFIXES)}) in it")
    pictures = []
    for path in files:
        try:
            with Image.open(path) as image:
                pictures.append(image.convert("RGB"))
        except (OSError, ValueError) as err:
            raise ValueError(f"ipmix_mixing_set {folder!r}: cannot read {path}: {err}") from None
    return tuple(pictures)


def square_picture(image: Image.Image, side: int) -> np.ndarray:
    """Resize the shorter side to `side` (bilinear, antialiased, as torchvision's Resize) and cut
    the central square: (side, side, 3) uint8."""
    w, h = image.size
    scale = side / min(w, h)
    resized = image.resize((max(side, round(w * scale)), max(side, round(h * scale))), Image.BILINEAR)
    left, top = (resized.width - side) // 2, (resized.height - side) // 2
    return np.asarray(resized.crop((left, top, left + side, top + side)))


@functools.lru_cache(maxsize=8)
def folder_mixing_set(folder: str, size: tuple[int, int], device: torch.device) -> Tensor:
    """The folder's pictures for images of `size`: uint8 (N, 3, S, S) on `device`, made once."""
    side = picture_side(size)
    stack = np.stack([square_picture(image, side) for image in read_folder(folder)])
    return torch.from_numpy(stack).permute(0, 3, 1, 2).contiguous().to(device)


def folder_source(folder: str) -> Callable[[tuple[int, int], torch.device], Tensor]:
    """The `PictureSource` of a folder; reads it now, so that a bad folder fails before training."""
    read_folder(folder)
    return functools.partial(folder_mixing_set, folder)

