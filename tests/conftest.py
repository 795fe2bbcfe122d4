"""The shared fixtures: simulated providers on loopback, and an exporter built from YAML.

Every provider test talks HTTP to the simulators in ``exporter.simulator`` (which check auth
headers, signatures and parameters as the real APIs do); nothing in the exporter is patched.
The helpers and the data set the fixtures use are in ``tests/support.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from exporter.configuration.loading import parse_config
from exporter.service import Exporter
from exporter.simulator import Simulator
from exporter.web.app import make_app
from tests.support import ClientFactory, ExporterFactory, FakeClock, ScrapeClient, populate


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    simulator = Simulator()
    await simulator.start()
    populate(simulator)
    yield simulator
    await simulator.stop()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def exporter_for(clock: FakeClock) -> AsyncIterator[ExporterFactory]:
    """Build and start an Exporter from config text; closed after the test."""
    started: list[Exporter] = []

    async def build(text: str) -> Exporter:
        exporter = Exporter(lambda: parse_config(text, "test.yaml"), clock=clock)
        await exporter.start()
        started.append(exporter)
        return exporter

    yield build
    for exporter in started:
        await exporter.close()


@pytest.fixture
async def scrape_client(
    aiohttp_client: ClientFactory, exporter_for: ExporterFactory
) -> ScrapeClient:
    """An HTTP client for an exporter app built from config text."""

    async def build(text: str) -> TestClient[web.Request, web.Application]:
        return await aiohttp_client(make_app(await exporter_for(text)))

    return build


@pytest.fixture
def tmp_config(tmp_path: Path) -> Callable[[str], Path]:
    """Write config text to a file in the test's temporary folder."""

    def write(text: str) -> Path:
        path = tmp_path / "config.yaml"
        path.write_text(text)
        return path

    return write
