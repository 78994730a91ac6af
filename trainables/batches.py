"""One training batch on the device (METHOD.md section 1): drawn from the uint8 split, augmented as
a whole batch, normalised, mollified. With the JSD loss (`jsd`), the three views of each image
(clean, and the mixing stage twice) go as one batch of 3B and share one mollification draw per
image. What a trial does to make its batches (`Batches`) is built once per trial."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from trainables.augment import Augmentation, stages
from trainables.augment.registry import chain
from trainables.config import ConfigError, TrialConfig
from trainables.consistency import mollify_views, three_views
from trainables.data import ImageSet
from trainables.data.streamed import Split
from trainables.distributed import Workers, rank_order
from trainables.mollify import mollify
from trainables.pipeline import normalize, to_unit



def build_augmentation(cfg: TrialConfig) -> tuple[Augmentation, Augmentation | None]:
    """The trial's augmentation, and None; with `jsd`, the clean view's stages (all but the last)
    and the mixing stage whose two draws the consistency loss compares."""
    try:
        parts = stages(cfg.augment, cfg.ipmix_mixing_set)
    except ValueError as err:  # a bad mixing folder: one line naming it
        raise ConfigError(str(err)) from None
    if not cfg.jsd:
        return chain(parts, cfg.augment), None
    return chain(parts[:-1], cfg.augment.rpartition("+")[0] or "none"), parts[-1]


def mollify_options(cfg: TrialConfig) -> dict:
    """`mollify`'s keywords from the config."""
    return cfg.mollification.options()


@dataclass(frozen=True)
class Batches:
    """How a trial makes its batches: its augmentation (and the JSD's mixing stage) and its
    mollification keywords (None: off). Built once per trial (`for_trial`), not per epoch."""

    augment: Augmentation
    mixer: Augmentation | None = None
    mollify: dict | None = None

    @classmethod
    def for_trial(cls, cfg: TrialConfig) -> "Batches":
        augment, mixer = build_augmentation(cfg)
        return cls(augment, mixer, mollify_options(cfg) if cfg.mollify else None)

    def __call__(self, train: ImageSet, index: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """(x, soft labels): (B, C, H, W) and (B, K), or under `jsd` the views (3B, C, H, W) and
        the clean view's labels (B, K)."""
        return self.prepare(train.images[index], train.labels[index], train, generator)

    def prepare(self, images: Tensor, labels: Tensor, train: Split,
                generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """`__call__` for a uint8 batch already drawn (B, C, H, W) and its labels (B,), from a split
        in memory or streamed (`train` gives the class count and the normalisation)."""
        x, y = to_unit(images), F.one_hot(labels, train.num_classes).float()
        jsd = self.mixer is not None
        x, y = three_views(x, y, generator, self.augment, self.mixer) if jsd else self.augment(x, y, generator)
        x = normalize(x, train.mean, train.std)
        if self.mollify is not None:
            x, y = (mollify_views(x, y, generator, **self.mollify) if jsd
                    else mollify(x, y, generator=generator, **self.mollify)[:2])
        return device_layout(x), y


def epoch_batches(cfg: TrialConfig, train: Split, epoch: int, steps: int, device: torch.device,
                  workers: Workers = Workers()) -> Iterator[tuple[Tensor, Tensor]]:
    """The uint8 images (b, C, H, W) and labels (b,) of each of an epoch's `steps` batches, on
    `device`, b = batch_size / workers: this worker's part of each global batch. The global
    order is drawn from the trial seed and the epoch alone, so every worker (and a resumed trial)
    sees the same one. A split in memory is indexed on its device; a streamed one
    (`trainables.data.stream`) is decoded, cropped and flipped by its pipeline."""
    if not isinstance(train, ImageSet):
        from trainables.data.stream import train_batches  # DALI is imported only by streamed trials
        yield from train_batches(train.files, image_size=train.image_size, batch_size=cfg.batch_size,
                                 steps=steps, seed=cfg.seed, epoch=epoch, rank=workers.rank, world=workers.world,
                                 device=device)
        return
    order = rank_order(len(train), batch_size=cfg.batch_size, steps=steps, seed=cfg.seed, epoch=epoch,
                       rank=workers.rank, world=workers.world).to(device)  # one host-to-device copy an epoch
    for index in order.view(steps, -1):
        yield train.images[index], train.labels[index]


def device_layout(x: Tensor) -> Tensor:
    """Channels-last on CUDA, where the convolutions are faster in it."""
    return x.contiguous(memory_format=torch.channels_last) if x.device.type == "cuda" else x


def make_batch(cfg: TrialConfig, train: ImageSet, index: Tensor, generator: torch.Generator,
               augment: Augmentation) -> tuple[Tensor, Tensor]:
    """Draw, augment, normalise and mollify one batch on the device: (x, soft labels)."""
    return Batches(augment, None, mollify_options(cfg) if cfg.mollify else None)(train, index, generator)


def make_views(cfg: TrialConfig, train: ImageSet, index: Tensor, generator: torch.Generator,
               base: Augmentation, mixer: Augmentation) -> tuple[Tensor, Tensor]:
    """`make_batch` for the JSD loss: the three views of each image as one batch (3B, C, H, W),
    normalised and mollified with one draw per image; the clean view's soft labels (B, K)."""
    return Batches(base, mixer, mollify_options(cfg) if cfg.mollify else None)(train, index, generator)
