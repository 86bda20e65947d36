"""``python -m app.demo``: build the built-in demo (a small bundle and a mapped scene) once.

Everything comes from the synthetic world of one seed, so the same seed gives the same demo:

1. ``pairs``      SoundingEarth-format image/audio pairs (``model.synth.pairs``);
2. ``scene``      a georeferenced GeoTIFF of the same world (``model.synth.scene``, EPSG:32632);
3. ``pretrain``   a short audiovisual pretraining of the image and audio encoders (``model.train.pretrain``),
                  with a budget in epochs;
4. ``deepglobe``  a DeepGlobe-layout land-cover set of the same world (``model.synth.downstream``);
5. ``landcover``  a DeepLabV3+ land-cover head fine-tuned from the pretrained encoder
                  (``model.finetune segment``; it carries the audio encoder along);
6. ``bundle``     the demo bundle ``OUT/bundle`` (a copy of the land-cover bundle);
7. ``soundscape`` the soundscape head fitted in that bundle's embedding space (``model.heads.soundscape``);
8. ``gallery``    every pair's recording embedded into ``OUT/bundle/gallery.parquet`` (``model.heads.gallery``);
9. ``onnx``       ONNX graphs (and INT8 image graphs, full demo only) in the bundle (``export.onnx``);
10. ``map``       the scene mapped into ``OUT/maps/scene/`` (``geo.map``).

Each step is skipped when its output exists, so a killed build resumes where it stopped. The
trainers (steps 3 and 5) run as ``python -m ...`` subprocesses (this module never imports
Lightning) with budgets in epochs, a fixed seed and a fixed thread count, so the same seed gives
the same bundle (same content hash) on a busy and on an idle machine. Their wall-clock limits are
safety stops only: a training step that hits one is *truncated*, and a truncated step fails the
build (DemoError naming the step; a rerun retries it).

Before declaring success the build checks its quality gates (:mod:`app.demo_gates`: gallery
spread, held-out retrieval, soundscape head against its class-frequency baseline, land-cover
accuracy on held-out tiles); a failed gate is a one-line DemoError naming the gate and the figure.
The mapped scene is then scored against the scene's truth (land-cover agreement per pixel,
soundscape agreement per cell; reported, not gated). ``OUT/DONE.json`` is written last with the
seed, the size (with the gate thresholds), the gates' figures, the map's scores, the versions, the paths and each step's wall-clock and CPU seconds; with it in place a
rerun returns at once. ``--quick`` builds a tiny demo (for tests, well under a minute on
an idle 2-core machine); ``--force`` deletes ``OUT`` (only when it holds nothing but a demo) and builds again.

Python API: :func:`build_demo`, :func:`read_demo`.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

from app.demo_gates import Thresholds, check_gates, first_failure, gates_record
from model.bundle.files import GALLERY_FILE, META_FILE, ONNX_MANIFEST, REQUIRED_FILES
from model.core.atomic import staging_dir, write_text_atomic
from model.core.cli import run_cli
from model.core.errors import GeoaudioError

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "demo"
DONE_FILE = "DONE.json"
DEMO_FORMAT = 1
MAP_BACKEND = "auto"
ONNX_EXPORTER = "torchscript"  # 2-3x faster to export than dynamo for these ResNets; parity-checked the same way
AUDIO_SOURCE = "audio"  # the recordings: the demo's audio input (DemoSize.n_mels) is not the JPEGs' 128 bands
DEMO_ENTRIES = {"data", "runs", "bundle", "maps", DONE_FILE}  # what OUT may hold


class DemoError(GeoaudioError, ValueError):
    """A demo step that failed, or an OUT folder built differently; the message says which."""


@dataclass(frozen=True)
class DemoSize:
    """How big each part of the demo is (pixels, seconds, counts).

    ``pair_px`` image side of a pair at 0.5 m/px; the encoder sees a centre crop of ``crop`` x
    ``pair_px`` pixels at ``tile_px`` (so its ground sample distance is 0.5 * crop * pair_px /
    tile_px metres per pixel); ``n_mels`` x ``chunk_frames`` the audio encoder's input (mel bands x
    frames of 512 / 22,050 s = 23.2 ms); ``scene_px`` scene side at 0.5 m/px; ``loss`` the pretraining
    loss (contrastive: at the full demo's 80 steps it passed the retrieval gate where batch-all did not);
    ``epochs`` / ``seg_epochs`` the training budgets; ``*_safety_min`` wall-clock safety stops (hitting one fails the build);
    ``threads`` torch intra-op threads of the trainers; ``gates`` the quality thresholds;
    ``map_overlap`` how many tiles cover a cell side when the scene is mapped (``stride =
    tile_px / map_overlap``; 2: overlapping tiles, land cover blended with geo.blend's window).
    """

    name: str
    pairs: int
    pair_px: int
    duration_s: tuple[float, float]
    scene_px: int
    tile_px: int
    crop: float
    n_mels: int
    chunk_frames: int
    loss: str
    epochs: int
    batch: int
    pretrain_safety_min: float
    deepglobe: int
    deepglobe_px: int
    seg_epochs: int
    seg_crops: int
    seg_batch: int
    decoder_channels: int
    seg_safety_min: float
    onnx: bool
    int8: bool
    threads: int
    gates: Thresholds
    map_overlap: int = 1  # tiles per cell side when mapping: 2 = tiles overlap by half and land cover is blended

    @property
    def tile_gsd(self) -> float:
        """Metres per pixel of the encoder input: 0.5 * crop * pair_px / tile_px."""
        return 0.5 * self.crop * self.pair_px / self.tile_px

    @property
    def map_cell(self) -> float:
        """Metres of one cell of the mapped scene: ``step`` scene pixels of 0.5 m, ``step = round(stride *
        tile_gsd / 0.5)`` with ``stride = tile_px / map_overlap`` (geo.grid's cell grid), so the scene's
        soundscape truth, made on these cells, lies on the map's grid cell for cell."""
        stride = self.tile_px // self.map_overlap
        return 0.5 * max(1, round(stride * self.tile_gsd / 0.5))


FULL = DemoSize("full", pairs=400, pair_px=256, duration_s=(3.5, 5.0), scene_px=1536, tile_px=64, crop=0.375,
                n_mels=64, chunk_frames=64, loss="contrastive", epochs=10, batch=32, pretrain_safety_min=30.0,
                deepglobe=80, deepglobe_px=192, seg_epochs=8,
                seg_crops=2, seg_batch=16, decoder_channels=64, seg_safety_min=15.0, onnx=True, int8=True, threads=2,
                gates=Thresholds(max_gallery_cosine=0.9, recall_k=10, min_recall_over_chance=2.0,
                                 min_soundscape_margin=0.10, min_landcover_accuracy=0.80), map_overlap=2)
# the quick demo trains for one step: its gates catch a collapsed gallery and a soundscape head below its
# baseline; held-out retrieval and land cover are measured and recorded, not held to a threshold
QUICK = DemoSize("quick", pairs=40, pair_px=128, duration_s=(3.0, 3.5), scene_px=384, tile_px=64, crop=0.5,
                 n_mels=64, chunk_frames=64, loss="contrastive", epochs=1, batch=16, pretrain_safety_min=5.0, deepglobe=6, deepglobe_px=128, seg_epochs=1,
                 seg_crops=1, seg_batch=8, decoder_channels=32, seg_safety_min=5.0, onnx=False, int8=False, threads=2,
                 gates=Thresholds(max_gallery_cosine=0.99, recall_k=1, min_recall_over_chance=0.0,
                                  min_soundscape_margin=0.0, min_landcover_accuracy=0.0))


@dataclass(frozen=True)
class Demo:
    """A finished demo: its folder and what DONE.json says about it."""

    root: Path
    bundle: Path
    scene: Path
    map_dir: Path
    pairs: Path
    backend: str
    seed: int
    size: str
    info: dict

    @property
    def map_stride(self) -> int:
        """The stride (model pixels) the scene was mapped with: ``tile_px / map_overlap``."""
        size = self.info["size"]
        return int(size["tile_px"]) // int(size.get("map_overlap", 1))


@dataclass
class _Layout:
    """Where each step writes, under OUT."""

    root: Path

    @property
    def pairs(self) -> Path:
        return self.root / "data" / "pairs"

    @property
    def scene_dir(self) -> Path:
        return self.root / "data" / "scene"

    @property
    def scene(self) -> Path:
        return self.scene_dir / "scene.tif"

    @property
    def deepglobe(self) -> Path:
        return self.root / "data" / "deepglobe"

    @property
    def pretrain(self) -> Path:
        return self.root / "runs" / "pretrain"

    @property
    def landcover(self) -> Path:
        return self.root / "runs" / "landcover"

    @property
    def bundle(self) -> Path:
        return self.root / "bundle"

    @property
    def maps(self) -> Path:
        return self.root / "maps"

    @property
    def map_dir(self) -> Path:
        return self.maps / self.scene.stem


def read_demo(out: str | os.PathLike = DEFAULT_OUT) -> Demo | None:
    """The finished demo in ``out`` (from its DONE.json), or None when it is not built."""
    root = Path(out)
    try:
        info = json.loads((root / DONE_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or info.get("format") != DEMO_FORMAT:
        return None
    paths = info.get("paths", {})
    try:
        demo = Demo(root=root, bundle=root / paths["bundle"], scene=root / paths["scene"],
                    map_dir=root / paths["map"], pairs=root / paths["pairs"], backend=str(info["map_backend"]),
                    seed=int(info["seed"]), size=str(info["size"]["name"]), info=info)
    except (KeyError, TypeError, ValueError):
        return None
    return demo if (demo.bundle / META_FILE).is_file() and demo.scene.is_file() else None


# ---- running one step --------------------------------------------------------------------------

def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and its finished children."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _subprocess(args: Sequence[str], quiet: bool, what: str) -> None:
    """Run ``python -m ...`` (``args`` after the interpreter); DemoError with its last error line."""
    cmd = [sys.executable, *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if quiet:
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        tail = (done.stderr or done.stdout or "").strip().splitlines()
    else:
        done = subprocess.run(cmd, cwd=ROOT, env=env)
        tail = []
    if done.returncode != 0:
        errors = [line for line in tail if line.startswith("error:")]
        last = (errors or tail or [f"exit status {done.returncode}"])[-1]
        raise DemoError(f"demo step {what} failed: {last.removeprefix('error: ')} (command: {' '.join(args)})")


# ---- the steps ---------------------------------------------------------------------------------

def _pairs(lay: _Layout, size: DemoSize, seed: int, quiet: bool) -> None:
    from model.synth.pairs import write_pairs

    write_pairs(lay.pairs, size.pairs, size.pair_px, seed, size.duration_s, progress=not quiet)


def _scene(lay: _Layout, size: DemoSize, seed: int, quiet: bool) -> None:
    from model.synth.scene import write_scene

    write_scene(lay.scene_dir, size.scene_px, 0.5, seed, cell=size.map_cell, progress=not quiet)


def _pretrain(lay: _Layout, size: DemoSize, seed: int, quiet: bool) -> None:
    args = ["-m", "model.pretrain", "--data", str(lay.pairs), "--out", str(lay.pretrain),
            "--image-size", str(size.tile_px), "--crop", str(size.crop), "--gsd", str(size.tile_gsd),
            "--audio-source", AUDIO_SOURCE, "--n-mels", str(size.n_mels), "--chunk-frames", str(size.chunk_frames),
            "--loss", size.loss, "--epochs", str(size.epochs), "--batch-size", str(size.batch),
            "--max-minutes", str(size.pretrain_safety_min), "--threads", str(size.threads),
            "--num-workers", "1", "--precision", "32-true", "--accelerator", "cpu", "--seed", str(seed)]
    if (lay.pretrain / "checkpoints" / "last.ckpt").is_file():
        args.append("--resume")
    _subprocess(args, quiet, "pretrain")
    _check_not_truncated(lay.pretrain / "bundle", "pretrain", size.pretrain_safety_min)


def _deepglobe(lay: _Layout, size: DemoSize, seed: int, quiet: bool) -> None:
    from model.synth.downstream import write_deepglobe

    with staging_dir(lay.deepglobe) as folder:
        write_deepglobe(folder, size.deepglobe, size.deepglobe_px, seed, progress=not quiet)


def _landcover(lay: _Layout, size: DemoSize, seed: int, quiet: bool) -> None:
    args = ["-m", "model.finetune", "segment", "--data", str(lay.deepglobe), "--init", str(lay.pretrain / "bundle"),
            "--epochs", str(size.seg_epochs), "--out", str(lay.landcover), "--seed", str(seed),
            "--crop-size", str(size.tile_px), "--crops-per-tile", str(size.seg_crops),
            "--batch-size", str(size.seg_batch), "--decoder-channels", str(size.decoder_channels),
            "--gsd", str(size.tile_gsd), "--max-minutes", str(size.seg_safety_min), "--threads", str(size.threads),
            "--num-workers", "0", "--precision", "32-true", "--accelerator", "cpu", "--label", "demo",
            "--freeze-encoder"]
    _subprocess(args, quiet, "landcover")
    _check_not_truncated(lay.landcover / "bundle", "landcover", size.seg_safety_min)


def _truncation(bundle: Path) -> str | None:
    """How the training run behind ``bundle`` was cut short by its safety stop (from its
    provenance), or None when it finished its budget or there is no bundle."""
    try:
        provenance = json.loads((bundle / META_FILE).read_text()).get("provenance", {})
    except (OSError, ValueError, AttributeError):
        return None
    if not provenance.get("truncated"):
        return None
    return (f"training was truncated after {provenance.get('steps', '?')} steps "
            f"({provenance.get('epochs_run', '?')} of {provenance.get('epochs', '?')} epochs)")


def _trained(bundle: Path) -> bool:
    """A training step is done when its bundle exists and its run was not truncated."""
    return (bundle / META_FILE).is_file() and _truncation(bundle) is None


def _check_not_truncated(bundle: Path, step: str, minutes: float) -> None:
    """DemoError (one line, naming the step) when the run behind ``bundle`` hit its safety stop."""
    note = _truncation(bundle)
    if note:
        raise DemoError(f"demo step {step} failed: {note} by its {minutes:g}-minute safety stop; the machine is "
                        "too busy or too slow for the demo's budget (a rerun continues it)")


def _has_landcover_step() -> bool:
    """Whether ``model.finetune segment`` is installed (land cover is optional in the demo)."""
    from importlib.util import find_spec

    return find_spec("model.finetune") is not None and find_spec("model.train.segment") is not None


def _bundle(lay: _Layout, size: DemoSize, seed: int, quiet: bool) -> None:
    source = lay.landcover / "bundle"
    if not (source / META_FILE).is_file():
        source = lay.pretrain / "bundle"
    with staging_dir(lay.bundle) as folder:
        for name in REQUIRED_FILES:
            shutil.copy2(source / name, folder / name)


def _soundscape(lay: _Layout, size: DemoSize, seed: int, quiet: bool) -> None:
    from model.bundle import load
    from model.heads.soundscape import fit_soundscape

    fit_soundscape(load(lay.bundle), lay.pairs, audio_source=AUDIO_SOURCE, progress=not quiet)


def _gallery(lay: _Layout, size: DemoSize, seed: int, quiet: bool) -> None:
    from model.bundle import load
    from model.heads.gallery import build_gallery

    build_gallery(load(lay.bundle), lay.pairs, audio_source=AUDIO_SOURCE, progress=not quiet)


def _onnx(lay: _Layout, size: DemoSize, seed: int, quiet: bool) -> None:
    from export.onnx import export_bundle

    export_bundle(lay.bundle, exporter=ONNX_EXPORTER, calibration=lay.scene if size.int8 else None,
                  parity_tiles=[lay.scene],
                  log=(lambda line: None) if quiet else print, progress=not quiet)


def _map(lay: _Layout, size: DemoSize, seed: int, quiet: bool) -> None:
    from geo.map import MapOptions, map_files

    options = MapOptions(progress=not quiet, stride=size.tile_px // size.map_overlap)  # = Demo.map_stride
    result = map_files([lay.scene], lay.bundle, lay.maps, MAP_BACKEND, options)[0]
    if result.status not in ("mapped", "skipped"):  # failed, or busy (another process maps it)
        raise DemoError(f"demo step map failed: {result.message}")


def _onnx_current(lay: _Layout) -> bool:
    from model.bundle import content_hash

    try:
        manifest = json.loads((lay.bundle / ONNX_MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return manifest.get("bundle_hash") == content_hash(lay.bundle)


def _has_head(lay: _Layout, head: str) -> bool:
    try:
        meta = json.loads((lay.bundle / META_FILE).read_text())
    except (OSError, ValueError):
        return False
    return head in meta.get("heads", {})


@dataclass(frozen=True)
class _Step:
    """One step: its name, what it does (for the progress line), whether it is done, how to run it."""

    name: str
    what: str
    done: Callable[[_Layout], bool]
    run: Callable[[_Layout, DemoSize, int, bool], None]


def _steps(size: DemoSize, landcover: bool) -> list[_Step]:
    steps = [
        _Step("pairs", f"{size.pairs} synthetic image/audio pairs ({size.pair_px} px)",
              lambda lay: (lay.pairs / "metadata.csv").is_file(), _pairs),
        _Step("scene", f"a {size.scene_px} x {size.scene_px} px GeoTIFF scene at 0.5 m",
              lambda lay: (lay.scene_dir / "soundscape_truth.csv").is_file() and lay.scene.is_file(), _scene),
        _Step("pretrain", f"audiovisual pretraining ({size.epochs} epochs, {size.tile_px} px tiles)",
              lambda lay: _trained(lay.pretrain / "bundle"), _pretrain),
    ]
    if landcover:
        steps += [
            _Step("deepglobe", f"{size.deepglobe} DeepGlobe-layout land-cover tiles",
                  lambda lay: lay.deepglobe.is_dir(), _deepglobe),
            _Step("landcover", f"land-cover head ({size.seg_epochs} epochs)",
                  lambda lay: _trained(lay.landcover / "bundle"), _landcover),
        ]
    steps += [
        _Step("bundle", "the demo bundle", lambda lay: (lay.bundle / META_FILE).is_file(), _bundle),
        _Step("soundscape", "soundscape head", lambda lay: _has_head(lay, "soundscape"), _soundscape),
        _Step("gallery", "audio gallery", lambda lay: (lay.bundle / GALLERY_FILE).is_file(), _gallery),
    ]
    if size.onnx:
        steps.append(_Step("onnx", "ONNX export" + (" with INT8 image graphs" if size.int8 else ""),
                           _onnx_current, _onnx))
    steps.append(_Step("map", "mapping the scene", lambda lay: (lay.map_dir / "run.json").is_file(), _map))
    return steps


# ---- the whole build -----------------------------------------------------------------------------

def _versions() -> dict[str, str | None]:
    from importlib import metadata

    out: dict[str, str | None] = {"python": sys.version.split()[0]}
    for name in ("geoaudio", "torch", "onnxruntime", "rasterio", "numpy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _check_reusable(root: Path, size: DemoSize, seed: int) -> Demo | None:
    """The finished demo when it matches; DemoError when OUT holds a different one."""
    demo = read_demo(root)
    if demo is None:
        return None
    if demo.seed != seed or demo.size != size.name:
        raise DemoError(f"{root}: holds the {demo.size} demo of seed {demo.seed}, not the {size.name} demo of "
                        f"seed {seed}; pass --force to rebuild it or choose another --out")
    return demo


def _check_deletable(root: Path) -> None:
    """DemoError unless ``root`` is missing, empty or holds only what a demo build writes (so that
    --force never deletes an unrelated folder)."""
    if not root.exists():
        return
    if not root.is_dir():
        raise DemoError(f"{root}: exists and is not a folder")
    strangers = sorted(p.name for p in root.iterdir() if p.name not in DEMO_ENTRIES and not p.name.startswith("."))
    if strangers:
        raise DemoError(f"{root}: does not look like a demo folder (it holds {', '.join(strangers[:3])}); "
                        f"refusing to delete it with --force")


def _log(quiet: bool, text: str) -> None:
    if not quiet:
        print(text, flush=True)


def build_demo(out: str | os.PathLike = DEFAULT_OUT, seed: int = 0, quick: bool = False, force: bool = False,
               quiet: bool = False) -> Demo:
    """Build the demo in ``out`` (module doc) and return it; a finished demo returns at once."""
    root = Path(out)
    size = QUICK if quick else FULL
    if force:
        _check_deletable(root)
        shutil.rmtree(root, ignore_errors=True)
    demo = _check_reusable(root, size, seed)
    if demo is not None:
        _log(quiet, f"demo ready in {root} (built {demo.info.get('created', '?')}); --force rebuilds it")
        return demo
    root.mkdir(parents=True, exist_ok=True)
    lay = _Layout(root)
    landcover = _has_landcover_step()
    steps = _steps(size, landcover)
    timings: dict[str, dict[str, float]] = {}
    started = time.perf_counter()
    for i, step in enumerate(steps, 1):
        if step.done(lay):
            _log(quiet, f"[{i}/{len(steps)}] {step.name}: already done")
            continue
        _log(quiet, f"[{i}/{len(steps)}] {step.name}: {step.what} ...")
        t0, c0 = time.perf_counter(), _cpu_seconds()
        step.run(lay, size, seed, quiet)
        timings[step.name] = {"wall_s": round(time.perf_counter() - t0, 1), "cpu_s": round(_cpu_seconds() - c0, 1)}
        _log(quiet, f"[{i}/{len(steps)}] {step.name}: done in {timings[step.name]['wall_s']:.0f} s")
    gates = _check_gates(lay, size, quiet)
    scores = _map_scores(lay, quiet)
    return _write_done(lay, size, seed, landcover, timings, gates, scores, time.perf_counter() - started)


def _map_scores(lay: _Layout, quiet: bool) -> dict:
    """The mapped scene against the scene's truth (:func:`geo.evaluate.evaluate_map`): land-cover
    overall accuracy and mIoU per pixel, soundscape agreement per cell with its baseline."""
    from geo.evaluate import evaluate_map

    report = evaluate_map(lay.map_dir, lay.scene_dir)
    scores = {k: v for k, v in report.items() if k in ("landcover", "soundscape")}
    if "landcover" in scores:
        lc = scores["landcover"]
        _log(quiet, f"map of the scene: land cover agrees with the truth on {lc['overall_accuracy']:.1%} of "
                    f"{lc['pixels']} pixels (mIoU {lc['miou']:.1%})")
    if "soundscape" in scores:
        sc = scores["soundscape"]
        _log(quiet, f"map of the scene: soundscape agrees on {sc['agreement']:.1%} of {sc['cells']} cells "
                    f"(always '{sc['baseline_class']}': {sc['baseline']:.1%})")
    return scores


def _check_gates(lay: _Layout, size: DemoSize, quiet: bool) -> dict:
    """The quality gates' record (:mod:`app.demo_gates`); DemoError naming the first failed gate."""
    results = check_gates(lay.bundle, lay.pairs, size.crop, size.gates, AUDIO_SOURCE)
    for r in results:
        _log(quiet, f"quality gate {r.name}: {'passed' if r.passed else 'FAILED'}: {r.text}")
    failure = first_failure(results)
    if failure:
        raise DemoError(f"{failure}; the demo in {lay.root} is not usable (--force rebuilds it)")
    return gates_record(results, size.gates)


def _write_done(lay: _Layout, size: DemoSize, seed: int, landcover: bool, timings: dict, gates: dict,
                map_scores: dict, total_s: float) -> Demo:
    from model.bundle import content_hash

    info = {
        "format": DEMO_FORMAT, "seed": seed, "size": asdict(size), "landcover": landcover,
        "map_backend": MAP_BACKEND, "bundle_hash": content_hash(lay.bundle), "gates": gates,
        "map_scores": map_scores,
        "paths": {k: str(getattr(lay, k if k != "map" else "map_dir").relative_to(lay.root))
                  for k in ("bundle", "scene", "map", "pairs")},
        "timings": timings, "total_wall_s": round(total_s, 1), "cpu_count": os.cpu_count(),
        "versions": _versions(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_text_atomic(lay.root / DONE_FILE, json.dumps(info, indent=2) + "\n")
    demo = read_demo(lay.root)
    assert demo is not None
    return demo


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of ``python -m app.demo``."""
    p = argparse.ArgumentParser(
        prog="python -m app.demo",
        description="Build the built-in demo once: synthetic pairs and a GeoTIFF scene, a short pretraining, "
                    "land-cover and soundscape heads, an audio gallery, ONNX graphs and the mapped scene. "
                    "Steps already done are skipped (a killed build resumes); when OUT/DONE.json exists the "
                    "command returns at once. The app (streamlit run app/main.py) shows this demo.",
        epilog="Takes a few minutes on a 2-core machine; OUT/DONE.json records each step's time.")
    p.add_argument("--out", default=str(DEFAULT_OUT), help=f"demo folder (default {DEFAULT_OUT})")
    p.add_argument("--seed", type=int, default=0, help="world and training seed (default 0)")
    p.add_argument("--quick", action="store_true", help="a tiny demo for tests (well under a minute)")
    p.add_argument("--force", action="store_true", help="delete OUT and build it again")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m app.demo``."""
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    demo = build_demo(args.out, args.seed, args.quick, args.force, args.quiet)
    if not args.quiet:
        print(f"demo bundle {demo.bundle}, scene {demo.scene}, map {demo.map_dir} "
              f"(build {demo.info.get('total_wall_s', 0):.0f} s; this run {time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
