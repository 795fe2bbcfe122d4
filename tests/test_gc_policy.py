"""The exporter's garbage-collector policy (``exporter.memory.gc_policy``); its effect on CPU is
measured by the benchmark (``benchmarks/``), not here."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from exporter.memory import gc_policy


@pytest.fixture
def restored_thresholds() -> Iterator[tuple[int, int, int]]:
    before = gc.get_threshold()
    yield before
    gc.set_threshold(*before)


def test_raises_the_young_threshold_only(restored_thresholds: tuple[int, int, int]) -> None:
    gc_policy.apply()
    young, middle, oldest = gc.get_threshold()
    assert young == gc_policy.YOUNG_GENERATION_THRESHOLD
    assert (middle, oldest) == restored_thresholds[1:]
    assert gc.isenabled()
