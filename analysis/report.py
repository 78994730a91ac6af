"""The study report: Table 1, severity curves, ablation panels, reliability diagrams and, for
Optuna studies, the optimisation history, parameter importances and the Pareto front, written into
one folder with an `index.md` that links them and a `report.html` with the same content and the
figures embedded, which opens as one file in MLflow's artifact viewer (where Markdown shows its
image links as text). "Best" means best by what the study searched (its
parent run's `mollify.objectives`, validation metrics for an honest search), while the tables
report test metrics: the test figures of what was selected (METHOD.md section 6). `write_report` is a pure function of the runs frame,
the study's parent-run info and the reliability bins; `make_figures` reads those from MLflow first
(and can attach the folder to the parent run).

A study that declared endpoints (analysis/endpoints.py) opens with them: the primary endpoint in
words, read at alpha on its own; the secondary family with its adjusted p-values and a forest plot
of both. Everything after that (tables, paired cells, figures) is labelled exploratory; a study
without declared endpoints says that all of it is. Every figure of one report gives an arm the
same colour, the baseline (no mollification) always the same grey (`configs.colour_map`).

Why one module of about 460 lines: its sections share one context and are written in the order a
reader meets them, so the file reads as the report does; the Optuna part, which only Optuna
studies have, is apart in analysis/report_optuna.py."""

from __future__ import annotations

import base64
import functools
import html
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import markdown
import numpy as np
import pandas as pd

from analysis import mlflow_io, paired, plots, tables
from analysis.benchmark import CORRUPT_ERROR, CORRUPTION_GROUPS, CORRUPTIONS, group_metric
from analysis.configs import colour_map, describe, varying_params, with_configurations
from analysis.endpoints import (Endpoints, Evaluation, declared_cells, evaluate, metric_words, primary_sentence,
                                read_endpoints, secondary_lines)
from analysis.mlflow_io import Reliability, StudyInfo
from analysis.multiplicity import format_level
from analysis.report_optuna import (MIN_IMPORTANCE_TRIALS, TEST_HEADLINES, TRIALS_PER_PARAM,  # noqa: F401
                                    optuna_section, pareto_axes, pareto_points, words)
from analysis.panels import PANELS, Comparison, comparison_name, find_comparisons, skip_reason
from analysis.stats import (corruption_severity_columns, has_severity_metrics, pool_bins,
                            rank_configurations, severity_columns, summarise)

INDEX = "index.md"
HTML = "report.html"
ABLATION_METRICS = ("clean/error", "corrupt/error", *(group_metric(g) for g in CORRUPTION_GROUPS),
                    "clean/nll", "corrupt/nll", "clean/ece", "corrupt/ece")
RELIABILITY_SETS = {"clean": "clean test set",
                    "corrupt_s5": "most corrupted: all corruptions at severity 5"}


@dataclass
class Report:
    out_dir: Path
    lines: list[str] = field(default_factory=list)  # index.md, in order
    skipped: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)


@dataclass
class _Context:
    runs: pd.DataFrame  # FINISHED runs with a `config` column
    table: pd.DataFrame  # configurations: effective params, indexed by label
    colours: dict[str, str]
    info: StudyInfo | None
    reliability: Mapping[str, Reliability]
    report: Report
    max_configs: int
    echo: Callable[[str], None]
    endpoints: Evaluation | None = None  # the declared endpoints, tested
    cells: Mapping[str, pd.DataFrame] = field(default_factory=dict)  # run_id -> corrupt/cells.json
    corruptions: tuple[str, ...] = ()  # drawn alone against severity: the primary's, and any asked for

    def skip(self, what: str, why: str) -> None:
        line = f"{what}: skipped, {why}."
        self.report.skipped.append(line)
        self.report.lines += [f"*{line}*", ""]
        self.echo(f"skipped: {line}")

    def figure(self, fig, stem: str, caption: str) -> None:
        self.report.files += plots.save(fig, self.report.out_dir, stem)
        self.report.lines += [f"![{caption}]({stem}.png)", "",
                              f"{caption} ([PNG]({stem}.png), [PDF]({stem}.pdf))", ""]

    @property
    def alpha(self) -> float:
        """The study's declared alpha, else 0.05: what every test of the report is read at."""
        return self.endpoints.alpha if self.endpoints is not None else 0.05

    @property
    def objective(self) -> tuple[str, str]:
        """(metric, mode) that "best" means: what the study searched (a grid: the objective it
        names), from its parent run; corrupted error without one."""
        return self.info.objectives[0] if self.info is not None and self.info.objectives else (CORRUPT_ERROR, "min")

    @functools.cached_property
    def plotted(self) -> list[str]:
        """The configurations drawn in line and reliability plots: all, or the `max_configs` best
        by the study's objective (in table order), saying so in the index."""
        labels = list(self.table.index)
        if len(labels) <= self.max_configs:
            return labels
        metric, mode = self.objective
        best = set(rank_configurations(self.runs, metric, mode)[: self.max_configs])
        note = (f"Line and reliability plots show the {self.max_configs} of {len(labels)} "
                f"configurations with the {'lowest' if mode == 'min' else 'highest'} {words(metric)}.")
        self.report.lines += [note, ""]
        self.echo(note)
        return [label for label in labels if label in best]


def keep_finished(runs: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The FINISHED runs, and a line saying how many others were left out and why."""
    done = runs[runs["status"] == "FINISHED"]
    rest = runs[runs["status"] != "FINISHED"]
    stopped = rest.get("stopped_early", pd.Series(False, index=rest.index)).fillna(False).astype(bool)
    others = rest["status"].where(~stopped, "stopped early by the scheduler").value_counts()
    note = f"{len(done)} FINISHED trial runs"
    if len(others):
        note += "; left out " + ", ".join(f"{n} {status}" for status, n in others.items())
    return done, note


# --- sections -------------------------------------------------------------------------------------

EXPLORATORY = ("Everything below is exploratory: comparisons not declared before the study ran. Their "
               "paired cells are adjusted for multiplicity over the cells shown, but which cells to show "
               "was not fixed in advance.")


def _endpoints_section(ctx: _Context) -> None:
    """The declared endpoints first; then the line that makes everything after them exploratory."""
    if ctx.endpoints is None:
        ctx.report.lines += ["## Exploratory analysis", "", "This study declares no endpoints: every "
                             "comparison in this report is exploratory. Paired cells are adjusted for "
                             "multiplicity over the cells shown.", ""]
        return
    evaluation = ctx.endpoints
    ctx.report.lines += ["## Pre-registered endpoints", "",
                         "Declared in the study's spec before it ran (its record, `study/record.json`). The "
                         "primary endpoint is one test, read at alpha on its own; the secondary endpoints are "
                         "one family, adjusted together.", "",
                         primary_sentence(evaluation), "", *secondary_lines(evaluation), ""]
    ctx.figure(plots.forest_figure(_forest_panels(ctx, evaluation), FOREST_XLABEL,
                                   "Pre-registered endpoints: arm − baseline, paired by seed"),
               "forest_endpoints", "Forest plot of the pre-registered endpoints: paired differences with the "
               "primary's plain interval and the secondary family's adjusted intervals (filled: rejected)")
    ctx.report.lines += ["## Exploratory analysis", "", EXPLORATORY, ""]


FOREST_XLABEL = "arm − baseline, paired by seed (percentage points; NLL in nats)"


def _forest_panels(ctx: _Context, evaluation: Evaluation) -> list[tuple[str, list[plots.ForestRow]]]:
    def row(r) -> plots.ForestRow:
        return plots.ForestRow(f"{metric_words(r.endpoint.metric)}: {r.arm} − {r.baseline}", r.test.mean,
                               r.half_adjusted, ctx.colours.get(r.arm, "black"), r.rejected)

    alpha = evaluation.alpha
    panels = [(f"Primary endpoint: one test at alpha {alpha:g}, {format_level(1 - alpha)} interval",
               [row(evaluation.primary)])]
    if evaluation.family is not None:
        family = evaluation.family.describe().replace("; intervals:", "\nintervals:")
        panels.append((f"Secondary family: {family}", [row(r) for r in evaluation.secondary]))
    return panels


def _table_section(ctx: _Context) -> None:
    out = ctx.report.out_dir
    summary = tables.table1(ctx.runs)
    markdown = tables.to_markdown(summary)
    (out / "table1.md").write_text(markdown)
    tables.to_csv(summary, out / "table1.csv")
    (out / "table1.tex").write_text(tables.to_latex(summary, caption="Error (%) over test-time "
                                                    "corruptions, mean ± 95% interval over seeds."))
    ctx.report.files += [out / "table1.md", out / "table1.csv", out / "table1.tex"]
    ctx.report.lines += ["### Table 1: error per corruption", "", markdown,
                         "[Markdown](table1.md), [CSV](table1.csv), [LaTeX](table1.tex)", ""]


def _headline_section(ctx: _Context) -> None:
    out = ctx.report.out_dir
    markdown = paired.headline_markdown(paired.headline_table(ctx.runs))
    (out / "headline.md").write_text(markdown)
    ctx.report.files.append(out / "headline.md")
    ctx.report.lines += ["### Headline metrics: clean, corrupted, per group", "", markdown]
    baseline = paired.find_baseline(ctx.table)
    if baseline is None:
        return ctx.skip("Paired differences", "the study has no single configuration without "
                        "mollification to compare against")
    diffs = paired.paired_differences(ctx.runs, baseline)
    if diffs.empty or diffs.xs("n", axis=1, level="stat").to_numpy().max() < 2:
        return ctx.skip("Paired differences", "fewer than 2 seeds shared with the baseline")
    declared = declared_cells(ctx.endpoints, baseline)
    text = paired.differences_markdown(diffs, baseline, declared=declared, alpha=ctx.alpha)
    (out / "paired.md").write_text(text)
    ctx.report.files.append(out / "paired.md")
    ctx.report.lines += ["### Differences against the baseline, paired by seed (exploratory)", "", text]
    _paired_forest(ctx, diffs, baseline, declared)


FOREST_HEADINGS = ("corrupted error", "clean error")  # the exploratory forest plot: the two headline errors


def _paired_forest(ctx: _Context, diffs: pd.DataFrame, baseline: str, declared: set[tuple[str, str]]) -> None:
    """The headline errors' exploratory paired cells as a forest plot, with the intervals of the
    table's adjustment (its family: every cell shown that is not a declared endpoint)."""
    cells, result = paired.adjust_cells(diffs, declared=declared, alpha=ctx.alpha)
    panels = []
    for heading in FOREST_HEADINGS:
        mine = cells[(cells["heading"] == heading) & (cells["n"] >= 2) & ~cells["declared"]]
        rows = [plots.ForestRow(f"{c.config} − {baseline}", c.mean, c.half_adjusted,
                                ctx.colours.get(c.config, "black"), bool(c.mark)) for c in mine.itertuples()]
        if rows:
            panels.append((heading, rows))
    if not panels:
        return
    ctx.figure(plots.forest_figure(panels, "configuration − baseline, paired by seed (percentage points)",
                                   f"Exploratory: paired differences from {baseline}\n"
                                   + result.describe().replace("; intervals:", "\nintervals:")),
               "forest_paired_vs_baseline", f"Forest plot (exploratory): each configuration minus {baseline}, "
               "paired by seed, with the paired table's adjusted intervals (filled: rejected after adjustment)")


def _severity_section(ctx: _Context) -> None:
    ctx.report.lines += ["### Error against corruption severity", ""]
    for corruption in ctx.corruptions:
        _corruption_part(ctx, corruption)
    if not has_severity_metrics(ctx.runs):
        return ctx.skip("Severity curves", "no per-severity metrics corrupt/s<k>/error "
                        "were logged")
    runs = ctx.runs[ctx.runs["config"].isin(ctx.plotted)]
    curves = {}
    for metric, ylabel in (("error", "error (%)"), ("ece", "ECE (%)")):
        per_run = severity_columns(runs, metric).assign(config=runs["config"])
        summary = summarise(per_run, list(range(6)), scale=100.0)
        if summary.loc[:, pd.IndexSlice[1:, "n"]].to_numpy().sum() > 0:  # some corrupted cell
            curves[ylabel] = summary
    ctx.figure(plots.severity_figure(curves, ctx.colours), "severity",
               "Error and ECE against severity (0 = clean; severity s = mean over the corruptions "
               "at s); what the error bars stand on is in the figure's title")


def primary_corruption(endpoints: Evaluation | Endpoints | None) -> str | None:
    """The corruption the primary endpoint's metric is about ('corrupt/gaussian_noise/error' ->
    'gaussian_noise'); None without endpoints or for a metric over several corruptions."""
    if endpoints is None:
        return None
    metric = endpoints.primary.endpoint.metric if isinstance(endpoints, Evaluation) else endpoints.primary.metric
    parts = metric.split("/")
    return parts[1] if len(parts) == 3 and parts[0] == "corrupt" and parts[1] in CORRUPTIONS else None


def _corruption_part(ctx: _Context, corruption: str) -> None:
    """Error against severity of one corruption, per arm (0 = clean)."""
    runs = ctx.runs[ctx.runs["config"].isin(ctx.plotted)]
    per_run = corruption_severity_columns(runs, corruption, "error", ctx.cells).assign(config=runs["config"])
    summary = summarise(per_run, list(range(6)), scale=100.0)
    if summary.loc[:, pd.IndexSlice[1:, "n"]].to_numpy().sum() == 0:
        return ctx.skip(f"Error against severity for {corruption}", "no run has its per-severity cells "
                        "(corrupt/cells.json or corrupt/<c>/s<k>/error)")
    words = corruption.replace("_", " ")
    why = " (the primary endpoint's corruption; exploratory beside the endpoint)" if (
        corruption == primary_corruption(ctx.endpoints)) else ""
    ctx.figure(plots.severity_figure({f"{words} error (%)": summary}, ctx.colours,
                                     title=f"{words[0].upper()}{words[1:]} error against severity, per arm"),
               f"severity_{corruption}", f"Error under {words}{why} against severity, per arm, mean ± 95% "
               "t interval over seeds (0 = clean)")


def _comparison_context(ctx: _Context, comparisons: Sequence[Comparison], i: int) -> str:
    """What sets comparison i of a panel apart from the panel's others ('' when it is alone)."""
    if len(comparisons) == 1:
        return ""
    anchors = ctx.table.loc[[c.anchor for c in comparisons]].drop(columns="n_runs")
    varying = [c for c in varying_params(anchors) if c not in comparisons[i].panel.knob]
    return describe(anchors.iloc[i].to_dict(), varying)


def slug(text: str) -> str:
    """A file-name part from words: 'noise + blur, beta 4' -> 'noise-blur-beta-4'."""
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-.")


def _ablation_section(ctx: _Context) -> None:
    ctx.report.lines += ["### Ablations", ""]
    for panel in PANELS:
        comparisons = find_comparisons(ctx.table, panel)
        if not comparisons:
            ctx.skip(panel.title, skip_reason(ctx.table, panel))
            continue
        for i, comparison in enumerate(comparisons):
            runs = ctx.runs[ctx.runs["config"].isin(comparison.configs)]
            summary = summarise(runs, ABLATION_METRICS).reindex(list(comparison.configs))
            context = _comparison_context(ctx, comparisons, i)
            key, title = comparison_name(ctx.table, comparison)
            stem = f"ablation_{key}" + (f"_{slug(context)}" if context else "")
            caption = f"{title}: {context}" if context else title
            ctx.figure(plots.ablation_figure(summary, comparison.configs, ctx.colours, title), stem, caption)


def pooled_reliability(runs: pd.DataFrame, reliability: Mapping[str, Reliability]
                       ) -> dict[str, dict[str, dict]]:
    """configuration -> set name -> bins pooled over the configuration's runs (seeds)."""
    out: dict[str, dict[str, dict]] = {}
    for config, group in runs.groupby("config", sort=False):
        by_set: dict[str, list] = {}
        for run_id in group["run_id"]:
            for name, bins in reliability.get(run_id, {}).items():
                by_set.setdefault(name, []).append(bins)
        if by_set:
            out[config] = {name: pool_bins(bins) for name, bins in by_set.items()}
    return out


def seed_mean_ece(runs: pd.DataFrame, reliability: Mapping[str, Reliability]
                  ) -> dict[str, dict[str, tuple[float, int]]]:
    """configuration -> set name -> (mean over the configuration's runs of each run's ECE from its
    own bins, runs): the ECE as the tables give it (the mean over seeds), not that of pooled bins."""
    out: dict[str, dict[str, tuple[float, int]]] = {}
    for config, group in runs.groupby("config", sort=False):
        by_set: dict[str, list[float]] = {}
        for run_id in group["run_id"]:
            for name, bins in reliability.get(run_id, {}).items():
                by_set.setdefault(name, []).append(plots.reliability_ece(bins))
        if by_set:
            out[config] = {name: (float(np.nanmean(values)), len(values)) for name, values in by_set.items()}
    return out


def _reliability_section(ctx: _Context) -> None:
    ctx.report.lines += ["### Reliability diagrams", ""]
    runs = ctx.runs[ctx.runs["config"].isin(ctx.plotted)]
    pooled = pooled_reliability(runs, ctx.reliability)
    present = {name for by_set in pooled.values() for name in by_set}
    sets = {name: title for name, title in RELIABILITY_SETS.items() if name in present}
    if not sets:
        return ctx.skip("Reliability diagrams", "no run has reliability/clean.json or "
                        "reliability/corrupt_s5.json artifacts")
    if "corrupt_s5" not in sets:
        ctx.skip("Reliability diagram of the most corrupted set",
                 "no run has a reliability/corrupt_s5.json artifact")
    ece = seed_mean_ece(runs, ctx.reliability)
    ctx.figure(plots.reliability_figure(pooled, sets, ctx.colours, ece), "reliability",
               "Reliability diagrams per configuration (curves: bins pooled over seeds, marker area by the "
               "images in each bin; ECE in the legend: mean over seeds, as in the tables)")


SECTIONS = (_endpoints_section, _table_section, _headline_section, _severity_section, _ablation_section,
            _reliability_section, optuna_section)


# --- the report -----------------------------------------------------------------------------------

def _header(info: StudyInfo | None, study: str, note: str, n_configs: int, protocols: Sequence[str] = ()) -> list[str]:
    lines = [f"# Study {study}", ""]
    if info is not None:
        objectives = ", ".join(f"{m} ({d})" for m, d in info.objectives) or "none recorded"
        lines += [f"- preset: {info.preset}", f"- search: {info.search}",
                  f"- objectives: {objectives}", f"- MLflow parent run: `{info.run_id}`"]
    if protocols:
        lines.append(f"- corruption protocol (severity table, JPEG round trip): {', '.join(protocols)}")
    lines += [f"- runs: {note}", f"- configurations (runs equal but for the seed): {n_configs}",
              "- errors and ECE in %; ± and error bars: 95% t-interval over seeds (none for one seed)",
              f"- this report as one page with its figures: [{HTML}]({HTML}) (in the MLflow UI, open that file)", ""]
    if info is not None and info.select_on_test:
        lines += ["**Selected on the test set.** This study's search or early stopping optimised test metrics "
                  "(`select_on_test: true`): the best values in its tables were selected on the test set, so "
                  "they are optimistically biased (METHOD.md section 6).", ""]
    return lines


def _protocols(runs: pd.DataFrame) -> list[str]:
    if "corruption_protocol" not in runs:
        return []
    return [str(p) for p in dict.fromkeys(runs["corruption_protocol"]) if not pd.isna(p)]


def write_report(runs: pd.DataFrame, info: StudyInfo | None, reliability: Mapping[str, Reliability],
                 out_dir: str | Path, *, max_configs: int = 10, cells: Mapping[str, pd.DataFrame] | None = None,
                 severity_of: Sequence[str] = (), echo: Callable[[str], None] = print) -> Report:
    """Write every table and figure the runs support into out_dir, plus index.md; print a line
    for each one skipped, with the reason. `runs` is a `load_runs` frame (FINISHED runs are used),
    `reliability` maps run ids to their reliability bins, `cells` to their corruption grid tables
    (what the error of one corruption against severity is read from where the runs lack per-cell
    metrics); that figure is drawn for the primary endpoint's corruption and those in `severity_of`."""
    unknown = sorted(set(severity_of) - set(CORRUPTIONS))
    if unknown:
        raise ValueError(f"unknown corruption(s) {unknown}; valid: {', '.join(CORRUPTIONS)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = Report(out)
    finished, note = keep_finished(runs)
    echo(note)
    study = info.name if info else (runs["study"].iloc[0] if len(runs) else "(no runs)")
    if finished.empty:
        report.lines = _header(info, study, note, 0)
        _Context(finished, pd.DataFrame(), {}, info, reliability, report, max_configs,
                 echo).skip("Every table and figure", "the study has no FINISHED trial runs")
    else:
        labelled, table = with_configurations(finished, info.active_when if info else None)
        report.lines = _header(info, study, note, len(table), _protocols(finished))
        declared = read_endpoints(info.endpoints if info is not None else None)
        evaluation = evaluate(labelled, declared) if declared is not None else None
        baseline = evaluation.primary.baseline if evaluation is not None else paired.find_baseline(table)
        corruptions = tuple(dict.fromkeys(c for c in (primary_corruption(evaluation), *severity_of) if c))
        ctx = _Context(labelled, table, colour_map(list(table.index), baseline), info, reliability, report,
                       max_configs, echo, evaluation, cells or {}, corruptions)
        for section in SECTIONS:
            section(ctx)
    if report.skipped:
        report.lines += ["## Skipped", "", *(f"- {line}" for line in report.skipped), ""]
    (out / INDEX).write_text("\n".join(report.lines))
    (out / HTML).write_text(to_html(report.lines, out, f"Study {study}"))
    report.files += [out / INDEX, out / HTML]
    echo(f"wrote {len(report.files)} files into {out} (open {out / HTML})")
    return report


HTML_STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:90%}th,td{border:1px solid #ccc;padding:3px 7px}
td{text-align:right}td:first-child,th:first-child{text-align:left}img{max-width:100%;height:auto}
code{background:#f4f4f4;padding:0 3px}"""


def to_html(lines: Sequence[str], folder: Path, title: str) -> str:
    """The report's Markdown as one HTML page with every PNG embedded (a data URI), so that it
    shows whole wherever it is opened, MLflow's artifact viewer included. Links to the other files
    beside it (PDF, CSV, LaTeX) stay relative: they work where the folder is."""
    body = markdown.markdown("\n".join(lines), extensions=["tables"])

    def embed(match: re.Match) -> str:
        path = folder / html.unescape(match["src"])
        if path.suffix != ".png" or not path.exists():
            return match[0]
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return f'src="data:image/png;base64,{data}"'

    body = re.sub(r'src="(?P<src>[^"]+)"', embed, body)
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{HTML_STYLE}</style></head>\n<body>\n{body}\n</body></html>\n")


def make_figures(experiment: str, out_dir: str | Path, *, tracking_uri: str | None = None,
                 log_to_mlflow: bool = False, max_configs: int = 10, severity_of: Sequence[str] = (),
                 echo: Callable[[str], None] = print) -> Report:
    """Read study `experiment` from MLflow, write the report into out_dir and, with
    `log_to_mlflow`, attach the folder to the study's parent run under `figures/`. `severity_of`:
    corruptions to draw alone against severity besides the primary endpoint's."""
    runs = mlflow_io.load_runs(experiment, tracking_uri)
    info = mlflow_io.load_study_info(experiment, tracking_uri)
    if log_to_mlflow and info is None:
        raise LookupError(f"experiment {experiment!r} has no study parent run "
                          "(tag mollify.kind=study) to attach the figures to")
    finished, _ = keep_finished(runs)
    reliability = mlflow_io.load_reliability(finished["run_id"], tracking_uri)
    primary = primary_corruption(read_endpoints(info.endpoints if info is not None else None))
    wanted = [c for c in (primary, *severity_of) if c]
    needs_cells = any(not any(col.startswith(f"corrupt/{c}/s") for col in finished.columns) for c in wanted)
    cells = mlflow_io.load_cells(finished["run_id"], tracking_uri) if needs_cells else {}
    report = write_report(runs, info, reliability, out_dir, max_configs=max_configs, cells=cells,
                          severity_of=severity_of, echo=echo)
    if log_to_mlflow:
        mlflow_io.log_report(info.run_id, out_dir, tracking_uri)
        echo(f"attached {out_dir} to parent run {info.run_id} under {mlflow_io.REPORT_DIR}/")
    return report
