"""The JSD consistency loss (trainables.consistency) and its place in the training step: the
references' formula, its properties, the three views as one batch, and one mollification draw per
image shared by its views."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import trainables.batches as train_module
from trainables.augment import create_augmentation, fcr, stages
from trainables.batches import build_augmentation, make_views, mollify_options
from trainables.config import ConfigError, TrialConfig
from trainables.consistency import consistency_loss, jensen_shannon, mollify_views, three_views
from trainables.data import load_dataset
from trainables.losses import soft_cross_entropy
from trainables.mollify import ROLES, draw_mollification, mollify
from trainables.train import forward_loss

CPU = torch.device("cpu")


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _logits(batch: int = 16, classes: int = 10, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, classes, generator=_generator(seed)) * 3


def _reference_jsd(clean, aug1, aug2) -> torch.Tensor:
    """The references' lines (AugMix's and IPMix's cifar.py), verbatim in structure."""
    p_clean, p_aug1, p_aug2 = F.softmax(clean, dim=1), F.softmax(aug1, dim=1), F.softmax(aug2, dim=1)
    p_mixture = torch.clamp((p_clean + p_aug1 + p_aug2) / 3., 1e-7, 1).log()
    return (F.kl_div(p_mixture, p_clean, reduction='batchmean') + F.kl_div(p_mixture, p_aug1, reduction='batchmean')
            + F.kl_div(p_mixture, p_aug2, reduction='batchmean')) / 3.  # fmt: skip


def test_jsd_is_the_references_formula_and_the_entropy_definition() -> None:
    a, b, c = _logits(seed=1), _logits(seed=2), _logits(seed=3)
    torch.testing.assert_close(jensen_shannon(a, b, c), _reference_jsd(a, b, c), rtol=0, atol=1e-7)
    # JS = H(M) - mean_v H(p_v) (no probability is below the clamp here), batch mean, in NumPy float64
    p = [F.softmax(t.double(), dim=1).numpy() for t in (a, b, c)]
    m = sum(p) / 3

    def entropy(q: np.ndarray) -> np.ndarray:
        return -(q * np.log(q)).sum(1)

    expected = (entropy(m) - sum(entropy(q) for q in p) / 3).mean()
    assert m.min() > 1e-7 and abs(jensen_shannon(a, b, c).item() - expected) < 1e-5


def test_jsd_is_zero_for_identical_predictions_and_positive_otherwise() -> None:
    a = _logits(seed=4)
    assert abs(jensen_shannon(a, a, a).item()) < 1e-6
    assert abs(jensen_shannon(a, a + 5.0, a - 2.0).item()) < 1e-6  # same softmax: logits shift per row
    assert jensen_shannon(a, a, _logits(seed=5)).item() > 1e-2
    assert jensen_shannon(a, _logits(seed=6), _logits(seed=7)).item() > jensen_shannon(a, a, _logits(seed=7)).item()
    # Three disjoint one-hot predictions: the maximum, log 3 (up to float32 rounding)
    opposite = torch.eye(3).repeat(4, 1) * 50
    top = jensen_shannon(opposite[:, [0, 1, 2]], opposite[:, [1, 2, 0]], opposite[:, [2, 0, 1]]).item()
    assert abs(top - math.log(3)) < 1e-6


def test_jsd_is_symmetric_in_the_views() -> None:
    a, b, c = _logits(seed=8), _logits(seed=9), _logits(seed=10)
    torch.testing.assert_close(jensen_shannon(a, b, c), jensen_shannon(a, c, b), rtol=0, atol=1e-7)
    torch.testing.assert_close(jensen_shannon(a, b, c), jensen_shannon(b, a, c), rtol=0, atol=1e-7)


def test_consistency_loss_is_ce_on_the_clean_view_plus_weighted_jsd() -> None:
    logits = _logits(batch=24, seed=11)
    y = F.one_hot(torch.arange(8) % 10, 10).float()
    clean, aug1, aug2 = logits.chunk(3)
    expected = soft_cross_entropy(clean, y) + 12.0 * _reference_jsd(clean, aug1, aug2)
    torch.testing.assert_close(consistency_loss(logits, y, soft_cross_entropy, 12.0), expected, rtol=0, atol=1e-6)


def test_jsd_gradient_reaches_the_network_through_every_view() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(8, 10))  # fmt: skip
    views = torch.rand(3 * 6, 3, 16, 16, generator=_generator(12), requires_grad=True)
    logits = net(views)
    jensen_shannon(*logits.chunk(3)).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
    per_view = views.grad.abs().sum(dim=(1, 2, 3)).view(3, 6)
    assert (per_view > 0).all()  # the clean view is pulled too, not only the augmented ones


# ----------------------------------------------------------------------------- views and mollification


def _batch(batch: int = 8):
    x = torch.randint(0, 256, (batch, 3, 32, 32), generator=_generator(13)).float() / 255
    return x, F.one_hot(torch.arange(batch) % 10, 10).float()


def test_three_views_are_base_then_two_independent_mixer_draws() -> None:
    x, y = _batch()
    views, y_out = three_views(x, y, _generator(14), fcr, create_augmentation("ipmix"))
    g = _generator(14)
    clean, _ = fcr(x, y, g)
    assert views.shape == (24, 3, 32, 32) and torch.equal(views[:8], clean) and torch.equal(y_out, y)
    aug1, aug2 = views[8:16], views[16:]
    assert ((aug1 - aug2).abs().amax(dim=(1, 2, 3)) > 0).all()  # each copy its own chains
    assert ((aug1 - clean).abs().amax(dim=(1, 2, 3)) > 0).any()


def test_one_mollification_draw_per_image_is_shared_by_its_views() -> None:
    """The clean view is mollified exactly as `mollify` would do it alone (same draws, same
    generator), its labels are those the cross-entropy sees, and every view of an image gets the same
    role, temperature and noise: for a noised image, view - cos(pi t / 2) view_clean is the same
    noise term in all three."""
    x, y = _batch(12)
    views = torch.cat([x, x.flip(-1), x.roll(3, -1)])  # three different views of each image
    options = dict(roles="xnb", alpha=1.0, beta=2.0, npow=1.0, bpow=1.0, label_mode="ls", smooth_labels=True,
                   sigma_min=0.3, sigma_max=None)  # fmt: skip
    out, y_t = mollify_views(views, y, _generator(15), **options)
    alone = mollify(x, y, generator=_generator(15), **options)
    torch.testing.assert_close(out[:12], alone.x, rtol=0, atol=1e-6)  # blur's matmul over 3B rows, not B
    assert torch.equal(y_t, alone.y)
    draw = draw_mollification(x.shape, x.dtype, CPU, roles="xnb", generator=_generator(15))
    noised = draw.role == ROLES.index("n")
    assert noised.any() and (draw.role == ROLES.index("b")).any()
    shrink = torch.cos(draw.t * math.pi / 2).view(-1, 1, 1, 1)
    terms = [(out[v * 12 : (v + 1) * 12] - shrink * views[v * 12 : (v + 1) * 12])[noised] for v in range(3)]
    torch.testing.assert_close(terms[1], terms[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(terms[2], terms[0], rtol=0, atol=1e-6)
    clean = draw.role == ROLES.index("x")
    for v in range(3):  # a clean-role image keeps all its views as they were
        assert torch.equal(out[v * 12 : (v + 1) * 12][clean], views[v * 12 : (v + 1) * 12][clean])


def test_the_three_views_go_through_the_network_as_one_batch() -> None:
    """Batch norm normalises the clean and augmented views together: one forward of 3B images."""
    cfg = TrialConfig(augment="fcr+augmix", jsd=True, device="cpu", batch_size=8)
    data = load_dataset("synthetic", "", "train", image_size=32, device=CPU, synthetic_size=64)
    base, mixer = build_augmentation(cfg)
    x, y = make_views(cfg, data, torch.arange(8), _generator(16), base, mixer)
    assert x.shape == (24, 3, 32, 32) and y.shape == (8, 10)
    batches = []
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    net.register_forward_pre_hook(lambda module, args: batches.append(args[0].shape[0]))
    loss, logits = forward_loss(cfg, net, x, y, soft_cross_entropy)
    assert batches == [24] and logits.shape == (8, 10) and loss.item() > 0


def test_build_augmentation_splits_off_the_last_stage_only_with_jsd() -> None:
    base, mixer = build_augmentation(TrialConfig(augment="fcr+trivaug+ipmix", jsd=True))
    assert base.__name__ == "fcr+trivaug" and mixer is stages("ipmix")[0]
    whole, none = build_augmentation(TrialConfig(augment="fcr+ipmix"))
    assert whole.__name__ == "fcr+ipmix" and none is None
    alone, _ = build_augmentation(TrialConfig(augment="augmix", jsd=True))
    x, y = _batch(2)
    assert alone(x, y, _generator(0))[0] is x  # the clean view of a single-stage spec is the image


@pytest.mark.parametrize("augment", ["none", "fcr+mixup", "cutmix"])
def test_jsd_needs_a_label_preserving_last_stage(augment: str) -> None:
    with pytest.raises(ConfigError, match="jsd compares two augmented views"):
        TrialConfig(augment=augment, jsd=True)


@pytest.mark.parametrize("weight", [float("nan"), float("inf"), -float("inf"), 0.0, -12.0])
def test_jsd_weight_must_be_finite_and_positive(weight: float) -> None:
    with pytest.raises(ConfigError, match="jsd_weight"):
        TrialConfig(augment="fcr+ipmix", jsd=True, jsd_weight=weight)
    with pytest.raises(ConfigError, match="jsd_weight"):
        TrialConfig.from_dict({"jsd_weight": str(weight)})


def test_jsd_defaults_to_off_with_the_references_weight() -> None:
    cfg = TrialConfig()
    assert cfg.jsd is False and cfg.jsd_weight == 12.0 and cfg.ipmix_mixing_set is None
    assert mollify_options(cfg)["roles"] == cfg.roles
    assert train_module.build_augmentation(cfg)[1] is None
