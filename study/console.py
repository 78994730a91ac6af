"""The study's console: its own lines on the terminal, everything Ray, Optuna and MLflow print (and
what the trials print, which Ray forwards to the driver) in the study's log file.

Ray's driver prints a setup table, a TensorBoard hint and, forwarded from every trial, a
"Checkpoint successfully created" line per epoch; Optuna and MLflow log their own INFO lines. None
of it is the study's progress, and it buries the lines that are. `quiet_console` sends it all to
`<runs dir>/<name>/study.log` (`--verbose` leaves it on the terminal); `say` writes the study's own
lines to the terminal either way. `say` is a module-level function so that the Tune callbacks that
call it stay picklable (Ray saves them with the study's state).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Iterator, TextIO

LIBRARY_LOGGERS = ("ray", "optuna", "mlflow", "alembic", "urllib3", "filelock")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_terminal: TextIO | None = None  # the terminal while quiet_console redirects stdout


def say(line: str) -> None:
    """One of the study's own lines, on the terminal."""
    print(line, file=_terminal or sys.stdout, flush=True)


@contextlib.contextmanager
def quiet_console(log_path: Path, verbose: bool = False) -> Iterator[None]:
    """Inside the block, library loggers and anything written to the process's stdout and stderr
    go to `log_path` (appended), except what `say` writes; with `verbose`, nothing changes. The
    redirect is of the file descriptors, not only of Python's streams: Ray's core (C++) and the
    processes it starts write to them directly."""
    global _terminal
    if verbose:
        yield
        return
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", buffering=1) as log:
        handler = logging.StreamHandler(log)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        saved = {}
        for name in LIBRARY_LOGGERS:
            logger = logging.getLogger(name)
            saved[name] = (logger.handlers[:], logger.propagate)
            logger.handlers, logger.propagate = [handler], False
        sys.stdout.flush()
        sys.stderr.flush()
        fds = os.dup(1), os.dup(2)
        _terminal = os.fdopen(os.dup(fds[0]), "w", buffering=1)
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(fds[0], 1)
            os.dup2(fds[1], 2)
            for fd in fds:
                os.close(fd)
            _terminal.close()
            _terminal = None
            for name, (handlers, propagate) in saved.items():
                logger = logging.getLogger(name)
                logger.handlers, logger.propagate = handlers, propagate
