"""Shared command-line behaviour: bad input ends in one line on stderr and a non-zero exit.

Every ``python -m ...`` entry point calls ``sys.exit(run_cli(main))``. Errors that describe bad
input (``ValueError`` and its subclasses such as AudioError, BundleError, RasterError, and
``OSError`` for missing or unreadable files) are printed as ``error: <message>`` and exit with
status 2; set ``GEOAUDIO_DEBUG=1`` to see the traceback instead.
"""
from __future__ import annotations

import os
import sys
from typing import Callable, NoReturn

EXIT_BAD_INPUT = 2


class CLIError(ValueError):
    """Raised by :func:`fail`: a one-line message for the user."""


def fail(message: str) -> NoReturn:
    """Stop with a one-line error message (exit status 2 through :func:`run_cli`)."""
    raise CLIError(message)


def _one_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def run_cli(main: Callable[[], int | None]) -> int:
    """Run ``main`` and turn bad-input exceptions into ``error: ...`` and exit status 2."""
    try:
        return int(main() or 0)
    except (ValueError, OSError) as e:
        if os.environ.get("GEOAUDIO_DEBUG"):
            raise
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
