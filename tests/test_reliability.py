"""Nothing lost, nothing misreported (issue 12): a trial's CLI under misuse. Each test reproduces a
way the platform used to say something false or damage a record, and checks that it now refuses in
one line and leaves every record as it was. (Studies under interruption and misuse: test_study.py;
the cluster under faults and attack: test_cluster.py; the table of all: docs/reliability.md.)"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from trainables.__main__ import RUN_ID_FILE, main
from trainables.config import TrialConfig
from trainables.tracking import MlflowTrialLogger
from trainables.train import CHECKPOINT_FILE, run_trial

QUICK = dict(dataset="synthetic", model="smallcnn", train_size=256, batch_size=64, lr=0.05, device="cpu",
             limit_eval_images=64, corruption_source="none")


class Crash(Exception):
    pass


def crash(metrics: dict, checkpoint: Path | None) -> None:
    raise Crash


def cli(tmp_path: Path, *sets: str, folder: Path | None = None) -> list[str]:
    args = ["run", "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--experiment", "e"]
    args += ["--checkpoint-dir", str(folder)] if folder else []
    for pair in (*(f"{k}={v}" for k, v in QUICK.items()), *sets):
        args += ["--set", pair]
    return args


def runs(tmp_path: Path) -> list:
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    found = client.get_experiment_by_name("e")
    return client.search_runs([found.experiment_id]) if found else []


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


@pytest.mark.slow  # a whole trial or a subprocess (seconds): make test-quick stays under 2 minutes
def test_resuming_with_another_config_is_refused_naming_the_keys(tmp_path, capsys):
    """A checkpoint of epochs=2, lr=0.05 continued with epochs=4, lr=0.5 used to go on under the old
    params and schedule; now it is refused before the MLflow run is reopened."""
    folder = tmp_path / "ckpt"
    cfg = TrialConfig(**QUICK, epochs=2)
    with pytest.raises(Crash):  # the first attempt dies after its first epoch, checkpoint kept
        run_trial(cfg, report=crash, checkpoint_dir=folder)
    assert (folder / CHECKPOINT_FILE).exists()
    assert main(cli(tmp_path, "epochs=4", "lr=0.5", folder=folder)) == 2
    err = one_line(capsys)
    assert "epochs 2 -> 4" in err and "lr 0.05 -> 0.5" in err
    assert runs(tmp_path) == []  # no run was started or reopened
    assert main(cli(tmp_path, "epochs=2", "device=cpu", folder=folder)) == 0  # its own settings continue it
    [run] = runs(tmp_path)
    assert run.info.status == "FINISHED" and run.data.params["epochs"] == "2"


@pytest.mark.slow  # a whole trial or a subprocess (seconds): make test-quick stays under 2 minutes
def test_a_finished_run_is_never_reopened(tmp_path, capsys):
    folder = tmp_path / "ckpt"
    assert main(cli(tmp_path, "epochs=1", folder=folder)) == 0
    [before] = runs(tmp_path)
    assert (folder / RUN_ID_FILE).read_text() == before.info.run_id
    assert main(cli(tmp_path, "epochs=1", folder=folder)) == 2  # the same command again
    assert "already finished" in one_line(capsys)
    (folder / CHECKPOINT_FILE).write_bytes(b"not a checkpoint")  # a garbage checkpoint beside it
    assert main(cli(tmp_path, "epochs=1", folder=folder)) == 2
    assert "is unreadable" in one_line(capsys)
    (folder / CHECKPOINT_FILE).write_bytes((folder / CHECKPOINT_FILE).read_bytes()[:5])  # truncated
    assert main(cli(tmp_path, "epochs=1", folder=folder)) == 2
    [after] = runs(tmp_path)
    assert (after.info.status, after.info.end_time, after.data.metrics) == (
        before.info.status, before.info.end_time, before.data.metrics)


@pytest.mark.parametrize("setting", ["alpha=nan", "lr=nan", "beta=inf", "lr=-inf", "weight_decay=nan"])
def test_non_finite_settings_are_refused(tmp_path, capsys, setting):
    assert main(cli(tmp_path, "epochs=1", setting)) == 2
    assert setting.split("=")[0] in one_line(capsys)
    assert runs(tmp_path) == []


def test_a_trial_whose_loss_diverges_fails_saying_so(tmp_path, capsys):
    """lr=1e6 used to finish with a NaN loss and a finite clean error a search would accept."""
    assert main(cli(tmp_path, "epochs=2", "lr=1e6")) == 1
    assert "training loss became" in one_line(capsys)
    [run] = runs(tmp_path)
    assert run.info.status == "FAILED"
    assert run.data.tags["mollify.status"].startswith("failed: TrialDivergedError: the training loss became")
    assert "clean/error" not in run.data.metrics  # no score


@pytest.mark.parametrize(("sets", "config", "says"), [
    ((), "missing.yaml", "cannot read the config file"),
    ((), "bad.yaml", "is not valid YAML"),
    (("image_size=4",), None, "too small for model 'smallcnn'"),
    (("device=cuda",), None, "no CUDA device"),
    (("dataset=tinyimagenet", "data_root=nowhere"), None, "Tiny ImageNet not found under"),
    (("max_concurrent=3",), None, "unknown config key"),
])
def test_everyday_mistakes_are_one_line(tmp_path, capsys, sets, config, says):
    if config == "bad.yaml":
        (tmp_path / config).write_text("epochs: [1\n")
    args = cli(tmp_path, "epochs=1", *sets) + (["--config", str(tmp_path / config)] if config else [])
    code = main(args)
    assert code == 2 and says in one_line(capsys)
    assert all(r.info.status != "RUNNING" for r in runs(tmp_path))


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(Exception, match="no CUDA device"):
        main(["--debug", *cli(tmp_path, "device=cuda")])


@pytest.mark.slow  # a whole trial or a subprocess (seconds): make test-quick stays under 2 minutes
def test_an_undecodable_jpeg_is_named(tmp_path, capsys):
    from test_data import make_tiny_tree

    root = make_tiny_tree(tmp_path / "tiny")
    victim = sorted((root / "val" / "images").glob("*.JPEG"))[0]
    victim.write_bytes(b"\xff\xd8\xff garbage")
    code = main(cli(tmp_path, "epochs=1", "dataset=tinyimagenet", f"data_root={root}", "image_size=32"))
    assert code == 2 and f"cannot decode {victim}" in one_line(capsys)


@pytest.mark.slow  # a whole trial and its re-run (seconds); make test-quick leaves it out
def test_sigterm_ends_the_run_killed_and_the_same_command_continues_it(tmp_path, capsys, monkeypatch):
    """SIGTERM (a scheduler's stop, `kill`) used to leave the run RUNNING for ever. It lands here
    at the worst moment: epoch 2's checkpoint is saved, its metrics not yet logged. The run ends
    KILLED (not FAILED) saying how to continue, exit 130; the same command logs epoch 2 from the
    checkpoint, then 3, into the same run."""
    folder = tmp_path / "ckpt"
    log_epoch = MlflowTrialLogger.report

    def stopped_at_epoch_2(self, metrics, checkpoint=None):
        if metrics["epoch"] == 2:
            signal.raise_signal(signal.SIGTERM)
        log_epoch(self, metrics, checkpoint)

    monkeypatch.setattr(MlflowTrialLogger, "report", stopped_at_epoch_2)
    assert main(cli(tmp_path, "epochs=3", "limit_train_batches=1", folder=folder)) == 130
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("interrupted after epoch 1;") and str(folder) in err
    [run] = runs(tmp_path)
    assert run.info.status == "KILLED"
    assert run.data.tags["mollify.status"] == (f"interrupted after epoch 1; rerun the same command with "
                                               f"--checkpoint-dir {folder} to continue")
    assert torch.load(folder / CHECKPOINT_FILE, weights_only=True)["epoch"] == 2  # kept
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler was the command's only

    monkeypatch.setattr(MlflowTrialLogger, "report", log_epoch)
    assert main(cli(tmp_path, "epochs=3", "limit_train_batches=1", folder=folder)) == 0
    [again] = runs(tmp_path)
    assert again.info.run_id == run.info.run_id and again.info.status == "FINISHED"
    history = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_metric_history(run.info.run_id, "train/loss")
    assert [m.step for m in history] == [1, 2, 3]
    assert again.data.tags["mollify.status"] == "finished"
