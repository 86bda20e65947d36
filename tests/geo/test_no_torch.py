"""The edge story: a bundle exported to ONNX maps and answers queries where PyTorch cannot be imported.

A bundle is made and exported (float32 + INT8) here, with PyTorch. The commands a practitioner
runs on an ONNX-Runtime-only machine (``python -m geo.map``, ``python -m geo.query --audio``) then
run in child processes whose ``sitecustomize`` puts an import blocker first on ``sys.meta_path``:
``import torch`` (and torchvision, timm, Lightning, lightly, smp) fails there as on a machine
without them. At exit each child reports which blocked modules ended up in ``sys.modules`` (none
may). The children's products are checked against the same bundle run with the torch backend.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio

from export.onnx import export_bundle
from export.parity import per_sample_cosine
from geo.map import MapOptions, map_files
from model.bundle import load
from model.bundle.encoder_spec import EncoderSpec, expected_shapes, infer_spec
from tests.bundles import RGB, SOUNDS, map_bundle as make_bundle

ROOT = Path(__file__).resolve().parents[2]
ROBIN = ROOT.parent / "shared" / "data" / "audio" / "robin.ogg"
TILE, GSD, DIM = 32, 3000.0, 16  # a 96 km cell: RGB.byte (791 x 718 px of 300 m) is 3 x 3 cells
CELL_PX = round(TILE * GSD / 300.0)  # 320 input pixels per cell side (RGB.byte's pixels are ~300 m)
BLOCKED = ("torch", "torchvision", "torchaudio", "timm", "lightning", "pytorch_lightning", "lightly",
           "segmentation_models_pytorch")
GALLERY_SIZE = 5

SITECUSTOMIZE = f'''"""Test helper (tests/geo/test_no_torch.py): PyTorch and friends cannot be imported in this process."""
import atexit
import json
import os
import sys

BLOCKED = {set(BLOCKED)!r}


class NoTorch:
    """A meta-path finder that answers every import of a blocked package as 'not installed'."""

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the no-torch test)", name=name)
        return None


sys.meta_path.insert(0, NoTorch())


def report():
    loaded = sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED)
    with open(os.environ["NO_TORCH_REPORT"], "a") as f:
        f.write(json.dumps({{"argv": sys.argv, "loaded": loaded}}) + "\\n")


atexit.register(report)
'''


class Edge:
    """A machine without PyTorch: runs ``python -m ...`` commands under the import blocker."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
        self.report = folder / "report.jsonl"
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), str(ROOT)]),
                    "NO_TORCH_REPORT": str(self.report)}
        self.env.pop("GEOAUDIO_DEBUG", None)  # errors must be one line, not tracebacks

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, *args], cwd=ROOT, env=self.env, capture_output=True, text=True,
                              timeout=240)

    def loaded(self) -> list[dict]:
        """One entry per finished child: its argv and the blocked modules it had loaded at exit."""
        return [json.loads(line) for line in self.report.read_text().splitlines()]


def _write_gallery(bundle_dir: Path) -> np.ndarray:
    """A small gallery.parquet (random embeddings, keys 100..) so tiles.gpkg gets near_* columns."""
    import pandas as pd

    from model.bundle.gallery import audio_encoder_hash, gallery_path, write_gallery

    bundle = load(bundle_dir)
    gallery = np.random.default_rng(1).normal(size=(GALLERY_SIZE, DIM)).astype(np.float32)
    rows = pd.DataFrame({"key": np.arange(100, 100 + GALLERY_SIZE), "longitude": 0.0, "latitude": 0.0,
                         "title": [f"recording {i}" for i in range(GALLERY_SIZE)], "description": "",
                         "audio_path": ""})
    write_gallery(gallery_path(bundle), rows, gallery,
                  {"bundle_hash": bundle.content_hash(), "audio_encoder_hash": audio_encoder_hash(bundle),
                   "audio_source": "test", "data": "", "embedding_dim": str(DIM), "distance": bundle.distance})
    return gallery


@pytest.fixture(scope="module")
def edge(tmp_path_factory) -> Edge:
    return Edge(tmp_path_factory.mktemp("no_torch"))


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory) -> Path:
    """Made and exported on the 'workstation' (this process, with PyTorch): narrow random encoders with
    a soundscape head (no land-cover head: its standard ResNet-18 would triple the export time),
    float32 and INT8 graphs, and a gallery."""
    path = make_bundle(tmp_path_factory.mktemp("workstation") / "bundle", gsd=GSD, landcover=False,
                       tile_size=TILE, dim=DIM)
    export_bundle(path, exporter="torchscript", calibration=RGB, calibration_tiles=8, parity_audio=[ROBIN],
                  log=lambda line: None)
    _write_gallery(path)
    return path


@pytest.fixture(scope="module")
def edge_runs(edge, bundle_dir, tmp_path_factory) -> dict[str, Path]:
    """``python -m geo.map`` with onnx and onnx-int8 and ``python -m geo.query --audio`` without torch."""
    out = tmp_path_factory.mktemp("edge_out")
    maps = {}
    for backend in ("onnx", "onnx-int8"):
        done = edge.run("-m", "geo.map", str(RGB), "--bundle", str(bundle_dir), "--out", str(out / backend),
                        "--backend", backend, "--no-progress", "--workers", "1")
        assert done.returncode == 0, done.stderr
        maps[backend] = out / backend / "RGB.byte"
    heat = out / "heat.tif"
    done = edge.run("-m", "geo.query", str(maps["onnx"] / "embeddings.tif"), "--bundle", str(bundle_dir),
                    "--audio", str(ROBIN), "--out", str(heat))  # --backend auto
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"wrote {heat}")
    return {**maps, "heat": heat}


@pytest.fixture(scope="module")
def torch_map(bundle_dir, tmp_path_factory) -> Path:
    """The same bundle mapped with the torch backend, here: the reference."""
    out = tmp_path_factory.mktemp("torch_out")
    [result] = map_files([RGB], bundle_dir, out, "torch", MapOptions(progress=False))
    assert result.status == "mapped", result.message
    return out / "RGB.byte"


def _cells(path: Path) -> np.ndarray:
    """A per-cell raster as (cells, bands), NaN rows where the map has no data."""
    with rasterio.open(path) as ds:
        data = ds.read(out_dtype="float32")
    return data.reshape(len(data), -1).T


def test_the_child_really_has_no_torch(edge):
    done = edge.run("-c", "import torch")
    assert done.returncode != 0 and "blocked by the no-torch test" in done.stderr
    done = edge.run("-c", "import onnxruntime, rasterio; print('ok')")
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


@pytest.mark.parametrize("backend", ["onnx", "onnx-int8"])
def test_map_products_lie_on_the_input_grid(edge_runs, backend):
    folder = edge_runs[backend]
    with rasterio.open(RGB) as src:
        for name, bands in (("embeddings", DIM), ("soundscape", 1), ("soundscape_scores", len(SOUNDS) + 1)):
            with rasterio.open(folder / f"{name}.tif") as ds:
                assert ds.crs == src.crs and ds.count == bands and ds.shape == (3, 3)  # ceil(718|791 / 320)
                assert ds.transform.a == pytest.approx(CELL_PX * src.transform.a)
                assert ds.transform.e == pytest.approx(CELL_PX * src.transform.e)
                assert ds.transform @ (0, 0) == pytest.approx(src.transform @ (0, 0))
    scores = _cells(folder / "soundscape_scores.tif")[:, :len(SOUNDS)]  # the last band is the uncertainty
    valid = np.isfinite(scores).all(axis=1)
    assert valid.sum() >= 6 and np.allclose(scores[valid].sum(axis=1), 1.0, atol=1e-4)
    info = json.loads((folder / "run.json").read_text())
    assert info["backend"]["name"] == backend
    assert {p.name for p in folder.iterdir()} >= {"tiles.gpkg", "run.json"}


def test_onnx_maps_match_the_torch_backend(edge_runs, torch_map):
    ref = _cells(torch_map / "embeddings.tif")
    valid = np.isfinite(ref).all(axis=1)
    fp32 = _cells(edge_runs["onnx"] / "embeddings.tif")
    int8 = _cells(edge_runs["onnx-int8"] / "embeddings.tif")
    assert np.array_equal(np.isfinite(fp32).all(axis=1), valid)
    np.testing.assert_allclose(fp32[valid], ref[valid], rtol=1e-3, atol=1e-4)
    assert per_sample_cosine(ref[valid], int8[valid]).min() > 0.98
    with rasterio.open(torch_map / "soundscape.tif") as a, rasterio.open(edge_runs["onnx"] / "soundscape.tif") as b:
        assert np.array_equal(a.read(1), b.read(1))


def test_tiles_gpkg_lists_the_nearest_gallery_recordings(edge_runs, bundle_dir):
    from model.bundle.gallery import load_gallery

    _, gallery = load_gallery(load(bundle_dir))
    tiles = gpd.read_file(edge_runs["onnx"] / "tiles.gpkg")
    with rasterio.open(edge_runs["onnx"] / "embeddings.tif") as ds:
        emb = ds.read()
    assert len(tiles) >= 6
    for t in tiles.itertuples():
        d = np.linalg.norm(gallery - emb[:, t.row, t.col], axis=1)
        assert t.near_1_key == 100 + d.argmin() and t.near_1_distance == pytest.approx(d.min(), rel=1e-4)


def test_audio_query_without_torch_matches_the_torch_audio_encoder(edge_runs, bundle_dir):
    from export.runtime import open_backend

    v = open_backend(bundle_dir, "torch").embed_audio_file(ROBIN)
    with rasterio.open(edge_runs["heat"]) as heat, rasterio.open(edge_runs["onnx"] / "embeddings.tif") as emb:
        assert heat.shape == emb.shape and heat.transform == emb.transform and heat.crs == emb.crs
        assert heat.descriptions == ("similarity", "distance", "probability")
        similarity, distance, _ = heat.read()
        z = emb.read()
    ok = np.isfinite(distance)
    expected = np.linalg.norm(z - v[:, None, None], axis=0)
    np.testing.assert_allclose(distance[ok], expected[ok], rtol=1e-4)
    assert similarity[ok].max() == 1.0 and similarity[ok].min() == 0.0
    assert similarity[np.unravel_index(np.nanargmin(distance), distance.shape)] == 1.0


def test_no_child_imported_torch(edge, edge_runs):
    runs = edge.loaded()
    commands = [" ".join(r["argv"][:1]) for r in runs]
    assert sum("geo/map.py" in c for c in commands) >= 2 and any("geo/query.py" in c for c in commands)
    assert all(r["loaded"] == [] for r in runs), runs


def _bare_copy(bundle_dir: Path, dst: Path, onnx: bool) -> Path:
    """bundle.json + weights (+ the ONNX files and manifest when ``onnx``) of a bundle."""
    dst.mkdir()
    for name in ("bundle.json", "weights.safetensors", *(["onnx.json"] if onnx else [])):
        shutil.copy(bundle_dir / name, dst / name)
    for graph in bundle_dir.glob("*.onnx") if onnx else []:
        os.symlink(graph, dst / graph.name)
    return dst


def _stale(bundle: Path) -> Path:
    meta = json.loads((bundle / "bundle.json").read_text())
    meta["provenance"]["note"] = "changed after the export"
    (bundle / "bundle.json").write_text(json.dumps(meta))
    return bundle


@pytest.mark.parametrize("case, backend, message", [
    ("no onnx", "auto", "PyTorch is not installed and the bundle has no ONNX export; run python -m export.onnx "
                        "on a machine with PyTorch, or install torch"),
    ("stale", "auto", "ONNX export is not usable (not onnx-int8 ("),  # then why: stale files
    ("no onnx", "torch", "torch backend: PyTorch is not importable"),
], ids=["auto-no-onnx", "auto-stale-onnx", "torch-by-name"])
def test_unusable_without_torch_is_a_one_line_error(edge, bundle_dir, tmp_path, case, backend, message):
    bundle = _bare_copy(bundle_dir, tmp_path / "bundle", onnx=case == "stale")
    if case == "stale":
        _stale(bundle)
    done = edge.run("-m", "geo.map", str(RGB), "--bundle", str(bundle), "--out", str(tmp_path / "out"),
                    "--backend", backend, "--no-progress")
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert message in lines[0] and str(bundle) in lines[0], lines
    assert case != "stale" or "stale ONNX file" in lines[0]
    assert not (tmp_path / "out" / "RGB.byte").exists()


def test_expected_shapes_are_the_torch_encoders_state_dict():
    import torch

    from model.nn.encoders import ResNetEncoder

    specs = [EncoderSpec.from_arch("resnet18", 3, 16),
             EncoderSpec.from_arch("resnet50", 1, 8).replace(stem_width=8, widths=(8, 8, 16, 16)),
             EncoderSpec.from_arch("resnet34", 3, 4).replace(stem_width=32, widths=(8, 24, 16, 8))]
    for spec in specs:
        with torch.device("meta"):
            state = ResNetEncoder(spec).state_dict()
        assert list(expected_shapes(spec).items()) == [(k, tuple(v.shape)) for k, v in state.items()]
        assert infer_spec({k: np.empty(s, np.float32) for k, s in expected_shapes(spec).items()}) == spec
