"""The three command lines (`python -m study`, `python -m trainables`, `python -m analysis`) as a
user meets them: `--debug` wherever it is typed, and errors in one line that still say what to do."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import torchvision

from analysis import __main__ as analysis_cli
from contract import one_line
from study import __main__ as study_cli
from study.guards import StudyError, prepare_data
from study.spec import parse_spec
from trainables import __main__ as trainables_cli

# Every command of each command line, with the arguments it requires.
COMMANDS = {
    study_cli: [["launch", "smoke"], ["resume", "s"], ["status", "s"], ["list"], ["estimate", "smoke"],
                ["kuberay", "smoke", "--name", "s"], ["slurm", "smoke", "--nodes", "1"]],
    trainables_cli: [["run"], ["evaluate", "--run-id", "r"]],
    analysis_cli: [["figures", "--experiment", "e", "--out", "o"], ["paired", "--experiment", "e"]],
}
CASES = [(cli, command) for cli, commands in COMMANDS.items() for command in commands]
CLOSED_PORT_URL = "http://127.0.0.1:9/cifar-10-python.tar.gz"  # no network: the download fails at once


def choices(cli, capsys: pytest.CaptureFixture) -> set[str]:
    """The commands the parser knows, from argparse's own refusal of an unknown one."""
    with pytest.raises(SystemExit):
        cli.parse_args(["no-such-command"])
    return set(re.findall(r"'([a-z-]+)'", capsys.readouterr().err.split("choose from")[1]))


@pytest.mark.parametrize("cli", list(COMMANDS), ids=lambda cli: cli.__name__)
def test_every_command_is_covered(cli, capsys) -> None:
    assert choices(cli, capsys) == {command[0] for command in COMMANDS[cli]}


@pytest.mark.parametrize(("cli", "command"), CASES, ids=[f"{c.__name__.split('.')[0]}-{a[0]}" for c, a in CASES])
def test_debug_is_accepted_before_and_after_the_command(cli, command) -> None:
    """`python -m study launch smoke --debug` used to fail with 'unrecognized arguments'."""
    assert cli.parse_args(command).debug is False
    assert cli.parse_args(["--debug", *command]).debug is True
    assert cli.parse_args([*command, "--debug"]).debug is True
    assert cli.parse_args([command[0], "--debug", *command[1:]]).debug is True


def test_debug_after_the_command_shows_the_traceback(tmp_path) -> None:
    with pytest.raises(Exception, match="no CUDA device"):
        trainables_cli.main(["run", "--set", "device=cuda", "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}",
                             "--debug"])
    with pytest.raises(Exception, match="no preset or spec file"):
        study_cli.main(["--runs-dir", str(tmp_path / "runs"), "launch", "no-such-preset", "--debug"])


def test_a_study_without_cifar10_and_without_network_says_what_to_do_in_one_line(tmp_path, monkeypatch, capsys):
    """`make quickstart` offline used to end in 'error: CIFAR10 files not found: ...' alone: the
    archive's URL, the download's failure and `make quickstart-offline` were on lines it cut."""
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "url", CLOSED_PORT_URL)
    spec = parse_spec({"trial": {"dataset": "cifar10", "data_root": str(tmp_path / "data")},
                       "search": {"algorithm": "grid", "grid": [{"beta": [2]}]}}, name="offline")
    with pytest.raises(StudyError) as refused:
        prepare_data(spec)
    assert one_line(refused.value, 2, debug=False) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("error: CIFAR10 files not found in " + str((tmp_path / "data").resolve()))
    assert "the download failed (URLError" in line and CLOSED_PORT_URL in line
    assert "`make quickstart-offline`" in line


def test_a_trial_without_cifar10_and_without_network_says_what_to_do_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "url", CLOSED_PORT_URL)
    code = trainables_cli.main(["run", "--set", "dataset=cifar10", "--set", f"data_root={tmp_path / 'data'}",
                                "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"])
    assert code == 2
    [line] = capsys.readouterr().err.splitlines()
    assert "the download failed (URLError" in line and CLOSED_PORT_URL in line
    assert f"extract it into {(tmp_path / 'data').resolve()}" in line
    assert not (tmp_path / "m.db").exists()  # nothing was started


def test_a_spec_that_is_not_yaml_says_where_in_one_line(tmp_path, capsys) -> None:
    """The YAML parser's message spans lines; its position (line 2) used to be cut."""
    (tmp_path / "bad.yaml").write_text("trial:\n  epochs: [1\n")
    assert study_cli.main(["--runs-dir", str(tmp_path / "runs"), "launch", str(tmp_path / "bad.yaml")]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert "not valid YAML" in line and "line 3" in line


def test_no_error_raised_for_users_spans_lines() -> None:
    """A message's later lines never reach the user (`one_line` prints the first): every literal
    in a `raise` of the packages is one line."""
    root = Path(__file__).resolve().parents[1]
    found = []
    sources = [p for package in ("trainables", "study", "analysis", "contract") for p in (root / package).rglob("*.py")]
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Raise) and node.exc is not None:
                found += [f"{path.relative_to(root)}:{node.lineno}" for sub in ast.walk(node.exc)
                          if isinstance(sub, ast.Constant) and isinstance(sub.value, str) and "\n" in sub.value]
    assert found == []
