"""A pytest plugin for benchmarks/gpu_check.py: keep only the tests that need a GPU, and refuse the
imports the GPU machine cannot satisfy.

A test needs a GPU when it carries the `gpu` marker, or (the older style) a `skipif` whose reason
names CUDA or a GPU. Either way it is selected, so the check does not depend on which style the
test files use today. With $GPU_CHECK_FORBID (comma-separated top-level modules, e.g.
ray,mlflow,optuna) those imports fail as they would on the GPU machine, and each attempt is
appended to the file $GPU_CHECK_FORBIDDEN_LOG.

    python -m pytest -p gpu_select tests/test_mollify.py     # with benchmarks/ on PYTHONPATH
"""

from __future__ import annotations

import importlib.abc
import os
import sys

import pytest

GPU_WORDS = ("cuda", "gpu")


class Forbid(importlib.abc.MetaPathFinder):
    """Fails the import of the named top-level modules, and logs each attempt."""

    def __init__(self, names: tuple[str, ...], log: str | None) -> None:
        self.names, self.log = names, log

    def find_spec(self, fullname: str, path=None, target=None):
        if fullname.split(".")[0] not in self.names:
            return None
        if self.log:
            with open(self.log, "a") as f:
                f.write(f"{fullname}\n")
        raise ImportError(f"{fullname} is not installed on the GPU machine (gpu_check refuses it)")


def install_forbid(names: str | None, log: str | None) -> None:
    wanted = tuple(n.strip() for n in (names or "").split(",") if n.strip())
    if wanted and not any(isinstance(f, Forbid) for f in sys.meta_path):
        sys.meta_path.insert(0, Forbid(wanted, log))


install_forbid(os.environ.get("GPU_CHECK_FORBID"), os.environ.get("GPU_CHECK_FORBIDDEN_LOG"))


def needs_gpu(item: pytest.Item) -> bool:
    if item.get_closest_marker("gpu") is not None:
        return True
    for mark in item.iter_markers("skipif"):
        reason = str(mark.kwargs.get("reason", "")).lower()
        if any(word in reason for word in GPU_WORDS):
            return True
    return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    keep = [item for item in items if needs_gpu(item)]
    dropped = [item for item in items if not needs_gpu(item)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    items[:] = keep
