"""Shared test fixtures: paths to the real shared data, and a small torch thread budget."""
from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def _small_thread_budget():
    """Tests run on 2-core machines: one intra-op thread per process keeps them predictable."""
    import torch

    torch.set_num_threads(2)
    yield
