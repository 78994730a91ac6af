"""The policies' op spaces (torchvision 0.29's `_AUGMENTATION_SPACE`s transcribed; tests compare them)
and AutoAugment's sub-policy tables, as data, and their conversion to device tensors."""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import torch
from torch import Tensor

from trainables.augment.kernels import CORRUPTION_OVERLAP_OPS, OP_INDEX

MagnitudeFn = Callable[[int, int, int], Tensor]
"""(num_bins, height, width) -> (num_bins,) magnitudes, like torchvision's `_AUGMENTATION_SPACE` lambdas
(written below as lambda n, h, w)."""
OpSpace = dict[str, tuple[MagnitudeFn | None, bool]]
"""op name -> (magnitudes, or None for a magnitude-free op; signed): torchvision's `_AUGMENTATION_SPACE`.
A signed op's magnitude is negated when rand() <= 0.5."""


def _linear(end: float) -> tuple[MagnitudeFn, bool]:
    """Signed magnitudes torch.linspace(0, end, num_bins)."""
    return (lambda n, h, w: torch.linspace(0.0, end, n)), True


def _bits(top: int, span: int) -> tuple[MagnitudeFn, bool]:
    """Posterize bits round(top - span * bin / (num_bins - 1)), torchvision's expression, unsigned."""
    return (lambda n, h, w: (top - torch.arange(n) / ((n - 1) / span)).round().int()), False


_SOLARIZE = (lambda n, h, w: torch.linspace(1.0, 0.0, n)), False  # threshold 1 -> 0
_FREE = None, False  # magnitude-free op

# The four policies' spaces, torchvision 0.29's `_AUGMENTATION_SPACE`s transcribed (tests compare them).
TRIVAUG_SPACE: OpSpace = {  # TrivialAugmentWide, 31 bins; translations in pixels whatever the size
    "Identity": _FREE, "ShearX": _linear(0.99), "ShearY": _linear(0.99), "TranslateX": _linear(32.0),
    "TranslateY": _linear(32.0), "Rotate": _linear(135.0), "Brightness": _linear(0.99),
    "Color": _linear(0.99), "Contrast": _linear(0.99), "Sharpness": _linear(0.99),
    "Posterize": _bits(8, 6), "Solarize": _SOLARIZE, "AutoContrast": _FREE, "Equalize": _FREE,
}  # fmt: skip
RANDAUG_SPACE: OpSpace = {  # RandAugment: narrower ranges; translations relative to the image size
    "Identity": _FREE, "ShearX": _linear(0.3), "ShearY": _linear(0.3),
    "TranslateX": ((lambda n, h, w: torch.linspace(0.0, 150.0 / 331.0 * w, n)), True),
    "TranslateY": ((lambda n, h, w: torch.linspace(0.0, 150.0 / 331.0 * h, n)), True),
    "Rotate": _linear(30.0), "Brightness": _linear(0.9), "Color": _linear(0.9), "Contrast": _linear(0.9),
    "Sharpness": _linear(0.9), "Posterize": _bits(8, 4), "Solarize": _SOLARIZE,
    "AutoContrast": _FREE, "Equalize": _FREE,
}  # fmt: skip
AUTOAUG_SPACE: OpSpace = {  # AutoAugment: RandAugment's ops without Identity, plus Invert
    **{name: entry for name, entry in RANDAUG_SPACE.items() if name != "Identity"}, "Invert": _FREE,
}
AUGMIX_SPACE: OpSpace = {  # AugMix with all_ops=True (its own translation range and 4..0 bits)
    "ShearX": _linear(0.3), "ShearY": _linear(0.3),
    "TranslateX": ((lambda n, h, w: torch.linspace(0.0, w / 3.0, n)), True),
    "TranslateY": ((lambda n, h, w: torch.linspace(0.0, h / 3.0, n)), True),
    "Rotate": _linear(30.0), "Posterize": _bits(4, 4), "Solarize": _SOLARIZE,
    "AutoContrast": _FREE, "Equalize": _FREE, "Brightness": _linear(0.9), "Color": _linear(0.9),
    "Contrast": _linear(0.9), "Sharpness": _linear(0.9),
}  # fmt: skip
# AugMix with all_ops=False, the AugMix paper's set: without the ops that overlap the test corruptions
# (torchvision's `_PARTIAL_AUGMENTATION_SPACE`, in its order).
AUGMIX_PAPER_SPACE: OpSpace = {
    name: entry for name, entry in AUGMIX_SPACE.items() if name not in CORRUPTION_OVERLAP_OPS
}
SPACES: dict[str, OpSpace] = {
    "trivaug": TRIVAUG_SPACE, "randaug": RANDAUG_SPACE, "autoaug": AUTOAUG_SPACE, "augmix": AUGMIX_SPACE,
    "augmix_paper": AUGMIX_PAPER_SPACE,
}  # fmt: skip


class OpTable(NamedTuple):
    """A space as tensors, one row per entry in the space's order."""

    ops: Tensor  # (n,) long: the entry's index into OPS
    magnitudes: Tensor  # (n, num_bins) float32: torchvision's table; zeros for magnitude-free ops
    signed: Tensor  # (n,) bool


def op_table(space: OpSpace, num_bins: int, height: int, width: int) -> OpTable:
    """Evaluate a space on CPU with torchvision's expressions (it does the same, per call)."""
    rows = [torch.zeros(num_bins) if fn is None else fn(num_bins, height, width).float()
            for fn, _ in space.values()]  # fmt: skip
    signed = torch.tensor([is_signed for _, is_signed in space.values()])
    return OpTable(torch.tensor([OP_INDEX[name] for name in space]), torch.stack(rows), signed)


@functools.lru_cache(maxsize=None)
def device_table(policy: str, num_bins: int, height: int, width: int, device: torch.device) -> OpTable:
    """`op_table` copied to the device once, so that a step does no host-to-device copy."""
    return OpTable(*(t.to(device) for t in op_table(SPACES[policy], num_bins, height, width)))


def pick_ops(table: OpTable, entries: Tensor, bins: Tensor, negate: Tensor) -> tuple[Tensor, Tensor]:
    """OPS indices and signed magnitudes of the space `entries` at magnitude `bins` (same shapes):
    torchvision's `magnitude = magnitudes[bin]; if signed and rand() <= 0.5: magnitude *= -1`."""
    magnitudes = table.magnitudes[entries, bins]
    return table.ops[entries], torch.where(negate & table.signed[entries], -magnitudes, magnitudes)


AUTOAUG_NUM_BINS = 10
AutoAugPolicy = tuple[tuple[tuple[str, float, int | None], ...], ...]
"""Sub-policies ((op, probability, magnitude bin or None), x2), as torchvision's `_get_policies`."""

# AutoAugment._get_policies(AutoAugmentPolicy.IMAGENET), torchvision's default (repeats included).
AUTOAUG_IMAGENET_POLICY: AutoAugPolicy = (
    (("Posterize", 0.4, 8), ("Rotate", 0.6, 9)),
    (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
    (("Equalize", 0.8, None), ("Equalize", 0.6, None)),
    (("Posterize", 0.6, 7), ("Posterize", 0.6, 6)),
    (("Equalize", 0.4, None), ("Solarize", 0.2, 4)),
    (("Equalize", 0.4, None), ("Rotate", 0.8, 8)),
    (("Solarize", 0.6, 3), ("Equalize", 0.6, None)),
    (("Posterize", 0.8, 5), ("Equalize", 1.0, None)),
    (("Rotate", 0.2, 3), ("Solarize", 0.6, 8)),
    (("Equalize", 0.6, None), ("Posterize", 0.4, 6)),
    (("Rotate", 0.8, 8), ("Color", 0.4, 0)),
    (("Rotate", 0.4, 9), ("Equalize", 0.6, None)),
    (("Equalize", 0.0, None), ("Equalize", 0.8, None)),
    (("Invert", 0.6, None), ("Equalize", 1.0, None)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Rotate", 0.8, 8), ("Color", 1.0, 2)),
    (("Color", 0.8, 8), ("Solarize", 0.8, 7)),
    (("Sharpness", 0.4, 7), ("Invert", 0.6, None)),
    (("ShearX", 0.6, 5), ("Equalize", 1.0, None)),
    (("Color", 0.4, 0), ("Equalize", 0.6, None)),
    (("Equalize", 0.4, None), ("Solarize", 0.2, 4)),
    (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
    (("Invert", 0.6, None), ("Equalize", 1.0, None)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Equalize", 0.8, None), ("Equalize", 0.6, None)),
)
# AutoAugment._get_policies(AutoAugmentPolicy.CIFAR10)
AUTOAUG_CIFAR10_POLICY: AutoAugPolicy = (
    (("Invert", 0.1, None), ("Contrast", 0.2, 6)),
    (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9)),
    (("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3)),
    (("ShearY", 0.5, 8), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.5, None), ("Equalize", 0.9, None)),
    (("ShearY", 0.2, 7), ("Posterize", 0.3, 7)),
    (("Color", 0.4, 3), ("Brightness", 0.6, 7)),
    (("Sharpness", 0.3, 9), ("Brightness", 0.7, 9)),
    (("Equalize", 0.6, None), ("Equalize", 0.5, None)),
    (("Contrast", 0.6, 7), ("Sharpness", 0.6, 5)),
    (("Color", 0.7, 7), ("TranslateX", 0.5, 8)),
    (("Equalize", 0.3, None), ("AutoContrast", 0.4, None)),
    (("TranslateY", 0.4, 3), ("Sharpness", 0.2, 6)),
    (("Brightness", 0.9, 6), ("Color", 0.2, 8)),
    (("Solarize", 0.5, 2), ("Invert", 0.0, None)),
    (("Equalize", 0.2, None), ("AutoContrast", 0.6, None)),
    (("Equalize", 0.2, None), ("Equalize", 0.6, None)),
    (("Color", 0.9, 9), ("Equalize", 0.6, None)),
    (("AutoContrast", 0.8, None), ("Solarize", 0.2, 8)),
    (("Brightness", 0.1, 3), ("Color", 0.7, 0)),
    (("Solarize", 0.4, 5), ("AutoContrast", 0.9, None)),
    (("TranslateY", 0.9, 9), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.9, None), ("Solarize", 0.8, 3)),
    (("Equalize", 0.8, None), ("Invert", 0.1, None)),
    (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, None)),
)
AUTOAUG_POLICIES: dict[str, AutoAugPolicy] = {
    "imagenet": AUTOAUG_IMAGENET_POLICY, "cifar10": AUTOAUG_CIFAR10_POLICY,
}  # fmt: skip
