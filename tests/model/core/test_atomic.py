"""model.core.atomic: a reader sees the old file or the whole new one, and nothing temporary stays."""
from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from model.core.atomic import (
    atomic_path,
    json_text,
    staging_dir,
    write_atomic,
    write_bytes_atomic,
    write_json_atomic,
    write_text_atomic,
)


def _names(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_success_replaces_the_target_and_leaves_only_it(tmp_path):
    target = tmp_path / "report.md"
    target.write_text("old")
    assert write_text_atomic(target, "new ü\n") == target
    assert target.read_text(encoding="utf-8") == "new ü\n"
    assert write_bytes_atomic(tmp_path / "blob.bin", b"\x00\x01") == tmp_path / "blob.bin"
    assert (tmp_path / "blob.bin").read_bytes() == b"\x00\x01"
    assert _names(tmp_path) == ["blob.bin", "report.md"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~_umask()  # not mkstemp's 0o600


@pytest.mark.parametrize("error", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_an_error_in_the_block_keeps_the_old_target_and_no_temp_file(tmp_path, error):
    target = tmp_path / "metrics.json"
    target.write_text("old")
    with pytest.raises(type(error)), atomic_path(target) as tmp:
        tmp.write_text("half of the new")
        raise error
    assert _names(tmp_path) == ["metrics.json"]
    assert target.read_text() == "old"


def test_a_failing_writer_leaves_nothing_and_no_target(tmp_path):
    def write(tmp):
        tmp.write_bytes(b"partial")
        raise OSError("device gone")

    with pytest.raises(OSError, match="device gone"):
        write_atomic(tmp_path / "weights.safetensors", write)
    assert _names(tmp_path) == []


def test_a_failing_rename_removes_the_temp_file(tmp_path):
    target = tmp_path / "occupied"
    target.mkdir()
    (target / "inside").write_text("x")
    with pytest.raises(OSError):
        write_text_atomic(target, "a file cannot replace a folder")
    assert _names(tmp_path) == ["occupied"]


def test_the_temp_file_is_hidden_unique_and_keeps_the_suffix(tmp_path):
    target = tmp_path / "scene.tif"
    with atomic_path(target) as a, atomic_path(target) as b:
        assert a != b and a.parent == b.parent == tmp_path
        assert a.name.startswith(".scene.tif.") and a.suffix == ".tif" and a.is_file()
        a.write_text("a")
        b.write_text("b")
    assert target.read_text() == "a"  # the outer block ends last: its rename wins
    with atomic_path(target, keep_suffix=False) as c:
        assert c.name.startswith(".scene.tif.") and c.suffix == ".tmp"
        c.write_text("c")
    assert _names(tmp_path) == ["scene.tif"] and target.read_text() == "c"


def test_a_writer_that_goes_by_extension_gets_the_suffix(tmp_path):
    """np.save appends .npy to a name that lacks it; the kept suffix lets it write the temp file."""
    target = tmp_path / "7.npy"
    array = np.arange(6, dtype=np.float16).reshape(2, 3)
    write_atomic(target, lambda tmp: np.save(tmp, array))
    assert _names(tmp_path) == ["7.npy"]
    np.testing.assert_array_equal(np.load(target), array)


def test_staging_dir_installs_every_file(tmp_path):
    target = tmp_path / "bundle"
    with staging_dir(target) as folder:
        assert folder.parent == tmp_path and folder.name.startswith(".bundle.") and not target.exists()
        (folder / "bundle.json").write_text("{}")
        (folder / "weights.safetensors").write_bytes(b"w")
    assert _names(tmp_path) == ["bundle"]
    assert _names(target) == ["bundle.json", "weights.safetensors"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o777 & ~_umask()  # not mkdtemp's 0o700


@pytest.mark.parametrize("existing", [False, True])
def test_staging_dir_installs_nothing_on_error(tmp_path, existing):
    target = tmp_path / "deepglobe"
    if existing:
        target.mkdir()
        (target / "old.png").write_text("old")
    with pytest.raises(KeyboardInterrupt), staging_dir(target) as folder:
        (folder / "a.png").write_text("a")
        raise KeyboardInterrupt
    assert _names(tmp_path) == (["deepglobe"] if existing else [])
    if existing:
        assert _names(target) == ["old.png"]


def test_staging_dir_replaces_an_existing_target_whole(tmp_path):
    target = tmp_path / "merged"
    target.mkdir()
    (target / "stale.onnx").write_text("old")
    with staging_dir(target) as folder:
        (folder / "bundle.json").write_text("new")
    assert _names(tmp_path) == ["merged"]  # the old folder went, and no trash folder stayed
    assert _names(target) == ["bundle.json"]


def test_json_is_strict_nan_and_infinity_become_null(tmp_path):
    import json

    value = {"a": float("nan"), "b": [1.5, float("inf"), -float("inf")], "c": {"d": np.float32(2.5)}, "e": "x"}
    text = json_text(value, default=lambda v: v.item())
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"a": None, "b": [1.5, None, None], "c": {"d": 2.5}, "e": "x"}
    path = write_json_atomic(tmp_path / "r.json", value, default=lambda v: v.item())
    assert json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"invalid JSON token {c}"))["a"] is None
