"""benchmarks/gpu_check.py: the dry run on the CPU writes the whole report, with Ray, MLflow and
Optuna refused (as on the GPU machine, which lacks them), and selects the GPU tests of either style."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ("environment", "gpu_tests", "presets", "throughput", "corruptions", "ipmix", "imagenet")

# Runs the script with the three modules blocked by a hook of the test's own (not the script's),
# logging every attempt, so that an import swallowed by a try/except still shows.
BLOCKED_RUN = """
import importlib.abc, runpy, sys
log, args = sys.argv[1], sys.argv[2:]
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('ray', 'mlflow', 'optuna'):
            open(log, 'a').write(name + '\\n')
            raise ImportError(name + ' is blocked by the test')
sys.meta_path.insert(0, Block())
sys.argv = ['benchmarks/gpu_check.py', *args]
runpy.run_path('benchmarks/gpu_check.py', run_name='__main__')
"""


@pytest.mark.slow
def test_the_dry_run_writes_the_whole_report_without_ray_mlflow_or_optuna(tmp_path):
    log, out = tmp_path / "attempts.log", tmp_path / "report"
    log.write_text("")
    done = subprocess.run([sys.executable, "-c", BLOCKED_RUN, str(log), "--device", "cpu", "--quick", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert log.read_text() == ""  # nothing even tried
    report = json.loads((out / "gpu-check.json").read_text())
    assert report["forbidden_imported"] == [] and report["forbidden_attempts"] == []
    assert tuple(report["sections"]) == SECTIONS
    for name, section in report["sections"].items():
        assert section["status"] in ("ok", "skipped"), (name, section)
    tests = report["sections"]["gpu_tests"]["result"]
    assert tests["total"] > 0 and tests["counts"]["skipped"] == tests["total"]  # no CUDA here: each skipped
    assert tests["counts"]["error"] == 0 and all("cuda" in t["message"].lower() or "gpu" in t["message"].lower()
                                                  for t in tests["tests"])
    throughput = report["sections"]["throughput"]["result"]
    assert [r["compile"] for r in throughput] == ["no", "no", "no", "eager"]
    assert all(r["ours_img_s"] > 0 and r["conventional_img_s"] > 0 and 0 < r["mollify_share"] for r in throughput)
    assert report["sections"]["corruptions"]["result"]["cells"] == 75
    presets = report["sections"]["presets"]["result"]["rows"]
    covered = {p for r in presets for p in r["presets"]}
    assert {"paper-baselines", "paper-amount", "paper-schedule", "paper-type"} <= covered
    assert any(r["jsd"] for r in presets) and all(r["finite"] and r["ok"] for r in presets)
    text = (out / "gpu-check.md").read_text()
    for heading in ("## GPU tests", "## Training throughput", "## Corruption grid", "## IPMix and JSD",
                    "## Paper presets"):
        assert heading in text


def test_make_gpu_check_runs_the_script_without_the_virtualenv():
    makefile = (REPO / "Makefile").read_text()
    target = makefile.split("\ngpu-check:", 1)[1].split("\n\n", 1)[0]
    assert "benchmarks/gpu_check.py" in target and "$(STAMP)" not in target.splitlines()[0]


def test_gpu_tests_are_selected_by_marker_or_by_a_skip_reason(tmp_path):
    (tmp_path / "test_mixed.py").write_text(
        "import pytest\n"
        "@pytest.mark.gpu\ndef test_marked(): pass\n"
        "@pytest.mark.skipif(False, reason='needs a CUDA GPU')\ndef test_old_style(): pass\n"
        "@pytest.mark.skipif(False, reason='slow disk')\ndef test_other_skip(): pass\n"
        "def test_plain(): pass\n")
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "gpu_select", "-o", "addopts=", "-p", "no:cacheprovider",
                           "-q", "-W", "ignore::pytest.PytestUnknownMarkWarning", str(tmp_path / "test_mixed.py")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(REPO / "benchmarks"), "PATH": "/usr/bin:/bin"})
    assert "2 passed, 2 deselected" in done.stdout, done.stdout + done.stderr
