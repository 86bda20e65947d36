"""The root of every project error, and the one-line message of any exception.

Every exception the project defines derives from :class:`GeoaudioError` *and* from the built-in it
stands for, the pattern of ``rasterio.errors.RasterioIOError(RasterioError, OSError)``::

    class BundleError(GeoaudioError, ValueError): ...

so ``except GeoaudioError`` catches every bad-input error of the project (and nothing else), while
callers that still write ``except ValueError`` keep working. Command-line wrappers
(:func:`model.core.cli.run_cli`) and the app catch ``GeoaudioError`` and ``OSError`` only: a bug in
the code (``TypeError``, a plain ``ValueError`` from a library ...) shows its traceback instead of
passing for bad input.
"""
from __future__ import annotations


class GeoaudioError(Exception):
    """Bad input the user can fix; the message is one line that names the file or option and the problem.

    Not raised on its own: each module raises its own subclass, which also derives from a built-in
    (``ValueError`` for bad content or options, ``OSError`` for files).
    """


def one_line(error: BaseException) -> str:
    """The first non-empty line of ``str(error)``, stripped; the class name when the message is empty."""
    for line in str(error).splitlines():
        if line.strip():
            return line.strip()
    return type(error).__name__
