"""Supervised mollification of one training batch (METHOD.md section 1).

Each sample draws a role (clean, noised, blurred, pure noise), a temperature t ~ Beta(alpha, beta),
is degraded by t, and its label is smoothed by gamma(t). Everything is batched and branch-free:
noise and blur are computed for the whole batch and each sample keeps the one its role asks for
(`torch.where`), so there is no boolean-mask indexing and no host-device synchronisation.

Shapes: x (B, C, H, W) float, t (B,), y (B, K) soft labels, role (B,) int64 indexing `ROLES`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import NamedTuple

import torch
from torch import Tensor

from trainables.pipeline import device_constant

ROLES = ("x", "n", "b", "e")  # clean, noised, blurred, pure N(0, I) noise with a uniform label
LABEL_MODES = ("ls", "ld", "la", "lm")


@dataclass(frozen=True)
class Mollification:
    """`mollify`'s settings (its keywords but the generator), as a trial's config holds them
    (`TrialConfig.mollification`)."""

    roles: str = "xnb"
    alpha: float = 1.0
    beta: float = 2.0
    npow: float = 1.0
    bpow: float = 1.0
    label_mode: str = "ls"
    smooth_labels: bool = True
    sigma_min: float = 0.3
    sigma_max: float | None = None

    def options(self) -> dict:
        """As `mollify`'s keywords."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


class Mollified(NamedTuple):
    x: Tensor  # (B, C, H, W) mollified inputs
    y: Tensor  # (B, K) or (B, K+1) soft labels
    t: Tensor  # (B,) temperature; 0 for clean, 1 for pure noise
    role: Tensor  # (B,) int64, index into ROLES


def _per_sample(t: Tensor) -> Tensor:
    return t[:, None, None, None]  # (B,) -> (B, 1, 1, 1)


# --- 3. noise ------------------------------------------------------------------------------------

def noise(x: Tensor, t: Tensor, eps: Tensor) -> Tensor:
    """Variance-preserving noising: x_t = cos(pi t / 2) x + sin(pi t / 2) eps."""
    angle = _per_sample(t) * (math.pi / 2)
    return torch.cos(angle) * x + torch.sin(angle) * eps


# --- 4. blur: heat dissipation in the DCT basis (Rissanen et al. 2023) -------------------------

def blur_sigma(t: Tensor, sigma_min: float, sigma_max: float) -> Tensor:
    """sigma_B(t) = exp((1 - t) ln sigma_min + t ln sigma_max): log-linear in t."""
    return torch.exp((1 - t) * math.log(sigma_min) + t * math.log(sigma_max))


def dissipation_time(t: Tensor, sigma_min: float, sigma_max: float) -> Tensor:
    """tau(t) = sigma_B(t)^2 / 2."""
    return blur_sigma(t, sigma_min, sigma_max) ** 2 / 2


@lru_cache(maxsize=16)
def dct_matrix(n: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """The orthonormal 2-D DCT-II is `D_H @ x @ D_W.T`; its inverse `D_H.T @ u @ D_W`.

    Written by hand because torch has no DCT (torch.fft has none); for images of 32-64 px a dense
    (n, n) matrix product is also the fastest way to apply it on a GPU. Cached per device, so the
    training step never copies it from the host."""
    k = torch.arange(n, dtype=torch.float64)[:, None]  # frequency
    i = torch.arange(n, dtype=torch.float64)[None, :]  # position
    basis = torch.cos(math.pi * (i + 0.5) * k / n) * math.sqrt(2 / n)
    basis[0] /= math.sqrt(2)
    return basis.to(device=device, dtype=dtype)  # (n, n) orthonormal: basis @ basis.T = I


def heat_eigenvalues(h: int, w: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Lambda_ij = (pi i / H)^2 + (pi j / W)^2, shape (H, W)."""
    fi = (math.pi * torch.arange(h, device=device, dtype=dtype) / h) ** 2
    fj = (math.pi * torch.arange(w, device=device, dtype=dtype) / w) ** 2
    return fi[:, None] + fj[None, :]


def blur(x: Tensor, t: Tensor, sigma_min: float = 0.3, sigma_max: float | None = None) -> Tensor:
    """x_t = V exp(-tau(t) Lambda) V^T x per channel; sigma_max None means the image width.

    The DC coefficient has eigenvalue 0, so every t keeps each channel's mean."""
    h, w = x.shape[-2:]
    sigma_max = float(w) if sigma_max is None else sigma_max
    d_h, d_w = dct_matrix(h, x.device, x.dtype), dct_matrix(w, x.device, x.dtype)
    coeffs = d_h @ x @ d_w.T  # (B, C, H, W) in the DCT basis
    tau = _per_sample(dissipation_time(t, sigma_min, sigma_max))
    decay = torch.exp(-heat_eigenvalues(h, w, x.device, x.dtype) * tau)  # (B, 1, H, W)
    return d_h.T @ (decay * coeffs) @ d_w


# --- 5. label schedules --------------------------------------------------------------------------

def noise_label_weight(t: Tensor, power: float = 1.0) -> Tensor:
    """gamma_noise(t) = (1 / (1 + SNR(t)))^power with SNR = cos^2 / sin^2, i.e. sin^2(pi t / 2)^power.

    Written in the sin^2 form, which is the same value without SNR's 0/0 at t = 0."""
    return torch.sin(t * (math.pi / 2)).square().pow(power)


def blur_label_weight(t: Tensor, power: float = 1.0) -> Tensor:
    """gamma_blur(t) = t^power."""
    return t.pow(power)


# --- 6. label degradation --------------------------------------------------------------------------

def degrade_labels(y: Tensor, gamma: Tensor, mode: str = "ls") -> Tensor:
    """Soften (B, K) labels by gamma (B,): `ls` smooth towards uniform, `ld` scale down,
    `la` add a sink class with target gamma, `lm` sink class gamma and the rest scaled by 1 - gamma."""
    g = gamma[:, None].to(y.dtype)  # (B, 1)
    if mode == "ls":
        return (1 - g) * y + g / y.shape[1]
    if mode == "ld":
        return (1 - g) * y
    if mode == "la":
        return torch.cat([y, g], dim=1)  # (B, K+1)
    if mode == "lm":
        return torch.cat([(1 - g) * y, g], dim=1)  # (B, K+1)
    raise ValueError(f"unknown label mode {mode!r}; valid: {', '.join(LABEL_MODES)}")


# --- 1.-2. roles and temperatures; the whole batch ----------------------------------------------

def check_roles(roles: str) -> str:
    bad = sorted(set(roles) - set(ROLES))
    if not roles or bad or len(set(roles)) != len(roles):
        raise ValueError(
            f"invalid roles {roles!r}: use distinct letters from {''.join(ROLES)} "
            "(x clean, n noise, b blur, e pure noise), e.g. 'xnb', 'xn', 'xb'"
        )
    return roles


def sample_roles(batch: int, roles: str, device: torch.device, generator: torch.Generator | None) -> Tensor:
    """Each sample draws one of the allowed roles uniformly; returns indices into ROLES, (B,)."""
    allowed = device_constant(tuple(ROLES.index(r) for r in check_roles(roles)), device, torch.int64)
    pick = torch.randint(len(roles), (batch,), device=device, generator=generator)
    return allowed[pick]


def sample_temperature(
    batch: int, alpha: float, beta: float, device: torch.device, generator: torch.Generator | None
) -> Tensor:
    """t ~ Beta(alpha, beta), (B,). Beta is the first coordinate of Dirichlet(alpha, beta):
    the same kernel `torch.distributions.Beta` calls, here with the generator passed through
    (torch.distributions takes none, and reproducibility needs it)."""
    concentration = device_constant((alpha, beta), device, torch.float32).expand(batch, 2)
    return torch._sample_dirichlet(concentration, generator=generator)[:, 0]


class Draw(NamedTuple):
    """One batch's random choices, apart from the images they apply to: per sample a role, a
    temperature and a noise image. Applying one draw to several views of the same images (the JSD
    consistency loss, trainables/consistency.py) degrades every view of an image alike."""

    role: Tensor  # (B,) int64, index into ROLES
    t: Tensor  # (B,) temperature; 0 for clean, 1 for pure noise
    eps: Tensor  # (B, C, H, W) N(0, I)

    def repeat(self, views: int) -> "Draw":
        """The draw for `views` stacked copies of the batch, (views * B, ...): view-major."""
        return Draw(self.role.repeat(views), self.t.repeat(views), self.eps.repeat(views, 1, 1, 1))


def draw_mollification(shape: torch.Size, dtype: torch.dtype, device: torch.device, *, roles: str = "xnb",
                       alpha: float = 1.0, beta: float = 2.0, generator: torch.Generator | None = None) -> Draw:
    """Roles, temperatures and noise for a batch of `shape` (B, C, H, W) (sections 1-3)."""
    role = sample_roles(shape[0], roles, device, generator)
    t = sample_temperature(shape[0], alpha, beta, device, generator).to(dtype)
    t = torch.where(role == ROLES.index("x"), 0.0, torch.where(role == ROLES.index("e"), 1.0, t))
    eps = torch.randn(shape, device=device, dtype=dtype, generator=generator)
    return Draw(role, t, eps)


def apply_mollification(x: Tensor, y: Tensor, draw: Draw, *, npow: float = 1.0, bpow: float = 1.0,
                        label_mode: str = "ls", smooth_labels: bool = True, sigma_min: float = 0.3,
                        sigma_max: float | None = None) -> Mollified:  # fmt: skip
    """Degrade x (B, C, H, W) and soften y (B, K) by `draw` (sections 3-6); inputs are untouched."""
    is_ = {r: (draw.role == ROLES.index(r)) for r in ROLES}  # (B,) bool each
    t, eps = draw.t, draw.eps
    x_t = torch.where(_per_sample(is_["n"]), noise(x, t, eps), x)
    x_t = torch.where(_per_sample(is_["b"]), blur(x, t, sigma_min, sigma_max), x_t)
    x_t = torch.where(_per_sample(is_["e"]), eps, x_t)

    gamma = torch.where(is_["n"], noise_label_weight(t, npow), blur_label_weight(t, bpow))
    gamma = torch.where(is_["x"] | is_["e"] | (not smooth_labels), 0.0, gamma)
    y_t = degrade_labels(y, gamma, label_mode)
    y_t = torch.where(is_["e"][:, None], 1.0 / y_t.shape[1], y_t)  # uniform over every output
    return Mollified(x_t, y_t, t, draw.role)


def mollify(
    x: Tensor,
    y: Tensor,
    *,
    roles: str = "xnb",
    alpha: float = 1.0,
    beta: float = 2.0,
    npow: float = 1.0,
    bpow: float = 1.0,
    label_mode: str = "ls",
    smooth_labels: bool = True,
    sigma_min: float = 0.3,
    sigma_max: float | None = None,
    generator: torch.Generator | None = None,
) -> Mollified:
    """Mollify a normalised batch x (B, C, H, W) with soft labels y (B, K); inputs are untouched.

    `smooth_labels=False` is the "no label smoothing" ablation (gamma = 0; the authors emulate it
    with npow = bpow = 100); pure-noise samples still get a uniform label."""
    draw = draw_mollification(x.shape, x.dtype, x.device, roles=roles, alpha=alpha, beta=beta, generator=generator)
    return apply_mollification(x, y, draw, npow=npow, bpow=bpow, label_mode=label_mode,
                               smooth_labels=smooth_labels, sigma_min=sigma_min, sigma_max=sigma_max)
