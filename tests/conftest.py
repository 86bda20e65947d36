"""Shared test fixtures: paths to the real shared data, and a small torch thread budget."""
from __future__ import annotations

from pathlib import Path

import os
import shutil

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def _small_thread_budget():
    """Tests run on 2-core machines: one intra-op thread per process keeps them predictable."""
    import torch

    torch.set_num_threads(2)
    yield


SESSION_DIRS = {"quick-demo"}  # made under the base temp folder by session fixtures shared across modules


@pytest.fixture(scope="module", autouse=True)
def _free_module_temp(request, tmp_path_factory):
    """Removes the temp folders a test module made once the module has passed.

    Module fixtures build runs, bundles and exports of hundreds of MB; pytest keeps them until the
    session ends (a whole suite would hold about 11 GB). A module with a failure keeps its folders
    for inspection, as ``tmp_path_retention_policy = "failed"`` does for single tests.
    """
    base = tmp_path_factory.getbasetemp()
    before = {p.name for p in base.iterdir()}
    failed = request.session.testsfailed
    yield
    if request.session.testsfailed != failed:
        return
    for path in base.iterdir():
        if path.name not in before and path.name not in SESSION_DIRS:
            shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def quick_demo(tmp_path_factory):
    """The quick demo of seed 0, built once per session (shared with the app tests), or reused
    from ``$GEOAUDIO_TEST_DEMO`` (a folder; built there when missing) across sessions."""
    from app.demo import build_demo

    root = os.environ.get("GEOAUDIO_TEST_DEMO") or tmp_path_factory.getbasetemp() / "quick-demo"
    return build_demo(root, seed=0, quick=True, quiet=True)


@pytest.fixture
def bundle_reads(monkeypatch):
    """Counts of real bundle loads and content hashes during a test: ``{"load": n, "hash": n}``.

    Spies, not mocks: ``model.bundle.load`` and ``content_hash`` (module and package names) are
    wrapped so that each call is counted and then runs the real function.
    """
    import model.bundle
    import model.bundle.format as fmt

    counts = {"load": 0, "hash": 0}

    def spy(key, real):
        def counted(*args, **kwargs):
            counts[key] += 1
            return real(*args, **kwargs)
        return counted

    for key, name in (("load", "load"), ("hash", "content_hash")):
        wrapped = spy(key, getattr(fmt, name))
        monkeypatch.setattr(fmt, name, wrapped)
        monkeypatch.setattr(model.bundle, name, wrapped)
    return counts
