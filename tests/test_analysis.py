"""analysis/: a real MLflow store (SQLite in a temp folder) written through the MLflow API the way
the trial and the study write it, with metric values from known formulas; the tables must carry
exactly those numbers, every figure must be written, missing panels skipped with their reason, and
the report attached to the study's parent run."""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from scipy import stats

from analysis import (StudyInfo, describe, find_comparisons, load_runs, load_study_info, mean_ci,
                      pareto_mask, with_configurations, write_report)
from analysis import mlflow_io
from analysis.__main__ import main
from analysis.configs import NA, effective_params
from analysis.mlflow_io import parse_param
from analysis.panels import PANELS, knob_colours
from analysis.report import Report, _Context, pareto_axes
from analysis.stats import rank_configurations

GROUPS = {
    "noise": ("gaussian_noise", "shot_noise", "impulse_noise"),
    "blur": ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur"),
    "weather": ("snow", "frost", "fog", "brightness"),
    "digital": ("contrast", "elastic_transform", "pixelate", "jpeg_compression"),
}
CORRUPTIONS = [c for names in GROUPS.values() for c in names]
TYPE_STUDY, TPE_STUDY, OTHER_STUDY = "type-cifar10", "tpe-cifar10", "other-study"
VALID_STUDY, ON_TEST_STUDY = "valid-cifar10", "on-test-cifar10"

BASE_CONFIG = {
    "dataset": "cifar10", "data_root": "/data", "num_classes": None, "image_size": None,
    "train_size": None, "model": "preactresnet18", "epochs": 2, "batch_size": 128, "lr": 0.01,
    "momentum": 0.9, "weight_decay": 0.0005, "precision": "auto", "compile": False,
    "augment": "fcr+trivaug", "mollify": True, "roles": "xnb", "alpha": 1.0, "beta": 2.0,
    "npow": 1.0, "bpow": 1.0, "smooth_labels": True, "label_mode": "ls", "loss": "ce",
    "sigma_min": 0.3, "sigma_max": None, "seed": 0, "device": "cpu", "eval_every": 1,
    "eval_batch_size": 500, "limit_train_batches": None, "limit_eval_images": None,
}

# The type study: k indexes the configuration in every formula below.
TYPE_CONFIGS = [  # (k, overrides, seeds)
    (0, {"mollify": False}, (0, 1, 2)),
    (1, {"roles": "xn"}, (0,)),
    (2, {"roles": "xb"}, (0,)),
    (3, {"roles": "xnb"}, (0, 1, 2)),
]


# --- the known metric values ----------------------------------------------------------------------

def cell_error(k: int, seed: int, i: int, severity: int) -> float:
    """Error of configuration k, seed, corruption i (CORRUPTIONS order) at a severity. The
    severity terms cancel in the mean over severities, so corrupt/<c>/error = 0.3125 + ... ."""
    return 0.3125 - 0.0625 * (k % 2) + 0.005 * i + 0.01 * (severity - 3) + 0.004 * seed


def clean_error(k: int, seed: int) -> float:
    return 0.05 + 0.01 * k + 0.002 * seed


def corruption_mean(k: int, seed: int, i: int) -> float:
    return float(np.mean([cell_error(k, seed, i, s) for s in range(1, 6)]))


def corrupted_error(k: int, seed: int) -> float:
    return float(np.mean([cell_error(k, seed, i, s) for i in range(15) for s in range(1, 6)]))


def trial_metrics(k: int, seed: int) -> dict[str, float]:
    m = {"train/loss": 1.0, "train/error": 0.2, "lr": 0.0, "clean/error": clean_error(k, seed),
         "clean/nll": 0.2 + 0.05 * k, "clean/ece": 0.01 * (k + 1), "clean/ece_batch100": 0.05}
    for i, c in enumerate(CORRUPTIONS):
        for s in range(1, 6):
            m[f"corrupt/{c}/s{s}/error"] = cell_error(k, seed, i, s)
            m[f"corrupt/{c}/s{s}/ece"] = 0.02 * k + 0.01 * s
            m[f"corrupt/{c}/s{s}/nll"] = 0.5 + 0.1 * s
        m[f"corrupt/{c}/error"] = corruption_mean(k, seed, i)
    for g, names in GROUPS.items():
        m[f"corrupt/group/{g}/error"] = float(np.mean([m[f"corrupt/{c}/error"] for c in names]))
    m.update({"corrupt/error": corrupted_error(k, seed), "corrupt/nll": 0.8 + 0.1 * k,
              "corrupt/ece": 0.05 + 0.02 * k})
    return m


def reliability(k: int) -> dict[str, list[float]]:
    centres = (np.arange(15) + 0.5) / 15
    return {"count": [10.0 * (b + 1) for b in range(15)], "confidence": list(centres),
            "accuracy": list(np.clip(centres - 0.02 * k, 0, 1))}


# --- writing the store ----------------------------------------------------------------------------

def _experiment(client: MlflowClient, name: str, root: Path) -> str:
    return client.create_experiment(name, artifact_location=(root / "mlartifacts" / name).as_uri())


def _parent(client: MlflowClient, eid: str, name: str, search: str, objectives, space,
            select_on_test: bool = False) -> str:
    tags = {"mollify.study": name, "mollify.kind": "study", "mollify.preset": name.split("-")[0],
            "mollify.search": search, "mollify.objectives": json.dumps(objectives),
            "mollify.search_space": json.dumps(space), "mollify.select_on_test": str(select_on_test).lower()}
    run = client.create_run(eid, run_name=name, tags=tags)
    client.log_text(run.info.run_id, "preset: x\n", "spec.yaml")
    return run.info.run_id


def _trial(client: MlflowClient, eid: str, study: str, parent: str, number: int, config: dict,
           metrics: dict[str, float], status: str = "FINISHED", bins: dict | None = None,
           tags: dict | None = None) -> str:
    tags = {"mlflow.parentRunId": parent, "mollify.study": study, "mollify.kind": "trial",
            "mollify.trial_number": str(number), "mollify.seed": str(config["seed"]),
            "mlflow.source.git.commit": "abc123", **(tags or {})}
    run_id = client.create_run(eid, run_name=f"{study}-{number}", tags=tags).info.run_id
    now = int(time.time() * 1000)
    # an earlier epoch with other values: only the last logged value counts
    early = [Metric(k, v + 0.5, now, 0) for k, v in metrics.items()]
    final = [Metric(k, v, now + 1, 1) for k, v in metrics.items()]
    client.log_batch(run_id, params=[Param(k, str(v)) for k, v in config.items()])
    for start in range(0, len(early) + len(final), 1000):
        client.log_batch(run_id, metrics=(early + final)[start:start + 1000])
    client.log_dict(run_id, config, "config.yaml")
    for name, data in (bins or {}).items():
        client.log_dict(run_id, data, f"reliability/{name}.json")
    client.set_terminated(run_id, status)
    return run_id


def _type_study(client: MlflowClient, root: Path) -> dict:
    eid = _experiment(client, TYPE_STUDY, root)
    space = {"roles": {"type": "grid", "values": ["xn", "xb", "xnb"]}}
    parent = _parent(client, eid, TYPE_STUDY, "grid", [["corrupt/error", "min"]], space)
    number, ids = 0, {}
    for k, overrides, seeds in TYPE_CONFIGS:
        for seed in seeds:
            config = {**BASE_CONFIG, **overrides, "seed": seed}
            bins = {"clean": reliability(k)} | ({} if k == 2 else {"corrupt_s5": reliability(k + 2)})
            ids[(k, seed)] = _trial(client, eid, TYPE_STUDY, parent, number, config,
                                    trial_metrics(k, seed), bins=bins)
            number += 1
    _trial(client, eid, TYPE_STUDY, parent, number, {**BASE_CONFIG, "seed": 3},  # must be ignored
           {"clean/error": 0.99, "corrupt/error": 0.99}, status="FAILED")
    return {"parent": parent, "ids": ids}


# Hand-made (corrupt/error, corrupt/ece) per trial; with both minimised, 1 is dominated by 0 and 4
# by 2, and no trial is at least as good as 0, 2, 3 or 5 in both.
TPE_POINTS = [(0.10, 0.30), (0.20, 0.35), (0.15, 0.20), (0.30, 0.05), (0.25, 0.25), (0.12, 0.22)]
TPE_PARETO = {0, 2, 3, 5}
TPE_SPACE = {
    "beta": {"type": "float", "low": 1.0, "high": 10.0, "log": True},
    "roles": {"type": "categorical", "choices": ["xn", "xb", "xnb"]},
    "npow": {"type": "float", "low": 0.5, "high": 2.0, "log": False, "condition": "roles contains n"},
}


def _tpe_study(client: MlflowClient, root: Path) -> dict:
    eid = _experiment(client, TPE_STUDY, root)
    parent = _parent(client, eid, TPE_STUDY, "tpe", [["corrupt/error", "min"]], TPE_SPACE)
    roles = ["xn", "xb", "xnb", "xn", "xb", "xnb"]
    for n, (err, ece) in enumerate(TPE_POINTS):
        config = {**BASE_CONFIG, "beta": 1.5 + 1.3 * n, "roles": roles[n], "npow": 0.5 + 0.25 * n}
        _trial(client, eid, TPE_STUDY, parent, n, config,
               {"clean/error": 0.05 + 0.01 * n, "corrupt/error": err, "corrupt/ece": ece})
    return {"parent": parent}


# A TPE search on the validation split: per trial (valid/corrupt/error, valid/corrupt/ece,
# corrupt/error, corrupt/ece, clean/error). By what it searched, trial 3 is best; on the test set
# trial 0 would be (so a report that ranked by the test metrics would name another trial). Trial 5 was stopped early by ASHA, with the best value of all at an
# early epoch: it must be left out.
VALID_POINTS = [(0.30, 0.10, 0.10, 0.05, 0.05), (0.25, 0.20, 0.20, 0.30, 0.06), (0.28, 0.05, 0.25, 0.30, 0.07),
                (0.20, 0.15, 0.15, 0.30, 0.08), (0.35, 0.30, 0.30, 0.30, 0.09)]
VALID_BEST = 3


def _valid_study(client: MlflowClient, root: Path) -> dict:
    eid = _experiment(client, VALID_STUDY, root)
    space = {"beta": TPE_SPACE["beta"]}
    parent = _parent(client, eid, VALID_STUDY, "tpe", [["valid/corrupt/error", "min"]], space)
    for n, (v_err, v_ece, err, ece, clean) in enumerate(VALID_POINTS):
        _trial(client, eid, VALID_STUDY, parent, n, {**BASE_CONFIG, "beta": 1.5 + n},
               {"valid/corrupt/error": v_err, "valid/corrupt/ece": v_ece, "corrupt/error": err,
                "corrupt/ece": ece, "clean/error": clean})
    _trial(client, eid, VALID_STUDY, parent, 5, {**BASE_CONFIG, "beta": 8.0},
           {"valid/corrupt/error": 0.01, "valid/corrupt/ece": 0.01, "clean/error": 0.5}, status="KILLED",
           tags={"mollify.stopped_early": "true"})
    eid = _experiment(client, ON_TEST_STUDY, root)
    parent = _parent(client, eid, ON_TEST_STUDY, "tpe", [["corrupt/error", "min"]], space, select_on_test=True)
    for n in range(2):
        _trial(client, eid, ON_TEST_STUDY, parent, n, {**BASE_CONFIG, "beta": 2.0 + n},
               {"corrupt/error": 0.2 + 0.1 * n, "clean/error": 0.05})
    return {"parent": parent}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    out = {"uri": uri, "root": root, "client": client, TYPE_STUDY: _type_study(client, root),
           TPE_STUDY: _tpe_study(client, root), VALID_STUDY: _valid_study(client, root)}
    eid = _experiment(client, OTHER_STUDY, root)
    other_parent = _parent(client, eid, OTHER_STUDY, "grid", [], {})
    _trial(client, eid, OTHER_STUDY, other_parent, 0, BASE_CONFIG, trial_metrics(3, 0))
    return out


def _run_cli(*args: str) -> tuple[int, str]:
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        rc = main(list(args))
    return rc, buffer.getvalue()


@pytest.fixture(scope="module")
def type_report(store, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("report") / "type"
    rc, stdout = _run_cli("figures", "--experiment", TYPE_STUDY, "--tracking-uri", store["uri"],
                          "--out", str(out), "--log-to-mlflow")
    assert rc == 0, stdout
    return {"out": out, "stdout": stdout, "index": (out / "index.md").read_text()}


@pytest.fixture(scope="module")
def tpe_report(store, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("report") / "tpe"
    rc, stdout = _run_cli("figures", "--experiment", TPE_STUDY, "--tracking-uri", store["uri"],
                          "--out", str(out))
    assert rc == 0, stdout
    return {"out": out, "stdout": stdout, "index": (out / "index.md").read_text()}


# --- load_runs ------------------------------------------------------------------------------------

def test_parse_param_undoes_mlflow_strings():
    assert [parse_param(t) for t in ("None", "True", "False", "4", "4.0", "5e-4", "xnb", "fcr+trivaug")] \
        == [None, True, False, 4, 4.0, 5e-4, "xnb", "fcr+trivaug"]
    assert isinstance(parse_param("4"), int) and isinstance(parse_param("4.0"), float)


def test_load_runs_one_typed_row_per_trial(store):
    runs = load_runs(TYPE_STUDY, store["uri"])
    ids = store[TYPE_STUDY]["ids"]
    assert len(runs) == len(ids) + 1  # the FAILED run is loaded, with its status
    assert store[TYPE_STUDY]["parent"] not in set(runs["run_id"])
    assert sorted(runs["status"].value_counts().items()) == [("FAILED", 1), ("FINISHED", 8)]
    assert set(runs["study"]) == {TYPE_STUDY}
    assert list(runs["trial_number"]) == list(range(9))
    row = runs.set_index("run_id").loc[ids[(3, 2)]]
    assert row["seed"] == 2 and row["roles"] == "xnb" and row["beta"] == 2.0
    assert row["epochs"] == 2 and row["augment"] == "fcr+trivaug"
    assert runs["mollify"].dtype == bool and runs["compile"].dtype == bool and row["mollify"]
    assert runs["beta"].dtype == float and runs["epochs"].dtype == np.int64
    assert row["num_classes"] is None or math.isnan(row["num_classes"])
    # the last logged value of each metric, under its own name; `lr` the metric is renamed
    assert row["clean/error"] == pytest.approx(clean_error(3, 2))
    assert row["corrupt/gaussian_noise/s3/error"] == pytest.approx(cell_error(3, 2, 0, 3))
    assert row["metrics.lr"] == 0.0 and row["lr"] == 0.01
    assert isinstance(runs["start_time"].iloc[0], pd.Timestamp)


def test_load_runs_pages_through_the_store(store, monkeypatch):
    whole = load_runs(TYPE_STUDY, store["uri"])
    monkeypatch.setattr(mlflow_io, "PAGE_SIZE", 2)
    paged = load_runs(TYPE_STUDY, store["uri"])
    assert list(paged["run_id"]) == list(whole["run_id"])


def test_load_runs_keeps_to_its_experiment(store):
    other = load_runs(OTHER_STUDY, store["uri"])
    assert len(other) == 1 and set(other["study"]) == {OTHER_STUDY}
    assert not set(other["run_id"]) & set(load_runs(TYPE_STUDY, store["uri"])["run_id"])


def test_load_study_info_reads_the_parent_tags(store):
    info = load_study_info(TPE_STUDY, store["uri"])
    assert info.run_id == store[TPE_STUDY]["parent"]
    assert (info.name, info.search, info.preset) == (TPE_STUDY, "tpe", "tpe")
    assert info.objectives == (("corrupt/error", "min"),)
    assert info.search_space == TPE_SPACE


def test_unknown_experiment_names_the_ones_there(store, capsys):
    assert main(["figures", "--experiment", "nope", "--tracking-uri", store["uri"],
                 "--out", "unused"]) == 1
    err = capsys.readouterr().err
    assert "nope" in err and TYPE_STUDY in err and OTHER_STUDY in err


# --- Table 1 --------------------------------------------------------------------------------------

def _expected(values: list[float]) -> str:
    """mean ± 95% half-width in %, computed here independently of analysis.stats."""
    x = 100 * np.asarray(values)
    if len(x) == 1:
        return f"{x[0]:.2f}"
    half = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return f"{x.mean():.2f} ± {half:.2f}"


def _markdown_rows(markdown: str) -> dict[str, list[str]]:
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = {}
    for line in lines[2:]:
        cells = [c.strip().strip("*") for c in line.strip("|").split("|")]
        rows[cells[0]] = dict(zip(head, cells))
    return rows


def test_table1_carries_the_logged_numbers(type_report):
    rows = _markdown_rows((type_report["out"] / "table1.md").read_text())
    assert list(rows) == ["FCR + TrivAug, no mollification", "noise only", "blur only", "noise + blur"]
    noise_only, both = rows["noise only"], rows["noise + blur"]
    # one seed: the value itself; gaussian noise of 'noise only' is 0.3125 - 0.0625
    assert noise_only["seeds"] == "1" and noise_only["gauss"] == "25.00"
    assert rows["blur only"]["gauss"] == "31.25"
    assert noise_only["jpeg"] == f"{100 * corruption_mean(1, 0, 14):.2f}"
    # three seeds: mean ± t-interval, the FAILED fourth xnb run left out
    assert both["seeds"] == "3"
    assert both["gauss"] == _expected([corruption_mean(3, s, 0) for s in range(3)])
    assert both["gauss"] == "25.40 ± 0.99"  # 0.25, 0.254, 0.258
    assert rows["FCR + TrivAug, no mollification"]["gauss"] == "31.65 ± 0.99"
    assert both["clean"] == _expected([clean_error(3, s) for s in range(3)])
    assert both["mean"] == _expected([corrupted_error(3, s) for s in range(3)])
    assert rows["FCR + TrivAug, no mollification"]["motion"] == _expected(
        [corruption_mean(0, s, CORRUPTIONS.index("motion_blur")) for s in range(3)])


def test_table1_csv_and_latex(type_report):
    csv = pd.read_csv(type_report["out"] / "table1.csv", index_col="configuration")
    assert csv.loc["noise + blur", "seeds"] == 3
    assert csv.loc["noise only", "gaussian_noise error (%)"] == pytest.approx(25.0)
    assert csv.loc["noise + blur", "mean error (%)"] == pytest.approx(
        100 * np.mean([corrupted_error(3, s) for s in range(3)]), abs=1e-4)
    assert math.isnan(csv.loc["noise only", "clean 95% half-width (%)"])
    tex = (type_report["out"] / "table1.tex").read_text()
    assert r"\multicolumn{3}{c}{noise}" in tex and r"\multicolumn{4}{c}{digital}" in tex
    assert r"25.40 $\pm$ 0.99" in tex and r"\toprule" in tex and tex.count(r"\\") >= 6


# --- figures and the index ------------------------------------------------------------------------

TYPE_FIGURES = ("severity", "ablation_type", "reliability")
TPE_FIGURES = ("optuna_history", "optuna_importance", "ablation_amount")


@pytest.mark.parametrize("report, stems", [("type_report", TYPE_FIGURES),
                                           pytest.param("tpe_report", TPE_FIGURES, marks=pytest.mark.slow)])
def test_every_figure_is_written_and_linked(report, stems, request):
    report = request.getfixturevalue(report)
    for stem in stems:
        for ext, magic in (("png", b"\x89PNG"), ("pdf", b"%PDF")):
            path = report["out"] / f"{stem}.{ext}"
            assert path.is_file() and path.stat().st_size > 1000, path
            assert path.read_bytes()[:4] == magic
        assert f"({stem}.png)" in report["index"] and f"({stem}.pdf)" in report["index"]
    assert "(table1.csv)" in report["index"] and "(table1.tex)" in report["index"]


def test_the_html_report_embeds_its_figures_and_links_only_files_beside_it(type_report):
    out = type_report["out"]
    page = (out / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == len(list(out.glob("*.png"))) >= 3
    local = [ref for ref in re.findall(r'(?:href|src)="([^"]+)"', page) if not ref.startswith("data:")]
    assert local and all((out / ref).is_file() for ref in local), local
    assert "<table>" in page and "Table 1" in page  # the Markdown tables, rendered


def test_panels_without_their_runs_are_skipped_with_the_reason(type_report):
    for text in (type_report["stdout"], type_report["index"]):
        assert ("(b) Amount of mollification: skipped, no two mollified configurations differ "
                "only in beta (seen: beta 2)") in text
        assert "(c) Label-smoothing schedule: skipped" in text
        assert "Optuna figures: skipped, the study's search is 'grid'" in text
    assert not (type_report["out"] / "ablation_amount.png").exists()
    assert "8 FINISHED trial runs; left out 1 FAILED" in type_report["index"]


def test_log_to_mlflow_attaches_the_report_to_the_parent(store, type_report):
    client = store["client"]
    parent = store[TYPE_STUDY]["parent"]
    names = {Path(f.path).name for f in client.list_artifacts(parent, "figures")}
    written = {p.name for p in type_report["out"].iterdir()}
    assert {"index.md", "table1.csv", "severity.png", "reliability.pdf"} <= names
    assert names == written


@pytest.mark.slow  # draws a whole report (seconds); make test-quick leaves it out
def test_optuna_study_figures_without_a_front_for_one_objective(tpe_report):
    index = tpe_report["index"]
    assert "Pareto" not in index and not (tpe_report["out"] / "optuna_pareto.png").exists()
    assert "| roles |" in index and "| beta |" in index  # the importance table
    # npow acts only with the noise role (xn, xnb: 4 of the 6 trials): not in the figure, assessed apart
    assert "| npow |" not in index and "- npow: acted in 4 of 6 trials; importance there" in index
    assert "Caution: 6 trials for 2 params" in index
    assert "Severity curves: skipped, no per-severity metrics" in tpe_report["stdout"]
    assert "Reliability diagrams: skipped" in tpe_report["stdout"]


# --- pure parts: statistics, Pareto set, configurations and panels ---------------------------------

def test_mean_ci_is_the_t_interval():
    assert mean_ci([0.3])[0] == 0.3 and math.isnan(mean_ci([0.3])[1])
    mean, half, n = mean_ci([1.0, 2.0, 4.0, float("nan")])
    assert n == 3 and mean == pytest.approx(7 / 3)
    assert half == pytest.approx(4.302652729911275 * np.std([1, 2, 4], ddof=1) / math.sqrt(3))


def test_pareto_mask_on_a_hand_made_example():
    points = np.array(TPE_POINTS)
    assert set(np.flatnonzero(pareto_mask(points, ["min", "min"]))) == TPE_PARETO
    # ties stay on the front, NaN rows never are, and "max" flips a direction
    tied = np.array([[1.0, 2.0], [1.0, 2.0], [2.0, 1.0], [2.0, 3.0], [np.nan, 0.0]])
    assert list(pareto_mask(tied, ["min", "min"])) == [True, True, True, False, False]
    assert list(pareto_mask(tied, ["min", "max"])) == [True, True, False, True, False]


def _frame(configs: list[dict]) -> pd.DataFrame:
    """A load_runs-like frame: one row per config, with one metric."""
    rows = [{"run_id": f"r{i}", "run_name": f"{i:04d}", "status": "FINISHED", "study": "s", "trial_number": i,
             "seed": c.get("seed", 0), "start_time": pd.Timestamp(0, unit="s", tz="UTC"),
             **{**BASE_CONFIG, **c}, "corrupt/error": 0.1 * (i % 7 + 1)}
            for i, c in enumerate(configs)]
    return pd.DataFrame(rows)


def test_configuration_labels_in_words(store):
    runs, table = with_configurations(load_runs(TYPE_STUDY, store["uri"]).query("status == 'FINISHED'"))
    assert list(table.index) == ["FCR + TrivAug, no mollification", "noise only", "blur only",
                                 "noise + blur"]
    assert list(table["n_runs"]) == [3, 1, 1, 3]
    assert describe({"augment": "fcr+trivaug", "mollify": True, "roles": "xnb", "beta": 4.0},
                    ["beta", "mollify"]) == "noise + blur, beta 4"
    assert describe({"mollify": True, "smooth_labels": True, "npow": 2.0, "bpow": 0.5},
                    ["npow", "bpow"]) == "npow 2, bpow 0.5"
    assert describe({"mollify": True, "smooth_labels": False}, ["smooth_labels"]) == "no label smoothing"


def test_jsd_and_ipmix_in_words_and_their_knobs_only_where_they_act():
    """The paper-baselines additions: 'FCR + IPMix, JSD, noise + blur'; jsd_weight has no effect
    without jsd, ipmix_mixing_set none without ipmix."""
    params = {"augment": "fcr+ipmix", "jsd": True, "mollify": True, "roles": "xnb"}
    assert describe(params, ["augment", "jsd", "mollify"]) == "FCR + IPMix, JSD, noise + blur"
    assert describe({**params, "augment": "fcr+augmix_paper", "jsd": False, "mollify": False},
                    ["augment", "jsd", "mollify"]) == "FCR + AugMix (paper ops), no mollification"
    runs = _frame([{"augment": "fcr+augmix", "jsd": False, "jsd_weight": 12.0, "ipmix_mixing_set": "a"},
                   {"augment": "fcr+ipmix", "jsd": True, "jsd_weight": 12.0, "ipmix_mixing_set": "a"}])
    effective = effective_params(runs)
    assert list(effective["jsd_weight"]) == [NA, 12.0] and list(effective["ipmix_mixing_set"]) == [NA, "a"]


SCHEDULE_GRID = [{"npow": n, "bpow": b} for n in (0.5, 1.0, 2.0) for b in (0.5, 1.0, 2.0)]


def test_panel_membership_from_params():
    runs = _frame([{"mollify": False}, {"smooth_labels": False}, *SCHEDULE_GRID,
                   {"beta": 4.0}, {"beta": 9.0}, {"beta": 4.0, "seed": 1},
                   {"beta": 2.0, "dataset": "cifar100"}, {"beta": 9.0, "dataset": "cifar100"}])
    labelled, table = with_configurations(runs)
    assert len(table) == 15 and table.loc["CIFAR-10, noise + blur, beta 4, npow 1, bpow 1",
                                          "n_runs"] == 2
    amount, schedule, kind = (find_comparisons(table, p) for p in
                              (PANELS[1], PANELS[2], PANELS[0]))
    assert kind == []  # one role set only
    assert [[table.loc[c, "beta"] for c in comp.configs] for comp in amount] == [[2.0, 4.0, 9.0],
                                                                                  [2.0, 9.0]]
    assert {table.loc[c, "dataset"] for c in amount[1].configs} == {"cifar100"}
    (only,) = schedule
    assert len(only.configs) == 10 and only.configs[0].endswith("no label smoothing")
    assert table.loc[list(only.configs[1:]), ["npow", "bpow"]].apply(tuple, axis=1).tolist() == \
        [(n, b) for n in (0.5, 1.0, 2.0) for b in (0.5, 1.0, 2.0)]


def test_a_panel_with_several_comparisons_names_files_by_content_and_colours_by_knob_value(tmp_path):
    # beta 2, 4 and 9 on CIFAR-10 and beta 2 and 9 on CIFAR-100: two amount comparisons
    runs = _frame([{"beta": 2.0}, {"beta": 4.0}, {"beta": 9.0},
                   {"beta": 2.0, "dataset": "cifar100"}, {"beta": 9.0, "dataset": "cifar100"}])
    _, table = with_configurations(runs)
    amount = find_comparisons(table, PANELS[1])
    colours = knob_colours(table, amount)
    by_beta = {}
    for label in (c for comp in amount for c in comp.configs):
        by_beta.setdefault(table.loc[label, "beta"], set()).add(colours[label])
    assert all(len(c) == 1 for c in by_beta.values()) and len(set().union(*by_beta.values())) == 3
    write_report(runs, None, {}, tmp_path, echo=lambda line: None)
    names = sorted(p.stem for p in tmp_path.glob("ablation_amount*.png"))
    assert names == ["ablation_amount_cifar-10", "ablation_amount_cifar-100"], names
    index = (tmp_path / "index.md").read_text()
    assert "(b) Amount of mollification: CIFAR-100" in index and "(CIFAR-100)" not in index


def test_type_panel_matches_across_role_specific_knobs():
    # xn has no bpow, xb no npow: they still compare with xnb, and the unmollified run is the baseline
    runs = _frame([{"roles": "xnb"}, {"roles": "xb"}, {"mollify": False}, {"roles": "xn"},
                   {"roles": "xn", "npow": 2.0}])
    _, table = with_configurations(runs)
    comparisons = find_comparisons(table, PANELS[0])
    assert [table.loc[list(c.configs), "roles"].tolist() for c in comparisons] == [
        ["n/a", "xn", "xb", "xnb"], ["n/a", "xn", "xb"]]  # the second: xn with npow 2 vs xb


@pytest.mark.slow  # draws a whole report (seconds); make test-quick leaves it out
def test_multi_objective_study_report(tmp_path):
    # an NSGA-II study with two objectives, straight from a frame: no MLflow involved
    runs = _frame([{"beta": 1.0 + n, "roles": ("xn", "xnb")[n % 2]} for n in range(6)])
    runs["valid/corrupt/ece"] = [ece for _, ece in TPE_POINTS]
    runs["valid/corrupt/error"] = [err for err, _ in TPE_POINTS]
    runs["clean/error"] = 0.05
    space = {k: TPE_SPACE[k] for k in ("beta", "roles")}
    info = StudyInfo("parent", "nsga", "pareto", "nsga2",
                     (("valid/corrupt/error", "min"), ("valid/corrupt/ece", "min")), space)
    lines = []
    report = write_report(runs, info, {}, tmp_path, echo=lines.append)
    names = {p.name for p in report.files}
    assert {"optuna_history.png", "optuna_importance.pdf", "optuna_pareto.png"} <= names
    index = (tmp_path / "index.md").read_text()
    assert "| param | valid/corrupt/error | valid/corrupt/ece |" in index
    pareto = index.split("Pareto-optimal trials:")[1].split("##")[0]
    rows = [line for line in pareto.splitlines() if line.startswith("|") and line.split("|")[1].strip().isdigit()]
    assert {int(line.split("|")[1]) for line in rows} == TPE_PARETO
    assert ("| validation corrupted error (%) | validation corrupted ECE (%) | test: clean error (%) "
            "| test: corrupted error (%) |") in pareto
    assert any("Reliability diagrams: skipped" in line for line in lines)


def test_a_study_without_finished_runs_writes_an_index_that_says_so(tmp_path):
    runs = _frame([{}]).assign(status="FAILED")
    lines = []
    write_report(runs, None, {}, tmp_path, echo=lines.append)
    index = (tmp_path / "index.md").read_text()
    assert "the study has no FINISHED trial runs" in index and "left out 1 FAILED" in index
    assert any("no FINISHED trial runs" in line for line in lines)


def test_line_plots_keep_the_best_configurations(tmp_path):
    runs = _frame([{"beta": 1.0 + n} for n in range(5)])  # corrupt/error 0.1 ... 0.5
    lines = []
    write_report(runs, None, {}, tmp_path, max_configs=2, echo=lines.append)
    assert "show the 2 of 5 configurations with the lowest corrupted error" in "\n".join(lines)


# --- selection on the validation split (METHOD.md section 6) ---------------------------------------

@pytest.fixture(scope="module")
def valid_report(store, tmp_path_factory) -> dict:
    runs, info = load_runs(VALID_STUDY, store["uri"]), load_study_info(VALID_STUDY, store["uri"])
    out = tmp_path_factory.mktemp("report") / "valid"
    lines: list[str] = []
    write_report(runs, info, {}, out, max_configs=2, echo=lines.append)
    return {"runs": runs, "info": info, "out": out, "stdout": "\n".join(lines),
            "index": (out / "index.md").read_text()}


def _config_of(runs: pd.DataFrame, number: int) -> str:
    labelled, _ = with_configurations(runs[runs["status"] == "FINISHED"])
    return labelled.set_index("trial_number").loc[number, "config"]


def test_the_best_configuration_is_the_best_by_what_was_searched(valid_report):
    runs, info = valid_report["runs"], valid_report["info"]
    assert info.objectives == (("valid/corrupt/error", "min"),) and not info.select_on_test
    labelled, table = with_configurations(runs[runs["status"] == "FINISHED"])
    ctx = _Context(labelled, table, {}, info, {}, Report(valid_report["out"]), 2, lambda line: None)
    best_two = {_config_of(runs, 3), _config_of(runs, 1)}  # lowest validation corrupted error
    assert set(ctx.plotted) == best_two and _config_of(runs, 0) not in ctx.plotted  # 0: best on the test set
    assert rank_configurations(labelled, "valid/corrupt/error")[0] == _config_of(runs, VALID_BEST)
    assert rank_configurations(labelled, "valid/corrupt/error", "max")[0] == _config_of(runs, 4)
    assert "show the 2 of 5 configurations with the lowest validation corrupted error" in valid_report["index"]
    # the selected trial, with the test figures it scores (what the study reports)
    assert (f"Selected by valid/corrupt/error (minimised): trial run '{VALID_STUDY}-{VALID_BEST}' "
            f"({_config_of(runs, VALID_BEST)}), "
            "validation corrupted error 20.00; on the test set: clean error 8.00, corrupted error 15.00."
            ) in valid_report["index"]


def test_optuna_figures_use_the_searched_metrics(valid_report):
    index = valid_report["index"]
    assert "Pareto" not in index  # one objective: no front
    assert (valid_report["out"] / "optuna_history.png").is_file()
    assert "| param | valid/corrupt/error |" in index  # importances for the searched objective


def test_trials_stopped_early_are_left_out_saying_why(valid_report):
    runs = valid_report["runs"]
    stopped = runs[runs["stopped_early"]]
    assert list(stopped["trial_number"]) == [5] and list(stopped["status"]) == ["KILLED"]
    assert "5 FINISHED trial runs; left out 1 stopped early by the scheduler" in valid_report["index"]
    assert "Selected on the test set" not in valid_report["index"]


def test_a_study_that_selected_on_the_test_set_says_so(store, tmp_path):
    info = load_study_info(ON_TEST_STUDY, store["uri"])
    assert info.select_on_test and info.objectives == (("corrupt/error", "min"),)
    write_report(load_runs(ON_TEST_STUDY, store["uri"]), info, {}, tmp_path, echo=lambda line: None)
    index = (tmp_path / "index.md").read_text()
    assert "the best values in its tables were selected on the test set" in index
    assert f"Selected by corrupt/error (minimised): trial run '{ON_TEST_STUDY}-0'" in index


def test_pareto_axes_follow_the_objectives():
    assert pareto_axes([("valid/corrupt/error", "min")]) is None  # one objective has no front
    assert pareto_axes([("valid/corrupt/error", "min"), ("valid/ece", "min")]) == (
        ("valid/corrupt/error", "min"), ("valid/ece", "min"))
    assert pareto_axes([]) is None


def test_analysis_reads_only_mlflow():
    """STYLE.md: analysis imports neither trainables nor study."""
    import ast

    for path in (Path(__file__).parents[1] / "analysis").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not [n for n in names if n.split(".")[0] in ("trainables", "study")], path


# --- headline and paired differences ----------------------------------------------------------------

def test_report_pairs_every_configuration_with_the_baseline_by_seed(type_report):
    """'noise + blur' (k = 3) and the baseline (k = 0) share seeds 0-2: per seed the clean error
    differs by exactly 0.01 * 3 and the corrupted error by -0.0625, so the paired intervals are
    points and the corrupted one is marked lower; a single-seed configuration gets no verdict."""
    text = (type_report["out"] / "paired.md").read_text()
    assert "Baseline: FCR + TrivAug, no mollification" in text
    both = next(line for line in text.splitlines() if line.startswith("| noise + blur |"))
    cells = [c.strip() for c in both.strip("|").split("|")]
    assert cells[1] == "3"  # pairs
    assert cells[2] == "+3.00 ± 0.00 (higher)"  # clean error
    assert cells[3] == "-6.25 ± 0.00 (lower)"  # corrupted error
    noise_only = next(line for line in text.splitlines() if line.startswith("| noise only |"))
    assert "(lower)" not in noise_only and "(higher)" not in noise_only
    assert "## Differences against the baseline, paired by seed" in type_report["index"]
    headline = (type_report["out"] / "headline.md").read_text()
    assert f"| noise + blur | 3 | {_expected([clean_error(3, s) for s in range(3)])} |" in headline


def test_paired_command_compares_any_metric_against_any_configuration(store):
    rc, out = _run_cli("paired", "--experiment", TYPE_STUDY, "--tracking-uri", store["uri"],
                       "--baseline", "noise + blur", "--metric", "corrupt/gaussian_noise/error")
    assert rc == 0
    row = next(line for line in out.splitlines() if line.startswith("| FCR + TrivAug, no mollification |"))
    assert row.endswith("| 3 | +6.25 ± 0.00 (higher) |")  # 0.3125 - (0.3125 - 0.0625), per seed
    rc, _ = _run_cli("paired", "--experiment", TYPE_STUDY, "--tracking-uri", store["uri"], "--baseline", "nope")
    assert rc == 1


def test_out_that_is_a_file_is_refused_in_one_line(store, tmp_path, capsys):
    target = tmp_path / "report.txt"
    target.write_text("keep me")
    assert main(["figures", "--experiment", TYPE_STUDY, "--tracking-uri", store["uri"], "--out", str(target)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is a file" in err and target.read_text() == "keep me"


def test_the_importance_caution_is_wrapped_inside_the_figure():
    """The caution under the importance figure's title is read whole, not clipped at the edge."""
    from analysis import plots

    caution = ("Caution: 4 trials for 4 params; a stable ranking needs about 40. Indicative only, and "
               "optuna-dashboard computes conditional keys otherwise.")
    fig = plots.importance_figure({"valid/error": {"beta": 0.6, "roles": 0.3, "npow": 0.1}}, 4, caution)
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    title = fig.axes[0].title
    box, frame = title.get_window_extent(renderer), fig.bbox
    assert box.x0 >= frame.x0 and box.x1 <= frame.x1, (box, frame)
    assert title.get_text().replace("\n", " ").endswith(caution.split()[-1]) and "Indicative only" in title.get_text()
