"""Batched base augmentations with per-image randomness, run on the training device.

The training set sits on the device as uint8; each step draws a batch, converts it to float32 in
[0, 1] and calls one `Augmentation` on the WHOLE batch (as in KellerJordan/cifar10-airbench's
`batch_flip_lr` / `batch_crop`). Every image still draws its own flip, crop offset, angle, op and
magnitude: parameters are per-image tensors and the ops are written over `(B, C, H, W)` batches with
per-image parameters, which torchvision's functional ops do not offer (they take one Python scalar
per call, so per-image randomness would need a per-image Python loop). Where torchvision is already
batched and parameter-free (autocontrast, equalize) we call it directly. MixUp and CutMix are the
exception by design: one lambda (and box) per batch, as torchvision and the paper's authors use them.

No op draws anything on the host or reads anything back (`.item()`, boolean-mask indexing with a
data-dependent size): on an accelerator every family of ops is evaluated on the whole batch and the
result picked per image with `torch.where`, so shapes are static and the step never waits on the
device. On CPU, where reading back is free, each family is computed only on the images that drew it.

Public API
----------
Augmentation, AUGMENTATIONS, LABEL_MIXING, create_augmentation(spec)
fcr(x, y, g), fcr_params(B, g, device), fcr_apply(x, flip, offsets, angles)
batch_flip(x, flip), batch_crop(x, offsets, padding), batch_rotate(x, angles)
OPS, IDENTITY, apply_op(x, ops, magnitudes, interpolation), apply_ops(x, ops, magnitudes, interpolation)
OpSpace, OpTable, op_table(space, num_bins, H, W), SPACES, TRIVAUG_SPACE, RANDAUG_SPACE, AUTOAUG_SPACE,
AUGMIX_SPACE, AUTOAUG_POLICIES, AUTOAUG_IMAGENET_POLICY, AUTOAUG_CIFAR10_POLICY
trivaug(x, y, g), trivaug_params(B, g, device), trivaug_apply(x, ops, magnitudes)
randaug(x, y, g), randaug_params(B, g, device, size)
autoaug(x, y, g), autoaug_cifar10(x, y, g), autoaug_params(B, g, device, size, policy)
augmix(x, y, g), augmix_params(B, g, device, size), augmix_apply(x, original_weight, chain_weights, ops,
magnitudes)
mixup(x, y, g), mixup_params(g, device), mixup_apply(x, y, lam)
cutmix(x, y, g), cutmix_params(g, device, size), cutmix_box(lam, centre, size),
cutmix_apply(x, y, box, lam_adjusted)
batch_affine(x, matrix, interpolation), inverse_affine_matrix(angle, translate, shear, center)
batch_blend(x, degenerate, factor), batch_posterize(x, bits), batch_solarize(x, threshold),
batch_equalize(x), TRIVAUG_OPS, TRIVAUG_SIGNED, trivaug_magnitudes(num_bins)
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

Augmentation = Callable[[Tensor, Tensor, torch.Generator], tuple[Tensor, Tensor]]
"""(x, y, generator) -> (x, y). x: float (B, C, H, W) in [0, 1]; y: soft labels (B, K). Pure: never
modifies its inputs. The generator lives on x's device."""


def _per_image(v: Tensor) -> Tensor:
    """(B,) -> (B, 1, 1, 1), to broadcast one value per image over (B, C, H, W)."""
    return v.view(-1, 1, 1, 1)


# ---------------------------------------------------------------------------------------------------
# Geometry: one affine warp with a per-image matrix, the same arithmetic as torchvision's tensor kernel
# ---------------------------------------------------------------------------------------------------


def inverse_affine_matrix(angle: Tensor, translate: Tensor, shear: Tensor, center: Tensor) -> Tensor:
    """Per-image port of torchvision's `_get_inverse_affine_matrix` (scale 1, inverted=True).

    angle (B,) degrees; translate (B, 2) pixels (x, y); shear (B, 2) degrees (x, y); center (B, 2)
    pixels relative to the image centre. Returns (B, 2, 3) float64: maps an output pixel (centred
    coordinates) to the input pixel it samples. float64 because torchvision does this in Python floats.
    """
    rot = torch.deg2rad(angle.double())
    sx, sy = torch.deg2rad(shear.double()).unbind(-1)
    cx, cy = center.double().unbind(-1)
    tx, ty = translate.double().unbind(-1)
    # RotateScaleShear = R(a) * SHy(sy) * SHx(sx); det == 1 so its inverse is [[d, -b], [-c, a]].
    a = torch.cos(rot - sy) / torch.cos(sy)
    b = -(a * torch.tan(sx) + torch.sin(rot))
    c = torch.sin(rot - sy) / torch.cos(sy)
    d = torch.cos(rot) - c * torch.tan(sx)
    m0, m1, m3, m4 = d, -b, -c, a
    # C * RSS^-1 * C^-1 * T^-1
    m2 = cx - m0 * (cx + tx) - m1 * (cy + ty)
    m5 = cy - m3 * (cx + tx) - m4 * (cy + ty)
    return torch.stack([m0, m1, m2, m3, m4, m5], dim=-1).view(-1, 2, 3)


def batch_affine(x: Tensor, matrix: Tensor, interpolation: str = "nearest") -> Tensor:
    """Warp each image by its own inverse affine `matrix` (B, 2, 3) (see `inverse_affine_matrix`).

    interpolation "nearest" (torchvision's default for RandomRotation, TrivialAugmentWide, RandAugment,
    AutoAugment) or "bilinear" (AugMix's); fill 0 outside. The grid is built exactly like
    torchvision's `_affine_grid` (pixel-centred coordinates, rescaled after applying theta) rather than
    with `F.affine_grid`, so that nearest sampling hits the same source pixel as torchvision, including
    at exact half-pixel ties.
    x (B, C, H, W) -> (B, C, H, W).
    """
    B, C, H, W = x.shape
    theta = matrix.to(x.dtype)
    xs = torch.linspace((1.0 - W) * 0.5, (W - 1.0) * 0.5, steps=W, device=x.device, dtype=x.dtype)
    ys = torch.linspace((1.0 - H) * 0.5, (H - 1.0) * 0.5, steps=H, device=x.device, dtype=x.dtype)
    ones = torch.ones(H, W, device=x.device, dtype=x.dtype)
    base = torch.stack([xs.expand(H, W), ys.unsqueeze(-1).expand(H, W), ones], dim=-1)  # (H, W, 3)
    theta_t = theta.transpose(1, 2)  # (B, 3, 2)
    rescaled = torch.stack([theta_t[..., 0] / (0.5 * W), theta_t[..., 1] / (0.5 * H)], dim=-1)
    grid = torch.matmul(base.view(1, H * W, 3), rescaled).view(B, H, W, 2)
    # padding_mode="zeros" == torchvision's fill=None (plain grid_sample), and its fill=0 for nearest.
    return F.grid_sample(x, grid, mode=interpolation, padding_mode="zeros", align_corners=False)


def batch_rotate(x: Tensor, angles: Tensor) -> Tensor:
    """Rotate each image counter-clockwise by `angles` (B,) degrees about its centre, nearest, fill 0,
    same size: torchvision `F.rotate(img, angle)` per image. x (B, C, H, W) -> (B, C, H, W)."""
    zeros = angles.new_zeros(angles.shape[0], 2)
    # torchvision's rotate builds the matrix from -angle (its rotate and affine disagree on direction).
    return batch_affine(x, inverse_affine_matrix(-angles, zeros, zeros, zeros))


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


def batch_flip(x: Tensor, flip: Tensor) -> Tensor:
    """Mirror left-right the images where `flip` (B,) bool is set. x (B, C, H, W) -> (B, C, H, W)."""
    return torch.where(_per_image(flip), x.flip(-1), x)


def batch_crop(x: Tensor, offsets: Tensor, padding: int = FCR_PADDING) -> Tensor:
    """Zero-pad by `padding`, then cut each image's H x W window at its own `offsets` (B, 2) long
    (top, left) in [0, 2 * padding]: torchvision `F.crop(F.pad(img, [padding]), top, left, H, W)`.
    One indexing op on the view of all windows instead of a per-image slice (4x faster on CPU than
    two gathers). x (B, C, H, W) -> (B, C, H, W)."""
    B, C, H, W = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))  # (B, C, H + 2p, W + 2p)
    windows = padded.unfold(2, H, 1).unfold(3, W, 1)  # view (B, C, 2p + 1, 2p + 1, H, W)
    batch = torch.arange(B, device=x.device)
    return windows[batch, :, offsets[:, 0], offsets[:, 1]]  # (B, C, H, W)


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
# Ops shared by TrivialAugmentWide, RandAugment, AutoAugment and AugMix: torchvision's
# `_AutoAugmentBase._apply_image_or_video_transform` with one op and one magnitude PER IMAGE
# ---------------------------------------------------------------------------------------------------

# Every op of every policy. The *_params functions return indices into OPS; TRIVAUG_OPS is its prefix.
#   op            applied as (torchvision, float image), m = the magnitude torchvision passes the op
#   Identity      x
#   ShearX        affine shear=(deg(atan m), 0) about top-left
#   ShearY        affine shear=(0, deg(atan m)) about top-left
#   TranslateX    affine translate=(int(m), 0)
#   TranslateY    affine translate=(0, int(m))
#   Rotate        rotate(m), counter-clockwise
#   Brightness    blend(x, 0, 1 + m)
#   Color         blend(x, gray(x), 1 + m)
#   Contrast      blend(x, mean(gray(x)), 1 + m)
#   Sharpness     blend(x, 3x3 smooth inside / x on border, 1 + m)
#   Posterize     keep the top int(m) bits of the uint8 value
#   Solarize      x >= m ? 1 - x : x
#   AutoContrast  per channel (x - min) / (max - min)
#   Equalize      per channel histogram equalisation (uint8)
#   Invert        1 - x (AutoAugment only)
# Geometric ops fill 0 outside, with nearest interpolation (torchvision's default) except in AugMix,
# whose torchvision default is bilinear.
OPS: tuple[str, ...] = (
    "Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness",
    "Color", "Contrast", "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize", "Invert",
)  # fmt: skip
TRIVAUG_OPS: tuple[str, ...] = OPS[:14]
IDENTITY = 0  # OPS index of Identity: the op of an image that skips a step
_OP = {name: i for i, name in enumerate(OPS)}

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
SPACES: dict[str, OpSpace] = {
    "trivaug": TRIVAUG_SPACE, "randaug": RANDAUG_SPACE, "autoaug": AUTOAUG_SPACE, "augmix": AUGMIX_SPACE,
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
    return OpTable(torch.tensor([_OP[name] for name in space]), torch.stack(rows), signed)


@functools.lru_cache(maxsize=None)
def _device_table(policy: str, num_bins: int, height: int, width: int, device: torch.device) -> OpTable:
    """`op_table` copied to the device once, so that a step does no host-to-device copy."""
    return OpTable(*(t.to(device) for t in op_table(SPACES[policy], num_bins, height, width)))


def _pick(table: OpTable, entries: Tensor, bins: Tensor, negate: Tensor) -> tuple[Tensor, Tensor]:
    """OPS indices and signed magnitudes of the space `entries` at magnitude `bins` (same shapes):
    torchvision's `magnitude = magnitudes[bin]; if signed and rand() <= 0.5: magnitude *= -1`."""
    magnitudes = table.magnitudes[entries, bins]
    return table.ops[entries], torch.where(negate & table.signed[entries], -magnitudes, magnitudes)


def _grayscale(x: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, 1, H, W) luma, torchvision's weights and operation order; C == 1 passes."""
    if x.shape[1] == 1:
        return x
    r, g, b = x.unbind(dim=1)
    return r.mul(0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114).unsqueeze(1)


def _blur_degenerate(x: Tensor) -> Tensor:
    """torchvision adjust_sharpness's degenerate image: 3x3 [[1,1,1],[1,5,1],[1,1,1]]/13 smoothing
    inside, the original pixels on the 1-px border. (B, C, H, W) -> (B, C, H, W)."""
    B, C, H, W = x.shape
    if H <= 2 or W <= 2:  # torchvision returns the image unchanged
        return x
    # Built on the device without item assignment (a blocking host-to-device copy of the scalar).
    centre = torch.full((1, 1), 5.0 / 13.0, dtype=x.dtype, device=x.device)
    kernel = F.pad(centre, (1, 1, 1, 1), value=1.0 / 13.0)  # (3, 3)
    blurred = F.conv2d(x, kernel.expand(C, 1, 3, 3), groups=C)  # (B, C, H - 2, W - 2)
    out = x.clone()
    out[..., 1:-1, 1:-1] = blurred
    return out


def batch_blend(x: Tensor, degenerate: Tensor, factor: Tensor) -> Tensor:
    """PIL ImageEnhance / torchvision `_blend` with a per-image factor (B,):
    clamp(factor * x + (1 - factor) * degenerate, 0, 1). degenerate broadcasts to x (B, C, H, W)."""
    factor = factor.double()  # torchvision computes 1 - ratio in Python floats
    ratio, complement = _per_image(factor.to(x.dtype)), _per_image((1.0 - factor).to(x.dtype))
    return (x * ratio + degenerate * complement).clamp(0.0, 1.0)


def _to_uint8_levels(x: Tensor) -> Tensor:
    """[0, 1] float -> nearest of the 256 uint8 levels, still float (0..255). Rounds (torchvision
    truncates x * 255.999) so off-grid inputs go to the nearest level; identical on the uint8 grid."""
    return torch.round(x * 255.0)


def batch_posterize(x: Tensor, bits: Tensor) -> Tensor:
    """Keep the top `bits` (B,) of each image's uint8 value: torchvision posterize on uint8 (x & mask),
    not its float variant (floor(x * 2**bits) / 2**bits, which moves even bits=8 images).
    Done in float: floor(k / 2**s) * 2**s is exact for powers of two. (B, C, H, W) -> (B, C, H, W)."""
    step = _per_image(torch.exp2(8.0 - bits.clamp(0, 8).to(x.dtype)))
    return torch.floor(_to_uint8_levels(x) / step) * step / 255.0


def batch_solarize(x: Tensor, threshold: Tensor) -> Tensor:
    """Invert pixels >= the per-image `threshold` (B,): torchvision solarize on [0, 1] floats."""
    return torch.where(x >= _per_image(threshold.to(x.dtype)), 1.0 - x, x)


def batch_equalize(x: Tensor) -> Tensor:
    """Per-image, per-channel histogram equalisation with uint8 semantics (torchvision's equalize is
    already batched; it needs 256 uint8 levels). (B, C, H, W) -> (B, C, H, W)."""
    return TF.equalize(_to_uint8_levels(x).to(torch.uint8)).to(x.dtype) / 255.0


def _geometric(x: Tensor, ops: Tensor, magnitudes: Tensor, interpolation: str) -> Tensor:
    """ShearX/Y, TranslateX/Y, Rotate for every image with one per-image affine warp; images with
    other ops get the identity matrix (their result is discarded by the caller)."""
    B, _, H, W = x.shape
    m = magnitudes.double()

    def only(name: str, value: Tensor) -> Tensor:  # value where the image drew `name`, else 0
        return torch.where(ops == _OP[name], value, torch.zeros_like(value))

    shear_deg = torch.rad2deg(torch.atan(m))  # torchvision: shear = degrees(atan(magnitude))
    shear = torch.stack([only("ShearX", shear_deg), only("ShearY", shear_deg)], dim=-1)  # (B, 2)
    shift = torch.trunc(m)  # torchvision: int(magnitude)
    translate = torch.stack([only("TranslateX", shift), only("TranslateY", shift)], dim=-1)  # (B, 2)
    angle = only("Rotate", -m)  # rotate builds its matrix from -angle
    # Shears use center=[0, 0] (the top-left corner), i.e. (-W/2, -H/2) relative to the image centre.
    is_shear = ((ops == _OP["ShearX"]) | (ops == _OP["ShearY"])).double()
    center = torch.stack([is_shear * (-0.5 * W), is_shear * (-0.5 * H)], dim=-1)  # (B, 2)
    return batch_affine(x, inverse_affine_matrix(angle, translate, shear, center), interpolation)


def _enhance(x: Tensor, ops: Tensor, magnitudes: Tensor) -> Tensor:
    """Brightness/Color/Contrast/Sharpness = blend with a per-op degenerate image and factor 1 + m."""
    gray = _grayscale(x)  # (B, 1, H, W)
    degenerates = {  # Brightness blends with black: the initial zeros
        "Color": gray,
        "Contrast": gray.mean(dim=(-3, -2, -1), keepdim=True),  # (B, 1, 1, 1)
        "Sharpness": _blur_degenerate(x),  # (B, C, H, W)
    }
    degenerate = torch.zeros_like(x[:1])  # (1, C, H, W)
    for name, image in degenerates.items():
        degenerate = torch.where(_per_image(ops == _OP[name]), image, degenerate)  # -> (B, C, H, W)
    return batch_blend(x, degenerate, 1.0 + magnitudes.double())


# Result family of each op, and how each family is computed for a (sub-)batch.
_FAMILY = {"Identity": 0, "ShearX": 1, "ShearY": 1, "TranslateX": 1, "TranslateY": 1, "Rotate": 1,
           "Brightness": 2, "Color": 2, "Contrast": 2, "Sharpness": 2,
           "Posterize": 3, "Solarize": 4, "AutoContrast": 5, "Equalize": 6, "Invert": 7}  # fmt: skip
_FAMILIES: tuple[Callable[[Tensor, Tensor, Tensor, str], Tensor], ...] = (  # (x, ops, m, interpolation)
    lambda x, ops, m, interpolation: x,
    _geometric,
    lambda x, ops, m, interpolation: _enhance(x, ops, m),
    lambda x, ops, m, interpolation: batch_posterize(x, torch.trunc(m)),
    lambda x, ops, m, interpolation: batch_solarize(x, m),
    lambda x, ops, m, interpolation: TF.autocontrast(x),  # batched per image and channel; float semantics
    lambda x, ops, m, interpolation: batch_equalize(x),
    lambda x, ops, m, interpolation: 1.0 - x,
)


@functools.lru_cache(maxsize=None)
def _op_family(device: torch.device) -> Tensor:
    return torch.tensor([_FAMILY[name] for name in OPS], device=device)


def _apply_masked(x: Tensor, family: Tensor, ops: Tensor, magnitudes: Tensor, interpolation: str) -> Tensor:
    """Every family on the whole batch, picked per image with torch.where: a few cheap full-batch
    passes, but static shapes and no host sync, which is what an accelerator wants."""
    out = x  # family 0: Identity
    for family_id, compute in enumerate(_FAMILIES[1:], start=1):
        out = torch.where(_per_image(family == family_id), compute(x, ops, magnitudes, interpolation), out)
    return out


def _apply_gathered(x: Tensor, family: Tensor, ops: Tensor, magnitudes: Tensor, interpolation: str) -> Tensor:
    """Each family only on the images that drew it. The sub-batch sizes are read on the host, which
    costs nothing on CPU (and would be a sync on a GPU); several times faster than `_apply_masked` there.
    Same result up to float rounding: every op is computed per image."""
    out = x.clone()
    for family_id, compute in enumerate(_FAMILIES[1:], start=1):
        index = (family == family_id).nonzero().squeeze(1)
        if index.numel():
            out[index] = compute(x[index], ops[index], magnitudes[index], interpolation)
    return out


def apply_op(x: Tensor, ops: Tensor, magnitudes: Tensor, interpolation: str = "nearest") -> Tensor:
    """Apply to each image its own op `ops` (B,) (indices into `OPS`) with its signed magnitude
    `magnitudes` (B,) as torchvision's `_apply_image_or_video_transform` receives it (Translate:
    pixels, Posterize: bits, Solarize: threshold in [0, 1]). interpolation: "nearest" or "bilinear",
    for the geometric ops. x (B, C, H, W) float in [0, 1] -> same."""
    family = _op_family(x.device)[ops]
    apply = _apply_gathered if x.device.type == "cpu" else _apply_masked
    return apply(x, family, ops, magnitudes, interpolation)


def apply_ops(x: Tensor, ops: Tensor, magnitudes: Tensor, interpolation: str = "nearest") -> Tensor:
    """`apply_op` for each column of `ops` and `magnitudes` (B, n), left to right. An image skips a
    step with op `IDENTITY`. x (B, C, H, W) -> same."""
    for step in range(ops.shape[1]):
        x = apply_op(x, ops[:, step], magnitudes[:, step], interpolation)
    return x


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
    table = _device_table("trivaug", TRIVAUG_NUM_BINS, 0, 0, torch.device(device))
    entries = torch.randint(len(TRIVAUG_SPACE), (batch,), generator=generator, device=device)
    bins = torch.randint(TRIVAUG_NUM_BINS, (batch,), generator=generator, device=device)
    negate = torch.rand(batch, generator=generator, device=device) <= 0.5  # torchvision: rand() <= 0.5
    return _pick(table, entries, bins, negate)


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
    table = _device_table("randaug", RANDAUG_NUM_BINS, *size, torch.device(device))
    shape = (batch, RANDAUG_NUM_OPS)
    entries = torch.randint(len(RANDAUG_SPACE), shape, generator=generator, device=device)
    negate = torch.rand(shape, generator=generator, device=device) <= 0.5
    bins = torch.full(shape, RANDAUG_MAGNITUDE, device=device)
    return _pick(table, entries, bins, negate)


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
    table = _device_table("autoaug", AUTOAUG_NUM_BINS, *size, device)
    entries, probabilities, bins = _autoaug_policy(policy, device)
    sub = torch.randint(entries.shape[0], (batch,), generator=generator, device=device)
    applied = torch.rand((batch, 2), generator=generator, device=device) <= probabilities[sub]
    negate = torch.rand((batch, 2), generator=generator, device=device) <= 0.5
    ops, magnitudes = _pick(table, entries[sub], bins[sub], negate)
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
# augmix: torchvision.transforms.v2.AugMix() defaults (Hendrycks et al. 2020), the augmentation ONLY:
# the paper's Jensen-Shannon consistency loss (two extra augmented views per image) is not part of
# torchvision's transform, nor of this baseline. Per image: weights (w0, w1..w3) with w0 ~ Beta(1, 1)
# for the original and Dirichlet(1, 1, 1) * (1 - w0) for 3 chains; each chain 1..3 ops uniformly
# from AUGMIX_SPACE at bins 0..severity-1 of a 10-bin table; bilinear; out = w0 x + sum_k w_k chain_k(x).
# ---------------------------------------------------------------------------------------------------

AUGMIX_SEVERITY = 3  # magnitude bins 0..severity-1
AUGMIX_WIDTH = 3  # mixture_width: chains per image
AUGMIX_MAX_DEPTH = 3  # chain_depth=-1: each chain's depth uniform in 1..3
AUGMIX_ALPHA = 1.0  # Dirichlet / Beta concentration
AUGMIX_NUM_BINS = 10  # torchvision's _PARAMETER_MAX


def _dirichlet(concentration: float, shape: tuple[int, ...], generator: torch.Generator,
               device: torch.device) -> Tensor:  # fmt: skip
    """Symmetric Dirichlet draws (*shape), the last axis summing to 1. torch.distributions' Dirichlet
    and Beta take no generator, so this calls the kernel they sample with (as torchvision's AugMix
    does); Beta(a, a) is the first entry of a Dirichlet(a, a) draw, as torch's Beta computes it."""
    alphas = torch.full(shape, concentration, device=device)
    return torch._sample_dirichlet(alphas, generator=generator)


def augmix_params(
    batch: int, generator: torch.Generator, device: torch.device, size: tuple[int, int]
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-image AugMix choices for images of `size` (H, W): weight of the original (B,), weights of
    the chains (B, 3) (together they sum to 1), and each chain's ops (B, 3, 3) (indices into `OPS`,
    `IDENTITY` after the chain's depth) and signed magnitudes (B, 3, 3)."""
    device = torch.device(device)
    skip = _dirichlet(AUGMIX_ALPHA, (batch, 2), generator, device)  # torchvision's Beta via Dirichlet
    chain_weights = _dirichlet(AUGMIX_ALPHA, (batch, AUGMIX_WIDTH), generator, device) * skip[:, 1:]
    shape = (batch, AUGMIX_WIDTH, AUGMIX_MAX_DEPTH)
    depth = torch.randint(1, AUGMIX_MAX_DEPTH + 1, shape[:2] + (1,), generator=generator, device=device)
    entries = torch.randint(len(AUGMIX_SPACE), shape, generator=generator, device=device)
    bins = torch.randint(AUGMIX_SEVERITY, shape, generator=generator, device=device)
    negate = torch.rand(shape, generator=generator, device=device) <= 0.5
    table = _device_table("augmix", AUGMIX_NUM_BINS, *size, device)
    ops, magnitudes = _pick(table, entries, bins, negate)
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
    mix = _per_image(original_weight.to(x.dtype)) * x
    for k in range(width):  # torchvision's summation order
        mix = mix + _per_image(chain_weights[:, k].to(x.dtype)) * chains[:, k]
    return mix.clamp(0.0, 1.0)  # the weights sum to 1: only float rounding can step outside [0, 1]


def augmix(x: Tensor, y: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """AugMix(severity=3, mixture_width=3, chain_depth=-1, alpha=1, all_ops=True); per image."""
    return augmix_apply(x, *augmix_params(x.shape[0], generator, x.device, x.shape[-2:])), y


# ---------------------------------------------------------------------------------------------------
# mixup, cutmix: torchvision.transforms.v2.MixUp / CutMix(alpha=1.0) on soft labels. These are PER BATCH
# by design: one lambda ~ Beta(1, 1) (and one box) per batch, each image paired with the batch rolled
# by one, as torchvision does and as the authors use it (they call torchvision's MixUp / CutMix on the
# whole batch in their training_step); the batch order is random, so the pairs are. Written by hand
# because torchvision's classes draw from the global RNG (no generator argument) and need a host sync
# (float(lam)); the arithmetic is theirs, and the tests compare with them given the same draws.
# ---------------------------------------------------------------------------------------------------

MIX_ALPHA = 1.0  # Beta(alpha, alpha) for lambda


def _mix(t: Tensor, lam: Tensor) -> Tensor:
    """lam * t + (1 - lam) * t.roll(1), torchvision's `t.roll(1, 0).mul_(1 - lam).add_(t.mul(lam))`
    with its rounding: 1 - lam in float64 (a Python float there), each factor cast to t's dtype."""
    lam = lam.double()
    return t.roll(1, 0) * (1.0 - lam).to(t.dtype) + t * lam.to(t.dtype)


def mixup_params(generator: torch.Generator, device: torch.device) -> Tensor:
    """lambda ~ Beta(alpha, alpha), one per batch: a 0-dim float32 tensor on `device`."""
    return _dirichlet(MIX_ALPHA, (2,), generator, torch.device(device))[0]


def mixup_apply(x: Tensor, y: Tensor, lam: Tensor) -> tuple[Tensor, Tensor]:
    """MixUp of images x (B, C, H, W) and soft labels y (B, K) with the batch rolled by one."""
    return _mix(x, lam).clamp(0.0, 1.0), _mix(y, lam)  # clamp: 1-ulp overshoot of lam + (1 - lam)


def mixup(x: Tensor, y: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """MixUp(alpha=1): x, y -> lam (x, y) + (1 - lam) (x, y).roll(1), one lam per batch."""
    return mixup_apply(x, y, mixup_params(generator, x.device))


def cutmix_params(
    generator: torch.Generator, device: torch.device, size: tuple[int, int]
) -> tuple[Tensor, Tensor]:
    """One draw per batch, in torchvision's order: lambda ~ Beta(alpha, alpha) (0-dim float32) and
    the box centre (x, y) (2,) long, uniform over the pixels of an image of `size` (H, W)."""
    height, width = size
    device = torch.device(device)
    lam = _dirichlet(MIX_ALPHA, (2,), generator, device)[0]
    r_x = torch.randint(width, (), generator=generator, device=device)
    r_y = torch.randint(height, (), generator=generator, device=device)
    return lam, torch.stack([r_x, r_y])


def cutmix_box(lam: Tensor, centre: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """torchvision `CutMix.make_params` from its draws: the box (x1, y1, x2, y2) (4,) long of half-
    sides int(0.5 sqrt(1 - lam) * side) about `centre`, clipped to the image, and lambda corrected to
    the area actually pasted, 1 - box area / image area (0-dim float64, as torchvision's Python float)."""
    height, width = size
    r = 0.5 * torch.sqrt(1.0 - lam.double())
    r_x, r_y = centre.unbind()
    half_w, half_h = torch.trunc(r * width).long(), torch.trunc(r * height).long()
    x1, y1 = (r_x - half_w).clamp(min=0), (r_y - half_h).clamp(min=0)
    x2, y2 = (r_x + half_w).clamp(max=width), (r_y + half_h).clamp(max=height)
    lam_adjusted = 1.0 - ((x2 - x1) * (y2 - y1)).double() / (width * height)
    return torch.stack([x1, y1, x2, y2]), lam_adjusted


def cutmix_apply(x: Tensor, y: Tensor, box: Tensor, lam_adjusted: Tensor) -> tuple[Tensor, Tensor]:
    """Paste the `box` (x1, y1, x2, y2) of the batch rolled by one into x (B, C, H, W) and mix the soft
    labels y (B, K) with `lam_adjusted`. A mask instead of slicing: the box stays on the device."""
    H, W = x.shape[-2:]
    x1, y1, x2, y2 = box.unbind()
    rows = torch.arange(H, device=x.device).unsqueeze(1)  # (H, 1)
    cols = torch.arange(W, device=x.device)  # (W,)
    inside = (rows >= y1) & (rows < y2) & (cols >= x1) & (cols < x2)  # (H, W)
    return torch.where(inside, x.roll(1, 0), x), _mix(y, lam_adjusted)


def cutmix(x: Tensor, y: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """CutMix(alpha=1): one box of the rolled batch pasted into every image, labels mixed by area."""
    size = x.shape[-2:]
    box, lam_adjusted = cutmix_box(*cutmix_params(generator, x.device, size), size)
    return cutmix_apply(x, y, box, lam_adjusted)


# ---------------------------------------------------------------------------------------------------
# Registry: adding an augmentation = one function with the `Augmentation` signature + one line here.
# ---------------------------------------------------------------------------------------------------

AUGMENTATIONS: dict[str, Augmentation] = {
    "fcr": fcr,
    "trivaug": trivaug,
    "randaug": randaug,
    "autoaug": autoaug,  # ImageNet policy, torchvision's default and the authors'
    "autoaug_cifar10": autoaug_cifar10,
    "augmix": augmix,
    "mixup": mixup,
    "cutmix": cutmix,
}
LABEL_MIXING: tuple[str, ...] = ("mixup", "cutmix")  # the entries that change y


def _identity(x: Tensor, y: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    return x, y


def create_augmentation(spec: str) -> Augmentation:
    """"none" -> identity; otherwise '+'-joined `AUGMENTATIONS` names applied left to right."""
    if spec == "none":
        return _identity
    names = spec.split("+")
    unknown = [name for name in names if name not in AUGMENTATIONS]
    if unknown:
        raise ValueError(
            f"unknown augmentation {', '.join(map(repr, unknown))} in {spec!r}; valid names: "
            f"{', '.join(sorted(AUGMENTATIONS))} (join with '+'), or 'none'"
        )
    stages = [AUGMENTATIONS[name] for name in names]

    def augment(x: Tensor, y: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        for stage in stages:
            x, y = stage(x, y, generator)
        return x, y

    augment.__name__ = augment.__qualname__ = spec
    return augment


__all__ = [
    "AUGMENTATIONS", "AUGMIX_SPACE", "AUTOAUG_CIFAR10_POLICY", "AUTOAUG_IMAGENET_POLICY",
    "AUTOAUG_POLICIES", "AUTOAUG_SPACE", "Augmentation", "AutoAugPolicy", "IDENTITY",
    "LABEL_MIXING", "OPS", "OpSpace", "OpTable", "RANDAUG_SPACE", "SPACES", "TRIVAUG_NUM_BINS",
    "TRIVAUG_OPS", "TRIVAUG_SIGNED", "TRIVAUG_SPACE", "apply_op", "apply_ops", "augmix",
    "augmix_apply", "augmix_params", "autoaug", "autoaug_cifar10", "autoaug_params", "batch_affine",
    "batch_blend", "batch_crop", "batch_equalize", "batch_flip", "batch_posterize", "batch_rotate",
    "batch_solarize", "create_augmentation", "cutmix", "cutmix_apply", "cutmix_box",
    "cutmix_params", "fcr", "fcr_apply", "fcr_params", "inverse_affine_matrix", "mixup",
    "mixup_apply", "mixup_params", "op_table", "randaug", "randaug_params", "trivaug",
    "trivaug_apply", "trivaug_magnitudes", "trivaug_params",
]  # fmt: skip
