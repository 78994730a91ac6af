"""Issue 16: a driver killed at any moment of a study's life loses nothing.

A small real study (local Ray, MLflow and Optuna in SQLite files) is killed, its driver, Ray
cluster and trials with SIGKILL (the whole process group: what an OOM killer, `kill -9` of a job or
a lost machine does), at one step of its life after another, each resumed driver at the next; then
resumed to its end. After each kill nothing is duplicated and no finished run is modified; at the
end the durable record holds exactly N trials and N runs, each epoch logged once, Optuna's states
equal to MLflow's, one parent run, FINISHED. The record file and
`study list` are checked without Ray.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient

from study.__main__ import main
from study.record import RECORD_FILE, StudyRecord
from helpers import assert_whole_study, optuna_trials, study_cmd, study_env, trial_runs

NAME = "crash"
EPOCHS = 2
TRIALS = 3
SPEC = {
    "trial": {"dataset": "synthetic", "train_size": 1024, "model": "smallcnn", "epochs": EPOCHS, "batch_size": 64,
              "lr": 0.05, "limit_eval_images": 128, "corruption_source": "none", "valid_per_class": 8,
              "valid_corrupt_images": 16},
    "search": {"algorithm": "tpe", "objectives": [["valid/error", "min"]], "num_samples": TRIALS,
               "space": {"beta": {"type": "float", "low": 1, "high": 9}, "roles": ["xn", "xb"]}},
    "resources": {"cpus": 1}, "max_concurrent": 1, "max_failures": 1,
}


class Study:
    """One study's files in `tmp`: the spec, the SQLite stores, the runs folder."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.uri, self.storage = f"sqlite:///{tmp / 'mlflow.db'}", f"sqlite:///{tmp / 'optuna.db'}"
        self.spec = tmp / "crash.yaml"
        self.spec.write_text(yaml.safe_dump(SPEC))
        self.folder = tmp / "runs" / NAME

    def launch(self, *extra: str, estimate: bool = False) -> subprocess.Popen:
        # The estimate at launch (issue 21) calibrates in a child process for seconds: only the case
        # that kills the driver right after it runs it.
        env = {**study_env(), **({} if estimate else {"MOLLIFY_NO_ESTIMATE": "1"})}
        return subprocess.Popen(study_cmd(self.tmp, "launch", str(self.spec), "--name", NAME, "--tracking-uri",
                                          self.uri, "--storage", self.storage, *extra),
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)

    def resume(self) -> subprocess.Popen:
        return subprocess.Popen(study_cmd(self.tmp, "resume", NAME), env=study_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)

    def command(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run(study_cmd(self.tmp, *args), env=study_env(), capture_output=True, text=True,
                              timeout=timeout)

    def runs(self):
        return trial_runs(self.uri, NAME)

    def optuna_trials(self) -> list[optuna.trial.FrozenTrial]:
        return optuna_trials(self.storage, NAME)


# --- the moments a driver is killed at: each a condition on what the study has written -------------

def claimed(s: Study) -> bool:
    return (s.folder / RECORD_FILE).exists()


def parent_made(s: Study) -> bool:
    return bool(s.runs()[1])


def estimated(s: Study) -> bool:
    return (s.folder / "estimate.json").exists()  # issue 21: the estimate printed and stored at launch


def trial_started(s: Study) -> bool:
    return bool(s.runs()[2])


def trials_ended(count: int):
    def ended(s: Study) -> bool:
        return sum(r.info.status == "FINISHED" for r in s.runs()[2]) >= count
    return ended


def optuna_told(count: int):
    def told(s: Study) -> bool:
        return sum(t.state.is_finished() for t in s.optuna_trials()) >= count
    return told


def figures_started(s: Study) -> bool:
    return (s.folder / "figures").exists()


def kill_when(s: Study, moment, proc: subprocess.Popen, timeout: float = 400) -> None:
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if moment(s):
                return
            time.sleep(0.05)
        pytest.fail(f"the study never reached the moment (driver {'ended' if proc.poll() is not None else 'running'})"
                    f": {proc.stdout.read()[-3000:] if proc.poll() is not None else ''}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the driver, its Ray cluster and the trials
        proc.wait(timeout=60)


def finished_runs(s: Study) -> dict[str, tuple]:
    """Each FINISHED trial run's end time, metrics and tags: what must never change."""
    return {r.info.run_id: (r.info.end_time, r.data.metrics, r.data.tags) for r in s.runs()[2]
            if r.info.status == "FINISHED"}


def assert_consistent(s: Study, kept: dict[str, tuple]) -> None:
    """After any kill: at most one run per trial number, one parent, each epoch logged at most once,
    and every run that had finished exactly as it was."""
    client, parents, children = s.runs()
    assert len(parents) <= 1
    numbers = [int(r.data.tags["mollify.trial_number"]) for r in children]
    assert len(numbers) == len(set(numbers)), numbers
    for run in children:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
        assert steps == sorted(set(steps)), (run.info.run_name, steps)
    assert {k: v for k, v in finished_runs(s).items() if k in kept} == kept  # no finished run modified


def assert_whole(s: Study) -> None:
    """Exactly N trials and N runs, every epoch once, Optuna's states equal MLflow's, one parent."""
    assert_whole_study(s.uri, s.storage, NAME, TRIALS, EPOCHS)


# One study killed again and again, each driver at the next moment of its life: the launch right
# after its claim, then each resume after the parent run, as a trial starts, right after a trial
# ends, as Optuna is told, while the figures are made; the last resume finishes it.
CHAIN = [("after-the-claim", claimed), ("after-the-parent-run", parent_made), ("as-a-trial-starts", trial_started),
         ("right-after-a-trial-ends", trials_ended(1)), ("as-optuna-is-told", optuna_told(2)),
         ("while-figures-are-made", figures_started)]


@pytest.mark.slow
def test_a_driver_killed_at_every_moment_resumes_to_exactly_the_study(tmp_path):
    s = Study(tmp_path)
    for i, (moment, reached) in enumerate(CHAIN):
        kept = finished_runs(s)
        driver = s.launch() if i == 0 else s.resume()
        kill_when(s, reached, driver)
        assert_consistent(s, kept)
        status = s.command("status", NAME, "--json", timeout=120)
        assert status.returncode == 0, (moment, status.stderr)
        expected = "finished" if moment == "while-figures-are-made" else "interrupted"
        assert json.loads(status.stdout)["state"] == expected, (moment, status.stdout)

    kept = finished_runs(s)
    done = s.command("resume", NAME)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert_whole(s)
    assert finished_runs(s) == kept  # the last resume only made the figures
    assert (s.folder / "figures" / "report.html").is_file()

    # A finished study resumed again: nothing runs, nothing changes.
    parent = s.runs()[1][0]
    again = s.command("resume", NAME, "--no-figures", timeout=120)
    assert again.returncode == 0 and "nothing changed" in again.stdout, again.stdout + again.stderr
    after = s.runs()[1][0]
    assert (after.info.end_time, after.info.status) == (parent.info.end_time, parent.info.status)


@pytest.mark.slow
def test_killed_right_after_the_estimate_then_stores_gone(tmp_path):
    """Issue 21's estimate at launch, then a kill: resume runs exactly the study. Before that, its
    Optuna storage is lost: resume refuses in one line (exit 3, an environment failure) without
    recreating the file or touching the parent run; put back, it resumes. A deleted MLflow
    experiment: status says so (exit 3)."""
    s = Study(tmp_path)
    kill_when(s, estimated, s.launch("--no-figures", estimate=True))
    parent = s.runs()[1][0]
    assert json.loads((s.folder / "estimate.json").read_text())["estimate"]
    shutil.move(tmp_path / "optuna.db", tmp_path / "optuna.db.away")
    refused = s.command("resume", NAME, "--no-figures", timeout=120)
    assert refused.returncode == 3 and "Optuna storage" in refused.stderr and "is gone" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert not (tmp_path / "optuna.db").exists()
    assert s.runs()[1][0].info == parent.info  # the parent run untouched
    status = s.command("status", NAME, timeout=120)
    assert status.returncode == 0 and "Optuna storage" in status.stdout and "is gone" in status.stdout

    shutil.move(tmp_path / "optuna.db.away", tmp_path / "optuna.db")
    assert s.command("resume", NAME, "--no-figures").returncode == 0
    assert_whole(s)

    client = MlflowClient(s.uri)
    experiment = client.get_experiment_by_name(NAME)
    client.delete_experiment(experiment.experiment_id)
    gone = s.command("status", NAME, timeout=120)
    assert gone.returncode == 3 and "deleted" in gone.stderr and "mlflow experiments restore" in gone.stderr
    client.restore_experiment(experiment.experiment_id)
    assert s.command("status", NAME, timeout=120).returncode == 0


# --- the record file, without Ray ------------------------------------------------------------------

def record(name: str, tmp_path: Path) -> StudyRecord:
    return StudyRecord(name=name, preset="custom", spec={**SPEC, "name": name}, overrides={},
                       tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                       optuna_storage=f"sqlite:///{tmp_path / 'optuna.db'}", parent_run_id=None, address=None,
                       created=0.0, launch_id="x")


def test_the_claim_is_whole_and_taken_once(tmp_path):
    folder = tmp_path / "runs" / "a"
    folder.mkdir(parents=True)
    first, second = record("a", tmp_path), record("a", tmp_path)
    assert first.claim(folder) and not second.claim(folder)
    assert StudyRecord.read(folder) == first
    assert [p.name for p in folder.iterdir()] == [RECORD_FILE]  # no temporary file left


def test_a_damaged_record_is_named_and_list_shows_the_others(tmp_path, capsys):
    runs = tmp_path / "runs"
    (runs / "empty").mkdir(parents=True)
    (runs / "empty" / RECORD_FILE).write_text("")  # what a launch killed mid-write used to leave
    (runs / "cut").mkdir()
    record("cut", tmp_path).claim(runs / "cut")  # claimed; the launch died before MLflow knew
    assert main(["--runs-dir", str(runs), "list"]) == 0
    out = capsys.readouterr().out
    assert "empty: cannot be read: the record" in out and "is damaged" in out
    assert f"cut (custom, tpe): interrupted; 0/{TRIALS} finished, {TRIALS} never started" in out
    assert "`python -m study resume cut` starts it" in out
    assert main(["--runs-dir", str(runs), "status", "empty"]) == 2
    assert "is damaged" in capsys.readouterr().err


@pytest.mark.slow  # a subprocess importing torch, Ray and MLflow (seconds)
def test_a_full_disk_is_an_environment_failure_and_leaves_nothing(tmp_path):
    """The runs folder on a full file system (a small tmpfs, filled, in a private mount namespace):
    the launch exits 3 (the environment failed, not the trials), in one line, leaving no folder."""
    import sys

    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and `unshare` to mount a small full tmpfs in a private mount namespace")
    full = tmp_path / "full"
    full.mkdir()
    spec = tmp_path / "crash.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    launch = (f"{sys.executable} -m study --runs-dir {full}/runs launch {spec} --name disk "
              f"--tracking-uri sqlite:///{tmp_path / 'mlflow.db'} --storage sqlite:///{tmp_path / 'optuna.db'}")
    script = (f"mount -t tmpfs -o size=64k tmpfs {full} || exit 97; "
              f"dd if=/dev/zero of={full}/filler bs=4k 2>/dev/null; mkdir -p {full}/runs; "
              f"{launch}; rc=$?; ls -A {full}/runs; exit $rc")
    proc = subprocess.run(["unshare", "--mount", "sh", "-c", script], env=study_env(), capture_output=True,
                          text=True, timeout=300)
    if proc.returncode == 97:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()[:200]}")
    assert proc.returncode == 3, proc.stdout[-2000:] + proc.stderr[-2000:]
    [line] = proc.stderr.strip().splitlines()
    assert "No space left on device" in line
    assert proc.stdout.strip() == ""  # the runs folder holds nothing: no study folder, no temporary file


def test_ctrl_c_while_the_figures_are_made_says_the_study_finished(tmp_path, monkeypatch, capsys):
    """Ctrl-C during the figures used to print "interrupted before any trial started; nothing to
    resume" for a finished study. The study's run and the figures are stood in for (the path under
    test is the command's); tests/test_crash.py's chain checks that `resume` then makes them."""
    import study.__main__ as cli
    from study.launch import Outcome

    def figures(*args, **kwargs):
        raise KeyboardInterrupt

    done = record("done", tmp_path)
    monkeypatch.setattr(cli, "launch", lambda spec, **kwargs: (done, Outcome("finished", 3, 0, 3)))
    monkeypatch.setattr(cli, "print_status", lambda *args: None)
    monkeypatch.setattr(cli, "status", lambda *args, **kwargs: None)
    monkeypatch.setattr(cli, "make_figures", figures)
    spec = tmp_path / "crash.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    assert main(["--runs-dir", str(tmp_path / "runs"), "launch", str(spec), "--name", "done"]) == 0
    err = capsys.readouterr().err
    assert "done finished; its figures were interrupted: `python -m study resume done` makes them" in err
    assert "nothing to resume" not in err


def test_ctrl_c_before_the_trials_says_whether_there_is_a_study_to_resume(tmp_path, capsys):
    from study.__main__ import interrupted_before_trials

    runs = tmp_path / "runs"
    assert interrupted_before_trials(runs, "none") == 130
    assert "interrupted before the study was recorded; nothing to resume" in capsys.readouterr().err
    (runs / "made").mkdir(parents=True)
    dataclasses.replace(record("made", tmp_path), parent_run_id="abc").claim(runs / "made")
    assert interrupted_before_trials(runs, "made") == 130
    assert "`python -m study resume made` continues it" in capsys.readouterr().err
