"""Where SoundingEarth, its published weights and the downstream datasets live, and how a download
becomes the folder layout the readers expect (``python -m model.fetch``).

Sources; "found in" says where each URL and checksum comes from:

| name | fetched from | checksum | manual? | found in |
| --- | --- | --- | --- | --- |
| soundingearth | Zenodo record 5600379 (https://zenodo.org/records/5600379); files listed by https://zenodo.org/api/records/5600379 | md5 per file, from the Zenodo API | no | README of github.com/khdlr/SoundingEarth |
| checkpoints | assets of the Releases of github.com/khdlr/SoundingEarth, listed by https://api.github.com/repos/khdlr/SoundingEarth/releases | sha256 where GitHub lists an asset ``digest``; else computed and printed | no | README of github.com/khdlr/SoundingEarth ("Pre-trained Weights") |
| ucmerced | http://weegee.vision.ucmerced.edu/datasets/UCMerced_LandUse.zip (page: http://weegee.vision.ucmerced.edu/datasets/landuse.html) | md5 5b7ec56793786b6dc8a908e8854ac0e4 (not published by UC Merced: the one torchgeo pins for this zip) | no | the UC Merced page; torchgeo ``UCMerced`` |
| aid | http://www.captain-whu.com/project/AID/ (links to OneDrive and BaiduPan) | none published | yes | the authors' project page |
| resisc45 | http://www.escience.cn/people/JunweiHan/NWPU-RESISC45.html (OneDrive, BaiduWangpan; a RAR archive) | none published | yes | the authors' page |
| deepglobe | https://www.kaggle.com/datasets/balraj98/deepglobe-land-cover-classification-dataset (Kaggle login); challenge: https://competitions.codalab.org/competitions/18468 | none published | yes | torchgeo ``DeepGlobeLandCover`` |
| advance | Zenodo record 3828124 (https://zenodo.org/records/3828124: ADVANCE_vision.zip, ADVANCE_sound.zip), listed by https://zenodo.org/api/records/3828124 | md5 per file, from the Zenodo API | no | the dataset page https://akchen.github.io/ADVANCE-DATASET/; torchgeo ``ADVANCE`` |

Layouts written under ``--out DIR`` (those of :mod:`model.data.metadata` and
:mod:`model.data.folder_datasets`):

- ``DIR/soundingearth/``: the folder of the archive that holds ``metadata.csv`` (with ``images/``,
  ``spectrograms/`` or ``audio/`` beside it, whatever the archive has); an inner wrapper folder is
  moved up and named in the output;
- ``DIR/checkpoints/<release tag>/<asset>``: the published weight files as released;
- ``DIR/ucmerced/``, ``DIR/aid/``, ``DIR/resisc45/``: ``<class>/<image>``, the class folders moved
  up from wherever the archive keeps them (UC Merced: ``UCMerced_LandUse/Images/<class>/``);
- ``DIR/deepglobe/train/{id}_sat.jpg`` + ``{id}_mask.png`` (the Kaggle archive's ``train/``; a
  ``training_data/`` + ``test_data/`` split layout is kept as it is);
- ``DIR/advance/{vision,sound}/<class>/``.

Downloads go to ``DIR/downloads/<name>/`` (with ``.part`` files while they run) and are deleted once
unpacked and placed, unless ``--keep-archives``. A finished folder carries ``.fetched.json`` (what was
fetched, sizes and sha256); a rerun finds it and does nothing.
"""
from __future__ import annotations

import fnmatch
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from model.core.atomic import staging_dir, write_json_atomic
from model.core.download import (
    DownloadError,
    Sums,
    archive_kind,
    check_space,
    download,
    file_sums,
    get_json,
    human,
    rebase,
    unpack,
)
from model.core.errors import one_line
from model.data.errors import DatasetError

MARKER = ".fetched.json"
DOWNLOADS = "downloads"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
SKIP_NAMES = ("__MACOSX",)


class ManualDownloadNeeded(DatasetError):
    """A source without a direct download link: the message says which page to visit and where the files go."""


@dataclass(frozen=True)
class Remote:
    """One file to download: its URL, the name to save it as and what the source publishes about it.

    subdir: a sub-folder of the layout the file belongs in (a release tag for the checkpoints).
    """

    url: str
    name: str
    size: int | None = None
    md5: str | None = None
    sha256: str | None = None
    subdir: str = ""


@dataclass(frozen=True)
class Source:
    """A dataset or the published weights: where they live and the layout they get under ``--out``.

    kind: "zenodo" (files listed by the Zenodo API at ``api``), "github" (release assets listed by the
    GitHub API at ``api``), "files" (the fixed ``files``) or "manual" (no direct link: ``manual`` is
    the line to print, with ``{target}`` filled in). place: the name of the layout step.
    """

    name: str
    holds: str
    home: str
    kind: str
    place: str
    layout: str
    checksum: str
    api: str = ""
    files: tuple[Remote, ...] = ()
    manual: str = ""

    @property
    def folder(self) -> str:
        return self.name


SOURCES: dict[str, Source] = {s.name: s for s in (
    Source("soundingearth", "SoundingEarth: about 50,000 geotagged recordings with aerial images (metadata.csv, "
           "images, spectrograms)", "https://zenodo.org/records/5600379", "zenodo", "soundingearth",
           "soundingearth/{metadata.csv, images/, spectrograms/ ...}", "md5 per file from the Zenodo API",
           api="https://zenodo.org/api/records/5600379"),
    Source("checkpoints", "the SoundingEarth weights released with the paper (ResNet-18 / ResNet-50 state dicts)",
           "https://github.com/khdlr/SoundingEarth/releases", "github", "checkpoints",
           "checkpoints/<release tag>/<file>", "sha256 where GitHub lists one, else computed and printed",
           api="https://api.github.com/repos/khdlr/SoundingEarth/releases?per_page=100"),
    Source("ucmerced", "UC Merced Land Use: 2,100 aerial images (256 px TIFF) in 21 classes",
           "http://weegee.vision.ucmerced.edu/datasets/landuse.html", "files", "classes",
           "ucmerced/<class>/*.tif", "md5 (as torchgeo publishes it for this zip)",
           files=(Remote("http://weegee.vision.ucmerced.edu/datasets/UCMerced_LandUse.zip", "UCMerced_LandUse.zip",
                         md5="5b7ec56793786b6dc8a908e8854ac0e4"),)),
    Source("aid", "AID: 10,000 aerial scenes in 30 classes", "http://www.captain-whu.com/project/AID/", "manual",
           "classes", "aid/<class>/*.jpg", "none published",
           manual="aid: no direct download link (the authors share AID on OneDrive and BaiduPan): get it from "
                  "http://www.captain-whu.com/project/AID/, then run again with --from THE_ARCHIVE.zip, or unpack it "
                  "so that the class folders are {target}/<class>/"),
    Source("resisc45", "NWPU-RESISC45: 31,500 scenes in 45 classes",
           "http://www.escience.cn/people/JunweiHan/NWPU-RESISC45.html", "manual", "classes",
           "resisc45/<class>/*.jpg", "none published",
           manual="resisc45: no direct download link (OneDrive and BaiduWangpan, a RAR archive): get NWPU-RESISC45.rar "
                  "from http://www.escience.cn/people/JunweiHan/NWPU-RESISC45.html and unpack it yourself (no RAR "
                  "reader is installed) so that the class folders are {target}/<class>/"),
    Source("deepglobe", "DeepGlobe Land Cover: 803 labelled 2448 px satellite tiles (7 colour-coded classes)",
           "https://www.kaggle.com/datasets/balraj98/deepglobe-land-cover-classification-dataset", "manual",
           "deepglobe", "deepglobe/train/{id}_sat.jpg + {id}_mask.png", "none published",
           manual="deepglobe: needs a Kaggle login: download the archive from "
                  "https://www.kaggle.com/datasets/balraj98/deepglobe-land-cover-classification-dataset, then run "
                  "again with --from archive.zip, or put its train/ files ({{id}}_sat.jpg, {{id}}_mask.png) into "
                  "{target}/train/"),
    Source("advance", "ADVANCE: 5,075 aerial images with the sound recorded there, in 13 scene classes",
           "https://zenodo.org/records/3828124", "zenodo", "advance", "advance/{vision,sound}/<class>/...",
           "md5 per file from the Zenodo API", api="https://zenodo.org/api/records/3828124"),
)}


@dataclass
class Options:
    """How :func:`fetch` runs: see ``python -m model.fetch --help``."""

    base_url: str | None = None
    only: tuple[str, ...] = ()
    local: tuple[Path, ...] = ()
    keep_archives: bool = False
    verify: bool = True
    retries: int = 3
    progress: bool = True
    log: Callable[[str], None] = field(default=print)


# ----------------------------------------------------------------------------------------------
# Listing what to download


def listing(source: Source, opts: Options) -> list[Remote]:
    """The files of ``source`` (URLs rebased onto ``opts.base_url``), filtered by ``opts.only``."""
    if source.kind == "zenodo":
        api = rebase(source.api, opts.base_url)
        files = zenodo_files(get_json(api), api)
    elif source.kind == "github":
        api = rebase(source.api, opts.base_url)
        files = github_assets(get_json(api), api)
    else:
        api, files = source.home, list(source.files)
    files = [replace(f, url=rebase(f.url, opts.base_url)) for f in files]
    if opts.only:
        chosen = [f for f in files if any(fnmatch.fnmatchcase(f.name, p) for p in opts.only)]
        if not chosen:
            raise DatasetError(f"{api}: no file matches --only {' '.join(opts.only)} "
                               f"(files: {', '.join(f.name for f in files)})")
        files = chosen
    return files


def zenodo_files(record: object, api: str) -> list[Remote]:
    """The files of a Zenodo record as the records API lists them.

    The shape (``GET https://zenodo.org/api/records/<id>``)::

        {"id": 5600379, "files": [{"key": "x.zip", "size": 123, "checksum": "md5:<hex>",
                                   "links": {"self": "https://zenodo.org/api/records/5600379/files/x.zip/content"}}]}

    ``files`` as ``{"entries": {...}}`` (the newer per-record files endpoint) is read too.
    """
    if not isinstance(record, dict):
        raise DownloadError(f"{api}: not a Zenodo record (expected a JSON object)")
    files = record.get("files")
    if isinstance(files, dict):
        files = files.get("entries")
        files = list(files.values()) if isinstance(files, dict) else files
    if not isinstance(files, list) or not files:
        raise DownloadError(f"{api}: the record lists no files (restricted, or not a Zenodo record)")
    record_id = record.get("id") or api.rstrip("/").rsplit("/", 1)[-1]
    out = []
    for entry in files:
        if not isinstance(entry, dict) or not (entry.get("key") or entry.get("filename")):
            raise DownloadError(f"{api}: a file entry has no 'key' ({str(entry)[:80]})")
        key = str(entry.get("key") or entry.get("filename"))
        algo, _, value = str(entry.get("checksum") or "").partition(":")
        if not value and len(algo) == 32:
            algo, value = "md5", algo
        links = entry.get("links") if isinstance(entry.get("links"), dict) else {}
        url = (links.get("content") or links.get("self") or links.get("download")
               or f"https://zenodo.org/records/{record_id}/files/{key}?download=1")
        size = entry.get("size", entry.get("filesize"))
        out.append(Remote(url=str(url), name=Path(key).name, size=int(size) if isinstance(size, int) else None,
                          md5=value.lower() if algo.lower() == "md5" else None,
                          sha256=value.lower() if algo.lower() == "sha256" else None))
    return out


def github_assets(releases: object, api: str) -> list[Remote]:
    """The assets of a repository's releases as the GitHub API lists them.

    The shape (``GET https://api.github.com/repos/OWNER/REPO/releases``)::

        [{"tag_name": "v1", "assets": [{"name": "x.pt", "size": 123, "digest": "sha256:<hex>" (newer),
                                         "browser_download_url": "https://github.com/OWNER/REPO/releases/download/v1/x.pt"}]}]
    """
    if isinstance(releases, dict) and "message" in releases:
        raise DownloadError(f"{api}: {releases['message']}")
    if not isinstance(releases, list):
        raise DownloadError(f"{api}: not a list of releases")
    out = []
    for release in releases:
        if not isinstance(release, dict):
            continue
        tag = _safe_name(str(release.get("tag_name") or release.get("name") or "release"))
        for asset in release.get("assets") or []:
            if not isinstance(asset, dict) or not asset.get("browser_download_url") or not asset.get("name"):
                continue
            digest = str(asset.get("digest") or "")
            size = asset.get("size")
            out.append(Remote(url=str(asset["browser_download_url"]), name=_safe_name(str(asset["name"])),
                              size=size if isinstance(size, int) else None,
                              sha256=digest.split(":", 1)[1].lower() if digest.startswith("sha256:") else None,
                              subdir=tag))
    if not out:
        raise DownloadError(f"{api}: no release assets found")
    return out


def _safe_name(name: str) -> str:
    """A file or folder name from a listing, with no path separators or leading dots."""
    cleaned = name.replace("/", "_").replace("\\", "_").lstrip(".")
    return cleaned or "file"


# ----------------------------------------------------------------------------------------------
# Fetching


def fetch(source: Source, out: str | os.PathLike, opts: Options | None = None) -> Path:
    """Download (or take from ``opts.local``), verify, unpack and place ``source`` under ``out``.

    Returns the finished folder ``out/<name>``. Does nothing when that folder already carries a
    ``.fetched.json`` covering the request. ManualDownloadNeeded for a source without a direct link
    (unless ``opts.local`` names the archives); DownloadError for network, checksum and disk
    problems; DatasetError when what arrived does not give the expected layout.
    """
    opts = opts or Options()
    out = Path(out)
    target = out / source.folder
    log = opts.log
    if (target / MARKER).is_file() and not opts.only and not opts.local:
        log(f"{target}: already fetched ({MARKER} is there); nothing to do")
        return target
    if source.kind == "manual" and not opts.local:
        raise ManualDownloadNeeded(source.manual.format(target=target))
    _check_target(target)  # before downloading anything
    if opts.local:
        files = _local_files(source, opts)
    else:
        remotes = listing(source, opts)
        if _covered(target, remotes):
            log(f"{target}: already fetched ({MARKER} lists these files); nothing to do")
            return target
        files = _download_all(source, remotes, out / DOWNLOADS / source.name, opts)
    out.mkdir(parents=True, exist_ok=True)
    raw = Path(tempfile.mkdtemp(prefix=f".{source.folder}.unpack.", suffix=".tmp", dir=out))
    try:
        for got in files:
            _unpack_one(source, got, raw / got.remote.subdir, target, opts)
        with staging_dir(target) as stage:
            notes = PLACE[source.place](raw, stage)
            summary = _checked(source, stage, target)
            write_json_atomic(stage / MARKER, _record(source, files))
    finally:
        shutil.rmtree(raw, ignore_errors=True)
    for note in notes:
        log(note.replace(str(stage), str(target)))
    log(summary)
    if not opts.local and not opts.keep_archives:
        _remove_downloads(out / DOWNLOADS / source.name, [g.path for g in files])
    return target


@dataclass(frozen=True)
class _Got:
    """A file on disk ready to unpack: where it is, what it was, its sums, and whether it is ours to move."""

    path: Path
    remote: Remote
    sums: Sums
    ours: bool


def _local_files(source: Source, opts: Options) -> list[_Got]:
    known = {f.name: f for f in source.files}
    out = []
    for path in opts.local:
        path = Path(path)
        if not path.is_file():
            raise DatasetError(f"{path}: no such file (--from)")
        sums = file_sums(path)
        remote = known.get(path.name, Remote(url=str(path), name=path.name))
        if opts.verify:
            _compare(str(path), path.name, remote, sums)
        opts.log(f"{path.name}: {human(path.stat().st_size)}, sha256 {sums.sha256} ({_verdict(remote, opts)})")
        out.append(_Got(path, replace(remote, url=str(path)), sums, ours=False))
    return out


def _compare(where: str, name: str, remote: Remote, sums: Sums) -> None:
    for algo, expected, got in (("md5", remote.md5, sums.md5), ("sha256", remote.sha256, sums.sha256)):
        if expected and expected != got:
            raise DownloadError(f"{where}: checksum mismatch for {name}: expected {algo} {expected}, got {got}")


def _verdict(remote: Remote, opts: Options) -> str:
    if not opts.verify and (remote.md5 or remote.sha256):
        return "published checksum not checked: --no-verify"
    if remote.md5:
        return f"md5 {remote.md5} verified"
    if remote.sha256:
        return "sha256 verified"
    return "no published checksum: compare the sha256 with a trusted copy if it matters"


def _download_all(source: Source, remotes: list[Remote], folder: Path, opts: Options) -> list[_Got]:
    folder.mkdir(parents=True, exist_ok=True)
    missing = [r for r in remotes if not _done(folder / r.subdir / r.name, r)]
    sizes = [r.size for r in missing]
    if missing and all(s is not None for s in sizes):
        have = sum(_part_size(folder / r.subdir / r.name) for r in missing)
        check_space(folder, sum(sizes) - have, f"{source.name} ({len(missing)} files)")
    got = []
    for r in remotes:
        dest = folder / r.subdir / r.name
        if _done(dest, r):
            opts.log(f"{dest}: already downloaded")
            sums = file_sums(dest)
        else:
            if dest.exists():
                opts.log(f"{dest}: size differs from the listing ({dest.stat().st_size} != {r.size} bytes); downloading again")
                dest.unlink()
            sums = download(r.url, dest, size=r.size, md5=r.md5 if opts.verify else None,
                            sha256=r.sha256 if opts.verify else None, retries=opts.retries,
                            progress=opts.progress, log=opts.log)
            opts.log(f"{r.name}: {human(dest.stat().st_size)}, sha256 {sums.sha256} ({_verdict(r, opts)})")
        got.append(_Got(dest, r, sums, ours=True))
    return got


def _done(dest: Path, remote: Remote) -> bool:
    return dest.is_file() and (remote.size is None or dest.stat().st_size == remote.size)


def _part_size(dest: Path) -> int:
    part = dest.with_name(dest.name + ".part")
    return part.stat().st_size if part.is_file() else 0


def _covered(target: Path, remotes: list[Remote]) -> bool:
    """Whether ``target``'s marker lists every file of ``remotes`` (same name and, when known, size)."""
    import json

    try:
        record = json.loads((target / MARKER).read_text())
    except (OSError, ValueError):
        return False
    fetched = {(f.get("subdir", ""), f.get("name")): f for f in record.get("files", []) if isinstance(f, dict)}
    for r in remotes:
        f = fetched.get((r.subdir, r.name))
        if f is None or (r.size is not None and f.get("size") not in (None, r.size)):
            if fetched:
                raise DatasetError(f"{target}: already fetched with other files ({', '.join(n for _, n in fetched)}); "
                                   f"remove it or choose another --out to fetch {r.name}")
            return False
    return True


def _check_target(target: Path) -> None:
    if target.is_symlink() or target.is_file():
        raise DatasetError(f"{target}: exists and is not a folder (move it away or choose another --out)")
    if target.is_dir() and (target / MARKER).is_file():
        return  # a finished fetch being redone with other files is refused in _covered
    if target.is_dir() and any(target.iterdir()):
        raise DatasetError(f"{target}: already exists and was not made by fetch (move it away or choose another --out)")


def _unpack_one(source: Source, got: _Got, into: Path, target: Path, opts: Options) -> None:
    kind = archive_kind(got.path)
    into.mkdir(parents=True, exist_ok=True)
    if kind in ("zip", "tar"):
        opts.log(f"unpacking {got.path.name}")
        unpack(got.path, into)
    elif kind is not None:
        raise DownloadError(f"{got.path}: cannot unpack a {kind} archive here (no {kind} reader is installed); "
                            f"unpack it yourself so that the files are in {target.parent / source.layout}")
    elif got.ours:
        os.replace(got.path, into / got.path.name)
    else:
        shutil.copy2(got.path, into / got.path.name)


def _record(source: Source, files: list[_Got]) -> dict:
    return {
        "source": source.name,
        "home": source.home,
        "fetched_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "files": [{"name": g.remote.name, "subdir": g.remote.subdir, "url": g.remote.url,
                   "size": g.path.stat().st_size if g.path.exists() else g.remote.size,
                   "md5": g.sums.md5, "sha256": g.sums.sha256} for g in files],
    }


def _remove_downloads(folder: Path, paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
    for sub in sorted((p for p in folder.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        _rmdir_if_empty(sub)
    _rmdir_if_empty(folder)
    _rmdir_if_empty(folder.parent)


def _rmdir_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass


# ----------------------------------------------------------------------------------------------
# Placing what was unpacked into the readers' layout


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and p.name not in SKIP_NAMES)


def _walk_dirs(root: Path, max_depth: int = 5) -> list[Path]:
    """``root`` and its visible sub-folders, shallowest first (breadth-first, sorted)."""
    out, level = [], [root]
    for _ in range(max_depth + 1):
        out += level
        level = [d for folder in level for d in _visible_dirs(folder)]
        if not level:
            break
    return out


def _found(raw: Path) -> str:
    """What the archives held at their top level (for messages)."""
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in raw.rglob("*") if p.parent == raw or
                   (p.parent.parent == raw and p.parent.name not in SKIP_NAMES))
    return ", ".join(names[:12]) + (" ..." if len(names) > 12 else "") if names else "nothing"


def _move_children(folder: Path, into: Path) -> None:
    for entry in sorted(folder.iterdir()):
        if entry.name in SKIP_NAMES:
            continue
        os.replace(entry, into / entry.name)


def _moved_note(raw: Path, inner: Path, what: str, target_hint: str) -> list[str]:
    if inner == raw:
        return []
    return [f"the archive keeps {what} in {inner.relative_to(raw).as_posix()}/: moved to {target_hint}"]


def place_soundingearth(raw: Path, stage: Path) -> list[str]:
    """The folder holding ``metadata.csv`` becomes the dataset folder; other top-level entries join it."""
    root = next((d for d in _walk_dirs(raw) if (d / "metadata.csv").is_file()), None)
    if root is None:
        raise DatasetError(f"no metadata.csv in what was downloaded (found: {_found(raw)})")
    notes = _moved_note(raw, root, "the dataset", str(stage))
    ancestors = {root, *root.parents}
    _move_children(root, stage)
    for entry in sorted(raw.iterdir()):  # e.g. images/ shipped in a second archive
        if entry not in ancestors and entry.name not in SKIP_NAMES and not (stage / entry.name).exists():
            os.replace(entry, stage / entry.name)
    return notes


def place_classes(raw: Path, stage: Path) -> list[str]:
    """The shallowest folder with two or more sub-folders holding images: its sub-folders are the classes."""
    by_depth: dict[int, list[Path]] = {}
    for d in _walk_dirs(raw):
        classes = [c for c in _visible_dirs(d) if _has_images(c)]
        if len(classes) >= 2:
            by_depth.setdefault(len(d.relative_to(raw).parts), []).append(d)
    if not by_depth:
        raise DatasetError(f"no folder of class sub-folders with images in what was downloaded (found: {_found(raw)})")
    candidates = by_depth[min(by_depth)]
    if len(candidates) > 1:
        raise DatasetError("more than one folder of class sub-folders: "
                           f"{', '.join(c.relative_to(raw).as_posix() for c in candidates)}; place the one you want yourself")
    root = candidates[0]
    notes = _moved_note(raw, root, "the class folders", str(stage))
    for c in _visible_dirs(root):
        if _has_images(c):
            os.replace(c, stage / c.name)
    return notes


def _has_images(folder: Path) -> bool:
    return any(p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() for p in folder.iterdir())


def place_deepglobe(raw: Path, stage: Path) -> list[str]:
    """``train/`` with ``{id}_sat.jpg`` + ``{id}_mask.png`` (or the ``training_data/`` split layout)."""
    for d in _walk_dirs(raw):
        if (d / "training_data").is_dir() and (d / "test_data").is_dir():
            notes = _moved_note(raw, d, "training_data/ and test_data/", str(stage))
            for name in ("training_data", "test_data"):
                os.replace(d / name, stage / name)
            return notes
    tiles = [d for d in _walk_dirs(raw) if any(p.name.endswith("_mask.png") for p in d.iterdir())
             and any(p.stem.endswith("_sat") for p in d.iterdir())]
    if not tiles:
        raise DatasetError(f"no folder with *_sat.jpg and *_mask.png files in what was downloaded (found: {_found(raw)})")
    folder = next((d for d in tiles if d.name == "train"), tiles[0])
    (stage / "train").mkdir()
    _move_children(folder, stage / "train")
    rel = folder.relative_to(raw).as_posix()
    return [] if rel == "train" else [f"the archive keeps the labelled tiles in {rel or '.'}/: moved to {stage}/train"]


def place_advance(raw: Path, stage: Path) -> list[str]:
    """``vision/<class>/`` and ``sound/<class>/``, found by name (``vision``/``sound``, any case, or containing it)."""
    notes = []
    for part in ("vision", "sound"):
        dirs = _walk_dirs(raw)
        folder = (next((d for d in dirs if d.name.lower() == part), None)
                  or next((d for d in dirs if part in d.name.lower() and d != raw), None))
        if folder is None:
            raise DatasetError(f"no {part}/ folder in what was downloaded (found: {_found(raw)})")
        if folder.relative_to(raw).as_posix() != part:
            notes.append(f"the archive keeps {part}/ as {folder.relative_to(raw).as_posix()}/: moved to {stage}/{part}")
        os.replace(folder, stage / part)
    return notes


def place_checkpoints(raw: Path, stage: Path) -> list[str]:
    """Everything as downloaded: ``<release tag>/<file>``."""
    _move_children(raw, stage)
    return []


PLACE: dict[str, Callable[[Path, Path], list[str]]] = {
    "soundingearth": place_soundingearth, "classes": place_classes, "deepglobe": place_deepglobe,
    "advance": place_advance, "checkpoints": place_checkpoints,
}


# ----------------------------------------------------------------------------------------------
# Checking the result with the project's readers


def _checked(source: Source, stage: Path, target: Path) -> str:
    """One summary line of the placed folder, read by the project's own readers; DatasetError
    (naming ``target``, not the staging folder) when they refuse it."""
    try:
        return CHECK[source.place](stage).replace(str(stage), str(target))
    except DatasetError as e:
        raise DatasetError(f"{one_line(e).replace(str(stage), str(target))} (what arrived does not give the "
                           f"layout {source.layout})") from None


def check_soundingearth(root: Path) -> str:
    from model.data.metadata import (
        AUDIO_DIR,
        AUDIO_SUFFIXES,
        IMAGE_DIR,
        SPECTROGRAM_DIR,
        SPECTROGRAM_SUFFIXES,
        files_by_key,
        read_metadata,
    )
    from model.data.metadata import (
        IMAGE_SUFFIXES as META_IMAGE_SUFFIXES,
    )

    table = read_metadata(root)
    counts = {name: len(files_by_key(root / name, suffixes)) for name, suffixes in (
        (IMAGE_DIR, META_IMAGE_SUFFIXES), (SPECTROGRAM_DIR, SPECTROGRAM_SUFFIXES), (AUDIO_DIR, AUDIO_SUFFIXES))}
    line = (f"{root}: metadata.csv with {len(table)} places; {counts[IMAGE_DIR]} images, "
            f"{counts[SPECTROGRAM_DIR]} spectrograms, {counts[AUDIO_DIR]} recordings")
    missing = [] if counts[IMAGE_DIR] else [f"{IMAGE_DIR}/"]
    if not counts[SPECTROGRAM_DIR] and not counts[AUDIO_DIR]:
        missing.append(f"{SPECTROGRAM_DIR}/ or {AUDIO_DIR}/")
    if missing:
        top = ", ".join(sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir() if p.name != MARKER))
        line += (f"\nnote: the readers need {' and '.join(missing)} named by key beside metadata.csv, and this archive "
                 f"has none (it holds: {top}); convert or add them before training")
    return line


def check_classes(root: Path) -> str:
    from model.data.folder_datasets import scan_class_folders

    found = scan_class_folders(root, check=False)
    names = ", ".join(found.classes[:4]) + (", ..." if len(found.classes) > 4 else "")
    return f"{root}: {len(found)} images in {len(found.classes)} classes ({names})"


def check_deepglobe(root: Path) -> str:
    from model.data.folder_datasets import scan_deepglobe

    tiles = scan_deepglobe(root, check=False)
    return f"{root}: {len(tiles['train'])} training tiles" + (f", {len(tiles['test'])} test tiles" if tiles["test"] else "")


def check_advance(root: Path) -> str:
    from model.data.folder_datasets import scan_advance

    samples, classes = scan_advance(root)
    return f"{root}: {len(samples)} image/recording pairs in {len(classes)} classes"


def check_checkpoints(root: Path) -> str:
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != MARKER)
    if not files:
        raise DatasetError(f"{root}: no files arrived")
    shown = ", ".join(p.relative_to(root).as_posix() for p in files[:6]) + (" ..." if len(files) > 6 else "")
    return (f"{root}: {len(files)} files ({shown}); a checkpoint becomes a bundle with "
            f"python -m model.import_soundingearth {files[0]} --out BUNDLE")


CHECK: dict[str, Callable[[Path], str]] = {
    "soundingearth": check_soundingearth, "classes": check_classes, "deepglobe": check_deepglobe,
    "advance": check_advance, "checkpoints": check_checkpoints,
}


def describe(source: Source) -> list[str]:
    """Lines of ``--list`` for one source."""
    flag = "  [manual download]" if source.kind == "manual" else ""
    where = source.api if source.api else (source.files[0].url if source.files else source.home)
    return [f"{source.name:<14}{source.holds}{flag}",
            f"{'':<14}page: {source.home}",
            *([f"{'':<14}from: {where}"] if where != source.home else []),
            f"{'':<14}checksum: {source.checksum}",
            f"{'':<14}into: DIR/{source.layout}"]
