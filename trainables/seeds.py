"""Independent random streams derived from one seed: one stream per purpose (the validation draw,
the synthetic images, each corruption cell), so that adding a use of randomness never shifts another."""

from __future__ import annotations

import hashlib

import torch


def derive_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed derived from `seed` and a purpose: one independent stream per purpose."""
    digest = hashlib.sha256(repr((seed, *parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def generator(seed: int, *parts: object, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator on `device` seeded by `derive_seed(seed, *parts)`."""
    return torch.Generator(device=device).manual_seed(derive_seed(seed, *parts))
