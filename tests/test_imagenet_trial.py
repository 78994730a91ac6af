"""ImageNet in the trial: a streamed split trains, evaluates clean and held out, and is scored on
ImageNet-C on the fly (the release's protocol) and from the release's folder tree, whose cells
line up image for image with the clean split, also when a quick run takes only the first N.

The folders are real JPEG files in the ILSVRC-2012 and ImageNet-C layouts, written here."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import yaml
import torch
from PIL import Image

from trainables.config import ConfigError, TrialConfig
from trainables.corruptions.releases import tree_cell_files
from trainables.data import STREAMED
from trainables.data.streamed import StreamedSplit, first, interleave_classes
from trainables.evaluation import predict_split
from trainables.models import create_model
from trainables.splits import load_splits, load_test_split
from trainables.train import run_trial

WNIDS = ("n02000003", "n02000001", "n02000002")  # listed unsorted: the class order is the sorted one
TRAIN_PER_CLASS, VAL_PER_CLASS = 14, 5
CORRUPTIONS, SEVERITIES = ("gaussian_noise", "defocus_blur"), (1, 5)


def _write(path: Path, rng: np.random.Generator, label: int, size: int) -> None:
    """A smooth image whose mean colour depends on its class (so that a network can learn a little)."""
    base = np.array([60 + 70 * label, 200 - 60 * label, 120], dtype=np.float32)
    ramp = np.linspace(-40, 40, size, dtype=np.float32)
    pixels = base + ramp[:, None, None] * rng.uniform(-1, 1, 3).astype(np.float32) + rng.normal(0, 8, (size, size, 3))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90)


@pytest.fixture(scope="module")
def imagenet(tmp_path_factory) -> tuple[Path, Path]:
    """(an ILSVRC-2012 folder, an ImageNet-C folder of its val images) with 3 classes."""
    root = tmp_path_factory.mktemp("ilsvrc")
    rng = np.random.default_rng(0)
    for label, wnid in enumerate(sorted(WNIDS)):
        for i in range(TRAIN_PER_CLASS):
            _write(root / "train" / wnid / f"{wnid}_{i}.JPEG", rng, label, 40)
        for i in range(VAL_PER_CLASS):  # val names run across classes, as ILSVRC2012_val_<n> do
            _write(root / "val" / wnid / f"ILSVRC2012_val_{label + 3 * i:08d}.JPEG", rng, label, 40)
    release = tmp_path_factory.mktemp("corrupted") / "ImageNet-C"
    for corruption in CORRUPTIONS:
        for severity in SEVERITIES:
            for label, wnid in enumerate(sorted(WNIDS)):
                for i in range(VAL_PER_CLASS):
                    _write(release / corruption / str(severity) / wnid / f"ILSVRC2012_val_{label + 3 * i:08d}.JPEG",
                           rng, label, 32)
    return root, release.parent


def _config(root: Path, **changes) -> TrialConfig:
    values = dict(dataset="imagenet", data_root=str(root), model="smallcnn", image_size=32, epochs=2, batch_size=8,
                  lr=0.05, augment="none", valid_per_class=2, valid_corrupt_images=6, corruptions=",".join(CORRUPTIONS),
                  severities="1,5", corruption_protocol="imagenet", eval_batch_size=4, device="cpu")
    return TrialConfig.from_dict(values | changes)


def test_interleaving_puts_one_image_of_each_class_in_turn() -> None:
    from trainables.data.base import FileSplit
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2])
    files = FileSplit(root=Path("."), paths=tuple(f"{i}" for i in range(9)), labels=labels,
                      class_names=("a", "b", "c"), wnids=("a", "b", "c"), mean=(0.5,) * 3, std=(0.5,) * 3)
    mixed = interleave_classes(files)
    assert mixed.paths == ("0", "3", "5", "1", "4", "6", "2", "7", "8")
    assert mixed.labels.tolist() == [0, 1, 2, 0, 1, 2, 0, 2, 2]


def test_a_generated_imagenet_c_is_refused_in_one_line(imagenet) -> None:
    root, _ = imagenet
    for source in ("generated", "auto"):
        with pytest.raises(ConfigError, match="on_the_fly .* or official") as err:
            _config(root, corruption_source=source, corruption_path="x")
        assert "\n" not in str(err.value)


def test_streamed_splits_hold_out_validation_and_interleave_the_test_split(imagenet) -> None:
    root, _ = imagenet
    train, valid, test = load_splits(_config(root), torch.device("cpu"))
    assert all(isinstance(s, StreamedSplit) for s in (train, valid, test))
    assert (len(train), len(valid), len(test)) == (3 * (TRAIN_PER_CLASS - 2), 3 * 2, 3 * VAL_PER_CLASS)
    assert test.labels[:3].tolist() == [0, 1, 2]  # the first N of a quick run cover every class
    assert first(test, 4).labels.tolist() == [0, 1, 2, 0]
    held = set(valid.files.paths)
    assert not held & set(train.files.paths) and len(held) == 6


def test_imagenet_c_cells_line_up_with_the_clean_split_image_for_image(imagenet) -> None:
    root, corrupted = imagenet
    test = load_test_split(_config(root, limit_eval_images=7), torch.device("cpu"))
    cell = interleave_classes(tree_cell_files("imagenet", corrupted, "gaussian_noise", 5, source="official",
                                              wnids=test.files.wnids))
    assert [Path(p).name for p in cell.paths[:7]] == [Path(p).name for p in test.files.paths]
    assert torch.equal(cell.labels[:7], test.files.labels)


def test_a_missing_class_in_the_release_is_named(imagenet, tmp_path: Path) -> None:
    root, corrupted = imagenet
    test = load_test_split(_config(root), torch.device("cpu"))
    with pytest.raises(FileNotFoundError, match="n09999999"):
        tree_cell_files("imagenet", corrupted, "gaussian_noise", 1, source="official",
                        wnids=(*test.files.wnids, "n09999999"))


def test_streamed_predictions_cover_the_split_once_in_order(imagenet) -> None:
    root, _ = imagenet
    cfg = _config(root)
    test = load_test_split(cfg, torch.device("cpu"))
    logits, labels = predict_split(cfg, create_model("smallcnn", 3), test)
    assert logits.shape == (len(test), 3) and torch.equal(labels, test.labels)


@pytest.mark.slow  # about 10 s each on 2 cores
@pytest.mark.parametrize("source", ["on_the_fly", "official"])
def test_an_imagenet_trial_trains_evaluates_and_scores_imagenet_c(imagenet, source: str) -> None:
    root, corrupted = imagenet
    official = {"corruption_path": str(corrupted)} if source == "official" else {}
    cfg = _config(root, corruption_source=source, limit_corrupt_images=9, **official)
    reports: list[dict] = []
    result = run_trial(cfg, report=lambda metrics, _: reports.append(metrics))
    assert [m["epoch"] for m in reports] == [1.0, 2.0]
    assert all(m["train/images_per_s"] > 0 for m in reports)
    final = result.metrics
    for name in ("clean/error", "valid/error", "valid/corrupt/error", "corrupt/error",
                 *(f"corrupt/{c}/s{s}/error" for c in CORRUPTIONS for s in SEVERITIES)):
        assert math.isfinite(final[name]) and 0 <= final[name] <= 1, name
    # 9 images a cell: an error is a multiple of 1/9
    assert abs(final["corrupt/gaussian_noise/s5/error"] * 9 - round(final["corrupt/gaussian_noise/s5/error"] * 9)) < 1e-4
    assert result.model_card["image_size"] == [32, 32] and result.model_card["dataset"] == "imagenet"
    assert list(result.model_card["classes"]) == sorted(WNIDS)
    assert "imagenet" in STREAMED


def test_a_missing_release_cell_fails_the_trial_before_it_trains(imagenet, tmp_path: Path) -> None:
    """A trial scored on the official ImageNet-C is refused in one line when a cell is missing,
    before its first epoch (not after its last), pointing at the release and on-the-fly cells."""
    root, corrupted = imagenet
    reports: list[dict] = []
    cfg = _config(root, corruption_source="official", corruption_path=str(tmp_path), severities="1,5")
    with pytest.raises(FileNotFoundError, match=r"gaussian_noise/1 not found.*zenodo.*on_the_fly") as err:
        run_trial(cfg, report=lambda metrics, _: reports.append(metrics))
    assert reports == [] and "\n" not in str(err.value)
    partial = tmp_path / "partial"
    (partial / "gaussian_noise" / "1").mkdir(parents=True)  # one cell of the four asked for
    with pytest.raises(FileNotFoundError, match="gaussian_noise/5 not found"):
        run_trial(cfg.replace(corruption_path=str(partial)), report=lambda metrics, _: reports.append(metrics))
    assert reports == []


def test_a_study_scored_on_a_missing_release_is_refused_before_anything_is_written(imagenet, tmp_path, capsys):
    from study.__main__ import main

    root, _ = imagenet
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"name": "inet", "trial": {"dataset": "imagenet", "data_root": str(root),
                                                             "corruption_source": "official",
                                                             "corruption_path": str(tmp_path / "ImageNet-C")},
                                    "search": {"algorithm": "grid", "grid": [{"mollify": [False, True]}]}}))
    code = main(["--runs-dir", str(tmp_path / "runs"), "launch", str(spec),
                 "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", "--storage", f"sqlite:///{tmp_path / 'o.db'}"])
    assert code == 2
    assert "ImageNet-C (official corrupted set)" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "m.db").exists()


@pytest.mark.slow  # about 40 s: a Ray cluster and a Ray Train group of 2
def test_an_imagenet_search_of_data_parallel_trials_streams_on_every_worker(imagenet, tmp_path: Path) -> None:
    """ImageNet and data-parallel trials together, as `imagenet-smoke` runs them: each of 2 workers
    streams its part of every global batch through its own DALI pipeline; rank 0 evaluates on the
    streamed test split and ImageNet-C from the release's folders and logs; the study ends whole."""
    from helpers import assert_whole_study, run_to_end, study_cmd, study_env

    root, corrupted = imagenet
    trial = {"dataset": "imagenet", "data_root": str(root), "model": "smallcnn", "image_size": 32, "epochs": 2,
             "batch_size": 8, "lr": 0.05, "augment": "none", "valid_per_class": 2, "valid_corrupt_images": 6,
             "corruption_source": "official", "corruption_path": str(corrupted), "corruptions": ",".join(CORRUPTIONS),
             "severities": "1,5", "eval_batch_size": 4, "device": "cpu"}
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"name": "inet", "trial": trial,
                                    "search": {"algorithm": "tpe", "objectives": [["valid/error", "min"]],
                                               "num_samples": 1,
                                               "space": {"beta": {"type": "float", "low": 1, "high": 9}}},
                                    "resources": {"workers": 2, "cpus_per_worker": 1}, "max_concurrent": 1}))
    uri, storage = f"sqlite:///{tmp_path / 'mlflow.db'}", f"sqlite:///{tmp_path / 'optuna.db'}"
    done = run_to_end(study_cmd(tmp_path, "launch", str(spec), "--tracking-uri", uri, "--storage", storage,
                                "--no-figures"), env={**study_env(), "MOLLIFY_NO_ESTIMATE": "1"}, timeout=400)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert_whole_study(uri, storage, "inet", trials=1, epochs=2)
    from mlflow.tracking import MlflowClient
    run = next(r for r in MlflowClient(uri).search_runs(
        [MlflowClient(uri).get_experiment_by_name("inet").experiment_id]) if r.data.tags.get("mollify.kind") == "trial")
    metrics = run.data.metrics
    assert metrics["train/images_per_s"] > 0
    for name in ("clean/error", "valid/error", "valid/corrupt/error", "corrupt/error"):
        assert 0 <= metrics[name] <= 1, name
    # the clean split whole: 15 images
    assert metrics["clean/error"] * 15 == pytest.approx(round(metrics["clean/error"] * 15), abs=1e-3)
    # the network logged is a plain one (BatchNorm2d, not the workers' global batch norm): it loads
    # and predicts without a process group
    import mlflow.pytorch
    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        model = mlflow.pytorch.load_model(f"runs:/{run.info.run_id}/model", map_location="cpu")
    finally:
        mlflow.set_tracking_uri(before)  # the process's default, as the other tests expect it
    assert {type(m).__name__ for m in model.modules()} >= {"BatchNorm2d"}
    assert "GlobalBatchNorm" not in {type(m).__name__ for m in model.modules()}
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 3)


def test_the_loaders_own_augmentation_is_named_in_the_analysis_labels() -> None:
    """A streamed dataset's loader crops and flips every training image (contract.LOADER_AUGMENTATION,
    declared once for the analysis, which never imports trainables): `augment: none` on ImageNet is
    not 'no augmentation' in a table."""
    from analysis.configs import augment_words, describe
    from contract import LOADER_AUGMENTATION

    assert set(LOADER_AUGMENTATION) == set(STREAMED)
    assert augment_words("none", "imagenet") == "random-resized crop + flip"
    assert augment_words("trivaug", "imagenet") == "random-resized crop + flip + TrivAug"
    assert augment_words("none", "tinyimagenet") == "no augmentation"
    assert describe({"dataset": "imagenet", "augment": "none", "mollify": False}, ()) == \
        "random-resized crop + flip, no mollification"
