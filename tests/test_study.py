"""Studies: specs and presets (fast), and real Ray Tune + Optuna + MLflow runs (slow).

The Ray tests run the study driver in its own network namespace whose only interface is loopback
(`unshare --net`): Ray 2.60 binds its servers to every interface, and inside that namespace every
interface is 127.0.0.1, so nothing the test starts listens anywhere else. Killing the namespace's
process group stops all of it."""

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from helpers import run_to_end, study_cmd, study_env, trial_runs
from study.__main__ import main
from study.record import start_parent_run
from study.tuning import make_scheduler
from study.spec import DefineByRun, sampling_order, SpecError, load_spec, parse_spec, preset_names
from trainables.config import TrialConfig
from trainables.models import create_model
from trainables.tracking import MODEL_ARTIFACT

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


def test_paper_baselines_is_method_section_3_1_plus_the_mixing_baselines_with_jsd():
    augments = ["none", "fcr", "fcr+randaug", "fcr+autoaug", "fcr+augmix", "fcr+trivaug", "fcr+mixup", "fcr+cutmix"]
    expected = {(d, a, m, False) for d in DATASETS for a in augments for m in (False, True)}
    expected |= {(d, a, m, True) for d in DATASETS for a in ("fcr+augmix", "fcr+ipmix") for m in (False, True)}
    got = configs("paper-baselines")
    assert len(got) == 60 and {(c["dataset"], c["augment"], c["mollify"], c.get("jsd", False)) for c in got} == expected
    jsd = [TrialConfig.from_dict(c) for c in got if c.get("jsd")]
    assert all(c.jsd_weight == 12.0 for c in jsd)  # the references' weight, the default
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


EVIDENCE_ARMS = {(False, None, None), (True, "xn", True), (True, "xb", True), (True, "xnb", True),
                 (True, "xnb", False)}  # (mollify, roles, smooth_labels): fcr alone, xn, xb, xnb, xnb unsmoothed


def evidence_arms(trials: list[tuple[bool, str, bool, int]]) -> dict[tuple, list[int]]:
    """(mollify, roles, smooth_labels, seed) per trial -> {(mollify, and when mollifying, roles
    and smooth_labels): seeds}."""
    arms: dict[tuple, list[int]] = {}
    for mollify, roles, smooth, seed in trials:
        arms.setdefault((mollify, roles if mollify else None, smooth if mollify else None), []).append(seed)
    return arms


@pytest.mark.parametrize("name", ["evidence-cpu", "evidence-gpu-reduced"])
def test_evidence_presets_are_five_arms_times_three_seeds(name):
    spec = load_spec(name)
    cfgs = [TrialConfig.from_dict(c) for c in spec.trial_configs()]
    assert spec.algorithm == "grid" and spec.total_trials() == len(cfgs) == 15
    arms = evidence_arms([(c.mollify, c.roles, c.smooth_labels, c.seed) for c in cfgs])
    assert set(arms) == EVIDENCE_ARMS and all(sorted(seeds) == [0, 1, 2] for seeds in arms.values())
    assert all((c.dataset, c.augment, c.beta, c.npow, c.bpow) == ("tinyimagenet", "fcr", 2.0, 1.0, 1.0) for c in cfgs)
    assert all((c.corruption_source, c.corruption_path, c.corruption_table) == ("auto", "data/corrupted",
                                                                              "tinyimagenet") for c in cfgs)
    assert spec.objectives[0] == ("corrupt/error", "min")


def test_evidence_cpu_is_20_classes_of_small_cnn():
    cfgs = [TrialConfig.from_dict(c) for c in load_spec("evidence-cpu").trial_configs()]
    assert {(c.model, c.num_classes, c.image_size) for c in cfgs} == {("smallcnn", 20, None)}


def test_evidence_gpu_reduced_is_preactresnet18_on_all_200_classes_at_64_px():
    spec = load_spec("evidence-gpu-reduced")
    cfgs = [TrialConfig.from_dict(c) for c in spec.trial_configs()]
    assert {(c.model, c.num_classes, c.image_size) for c in cfgs} == {("preactresnet18", None, None)}  # native 64 px
    assert spec.gpus > 0
    cfg = cfgs[0]
    model = create_model(cfg.model, 200 + cfg.sink_class).eval()
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 200 + cfg.sink_class)


@pytest.mark.parametrize("name", ["evidence-cpu-32", "evidence-gpu"])
def test_issue19_evidence_presets_are_the_five_arms_under_a_named_protocol(name):
    spec = load_spec(name)
    cfgs = [TrialConfig.from_dict(c) for c in spec.trial_configs()]
    arms = evidence_arms([(c.mollify, c.roles, c.smooth_labels, c.seed) for c in cfgs])
    assert set(arms) == EVIDENCE_ARMS and all(sorted(seeds) == [0, 1, 2] for seeds in arms.values())
    assert {(c.beta, c.npow, c.bpow, c.corruption_source) for c in cfgs} == {(2.0, 1.0, 1.0, "auto")}
    protocol = {"evidence-cpu-32": "cifar", "evidence-gpu": "tinyimagenet"}[name]
    assert {c.corruption_protocol for c in cfgs} == {protocol}
    primary = spec.endpoints.primary
    assert (primary.metric, primary.arm, primary.baseline) == (
        "corrupt/gaussian_noise/error", {"mollify": True, "roles": "xn"}, {"mollify": False})


def test_evidence_cpu_32_is_the_64_px_study_at_32_px_under_the_cifar_protocol():
    small = [TrialConfig.from_dict(c) for c in load_spec("evidence-cpu-32").trial_configs()]
    large = [TrialConfig.from_dict(c) for c in load_spec("evidence-cpu").trial_configs()]
    assert {(c.model, c.num_classes, c.image_size, c.augment) for c in small} == {("smallcnn", 20, 32, "fcr")}
    assert {(c.protocol_table, c.protocol_jpeg) for c in small} == {("cifar", False)}
    assert {(c.protocol_table, c.protocol_jpeg) for c in large} == {("tinyimagenet", None)}  # the release's format


def test_evidence_gpu_is_the_authors_tiny_imagenet_setup():
    """runs_paper.sh: -d tin -e 300 -n presnet50, --aug fcr trivaug for the type and smoothing ablations."""
    cfgs = [TrialConfig.from_dict(c) for c in load_spec("evidence-gpu").trial_configs()]
    assert {(c.model, c.epochs, c.batch_size, c.lr, c.augment, c.num_classes, c.image_size, c.precision)
            for c in cfgs} == {("preactresnet50", 300, 128, 0.01, "fcr+trivaug", None, None, "auto")}


def test_every_presets_search_answers_what_the_study_asks():
    """One interface for a grid and an Optuna search (study/search.py)."""
    for name in preset_names():
        spec = load_spec(name)
        search = spec.search
        assert search.algorithm == spec.algorithm and search.total() == spec.total_trials()
        assert search.selects == search.keeps_optuna_study == (search.sampler() is not None) == (
            search.planned() is None) == (search.space_function() is not None), name
        assert spec.max_epochs == max(TrialConfig.from_dict(c).epochs for c in search.configs())
        space = search.param_space({"__study": {}})
        assert ("__point" in space) == (not search.selects) and space["__study"] == {}


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


@pytest.mark.parametrize(("raw", "overrides", "says"), [
    ({"search": {"algorithm": "grid", "grid": [{"beta": []}]}}, {}, "search.grid[0].beta is an empty list"),
    ({"search": {"algorithm": "grid", "grid": [{"roles": ["xn", "xb"]}]}}, {"roles": "xnb"},
     "--set roles=... fixes a key the study searches (search.grid)"),
    ({"max_concurrent": "abc", "search": {"algorithm": "grid", "grid": [{"beta": [2]}]}}, {},
     "max_concurrent must be an integer"),
    ({"resources": {"cpus": "nan"}, "search": {"algorithm": "grid", "grid": [{"beta": [2]}]}}, {},
     "resources.cpus must be finite"),
    ({"search": {"algorithm": "tpe", "objectives": [["clean/eror", "min"]], "space": {"beta": [2, 4]}}}, {},
     "unknown metric 'clean/eror'"),
])
def test_spec_mistakes_are_caught_before_anything_starts(raw, overrides, says):
    with pytest.raises(SpecError) as caught:
        parse_spec({"trial": {"dataset": "synthetic", "valid_per_class": 4}, **raw}, overrides=overrides)
    assert says in str(caught.value)


def test_keys_are_drawn_after_the_keys_their_rule_reads():
    order = sampling_order(["npow", "bpow", "beta", "roles", "smooth_labels", "mollify"])
    assert order.index("mollify") < order.index("roles") < order.index("npow")
    assert order.index("smooth_labels") < order.index("bpow")


def test_define_by_run_skips_mollification_knobs_when_mollification_is_off():
    spec = parse_spec({"trial": {"dataset": "synthetic", "valid_per_class": 10}, "search": {
        "algorithm": "tpe", "num_samples": 4,
        "space": {"mollify": [True, False], "beta": {"type": "float", "low": 1, "high": 9}}}})
    study = optuna.create_study()
    for _ in range(30):
        trial = study.ask()
        DefineByRun(spec.space, spec.trial)(trial)
        assert ("beta" in trial.params) == trial.params["mollify"]
        study.tell(trial, 0.0)


def test_define_by_run_draws_jsd_weight_only_with_jsd():
    spec = parse_spec({"trial": {"dataset": "synthetic", "valid_per_class": 10, "augment": "fcr+augmix"},
                       "search": {"algorithm": "tpe", "num_samples": 4, "space": {
                           "jsd": [True, False], "jsd_weight": {"type": "float", "low": 1, "high": 20}}}})
    study = optuna.create_study()
    drawn = set()
    for _ in range(30):
        trial = study.ask()
        DefineByRun(spec.space, spec.trial)(trial)
        assert ("jsd_weight" in trial.params) == trial.params["jsd"]
        drawn.add(trial.params["jsd"])
        study.tell(trial, 0.0)
    assert drawn == {True, False}


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


# --- selection without the test set (METHOD.md section 6) ------------------------------------------

SEARCH = {"algorithm": "tpe", "num_samples": 4, "space": {"beta": {"type": "float", "low": 1, "high": 9}}}
HELD_OUT = {"dataset": "synthetic", "valid_per_class": 10}


@pytest.mark.parametrize(("metric", "counterpart"), [
    ("clean/error", "valid/error"), ("clean/ece", "valid/ece"), ("corrupt/error", "valid/corrupt/error"),
    ("corrupt/ece_batch100", "valid/corrupt/ece_batch100"),
    ("corrupt/group/noise/error", "valid/corrupt/error"),  # no test group among the held-out corruptions
    ("corrupt/gaussian_noise/s3/nll", "valid/corrupt/nll"),
    ("corrupt/spatter/error", "valid/corrupt/spatter/error"),
])
@pytest.mark.parametrize("algorithm", ["tpe", "gp"])
def test_a_search_on_a_test_metric_fails_naming_the_validation_metric(metric, counterpart, algorithm):
    with pytest.raises(SpecError) as err:
        parse_spec({"trial": HELD_OUT, "search": {**SEARCH, "algorithm": algorithm,
                                                  "objectives": [[metric, "min"]]}})
    message = str(err.value)
    assert f"search.objectives {metric!r} is measured on the test set" in message
    assert "optimistically biased" in message and f"validation metric {counterpart!r}" in message
    assert "select_on_test: true" in message


def test_nsga2_and_asha_on_test_metrics_fail_too():
    nsga2 = {**SEARCH, "algorithm": "nsga2", "objectives": [["valid/corrupt/error", "min"], ["corrupt/ece", "min"]]}
    with pytest.raises(SpecError, match=r"'corrupt/ece' is measured on the test set.*'valid/corrupt/ece'"):
        parse_spec({"trial": HELD_OUT, "search": nsga2})
    # a grid only enumerates, but ASHA stopping on test error selects
    grid = {"algorithm": "grid", "objectives": [["corrupt/error", "min"]], "grid": [{"beta": [2, 4]}]}
    with pytest.raises(SpecError, match=r"scheduler.metric 'clean/error' is measured on the test set, and the "
                                        r"ASHA scheduler stops trials on it.*'valid/error'"):
        parse_spec({"trial": HELD_OUT, "search": grid, "scheduler": {"type": "asha", "metric": "clean/error"}})


def test_grids_that_only_enumerate_pass_on_test_metrics():
    spec = parse_spec({"trial": {"dataset": "synthetic"}, "search": {
        "algorithm": "grid", "objectives": [["corrupt/error", "min"]], "grid": [{"beta": [2, 4]}]}})
    assert spec.selection_metrics == () and not spec.select_on_test
    for name in ("paper-baselines", "paper-type", "quickstart", "evidence-cpu"):
        assert load_spec(name).selection_metrics == ()


def test_select_on_test_opts_in_and_is_tagged_on_the_study_run(tmp_path):
    raw = {"trial": {"dataset": "synthetic"}, "select_on_test": True,
           "search": {**SEARCH, "objectives": [["corrupt/error", "min"]]},
           "scheduler": {"type": "asha", "metric": "clean/error"}}
    spec = parse_spec(raw, name="opted-in")
    assert spec.select_on_test and spec.selection_metrics == (("corrupt/error", "search.objectives"),
                                                              ("clean/error", "scheduler.metric"))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    tags = client.get_run(start_parent_run(spec, uri)).data.tags
    assert tags["mollify.select_on_test"] == "true"
    honest = parse_spec({"trial": HELD_OUT, "search": SEARCH}, name="honest")
    assert client.get_run(start_parent_run(honest, uri)).data.tags["mollify.select_on_test"] == "false"
    with pytest.raises(SpecError, match="select_on_test must be true or false, got 'yes'"):
        parse_spec({**raw, "select_on_test": "yes"})


@pytest.mark.parametrize("raw", [
    {"trial": {"dataset": "synthetic"}, "search": SEARCH},  # the search's default objective is valid/error
    {"trial": {"dataset": "synthetic", "valid_per_class": 0}, "search": {**SEARCH, "objectives": [["valid/ece", "min"]]}},
    {"trial": {"dataset": "synthetic"}, "search": {**SEARCH, "space": {**SEARCH["space"], "valid_per_class": [0, 20]}}},
    {"trial": {"dataset": "synthetic"}, "search": {"algorithm": "grid", "objectives": [["valid/corrupt/error", "min"]],
                                                   "grid": [{"valid_per_class": [0, 10]}]}},
    {"trial": {"dataset": "synthetic"}, "search": {"algorithm": "grid", "grid": [{"beta": [2, 4]}]},
     "scheduler": {"type": "asha", "metric": "valid/error"}},
])
def test_a_validation_metric_without_a_validation_split_fails(raw):
    with pytest.raises(SpecError, match=r"is measured on the validation split, but not every trial holds one out: "
                                        r"set trial valid_per_class > 0"):
        parse_spec(raw)


def test_validation_objectives_with_a_split_pass():
    spec = parse_spec({"trial": HELD_OUT, "search": SEARCH})
    assert spec.objectives == (("valid/error", "min"),)
    searched = {**SEARCH, "space": {**SEARCH["space"], "valid_per_class": {"type": "int", "low": 5, "high": 20}}}
    assert parse_spec({"trial": {"dataset": "synthetic"}, "search": searched}).space["valid_per_class"].low == 5
    for name in ("hpo", "pareto", "smoke"):
        spec = load_spec(name)
        assert all(m.startswith("valid/") for m, _ in spec.selection_metrics), spec.selection_metrics
        assert spec.trial["valid_per_class"] > 0
    assert load_spec("hpo").scheduler.metric == "valid/corrupt/error"


def test_unknown_metrics_fail_naming_examples():
    with pytest.raises(SpecError, match=r"search.objectives: unknown metric 'valid/eror'; e.g. valid/error"):
        parse_spec({"trial": HELD_OUT, "search": {**SEARCH, "objectives": [["valid/eror", "min"]]}})
    with pytest.raises(SpecError, match=r"scheduler.metric: unknown metric 'valid/gaussian_noise/error'"):
        parse_spec({"trial": HELD_OUT, "search": SEARCH, "scheduler": {"type": "asha",
                                                                       "metric": "valid/gaussian_noise/error"}})


def test_epochs_horizon_is_the_configs_default_or_the_searched_maximum():
    def horizon(trial: dict, space: dict | None = None, grid: list | None = None) -> int:
        search = {"algorithm": "grid", "grid": grid} if grid else {**SEARCH, "space": {**SEARCH["space"], **(space or {})}}
        spec = parse_spec({"trial": {**HELD_OUT, **trial}, "search": search,
                           "scheduler": {"type": "asha", "metric": "valid/error"}})
        assert make_scheduler(spec)._max_t == spec.max_epochs
        return spec.max_epochs

    assert horizon({}) == TrialConfig().epochs
    assert horizon({"epochs": 3}) == 3
    assert horizon({}, {"epochs": {"type": "int", "low": 2, "high": 7}}) == 7
    assert horizon({}, {"epochs": [4, 12, 6]}) == 12
    assert horizon({}, grid=[{"epochs": [2, 5]}, {"beta": [3]}]) == max(5, TrialConfig().epochs)


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
    assert "presets: evidence-cpu, evidence-cpu-32, evidence-gpu, evidence-gpu-reduced, hpo, imagenet-smoke, paper-amount" in \
        capsys.readouterr().err


# --- real studies (Ray, Optuna, MLflow) ------------------------------------------------------------

RESUME_SPEC = {
    "trial": {"dataset": "synthetic", "train_size": 4096, "model": "smallcnn", "epochs": 3, "batch_size": 64,
              "lr": 0.05, "limit_eval_images": 200, "corruption_source": "none", "valid_per_class": 10,
              "valid_corrupt_images": 32},
    "search": {"algorithm": "tpe", "objectives": [["valid/error", "min"]], "num_samples": 4,
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


AUTO_SPEC = {
    "trial": {"dataset": "synthetic", "train_size": 256, "model": "smallcnn", "epochs": 1, "batch_size": 64,
              "lr": 0.05, "limit_eval_images": 64, "limit_corrupt_images": 32, "corruption_source": "auto",
              "corruptions": "contrast,gaussian_noise", "device": "cpu"},
    "search": {"algorithm": "grid", "objectives": [["corrupt/error", "min"]], "grid": [{"roles": ["xn", "xb"]}]},
    "resources": {"cpus": 1}, "max_concurrent": 2, "max_failures": 0,
}


def generated_sets(root: Path) -> list[Path]:
    """The generated sets under a corruption_path, and fail on any staging folder left there."""
    entries = sorted((root / "generated").iterdir())
    assert not [p.name for p in entries if p.name.startswith(".")], entries
    return entries


@pytest.mark.slow
def test_auto_corrupted_set_is_made_once_before_the_trials(tmp_path):
    """`corruption_source: auto` with no release: the launcher generates the set before Ray starts,
    records it on the parent run, and every trial evaluates on it (its params say which)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    corrupted = tmp_path / "corrupted"
    path = tmp_path / "auto.yaml"
    path.write_text(yaml.safe_dump({**AUTO_SPEC, "trial": {**AUTO_SPEC["trial"], "corruption_path": str(corrupted)}}))
    proc = run_to_end(study_cmd(tmp_path, "launch", str(path), "--name", "auto", "--tracking-uri", uri,
                               "--storage", f"sqlite:///{tmp_path / 'optuna.db'}", "--no-figures"), timeout=500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    [folder] = generated_sets(corrupted)
    assert proc.stdout.count("generating synthetic corrupted set") == 1  # by the launcher, not by a trial
    client, [parent], children = trial_runs(uri, "auto")
    sets = json.loads(parent.data.tags["mollify.corruption_sets"])
    assert sets == [{"dataset": "synthetic", "num_classes": None, "image_size": None, "source": "generated",
                     "path": str(folder)}]
    assert len(children) == 2 and parent.info.status == "FINISHED"
    made_ms = (folder / "generated.json").stat().st_mtime_ns / 1e6
    for run in children:
        assert run.info.status == "FINISHED"
        assert (run.data.params["corruption_source"], run.data.params["corruption_path"]) == ("generated", str(folder))
        assert made_ms < run.info.start_time  # made before the trials, never again by them
        assert {"corrupt/error", "corrupt/group/digital/nll", "corrupt/s1/error"} <= set(run.data.metrics)
        assert [a.path for a in client.list_artifacts(run.info.run_id, "corrupt")] == ["corrupt/cells.json"]
    assert sorted(r.data.params["roles"] for r in children) == ["xb", "xn"]


@pytest.mark.slow
@pytest.mark.timeout(1800)  # 15 trials, each a fresh Ray worker: minutes on 2 busy CPU cores
def test_evidence_cpu_runs_end_to_end_at_a_tiny_size(tmp_path, tiny_imagenet_root):
    """The evidence-cpu preset as `make evidence-cpu` launches it, shrunk: 2 real Tiny ImageNet
    classes, one batch of training, a corrupted set generated once; 15 trials, each with its model."""
    uri, storage = f"sqlite:///{tmp_path / 'mlflow.db'}", f"sqlite:///{tmp_path / 'optuna.db'}"
    corrupted = tmp_path / "corrupted"
    tiny = dict(data_root=tiny_imagenet_root, corruption_path=corrupted, num_classes=2, epochs=1,
                limit_train_batches=1, limit_eval_images=20, limit_corrupt_images=10, corruptions="gaussian_noise",
                severities=1, device="cpu")
    proc = run_to_end(study_cmd(tmp_path, "launch", "evidence-cpu", "--tracking-uri", uri, "--storage", storage,
                               "--no-figures", *[f"--set={k}={v}" for k, v in tiny.items()]), timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    client, [parent], children = trial_runs(uri, "evidence-cpu")
    assert parent.info.status == "FINISHED" and len(children) == 15
    [folder] = generated_sets(corrupted)
    [found] = json.loads(parent.data.tags["mollify.corruption_sets"])
    assert (found["dataset"], found["num_classes"], found["source"], found["path"]) == (
        "tinyimagenet", 2, "generated", str(folder))
    assert sorted(p.name for p in (folder / "gaussian_noise" / "1").iterdir()) == sorted(
        (tiny_imagenet_root / "wnids.txt").read_text().split()[:2])
    trials = []
    for run in children:
        assert run.info.status == "FINISHED"
        assert "corrupt/error" in run.data.metrics and "clean/error" in run.data.metrics
        assert (run.data.params["corruption_source"], run.data.params["corruption_path"]) == ("generated", str(folder))
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id, MODEL_ARTIFACT)}
        assert f"{MODEL_ARTIFACT}/MLmodel" in artifacts, artifacts
        p = run.data.params
        mollify = p["mollify"] == "True"
        assert mollify == ("roles" in p) == ("smooth_labels" in p)  # knobs that did not act are not params
        trials.append((mollify, p.get("roles"), p.get("smooth_labels") == "True", int(p["seed"])))
    arms = evidence_arms(trials)
    assert set(arms) == EVIDENCE_ARMS and all(sorted(seeds) == [0, 1, 2] for seeds in arms.values())


# Trials that differ only in the learning rate (log-uniform over five decades), one at a time, so
# that ASHA (rungs at epochs 1, 2 and 4) stops those behind the running median of their rung. The
# validation NLL is continuous: no ties at a cutoff.
ASHA_SPEC = {
    "trial": {"dataset": "synthetic", "train_size": 640, "model": "smallcnn", "epochs": 4, "batch_size": 64,
              "limit_eval_images": 64, "corruption_source": "none", "valid_per_class": 8,
              "valid_corrupt_images": 16},
    "search": {"algorithm": "tpe", "objectives": [["valid/nll", "min"]], "num_samples": 6,
               "space": {"lr": {"type": "float", "low": 1e-5, "high": 0.3, "log": True}}},
    "scheduler": {"type": "asha", "metric": "valid/nll", "mode": "min", "grace_period": 1, "reduction_factor": 2},
    "resources": {"cpus": 1}, "max_concurrent": 1, "max_failures": 0,
}


@pytest.mark.slow
@pytest.mark.timeout(1200)  # about 3 minutes alone on 2 CPU cores; a loaded machine takes longer
def test_asha_stops_trials_that_optuna_records_as_pruned_and_mlflow_as_stopped_early(tmp_path):
    """ASHA on the validation NLL: the trials it stops are exactly Optuna's PRUNED ones, each with
    the value it was stopped on; their MLflow runs are KILLED (not FAILED) and tagged stopped early,
    the others FINISHED with every epoch; status counts them apart."""
    uri, storage = f"sqlite:///{tmp_path / 'mlflow.db'}", f"sqlite:///{tmp_path / 'optuna.db'}"
    path = tmp_path / "asha.yaml"
    path.write_text(yaml.safe_dump(ASHA_SPEC))
    proc = subprocess.run(study_cmd(tmp_path, "launch", str(path), "--name", "asha", "--tracking-uri", uri,
                                    "--storage", storage, "--no-figures"),
                          env=study_env(), capture_output=True, text=True, timeout=1100)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    client, parents, children = trial_runs(uri, "asha")
    assert len(children) == 6 and parents[0].info.status == "FINISHED"
    runs = {int(r.data.tags["mollify.trial_number"]): r for r in children}
    trials = optuna.load_study(study_name="asha", storage=storage).trials
    pruned = {t.number for t in trials if t.state == optuna.trial.TrialState.PRUNED}
    complete = {t.number for t in trials if t.state == optuna.trial.TrialState.COMPLETE}
    assert pruned and complete and pruned | complete == set(runs), [t.state for t in trials]
    assert pruned == {n for n, r in runs.items() if r.data.tags.get("mollify.stopped_early") == "true"}
    for t in trials:
        run = runs[t.number]
        epochs = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
        nll = client.get_metric_history(run.info.run_id, "valid/nll")
        logged = {m.step: pytest.approx(m.value) for m in nll}
        assert t.value == pytest.approx(run.data.metrics["valid/nll"])  # the last value logged
        if t.number in pruned:  # Ray never passes the result ASHA stops on to the searcher: reported
            assert t.intermediate_values == logged and t.value == t.intermediate_values[max(logged)]
            assert run.info.status == "KILLED" and 1 <= len(epochs) < 4 and epochs == list(range(1, len(epochs) + 1))
            assert "corrupt/error" not in run.data.metrics and "clean/error" in run.data.metrics
        else:
            assert t.intermediate_values.items() <= logged.items()
            assert run.info.status == "FINISHED" and epochs == [1, 2, 3, 4]
            assert "mollify.stopped_early" not in run.data.tags
            assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"model", "config.yaml"}
    # The live progress line counts the stopped trials apart and never takes "best" from them.
    last = [line for line in proc.stdout.splitlines() if "trials done" in line][-1]
    assert f"6/6 trials done ({len(pruned)} stopped early)" in last
    assert f"best valid/nll {min(runs[n].data.metrics['valid/nll'] for n in complete):.4f}" in last
    status = subprocess.run([sys.executable, "-m", "study", "--runs-dir", str(tmp_path / "runs"), "status", "asha",
                             "--json"], env=study_env(), capture_output=True, text=True, timeout=120)
    info = json.loads(status.stdout)
    assert (info["finished"], info["stopped_early"], info["failed"]) == (len(complete), len(pruned), 0)
    assert info["best"]["value"] == pytest.approx(min(runs[n].data.metrics["valid/nll"] for n in complete))


# --- issue 12: outcomes that tell the truth, names that are claimed, mistakes caught before Ray ------

def wait_for(predicate, timeout: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if predicate():
            return
        time.sleep(0.5)
    out = proc.stdout.read() if proc.poll() is not None else ""
    pytest.fail(f"the condition never held (driver {'ended' if proc.poll() is not None else 'running'}): {out[-3000:]}")


def status_of(tmp_path: Path, name: str) -> dict:
    proc = subprocess.run(study_cmd(tmp_path, "status", name, "--json"), env=study_env(), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_says_interrupted_and_resume_finishes(tmp_path, stop):
    """Ctrl-C (or SIGTERM) with trials pending used to exit 0 with the parent run FINISHED; now:
    exit 130, the parent run KILLED (resumable), status 'interrupted', and `resume` finishes
    exactly N trials."""
    uri, storage = f"sqlite:///{tmp_path / 'mlflow.db'}", f"sqlite:///{tmp_path / 'optuna.db'}"
    path = tmp_path / "resume.yaml"
    path.write_text(yaml.safe_dump(RESUME_SPEC))
    launch = subprocess.Popen(study_cmd(tmp_path, "launch", str(path), "--name", "ctrlc", "--tracking-uri", uri,
                                        "--storage", storage, "--no-figures"),
                              env=study_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)
    try:
        def one_done_one_running() -> bool:
            client, _, children = trial_runs(uri, "ctrlc")
            return any(r.info.status == "FINISHED" for r in children) and any(
                r.info.status == "RUNNING" and client.get_metric_history(r.info.run_id, "train/loss") for r in children)
        wait_for(one_done_one_running, 400, launch)
        os.kill(launch.pid, stop)  # Ctrl-C (or a scheduler's stop), to the driver
        out, _ = launch.communicate(timeout=180)
    finally:
        if launch.poll() is None:
            os.killpg(launch.pid, signal.SIGKILL)
            launch.wait(timeout=60)
    assert launch.returncode == 130, out[-3000:]
    assert "[study] interrupted: 1/4 trials done" in out and "python -m study resume ctrlc" in out
    _, [parent], before = trial_runs(uri, "ctrlc")
    assert parent.info.status == "KILLED" and parent.data.tags["mollify.state"] == "interrupted"
    info = status_of(tmp_path, "ctrlc")
    assert (info["state"], info["finished"], info["interrupted"], info["running"]) == ("interrupted", 1, 1, 0)
    assert info["never_started"] == 4 - len(before) >= 1
    if stop == signal.SIGTERM:
        return  # the same path on from here

    proc = run_to_end(study_cmd(tmp_path, "resume", "ctrlc", "--no-figures"), timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    client, [parent], children = trial_runs(uri, "ctrlc")
    assert len(children) == 4 and parent.info.status == "FINISHED" and parent.data.tags["mollify.state"] == "finished"
    for run in children:
        assert run.info.status == "FINISHED"
        assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == [1, 2, 3]
    assert status_of(tmp_path, "ctrlc")["state"] == "finished"


FAILING_SPEC = {
    "trial": {"dataset": "synthetic", "train_size": 256, "model": "smallcnn", "epochs": 1, "batch_size": 64,
              "lr": 1.0e30, "limit_eval_images": 64, "corruption_source": "none", "valid_per_class": 8,
              "valid_corrupt_images": 16},
    "search": {"algorithm": "tpe", "objectives": [["valid/error", "min"]], "num_samples": 2,
               "space": {"beta": {"type": "float", "low": 1, "high": 9}}},
    "resources": {"cpus": 1}, "max_concurrent": 2, "max_failures": 0,
}


@pytest.mark.slow
def test_failed_trials_fail_the_study_and_never_score(tmp_path):
    """lr 1e30: every trial's loss diverges. The study exits 1, its parent run is FAILED, Optuna
    holds FAIL (no value), and each run says why."""
    uri, storage = f"sqlite:///{tmp_path / 'mlflow.db'}", f"sqlite:///{tmp_path / 'optuna.db'}"
    path = tmp_path / "failing.yaml"
    path.write_text(yaml.safe_dump(FAILING_SPEC))
    proc = run_to_end(study_cmd(tmp_path, "launch", str(path), "--name", "failing", "--tracking-uri", uri,
                               "--storage", storage), timeout=400)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "[study] failing failed: 0/2 trials ended, 2 failed" in proc.stdout
    assert proc.stdout.count("the training loss became") == 2  # the reason, on the console
    _, [parent], children = trial_runs(uri, "failing")
    assert parent.info.status == "FAILED" and parent.data.tags["mollify.state"] == "failed"
    assert [r.info.status for r in children] == ["FAILED", "FAILED"]
    assert all("TrialDivergedError" in r.data.tags["mollify.status"] for r in children)
    trials = optuna.load_study(study_name="failing", storage=storage).trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.FAIL] * 2 and all(t.value is None for t in trials)
    assert status_of(tmp_path, "failing")["state"] == "failed"

    # The same name from another runs folder, on the same MLflow store: refused, nothing created.
    other = tmp_path / "elsewhere"
    refused = run_to_end(study_cmd(other, "launch", str(path), "--name", "failing", "--tracking-uri", uri,
                                  "--storage", f"sqlite:///{tmp_path / 'optuna2.db'}"), timeout=120)
    assert refused.returncode == 2 and "already holds a study" in refused.stderr
    assert not (other / "runs" / "failing").exists() and len(trial_runs(uri, "failing")[1]) == 1


TINY_SPEC = {
    "trial": {"dataset": "synthetic", "train_size": 128, "model": "smallcnn", "epochs": 1, "batch_size": 64,
              "limit_eval_images": 32, "corruption_source": "none"},
    "search": {"algorithm": "grid", "grid": [{"beta": [2]}]},
    "resources": {"cpus": 1}, "max_failures": 0,
}


@pytest.mark.slow
def test_one_name_is_claimed_once_and_first_launches_share_fresh_stores(tmp_path):
    """Two launches of one name at once used to make one Optuna study with 2N trials and two parent
    runs; two first launches of different names raced on MLflow's schema. Now: one claim wins;
    different names both work on the fresh stores."""
    uri, storage = f"sqlite:///{tmp_path / 'mlflow.db'}", f"sqlite:///{tmp_path / 'optuna.db'}"
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY_SPEC))

    def start(name: str) -> subprocess.Popen:
        return subprocess.Popen(study_cmd(tmp_path, "launch", str(path), "--name", name, "--tracking-uri", uri,
                                          "--storage", storage, "--no-figures"), env=study_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)

    procs = [start("first"), start("second"), start("first")]
    try:
        outs = [p.communicate(timeout=400) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    codes = [p.returncode for p in procs]
    assert codes[1] == 0, outs[1]
    assert sorted([codes[0], codes[2]]) == [0, 2], outs  # one "first" ran, the other was refused
    loser = outs[0] if codes[0] == 2 else outs[2]
    assert "exists" in loser[1] and len(loser[1].strip().splitlines()) == 1
    for name in ("first", "second"):
        _, parents, children = trial_runs(uri, name)
        assert len(parents) == 1 and len(children) == 1 and children[0].info.status == "FINISHED"


@pytest.mark.slow
@pytest.mark.parametrize(("args", "says"), [
    (("--name", "../../escape"), "use letters, digits"),
    (("--gpus-per-trial", "1"), "but the Ray cluster has"),
    (("--tracking-uri", "http://127.0.0.1:9"), "does not answer within 5 s"),
    (("--storage", "postgresql://nobody@127.0.0.1:9/optuna"), "cannot be reached"),
    (("--set", "beta=4"), "fixes a key the study searches (search.grid)"),
    (("--set", "dataset=cifar10", "--set", "data_root={tmp}/nowhere"), "CIFAR10 files not found"),
    (("--storage", "sqlite:///{tmp}/tiny.yaml/optuna.db"), "cannot make the folder of a SQLite store"),
])
def test_mistakes_fail_before_ray_runs_a_trial_and_leave_nothing(tmp_path, args, says):
    """Each used to start Ray (and trials) and fail late, hang, or write where it should not."""
    args = [a.format(tmp=tmp_path) for a in args]
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY_SPEC))
    started = time.monotonic()
    defaults = ["--storage", f"sqlite:///{tmp_path / 'o.db'}"] if "--storage" not in args else []
    proc = run_to_end(study_cmd(tmp_path, "launch", str(path), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}",
                               *defaults, *args), timeout=120)
    assert time.monotonic() - started < 90
    assert proc.returncode == 2 and says in proc.stderr, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not list((tmp_path / "runs").glob("*")) if (tmp_path / "runs").exists() else True
    assert not (tmp_path.parent / "escape").exists()
    assert trial_runs(f"sqlite:///{tmp_path / 'm.db'}", "tiny")[1] == []
