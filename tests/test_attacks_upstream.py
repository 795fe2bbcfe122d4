"""Standing attacks on the HTTP client layer (issue 15, defects 1, 4, 9 and 10).

What an upstream, or someone who controls one, can answer: a small compressed body that
inflates to a huge one, an error body echoing the credential the exporter derived from its
configuration, a cookie meant for one account, an answer nested too deep to decode, a status
no HTTP defines, counts each within 2^53 whose sum is not, and rate-limit headers that a proxy
joined into one. Every test talks HTTP to the simulators (or a loopback server of its own)
and to the real app or console script, and asserts what is served.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from exporter.simulator import Fault, Simulator
from exporter.upstream import MAX_BODY_BYTES
from tests.support import (
    ACCOUNT_OF,
    EXE,
    IMKIT_TOKEN,
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
from tests.test_attacks_runtime import (
    SB_429,
    formatted_log_lines,
    landing_page,
    probe_debug,
    quickblox_app_config,
    scrape_when_ready,
)
from tests.test_failures import PROVIDERS

IMKIT_BODY = {"RC": 0, "RM": "OK", "result": {"badge": 3}}
INFLATED = 64 * 1024 * 1024
IMKIT = {"provider": "imkit", "account": "imkit-app"}
CREDENTIAL_HEADERS = (
    "Authorization",
    "Api-Token",
    "IM-Authorization",
    "QB-Token",
    "api_access_token",
)


def imkit_account(sim: Simulator, name: str = "imkit-app", base_url: str = "") -> str:
    """One IMKit account with one dialog (one request a refresh), as a config list item."""
    return f"""\
  - name: {name}
    provider: imkit
    base_url: {base_url or sim.imkit.url}
    client_key: {sim.imkit.client_key}
    token: {IMKIT_TOKEN}
    dialogs:
      - name: all
"""


# --- Defect 1: compressed bodies are capped on their inflated size ------------------------


@pytest.mark.parametrize("chunked", [False, True], ids=["content_length", "chunked"])
@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_a_compressed_body_is_capped_on_its_inflated_size(
    sim: Simulator, scrape_client: ScrapeClient, encoding: str, chunked: bool
) -> None:
    client = await scrape_client(config_yaml(sim))
    sim.imkit.fault = Fault.inflating(IMKIT_BODY, INFLATED, encoding, chunked)

    samples = await get_metrics(client)
    assert set(dialog_values(samples, "chat_unread_up", "imkit").values()) == {0.0}
    assert dialog_values(samples, "chat_unread_messages", "imkit") == {}
    assert errors_of(samples, "imkit", "bad_response") == 3.0
    assert set(dialog_values(samples, "chat_unread_up", "sendbird").values()) == {1.0}
    page = await landing_page(client)
    assert f"body exceeds {MAX_BODY_BYTES} bytes once {encoding}-decoded" in page


@pytest.mark.parametrize("chunked", [False, True], ids=["content_length", "chunked"])
@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_a_compressed_body_within_the_cap_is_read(
    sim: Simulator, scrape_client: ScrapeClient, encoding: str, chunked: bool
) -> None:
    client = await scrape_client(config_yaml(sim))
    sim.imkit.fault = Fault.inflating(IMKIT_BODY, MAX_BODY_BYTES - 1024, encoding, chunked)

    samples = await get_metrics(client)
    assert dialog_values(samples, "chat_unread_messages", "imkit") == dict.fromkeys(
        ("all", "work", "work-project"), 3.0
    )


def rss_bytes(pid: int, field: str = "VmHWM") -> int:
    """The process's resident memory in bytes: its peak so far (``VmHWM``), or now (``VmRSS``)."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB$", status, re.MULTILINE)
    assert match, status
    return int(match.group(1)) * 1024


@contextlib.asynccontextmanager
async def console_script(config: Path) -> AsyncIterator[tuple[str, asyncio.subprocess.Process]]:
    """The real console script on ``config``, on a free port: its URL and its process."""
    port = free_port()
    command = [str(EXE), f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}"]
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        yield f"http://127.0.0.1:{port}", process
    finally:
        process.terminate()
        await process.wait()


async def test_a_compressed_body_leaves_the_exporter_memory_flat(
    sim: Simulator, tmp_path: Path
) -> None:
    """The real console script meets 64 MiB that travel as 64 KiB with a Content-Length."""
    config = tmp_path / "config.yaml"
    config.write_text("accounts:\n" + imkit_account(sim))
    async with console_script(config) as (url, process), aiohttp.ClientSession() as http:
        healthy = parse(await scrape_when_ready(http, url, process))
        assert value(healthy, "chat_unread_messages", **IMKIT, dialog="all") == 8.0
        before = rss_bytes(process.pid)
        sim.imkit.fault = Fault.inflating(IMKIT_BODY, INFLATED)
        attacked = parse(await scrape_when_ready(http, url, process))
        after = rss_bytes(process.pid)
    assert value(attacked, "chat_unread_up", **IMKIT, dialog="all") == 0.0
    assert value(attacked, "chat_unread_messages", **IMKIT, dialog="all") is None
    labels = {**IMKIT, "reason": "bad_response"}
    assert value(attacked, "chat_unread_fetch_errors_total", **labels) == 1.0
    # Reading up to the cap may hold the cap and the chunks in flight, never the whole body
    # (64 MiB inflated, the bytes joined and the decoded text: some 200 MB before the fix).
    growth = after - before
    print(f"peak RSS {before / 2**20:.1f} MiB -> {after / 2**20:.1f} MiB")
    assert growth < 3 * MAX_BODY_BYTES, f"peak memory grew by {growth / 2**20:.0f} MiB"


async def test_memory_of_bodies_read_to_the_cap_is_given_back(
    sim: Simulator, tmp_path: Path
) -> None:
    # Before, once eight accounts had each read a compressed body up to the 8 MiB cap, the
    # exporter's resident memory stayed some 12 MB above its level before for good: freed,
    # the chunks stayed with malloc (no Python object held them). The chaos run's "RSS flat"
    # goal failed on it (56 -> 89 MB after three gzip bombs).
    accounts = [imkit_account(sim, name=f"imkit-{n}") for n in range(8)]
    config = tmp_path / "config.yaml"
    config.write_text("accounts:\n" + "".join(accounts))
    async with console_script(config) as (url, process), aiohttp.ClientSession() as http:
        await scrape_when_ready(http, url, process)
        before = rss_bytes(process.pid, "VmRSS")
        sim.imkit.fault = Fault.inflating(IMKIT_BODY, INFLATED)
        attacked = parse(await scrape_when_ready(http, url, process))
        assert set(dialog_values(attacked, "chat_unread_up", "imkit").values()) == {0.0}
        peak = rss_bytes(process.pid, "VmRSS")
        sim.imkit.fault = None
        for _ in range(100):  # the trim follows the last large body by a second
            healed = parse(await scrape_when_ready(http, url, process))
            now = rss_bytes(process.pid, "VmRSS")
            if now - before < MAX_BODY_BYTES / 2:
                break
            await asyncio.sleep(0.1)
    assert set(dialog_values(healed, "chat_unread_up", "imkit").values()) == {1.0}
    shown = [f"{n / 2**20:.1f} MiB" for n in (before, peak, now)]
    print("RSS before, after the bodies, healed:", *shown)
    assert now - before < MAX_BODY_BYTES / 2, f"RSS {' -> '.join(shown)}"


# --- Defect 4: credentials the exporter derives are redacted -------------------------------


def sent_credentials(sim: Simulator, provider: str) -> set[str]:
    """The credentials in the headers the exporter sent ``provider`` (scheme words dropped)."""
    return {
        request.headers[name].split()[-1]
        for request in fake(sim, provider).requests
        for name in CREDENTIAL_HEADERS
        if name in request.headers
    }


def assert_nowhere(secrets: set[str], texts: list[str]) -> None:
    """Neither a secret nor the head of one (what a shortened detail would show) in any text."""
    for secret in secrets:
        for text in texts:
            assert secret[:16] not in text, (secret, text)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_an_echoed_credential_is_redacted_everywhere(
    sim: Simulator,
    scrape_client: ScrapeClient,
    caplog: pytest.LogCaptureFixture,
    clock: FakeClock,
    provider: str,
) -> None:
    """Configured or derived (Stream's server JWT, Crisp's ``Basic`` token): the credential
    the exporter sent, echoed back in an error body, shows in no log, page or debug output."""
    client = await scrape_client(every_provider_yaml(sim))
    await get_metrics(client)
    secrets = sent_credentials(sim, provider)
    assert secrets
    for secret in secrets:
        fake(sim, provider).fault = Fault.answer(500, f"denied for {secret} (sorry)")
        clock.advance(60)  # past Zendesk's default cache_ttl (its view-count limit)
        with caplog.at_level(logging.WARNING):
            metrics = await (await client.get("/metrics")).text()
            debug = await probe_debug(client, ACCOUNT_OF[provider])
            page = await landing_page(client)
        assert "<redacted>" in debug
        assert_nowhere(secrets, [metrics, debug, page, *formatted_log_lines(caplog.records)])


async def test_a_session_signature_echoed_by_quickblox_is_redacted(
    sim: Simulator,
    scrape_client: ScrapeClient,
    aiohttp_server: Callable[[web.Application], Awaitable[TestServer]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The HMAC that signs a session request changes with each one: a loopback server echoes
    the very signature it was sent."""
    signatures: list[str] = []

    async def session(request: web.Request) -> web.Response:
        signatures.append(str((await request.post())["signature"]))
        return web.Response(status=422, text=f"bad signature {signatures[-1]} (expired?)")

    app = web.Application()
    app.router.add_post("/session.json", session)
    server = await aiohttp_server(app)
    text = quickblox_app_config(sim).replace(sim.quickblox.url, str(server.make_url("")))
    client = await scrape_client(text.replace("/\n", "\n"))

    with caplog.at_level(logging.WARNING):
        debug = await probe_debug(client, "qb-app")
        page = await landing_page(client)
    assert "dialog all: up 0, http_4xx" in debug
    assert "<redacted>" in debug
    assert signatures
    assert_nowhere(set(signatures), [debug, page, *formatted_log_lines(caplog.records)])


# --- Defect 9: no cookie crosses from one account (or one request) to another ---------------


async def test_a_cookie_one_upstream_sets_is_never_sent(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    # "localhost", not an IP: aiohttp's jar would not keep a cookie an IP address sets.
    client = await scrape_client(config_yaml(sim).replace("//127.0.0.1:", "//localhost:"))
    cookie = {"Set-Cookie": "sid=imkit-account-session; Path=/"}
    sim.imkit.fault = Fault.answer(200, IMKIT_BODY, headers=cookie)
    for _ in range(2):
        samples = await get_metrics(client)
        assert set(dialog_values(samples, "chat_unread_up", "sendbird").values()) == {1.0}
    assert len(sim.sendbird.requests) == 4  # two scrapes after IMKit's first answer
    for provider in ("imkit", "sendbird", "crisp", "quickblox"):
        sent = [r.headers["Cookie"] for r in fake(sim, provider).requests if "Cookie" in r.headers]
        assert sent == [], provider


# --- Defect 10: every request counted, fixed status classes, sums within 2^53 --------------


@pytest.mark.parametrize("status", [200, 500])
async def test_an_answer_nested_too_deep_is_counted_and_refused(
    sim: Simulator, scrape_client: ScrapeClient, status: int
) -> None:
    client = await scrape_client(config_yaml(sim, extra="daily_request_budget: 5000"))
    sim.imkit.fault = Fault.answer(status, b"[" * 200_000 + b"]" * 200_000)

    samples = await get_metrics(client)
    assert set(dialog_values(samples, "chat_unread_up", "imkit").values()) == {0.0}
    reason = "bad_response" if status == 200 else "http_5xx"
    assert errors_of(samples, "imkit", reason) == 3.0
    assert value(samples, "chat_unread_daily_requests_spent", **IMKIT) == 3.0
    requests = await get_metrics(client, "/exporter-metrics")
    status_class = f"{status // 100}xx"
    labels = {**IMKIT, "status_class": status_class}
    assert value(requests, "chat_unread_upstream_requests_total", **labels) == 3.0
    assert "internal error" not in await landing_page(client)


async def test_a_status_http_does_not_define_is_an_error_class(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    client = await scrape_client(config_yaml(sim))
    sim.imkit.fault = Fault.answer(999, {"RC": 999, "RM": "who knows"})

    samples = await get_metrics(client)
    assert set(dialog_values(samples, "chat_unread_up", "imkit").values()) == {0.0}
    assert errors_of(samples, "imkit", "bad_response") == 3.0
    requests = await get_metrics(client, "/exporter-metrics")
    classes = {
        dict(labels)["status_class"]: number
        for (name, labels), number in requests.items()
        if name == "chat_unread_upstream_requests_total" and dict(labels)["provider"] == "imkit"
    }
    assert classes == {"error": 3.0}
    assert "not an HTTP status: HTTP 999" in await landing_page(client)


BEYOND = 2**53
SUMMED_BEYOND: dict[str, tuple[Fault, str, str]] = {
    "chatwoot": (
        Fault.answer(
            200,
            [{"open": BEYOND, "unattended": 0, "unassigned": 0, "team_id": t} for t in (3, 4)],
            path_contains="/live_reports/",
        ),
        "by-team",
        "",
    ),
    # provider: (answer of counts each at 2^53, the dialog summing them, one reading one)
    "crisp": (
        Fault.answer(
            200,
            {
                "error": False,
                "reason": "listed",
                "data": [{"session_id": s, "unread": {"operator": BEYOND}} for s in "ab"],
            },
            path_contains="/conversations/",
        ),
        "backlog",
        "",
    ),
    "stream": (
        Fault.answer(
            200,
            {
                "counts_by_user": {
                    user: {
                        "total_unread_count": 2,
                        "channel_type": [
                            {"channel_type": kind, "channel_count": BEYOND, "unread_count": 1}
                            for kind in ("messaging", "team")
                        ],
                    }
                    for user in ("agent-42", "agent-7")
                }
            },
        ),
        "agent-42",
        "agent-42-messaging",
    ),
    "matrix": (
        Fault.answer(
            200,
            {
                "next_batch": "s1",
                "rooms": {
                    "join": {
                        room: {
                            "unread_notifications": {
                                "notification_count": BEYOND,
                                "highlight_count": 0,
                            }
                        }
                        for room in ("!support:example.org", "!sales:example.org")
                    }
                },
            },
            path_contains="/sync",
        ),
        "all",
        "sales",
    ),
}


@pytest.mark.parametrize("provider", sorted(SUMMED_BEYOND))
async def test_counts_summed_beyond_2_53_fail_their_dialog(
    sim: Simulator, scrape_client: ScrapeClient, provider: str
) -> None:
    fault, summing, single = SUMMED_BEYOND[provider]
    client = await scrape_client(every_provider_yaml(sim))
    fake(sim, provider).fault = fault

    samples = await get_metrics(client)
    assert dialog_values(samples, "chat_unread_up", provider)[summing] == 0.0
    assert summing not in dialog_values(samples, "chat_unread_messages", provider)
    if single:  # one count of 2^53 is exact, and served
        assert dialog_values(samples, "chat_unread_up", provider)[single] == 1.0
    assert "add up to more than 2**53" in await landing_page(client)


# --- Rate-limit headers a proxy joined into one ---------------------------------------------


async def test_joined_rate_limit_headers_are_read_most_cautiously(
    sim: Simulator, scrape_client: ScrapeClient, clock: FakeClock
) -> None:
    client = await scrape_client(config_yaml(sim))
    reset = clock.now + 90
    headers = {
        "X-RateLimit-Remaining": "10, 7",
        "X-RateLimit-Reset": f"{reset - 60:.0f},{reset:.0f}",
    }
    sim.imkit.fault = Fault.answer(200, IMKIT_BODY, headers=headers)
    sim.sendbird.fault = Fault.answer(429, SB_429, headers={"Retry-After": "30, 120"})

    samples = await get_metrics(client)
    assert value(samples, "chat_unread_rate_limit_remaining", **IMKIT) == 7.0
    assert value(samples, "chat_unread_rate_limit_reset_timestamp_seconds", **IMKIT) == reset
    sendbird = {"provider": "sendbird", "account": "sb-prod"}
    assert value(samples, "chat_unread_rate_limit_reset_timestamp_seconds", **sendbird) == (
        clock.now + 120
    )
