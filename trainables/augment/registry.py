"""The registry: augmentation name -> `Augmentation`, and `create_augmentation` for '+'-joined specs.
Adding an augmentation = one function with the `Augmentation` signature + one line here."""

from __future__ import annotations

import torch
from torch import Tensor

from trainables.augment.common import Augmentation
from trainables.augment.ipmix import make_ipmix
from trainables.augment.mixing import cutmix, mixup
from trainables.augment.mixing_set import folder_source, procedural_mixing_set
from trainables.augment.policies import augmix, augmix_paper, autoaug, autoaug_cifar10, fcr, randaug, trivaug

AUGMENTATIONS: dict[str, Augmentation] = {
    "fcr": fcr,
    "trivaug": trivaug,
    "randaug": randaug,
    "autoaug": autoaug,  # ImageNet policy, torchvision's default and the authors'
    "autoaug_cifar10": autoaug_cifar10,
    "augmix": augmix,  # torchvision's all_ops=True, the authors'
    "augmix_paper": augmix_paper,  # the AugMix paper's ops: none that overlaps the test corruptions
    "ipmix": make_ipmix(procedural_mixing_set),  # mixing with the procedural set; see create_augmentation
    "mixup": mixup,
    "cutmix": cutmix,
}
LABEL_MIXING: tuple[str, ...] = ("mixup", "cutmix")  # the entries that change y


def _identity(x: Tensor, y: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    return x, y


def parse_spec(spec: str) -> tuple[str, ...]:
    """'+'-joined `AUGMENTATIONS` names -> the names, left to right; "none" -> (). An unknown name
    fails, naming it and the valid ones."""
    if spec == "none":
        return ()
    names = tuple(spec.split("+"))
    unknown = [name for name in names if name not in AUGMENTATIONS]
    if unknown:
        raise ValueError(
            f"unknown augmentation {', '.join(map(repr, unknown))} in {spec!r}; valid names: "
            f"{', '.join(sorted(AUGMENTATIONS))} (join with '+'), or 'none'"
        )
    return names


def chain(stages: tuple[Augmentation, ...], name: str) -> Augmentation:
    """The stages applied left to right, sharing one generator."""
    if not stages:
        return _identity

    def augment(x: Tensor, y: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        for stage in stages:
            x, y = stage(x, y, generator)
        return x, y

    augment.__name__ = augment.__qualname__ = name
    return augment


def create_augmentation(spec: str, ipmix_mixing_set: str | None = None) -> Augmentation:
    """"none" -> identity; otherwise '+'-joined `AUGMENTATIONS` names applied left to right.
    `ipmix_mixing_set`: a folder of pictures for `ipmix` to mix with instead of the procedural set
    (read here, so that a missing, empty or unreadable folder fails before training, in one line)."""
    return chain(stages(spec, ipmix_mixing_set), spec)


def stages(spec: str, ipmix_mixing_set: str | None = None) -> tuple[Augmentation, ...]:
    """The spec's stages, left to right (see `create_augmentation`)."""
    names = parse_spec(spec)
    registry = dict(AUGMENTATIONS)
    if ipmix_mixing_set is not None and "ipmix" in names:
        registry["ipmix"] = make_ipmix(folder_source(ipmix_mixing_set))
    return tuple(registry[name] for name in names)
