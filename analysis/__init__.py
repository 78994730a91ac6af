"""Analysis of mollification studies from what MLflow stored: the runs as a pandas DataFrame, then
the poster's tables and figures as pure functions of it.

    runs = load_runs("type-cifar10")                       # one row per trial run
    make_figures("type-cifar10", "reports/type-cifar10")   # Table 1, Fig. 6/7, reliability, Optuna

`mlflow_io` is the only module that talks to MLflow. A study's declared endpoints are tested in
`endpoints` (the primary alone at alpha, the secondary family adjusted together, the rest
exploratory), with the paired t tests and adjustments of `multiplicity`. Command line:
`python -m analysis --help`.
"""

from analysis.configs import colour_map, configurations, describe, effective_params, with_configurations
from analysis.endpoints import evaluate, read_endpoints
from analysis.mlflow_io import (StudyInfo, load_cells, load_reliability, load_runs, load_study_info, log_report,
                                resolve_tracking_uri)
from analysis.multiplicity import adjust, paired_test
from analysis.optimisation import importances, pareto_mask, rebuild_study
from analysis.panels import PANELS, find_comparisons
from analysis.report import Report, keep_finished, make_figures, write_report
from analysis.stats import mean_ci, summarise
from analysis.tables import table1

__all__ = [
    "PANELS", "Report", "StudyInfo", "adjust", "colour_map", "configurations", "describe", "effective_params",
    "evaluate", "find_comparisons", "importances", "keep_finished", "load_cells", "load_reliability", "load_runs",
    "load_study_info", "log_report", "make_figures", "mean_ci", "paired_test", "pareto_mask", "read_endpoints",
    "rebuild_study",
    "resolve_tracking_uri", "summarise", "table1", "with_configurations", "write_report",
]
