"""Issue 19 on the analysis side: a small synthetic grid study with declared endpoints in a real
MLflow store (SQLite in a temp folder, written as the study and the trial write it). The report
must open with the primary endpoint (its numbers those of the paired t test computed here), then
the secondary family with the p-values adjusted together, and label everything else exploratory;
every figure gives an arm one colour (the baseline grey); the reliability legend's ECE is the
table's (the mean over seeds, not the ECE of pooled bins); `paired` adjusts as asked."""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
import time

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex
from matplotlib.container import BarContainer, ErrorbarContainer
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from scipy import stats
from statsmodels.stats.multitest import multipletests

from analysis import load_study_info, plots, write_report
from analysis.__main__ import main
from analysis.configs import BASELINE_COLOUR
from contract import ENDPOINTS_KEY
from analysis.endpoints import read_endpoints

STUDY = "endpoint-study"
CONFIG = {"dataset": "tinyimagenet", "num_classes": 20, "image_size": 32, "model": "smallcnn", "epochs": 2,
          "augment": "fcr", "mollify": True, "roles": "xn", "alpha": 1.0, "beta": 2.0, "npow": 1.0,
          "smooth_labels": True, "label_mode": "ls", "corruption_protocol": "cifar"}
ARMS = [  # (name, overrides): trials 3k .. 3k+2 are seeds 0, 1, 2
    ("base", {"mollify": False}),
    ("xn", {"roles": "xn"}),
    ("xb", {"roles": "xb"}),
]
LABELS = {"base": "FCR, no mollification", "xn": "noise only", "xb": "blur only"}
SEEDS = (0, 1, 2)
# Per seed, in fractions. The primary: gaussian noise error, xn minus base = -10, -12, -11 points.
GAUSS = {"base": [0.50, 0.56, 0.47], "xn": [0.40, 0.44, 0.36], "xb": [0.49, 0.57, 0.45]}
CORRUPT = {"base": [0.40, 0.42, 0.39], "xn": [0.37, 0.40, 0.35], "xb": [0.39, 0.43, 0.39]}
CLEAN = {"base": [0.20, 0.22, 0.21], "xn": [0.21, 0.225, 0.22], "xb": [0.205, 0.22, 0.212]}
ENDPOINTS = {
    "primary": {"metric": "corrupt/gaussian_noise/error", "arm": {"mollify": True, "roles": "xn"},
                "baseline": {"mollify": False}, "arm_trials": [3, 4, 5], "baseline_trials": [0, 1, 2]},
    "secondary": [
        {"metric": m, "arm": {"roles": roles}, "baseline": {"mollify": False}, "arm_trials": trials,
         "baseline_trials": [0, 1, 2]}
        for m in ("corrupt/error", "clean/error") for roles, trials in (("xn", [3, 4, 5]), ("xb", [6, 7, 8]))],
    "adjust": "holm", "alpha": 0.05,
}
SECONDARY = [(m, arm) for m in ("corrupt/error", "clean/error") for arm in ("xn", "xb")]
VALUES = {"corrupt/gaussian_noise/error": GAUSS, "corrupt/error": CORRUPT, "clean/error": CLEAN}


def bins(seed: int) -> dict[str, list[float]]:
    """Seeds with different numbers of images and gaps: the ECE of the pooled bins (4.2%) is not
    the mean of the seeds' ECEs (45%, 0%, 5%: 16.7%)."""
    count, confidence, accuracy = [0.0] * 15, [0.0] * 15, [0.0] * 15
    b, n, conf, acc = [(14, 100, 0.95, 0.50), (10, 1000, 0.7, 0.7), (14, 100, 0.95, 0.90)][seed]
    count[b], confidence[b], accuracy[b] = n, conf, acc
    return {"count": count, "confidence": confidence, "accuracy": accuracy}


SEED_ECE = [0.45, 0.0, 0.05]


def metrics(arm: str, seed: int) -> dict[str, float]:
    out = {m: values[arm][seed] for m, values in VALUES.items()}
    for s in range(1, 6):
        out[f"corrupt/s{s}/error"] = CORRUPT[arm][seed] + 0.02 * (s - 3)
    out.update({"clean/ece": SEED_ECE[seed], "corrupt/ece": 0.1, "clean/nll": 0.8, "corrupt/nll": 1.5})
    return out


def cells(arm: str, seed: int) -> pd.DataFrame:
    """The grid as corrupt/cells.json holds it: gaussian noise at severity s = its mean + 0.03 (s - 3)."""
    return pd.DataFrame([{"corruption": c, "severity": s, "error": GAUSS[arm][seed] + 0.03 * (s - 3) + offset,
                          "nll": 1.0, "ece": 0.1}
                         for c, offset in (("gaussian_noise", 0.0), ("fog", 0.1)) for s in range(1, 6)])


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    eid = client.create_experiment(STUDY, artifact_location=(root / "mlartifacts").as_uri())
    parent = client.create_run(eid, run_name=STUDY, tags={"mollify.kind": "study", "mollify.study": STUDY}).info.run_id
    record = {"study": STUDY, "preset": STUDY, "search": "grid", "objectives": [["corrupt/error", "min"]],
              "search_space": {}, "select_on_test": False, "label_keys": ["mollify", "roles"], "endpoints": ENDPOINTS}
    client.log_dict(parent, record, "study/record.json")
    now = int(time.time() * 1000)
    for k, (arm, overrides) in enumerate(ARMS):
        for seed in SEEDS:
            number = 3 * k + seed
            tags = {"mlflow.parentRunId": parent, "mollify.kind": "trial", "mollify.study": STUDY,
                    "mollify.trial_number": str(number), "mollify.seed": str(seed)}
            run_id = client.create_run(eid, run_name=f"{STUDY}-{number}", tags=tags).info.run_id
            config = {**CONFIG, **overrides, "seed": seed}
            if not config["mollify"]:
                config = {k: v for k, v in config.items() if k not in ("roles", "alpha", "beta", "npow",
                                                                       "smooth_labels", "label_mode")}
            client.log_batch(run_id, metrics=[Metric(m, v, now, 1) for m, v in metrics(arm, seed).items()],
                             params=[Param(p, str(v)) for p, v in config.items()])
            client.log_table(run_id, data=cells(arm, seed), artifact_file="corrupt/cells.json")
            client.log_dict(run_id, bins(seed), "reliability/clean.json")
            client.set_terminated(run_id, "FINISHED")
    return {"uri": uri, "client": client, "parent": parent}


def _cli(*args: str) -> tuple[int, str]:
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        rc = main(list(args))
    return rc, buffer.getvalue()


@contextlib.contextmanager
def kept_figures():
    """stem -> Figure of every figure saved meanwhile (plots.save wrapped)."""
    figures, save = {}, plots.save

    def keep(fig, out_dir, stem):
        figures[stem] = fig
        return save(fig, out_dir, stem)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(plots, "save", keep)
        yield figures


@pytest.fixture(scope="module")
def report(store, tmp_path_factory) -> dict:
    """The report through the CLI, every figure kept as drawn."""
    out = tmp_path_factory.mktemp("report") / "endpoints"
    with kept_figures() as figures:
        rc, stdout = _cli("figures", "--experiment", STUDY, "--tracking-uri", store["uri"], "--out", str(out))
    assert rc == 0, stdout
    return {"out": out, "index": (out / "index.md").read_text(), "figures": figures}


def _d(metric: str, arm: str) -> np.ndarray:
    values = VALUES[metric]
    return 100 * (np.array(values[arm]) - np.array(values["base"]))


def test_the_record_s_endpoints_are_read(store):
    info = load_study_info(STUDY, store["uri"])
    declared = read_endpoints(info.endpoints)
    assert declared.primary.arm_trials == (3, 4, 5) and declared.primary.baseline_trials == (0, 1, 2)
    assert len(declared.secondary) == 4 and declared.adjust == "holm" and declared.alpha == 0.05
    assert read_endpoints(None) is None


@pytest.mark.slow  # draws the whole report (seconds); make test-quick leaves it out
def test_the_report_leads_with_the_primary_endpoint(report):
    index = report["index"]
    headings = [line for line in index.splitlines() if line.startswith("#")]
    assert headings[1] == "## Pre-registered endpoints"
    assert headings[2] == "## Exploratory analysis" and "### Table 1: error per corruption" in headings[3:]
    assert all(h.startswith("###") for h in headings[3:] if h != "## Skipped")  # everything else under exploratory
    d = _d("corrupt/gaussian_noise/error", "xn")  # -10, -12, -11
    p = stats.ttest_rel(GAUSS["xn"], GAUSS["base"]).pvalue
    half = stats.t.ppf(0.975, 2) * d.std(ddof=1) / math.sqrt(3)
    primary = next(line for line in index.splitlines() if line.startswith("**Primary endpoint**"))
    assert f"noise only − FCR, no mollification = **{d.mean():+.2f} ± {half:.2f} percentage points**" in primary
    assert "-11.00 ± 2.48" in primary and f"p = {p:.2g}" in primary and "3 seed pairs" in primary
    assert "lower than the baseline at alpha 0.05" in primary and "read at alpha 0.05 on its own" in primary
    assert index.index("**Primary endpoint**") < index.index("**Secondary endpoints**") < index.index("## Exploratory")
    assert "Everything below is exploratory" in index
    assert "### Differences against the baseline, paired by seed (exploratory)" in index
    assert "- corruption protocol (severity table, JPEG round trip): cifar" in index


@pytest.mark.slow  # draws the whole report (seconds); make test-quick leaves it out
def test_the_secondary_family_is_adjusted_together(report):
    index = report["index"]
    raw = [stats.ttest_rel(VALUES[m][arm], VALUES[m]["base"]).pvalue for m, arm in SECONDARY]
    reject, holm, *_ = multipletests(raw, alpha=0.05, method="holm")
    assert "a family of 4 tests adjusted together: Holm over 4 tests, alpha 0.05; intervals: Bonferroni" in index
    assert "| difference ± 98.75% | result |" in index  # 1 - 0.05 / 4
    rows = [line for line in index.split("**Secondary endpoints**")[1].split("## Exploratory")[0].splitlines()
            if line.startswith("| ") and " − " in line and "endpoint" not in line]
    assert len(rows) == 4
    for row, p, q, r in zip(rows, raw, holm, reject):
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert float(cells[4]) == pytest.approx(p, abs=5e-4) and float(cells[5]) == pytest.approx(q, abs=5e-4)
        assert (cells[7] in ("lower", "higher")) == r


@pytest.mark.slow  # draws the whole report (seconds); make test-quick leaves it out
def test_the_forest_and_severity_figures_of_the_endpoint(report):
    out = report["out"]
    for stem in ("forest_endpoints", "severity_gaussian_noise"):
        assert (out / f"{stem}.png").is_file() and f"({stem}.png)" in report["index"], stem
    # every clean and corrupted error cell against the baseline is a declared endpoint: in the
    # paired table marked so, out of its family, and no exploratory forest plot is left to draw
    paired = (out / "paired.md").read_text()
    assert paired.count("(declared)") == 4 + 1 and "Holm over 8 tests" in paired  # 4 of 12 cells, and the note
    assert not (out / "forest_paired_vs_baseline.png").exists()
    fig = report["figures"]["severity_gaussian_noise"]
    (ax,) = fig.axes
    noise = next(c for c in ax.containers if c.get_label() == "noise only")  # errorbar: (data line, caps, bars)
    # severity s: the mean over seeds of the cells' gaussian noise error, 0 = clean
    expected = [100 * np.mean(CLEAN["xn"])] + [100 * (np.mean(GAUSS["xn"]) + 0.03 * (s - 3)) for s in range(1, 6)]
    assert noise.lines[0].get_ydata() == pytest.approx(expected)
    titles = [ax.get_title(loc="left") for ax in report["figures"]["forest_endpoints"].axes]
    assert titles[0].startswith("Primary endpoint: one test at alpha 0.05") and "Holm over 4 tests" in titles[1]


def _colours(fig) -> dict[str, str]:
    """Label -> colour of every labelled line and bar of a figure."""
    out = {}
    for ax in fig.axes:
        for line in ax.get_lines():
            if not line.get_label().startswith("_"):
                out[line.get_label()] = to_hex(line.get_color())
        for container in ax.containers:
            label = container.get_label()
            if not label or label.startswith("_"):
                continue
            if isinstance(container, BarContainer):
                out[label] = to_hex(container.patches[0].get_facecolor())
            elif isinstance(container, ErrorbarContainer):
                out[label] = to_hex(container.lines[0].get_color())
    return out


@pytest.mark.slow  # draws the whole report (seconds); make test-quick leaves it out
def test_one_colour_per_arm_across_the_report_s_figures(report):
    figures = report["figures"]
    by_figure = {stem: _colours(figures[stem]) for stem in ("severity", "severity_gaussian_noise", "ablation_type",
                                                           "reliability")}
    for label in LABELS.values():
        seen = {stem: colours[label] for stem, colours in by_figure.items() if label in colours}
        assert len(seen) >= 3 and len(set(seen.values())) == 1, (label, seen)
    baseline = LABELS["base"]
    assert by_figure["ablation_type"][baseline] == by_figure["severity"][baseline] == BASELINE_COLOUR
    assert len({by_figure["severity"][label] for label in LABELS.values()}) == 3


@pytest.mark.slow  # draws the whole report (seconds); make test-quick leaves it out
def test_the_reliability_legend_gives_the_table_s_ece(report):
    headline = (report["out"] / "headline.md").read_text()
    row = next(line for line in headline.splitlines() if line.startswith("| noise only |"))
    table_ece = row.split("|")[-2].strip()  # the last column: corrupted ECE; clean ECE is the one before
    clean_ece = row.split("|")[-3].strip().split(" ± ")[0]
    assert float(clean_ece) == pytest.approx(100 * np.mean(SEED_ECE), abs=0.01) and table_ece
    legend = [t.get_text() for t in report["figures"]["reliability"].legends[0].get_texts()]
    noise = next(t for t in legend if t.startswith("noise only"))
    assert f"clean {float(clean_ece):.1f}%" in noise and "mean over 3 seeds" in noise
    assert "clean 4.2%" not in noise  # the pooled bins' ECE
    assert "mean over seeds" in report["figures"]["reliability"].get_suptitle()


@pytest.mark.slow  # draws the whole report (seconds); make test-quick leaves it out
def test_paired_prints_the_endpoints_and_adjusts_as_asked(store):
    rc, out = _cli("paired", "--experiment", STUDY, "--tracking-uri", store["uri"])
    assert rc == 0 and out.index("**Primary endpoint**") < out.index("Holm over 4 tests")
    assert "Exploratory" not in out  # no --baseline: the declared endpoints only
    rc, out = _cli("paired", "--experiment", STUDY, "--tracking-uri", store["uri"], "--adjust", "bh",
                   "--baseline", "FCR, no mollification", "--metric", "corrupt/gaussian_noise/error")
    assert rc == 0 and "Benjamini-Hochberg over 4 tests" in out and "Benjamini-Yekutieli FCR-adjusted" in out
    exploratory = out.split("## Exploratory: not among the declared endpoints")[1]
    # noise only against the baseline on gaussian noise is the primary endpoint: out of this family
    assert "Benjamini-Hochberg over 1 test," in exploratory
    wide = next(line for line in exploratory.splitlines() if line.startswith("| noise only |"))
    assert wide.endswith("(declared) |")
    assert not [line for line in exploratory.splitlines() if line.startswith("| noise only | corrupt/gaussian")]
    p = stats.ttest_rel(GAUSS["xb"], GAUSS["base"]).pvalue
    row = next(line for line in exploratory.splitlines() if line.startswith("| blur only | corrupt/gaussian"))
    assert re.search(rf"\| {p:.3f} \| {p:.3f} \|", row), row  # one test: adjusted = raw
    rc, out = _cli("paired", "--experiment", STUDY, "--tracking-uri", store["uri"], "--baseline", "noise only",
                   "--metric", "corrupt/error", "--metric", "clean/error")
    raw = [stats.ttest_rel(VALUES[m]["base"], VALUES[m]["xn"]).pvalue for m in ("corrupt/error", "clean/error")]
    _, holm, *_ = multipletests(raw + [stats.ttest_rel(VALUES[m]["xb"], VALUES[m]["xn"]).pvalue
                                       for m in ("corrupt/error", "clean/error")], method="holm")
    assert "Holm over 4 tests" in out  # another baseline: no declared cell among these
    row = next(line for line in out.splitlines() if line.startswith("| FCR, no mollification | corrupt/error"))
    assert f"| {raw[0]:.3f} | {holm[0]:.3f} |" in row, row


def test_paired_refuses_a_metric_no_run_logged(store, capsys):
    """A single corruption x severity cell lives in corrupt/cells.json, not among the metrics: a
    column of dashes would read as missing data, so the command says where the cell is."""
    rc, out = _cli("paired", "--experiment", STUDY, "--tracking-uri", store["uri"], "--baseline",
                   "FCR, no mollification", "--metric", "corrupt/gaussian_noise/s5/error")
    err = capsys.readouterr().err
    assert rc == 1 and "logged corrupt/gaussian_noise/s5/error" in err and "--severity-of" in err


def test_without_endpoints_every_comparison_is_exploratory(tmp_path):
    runs = pd.DataFrame([{"run_id": f"r{i}", "run_name": str(i), "status": "FINISHED", "study": "s",
                          "trial_number": i, "seed": 0, "start_time": pd.Timestamp(0, unit="s", tz="UTC"),
                          **CONFIG, "smooth_labels": smooth, "corrupt/error": 0.3}
                         for i, smooth in enumerate((True, False))])
    write_report(runs, None, {}, tmp_path, echo=lambda line: None)
    index = (tmp_path / "index.md").read_text()
    assert "This study declares no endpoints: every comparison in this report is exploratory" in index
    assert "Pre-registered" not in index
    # two configurations that differ only in smoothing: the figure says so
    assert (tmp_path / "ablation_label_smoothing_on_vs_off.png").is_file()
    assert not list(tmp_path.glob("ablation_schedule*")) and "(c) Label smoothing on vs off" in index


@pytest.mark.slow  # draws the whole report (seconds); make test-quick leaves it out
def test_severity_of_a_corruption_from_the_older_per_cell_metrics(tmp_path):
    """Runs logged before corrupt/cells.json carry the cells as metrics; asked for by name, without
    declared endpoints, the figure reads them."""
    rows = []
    for i, (arm, overrides) in enumerate(ARMS):
        for seed in SEEDS:
            cells = {f"corrupt/gaussian_noise/s{s}/error": GAUSS[arm][seed] + 0.01 * s for s in range(1, 6)}
            rows.append({"run_id": f"r{i}{seed}", "run_name": f"{i}{seed}", "status": "FINISHED", "study": "s",
                         "trial_number": 3 * i + seed, "seed": seed, "start_time": pd.Timestamp(0, unit="s", tz="UTC"),
                         **CONFIG, **overrides, "clean/error": CLEAN[arm][seed], "corrupt/error": CORRUPT[arm][seed],
                         **cells})
    runs = pd.DataFrame(rows)
    runs.loc[runs["mollify"] == False, ["roles", "beta"]] = None  # noqa: E712 (not logged without mollification)
    with kept_figures() as figures:
        write_report(runs, None, {}, tmp_path, severity_of=["gaussian_noise"], echo=lambda line: None)
    (ax,) = figures["severity_gaussian_noise"].axes
    blur = next(c for c in ax.containers if c.get_label() == "blur only")
    expected = [100 * np.mean(CLEAN["xb"])] + [100 * (np.mean(GAUSS["xb"]) + 0.01 * s) for s in range(1, 6)]
    assert blur.lines[0].get_ydata() == pytest.approx(expected)
    assert "primary endpoint" not in (tmp_path / "index.md").read_text().split("severity_gaussian_noise.png")[1][:300]
    forest = figures["forest_paired_vs_baseline"]  # no endpoints: the headline errors' cells, exploratory
    assert [ax.get_title(loc="left") for ax in forest.axes] == ["corrupted error", "clean error"]
    assert "Holm over" in forest.get_suptitle() and forest.get_suptitle().startswith("Exploratory")
    with pytest.raises(ValueError, match="unknown corruption"):
        write_report(runs, None, {}, tmp_path, severity_of=["gaussian"], echo=lambda line: None)


def test_a_preset_s_declared_endpoints_read_back_as_the_study_records_them():
    """The study side's record (study/record.py) against this side's reader: evidence-cpu-32's
    5 configurations x 3 seeds, the primary noise only (grid point 1) against fcr (point 0)."""
    from study.record import record_data
    from study.spec import load_spec

    data = json.loads(json.dumps(record_data(load_spec("evidence-cpu-32"))))  # as record.json holds it
    declared = read_endpoints(data[ENDPOINTS_KEY])
    assert declared.primary.metric == "corrupt/gaussian_noise/error"
    assert (declared.primary.arm_trials, declared.primary.baseline_trials) == ((3, 4, 5), (0, 1, 2))
    assert len(declared.secondary) == 9 and declared.adjust == "holm" and declared.alpha == 0.05
    for e in (declared.primary, *declared.secondary):
        assert set(e.arm_trials) | set(e.baseline_trials) <= set(range(15)) and e.arm_trials != e.baseline_trials
