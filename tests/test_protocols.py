"""The corruption protocol as a setting (issue 19): a named protocol fixes the severity table and
whether cells take the release's JPEG round trip, on the fly and in generated files alike, and a
generated set is written in the format of the release whose protocol it follows: a lossless .npy
set (the CIFAR-10-C format) under the CIFAR protocol, a Tiny-ImageNet-C tree of JPEG files under
Tiny ImageNet's. Real images in tmp_path, and the real Tiny ImageNet validation images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from trainables.config import ConfigError, TrialConfig
from trainables.corruptions import CorruptionSpec, GenerateRequest, evaluate_corruptions, generate_corrupted_set
from trainables.corruptions.cells import cell_generator, corrupt_cell, to_uint8
from trainables.corruptions.protocols import PROTOCOLS
from trainables.corruptions.provision import MANIFEST, resolve_corruption_set
from trainables.corruptions.releases import load_corrupted_cell
from trainables.data import load_dataset

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding:DeprecationWarning")
CELLS = dict(corruptions=("gaussian_noise", "contrast"), severities=(1, 2, 3, 4, 5))  # .npy holds all five


# --- the setting ------------------------------------------------------------------------------------

def test_named_protocols_are_the_releases():
    assert {k: (p.table, p.jpeg) for k, p in PROTOCOLS.items()} == {
        "cifar": ("cifar", False), "tinyimagenet": ("tinyimagenet", True), "imagenet": ("imagenet", True)}


def test_protocol_sets_table_and_jpeg_of_both_corrupted_evaluations():
    cfg = TrialConfig(dataset="tinyimagenet", corruption_protocol="cifar")
    assert (cfg.corruption_spec.table, cfg.corruption_spec.jpeg) == ("cifar", False)
    assert (cfg.valid_corruption_spec.table, cfg.valid_corruption_spec.jpeg) == ("cifar", False)
    default = TrialConfig(dataset="tinyimagenet", corruption_table="tinyimagenet")
    assert (default.corruption_spec.table, default.corruption_spec.jpeg) == ("tinyimagenet", None)


@pytest.mark.parametrize("values, message", [
    ({"corruption_protocol": "cifar-c"}, "unknown corruption_protocol 'cifar-c'; valid: cifar, imagenet, tinyimagenet"),
    ({"corruption_protocol": "cifar", "corruption_table": "tinyimagenet"},
     "corruption_table 'tinyimagenet' contradicts corruption_protocol 'cifar'"),
    ({"dataset": "tinyimagenet", "corruption_protocol": "cifar", "corruption_source": "official",
      "corruption_path": "x"}, "the official tinyimagenet release was made under the tinyimagenet protocol"),
])
def test_protocol_mistakes_are_one_line(values, message):
    with pytest.raises(ConfigError, match=message) as err:
        TrialConfig.from_dict(values)
    assert "\n" not in str(err.value)


def test_a_matching_table_and_the_release_protocol_are_accepted():
    TrialConfig.from_dict({"corruption_protocol": "cifar", "corruption_table": "cifar"})
    TrialConfig.from_dict({"dataset": "cifar10", "corruption_protocol": "cifar", "corruption_source": "official",
                           "corruption_path": "x"})


# --- on the fly: the JPEG round trip follows the protocol, whatever the dataset ------------------------

def _seen(test, spec: CorruptionSpec, dataset: str) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []

    class Keep(torch.nn.Module):
        def forward(self, x):
            seen.append(x.clone())
            return torch.zeros(len(x), test.num_classes)

    evaluate_corruptions(Keep(), test, spec, dataset=dataset, batch_size=64, precision="fp32")
    return seen


def _expected(test, name: str, severity: int, table: str, jpeg: bool) -> torch.Tensor:
    g = cell_generator(0, name, severity, "cpu")
    x = corrupt_cell(test.images[:64].float() / 255, name, severity, g, table=table, jpeg=jpeg)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (test.mean, test.std))
    return (x - mean) / std


@pytest.mark.parametrize("protocol", ["cifar", "tinyimagenet"])
def test_on_the_fly_cells_follow_the_protocol(protocol):
    test = load_dataset("synthetic", "unused", "test", image_size=32, synthetic_size=64)
    cfg = TrialConfig(dataset="tinyimagenet", corruption_protocol=protocol, corruptions="gaussian_noise",
                      severities="5")
    seen = _seen(test, cfg.corruption_spec, "tinyimagenet")
    p = PROTOCOLS[protocol]
    assert torch.allclose(seen[0], _expected(test, "gaussian_noise", 5, p.table, p.jpeg), atol=1e-6)
    other = _expected(test, "gaussian_noise", 5, p.table, not p.jpeg)
    assert not torch.allclose(seen[0], other, atol=1e-3)  # the round trip changes the pixels


def test_without_a_protocol_a_tree_dataset_keeps_its_release_jpeg():
    test = load_dataset("synthetic", "unused", "test", image_size=32, synthetic_size=64)
    spec = CorruptionSpec(corruptions=("contrast",), severities=(3,), table="cifar")
    tree = _seen(test, spec, "tinyimagenet")[0]
    npy = _seen(test, spec, "synthetic")[0]
    assert torch.allclose(tree, _expected(test, "contrast", 3, "cifar", True), atol=1e-6)
    assert torch.allclose(npy, _expected(test, "contrast", 3, "cifar", False), atol=1e-6)


# --- generated sets in the release format of their protocol --------------------------------------------

@pytest.fixture(scope="module")
def tiny_val(tiny_imagenet_root: Path):
    """The real validation images of 3 Tiny ImageNet classes at 32 px, in val order."""
    return load_dataset("tinyimagenet", tiny_imagenet_root, "test", num_classes=3, image_size=32)


def _generate(root: Path, out: Path, protocol: str) -> Path:
    p = PROTOCOLS[protocol]
    return generate_corrupted_set(GenerateRequest("tinyimagenet", out, root, num_classes=3, image_size=32,
                                                  table=p.table, jpeg=p.jpeg, progress=lambda _: None, **CELLS))


def test_cifar_protocol_writes_the_cifar_c_format_losslessly(tiny_imagenet_root, tiny_val, tmp_path):
    out = _generate(tiny_imagenet_root, tmp_path / "c", "cifar")
    assert {p.name for p in out.iterdir()} == {"labels.npy", "gaussian_noise.npy", "contrast.npy"}
    data, labels = np.load(out / "gaussian_noise.npy"), np.load(out / "labels.npy")
    n = len(tiny_val)
    assert data.dtype == np.uint8 and data.shape == (5 * n, 32, 32, 3) and len(labels) == 5 * n
    assert np.array_equal(labels[:n], tiny_val.labels.numpy())
    cell = load_corrupted_cell("tinyimagenet", out, "gaussian_noise", 5, source="generated", num_classes=3,
                               data_root=tiny_imagenet_root)
    g = cell_generator(0, "gaussian_noise", 5, "cpu")
    expected = torch.cat([to_uint8(corrupt_cell(tiny_val.images[i:i + 1000].float() / 255, "gaussian_noise", 5, g,
                                                table="cifar")) for i in range(0, n, 1000)])
    assert torch.equal(cell.images, expected)  # no JPEG anywhere on the way
    assert torch.equal(cell.labels, tiny_val.labels)


def test_tinyimagenet_protocol_writes_the_jpeg_tree(tiny_imagenet_root, tiny_val, tmp_path):
    out = _generate(tiny_imagenet_root, tmp_path / "t", "tinyimagenet")
    files = sorted((out / "gaussian_noise" / "5").rglob("*.JPEG"))
    assert len(files) == len(tiny_val) and not list(out.glob("*.npy"))
    lossless = _generate(tiny_imagenet_root, tmp_path / "c", "cifar")
    args = dict(source="generated", num_classes=3, data_root=tiny_imagenet_root)
    tree = load_corrupted_cell("tinyimagenet", out, "contrast", 1, **args).images
    npy = load_corrupted_cell("tinyimagenet", lossless, "contrast", 1, **args).images
    assert tree.shape == npy.shape and not torch.equal(tree, npy)  # table and JPEG differ


def test_on_the_fly_equals_the_generated_set_under_the_cifar_protocol(tiny_imagenet_root, tiny_val, tmp_path):
    out = _generate(tiny_imagenet_root, tmp_path / "c", "cifar")
    fly = TrialConfig(dataset="tinyimagenet", corruption_protocol="cifar").corruption_spec
    spec = CorruptionSpec(corruptions=CELLS["corruptions"], severities=CELLS["severities"], table=fly.table,
                          jpeg=fly.jpeg)
    files = CorruptionSpec("generated", str(out), **CELLS)

    def metrics(s):
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 3))
        torch.nn.init.normal_(model[1].weight, std=0.01, generator=torch.Generator().manual_seed(0))
        torch.nn.init.zeros_(model[1].bias)
        return evaluate_corruptions(model, tiny_val, s, dataset="tinyimagenet", batch_size=1000, precision="fp32",
                                    data_root=tiny_imagenet_root)[0]

    assert metrics(spec) == metrics(files)


# --- auto: the release is used only under its own protocol ------------------------------------------

def _tree_release(root: Path) -> None:
    for c in CELLS["corruptions"]:
        for s in CELLS["severities"]:
            (root / "Tiny-ImageNet-C" / c / str(s) / "n01443537").mkdir(parents=True)


def _auto(root: Path, data_root: Path, **values) -> TrialConfig:
    cfg = TrialConfig(dataset="tinyimagenet", data_root=str(data_root), corruption_source="auto",
                      corruption_path=str(root), corruptions="gaussian_noise,contrast",
                      num_classes=3, image_size=32, device="cpu", **values)
    return resolve_corruption_set(cfg, progress=lambda _: None)


def test_auto_takes_the_release_under_its_protocol_and_generates_under_another(tiny_imagenet_root, tmp_path):
    _tree_release(tmp_path)
    official = _auto(tmp_path, tiny_imagenet_root, corruption_protocol="tinyimagenet")
    assert (official.corruption_source, Path(official.corruption_path).name) == ("official", "Tiny-ImageNet-C")
    cifar = _auto(tmp_path, tiny_imagenet_root, corruption_protocol="cifar")
    folder = Path(cifar.corruption_path)
    assert cifar.corruption_source == "generated" and folder.name.endswith("-cifar-nojpeg-seed0")
    assert json.loads((folder / MANIFEST).read_text())["jpeg"] is False and (folder / "labels.npy").is_file()
    assert _auto(tmp_path, tiny_imagenet_root, corruption_protocol="cifar") == cifar  # found, not made again


# --- re-evaluating a kept model under another protocol ---------------------------------------------------

def test_evaluate_names_the_protocol_and_takes_its_table():
    from trainables.reevaluate import EvaluateRequest, _set_config, set_label, set_name

    req = EvaluateRequest(run_id="r", data_root="/data/tiny-imagenet-200+copy", corruption_source="on_the_fly",
                          protocol="cifar")
    assert set_label(set_name(req)) == "tiny-imagenet-200_copy_on_the_fly_cifar-protocol"  # MLflow takes it
    trial = TrialConfig(dataset="tinyimagenet", corruption_table="tinyimagenet", corruption_source="auto",
                        corruption_path="data/corrupted")
    cfg = _set_config(trial, req)
    assert (cfg.corruption_protocol, cfg.corruption_table, cfg.protocol_table, cfg.protocol_jpeg) == (
        "cifar", None, "cifar", False)
