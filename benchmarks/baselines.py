"""Reference points measured in the benchmark's own process, against the same simulators.

* The floor: the same upstream requests made concurrently by a bare aiohttp loop (body read and
  JSON-decoded, nothing else), in the order the APIs allow (a Crisp backlog's pages one after
  another). Its CPU per request is what any aiohttp-based exporter must pay; the exporter's CPU
  per dialog is judged against it.
* The naive baseline: the same requests one after another, as a plain script would make them.
  It shows what concurrency, batching and single-flight buy; since it costs ``requests x
  latency`` of wall time, it is timed on an even sample and extrapolated.
* Exposition: the exporter's own collectors rendering one scrape's results, timed in-process
  (the exporter's HTTP handler gives no way to time rendering apart from fetching), by the
  exporter's renderer and, for comparison, by prometheus_client's ``generate_latest``.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest

from benchmarks.scenario import PlannedRequest
from exporter.configuration.loading import parse_config
from exporter.fetching.scrape import observe_all
from exporter.rendering.buildinfo import BuildInfo
from exporter.rendering.collector import DialogCollector, ExporterStatus, SelfCollector
from exporter.rendering.exposition import render
from exporter.service import Exporter

# The exporter's default per-account bound (AccountConfig.max_concurrency); the floor keeps the
# same shape of load so the simulators see the same number of connections.
MAX_CONCURRENCY = 8


async def _get(session: aiohttp.ClientSession, request: PlannedRequest) -> None:
    async with session.get(
        request.url, params=list(request.params), headers=dict(request.headers)
    ) as response:
        body = await response.read()
        if response.status != 200:
            raise RuntimeError(f"{request.url} answered {response.status}: {body[:200]!r}")
        json.loads(body)


@dataclass(frozen=True)
class FloorResult:
    """Median over runs of the bare loop's CPU per request and wall time per round."""

    cpu_per_request_ms: float
    wall_seconds: float
    runs: int


def chains(requests: Sequence[PlannedRequest]) -> list[list[PlannedRequest]]:
    """The requests as sequences to make one after another: each ``chain`` in order, and every
    request of no chain on its own."""
    out: list[list[PlannedRequest]] = []
    named: dict[str, list[PlannedRequest]] = {}
    for request in requests:
        if request.chain is None:
            out.append([request])
        elif request.chain in named:
            named[request.chain].append(request)
        else:
            named[request.chain] = [request]
            out.append(named[request.chain])
    return out


class Floor:
    """All requests concurrently (bounded per account like the exporter), a round at a time,
    so the benchmark can alternate its rounds with the exporter's scrapes: on shared cores the
    machine's load moves from minute to minute, and a floor measured beside each scrape moves
    with it, where one measured after all of them would not.

    A chain's requests go one after another, each taking its account's slot as the exporter's
    requests do: a backlog's pages all at once would be a client that knows how many there
    are, and would cost less CPU per request than the one-at-a-time paging the API leaves
    (measured on the queues scenario's 101-page backlogs: about a quarter less per page).
    Entering it makes one warm-up round, which opens the keep-alive connections, as the
    exporter's have been by the time it is measured.
    """

    def __init__(self, requests: Sequence[PlannedRequest]) -> None:
        self._requests = requests
        self._sequences = chains(requests)
        self._session: aiohttp.ClientSession | None = None
        self._cpu: list[float] = []
        self._wall: list[float] = []

    async def __aenter__(self) -> Floor:
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        await self._round()
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._session is not None
        await self._session.close()

    async def round(self) -> None:
        """One measured round: every request once."""
        cpu_start, wall_start = time.process_time(), time.perf_counter()
        await self._round()
        self._wall.append(time.perf_counter() - wall_start)
        self._cpu.append((time.process_time() - cpu_start) / len(self._requests) * 1000)

    async def _round(self) -> None:
        session = self._session
        assert session is not None
        semaphores: dict[str, asyncio.Semaphore] = {}

        async def one(sequence: list[PlannedRequest]) -> None:
            semaphore = semaphores.setdefault(
                sequence[0].account, asyncio.Semaphore(MAX_CONCURRENCY)
            )
            for request in sequence:
                async with semaphore:
                    await _get(session, request)

        await asyncio.gather(*(one(s) for s in self._sequences))

    def result(self) -> FloorResult:
        """The medians of the rounds measured so far."""
        return FloorResult(
            statistics.median(self._cpu), statistics.median(self._wall), len(self._wall)
        )


@dataclass(frozen=True)
class NaiveResult:
    """Sequential wall time, measured on ``sampled`` requests and scaled to ``total``."""

    seconds: float
    sampled: int
    total: int


async def naive_sequential(requests: Sequence[PlannedRequest], sample: int) -> NaiveResult:
    """One request after another on one keep-alive session; ``sample`` 0 means all of them."""
    if sample <= 0 or sample >= len(requests):
        chosen = list(requests)
    else:
        step = len(requests) / sample
        chosen = [requests[int(i * step)] for i in range(sample)]
    async with aiohttp.ClientSession() as session:
        await _get(session, chosen[0])  # open the connection outside the timing
        started = time.perf_counter()
        for request in chosen:
            await _get(session, request)
        elapsed = time.perf_counter() - started
    return NaiveResult(elapsed * len(requests) / len(chosen), len(chosen), len(requests))


@dataclass(frozen=True)
class ExpositionResult:
    """Median time to render one scrape's metrics, and to gzip them as aiohttp would."""

    render_ms: float
    generate_latest_ms: float
    gzip_ms: float
    text_bytes: int
    gzip_bytes: int
    series: int


async def exposition(config_yaml: str, dialogs: int, repeats: int) -> ExpositionResult:
    """Fetch once with the exporter's own code, then time rendering those results.

    The registry is built per render exactly as ``exporter.web.app.metrics`` builds it (dialog and
    self collectors on a fresh ``CollectorRegistry``) and rendered by the exporter's renderer;
    prometheus_client's ``generate_latest`` renders the same registry for comparison. Gzip
    uses zlib's default level as aiohttp's response compression does.
    """
    service = Exporter(lambda: parse_config(config_yaml, "bench.yaml"))
    await service.start()
    try:
        runtimes = list(service.runtimes.values())
        results = await observe_all(runtimes, 60.0)
        up = sum(1 for r in results for d in r.dialogs if d.error is None)
        if up != dialogs:
            raise RuntimeError(f"in-process fetch: {up} of {dialogs} dialogs up")
        status = ExporterStatus(BuildInfo("bench"), True, time.time())
        rendering: list[float] = []
        generating: list[float] = []
        gzip: list[float] = []
        body = compressed = b""
        for _ in range(repeats):
            started = time.perf_counter()
            registry = CollectorRegistry(auto_describe=False)
            registry.register(DialogCollector(results))
            registry.register(SelfCollector([rt.snapshot() for rt in runtimes], status))
            body = render(registry)
            rendered = time.perf_counter()
            compressor = zlib.compressobj(wbits=16 + zlib.MAX_WBITS)
            compressed = compressor.compress(body) + compressor.flush()
            gzipped = time.perf_counter()
            generate_latest(registry)
            rendering.append((rendered - started) * 1000)
            gzip.append((gzipped - rendered) * 1000)
            generating.append((time.perf_counter() - gzipped) * 1000)
    finally:
        await service.close()
    series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
    return ExpositionResult(
        statistics.median(rendering),
        statistics.median(generating),
        statistics.median(gzip),
        len(body),
        len(compressed),
        series,
    )
