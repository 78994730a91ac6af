"""`python -m study estimate PRESET|SPEC.yaml [--set KEY=VALUE ...] [--gpus N] [--cpus N] [--json]`:
what a study would cost, before it runs (study/estimate.py). --gpus and --cpus are the machine or
cluster the study would run on (default: this machine); per-trial resources come from the spec
(or --gpus-per-trial / --cpus-per-trial, as for `launch`)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable

from study.calibrate import Settings
from study.estimate import estimate, local_resources, render
from study.placement import PlacementError, Resources
from study.spec import StudySpec, preset_names


def add_parser(commands: Any) -> None:
    p = commands.add_parser("estimate", help="what a study will cost: device hours and wall time, before it runs",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("preset", help=f"a preset ({', '.join(preset_names())}) or a spec file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="fix a trial config key for every trial; repeatable")
    p.add_argument("--gpus", type=int, help="GPUs the study would run on (default: this machine's)")
    p.add_argument("--cpus", type=float, help="CPUs the study would run on (default: this machine's)")
    p.add_argument("--gpus-per-trial", type=float)
    p.add_argument("--cpus-per-trial", type=float)
    p.add_argument("--max-concurrent", type=int)
    p.add_argument("--num-samples", type=int, help="Optuna searches: number of trials")
    p.add_argument("--name", help="study name (default: the spec's)")
    p.add_argument("--steps", type=int, default=Settings.steps, help="timed training steps per repeat")
    p.add_argument("--repeats", type=int, default=Settings.repeats, help="timed repeats (their spread: the range)")
    p.add_argument("--recalibrate", action="store_true", help="measure again instead of reading the cache")
    p.add_argument("--json", action="store_true", help="print the estimate as JSON")


def run(args: argparse.Namespace, spec_from_args: Callable[[argparse.Namespace], StudySpec]) -> int:
    spec = spec_from_args(args)
    here = local_resources()
    resources = Resources(cpus=args.cpus if args.cpus is not None else here.cpus,
                          gpus=args.gpus if args.gpus is not None else here.gpus)
    settings = Settings(steps=max(args.steps, 1), repeats=max(args.repeats, 1))
    progress = (lambda line: print(line, file=sys.stderr, flush=True)) if args.json else print
    try:
        est = estimate(spec, resources, settings=settings, use_cache=not args.recalibrate, progress=progress)
    except PlacementError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(est.to_json(), indent=2))
    else:
        print("\n".join(render(est)))
    return 0


def child(argv: list[str] | None = None) -> int:
    """`launch`'s estimate, in a process of its own so that the driver never holds the calibration's
    device memory or threads: python -m study.estimate_cli SPEC.yaml --name N --preset P --cpus C --gpus G.
    Prints the estimate as JSON; imports neither Ray nor MLflow (quicker to start)."""
    from study.spec import load_spec

    p = argparse.ArgumentParser(prog="python -m study.estimate_cli")
    p.add_argument("spec")
    p.add_argument("--name", required=True)
    p.add_argument("--preset", default="custom")
    p.add_argument("--cpus", type=float, required=True)
    p.add_argument("--gpus", type=int, required=True)
    args = p.parse_args(argv)
    spec = load_spec(args.spec, name=args.name)
    progress = lambda line: print(line, file=sys.stderr, flush=True)
    est = estimate(spec, Resources(cpus=args.cpus, gpus=args.gpus), progress=progress)
    est.preset = args.preset
    print(json.dumps(est.to_json()))
    return 0


if __name__ == "__main__":
    sys.exit(child())
