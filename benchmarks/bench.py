"""The benchmark proper: phases per scenario, the printed table and the goal checks.

For each scenario a simulator process and an exporter process are started (see ``procs``), and
this process scrapes the exporter over HTTP as Prometheus would. Every scrape is checked to be
complete (one ``chat_unread_up 1`` per configured dialog), so a fast answer that merely timed
out can never pass for a fast scrape. See README.md beside this file for what each figure means.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import aiohttp

from benchmarks import baselines, procs
from benchmarks import scenario as sc

SCRAPE_TIMEOUT_HEADER = {"X-Prometheus-Scrape-Timeout-Seconds": "60"}
CLIENT_TIMEOUT = aiohttp.ClientTimeout(total=120)
UP_FAMILY = b"# TYPE chat_unread_up gauge\n"

# Goals (from the benchmark issue).
CPU_VS_FLOOR = 2.0
# Issue 10: exporter CPU per upstream call, rendering included, against the floor's per request.
CPU_PER_CALL_VS_FLOOR = 1.5
# A scrape's wall against the bare client's wall on the same requests, measured beside it: on
# two shared cores the simulators' own CPU sets the wall, so latency or CPU alone is no bound.
WALL_VS_FLOOR = 1.25
PEAK_RSS_LIMIT_MB = 120.0
PEAK_RSS_AT_DIALOGS = 5000
RSS_GROWTH_LIMIT_MB = 5.0
SOAK_P99_VS_P50 = 2.0
MIN_SOAK_FOR_MEMORY = 30.0


@dataclass(frozen=True)
class Settings:
    """What to run; ``--quick`` shrinks every count so the whole run takes about a minute."""

    quick: bool
    scenarios: tuple[str, ...]
    latency: float
    scrapes: int
    concurrent_scrapers: int
    concurrent_rounds: int
    naive_sample: int
    render_repeats: int
    long_scenario: str
    growth_scrapes: int
    soak_scrapers: int
    soak_seconds: float


@dataclass(frozen=True)
class Scrape:
    """One GET /metrics as the benchmark saw it."""

    wall: float
    up: int
    series: int
    error: str | None

    def complete(self, dialogs: int) -> bool:
        return self.error is None and self.up == dialogs and self.series == dialogs


def count_up(body: bytes) -> tuple[int, int]:
    """(series, series equal to 1) of ``chat_unread_up``, without parsing the whole body."""
    start = body.find(UP_FAMILY)
    if start < 0:
        return 0, 0
    start += len(UP_FAMILY)
    end = body.find(b"\n# ", start)
    block = body[start : end + 1 if end >= 0 else len(body)]
    return block.count(b"\n"), block.count(b"} 1.0\n")


async def scrape(session: aiohttp.ClientSession, url: str) -> Scrape:
    """GET /metrics with a 60 s scrape timeout header, so big scrapes are never cut short."""
    started = time.perf_counter()
    try:
        async with session.get(f"{url}/metrics", headers=SCRAPE_TIMEOUT_HEADER) as response:
            body = await response.read()
            wall = time.perf_counter() - started
            if response.status != 200:
                return Scrape(wall, 0, 0, f"HTTP {response.status}")
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Scrape(time.perf_counter() - started, 0, 0, f"{type(exc).__name__}: {exc}")
    series, up = count_up(body)
    return Scrape(wall, up, series, None)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


@dataclass
class Measured:
    """Exporter-side figures around one phase: wall, CPU (exporter, simulators), calls."""

    wall: float
    cpu: float
    sim_cpu: float
    calls: Counter[str]
    scrapes: list[Scrape]


async def measure(
    session: aiohttp.ClientSession,
    sim: procs.SimProcess,
    exporter: procs.ExporterProcess,
    scrapers: int,
) -> Measured:
    """``scrapers`` simultaneous scrapes, with CPU and upstream calls read before and after."""
    calls_before = await sim.counts(session)
    cpu_before, sim_before = procs.cpu_seconds(exporter.pid), procs.cpu_seconds(sim.pid)
    started = time.perf_counter()
    scrapes = list(await asyncio.gather(*(scrape(session, exporter.url) for _ in range(scrapers))))
    wall = time.perf_counter() - started
    cpu, sim_cpu = procs.cpu_seconds(exporter.pid), procs.cpu_seconds(sim.pid)
    calls = await sim.counts(session)
    calls.subtract(calls_before)
    return Measured(wall, cpu - cpu_before, sim_cpu - sim_before, +calls, scrapes)


@dataclass(frozen=True)
class Growth:
    """Exporter RSS after the first and after the last of ``scrapes`` sequential scrapes."""

    scrapes: int
    first_mb: float
    last_mb: float
    seconds: float
    incomplete: int
    trend: tuple[float, ...]  # RSS after every tenth of the run, to tell a leak from noise


@dataclass(frozen=True)
class Soak:
    """``scrapers`` looping scrapers for ``seconds``: latency spread, failures, memory.

    RSS is sampled through the run. The jump from before the soak to the first half is the
    cost of serving that many scrapes at once; a leak shows as the second half's peak rising
    above the first half's, which is what "memory flat" checks.
    """

    scrapers: int
    seconds: float
    walls: tuple[float, ...]
    failures: int
    first_failure: str | None
    rss_before_mb: float
    rss_first_half_mb: float
    rss_second_half_mb: float
    rss_end_mb: float
    refreshes: float

    @property
    def p50(self) -> float:
        return percentile(self.walls, 50)

    @property
    def p99(self) -> float:
        return percentile(self.walls, 99)

    @property
    def growth_mb(self) -> float:
        return self.rss_second_half_mb - self.rss_first_half_mb


@dataclass
class Report:
    """Everything measured for one scenario."""

    scenario: sc.Scenario
    latency: float
    startup_seconds: float
    rss_start_mb: float
    single: list[Measured]
    concurrent_cold: Measured
    concurrent: list[Measured]
    peak_rss_mb: float
    floor: baselines.FloorResult
    naive: baselines.NaiveResult
    exposition: baselines.ExpositionResult
    incomplete: list[str] = field(default_factory=list)
    growth: Growth | None = None
    soak: Soak | None = None

    @property
    def wall(self) -> float:
        return statistics.median(m.wall for m in self.single)

    @property
    def cpu(self) -> float:
        return statistics.fmean(m.cpu for m in self.single)

    @property
    def sim_cpu(self) -> float:
        return statistics.fmean(m.sim_cpu for m in self.single)

    @property
    def calls(self) -> Counter[str]:
        return self.single[-1].calls

    @property
    def upstream_calls(self) -> int:
        return sum(self.calls[p] for p in sc.PROVIDER_NAMES)

    @property
    def cpu_per_dialog_ms(self) -> float:
        return self.cpu / self.scenario.dialogs * 1000

    @property
    def cpu_per_call_ms(self) -> float:
        return self.cpu / self.upstream_calls * 1000

    @property
    def cpu_vs_floor(self) -> float:
        return self.cpu_per_dialog_ms / self.floor.cpu_per_request_ms

    @property
    def cpu_per_call_vs_floor(self) -> float:
        return self.cpu_per_call_ms / self.floor.cpu_per_request_ms

    @property
    def concurrent_wall(self) -> float:
        return statistics.median(m.wall for m in self.concurrent)

    @property
    def concurrent_cpu(self) -> float:
        return statistics.median(m.cpu for m in self.concurrent)

    @property
    def concurrent_calls(self) -> list[int]:
        return [sum(m.calls[p] for p in sc.PROVIDER_NAMES) for m in self.concurrent]


def _note_incomplete(report_to: list[str], phase: str, scrapes: Sequence[Scrape], n: int) -> None:
    for s in scrapes:
        if not s.complete(n):
            report_to.append(f"{phase}: {s.error or f'{s.up} of {n} dialogs up ({s.series})'}")


async def run_scenario(
    settings: Settings, scenario: sc.Scenario, log: Callable[[str], None]
) -> Report:
    """All phases of one scenario against fresh simulator and exporter processes."""
    latency = settings.latency if scenario.latency is None else scenario.latency
    connector = aiohttp.TCPConnector(limit=0)
    async with (
        aiohttp.ClientSession(connector=connector, timeout=CLIENT_TIMEOUT) as session,
        procs.simulators(scenario, latency) as sim,
    ):
        config = sc.config_yaml(scenario, sim.urls)
        async with procs.exporter(config, session) as exporter:
            n = scenario.dialogs
            rss_start = procs.memory(exporter.pid).rss_mb
            log(f"{scenario.name}: exporter up in {exporter.startup_seconds:.1f}s; warming up")
            incomplete: list[str] = []
            for _ in range(2):  # connections, imports and caches as in steady state
                _note_incomplete(incomplete, "warm-up", [await scrape(session, exporter.url)], n)
            log(
                f"{scenario.name}: {settings.scrapes} single scrapes, each followed by a round of"
                " the floor"
            )
            requests = sc.planned_requests(scenario, sim.urls)
            single: list[Measured] = []
            async with baselines.Floor(requests) as floor_rounds:
                for _ in range(settings.scrapes):
                    single.append(await measure(session, sim, exporter, 1))
                    await floor_rounds.round()
            floor = floor_rounds.result()
            log(f"{scenario.name}: {settings.concurrent_scrapers} concurrent scrapers")
            # The first concurrent round opens new connections to the exporter; it is kept
            # apart because accepting them delays some scrapes (see README.md).
            cold = await measure(session, sim, exporter, settings.concurrent_scrapers)
            concurrent = [
                await measure(session, sim, exporter, settings.concurrent_scrapers)
                for _ in range(settings.concurrent_rounds)
            ]
            for phase, runs in (("single", single), ("concurrent", [cold, *concurrent])):
                for m in runs:
                    _note_incomplete(incomplete, phase, m.scrapes, n)
            peak = procs.memory(exporter.pid).hwm_mb
            log(f"{scenario.name}: naive baseline and exposition (in-process)")
            naive = await baselines.naive_sequential(requests, settings.naive_sample)
            expo = await baselines.exposition(config, n, settings.render_repeats)
            report = Report(
                scenario=scenario,
                latency=latency,
                startup_seconds=exporter.startup_seconds,
                rss_start_mb=rss_start,
                single=single,
                concurrent_cold=cold,
                concurrent=concurrent,
                peak_rss_mb=peak,
                floor=floor,
                naive=naive,
                exposition=expo,
                incomplete=incomplete,
            )
            if scenario.name == settings.long_scenario:
                report.growth = await growth(settings, session, exporter, n, log)
                report.soak = await soak(settings, session, sim, exporter, report, log)
    return report


async def growth(
    settings: Settings,
    session: aiohttp.ClientSession,
    exporter: procs.ExporterProcess,
    dialogs: int,
    log: Callable[[str], None],
) -> Growth:
    """Sequential scrapes; RSS after the first and the last (a leak grows per scrape)."""
    log(f"{settings.long_scenario}: RSS growth over {settings.growth_scrapes} scrapes")
    started = time.perf_counter()
    incomplete = 0
    first = 0.0
    trend: list[float] = []
    every = max(1, settings.growth_scrapes // 10)
    for i in range(1, settings.growth_scrapes + 1):
        if not (await scrape(session, exporter.url)).complete(dialogs):
            incomplete += 1
        if i == 1:
            first = procs.memory(exporter.pid).rss_mb
        if i % every == 0:
            trend.append(procs.memory(exporter.pid).rss_mb)
    last = procs.memory(exporter.pid).rss_mb
    seconds = time.perf_counter() - started
    return Growth(settings.growth_scrapes, first, last, seconds, incomplete, tuple(trend))


async def soak(
    settings: Settings,
    session: aiohttp.ClientSession,
    sim: procs.SimProcess,
    exporter: procs.ExporterProcess,
    report: Report,
    log: Callable[[str], None],
) -> Soak:
    """``soak_scrapers`` loops scraping back to back until the time is up (bounded)."""
    seconds = settings.soak_seconds
    log(f"{settings.long_scenario}: soak, {settings.soak_scrapers} scrapers for {seconds:g}s")
    walls: list[float] = []
    failures: list[str] = []
    dialogs = report.scenario.dialogs
    calls_before = await sim.counts(session)
    rss_before = procs.memory(exporter.pid).rss_mb
    samples: list[tuple[float, float]] = []
    started = time.monotonic()
    deadline = started + seconds

    async def scraper() -> None:
        while time.monotonic() < deadline:
            result = await scrape(session, exporter.url)
            walls.append(result.wall)
            if not result.complete(dialogs):
                failures.append(result.error or f"{result.up} of {dialogs} dialogs up")

    async def sampler() -> None:
        while time.monotonic() < deadline:
            samples.append((time.monotonic() - started, procs.memory(exporter.pid).rss_mb))
            await asyncio.sleep(0.25)

    await asyncio.gather(sampler(), *(scraper() for _ in range(settings.soak_scrapers)))
    rss_end = procs.memory(exporter.pid).rss_mb
    calls = await sim.counts(session)
    calls.subtract(calls_before)
    spent = sum(calls[p] for p in sc.PROVIDER_NAMES)
    half = seconds / 2
    return Soak(
        scrapers=settings.soak_scrapers,
        seconds=seconds,
        walls=tuple(walls),
        failures=len(failures),
        first_failure=failures[0] if failures else None,
        rss_before_mb=rss_before,
        rss_first_half_mb=max((rss for t, rss in samples if t < half), default=rss_before),
        rss_second_half_mb=max((rss for t, rss in samples if t >= half), default=rss_end),
        rss_end_mb=rss_end,
        refreshes=spent / max(report.upstream_calls, 1),
    )


# --- printing -----------------------------------------------------------------------------


def _n(value: float) -> str:
    return f"{value:,.0f}"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms"


def table(rows: Sequence[tuple[str, Sequence[str]]], headers: Sequence[str]) -> str:
    """Left-aligned labels, right-aligned columns; a row with no cells is a section title."""
    width = [max(len(h), *(len(r[1][i]) for r in rows if r[1])) for i, h in enumerate(headers)]
    label = max(len(r[0]) for r in rows)
    head = " " * label + "  " + "  ".join(h.rjust(w) for h, w in zip(headers, width, strict=True))
    lines = [head, "-" * len(head)]
    for name, cells in rows:
        if not cells:
            lines.append(name)
            continue
        joined = "  ".join(c.rjust(w) for c, w in zip(cells, width, strict=True))
        lines.append(f"{name.ljust(label)}  {joined}")
    return "\n".join(lines)


def _calls(report: Report, provider: str) -> str:
    minimum = report.scenario.minimum_calls()[provider]
    return f"{_n(report.calls[provider])} / {_n(minimum)}"


Cell = Callable[[Report], str]


def scenario_rows(settings: Settings, reports: Sequence[Report]) -> list[tuple[str, Cell | None]]:
    """(label, cell) per printed row; a ``None`` cell makes the label a section title."""
    concurrent = settings.concurrent_scrapers

    def total_calls(r: Report) -> str:
        return f"{_n(r.upstream_calls)} / {_n(r.scenario.minimum_calls().total())}"

    def critical(r: Report) -> str:
        return f"{r.scenario.critical_path()} x {r.latency * 1000:.0f} ms"

    def wall_vs_critical(r: Report) -> str:
        return f"{r.wall / max(r.scenario.critical_path() * r.latency, r.cpu):.2f}x"

    def concurrent_calls(r: Report) -> str:
        return ", ".join(_n(c) for c in r.concurrent_calls)

    def cold_calls(r: Report) -> str:
        return _n(sum(r.concurrent_cold.calls[p] for p in sc.PROVIDER_NAMES))

    def expo_size(r: Report) -> str:
        e = r.exposition
        return f"{_n(e.series)} / {e.text_bytes / 1e6:.2f} MB ({e.gzip_bytes / 1e3:.0f} kB gz)"

    def naive_sample(r: Report) -> str:
        return f"{r.naive.sampled} of {_n(r.naive.total)}"

    def floor_ratio_per_scrape(r: Report) -> str:
        return f"{r.cpu / (r.floor.cpu_per_request_ms * r.upstream_calls / 1000):.2f}x"

    return [
        ("accounts / dialogs", lambda r: f"{r.scenario.accounts} / {_n(r.scenario.dialogs)}"),
        ("upstream latency", lambda r: _ms(r.latency)),
        ("exporter startup (config load)", lambda r: f"{r.startup_seconds:.1f} s"),
        ("Upstream calls per scrape (made / provider minimum)", None),
        ("  crisp (conversations + backlog pages)", lambda r: _calls(r, "crisp")),
        ("    of which backlog pages", lambda r: _n(r.calls["crisp_pages"])),
        ("  quickblox (per account: 1 per 100 ids + 1 total)", lambda r: _calls(r, "quickblox")),
        ("  imkit (1 per dialog)", lambda r: _calls(r, "imkit")),
        ("  sendbird (1 per dialog)", lambda r: _calls(r, "sendbird")),
        ("  total", total_calls),
        (f"One scrape at a time ({settings.scrapes} scrapes: median wall, mean CPU)", None),
        ("  scrape wall time", lambda r: _ms(r.wall)),
        ("  scrape wall / upstream latency", lambda r: f"{r.wall / r.latency:.1f}x"),
        ("  exporter CPU per scrape", lambda r: _ms(r.cpu)),
        ("  exporter CPU per dialog", lambda r: f"{r.cpu_per_dialog_ms:.3f} ms"),
        ("  exporter CPU per upstream call", lambda r: f"{r.cpu_per_call_ms:.3f} ms"),
        ("  wall / max(latency, exporter CPU)", lambda r: f"{r.wall / max(r.latency, r.cpu):.2f}x"),
        ("  upstream critical path (sequential trips)", critical),
        ("  wall / max(critical path, exporter CPU)", wall_vs_critical),
        ("  simulator CPU per scrape (other process)", lambda r: _ms(r.sim_cpu)),
        (f"{concurrent} concurrent scrapers ({settings.concurrent_rounds} rounds, median)", None),
        ("  wall time until the last answer", lambda r: _ms(r.concurrent_wall)),
        ("  upstream calls per round", concurrent_calls),
        ("  first round, on new connections: calls", cold_calls),
        ("  first round, on new connections: wall", lambda r: _ms(r.concurrent_cold.wall)),
        ("  exporter CPU per round", lambda r: _ms(r.concurrent_cpu)),
        ("Memory (exporter process)", None),
        ("  RSS after startup", lambda r: f"{r.rss_start_mb:.1f} MB"),
        ("  peak RSS (VmHWM) after the scrapes above", lambda r: f"{r.peak_rss_mb:.1f} MB"),
        ("Exposition (in-process, the exporter's collectors)", None),
        ("  series / text size", expo_size),
        (
            "  render time (exporter.rendering.exposition)",
            lambda r: f"{r.exposition.render_ms:.1f} ms",
        ),
        ("  render time (prometheus_client generate_latest)",
         lambda r: f"{r.exposition.generate_latest_ms:.1f} ms"),
        ("  gzip time (zlib default level)", lambda r: f"{r.exposition.gzip_ms:.1f} ms"),
        ("Baselines (benchmark process, same simulators)", None),
        ("  naive sequential loop, wall", lambda r: f"{r.naive.seconds:,.1f} s"),
        ("    requests timed, extrapolated linearly", naive_sample),
        ("    exporter speed-up over naive", lambda r: f"{r.naive.seconds / r.wall:,.0f}x"),
        ("  floor: bare concurrent aiohttp, wall", lambda r: _ms(r.floor.wall_seconds)),
        ("  floor: CPU per request", lambda r: f"{r.floor.cpu_per_request_ms:.3f} ms"),
        ("  exporter CPU per dialog / floor per request", lambda r: f"{r.cpu_vs_floor:.2f}x"),
        ("  exporter CPU per upstream call / floor per request",
         lambda r: f"{r.cpu_per_call_vs_floor:.2f}x"),
        ("  exporter CPU per scrape / floor per scrape", floor_ratio_per_scrape),
    ]  # fmt: skip


def scenario_table(settings: Settings, reports: Sequence[Report]) -> str:
    rows: list[tuple[str, Sequence[str]]] = [
        (label, [cell(r) for r in reports] if cell is not None else [])
        for label, cell in scenario_rows(settings, reports)
    ]
    return table(rows, [f"{r.scenario.name} dialogs" for r in reports])


def long_runs(report: Report) -> str:
    lines: list[str] = []
    g, s = report.growth, report.soak
    if g is not None:
        lines += [
            f"RSS growth over {g.scrapes} sequential scrapes ({report.scenario.name} scenario, "
            f"{g.seconds:.0f} s):",
            f"  RSS after scrape 1: {g.first_mb:.1f} MB, after scrape {g.scrapes}: "
            f"{g.last_mb:.1f} MB, growth {g.last_mb - g.first_mb:+.1f} MB; "
            f"incomplete scrapes: {g.incomplete}",
            f"  RSS after every {g.scrapes // len(g.trend)} scrapes (MB): "
            + " ".join(f"{mb:.1f}" for mb in g.trend),
        ]
    if s is not None:
        lines += [
            f"Soak: {s.scrapers} concurrent scrapers for {s.seconds:g} s "
            f"({report.scenario.name} scenario):",
            f"  scrapes: {len(s.walls):,}, failed or incomplete: {s.failures}"
            + (f" (first: {s.first_failure})" if s.first_failure else ""),
            f"  scrape time p50 {_ms(s.p50)}, p99 {_ms(s.p99)}, max {_ms(max(s.walls))}, "
            f"p99/p50 {s.p99 / s.p50:.2f}",
            f"  upstream refreshes: {s.refreshes:.1f} (scrapes per refresh: "
            f"{len(s.walls) / max(s.refreshes, 1e-9):.1f})",
            f"  RSS before {s.rss_before_mb:.1f} MB; peak in first half {s.rss_first_half_mb:.1f}"
            f" MB, in second half {s.rss_second_half_mb:.1f} MB ({s.growth_mb:+.1f} MB); "
            f"at end {s.rss_end_mb:.1f} MB",
        ]
    return "\n".join(lines)


@dataclass(frozen=True)
class Goal:
    name: str
    passed: bool | None  # None: not measured in this run
    detail: str


def goals(settings: Settings, reports: Sequence[Report]) -> list[Goal]:
    """Each goal of the issue, checked per scenario where it applies."""
    out: list[Goal] = []
    for r in reports:
        tag = f"[{r.scenario.name}]"
        floor = r.floor.cpu_per_request_ms
        out.append(
            Goal(
                f"{tag} exporter CPU per dialog <= {CPU_VS_FLOOR:g}x floor CPU per request",
                r.cpu_per_dialog_ms <= CPU_VS_FLOOR * floor,
                f"{r.cpu_per_dialog_ms:.3f} ms vs {CPU_VS_FLOOR * floor:.3f} ms",
            )
        )
        out.append(
            Goal(
                f"{tag} exporter CPU per upstream call <= {CPU_PER_CALL_VS_FLOOR:g}x floor CPU "
                "per request",
                r.cpu_per_call_vs_floor <= CPU_PER_CALL_VS_FLOOR,
                f"{r.cpu_per_call_ms:.3f} ms vs {CPU_PER_CALL_VS_FLOOR * floor:.3f} ms "
                f"({r.cpu_per_call_vs_floor:.2f}x)",
            )
        )
        out.append(
            Goal(
                f"{tag} scrape wall <= {WALL_VS_FLOOR:g} x the bare client's wall on the same "
                "requests",
                r.wall <= WALL_VS_FLOOR * r.floor.wall_seconds,
                f"{_ms(r.wall)} vs {_ms(WALL_VS_FLOOR * r.floor.wall_seconds)}",
            )
        )
        minimum = r.scenario.minimum_calls()
        out.append(
            Goal(
                f"{tag} QuickBlox: per account one request per 100 ids and one for the total",
                r.calls["quickblox"] == minimum["quickblox"],
                f"{r.calls['quickblox']} calls for {len(r.scenario.quickblox_ids)} accounts "
                f"(minimum {minimum['quickblox']})",
            )
        )
        out.append(
            Goal(
                f"{tag} upstream calls per scrape = providers' minimum",
                all(m.calls[p] == minimum[p] for m in r.single for p in sc.PROVIDER_NAMES),
                f"{_n(r.upstream_calls)} vs {_n(minimum.total())}",
            )
        )
        concurrent = r.concurrent_calls
        out.append(
            Goal(
                f"{tag} {settings.concurrent_scrapers} concurrent scrapes cost one scrape's calls",
                all(c == r.upstream_calls for c in concurrent),
                f"{', '.join(_n(c) for c in concurrent)} vs {_n(r.upstream_calls)}",
            )
        )
        if r.scenario.dialogs >= PEAK_RSS_AT_DIALOGS:
            out.append(
                Goal(
                    f"{tag} peak RSS <= {PEAK_RSS_LIMIT_MB:g} MB at {r.scenario.dialogs:,} dialogs",
                    r.peak_rss_mb <= PEAK_RSS_LIMIT_MB,
                    f"{r.peak_rss_mb:.1f} MB",
                )
            )
        out.append(
            Goal(
                f"{tag} every scrape complete (all dialogs up)",
                not r.incomplete,
                f"{len(r.incomplete)} incomplete"
                + (f": {r.incomplete[0]}" if r.incomplete else ""),
            )
        )
        if r.growth is not None:
            g = r.growth
            out.append(
                Goal(
                    f"{tag} no RSS growth over {g.scrapes} scrapes (< {RSS_GROWTH_LIMIT_MB:g} MB)",
                    g.last_mb - g.first_mb < RSS_GROWTH_LIMIT_MB and g.incomplete == 0,
                    f"{g.last_mb - g.first_mb:+.1f} MB, {g.incomplete} incomplete",
                )
            )
        if r.soak is not None:
            s = r.soak
            out.append(
                Goal(
                    f"{tag} soak: no failed scrape, p99 <= {SOAK_P99_VS_P50:g}x p50",
                    s.failures == 0 and s.p99 <= SOAK_P99_VS_P50 * s.p50,
                    f"{s.failures} failed, p99/p50 {s.p99 / s.p50:.2f}",
                )
            )
            # A short soak has too few refreshes to tell a plateau from growth.
            judged = s.seconds >= MIN_SOAK_FOR_MEMORY
            detail = (
                f"{s.growth_mb:+.1f} MB (jump from before the soak: "
                f"{s.rss_first_half_mb - s.rss_before_mb:+.1f} MB)"
            )
            out.append(
                Goal(
                    f"{tag} soak: memory flat (second half peak - first half < "
                    f"{RSS_GROWTH_LIMIT_MB:g} MB)",
                    s.growth_mb < RSS_GROWTH_LIMIT_MB if judged else None,
                    detail if judged else f"{detail}; not judged under {MIN_SOAK_FOR_MEMORY:g} s",
                )
            )
    if not any(r.scenario.dialogs >= PEAK_RSS_AT_DIALOGS for r in reports):
        out.append(
            Goal(
                f"peak RSS <= {PEAK_RSS_LIMIT_MB:g} MB at 5,000 dialogs",
                None,
                "no scenario of 5,000 dialogs in this run",
            )
        )
    return out


def header(settings: Settings) -> str:
    mode = "quick smoke mode" if settings.quick else "full run"
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"""\
chat-unread-exporter benchmark ({mode}): upstream latency {settings.latency * 1000:.0f} ms per
request unless a scenario sets its own, {os.cpu_count()} cores, Python
{platform.python_version()}, load average at the end {load} (1 / 5 / 15 min).
Three processes: the simulators (all four providers in one process), the exporter (its console
script on a generated config) and this one (scrapes over HTTP; runs the floor, the naive
baseline and the exposition timing). Note: on 2 cores the simulator process is itself CPU-bound
at thousands of requests per scrape and competes with the exporter for CPU (its CPU per scrape
is shown below), so wall times are pessimistic for the exporter.
"""


def settings_from(argv: Sequence[str] | None) -> Settings:
    parser = argparse.ArgumentParser(
        prog="benchmarks/run.py", description="Benchmark the exporter against simulated providers."
    )
    parser.add_argument("--quick", action="store_true", help="short smoke run (about a minute)")
    parser.add_argument(
        "--scenarios",
        help=f"comma-separated, from {', '.join(sc.SCENARIOS)} (default: 1k,5k,300x3; "
        "--quick: 1k,300x3)",
    )
    parser.add_argument("--latency", type=float, default=0.1, help="upstream seconds (0.1)")
    parser.add_argument("--growth-scrapes", type=int, help="scrapes for RSS growth (500)")
    parser.add_argument("--soak-seconds", type=float, help="soak duration (60)")
    parser.add_argument("--naive-sample", type=int, help="requests timed sequentially; 0: all")
    parser.add_argument(
        "--long-scenario", help="where the growth and soak runs happen (default: the first)"
    )
    args = parser.parse_args(argv)
    quick: bool = args.quick
    names = tuple(
        (args.scenarios or ("1k,300x3" if quick else "1k,5k,300x3")).replace(" ", "").split(",")
    )
    if unknown := [n for n in names if n not in sc.SCENARIOS]:
        parser.error(f"unknown scenario {unknown[0]!r}")
    long_scenario: str = args.long_scenario or names[0]
    if long_scenario not in names:
        parser.error(f"--long-scenario {long_scenario!r} is not among --scenarios")
    naive_sample = args.naive_sample if args.naive_sample is not None else (10 if quick else 60)
    return Settings(
        quick=quick,
        scenarios=names,
        latency=args.latency,
        scrapes=2 if quick else 5,
        concurrent_scrapers=8,
        concurrent_rounds=1 if quick else 3,
        naive_sample=naive_sample,
        render_repeats=3 if quick else 5,
        long_scenario=long_scenario,
        growth_scrapes=args.growth_scrapes or (30 if quick else 500),
        soak_scrapers=50,
        soak_seconds=args.soak_seconds or (5.0 if quick else 60.0),
    )


async def run(settings: Settings) -> int:
    def log(text: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {text}", file=sys.stderr, flush=True)

    started = time.perf_counter()
    reports = [await run_scenario(settings, sc.SCENARIOS[n], log) for n in settings.scenarios]
    checked = goals(settings, reports)
    print(header(settings))
    print(scenario_table(settings, reports))
    for report in reports:
        if report.growth is not None or report.soak is not None:
            print()
            print(long_runs(report))
    print()
    print("Goals:")
    for goal in checked:
        verdict = {True: "PASS", False: "FAIL", None: "SKIP"}[goal.passed]
        print(f"  {verdict}  {goal.name}: {goal.detail}")
    failed = sum(1 for g in checked if g.passed is False)
    print()
    print(
        f"{sum(1 for g in checked if g.passed)} passed, {failed} failed "
        f"(total run time {time.perf_counter() - started:.0f} s)"
    )
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    return asyncio.run(run(settings_from(argv)))
