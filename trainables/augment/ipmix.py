"""IPMix (Wu et al. 2024, arXiv 2310.04780), faithful to the reference code (`hzlsaber/IPMix`,
`cifar.py`'s `ipmix` and `IPMix_utils.py`), batched on the device with per-image randomness.

Per image: chain weights w ~ Dirichlet(1, 1, 1), m ~ Beta(1, 1), one mixing picture (a random
crop of one picture of the mixing set, the reference's Resize(36) + RandomCrop(32)), and k = 3
chains, each image-level or patch-level with probability 1/2 and 0..3 steps (uniform):
    image step  one of IMAGE_OPS, level ~ U(0.1, severity), signed ops negated with probability 1/2;
    patch step  a box of side s in PATCH_SIDES (square with probability 1/2, else each side uniform in
                2..s) at a uniform position, inside which the image and the picture are mixed by one
                of PIXEL_OPS, with coefficients from `mixing_coefficients`(beta).
    x_ipmix = (1 - m) x + m sum_i w_i chain_i(x); the label is unchanged.
All chains of all images run in lockstep, B * 3 images through 3 steps; each step is one
`dispatch` of the image ops and one of the patch mixings (inactive steps are the identity), so there
is no per-image loop and, on an accelerator, no host sync.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import torch
from torch import Tensor

from trainables.augment.common import Augmentation, dirichlet, dispatch, per_image
from trainables.augment.geometry import windows
from trainables.augment.ipmix_ops import (
    AFFINE_OPS, IMAGE_OPS, MIN_LEVEL, PIXEL_OPS, image_affine, image_equalize, image_invert, image_mirror,
    image_posterize, image_solarize, mixing_coefficients, patch_mix,
)  # fmt: skip

IPMIX_WIDTH = 3  # k: chains per image
IPMIX_MAX_DEPTH = 3  # t: each chain applies np.random.randint(t + 1) = 0..3 steps
IPMIX_ALPHA = 1.0  # Dirichlet(1, ..., 1) chain weights, Beta(1, 1) final mix
CHAIN_KINDS: tuple[str, ...] = ("image", "patch")  # the reference's 'IMG' and 'P', drawn uniformly
PATCH_FRACTIONS: tuple[float, ...] = (1 / 8, 1 / 4, 1 / 2, 1.0)  # {4, 8, 16, 32} px at 32 px, scaled


class IPMixSetting(NamedTuple):
    severity: float  # aug_severity: image-op levels ~ U(0.1, severity)
    beta: float  # the pixel mixing coefficients' Beta parameter


# The reference's settings: cifar.py (32 px) and imagenet.py (224 px crops).
IPMIX_SETTINGS: dict[str, IPMixSetting] = {"cifar": IPMixSetting(3.0, 3.0), "imagenet": IPMixSetting(1.0, 4.0)}
IMAGENET_SIDE = 128  # images at least this wide take the ImageNet setting; 32-64 px ones (CIFAR, Tiny ImageNet) CIFAR's


def ipmix_setting(size: tuple[int, int]) -> IPMixSetting:
    return IPMIX_SETTINGS["imagenet" if max(size) >= IMAGENET_SIDE else "cifar"]


def patch_sides(size: tuple[int, int]) -> tuple[int, ...]:
    """The patch sides for images of `size`: {4, 8, 16, 32} at 32 px, in proportion elsewhere."""
    side = min(size)
    return tuple(max(2, round(fraction * side)) for fraction in PATCH_FRACTIONS)


class IPMixParams(NamedTuple):
    """Per-image draws; K = IPMIX_WIDTH chains, D = IPMIX_MAX_DEPTH steps."""

    mix: Tensor  # (B,) m ~ Beta(1, 1), the chains' share
    weights: Tensor  # (B, K) chain weights ~ Dirichlet(1, ..., 1)
    picture: Tensor  # (B,) long: the mixing picture, an index into the mixing set
    picture_offset: Tensor  # (B, 2) long: its crop's (top, left)
    kind: Tensor  # (B, K) long: index into CHAIN_KINDS
    depth: Tensor  # (B, K) long: steps the chain applies, 0..D
    image_op: Tensor  # (B, K, D) long: index into IMAGE_OPS (image chains)
    level: Tensor  # (B, K, D) float: U(0.1, severity) (image chains)
    negate: Tensor  # (B, K, D) bool: negate a signed op (image chains)
    pixel_op: Tensor  # (B, K, D) long: index into PIXEL_OPS (patch chains)
    box: Tensor  # (B, K, D, 4) long: (top, left, height, width) of the patch (patch chains)
    a: Tensor  # (B, K, D) float: the image's mixing coefficient (add, multiply)
    b: Tensor  # (B, K, D) float: the picture's mixing coefficient (add, multiply)
    threshold: Tensor  # (B, K, D) float: U(0, 1), the random masks' keep rate (random pixels / elements)


def _below(bound: Tensor, shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
    """Uniform integers in [0, bound) with a per-element bound (long tensor broadcastable to shape)."""
    u = torch.rand(shape, generator=generator, device=bound.device, dtype=torch.float64)
    return torch.minimum((u * bound).long(), bound - 1)  # the min guards u * bound rounding up to bound


@functools.lru_cache(maxsize=None)
def _device_sides(sides: tuple[int, ...], device: torch.device) -> Tensor:
    """The patch sides on the device, made once (a tensor built in the step is a host-to-device copy)."""
    return torch.tensor(sides, device=device)


def patch_boxes(shape: tuple[int, ...], size: tuple[int, int], generator: torch.Generator,
                device: torch.device) -> Tensor:  # fmt: skip
    """(*shape, 4) long boxes (top, left, height, width), as `patch_mixing`: side s uniform in the
    patch sides, top-left uniform with the s x s square inside the image, then square with
    probability 1/2, else height and width each uniform in 2..s (random.randint is inclusive)."""
    height, width = size
    sides = _device_sides(patch_sides(size), device)
    side = sides[torch.randint(len(sides), shape, generator=generator, device=device)]
    left = _below(width - side + 1, shape, generator)
    top = _below(height - side + 1, shape, generator)
    square = torch.rand(shape, generator=generator, device=device) > 0.5
    box_h = torch.where(square, side, 2 + _below(side - 1, shape, generator))
    box_w = torch.where(square, side, 2 + _below(side - 1, shape, generator))
    return torch.stack([top, left, box_h, box_w], dim=-1)


def ipmix_params(batch: int, generator: torch.Generator, device: torch.device, size: tuple[int, int],
                 pictures: int, picture_side: int) -> IPMixParams:  # fmt: skip
    """Draw every image's IPMix choices for images of `size` (H, W), with a mixing set of `pictures`
    square pictures of `picture_side` px (>= H, W)."""
    device = torch.device(device)
    setting = ipmix_setting(size)
    chains, steps = (batch, IPMIX_WIDTH), (batch, IPMIX_WIDTH, IPMIX_MAX_DEPTH)
    weights = dirichlet(IPMIX_ALPHA, chains, generator, device)
    mix = dirichlet(IPMIX_ALPHA, (batch, 2), generator, device)[:, 0]  # Beta(1, 1)
    picture = torch.randint(pictures, (batch,), generator=generator, device=device)
    top = torch.randint(picture_side - size[0] + 1, (batch,), generator=generator, device=device)
    left = torch.randint(picture_side - size[1] + 1, (batch,), generator=generator, device=device)
    kind = torch.randint(len(CHAIN_KINDS), chains, generator=generator, device=device)
    depth = torch.randint(IPMIX_MAX_DEPTH + 1, chains, generator=generator, device=device)
    image_op = torch.randint(len(IMAGE_OPS), steps, generator=generator, device=device)
    level = MIN_LEVEL + torch.rand(steps, generator=generator, device=device) * (setting.severity - MIN_LEVEL)
    negate = torch.rand(steps, generator=generator, device=device) > 0.5
    pixel_op = torch.randint(len(PIXEL_OPS), steps, generator=generator, device=device)
    box = patch_boxes(steps, size, generator, device)
    first, u, v, threshold = torch.rand((4, *steps), generator=generator, device=device).unbind(0)
    a, b = mixing_coefficients(setting.beta, first < 0.5, u, v)
    return IPMixParams(mix, weights, picture, torch.stack([top, left], dim=-1), kind, depth, image_op, level, negate, pixel_op, box, a, b,
                       threshold)  # fmt: skip


# --- applying the draws ---------------------------------------------------------------------------

# What one step of one chain does; each is one kernel over the chains that drew it. The affine
# image ops share one warp.
STEP_GROUPS: tuple[str, ...] = (
    "identity", "affine", "equalize", "posterize", "solarize", "mirror", "invert", "patch",
)  # fmt: skip
_GROUP_OF_IMAGE_OP = {name: "affine" if name in AFFINE_OPS else name for name in IMAGE_OPS}
StepKernel = Callable[..., Tensor]
IMAGE_KERNELS: tuple[StepKernel | None, ...] = (  # (x, op, level, negate), one per STEP_GROUPS entry
    None,
    image_affine,
    lambda x, op, level, negate: image_equalize(x),
    lambda x, op, level, negate: image_posterize(x, level),
    lambda x, op, level, negate: image_solarize(x, level),
    lambda x, op, level, negate: image_mirror(x),
    lambda x, op, level, negate: image_invert(x),
    None,  # patch: see PATCH_KERNELS
)  # fmt: skip
PATCH_KERNELS: tuple[StepKernel | None, ...] = (  # (x, pixel_op, box, a, b, threshold, noise, picture)
    None,
    lambda x, pixel_op, box, a, b, threshold, noise, picture: patch_mix(x, picture, pixel_op, box, a, b, threshold,
                                                                         noise),
)  # fmt: skip


@functools.lru_cache(maxsize=None)
def _image_op_group(device: torch.device) -> Tensor:
    """(len(IMAGE_OPS),) long on `device`: each image op's index into STEP_GROUPS."""
    return torch.tensor([STEP_GROUPS.index(_GROUP_OF_IMAGE_OP[name]) for name in IMAGE_OPS], device=device)


def step_groups(params: IPMixParams) -> Tensor:
    """(B, K, D) long: each step's index into STEP_GROUPS (identity past the chain's depth)."""
    image = _image_op_group(params.image_op.device)[params.image_op]
    is_patch = (params.kind == CHAIN_KINDS.index("patch")).unsqueeze(-1)  # (B, K, 1)
    group = torch.where(is_patch, STEP_GROUPS.index("patch"), image)
    active = torch.arange(IPMIX_MAX_DEPTH, device=group.device) < params.depth.unsqueeze(-1)
    return torch.where(active, group, STEP_GROUPS.index("identity"))


def mixing_pictures(pictures: Tensor, params: IPMixParams, size: tuple[int, int], channels: int) -> Tensor:
    """Each image's crop of its mixing picture as float (B, C, H, W) in [0, 1]. `pictures`: the
    mixing set, uint8 (N, 3, S, S). A grey batch mixes with the pictures' mean over colours."""
    crops = windows(pictures, params.picture, params.picture_offset, size).float() / 255.0
    return crops if channels == crops.shape[1] else crops.mean(dim=1, keepdim=True).expand(-1, channels, -1, -1)


def ipmix_apply(x: Tensor, params: IPMixParams, pictures: Tensor, generator: torch.Generator) -> Tensor:
    """IPMix with explicit draws (see `ipmix_params`) and mixing set `pictures` (N, 3, S, S) uint8;
    `generator` draws the random pixel masks, step by step. x (B, C, H, W) float in [0, 1] -> same."""
    B, C, H, W = x.shape
    K, D = IPMIX_WIDTH, IPMIX_MAX_DEPTH
    picture = mixing_pictures(pictures, params, (H, W), C).to(x.dtype)

    def rows(t: Tensor) -> Tensor:  # (B, K, ...) -> (B * K, ...): every chain of every image a row
        return t.reshape(B * K, *t.shape[2:])

    chains = rows(x.unsqueeze(1).expand(B, K, C, H, W))
    chain_picture = rows(picture.unsqueeze(1).expand(B, K, C, H, W))
    group = rows(step_groups(params))
    is_patch = (group == STEP_GROUPS.index("patch")).long()  # index into PATCH_KERNELS
    image_group = torch.where(is_patch.bool(), STEP_GROUPS.index("identity"), group)
    image = [rows(t) for t in (params.image_op, params.level, params.negate)]
    patch = [rows(t) for t in (params.pixel_op, params.box, params.a, params.b, params.threshold)]
    for step in range(D):
        # Two dispatches per step, so that the image groups never gather the large noise and pictures.
        chains = dispatch(chains, image_group[:, step], IMAGE_KERNELS, *(t[:, step] for t in image))
        noise = torch.rand(chains.shape, generator=generator, device=x.device, dtype=x.dtype)
        chains = dispatch(chains, is_patch[:, step], PATCH_KERNELS, *(t[:, step] for t in patch), noise,
                          chain_picture)  # fmt: skip
    chains = chains.view(B, K, C, H, W)
    mixture = torch.zeros_like(x)
    for k in range(K):  # the reference's summation order: mix += ws[i] * chain_i
        mixture = mixture + per_image(params.weights[:, k].to(x.dtype)) * chains[:, k]
    m = per_image(params.mix.to(x.dtype))
    return ((1 - m) * x + m * mixture).clamp(0.0, 1.0)  # convex: only float rounding can step outside


PictureSource = Callable[[tuple[int, int], torch.device], Tensor]
"""(image size (H, W), device) -> the mixing set for it: uint8 (N, 3, S, S) on the device, S >= H, W."""


def make_ipmix(pictures: PictureSource) -> Augmentation:
    """The IPMix `Augmentation` mixing with the pictures of `pictures` (the procedural set, or a
    folder of the user's: trainables.augment.mixing_set)."""

    def ipmix(x: Tensor, y: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """IPMix (k = 3, t = 3, the reference's severity and beta for the image size); per image."""
        size = (x.shape[-2], x.shape[-1])
        bank = pictures(size, x.device)
        params = ipmix_params(x.shape[0], generator, x.device, size, bank.shape[0], bank.shape[-1])
        return ipmix_apply(x, params, bank, generator), y

    return ipmix
