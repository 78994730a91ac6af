"""Per-op kernels and the op dispatch shared by TrivialAugmentWide, RandAugment, AutoAugment and AugMix:
torchvision's `_AutoAugmentBase._apply_image_or_video_transform` with one op and one magnitude PER
IMAGE. torchvision's functional ops take one Python scalar per call, so per-image parameters would
need a per-image Python loop; these kernels take a parameter tensor (B,) instead. Where torchvision
is already batched and parameter-free (autocontrast, equalize) it is called directly."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

from trainables.augment.common import Kernel, dispatch, dispatch_gathered, dispatch_masked, per_image
from trainables.augment.geometry import batch_affine, inverse_affine_matrix

# Every op of every torchvision policy. The *_params functions return indices into OPS.
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
# Named groups, explicit: the policies' spaces (spaces.py) draw from these.
TRIVAUG_OPS: tuple[str, ...] = (
    "Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness",
    "Color", "Contrast", "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize",
)  # fmt: skip
OPS: tuple[str, ...] = (*TRIVAUG_OPS, "Invert")  # Invert: AutoAugment only
IDENTITY = OPS.index("Identity")  # the op of an image that skips a step
OP_INDEX: dict[str, int] = {name: i for i, name in enumerate(OPS)}
GEOMETRIC_OPS: tuple[str, ...] = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")
ENHANCE_OPS: tuple[str, ...] = ("Brightness", "Color", "Contrast", "Sharpness")  # blends, factor 1 + m
# The ops that overlap the corruption benchmark (brightness and contrast are test corruptions; color
# and sharpness are close to saturate and blur), left out of AugMix in its paper.
CORRUPTION_OVERLAP_OPS: tuple[str, ...] = ("Brightness", "Color", "Contrast", "Sharpness")


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
    ratio, complement = per_image(factor.to(x.dtype)), per_image((1.0 - factor).to(x.dtype))
    return (x * ratio + degenerate * complement).clamp(0.0, 1.0)


def _to_uint8_levels(x: Tensor) -> Tensor:
    """[0, 1] float -> nearest of the 256 uint8 levels, still float (0..255). Rounds (torchvision
    truncates x * 255.999) so off-grid inputs go to the nearest level; identical on the uint8 grid."""
    return torch.round(x * 255.0)


def batch_posterize(x: Tensor, bits: Tensor) -> Tensor:
    """Keep the top `bits` (B,) of each image's uint8 value: torchvision posterize on uint8 (x & mask),
    not its float variant (floor(x * 2**bits) / 2**bits, which moves even bits=8 images).
    Done in float: floor(k / 2**s) * 2**s is exact for powers of two. (B, C, H, W) -> (B, C, H, W)."""
    step = per_image(torch.exp2(8.0 - bits.clamp(0, 8).to(x.dtype)))
    return torch.floor(_to_uint8_levels(x) / step) * step / 255.0


def batch_solarize(x: Tensor, threshold: Tensor) -> Tensor:
    """Invert pixels >= the per-image `threshold` (B,): torchvision solarize on [0, 1] floats."""
    return torch.where(x >= per_image(threshold.to(x.dtype)), 1.0 - x, x)


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
        return torch.where(ops == OP_INDEX[name], value, torch.zeros_like(value))

    shear_deg = torch.rad2deg(torch.atan(m))  # torchvision: shear = degrees(atan(magnitude))
    shear = torch.stack([only("ShearX", shear_deg), only("ShearY", shear_deg)], dim=-1)  # (B, 2)
    shift = torch.trunc(m)  # torchvision: int(magnitude)
    translate = torch.stack([only("TranslateX", shift), only("TranslateY", shift)], dim=-1)  # (B, 2)
    angle = only("Rotate", -m)  # rotate builds its matrix from -angle
    # Shears use center=[0, 0] (the top-left corner), i.e. (-W/2, -H/2) relative to the image centre.
    is_shear = ((ops == OP_INDEX["ShearX"]) | (ops == OP_INDEX["ShearY"])).double()
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
        degenerate = torch.where(per_image(ops == OP_INDEX[name]), image, degenerate)  # -> (B, C, H, W)
    return batch_blend(x, degenerate, 1.0 + magnitudes.double())


def _family_kernels(interpolation: str) -> dict[str, Kernel | None]:
    """Result family -> its kernel (x, ops, magnitudes) for a (sub-)batch; None: the identity.
    Ops of one family share one computation (one affine warp, one blend)."""
    return {
        "identity": None,
        "geometric": lambda x, ops, m: _geometric(x, ops, m, interpolation),
        "enhance": _enhance,
        "posterize": lambda x, ops, m: batch_posterize(x, torch.trunc(m)),
        "solarize": lambda x, ops, m: batch_solarize(x, m),
        "autocontrast": lambda x, ops, m: TF.autocontrast(x),  # batched per image and channel; float semantics
        "equalize": lambda x, ops, m: batch_equalize(x),
        "invert": lambda x, ops, m: 1.0 - x,
    }


FAMILY_OPS: dict[str, tuple[str, ...]] = {  # every op in exactly one family
    "identity": ("Identity",), "geometric": GEOMETRIC_OPS, "enhance": ENHANCE_OPS, "posterize": ("Posterize",),
    "solarize": ("Solarize",), "autocontrast": ("AutoContrast",), "equalize": ("Equalize",), "invert": ("Invert",),
}  # fmt: skip
FAMILIES: tuple[str, ...] = tuple(FAMILY_OPS)


@functools.lru_cache(maxsize=None)
def _op_family(device: torch.device) -> Tensor:
    """(len(OPS),) long on `device`: each op's index into FAMILIES, made once per device."""
    family_of = {op: FAMILIES.index(family) for family, ops in FAMILY_OPS.items() for op in ops}
    return torch.tensor([family_of[name] for name in OPS], device=device)


def _apply_masked(x: Tensor, family: Tensor, ops: Tensor, magnitudes: Tensor, interpolation: str) -> Tensor:
    """Every family on the whole batch, picked per image (the accelerator path)."""
    return dispatch_masked(x, family, tuple(_family_kernels(interpolation).values()), ops, magnitudes)


def _apply_gathered(x: Tensor, family: Tensor, ops: Tensor, magnitudes: Tensor, interpolation: str) -> Tensor:
    """Each family only on the images that drew it (the CPU path)."""
    return dispatch_gathered(x, family, tuple(_family_kernels(interpolation).values()), ops, magnitudes)


def apply_op(x: Tensor, ops: Tensor, magnitudes: Tensor, interpolation: str = "nearest") -> Tensor:
    """Apply to each image its own op `ops` (B,) (indices into `OPS`) with its signed magnitude
    `magnitudes` (B,) as torchvision's `_apply_image_or_video_transform` receives it (Translate:
    pixels, Posterize: bits, Solarize: threshold in [0, 1]). interpolation: "nearest" or "bilinear",
    for the geometric ops. x (B, C, H, W) float in [0, 1] -> same."""
    family = _op_family(x.device)[ops]
    return dispatch(x, family, tuple(_family_kernels(interpolation).values()), ops, magnitudes)


def apply_ops(x: Tensor, ops: Tensor, magnitudes: Tensor, interpolation: str = "nearest") -> Tensor:
    """`apply_op` for each column of `ops` and `magnitudes` (B, n), left to right. An image skips a
    step with op `IDENTITY`. x (B, C, H, W) -> same."""
    for step in range(ops.shape[1]):
        x = apply_op(x, ops[:, step], magnitudes[:, step], interpolation)
    return x
