"""Fresh-clone install time of `make test`'s setup (`make install`: a new virtualenv and every
dependency) at two commits side by side, e.g. before and after a dependency is added. Each round
clones both commits afresh and installs them one after the other, alternating which goes first;
pip's cache is off (PIP_NO_CACHE_DIR), so every wheel is fetched as on a fresh CI machine.

    python benchmarks/install_time.py --before caa3e2d --after HEAD [--rounds 2]

Prints each install's seconds, the medians and their ratio, and writes them as JSON to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def install_seconds(commit: str, work: Path) -> float:
    clone = work / f"clone-{commit[:10]}"
    subprocess.run(["git", "clone", "--quiet", "--no-checkout", str(REPO), str(clone)], check=True)
    subprocess.run(["git", "-C", str(clone), "checkout", "--quiet", commit], check=True)
    env = {**os.environ, "PIP_NO_CACHE_DIR": "1"}
    start = time.perf_counter()
    subprocess.run(["make", "-C", str(clone), "install"], check=True, env=env, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    subprocess.run(["rm", "-rf", str(clone)], check=True)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True)
    parser.add_argument("--after", default="HEAD")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("install-time.json"))
    args = parser.parse_args()
    resolve = lambda ref: subprocess.run(["git", "-C", str(REPO), "rev-parse", ref], check=True,  # noqa: E731
                                         capture_output=True, text=True).stdout.strip()
    commits = {"before": resolve(args.before), "after": resolve(args.after)}
    times: dict[str, list[float]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory(prefix="mollify-install-") as tmp:
        for round_ in range(args.rounds):
            order = ("before", "after") if round_ % 2 == 0 else ("after", "before")
            for which in order:
                seconds = install_seconds(commits[which], Path(tmp))
                times[which].append(seconds)
                print(f"round {round_ + 1}: {which} ({commits[which][:10]}) {seconds:.0f} s", flush=True)
    medians = {k: statistics.median(v) for k, v in times.items()}
    result = {"commits": commits, "seconds": times, "median_s": medians, "ratio": medians["after"] / medians["before"]}
    args.out.write_text(json.dumps(result, indent=2))
    print(f"median: before {medians['before']:.0f} s, after {medians['after']:.0f} s "
          f"(x{result['ratio']:.2f}); the target is under 300 s")


if __name__ == "__main__":
    main()
