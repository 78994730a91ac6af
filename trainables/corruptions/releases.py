"""Reading corrupted test sets in the official formats (the benchmark authors' releases, and the
sets `generate.py` writes in the same formats).

- CIFAR-10-C / CIFAR-100-C (and generated sets of any npy-format dataset, and of a tree dataset
  under a protocol without the JPEG round trip): `<corruption>.npy`,
  uint8 (5 N, H, W, 3), severity-major (rows (s-1) N .. s N - 1 are severity s, in test-set
  order), and `labels.npy` (the N labels repeated 5 times). N is read from the files, never assumed.
- Tiny-ImageNet-C / ImageNet-C: `<corruption>/<severity>/<wnid>/*.JPEG`; labels come from the wnid
  folder in the clean dataset's class order (wnids.txt); images are read in the order of the
  numbers in their file names (val_<i>), which is the clean test split's order.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from torch import Tensor
from torchvision.io import ImageReadMode, decode_jpeg, read_file

from trainables.corruptions.protocols import TREE_DATASETS
from trainables.corruptions.registry import validate_corruptions, validate_severities
from trainables.data import DATASET_STATS, STREAMED, ImageSet
from trainables.data.base import FileSplit
from trainables.data.imagenet import jpeg_names

NPY_DATASETS = ("cifar10", "cifar100", "synthetic")  # stored as <corruption>.npy + labels.npy
# TREE_DATASETS: their releases are stored as <corruption>/<severity>/<wnid>/*.JPEG (protocols.py)
OFFICIAL = {  # dataset: (release folder name, where to get it)
    "cifar10": ("CIFAR-10-C", "https://zenodo.org/records/2535967"),
    "cifar100": ("CIFAR-100-C", "https://zenodo.org/records/3555552"),
    "tinyimagenet": ("Tiny-ImageNet-C", "https://zenodo.org/records/2536630"),
    "imagenet": ("ImageNet-C", "https://zenodo.org/records/2235448"),
}


class OfficialSetNotFoundError(FileNotFoundError):
    """A corrupted test set's files are not where they were looked for."""


def load_corrupted_cell(
    dataset: str,
    path: str | Path,
    corruption: str,
    severity: int,
    *,
    source: str = "official",
    num_classes: int | None = None,
    image_size: int | None = None,
    device: str | torch.device = "cpu",
    data_root: str | Path | None = None,
) -> ImageSet:
    """One (corruption, severity) cell of a corrupted set in the official format as an ImageSet:
    uint8 images on `device`, labels; the first `num_classes` classes kept and images resized to
    `image_size` as the clean loader does. Tiny ImageNet / ImageNet need `data_root` (wnids.txt)."""
    validate_corruptions([corruption])
    validate_severities([severity])
    if dataset in NPY_DATASETS or is_npy_set(dataset, Path(path)):
        images, labels = _read_npy_cell(dataset, Path(path), corruption, severity, source, num_classes)
    elif dataset in TREE_DATASETS:
        wnids = read_wnids(data_root, num_classes)
        images, labels = _read_tree_cell(dataset, Path(path), corruption, severity, source, wnids)
    else:
        raise ValueError(f"no corrupted-set format for dataset {dataset!r}; valid: "
                         f"{', '.join(NPY_DATASETS + TREE_DATASETS)}")
    if image_size is not None and images.shape[-1] != image_size:
        images = TF.resize(images, [image_size, image_size], antialias=True)
    mean, std = DATASET_STATS.get(dataset, DATASET_STATS["tinyimagenet"])
    k = num_classes or int(labels.max()) + 1
    return ImageSet(images.to(device), labels.to(device), tuple(f"class_{i}" for i in range(k)), mean, std)


def is_npy_set(dataset: str, path: Path) -> bool:
    """Whether the set at `path` is in the .npy format (a tree dataset's set generated under a
    protocol without the JPEG round trip is stored losslessly, as CIFAR-10-C is)."""
    return (release_folder(dataset, path) / "labels.npy").is_file()


def _read_npy_cell(dataset: str, path: Path, corruption: str, severity: int, source: str,
                   num_classes: int | None) -> tuple[Tensor, Tensor]:
    folder = release_folder(dataset, path)
    files = folder / f"{corruption}.npy", folder / "labels.npy"
    for f in files:
        if not f.is_file():
            raise OfficialSetNotFoundError(missing_message(dataset, f, path, source, corruption))
    data = np.load(files[0], mmap_mode="r")  # read only this severity's rows
    labels = np.load(files[1], mmap_mode="r")
    if len(labels) % 5 or len(data) != len(labels):
        raise ValueError(f"{folder}: {len(data)} images and {len(labels)} labels; expected 5 equal "
                         "severity blocks of both")
    n = len(labels) // 5
    rows = slice((severity - 1) * n, severity * n)
    images = torch.from_numpy(np.array(data[rows])).permute(0, 3, 1, 2).contiguous()  # copies the rows
    cell_labels = torch.from_numpy(np.asarray(labels[rows]).astype(np.int64))
    if num_classes is not None:
        keep = cell_labels < num_classes
        images, cell_labels = images[keep], cell_labels[keep]
    return images, cell_labels


def _read_tree_cell(dataset: str, path: Path, corruption: str, severity: int, source: str,
                    wnids: Sequence[str]) -> tuple[Tensor, Tensor]:
    folder = release_folder(dataset, path) / corruption / str(severity)
    if not folder.is_dir():
        raise OfficialSetNotFoundError(missing_message(dataset, folder, path, source, corruption))
    entries: list[tuple[Path, int]] = []
    for label, wnid in enumerate(wnids):
        entries += [(f, label) for f in (folder / wnid).glob("*.JPEG")] if (folder / wnid).is_dir() else []
    # val_<i> across all classes, as the clean test split (val_annotations.txt) orders them, so that a
    # limited test set (limit_corrupt_images) and its cell hold the same images in the same batches.
    entries.sort(key=lambda entry: _natural(entry[0]))
    files, labels = [f for f, _ in entries], [label for _, label in entries]
    if not files:
        problem = f"holds no <wnid>/*.JPEG for the {len(wnids)} classes asked for"
        raise OfficialSetNotFoundError(missing_message(dataset, folder, path, source, corruption, problem))
    decoded = decode_jpeg([read_file(str(f)) for f in files], mode=ImageReadMode.RGB)
    if len({im.shape for im in decoded}) > 1:
        side = max(im.shape[-1] for im in decoded)
        decoded = [TF.resize(im, [side, side], antialias=True) for im in decoded]
    return torch.stack(decoded), torch.tensor(labels, dtype=torch.int64)


def tree_cell_files(dataset: str, path: str | Path, corruption: str, severity: int, *, source: str,
                    wnids: Sequence[str]) -> FileSplit:
    """One cell of a release too large to decode whole (ImageNet-C): its files, class by class in
    `wnids` order (the clean split's), by name within a class, as the clean split lists its own,
    nothing decoded. Every class asked for must have its folder: a partial download would
    otherwise be scored on the classes it happens to hold."""
    validate_corruptions([corruption])
    validate_severities([severity])
    folder = release_folder(dataset, Path(path)) / corruption / str(severity)
    if not folder.is_dir():
        raise OfficialSetNotFoundError(missing_message(dataset, folder, Path(path), source, corruption))
    paths: list[str] = []
    labels: list[int] = []
    for label, wnid in enumerate(wnids):
        names = jpeg_names(os.path.join(folder, wnid))
        if not names:
            problem = f"holds no {wnid}/*.JPEG (class {label} of the {len(wnids)} asked for)"
            raise OfficialSetNotFoundError(missing_message(dataset, folder, Path(path), source, corruption, problem))
        paths += [os.path.join(folder, wnid, name) for name in names]
        labels += [label] * len(names)
    mean, std = DATASET_STATS[dataset]
    return FileSplit(root=folder, paths=tuple(paths), labels=torch.tensor(labels, dtype=torch.int64),
                     class_names=tuple(wnids), wnids=tuple(wnids), mean=mean, std=std)


def _natural(path: Path) -> list:
    """Sort key reading digit runs as numbers: val_2 before val_10 (the test-set order)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def read_wnids(data_root: str | Path | None, num_classes: int | None) -> list[str]:
    """The class order of the clean Tiny ImageNet (wnids.txt under data_root or its
    tiny-imagenet-200/ child), first num_classes."""
    if data_root is None:
        raise ValueError("reading a Tiny-ImageNet-C / ImageNet-C folder tree needs data_root (the clean "
                         "dataset, whose wnids.txt fixes the class order)")
    root = Path(data_root).expanduser()
    for candidate in (root / "wnids.txt", root / "tiny-imagenet-200" / "wnids.txt"):
        if candidate.is_file():
            wnids = [w.strip() for w in candidate.read_text().splitlines() if w.strip()]
            return wnids[:num_classes] if num_classes else wnids
    raise FileNotFoundError(f"wnids.txt not found under {root} (nor its tiny-imagenet-200/ child)")


def release_folder(dataset: str, path: Path) -> Path:
    """`path` itself, or its child named like the official release (e.g. CIFAR-10-C/)."""
    child = path.expanduser() / OFFICIAL.get(dataset, ("", ""))[0]
    return child if OFFICIAL.get(dataset) and child.is_dir() else path.expanduser()


def missing_message(dataset: str, missing: Path, out: Path, source: str, corruption: str = "",
                    problem: str = "not found") -> str:
    """One line: where a corrupted set was looked for, where to download it, how to generate it."""
    name, url = OFFICIAL.get(dataset, (f"{dataset}-C", None))
    only = f" --corruptions {corruption}" if source == "generated" and corruption else ""
    generate = (f"python -m trainables.corruptions generate --dataset {dataset} --out {out} "
                f"--data-root DATA_ROOT{only}")
    if url is not None and dataset in STREAMED:  # too large to generate whole (config.py refuses it)
        return (f"{name} ({source} corrupted set): {missing} {problem}; download the official release "
                f"{url} and extract it into {out}, or evaluate on the fly (corruption_source: on_the_fly)")
    if url is not None and source == "official":
        return (f"{name} ({source} corrupted set): {missing} {problem}; download the official release "
                f"{url} and extract it into {out}, or generate it: {generate}")
    return f"{name} ({source} corrupted set): {missing} {problem}; generate it: {generate}"
