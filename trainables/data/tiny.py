"""``tinyimagenet``: the official ``tiny-imagenet-200/`` folder layout; "test" means the labelled
``val/`` split ("val" is accepted as an alias). Decoded tensors are cached on disk."""

from __future__ import annotations

import contextlib
import hashlib
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torch import Tensor

from trainables.data.base import (CHUNK, DATASET_STATS, DatasetError, DatasetNotFoundError, ImageSet, LoadRequest,
                                  class_subset, resize)

TINY_IMAGENET_URL = "https://cs231n.stanford.edu/tiny-imagenet-200.zip"
TINY_IMAGENET_FOLDER = "tiny-imagenet-200"
_CACHE_FORMAT = 1


@dataclass(frozen=True)
class _TinyFiles:
    """The files one request reads, in sample order, and what identifies their content."""

    root: Path
    class_names: tuple[str, ...]
    paths: tuple[str, ...]  # root-joined; str, not Path: 50k Path objects cost measurable time
    labels: Tensor
    fingerprint: str


_Entry = tuple[str, int, int]  # relative path, size in bytes, label


def load_tinyimagenet(req: LoadRequest) -> ImageSet:
    files = _tiny_files(_tiny_root(req.root), req.split, req.num_classes)
    cache_file = _tiny_cache_file(req, files) if req.use_cache else None
    images = _read_cache(cache_file, files.fingerprint) if cache_file is not None else None
    if images is None:
        images = _decode_jpegs(files.paths, req.image_size)
        if cache_file is not None:
            _write_cache(cache_file, files.fingerprint, images)
    mean, std = DATASET_STATS["tinyimagenet"]
    return ImageSet(images, files.labels, files.class_names, mean, std)


def count_tinyimagenet(req: LoadRequest) -> list[tuple[str, int]]:
    """Images per class of the split `load_tinyimagenet` loads, from the folders' listing (none decoded)."""
    files = _tiny_files(_tiny_root(req.root), req.split, req.num_classes)
    return list(zip(files.class_names, torch.bincount(files.labels, minlength=len(files.class_names)).tolist()))


def _tiny_root(root: Path) -> Path:
    """`root` itself or its `tiny-imagenet-200/` child, whichever holds wnids.txt."""
    for candidate in (root, root / TINY_IMAGENET_FOLDER):
        if (candidate / "wnids.txt").is_file():
            return candidate
    raise DatasetNotFoundError(tiny_missing_message(root, "wnids.txt not found"))


def tiny_missing_message(root: Path, problem: str) -> str:
    """One line: what is missing where, the archive (never downloaded automatically: it is large)
    and the layout it unzips to."""
    where = Path(root).expanduser().resolve()
    return (f"Tiny ImageNet not found under {where}: {problem}; unzip {TINY_IMAGENET_URL} there, or point "
            f"data_root at a {TINY_IMAGENET_FOLDER}/ folder (wnids.txt, train/<wnid>/images/*.JPEG, which may "
            "be partial, val/images/*.JPEG, val/val_annotations.txt)")


def _tiny_files(root: Path, split: str, num_classes: int | None) -> _TinyFiles:
    wnids = list(class_subset(_read_lines(root / "wnids.txt"), num_classes, "tinyimagenet"))
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
    for start in range(0, len(paths), CHUNK):
        chunk = _decode_chunk(paths[start:start + CHUNK], image_size)
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
        return resize(torch.stack(images), image_size)
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
