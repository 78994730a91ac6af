"""`python -m trainables evaluate`: a trained trial's logged model evaluated again on another set
(a second folder of images in the Tiny ImageNet layout, a generated corrupted set), logged under
its own prefix without touching the training-time metrics; bad inputs fail with one clear line.
Real pieces throughout: JPEG files in the official layout, a SQLite MLflow store, the CLI."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient
from mlflow.utils.validation import _validate_metric_name, _validate_tag_name

from helpers import TINY_WNIDS, make_tiny_tree
from trainables import __main__ as cli
from trainables.__main__ import PROGRESS_BAR
from trainables.config import TrialConfig
from trainables.corruptions import __main__ as corruptions_cli
from trainables.reevaluate import EVAL_PREFIX, EVAL_TAG, set_label
from trainables.tracking import MlflowTrialLogger
from trainables.train import run_trial

TRIAL = ["dataset=tinyimagenet", "epochs=1", "batch_size=4", "model=smallcnn", "image_size=32",
         "corruption_source=on_the_fly", "corruptions=gaussian_noise,defocus_blur", "severities=1,5",
         "device=cpu"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, Path]:
    """(tracking URI, run id, data root) of one finished trial on a small Tiny ImageNet tree, shared
    by the module's tests: each evaluates it under a set name of its own."""
    tmp_path = tmp_path_factory.mktemp("trained")
    root = make_tiny_tree(tmp_path / "data")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["run", "--tracking-uri", uri, "--experiment", "re"]
    for pair in [*TRIAL, f"data_root={root}"]:
        args += ["--set", pair]
    assert cli.main(args) == 0
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("re").experiment_id])
    return uri, run.info.run_id, root


def _training_record(client: MlflowClient, run_id: str) -> dict[str, list[tuple[int, float]]]:
    run = client.get_run(run_id)
    return {key: [(m.step, m.value) for m in client.get_metric_history(run_id, key)]
            for key in run.data.metrics if not key.startswith(EVAL_PREFIX + "/")}


def test_evaluate_on_a_second_clean_set_and_a_generated_corrupted_set(trained, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    uri, run_id, root = trained
    client = MlflowClient(uri)
    before = _training_record(client, run_id)
    # A second folder in the same layout and class list: the same tree with other validation images.
    second = tmp_path / "second" / "tiny-imagenet-200"
    shutil.copytree(root, second)
    for image in (second / "val" / "images").glob("*.JPEG"):
        image.write_bytes((root / "val" / "images" / "val_0.JPEG").read_bytes())
    out = tmp_path / "c"
    assert corruptions_cli.main(["generate", "--dataset", "tinyimagenet", "--out", str(out), "--data-root",
                                 str(second), "--image-size", "32", "--corruptions", "gaussian_noise", "defocus_blur",
                                 "--severities", "1", "5"]) == 0
    assert cli.main(["evaluate", "--run-id", run_id, "--tracking-uri", uri, "--data-root", str(second),
                     "--corruption-source", "generated", "--corruption-path", str(out), "--name", "second"]) == 0
    assert f"under {EVAL_PREFIX}/second/" in capsys.readouterr().out
    run = client.get_run(run_id)
    logged = {k: v for k, v in run.data.metrics.items() if k.startswith(f"{EVAL_PREFIX}/second/")}
    assert {"eval/second/clean/error", "eval/second/corrupt/s5/error", "eval/second/corrupt/error"} <= set(logged)
    assert "eval/second/corrupt/gaussian_noise/error" not in logged  # a mean of its cells: in the table below
    cells = _cells(client, run_id, f"{EVAL_PREFIX}/second/corrupt/cells.json", tmp_path)
    assert sorted((r["corruption"], r["severity"]) for r in cells) == [
        ("defocus_blur", 1), ("defocus_blur", 5), ("gaussian_noise", 1), ("gaussian_noise", 5)]
    # Every validation image of the second set is val_0 (a goldfish image) under its own label:
    # the clean error is the share of images whose label is not what the model says for val_0.
    assert 0.0 <= logged["eval/second/clean/error"] <= 1.0
    assert _training_record(client, run_id) == before  # training-time figures untouched
    assert run.info.status == "FINISHED"
    assert "mollify.eval.second" in run.data.tags
    # The same set again is refused, not logged twice.
    assert cli.main(["evaluate", "--run-id", run_id, "--tracking-uri", uri, "--data-root", str(second),
                     "--name", "second"]) == 2
    assert "already holds eval/second/" in capsys.readouterr().err


@pytest.mark.parametrize(("name", "label"), [
    ("tiny-imagenet-200", "tiny-imagenet-200"), ("my set+v2 (copy)", "my_set_v2_copy"), ("données×2", "donnees_2"),
    ("..", "set"), (".", "set"), ("数据", "set"), ("../../x", "x"), ("a..b", "a..b"), ("x" * 300, "x" * 100),
])
def test_any_folder_name_makes_a_label_mlflow_accepts(name: str, label: str) -> None:
    assert set_label(name) == label
    _validate_metric_name(f"{EVAL_PREFIX}/{label}/corrupt/gaussian_noise/s5/ece_batch100")
    _validate_tag_name(EVAL_TAG + label)


@pytest.mark.slow  # a re-evaluation through the command line (seconds); make test-quick leaves it out
def test_evaluate_names_its_metrics_from_any_folder_quietly(trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capfd: pytest.CaptureFixture) -> None:
    """A data root whose folder has '+', spaces, accents, or is '..', used to name metrics MLflow
    refuses; every evaluation printed MLflow's download progress bars. Now each set is logged
    under a label made from its folder, and the output is the command's own lines."""
    monkeypatch.delenv(PROGRESS_BAR, raising=False)  # MLflow's default: bars on
    uri, run_id, root = trained
    dots = tmp_path / "tiny+set" / "sub"
    dots.mkdir(parents=True)
    shutil.copytree(root, tmp_path / "tiny+set", dirs_exist_ok=True)
    folders = {"tiny-imagenet-200": root, "my_set_v2_copy": tmp_path / "my set+v2 (copy)",
               "donnees_2": tmp_path / "données×2", "tiny_set": dots / ".."}
    for folder in (tmp_path / "my set+v2 (copy)", tmp_path / "données×2"):
        shutil.copytree(root, folder)
    capfd.readouterr()  # the training's lines
    for label, folder in folders.items():
        assert cli.main(["evaluate", "--run-id", run_id, "--tracking-uri", uri, "--data-root", str(folder)]) == 0
        out, err = capfd.readouterr()
        assert out.splitlines()[0].endswith(f"under {EVAL_PREFIX}/{label}/"), out
        assert err == "" and "\r" not in out and "Downloading artifacts" not in out  # no progress bars
    run = MlflowClient(uri).get_run(run_id)
    for label in folders:
        assert f"{EVAL_PREFIX}/{label}/clean/error" in run.data.metrics and EVAL_TAG + label in run.data.tags
    assert PROGRESS_BAR not in os.environ  # set for the command only


def _cells(client: MlflowClient, run_id: str, path: str, tmp: Path) -> list[dict]:
    table = json.loads(Path(client.download_artifacts(run_id, path, str(tmp))).read_text())
    return [dict(zip(table["columns"], row)) for row in table["data"]]


def test_evaluate_again_on_the_trials_own_set_reproduces_its_figures(trained, tmp_path: Path) -> None:
    """On the fly with the trial's own seed and set, the re-evaluation must give the training-time
    numbers: the logged model is the final network, and the evaluation is deterministic."""
    uri, run_id, _ = trained
    assert cli.main(["evaluate", "--run-id", run_id, "--tracking-uri", uri, "--name", "same"]) == 0
    client = MlflowClient(uri)
    metrics = client.get_run(run_id).data.metrics
    for key in ("clean/error", "clean/nll", "corrupt/error", "corrupt/group/blur/nll", "corrupt/s5/error"):
        assert metrics[f"eval/same/{key}"] == pytest.approx(metrics[key], abs=1e-6), key
    trained_cells = _cells(client, run_id, "corrupt/cells.json", tmp_path / "a")
    again = _cells(client, run_id, f"{EVAL_PREFIX}/same/corrupt/cells.json", tmp_path / "b")
    assert len(again) == len(trained_cells) > 0
    key = lambda row: (row["corruption"], row["severity"])  # noqa: E731
    for row, before in zip(sorted(again, key=key), sorted(trained_cells, key=key)):
        assert key(row) == key(before)
        for metric in ("error", "nll", "ece", "ece_batch100"):
            assert row[metric] == pytest.approx(before[metric], abs=1e-6), (key(row), metric)


@pytest.mark.slow  # a whole trial or a subprocess (seconds): make test-quick stays under 2 minutes
def test_logged_model_loads_with_mlflow_alone_and_predicts_as_at_the_end_of_training(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = TrialConfig(dataset="synthetic", train_size=256, epochs=1, batch_size=64, corruption_source="none",
                      limit_eval_images=64, device="cpu")
    logger = MlflowTrialLogger(cfg, experiment="m", tracking_uri=uri)
    result = run_trial(cfg, report=logger.report)
    logger.finish(result)
    x = torch.randn(8, 3, 32, 32)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        loaded = mlflow.pytorch.load_model(f"runs:/{logger.run_id}/model")
        card = mlflow.models.Model.load(f"runs:/{logger.run_id}/model").metadata
    finally:
        mlflow.set_tracking_uri(previous)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), result.model.eval()(x))
    assert card["num_classes"] == 10 and card["image_size"] == [32, 32] and len(card["classes"]) == 10
    assert card["mean"] == list(result.model_card["mean"]) and card["outputs"] == 10


def test_unknown_run_id_fails_clearly(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert cli.main(["evaluate", "--run-id", "0" * 32, "--tracking-uri", uri]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and errors[0].startswith("error: no MLflow run '000")  # one line, no traceback


def test_run_without_a_model_fails_clearly(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    logger = MlflowTrialLogger(TrialConfig(), experiment="m", tracking_uri=uri)  # never finished
    assert cli.main(["evaluate", "--run-id", logger.run_id, "--tracking-uri", uri]) == 2
    assert "has no logged model" in capsys.readouterr().err


def test_a_set_with_other_classes_fails_clearly(trained, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    uri, run_id, root = trained
    other = tmp_path / "other" / "tiny-imagenet-200"
    shutil.copytree(root, other)
    (other / "wnids.txt").write_text("\n".join(reversed(TINY_WNIDS)) + "\n")  # same classes, other order
    assert cli.main(["evaluate", "--run-id", run_id, "--tracking-uri", uri, "--data-root", str(other),
                     "--name", "other-order"]) == 2
    err = capsys.readouterr().err
    assert "does not have the model's classes" in err and "first difference at class 0" in err
    metrics = MlflowClient(uri).get_run(run_id).data.metrics
    assert not any(k.startswith(f"{EVAL_PREFIX}/other-order/") for k in metrics)
