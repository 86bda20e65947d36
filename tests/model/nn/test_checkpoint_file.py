"""model.nn.checkpoint_file and the weights files of ``--init``: every bad file is one line that
names it and says what it is, before anything is unpickled."""
from __future__ import annotations

import os

import pytest
import torch

from model.nn.checkpoint_file import CheckpointError, load_checkpoint
from model.nn.init import InitError, read_weights


class _Code:
    def __reduce__(self):
        return (os.system, ("true",))


@pytest.fixture
def files(tmp_path):
    torch.save({"conv1.weight": torch.ones(2, 3)}, tmp_path / "good.pth")
    (tmp_path / "empty.pth").write_bytes(b"")
    (tmp_path / "random.pth").write_bytes(os.urandom(2000))
    (tmp_path / "truncated.pth").write_bytes((tmp_path / "good.pth").read_bytes()[:300])
    torch.save({"x": _Code()}, tmp_path / "code.pth")
    (tmp_path / "folder.pth").mkdir()
    (tmp_path / "dangling.pth").symlink_to(tmp_path / "nowhere.pth")
    (tmp_path / "text.safetensors").write_text("not a safetensors file")
    return tmp_path


@pytest.mark.parametrize("name, error, message", [
    ("empty.pth", CheckpointError, "empty file, not a checkpoint"),
    ("random.pth", CheckpointError, "not a PyTorch checkpoint (not the zip archive torch.save writes"),
    ("truncated.pth", CheckpointError, "not a PyTorch checkpoint"),
    ("code.pth", CheckpointError, "loading it would need to run code: it refers to posix.system"),
    ("folder.pth", CheckpointError, "is a folder or a special file, not a weights file"),
    ("dangling.pth", CheckpointError, "no such weights file"),
    ("text.safetensors", InitError, "not a readable safetensors file"),
])
def test_bad_weights_files_say_what_they_are(files, name, error, message):
    with pytest.raises(error) as info:
        read_weights(files / name)
    text = str(info.value)
    assert text.startswith(f"{files / name}: ") and message in text
    assert "\n" not in text and "weights_only" not in text


def test_good_weights_and_checkpoints_load_as_tensors(files):
    assert torch.equal(read_weights(files / "good.pth")["conv1.weight"], torch.ones(2, 3))
    assert set(load_checkpoint(files / "good.pth")) == {"conv1.weight"}


def test_the_size_limit_is_checked_from_the_index(files):
    with pytest.raises(CheckpointError, match=r"holds 0\.00 GiB of data, more than the limit of 0\.00 GiB; ask"):
        load_checkpoint(files / "good.pth", max_bytes=10, limit_hint="; ask")
