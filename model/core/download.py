"""Downloading one file over HTTP(S) with resume and checksums, and unpacking archives safely.

The one place in geoaudio that reaches the network (used by ``python -m model.fetch``); nothing
here runs at import time. Standard library only (``urllib``), plus ``tqdm`` for the progress bar,
imported when a download starts.

- :func:`download` writes ``DEST.part`` and renames it to ``DEST`` only once the whole file is
  there and its checksum (md5 or sha256, where the source publishes one) matches. A ``.part`` left
  by an interrupted run is resumed with an HTTP ``Range`` request; a server that answers with the
  whole file instead (status 200) restarts it cleanly. A checksum or size mismatch removes the
  ``.part`` and leaves nothing at ``DEST``.
- :func:`unpack` extracts zip and tar archives (``.tar``, ``.tar.gz``/``.tgz``, ``.tar.bz2``,
  ``.tar.xz``) without letting a member escape the target folder; 7z and RAR archives need tools
  the project does not install, so they raise :class:`DownloadError` saying so.
- :func:`rebase` replaces the scheme and host of a URL (a mirror, or a test server).

Every problem is a :class:`DownloadError`: one line naming the URL or file and what went wrong.
"""
from __future__ import annotations

import errno
import hashlib
import http.client
import json
import os
import shutil
import sys
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from model.core.errors import GeoaudioError, one_line

USER_AGENT = "geoaudio-fetch/1 (+https://github.com/khdlr/SoundingEarth)"
TIMEOUT_S = 60.0
CHUNK = 1 << 20
PART_SUFFIX = ".part"
ZIP_SUFFIXES = (".zip",)
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
UNSUPPORTED_ARCHIVES = {".7z": "7z", ".rar": "RAR"}


class DownloadError(GeoaudioError, OSError):
    """A download or unpack that failed: the message names the URL or file and the problem."""


@dataclass(frozen=True)
class Sums:
    """The md5 and sha256 (hex) of a file."""

    md5: str
    sha256: str


def rebase(url: str, base: str | None) -> str:
    """``url`` with its scheme and host replaced by ``base`` (which may carry a path prefix).

    ``rebase("https://zenodo.org/api/records/1", "http://127.0.0.1:8000/mirror")`` is
    ``"http://127.0.0.1:8000/mirror/api/records/1"``; ``base`` None or empty returns ``url``.
    """
    if not base:
        return url
    parts = urlsplit(url)
    tail = parts.path + (f"?{parts.query}" if parts.query else "")
    return base.rstrip("/") + tail


def check_base(base: str | None) -> str | None:
    """``base`` when it is an http(s) URL with a host (or empty/None); DownloadError otherwise."""
    if not base:
        return None
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise DownloadError(f"base URL {base!r}: expected http(s)://HOST[:PORT][/PREFIX]")
    return base


def _request(url: str, headers: dict[str, str] | None = None) -> urllib.request.Request:
    return urllib.request.Request(url, headers={"User-Agent": USER_AGENT, **(headers or {})})


def _http_problem(url: str, error: BaseException) -> DownloadError:
    """One line for a failed request: the HTTP status, or why the connection failed."""
    if isinstance(error, urllib.error.HTTPError):
        return DownloadError(f"{url}: HTTP {error.code} {error.reason}")
    if isinstance(error, urllib.error.URLError):
        reason = error.reason
        return DownloadError(f"{url}: cannot connect ({one_line(reason) if isinstance(reason, BaseException) else reason})")
    return DownloadError(f"{url}: {one_line(error)}")


def get_json(url: str, timeout: float = TIMEOUT_S) -> Any:
    """The JSON document at ``url`` (an API listing); DownloadError naming the URL otherwise."""
    try:
        with urllib.request.urlopen(_request(url, {"Accept": "application/json"}), timeout=timeout) as resp:
            body = resp.read()
    except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
        raise _http_problem(url, e) from None
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DownloadError(f"{url}: not a JSON document ({one_line(e)})") from None


def file_sums(path: str | os.PathLike) -> Sums:
    """md5 and sha256 of a file, read once."""
    md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            md5.update(block)
            sha.update(block)
    return Sums(md5.hexdigest(), sha.hexdigest())


def human(n: float) -> str:
    """Bytes as a short human-readable size (``"3.2 GiB"``)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # not reached


def check_space(folder: Path, needed: int, what: str) -> None:
    """DownloadError ("disk full") when ``folder``'s file system has less than ``needed`` bytes free."""
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise DownloadError(f"{folder}: disk full: {what} needs {human(needed)}, {human(free)} free")


def _is_disk_full(error: OSError) -> bool:
    return error.errno in (errno.ENOSPC, errno.EDQUOT)


def download(url: str, dest: str | os.PathLike, *, size: int | None = None, md5: str | None = None,
             sha256: str | None = None, retries: int = 3, progress: bool = True,
             timeout: float = TIMEOUT_S, log=print) -> Sums:
    """Download ``url`` to ``dest`` (through ``dest.part``) and return the file's sums.

    size, md5, sha256: what the source publishes (None: unknown); a known checksum that does not
    match removes the ``.part`` and raises DownloadError naming both sums. A ``.part`` from an
    earlier run is resumed (HTTP Range). A connection that drops is retried ``retries`` times,
    resuming each time (waits of 1, 2, 4 ... s); after that the ``.part`` stays for the next run.
    ``dest`` is never overwritten by a partial or unverified file. log: where notes go.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + PART_SUFFIX)
    attempt = 0
    while True:
        try:
            _fetch_part(url, part, size=size, progress=progress, timeout=timeout, log=log)
            break
        except _Interrupted as e:
            if attempt >= retries:
                raise DownloadError(f"{url}: {e} ({human(_size(part))} kept in {part}; run again to resume)") from None
            attempt += 1
            wait = min(2 ** (attempt - 1), 30)
            log(f"{dest.name}: {e}; resuming in {wait} s (try {attempt} of {retries})")
            time.sleep(wait)
    return _verify_and_publish(url, part, dest, size=size, md5=md5, sha256=sha256)


class _Interrupted(GeoaudioError, ConnectionError):
    """The connection dropped or the response ended early: worth resuming."""


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _fetch_part(url: str, part: Path, *, size: int | None, progress: bool, timeout: float, log) -> None:
    """Fill ``part`` up to the end of the resource (resuming what is there)."""
    have = _size(part)
    if size is not None and have > size:
        log(f"{part.name}: larger than the published size ({have} > {size} bytes); starting again")
        part.unlink()
        have = 0
    if size is not None and have == size:
        return
    check_space(part.parent, (size - have) if size is not None else 0, f"{url.rsplit('/', 1)[-1] or url}")
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        resp = urllib.request.urlopen(_request(url, headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the part holds the whole file already (or more): check it
            e.close()
            return
        raise _http_problem(url, e) from None
    except (TimeoutError, ConnectionError, http.client.HTTPException) as e:
        raise _Interrupted(f"connection failed ({one_line(e)})") from None
    except (urllib.error.URLError, OSError) as e:
        raise _http_problem(url, e) from None
    with resp:
        if have and resp.status == 206:
            start = _range_start(resp.headers.get("Content-Range", ""))
            if start != have:
                raise DownloadError(f"{url}: the server resumed at byte {start}, not at {have} "
                                    f"(remove {part} and run again)")
            mode = "ab"
        else:
            if have:
                log(f"{part.name}: the server ignored the resume request; downloading from the start")
            have, mode = 0, "wb"
        length = resp.headers.get("Content-Length")
        expected_end = have + int(length) if length and length.isdigit() else size
        _stream(resp, part, mode, have, expected_end, url, progress)


def _range_start(content_range: str) -> int | None:
    """The first byte of ``Content-Range: bytes START-END/TOTAL``, None when unreadable."""
    try:
        return int(content_range.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None


def _stream(resp, part: Path, mode: str, have: int, expected_end: int | None, url: str, progress: bool) -> None:
    from tqdm import tqdm

    got = have
    bar = tqdm(total=expected_end, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
               desc=part.name[: -len(PART_SUFFIX)], disable=None if progress else True, file=sys.stderr,
               leave=False)
    try:
        with open(part, mode) as f:
            while True:
                try:
                    block = resp.read(CHUNK)
                except (TimeoutError, ConnectionError, http.client.HTTPException) as e:
                    raise _Interrupted(f"connection lost after {human(got)} ({one_line(e)})") from None
                if not block:
                    break
                try:
                    f.write(block)
                except OSError as e:
                    if _is_disk_full(e):
                        raise DownloadError(f"{part}: disk full after {human(got)} of "
                                            f"{human(expected_end) if expected_end else 'the file'}") from None
                    raise
                got += len(block)
                bar.update(len(block))
    finally:
        bar.close()
    if expected_end is not None and got < expected_end:
        raise _Interrupted(f"connection closed after {got} of {expected_end} bytes")


def _verify_and_publish(url: str, part: Path, dest: Path, *, size: int | None, md5: str | None,
                        sha256: str | None) -> Sums:
    got_size = _size(part)
    if size is not None and got_size != size:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{url}: size mismatch for {dest.name}: expected {size} bytes, got {got_size} "
                            f"(the download was removed; run again to fetch it afresh)")
    sums = file_sums(part)
    for name, expected, got in (("md5", md5, sums.md5), ("sha256", sha256, sums.sha256)):
        if expected and expected.lower() != got:
            part.unlink(missing_ok=True)
            raise DownloadError(f"{url}: checksum mismatch for {dest.name}: expected {name} {expected.lower()}, "
                                f"got {got} (the download was removed; run again to fetch it afresh)")
    os.replace(part, dest)
    return sums


# ----------------------------------------------------------------------------------------------
# Unpacking


def archive_kind(path: str | os.PathLike) -> str | None:
    """"zip", "tar", "7z" or "RAR" by the file name (any case); None for a plain file."""
    name = Path(path).name.lower()
    if name.endswith(ZIP_SUFFIXES):
        return "zip"
    if name.endswith(TAR_SUFFIXES):
        return "tar"
    for suffix, kind in UNSUPPORTED_ARCHIVES.items():
        if name.endswith(suffix):
            return kind
    return None


def unpack(archive: str | os.PathLike, into: str | os.PathLike) -> None:
    """Extract ``archive`` (zip or tar) into the folder ``into``; members cannot land outside it.

    DownloadError naming the archive when it is corrupt, would not fit on the disk, holds a member
    with an absolute or ``..`` path, or is a 7z or RAR archive (no reader installed: unpack it yourself).
    """
    archive, into = Path(archive), Path(into)
    kind = archive_kind(archive)
    into.mkdir(parents=True, exist_ok=True)
    try:
        if kind == "zip":
            _unzip(archive, into)
        elif kind == "tar":
            _untar(archive, into)
        elif kind is not None:
            raise DownloadError(f"{archive}: cannot unpack a {kind} archive here (no {kind} reader is installed); "
                                f"unpack it yourself into {into}")
        else:
            raise DownloadError(f"{archive}: not an archive this command can unpack (zip or tar)")
    except OSError as e:
        if isinstance(e, DownloadError):
            raise
        if _is_disk_full(e):
            raise DownloadError(f"{into}: disk full while unpacking {archive.name}") from None
        raise DownloadError(f"{archive}: cannot unpack ({one_line(e)})") from None


def _inside(root: Path, name: str, archive: Path) -> Path:
    """Where member ``name`` lands in ``root``; DownloadError when that is outside ``root``."""
    target = (root / name).resolve()
    if name.startswith(("/", "\\")) or not target.is_relative_to(root.resolve()):
        raise DownloadError(f"{archive}: member {name!r} would be written outside {root}")
    return target


def _unzip(archive: Path, into: Path) -> None:
    try:
        with zipfile.ZipFile(archive) as z:
            members = z.infolist()
            for m in members:
                _inside(into, m.filename, archive)
            check_space(into, sum(m.file_size for m in members), f"unpacking {archive.name}")
            z.extractall(into)
    except zipfile.BadZipFile as e:
        raise DownloadError(f"{archive}: corrupt zip archive ({one_line(e)})") from None


def _untar(archive: Path, into: Path) -> None:
    try:
        with tarfile.open(archive) as t:
            members = t.getmembers()
            check_space(into, sum(m.size for m in members if m.isfile()), f"unpacking {archive.name}")
            t.extractall(into, filter="data")
    except tarfile.FilterError as e:
        raise DownloadError(f"{archive}: refused member ({one_line(e)})") from None
    except (tarfile.TarError, EOFError) as e:
        raise DownloadError(f"{archive}: corrupt tar archive ({one_line(e)})") from None
