"""One error root: every project exception derives from GeoaudioError and a built-in; run_cli
turns exactly those (and OSError) into one line and exit 2, and lets bugs show their traceback."""
from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

from model.core.cli import EXIT_BAD_INPUT, fail, run_cli
from model.core.errors import GeoaudioError, one_line

PACKAGES = ("model", "export", "geo", "app")
SKIP = {"app.main"}  # runs the Streamlit script on import
OPTIONAL = {"tensorrt", "torch_tensorrt", "streamlit"}  # extras a module may need at import time
BUILTIN_BASES = (ValueError, OSError)


def _project_modules() -> list:
    """Every importable module of the project, without ``__main__`` modules (they run on import)."""
    modules = []
    for package in PACKAGES:
        root = importlib.import_module(package)
        modules.append(root)
        for info in pkgutil.walk_packages(root.__path__, f"{package}."):
            if info.name in SKIP or info.name.rsplit(".", 1)[-1] == "__main__":
                continue
            try:
                modules.append(importlib.import_module(info.name))
            except ModuleNotFoundError as e:
                if e.name is None or e.name.split(".")[0] not in OPTIONAL:
                    raise
    return modules


@pytest.fixture(scope="module")
def project_errors() -> dict[str, type[BaseException]]:
    """Every exception class *defined* in the project, by its qualified name."""
    found = {}
    for module in _project_modules():
        for obj in vars(module).values():
            if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == module.__name__:
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return found


def test_the_known_errors_are_all_found(project_errors):
    names = {name.rsplit(".", 1)[-1] for name in project_errors}
    assert {"CLIError", "BundleError", "AudioError", "RasterError", "QueryError", "BackendError", "DatasetError",
            "SynthError", "MapError", "DemoError", "GeoaudioError"} <= names
    assert len(project_errors) >= 28


def test_every_project_error_derives_from_the_root_and_a_builtin(project_errors):
    for name, cls in project_errors.items():
        if cls is GeoaudioError:
            continue
        assert issubclass(cls, GeoaudioError), f"{name} does not derive from GeoaudioError"
        assert issubclass(cls, BUILTIN_BASES), f"{name} derives from neither ValueError nor OSError"


@pytest.mark.parametrize("error, line", [
    (ValueError("first\nsecond"), "first"),
    (ValueError("\n  \n  padded line  \nnext"), "padded line"),
    (OSError(2, "No such file or directory"), "[Errno 2] No such file or directory"),
    (KeyError(""), "''"),
    (RuntimeError(), "RuntimeError"),
    (ValueError("   \n\t"), "ValueError"),
])
def test_one_line_is_the_first_non_empty_line_or_the_class_name(error, line):
    assert one_line(error) == line


def _raises(error: BaseException):
    def main():
        raise error
    return main


@pytest.mark.parametrize("error", [
    GeoaudioError("bad input: x.tif\nmore detail"),
    FileNotFoundError(2, "No such file or directory"),
])
def test_bad_input_is_one_line_and_exit_2(error, capsys, monkeypatch):
    monkeypatch.delenv("GEOAUDIO_DEBUG", raising=False)
    assert run_cli(_raises(error)) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err == f"error: {one_line(error)}\n"


def test_fail_is_one_line_and_exit_2(capsys, monkeypatch):
    monkeypatch.delenv("GEOAUDIO_DEBUG", raising=False)
    assert run_cli(lambda: fail("--stride 0 must be positive")) == EXIT_BAD_INPUT
    assert capsys.readouterr().err == "error: --stride 0 must be positive\n"


@pytest.mark.parametrize("bug", [TypeError("unsupported operand"), ValueError("a plain library ValueError")])
def test_bugs_propagate_with_their_traceback(bug, capsys):
    with pytest.raises(type(bug)) as raised:
        run_cli(_raises(bug))
    assert raised.value is bug
    assert capsys.readouterr().err == ""


def test_debug_shows_the_traceback_of_bad_input(monkeypatch):
    monkeypatch.setenv("GEOAUDIO_DEBUG", "1")
    with pytest.raises(GeoaudioError):
        run_cli(_raises(GeoaudioError("bad")))


def test_exit_status_of_main_is_passed_through():
    assert run_cli(lambda: None) == 0
    assert run_cli(lambda: 3) == 3
