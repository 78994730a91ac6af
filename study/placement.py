"""Where and when Ray would run a study's trials: a small simulation of its placement, for
`study estimate` (study/estimate.py). No Ray here: the same rules, on known durations.

The rules simulated (Ray Tune 2.60 with its default resource manager, one node):
- trials start in launch order, each as soon as its resources are free and fewer than
  `max_concurrent` run (0: no limit); a trial that does not fit holds back those after it;
- a trial takes `cpus` of the node's CPUs and `gpus` of its GPUs: a whole number of whole GPUs, or
  a fraction of one GPU, packed first-fit onto the GPUs (as Ray does with fractional GPUs);
- a trial alone on its device advances by one second of its `work` per second; trials sharing a
  GPU (fractional `gpus`) either each advance as if alone (`sharing="free"`: the GPU had room for
  them all) or split it evenly (`sharing="sliced"`: one trial already kept it busy). The truth lies
  between the two; the estimate reports both ends.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

SHARING = ("free", "sliced")
EPS = 1e-9


class PlacementError(ValueError):
    """A trial asks for more than the resources hold: Ray would never start it."""


@dataclass(frozen=True)
class Demand:
    """What one trial asks Ray for."""

    cpus: float
    gpus: float = 0.0


@dataclass(frozen=True)
class Resources:
    """One node: its CPUs and its (whole) GPUs."""

    cpus: float
    gpus: int = 0


@dataclass(frozen=True)
class Schedule:
    """When each trial (launch order) starts and ends, in seconds from the first start."""

    start: tuple[float, ...]
    end: tuple[float, ...]

    @property
    def wall(self) -> float:
        return max(self.end, default=0.0)


def check_fits(demand: Demand, resources: Resources) -> None:
    if demand.cpus > resources.cpus + EPS:
        raise PlacementError(f"a trial asks for {demand.cpus:g} CPUs; the resources hold {resources.cpus:g} "
                             "(estimate: give the cluster's with --cpus and --gpus)")
    if demand.gpus > EPS and (demand.gpus > 1 and not float(demand.gpus).is_integer()):
        raise PlacementError(f"a trial asks for {demand.gpus:g} GPUs: more than one GPU must be a whole number")
    if math.ceil(demand.gpus - EPS) > resources.gpus:
        raise PlacementError(f"a trial asks for {demand.gpus:g} GPUs; the resources hold {resources.gpus} "
                             "(estimate: give the cluster's with --cpus and --gpus)")


def _place(demand: Demand, free_cpus: float, free_gpus: list[float]) -> list[int] | None:
    """The GPUs a trial would take now ([] for none), or None when it does not fit yet."""
    if demand.cpus > free_cpus + EPS:
        return None
    if demand.gpus <= EPS:
        return []
    if demand.gpus < 1:
        return next(([i] for i, f in enumerate(free_gpus) if f + EPS >= demand.gpus), None)
    whole = [i for i, f in enumerate(free_gpus) if f > 1 - EPS][: int(demand.gpus)]
    return whole if len(whole) == int(demand.gpus) else None


def simulate(work: Sequence[float], demand: Demand, resources: Resources, *, max_concurrent: int = 0,
             sharing: str = "sliced") -> Schedule:
    """The schedule of trials of `work[i]` seconds each (alone on their device), launch order."""
    if sharing not in SHARING:
        raise ValueError(f"unknown sharing {sharing!r}; valid: {', '.join(SHARING)}")
    check_fits(demand, resources)
    n = len(work)
    start, end = [0.0] * n, [0.0] * n
    left = [float(w) for w in work]
    free_cpus, free_gpus = float(resources.cpus), [1.0] * resources.gpus
    running: dict[int, list[int]] = {}  # trial -> the GPUs it holds
    waiting, now = 0, 0.0  # the next trial to start, in launch order
    while waiting < n or running:
        while waiting < n and (not max_concurrent or len(running) < max_concurrent):
            gpus = _place(demand, free_cpus, free_gpus)
            if gpus is None:
                break
            free_cpus -= demand.cpus
            for g in gpus:
                free_gpus[g] -= min(demand.gpus, 1.0)
            running[waiting], start[waiting] = gpus, now
            waiting += 1
        rates = _rates(running, demand, sharing)
        step = min(left[i] / rates[i] for i in running)
        now += step
        for i in list(running):
            left[i] -= rates[i] * step
            if left[i] <= EPS * max(1.0, work[i]):
                end[i] = now
                free_cpus += demand.cpus
                for g in running.pop(i):
                    free_gpus[g] += min(demand.gpus, 1.0)
    return Schedule(tuple(start), tuple(end))


def _rates(running: dict[int, list[int]], demand: Demand, sharing: str) -> dict[int, float]:
    """Seconds of work each running trial does per second: 1, or 1/k for k trials slicing one GPU."""
    if sharing == "free" or not 0 < demand.gpus < 1:
        return {i: 1.0 for i in running}
    on_gpu: dict[int, int] = {}
    for gpus in running.values():
        on_gpu[gpus[0]] = on_gpu.get(gpus[0], 0) + 1
    return {i: 1.0 / on_gpu[gpus[0]] for i, gpus in running.items()}
