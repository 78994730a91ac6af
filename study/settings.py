"""The launch command line's settings as arguments again, for a driver that runs elsewhere: the
job script of `study slurm` and the RayJob entrypoint of `study kuberay` pass them through to
`python -m study launch` unchanged."""

from __future__ import annotations

import argparse

PASSED_THROUGH = ("num_samples", "gpus_per_trial", "cpus_per_trial", "max_concurrent")


def passed_through(args: argparse.Namespace) -> list[str]:
    """`--num-samples 8 --set epochs=3 ...`: the settings given, in launch's spelling."""
    out: list[str] = []
    for key in PASSED_THROUGH:
        value = getattr(args, key)
        if value is not None:
            out += [f"--{key.replace('_', '-')}", str(value)]
    for override in args.overrides:
        out += ["--set", override]
    return out
