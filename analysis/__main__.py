"""Command line:

    python -m analysis figures --experiment NAME --out DIR [--tracking-uri URI] [--log-to-mlflow] [--max-configs N]
                               [--severity-of CORRUPTION ...]
    python -m analysis paired --experiment NAME [--baseline LABEL] [--metric NAME ...]
                              [--adjust holm|bh|none] [--tracking-uri URI]

`paired` prints, when the study declares endpoints, the primary endpoint (one test at the declared
alpha) and the secondary family adjusted together (the declared adjustment, or `--adjust`); then,
with `--baseline` (or for a study without endpoints, whose baseline defaults to its one
configuration without mollification), every configuration's difference from the configuration
labelled LABEL (as the report labels them), paired by seed, as Markdown: exploratory cells, adjusted
together over the cells shown (`--adjust`, default Holm). See analysis/endpoints.py."""

from __future__ import annotations

import argparse
from pathlib import Path
import sys

from analysis.benchmark import CORRUPTIONS
from analysis.configs import with_configurations
from analysis.endpoints import declared_cells, endpoints_markdown, evaluate, read_endpoints
from analysis.mlflow_io import load_runs, load_study_info
from analysis.multiplicity import ADJUSTMENTS
from analysis.paired import HEADLINE, differences_markdown, find_baseline, paired_differences
from analysis.report import keep_finished, make_figures
from contract import debug_anywhere, one_line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m analysis",
        description="Tables and figures of a mollification study, read from MLflow.")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    commands = parser.add_subparsers(dest="command", required=True)
    figures = commands.add_parser(
        "figures", help="Table 1, severity curves, ablation panels, reliability diagrams and "
        "Optuna plots of one study, as PNG/PDF/Markdown/CSV/LaTeX with an index.md")
    figures.add_argument("--experiment", required=True, help="the MLflow experiment (= study name)")
    figures.add_argument("--out", required=True, help="folder to write into (created if missing)")
    figures.add_argument("--tracking-uri", default=None,
                         help="MLflow store; default $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db")
    figures.add_argument("--log-to-mlflow", action="store_true",
                         help="attach the folder to the study's parent run under figures/")
    figures.add_argument("--max-configs", type=int, default=10,
                         help="most configurations drawn in line and reliability plots (the best "
                         "by the study's objective); tables list all (default 10)")
    figures.add_argument("--severity-of", action="append", default=[], choices=CORRUPTIONS, metavar="CORRUPTION",
                         help="also draw this corruption's error against severity per configuration "
                         "(repeatable; the primary endpoint's corruption is always drawn), e.g. gaussian_noise")
    pairs = commands.add_parser("paired", help="the declared endpoints, and differences from one configuration, "
                                "paired by seed, adjusted for multiplicity (Markdown)")
    pairs.add_argument("--experiment", required=True)
    pairs.add_argument("--baseline", default=None,
                       help="the configuration's label, e.g. 'FCR, no mollification' (default: the declared "
                       "endpoints only; for a study without them, its one configuration without mollification)")
    pairs.add_argument("--tracking-uri", default=None)
    pairs.add_argument("--metric", action="append", default=[], metavar="NAME",
                       help="a logged metric to compare instead of the headline ones (repeatable), "
                       "e.g. corrupt/gaussian_noise/error; errors and ECE in %%")
    pairs.add_argument("--adjust", choices=ADJUSTMENTS, default=None,
                       help="multiplicity adjustment: holm, bh (Benjamini-Hochberg) or none (default: the "
                       "study's declared one for its secondary family, Holm for the cells shown)")
    debug_anywhere(commands)
    return parser.parse_args(argv)


def print_paired(experiment: str, baseline: str | None, tracking_uri: str | None, metrics: list[str],
                 adjust: str | None = None) -> None:
    runs, _ = keep_finished(load_runs(experiment, tracking_uri))
    info = load_study_info(experiment, tracking_uri)
    labelled, table = with_configurations(runs, info.active_when if info is not None else None)
    endpoints = read_endpoints(info.endpoints if info is not None else None)
    evaluation = evaluate(labelled, endpoints, adjust) if endpoints is not None else None
    if evaluation is not None:
        print(f"## Pre-registered endpoints of {experiment}\n\n{endpoints_markdown(evaluation)}")
        if baseline is None and not metrics:
            return
    labels = "; ".join(dict.fromkeys(labelled["config"]))
    baseline = baseline or find_baseline(table)
    if baseline is None:
        raise LookupError(f"{experiment} declares no endpoints and has no single configuration without "
                          f"mollification: give --baseline; configurations: {labels}")
    if baseline not in table.index:
        raise LookupError(f"no configuration {baseline!r} in {experiment}; configurations: {labels}")
    missing = [m for m in metrics if m not in labelled or labelled[m].isna().all()]
    if missing:
        raise LookupError(f"no finished run of {experiment} logged {', '.join(missing)} (a single corruption x "
                          "severity cell is in each run's corrupt/cells.json: `figures --severity-of CORRUPTION` "
                          "draws it)")
    columns = [(m, m, 1.0 if m.endswith("nll") else 100.0) for m in metrics] or HEADLINE
    heading = "## Exploratory: not among the declared endpoints\n\n" if evaluation is not None else ""
    print(heading + differences_markdown(paired_differences(labelled, baseline, columns), baseline, columns,
                                         adjust=adjust or "holm", declared=declared_cells(evaluation, baseline),
                                         alpha=evaluation.alpha if evaluation is not None else 0.05))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.command == "paired":
            print_paired(args.experiment, args.baseline, args.tracking_uri, args.metric, args.adjust)
        else:
            if Path(args.out).exists() and not Path(args.out).is_dir():
                raise NotADirectoryError(f"--out {args.out} is a file; give a folder (created if missing)")
            make_figures(args.experiment, args.out, tracking_uri=args.tracking_uri,
                         log_to_mlflow=args.log_to_mlflow, max_configs=args.max_configs,
                         severity_of=args.severity_of)
    except (LookupError, NotADirectoryError) as err:
        return one_line(err, 1, args.debug)
    except Exception as err:  # one line for the user; --debug for the traceback
        return one_line(err, 1, args.debug, unexpected=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
