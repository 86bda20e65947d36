"""Shared command-line behaviour: bad input ends in one line on stderr and a non-zero exit.

Every ``python -m ...`` entry point calls ``sys.exit(run_cli(main))``. Errors that describe bad
input (:class:`~model.core.errors.GeoaudioError` and its subclasses such as AudioError,
BundleError, RasterError, and ``OSError`` for missing or unreadable files) are printed as
``error: <first line>`` and exit with status 2; set ``GEOAUDIO_DEBUG=1`` to see the traceback
instead. Anything else (``TypeError``, a plain ``ValueError`` from a library ...) is a bug and
propagates with its traceback.
"""
from __future__ import annotations

import os
import sys
from typing import Callable, NoReturn

from model.core.errors import GeoaudioError, one_line

EXIT_BAD_INPUT = 2


class CLIError(GeoaudioError, ValueError):
    """Raised by :func:`fail`: a one-line message for the user."""


def fail(message: str) -> NoReturn:
    """Stop with a one-line error message (exit status 2 through :func:`run_cli`)."""
    raise CLIError(message)


def run_cli(main: Callable[[], int | None]) -> int:
    """Run ``main``; bad input (``GeoaudioError``, ``OSError``) becomes ``error: ...`` and exit status 2.

    Returns ``main``'s exit status (0 for None), 2 for bad input, 130 on Ctrl-C. Every other
    exception is a bug and propagates unchanged.
    """
    try:
        return int(main() or 0)
    except (GeoaudioError, OSError) as e:
        if os.environ.get("GEOAUDIO_DEBUG"):
            raise
        print(f"error: {one_line(e)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def run_module(module: str, argv: list[str]) -> None:
    """Run ``python -m module *argv`` in this process through the module's ``main(argv)`` (torch and
    friends are imported once for a whole sequence of commands); a non-zero status is :func:`fail`."""
    import importlib
    import importlib.util

    spec = importlib.util.find_spec(module)
    if spec is None:
        fail(f"no module {module}")
    entry = f"{module}.__main__" if spec.submodule_search_locations else module
    status = importlib.import_module(entry).main(argv)
    if status:
        fail(f"python -m {module} {' '.join(argv)} exited with status {status}")
