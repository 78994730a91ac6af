"""Tests of trainables.data: synthetic data, CIFAR-10/100 in the official python-pickle format,
Tiny ImageNet in its official folder layout (a small hand-made tree, and the real images when the
shared data folder is there), the decoded-tensor cache, and every error path."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pickle
import socket
import struct
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
import torchvision.transforms.v2.functional as TF
from PIL import Image

from helpers import GREY_FILE, TINY_VAL, TINY_WNIDS, _save_jpeg, make_tiny_tree
from trainables.data import cifar, synthetic, tiny
from trainables.config import ConfigError, TrialConfig
from trainables.data import (
    DATASET_STATS,
    DATASETS,
    STREAMED,
    DatasetChecksumWarning,
    DatasetError,
    DatasetNotFoundError,
    ImageSet,
    TINY_IMAGENET_URL,
    cifar_missing_message,
    class_counts,
    load_dataset,
    split_validation,
    tiny_missing_message,
)
from trainables.train import load_splits

CIFAR10 = torchvision.datasets.CIFAR10
CIFAR100 = torchvision.datasets.CIFAR100
CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                 "truck"]


# ---------------------------------------------------------------------------------------------
# Writing CIFAR files in the official format
#
# The official files were written by Python 2's cPickle (protocol 2): dict keys and byte strings are
# Python 2 `str`, which Python 3 reads back as str under encoding="latin1" (what torchvision uses)
# and as bytes under encoding="bytes" (the CIFAR web page's recipe, hence keys like b'data').
# Python 3's pickler writes `bytes` differently, so this one emits them the way Python 2 did.


class _Py2Pickler(pickle._Pickler):  # the pure-Python pickler: its dispatch table can be extended
    dispatch = dict(pickle._Pickler.dispatch)

    def save_bytes(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_bytes


def _py2_dump(obj: object, path: Path) -> None:
    buffer = io.BytesIO()
    _Py2Pickler(buffer, protocol=2).dump(obj)
    path.write_bytes(buffer.getvalue())


def _cifar_batch(rng: np.random.Generator, n: int, label_keys: dict[bytes, int], name: bytes) -> dict:
    """One batch dict: b'data' (n, 3072) uint8 = R, G, B planes of 32x32, row-major."""
    batch = {
        b"batch_label": name,
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [f"img_{i:05d}.png".encode() for i in range(n)],
    }
    for key, num_classes in label_keys.items():
        batch[key] = [int(v) for v in rng.integers(0, num_classes, n)]
    return batch


def write_cifar10(root: Path, per_batch: int = 20, n_test: int = 30) -> dict[str, list[dict]]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    train = [_cifar_batch(rng, per_batch, {b"labels": 10}, f"training batch {i} of 5".encode())
             for i in range(1, 6)]
    for i, batch in enumerate(train, start=1):
        _py2_dump(batch, folder / f"data_batch_{i}")
    test = [_cifar_batch(rng, n_test, {b"labels": 10}, b"testing batch 1 of 1")]
    _py2_dump(test[0], folder / "test_batch")
    meta = {b"label_names": [n.encode() for n in CIFAR10_NAMES], b"num_cases_per_batch": per_batch,
            b"num_vis": 3072}
    _py2_dump(meta, folder / "batches.meta")
    return {"train": train, "test": test}


def write_cifar100(root: Path, n_train: int = 300, n_test: int = 100) -> dict[str, list[dict]]:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    keys = {b"fine_labels": 100, b"coarse_labels": 20}
    splits = {"train": [_cifar_batch(rng, n_train, keys, b"training")],
              "test": [_cifar_batch(rng, n_test, keys, b"testing")]}
    for split, batches in splits.items():
        _py2_dump(batches[0], folder / split)
    meta = {b"fine_label_names": [f"fine_{i}".encode() for i in range(100)],
            b"coarse_label_names": [f"coarse_{i}".encode() for i in range(20)]}
    _py2_dump(meta, folder / "meta")
    return splits


def _expected(batches: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    images = np.concatenate([b[b"data"] for b in batches]).reshape(-1, 3, 32, 32)
    key = b"labels" if b"labels" in batches[0] else b"fine_labels"
    labels = [label for b in batches for label in b[key]]
    return torch.from_numpy(images), torch.tensor(labels)


def _load_unverified(*args, **kwargs) -> ImageSet:
    """Load hand-made CIFAR files: their checksums cannot be the official ones, which must warn."""
    with pytest.warns(DatasetChecksumWarning, match="not the official ones"):
        return load_dataset(*args, **kwargs)


# ---------------------------------------------------------------------------------------------
# CIFAR


def test_official_pickle_writer_matches_official_key_types(tmp_path: Path) -> None:
    _py2_dump({b"data": np.zeros((1, 3072), np.uint8), b"labels": [3]}, tmp_path / "b")
    raw = (tmp_path / "b").read_bytes()
    assert set(pickle.loads(raw, encoding="bytes")) == {b"data", b"labels"}
    assert set(pickle.loads(raw, encoding="latin1")) == {"data", "labels"}


@pytest.mark.parametrize("split", ["train", "test"])
def test_cifar10_loads_official_format(tmp_path: Path, split: str) -> None:
    written = write_cifar10(tmp_path)
    ds = _load_unverified("cifar10", tmp_path, split, download=False)
    images, labels = _expected(written[split])
    assert ds.images.dtype == torch.uint8 and ds.images.shape == (len(images), 3, 32, 32)
    assert torch.equal(ds.images, images)  # row-major R, G, B planes -> (3, 32, 32)
    assert ds.labels.dtype == torch.int64 and torch.equal(ds.labels, labels)
    assert ds.class_names == tuple(CIFAR10_NAMES) and ds.num_classes == 10 and len(ds) == len(images)
    assert (ds.mean, ds.std) == ((0.491, 0.482, 0.446), (0.247, 0.243, 0.261))


def test_cifar10_class_subset_and_resize(tmp_path: Path) -> None:
    written = write_cifar10(tmp_path)
    ds = _load_unverified("cifar10", tmp_path, "train", num_classes=3, image_size=16, download=False)
    images, labels = _expected(written["train"])
    keep = labels < 3
    assert ds.class_names == tuple(CIFAR10_NAMES[:3])
    assert torch.equal(ds.labels, labels[keep]) and set(ds.labels.tolist()) <= {0, 1, 2}
    assert ds.images.shape == (int(keep.sum()), 3, 16, 16) and ds.images.dtype == torch.uint8
    assert torch.equal(ds.images, TF.resize(images[keep], [16, 16], antialias=True))


def test_cifar100_uses_fine_labels(tmp_path: Path) -> None:
    written = write_cifar100(tmp_path)
    ds = _load_unverified("cifar100", tmp_path, "test", download=False)
    images, labels = _expected(written["test"])
    assert torch.equal(ds.images, images) and torch.equal(ds.labels, labels)
    assert ds.class_names == tuple(f"fine_{i}" for i in range(100))
    assert (ds.mean, ds.std) == DATASET_STATS["cifar100"]
    sub = _load_unverified("cifar100", tmp_path, "train", num_classes=5, download=False)
    assert sub.num_classes == 5 and int(sub.labels.max()) < 5


def test_cifar_with_matching_checksums_takes_torchvision_verified_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend our files are the official ones by giving torchvision their md5 sums: then no
    fallback and no warning happen, i.e. real downloads go through torchvision's verification."""
    write_cifar10(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"

    def md5(name: str) -> str:
        return hashlib.md5((folder / name).read_bytes()).hexdigest()

    monkeypatch.setattr(CIFAR10, "train_list", [[f, md5(f)] for f, _ in CIFAR10.train_list])
    monkeypatch.setattr(CIFAR10, "test_list", [[f, md5(f)] for f, _ in CIFAR10.test_list])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": md5("batches.meta")})
    with warnings.catch_warnings():
        warnings.simplefilter("error", DatasetChecksumWarning)
        ds = load_dataset("cifar10", tmp_path, "train", download=False)
    assert len(ds) == 100


def test_cifar_missing_without_download_names_folder_and_url(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("cifar10", tmp_path, "train", download=False)
    message = str(info.value)
    assert str(tmp_path.resolve() / "cifar-10-batches-py") in message
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in message
    assert "download=False" in message and "\n" not in message  # the command lines show one line
    assert isinstance(info.value, FileNotFoundError)


def test_cifar_partial_files_count_as_missing(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"missing: data_batch_3"):
        load_dataset("cifar10", tmp_path, "test", download=False)


def test_cifar_failed_download_fails_fast_with_reason(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """download=True with no reachable server: a clear error, quickly. The URL points at a closed
    local port so the test neither depends on this machine's network nor downloads 170 MB where
    there is one; the real URL's message is checked in the next test."""
    url = "http://127.0.0.1:9/cifar-100-python.tar.gz"
    monkeypatch.setattr(CIFAR100, "url", url)
    start = time.monotonic()
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("cifar100", tmp_path / "data", "train", download=True)
    assert time.monotonic() - start < 30
    message = str(info.value)
    assert "the download failed (URLError: " in message  # URLError here; HTTPError via a proxy
    assert url in message and str((tmp_path / "data").resolve() / "cifar-100-python") in message
    assert socket.getdefaulttimeout() is None  # the temporary download timeout was undone


def test_cifar_message_builder(tmp_path: Path) -> None:
    message = cifar_missing_message(CIFAR100, tmp_path, reason="URLError: no route\n  (second line)")
    assert "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz" in message
    assert str(tmp_path.resolve() / "cifar-100-python") in message
    assert "the download failed (URLError: no route (second line))" in message and "\n" not in message
    assert "missing:" not in message  # all three are: the folder is named instead
    (tmp_path / "cifar-100-python").mkdir()
    (tmp_path / "cifar-100-python" / "train").write_bytes(b"")
    assert "(missing: test, meta)" in cifar_missing_message(CIFAR100, tmp_path)


def test_download_socket_timeout_is_temporary() -> None:
    assert socket.getdefaulttimeout() is None
    with cifar._socket_timeout(5.0):
        assert socket.getdefaulttimeout() == 5.0
    assert socket.getdefaulttimeout() is None


# ---------------------------------------------------------------------------------------------
# Tiny ImageNet: a small tree in the official layout

def _pil_rgb(path: Path) -> torch.Tensor:
    with Image.open(path) as image:
        return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> int:
    return int((a.int() - b.int()).abs().max())


@pytest.fixture
def tiny_root(tmp_path: Path) -> Path:
    return make_tiny_tree(tmp_path / "data")


def test_tiny_train_shapes_labels_names(tiny_root: Path, tmp_path: Path) -> None:
    ds = load_dataset("tinyimagenet", tiny_root, "train", cache_dir=tmp_path / "cache")
    assert ds.images.shape == (11, 3, 64, 64) and ds.images.dtype == torch.uint8
    assert ds.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 3]
    assert ds.class_names == ("goldfish", "European fire salamander", "bullfrog", "n01644900")
    assert (ds.mean, ds.std) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    first = tiny_root / "train/n01443537/images/n01443537_0.JPEG"
    assert _max_diff(ds.images[0], _pil_rgb(first)) <= 2  # same pixels as PIL's decoder


def test_tiny_greyscale_becomes_three_equal_channels(tiny_root: Path, tmp_path: Path) -> None:
    with Image.open(tiny_root / GREY_FILE) as image:
        assert image.mode == "L"
    ds = load_dataset("tinyimagenet", tiny_root, "train", cache_dir=tmp_path / "cache")
    grey = ds.images[4]  # class 1, file _1
    assert grey.shape == (3, 64, 64)
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])
    assert _max_diff(grey, _pil_rgb(tiny_root / GREY_FILE)) <= 2


def test_tiny_val_labels_follow_annotations(tiny_root: Path, tmp_path: Path) -> None:
    ds = load_dataset("tinyimagenet", tiny_root, "val", cache_dir=tmp_path / "cache")
    assert ds.labels.tolist() == [TINY_WNIDS.index(w) for _, w in TINY_VAL]
    for i, (filename, _) in enumerate(TINY_VAL):
        assert _max_diff(ds.images[i], _pil_rgb(tiny_root / "val/images" / filename)) <= 2
    alias = load_dataset("tinyimagenet", tiny_root, "test", cache_dir=tmp_path / "cache")
    assert torch.equal(alias.images, ds.images) and torch.equal(alias.labels, ds.labels)


def test_tiny_class_subset_remaps_labels(tiny_root: Path, tmp_path: Path) -> None:
    ds = load_dataset("tinyimagenet", tiny_root, "val", num_classes=2, cache_dir=tmp_path / "c")
    subset = [(f, w) for f, w in TINY_VAL if w in TINY_WNIDS[:2]]
    assert ds.class_names == ("goldfish", "European fire salamander")
    assert ds.labels.tolist() == [TINY_WNIDS.index(w) for _, w in subset] == [0, 1, 0, 1]
    for i, (filename, _) in enumerate(subset):
        assert _max_diff(ds.images[i], _pil_rgb(tiny_root / "val/images" / filename)) <= 2


def test_tiny_resize_at_load_time(tiny_root: Path, tmp_path: Path) -> None:
    full = load_dataset("tinyimagenet", tiny_root, "train", cache_dir=tmp_path / "c")
    small = load_dataset("tinyimagenet", tiny_root, "train", image_size=32, cache_dir=tmp_path / "c")
    assert small.images.shape == (11, 3, 32, 32) and small.images.dtype == torch.uint8
    assert torch.equal(small.images, TF.resize(full.images, [32, 32], antialias=True))


def test_tiny_accepts_parent_folder(tiny_root: Path, tmp_path: Path) -> None:
    ds = load_dataset("tinyimagenet", tiny_root.parent, "train", cache_dir=tmp_path / "c")
    assert len(ds) == 11


class _CountingDecoder:
    """Wraps tiny._decode_jpegs to count how many images were actually decoded."""

    def __init__(self) -> None:
        self.decoded = 0
        self._decode = tiny._decode_jpegs

    def __call__(self, paths, image_size):
        self.decoded += len(paths)
        return self._decode(paths, image_size)


def test_tiny_cache_hit_skips_decoding(tiny_root: Path, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    first = load_dataset("tinyimagenet", tiny_root, "train", image_size=32, cache_dir=cache)
    assert len(list(cache.glob("tinyimagenet-train-allc-32px-*.pt"))) == 1
    counter = _CountingDecoder()
    monkeypatch.setattr(tiny, "_decode_jpegs", counter)
    again = load_dataset("tinyimagenet", tiny_root, "train", image_size=32, cache_dir=cache)
    assert counter.decoded == 0
    assert torch.equal(again.images, first.images) and torch.equal(again.labels, first.labels)
    assert again.class_names == first.class_names
    other_key = load_dataset("tinyimagenet", tiny_root, "train", num_classes=2, cache_dir=cache)
    assert counter.decoded == 6 and len(other_key) == 6  # another (num_classes, size) is a miss


def test_tiny_cache_invalidated_when_files_change(tiny_root: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    load_dataset("tinyimagenet", tiny_root, "train", cache_dir=cache)
    counter = _CountingDecoder()
    monkeypatch.setattr(tiny, "_decode_jpegs", counter)
    extra = tiny_root / "train/n01641577/images/n01641577_2.JPEG"
    _save_jpeg(extra, np.random.default_rng(5), 2)
    added = load_dataset("tinyimagenet", tiny_root, "train", cache_dir=cache)
    assert counter.decoded == 12 and len(added) == 12 and added.labels.tolist().count(2) == 3
    assert _max_diff(added.images[8], _pil_rgb(extra)) <= 2
    (tiny_root / "train/n01443537/images/n01443537_0.JPEG").unlink()
    removed = load_dataset("tinyimagenet", tiny_root, "train", cache_dir=cache)
    assert counter.decoded == 23 and len(removed) == 11 and removed.labels.tolist().count(0) == 2
    load_dataset("tinyimagenet", tiny_root, "train", cache_dir=cache)
    assert counter.decoded == 23  # and the rewritten cache is used again


def test_tiny_cache_invalidated_when_class_order_changes(tiny_root: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The cache holds images only; labels come from the text files. Same files in another order
    must not reuse cached images that would no longer line up with the labels."""
    cache = tmp_path / "cache"
    load_dataset("tinyimagenet", tiny_root, "train", cache_dir=cache)
    (tiny_root / "wnids.txt").write_text("\n".join(reversed(TINY_WNIDS)) + "\n")
    counter = _CountingDecoder()
    monkeypatch.setattr(tiny, "_decode_jpegs", counter)
    cached = load_dataset("tinyimagenet", tiny_root, "train", cache_dir=cache)
    fresh = load_dataset("tinyimagenet", tiny_root, "train", use_cache=False)
    assert counter.decoded == 22 and torch.equal(cached.images, fresh.images)
    assert cached.class_names[0] == "n01644900" and cached.labels.tolist()[:3] == [0, 0, 0]


def test_tiny_corrupt_cache_is_a_miss(tiny_root: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = load_dataset("tinyimagenet", tiny_root, "val", cache_dir=cache)
    (cache_file,) = cache.glob("*.pt")
    cache_file.write_bytes(b"not a torch file")
    again = load_dataset("tinyimagenet", tiny_root, "val", cache_dir=cache)
    assert torch.equal(again.images, first.images)


def test_tiny_default_cache_dir_and_fallback(tiny_root: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    load_dataset("tinyimagenet", tiny_root, "val")
    assert len(list((tiny_root / ".mollify-cache").glob("tinyimagenet-test-*.pt"))) == 1
    # Root not writable (as for a read-only shared copy): fall back to ~/.cache/mollify-lab. Tests may
    # run as root, for whom chmod does not deny writes, so the permission check itself is faked.
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: real_access(p, mode)
                        and not Path(p).is_relative_to(tiny_root))
    assert tiny._default_cache_dir(tiny_root) == tmp_path / "home/.cache/mollify-lab"


def test_tiny_use_cache_false_writes_nothing(tiny_root: Path, tmp_path: Path) -> None:
    load_dataset("tinyimagenet", tiny_root, "val", cache_dir=tmp_path / "c", use_cache=False)
    assert not (tmp_path / "c").exists()


def test_tiny_missing_root_explains_layout(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("tinyimagenet", tmp_path / "nowhere", "train")
    message = str(info.value)
    assert str((tmp_path / "nowhere").resolve()) in message
    assert "https://cs231n.stanford.edu/tiny-imagenet-200.zip" in message
    assert "train/<wnid>/images/*.JPEG" in message and "val/val_annotations.txt" in message
    assert "partial" in message


def test_tiny_missing_val_annotations(tiny_root: Path) -> None:
    (tiny_root / "val" / "val_annotations.txt").unlink()
    with pytest.raises(DatasetNotFoundError, match="val_annotations.txt not found"):
        load_dataset("tinyimagenet", tiny_root, "val", use_cache=False)


def test_tiny_missing_annotated_val_image(tiny_root: Path) -> None:
    (tiny_root / "val" / "images" / "val_3.JPEG").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"1 annotated val images missing.*val_3"):
        load_dataset("tinyimagenet", tiny_root, "val", use_cache=False)


def test_tiny_train_class_without_images_warns(tiny_root: Path) -> None:
    for path in (tiny_root / "train/n01629819/images").iterdir():
        path.unlink()
    with pytest.warns(UserWarning, match="no images for classes n01629819"):
        ds = load_dataset("tinyimagenet", tiny_root, "train", use_cache=False)
    assert ds.num_classes == 4 and 1 not in ds.labels.tolist()


def test_tiny_no_train_images_at_all(tiny_root: Path) -> None:
    for path in (tiny_root / "train").rglob("*.JPEG"):
        path.unlink()
    with pytest.raises(DatasetNotFoundError, match="no train images found"):
        load_dataset("tinyimagenet", tiny_root, "train", use_cache=False)


def test_tiny_decoders_agree(tiny_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """torchvision.io (default) and PIL (fallback once torchvision drops its codecs) give the same
    images, greyscale included, and the default emits no torchvision deprecation warnings."""
    assert tiny.JPEG_BACKEND == "torchvision"
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        fast = load_dataset("tinyimagenet", tiny_root, "train", use_cache=False)
    monkeypatch.setattr(tiny, "JPEG_BACKEND", "pil")
    slow = load_dataset("tinyimagenet", tiny_root, "train", use_cache=False)
    assert _max_diff(fast.images, slow.images) <= 2 and torch.equal(fast.labels, slow.labels)


@pytest.mark.parametrize("backend", ["torchvision", "pil"])
def test_tiny_undecodable_file_is_named(tiny_root: Path, backend: str,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tiny, "JPEG_BACKEND", backend)
    (tiny_root / "val/images/val_2.JPEG").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(ValueError, match="cannot decode .*val_2.JPEG"):
        load_dataset("tinyimagenet", tiny_root, "val", use_cache=False)


def test_tiny_message_builder(tmp_path: Path) -> None:
    message = tiny_missing_message(tmp_path, "wnids.txt not found")
    assert str(tmp_path.resolve()) in message and "wnids.txt not found" in message
    assert TINY_IMAGENET_URL in message and "\n" not in message


# ---------------------------------------------------------------------------------------------
# Tiny ImageNet: the real images (shared data folder; skipped when absent)


def _annotations(root: Path) -> list[tuple[str, str]]:
    rows = (root / "val/val_annotations.txt").read_text().splitlines()
    return [tuple(row.split("\t")[:2]) for row in rows if row]


def test_real_tiny_train_10_classes_32px(tiny_imagenet_root: Path, tmp_path: Path) -> None:
    ds = load_dataset("tinyimagenet", tiny_imagenet_root, "train", num_classes=10, image_size=32,
                      cache_dir=tmp_path)
    assert ds.images.shape == (2500, 3, 32, 32) and ds.images.dtype == torch.uint8
    assert torch.bincount(ds.labels).tolist() == [250] * 10
    assert ds.class_names[0] == "goldfish"
    wnid = (tiny_imagenet_root / "wnids.txt").read_text().split()[3]
    first = sorted((tiny_imagenet_root / "train" / wnid / "images").glob("*.JPEG"))[0]
    expected = TF.resize(_pil_rgb(first)[None], [32, 32], antialias=True)[0]
    assert _max_diff(ds.images[750], expected) <= 2
    _assert_plausible_pixels(ds.images)


def test_real_tiny_val_10_classes_32px(tiny_imagenet_root: Path, tmp_path: Path) -> None:
    ds = load_dataset("tinyimagenet", tiny_imagenet_root, "val", num_classes=10, image_size=32,
                      cache_dir=tmp_path)
    wnids = (tiny_imagenet_root / "wnids.txt").read_text().split()[:10]
    rows = [(f, w) for f, w in _annotations(tiny_imagenet_root) if w in wnids]
    assert ds.images.shape == (500, 3, 32, 32) and len(rows) == 500
    assert ds.labels.tolist() == [wnids.index(w) for _, w in rows]
    assert torch.bincount(ds.labels).tolist() == [50] * 10
    for i in (0, 1, 2, 499):  # a few entries, pixel for pixel
        filename, _ = rows[i]
        image = _pil_rgb(tiny_imagenet_root / "val/images" / filename)
        assert _max_diff(ds.images[i], TF.resize(image[None], [32, 32], antialias=True)[0]) <= 2
    _assert_plausible_pixels(ds.images)


def test_real_tiny_full_val_native(tiny_imagenet_root: Path) -> None:
    ds = load_dataset("tinyimagenet", tiny_imagenet_root, "val", use_cache=False)
    assert ds.images.shape == (10000, 3, 64, 64) and ds.num_classes == 200
    assert torch.bincount(ds.labels, minlength=200).tolist() == [50] * 200
    greys = (ds.images[:, 0] == ds.images[:, 1]).flatten(1).all(1) \
        & (ds.images[:, 1] == ds.images[:, 2]).flatten(1).all(1)
    assert 0.005 < greys.float().mean() < 0.05  # about 1.8% of the images are greyscale
    _assert_plausible_pixels(ds.images)


def _assert_plausible_pixels(images: torch.Tensor) -> None:
    pixels = images[::7].float().div(255).transpose(0, 1).flatten(1)  # a sample suffices
    mean, std = pixels.mean(1), pixels.std(1)
    assert ((0.3 < mean) & (mean < 0.65)).all(), mean
    assert ((0.15 < std) & (std < 0.35)).all(), std


# ---------------------------------------------------------------------------------------------
# Synthetic


def test_synthetic_defaults() -> None:
    train = load_dataset("synthetic", "unused", "train")
    test = load_dataset("synthetic", "unused", "test")
    assert train.images.shape == (2000, 3, 32, 32) and test.images.shape == (500, 3, 32, 32)
    assert train.images.dtype == torch.uint8 and train.labels.dtype == torch.int64
    assert train.num_classes == 10 and torch.bincount(train.labels).tolist() == [200] * 10
    assert (train.mean, train.std) == DATASET_STATS["synthetic"]
    pixels = train.images.float().div(255)
    assert abs(pixels.mean() - 0.5) < 0.05 and abs(pixels.std() - 0.25) < 0.07


def test_synthetic_size_classes_and_image_size_honoured() -> None:
    ds = load_dataset("synthetic", "unused", "train", num_classes=7, image_size=20, synthetic_size=71)
    assert ds.images.shape == (71, 3, 20, 20) and ds.num_classes == 7
    counts = torch.bincount(ds.labels, minlength=7)
    assert counts.sum() == 71 and counts.max() - counts.min() <= 1  # as balanced as possible


def test_synthetic_deterministic_per_seed_and_split() -> None:
    a = load_dataset("synthetic", "unused", "train", seed=3, synthetic_size=300)
    b = load_dataset("synthetic", "unused", "train", seed=3, synthetic_size=300)
    c = load_dataset("synthetic", "unused", "train", seed=4, synthetic_size=300)
    t = load_dataset("synthetic", "unused", "test", seed=3, synthetic_size=300)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, c.images)
    assert not torch.equal(a.images, t.images)
    # no test image is a copy of a train image
    train_images = {bytes(image) for image in a.images.flatten(1).numpy()}
    assert not any(bytes(image) in train_images for image in t.images.flatten(1).numpy())


def test_synthetic_prototypes_independent_of_class_count() -> None:
    assert torch.equal(synthetic._prototype(0, 2, 32), synthetic._prototype(0, 2, 32))
    assert not torch.equal(synthetic._prototype(0, 2, 32), synthetic._prototype(0, 3, 32))
    assert not torch.equal(synthetic._prototype(0, 2, 32), synthetic._prototype(1, 2, 32))


def test_synthetic_learnable_but_not_trivial() -> None:
    """Nearest class mean on shift-invariant features (colour means, |FFT| at low frequencies):
    far above chance (10%), yet not perfect. A small CNN reaches ~50% after 2 epochs and ~90% after
    6 (measured during development; too slow for the unit tests on two CPU cores)."""
    train = load_dataset("synthetic", "unused", "train", seed=1)
    test = load_dataset("synthetic", "unused", "test", seed=1)

    def features(images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 255
        spectrum = torch.fft.fft2(x - x.mean((-2, -1), keepdim=True)).abs()[..., :4, :4]
        return torch.cat([x.mean((-2, -1)) * 10, spectrum.flatten(1) / 100], 1)

    f_train, f_test = features(train.images), features(test.images)
    centroids = torch.stack([f_train[train.labels == k].mean(0) for k in range(10)])
    accuracy = (torch.cdist(f_test, centroids).argmin(1) == test.labels).float().mean()
    assert 0.4 < accuracy < 0.99, accuracy


# ---------------------------------------------------------------------------------------------
# API surface and errors


def test_registry_names() -> None:
    assert set(DATASETS) == {"synthetic", "cifar10", "cifar100", "tinyimagenet"}
    assert set(STREAMED) == {"imagenet"} and not set(STREAMED) & set(DATASETS)
    assert set(DATASET_STATS) == set(DATASETS) | set(STREAMED)


def test_unknown_dataset_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown dataset 'imagenet21k'.*cifar10, cifar100, imagenet, synthetic, "
                                         "tinyimagenet"):
        load_dataset("imagenet21k", ".", "train")


def test_a_streamed_dataset_is_never_loaded_whole() -> None:
    with pytest.raises(DatasetError, match=r"dataset 'imagenet' is streamed .*trainables\.data\.stream"):
        load_dataset("imagenet", ".", "train")


@pytest.mark.parametrize("name, split, valid", [("cifar10", "val", "train, test"),
                                                ("synthetic", "training", "train, test"),
                                                ("tinyimagenet", "validation", "train, test, val")])
def test_unknown_split_lists_valid_ones(name: str, split: str, valid: str) -> None:
    with pytest.raises(ValueError, match=f"unknown split '{split}' for dataset '{name}'; valid: {valid}"):
        load_dataset(name, ".", split)


def test_too_many_classes(tiny_root: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="num_classes=5 but tinyimagenet has only 4 classes"):
        load_dataset("tinyimagenet", tiny_root, "train", num_classes=5)
    write_cifar10(tmp_path / "c")
    with pytest.raises(ValueError, match="num_classes=11 but cifar10 has only 10 classes"):
        _load_unverified("cifar10", tmp_path / "c", "train", num_classes=11, download=False)


@pytest.mark.parametrize("kwargs", [{"num_classes": 0}, {"image_size": -1}, {"synthetic_size": 0},
                                    {"num_classes": 2.5}])
def test_bad_numbers(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="must be a positive int or None"):
        load_dataset("synthetic", ".", "train", **kwargs)


def test_imageset_validates_and_moves() -> None:
    ds = load_dataset("synthetic", ".", "test", synthetic_size=20, device="meta")
    assert ds.images.device.type == "meta" and ds.labels.device.type == "meta"
    cpu = load_dataset("synthetic", ".", "test", synthetic_size=20)
    assert cpu.to("cpu").images is cpu.images
    with pytest.raises(ValueError, match="images must be uint8"):
        ImageSet(cpu.images.float(), cpu.labels, cpu.class_names, cpu.mean, cpu.std)
    with pytest.raises(ValueError, match="labels must be int64"):
        ImageSet(cpu.images, cpu.labels[:5], cpu.class_names, cpu.mean, cpu.std)


@pytest.mark.gpu
def test_load_onto_cuda() -> None:
    ds = load_dataset("synthetic", ".", "train", synthetic_size=100, device="cuda")
    assert ds.images.is_cuda and ds.labels.is_cuda and ds.images.dtype == torch.uint8


# ---------------------------------------------------------------------------------------------
# Validation split (METHOD.md section 6)


def _train_split(name: str, root: Path, tmp_path: Path) -> ImageSet:
    """A training split of each dataset: synthetic, or files written in the official format."""
    if name == "synthetic":
        return load_dataset("synthetic", root, "train", synthetic_size=300)
    if name == "cifar10":
        write_cifar10(root, per_batch=40)
    elif name == "cifar100":
        write_cifar100(root, n_train=2000)
    else:
        root = make_tiny_tree(root)
        return load_dataset(name, root, "train", cache_dir=tmp_path / "cache")
    return _load_unverified(name, root, "train", download=False)


def _rows(images: torch.Tensor) -> list[bytes]:
    return [bytes(row) for row in images.flatten(1).numpy()]


SPLIT_CASES = [("synthetic", 5), ("cifar10", 3), ("cifar100", 2), ("tinyimagenet", 1)]


def test_every_dataset_has_a_split_case() -> None:
    assert {name for name, _ in SPLIT_CASES} == set(DATASETS)


@pytest.mark.parametrize("name, per_class", SPLIT_CASES)
def test_validation_split_is_stratified_disjoint_and_complete(name: str, per_class: int, tmp_path: Path) -> None:
    full = _train_split(name, tmp_path / "data", tmp_path)
    train, valid = split_validation(full, per_class, seed=0)
    k = full.num_classes
    assert len(valid) == per_class * k and len(train) == len(full) - per_class * k
    assert torch.bincount(valid.labels, minlength=k).tolist() == [per_class] * k  # stratified
    assert valid.labels[:k].tolist() == list(range(k))  # interleaved: any first N are balanced
    # a partition of the training split: nothing held out is trained on, nothing is lost
    assert not set(_rows(train.images)) & set(_rows(valid.images))
    assert sorted(_rows(torch.cat([train.images, valid.images]))) == sorted(_rows(full.images))
    pairs = set(zip(_rows(full.images), full.labels.tolist()))
    assert set(zip(_rows(valid.images), valid.labels.tolist())) <= pairs  # labels travel with images
    # the kept images keep their order
    kept = [i for i, row in enumerate(_rows(full.images)) if row not in set(_rows(valid.images))]
    assert torch.equal(train.images, full.images[kept]) and torch.equal(train.labels, full.labels[kept])
    assert (train.class_names, train.mean, valid.std) == (full.class_names, full.mean, full.std)


@pytest.mark.parametrize("name, per_class", SPLIT_CASES)
def test_validation_split_depends_on_the_labels_and_its_own_seed_only(name: str, per_class: int,
                                                                      tmp_path: Path) -> None:
    full = _train_split(name, tmp_path / "data", tmp_path)
    _, valid = split_validation(full, per_class, seed=0)
    _, again = split_validation(full, per_class, seed=0)
    assert torch.equal(valid.images, again.images) and torch.equal(valid.labels, again.labels)
    # other pixels, same labels (what another training seed changes): the same positions held out
    negative = dataclasses.replace(full, images=255 - full.images)
    assert torch.equal(split_validation(negative, per_class, seed=0)[1].images, 255 - valid.images)
    if name != "tinyimagenet":  # the hand-made tree has 2-3 images a class: one held out of 2 may repeat
        assert not torch.equal(split_validation(full, per_class, seed=1)[1].images, valid.images)


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "tinyimagenet"])
def test_every_trial_holds_out_the_same_images_whatever_its_seed(name: str, tmp_path: Path) -> None:
    root = tmp_path / "data"
    _train_split(name, root, tmp_path)
    data_root = root / "tiny-imagenet-200" if name == "tinyimagenet" else root
    splits = []
    for seed in (0, 7):
        cfg = TrialConfig(dataset=name, data_root=str(data_root), valid_per_class=1, seed=seed, beta=2.0 + seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DatasetChecksumWarning)
            splits.append(load_splits(cfg, torch.device("cpu")))
    (train_a, valid_a, _), (train_b, valid_b, _) = splits
    assert torch.equal(valid_a.images, valid_b.images) and torch.equal(train_a.images, train_b.images)


@pytest.mark.parametrize("num_classes", [None, 3])
@pytest.mark.parametrize("name", sorted(DATASETS))
def test_class_counts_are_the_loaded_labels_without_making_images(name: str, num_classes: int | None,
                                                                  tmp_path: Path, monkeypatch) -> None:
    """What a study's driver checks valid_per_class against (study/guards.py): the classes and
    counts of the split the loader loads, for every dataset and a class subset, with no image decoded
    (Tiny ImageNet) or generated (synthetic)."""
    root = tmp_path / "data"
    _train_split(name, root, tmp_path)  # writes the files
    data_root = root / "tiny-imagenet-200" if name == "tinyimagenet" else root
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DatasetChecksumWarning)
        loaded = load_dataset(name, data_root, "train", num_classes=num_classes, synthetic_size=300, download=False,
                              cache_dir=tmp_path / "cache")
        monkeypatch.setattr(tiny, "_decode_jpegs", None)  # calling it would fail the test
        monkeypatch.setattr(synthetic, "_synthetic_images", None)
        counts = class_counts(name, data_root, "train", num_classes=num_classes, synthetic_size=300)
    assert counts == list(zip(loaded.class_names, torch.bincount(loaded.labels, minlength=loaded.num_classes).tolist()))


def test_no_validation_split_leaves_the_training_split_exactly_as_it_was() -> None:
    full = load_dataset("synthetic", "unused", "train", synthetic_size=200, seed=3)
    train, valid = split_validation(full, 0, seed=0)
    assert train is full and len(valid) == 0 and valid.images.shape[1:] == full.images.shape[1:]
    cfg = TrialConfig(dataset="synthetic", train_size=200, seed=3)
    loaded, none, _ = load_splits(cfg, torch.device("cpu"))
    assert none is None and torch.equal(loaded.images, full.images) and torch.equal(loaded.labels, full.labels)


def test_a_class_too_small_to_hold_out_is_named(tiny_root: Path, tmp_path: Path) -> None:
    full = load_dataset("tinyimagenet", tiny_root, "train", cache_dir=tmp_path / "cache")  # 3, 3, 2, 3 a class
    with pytest.raises(ValueError, match=r"cannot hold out 2 validation images per class: class\(es\) "
                                         r"'bullfrog' \(2\) have no more training images than that \(at most 1"):
        split_validation(full, 2, seed=0)
    cfg = TrialConfig(dataset="tinyimagenet", data_root=str(tiny_root), valid_per_class=3)
    with pytest.raises(ConfigError, match=r"config key 'valid_per_class': cannot hold out 3"):
        load_splits(cfg, torch.device("cpu"))
