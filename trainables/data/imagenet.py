"""``imagenet``: the ILSVRC-2012 folder layout, as lists of files (`FileSplit`); never decoded whole.

ImageNet's 1.28M training JPEGs (about 140 GB) cannot be held in memory as the other datasets are,
so this module only lists them; `trainables.data.stream` decodes batches as training reads them.

Layout (the one the usual validation-preparation script, ``valprep.sh``, leaves)::

    <root>/train/<wnid>/*.JPEG       e.g. train/n01440764/n01440764_10026.JPEG
    <root>/val/<wnid>/*.JPEG         e.g. val/n01440764/ILSVRC2012_val_00000293.JPEG
    <root>/LOC_synset_mapping.txt    optional class names (Kaggle's: "n01440764 tench, Tinca tinca"),
    <root>/words.txt                 or the ImageNet/Tiny ImageNet one ("n01440764<TAB>tench, ...")

`root` may also be a parent holding it in one of `IMAGENET_FOLDERS`: ``imagenet/``, ``ILSVRC2012/``
or Kaggle's ``ILSVRC/Data/CLS-LOC/`` (then the names file is also looked for in `root` itself, where
Kaggle puts LOC_synset_mapping.txt). "test" means the labelled ``val/`` split ("val" is an alias).

Order (part of the contract): classes are the sorted wnids of ``train/`` (the first `num_classes`
of them when asked), label = position; val uses the same wnid -> label map, and a val class absent
from train is an error. Samples go class by class, files sorted by name within a class. Extensions
``.JPEG``, ``.jpeg``, ``.jpg`` in any case. A selected class with no training image is an error
(it could be neither learnt nor held out); one with no val image only warns (a partial val split
still evaluates the others).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from trainables.data.base import (DATASET_STATS, DatasetError, DatasetNotFoundError, FileSplit, LoadRequest,
                                  canonical_split, class_subset)

IMAGENET_FOLDERS = ("imagenet", "ILSVRC2012", os.path.join("ILSVRC", "Data", "CLS-LOC"))
NAME_FILES = ("LOC_synset_mapping.txt", "words.txt")
JPEG_SUFFIXES = (".jpeg", ".jpg")  # compared lower-cased
_LAYOUT = ("train/<wnid>/*.JPEG and val/<wnid>/*.JPEG (val sorted into class folders, e.g. by the usual "
           "valprep.sh), optional LOC_synset_mapping.txt or words.txt for class names")


def imagenet_files(root: str | Path, split: str, num_classes: int | None = None) -> FileSplit:
    """The files of split `split` ("train", or "test"/"val": the labelled val split), in sample
    order, with labels from the sorted wnids of train/ (the first `num_classes` of them)."""
    split = canonical_split("imagenet", split)
    given = Path(root).expanduser().absolute()
    root = imagenet_root(given)
    all_wnids = _train_wnids(root)
    wnids = class_subset(all_wnids, num_classes, "imagenet")
    if split == "test":
        _check_val_classes(root, all_wnids)
    folder = root / ("train" if split == "train" else "val")
    paths, labels = _list_classes(root, folder, wnids, empty_is_error=split == "train")
    mean, std = DATASET_STATS["imagenet"]
    return FileSplit(root=root, paths=paths, labels=torch.tensor(labels, dtype=torch.int64),
                     class_names=_class_names(wnids, (root, given)), wnids=wnids, mean=mean, std=std)


def count_imagenet(req: LoadRequest) -> list[tuple[str, int]]:
    """Images per class of the split `imagenet_files` lists (a listing: nothing decoded)."""
    files = imagenet_files(req.root, req.split, req.num_classes)
    return list(zip(files.class_names, torch.bincount(files.labels, minlength=files.num_classes).tolist()))


def check_imagenet(root: str | Path) -> None:
    """Raise the layout error `imagenet_files` would, without listing a single image file: the class
    folders of train/ and val/ only (what a study's driver checks before any trial starts)."""
    found = imagenet_root(Path(root).expanduser().absolute())
    _check_val_classes(found, _train_wnids(found))


def imagenet_root(root: Path) -> Path:
    """`root` itself or the first of its `IMAGENET_FOLDERS` children that holds a train/ folder."""
    for candidate in (root, *(root / child for child in IMAGENET_FOLDERS)):
        if (candidate / "train").is_dir():
            return candidate
    children = ", ".join(f"{c}/" for c in IMAGENET_FOLDERS)
    raise DatasetNotFoundError(imagenet_missing_message(root, f"no train/ folder in it or in its {children} child"))


def imagenet_missing_message(root: str | Path, problem: str) -> str:
    """One line: the root looked at, what is missing or malformed, and the layout expected there."""
    where = Path(root).expanduser().absolute()
    return (f"ImageNet not usable under {where}: {problem}; expected the ILSVRC-2012 layout: {_LAYOUT} "
            "(never downloaded; `make imagenet-smoke` builds a small one from Tiny ImageNet)")


def _train_wnids(root: Path) -> tuple[str, ...]:
    wnids = _subfolders(root / "train")
    if not wnids:
        raise DatasetNotFoundError(imagenet_missing_message(root, "train/ holds no <wnid>/ folders"))
    return wnids


def _check_val_classes(root: Path, train_wnids: tuple[str, ...]) -> None:
    val = root / "val"
    if not val.is_dir():
        raise DatasetNotFoundError(imagenet_missing_message(root, "no val/ folder"))
    loose = jpeg_names(val)
    if loose:
        raise DatasetError(imagenet_missing_message(
            root, f"val/ is flat ({len(loose)} images directly in it, e.g. {loose[0]}): run the usual valprep "
                  "script to sort it into val/<wnid>/"))
    val_wnids = _subfolders(val)
    if not val_wnids:
        raise DatasetNotFoundError(imagenet_missing_message(root, "val/ holds no <wnid>/ folders"))
    unknown = sorted(set(val_wnids) - set(train_wnids))
    if unknown:
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        raise DatasetError(imagenet_missing_message(root, f"val class {unknown[0]}{more} not in train/"))


def _list_classes(root: Path, folder: Path, wnids: tuple[str, ...],
                  empty_is_error: bool) -> tuple[tuple[str, ...], list[int]]:
    paths: list[str] = []
    labels: list[int] = []
    empty = []
    for label, wnid in enumerate(wnids):
        class_folder = os.path.join(folder, wnid)
        names = jpeg_names(class_folder)
        paths += [os.path.join(class_folder, name) for name in names]
        labels += [label] * len(names)
        empty += [] if names else [wnid]
    if empty and (empty_is_error or not paths):
        raise DatasetError(imagenet_missing_message(
            root, f"{folder.name}/{empty[0]}/ holds no .JPEG/.jpeg/.jpg files ({len(empty)} such class(es))"))
    if empty:
        warnings.warn(f"ImageNet {folder.name}/ under {root}: no images for classes {', '.join(empty[:10])}"
                      f"{' ...' if len(empty) > 10 else ''}", stacklevel=3)
    return tuple(paths), labels


def _subfolders(folder: Path) -> tuple[str, ...]:
    """Sorted names of the folders in `folder` (hidden ones, e.g. a cache, left out)."""
    try:
        with os.scandir(folder) as it:
            return tuple(sorted(e.name for e in it if not e.name.startswith(".") and e.is_dir()))
    except (FileNotFoundError, NotADirectoryError):
        return ()


def jpeg_names(folder: str | Path) -> list[str]:
    """Sorted names of the JPEG files in `folder` ([] if absent): one scandir, no Path per file."""
    try:
        with os.scandir(folder) as it:
            return sorted(e.name for e in it if e.name.lower().endswith(JPEG_SUFFIXES) and e.is_file())
    except (FileNotFoundError, NotADirectoryError):
        return []


def _class_names(wnids: tuple[str, ...], folders: tuple[Path, ...]) -> tuple[str, ...]:
    """First synonym of each wnid (e.g. 'tench') from the first names file found, else the wnid."""
    for folder in folders:
        for name in NAME_FILES:
            if (folder / name).is_file():
                names = _synonyms(folder / name)
                return tuple(names.get(wnid) or wnid for wnid in wnids)
    return wnids


def _synonyms(path: Path) -> dict[str, str]:
    """wnid -> first synonym; a space (LOC_synset_mapping.txt) or a tab (words.txt) follows the wnid."""
    rows = (line.split(maxsplit=1) for line in path.read_text(encoding="utf-8").splitlines())
    return {row[0]: row[1].split(",")[0].strip() for row in rows if len(row) == 2}
