"""export.streams: how the CPU's cores are split between inference calls running at once."""
from __future__ import annotations

import pytest

from export.streams import DEFAULT_CPU_STREAMS, available_cores, cpu_streams


@pytest.mark.parametrize("streams, cores, expected", [
    (None, 1, (1, 1)),  # one core: one call, never two on one core
    (None, 2, (2, 1)),
    (None, 16, (DEFAULT_CPU_STREAMS, 8)),
    (4, 16, (4, 4)),
    (3, 2, (3, 1)),  # more streams than cores: one thread each
    (1, 6, (1, 6)),  # one stream: every core
])
def test_streams_split_the_cores(streams, cores, expected):
    assert cpu_streams(streams, cores) == expected


def test_zero_streams_is_refused():
    with pytest.raises(ValueError, match="streams must be >= 1, got 0"):
        cpu_streams(0, 4)


def test_the_cores_are_omp_num_threads_when_set(monkeypatch):
    """Ray sets OMP_NUM_THREADS to a task's CPUs: a task's streams share those, not the node's cores."""
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert available_cores() == 3 and cpu_streams() == (2, 1)
    monkeypatch.setenv("OMP_NUM_THREADS", "not a number")
    assert available_cores() >= 1
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert available_cores() >= 1
