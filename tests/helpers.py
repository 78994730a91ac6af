"""Helpers that several test files share: running `python -m study` on a loopback-only network,
reading a study's MLflow runs, services (an MLflow server, a study's driver) in one loopback-only
network namespace stopped by process group (`Namespace`), and a small Tiny ImageNet tree in the
official layout. A module, not
a test file, so that no test file imports another."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]



def copy_checkout(dest: Path) -> Path:
    """A fresh checkout as a new user has it: the files git tracks or would track (what is not
    committed yet too), with their times (so that make sees the install as done), this test run's
    virtualenv as `.venv`, and a git repository of its own, so that `git status` shows what
    commands run in it leave behind."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    (dest / ".venv").symlink_to(Path(sys.prefix))
    git = ["git", "-c", "user.name=readme", "-c", "user.email=readme@localhost"]
    for step in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "the checkout"]):
        subprocess.run([*git, *step], cwd=dest, check=True, capture_output=True)
    return dest

# --- real studies (Ray, Optuna, MLflow) ------------------------------------------------------------

def loopback_command(args: list[str]) -> list[str]:
    """Run `args` in a new network namespace that has only the loopback interface."""
    if shutil.which("unshare") is None:
        pytest.skip("needs `unshare` to keep the Ray cluster on an only-loopback network")
    return ["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *args]


def study_cmd(tmp_path: Path, *args: str) -> list[str]:
    return loopback_command([sys.executable, "-m", "study", "--runs-dir", str(tmp_path / "runs"), *args])


def study_env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}


def run_to_end(cmd: list[str], *, env: dict | None = None, cwd: Path | None = None,
               timeout: float) -> "subprocess.CompletedProcess":
    """Run a command (a study driver) to its end; past `timeout`, kill its whole process group (the
    driver and the Ray cluster it started) and fail with the end of its output."""
    import signal
    import subprocess

    proc = subprocess.Popen(cmd, env=env or study_env(), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"did not finish in {timeout:.0f} s:\n{out[-3000:]}{err[-3000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def trial_runs(uri: str, experiment: str):
    from mlflow.tracking import MlflowClient  # here: the GPU check collects files importing this module without MLflow

    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return client, [], []
    runs = client.search_runs([found.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("mollify.kind") == "study"]
    return client, parents, [r for r in runs if r.data.tags.get("mollify.kind") == "trial"]


def optuna_trials(storage: str, name: str) -> list:
    """The Optuna study's trials, none where the storage or the study is not there yet."""
    import optuna

    path = storage.removeprefix("sqlite:///")
    if storage.startswith("sqlite:///") and not Path(path).exists() or name not in optuna.get_all_study_names(storage):
        return []
    return optuna.load_study(study_name=name, storage=storage).trials


def assert_whole_study(uri: str, storage: str, name: str, trials: int, epochs: int,
                       objective: str = "valid/error") -> None:
    """A search that ended whole: exactly `trials` trials and as many MLflow runs, all FINISHED,
    every epoch logged once, Optuna's states and values equal MLflow's, one parent run, FINISHED."""
    import optuna

    client, parents, children = trial_runs(uri, name)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED", [p.info.status for p in parents]
    assert parents[0].data.tags["mollify.state"] == "finished"
    numbers = sorted(int(r.data.tags["mollify.trial_number"]) for r in children)
    assert numbers == list(range(trials)), numbers
    for run in children:
        assert run.info.status == "FINISHED", (run.info.run_name, run.data.tags.get("mollify.status"))
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
        assert steps == list(range(1, epochs + 1)), (run.info.run_name, steps)
    found = optuna_trials(storage, name)
    assert len(found) == trials and [t.number for t in found] == list(range(trials))
    by_number = {int(r.data.tags["mollify.trial_number"]): r for r in children}
    for trial in found:
        run = by_number[trial.number]
        assert trial.state == optuna.trial.TrialState.COMPLETE, (trial.number, trial.state)
        assert trial.value == pytest.approx(run.data.metrics[objective])
        assert trial.user_attrs.get("mlflow_run_id") == run.info.run_id
        assert {k: str(v) for k, v in trial.params.items()} == \
            {k: run.data.params[k] for k in trial.params}  # the run trained what Optuna drew


# --- services on a loopback-only network, stopped by process group ----------------------------------

def wait_for(check, timeout: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def stop_group(pgid: int, grace: float = 15, sig: int = signal.SIGTERM) -> None:
    """Signal a process group, then SIGKILL whatever of it is still there after `grace` seconds."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


class Namespace:
    """A network namespace whose only interface is loopback, held open by a sleeping process. Every
    service and command of the slow tests runs in it (`nsenter --net`), each started in its own
    process group, so that a test stops one by its id and the fixture stops all, even on failure."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs = env, logs
        self.groups: dict[str, subprocess.Popen] = {}
        self.holder = subprocess.Popen(["unshare", "--net", "sh", "-c", "ip link set lo up && exec sleep infinity"],
                                       start_new_session=True)
        wait_for(lambda: "UP" in self.run(["ip", "-brief", "link", "show", "lo"]).stdout, 20, "loopback up")

    def argv(self, cmd: list[str]) -> list[str]:
        return ["nsenter", f"--net=/proc/{self.holder.pid}/ns/net", "--", *cmd]

    def run(self, cmd: list[str], *, env: dict[str, str] | None = None, timeout: float = 120,
            **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(cmd), env=env or self.env, capture_output=True, text=True,
                              timeout=timeout, **kwargs)

    def start(self, name: str, cmd: list[str], *, env: dict[str, str] | None = None, **kwargs) -> subprocess.Popen:
        with open(self.logs / f"{name}.log", "w") as log:
            proc = subprocess.Popen(self.argv(cmd), env=env or self.env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True, **kwargs)
        self.groups[name] = proc
        return proc

    def stop(self, name: str, sig: int = signal.SIGTERM, grace: float = 15) -> None:
        proc = self.groups.pop(name)
        stop_group(proc.pid, grace, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)

    def log(self, name: str, tail: int = 3000) -> str:
        path = self.logs / f"{name}.log"
        return f"--- {name}.log\n{path.read_text()[-tail:]}" if path.exists() else f"--- no {name}.log"

    def close(self) -> None:
        """SIGTERM to every group at once, SIGKILL to what is left after 10 s, then the holder."""
        for proc in self.groups.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for name in list(self.groups):
            self.stop(name, grace=max(deadline - time.monotonic(), 0.5))
        stop_group(self.holder.pid, grace=5, sig=signal.SIGKILL)
        self.holder.wait(timeout=10)


# --- Tiny ImageNet: a small tree in the official layout ----------------------------------------------

TINY_WNIDS = ["n01443537", "n01629819", "n01641577", "n01644900"]
TINY_WORDS = {"n01443537": "goldfish, Carassius auratus",
              "n01629819": "European fire salamander, Salamandra salamandra",
              "n01641577": "bullfrog, Rana catesbeiana"}  # the fourth has no entry: name = wnid
TINY_TRAIN_COUNTS = [3, 3, 2, 3]  # partial train split, as in the shared copy
TINY_VAL = [("val_0.JPEG", "n01641577"), ("val_1.JPEG", "n01443537"), ("val_2.JPEG", "n01644900"),
            ("val_3.JPEG", "n01629819"), ("val_4.JPEG", "n01443537"), ("val_5.JPEG", "n01641577"),
            ("val_6.JPEG", "n01629819"), ("val_7.JPEG", "n01644900")]
GREY_FILE = "train/n01629819/images/n01629819_1.JPEG"


def _save_jpeg(path: Path, rng: np.random.Generator, label: int, grey: bool = False) -> None:
    """A 64x64 JPEG whose dominant colour encodes its class (so labels can be checked by pixels)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = rng.integers(0, 40, (64, 64, 3)) + 50 * label
    pixels[..., label % 3] += 40
    image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
    (image.convert("L") if grey else image).save(path, quality=90)


def make_tiny_tree(base: Path) -> Path:
    root = base / "tiny-imagenet-200"
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    (root / "wnids.txt").write_text("\n".join(TINY_WNIDS) + "\n")
    (root / "words.txt").write_text("".join(f"{w}\t{s}\n" for w, s in TINY_WORDS.items()))
    for label, (wnid, count) in enumerate(zip(TINY_WNIDS, TINY_TRAIN_COUNTS)):
        (root / "train" / wnid).mkdir(parents=True)
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
        for i in range(count):
            rel = f"train/{wnid}/images/{wnid}_{i}.JPEG"
            _save_jpeg(root / rel, rng, label, grey=rel == GREY_FILE)
    rows = []
    for filename, wnid in TINY_VAL:
        _save_jpeg(root / "val" / "images" / filename, rng, TINY_WNIDS.index(wnid))
        rows.append(f"{filename}\t{wnid}\t0\t0\t63\t63\n")
    (root / "val" / "val_annotations.txt").write_text("".join(rows))
    return root
