"""Pre-registered endpoints: what a study's comparison is for, declared before it runs.

    endpoints:
      primary: {metric: corrupt/gaussian_noise/error, arm: {mollify: true, roles: xn}, baseline: {mollify: false}}
      secondary:                               # the confirmatory family, adjusted together
        - {metrics: [corrupt/error, clean/error], arms: [{roles: xn}, {roles: xnb}]}   # baseline: the primary's
      adjust: holm                             # holm | bh | none: the secondary family's adjustment
      alpha: 0.05

An arm is a set of config values that picks exactly one configuration of the study's grid (the seed
aside); an endpoint compares it with a baseline arm by the per-seed paired difference of one metric.
The primary endpoint is the one test the study was run for and is read at `alpha` as it stands; the
secondary family is adjusted together (`adjust`); anything the analysis shows beyond the two is
exploratory and labelled so. The study's record stores the endpoints with the grid trials each arm
holds (`record.json`, key `endpoints`), so the analysis finds the arms by trial number, never by
reading config values again.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from trainables.config import ConfigError, TrialConfig, is_active

ADJUSTMENTS = ("holm", "bh", "none")
ENDPOINT_KEYS = ("primary", "secondary", "adjust", "alpha")
ITEM_KEYS = ("metric", "metrics", "arm", "arms", "baseline")


class EndpointError(ValueError):
    """An endpoint declaration that cannot be read against the study's grid."""


@dataclass(frozen=True)
class Endpoint:
    """One paired comparison: `metric` of the `arm` configuration minus that of `baseline`."""

    metric: str
    arm: dict[str, Any]
    baseline: dict[str, Any]

    def describe(self) -> dict[str, Any]:
        return {"metric": self.metric, "arm": dict(self.arm), "baseline": dict(self.baseline)}


@dataclass(frozen=True)
class Endpoints:
    primary: Endpoint
    secondary: tuple[Endpoint, ...] = ()
    adjust: str = "holm"
    alpha: float = 0.05

    def effective(self) -> dict[str, Any]:
        """The declaration in the spec's own schema, every item spelled out (parses back to this)."""
        return {"primary": self.primary.describe(), "secondary": [e.describe() for e in self.secondary],
                "adjust": self.adjust, "alpha": self.alpha}

    def record(self, points: list[dict[str, Any]], trial: Mapping[str, Any], seeds: tuple[int, ...]) -> dict[str, Any]:
        """As stored in the study's record: each endpoint with the grid trial numbers of its arm and
        its baseline (trial number = point index x seeds + seed index, the launch order)."""
        def trials(arm: Mapping[str, Any]) -> list[int]:
            index = match_point(arm, points, trial)
            return [index * len(seeds) + i for i in range(len(seeds))]

        def item(e: Endpoint) -> dict[str, Any]:
            return {**e.describe(), "arm_trials": trials(e.arm), "baseline_trials": trials(e.baseline)}

        return {"primary": item(self.primary), "secondary": [item(e) for e in self.secondary],
                "adjust": self.adjust, "alpha": self.alpha}


def parse_endpoints(raw: Any, points: list[dict[str, Any]], trial: Mapping[str, Any],
                    check_metric: Callable[[str, str], str]) -> Endpoints:
    """Validate `endpoints` against the grid's points (`expand_grid`) and fixed `trial` values;
    `check_metric(name, where)` rejects a metric no trial reports."""
    if not isinstance(raw, dict):
        raise EndpointError(f"endpoints must be a mapping with primary (and secondary, adjust, alpha), got {raw!r}")
    _known(raw, ENDPOINT_KEYS, "endpoints")
    if "primary" not in raw:
        raise EndpointError("endpoints needs a primary: {metric: ..., arm: {...}, baseline: {...}}")
    primary = _items(raw["primary"], "endpoints.primary", None, check_metric)
    if len(primary) != 1:
        raise EndpointError("endpoints.primary is one comparison: one metric, one arm, one baseline")
    secondary_raw = raw.get("secondary") or []
    if not isinstance(secondary_raw, list):
        secondary_raw = [secondary_raw]
    secondary: list[Endpoint] = []
    for i, item in enumerate(secondary_raw):
        for e in _items(item, f"endpoints.secondary[{i}]", primary[0].baseline, check_metric):
            if e == primary[0] or e in secondary:
                raise EndpointError(f"endpoints.secondary[{i}]: {e.metric} of {e.arm} is declared twice")
            secondary.append(e)
    adjust = raw.get("adjust", "holm")
    if adjust not in ADJUSTMENTS:
        raise EndpointError(f"unknown endpoints.adjust {adjust!r}; valid: {', '.join(ADJUSTMENTS)}")
    alpha = raw.get("alpha", 0.05)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise EndpointError(f"endpoints.alpha must be a number between 0 and 1, got {alpha!r}")
    out = Endpoints(primary[0], tuple(secondary), adjust, float(alpha))
    for e in (out.primary, *out.secondary):
        for where, arm in (("arm", e.arm), ("baseline", e.baseline)):
            match_point(arm, points, trial, f"endpoint {e.metric} {where} {arm}")
        if match_point(e.arm, points, trial) == match_point(e.baseline, points, trial):
            raise EndpointError(f"endpoint {e.metric}: arm {e.arm} and baseline {e.baseline} are the same configuration")
    return out


def match_point(arm: Mapping[str, Any], points: list[dict[str, Any]], trial: Mapping[str, Any],
                where: str = "arm") -> int:
    """The index of the one grid point whose config has every value of `arm`, each acting in it."""
    matches = [i for i, point in enumerate(points) if _holds(arm, {**trial, **point})]
    if len(matches) == 1:
        return matches[0]
    shown = "; ".join(str(p or "{} (the fixed trial)") for p in points)
    if not matches:
        raise EndpointError(f"{where} matches no configuration of the grid; its configurations: {shown}")
    raise EndpointError(f"{where} matches {len(matches)} configurations ({'; '.join(str(points[i]) for i in matches)}): "
                        "add the key that tells them apart")


def _holds(arm: Mapping[str, Any], values: Mapping[str, Any]) -> bool:
    try:
        config = TrialConfig.from_dict(values).to_dict()
        wanted = TrialConfig.from_dict({**values, **arm}).to_dict()  # coerced as the config reads them
    except ConfigError:
        return False
    # A knob that has no effect in a configuration does not describe it (roles without mollification).
    return all(is_active(k, config) and config[k] == wanted[k] for k in arm)


def _items(raw: Any, where: str, default_baseline: dict[str, Any] | None,
           check_metric: Callable[[str, str], str]) -> list[Endpoint]:
    """One declaration item, crossed out: metric(s) x arm(s), against its baseline."""
    if not isinstance(raw, dict):
        raise EndpointError(f"{where} must be a mapping of metric(s), arm(s) and baseline, got {raw!r}")
    _known(raw, ITEM_KEYS, where)
    metrics = _one_or_many(raw, "metric", "metrics", where)
    arms = _one_or_many(raw, "arm", "arms", where)
    baseline = raw.get("baseline", default_baseline)
    if baseline is None:
        raise EndpointError(f"{where} needs a baseline: the config values of the arm it is compared with")
    for arm in (*arms, baseline):
        _arm(arm, where)
    return [Endpoint(check_metric(str(m), f"{where}.metric"), dict(a), dict(baseline))
            for m, a in itertools.product(metrics, arms)]


def _one_or_many(raw: Mapping[str, Any], one: str, many: str, where: str) -> list[Any]:
    if (one in raw) == (many in raw):
        raise EndpointError(f"{where} needs exactly one of {one!r} or {many!r}")
    values = [raw[one]] if one in raw else raw[many]
    if not isinstance(values, list) or not values:
        raise EndpointError(f"{where}.{many} must be a non-empty list")
    return values


def _arm(arm: Any, where: str) -> None:
    if not isinstance(arm, dict) or not arm:
        raise EndpointError(f"{where}: an arm is a mapping of config values, e.g. {{mollify: true, roles: xn}}; got {arm!r}")
    unknown = sorted(set(arm) - set(TrialConfig().to_dict()))
    if unknown:
        raise EndpointError(f"{where}: unknown config key(s) {unknown} in an arm")


def _known(mapping: Mapping, valid: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(mapping) - set(valid))
    if unknown:
        raise EndpointError(f"unknown key(s) {unknown} in {where}; valid: {', '.join(valid)}")
