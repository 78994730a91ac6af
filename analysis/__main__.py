"""Command line: `python -m analysis figures --experiment NAME --out DIR [--tracking-uri URI]
[--log-to-mlflow] [--max-configs N]`."""

from __future__ import annotations

import argparse
import sys

from analysis.report import make_figures


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m analysis",
        description="Tables and figures of a mollification study, read from MLflow.")
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
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        make_figures(args.experiment, args.out, tracking_uri=args.tracking_uri,
                     log_to_mlflow=args.log_to_mlflow, max_configs=args.max_configs)
    except LookupError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
