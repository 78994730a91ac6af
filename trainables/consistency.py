"""The Jensen-Shannon consistency loss of AugMix and IPMix (trial option `jsd`), and how it meets
mollification (docs/augmentations.md has the reasoning).

Each training image gives three views: clean (the augmentation spec without its last stage, e.g.
`fcr`), and two augmented ones (the last stage, e.g. `ipmix`, drawn twice, independently). The three
go through the network as ONE batch (3B), so batch norm sees all of them, as in both references.

    loss = CE(f(clean), y) + lambda * JS(p_clean, p_aug1, p_aug2)
    JS = (1/3) sum_v KL(p_v || M),  M = clamp((p_clean + p_aug1 + p_aug2) / 3, 1e-7, 1)

With mollification on, ONE draw (role, temperature, noise image) per image degrades its three views
alike, and the cross-entropy sees that draw's smoothed labels: the views then differ only by the
augmentation, which is what the consistency term is about, and the label schedule still matches
the degradation of the input the cross-entropy is computed on.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from trainables.mollify import apply_mollification, draw_mollification

MIXTURE_FLOOR = 1e-7  # the references clamp the mixture "to avoid exploding KL divergence"
VIEWS = 3  # clean, augmented, augmented


def jensen_shannon(logits_clean: Tensor, logits_aug1: Tensor, logits_aug2: Tensor) -> Tensor:
    """JS divergence among the three predictive distributions, batch mean, as the references compute
    it (`F.kl_div(log M, p_v, reduction='batchmean')` averaged over the views). Logits (B, K) -> ()."""
    probabilities = [F.softmax(logits.float(), dim=1) for logits in (logits_clean, logits_aug1, logits_aug2)]
    log_mixture = torch.clamp(sum(probabilities) / VIEWS, MIXTURE_FLOOR, 1.0).log()
    return sum(F.kl_div(log_mixture, p, reduction="batchmean") for p in probabilities) / VIEWS


def consistency_loss(logits: Tensor, y: Tensor, loss_fn: Callable[[Tensor, Tensor], Tensor],
                     weight: float) -> Tensor:  # fmt: skip
    """The trial's loss on the clean view (its soft labels y (B, K)) plus `weight` times the JS
    divergence. logits (3B, K): clean, augmented, augmented, view-major."""
    clean, aug1, aug2 = logits.chunk(VIEWS)
    return loss_fn(clean, y) + weight * jensen_shannon(clean, aug1, aug2)


Augment = Callable[[Tensor, Tensor, torch.Generator], tuple[Tensor, Tensor]]


def three_views(x: Tensor, y: Tensor, generator: torch.Generator, base: Augment,
                mixer: Augment) -> tuple[Tensor, Tensor]:  # fmt: skip
    """The views (3B, C, H, W) in [0, 1], view-major: base(x), then the mixing augmentation twice on
    it (one call on the doubled batch: each copy draws its own chains); and the clean view's labels.
    `mixer` preserves labels (the config checks), so all three views share them."""
    clean, y = base(x, y, generator)
    augmented, _ = mixer(torch.cat([clean, clean]), torch.cat([y, y]), generator)
    return torch.cat([clean, augmented]), y


def mollify_views(x: Tensor, y: Tensor, generator: torch.Generator, **options) -> tuple[Tensor, Tensor]:
    """Mollify the views x (3B, C, H, W) (normalised) with one draw per image shared by its views;
    the clean view's smoothed labels (B, K') for the cross-entropy. `options`: mollify's keywords."""
    B = x.shape[0] // VIEWS
    draw_keys = ("roles", "alpha", "beta")
    draw = draw_mollification((B, *x.shape[1:]), x.dtype, x.device, generator=generator,
                              **{k: options[k] for k in draw_keys})  # fmt: skip
    rest = {k: v for k, v in options.items() if k not in draw_keys}
    mollified = apply_mollification(x, y.repeat(VIEWS, 1), draw.repeat(VIEWS), **rest)
    return mollified.x, mollified.y[:B]

