"""Tests for the paper's augmentation baselines in trainables.augment (RandAugment, AutoAugment, AugMix,
MixUp, CutMix): policy tables against torchvision's, the per-image draws' distributions, and outputs
against torchvision applied per image with the same parameters. The registry-wide contract and
per-image randomness tests live in test_augment.py."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor
from torchvision.transforms import v2
from torchvision.transforms.v2 import AutoAugmentPolicy, InterpolationMode

import trainables.augment.kernels as augment_module
from trainables.augment import (
    AUGMENTATIONS,
    AUGMIX_PAPER_SPACE,
    AUGMIX_SPACE,
    AUTOAUG_CIFAR10_POLICY,
    AUTOAUG_IMAGENET_POLICY,
    AUTOAUG_POLICIES,
    AUTOAUG_SPACE,
    CORRUPTION_OVERLAP_OPS,
    IDENTITY,
    OPS,
    RANDAUG_SPACE,
    SPACES,
    TRIVAUG_OPS,
    TRIVAUG_SPACE,
    apply_op,
    apply_ops,
    augmix,
    augmix_apply,
    augmix_paper,
    augmix_params,
    autoaug,
    autoaug_cifar10,
    autoaug_params,
    create_augmentation,
    cutmix,
    cutmix_apply,
    cutmix_box,
    cutmix_params,
    mixup,
    mixup_apply,
    mixup_params,
    op_table,
    randaug,
    randaug_params,
    trivaug_magnitudes,
)

CPU = torch.device("cpu")
SIZE = (32, 32)
NEAREST, BILINEAR = InterpolationMode.NEAREST, InterpolationMode.BILINEAR
# The torchvision transform each space transcribes, and the space's number of bins in that transform.
TORCHVISION = {
    "trivaug": (v2.TrivialAugmentWide(), 31),
    "randaug": (v2.RandAugment(), 31),
    "autoaug": (v2.AutoAugment(), 10),  # default policy: ImageNet (both policies share the space)
    "augmix": (v2.AugMix(), 10),
    "augmix_paper": (v2.AugMix(all_ops=False), 10),
}


def _torchvision_space(transform: v2.Transform) -> dict:
    """The op space the transform draws from (AugMix(all_ops=False) draws from its partial one)."""
    if getattr(transform, "all_ops", True):
        return transform._AUGMENTATION_SPACE
    return transform._PARTIAL_AUGMENTATION_SPACE
# Our AutoAugment policy name -> torchvision's policy, and the registry entry that uses it.
AUTOAUG = {
    "imagenet": (AutoAugmentPolicy.IMAGENET, autoaug),
    "cifar10": (AutoAugmentPolicy.CIFAR10, autoaug_cifar10),
}


def _generator(seed: int, device: torch.device = CPU) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def _images(batch: int, height: int = 32, width: int = 32, seed: int = 0) -> Tensor:
    """Random uint8-valued float images (B, 3, H, W) in [0, 1], as the training loop has them."""
    u8 = torch.randint(0, 256, (batch, 3, height, width), generator=_generator(seed), dtype=torch.uint8)
    return u8.float() / 255.0


def _soft_labels(batch: int, classes: int = 10, seed: int = 1) -> Tensor:
    return torch.softmax(torch.randn(batch, classes, generator=_generator(seed)), dim=1)


def _reference_op(img: Tensor, op: int, magnitude: float, interpolation: InterpolationMode) -> Tensor:
    """torchvision's own op dispatch on one float image. Posterize and Equalize are only defined on
    256 levels, so they run on the image rounded to uint8 (our semantics; see test_augment.py)."""
    name = OPS[op]
    uint8_semantics = name in ("Posterize", "Equalize")
    if uint8_semantics:
        img = torch.round(img * 255.0).to(torch.uint8)
    augment = TORCHVISION["autoaug"][0]  # every policy shares _AutoAugmentBase's dispatch
    out = augment._apply_image_or_video_transform(
        img, name, magnitude, interpolation=interpolation, fill=augment._fill
    )
    return out.float() / 255.0 if uint8_semantics else out


def _reference_chain(img: Tensor, ops: Tensor, magnitudes: Tensor,
                     interpolation: InterpolationMode = NEAREST) -> Tensor:  # fmt: skip
    """One image through its ops (n,) left to right, skipping IDENTITY as torchvision never applies it."""
    for op, m in zip(ops.tolist(), magnitudes.tolist()):
        if op != IDENTITY:
            img = _reference_op(img, op, m, interpolation)
    return img


# ----------------------------------------------------------------------------- tables


@pytest.mark.parametrize("size", [(32, 32), (20, 28)])
@pytest.mark.parametrize("policy", sorted(SPACES))
def test_space_matches_torchvision(policy: str, size: tuple[int, int]) -> None:
    """Same op set, signs and magnitude table as torchvision's `_AUGMENTATION_SPACE`, bit for bit."""
    transform, num_bins = TORCHVISION[policy]
    reference = _torchvision_space(transform)
    space = SPACES[policy]
    assert set(space) == set(reference)
    table = op_table(space, num_bins, *size)
    assert [OPS[i] for i in table.ops] == list(space)
    for row, name in enumerate(space):
        fn, signed = reference[name]
        assert bool(table.signed[row]) == signed, name
        expected = fn(num_bins, *size)
        expected = torch.zeros(num_bins) if expected is None else expected.float()
        assert torch.equal(table.magnitudes[row], expected), name


@pytest.mark.parametrize("policy", sorted(AUTOAUG))
def test_autoaug_policy_is_torchvisions(policy: str) -> None:
    reference = v2.AutoAugment(AUTOAUG[policy][0])._policies
    assert [tuple(sub) for sub in reference] == list(AUTOAUG_POLICIES[policy])
    assert len(AUTOAUG_POLICIES[policy]) == 25


def test_autoaug_is_the_authors_default_policy() -> None:
    """The authors call `AutoAugment()`: its default is the ImageNet policy, and so is `autoaug`'s;
    the CIFAR-10 policy is `autoaug_cifar10`."""
    default = v2.AutoAugment()
    assert default.policy == AutoAugmentPolicy.IMAGENET
    assert [tuple(sub) for sub in default._policies] == list(AUTOAUG_IMAGENET_POLICY)
    assert AUTOAUG_IMAGENET_POLICY != AUTOAUG_CIFAR10_POLICY
    assert AUGMENTATIONS["autoaug"] is autoaug and AUGMENTATIONS["autoaug_cifar10"] is autoaug_cifar10
    x, y = _images(64, seed=6), _soft_labels(64)
    for policy, (_, entry) in AUTOAUG.items():  # each entry is its policy's draws, applied
        _, ops, magnitudes = autoaug_params(64, _generator(7), CPU, SIZE, policy)
        assert torch.equal(entry(x, y, _generator(7))[0], apply_ops(x, ops, magnitudes))
    assert not torch.equal(autoaug(x, y, _generator(7))[0], autoaug_cifar10(x, y, _generator(7))[0])


def test_trivaug_ops_are_a_prefix_of_ops() -> None:
    assert OPS[: len(TRIVAUG_OPS)] == TRIVAUG_OPS == tuple(TRIVAUG_SPACE) and OPS[IDENTITY] == "Identity"
    assert "Invert" in AUTOAUG_SPACE and "Identity" not in AUTOAUG_SPACE and "Identity" in RANDAUG_SPACE


# ----------------------------------------------------------------------------- ops against torchvision


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
def test_masked_and_gathered_paths_agree(interpolation: str) -> None:
    """apply_op's two strategies (all families on the whole batch + torch.where, used on accelerators;
    each family on its own images, used on CPU) give the same images, every op present."""
    x = _images(120, seed=2)
    ops = torch.arange(120) % len(OPS)
    table = torch.cat([trivaug_magnitudes(), torch.zeros(1, 31)])  # + Invert, magnitude-free
    magnitudes = table[ops, torch.randint(31, (120,), generator=_generator(2))]
    family = augment_module._op_family(CPU)[ops]
    masked = augment_module._apply_masked(x, family, ops, magnitudes, interpolation)
    gathered = augment_module._apply_gathered(x, family, ops, magnitudes, interpolation)
    torch.testing.assert_close(gathered, masked, rtol=0.0, atol=1e-6)
    assert torch.equal(apply_op(x, ops, magnitudes, interpolation), gathered)


def test_invert_matches_torchvision() -> None:
    x = _images(4)
    out = apply_op(x, torch.full((4,), OPS.index("Invert")), torch.zeros(4))
    expected = torch.stack([_reference_op(img, OPS.index("Invert"), 0.0, NEAREST) for img in x])
    assert torch.equal(out, expected)


@pytest.mark.parametrize("name", ["ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"])
def test_bilinear_geometric_ops_match_torchvision(name: str) -> None:
    """AugMix's geometric ops (bilinear) over all its magnitudes, both signs, against torchvision."""
    row = op_table(AUGMIX_SPACE, 10, *SIZE).magnitudes[list(AUGMIX_SPACE).index(name)]
    magnitudes = torch.cat([row, -row])
    x = _images(len(magnitudes), seed=3)
    op = OPS.index(name)
    out = apply_op(x, torch.full_like(magnitudes, op, dtype=torch.long), magnitudes, "bilinear")
    expected = torch.stack(
        [_reference_op(img, op, float(m), BILINEAR) for img, m in zip(x, magnitudes)]
    )
    torch.testing.assert_close(out, expected, rtol=0.0, atol=1e-6)


def test_randaug_matches_torchvision_per_image() -> None:
    """randaug == torchvision's ops applied per image in sequence, with the drawn ops and magnitudes."""
    x = _images(96, seed=4)
    ops, magnitudes = randaug_params(96, _generator(5), CPU, SIZE)
    expected = torch.stack([_reference_chain(img, o, m) for img, o, m in zip(x, ops, magnitudes)])
    torch.testing.assert_close(apply_ops(x, ops, magnitudes), expected, rtol=0.0, atol=1e-6)
    out, _ = randaug(x, _soft_labels(96), _generator(5))
    assert torch.equal(out, apply_ops(x, ops, magnitudes))


@pytest.mark.parametrize("policy", sorted(AUTOAUG))
def test_autoaug_matches_torchvision_per_image(policy: str) -> None:
    """autoaug / autoaug_cifar10 == torchvision's ops applied per image with the drawn sub-policies."""
    x = _images(96, seed=6)
    _, ops, magnitudes = autoaug_params(96, _generator(7), CPU, SIZE, policy)
    expected = torch.stack([_reference_chain(img, o, m) for img, o, m in zip(x, ops, magnitudes)])
    torch.testing.assert_close(apply_ops(x, ops, magnitudes), expected, rtol=0.0, atol=1e-6)
    out, _ = AUTOAUG[policy][1](x, _soft_labels(96), _generator(7))
    assert torch.equal(out, apply_ops(x, ops, magnitudes))


def test_augmix_matches_explicit_mixture() -> None:
    """augmix_apply == torchvision's AugMix arithmetic per image (w0 x + sum_k w_k chain_k(x), chains
    of torchvision's ops, bilinear) given the drawn weights, ops and magnitudes."""
    x = _images(24, seed=8)
    params = augmix_params(24, _generator(9), CPU, SIZE)
    original, chains, ops, magnitudes = params
    expected = []
    for i, img in enumerate(x):
        mix = original[i] * img
        for k in range(ops.shape[1]):
            mix.add_(chains[i, k] * _reference_chain(img, ops[i, k], magnitudes[i, k], BILINEAR))
        expected.append(mix.clamp(0.0, 1.0))
    out = augmix_apply(x, *params)
    torch.testing.assert_close(out, torch.stack(expected), rtol=0.0, atol=1e-6)
    assert torch.equal(augmix(x, _soft_labels(24), _generator(9))[0], out)


def test_augmix_paper_draws_only_the_paper_ops() -> None:
    """augmix_paper = AugMix(all_ops=False): never brightness, color, contrast or sharpness (they
    overlap the test corruptions); otherwise the same mixture, drawn from its 9 ops uniformly."""
    batch = 3000
    _, _, ops, _ = augmix_params(batch, _generator(12), CPU, SIZE, "augmix_paper")
    active = ops[ops != IDENTITY]
    counts = torch.bincount(active, minlength=len(OPS)).float() / active.numel()
    paper = [OPS.index(name) for name in AUGMIX_PAPER_SPACE]
    assert set(AUGMIX_PAPER_SPACE) == set(AUGMIX_SPACE) - set(CORRUPTION_OVERLAP_OPS)
    assert counts[paper].sum() == 1.0 and ((counts[paper] - 1 / 9).abs() < 0.01).all()
    _, _, all_ops, _ = augmix_params(batch, _generator(12), CPU, SIZE, "augmix")
    assert torch.isin(all_ops, torch.tensor([OPS.index(name) for name in CORRUPTION_OVERLAP_OPS])).any()
    x = _images(16, seed=8)
    params = augmix_params(16, _generator(9), CPU, SIZE, "augmix_paper")
    assert torch.equal(augmix_paper(x, _soft_labels(16), _generator(9))[0], augmix_apply(x, *params))
    assert AUGMENTATIONS["augmix_paper"] is augmix_paper and AUGMENTATIONS["augmix"] is augmix


def test_augmix_with_identity_chains_is_the_image() -> None:
    x = _images(8)
    weights = torch.softmax(torch.randn(8, 4, generator=_generator(0)), dim=1)
    ops = torch.full((8, 3, 3), IDENTITY)
    out = augmix_apply(x, weights[:, 0], weights[:, 1:], ops, torch.zeros(8, 3, 3))
    torch.testing.assert_close(out, x, rtol=0.0, atol=1e-6)


# ----------------------------------------------------------------------------- distributions


def test_randaug_params_distribution() -> None:
    """Per image 2 ops uniformly from RandAugment's 14 with replacement, each at bin 9, signed ops
    negated half the time, the two draws independent."""
    batch = 14 * 2000
    ops, magnitudes = randaug_params(batch, _generator(10), CPU, SIZE)
    assert ops.shape == magnitudes.shape == (batch, 2)
    table = op_table(RANDAUG_SPACE, 31, *SIZE)
    bin9 = torch.zeros(len(OPS)).index_put((table.ops,), table.magnitudes[:, 9])
    signed = torch.zeros(len(OPS), dtype=torch.bool).index_put((table.ops,), table.signed)
    assert torch.equal(magnitudes.abs(), bin9[ops])
    for column in range(2):
        counts = torch.bincount(ops[:, column], minlength=len(OPS)).float()
        assert counts[table.ops].sum() == batch  # only RandAugment's ops
        assert ((counts[table.ops] - 2000).abs() < 250).all(), counts  # ~6 sigma
        negative = (magnitudes[:, column][signed[ops[:, column]]] < 0).float().mean()
        assert abs(negative - 0.5) < 0.02
    same = (ops[:, 0] == ops[:, 1]).float().mean()  # with replacement: 1/14 pairs repeat an op
    assert abs(same - 1 / 14) < 0.01
    assert bin9[OPS.index("Rotate")] == 9.0 and bin9[OPS.index("Posterize")] == 7.0


@pytest.mark.parametrize("policy", sorted(AUTOAUG))
def test_autoaug_params_distribution(policy: str) -> None:
    """Sub-policy uniform over the 25; each op applied at its probability, at its bin's magnitude."""
    batch = 25 * 1200
    sub, ops, magnitudes = autoaug_params(batch, _generator(11), CPU, SIZE, policy)
    counts = torch.bincount(sub, minlength=25).float()
    assert ((counts - 1200).abs() < 200).all(), counts  # ~6 sigma
    table = op_table(AUTOAUG_SPACE, 10, *SIZE)
    rows = list(AUTOAUG_SPACE)
    for s, sub_policy in enumerate(AUTOAUG_POLICIES[policy]):
        mine = sub == s
        for j, (name, probability, bin_) in enumerate(sub_policy):
            op, m = ops[mine, j], magnitudes[mine, j]
            applied = op != IDENTITY
            assert (op[applied] == OPS.index(name)).all() and (m[~applied] == 0).all()
            rate, n = applied.float().mean(), mine.sum()
            assert abs(rate - probability) <= 6 * (probability * (1 - probability) / n) ** 0.5 + 1e-6
            value = table.magnitudes[rows.index(name), bin_ or 0]
            assert (m[applied].abs() == value).all(), (s, j)
            if table.signed[rows.index(name)] and value != 0:
                assert abs((m[applied] < 0).float().mean() - 0.5) < 0.1
            else:
                assert (m >= 0).all()


def test_augmix_params_distribution() -> None:
    batch = 6000
    original, chains, ops, magnitudes = augmix_params(batch, _generator(12), CPU, SIZE)
    assert original.shape == (batch,) and chains.shape == (batch, 3) and ops.shape == (batch, 3, 3)
    weights = torch.cat([original.unsqueeze(1), chains], dim=1)
    assert (weights >= 0).all()
    torch.testing.assert_close(weights.sum(1), torch.ones(batch))
    # original ~ Beta(1, 1) = U(0, 1); each chain's weight has mean (1 - 1/2) / 3.
    assert abs(original.mean() - 0.5) < 0.02 and abs(original.std() - 12**-0.5) < 0.02
    assert ((chains.mean(0) - 1 / 6).abs() < 0.01).all()
    # Depth uniform in 1..3; past it only Identity; ops uniform over AugMix's 13, bins 0..2.
    depth = (ops != IDENTITY).sum(-1)
    assert torch.equal(ops != IDENTITY, torch.arange(3) < depth.unsqueeze(-1))
    depth_rates = torch.bincount(depth.flatten(), minlength=4)[1:].float() / depth.numel()
    assert ((depth_rates - 1 / 3).abs() < 0.02).all()
    table = op_table(AUGMIX_SPACE, 10, *SIZE)
    active = ops[ops != IDENTITY]
    counts = torch.bincount(active, minlength=len(OPS)).float()
    assert counts[table.ops].sum() == active.numel()  # only AugMix's ops
    assert ((counts[table.ops] / active.numel() - 1 / 13).abs() < 0.01).all()
    translate = magnitudes[ops == OPS.index("TranslateX")].abs()
    assert set(translate.unique().tolist()) == set(table.magnitudes[2, :3].tolist())  # bins 0..severity-1
    posterize = magnitudes[ops == OPS.index("Posterize")]
    assert set(posterize.unique().tolist()) == {3.0, 4.0}


def test_mix_params_distribution() -> None:
    """One lambda ~ Beta(1, 1) = U(0, 1) per batch; CutMix's centre uniform over the pixels."""
    g = _generator(13)
    lams = torch.stack([mixup_params(g, CPU) for _ in range(2000)])
    assert lams.shape == (2000,) and abs(lams.mean() - 0.5) < 0.03 and abs(lams.std() - 12**-0.5) < 0.02
    draws = [cutmix_params(g, CPU, (20, 28)) for _ in range(2000)]
    centres = torch.stack([c for _, c in draws])
    assert centres[:, 0].max() == 27 and centres[:, 1].max() == 19 and centres.min() == 0
    assert abs(torch.stack([lam for lam, _ in draws]).mean() - 0.5) < 0.03


# ----------------------------------------------------------------------------- MixUp / CutMix


@pytest.mark.parametrize("lam", [0.0, 0.3, 0.71234, 1.0])
def test_mixup_matches_torchvision(lam: float) -> None:
    """Same images and soft labels as torchvision's MixUp given the same lambda, bit for bit."""
    x, y = _images(16), _soft_labels(16)
    lam_t = torch.tensor(lam, dtype=torch.float32)
    mix = v2.MixUp(alpha=1.0)
    params = {"lam": float(lam_t), "labels": y, "batch_size": 16}
    out, y_out = mixup_apply(x, y, lam_t)
    assert torch.equal(out, mix.transform(x, params).clamp(0.0, 1.0))
    assert torch.equal(y_out, mix.transform(y, params))


@pytest.mark.parametrize("size", [(32, 32), (20, 28)])
def test_cutmix_matches_torchvision(size: tuple[int, int]) -> None:
    """torchvision's CutMix draws (lambda, centre) from the global RNG; replaying the same seed gives
    us those draws, and from them the same box, corrected lambda, images and labels."""
    x, y = _images(8, *size), _soft_labels(8)
    cut = v2.CutMix(alpha=1.0)
    for seed in range(40):
        torch.manual_seed(seed)
        reference = cut.make_params([x])
        torch.manual_seed(seed)  # the same draws, in torchvision's order
        lam = cut._dist.sample(()).squeeze()
        r_x, r_y = torch.randint(size[1], (1,)), torch.randint(size[0], (1,))
        box, lam_adjusted = cutmix_box(lam, torch.cat([r_x, r_y]), size)
        assert tuple(box.tolist()) == reference["box"] and float(lam_adjusted) == reference["lam_adjusted"]
        out, y_out = cutmix_apply(x, y, box, lam_adjusted)
        params = {**reference, "labels": y, "batch_size": 8}
        assert torch.equal(out, cut.transform(x, params)) and torch.equal(y_out, cut.transform(y, params))


def test_mixup_and_cutmix_are_apply_of_params() -> None:
    x, y = _images(8), _soft_labels(8)
    expected = mixup_apply(x, y, mixup_params(_generator(14), CPU))
    assert all(torch.equal(a, b) for a, b in zip(mixup(x, y, _generator(14)), expected))
    box, lam = cutmix_box(*cutmix_params(_generator(15), CPU, SIZE), SIZE)
    expected = cutmix_apply(x, y, box, lam)
    assert all(torch.equal(a, b) for a, b in zip(cutmix(x, y, _generator(15)), expected))


def test_label_mixing_keeps_any_soft_label_row_sums() -> None:
    """y may already be soft (label smoothing, mollification); rows with equal sums keep them, and
    the total mass is preserved whatever the rows."""
    x = _images(8)
    y = _soft_labels(8) * 0.9 + 0.01  # rows sum to 1.0, no entry one-hot
    for augment in (mixup, cutmix):
        _, y_out = augment(x, y, _generator(16))
        torch.testing.assert_close(y_out.sum(1), y.sum(1))
        z = torch.rand(8, 10, generator=_generator(17))
        torch.testing.assert_close(augment(x, z, _generator(16))[1].sum(), z.sum())


# ----------------------------------------------------------------------------- CUDA


@pytest.mark.gpu
@pytest.mark.parametrize(
    "spec", ["fcr+randaug", "fcr+autoaug", "fcr+autoaug_cifar10", "fcr+augmix", "fcr+augmix_paper", "fcr+ipmix",
             "fcr+mixup", "fcr+cutmix"]
)
def test_cuda_no_host_sync(spec: str) -> None:
    """On the device a step never waits on the host (after a first call has cached the tables)."""
    cuda = torch.device("cuda")
    x, y = _images(256).to(cuda), _soft_labels(256).to(cuda)
    augment = create_augmentation(spec)
    augment(x, y, _generator(0, cuda))
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out, y_out = augment(x, y, _generator(4, cuda))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert out.device.type == "cuda" and out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    torch.testing.assert_close(y_out.sum(1), y.sum(1))
