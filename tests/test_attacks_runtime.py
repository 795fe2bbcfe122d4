"""Standing attacks on scraping at run time (issue 9, rows 3, 4, 7 and 13-17).

Each case is an answer, a load or a timing an adversary can produce on loopback: upstream
answers crafted to break rendering, back-off, redaction or the log, an upstream slower than
the scrape deadline, a reload in the middle of a scrape, more accounts than open files.
Every test talks HTTP to the simulators and to the real app (or the real console script),
and asserts the values served: ``up 0`` with no value where the truth is unknown, never a
500, a stale ``up 1``, a made-up timeout, a credential or a forged log line.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import resource
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from exporter.configuration.loading import parse_config
from exporter.logs import JSONFormatter, LogfmtFormatter
from exporter.service import Exporter
from exporter.simulator import Fault, Simulator
from exporter.web.app import make_app
from tests.support import (
    EXE,
    IMKIT_TOKEN,
    QB_USER,
    ClientFactory,
    FakeClock,
    ScrapeClient,
    config_yaml,
    dialog_values,
    errors_of,
    every_provider_yaml,
    fake,
    free_port,
    get_metrics,
    parse,
    value,
)
from tests.test_failures import FAILURES, PROVIDERS, success_body_with

Client = TestClient[web.Request, web.Application]
# X-Prometheus-Scrape-Timeout-Seconds of 1: the scrape waits 0.5 s for upstream.
SHORT_DEADLINE = {"X-Prometheus-Scrape-Timeout-Seconds": "1"}
IMKIT_VALUES = {"all": 8.0, "work": 7.0, "work-project": 5.0}
SB_429 = {"error": True, "code": 500910, "message": "Too many requests."}


async def probe_debug(client: Client, account: str) -> str:
    response = await client.get(f"/probe?account={account}&debug=true")
    assert response.status == 200
    return await response.text()


async def landing_page(client: Client) -> str:
    response = await client.get("/")
    assert response.status == 200
    return await response.text()


def some_accounts(sim: Simulator, extras: dict[str, str]) -> str:
    """``config_yaml``'s accounts named in ``extras``, each with its extra line (if any)."""
    head, *blocks = config_yaml(sim).rstrip("\n").split("\n  - name: ")
    chosen = [
        block.replace("\n    dialogs:", f"\n    {extras[name]}\n    dialogs:", 1)
        if extras[name]
        else block
        for block in blocks
        if (name := block.split("\n", 1)[0]) in extras
    ]
    return head + "".join(f"\n  - name: {block}" for block in chosen) + "\n"


def formatted_log_lines(records: list[logging.LogRecord]) -> list[str]:
    """Every captured record as the exporter writes it, in both log formats."""
    return [fmt.format(r) for r in records for fmt in (LogfmtFormatter(), JSONFormatter())]


# --- Row 3: a paced scrape after a failed refresh ------------------------------------------


@pytest.mark.parametrize("failure", ["http_500", "http_429", "reset_connection", "html_200"])
async def test_budget_pacing_does_not_hide_a_failed_refresh(
    sim: Simulator, scrape_client: ScrapeClient, clock: FakeClock, failure: str
) -> None:
    make_fault, reason = FAILURES[failure]
    client = await scrape_client(config_yaml(sim, extra="daily_request_budget: 5000"))
    assert dialog_values(await get_metrics(client), "chat_unread_messages", "imkit")
    clock.advance(3600)  # pacing allows one more refresh, which fails
    sim.imkit.fault = make_fault("imkit")
    failed = await get_metrics(client)
    assert set(dialog_values(failed, "chat_unread_up", "imkit").values()) == {0.0}
    calls = len(sim.imkit.requests)

    paced = await get_metrics(client)  # served between refreshes: no upstream call
    assert len(sim.imkit.requests) == calls
    assert set(dialog_values(paced, "chat_unread_up", "imkit").values()) == {0.0}
    assert dialog_values(paced, "chat_unread_messages", "imkit") == {}
    assert dialog_values(paced, "chat_unread_last_success_timestamp_seconds", "imkit") == {}
    assert f"dialog work: up 0, {reason}" in await probe_debug(client, "imkit-app")


# --- Row 4: counts that do not fit a float -------------------------------------------------


@pytest.mark.parametrize("count", [10**400, 2**53 + 2], ids=["400_digits", "beyond_2_53"])
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_count_beyond_a_float_fails_only_its_dialogs(
    sim: Simulator, scrape_client: ScrapeClient, provider: str, count: int
) -> None:
    client = await scrape_client(every_provider_yaml(sim, extra="cache_ttl: 1m"))
    fake(sim, provider).fault = Fault.answer(200, success_body_with(provider, count))
    for _ in range(2):  # the fresh scrape and the cached one
        samples = await get_metrics(client)
        assert dialog_values(samples, "chat_unread_messages", provider) == {}
        assert errors_of(samples, provider, "bad_response")
        for other in PROVIDERS:
            if other != provider:
                assert set(dialog_values(samples, "chat_unread_up", other).values()) == {1.0}


async def test_a_backlog_waiting_time_beyond_a_float_fails_only_the_backlog(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    conversation = {"session_id": "s", "unread": {"operator": 2, "visitor": 0}}
    backlog = [{**conversation, "waiting_since": 10**400}]
    sim.crisp.fault = Fault.answer(
        200, {"error": False, "reason": "listed", "data": backlog}, path_contains="/conversations/"
    )
    client = await scrape_client(config_yaml(sim))
    samples = await get_metrics(client)
    up = dialog_values(samples, "chat_unread_up", "crisp")
    assert up == {"backlog": 0.0, "vip-visitor": 1.0, "vip-operator": 1.0}
    assert errors_of(samples, "crisp", "bad_response")


# --- Row 7: junk rate-limit headers --------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"Retry-After": "soon"},
        {"Retry-After": "nan"},
        {"Retry-After": "inf"},
        {"Retry-After": "-inf"},
        {"Retry-After": "-30"},
        {"Retry-After": "1e400"},
        {"Retry-After": "Wed, 32 Foo 2015 07:28:00 GMT"},
        {"X-RateLimit-Reset": "nan", "X-RateLimit-Remaining": "nan"},
        {"X-RateLimit-RetryAfter": "-inf", "X-RateLimit-Remaining": "inf"},
    ],
    ids=lambda headers: "-".join(f"{k}={v}" for k, v in headers.items()),
)
async def test_junk_rate_limit_headers_mean_the_default_back_off(
    sim: Simulator, scrape_client: ScrapeClient, clock: FakeClock, headers: dict[str, str]
) -> None:
    client = await scrape_client(config_yaml(sim))
    sim.sendbird.fault = Fault.answer(429, SB_429, headers=headers)
    labels = {"provider": "sendbird", "account": "sb-prod"}
    first = await get_metrics(client)
    assert errors_of(first, "sendbird", "rate_limited") == 2.0
    assert errors_of(first, "sendbird", "bad_response") == 0.0
    assert value(first, "chat_unread_rate_limit_reset_timestamp_seconds", **labels) == (
        clock.now + 60
    )
    assert value(first, "chat_unread_rate_limit_remaining", **labels) is None

    sim.sendbird.fault = None
    calls = len(sim.sendbird.requests)
    clock.advance(59)
    held = await get_metrics(client)
    assert len(sim.sendbird.requests) == calls  # the default 60 s back-off holds
    assert set(dialog_values(held, "chat_unread_up", "sendbird").values()) == {0.0}
    clock.advance(2)
    after = await get_metrics(client)
    assert dialog_values(after, "chat_unread_messages", "sendbird")["agent-42"] == 11.0


# --- Row 13: upstream connections are bounded ----------------------------------------------


@pytest.fixture
async def bounded_client(
    aiohttp_client: ClientFactory, clock: FakeClock
) -> AsyncIterator[Callable[[str, int], Awaitable[Client]]]:
    """An app whose exporter may hold ``limit`` upstream connections at once."""
    started: list[Exporter] = []

    async def build(text: str, limit: int) -> Client:
        exporter = Exporter(lambda: parse_config(text, "test.yaml"), clock, limit)
        await exporter.start()
        started.append(exporter)
        return await aiohttp_client(make_app(exporter))

    yield build
    for exporter in started:
        await exporter.close()


async def test_a_full_connection_bound_is_named_as_the_reason(
    sim: Simulator, bounded_client: Callable[[str, int], Awaitable[Client]]
) -> None:
    # Crisp hangs on the only connection (its timeout is long); IMKit waits for it in vain.
    text = some_accounts(sim, {"acme-crisp": "timeout: 3s", "imkit-app": "timeout: 200ms"})
    client = await bounded_client(text, 1)
    sim.crisp.fault = Fault.hang()

    samples = await get_metrics(client, **SHORT_DEADLINE)
    assert set(dialog_values(samples, "chat_unread_up", "imkit").values()) == {0.0}
    assert errors_of(samples, "imkit", "timeout") == 3.0
    assert len(sim.crisp.requests) == 1  # one connection: the others never left the exporter
    assert sim.imkit.requests == []
    page = await landing_page(client)
    assert "all 1 upstream connections (the exporter-wide bound" in page


async def test_more_requests_than_open_files_are_queued_not_failed(
    sim: Simulator, tmp_path: Path
) -> None:
    """The real console script under a 160 open-file limit, asked for 240 dialogs at once."""
    accounts = "".join(
        f"""\
  - name: imkit-{a}
    provider: imkit
    base_url: {sim.imkit.url}
    client_key: {sim.imkit.client_key}
    token: {IMKIT_TOKEN}
    dialogs: [{", ".join(f"{{name: d{d}}}" for d in range(8))}]
"""
        for a in range(30)
    )
    config = tmp_path / "config.yaml"
    config.write_text("accounts:\n" + accounts)
    sim.imkit.latency = 0.3  # every request holds its connection a while
    port = free_port()

    def low_open_file_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (160, 160))

    log = (tmp_path / "exporter.log").open("wb")
    command = [str(EXE), f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}"]
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.DEVNULL, stderr=log, preexec_fn=low_open_file_limit
    )
    try:
        async with aiohttp.ClientSession() as http:
            body = await scrape_when_ready(http, f"http://127.0.0.1:{port}", process)
    finally:
        process.terminate()
        await process.wait()
        log.close()
    samples = parse(body)
    ups = [v for (name, _), v in samples.items() if name == "chat_unread_up"]
    assert ups == [1.0] * 240, (tmp_path / "exporter.log").read_text()[-3000:]
    assert "Too many open files" not in (tmp_path / "exporter.log").read_text()


async def scrape_when_ready(
    http: aiohttp.ClientSession, url: str, process: asyncio.subprocess.Process
) -> str:
    """``/metrics`` of the exporter subprocess at ``url`` once it is ready (polled)."""
    for _ in range(400):
        assert process.returncode is None, "the exporter exited"
        try:
            async with http.get(f"{url}/-/ready") as ready:
                if ready.status == 200:
                    break
        except aiohttp.ClientConnectionError:
            pass
        await asyncio.sleep(0.05)
    headers = {"X-Prometheus-Scrape-Timeout-Seconds": "30"}
    async with http.get(f"{url}/metrics", headers=headers) as response:
        assert response.status == 200
        return await response.text()


# --- Row 14: credentials obtained at run time ----------------------------------------------


def quickblox_app_config(sim: Simulator) -> str:
    return f"""\
accounts:
  - name: qb-app
    provider: quickblox
    base_url: {sim.quickblox.url}
    application_id: {sim.quickblox.application_id}
    auth_key: {sim.quickblox.auth_key}
    auth_secret: {sim.quickblox.auth_secret}
    login: agent
    password: agent-password
    dialogs:
      - name: all
"""


@pytest.mark.parametrize(
    "echo",
    [
        lambda token: Fault.answer(500, {"errors": {"base": [f"session {token} is broken"]}}),
        lambda token: Fault.answer(200, f"<html>maintenance for {token}</html>"),
        lambda token: Fault.answer(429, {"errors": [f"slow down, {token}"]}),
    ],
    ids=["error_body", "html_body", "rate_limit_body"],
)
async def test_a_session_token_the_exporter_created_is_redacted(
    sim: Simulator,
    scrape_client: ScrapeClient,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    echo: Callable[[str], Fault],
) -> None:
    sim.quickblox.clock = clock  # the session's signed timestamp comes from the exporter's clock
    client = await scrape_client(quickblox_app_config(sim))
    assert value(
        await get_metrics(client),
        "chat_unread_messages",
        provider="quickblox",
        account="qb-app",
        dialog="all",
    ) == sum(sim.quickblox.unread[QB_USER].values())
    [token] = sim.quickblox.sessions
    sim.quickblox.fault = dataclasses.replace(echo(token), path_contains="unread")

    with caplog.at_level(logging.WARNING):
        debug = await probe_debug(client, "qb-app")  # the refresh that meets the echo
        page = await landing_page(client)
        metrics = await (await client.get("/metrics")).text()
    assert "dialog all: up 0" in debug
    assert "<redacted>" in debug
    assert "&lt;redacted&gt;" in page
    for text in (metrics, debug, page, *formatted_log_lines(caplog.records)):
        assert token not in text


# --- Row 15: control characters in upstream text -------------------------------------------

FORGERY = (
    "boom\r\nts=2026-01-01 level=error msg=forged\u2028level=info msg=forged2\x85"
    "\x1b[2J\x1b]0;title\x07\u202egnp.exe\u2066\x9b31m\x7f\x00end"
)


@pytest.mark.parametrize("body", [{"message": FORGERY, "code": 500901}, FORGERY])
async def test_control_characters_from_upstream_are_escaped(
    sim: Simulator, scrape_client: ScrapeClient, caplog: pytest.LogCaptureFixture, body: object
) -> None:
    client = await scrape_client(config_yaml(sim))
    sim.sendbird.fault = Fault.answer(500, json.dumps(body).encode())  # an envelope or a string

    with caplog.at_level(logging.WARNING):
        assert errors_of(await get_metrics(client), "sendbird", "http_5xx") == 2.0
        debug = await probe_debug(client, "sb-prod")
        page = await landing_page(client)
    lines = formatted_log_lines([r for r in caplog.records if r.getMessage() == "fetch failed"])
    assert len(lines) == 8  # 2 dialogs x 2 scrapes x 2 formats
    for line in lines:
        assert line.isprintable(), repr(line)
    for line in lines[0::2]:  # logfmt: the forged fields stay inside the quoted detail
        assert line.index('detail="') < line.index("msg=forged")
    for line in lines[1::2]:
        assert "forged2" in json.loads(line)["detail"]  # still valid JSON, content kept
    for text in (debug, page):
        assert all(line.isprintable() for line in text.splitlines()), repr(text)
        assert "\\x1b[2J" in text  # shown, escaped
    assert len(debug.splitlines()) == 1 + 2 + 2  # account line, 2 requests, 2 dialogs


# --- Row 16: an upstream slower than the scrape deadline -----------------------------------


async def test_a_refresh_that_ends_after_its_deadline_serves_the_next_scrape(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    client = await scrape_client(config_yaml(sim))
    sim.imkit.latency = 1.0  # every answer arrives after the scrape's 0.5 s
    for scrape in range(4):
        calls = len(sim.imkit.requests)
        samples = await get_metrics(client, **SHORT_DEADLINE)
        if scrape % 2 == 0:  # starts a refresh it cannot wait for
            assert len(sim.imkit.requests) == calls + 3
            assert set(dialog_values(samples, "chat_unread_up", "imkit").values()) == {0.0}
            await _until_refresh_done(client, "imkit-app", refreshes=scrape // 2 + 1)
        else:  # served that refresh's results, fetched after the previous scrape ended
            assert len(sim.imkit.requests) == calls
            assert dialog_values(samples, "chat_unread_messages", "imkit") == IMKIT_VALUES
            assert set(dialog_values(samples, "chat_unread_up", "imkit").values()) == {1.0}


async def _until_refresh_done(client: Client, account: str, refreshes: int) -> None:
    """Poll /exporter-metrics until the account's answers of ``refreshes`` refreshes are in."""
    labels = {"provider": "imkit", "account": account, "status_class": "2xx"}
    for _ in range(200):
        samples = await get_metrics(client, "/exporter-metrics")
        if value(samples, "chat_unread_upstream_requests_total", **labels) == 3.0 * refreshes:
            return
        await asyncio.sleep(0.05)
    pytest.fail("the refresh did not finish")


# --- Row 17: a reload while scrapes are in flight ------------------------------------------


@pytest.mark.parametrize("change", ["changed", "removed"])
async def test_a_reload_does_not_cut_short_the_scrapes_in_flight(
    sim: Simulator, aiohttp_client: ClientFactory, clock: FakeClock, change: str
) -> None:
    texts = [config_yaml(sim)]
    exporter = Exporter(lambda: parse_config(texts[-1], "test.yaml"), clock)
    await exporter.start()
    try:
        client = await aiohttp_client(make_app(exporter))
        for provider in sim.providers:
            provider.latency = 0.5
        scrape = asyncio.create_task(client.get("/metrics"))
        for _ in range(500):  # until every account's refresh is in flight
            if len(sim.imkit.requests) == 3:
                break
            await asyncio.sleep(0.01)
        if change == "changed":
            texts.append(config_yaml(sim, extra="timeout: 4s"))
        else:
            texts.append(
                some_accounts(sim, dict.fromkeys(["acme-crisp", "qb-support", "sb-prod"], ""))
            )
        assert (await client.post("/-/reload")).status == 200

        response = await scrape
        assert response.status == 200
        samples = parse(await response.text())
        assert [v for (name, _), v in samples.items() if name == "chat_unread_up"] == [1.0] * 11
        assert dialog_values(samples, "chat_unread_messages", "imkit") == IMKIT_VALUES
        assert errors_of(samples, "imkit", "timeout") in (0.0, None)
    finally:
        await exporter.close()
