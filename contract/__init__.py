"""The contract between the three packages: the names `trainables` and `study` write into MLflow
and `analysis` reads back, declared once. Standard library only, so that `analysis` imports it
without torch or Ray (`trainables/__init__.py` imports nothing); nothing here may import more.

- tags and artifact names of the study's parent run and of each trial run;
- which knobs act (`ACTIVE_WHEN`) and the one evaluator of its rules (`rule_holds`, `is_active`),
  which a study also stores as data in its record (`record.json`, key `active_when`);
- the metric names a trial logs (`METRICS`, the corruption groups, the name builders), their
  summaries of the corruption grid (`summarize_cells`) and which of them MLflow charts (`charted`);
- the command lines' one-line error (`one_line`), `--debug` on every command (`debug_anywhere`),
  where the MLflow store is (`tracking_uri`), a local store's location made absolute
  (`absolute_location`), a URI fit to store or show (`safe_uri`, without credentials) and a file
  replaced whole (`write_atomic`).
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence
from urllib.parse import unquote, urlsplit, urlunsplit

# --- tags ----------------------------------------------------------------------------------------
KIND_TAG = "mollify.kind"  # "study" on the parent run, "trial" on each trial's run
STUDY_TAG = "mollify.study"
PRESET_TAG = "mollify.preset"
SEARCH_TAG = "mollify.search"  # grid, tpe, gp, nsga2
OBJECTIVES_TAG = "mollify.objectives"  # JSON [[metric, "min" | "max"], ...]
SELECT_ON_TEST_TAG = "mollify.select_on_test"  # "true" when the spec accepted test-set selection
TOTAL_TRIALS_TAG = "mollify.total_trials"
CORRUPTION_SETS_TAG = "mollify.corruption_sets"  # JSON: the corrupted sets the trials evaluate on
STATE_TAG = "mollify.state"  # the study's state: running, finished, failed, interrupted
TRIAL_ID_TAG = "mollify.trial_id"  # the Ray trial that last ran it (a resumed study runs it under a new one)
TRIAL_NUMBER_TAG = "mollify.trial_number"  # Optuna's trial number, or the grid index: a trial's identity
LAUNCH_TAG = "mollify.launch_id"  # on the parent run: the launch that made it (study.json's launch_id)
STOPPED_EARLY_TAG = "mollify.stopped_early"  # "true" on the runs of trials a scheduler stopped
STATUS_TAG = "mollify.status"  # a trial run's end in words: finished, failed: <why>, stopped early
SEED_TAG = "mollify.seed"
PARENT_TAG = "mlflow.parentRunId"
GIT_COMMIT_TAG = "mlflow.source.git.commit"
DESCRIPTION_TAG = "mlflow.note.content"  # the run's description in the MLflow UI
LEGACY_SEARCH_SPACE_TAG = "mollify.search_space"  # studies recorded before `study/record.json`

# --- artifacts -----------------------------------------------------------------------------------
SPEC_ARTIFACT = "study/spec.yaml"  # on the parent run: the effective spec
RECORD_ARTIFACT = "study/record.json"  # on the parent run: the record as data
RECORD_SCHEMA = 1
RECORD_KEYS = ("study", "preset", "search", "objectives", "search_space", "select_on_test", "label_keys")
ENDPOINTS_KEY = "endpoints"  # in RECORD_ARTIFACT when the study declared endpoints (study/endpoints.py)
CONFIG_ARTIFACT = "config.yaml"  # on trial runs: every config value
RELIABILITY_DIR = "reliability"  # on trial runs: reliability/<set>.json, the bins of each evaluated set
MODEL_ARTIFACT = "model"  # on trial runs: mlflow.pytorch.load_model("runs:/<run id>/model")
CELLS_ARTIFACT = "cells.json"  # beside the summaries it details: corrupt/cells.json, eval/<set>/corrupt/cells.json
REPORT_DIR = "figures"  # where the report is attached to the parent run
# What a streamed dataset's loader applies to every training image before the config's `augment`
# (trainables/data/stream.py): ImageNet's random-resized crop and flip. A trial with `augment: none`
# on it is not unaugmented, and the analysis must not call it so.
LOADER_AUGMENTATION = {"imagenet": "random-resized crop + flip"}

# --- which knobs act -----------------------------------------------------------------------------
# A knob has an effect only under some settings (METHOD.md section 1): the mollification knobs only
# when mollification is on, npow only for noised samples with label smoothing, and so on. Declared
# here as data, one rule per knob: the search draws a knob only where it acts (study/spec.py), a
# run logs it as a param only where it acts (trainables/tracking.py), the study's record stores the
# rules (`rules_data`) and `analysis` evaluates what a study stored (`rules_from_record`).
# A rule is a tuple of clauses that must all hold; a clause is (key, op, value) with op one of
# CONDITION_OPS: "is" (equal, a bool only to a bool), "contains" (a substring of a string value),
# "above" (a number greater than).
CONDITION_OPS = ("is", "contains", "above")
Clause = tuple[str, str, Any]
Rule = tuple[Clause, ...]
MOLLIFYING: Rule = (("mollify", "is", True),)
ACTIVE_WHEN: dict[str, Rule] = {
    "roles": MOLLIFYING, "alpha": MOLLIFYING, "beta": MOLLIFYING, "label_mode": MOLLIFYING,
    "smooth_labels": MOLLIFYING,
    "npow": (*MOLLIFYING, ("roles", "contains", "n"), ("smooth_labels", "is", True)),
    "bpow": (*MOLLIFYING, ("roles", "contains", "b"), ("smooth_labels", "is", True)),
    "sigma_min": (*MOLLIFYING, ("roles", "contains", "b")),
    "sigma_max": (*MOLLIFYING, ("roles", "contains", "b")),
    "train_size": (("dataset", "is", "synthetic"),),
    "valid_seed": (("valid_per_class", "above", 0),),
    "valid_corrupt_images": (("valid_per_class", "above", 0),),
    "limit_corrupt_images": (("corruption_source", "is", "on_the_fly"),),
    "jsd_weight": (("jsd", "is", True),),
    "ipmix_mixing_set": (("augment", "contains", "ipmix"),),
}


def is_missing(value: Any) -> bool:
    """None or NaN: a param or metric a run does not have."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def _clause(clause: Sequence[Any] | Mapping[str, Any]) -> Clause:
    """A clause as (key, op, value), from a tuple, the record's list or its {"key", "op", "value"};
    an op outside CONDITION_OPS fails here, naming the valid ones."""
    key, op, expected = (clause["key"], clause["op"], clause["value"]) if isinstance(clause, Mapping) else clause
    if op not in CONDITION_OPS:
        raise ValueError(f"unknown condition op {op!r} in {clause}; valid: {', '.join(CONDITION_OPS)}")
    return key, op, expected


def clause_holds(clause: Sequence[Any] | Mapping[str, Any], values: Mapping[str, Any]) -> bool:
    """One clause against a run's values; a key the values lack (itself without effect, so not
    logged) never satisfies it."""
    key, op, expected = _clause(clause)
    value = values.get(key)
    if is_missing(value):
        return False
    if op == "contains":
        return isinstance(value, str) and str(expected) in value
    if op == "above":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and value > expected
    return value == expected and isinstance(value, bool) == isinstance(expected, bool)  # True is not 1


def rule_holds(rule: Iterable[Any] | None, values: Mapping[str, Any]) -> bool:
    """Whether a knob acted: every clause of its rule holds (no rule: it always acts)."""
    return all(clause_holds(c, values) for c in rule or ())


def is_active(key: str, values: Mapping[str, Any], rules: Mapping[str, Iterable[Any]] | None = None) -> bool:
    """Whether knob `key` acts given the other values (a full config's, those drawn so far, or a
    run's params), under `rules` (default: ACTIVE_WHEN)."""
    return rule_holds((ACTIVE_WHEN if rules is None else rules).get(key), values)


def rule_data(key: str) -> list[dict[str, Any]]:
    """The rule under which `key` acts as the record's data: a list of clauses that must all hold,
    each {"key": ..., "op": "is" | "contains" | "above", "value": ...}; empty when it always acts."""
    return [{"key": k, "op": op, "value": v} for k, op, v in ACTIVE_WHEN.get(key, ())]


def rules_data() -> dict[str, list[list[Any]]]:
    """Every rule as the record stores it (`active_when`): key -> [[key, op, value], ...]."""
    return {k: [list(c) for c in rule] for k, rule in ACTIVE_WHEN.items()}


def rules_from_record(record: Mapping[str, Any] | None) -> dict[str, Rule]:
    """The rules a study stored in its record, checked (an unknown op fails); a study recorded
    before the record held them falls back to ACTIVE_WHEN."""
    stored = (record or {}).get("active_when")
    if not stored:
        return dict(ACTIVE_WHEN)
    return {key: tuple(_clause(c) for c in rule) for key, rule in stored.items()}


# --- metric names --------------------------------------------------------------------------------
# What a trial logs (METHOD.md section 4): per set, these METRICS; the corruption benchmark's 15
# corruptions in four groups, the 4 extra ones held apart for validation, 5 severities.
METRICS = ("error", "nll", "ece", "ece_batch100")
GROUPS: dict[str, tuple[str, ...]] = {  # the authors' summary files brightness under weather, contrast under digital
    "noise": ("gaussian_noise", "shot_noise", "impulse_noise"),
    "blur": ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur"),
    "weather": ("snow", "frost", "fog", "brightness"),
    "digital": ("contrast", "elastic_transform", "pixelate", "jpeg_compression"),
}
BENCHMARK: tuple[str, ...] = tuple(c for group in GROUPS.values() for c in group)
EXTRA: tuple[str, ...] = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)
VALID = "valid"  # validation metrics: valid/<m>, valid/corrupt/<m>, valid/corrupt/<corruption>/<m>
CLEAN_ERROR = "clean/error"
CORRUPT_ERROR = "corrupt/error"
TRAIN_METRICS = ("train/loss", "train/error", "train/images_per_s")


def clean_metric(metric: str = "error") -> str:
    return f"clean/{metric}"


def corrupt_metric(metric: str = "error") -> str:
    """`corrupt/<metric>`: the mean over the benchmark's cells."""
    return f"corrupt/{metric}"


def corruption_metric(corruption: str, metric: str = "error", severity: int | None = None) -> str:
    """`corrupt/<corruption>/<metric>` (mean over severities) or `corrupt/<corruption>/s<k>/<metric>`."""
    if severity is None:
        return f"corrupt/{corruption}/{metric}"
    return f"corrupt/{corruption}/s{severity}/{metric}"


def severity_metric(severity: int, metric: str = "error") -> str:
    """`corrupt/s<k>/<metric>`: the mean over the 15 corruptions at severity k."""
    return f"corrupt/s{severity}/{metric}"


def group_metric(group: str, metric: str = "error") -> str:
    return f"corrupt/group/{group}/{metric}"


def corruption_metric_names(corruptions: Sequence[str], severities: Sequence[int]) -> tuple[str, ...]:
    """Every summary `evaluate_corruptions` returns for these cells: each cell, each corruption's
    mean, and over the benchmark's cells among them the per-severity, per-group and overall means."""
    benchmark = [c for c in corruptions if c in BENCHMARK]
    names = [corruption_metric(c, m, s) for c in corruptions for s in severities for m in METRICS]
    names += [corruption_metric(c, m) for c in corruptions for m in METRICS]
    if benchmark:
        names += [severity_metric(s, m) for s in sorted(severities) for m in METRICS]
        names += [group_metric(g, m) for g, members in GROUPS.items() if set(members) & set(benchmark)
                  for m in METRICS]
        names += [corrupt_metric(m) for m in METRICS]
    return tuple(dict.fromkeys(names))


def validation_metric_names() -> tuple[str, ...]:
    """Every name a trial's validation returns (the held-out images, clean and under EXTRA)."""
    return (*(f"{VALID}/{m}" for m in METRICS), *(f"{VALID}/corrupt/{m}" for m in METRICS),
            *(f"{VALID}/corrupt/{c}/{m}" for c in EXTRA for m in METRICS))


@functools.cache
def trial_metric_names() -> frozenset[str]:
    """Every metric a trial can report (the corruption grid's for every corruption and severity):
    what a study may optimise or stop on."""
    return frozenset({"epoch", "lr", *TRAIN_METRICS, *(clean_metric(m) for m in METRICS),
                      *corruption_metric_names(BENCHMARK + EXTRA, SEVERITIES), *validation_metric_names()})



def summarize_cells(cells: Mapping[tuple[str, int], Mapping[str, float]]) -> dict[str, float]:
    """Per-cell metrics {(corruption, severity): {metric: value}} -> every named summary: each cell
    `corrupt/<c>/s<k>/<m>`, each corruption's mean over its severities `corrupt/<c>/<m>`, and over
    the benchmark's cells only (the extra corruptions never enter them) the per-severity
    `corrupt/s<k>/<m>`, per-group and overall means. Plain means, so that a trial (which computes
    them) and the analysis (which rebuilds the ones MLflow keeps only as the cells table) agree."""
    out: dict[str, float] = {}
    for (name, severity), metrics in cells.items():
        for m in METRICS:
            if m in metrics:
                out[corruption_metric(name, m, severity)] = metrics[m]
    benchmark = {key: v for key, v in cells.items() if key[0] in BENCHMARK}
    subsets = [(corruption_metric(n, "{m}"), [v for (c, _), v in cells.items() if c == n])
               for n in dict.fromkeys(n for n, _ in cells)]
    subsets += [(severity_metric(s, "{m}"), [v for (_, k), v in benchmark.items() if k == s])
                for s in sorted({s for _, s in benchmark})]
    subsets += [(group_metric(g, "{m}"), [v for (n, _), v in benchmark.items() if n in members])
                for g, members in GROUPS.items()]
    subsets += [(corrupt_metric("{m}"), list(benchmark.values()))]
    for template, values in subsets:
        for m in METRICS:
            present = [v[m] for v in values if m in v]
            if present:
                out[template.format(m=m)] = sum(present) / len(present)
    return out


# --- what MLflow keeps as metrics -----------------------------------------------------------------
# A trial reports every name above to Ray and Optuna (what a study may select or stop on). MLflow
# keeps as metrics only what is worth a chart or a runs-table column, about 37 per trial: the
# per-epoch curves (train/*, lr, clean/*, valid/<m>, valid/corrupt/<m>) and the final summaries
# (corrupt/<m>, per group error/NLL/ECE, per severity error). The rest are tables: the grid's cells
# in `corrupt/cells.json`, from which `summarize_cells` rebuilds each corruption's and severity's
# means, and the validation's per-corruption means in `valid/corrupt/corruptions.json` (a row per
# evaluated epoch and extra corruption, written when the trial finishes). A study's own objectives are always metrics as well.
CHARTED_GROUP_METRICS = ("error", "nll", "ece")
CHARTED_SEVERITY_METRICS = ("error",)
VALID_TABLE = f"{VALID}/corrupt/corruptions.json"
EVAL_PREFIX = "eval/"  # `trainables evaluate` logs eval/<set>/<the names above>


def charted(name: str) -> bool:
    """Whether MLflow keeps `name` as a metric (see above); names outside the trial's (a
    re-evaluation's `eval/<set>/` prefix aside) always are."""
    if name.startswith(EVAL_PREFIX) and name.count("/") >= 2:
        name = name.split("/", 2)[2]
    if name not in trial_metric_names():
        return True
    parts = name.split("/")
    if parts[0] == VALID:
        return len(parts) == 2 or parts[1:2] == ["corrupt"] and len(parts) == 3
    if parts[0] != "corrupt":
        return True
    if len(parts) == 2:
        return True
    if parts[1] == "group":
        return parts[3] in CHARTED_GROUP_METRICS
    if len(parts) == 3 and parts[1][:1] == "s" and parts[1][1:].isdigit():
        return parts[2] in CHARTED_SEVERITY_METRICS
    return False


# --- the command lines and the store ---------------------------------------------------------------
DEFAULT_DB = "mlflow.db"
DEBUG_HELP = "show the traceback of an error"


def debug_anywhere(commands: argparse._SubParsersAction) -> None:
    """`--debug` after the command as well as before it (`python -m study launch smoke --debug`).
    Each command's flag defaults to SUPPRESS: absent, it leaves the top-level value in place."""
    for parser in {id(p): p for p in commands.choices.values()}.values():  # an alias shares its parser
        parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)


def one_line(err: BaseException, code: int, debug: bool, unexpected: bool = False) -> int:
    """Print `err` as one line on stderr and return the exit code; with `debug`, raise it instead
    (its traceback). `unexpected` errors are named by their type, since their message may not
    say what went wrong by itself."""
    if debug:
        raise err
    kind = f"{type(err).__name__}: " if unexpected else ""
    text = str(err).strip()
    first = text.splitlines()[0] if text else ""
    print(f"error: {kind}{first} (--debug shows the traceback)", file=sys.stderr)
    return code


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` whole: written beside it, then renamed into place, so that a
    process killed meanwhile leaves the old file or the new one, never half of either."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def tracking_uri(uri: str | None = None) -> str:
    """An explicit URI, else $MLFLOW_TRACKING_URI, else a SQLite file in the working directory."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / DEFAULT_DB}"


SQLITE = "sqlite:///"


def absolute_location(uri: str) -> str:
    """A local store or artifact location made absolute against the working directory: a SQLite
    file (`sqlite:///rel.db`: `sqlite:////abs/rel.db`), a `file:` URI or a plain path. A relative
    one names a different place in every process that runs elsewhere (Ray runs each trial in a
    folder of its own). Servers, absolute paths and in-memory SQLite are returned as given."""
    if uri.startswith(SQLITE):
        path, sep, query = uri.removeprefix(SQLITE).partition("?")
        if not path or path == ":memory:" or os.path.isabs(path):
            return uri
        return f"{SQLITE}{os.path.abspath(path)}{sep}{query}"
    parts = urlsplit(uri)
    if parts.scheme == "file" and not parts.netloc and parts.path and not os.path.isabs(parts.path):
        return Path(os.path.abspath(unquote(parts.path))).as_uri()
    if not parts.scheme and uri and not os.path.isabs(uri):
        return os.path.abspath(uri)
    return uri


def safe_uri(uri: str) -> str:
    """The URI without credentials (user:password@host), fit to be stored and shown."""
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
