"""What `analysis` reads of what `study` and `trainables` write into MLflow, declared on this side.

`analysis` imports neither package (it must read a study on a machine that only has the MLflow
store), so the names it relies on are declared here, and tests/test_record.py checks them against
the writers' own declarations (study/record.py, trainables/config.py, trainables/tracking.py);
the metric names are in analysis/benchmark.py, checked the same way.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

# --- tags ----------------------------------------------------------------------------------------
KIND_TAG = "mollify.kind"  # "study" (the parent run) or "trial"
STUDY_TAG = "mollify.study"
PRESET_TAG = "mollify.preset"
SEARCH_TAG = "mollify.search"
OBJECTIVES_TAG = "mollify.objectives"
SELECT_ON_TEST_TAG = "mollify.select_on_test"
TRIAL_NUMBER_TAG = "mollify.trial_number"
STOPPED_EARLY_TAG = "mollify.stopped_early"
SEED_TAG = "mollify.seed"
PARENT_TAG = "mlflow.parentRunId"
LEGACY_SEARCH_SPACE_TAG = "mollify.search_space"  # studies recorded before `study/record.json`

# --- artifacts -----------------------------------------------------------------------------------
RECORD_ARTIFACT = "study/record.json"  # on the parent run
RECORD_KEYS = ("study", "preset", "search", "objectives", "search_space", "select_on_test", "label_keys")
RELIABILITY_DIR = "reliability"  # on trial runs: reliability/<set>.json
CELLS_ARTIFACT = "corrupt/cells.json"  # on trial runs: the corruption grid, one row per (corruption, severity)
ENDPOINTS_KEY = "endpoints"  # in RECORD_ARTIFACT, when the study declared endpoints (analysis/endpoints.py)
REPORT_DIR = "figures"  # where the report is attached to the parent run

# --- which knobs act ----------------------------------------------------------------------------
# A knob with no effect in a run (roles without mollification, npow without the noise role, ...)
# is not logged by new runs and is blanked in runs logged before that; the rules are the trial's
# own (trainables.config.ACTIVE_WHEN), in the record's form: clauses (key, op, value) that must
# all hold, op "is" (equal), "contains" (substring) or "above" (greater than).
MOLLIFYING = (("mollify", "is", True),)
ACTIVE_WHEN: dict[str, tuple[tuple[str, str, Any], ...]] = {
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


def clause_holds(clause: Sequence[Any] | Mapping[str, Any], values: Mapping[str, Any]) -> bool:
    """One clause, as a (key, op, value) tuple or the record's {"key", "op", "value"}; a key the
    values lack (itself without effect, so not logged) never satisfies it."""
    key, op, expected = (clause["key"], clause["op"], clause["value"]) if isinstance(clause, Mapping) else clause
    value = values.get(key)
    if is_missing(value):
        return False
    if op == "contains":
        return isinstance(value, str) and str(expected) in value
    if op == "above":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and value > expected
    if op == "is":
        return value == expected and isinstance(value, bool) == isinstance(expected, bool)
    raise ValueError(f"unknown condition op {op!r} in {clause}; valid: is, contains, above")


def rule_holds(rule: Sequence[Any] | None, values: Mapping[str, Any]) -> bool:
    """Whether a knob acted: every clause of its rule holds (no rule: it always acts)."""
    return all(clause_holds(c, values) for c in rule or ())
