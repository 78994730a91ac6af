"""README.md's commands, run as a new user runs them (issue 22), so that the README cannot drift from
what the code does.

Every shell line of the README's ```bash blocks is either run by the slow test below, from a copy
of the checkout (the files git tracks or would track, and the test's own virtualenv as `.venv`),
or named in NOT_RUN with the reason it cannot run here. A new line that is neither fails the quick
test. The slow test runs the lines in the README's order, in one network namespace whose only
interface is loopback (`helpers.Namespace`: the two UIs listen on their default ports without
meeting anything else on the machine), and checks what the README says each one does. Placeholders
the README shows (a study name, a timestamped study) are replaced by the study the test launched.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import README_LAUNCH
from helpers import REPO, Namespace, wait_for

README = REPO / "README.md"
PY = ".venv/bin/python"
FIGURES_EXAMPLE = "quickstart-offline-20261203-101500"

# Each command the slow test runs -> the placeholders it replaces (the README's example names).
RUN: dict[str, dict[str, str]] = {
    f"{PY} -m study launch smoke": {},
    f"{PY} -m study status try2": {"try2": "smoke"},
    f"{PY} -m study resume try2": {"try2": "smoke"},
    f"{PY} -m study list": {},
    f"{PY} -m analysis figures --experiment {FIGURES_EXAMPLE} --out runs/{FIGURES_EXAMPLE}/figures --log-to-mlflow":
        {FIGURES_EXAMPLE: "smoke"},
    f"{PY} -m trainables run --set dataset=synthetic --set epochs=1": {},
    "make mlflow-ui": {},
    "make dashboard": {},
}
NOT_RUN: dict[str, str] = {
    "make quickstart": "downloads CIFAR-10 (170 MB) and trains 8 trials; the tests have no network",
    "make test": "the command running this test",
    "make quickstart-offline": "8 trials of 15 epochs on 2,500 images, several minutes; its study's code path is "
                               "`launch smoke`'s, run below",
    f"{PY} -m study launch paper-amount --set epochs=30 --gpus-per-trial 0.5": "needs a GPU and CIFAR-10",
    f"{PY} -m study launch my-study.yaml --name try2 --address 127.0.0.1:6379":
        "needs a Ray cluster at that address: tests/test_cluster.py launches through one",
    f"{PY} -m study estimate paper-baselines --gpus 8":
        "calibrates PreActResNet-50 on CIFAR-10/100 and Tiny ImageNet; tests/test_estimate.py runs `estimate`",
    f"{PY} -m trainables run --config configs/quickstart.yaml --set beta=4 --set roles=xn": "needs CIFAR-10",
    f"{PY} -m trainables evaluate --run-id RUN_ID --corruption-source official --corruption-path data/CIFAR-10-C":
        "needs CIFAR-10-C; tests/test_reevaluate.py evaluates official-format sets",
    f"{PY} -m trainables evaluate --run-id RUN_ID --data-root other/tiny-imagenet-200 --name other-val":
        "needs a trial trained on Tiny ImageNet; tests/test_reevaluate.py does this",
    f"{PY} -m trainables.corruptions generate --dataset cifar10 --out data/CIFAR-10-C --data-root data":
        "needs CIFAR-10; tests/test_corruption_sets.py generates sets",
    "make imagenet-smoke": "tests/test_imagenet_smoke.py builds the folder from the real Tiny ImageNet images",
    f"{PY} -m study launch imagenet-smoke": "about 4 minutes of ResNet-50 on 2 cores; its parts run in "
                                            "tests/test_imagenet_trial.py (an ImageNet search of 2-worker trials) "
                                            "and tests/test_ddp.py",
}


def readme_commands(text: str) -> list[str]:
    """The command lines of the ```bash blocks of `text`, in order, each without its comment and
    with its spaces collapsed."""
    blocks = re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M)
    lines = (line.split("  #")[0].strip() for block in blocks for line in block.splitlines())
    return [" ".join(line.split()) for line in lines if line and not line.startswith("#")]


def test_every_readme_command_is_run_or_says_why_not():
    commands = readme_commands(README.read_text())
    unknown = [c for c in commands if c not in RUN and c not in NOT_RUN]
    assert not unknown, f"README commands neither run by tests/test_readme.py nor in its NOT_RUN: {unknown}"
    stale = [c for c in (*RUN, *NOT_RUN) if c not in commands]
    assert not stale, f"tests/test_readme.py names commands the README no longer has: {stale}"
    assert commands[:2] == ["make quickstart", "make test"]  # the two a new user runs first


# --- the commands, run -----------------------------------------------------------------------------

def http_get(ns: Namespace, url: str) -> str:
    """GET `url` from inside the namespace; '' while nothing answers."""
    code = f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=5).read().decode())"
    done = ns.run([sys.executable, "-c", code], timeout=30)
    return done.stdout if done.returncode == 0 else ""


def run(ns: Namespace, root: Path, command: str, timeout: float = 900) -> subprocess.CompletedProcess:
    for example, ours in RUN[command].items():
        command = command.replace(example, ours)
    done = ns.run(["bash", "-c", command], cwd=root, timeout=timeout)
    assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.mark.slow
def test_the_readme_commands_do_what_it_says(readme_study):
    """The README's commands in its order; the first, `launch smoke`, ran in the shared fixture
    (conftest.py: tests/test_record.py reads the same study)."""
    root, ns, launched = readme_study
    assert README_LAUNCH in RUN and "4/4 finished" in launched.stdout, launched.stdout[-2000:]
    assert (root / "mlflow.db").is_file() and (root / "optuna.db").is_file()  # the embedded defaults
    report = root / "runs" / "smoke" / "figures" / "report.html"
    assert report.is_file()
    assert "finished; 4/4 finished" in run(ns, root, f"{PY} -m study status try2").stdout
    resumed = run(ns, root, f"{PY} -m study resume try2")
    assert "nothing to run, nothing changed" in resumed.stdout + resumed.stderr
    assert run(ns, root, f"{PY} -m study list").stdout.startswith("smoke (smoke, tpe): finished")
    drawn = report.stat().st_mtime_ns
    run(ns, root, f"{PY} -m analysis figures --experiment {FIGURES_EXAMPLE} --out runs/{FIGURES_EXAMPLE}/figures "
                  "--log-to-mlflow")
    assert report.stat().st_mtime_ns > drawn  # drawn again, where the study drew it
    trial = run(ns, root, f"{PY} -m trainables run --set dataset=synthetic --set epochs=1").stdout
    assert re.search(r"MLflow run [0-9a-f]{32} at sqlite:///.*/mlflow\.db", trial), trial[-2000:]
    left = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, check=True)
    assert not left.stdout, f"README commands left files that git does not ignore:\n{left.stdout}"
    check_the_uis(ns, root)


def check_the_uis(ns: Namespace, root: Path) -> None:
    """`make mlflow-ui` and `make dashboard` serve the study on their ports; each Optuna trial's
    note links its MLflow run, and the study's note cautions about importances."""
    ns.start("mlflow-ui", ["make", "-o", ".venv/.installed-stamp", "mlflow-ui"], cwd=root)  # installed: this venv
    ns.start("dashboard", ["make", "-o", ".venv/.installed-stamp", "dashboard"], cwd=root)
    try:
        wait_for(lambda: http_get(ns, "http://127.0.0.1:5000/health").strip() == "OK", 120, "MLflow's UI")
        wait_for(lambda: "smoke" in http_get(ns, "http://127.0.0.1:8080/api/studies"), 120, "optuna-dashboard")
        studies = json.loads(http_get(ns, "http://127.0.0.1:8080/api/studies"))["study_summaries"]
        (smoke,) = [s for s in studies if s["study_name"] == "smoke"]
        detail = json.loads(http_get(ns, f"http://127.0.0.1:8080/api/studies/{smoke['study_id']}"))
        notes = [t["note"]["body"] for t in detail["trials"]]
        assert len(notes) == 4 and all("MLflow run: [" in n and "/runs/" in n for n in notes), notes
        assert "Parameter importances" in detail["note"]["body"] and "(npow, bpow)" in detail["note"]["body"]
    finally:
        for name in ("mlflow-ui", "dashboard"):
            print(ns.log(name))
            ns.stop(name)
