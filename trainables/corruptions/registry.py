"""The registry of corruptions, their groups, resolution tables, validation and `corrupt`."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from contract import BENCHMARK, EXTRA, GROUPS, SEVERITIES
from trainables.corruptions import _ops, blur, digital, noise, spatter, weather

Corruption = Callable[[Tensor, int, str, "torch.Generator | None"], Tensor]
"""(x, severity, table, generator) -> corrupted x. x: float (B, C=3, H, W) in [0, 1]; the result
may leave [0, 1] (`corrupt` clips and quantises). Pure: never modifies x."""

CORRUPTIONS: dict[str, Corruption] = {
    "gaussian_noise": noise.gaussian_noise,
    "shot_noise": noise.shot_noise,
    "impulse_noise": noise.impulse_noise,
    "defocus_blur": blur.defocus_blur,
    "glass_blur": blur.glass_blur,
    "motion_blur": blur.motion_blur,
    "zoom_blur": blur.zoom_blur,
    "snow": weather.snow,
    "frost": weather.frost,
    "fog": weather.fog,
    "brightness": weather.brightness,
    "contrast": digital.contrast,
    "elastic_transform": digital.elastic_transform,
    "pixelate": digital.pixelate,
    "jpeg_compression": digital.jpeg_compression,
    "speckle_noise": noise.speckle_noise,
    "gaussian_blur": blur.gaussian_blur,
    "spatter": spatter.spatter,
    "saturate": digital.saturate,
}

# The names (GROUPS, BENCHMARK, EXTRA, SEVERITIES) are part of the contract with `analysis`: contract/.

TABLES: tuple[str, ...] = ("cifar", "tinyimagenet", "imagenet")
"""Severity tables: the constants of make_cifar_c.py (32 px), make_tinyimagenet_c.py (64 px) and
make_imagenet_c.py (224 px)."""
TABLE_SIZES = {"cifar": 32, "tinyimagenet": 64, "imagenet": 224}


def table_for_size(height: int, width: int) -> str:
    """The table whose native size is nearest to the image's larger side on a log scale: up to 45 px
    (geometric mean of 32 and 64) -> cifar, up to 119 px (of 64 and 224) -> tinyimagenet, larger ->
    imagenet. So 32 -> cifar, 64 -> tinyimagenet, 224 and up -> imagenet."""
    side = max(height, width)
    return min(TABLES, key=lambda t: (abs(math.log(side / TABLE_SIZES[t])), TABLE_SIZES[t]))


def validate_corruptions(names: Iterable[str]) -> tuple[str, ...]:
    """The names as a tuple; ValueError naming the valid ones on an unknown or repeated name."""
    names = tuple(names)
    unknown = [n for n in names if n not in CORRUPTIONS]
    if unknown:
        raise ValueError(f"unknown corruption(s) {', '.join(map(repr, unknown))}; valid: "
                         f"{', '.join(CORRUPTIONS)} (or the groups {', '.join(GROUPS)}, 'benchmark', 'extra')")
    if len(set(names)) != len(names):
        raise ValueError(f"corruptions listed twice in {names}")
    return names


def expand_corruptions(names: Iterable[str]) -> tuple[str, ...]:
    """Names with group names ('noise', ..., 'benchmark', 'extra', 'all') expanded, in order, no repeats."""
    aliases = {**GROUPS, "benchmark": BENCHMARK, "extra": EXTRA, "all": BENCHMARK + EXTRA}
    out: list[str] = []
    for name in names:
        for item in aliases.get(name, (name,)):
            if item not in out:
                out.append(item)
    return validate_corruptions(out)


def validate_severities(severities: Iterable[int]) -> tuple[int, ...]:
    severities = tuple(severities)
    bad = [s for s in severities if isinstance(s, bool) or not isinstance(s, int) or s not in SEVERITIES]
    if bad or not severities:
        raise ValueError(f"invalid severit{'y' if len(bad) == 1 else 'ies'} {bad or '(none)'}; "
                         f"valid: integers {', '.join(map(str, SEVERITIES))}")
    if len(set(severities)) != len(severities):
        raise ValueError(f"severities listed twice in {severities}")
    return severities


def validate_table(table: str) -> str:
    if table not in TABLES:
        raise ValueError(f"unknown severity table {table!r}; valid: {', '.join(TABLES)}")
    return table


def get_corruption(name: str) -> Corruption:
    """The registered function; ValueError listing the valid names for an unknown one."""
    return CORRUPTIONS[validate_corruptions([name])[0]]


def corrupt(
    x: Tensor,
    name: str,
    severity: int,
    *,
    generator: torch.Generator | None = None,
    table: str | None = None,
    quantize: bool = True,
) -> Tensor:
    """Corruption `name` at `severity` (1..5) of a float batch x (B, 3, H, W) in [0, 1].

    table: "cifar" | "tinyimagenet" | "imagenet"; default from the image size (`table_for_size`).
    generator: the source of every random draw (None: torch's default generator). A generator on
        another device than x works (draws are made there and moved).
    quantize: floor to the 256 uint8 levels, as the benchmark's stored images are made
        (np.uint8(v * 255) truncates); False returns the clipped float result.
    Pure: returns a new tensor in [0, 1] of x's shape and dtype; x is never modified.
    """
    fn = get_corruption(name)
    validate_severities([severity])
    if x.ndim != 4 or x.shape[1] != 3 or not x.is_floating_point():
        raise ValueError(f"x must be a float batch (B, 3, H, W), got {x.dtype} {tuple(x.shape)}")
    table = validate_table(table) if table is not None else table_for_size(*x.shape[-2:])
    out = fn(x, severity, table, generator).clamp(0, 1)
    return _ops.floor_u8(out).to(x.dtype) if quantize else out.to(x.dtype)
