"""Pre-registered endpoints in a study spec (issue 19, study/endpoints.py): declared before the study
runs, checked against its grid, and stored in its record with the trials each arm holds."""

from __future__ import annotations

import copy

import pytest

from study.record import record_data
from study.spec import SpecError, load_spec, parse_spec
from trainables.config import TrialConfig

GRID = {
    "trial": {"dataset": "synthetic", "epochs": 1},
    "search": {"algorithm": "grid", "grid": [{"mollify": [False]}, {"mollify": [True], "roles": ["xn", "xnb"]},
                                             {"mollify": [True], "roles": ["xnb"], "smooth_labels": [False]}]},
    "seeds": [0, 1, 2],
}
PRIMARY = {"metric": "corrupt/gaussian_noise/error", "arm": {"mollify": True, "roles": "xn"},
           "baseline": {"mollify": False}}


def spec_with(endpoints, **changes):
    raw = copy.deepcopy(GRID) | changes
    raw["endpoints"] = endpoints
    return parse_spec(raw)


def test_record_holds_each_arm_with_its_trials():
    spec = spec_with({"primary": PRIMARY, "secondary": [
        {"metrics": ["corrupt/error", "clean/error"], "arms": [{"roles": "xn"}, {"roles": "xnb", "smooth_labels": True}]},
        {"metric": "corrupt/ece", "arm": {"smooth_labels": False}, "baseline": {"roles": "xnb", "smooth_labels": True}},
    ]})
    data = record_data(spec)["endpoints"]
    assert (data["adjust"], data["alpha"]) == ("holm", 0.05)
    assert len(data["secondary"]) == 5  # 2 metrics x 2 arms, and one more
    configs = spec.trial_configs()
    for item in (data["primary"], *data["secondary"]):
        for side, trials in (("arm", item["arm_trials"]), ("baseline", item["baseline_trials"])):
            assert sorted(configs[t]["seed"] for t in trials) == [0, 1, 2]
            for t in trials:
                cfg = TrialConfig.from_dict(configs[t]).to_dict()
                assert all(cfg[k] == v for k, v in item[side].items()), (item, side, t)
    assert data["primary"]["arm_trials"] == [3, 4, 5] and data["primary"]["baseline_trials"] == [0, 1, 2]


def test_effective_spec_parses_back_to_the_same_endpoints():
    spec = spec_with({"primary": PRIMARY, "secondary": [{"metric": "corrupt/error", "arm": {"roles": "xnb",
                                                                                          "smooth_labels": True}}],
                      "adjust": "bh", "alpha": 0.1})
    again = parse_spec(spec.effective())
    assert again.endpoints == spec.endpoints and again.effective() == spec.effective()


@pytest.mark.parametrize("endpoints, message", [
    ({"secondary": []}, "endpoints needs a primary"),
    ({"primary": PRIMARY, "family": []}, r"unknown key\(s\) \['family'\] in endpoints; valid: primary"),
    ({"primary": {**PRIMARY, "metric": "corrupt/gaussian/error"}}, "unknown metric 'corrupt/gaussian/error'"),
    ({"primary": {**PRIMARY, "arm": {"roles": "xnb"}}}, "matches 2 configurations"),
    ({"primary": {**PRIMARY, "arm": {"roles": "xb"}}}, "matches no configuration of the grid"),
    ({"primary": {**PRIMARY, "arm": {"mollify": False}}}, "are the same configuration"),
    ({"primary": {**PRIMARY, "arm": {"rolez": "xn"}}}, r"unknown config key\(s\) \['rolez'\] in an arm"),
    ({"primary": {"metric": "clean/error", "arms": [{"roles": "xn"}, {"roles": "xnb", "smooth_labels": False}],
                  "baseline": {"mollify": False}}}, "endpoints.primary is one comparison"),
    ({"primary": PRIMARY, "secondary": [PRIMARY]}, "is declared twice"),
    ({"primary": PRIMARY, "adjust": "bonferroni"}, "unknown endpoints.adjust 'bonferroni'; valid: holm, bh, none"),
    ({"primary": PRIMARY, "alpha": 5}, "endpoints.alpha must be a number between 0 and 1"),
    ({"primary": {"metric": "clean/error", "arm": {"roles": "xn"}}}, "needs a baseline"),
])
def test_endpoint_mistakes_are_one_line(endpoints, message):
    with pytest.raises(SpecError, match=message) as err:
        spec_with(endpoints)
    assert "\n" not in str(err.value)


def test_an_optuna_search_has_no_arms_to_declare():
    raw = {"trial": {"dataset": "synthetic", "valid_per_class": 5}, "search": {"algorithm": "tpe", "space": {"beta": [2, 4]}},
           "endpoints": {"primary": PRIMARY}}
    with pytest.raises(SpecError, match="endpoints compare configurations fixed in advance: they need search.algorithm grid"):
        parse_spec(raw)


def test_a_knob_without_effect_does_not_pick_an_arm():
    """roles has no effect without mollification: {roles: xnb} must not match the baseline."""
    spec = spec_with({"primary": {**PRIMARY, "arm": {"roles": "xnb", "smooth_labels": True}}})
    assert record_data(spec)["endpoints"]["primary"]["arm_trials"] == [6, 7, 8]


@pytest.mark.parametrize("name", ["evidence-cpu", "evidence-cpu-32", "evidence-gpu", "evidence-gpu-reduced"])
def test_evidence_presets_declare_the_same_family(name):
    first = load_spec("evidence-cpu-32").endpoints
    endpoints = load_spec(name).endpoints
    assert endpoints == first and len(endpoints.secondary) == 9 and endpoints.adjust == "holm"
