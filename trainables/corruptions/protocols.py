"""Corruption protocols: how a benchmark release turned clean test images into its cells.

The releases differ in two settings that change the numbers a model gets (METHOD.md section 4):
the severity table (the constants of make_cifar_c.py, make_tinyimagenet_c.py, make_imagenet_c.py)
and whether each corrupted image went through a JPEG encode and decode at quality 85 on its way into
the release (Tiny-ImageNet-C and ImageNet-C are JPEG files; CIFAR-10-C / CIFAR-100-C are lossless
.npy arrays). A JPEG round trip smooths high-frequency noise, so Gaussian-noise error under the Tiny
ImageNet protocol is not comparable with the CIFAR protocol's at any image size.

A study chooses its protocol (`corruption_protocol`); without one, a dataset is evaluated under its
own release's format with the severity table of `corruption_table` or of its image size (the
behaviour before protocols were a setting).
"""

from __future__ import annotations

from dataclasses import dataclass

from trainables.corruptions.registry import TABLES

RELEASE_JPEG_QUALITY = 85  # make_tinyimagenet_c.py / make_imagenet_c.py: .save(path, quality=85)
TREE_DATASETS = ("tinyimagenet", "imagenet")  # releases stored as <corruption>/<severity>/<wnid>/*.JPEG


@dataclass(frozen=True)
class Protocol:
    """The severity table and whether cells take the release's JPEG round trip."""

    table: str
    jpeg: bool

    def describe(self) -> str:
        return f"table {self.table}, {'JPEG quality 85' if self.jpeg else 'no JPEG round trip'}"


PROTOCOLS: dict[str, Protocol] = {
    "cifar": Protocol(table="cifar", jpeg=False),  # CIFAR-10-C, CIFAR-100-C: 32 px constants, .npy
    "tinyimagenet": Protocol(table="tinyimagenet", jpeg=True),  # Tiny-ImageNet-C: 64 px, JPEG 85
    "imagenet": Protocol(table="imagenet", jpeg=True),  # ImageNet-C: 224 px, JPEG 85
}
RELEASE_PROTOCOL = {"cifar10": "cifar", "cifar100": "cifar", "tinyimagenet": "tinyimagenet", "imagenet": "imagenet"}
assert all(p.table in TABLES for p in PROTOCOLS.values())


def validate_protocol(name: str) -> str:
    if name not in PROTOCOLS:
        raise ValueError(f"unknown corruption protocol {name!r}; valid: {', '.join(PROTOCOLS)}")
    return name


def release_jpeg(dataset: str) -> bool:
    """Whether the dataset's own release stores its cells as JPEG files."""
    return dataset in TREE_DATASETS


def effective_jpeg(dataset: str, jpeg: bool | None) -> bool:
    """A spec's JPEG setting, None meaning the dataset's release format."""
    return release_jpeg(dataset) if jpeg is None else jpeg
