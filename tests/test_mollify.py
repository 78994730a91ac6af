"""The mollification equations (METHOD.md section 1) against independent computations, and their
properties. The blur is checked against scipy's DCT, not against our own matrix."""

import math

import numpy as np
import pytest
import scipy.fft
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from trainables import mollify as M


def reference_blur(x: np.ndarray, t: float, sigma_min: float, sigma_max: float) -> np.ndarray:
    """x_t = V exp(-tau Lambda) V^T x with scipy's orthonormal DCT-II, one image (C, H, W)."""
    h, w = x.shape[-2:]
    sigma = math.exp((1 - t) * math.log(sigma_min) + t * math.log(sigma_max))
    tau = sigma**2 / 2
    lam = (np.pi * np.arange(h)[:, None] / h) ** 2 + (np.pi * np.arange(w)[None, :] / w) ** 2
    coeffs = scipy.fft.dctn(x, type=2, axes=(-2, -1), norm="ortho")
    return scipy.fft.idctn(np.exp(-tau * lam) * coeffs, type=2, axes=(-2, -1), norm="ortho")


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


# --- noise ---------------------------------------------------------------------------------------

def test_noise_matches_formula(images):
    t = torch.linspace(0, 1, 6, dtype=torch.float64)
    eps = torch.randn_like(images)
    out = M.noise(images, t, eps)
    for i, ti in enumerate(t.tolist()):
        expected = math.cos(math.pi * ti / 2) * images[i] + math.sin(math.pi * ti / 2) * eps[i]
        torch.testing.assert_close(out[i], expected)


def test_noise_at_zero_is_identity_and_at_one_is_pure_noise(images):
    eps = torch.randn_like(images)
    torch.testing.assert_close(M.noise(images, torch.zeros(6, dtype=torch.float64), eps), images)
    torch.testing.assert_close(M.noise(images, torch.ones(6, dtype=torch.float64), eps), eps)


def test_noise_preserves_variance():
    x, eps = torch.randn(2, 200_000, 1, 1), torch.randn(2, 200_000, 1, 1)
    out = M.noise(x.reshape(200_000, 2, 1, 1), torch.full((200_000,), 0.37), eps.reshape(200_000, 2, 1, 1))
    assert abs(out.var().item() - 1.0) < 0.01


# --- blur ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [(32, 32), (64, 64), (16, 24)])
def test_blur_matches_scipy_dct(size):
    x = torch.rand(4, 3, *size, dtype=torch.float64)
    t = torch.tensor([0.0, 0.2, 0.6, 1.0], dtype=torch.float64)
    out = M.blur(x, t, sigma_min=0.3, sigma_max=None)
    for i in range(4):
        expected = reference_blur(x[i].numpy(), t[i].item(), 0.3, float(size[1]))
        np.testing.assert_allclose(out[i].numpy(), expected, atol=1e-10)


def test_blur_keeps_channel_means_and_flattens_at_t_one(images):
    t = torch.tensor([0.0, 0.3, 0.5, 0.8, 0.9, 1.0], dtype=torch.float64)
    out = M.blur(images, t)
    torch.testing.assert_close(out.mean(dim=(2, 3)), images.mean(dim=(2, 3)))
    ratio = out.std(dim=(2, 3)) / images.std(dim=(2, 3))  # (B, C) how much structure is left
    assert (ratio[-1] < 0.02).all()  # t = 1 leaves (almost only) each channel's mean
    assert (ratio[:-1].diff(dim=0) <= 0).all()  # more blur as t grows


def test_blur_float32_close_to_float64(images):
    t = torch.rand(6, dtype=torch.float64)
    out32 = M.blur(images.float(), t.float())
    torch.testing.assert_close(out32.double(), M.blur(images, t), atol=1e-5, rtol=1e-5)


def test_dct_matrix_is_orthonormal():
    d = M.dct_matrix(32, torch.device("cpu"), torch.float64)
    torch.testing.assert_close(d @ d.T, torch.eye(32, dtype=torch.float64))


def test_blur_sigma_endpoints():
    t = torch.tensor([0.0, 1.0])
    torch.testing.assert_close(M.blur_sigma(t, 0.3, 32.0), torch.tensor([0.3, 32.0]))


# --- label schedules and degradation -----------------------------------------------------------

@given(st.floats(0.001, 0.999), st.sampled_from([0.5, 1.0, 2.0]))
def test_noise_label_weight_is_inverse_one_plus_snr(t, power):
    snr = math.cos(math.pi * t / 2) ** 2 / math.sin(math.pi * t / 2) ** 2
    got = M.noise_label_weight(torch.tensor([t], dtype=torch.float64), power).item()
    assert got == pytest.approx((1 / (1 + snr)) ** power, rel=1e-9, abs=1e-12)


def test_label_weights_endpoints():
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    torch.testing.assert_close(M.noise_label_weight(t), torch.tensor([0.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(M.blur_label_weight(t, 2.0), torch.tensor([0.0, 1.0], dtype=torch.float64))
    assert M.blur_label_weight(torch.tensor([0.5]), 2.0).item() == pytest.approx(0.25)


@given(st.integers(2, 20), st.lists(st.floats(0, 1), min_size=1, max_size=8))
@settings(max_examples=50, deadline=None)
def test_degrade_labels_modes(k, gammas):
    gamma = torch.tensor(gammas, dtype=torch.float64)
    y = torch.nn.functional.one_hot(torch.arange(len(gammas)) % k, k).double()
    ls = M.degrade_labels(y, gamma, "ls")
    torch.testing.assert_close(ls.sum(dim=1), torch.ones(len(gammas), dtype=torch.float64))
    torch.testing.assert_close(ls.min(dim=1).values, gamma / k)
    torch.testing.assert_close(M.degrade_labels(y, gamma, "ld").sum(dim=1), 1 - gamma)
    la, lm = M.degrade_labels(y, gamma, "la"), M.degrade_labels(y, gamma, "lm")
    assert la.shape == lm.shape == (len(gammas), k + 1)
    torch.testing.assert_close(la[:, :k], y)
    torch.testing.assert_close(la[:, k], gamma)
    torch.testing.assert_close(lm.sum(dim=1), torch.ones(len(gammas), dtype=torch.float64))
    torch.testing.assert_close(lm[:, :k], (1 - gamma)[:, None] * y)


def test_degrade_labels_keeps_soft_labels_soft():
    y = torch.tensor([[0.7, 0.3, 0.0]])  # e.g. after MixUp
    out = M.degrade_labels(y, torch.tensor([0.5]), "ls")
    torch.testing.assert_close(out, torch.tensor([[0.35 + 0.5 / 3, 0.15 + 0.5 / 3, 0.5 / 3]]))


def test_degrade_labels_unknown_mode():
    with pytest.raises(ValueError, match="ls, ld, la, lm"):
        M.degrade_labels(torch.eye(3), torch.zeros(3), "lx")


# --- the whole batch -------------------------------------------------------------------------------

def batch(n: int = 4096, k: int = 10, size: int = 8):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, size, size, generator=g)
    y = torch.nn.functional.one_hot(torch.randint(k, (n,), generator=g), k).float()
    return x, y


def test_mollify_is_pure_and_reproducible():
    x, y = batch(256)
    x0, y0 = x.clone(), y.clone()
    a = M.mollify(x, y, generator=torch.Generator().manual_seed(3))
    b = M.mollify(x, y, generator=torch.Generator().manual_seed(3))
    c = M.mollify(x, y, generator=torch.Generator().manual_seed(4))
    assert torch.equal(x, x0) and torch.equal(y, y0)
    for field_a, field_b in zip(a, b):
        assert torch.equal(field_a, field_b)
    assert not torch.equal(a.x, c.x)


@pytest.mark.parametrize("roles", ["xnb", "xn", "xb", "xnbe", "n"])
def test_mollify_roles_are_uniform_over_the_allowed_set(roles):
    x, y = batch()
    out = M.mollify(x, y, roles=roles, generator=torch.Generator().manual_seed(0))
    counts = torch.bincount(out.role, minlength=len(M.ROLES))
    allowed = [M.ROLES.index(r) for r in roles]
    assert set(torch.nonzero(counts).flatten().tolist()) == set(allowed)
    share = counts[allowed].float() / len(x)
    assert (share - 1 / len(roles)).abs().max() < 0.04


def test_mollify_each_role_does_what_it_says():
    x, y = batch()
    out = M.mollify(x, y, roles="xnbe", alpha=1.0, beta=2.0, generator=torch.Generator().manual_seed(5))
    role = {r: out.role == M.ROLES.index(r) for r in M.ROLES}
    # clean: untouched input and label, t = 0
    assert torch.equal(out.x[role["x"]], x[role["x"]]) and torch.equal(out.y[role["x"]], y[role["x"]])
    assert (out.t[role["x"]] == 0).all() and (out.t[role["e"]] == 1).all()
    # blur: exactly the blur of the input at its own t
    torch.testing.assert_close(out.x[role["b"]], M.blur(x[role["b"]], out.t[role["b"]]))
    gb = M.blur_label_weight(out.t[role["b"]])
    torch.testing.assert_close(out.y[role["b"]], M.degrade_labels(y[role["b"]], gb))
    # noise: the residual (x_t - cos x) / sin is standard normal noise
    tn = out.t[role["n"]]
    keep = tn > 0.2
    angle = (tn[keep] * math.pi / 2)[:, None, None, None]
    eps = (out.x[role["n"]][keep] - torch.cos(angle) * x[role["n"]][keep]) / torch.sin(angle)
    assert abs(eps.mean().item()) < 0.02 and abs(eps.std().item() - 1) < 0.02
    gn = M.noise_label_weight(tn)
    torch.testing.assert_close(out.y[role["n"]], M.degrade_labels(y[role["n"]], gn))
    # pure noise: a uniform label
    torch.testing.assert_close(out.y[role["e"]], torch.full_like(out.y[role["e"]], 0.1))


@pytest.mark.parametrize("beta", [2.0, 4.0, 9.0])
def test_mollify_temperature_is_beta_distributed(beta):
    x, y = batch(20_000, size=4)
    out = M.mollify(x, y, roles="n", alpha=1.0, beta=beta, generator=torch.Generator().manual_seed(0))
    mean, var = 1 / (1 + beta), beta / ((1 + beta) ** 2 * (2 + beta))
    assert out.t.mean().item() == pytest.approx(mean, abs=0.01)
    assert out.t.var().item() == pytest.approx(var, rel=0.08)


def test_mollify_label_modes_and_no_smoothing():
    x, y = batch(512)
    g = torch.Generator().manual_seed(0)
    ls = M.mollify(x, y, generator=g)
    assert torch.allclose(ls.y.sum(dim=1), torch.ones(512))
    lm = M.mollify(x, y, label_mode="lm", generator=torch.Generator().manual_seed(0))
    assert lm.y.shape == (512, 11) and torch.allclose(lm.y.sum(dim=1), torch.ones(512))
    plain = M.mollify(x, y, smooth_labels=False, generator=torch.Generator().manual_seed(0))
    assert torch.equal(plain.y, y) and torch.equal(plain.x, ls.x)


def test_invalid_roles_are_rejected():
    x, y = batch(8)
    for bad in ["", "xq", "xx"]:
        with pytest.raises(ValueError, match="distinct letters from xnbe"):
            M.mollify(x, y, roles=bad)


@pytest.mark.gpu
def test_mollify_on_cuda_matches_properties():
    x, y = (v.cuda() for v in batch(1024))
    out = M.mollify(x, y, generator=torch.Generator(device="cuda").manual_seed(0))
    assert out.x.device.type == "cuda" and torch.allclose(out.y.sum(dim=1), torch.ones(1024, device="cuda"))
    blurred = out.role == M.ROLES.index("b")
    torch.testing.assert_close(out.x[blurred].mean(dim=(2, 3)), x[blurred].mean(dim=(2, 3)), atol=1e-5, rtol=1e-5)
