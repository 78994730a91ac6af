"""What the command lines share: an error a user can cause, said in one line."""

from __future__ import annotations

import sys


def one_line(err: BaseException, code: int, debug: bool, unexpected: bool = False) -> int:
    """Print `err` as one line on stderr and return the exit code; with `debug`, raise it instead
    (its traceback). `unexpected` errors are named by their type, since their message may not
    say what went wrong by itself."""
    if debug:
        raise err
    kind = f"{type(err).__name__}: " if unexpected else ""
    text = str(err).strip()
    first = text.splitlines()[0] if text else ""
    print(f"error: {kind}{first} (--debug shows the traceback)", file=sys.stderr)
    return code
