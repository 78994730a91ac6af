"""Studies: specs and presets (fast), and real Ray Tune + Optuna + MLflow runs (slow).

The Ray tests run the study driver in its own network namespace whose only interface is loopback
(`unshare --net`): Ray 2.60 binds its servers to every interface, and inside that namespace every
interface is 127.0.0.1, so nothing the test starts listens anywhere else. Killing the namespace's
process group stops all of it."""

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient

from study.__main__ import main
from study.spec import CONDITIONS, DefineByRun, SpecError, load_spec, parse_spec, preset_names

REPO = Path(__file__).resolve().parents[1]
PAPER = dict(model="preactresnet50", epochs=300, batch_size=128, lr=0.01, momentum=0.9, weight_decay=5e-4)
DATASETS = ("cifar10", "cifar100", "tinyimagenet")


# --- presets and specs ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", preset_names())
def test_every_preset_is_valid(name):
    spec = load_spec(name)
    assert spec.name == name and spec.total_trials() >= 1


def configs(name: str) -> list[dict]:
    return load_spec(name).trial_configs()


def with_paper_setup(cfgs: list[dict]) -> None:
    for cfg in cfgs:
        assert {k: cfg[k] for k in PAPER} == PAPER
        # The official release under data/ when there, else a set generated once per study.
        assert (cfg["corruption_source"], cfg["corruption_path"]) == ("auto", "data")


def test_paper_baselines_is_method_section_3_1():
    augments = ["none", "fcr", "fcr+randaug", "fcr+autoaug", "fcr+augmix", "fcr+trivaug", "fcr+mixup", "fcr+cutmix"]
    expected = {(d, a, m) for d in DATASETS for a in augments for m in (False, True)}
    got = configs("paper-baselines")
    assert len(got) == 48 and {(c["dataset"], c["augment"], c["mollify"]) for c in got} == expected
    assert all((c["roles"], c["beta"], c["npow"], c["bpow"]) == ("xnb", 2, 1, 1) for c in got)
    with_paper_setup(got)


def test_paper_type_amount_schedule_are_method_sections_3_2_to_3_4():
    kind = configs("paper-type")
    assert sorted((c["dataset"], c["roles"]) for c in kind) == sorted(itertools.product(DATASETS, ["xn", "xb", "xnb"]))
    assert all(c["augment"] == "fcr+trivaug" and c["mollify"] and c["beta"] == 2 for c in kind)
    amount = configs("paper-amount")
    assert sorted((c["dataset"], c["beta"]) for c in amount) == sorted(itertools.product(DATASETS, [2, 4, 9]))
    assert all(c["roles"] == "xnb" and c["augment"] == "fcr+trivaug" for c in amount)
    schedule = configs("paper-schedule")
    plain = [(c["dataset"],) for c in schedule if c.get("smooth_labels") is False]
    grid = [(c["dataset"], c["npow"], c["bpow"]) for c in schedule if "smooth_labels" not in c]
    assert sorted(plain) == [(d,) for d in sorted(DATASETS)]
    assert sorted(grid) == sorted(itertools.product(DATASETS, [0.5, 1, 2], [0.5, 1, 2]))
    assert len(schedule) == 30
    for cfgs in (kind, amount, schedule):
        with_paper_setup(cfgs)


def test_seeds_repeat_every_grid_point():
    spec = parse_spec({"trial": {"dataset": "synthetic"}, "seeds": [0, 1, 2],
                       "search": {"algorithm": "grid", "grid": [{"beta": [2, 4]}]}})
    assert [(c["beta"], c["seed"]) for c in spec.trial_configs()] == [(2, 0), (2, 1), (2, 2), (4, 0), (4, 1), (4, 2)]


def test_conditional_parameters_appear_only_where_they_apply():
    space = load_spec("hpo").space
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    fixed = load_spec("hpo").trial
    seen = set()
    for _ in range(200):
        trial = study.ask()
        DefineByRun(space, fixed)(trial)
        p = trial.params
        smooth = p["smooth_labels"]
        assert ("npow" in p) == ("n" in p["roles"] and smooth), p
        assert ("bpow" in p) == ("b" in p["roles"] and smooth), p
        seen.add((p["roles"], smooth))
        study.tell(trial, 0.5)
    assert len(seen) == 8  # every role set with and without smoothing was drawn
    assert set(CONDITIONS) >= {"npow", "bpow"}


def test_define_by_run_skips_mollification_knobs_when_mollification_is_off():
    spec = parse_spec({"trial": {"dataset": "synthetic"}, "search": {
        "algorithm": "tpe", "num_samples": 4,
        "space": {"mollify": [True, False], "beta": {"type": "float", "low": 1, "high": 9}}}})
    study = optuna.create_study()
    for _ in range(30):
        trial = study.ask()
        DefineByRun(spec.space, spec.trial)(trial)
        assert ("beta" in trial.params) == trial.params["mollify"]
        study.tell(trial, 0.0)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"trial": {"betta": 2}}, r"unknown config key\(s\) \['betta'\] in trial"),
        ({"trial": {}, "serch": {}}, r"unknown key\(s\) \['serch'\] in the study spec"),
        ({"search": {"algorithm": "cmaes"}}, "unknown search.algorithm 'cmaes'; valid: grid, tpe, gp, nsga2"),
        ({"search": {"algorithm": "grid", "grid": [{"model": ["resnet1000"]}]}}, "unknown model 'resnet1000'"),
        ({"search": {"algorithm": "tpe", "space": {"beta": {"low": 5, "high": 1}}}}, "need low < high"),
        ({"search": {"algorithm": "tpe", "space": {"roles": ["xn", "xq"]}}}, "roles"),
        ({"search": {"algorithm": "nsga2", "space": {"beta": [2, 4]}}}, "give two search.objectives"),
        ({"search": {"algorithm": "tpe", "space": {"beta": [2]}}, "seeds": [0, 1]}, "repeats over seeds"),
        ({"search": {"algorithm": "tpe", "space": {"beta": [2]}}, "scheduler": {"type": "hyperband"}},
         "unknown scheduler type 'hyperband'; valid: fifo, asha"),
        ({"search": {"algorithm": "grid"}}, "needs search.grid"),
    ],
)
def test_bad_specs_fail_naming_the_problem(spec, message):
    with pytest.raises(SpecError, match=message):
        parse_spec(spec)


def test_bad_spec_fails_before_ray_starts(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"trial": {"dataset": "synthetic", "model": "vgg"}, "search": {"algorithm": "grid",
                                    "grid": [{"beta": [2]}]}}))
    code = main(["--runs-dir", str(tmp_path / "runs"), "launch", str(path),
                 "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"])
    assert code == 2
    assert "unknown model 'vgg'; valid:" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "m.db").exists()
    import ray
    assert not ray.is_initialized()


def test_unknown_preset_lists_the_presets(capsys):
    assert main(["launch", "paper-everything"]) == 2
    assert "presets: evidence-cpu, evidence-gpu, hpo, paper-amount" in capsys.readouterr().err


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


def trial_runs(uri: str, experiment: str):
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return client, [], []
    runs = client.search_runs([found.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("mollify.kind") == "study"]
    return client, parents, [r for r in runs if r.data.tags.get("mollify.kind") == "trial"]


@pytest.mark.slow
def test_smoke_study_end_to_end(tmp_path):
    uri, storage = f"sqlite:///{tmp_path / 'mlflow.db'}", f"sqlite:///{tmp_path / 'optuna.db'}"
    proc = subprocess.run(study_cmd(tmp_path, "launch", "smoke", "--tracking-uri", uri, "--storage", storage,
                                    "--no-figures"), env=study_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    client, parents, children = trial_runs(uri, "smoke")
    assert len(parents) == 1 and len(children) == 4
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.data.tags["mollify.search"] == "tpe"
    assert {"beta", "roles"} <= set(json.loads(parent.data.tags["mollify.search_space"]))
    for run in children:
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.info.status == "FINISHED"
        for key in ("clean/error", "clean/nll", "clean/ece", "clean/ece_batch100", "train/loss", "train/error", "lr",
                    "corrupt/error", "corrupt/nll", "corrupt/ece", "corrupt/group/weather/error",
                    "corrupt/glass_blur/error", "corrupt/jpeg_compression/s5/ece"):
            assert key in run.data.metrics, (key, run.data.metrics)
        assert run.data.params["dataset"] == "synthetic" and run.data.params["epochs"] == "1"
    assert sorted(int(r.data.tags["mollify.trial_number"]) for r in children) == [0, 1, 2, 3]
    trials = optuna.load_study(study_name="smoke", storage=storage).trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 4
    by_number = {int(r.data.tags["mollify.trial_number"]): r for r in children}
    for t in trials:  # Optuna's values are the runs' metrics, and its params the runs' params
        assert t.value == pytest.approx(by_number[t.number].data.metrics["clean/error"])
        assert t.params["roles"] == by_number[t.number].data.params["roles"]
    assert "[study] 4/4 trials done" in proc.stdout
    status = subprocess.run([sys.executable, "-m", "study", "--runs-dir", str(tmp_path / "runs"), "status", "smoke",
                             "--json"], env=study_env(), capture_output=True, text=True, timeout=120)
    info = json.loads(status.stdout)
    assert (info["finished"], info["total"], info["failed"]) == (4, 4, 0)
    assert info["best"]["value"] == pytest.approx(min(r.data.metrics["clean/error"] for r in children))


RESUME_SPEC = {
    "trial": {"dataset": "synthetic", "train_size": 4096, "model": "smallcnn", "epochs": 3, "batch_size": 64,
              "lr": 0.05, "limit_eval_images": 200, "corruption_source": "none"},
    "search": {"algorithm": "tpe", "objectives": [["clean/error", "min"]], "num_samples": 4,
               "space": {"beta": {"type": "float", "low": 1, "high": 9}, "roles": ["xn", "xb", "xnb"]}},
    "resources": {"cpus": 1}, "max_concurrent": 1, "max_failures": 1,
}


@pytest.mark.slow
def test_killed_study_resumes_without_losing_or_duplicating(tmp_path):
    """The driver (and its local Ray) is killed mid-trial; `study resume` finishes exactly N trials
    and N runs, each with every epoch logged once, and the Optuna study continues."""
    uri, storage = f"sqlite:///{tmp_path / 'mlflow.db'}", f"sqlite:///{tmp_path / 'optuna.db'}"
    path = tmp_path / "resume.yaml"
    path.write_text(yaml.safe_dump(RESUME_SPEC))
    launch = subprocess.Popen(study_cmd(tmp_path, "launch", str(path), "--name", "resumable", "--tracking-uri", uri,
                                        "--storage", storage, "--no-figures"),
                              env=study_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 400
    try:
        while time.monotonic() < deadline and launch.poll() is None:
            client, _, children = trial_runs(uri, "resumable")
            finished = [r for r in children if r.info.status == "FINISHED"]
            running = [r for r in children if r.info.status == "RUNNING"
                       and client.get_metric_history(r.info.run_id, "train/loss")]
            if finished and running:  # one trial done, the next one mid-way
                break
            time.sleep(0.5)
        assert launch.poll() is None, launch.stdout.read().decode()[-3000:]
    finally:
        os.killpg(launch.pid, signal.SIGKILL)  # the driver, its Ray cluster and the trial workers
        launch.wait(timeout=60)
    _, _, before = trial_runs(uri, "resumable")
    assert 2 <= len(before) < 4

    proc = subprocess.run(study_cmd(tmp_path, "resume", "resumable", "--no-figures"), env=study_env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    client, parents, children = trial_runs(uri, "resumable")
    assert len(children) == 4, [r.data.tags.get("mollify.trial_id") for r in children]
    assert len({r.data.tags["mollify.trial_id"] for r in children}) == 4
    assert {r.info.run_id for r in before} <= {r.info.run_id for r in children}  # the interrupted run continued
    for run in children:
        assert run.info.status == "FINISHED"
        assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == [1, 2, 3]
    assert parents[0].info.status == "FINISHED"
    trials = optuna.load_study(study_name="resumable", storage=storage).trials
    assert len(trials) == 4 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
