"""Dataset loading: a whole split as uint8 tensors on the training device.

The training loop draws and augments batches directly from `ImageSet.images` on its device, so this
module only loads: once per trial, in one go, with no DataLoader and no per-image work per step.

Datasets (`DATASETS`, a plain registry of loaders taking a `LoadRequest`):

- ``synthetic``: procedural, deterministic from the seed, any size and class count; for tests and
  CPU-scale smoke studies.
- ``cifar10`` / ``cifar100``: torchvision's classes over the official python-pickle files
  (``root/cifar-10-batches-py/``, ``root/cifar-100-python/``); CIFAR-100 uses the fine labels.
- ``tinyimagenet``: the official ``tiny-imagenet-200/`` folder layout; "test" means the labelled
  ``val/`` split ("val" is accepted as an alias). Decoded tensors are cached on disk.

Order of samples is deterministic and part of the contract (tests rely on it): CIFAR keeps the file
order; Tiny ImageNet train is class by class in ``wnids.txt`` order, files sorted by name within a
class; Tiny ImageNet val follows the row order of ``val/val_annotations.txt``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import os
import socket
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torch import Tensor

__all__ = [
    "DATASETS",
    "DATASET_STATS",
    "DatasetChecksumWarning",
    "DatasetError",
    "DatasetNotFoundError",
    "ImageSet",
    "JPEG_BACKEND",
    "LoadRequest",
    "TINY_IMAGENET_URL",
    "cifar_missing_message",
    "load_dataset",
    "prepare_dataset",
    "split_validation",
    "tiny_missing_message",
]

Stats = tuple[float, float, float]

# Per-channel mean/std of the FULL dataset (fixed by the project spec, not recomputed per subset, so
# that a class subset or a resize normalises exactly like the full dataset).
DATASET_STATS: dict[str, tuple[Stats, Stats]] = {
    "synthetic": ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)),
    "cifar10": ((0.491, 0.482, 0.446), (0.247, 0.243, 0.261)),
    "cifar100": ((0.507, 0.487, 0.441), (0.267, 0.256, 0.276)),
    "tinyimagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}

TINY_IMAGENET_URL = "https://cs231n.stanford.edu/tiny-imagenet-200.zip"
TINY_IMAGENET_FOLDER = "tiny-imagenet-200"

SYNTHETIC_DEFAULT_SIZE = {"train": 2000, "test": 500}
SYNTHETIC_DEFAULT_CLASSES = 10
SYNTHETIC_DEFAULT_IMAGE_SIZE = 32

# torchvision's download has no network timeout of its own (plain urlopen); without one a
# firewalled host that drops packets would hang a trial forever. Applies per socket operation.
DOWNLOAD_SOCKET_TIMEOUT_S = 60.0

# Images are decoded, resized and generated in chunks so peak memory stays near the final tensor.
_CHUNK = 2048
_CACHE_FORMAT = 1


class DatasetNotFoundError(FileNotFoundError):
    """The dataset's files are not where they must be (and could not be downloaded)."""


class DatasetError(ValueError):
    """The dataset's files are there but cannot serve the config: an undecodable image, images of
    different sizes without image_size, more classes asked for than it has."""


class DatasetChecksumWarning(UserWarning):
    """Files in the official format are present but their checksums are not the official ones."""


@dataclass(frozen=True, eq=False)  # eq=False: comparing tensors with == is elementwise, not a bool
class ImageSet:
    """A whole split in memory: uint8 images (N, 3, H, W) and int64 labels (N,) on one device."""

    images: Tensor
    labels: Tensor
    class_names: tuple[str, ...]
    mean: Stats
    std: Stats

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[1] != 3:
            raise ValueError(f"images must be uint8 (N, 3, H, W), got {self.images.dtype} "
                             f"{tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.shape != self.images.shape[:1]:
            raise ValueError(f"labels must be int64 ({self.images.shape[0]},), got "
                             f"{self.labels.dtype} {tuple(self.labels.shape)}")
        if self.labels.device != self.images.device:
            raise ValueError("images and labels must be on the same device")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def to(self, device: str | torch.device) -> ImageSet:
        """The same set with its tensors on `device` (no copy when already there)."""
        return dataclasses.replace(self, images=self.images.to(device), labels=self.labels.to(device))


@dataclass(frozen=True)
class LoadRequest:
    """Everything a registered loader is asked for; `split` is already canonical ("train"/"test")."""

    root: Path
    split: str
    num_classes: int | None = None
    image_size: int | None = None
    download: bool = True
    seed: int = 0
    synthetic_size: int | None = None
    cache_dir: Path | None = None
    use_cache: bool = True


Loader = Callable[[LoadRequest], ImageSet]


def load_dataset(
    name: str,
    root: str | Path,
    split: str,
    *,
    num_classes: int | None = None,
    image_size: int | None = None,
    device: str | torch.device = "cpu",
    download: bool = True,
    seed: int = 0,
    synthetic_size: int | None = None,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
) -> ImageSet:
    """Load split `split` of dataset `name` whole, as uint8 tensors on `device`.

    num_classes: keep the first N classes in canonical order, labels remapped to 0..N-1.
    image_size: resize (antialiased) once at load time to image_size x image_size.
    download: CIFAR only; Tiny ImageNet is never downloaded (it is large; see the error message).
    seed, synthetic_size: synthetic only.
    cache_dir, use_cache: Tiny ImageNet's decoded-tensor cache (default ``root/.mollify-cache/`` if
    writable, else ``~/.cache/mollify-lab/``).
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(sorted(DATASETS))}")
    request = LoadRequest(
        root=Path(root).expanduser(),
        split=_canonical_split(name, split),
        num_classes=_positive_or_none("num_classes", num_classes),
        image_size=_positive_or_none("image_size", image_size),
        download=download,
        seed=seed,
        synthetic_size=_positive_or_none("synthetic_size", synthetic_size),
        cache_dir=None if cache_dir is None else Path(cache_dir).expanduser(),
        use_cache=use_cache,
    )
    return DATASETS[name](request).to(device)


# ---------------------------------------------------------------------------------------------
# Validation split (METHOD.md section 6)


def split_validation(train: ImageSet, per_class: int, seed: int) -> tuple[ImageSet, ImageSet]:
    """Hold out `per_class` images of every class of the training split: (train, valid).

    Selection on the test set biases the reported number, so searches select on images carved from
    the training split and never trained on. The draw depends only on the labels and `seed` (a
    stream of its own, not the training seed), so every trial of a study holds out the same images.
    The kept training images stay in their order; the held-out ones are interleaved by class
    (each class's first draw, then each class's second, ...), so that their first N are as
    balanced as N allows. per_class 0 returns `train` itself and an empty set. Torch ops only.
    """
    if per_class < 0:
        raise ValueError(f"per_class must be >= 0, got {per_class}")
    labels, k = train.labels, train.num_classes
    if per_class == 0:
        return train, _subset(train, labels[:0])
    _check_class_sizes(train, per_class)
    n = len(train)
    perm = torch.randperm(n, generator=_generator(seed, "validation")).to(labels.device)
    by_class = perm[labels[perm].argsort(stable=True)]  # (N,) class by class, random within a class
    counts = torch.bincount(labels, minlength=k)
    starts = counts.cumsum(0) - counts  # (K,) where each class begins in by_class
    rank = torch.arange(n, device=labels.device) - starts[labels[by_class]]  # (N,) rank within its class
    chosen, sorted_labels = rank < per_class, labels[by_class]
    valid = by_class[chosen][(rank[chosen] * k + sorted_labels[chosen]).argsort()]  # interleaved by class
    keep = torch.ones(n, dtype=torch.bool, device=labels.device)
    keep[valid] = False
    return _subset(train, keep.nonzero().squeeze(1)), _subset(train, valid)


def _check_class_sizes(train: ImageSet, per_class: int) -> None:
    """Every class must keep at least one training image after `per_class` are held out."""
    counts = torch.bincount(train.labels, minlength=train.num_classes).cpu()
    short = (counts <= per_class).nonzero().squeeze(1).tolist()
    if short:
        named = ", ".join(f"{train.class_names[c]!r} ({int(counts[c])})" for c in short[:5])
        more = f" and {len(short) - 5} more" if len(short) > 5 else ""
        raise ValueError(f"cannot hold out {per_class} validation images per class: class(es) {named}{more} "
                         f"have no more training images than that (at most {max(int(counts.min()) - 1, 0)} per class "
                         "leaves every class one to train on)")


def _subset(images: ImageSet, index: Tensor) -> ImageSet:
    return dataclasses.replace(images, images=images.images[index], labels=images.labels[index])


# ---------------------------------------------------------------------------------------------
# Shared helpers


_SPLIT_ALIASES: dict[str, dict[str, str]] = {"tinyimagenet": {"val": "test"}}


def _canonical_split(name: str, split: str) -> str:
    aliases = {"train": "train", "test": "test", **_SPLIT_ALIASES.get(name, {})}
    if split not in aliases:
        raise ValueError(f"unknown split {split!r} for dataset {name!r}; valid: {', '.join(aliases)}")
    return aliases[split]


def _positive_or_none(what: str, value: int | None) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{what} must be a positive int or None, got {value!r}")
    return value


def _class_subset(names: Sequence[str], num_classes: int | None, dataset: str) -> tuple[str, ...]:
    """The first `num_classes` class names (all when None); too many is an error, not a clamp."""
    if num_classes is None:
        return tuple(names)
    if num_classes > len(names):
        raise DatasetError(f"num_classes={num_classes} but {dataset} has only {len(names)} classes")
    return tuple(names[:num_classes])


def _resize(images: Tensor, size: int | None) -> Tensor:
    """Antialiased resize of a uint8 batch to size x size, in chunks into one preallocated tensor."""
    if size is None or tuple(images.shape[-2:]) == (size, size):
        return images
    out = torch.empty((images.shape[0], 3, size, size), dtype=torch.uint8)
    for start in range(0, images.shape[0], _CHUNK):
        chunk = images[start:start + _CHUNK]
        out[start:start + len(chunk)] = TF.resize(chunk, [size, size], antialias=True)
    return out


def _seed_for(seed: int, *parts: object) -> int:
    """A 63-bit seed derived from `seed` and a purpose: one independent stream per purpose."""
    digest = hashlib.sha256(repr((seed, *parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _generator(seed: int, *parts: object) -> torch.Generator:
    return torch.Generator().manual_seed(_seed_for(seed, *parts))


# ---------------------------------------------------------------------------------------------
# Synthetic


def _load_synthetic(req: LoadRequest) -> ImageSet:
    num_classes = req.num_classes or SYNTHETIC_DEFAULT_CLASSES
    size = req.image_size or SYNTHETIC_DEFAULT_IMAGE_SIZE
    n = req.synthetic_size or SYNTHETIC_DEFAULT_SIZE[req.split]
    prototypes = torch.stack([_prototype(req.seed, k, size) for k in range(num_classes)])
    images, labels = _synthetic_images(prototypes, n, _generator(req.seed, "synthetic", req.split))
    mean, std = DATASET_STATS["synthetic"]
    names = tuple(f"synthetic_{k}" for k in range(num_classes))
    return ImageSet(images, labels, names, mean, std)


def _prototype(seed: int, label: int, size: int) -> Tensor:
    """Class `label`'s pattern (3, size, size) in [0, 1]: a few low-frequency coloured waves.

    Seeded per class (not per class count) so class k looks the same whatever num_classes is; the
    integer frequencies make it periodic, so circular shifts in `_synthetic_images` leave no seam.
    """
    g = _generator(seed, "prototype", label)
    waves = 3
    freqs = torch.randint(-2, 3, (3, waves, 2), generator=g).float()
    freqs[..., 0] = torch.where(freqs.abs().sum(-1) == 0, 1.0, freqs[..., 0])  # no constant waves
    amps = 0.5 + 0.5 * torch.rand(3, waves, generator=g)
    phases = 2 * math.pi * torch.rand(3, waves, generator=g)
    grid = torch.arange(size, dtype=torch.float32) / size
    angle = 2 * math.pi * (freqs[..., 0, None, None] * grid[:, None] + freqs[..., 1, None, None] * grid)
    pattern = (amps[..., None, None] * torch.cos(angle + phases[..., None, None])).sum(1)
    pattern = pattern / pattern.flatten(1).std(1).clamp_min(1e-6)[:, None, None]
    colour = 0.2 * (torch.rand(3, generator=g) - 0.5)
    return (0.5 + colour[:, None, None] + 0.18 * pattern).clamp(0, 1)


def _synthetic_images(prototypes: Tensor, n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """n class-balanced images: shifted, flipped prototype, blended with a distractor class,
    brightness/contrast jitter and pixel noise, quantised to uint8.

    The distractor blend (up to 45%) and the noise keep the task from being trivially separable.
    Per-image parameters are drawn up front, pixels rendered in chunks (float intermediates of a
    large set would not fit comfortably in memory).
    """
    num_classes, _, size, _ = prototypes.shape
    labels = (torch.arange(n) % num_classes)[torch.randperm(n, generator=g)]
    distractors = torch.randint(0, num_classes, (n,), generator=g)
    rows = _shifted_index(n, size, g)
    cols = _shifted_index(n, size, g)
    cols = torch.where(torch.rand(n, 1, generator=g) < 0.5, size - 1 - cols, cols)  # h-flip
    alpha, contrast, brightness = torch.rand(3, n, 1, 1, 1, generator=g)
    alpha, contrast, brightness = 0.45 * alpha, 0.7 + 0.6 * contrast, 0.3 * (brightness - 0.5)
    out = torch.empty((n, 3, size, size), dtype=torch.uint8)
    for start in range(0, n, _CHUNK):
        i = slice(start, start + _CHUNK)
        base = (1 - alpha[i]) * prototypes[labels[i]] + alpha[i] * prototypes[distractors[i]]
        base = base[torch.arange(len(base))[:, None, None, None], torch.arange(3)[None, :, None, None],
                    rows[i, None, :, None], cols[i, None, None, :]]
        noise = 0.12 * torch.randn(base.shape, generator=g)
        pixels = 0.5 + contrast[i] * (base - 0.5) + brightness[i] + noise
        out[i] = (pixels.clamp(0, 1) * 255).round()
    return out, labels


def _shifted_index(n: int, size: int, g: torch.Generator) -> Tensor:
    """(n, size) circularly shifted pixel indices, shifts uniform in [-size/4, size/4]."""
    shift = torch.randint(-(size // 4), size // 4 + 1, (n, 1), generator=g)
    return (torch.arange(size) - shift) % size


# ---------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100
#
# torchvision decides the files are present with `_check_integrity`, which compares the md5 of every
# train AND test file with the official sums (and `_load_meta` the meta file's). We go through that
# path first, as torchvision intends. Files that are in the official pickle format but are not the
# official bytes (a hand-made subset, the test suite's fixtures) fail that check, and md5 cannot be
# forged; for them we read the same files with the same torchvision code with md5 set to None (its
# `check_integrity(path, None)` means "present"), and say so with a DatasetChecksumWarning. A
# download only starts when files are missing, never to replace present files.

CifarClass = type[torchvision.datasets.CIFAR10]


def _load_cifar10(req: LoadRequest) -> ImageSet:
    return _load_cifar(req, torchvision.datasets.CIFAR10, "cifar10")


def _load_cifar100(req: LoadRequest) -> ImageSet:
    return _load_cifar(req, torchvision.datasets.CIFAR100, "cifar100")


def _load_cifar(req: LoadRequest, cls: CifarClass, name: str) -> ImageSet:
    train = req.split == "train"
    if _cifar_missing(cls, req.root):
        _download_cifar(cls, req.root, train, req.download)
    ds = _read_cifar(cls, req.root, train)
    images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()  # (N,32,32,3) -> NCHW
    labels = torch.as_tensor(ds.targets, dtype=torch.int64)
    names = _class_subset(ds.classes, req.num_classes, name)
    if len(names) < len(ds.classes):
        keep = labels < len(names)  # canonical order = label index order, so no remap is needed
        images, labels = images[keep], labels[keep]
    mean, std = DATASET_STATS[name]
    return ImageSet(_resize(images, req.image_size), labels, names, mean, std)


CIFAR_CLASSES: dict[str, CifarClass] = {"cifar10": torchvision.datasets.CIFAR10,
                                         "cifar100": torchvision.datasets.CIFAR100}


def prepare_dataset(name: str, root: str | Path, download: bool = True) -> None:
    """Make sure dataset `name` is under `root` before any trial reads it: CIFAR is downloaded there
    when missing (once, by the caller: a study's driver, or the trial CLI), Tiny ImageNet is
    looked for. A study's trials then only read (`load_dataset(download=False)`), so they neither
    download at once into one folder nor each fail on their own without a network. Raises
    DatasetNotFoundError saying where the files must be."""
    root = Path(root).expanduser()
    if name in CIFAR_CLASSES and _cifar_missing(CIFAR_CLASSES[name], root):
        _download_cifar(CIFAR_CLASSES[name], root, True, download)
    elif name == "tinyimagenet":
        _tiny_root(root)


def _cifar_required(cls: CifarClass) -> list[str]:
    """Every file torchvision's class insists on, whichever split is read (it checks them all)."""
    return [f for f, _md5 in cls.train_list + cls.test_list] + [cls.meta["filename"]]


def _cifar_missing(cls: CifarClass, root: Path) -> list[str]:
    folder = root / cls.base_folder
    return [f for f in _cifar_required(cls) if not (folder / f).is_file()]


def _download_cifar(cls: CifarClass, root: Path, train: bool, download: bool) -> None:
    if not download:
        raise DatasetNotFoundError(cifar_missing_message(cls, root))
    try:
        with _socket_timeout(DOWNLOAD_SOCKET_TIMEOUT_S):
            cls(root, train=train, download=True)
    except Exception as err:  # any failure (DNS, timeout, md5, tar) means: the files are not there
        reason = f"{type(err).__name__}: {err}"
        raise DatasetNotFoundError(cifar_missing_message(cls, root, reason)) from err


def _read_cifar(cls: CifarClass, root: Path, train: bool) -> torchvision.datasets.CIFAR10:
    try:
        return cls(root, train=train, download=False)
    except RuntimeError as err:  # torchvision's only signal for "md5 does not match"
        warnings.warn(
            f"{root / cls.base_folder}: files are present but are not the official ones "
            f"({err}); reading them anyway without checksum verification",
            DatasetChecksumWarning, stacklevel=5)
        return _without_md5(cls)(root, train=train, download=False)


def _without_md5(cls: CifarClass) -> CifarClass:
    """`cls` with every checksum set to None, which torchvision's check_integrity treats as
    'the file exists'; reading stays torchvision's own code."""
    attrs = {
        "train_list": [[f, None] for f, _ in cls.train_list],
        "test_list": [[f, None] for f, _ in cls.test_list],
        "meta": {**cls.meta, "md5": None},
    }
    return type(f"Unverified{cls.__name__}", (cls,), attrs)


def cifar_missing_message(cls: CifarClass, root: str | Path, reason: str | None = None) -> str:
    """Where the CIFAR files must be, where they come from, and why the download failed if it did."""
    folder = Path(root).expanduser().resolve() / cls.base_folder
    missing = _cifar_missing(cls, Path(root))
    lines = [
        f"{cls.__name__} files not found: {folder} must contain "
        f"{', '.join(_cifar_required(cls))} (missing: {', '.join(missing)}).",
        f"Download the official archive {cls.url} and extract it into {folder.parent} "
        f"(it unpacks to {cls.base_folder}/).",
    ]
    if reason is not None:
        lines.append(f"The automatic download failed: {reason}")
    else:
        lines.append("download=False, so no download was attempted.")
    return "\n".join(lines)


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """Give sockets a timeout for the block unless the process already set one (global: restored)."""
    previous = socket.getdefaulttimeout()
    if previous is None:
        socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


# ---------------------------------------------------------------------------------------------
# Tiny ImageNet


@dataclass(frozen=True)
class _TinyFiles:
    """The files one request reads, in sample order, and what identifies their content."""

    root: Path
    class_names: tuple[str, ...]
    paths: tuple[str, ...]  # root-joined; str, not Path: 50k Path objects cost measurable time
    labels: Tensor
    fingerprint: str


_Entry = tuple[str, int, int]  # relative path, size in bytes, label


def _load_tinyimagenet(req: LoadRequest) -> ImageSet:
    files = _tiny_files(_tiny_root(req.root), req.split, req.num_classes)
    cache_file = _tiny_cache_file(req, files) if req.use_cache else None
    images = _read_cache(cache_file, files.fingerprint) if cache_file is not None else None
    if images is None:
        images = _decode_jpegs(files.paths, req.image_size)
        if cache_file is not None:
            _write_cache(cache_file, files.fingerprint, images)
    mean, std = DATASET_STATS["tinyimagenet"]
    return ImageSet(images, files.labels, files.class_names, mean, std)


def _tiny_root(root: Path) -> Path:
    """`root` itself or its `tiny-imagenet-200/` child, whichever holds wnids.txt."""
    for candidate in (root, root / TINY_IMAGENET_FOLDER):
        if (candidate / "wnids.txt").is_file():
            return candidate
    raise DatasetNotFoundError(tiny_missing_message(root, "wnids.txt not found"))


def tiny_missing_message(root: Path, problem: str) -> str:
    """Where Tiny ImageNet must be, in which layout, and where it comes from."""
    where = Path(root).expanduser().resolve()
    return "\n".join([
        f"Tiny ImageNet not found under {where}: {problem}; unzip {TINY_IMAGENET_URL} there (it makes "
        f"{TINY_IMAGENET_FOLDER}/) or point data_root at a {TINY_IMAGENET_FOLDER}/ folder.",
        f"Expected layout (root = the {TINY_IMAGENET_FOLDER}/ folder itself or its parent):",
        f"  {TINY_IMAGENET_FOLDER}/wnids.txt, words.txt (optional, class names)",
        f"  {TINY_IMAGENET_FOLDER}/train/<wnid>/images/*.JPEG  (may be partial: whatever exists "
        "per class is loaded)",
        f"  {TINY_IMAGENET_FOLDER}/val/images/*.JPEG and val/val_annotations.txt",
        f"Official archive: {TINY_IMAGENET_URL} (unzip it into {where}); it is not downloaded "
        "automatically.",
    ])


def _tiny_files(root: Path, split: str, num_classes: int | None) -> _TinyFiles:
    wnids = list(_class_subset(_read_lines(root / "wnids.txt"), num_classes, "tinyimagenet"))
    entries = (_tiny_train_files if split == "train" else _tiny_val_files)(root, wnids)
    if not entries:
        raise DatasetNotFoundError(tiny_missing_message(root, f"no {split} images found"))
    return _TinyFiles(
        root=root,
        class_names=_tiny_class_names(root, wnids),
        paths=tuple(os.path.join(root, rel) for rel, _, _ in entries),
        labels=torch.tensor([label for _, _, label in entries], dtype=torch.int64),
        fingerprint=_fingerprint(entries),
    )


def _tiny_train_files(root: Path, wnids: list[str]) -> list[_Entry]:
    entries: list[_Entry] = []
    empty = []
    for label, wnid in enumerate(wnids):
        sizes = _scan_jpegs(root / "train" / wnid / "images")
        entries += [(f"train/{wnid}/images/{name}", sizes[name], label) for name in sorted(sizes)]
        empty += [] if sizes else [wnid]
    if empty and entries:
        warnings.warn(f"Tiny ImageNet train: no images for classes {', '.join(empty)} under {root}",
                      stacklevel=5)
    return entries


def _tiny_val_files(root: Path, wnids: list[str]) -> list[_Entry]:
    annotations = root / "val" / "val_annotations.txt"
    if not annotations.is_file():
        raise DatasetNotFoundError(tiny_missing_message(root, f"{annotations} not found"))
    index = {wnid: i for i, wnid in enumerate(wnids)}
    rows = [line.split("\t")[:2] for line in _read_lines(annotations)]
    rows = [(filename, index[wnid]) for filename, wnid in rows if wnid in index]
    sizes = _scan_jpegs(root / "val" / "images")
    missing = [filename for filename, _ in rows if filename not in sizes]
    if missing:
        raise DatasetNotFoundError(tiny_missing_message(
            root, f"{len(missing)} annotated val images missing, e.g. val/images/{missing[0]}"))
    return [(f"val/images/{filename}", sizes[filename], label) for filename, label in rows]


def _scan_jpegs(folder: Path) -> dict[str, int]:
    """Name -> size of the *.JPEG files in `folder` ({} if absent); one scandir, no Path per file."""
    try:
        with os.scandir(folder) as it:
            return {e.name: e.stat().st_size for e in it if e.name.endswith(".JPEG") and e.is_file()}
    except (FileNotFoundError, NotADirectoryError):
        return {}


def _tiny_class_names(root: Path, wnids: list[str]) -> tuple[str, ...]:
    """First synonym in words.txt for each wnid (e.g. 'goldfish'), else the wnid itself."""
    words = root / "words.txt"
    names: dict[str, str] = {}
    if words.is_file():
        for line in _read_lines(words):
            wnid, _, synonyms = line.partition("\t")
            names[wnid] = synonyms.split(",")[0].strip()
    return tuple(names.get(wnid) or wnid for wnid in wnids)


def _read_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _fingerprint(entries: list[_Entry]) -> str:
    """Hash of relative paths and sizes in sample order: it changes when a file is added, removed or
    replaced by one of another size, and when the order changes (the cache holds images only;
    labels and names are always rebuilt from the text files, so they must line up by position)."""
    listing = "".join(f"{rel}\t{size}\n" for rel, size, _ in entries)
    return hashlib.sha256(listing.encode()).hexdigest()


def _decode_jpegs(paths: Sequence[str], image_size: int | None) -> Tensor:
    """Decode JPEG files to one (N, 3, S, S) uint8 tensor, resized to image_size when given."""
    out: Tensor | None = None
    for start in range(0, len(paths), _CHUNK):
        chunk = _decode_chunk(paths[start:start + _CHUNK], image_size)
        if out is None:
            out = torch.empty((len(paths), *chunk.shape[1:]), dtype=torch.uint8)
        if chunk.shape[1:] != out.shape[1:]:
            raise DatasetError(f"images differ in size ({tuple(chunk.shape[1:])} vs "
                             f"{tuple(out.shape[1:])}) near {paths[start]}; pass image_size")
        out[start:start + len(chunk)] = chunk
    assert out is not None
    return out


def _decode_chunk(paths: Sequence[str], image_size: int | None) -> Tensor:
    decode = _decode_torchvision if JPEG_BACKEND == "torchvision" else _decode_pil
    images = decode(paths)
    if len({im.shape for im in images}) == 1:
        return _resize(torch.stack(images), image_size)
    if image_size is None:
        raise DatasetError(f"images differ in size near {paths[0]}; pass image_size")
    return torch.stack([TF.resize(im, [image_size, image_size], antialias=True) for im in images])


# JPEG decoding: torchvision.io.decode_jpeg on a list of file bytes decoded the real Tiny ImageNet
# val split (10,000 images) about 3x faster than PIL here, with identical pixels. torchvision 0.29
# deprecated its image codecs in favour of TorchCodec (not a dependency of this project), so the
# deprecation warning is silenced around our calls only, and PIL takes over where they are gone.
JPEG_BACKEND = "torchvision" if hasattr(torchvision.io, "decode_jpeg") else "pil"
_TV_DEPRECATION = "The image decoding and encoding capabilities of TorchVision are deprecated"


def _decode_torchvision(paths: Sequence[str]) -> list[Tensor]:
    data = [_read_bytes(p) for p in paths]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_TV_DEPRECATION, category=DeprecationWarning)
        try:  # ImageReadMode.RGB also turns greyscale (and CMYK) JPEGs into 3 channels
            return torchvision.io.decode_jpeg(data, mode=torchvision.io.ImageReadMode.RGB)
        except RuntimeError:  # the batch call does not say which file failed: find it
            return [_decode_one_torchvision(p, d) for p, d in zip(paths, data)]


def _decode_one_torchvision(path: str, data: Tensor) -> Tensor:
    try:
        return torchvision.io.decode_jpeg(data, mode=torchvision.io.ImageReadMode.RGB)
    except RuntimeError as err:
        raise DatasetError(f"cannot decode {path} as JPEG: {err}") from err


def _read_bytes(path: str) -> Tensor:
    with open(path, "rb") as f:
        return torch.frombuffer(bytearray(f.read()), dtype=torch.uint8)  # bytearray: writable


def _decode_pil(paths: Sequence[str]) -> list[Tensor]:
    return [_decode_one_pil(p) for p in paths]


def _decode_one_pil(path: str) -> Tensor:
    try:
        with Image.open(path) as image:
            pixels = np.array(image.convert("RGB"))  # greyscale (mode L) -> 3 channels
    except OSError as err:  # includes PIL.UnidentifiedImageError and truncated files
        raise DatasetError(f"cannot decode {path} as JPEG: {err}") from err
    return torch.from_numpy(pixels).permute(2, 0, 1)


# Cache of decoded tensors: one file per (root, split, num_classes, image_size), holding the
# fingerprint of the files it was decoded from. Writes go to a temporary file renamed into place, so
# trials loading in parallel never read a half-written cache (at worst they decode twice).


def _tiny_cache_file(req: LoadRequest, files: _TinyFiles) -> Path | None:
    cache_dir = req.cache_dir or _default_cache_dir(files.root)
    if cache_dir is None:
        return None
    root = str(files.root.resolve())
    key = hashlib.sha256(repr((root, req.split, req.num_classes, req.image_size)).encode())
    classes = "all" if req.num_classes is None else req.num_classes
    size = "native" if req.image_size is None else req.image_size
    return cache_dir / f"tinyimagenet-{req.split}-{classes}c-{size}px-{key.hexdigest()[:12]}.pt"


def _default_cache_dir(root: Path) -> Path | None:
    for candidate in (root / ".mollify-cache", Path.home() / ".cache" / "mollify-lab"):
        with contextlib.suppress(OSError):
            candidate.mkdir(parents=True, exist_ok=True)
            if os.access(candidate, os.W_OK):
                return candidate
    return None  # nowhere writable: decode every time rather than fail


def _read_cache(path: Path, fingerprint: str) -> Tensor | None:
    if not path.is_file():
        return None
    try:
        entry = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a truncated or foreign file is just a miss; it gets rewritten
        return None
    if not isinstance(entry, dict) or entry.get("format") != _CACHE_FORMAT \
            or entry.get("fingerprint") != fingerprint:
        return None
    return entry["images"]


def _write_cache(path: Path, fingerprint: str, images: Tensor) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"format": _CACHE_FORMAT, "fingerprint": fingerprint, "images": images}, tmp)
        os.replace(tmp, path)
    except OSError as err:  # a cache that cannot be written must not fail the trial
        tmp.unlink(missing_ok=True)
        warnings.warn(f"could not write dataset cache {path}: {err}", stacklevel=4)


DATASETS: dict[str, Loader] = {
    "synthetic": _load_synthetic,
    "cifar10": _load_cifar10,
    "cifar100": _load_cifar100,
    "tinyimagenet": _load_tinyimagenet,
}
