"""The paper's per-image policies as pure batched functions: fcr (flip, crop, rotate), TrivialAugmentWide,
RandAugment, AutoAugment and AugMix, each as torchvision's transform with every image drawing its own
parameters. Each policy is a `*_params` function (the draws, on the device, no host sync), an
`*_apply` or `apply_ops` call with those draws, and the `Augmentation` that chains the two."""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from trainables.augment.common import dirichlet, per_image
from trainables.augment.geometry import batch_crop, batch_flip, batch_rotate
from trainables.augment.kernels import IDENTITY, apply_op, apply_ops
from trainables.augment.spaces import (
    AUGMIX_PAPER_SPACE, AUGMIX_SPACE, AUTOAUG_NUM_BINS, AUTOAUG_POLICIES, AUTOAUG_SPACE, RANDAUG_SPACE,
    TRIVAUG_SPACE, OpSpace, device_table, op_table, pick_ops,
)  # fmt: skip

# ---------------------------------------------------------------------------------------------------
# fcr: the paper's base augmentation = RandomHorizontalFlip(0.5), RandomCrop(H, padding=4),
# RandomRotation(15), applied in that order (torchvision Compose semantics).
# ---------------------------------------------------------------------------------------------------

FCR_FLIP_P = 0.5  # RandomHorizontalFlip(p=0.5)
FCR_PADDING = 4  # RandomCrop(size, padding=4): zero padding, offset uniform in [0, 2 * padding] per axis
FCR_DEGREES = 15.0  # RandomRotation(15): angle uniform in [-15, 15], NEAREST, fill 0
# Rotation uses NEAREST (torchvision's default) rather than bilinear: it is what RandomRotation(15) does,
# and it keeps pixel values on the uint8 grid, so a following trivaug sees exactly the values a uint8
# pipeline would (posterize/solarize/equalize thresholds) and the result is exactly testable.


def fcr_params(
    batch: int, generator: torch.Generator, device: torch.device
) -> tuple[Tensor, Tensor, Tensor]:
    """Draw per-image fcr parameters: flip (B,) bool, offsets (B, 2) long (top, left), angles (B,)
    degrees, with torchvision's distributions."""
    flip = torch.rand(batch, generator=generator, device=device) < FCR_FLIP_P
    offsets = torch.randint(0, 2 * FCR_PADDING + 1, (batch, 2), generator=generator, device=device)
    angles = torch.rand(batch, generator=generator, device=device) * (2 * FCR_DEGREES) - FCR_DEGREES
    return flip, offsets, angles


def fcr_apply(x: Tensor, flip: Tensor, offsets: Tensor, angles: Tensor) -> Tensor:
    """fcr with explicit parameters (see `fcr_params`). x (B, C, H, W) -> (B, C, H, W).

    Crop and rotation are separate steps, not one fused affine warp: after a torchvision crop the
    pixels outside the window are gone, so rotating must fill the corners with 0, whereas a fused warp
    would pull the padded-away neighbours back in.
    """
    return batch_rotate(batch_crop(batch_flip(x, flip), offsets), angles)


def fcr(x: Tensor, y: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Random flip, 4-px-padded crop, +-15 degree rotation; each image draws its own."""
    return fcr_apply(x, *fcr_params(x.shape[0], generator, x.device)), y


# ---------------------------------------------------------------------------------------------------
# trivaug: TrivialAugmentWide (Mueller & Hutter 2021) as torchvision.transforms.v2.TrivialAugmentWide:
# per image one op uniformly from TRIVAUG_SPACE, one of 31 bins uniformly (bin 0 = magnitude 0)
# ---------------------------------------------------------------------------------------------------

TRIVAUG_NUM_BINS = 31
TRIVAUG_SIGNED: tuple[bool, ...] = tuple(signed for _, signed in TRIVAUG_SPACE.values())


def trivaug_magnitudes(num_bins: int = TRIVAUG_NUM_BINS) -> Tensor:
    """(14, num_bins) float32 magnitude table, row per op in `TRIVAUG_OPS` (size-independent)."""
    return op_table(TRIVAUG_SPACE, num_bins, 0, 0).magnitudes


def trivaug_params(
    batch: int, generator: torch.Generator, device: torch.device
) -> tuple[Tensor, Tensor]:
    """Draw per-image TrivialAugmentWide choices: ops (B,) long indices into `TRIVAUG_OPS`, and signed
    magnitudes (B,) float32, exactly torchvision's `magnitude` after its sign flip."""
    table = device_table("trivaug", TRIVAUG_NUM_BINS, 0, 0, torch.device(device))
    entries = torch.randint(len(TRIVAUG_SPACE), (batch,), generator=generator, device=device)
    bins = torch.randint(TRIVAUG_NUM_BINS, (batch,), generator=generator, device=device)
    negate = torch.rand(batch, generator=generator, device=device) <= 0.5  # torchvision: rand() <= 0.5
    return pick_ops(table, entries, bins, negate)


def trivaug_apply(x: Tensor, ops: Tensor, magnitudes: Tensor) -> Tensor:
    """TrivialAugmentWide with explicit per-image `ops` (B,) and signed `magnitudes` (B,): `apply_op`
    with nearest interpolation. x (B, C, H, W) float in [0, 1] -> same."""
    return apply_op(x, ops, magnitudes, "nearest")


def trivaug(x: Tensor, y: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """TrivialAugmentWide: each image draws one of 14 ops and one of 31 magnitude bins."""
    return trivaug_apply(x, *trivaug_params(x.shape[0], generator, x.device)), y


# ---------------------------------------------------------------------------------------------------
# randaug: torchvision.transforms.v2.RandAugment() defaults (Cubuk et al. 2020): per image, 2 ops drawn
# uniformly from RANDAUG_SPACE with replacement, each at the fixed bin 9 of 31 with its own sign
# ---------------------------------------------------------------------------------------------------

RANDAUG_NUM_OPS = 2  # num_ops
RANDAUG_MAGNITUDE = 9  # magnitude: the bin index, the same for every op
RANDAUG_NUM_BINS = 31  # num_magnitude_bins


def randaug_params(
    batch: int, generator: torch.Generator, device: torch.device, size: tuple[int, int]
) -> tuple[Tensor, Tensor]:
    """Per-image RandAugment choices for images of `size` (H, W): ops (B, 2) long indices into `OPS`,
    applied left to right, and their signed magnitudes (B, 2) float32."""
    table = device_table("randaug", RANDAUG_NUM_BINS, *size, torch.device(device))
    shape = (batch, RANDAUG_NUM_OPS)
    entries = torch.randint(len(RANDAUG_SPACE), shape, generator=generator, device=device)
    negate = torch.rand(shape, generator=generator, device=device) <= 0.5
    bins = torch.full(shape, RANDAUG_MAGNITUDE, device=device)
    return pick_ops(table, entries, bins, negate)


def randaug(x: Tensor, y: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """RandAugment(num_ops=2, magnitude=9, num_magnitude_bins=31), nearest, fill 0; per image."""
    return apply_ops(x, *randaug_params(x.shape[0], generator, x.device, x.shape[-2:])), y


# ---------------------------------------------------------------------------------------------------
# autoaug: torchvision.transforms.v2.AutoAugment() (Cubuk et al. 2019), whose default policy is the
# ImageNet one, as the paper's authors call it; autoaug_cifar10: AutoAugment(AutoAugmentPolicy.CIFAR10).
# Per image one of the policy's 25 sub-policies uniformly; each of its two ops applies when
# rand() <= its probability, at its fixed bin of AUTOAUG_SPACE's 10-bin table (both policies share
# the space), signed ops negated when rand() <= 0.5
# ---------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _autoaug_policy(policy: str, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """The policy as tensors (25, 2) on `device`: rows of AUTOAUG_SPACE, probabilities (float32, as
    torchvision's rand() <= p compares them), magnitude bins (0 for magnitude-free ops)."""
    rows, subs = list(AUTOAUG_SPACE), AUTOAUG_POLICIES[policy]
    entries = [[rows.index(op) for op, _, _ in sub] for sub in subs]
    probabilities = [[p for _, p, _ in sub] for sub in subs]
    bins = [[0 if b is None else b for _, _, b in sub] for sub in subs]
    return (torch.tensor(entries, device=device), torch.tensor(probabilities, device=device),
            torch.tensor(bins, device=device))  # fmt: skip


def autoaug_params(
    batch: int, generator: torch.Generator, device: torch.device, size: tuple[int, int],
    policy: str = "imagenet",
) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    """Per-image AutoAugment choices for images of `size` (H, W) under `AUTOAUG_POLICIES[policy]`:
    sub-policy (B,) long index into the policy; ops (B, 2) long indices into `OPS` (`IDENTITY` where
    the op was not applied) and their signed magnitudes (B, 2) float32 (0 where not applied)."""
    device = torch.device(device)
    table = device_table("autoaug", AUTOAUG_NUM_BINS, *size, device)
    entries, probabilities, bins = _autoaug_policy(policy, device)
    sub = torch.randint(entries.shape[0], (batch,), generator=generator, device=device)
    applied = torch.rand((batch, 2), generator=generator, device=device) <= probabilities[sub]
    negate = torch.rand((batch, 2), generator=generator, device=device) <= 0.5
    ops, magnitudes = pick_ops(table, entries[sub], bins[sub], negate)
    return sub, torch.where(applied, ops, IDENTITY), torch.where(applied, magnitudes, 0.0)


def autoaug(x: Tensor, y: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """AutoAugment, ImageNet policy (torchvision's default, the authors'), nearest, fill 0; each
    image draws its own sub-policy."""
    _, ops, magnitudes = autoaug_params(x.shape[0], generator, x.device, x.shape[-2:], "imagenet")
    return apply_ops(x, ops, magnitudes), y


def autoaug_cifar10(x: Tensor, y: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """AutoAugment, CIFAR-10 policy, nearest, fill 0; each image draws its own sub-policy."""
    _, ops, magnitudes = autoaug_params(x.shape[0], generator, x.device, x.shape[-2:], "cifar10")
    return apply_ops(x, ops, magnitudes), y


# ---------------------------------------------------------------------------------------------------
# augmix: torchvision.transforms.v2.AugMix() defaults (Hendrycks et al. 2020), the augmentation only
# (the Jensen-Shannon consistency loss is the trial option `jsd`, trainables/consistency.py). Per
# image: weights (w0, w1..w3) with w0 ~ Beta(1, 1) for the original and Dirichlet(1, 1, 1) * (1 - w0)
# for 3 chains; each chain 1..3 ops uniformly from the space at bins 0..severity-1 of a 10-bin table;
# bilinear; out = w0 x + sum_k w_k chain_k(x). Two op sets: `augmix` is torchvision's default
# all_ops=True (AUGMIX_SPACE, what the supervised-mollification authors train with); `augmix_paper`
# is all_ops=False (AUGMIX_PAPER_SPACE), the AugMix paper's set without the ops that overlap the
# test corruptions (brightness, color, contrast, sharpness).
# ---------------------------------------------------------------------------------------------------

AUGMIX_SEVERITY = 3  # magnitude bins 0..severity-1
AUGMIX_WIDTH = 3  # mixture_width: chains per image
AUGMIX_MAX_DEPTH = 3  # chain_depth=-1: each chain's depth uniform in 1..3
AUGMIX_ALPHA = 1.0  # Dirichlet / Beta concentration
AUGMIX_NUM_BINS = 10  # torchvision's _PARAMETER_MAX


AUGMIX_SPACES: dict[str, OpSpace] = {"augmix": AUGMIX_SPACE, "augmix_paper": AUGMIX_PAPER_SPACE}


def augmix_params(
    batch: int, generator: torch.Generator, device: torch.device, size: tuple[int, int], ops: str = "augmix",
) -> tuple[Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
    """Per-image AugMix choices for images of `size` (H, W) from the op set `AUGMIX_SPACES[ops]`:
    weight of the original (B,), weights of the chains (B, 3) (together they sum to 1), and each
    chain's ops (B, 3, 3) (indices into `OPS`, `IDENTITY` after the chain's depth) and signed
    magnitudes (B, 3, 3)."""
    device = torch.device(device)
    skip = dirichlet(AUGMIX_ALPHA, (batch, 2), generator, device)  # torchvision's Beta via Dirichlet
    chain_weights = dirichlet(AUGMIX_ALPHA, (batch, AUGMIX_WIDTH), generator, device) * skip[:, 1:]
    shape = (batch, AUGMIX_WIDTH, AUGMIX_MAX_DEPTH)
    depth = torch.randint(1, AUGMIX_MAX_DEPTH + 1, shape[:2] + (1,), generator=generator, device=device)
    entries = torch.randint(len(AUGMIX_SPACES[ops]), shape, generator=generator, device=device)
    bins = torch.randint(AUGMIX_SEVERITY, shape, generator=generator, device=device)
    negate = torch.rand(shape, generator=generator, device=device) <= 0.5
    table = device_table(ops, AUGMIX_NUM_BINS, *size, device)
    ops, magnitudes = pick_ops(table, entries, bins, negate)
    active = torch.arange(AUGMIX_MAX_DEPTH, device=device) < depth  # (B, 3, 3)
    return skip[:, 0], chain_weights, torch.where(active, ops, IDENTITY), torch.where(active, magnitudes, 0.0)


def augmix_apply(x: Tensor, original_weight: Tensor, chain_weights: Tensor, ops: Tensor,
                 magnitudes: Tensor) -> Tensor:  # fmt: skip
    """AugMix with explicit parameters (see `augmix_params`): original_weight (B,), chain_weights
    (B, K), ops and magnitudes (B, K, D). x (B, C, H, W) float in [0, 1] -> same."""
    B, C, H, W = x.shape
    width, depth = ops.shape[1:]
    # All chains of all images in lockstep: B * K images through D steps (Identity past a chain's end).
    chains = x.unsqueeze(1).expand(B, width, C, H, W).reshape(B * width, C, H, W)
    chains = apply_ops(chains, ops.reshape(B * width, depth), magnitudes.reshape(B * width, depth),
                       "bilinear").view(B, width, C, H, W)  # fmt: skip
    mix = per_image(original_weight.to(x.dtype)) * x
    for k in range(width):  # torchvision's summation order
        mix = mix + per_image(chain_weights[:, k].to(x.dtype)) * chains[:, k]
    return mix.clamp(0.0, 1.0)  # the weights sum to 1: only float rounding can step outside [0, 1]


def augmix(x: Tensor, y: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """AugMix(severity=3, mixture_width=3, chain_depth=-1, alpha=1, all_ops=True); per image."""
    return augmix_apply(x, *augmix_params(x.shape[0], generator, x.device, x.shape[-2:], "augmix")), y


def augmix_paper(x: Tensor, y: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """AugMix(severity=3, mixture_width=3, chain_depth=-1, alpha=1, all_ops=False): the AugMix
    paper's op set, without brightness, color, contrast and sharpness; per image."""
    return augmix_apply(x, *augmix_params(x.shape[0], generator, x.device, x.shape[-2:], "augmix_paper")), y


