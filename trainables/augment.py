"""Batched base augmentations with per-image randomness, run on the training device.

The training set sits on the device as uint8; each step draws a batch, converts it to float32 in
[0, 1] and calls one `Augmentation` on the WHOLE batch (as in KellerJordan/cifar10-airbench's
`batch_flip_lr` / `batch_crop`). Every image still draws its own flip, crop offset, angle, op and
magnitude: parameters are per-image tensors and the ops are written over `(B, C, H, W)` batches with
per-image parameters, which torchvision's functional ops do not offer (they take one Python scalar
per call, so per-image randomness would need a per-image Python loop). Where torchvision is already
batched and parameter-free (autocontrast, equalize) we call it directly.

No op draws anything on the host or reads anything back (`.item()`, boolean-mask indexing with a
data-dependent size): every family of ops is evaluated on the whole batch and the result picked per
image with `torch.where`, so shapes are static and the step never waits on the device.

Public API
----------
Augmentation, AUGMENTATIONS, create_augmentation(spec)
fcr(x, y, g), fcr_params(B, g, device), fcr_apply(x, flip, offsets, angles)
batch_flip(x, flip), batch_crop(x, offsets, padding), batch_rotate(x, angles)
trivaug(x, y, g), trivaug_params(B, g, device), trivaug_apply(x, ops, magnitudes)
batch_affine(x, matrix), inverse_affine_matrix(angle, translate, shear, center)
batch_blend(x, degenerate, factor), batch_posterize(x, bits), batch_solarize(x, threshold),
batch_equalize(x), TRIVAUG_OPS, TRIVAUG_SIGNED, trivaug_magnitudes(num_bins)
"""

from __future__ import annotations

import functools
from typing import Callable

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


def batch_affine(x: Tensor, matrix: Tensor) -> Tensor:
    """Warp each image by its own inverse affine `matrix` (B, 2, 3) (see `inverse_affine_matrix`).

    Nearest interpolation, fill 0 outside: torchvision's default for RandomRotation and
    TrivialAugmentWide. The grid is built exactly like torchvision's `_affine_grid` (pixel-centred
    coordinates, rescaled after applying theta) rather than with `F.affine_grid`, so that nearest
    sampling hits the same source pixel as torchvision, including at exact half-pixel ties.
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
    # padding_mode="zeros" == torchvision's fill=0 for nearest (its fill mask is 1 inside, 0 outside).
    return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)


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
# trivaug: TrivialAugmentWide (Mueller & Hutter 2021) as torchvision.transforms.v2.TrivialAugmentWide
# ---------------------------------------------------------------------------------------------------

# torchvision 0.29 `TrivialAugmentWide._AUGMENTATION_SPACE` (num_magnitude_bins=31), per image: one op
# uniformly, one bin uniformly (bin 0 = magnitude 0), signed ops negated when rand <= 0.5.
#   op            magnitudes over the bins          signed  applied as (torchvision, float image)
#   Identity      -                                  no      x
#   ShearX        linspace(0, 0.99)                  yes     affine shear=(deg(atan m), 0) about top-left
#   ShearY        linspace(0, 0.99)                  yes     affine shear=(0, deg(atan m)) about top-left
#   TranslateX    linspace(0, 32) px, any size       yes     affine translate=(int(m), 0)
#   TranslateY    linspace(0, 32) px                 yes     affine translate=(0, int(m))
#   Rotate        linspace(0, 135) degrees           yes     rotate(m), counter-clockwise
#   Brightness    linspace(0, 0.99)                  yes     blend(x, 0, 1 + m)
#   Color         linspace(0, 0.99)                  yes     blend(x, gray(x), 1 + m)
#   Contrast      linspace(0, 0.99)                  yes     blend(x, mean(gray(x)), 1 + m)
#   Sharpness     linspace(0, 0.99)                  yes     blend(x, 3x3 smooth inside / x on border, 1 + m)
#   Posterize     round(8 - arange(31) / 5) = 8..2   no      keep the top int(m) bits of the uint8 value
#   Solarize      linspace(1, 0) threshold           no      x >= m ? 1 - x : x
#   AutoContrast  -                                  no      per channel (x - min) / (max - min)
#   Equalize      -                                  no      per channel histogram equalisation (uint8)
# Geometric ops use nearest interpolation and fill 0 (TrivialAugmentWide's defaults).
TRIVAUG_OPS: tuple[str, ...] = (
    "Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness",
    "Color", "Contrast", "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize",
)  # fmt: skip
TRIVAUG_SIGNED: tuple[bool, ...] = (
    False, True, True, True, True, True, True, True, True, True, False, False, False, False,
)  # fmt: skip
TRIVAUG_NUM_BINS = 31
_OP = {name: i for i, name in enumerate(TRIVAUG_OPS)}


def trivaug_magnitudes(num_bins: int = TRIVAUG_NUM_BINS) -> Tensor:
    """(14, num_bins) float32 magnitude table, row per op in `TRIVAUG_OPS`, built with torchvision's
    exact expressions (on CPU, like torchvision); magnitude-free ops get zeros."""
    table = torch.zeros(len(TRIVAUG_OPS), num_bins)
    for name in ("ShearX", "ShearY", "Brightness", "Color", "Contrast", "Sharpness"):
        table[_OP[name]] = torch.linspace(0.0, 0.99, num_bins)
    for name in ("TranslateX", "TranslateY"):
        table[_OP[name]] = torch.linspace(0.0, 32.0, num_bins)
    table[_OP["Rotate"]] = torch.linspace(0.0, 135.0, num_bins)
    table[_OP["Posterize"]] = (8 - (torch.arange(num_bins) / ((num_bins - 1) / 6))).round().int().float()
    table[_OP["Solarize"]] = torch.linspace(1.0, 0.0, num_bins)
    return table


@functools.lru_cache(maxsize=None)
def _trivaug_space(device: torch.device) -> tuple[Tensor, Tensor]:
    """Magnitude table (14, 31) and signed mask (14,) on `device`, copied there once."""
    return trivaug_magnitudes().to(device), torch.tensor(TRIVAUG_SIGNED, device=device)


def trivaug_params(
    batch: int, generator: torch.Generator, device: torch.device
) -> tuple[Tensor, Tensor]:
    """Draw per-image TrivialAugmentWide choices: ops (B,) long indices into `TRIVAUG_OPS`, and signed
    magnitudes (B,) float32, exactly torchvision's `magnitude` after its sign flip."""
    table, signed = _trivaug_space(torch.device(device))
    ops = torch.randint(len(TRIVAUG_OPS), (batch,), generator=generator, device=device)
    bins = torch.randint(TRIVAUG_NUM_BINS, (batch,), generator=generator, device=device)
    negate = torch.rand(batch, generator=generator, device=device) <= 0.5  # torchvision: rand() <= 0.5
    magnitudes = table[ops, bins]
    return ops, torch.where(negate & signed[ops], -magnitudes, magnitudes)


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


def _trivaug_geometric(x: Tensor, ops: Tensor, magnitudes: Tensor) -> Tensor:
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
    return batch_affine(x, inverse_affine_matrix(angle, translate, shear, center))


def _trivaug_blend(x: Tensor, ops: Tensor, magnitudes: Tensor) -> Tensor:
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


# Result family of each op: every family is computed for the whole batch and picked per image, which
# costs a few cheap full-batch passes but no host sync and no data-dependent shapes.
_FAMILY = {"Identity": 0, "ShearX": 1, "ShearY": 1, "TranslateX": 1, "TranslateY": 1, "Rotate": 1,
           "Brightness": 2, "Color": 2, "Contrast": 2, "Sharpness": 2,
           "Posterize": 3, "Solarize": 4, "AutoContrast": 5, "Equalize": 6}  # fmt: skip


@functools.lru_cache(maxsize=None)
def _op_family(device: torch.device) -> Tensor:
    return torch.tensor([_FAMILY[name] for name in TRIVAUG_OPS], device=device)


def trivaug_apply(x: Tensor, ops: Tensor, magnitudes: Tensor) -> Tensor:
    """TrivialAugmentWide with explicit per-image `ops` (B,) (indices into `TRIVAUG_OPS`) and signed
    `magnitudes` (B,) as torchvision's `_apply_image_or_video_transform` receives them (Posterize: bits,
    Solarize: threshold in [0, 1]). x (B, C, H, W) float in [0, 1] -> same."""
    family = _per_image(_op_family(x.device)[ops])
    candidates = (
        (1, lambda: _trivaug_geometric(x, ops, magnitudes)),
        (2, lambda: _trivaug_blend(x, ops, magnitudes)),
        (3, lambda: batch_posterize(x, torch.trunc(magnitudes))),
        (4, lambda: batch_solarize(x, magnitudes)),
        (5, lambda: TF.autocontrast(x)),  # batched per image and channel already; float semantics
        (6, lambda: batch_equalize(x)),
    )
    out = x  # family 0: Identity
    for family_id, compute in candidates:
        out = torch.where(family == family_id, compute(), out)
    return out


def trivaug(x: Tensor, y: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """TrivialAugmentWide: each image draws one of 14 ops and one of 31 magnitude bins."""
    return trivaug_apply(x, *trivaug_params(x.shape[0], generator, x.device)), y


# ---------------------------------------------------------------------------------------------------
# Registry: adding an augmentation = one function with the `Augmentation` signature + one line here.
# ---------------------------------------------------------------------------------------------------

AUGMENTATIONS: dict[str, Augmentation] = {
    "fcr": fcr,
    "trivaug": trivaug,
}


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
    "AUGMENTATIONS", "Augmentation", "TRIVAUG_NUM_BINS", "TRIVAUG_OPS", "TRIVAUG_SIGNED", "batch_affine",
    "batch_blend", "batch_crop", "batch_equalize", "batch_flip", "batch_posterize", "batch_rotate",
    "batch_solarize", "create_augmentation", "fcr", "fcr_apply", "fcr_params", "inverse_affine_matrix",
    "trivaug", "trivaug_apply", "trivaug_magnitudes", "trivaug_params",
]  # fmt: skip
