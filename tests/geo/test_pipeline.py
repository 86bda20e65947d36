"""geo.pipeline with several inference calls in flight, and the io-only ``null`` backend.

Real rasters (the shared RGB GeoTIFF), a real random-initialised bundle; no mocks.
"""
from __future__ import annotations

import numpy as np
import pytest

from export.runtime import BACKENDS, available_backends, open_backend
from geo.grid import TileGrid
from geo.pipeline import Batch, run_pipeline
from geo.raster import open_raster
from tests.bundles import RGB, map_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return map_bundle(tmp_path_factory.mktemp("bundle") / "bundle", gsd=2400.0, landcover=True, tile_size=32)  # 12 tiles over RGB.byte.tif


def collect(path, bundle_dir, backend_name, **kwargs) -> list[Batch]:
    """Every batch the pipeline hands the sink, in the order it hands them."""
    backend = open_backend(bundle_dir, name=backend_name)
    batches: list[Batch] = []
    with open_raster(path) as src:
        grid = TileGrid.from_source(src, backend.tile_size, backend.bundle.image_input.gsd)
        scaling = src.scaling
    run_pipeline(lambda: open_raster(path), grid, scaling, backend, batches.append, batch_size=2, **kwargs)
    return batches


def test_several_inference_calls_in_flight_give_the_same_batches_in_order(bundle):
    """infer_workers=3 (a thread pool, as the cluster's actor pool uses it) hands the writer the same
    batches in row-major order as one inference at a time."""
    one = collect(RGB, bundle, "torch", infer_workers=1)
    three = collect(RGB, bundle, "torch", infer_workers=3, workers=1)
    assert [t.index for b in one for t in b.tiles] == list(range(sum(len(b.tiles) for b in one)))
    assert [[t.index for t in b.tiles] for b in three] == [[t.index for t in b.tiles] for b in one]
    for a, b in zip(one, three):
        assert np.array_equal(a.valid, b.valid)
        np.testing.assert_allclose(a.embeddings, b.embeddings, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(a.landcover, b.landcover, rtol=1e-5, atol=1e-6)


def test_the_null_backend_gives_outputs_of_the_right_shapes_and_only_by_name(bundle):
    """What an io-only run writes has the shapes of a real run's; auto never picks it."""
    real, null = collect(RGB, bundle, "torch"), collect(RGB, bundle, "null")
    assert [len(b.tiles) for b in null] == [len(b.tiles) for b in real]
    for a, b in zip(real, null):
        assert b.embeddings.shape == a.embeddings.shape and b.embeddings.dtype == np.float32
        assert b.scores.shape == a.scores.shape and np.allclose(b.scores.sum(axis=1), 1.0)
        assert b.landcover.shape == a.landcover.shape and np.allclose(b.landcover.sum(axis=1), 1.0)
    classes = np.concatenate([b.landcover.argmax(axis=1).ravel() for b in null])
    assert len(np.unique(classes)) > 1  # varies with the imagery, so vectorising has work to do
    assert "null" not in BACKENDS and "null" not in available_backends(bundle)
    assert open_backend(bundle, name="null").describe().startswith("null (no inference")
