"""IPMix (trainables.augment.ipmix*): each primitive against a per-image PIL / NumPy implementation of
the reference's formula (tests/ipmix_reference.py), the draws' distributions, the batched chains
against a per-image loop, the mixing sets (procedural and folder), and (with a GPU) the device path.
The registry-wide contract (shape, dtype, range, device, seeds, per-image randomness) covers ipmix in
test_augment.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor

import ipmix_reference as ref
from trainables.augment import AUGMENTATIONS, create_augmentation
from trainables.config import ConfigError, TrialConfig
from trainables.augment.ipmix import (
    CHAIN_KINDS, IPMIX_MAX_DEPTH, IPMIX_WIDTH, IPMixParams, STEP_GROUPS, ipmix_apply, ipmix_params, ipmix_setting,
    mixing_pictures, patch_sides, step_groups,
)  # fmt: skip
from trainables.augment.ipmix_ops import (
    IMAGE_OPS, PIXEL_OPS, image_affine, image_equalize, image_invert, image_mirror, image_posterize,
    image_solarize, mixing_coefficients, patch_mix, pixel_add, pixel_multiply,
)  # fmt: skip
from trainables.augment.mixing_set import (
    folder_mixing_set, ifs_fractals, picture_side, procedural_mixing_set, procedural_pictures, read_folder,
    spectral_noise,
)  # fmt: skip
from trainables.batches import build_augmentation

CPU = torch.device("cpu")
SIZE = (32, 32)


def _generator(seed: int, device: torch.device = CPU) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def _u8(batch: int, seed: int = 0, size: tuple[int, int] = SIZE) -> Tensor:
    return torch.randint(0, 256, (batch, 3, *size), generator=_generator(seed), dtype=torch.uint8)


def _pil(img: Tensor) -> Image.Image:
    return Image.fromarray(img.permute(1, 2, 0).numpy())


def _tensor(img: Image.Image) -> Tensor:
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)


def _bank(count: int = 8, side: int = 36) -> Tensor:
    return procedural_pictures(count, side, seed=3, device=CPU)


# ----------------------------------------------------------------------------- image level vs PIL

OURS = {
    "equalize": lambda x, op, level, negate: image_equalize(x),
    "posterize": lambda x, op, level, negate: image_posterize(x, level),
    "solarize": lambda x, op, level, negate: image_solarize(x, level),
    "mirror": lambda x, op, level, negate: image_mirror(x),
    "invert": lambda x, op, level, negate: image_invert(x),
    **{name: image_affine for name in ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")},
}
INTERPOLATED = ("rotate", "shear_x", "shear_y")  # bilinear between pixels: PIL truncates to uint8


@pytest.mark.parametrize("size", [(32, 32), (64, 64)])
@pytest.mark.parametrize("name", IMAGE_OPS)
def test_image_op_matches_pil(name: str, size: tuple[int, int]) -> None:
    """Each image-level op over levels 0.1..3 (severity 3) and 0.1..1 (severity 1), both signs, one
    per image, against the reference's PIL call on the same uint8 image. PIL rounds bilinear results
    down to uint8 (its bilinear filter truncates), so there ours lies in [PIL, PIL + 1) grey levels,
    up to float rounding; every other op (translations move by whole pixels) is exact."""
    levels = torch.cat([torch.linspace(0.1, 3.0, 24), torch.linspace(0.1, 1.0, 8)])
    levels, negate = levels.repeat(2), torch.arange(64) >= 32
    u8 = _u8(64, seed=IMAGE_OPS.index(name), size=size)
    op = torch.full((64,), IMAGE_OPS.index(name))
    out = OURS[name](u8.float() / 255, op, levels, negate) * 255
    expected = torch.stack([_tensor(ref.image_op(_pil(img), name, float(level), bool(n)))
                            for img, level, n in zip(u8, levels, negate)]).float()  # fmt: skip
    if name in INTERPOLATED:
        diff = out - expected
        assert diff.min() >= -1e-3 and diff.max() < 1 + 1e-3, (diff.min(), diff.max())
    else:
        torch.testing.assert_close(out, expected, rtol=0.0, atol=1e-3)


def test_image_ops_are_not_trivial_at_the_cifar_severity() -> None:
    """The levels move the images: rotations by up to 8 degrees, translations by up to 3 pixels."""
    u8 = _u8(4)
    x = u8.float() / 255
    for name in IMAGE_OPS:
        op = torch.full((4,), IMAGE_OPS.index(name))
        out = OURS[name](x, op, torch.full((4,), 2.9), torch.zeros(4, dtype=torch.bool))
        assert (out - x).abs().mean() > 0.01, name


# ----------------------------------------------------------------------------- pixel and patch level vs NumPy


def _coefficients(n: int, beta: float, seed: int) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    first, u, v = torch.rand((3, n), generator=_generator(seed)).unbind(0)
    a, b = mixing_coefficients(beta, first < 0.5, u, v)
    return a, b, first, u, v, torch.rand(n, generator=_generator(seed + 1))


def test_mixing_coefficients_are_get_ab() -> None:
    """Same (a, b) as the reference's get_ab given its draws; distribution: branch 1 (Beta(3, 1),
    Beta(1, 3)) with means 3/4 and 1/4, branch 2 (1 + Beta(1, 3), -Beta(1, 3)), each half the time."""
    a, b, first, u, v, _ = _coefficients(40000, 3.0, 0)
    for i in range(0, 40000, 997):
        expected = ref.get_ab(3.0, bool(first[i] < 0.5), float(u[i]), float(v[i]))
        torch.testing.assert_close((a[i].item(), b[i].item()), expected, rtol=0, atol=1e-6)
    one = first < 0.5
    assert abs(one.float().mean() - 0.5) < 0.01
    assert abs(a[one].mean() - 0.75) < 0.01 and abs(b[one].mean() - 0.25) < 0.01
    assert abs(a[~one].mean() - 1.25) < 0.01 and abs(b[~one].mean() + 0.25) < 0.01
    assert (a[~one] >= 1).all() and (b[~one] <= 0).all() and (a[one] <= 1).all() and (b[one] >= 0).all()
    assert abs(np.corrcoef(a[~one].numpy(), b[~one].numpy())[0, 1]) < 0.03  # two independent draws


@pytest.mark.parametrize("pixel_op", PIXEL_OPS)
def test_patch_mix_matches_reference(pixel_op: str) -> None:
    """patch_mix == the reference's patch_mixing per image (its pixel op on the box of the image and
    the picture, pasted back), every image with its own box, coefficients and mask draws."""
    n = 48
    x, picture = _u8(n, seed=1).float() / 255, _u8(n, seed=2).float() / 255
    a, b, _, _, _, threshold = _coefficients(n, 3.0, 5)
    g = _generator(6)
    sides = torch.tensor([4, 8, 16, 32])[torch.randint(4, (n,), generator=g)]
    top, left = (torch.rand((2, n), generator=g) * (33 - sides)).long().unbind(0)
    h = torch.minimum(sides, 2 + (torch.rand(n, generator=g) * (sides - 1)).long())
    box = torch.stack([top, left, h, sides], dim=-1)
    noise = torch.rand(x.shape, generator=g)
    out = patch_mix(x, picture, torch.full((n,), PIXEL_OPS.index(pixel_op)), box, a, b, threshold, noise)
    for i in range(n):
        t, l, hh, ww = box[i].tolist()
        keep_pixels = (noise[i, :1, t:t + hh, l:l + ww] < threshold[i]).numpy()
        keep_elements = (noise[i, :, t:t + hh, l:l + ww] < threshold[i]).numpy()
        mixed = {
            "add": lambda p, q: ref.add(p, q, float(a[i]), float(b[i])),
            "multiply": lambda p, q: ref.multiply(p, q, float(a[i]), float(b[i])),
            "random_pixels": lambda p, q: ref.select(p, q, keep_pixels),
            "random_elems": lambda p, q: ref.select(p, q, keep_elements),
        }[pixel_op]
        expected = ref.patch_mixing(x[i].numpy(), picture[i].numpy(), (t, l, hh, ww), mixed)
        np.testing.assert_allclose(out[i].numpy(), expected, rtol=0, atol=2e-6)


@pytest.mark.parametrize("mix", [pixel_add, pixel_multiply])
def test_add_and_multiply_clip_where_the_reference_wraps_around(mix) -> None:
    """A bright image and picture: a (2x - 1) + b (2p - 1) with a + b > 1 leaves [0, 1] (as does
    multiply with b < 0 on a dark picture). The reference turns the patch into uint8 with
    `mul(255).byte()`, which wraps (1.2 becomes 50/255, a dark pixel); the paper mixes two images,
    so ours clips: 1.0."""
    x = torch.full((1, 3, 4, 4), 0.9)
    picture = torch.full((1, 3, 4, 4), 0.9 if mix is pixel_add else 0.2)
    a, b = torch.tensor([1.3]), torch.tensor([0.6 if mix is pixel_add else -0.8])
    formula = (ref.add if mix is pixel_add else ref.multiply)(x[0].numpy(), picture[0].numpy(), 1.3, float(b))
    assert formula.min() > 1.05  # the reference's value: out of range
    assert torch.equal(mix(x, picture, a, b), torch.ones_like(x))
    dark = torch.full((1, 3, 4, 4), 0.05)
    low = pixel_add(dark, dark, torch.tensor([1.9]), torch.tensor([-0.9])) if mix is pixel_add else \
        pixel_multiply(dark, torch.ones_like(dark), torch.tensor([1.5]), torch.tensor([0.5]))
    assert low.min() >= 0.0 and low.max() <= 1.0


# ----------------------------------------------------------------------------- draws


def test_settings_and_patch_sides_follow_the_reference() -> None:
    assert ipmix_setting((32, 32)) == (3.0, 3.0) and ipmix_setting((64, 64)) == (3.0, 3.0)
    assert ipmix_setting((224, 224)) == (1.0, 4.0)
    assert patch_sides((32, 32)) == (4, 8, 16, 32) and patch_sides((64, 64)) == (8, 16, 32, 64)


def test_params_distribution() -> None:
    batch = 6000
    p = ipmix_params(batch, _generator(12), CPU, SIZE, pictures=40, picture_side=36)
    K, D = IPMIX_WIDTH, IPMIX_MAX_DEPTH
    torch.testing.assert_close(p.weights.sum(1), torch.ones(batch))
    assert p.weights.shape == (batch, 3) and ((p.weights.mean(0) - 1 / 3).abs() < 0.01).all()
    assert abs(p.mix.mean() - 0.5) < 0.01 and abs(p.mix.std() - 12**-0.5) < 0.01  # Beta(1, 1) = U(0, 1)
    assert torch.bincount(p.picture, minlength=40).min() > 100 and p.picture.max() == 39
    assert p.picture_offset.min() == 0 and p.picture_offset.max() == 4  # Resize(36), RandomCrop(32)
    assert abs((p.kind == CHAIN_KINDS.index("patch")).float().mean() - 0.5) < 0.01
    assert ((torch.bincount(p.depth.flatten(), minlength=4) / (batch * K) - 0.25).abs() < 0.01).all()  # 0..3
    assert ((torch.bincount(p.image_op.flatten()) / (batch * K * D) - 0.1).abs() < 0.005).all()
    assert ((torch.bincount(p.pixel_op.flatten()) / (batch * K * D) - 0.25).abs() < 0.01).all()
    assert p.level.min() >= 0.1 and p.level.max() < 3.0 and abs(p.level.mean() - 1.55) < 0.02
    assert abs(p.negate.float().mean() - 0.5) < 0.01 and abs(p.threshold.mean() - 0.5) < 0.01
    top, left, h, w = p.box.unbind(-1)
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 32).all() and (left + w <= 32).all()
    square = h == w
    assert 0.5 < square.float().mean() < 0.6  # 1/2 square by draw, plus non-square draws that tie
    sides = torch.maximum(h, w)
    assert set(sides.unique().tolist()) <= set(range(2, 33)) and (torch.minimum(h, w) >= 2).all()
    full = torch.isin(h, torch.tensor([4, 8, 16, 32])) & square
    assert set(h[full].unique().tolist()) == {4, 8, 16, 32}


def test_steps_past_the_depth_are_the_identity() -> None:
    p = ipmix_params(500, _generator(13), CPU, SIZE, 8, 36)
    group = step_groups(p)
    active = group != STEP_GROUPS.index("identity")
    assert torch.equal(active.sum(-1), p.depth)
    patch = p.kind.unsqueeze(-1).expand_as(group) == CHAIN_KINDS.index("patch")
    assert (group[active & patch] == STEP_GROUPS.index("patch")).all()
    assert not (group[active & ~patch] == STEP_GROUPS.index("patch")).any()


def test_mixing_pictures_are_random_crops_of_the_drawn_picture() -> None:
    bank = _bank()
    p = ipmix_params(20, _generator(14), CPU, SIZE, bank.shape[0], bank.shape[-1])
    crops = mixing_pictures(bank, p, SIZE, 3)
    for i in range(20):
        top, left = p.picture_offset[i].tolist()
        expected = bank[p.picture[i], :, top:top + 32, left:left + 32].float() / 255
        assert torch.equal(crops[i], expected)


# ----------------------------------------------------------------------------- the batched chains


def _chain_step(img: Tensor, p: IPMixParams, i: int, k: int, s: int, picture: Tensor, noise: Tensor) -> Tensor:
    """One step of one chain of image i, as the reference's loop body, on a batch of one."""
    def one(t: Tensor) -> Tensor:
        return t[i, k, s].unsqueeze(0)

    if CHAIN_KINDS[p.kind[i, k]] == "patch":
        return patch_mix(img, picture, one(p.pixel_op), one(p.box), one(p.a), one(p.b), one(p.threshold), noise)
    name = IMAGE_OPS[p.image_op[i, k, s]]
    return OURS[name](img, one(p.image_op), one(p.level), one(p.negate))


def test_ipmix_apply_is_the_reference_loop_per_image() -> None:
    """The lockstep batch (all chains of all images, one dispatch per step) == the reference's
    per-image loop: for each chain, depth steps of image ops or patch mixings, then
    (1 - m) x + m sum_i w_i chain_i, given the same draws."""
    bank = _bank()
    x = _u8(24, seed=4).float() / 255
    p = ipmix_params(24, _generator(15), CPU, SIZE, bank.shape[0], bank.shape[-1])
    out = ipmix_apply(x, p, bank, _generator(16))
    pictures = mixing_pictures(bank, p, SIZE, 3)
    g = _generator(16)
    noises = [torch.rand((24, IPMIX_WIDTH, 3, 32, 32), generator=g) for _ in range(IPMIX_MAX_DEPTH)]
    for i in range(24):
        mix = torch.zeros(1, 3, 32, 32)
        for k in range(IPMIX_WIDTH):
            chain = x[i : i + 1]
            for s in range(int(p.depth[i, k])):
                chain = _chain_step(chain, p, i, k, s, pictures[i : i + 1], noises[s][i, k].unsqueeze(0))
            mix = mix + p.weights[i, k] * chain
        expected = ((1 - p.mix[i]) * x[i : i + 1] + p.mix[i] * mix).clamp(0, 1)
        torch.testing.assert_close(out[i : i + 1], expected, rtol=0, atol=1e-5)


def test_ipmix_is_apply_of_params_with_the_procedural_set() -> None:
    x = _u8(16).float() / 255
    out, y = AUGMENTATIONS["ipmix"](x, torch.zeros(16, 10), _generator(17))
    bank = procedural_mixing_set(SIZE, CPU)
    g = _generator(17)
    p = ipmix_params(16, g, CPU, SIZE, bank.shape[0], bank.shape[-1])
    assert torch.equal(out, ipmix_apply(x, p, bank, g)) and torch.equal(y, torch.zeros(16, 10))


def test_two_images_of_a_batch_get_different_chains() -> None:
    """Two copies of one image: their own chain kinds, depths, ops, weights, and different outputs."""
    x = (_u8(1).float() / 255).expand(2, -1, -1, -1)
    bank = procedural_mixing_set(SIZE, CPU)
    g = _generator(18)
    p = ipmix_params(2, g, CPU, SIZE, bank.shape[0], bank.shape[-1])
    assert not torch.equal(p.weights[0], p.weights[1]) and p.mix[0] != p.mix[1]
    assert not (torch.equal(p.kind[0], p.kind[1]) and torch.equal(p.depth[0], p.depth[1])
                and torch.equal(p.image_op[0], p.image_op[1]))  # fmt: skip
    out = ipmix_apply(x, p, bank, g)
    assert (out[0] - out[1]).abs().max() > 0.05


def test_identity_chains_give_the_image() -> None:
    """Depth 0 everywhere: every chain is the image, so is the mix."""
    bank = _bank()
    x = _u8(6).float() / 255
    p = ipmix_params(6, _generator(19), CPU, SIZE, bank.shape[0], bank.shape[-1])
    p = p._replace(depth=torch.zeros_like(p.depth))
    torch.testing.assert_close(ipmix_apply(x, p, bank, _generator(0)), x, rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------- mixing sets


@pytest.mark.slow  # builds the 1,024-picture set twice
def test_procedural_set_is_deterministic_and_non_trivial() -> None:
    a, b = procedural_pictures(24, 36, seed=0, device=CPU), procedural_pictures(24, 36, seed=0, device=CPU)
    assert a.shape == (24, 3, 36, 36) and a.dtype == torch.uint8 and torch.equal(a, b)
    assert not torch.equal(a, procedural_pictures(24, 36, seed=1, device=CPU))
    assert torch.unique(a.flatten(1), dim=0).shape[0] == 24  # all distinct
    fractals, noise = a[:12].float() / 255, a[12:].float() / 255
    background = (fractals.amax(1) == 0).float().mean(dim=(1, 2))  # black pixels per fractal
    assert (background > 0.05).all() and (background < 0.98).all(), background
    lit = fractals.amax(1)[fractals.amax(1) > 0]
    assert lit.std() > 0.05  # a density, not a flat silhouette
    assert (noise.amin(dim=(1, 2, 3)) == 0).all() and (noise.amax(dim=(1, 2, 3)) == 1).all()
    assert noise.std(dim=(1, 2, 3)).min() > 0.08
    colour = (noise - noise.mean(1, keepdim=True)).abs().mean(dim=(1, 2, 3))
    assert colour.min() > 0.005  # coloured, not grey


def test_spectral_noise_follows_its_exponent() -> None:
    """Smooth pictures (exponent near 3) have more power at low frequencies than rough ones (near 1):
    neighbouring pixels correlate more."""
    g = _generator(20)
    pictures = spectral_noise(64, 36, g, CPU)
    g = _generator(20)
    torch.randn((64, 3, 36, 36), generator=g)  # the white noise, drawn first
    exponent = 1.0 + torch.rand((64, 1, 1, 1), generator=g).flatten() * 2.0
    grey = pictures.mean(1)
    neighbour = ((grey[:, :, 1:] - grey[:, :, :-1]).abs().mean(dim=(1, 2)) / grey.std(dim=(1, 2)))
    smooth, rough = neighbour[exponent > 2.5], neighbour[exponent < 1.5]
    assert smooth.max() < rough.min(), (smooth, rough)


def test_fractals_are_ifs_attractors_not_noise() -> None:
    """A fractal's lit pixels form connected structures: most lit pixels have a lit neighbour."""
    pictures = ifs_fractals(8, 36, _generator(21), CPU)
    lit = pictures.amax(1) > 0  # (8, 36, 36)
    neighbour = torch.zeros_like(lit)
    neighbour[:, 1:] |= lit[:, :-1]
    neighbour[:, :-1] |= lit[:, 1:]
    neighbour[:, :, 1:] |= lit[:, :, :-1]
    neighbour[:, :, :-1] |= lit[:, :, 1:]
    share = (lit & neighbour).sum(dim=(1, 2)) / lit.sum(dim=(1, 2))
    assert (share > 0.6).all(), share


def _folder(tmp_path, sizes: list[tuple[int, int]]):
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(tmp_path / f"p{i}.png")
    return str(tmp_path)


def test_a_folder_of_pictures_is_the_mixing_set(tmp_path) -> None:
    folder = _folder(tmp_path, [(50, 40), (36, 36), (100, 80)])
    bank = folder_mixing_set(folder, SIZE, CPU)
    assert bank.shape == (3, 3, picture_side(SIZE), picture_side(SIZE)) and bank.dtype == torch.uint8
    assert torch.equal(bank[1], _tensor(Image.open(tmp_path / "p1.png")))  # 36 px: unchanged
    x = _u8(8).float() / 255
    y = torch.zeros(8, 10)
    from_folder, _ = create_augmentation("ipmix", ipmix_mixing_set=folder)(x, y, _generator(22))
    procedural, _ = create_augmentation("ipmix")(x, y, _generator(22))
    assert from_folder.shape == x.shape and not torch.equal(from_folder, procedural)


@pytest.mark.parametrize("case", ["missing", "empty", "unreadable"])
def test_a_bad_mixing_folder_fails_in_one_line(tmp_path, case: str) -> None:
    folder = tmp_path / "pictures"
    if case != "missing":
        folder.mkdir()
    if case == "unreadable":
        (folder / "broken.png").write_bytes(b"not a picture")
    with pytest.raises(ValueError, match=r"^ipmix_mixing_set .*pictures") as info:
        create_augmentation("fcr+ipmix", ipmix_mixing_set=str(folder))
    assert "\n" not in str(info.value)
    assert {"missing": "no such folder", "empty": "no pictures", "unreadable": "cannot read"}[case] in str(info.value)
    read_folder.cache_clear()


def test_a_trial_with_a_bad_mixing_folder_fails_before_training(tmp_path) -> None:
    cfg = TrialConfig(augment="fcr+ipmix", ipmix_mixing_set=str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match=r"^ipmix_mixing_set .*nowhere.*: no such folder$"):
        build_augmentation(cfg)
    assert build_augmentation(cfg.replace(augment="fcr+augmix"))[0].__name__ == "fcr+augmix"  # ignored there


# ----------------------------------------------------------------------------- CUDA


@pytest.mark.gpu
def test_cuda_matches_cpu_and_never_syncs() -> None:
    cuda = torch.device("cuda")
    bank = _bank()
    x = _u8(128, seed=5).float() / 255
    p = ipmix_params(128, _generator(23), CPU, SIZE, bank.shape[0], bank.shape[-1])
    on_cpu = ipmix_apply(x, p, bank, _generator(24))
    on_cuda = ipmix_apply(x.to(cuda), IPMixParams(*(t.to(cuda) for t in p)), bank.to(cuda), _generator(24, cuda))
    # The random masks come from the CUDA generator: compare where no random pixel mask was drawn.
    masked = (p.pixel_op >= PIXEL_OPS.index("random_pixels")) & (p.kind.unsqueeze(-1) == 1)
    clean = ~masked.any(-1).any(-1)
    assert clean.sum() > 10
    diff = (on_cuda.cpu() - on_cpu)[clean].abs()
    assert (diff > 1e-4).float().mean() < 1e-3, diff.max()  # bilinear ties may round apart
    augment = create_augmentation("fcr+ipmix")
    xc, yc = x.to(cuda), torch.zeros(128, 10, device=cuda)
    augment(xc, yc, _generator(0, cuda))  # the first call generates the mixing set
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out, _ = augment(xc, yc, _generator(4, cuda))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert out.device.type == "cuda" and out.min() >= 0 and out.max() <= 1
    assert torch.equal(out, augment(xc, yc, _generator(4, cuda))[0])

