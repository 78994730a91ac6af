"""Small pieces shared by training and evaluation: device and precision choice, and turning a
uint8 batch on the device into the network's normalised float input."""

from __future__ import annotations

import contextlib
import functools
from typing import ContextManager, Sequence

import torch
from torch import Tensor

PRECISIONS = ("auto", "fp32", "bf16")


class DeviceError(ValueError):
    """The config asks for a device this machine does not have."""


def resolve_device(name: str) -> torch.device:
    """`auto` is CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError(f"device {name!r} asked for, but torch sees no CUDA device; use 'cpu' or 'auto'")
    return torch.device(name)


def autocast(device: torch.device, precision: str) -> ContextManager:
    """bf16 autocast (the paper's mixed precision) on CUDA under `auto`; full fp32 on the CPU,
    where bf16 matmuls are slower than fp32 on most machines."""
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if not use_bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def to_unit(images: Tensor) -> Tensor:
    """uint8 (B, C, H, W) -> float32 in [0, 1]."""
    return images.float().div_(255)


@functools.lru_cache(maxsize=64)
def device_constant(values: tuple, device: torch.device, dtype: torch.dtype) -> Tensor:
    """A small constant tensor, made once per device: building it from Python inside the training
    step would be a host-to-device copy on every step."""
    return torch.tensor(values, device=device, dtype=dtype)


def normalize(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """Per-channel (x - mean) / std on a float batch (B, C, H, W)."""
    m = device_constant(tuple(mean), x.device, x.dtype)[:, None, None]
    s = device_constant(tuple(std), x.device, x.dtype)[:, None, None]
    return (x - m) / s
