"""The app's file access rules without a browser: which bundles are offered, and that messages
shown in the page carry no server-side path (unless the app was started with --allow-server-paths)."""
from __future__ import annotations

import shutil

import pytest

from app.access import listed_bundles, public
from model.bundle.files import META_FILE
from tests.bundles import tiny_bundle


@pytest.fixture
def closed(monkeypatch, tmp_path):
    """The app's environment without --allow-server-paths, its folders under ``tmp_path``."""
    monkeypatch.delenv("GEOAUDIO_ALLOW_SERVER_PATHS", raising=False)
    for name, folder in (("GEOAUDIO_BUNDLES", "bundles"), ("GEOAUDIO_DEMO_DIR", "demo"), ("GEOAUDIO_CACHE", "cache")):
        monkeypatch.setenv(name, str(tmp_path / folder))
    return tmp_path


def test_only_bundle_folders_directly_in_the_bundles_folder_are_listed(tmp_path):
    folder = tmp_path / "bundles"
    tiny_bundle(folder / "b")
    shutil.copytree(folder / "b", folder / "a")
    shutil.copytree(folder / "b", folder / ".staging")  # an unfinished write
    (folder / "notes").mkdir()
    (folder / "notes" / "readme.txt").write_text("not a bundle")
    (folder / "deeper" / "x").mkdir(parents=True)
    (folder / "deeper" / "x" / META_FILE).write_text("{}")
    assert list(listed_bundles(folder)) == ["a", "b"]
    assert listed_bundles(folder)["a"] == folder / "a"
    assert listed_bundles(tmp_path / "missing") == {}


def test_messages_name_the_apps_folders_and_hide_other_paths(closed):
    bundle = closed / "bundles" / "mine"
    assert public(f"bundle rejected: {bundle}: not a bundle (bundle.json missing)", {bundle: "mine"}) == \
        "bundle rejected: mine: not a bundle (bundle.json missing)"
    assert public(f"{closed / 'cache' / 'maps' / 'k' / 'x.tif'}: disk full") == "<cache>/maps/k/x.tif: disk full"
    assert public("cannot read /root/.ssh/id_rsa (permission denied)") == "cannot read id_rsa (permission denied)"
    assert public(f"gallery {closed / 'demo' / 'bundle'}/gallery.parquet") == "gallery <demo>/bundle/gallery.parquet"
    kept = "mapping: 3/9 tiles, wav/mp3, see https://example.org/x, 1 m/px"
    assert public(kept) == kept
    for message in (public("/etc/shadow: not a bundle"), public(f"{closed}/elsewhere/file.tif: bad")):
        assert "/etc" not in message and str(closed) not in message


def test_messages_keep_their_paths_with_allow_server_paths(closed, monkeypatch):
    monkeypatch.setenv("GEOAUDIO_ALLOW_SERVER_PATHS", "1")
    assert public("/root/.ssh: not a bundle") == "/root/.ssh: not a bundle"
