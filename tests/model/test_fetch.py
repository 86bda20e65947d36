"""``python -m model.fetch``: download, resume, verify, unpack and place, against a local HTTP server.

Nothing leaves the machine: a real ``http.server`` on 127.0.0.1 (with Range support, and told when to
cut a response short or ignore Range) serves tiny archives in the real datasets' layouts and
Zenodo- and GitHub-API-shaped listings; ``--base-url`` points every URL at it. The placed folders
are read back with the project's own readers.
"""
from __future__ import annotations

import hashlib
import io
import json
import tarfile
import threading
import wave
import zipfile
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from model.core.cli import run_cli
from model.core.download import DownloadError, rebase, unpack
from model.data.fetch_sources import MARKER, SOURCES, zenodo_files
from model.data.folder_datasets import scan_advance, scan_class_folders, scan_deepglobe
from model.data.metadata import files_by_key, read_metadata
from model.fetch import main

# ----------------------------------------------------------------------------------------------
# A tiny HTTP server with Range requests


class Served:
    """What the server holds and what it saw: ``files`` by URL path, ``requests`` as (path, Range header)."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.cut: dict[str, int] = {}  # path -> bytes to send before hanging up (once)
        self.ignore_range: set[str] = set()

    def file_requests(self) -> list[tuple[str, str | None]]:
        return [r for r in self.requests if "/files/" in r[0] or "/download/" in r[0] or r[0].endswith(".zip")]


def _handler(state: Served):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def do_GET(self):
            path = self.path.split("?", 1)[0]
            state.requests.append((path, self.headers.get("Range")))
            body = state.files.get(path)
            if body is None:
                self.send_error(404, "Not Found")
                return
            start = 0
            rng = self.headers.get("Range")
            if rng and path not in state.ignore_range:
                start = int(rng.removeprefix("bytes=").split("-")[0])
                if start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(len(body) - start))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            cut = state.cut.pop(path, None)
            self.wfile.write(body[start:start + cut] if cut is not None else body[start:])
            if cut is not None:
                self.wfile.flush()
                self.close_connection = True

    return Handler


@pytest.fixture
def server():
    state = Served()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", state
    finally:
        httpd.shutdown()
        httpd.server_close()


def fetch(*args: str) -> int:
    return run_cli(lambda: main(["--quiet", *args]))


# ----------------------------------------------------------------------------------------------
# Tiny archives in the real layouts


def _image_bytes(fmt: str, seed: int, mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).convert(mode).save(buf, format=fmt)
    return buf.getvalue()


def _wav_bytes() -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x00" * 800)
    return buf.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def _targz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def ucmerced_zip() -> bytes:
    return _zip({f"UCMerced_LandUse/Images/{c}/{c}{i:02d}.tif": _image_bytes("TIFF", 10 * k + i)
                 for k, c in enumerate(("agricultural", "airplane")) for i in range(2)})


def soundingearth_archive() -> bytes:
    keys = (101, 102, 103)
    members = {"SoundingEarth/metadata.csv": ("key,longitude,latitude,title\n" + "".join(
        f"{k},{k / 10:.1f},{k / 20:.1f},place {k}\n" for k in keys)).encode()}
    for k in keys:
        members[f"SoundingEarth/images/{k}.jpg"] = _image_bytes("JPEG", k)
        members[f"SoundingEarth/spectrograms/{k}.jpg"] = _image_bytes("JPEG", k + 1000, "L")
    return _targz(members)


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def serve_zenodo(state: Served, record: int, files: dict[str, bytes], checksums: dict[str, str] | None = None):
    """A Zenodo records-API listing of ``files`` (links on zenodo.org itself, as the real API gives them)."""
    entries = []
    for name, data in files.items():
        path = f"/api/records/{record}/files/{name}/content"
        state.files[path] = data
        entries.append({"key": name, "size": len(data), "checksum": f"md5:{(checksums or {}).get(name, md5(data))}",
                        "links": {"self": f"https://zenodo.org{path}"}})
    state.files[f"/api/records/{record}"] = json.dumps({"id": record, "files": entries}).encode()


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


# ----------------------------------------------------------------------------------------------
# Tests


def test_list_names_every_source(capsys):
    assert fetch("--list") == 0
    out = capsys.readouterr().out
    for name in ("soundingearth", "checkpoints", "ucmerced", "aid", "resisc45", "deepglobe", "advance"):
        assert any(line.startswith(name) for line in out.splitlines()), name
    assert "https://zenodo.org/api/records/5600379" in out
    assert "https://api.github.com/repos/khdlr/SoundingEarth/releases" in out


def test_manual_source_prints_one_line_and_exits_2(tmp_path, capsys):
    assert fetch("deepglobe", "--out", str(tmp_path / "data")) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "kaggle.com" in line and str(tmp_path / "data" / "deepglobe" / "train") in line
    assert not (tmp_path / "data").exists()


def test_ucmerced_zip_becomes_class_folders(server, tmp_path, monkeypatch, capsys):
    base, state = server
    archive = ucmerced_zip()
    state.files["/datasets/UCMerced_LandUse.zip"] = archive
    source = SOURCES["ucmerced"]
    monkeypatch.setitem(SOURCES, "ucmerced", replace(source, files=(replace(source.files[0], md5=md5(archive)),)))
    assert fetch("ucmerced", "--out", str(tmp_path), "--base-url", base) == 0
    out = capsys.readouterr().out
    found = scan_class_folders(tmp_path / "ucmerced")  # decodes every image
    assert found.classes == ["agricultural", "airplane"] and len(found) == 4
    assert hashlib.sha256(archive).hexdigest() in out and "UCMerced_LandUse/Images" in out
    assert not (tmp_path / "downloads").exists()  # the archive is deleted once placed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ucmerced"]  # no temporary folder left


def test_wrong_md5_is_one_line_exit_2_and_leaves_no_file(server, tmp_path, capsys):
    base, state = server
    archive = soundingearth_archive()
    wrong = "0" * 32
    serve_zenodo(state, 5600379, {"SoundingEarth.tar.gz": archive}, {"SoundingEarth.tar.gz": wrong})
    assert fetch("soundingearth", "--out", str(tmp_path), "--base-url", base) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "checksum mismatch" in line and wrong in line and md5(archive) in line and "SoundingEarth.tar.gz" in line
    downloads = tmp_path / "downloads" / "soundingearth"
    assert not any(downloads.iterdir())  # neither the file nor its .part
    assert not (tmp_path / "soundingearth").exists()


def test_soundingearth_from_zenodo_listing_and_rerun_skips(server, tmp_path, monkeypatch, capsys):
    base, state = server
    archive = soundingearth_archive()
    serve_zenodo(state, 5600379, {"SoundingEarth.tar.gz": archive})
    monkeypatch.setenv("GEOAUDIO_FETCH_BASE", base)  # the environment variable instead of --base-url
    assert fetch("soundingearth", "--out", str(tmp_path), "--keep-archives") == 0
    out = capsys.readouterr().out
    root = tmp_path / "soundingearth"
    assert sorted(read_metadata(root)["key"]) == [101, 102, 103]
    assert sorted(files_by_key(root / "images", (".jpg",))) == [101, 102, 103]
    assert sorted(files_by_key(root / "spectrograms", (".jpg",))) == [101, 102, 103]
    assert "SoundingEarth/" in out and f"md5 {md5(archive)} verified" in out
    assert (tmp_path / "downloads" / "soundingearth" / "SoundingEarth.tar.gz").read_bytes() == archive
    record = json.loads((root / MARKER).read_text())
    assert record["files"][0]["sha256"] == hashlib.sha256(archive).hexdigest()

    seen = len(state.requests)
    assert fetch("soundingearth", "--out", str(tmp_path)) == 0
    assert "already fetched" in capsys.readouterr().out
    assert len(state.requests) == seen  # not even the listing is asked for again


def test_interrupted_download_resumes_on_rerun(server, tmp_path, capsys):
    base, state = server
    archive = soundingearth_archive()
    serve_zenodo(state, 5600379, {"SoundingEarth.tar.gz": archive})
    path = "/api/records/5600379/files/SoundingEarth.tar.gz/content"
    half = len(archive) // 2
    state.cut[path] = half
    assert fetch("soundingearth", "--out", str(tmp_path), "--base-url", base, "--retries", "0",
                 "--keep-archives") == 2
    line = one_error_line(capsys.readouterr().err)
    assert "run again to resume" in line and f"{half} of {len(archive)}" in line
    part = tmp_path / "downloads" / "soundingearth" / "SoundingEarth.tar.gz.part"
    assert part.read_bytes() == archive[:half]

    assert fetch("soundingearth", "--out", str(tmp_path), "--base-url", base, "--keep-archives") == 0
    assert state.file_requests()[-1] == (path, f"bytes={half}-")
    assert (tmp_path / "downloads" / "soundingearth" / "SoundingEarth.tar.gz").read_bytes() == archive
    assert not part.exists()
    assert len(read_metadata(tmp_path / "soundingearth")) == 3


def test_a_dropped_connection_is_resumed_within_one_run(server, tmp_path, monkeypatch):
    base, state = server
    archive = soundingearth_archive()
    serve_zenodo(state, 5600379, {"SoundingEarth.tar.gz": archive})
    path = "/api/records/5600379/files/SoundingEarth.tar.gz/content"
    state.cut[path] = 100
    monkeypatch.setattr("model.core.download.time.sleep", lambda s: None)
    assert fetch("soundingearth", "--out", str(tmp_path), "--base-url", base, "--keep-archives") == 0
    assert [r for r in state.file_requests()] == [(path, None), (path, "bytes=100-")]
    assert (tmp_path / "downloads" / "soundingearth" / "SoundingEarth.tar.gz").read_bytes() == archive


def test_a_server_ignoring_range_restarts_cleanly(server, tmp_path, capsys):
    base, state = server
    archive = soundingearth_archive()
    serve_zenodo(state, 5600379, {"SoundingEarth.tar.gz": archive})
    path = "/api/records/5600379/files/SoundingEarth.tar.gz/content"
    state.ignore_range.add(path)
    downloads = tmp_path / "downloads" / "soundingearth"
    downloads.mkdir(parents=True)
    (downloads / "SoundingEarth.tar.gz.part").write_bytes(b"stale bytes from an earlier run")
    assert fetch("soundingearth", "--out", str(tmp_path), "--base-url", base, "--keep-archives") == 0
    assert "ignored the resume request" in capsys.readouterr().out
    assert state.file_requests() == [(path, "bytes=31-")]
    assert (downloads / "SoundingEarth.tar.gz").read_bytes() == archive


def test_advance_two_zips_give_vision_and_sound(server, tmp_path):
    base, state = server
    vision = _zip({f"vision/{c}/{c}_{i}.jpg": _image_bytes("JPEG", i) for c in ("airport", "beach") for i in range(2)})
    sound = _zip({f"sound/{c}/{c}_{i}.wav": _wav_bytes() for c in ("airport", "beach") for i in range(2)})
    serve_zenodo(state, 3828124, {"ADVANCE_vision.zip": vision, "ADVANCE_sound.zip": sound})
    assert fetch("advance", "--out", str(tmp_path), "--base-url", base) == 0
    samples, classes = scan_advance(tmp_path / "advance")
    assert classes == ["airport", "beach"] and len(samples) == 4


def test_checkpoints_from_github_releases(server, tmp_path, capsys):
    base, state = server
    weights = b"not really a state dict, but bytes all the same"
    assets = []
    for arch in ("ResNet18", "ResNet50"):
        path = f"/khdlr/SoundingEarth/releases/download/v1.0/SoundingEarth_{arch}.pt"
        state.files[path] = weights
        assets.append({"name": f"SoundingEarth_{arch}.pt", "size": len(weights),
                       "browser_download_url": f"https://github.com{path}",
                       "digest": f"sha256:{hashlib.sha256(weights).hexdigest()}"})
    state.files["/repos/khdlr/SoundingEarth/releases"] = json.dumps([{"tag_name": "v1.0", "assets": assets}]).encode()
    assert fetch("checkpoints", "--out", str(tmp_path), "--base-url", base, "--only", "*18*") == 0
    assert [p.name for p in (tmp_path / "checkpoints" / "v1.0").iterdir()] == ["SoundingEarth_ResNet18.pt"]
    assert (tmp_path / "checkpoints" / "v1.0" / "SoundingEarth_ResNet18.pt").read_bytes() == weights
    out = capsys.readouterr().out
    assert "sha256 verified" in out and "model.import_soundingearth" in out


def test_deepglobe_from_a_local_archive(tmp_path, capsys):
    archive = tmp_path / "archive.zip"
    archive.write_bytes(_zip({
        **{f"train/{i}_sat.jpg": _image_bytes("JPEG", i) for i in (1, 2)},
        **{f"train/{i}_mask.png": _image_bytes("PNG", i + 50) for i in (1, 2)},
        "valid/3_sat.jpg": _image_bytes("JPEG", 3), "class_dict.csv": b"name,r,g,b\n"}))
    assert fetch("deepglobe", "--out", str(tmp_path / "data"), "--from", str(archive)) == 0
    tiles = scan_deepglobe(tmp_path / "data" / "deepglobe", check=False)
    assert [t.tile_id for t in tiles["train"]] == ["1", "2"]
    assert archive.is_file()  # the user's own archive is left alone


def test_http_error_and_disk_full_are_one_line(server, tmp_path, monkeypatch, capsys):
    base, state = server
    assert fetch("ucmerced", "--out", str(tmp_path), "--base-url", base) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"{base}/datasets/UCMerced_LandUse.zip: HTTP 404" in line

    serve_zenodo(state, 5600379, {"SoundingEarth.tar.gz": soundingearth_archive()})
    monkeypatch.setattr("model.core.download.shutil.disk_usage", lambda p: type("U", (), {"free": 10})())
    assert fetch("soundingearth", "--out", str(tmp_path), "--base-url", base) == 2
    assert "disk full" in one_error_line(capsys.readouterr().err)


def test_an_existing_folder_not_made_by_fetch_is_left_alone(server, tmp_path, capsys):
    base, state = server
    (tmp_path / "ucmerced").mkdir()
    (tmp_path / "ucmerced" / "mine.txt").write_text("keep me")
    state.files["/datasets/UCMerced_LandUse.zip"] = ucmerced_zip()
    assert fetch("ucmerced", "--out", str(tmp_path), "--base-url", base, "--no-verify") == 2
    assert "was not made by fetch" in one_error_line(capsys.readouterr().err)
    assert (tmp_path / "ucmerced" / "mine.txt").read_text() == "keep me"


def test_unpack_refuses_members_outside_the_folder(tmp_path):
    evil = tmp_path / "evil.zip"
    evil.write_bytes(_zip({"../outside.txt": b"x"}))
    with pytest.raises(DownloadError, match="outside"):
        unpack(evil, tmp_path / "into")
    assert not (tmp_path / "outside.txt").exists()
    seven = tmp_path / "a.7z"
    seven.write_bytes(b"7z")
    with pytest.raises(DownloadError, match="unpack it yourself"):
        unpack(seven, tmp_path / "into")


def test_rebase_and_zenodo_listing_shapes():
    assert rebase("https://zenodo.org/api/records/1?x=2", "http://127.0.0.1:9/m/") == "http://127.0.0.1:9/m/api/records/1?x=2"
    entries = {"files": {"entries": {"a.zip": {"key": "a.zip", "size": 3, "checksum": "md5:" + "a" * 32,
                                               "links": {"self": "https://zenodo.org/api/records/1/files/a.zip",
                                                         "content": "https://zenodo.org/api/records/1/files/a.zip/content"}}}}}
    [remote] = zenodo_files(entries, "https://zenodo.org/api/records/1")
    assert remote.url.endswith("/content") and remote.md5 == "a" * 32 and remote.size == 3
