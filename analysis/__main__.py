"""Command line:

    python -m analysis figures --experiment NAME --out DIR [--tracking-uri URI] [--log-to-mlflow] [--max-configs N]
    python -m analysis paired --experiment NAME --baseline LABEL [--tracking-uri URI]

`paired` prints every configuration's difference from the configuration labelled LABEL (as the
report labels them), paired by seed, as a Markdown table."""

from __future__ import annotations

import argparse
from pathlib import Path
import sys

from analysis.configs import with_configurations
from analysis.mlflow_io import load_runs
from analysis.paired import HEADLINE, differences_markdown, paired_differences
from analysis.report import keep_finished, make_figures
from contract import one_line


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
    pairs = commands.add_parser("paired", help="differences from one configuration, paired by seed (Markdown)")
    pairs.add_argument("--experiment", required=True)
    pairs.add_argument("--baseline", required=True, help="the configuration's label, e.g. 'FCR, no mollification'")
    pairs.add_argument("--tracking-uri", default=None)
    pairs.add_argument("--metric", action="append", default=[], metavar="NAME",
                       help="a logged metric to compare instead of the headline ones (repeatable), "
                       "e.g. corrupt/gaussian_noise/error; errors and ECE in %%")
    return parser.parse_args(argv)


def print_paired(experiment: str, baseline: str, tracking_uri: str | None, metrics: list[str]) -> None:
    runs, _ = keep_finished(load_runs(experiment, tracking_uri))
    labelled, _ = with_configurations(runs)
    labels = list(dict.fromkeys(labelled["config"]))
    if baseline not in labels:
        raise LookupError(f"no configuration {baseline!r} in {experiment}; configurations: {'; '.join(labels)}")
    columns = [(m, m, 1.0 if m.endswith("nll") else 100.0) for m in metrics] or HEADLINE
    print(differences_markdown(paired_differences(labelled, baseline, columns), baseline, columns))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.command == "paired":
            print_paired(args.experiment, args.baseline, args.tracking_uri, args.metric)
        else:
            if Path(args.out).exists() and not Path(args.out).is_dir():
                raise NotADirectoryError(f"--out {args.out} is a file; give a folder (created if missing)")
            make_figures(args.experiment, args.out, tracking_uri=args.tracking_uri,
                         log_to_mlflow=args.log_to_mlflow, max_configs=args.max_configs)
    except (LookupError, NotADirectoryError) as err:
        return one_line(err, 1, args.debug)
    except Exception as err:  # one line for the user; --debug for the traceback
        return one_line(err, 1, args.debug, unexpected=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
