"""The study's record: what study/ and trainables/ write into MLflow and Optuna, declared once in
contract/, and what analysis/ reads of it, a study recorded before the record held
its rules included; then the smoke study end to end, figures on, on real Ray, Optuna and MLflow,
read back the way a person and `analysis` read it."""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient

import contract
import study.record as record
from analysis import load_runs, load_study_info, plots, tables, with_configurations
from analysis.benchmark import (CLEAN_ERROR, CORRUPT_ERROR, CORRUPTION_GROUPS, CORRUPTIONS, SEVERITIES,
                                corruption_metric, group_metric, severity_metric)
from analysis.mlflow_io import parse_param
from analysis.optimisation import importances, rebuild_study
from analysis.report import ABLATION_METRICS
from contract import METRICS, trial_metric_names
from helpers import REPO, study_cmd, study_env, trial_runs
from study.launch import absolute_paths
from study.spec import load_spec, parse_spec, preset_names, read_source
from trainables.config import ACTIVE_WHEN, TrialConfig, active_params, is_active
from trainables.corruptions import BENCHMARK, GROUPS

# --- one contract -------------------------------------------------------------------------------------


def test_the_record_holds_what_analysis_reads_for_every_preset():
    for name in preset_names():
        data = record.record_data(load_spec(name))
        assert set(contract.RECORD_KEYS) <= set(data), name
        json.dumps(data)  # data, not objects
        for key, domain in data["search_space"].items():  # conditions are data, not prose
            assert "condition" not in domain
            for clause in domain.get("active_when", []):
                assert set(clause) == {"key", "op", "value"} and clause["op"] in ("is", "contains", "above")
        assert contract.rules_from_record(data) == ACTIVE_WHEN  # the rules as stored read back as declared


def test_corruption_groups_and_severities_are_the_trials():
    assert CORRUPTION_GROUPS == {g: GROUPS[g] for g in CORRUPTION_GROUPS} and set(CORRUPTION_GROUPS) == set(GROUPS)
    assert CORRUPTIONS == BENCHMARK and SEVERITIES == (1, 2, 3, 4, 5)


def test_every_metric_analysis_reads_is_one_a_trial_reports():
    names = trial_metric_names()
    read = {CLEAN_ERROR, CORRUPT_ERROR, *ABLATION_METRICS, *plots.METRIC_WORDS,
            *(metric for *_, metric in tables.COLUMNS)}
    read |= {group_metric(g, m) for g in CORRUPTION_GROUPS for m in METRICS}
    read |= {corruption_metric(c, m) for c in CORRUPTIONS for m in METRICS}
    read |= {severity_metric(s, m) for s in SEVERITIES for m in METRICS}
    assert read - names == set()


def test_which_knobs_act_reads_alike_on_a_config_and_on_its_logged_params():
    """One evaluator: on a config's values and on the params MLflow returns (strings, typed back)."""
    grid = itertools.product([True, False], ["xn", "xb", "xnb", "e", "xe"], [True, False], [0, 10],
                             ["on_the_fly", "none"], ["synthetic", "cifar10"])
    for mollify, roles, smooth, valid, source, dataset in grid:
        cfg = TrialConfig(mollify=mollify, roles=roles, smooth_labels=smooth, valid_per_class=valid,
                          corruption_source=source, dataset=dataset)
        logged = {k: parse_param(str(v)) for k, v in active_params(cfg).items()}
        for key in ACTIVE_WHEN:
            assert contract.rule_holds(ACTIVE_WHEN[key], logged) == is_active(key, cfg.to_dict()), (key, cfg)


def test_an_unknown_condition_op_fails_wherever_a_rule_is_read():
    with pytest.raises(ValueError, match="unknown condition op 'equals'.*valid: is, contains, above"):
        contract.rule_holds([("mollify", "equals", True)], {"mollify": True})
    with pytest.raises(ValueError, match="unknown condition op"):
        contract.rules_from_record({"active_when": {"beta": [["mollify", "equals", True]]}})


@pytest.mark.slow  # a whole trial or a subprocess (seconds): make test-quick stays under 2 minutes
def test_analysis_imports_without_torch_or_ray():
    """analysis reads a study where only the MLflow store is: the contract it shares is stdlib only."""
    code = """
import sys
class Blocked:  # as if torch and Ray were not installed
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "ray"):
            raise ImportError(f"{name} is blocked")
sys.meta_path.insert(0, Blocked())
import analysis, analysis.__main__, contract
assert not {"torch", "ray"} & set(sys.modules)
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


# --- a study recorded before the change still reads ---------------------------------------------------

def _old_study(uri: str, name: str, record_json: dict | None, tags: dict[str, str]) -> None:
    """A parent run and three trial runs as an older version wrote them: a record.json without the
    rules (or none at all: tags only), and trial runs that logged every knob, acting or not."""
    client = MlflowClient(uri)
    experiment = client.create_experiment(name, artifact_location=f"{uri.removeprefix('sqlite:///')}.{name}")
    parent = client.create_run(experiment, run_name=name, tags={"mollify.kind": "study", **tags}).info.run_id
    if record_json is not None:
        client.log_dict(parent, record_json, "study/record.json")
    trials = [dict(mollify=False, roles="xnb", beta=2.0, seed=0), dict(mollify=False, roles="xn", beta=4.0, seed=1),
              dict(mollify=True, roles="xn", beta=4.0, seed=0)]
    for i, params in enumerate(trials):
        run = client.create_run(experiment, run_name=f"{i:04d}", tags={
            "mollify.kind": "trial", "mlflow.parentRunId": parent, "mollify.trial_number": str(i)}).info.run_id
        for key, value in params.items():
            client.log_param(run, key, str(value))
        client.log_metric(run, "clean/error", 0.5 - 0.1 * i)
        client.set_terminated(run, "FINISHED")
    client.set_terminated(parent, "FINISHED")


OLD_RECORD = {"schema": 1, "study": "old", "preset": "custom", "search": "grid",
              "objectives": [["clean/error", "min"]], "label_keys": ["mollify", "roles", "beta"],
              "search_space": {"beta": {"type": "grid", "values": [2.0, 4.0],
                                        "active_when": [{"key": "mollify", "op": "is", "value": True}]}},
              "select_on_test": False}


TAGS = {"mollify.study": "old", "mollify.search": "grid", "mollify.objectives": '[["clean/error", "min"]]'}


@pytest.fixture(scope="module")
def old_studies(tmp_path_factory) -> str:
    """One store (its migrations take seconds) holding three older studies: a record without the
    rules, tags only, and a record whose rules differ from today's."""
    tmp = tmp_path_factory.mktemp("old")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    _old_study(uri, "record-without-rules", {**OLD_RECORD, "study": "record-without-rules"}, TAGS)
    _old_study(uri, "tags-only", None, TAGS)
    _old_study(uri, "own-rules", {**OLD_RECORD, "study": "own-rules",
                                  "active_when": {"beta": [["mollify", "is", True]]}}, {})  # roles acted everywhere then
    return uri


@pytest.mark.parametrize("name", ["record-without-rules", "tags-only"])
def test_a_study_recorded_before_the_rules_were_stored_still_reads(old_studies, name):
    info = load_study_info(name, old_studies)
    assert info.search == "grid" and info.objectives == (("clean/error", "min"),)
    assert info.active_when == ACTIVE_WHEN  # no stored rules: the contract's
    runs = load_runs(name, old_studies)
    labelled, table = with_configurations(runs, info.active_when)
    assert len(table) == 2  # the two runs without mollification are one configuration, whatever roles/beta said
    assert table["n_runs"].tolist() == [2, 1]


def test_the_rules_a_study_stored_are_the_ones_analysis_applies(old_studies):
    info = load_study_info("own-rules", old_studies)
    assert info.active_when == {"beta": (("mollify", "is", True),)}
    _, table = with_configurations(load_runs("own-rules", old_studies), info.active_when)
    assert len(table) == 3  # roles told the two runs without mollification apart


def test_trial_run_names_say_what_the_trial_is():
    spec = load_spec("evidence-cpu")
    names = [record.trial_run_name(i, TrialConfig.from_dict(c).to_dict(), record.label_keys(spec))
             for i, c in enumerate(spec.trial_configs())]
    assert names[:4] == ["no-moll s0 #0", "no-moll s1 #1", "no-moll s2 #2", "xn ls s0 #3"]
    assert "xnb no-ls s0 #12" in names and len(set(names)) == len(names)
    beta = {"mollify": True, "roles": "xn", "beta": 4.0, "npow": 1.5, "smooth_labels": False, "seed": 2}
    assert record.trial_run_name(7, beta, ["roles", "beta", "npow"]) == "beta=4 xn s2 #7"  # npow did not act


def test_run_names_differ_where_the_runs_table_cuts_them():
    """MLflow's runs table shows a name's first characters: trials of a search differ there."""
    spec = load_spec("hpo")
    keys = record.label_keys(spec)
    trials = [{**TrialConfig().to_dict(), "roles": "xnb", "beta": beta, "npow": 0.5, "bpow": 1.5, "seed": 0}
              for beta in (2.13, 5.7, 9.24)]
    names = [record.trial_run_name(i, t, keys) for i, t in enumerate(trials)]
    assert len({n[:9] for n in names}) == 3, names
    assert all(n.endswith(f"#{i}") for i, n in enumerate(names))


def test_a_trial_run_describes_its_arm_in_words():
    values = {**TrialConfig().to_dict(), "roles": "xnb", "beta": 9.2, "npow": 0.851, "bpow": 1.5, "seed": 3}
    text = record.describe_trial(5, values, ["roles", "beta", "npow", "bpow"], "hpo")
    assert text.startswith("Trial 5 of study **hpo**: mollified with noise and blur (`xnb`)")
    assert "mollification amount beta 9.2" in text and "seed 3" in text
    off = record.describe_trial(0, {**values, "mollify": False}, ["mollify", "roles", "beta"], "hpo")
    assert "without mollification" in off and "beta" not in off


def test_a_grid_search_space_lists_the_values_its_trials_take():
    """[{mollify: [false]}, {roles: [xn, xb]}]: 1 of 3 trials does not mollify."""
    spec = parse_spec({"trial": {"dataset": "synthetic"}, "search": {
        "algorithm": "grid", "grid": [{"mollify": [False]}, {"roles": ["xn", "xb"]}]}})
    space = spec.search_space_description()
    assert space["mollify"]["values"] == [False, True] and space["roles"]["values"] == ["xb", "xn"]
    assert space["roles"]["active_when"] == [{"key": "mollify", "op": "is", "value": True}]


def test_the_effective_spec_parses_back_to_the_spec_that_ran():
    for name in preset_names():
        raw, preset = read_source(name)
        # 6 epochs: within every preset's ASHA grace period (hpo's is 5; a shorter run is refused)
        spec = parse_spec({**raw, "max_concurrent": 3}, preset=preset, name="x", overrides={"epochs": 6})
        again = parse_spec(spec.effective(), preset=preset)
        assert dataclasses.replace(again, source={}) == dataclasses.replace(spec, source={}), name
        assert spec.effective()["trial"]["epochs"] == 6


def test_tracking_uris_are_recorded_without_credentials():
    assert record.safe_uri("http://admin:s3cret@127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert record.safe_uri("sqlite:////tmp/mlflow.db") == "sqlite:////tmp/mlflow.db"
    link = record.ui_link("http://admin:s3cret@127.0.0.1:5000/", "3", "abc")
    assert link == "http://127.0.0.1:5000/#/experiments/3/runs/abc?workflowType=machine_learning"


# --- the smoke study, read back -----------------------------------------------------------------------

def _refs(page: str) -> list[str]:
    return [r for r in re.findall(r'(?:href|src)="([^"]+)"', page) if not r.startswith(("data:", "#"))]


@pytest.fixture(scope="module")
def smoke(readme_study) -> dict:
    """README.md's `launch smoke`, from a copy of the checkout (conftest.py's `readme_study`, which
    tests/test_readme.py's README commands continue)."""
    root, _, proc = readme_study
    uri, storage = f"sqlite:///{root / 'mlflow.db'}", f"sqlite:///{root / 'optuna.db'}"
    client, parents, children = trial_runs(uri, "smoke")
    assert len(parents) == 1 and len(children) == 4
    return {"tmp": root, "uri": uri, "storage": storage, "proc": proc, "client": client, "parent": parents[0],
            "children": children, "optuna": optuna.load_study(study_name="smoke", storage=storage)}


@pytest.mark.slow
def test_smoke_study_trials_and_metrics(smoke):
    parent, children = smoke["parent"], smoke["children"]
    assert parent.info.status == "FINISHED" and parent.data.tags["mollify.search"] == "tpe"
    for run in children:
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.info.status == "FINISHED"
        charted = {n for n in trial_metric_names() if contract.charted(n)} - {"epoch"}
        assert set(run.data.metrics) == charted, set(run.data.metrics) ^ charted  # about 37: each worth a chart
        assert len(run.data.metrics) <= 40
        assert "None" not in run.data.params.values(), run.data.params  # unset knobs are not params
        tables = {a.path for folder in ("corrupt", "valid/corrupt") for a in smoke["client"].list_artifacts(run.info.run_id, folder)}
        assert tables == {"corrupt/cells.json", contract.VALID_TABLE}
        assert run.data.tags["mlflow.note.content"].startswith(f"Trial {run.data.tags['mollify.trial_number']} of study")
        assert run.data.params["dataset"] == "synthetic" and run.data.params["limit_eval_images"] == "200"
    assert sorted(int(r.data.tags["mollify.trial_number"]) for r in children) == [0, 1, 2, 3]
    trials = smoke["optuna"].trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 4
    by_number = {int(r.data.tags["mollify.trial_number"]): r for r in children}
    for t in trials:  # Optuna's values are the runs' metrics (the same digits), its params the runs' params
        assert t.value == by_number[t.number].data.metrics["valid/error"]
        assert t.params["roles"] == by_number[t.number].data.params["roles"]


@pytest.mark.slow
def test_the_analysis_reads_the_summaries_kept_as_tables(smoke):
    """Per-corruption and per-severity means are rebuilt from each run's cells table, and equal
    the means of its cells (the trial computed them with the same function)."""
    runs = load_runs("smoke", smoke["uri"]).set_index("run_id")
    for run in smoke["children"]:
        row = runs.loc[run.info.run_id]
        for corruption in ("glass_blur", "gaussian_noise"):
            cells = [row[f"corrupt/{corruption}/s{k}/error"] for k in SEVERITIES]
            assert row[f"corrupt/{corruption}/error"] == pytest.approx(sum(cells) / len(cells), rel=1e-6)
        at5 = [row[f"corrupt/{c}/s5/ece"] for c in CORRUPTIONS]
        assert row["corrupt/s5/ece"] == pytest.approx(sum(at5) / len(at5), rel=1e-6)
        assert row["corrupt/error"] == run.data.metrics["corrupt/error"]  # a logged metric wins


@pytest.mark.slow
def test_smoke_study_records_only_the_knobs_that_acted(smoke):
    roles = [r.data.params["roles"] for r in smoke["children"]]
    assert any("n" not in r for r in roles) or any("b" not in r for r in roles), \
        f"the seeded search drew no trial without noise or without blur ({roles}): nothing conditional to check"
    for run in smoke["children"]:
        params, role = run.data.params, run.data.params["roles"]
        assert ("npow" in params) == ("n" in role) and ("bpow" in params) == ("b" in role), (role, sorted(params))
    for trial in smoke["optuna"].trials:
        assert ("npow" in trial.params) == ("n" in trial.params["roles"])


@pytest.mark.slow
def test_smoke_study_record_is_the_effective_spec(smoke, tmp_path):
    client, parent = smoke["client"], smoke["parent"]
    spec_text = Path(client.download_artifacts(parent.info.run_id, record.SPEC_ARTIFACT, str(tmp_path))).read_text()
    ran = parse_spec(yaml.safe_load(spec_text), preset="smoke")
    expected = absolute_paths(load_spec("smoke"))
    assert dataclasses.replace(ran, source={}) == dataclasses.replace(expected, source={})
    assert parent.data.params["trial.limit_eval_images"] == "200" and parent.data.params["search.algorithm"] == "tpe"
    info = load_study_info("smoke", smoke["uri"])
    assert info.objectives == (("valid/error", "min"),) and info.label_keys == ("roles", "beta", "npow", "bpow")
    assert info.search_space["npow"]["active_when"][1] == {"key": "roles", "op": "contains", "value": "n"}


@pytest.mark.slow
def test_smoke_study_reads_well_in_the_mlflow_ui(smoke):
    parent, children = smoke["parent"], smoke["children"]
    for run in children:
        p = run.data.params
        values = {**TrialConfig().to_dict(), **{k: parse_param(v) for k, v in p.items()}}
        name = record.trial_run_name(int(run.data.tags["mollify.trial_number"]), values, ["roles", "beta", "npow", "bpow"])
        assert run.info.run_name == name and re.fullmatch(r"beta=\S+( npow=\S+)?( bpow=\S+)? x[nb]+ s0 #\d+", name)
    best = min(r.data.metrics["valid/error"] for r in children)
    assert parent.data.metrics["best/valid/error"] == best
    assert (parent.data.metrics["trials/finished"], parent.data.metrics["trials/failed"]) == (4, 0)
    description = parent.data.tags["mlflow.note.content"]
    assert "synthetic" in description and f"Best valid/error so far: {best:.4g}" in description
    out = smoke["proc"].stdout
    assert "?workflowType=machine_learning" in out and "[study] 4/4 trials done" in out
    assert "Checkpoint successfully created" not in out + smoke["proc"].stderr  # Ray's chatter: in the log
    log = (smoke["tmp"] / "runs" / "smoke" / "study.log").read_text()
    assert "Checkpoint successfully created" in log


@pytest.mark.slow
def test_smoke_study_optuna_knows_its_mlflow_record(smoke):
    study, parent = smoke["optuna"], smoke["parent"]
    assert study.metric_names == ["valid/error"]
    assert study.user_attrs["mlflow.parent_run_id"] == parent.info.run_id
    assert study.user_attrs["mlflow.experiment"] == "smoke" and study.user_attrs["mollify.preset"] == "smoke"
    by_id = {r.info.run_id: r for r in smoke["children"]}
    for trial in study.trials:
        run = by_id[trial.user_attrs[record.OPTUNA_RUN_ATTR]]
        assert int(run.data.tags["mollify.trial_number"]) == trial.number
        assert trial.user_attrs[record.OPTUNA_RUN_NAME_ATTR] == run.info.run_name


@pytest.mark.slow
def test_smoke_study_importances_are_optunas_on_the_same_trials(smoke):
    info = load_study_info("smoke", smoke["uri"])
    rebuilt = rebuild_study(load_runs("smoke", smoke["uri"]), info.objectives, info.search_space)
    real = smoke["optuna"]
    assert [t.params for t in rebuilt.trials] == [t.params for t in real.trials]  # only the knobs that acted
    assert [t.value for t in rebuilt.trials] == [t.value for t in real.trials]
    ours = importances(rebuilt, info.objectives)["valid/error"]
    theirs = optuna.importance.get_param_importances(real, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    assert ours.keys() == theirs.keys() and ours == pytest.approx(theirs)
    index = (smoke["tmp"] / "runs" / "smoke" / "figures" / "index.md").read_text()
    for param, value in ours.items():
        assert f"| {param} | {value:.3f} |" in index


@pytest.mark.slow
def test_smoke_study_html_report_stands_alone(smoke):
    folder = smoke["tmp"] / "runs" / "smoke" / "figures"
    page = (folder / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == len(list(folder.glob("*.png"))) >= 3
    assert all((folder / ref).is_file() for ref in _refs(page)), _refs(page)
    assert "Pareto" not in page  # one objective
    attached = {Path(a.path).name for a in smoke["client"].list_artifacts(smoke["parent"].info.run_id, "figures")}
    assert "report.html" in attached and "index.md" in attached
    status = subprocess.run(study_cmd(smoke["tmp"], "status", "smoke", "--json"), env=study_env(),
                            capture_output=True, text=True, timeout=120, cwd=smoke["tmp"])
    info = json.loads(status.stdout)
    assert (info["finished"], info["total"], info["failed"]) == (4, 4, 0)
    assert info["best"]["value"] == min(r.data.metrics["valid/error"] for r in smoke["children"])
    assert re.search(r" s0 #\d$", info["best"]["run_name"]), info["best"]
