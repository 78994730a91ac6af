"""``cifar10`` / ``cifar100``: torchvision's classes over the official python-pickle files
(``root/cifar-10-batches-py/``, ``root/cifar-100-python/``); CIFAR-100 uses the fine labels."""

from __future__ import annotations

import contextlib
import socket
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
import torchvision

from trainables.data.base import (DATASET_STATS, DatasetChecksumWarning, DatasetNotFoundError, ImageSet, LoadRequest,
                                  class_subset, resize)

# torchvision's download has no network timeout of its own (plain urlopen); without one a
# firewalled host that drops packets would hang a trial forever. Applies per socket operation.
DOWNLOAD_SOCKET_TIMEOUT_S = 60.0

# train AND test file with the official sums (and `_load_meta` the meta file's). We go through that
# path first, as torchvision intends. Files that are in the official pickle format but are not the
# official bytes (a hand-made subset, the test suite's fixtures) fail that check, and md5 cannot be
# forged; for them we read the same files with the same torchvision code with md5 set to None (its
# `check_integrity(path, None)` means "present"), and say so with a DatasetChecksumWarning. A
# download only starts when files are missing, never to replace present files.

CifarClass = type[torchvision.datasets.CIFAR10]


def load_cifar10(req: LoadRequest) -> ImageSet:
    return _load_cifar(req, torchvision.datasets.CIFAR10, "cifar10")


def load_cifar100(req: LoadRequest) -> ImageSet:
    return _load_cifar(req, torchvision.datasets.CIFAR100, "cifar100")


def count_cifar10(req: LoadRequest) -> list[tuple[str, int]]:
    return _count_cifar(req, torchvision.datasets.CIFAR10, "cifar10")


def count_cifar100(req: LoadRequest) -> list[tuple[str, int]]:
    return _count_cifar(req, torchvision.datasets.CIFAR100, "cifar100")


def _count_cifar(req: LoadRequest, cls: CifarClass, name: str) -> list[tuple[str, int]]:
    """Images per class of the split `_load_cifar` loads, from the pickles' labels (no tensors made)."""
    ds, names = _open_cifar(req, cls, name)
    counts = torch.bincount(torch.as_tensor(ds.targets, dtype=torch.int64), minlength=len(ds.classes))
    return list(zip(names, counts.tolist()))  # the first len(names) classes: the subset's


def _open_cifar(req: LoadRequest, cls: CifarClass, name: str) -> tuple[torchvision.datasets.CIFAR10, tuple[str, ...]]:
    """The split as torchvision reads it, and the names of the classes the request keeps."""
    train = req.split == "train"
    if _cifar_missing(cls, req.root):
        _download_cifar(cls, req.root, train, req.download)
    ds = _read_cifar(cls, req.root, train)
    return ds, class_subset(ds.classes, req.num_classes, name)


def _load_cifar(req: LoadRequest, cls: CifarClass, name: str) -> ImageSet:
    ds, names = _open_cifar(req, cls, name)
    images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()  # (N,32,32,3) -> NCHW
    labels = torch.as_tensor(ds.targets, dtype=torch.int64)
    if len(names) < len(ds.classes):
        keep = labels < len(names)  # canonical order = label index order, so no remap is needed
        images, labels = images[keep], labels[keep]
    mean, std = DATASET_STATS[name]
    return ImageSet(resize(images, req.image_size), labels, names, mean, std)


CIFAR_CLASSES: dict[str, CifarClass] = {"cifar10": torchvision.datasets.CIFAR10,
                                         "cifar100": torchvision.datasets.CIFAR100}


def _cifar_required(cls: CifarClass) -> list[str]:
    """Every file torchvision's class insists on, whichever split is read (it checks them all)."""
    return [f for f, _md5 in cls.train_list + cls.test_list] + [cls.meta["filename"]]


def _cifar_missing(cls: CifarClass, root: Path) -> list[str]:
    folder = root / cls.base_folder
    return [f for f in _cifar_required(cls) if not (folder / f).is_file()]


def _download_cifar(cls: CifarClass, root: Path, train: bool, download: bool) -> None:
    if not download:
        raise DatasetNotFoundError(cifar_missing_message(cls, root))
    made = _missing_folders(root)
    try:
        with _socket_timeout(DOWNLOAD_SOCKET_TIMEOUT_S):
            cls(root, train=train, download=True)
    except Exception as err:  # any failure (DNS, timeout, md5, tar) means: the files are not there
        reason = f"{type(err).__name__}: {err}"
        for folder in made:  # the download made them: a failed one leaves no empty data/ behind
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if empty
        raise DatasetNotFoundError(cifar_missing_message(cls, root, reason)) from err


def _missing_folders(root: Path) -> list[Path]:
    """`root` and those of its parents that do not exist yet, deepest first."""
    missing, folder = [], Path(root).absolute()
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    return missing


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
    """One line (the command lines show one): which files are missing where, why no download
    brought them, and the archive to extract there by hand."""
    folder = Path(root).expanduser().resolve() / cls.base_folder
    missing = _cifar_missing(cls, Path(root))
    which = "" if len(missing) == len(_cifar_required(cls)) else f" (missing: {', '.join(missing)})"
    why = (f"the download failed ({' '.join(reason.split())[:200]})" if reason is not None
           else "download=False, so none was attempted")
    return (f"{cls.__name__} files not found in {folder}{which}; {why}: download {cls.url} and extract it "
            f"into {folder.parent}")


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
