"""One (corruption, severity) cell made from clean images, as the releases hold it.

On-the-fly evaluation and `generate` both make their cells here, so that the sources measure the
same thing: each cell has its own seeded random stream, and under a protocol with the JPEG round
trip (Tiny-ImageNet-C's and ImageNet-C's, `protocols.py`) a cell goes through it (quality 85, as
`make_tinyimagenet_c.py` / `make_imagenet_c.py` save them), which adds its own compression.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.io import ImageReadMode, decode_jpeg, encode_jpeg

from trainables.corruptions.protocols import RELEASE_JPEG_QUALITY
from trainables.corruptions.registry import corrupt
from trainables.seeds import derive_seed


def cell_generator(seed: int, corruption: str, severity: int, device: torch.device | str) -> torch.Generator:
    """The random stream of one (corruption, severity) cell: on-the-fly evaluation and `generate`
    use the same one, so on the same device and batch size they produce the same images."""
    return torch.Generator(device=device).manual_seed(derive_seed(seed, "corruption", corruption, severity))


def to_uint8(x: Tensor) -> Tensor:
    """float (B, C, H, W) in [0, 1] -> uint8, rounding as the releases' scripts do."""
    return torch.round(x * 255).to(torch.uint8)


def jpeg_round_trip(x: Tensor, quality: int = RELEASE_JPEG_QUALITY) -> Tensor:
    """float (B, 3, H, W) in [0, 1] -> the same images after a JPEG encode and decode at
    `quality`. Always libjpeg on the CPU, whatever x's device: nvjpeg on CUDA gives other pixels
    than the files `generate` writes and the releases hold (evaluation only, not the training step)."""
    encoded = encode_jpeg(list(to_uint8(x).cpu()), quality=quality)
    decoded = decode_jpeg(encoded, mode=ImageReadMode.RGB)
    return (torch.stack(decoded).float() / 255).to(x.device)  # (B, 3, H, W)


def corrupt_cell(x: Tensor, name: str, severity: int, generator: torch.Generator, *,
                 table: str | None = None, jpeg: bool = False) -> Tensor:
    """Corruption `name` at `severity` of a float batch (B, 3, H, W) in [0, 1], quantised to 8 bits,
    then the release's JPEG round trip when `jpeg`."""
    y = corrupt(x, name, severity, generator=generator, table=table)
    return jpeg_round_trip(y) if jpeg else y
