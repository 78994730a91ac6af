"""The ImageNet-format smoke folder built from Tiny ImageNet (trainables/data/imagenet_smoke.py): on
the hand-made Tiny ImageNet tree of helpers.py (quick), and on the real one where present (slow)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import TINY_WNIDS, make_tiny_tree
from trainables.data import DatasetError, imagenet_files
from trainables.data.imagenet_smoke import MARKER, build_smoke, main
from trainables.data.stream import eval_batches


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return make_tiny_tree(tmp_path / "data")  # 4 classes; 3, 3, 2, 3 train and 2 val images each


def test_the_smoke_folder_is_imagenets_layout_and_reads_back(tiny: Path, tmp_path: Path) -> None:
    out = build_smoke(tiny, tmp_path / "smoke", classes=2, train_per_class=2, val_per_class=2, size=48)
    first, second = TINY_WNIDS[:2]
    assert sorted(os.listdir(out / "train" / first)) == [f"{first}_0.JPEG", f"{first}_1.JPEG"]
    # val numbered 1.. in val_annotations.txt's order over the kept rows (val_1, val_3, val_4, val_6)
    assert sorted(os.listdir(out / "val" / first)) == ["ILSVRC2012_val_00000001.JPEG", "ILSVRC2012_val_00000003.JPEG"]
    assert sorted(os.listdir(out / "val" / second)) == ["ILSVRC2012_val_00000002.JPEG", "ILSVRC2012_val_00000004.JPEG"]
    train, val = imagenet_files(out, "train"), imagenet_files(out, "val")
    assert train.class_names == ("goldfish", "European fire salamander") and train.wnids == (first, second)
    assert train.labels.tolist() == [0, 0, 1, 1] and val.labels.tolist() == [0, 0, 1, 1]
    with Image.open(train.paths[2]) as image:
        assert image.size == (48, 48) and image.format == "JPEG"
    source = np.asarray(Image.open(tiny / "train" / second / "images" / f"{second}_0.JPEG").convert("RGB"), float)
    assert abs(np.asarray(Image.open(train.paths[2]), float).mean((0, 1)) - source.mean((0, 1))).max() < 3
    images = torch.cat([x for x, _ in eval_batches(val, image_size=48, batch_size=3, device=torch.device("cpu"),
                                                   resize=48)])
    assert images.shape == (4, 3, 48, 48)


def test_a_complete_build_is_kept_and_an_interrupted_or_other_one_rebuilt(tiny: Path, tmp_path: Path) -> None:
    out = build_smoke(tiny, tmp_path / "smoke", classes=2, train_per_class=1, val_per_class=1, size=32)
    stamp = (out / MARKER).stat().st_mtime_ns
    assert build_smoke(tiny, out, classes=2, train_per_class=1, val_per_class=1, size=32) == out
    assert (out / MARKER).stat().st_mtime_ns == stamp  # left alone
    (out / MARKER).unlink()  # as if interrupted before the marker
    (out / "stray.txt").write_text("half a build")
    build_smoke(tiny, out, classes=2, train_per_class=1, val_per_class=1, size=32)
    assert (out / MARKER).is_file() and not (out / "stray.txt").exists()
    main(["--from", str(tiny), "--out", str(out), "--classes", "3", "--train-per-class", "2", "--val-per-class", "1",
          "--size", "40"])
    assert json.loads((out / MARKER).read_text())["size"] == 40 and len(imagenet_files(out, "train").wnids) == 3
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".")] == []  # no temporary folder left


def test_a_class_too_short_for_the_request_is_named(tiny: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"fewer than 3 train / 1 val images for class\(es\) n01641577 "
                                           r"\(2 train, 1 val\)"):
        build_smoke(tiny, tmp_path / "smoke", classes=3, train_per_class=3, val_per_class=1)
    assert not (tmp_path / "smoke").exists()


@pytest.mark.slow
def test_the_smoke_folder_from_real_tiny_imagenet(tiny_imagenet_root: Path, tmp_path: Path) -> None:
    out = build_smoke(tiny_imagenet_root, tmp_path / "smoke", classes=3, train_per_class=5, val_per_class=4, size=96)
    train, val = imagenet_files(out, "train"), imagenet_files(out, "val")
    assert (len(train), len(val), train.num_classes) == (15, 12, 3) and train.class_names[0] == "goldfish"
    assert val.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
