"""Tests for trainables.augment: registry contract, exactness against torchvision applied per image,
parameter distributions, and (with a GPU) the same on CUDA."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor
from torchvision.transforms import v2
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from trainables.augment import (
    AUGMENTATIONS,
    LABEL_MIXING,
    TRIVAUG_NUM_BINS,
    TRIVAUG_OPS,
    TRIVAUG_SIGNED,
    batch_crop,
    batch_flip,
    batch_rotate,
    create_augmentation,
    fcr,
    fcr_apply,
    fcr_params,
    trivaug,
    trivaug_apply,
    trivaug_magnitudes,
    trivaug_params,
)

SPECS = sorted(AUGMENTATIONS) + [f"fcr+{name}" for name in sorted(AUGMENTATIONS) if name != "fcr"]
# MixUp / CutMix draw one lambda per batch (torchvision's and the authors' semantics): 64 copies of
# one image stay 64 copies, so they are left out of the per-image randomness test.
PER_IMAGE_SPECS = [spec for spec in SPECS if not set(LABEL_MIXING) & set(spec.split("+"))]
# AutoAugment's sub-policies have fixed magnitudes and often apply neither op, so 64 draws repeat
# outcomes: over 200 seeds 18..33 distinct (mean 25) with the ImageNet policy, 17..37 (mean 27) with
# the CIFAR-10 one; a per-batch draw would give 1.
MIN_DISTINCT = {"autoaug": 12, "autoaug_cifar10": 12}
CPU = torch.device("cpu")


def _generator(seed: int, device: torch.device = CPU) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def _images(
    batch: int, channels: int = 3, height: int = 32, width: int = 32, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """Random uint8 images (B, C, H, W) and the same as float in [0, 1], as the training loop has them."""
    shape = (batch, channels, height, width)
    u8 = torch.randint(0, 256, shape, generator=_generator(seed), dtype=torch.uint8)
    return u8, u8.float() / 255.0


def _soft_labels(batch: int, classes: int = 10) -> Tensor:
    return torch.softmax(torch.randn(batch, classes, generator=_generator(1)), dim=1)


# ----------------------------------------------------------------------------- registry contract


# ipmix first builds its 1,024 procedural mixing pictures (several seconds on 2 cores): the slow tier.
CONTRACT_SPECS = [pytest.param(spec, marks=pytest.mark.slow) if "ipmix" in spec else spec for spec in SPECS]


@pytest.mark.parametrize("spec", CONTRACT_SPECS)
def test_contract(spec: str) -> None:
    augment = create_augmentation(spec)
    _, x = _images(64)
    y = _soft_labels(64)
    x_before, y_before = x.clone(), y.clone()

    out, y_out = augment(x, y, _generator(7))

    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    assert torch.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0
    assert torch.equal(x, x_before) and torch.equal(y, y_before), "inputs modified in place"
    if set(LABEL_MIXING) & set(spec.split("+")):
        assert y_out.shape == y.shape and y_out.dtype == y.dtype and not torch.equal(y_out, y)
        assert (y_out >= 0).all()
        torch.testing.assert_close(y_out.sum(1), y.sum(1))  # still distributions
    else:
        assert torch.equal(y_out, y)
    again, _ = augment(x, y, _generator(7))
    assert torch.equal(out, again), "not deterministic given the generator seed"
    other, _ = augment(x, y, _generator(8))
    assert not torch.equal(out, other), "ignores the generator"


@pytest.mark.parametrize("spec", PER_IMAGE_SPECS)
def test_per_image_randomness(spec: str) -> None:
    """64 copies of one image must come out transformed differently."""
    _, image = _images(1)
    x = image.expand(64, -1, -1, -1).contiguous()
    out, _ = create_augmentation(spec)(x, _soft_labels(64), _generator(3))
    distinct = torch.unique(out.flatten(1), dim=0).shape[0]
    assert distinct > MIN_DISTINCT.get(spec, 32), f"only {distinct} distinct outputs for 64 identical inputs"


def test_none_is_identity() -> None:
    _, x = _images(4)
    y = _soft_labels(4)
    out, y_out = create_augmentation("none")(x, y, _generator(0))
    assert out is x and y_out is y


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="'nope'") as info:
        create_augmentation("fcr+nope")
    assert ", ".join(sorted(AUGMENTATIONS)) in str(info.value)


def test_composition_is_left_to_right(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def tagger(tag: str):
        def augment(x: Tensor, y: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
            calls.append(tag)
            return x + 1, y

        return augment

    monkeypatch.setitem(AUGMENTATIONS, "first", tagger("first"))
    monkeypatch.setitem(AUGMENTATIONS, "second", tagger("second"))
    out, _ = create_augmentation("second+first")(torch.zeros(1), torch.zeros(1), _generator(0))
    assert calls == ["second", "first"] and out.item() == 2


def test_fcr_plus_trivaug_shares_one_generator() -> None:
    _, x = _images(16)
    y = _soft_labels(16)
    out, _ = create_augmentation("fcr+trivaug")(x, y, _generator(5))
    g = _generator(5)
    expected, _ = trivaug(*fcr(x, y, g), g)
    assert torch.equal(out, expected)


# ----------------------------------------------------------------------------- fcr exactness


def test_batch_flip_matches_torchvision() -> None:
    _, x = _images(8)
    flip = torch.tensor([True, False] * 4)
    expected = torch.stack([TF.horizontal_flip(img) if f else img for img, f in zip(x, flip)])
    assert torch.equal(batch_flip(x, flip), expected)


@pytest.mark.parametrize("height,width", [(32, 32), (20, 28)])
def test_batch_crop_matches_torchvision(height: int, width: int) -> None:
    """Every (top, left) offset in [0, 8]^2: pad 4 with zeros, then crop; exact."""
    offsets = torch.cartesian_prod(torch.arange(9), torch.arange(9))  # (81, 2)
    _, x = _images(81, height=height, width=width)
    expected = torch.stack(
        [TF.crop(TF.pad(img, [4], fill=0), int(t), int(l), height, width) for img, (t, l) in zip(x, offsets)]
    )
    assert torch.equal(batch_crop(x, offsets), expected)


@pytest.mark.parametrize("height,width", [(32, 32), (20, 28)])
def test_batch_rotate_matches_torchvision(height: int, width: int) -> None:
    """Nearest interpolation with fill 0, exactly RandomRotation's kernel: the grid is built with the
    same arithmetic, so even half-pixel ties resolve alike. Includes torchvision's rot90 fast paths."""
    special = [0.0, 180.0, 15.0, -15.0] + ([90.0, -90.0, 45.0, -135.0] if height == width else [])
    angles = torch.cat([torch.tensor(special), torch.rand(40, generator=_generator(2)) * 30 - 15])
    _, x = _images(len(angles), height=height, width=width)
    expected = torch.stack(
        [TF.rotate(img, float(a), interpolation=InterpolationMode.NEAREST, fill=0)
         for img, a in zip(x, angles)]
    )
    assert torch.equal(batch_rotate(x, angles), expected)


def test_fcr_matches_torchvision_compose() -> None:
    """fcr with drawn parameters == RandomHorizontalFlip, RandomCrop(32, padding=4), RandomRotation(15)
    applied per image with the same parameters; and fcr() is fcr_apply(fcr_params())."""
    _, x = _images(48)
    flip, offsets, angles = fcr_params(48, _generator(11), CPU)
    expected = []
    for img, f, (top, left), a in zip(x, flip, offsets, angles):
        img = TF.horizontal_flip(img) if f else img
        img = TF.crop(TF.pad(img, [4], fill=0), int(top), int(left), 32, 32)
        expected.append(TF.rotate(img, float(a), interpolation=InterpolationMode.NEAREST, fill=0))
    out = fcr_apply(x, flip, offsets, angles)
    assert torch.equal(out, torch.stack(expected))
    assert torch.equal(fcr(x, _soft_labels(48), _generator(11))[0], out)


# ----------------------------------------------------------------------------- trivaug exactness

_TA = v2.TrivialAugmentWide()


def _torchvision_op(img: Tensor, op: str, magnitude: float) -> Tensor:
    """torchvision's own TrivialAugmentWide op dispatch (private, but it is the definition we copy)."""
    return _TA._apply_image_or_video_transform(
        img, op, magnitude, interpolation=InterpolationMode.NEAREST, fill=_TA._fill
    )


def _magnitudes(op: int, every: int) -> Tensor:
    """Every `every`-th bin of `op` (always the largest), with both signs where torchvision flips signs."""
    row = trivaug_magnitudes()[op]
    row = torch.cat([row[:-1:every], row[-1:]])
    return torch.cat([row, -row]) if TRIVAUG_SIGNED[op] else row


@pytest.mark.parametrize("channels", [3, 1])
@pytest.mark.parametrize("op", range(len(TRIVAUG_OPS)), ids=TRIVAUG_OPS)
def test_trivaug_op_matches_torchvision(op: int, channels: int) -> None:
    """Each op over its magnitudes, one per image, against torchvision on the same image.

    Reference semantics: torchvision on the float image, except Posterize and Equalize, which are only
    defined on 256 levels and are compared with torchvision on the uint8 image (torchvision's float
    posterize, floor(x * 2^bits) / 2^bits, would move even a bits=8 image by up to 1/256).
    Tolerance 1e-6 = float32 rounding: torchvision blends as x + (1 - f) * (d - x) for Sharpness and
    divides uint8 by multiplying with 1/255. Geometric ops and Solarize are bit-exact."""
    magnitudes = _magnitudes(op, every=1 if channels == 3 else 5)  # all bins in RGB, a few in gray
    u8, x = _images(len(magnitudes), channels=channels, seed=op)
    name = TRIVAUG_OPS[op]
    uint8_semantics = name in ("Posterize", "Equalize")
    reference_input = u8 if uint8_semantics else x
    expected = torch.stack([_torchvision_op(img, name, float(m))
                            for img, m in zip(reference_input, magnitudes)])
    if uint8_semantics:
        expected = expected.float() / 255.0
    out = trivaug_apply(x, torch.full_like(magnitudes, op, dtype=torch.long), magnitudes)
    torch.testing.assert_close(out, expected, rtol=0.0, atol=1e-6)


def test_trivaug_mixed_ops_within_two_grey_levels_of_uint8_torchvision() -> None:
    """A mixed batch (each image its own op and magnitude) against torchvision's usual uint8 pipeline.
    We keep float precision, uint8 torchvision floors the luma and truncates blends, so Brightness/Color/
    Contrast/Sharpness/AutoContrast differ by at most 2 grey levels; all other ops are exact."""
    u8, x = _images(140, seed=5)
    ops, magnitudes = trivaug_params(140, _generator(6), CPU)
    expected = torch.stack(
        [_torchvision_op(img, TRIVAUG_OPS[o], float(m)) for img, o, m in zip(u8, ops, magnitudes)]
    ).float() / 255.0
    diff = (trivaug_apply(x, ops, magnitudes) - expected).abs()
    assert diff.max() <= 2 / 255 + 1e-6 and diff.mean() < 0.25 / 255
    rounded = ("Brightness", "Color", "Contrast", "Sharpness", "AutoContrast")
    blends = torch.isin(ops, torch.tensor([TRIVAUG_OPS.index(name) for name in rounded]))
    assert diff[~blends].max() <= 1e-6


def test_trivaug_is_apply_of_params() -> None:
    _, x = _images(32)
    out, _ = trivaug(x, _soft_labels(32), _generator(9))
    assert torch.equal(out, trivaug_apply(x, *trivaug_params(32, _generator(9), CPU)))


# ----------------------------------------------------------------------------- distributions


def test_trivaug_params_distribution() -> None:
    n_ops = len(TRIVAUG_OPS)
    batch = n_ops * 3000
    ops, magnitudes = trivaug_params(batch, _generator(21), CPU)
    counts = torch.bincount(ops, minlength=n_ops).float()
    assert ((counts - 3000).abs() < 300).all(), counts  # ~6 sigma
    table = trivaug_magnitudes()
    for op in range(n_ops):
        m = magnitudes[ops == op]
        # Every drawn magnitude is a bin value (with a sign only for signed ops); bins are uniform.
        bins = (m.abs().unsqueeze(1) == table[op].unsqueeze(0)).float().argmax(1)
        assert torch.isin(m.abs(), table[op]).all()
        if table[op].unique().numel() == TRIVAUG_NUM_BINS:
            bin_counts = torch.bincount(bins, minlength=TRIVAUG_NUM_BINS).float()
            expected = len(m) / TRIVAUG_NUM_BINS
            assert ((bin_counts - expected).abs() < 50).all(), (TRIVAUG_OPS[op], bin_counts)
        if TRIVAUG_SIGNED[op]:
            negative = (m[m != 0] < 0).float().mean()
            assert abs(negative - 0.5) < 0.05, (TRIVAUG_OPS[op], negative)
        else:
            assert (m >= 0).all()


def test_fcr_params_distribution() -> None:
    batch = 18000
    flip, offsets, angles = fcr_params(batch, _generator(22), CPU)
    assert abs(flip.float().mean() - 0.5) < 0.02
    for axis in range(2):
        counts = torch.bincount(offsets[:, axis], minlength=9).float()
        assert counts.numel() == 9 and ((counts - batch / 9).abs() < 200).all(), counts  # offsets 0..8
    assert angles.min() >= -15 and angles.max() <= 15
    assert angles.min() < -14.9 and angles.max() > 14.9 and abs(angles.mean()) < 0.3


# ----------------------------------------------------------------------------- CUDA


@pytest.mark.gpu
def test_cuda_matches_cpu() -> None:
    cuda = torch.device("cuda")
    _, x = _images(256)
    y = _soft_labels(256)
    xc, yc = x.to(cuda), y.to(cuda)

    # Full pipeline with a CUDA generator: contract holds on the device, and (after the first call has
    # cached the op tables on the device) a step never synchronises with the host.
    augment = create_augmentation("fcr+trivaug")
    augment(xc, yc, _generator(0, cuda))
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out, y_out = augment(xc, yc, _generator(4, cuda))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert out.device.type == "cuda" and out.shape == x.shape and torch.equal(y_out, yc)
    assert out.min() >= 0 and out.max() <= 1
    assert torch.equal(out, augment(xc, yc, _generator(4, cuda))[0])
    assert torch.equal(xc.cpu(), x)

    # Same explicit parameters give the same images on CPU and CUDA. Nearest sampling may flip a
    # pixel at an exact half-pixel tie under different float rounding; blends differ by float rounding.
    flip, offsets, angles = fcr_params(256, _generator(4), CPU)
    ops, magnitudes = trivaug_params(256, _generator(5), CPU)
    ref = trivaug_apply(fcr_apply(x, flip, offsets, angles), ops, magnitudes)
    on_cuda = fcr_apply(xc, flip.to(cuda), offsets.to(cuda), angles.to(cuda))
    dev = trivaug_apply(on_cuda, ops.to(cuda), magnitudes.to(cuda))
    mismatch = ((dev.cpu() - ref).abs() > 1e-5).float().mean()
    assert mismatch < 1e-3, mismatch
