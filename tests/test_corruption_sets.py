"""Corrupted sets: the three sources measure the same thing (on the fly equals the generated
Tiny-ImageNet-C tree of the same images, through the release's JPEG round trip), and
`corruption_source: auto` takes the official release when it is there and otherwise generates a set
once and reuses it (trainables/corruptions/provision.py). Real files in tmp_path throughout."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.io import ImageReadMode, decode_jpeg, encode_jpeg

from trainables.config import ConfigError, TrialConfig
from trainables.corruptions import (
    CorruptionSpec, GenerateRequest, evaluate_corruptions, generate_corrupted_set, jpeg_round_trip,
    load_corrupted_cell,
)
from trainables.corruptions.provision import MANIFEST, resolve_corruption_set
from trainables.data import ImageSet, load_dataset
from trainables.train import load_test_split

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding:DeprecationWarning")


class Recorder(torch.nn.Module):
    """A small fixed convolutional network that keeps every batch it is shown, to compare what two
    evaluations fed it."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        conv, head = torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.Linear(8, num_classes)
        for p in (*conv.parameters(), *head.parameters()):
            torch.nn.init.normal_(p, std=0.3, generator=g)
        self.net = torch.nn.Sequential(conv, torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), head)
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.clone())
        return self.net(x)


def evaluate_recorded(test: ImageSet, spec: CorruptionSpec, data_root: Path, batch_size: int):
    model = Recorder(test.num_classes)
    metrics, extras = evaluate_corruptions(model, test, spec, dataset="tinyimagenet", batch_size=batch_size,
                                           precision="fp32", data_root=data_root)
    return metrics, extras, model.seen


# ---------------------------------------------------------------------------------------------
# On the fly = generated, for a JPEG-tree dataset


@pytest.fixture(scope="module")
def tiny_generated(tiny_imagenet_root: Path, tmp_path_factory: pytest.TempPathFactory):
    """The real val images of 3 Tiny ImageNet classes (150, in val order) and their generated
    Tiny-ImageNet-C tree for two corruptions at two severities, written in batches of 64."""
    out = tmp_path_factory.mktemp("tiny-c")
    request = GenerateRequest("tinyimagenet", out, tiny_imagenet_root, ("gaussian_noise", "contrast"), (1, 3),
                              num_classes=3, batch_size=64, progress=lambda line: None)
    generate_corrupted_set(request)
    test = load_dataset("tinyimagenet", tiny_imagenet_root, "test", num_classes=3)
    assert len(test) == 150 and test.labels.tolist() != sorted(test.labels.tolist())  # val order mixes classes
    return test, out


def test_on_the_fly_equals_the_generated_tree(tiny_generated, tiny_imagenet_root: Path) -> None:
    """Same cells, same batch size: the network sees the very same images in the same order, so
    logits and every metric are identical (the tree is read back in the clean test order)."""
    test, out = tiny_generated
    cells = dict(corruptions=("gaussian_noise", "contrast"), severities=(1, 3))
    fly, fly_extra, fly_seen = evaluate_recorded(test, CorruptionSpec(**cells), tiny_imagenet_root, 64)
    gen, gen_extra, gen_seen = evaluate_recorded(test, CorruptionSpec("generated", str(out), **cells),
                                                 tiny_imagenet_root, 64)
    assert len(fly_seen) == len(gen_seen) == 4 * 3  # 4 cells x batches of 64, 64, 22
    for a, b in zip(fly_seen, gen_seen):
        assert torch.equal(a, b)
    assert fly == gen and fly_extra == gen_extra
    assert fly["corrupt/gaussian_noise/s3/error"] >= 0 and "corrupt/contrast/s1/ece_batch100" in fly


def test_limited_test_set_takes_the_same_images_from_files(tiny_generated, tiny_imagenet_root: Path) -> None:
    """limit_corrupt_images keeps the first N clean images; a file cell must be cut to those same
    images, not to the first N files of the first classes."""
    test, out = tiny_generated
    first = dataclasses.replace(test, images=test.images[:40], labels=test.labels[:40])
    cells = dict(corruptions=("contrast",), severities=(3,))  # deterministic: independent of batching
    fly, _, fly_seen = evaluate_recorded(first, CorruptionSpec(**cells), tiny_imagenet_root, 500)
    gen, _, gen_seen = evaluate_recorded(first, CorruptionSpec("generated", str(out), **cells),
                                         tiny_imagenet_root, 500)
    assert torch.equal(fly_seen[0], gen_seen[0])
    assert fly == gen


def test_tree_cell_is_read_in_the_clean_test_order(tiny_generated, tiny_imagenet_root: Path) -> None:
    test, out = tiny_generated
    cell = load_corrupted_cell("tinyimagenet", out, "contrast", 1, source="generated", num_classes=3,
                               data_root=tiny_imagenet_root)
    assert torch.equal(cell.labels, test.labels)


def test_jpeg_round_trip_is_the_release_encoding() -> None:
    x = load_dataset("synthetic", "unused", "test", image_size=64, synthetic_size=6).images.float() / 255
    y = jpeg_round_trip(x)
    assert y.shape == x.shape and y.dtype == torch.float32 and not torch.equal(x, y)
    levels = y * 255
    assert torch.equal(levels, levels.round()) and 0 <= float(y.min()) and float(y.max()) <= 1
    for image, out in zip(x, y):
        u8 = torch.round(image * 255).to(torch.uint8)
        direct = decode_jpeg(encode_jpeg(u8, quality=85), mode=ImageReadMode.RGB).float() / 255
        assert torch.equal(out, direct)
    assert not torch.equal(jpeg_round_trip(x, quality=95), y)


# ---------------------------------------------------------------------------------------------
# corruption_source: auto


AUTO = dict(dataset="synthetic", corruption_source="auto", corruptions="contrast,gaussian_noise",
            image_size=16, device="cpu")


def auto_config(root: Path, **overrides) -> TrialConfig:
    return TrialConfig(**{**AUTO, "corruption_path": str(root), **overrides})


def resolve(cfg: TrialConfig) -> tuple[TrialConfig, list[str]]:
    lines: list[str] = []
    return resolve_corruption_set(cfg, progress=lines.append), lines


def generated_entries(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "generated").iterdir())


def test_auto_without_a_release_generates_once(tmp_path: Path) -> None:
    root = tmp_path / "corrupted"
    cfg = auto_config(root)
    first, lines = resolve(cfg)
    assert first.corruption_source == "generated" and first.corruptions == cfg.corruptions
    folder = Path(first.corruption_path)
    assert folder.parent == (root / "generated").resolve()
    assert any("generating" in line for line in lines)
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["corruptions"] == ["contrast", "gaussian_noise"] and manifest["severities"] == [1, 2, 3, 4, 5]
    assert {p.name for p in folder.iterdir()} == {MANIFEST, "labels.npy", "contrast.npy", "gaussian_noise.npy"}
    stamp = (folder / MANIFEST).stat().st_mtime_ns

    again, lines = resolve(cfg.replace(seed=0, beta=4.0))  # another trial of the same study
    assert again == first.replace(beta=4.0) and lines == []
    assert (folder / MANIFEST).stat().st_mtime_ns == stamp
    assert generated_entries(root) == [folder.name]  # no staging folder left behind


def test_generated_set_holds_the_trials_images(tmp_path: Path) -> None:
    """The generated cells are the corrupted clean test split the trial evaluates on, so reading
    the set back gives the trial's labels (synthetic data depends on the trial's seed)."""
    for seed in (0, 1):
        cfg, _ = resolve(auto_config(tmp_path, seed=seed))
        test = load_test_split(cfg, torch.device("cpu"))
        cell = load_corrupted_cell("synthetic", cfg.corruption_path, "contrast", 2, source="generated")
        assert torch.equal(cell.labels, test.labels), seed
        assert cell.images.shape == test.images.shape


def test_auto_regenerates_when_more_corruptions_are_asked_for(tmp_path: Path) -> None:
    small, _ = resolve(auto_config(tmp_path, corruptions="contrast"))
    before = np.load(Path(small.corruption_path) / "contrast.npy")
    more, lines = resolve(auto_config(tmp_path, corruptions="contrast,fog"))
    assert more.corruption_path == small.corruption_path and any("generating" in line for line in lines)
    folder = Path(more.corruption_path)
    assert json.loads((folder / MANIFEST).read_text())["corruptions"] == ["contrast", "fog"]
    assert (folder / "fog.npy").is_file()
    assert np.array_equal(np.load(folder / "contrast.npy"), before)  # the same images, made again
    assert generated_entries(tmp_path) == [folder.name]
    fewer, lines = resolve(auto_config(tmp_path, corruptions="fog"))  # a subset is found, not made
    assert fewer.corruption_path == more.corruption_path and lines == []


def test_auto_points_at_a_generated_folder(tmp_path: Path) -> None:
    made, _ = resolve(auto_config(tmp_path))
    pointed, lines = resolve(auto_config(Path(made.corruption_path)))
    assert (pointed.corruption_source, pointed.corruption_path) == ("generated", made.corruption_path)
    assert lines == [] and not (Path(made.corruption_path) / "generated").exists()


def write_npy_release(folder: Path, corruptions: list[str], n: int = 4, side: int = 32) -> None:
    """A tiny release in the CIFAR-10-C format: <c>.npy uint8 (5 n, side, side, 3), labels.npy."""
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "labels.npy", np.tile(np.arange(n) % 10, 5).astype(np.uint8))
    for c in corruptions:
        np.save(folder / f"{c}.npy", np.full((5 * n, side, side, 3), 128, dtype=np.uint8))


def test_auto_picks_an_official_npy_release(tmp_path: Path) -> None:
    write_npy_release(tmp_path / "CIFAR-10-C", ["contrast", "gaussian_noise"])
    cfg, lines = resolve(auto_config(tmp_path, dataset="cifar10", image_size=None))
    assert (cfg.corruption_source, cfg.corruption_path) == ("official", str((tmp_path / "CIFAR-10-C").resolve()))
    assert lines == [] and not (tmp_path / "generated").exists()
    # synthetic has no release of its own name: its npy files directly under corruption_path
    write_npy_release(tmp_path / "synthetic-c", ["contrast", "gaussian_noise"], side=16)
    cfg, _ = resolve(auto_config(tmp_path / "synthetic-c"))
    assert (cfg.corruption_source, cfg.corruption_path) == ("official", str((tmp_path / "synthetic-c").resolve()))


def test_auto_generates_when_the_release_lacks_a_cell(tmp_path: Path) -> None:
    write_npy_release(tmp_path, ["contrast"], side=16)  # gaussian_noise.npy missing
    cfg, lines = resolve(auto_config(tmp_path))
    assert cfg.corruption_source == "generated"
    assert Path(cfg.corruption_path).parent == (tmp_path / "generated").resolve()
    assert any("generating" in line for line in lines)


def test_auto_picks_an_official_tree_release(tmp_path: Path) -> None:
    for c in ("contrast", "gaussian_noise"):
        for s in (1, 2):
            (tmp_path / "Tiny-ImageNet-C" / c / str(s) / "n01443537").mkdir(parents=True)
    cfg = TrialConfig(dataset="tinyimagenet", data_root=str(tmp_path / "clean"), corruption_source="auto",
                      corruption_path=str(tmp_path), corruptions="contrast,gaussian_noise", severities="1,2")
    found, lines = resolve(cfg)
    assert (found.corruption_source, found.corruption_path) == (
        "official", str((tmp_path / "Tiny-ImageNet-C").resolve()))
    assert lines == []


def test_auto_needs_a_corruption_path() -> None:
    with pytest.raises(ConfigError, match="corruption_source 'auto' needs corruption_path"):
        TrialConfig.from_dict({"corruption_source": "auto"})


def test_other_sources_are_left_alone(tmp_path: Path) -> None:
    cfg = TrialConfig(corruption_source="on_the_fly", corruption_path=str(tmp_path))
    assert resolve_corruption_set(cfg, progress=pytest.fail) is cfg
    assert not any(tmp_path.iterdir())
