"""Inference backends: torch, ONNX Runtime float32 and INT8 agree; auto picks the fastest current
one; stale files are refused; bad input is a one-line error; nothing imports Lightning."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from export.calibration import load_tiles
from export.onnx import export_bundle
from export.parity import per_sample_cosine
from export.runtime import BackendError, available_backends, open_backend
from model.bundle.audio import AudioConfig, load_logmel, to_chunks
from tests.bundles import RGB, ROBIN, TILE, full_bundle as make_bundle

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    """A bundle with every part, exported to ONNX (all graphs) and INT8 (image encoder)."""
    path = tmp_path_factory.mktemp("runtime") / "bundle"
    make_bundle(path)
    quiet = dict(exporter="torchscript", parity_audio=[ROBIN], log=lambda s: None)
    export_bundle(path, graphs=["image_soundscape", "landcover", "audio_encoder"], **quiet)
    export_bundle(path, graphs=["image_encoder"], calibration=RGB, calibration_tiles=8, **quiet)
    return path


@pytest.fixture(scope="module")
def tiles():
    return load_tiles(RGB, TILE, limit=5)


def test_onnx_matches_torch_on_every_method(bundle_dir, tiles):
    torch_b, onnx_b = open_backend(bundle_dir, "torch", device="cpu"), open_backend(bundle_dir, "onnx")
    assert (torch_b.name, onnx_b.name) == ("torch", "onnx")
    for b in (torch_b, onnx_b):
        assert b.embedding_dim == 128 and b.tile_size == TILE and b.distance == "euclidean"
        assert b.has_soundscape and b.has_landcover and len(b.soundscape_classes) == 6
        assert [c["name"] for c in b.landcover_classes] == ["class0", "class1", "class2", "class3"]
    emb = torch_b.embed_images(tiles)
    assert emb.shape == (5, 128) and emb.dtype == np.float32
    tol = 1e-3 * np.abs(emb).max()
    np.testing.assert_allclose(onnx_b.embed_images(tiles), emb, atol=tol)
    e_t, s_t = torch_b.embed_and_score(tiles)
    e_o, s_o = onnx_b.embed_and_score(tiles)
    np.testing.assert_allclose(e_t, emb, atol=tol)
    np.testing.assert_allclose(s_o, s_t, atol=1e-4)
    np.testing.assert_allclose(onnx_b.score_soundscape(tiles), s_t, atol=1e-4)
    np.testing.assert_allclose(s_t.sum(axis=1), 1.0, atol=1e-5)
    seg = onnx_b.segment_landcover(tiles)
    assert seg.shape == (5, 4, TILE, TILE)
    np.testing.assert_allclose(seg, torch_b.segment_landcover(tiles), atol=1e-4)
    with pytest.warns(UserWarning, match="padded"):  # the robin call is shorter than one chunk
        chunks = to_chunks(load_logmel(ROBIN, AudioConfig()), AudioConfig())
    np.testing.assert_allclose(onnx_b.embed_audio_chunks(chunks), torch_b.embed_audio_chunks(chunks), atol=1e-4)
    clip = onnx_b.embed_audio_file(ROBIN)
    assert clip.shape == (128,)
    np.testing.assert_allclose(clip, torch_b.embed_audio_chunks(chunks).mean(axis=0), atol=1e-4)


def test_int8_backend_is_close_to_float(bundle_dir, tiles):
    int8 = open_backend(bundle_dir, "onnx-int8")
    assert int8.name == "onnx-int8" and "image_encoder.int8.onnx" in int8.describe()
    ref = open_backend(bundle_dir, "onnx").embed_images(tiles)
    assert per_sample_cosine(ref, int8.embed_images(tiles)).mean() > 0.99
    assert int8.embed_and_score(tiles)[1].shape == (5, 6)  # float32 head graph where no INT8 one exists


def test_auto_prefers_int8_then_onnx_then_torch_and_refuses_stale_files(bundle_dir, tmp_path, tiles):
    auto = open_backend(bundle_dir)
    assert auto.name == "onnx-int8" and "not trt" in auto.describe()
    work = tmp_path / "copy"
    shutil.copytree(bundle_dir, work)
    (work / "image_encoder.int8.onnx").unlink()
    assert open_backend(work).name == "onnx"
    meta = json.loads((work / "bundle.json").read_text())
    meta["provenance"]["note"] = "fine-tuned after export"  # the bundle changes: exports go stale
    (work / "bundle.json").write_text(json.dumps(meta))
    fallback = open_backend(work)
    assert fallback.name == "torch" and "stale" in fallback.describe()
    with pytest.raises(BackendError, match="stale ONNX file") as info:
        open_backend(work, "onnx")
    assert "\n" not in str(info.value)
    assert fallback.embed_images(tiles[:1]).shape == (1, 128)


def test_bad_input_is_a_one_line_error(bundle_dir, tmp_path, tiles):
    b = open_backend(bundle_dir, "onnx")
    for bad in (tiles.astype(np.float32), tiles[:, :32], tiles[..., :2], tiles[0]):
        with pytest.raises(ValueError, match="tiles must be uint8") as info:
            b.embed_images(bad)
        assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="audio chunks"):
        b.embed_audio_chunks(np.zeros((2, 1, 64, 128), np.float32))
    assert b.embed_images(tiles[:0]).shape == (0, 128)
    bare = make_bundle(tmp_path / "bare", audio=False, heads=False).path
    plain = open_backend(bare, "torch", device="cpu")
    with pytest.raises(BackendError, match="no soundscape"):
        plain.score_soundscape(tiles)
    with pytest.raises(BackendError, match="no audio encoder"):
        plain.embed_audio_file(ROBIN)
    with pytest.raises(BackendError, match="missing; run python -m export.onnx"):
        open_backend(bare, "onnx")
    with pytest.raises(BackendError, match="unknown backend"):
        open_backend(bare, "tflite")


def test_torch_bf16_and_trt_availability(bundle_dir, tiles):
    fp32 = open_backend(bundle_dir, "torch", device="cpu").embed_images(tiles)
    bf16 = open_backend(bundle_dir, "torch", device="cpu", precision="bf16")
    assert "bf16" in bf16.describe()
    assert per_sample_cosine(fp32, bf16.embed_images(tiles)).min() > 0.98
    status = available_backends(bundle_dir)
    assert status["onnx"] == status["onnx-int8"] == status["torch"] == "ok"
    assert "export.trt" in status["trt"] or "pip install 'geoaudio[trt]'" in status["trt"]


def test_available_backends_load_and_hash_the_bundle_once(bundle_dir, bundle_reads):
    from model.bundle import load

    status = available_backends(bundle_dir)  # five backends, auto's probes included
    assert status["onnx"] == "ok" and bundle_reads == {"load": 1, "hash": 1}
    bundle = load(bundle_dir)
    backend = open_backend(bundle, "onnx-int8")
    assert backend.bundle is bundle and available_backends(bundle) == status
    assert bundle_reads == {"load": 2, "hash": 2}  # the loaded Bundle: no second load, its hash kept


def test_edge_modules_do_not_import_lightning(bundle_dir):
    code = ("import sys; from export.runtime import open_backend; import export.onnx, export.trt, export.int8; "
            f"b = open_backend({str(bundle_dir)!r}); print(b.name); "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning', 'lightly')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[0] == "onnx-int8"


@pytest.mark.parametrize("name", ["torch", "onnx", "onnx-int8"])
def test_two_streams_give_the_outputs_of_one_call_at_a_time(bundle_dir, tiles, name):
    """On 2 cores a CPU backend serves 2 calls at once with 1 thread each (export.streams); calls
    from two threads at once, the first of them opening the graphs, give the serial outputs;
    close() puts PyTorch's process-wide thread count back."""
    from concurrent.futures import ThreadPoolExecutor

    import torch

    threads_before = torch.get_num_threads()
    backend = open_backend(bundle_dir, name, device="cpu")
    backend.set_streams(cores=2)
    assert (backend.concurrency, backend.threads) == (2, 1)
    assert "2 streams x 1 thread" in backend.describe()
    backend.prepare(landcover=False)  # what geo.map opens before its first file: the graphs it runs
    opened = backend._modules if name == "torch" else backend._sessions
    assert set(opened) == {"image_soundscape"}
    with ThreadPoolExecutor(2) as pool:
        parallel = list(pool.map(lambda i: backend.embed_and_score(tiles[i:i + 3]), [0, 2]))
    serial = open_backend(bundle_dir, name, device="cpu")
    serial.set_streams(1, cores=1)
    assert (serial.concurrency, serial.threads) == (1, 1)
    for (emb, scores), i in zip(parallel, [0, 2]):
        want_emb, want_scores = serial.embed_and_score(tiles[i:i + 3])
        np.testing.assert_allclose(emb, want_emb, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-6)
    with pytest.raises(BackendError, match="streams must be >= 1"):
        backend.set_streams(0)
    serial.close()
    backend.close()
    assert torch.get_num_threads() == threads_before
