"""The ``geoaudio`` console script: one command per ``python -m`` entry point, same exit status and errors.

The script is the one ``pip install -e .`` put beside the interpreter (reinstall after editing
``[project.scripts]``: ``.venv/bin/pip install -q -e '.[dev]' --no-deps``).
"""
from __future__ import annotations

import ast
import csv
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from app.cli import COMMANDS, main


def geoaudio(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the installed console script; fails the test when it is not installed."""
    script = Path(sys.executable).parent / "geoaudio"
    found = str(script) if script.is_file() else shutil.which("geoaudio")
    assert found, "the geoaudio console script is not installed: pip install -e '.[dev]' --no-deps"
    return subprocess.run([found, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_help_lists_every_command_on_one_line():
    r = geoaudio("--help")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("usage: geoaudio")
    for name, command in COMMANDS.items():
        assert sum(line.split()[:1] == [name] and command.summary in line for line in lines) == 1, name
    assert max(map(len, lines)) <= 80


def test_synth_pairs_through_the_script_writes_the_pairs(tmp_path):
    out = tmp_path / "pairs"
    r = geoaudio("synth", "pairs", "--out", str(out), "--samples", "2", "--size", "64", "--duration", "3", "3",
                 "--workers", "1", "--quiet")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"wrote 2 pairs to {out}"
    with open(out / "metadata.csv", newline="") as f:
        keys = [row["key"] for row in csv.DictReader(f)]
    assert len(keys) == 2
    for key in keys:
        for sub, ext in (("images", "jpg"), ("audio", "mp3"), ("spectrograms", "jpg"), ("masks", "png")):
            assert (out / sub / f"{key}.{ext}").is_file()


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    r = geoaudio("map", "/nonexistent.tif", "--bundle", str(tmp_path / "X"), "--out", str(tmp_path / "Y"))
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("error: "), r.stderr
    assert not (tmp_path / "Y").exists()


def test_a_synth_error_is_one_line_and_exit_2(tmp_path, capsys):
    code = main(["synth", "pairs", "--out", str(tmp_path / "p"), "--samples", "1", "--size", "10", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "--size" in err and len(err.splitlines()) == 1


def test_usage_errors_name_the_geoaudio_command(capsys):
    with pytest.raises(SystemExit) as e:
        main(["synth", "pairs"])
    assert e.value.code == 2
    assert "error: the following arguments are required: --out" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["nope"])
    assert e.value.code == 2 and "unknown command 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main([])
    assert e.value.code == 2 and "a command is required" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("name", list(COMMANDS))
def test_each_command_help_is_its_module_help(name, capsys):
    with pytest.raises(SystemExit) as e:
        main([name, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: python -m {COMMANDS[name].python_m}")


def _exit_calls(entry_file: Path) -> list[str]:
    """The ``sys.exit(...)`` arguments run when the file is executed as ``__main__`` (module level or
    inside ``if __name__ == "__main__":``), as source text."""
    tree = ast.parse(entry_file.read_text())
    statements = []
    for node in tree.body:
        if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test):
            statements.extend(node.body)
        elif not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            statements.append(node)
    calls = [n for s in statements for n in ast.walk(s)
             if isinstance(n, ast.Call) and ast.unparse(n.func) == "sys.exit"]
    return [ast.unparse(c.args[0]) for c in calls if c.args]


@pytest.mark.parametrize("name", list(COMMANDS))
def test_wrapping_matches_the_python_m_entry(name):
    """Every ``python -m`` entry runs its main through run_cli, as the script does; its main takes argv."""
    command = COMMANDS[name]
    spec = importlib.util.find_spec(command.python_m)
    entry = Path(spec.origin)
    if entry.name == "__init__.py":
        entry = entry.with_name("__main__.py")
    exits = _exit_calls(entry)
    assert exits, f"{entry} has no sys.exit(...) entry"
    assert all(e.startswith("run_cli(") for e in exits), (name, exits)
    source = Path(importlib.util.find_spec(command.module).origin).read_text()
    main_def = next(n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef) and n.name == "main")
    assert [a.arg for a in main_def.args.args] == ["argv"]
