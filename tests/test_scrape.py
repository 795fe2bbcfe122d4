"""When the exporter calls upstream: single-flight, cache TTL, daily budget, rate-limit back-off.

Time is a FakeClock the test moves, so TTLs, budgets and back-off are exact, not timing luck.
"""

from __future__ import annotations

import asyncio

from exporter.fetching.scrape import observe_all
from exporter.providers.base import FetchError, Reason
from exporter.simulator import Fault, Simulator
from tests.support import (
    ACCOUNT_OF,
    ExporterFactory,
    FakeClock,
    ScrapeClient,
    config_yaml,
    dialog_values,
    errors_of,
    get_metrics,
    parse,
    value,
)


def upstream_calls(sim: Simulator) -> int:
    return sum(len(p.requests) for p in sim.providers)


async def test_concurrent_scrapes_share_one_fetch(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    client = await scrape_client(config_yaml(sim))
    await get_metrics(client)
    one_scrape = upstream_calls(sim)
    assert one_scrape == 11  # crisp 2 pages + 2 conversations, quickblox 2, imkit 3, sendbird 2

    for provider in sim.providers:
        provider.requests.clear()
        provider.latency = 0.5  # keeps the first fetch in flight while the others arrive
    paths = ["/metrics"] * 6 + ["/probe?provider=crisp", "/probe?account=sb-prod"]
    responses = await asyncio.gather(*(client.get(path) for path in paths))
    bodies = [parse(await r.text()) for r in responses]

    assert upstream_calls(sim) == one_scrape
    for samples in bodies[:6]:
        assert dialog_values(samples, "chat_unread_messages", "imkit") == {
            "all": 8.0,
            "work": 7.0,
            "work-project": 5.0,
        }
    hits = value(
        bodies[-1], "chat_unread_up", provider="sendbird", account="sb-prod", dialog="agent-42"
    )
    assert hits == 1.0


async def test_scrapes_joining_a_render_in_flight_count_as_cache_hits(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    client = await scrape_client(config_yaml(sim))
    for provider in sim.providers:
        provider.latency = 0.3  # the first scrape is still in flight when the others arrive
    await asyncio.gather(*(client.get("/metrics") for _ in range(3)))
    for provider in sim.providers:
        provider.latency = 0.0
    samples = await get_metrics(client)  # later: a refresh of its own
    for name in ("crisp", "quickblox", "imkit", "sendbird"):
        labels = {"provider": name, "account": ACCOUNT_OF[name]}
        assert value(samples, "chat_unread_cache_hits_total", **labels) == 2.0  # the joiners
        assert value(samples, "chat_unread_cache_misses_total", **labels) == 2.0


async def test_cache_ttl_serves_last_values_until_it_expires(
    sim: Simulator, scrape_client: ScrapeClient, clock: FakeClock
) -> None:
    client = await scrape_client(config_yaml(sim, extra="cache_ttl: 1m"))
    first = await get_metrics(client)
    calls = upstream_calls(sim)
    fetched_at = value(
        first,
        "chat_unread_last_success_timestamp_seconds",
        provider="imkit",
        account="imkit-app",
        dialog="all",
    )
    assert fetched_at == clock.now

    sim.imkit.rooms["imkit-user-token-0123"][0].unread = 50
    clock.advance(59)
    second = await get_metrics(client)
    assert upstream_calls(sim) == calls  # no request within the TTL
    assert dialog_values(second, "chat_unread_messages", "imkit")["all"] == 8.0
    age = value(
        second,
        "chat_unread_last_success_timestamp_seconds",
        provider="imkit",
        account="imkit-app",
        dialog="all",
    )
    assert age == fetched_at
    hits = value(second, "chat_unread_cache_hits_total", provider="imkit", account="imkit-app")
    assert hits == 1.0

    clock.advance(2)
    third = await get_metrics(client)
    assert upstream_calls(sim) == 2 * calls
    assert dialog_values(third, "chat_unread_messages", "imkit")["all"] == 53.0
    misses = value(third, "chat_unread_cache_misses_total", provider="imkit", account="imkit-app")
    assert misses == 2.0


async def test_help_says_values_may_be_cached(sim: Simulator, scrape_client: ScrapeClient) -> None:
    client = await scrape_client(config_yaml(sim, extra="cache_ttl: 30s"))
    text = await (await client.get("/metrics")).text()
    assert "# HELP chat_unread_messages Unread messages" in text
    help_line = next(
        line for line in text.splitlines() if line.startswith("# HELP chat_unread_messages")
    )
    assert "cached" in help_line


async def test_daily_budget_holds_over_a_simulated_day(
    sim: Simulator, exporter_for: ExporterFactory, clock: FakeClock
) -> None:
    text = f"""\
accounts:
  - name: crisp-plugin
    provider: crisp
    base_url: {sim.crisp.url}
    website_id: 8c842203-7ed8-4e29-a608-7cf78a7d2fcc
    identifier: {sim.crisp.identifier}
    key: {sim.crisp.key}
    daily_request_budget: 500
    dialogs: [{{name: backlog}}]
"""
    exporter = await exporter_for(text)
    runtime = exporter.runtimes["crisp-plugin"]
    served = 0
    for _ in range(86400 // 5):  # a scrape every 5 s for a day
        [result] = await observe_all([runtime], 10.0)
        served += result.dialogs[0].reading is not None
        clock.advance(5)

    spent = len(sim.crisp.requests)
    assert spent <= 500
    assert spent >= 450  # and the budget is used, not wasted
    assert served == 86400 // 5  # every scrape was served a value
    assert runtime.budget is not None
    assert runtime.budget.spent(clock.now - 5) == spent


async def test_budget_is_exposed(
    sim: Simulator, scrape_client: ScrapeClient, clock: FakeClock
) -> None:
    client = await scrape_client(config_yaml(sim, extra="daily_request_budget: 5000"))
    await get_metrics(client)
    samples = await get_metrics(client)
    labels = {"provider": "crisp", "account": "acme-crisp"}
    assert value(samples, "chat_unread_daily_request_budget", **labels) == 5000.0
    assert value(samples, "chat_unread_daily_requests_spent", **labels) == 4.0  # paced: 1 refresh


async def test_retry_after_is_honoured(
    sim: Simulator, scrape_client: ScrapeClient, clock: FakeClock
) -> None:
    client = await scrape_client(config_yaml(sim))
    sim.sendbird.fault = Fault.answer(
        429,
        {"error": True, "code": 500910, "message": "Too many requests."},
        headers={"Retry-After": "30"},
    )
    first = await get_metrics(client)
    assert set(dialog_values(first, "chat_unread_up", "sendbird").values()) == {0.0}
    reset = value(
        first,
        "chat_unread_rate_limit_reset_timestamp_seconds",
        provider="sendbird",
        account="sb-prod",
    )
    assert reset == clock.now + 30
    calls = len(sim.sendbird.requests)

    sim.sendbird.fault = None
    clock.advance(20)
    second = await get_metrics(client)
    assert len(sim.sendbird.requests) == calls  # still holding off
    assert set(dialog_values(second, "chat_unread_up", "sendbird").values()) == {0.0}
    assert set(dialog_values(second, "chat_unread_up", "imkit").values()) == {1.0}

    clock.advance(11)
    third = await get_metrics(client)
    assert len(sim.sendbird.requests) == calls + 2
    assert dialog_values(third, "chat_unread_messages", "sendbird")["agent-42"] == 11.0


async def test_ratelimit_reset_header_sets_the_back_off(
    sim: Simulator, scrape_client: ScrapeClient, clock: FakeClock
) -> None:
    client = await scrape_client(config_yaml(sim))
    reset_at = int(clock.now) + 45
    sim.sendbird.fault = Fault.answer(
        429,
        {"error": True, "code": 500910, "message": "Too many requests."},
        headers={"X-RateLimit-Reset": str(reset_at), "X-RateLimit-Remaining": "0"},
    )
    samples = await get_metrics(client)
    labels = {"provider": "sendbird", "account": "sb-prod"}
    assert value(samples, "chat_unread_rate_limit_reset_timestamp_seconds", **labels) == reset_at
    assert value(samples, "chat_unread_rate_limit_remaining", **labels) == 0.0
    sim.sendbird.fault = None
    clock.advance(44)
    calls = len(sim.sendbird.requests)
    await get_metrics(client)
    assert len(sim.sendbird.requests) == calls


async def test_slow_account_is_cut_at_the_deadline_and_the_rest_is_served(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    client = await scrape_client(config_yaml(sim))
    sim.quickblox.fault = Fault.hang()
    response = await client.get("/metrics", headers={"X-Prometheus-Scrape-Timeout-Seconds": "1"})
    samples = parse(await response.text())
    assert dialog_values(samples, "chat_unread_up", "quickblox") == {
        "all": 0.0,
        "escalations": 0.0,
        "quiet": 0.0,
    }
    timeouts = errors_of(samples, "quickblox", "timeout")
    assert timeouts == 3.0
    assert dialog_values(samples, "chat_unread_messages", "crisp")["backlog"] == 72.0

    # The hanging fetch is still in flight: the next scrape joins it instead of piling on.
    calls = len(sim.quickblox.requests)
    await client.get("/metrics", headers={"X-Prometheus-Scrape-Timeout-Seconds": "1"})
    assert len(sim.quickblox.requests) == calls


async def test_partial_results_are_served_when_one_dialog_is_slow(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    client = await scrape_client(config_yaml(sim))
    sim.crisp.fault = Fault(kind="hang", path_contains="/conversations/")
    response = await client.get("/metrics", headers={"X-Prometheus-Scrape-Timeout-Seconds": "1"})
    samples = parse(await response.text())
    assert dialog_values(samples, "chat_unread_up", "crisp") == {
        "backlog": 0.0,
        "vip-visitor": 1.0,
        "vip-operator": 1.0,
    }


async def test_a_refresh_that_never_ends_is_abandoned(
    sim: Simulator, exporter_for: ExporterFactory
) -> None:
    only_crisp = config_yaml(sim, extra="timeout: 100ms").split("  - name: qb-support")[0]
    exporter = await exporter_for(only_crisp)
    runtime = exporter.runtimes["acme-crisp"]
    # Every page answers well within its 100 ms (slack for a loaded machine), but the backlog
    # never ends: only the round limit (6 request timeouts) stops the refresh.
    sim.crisp.latency = 0.02
    sim.crisp.fault = Fault.answer(
        200,
        {"error": False, "reason": "resolved", "data": [{"unread": {"operator": 1}}] * 50},
        path_contains="/conversations/",
    )
    await observe_all([runtime], 0.1)
    assert runtime.last_round is not None
    assert runtime.last_round.task is not None
    await asyncio.wait_for(runtime.last_round.task, timeout=10)  # ends by itself at its limit
    outcome = runtime.last_round.outcomes["backlog"]
    assert isinstance(outcome, FetchError)
    assert outcome.reason is Reason.TIMEOUT
    assert outcome.detail == "refresh exceeded 0.6s"
    assert 3 <= len(sim.crisp.calls("/conversations/")) <= 30  # 0.6 s of 20 ms pages, at most


async def test_concurrent_metrics_share_a_body_only_within_one_deadline(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    client = await scrape_client(config_yaml(sim))
    for provider in sim.providers:
        provider.latency = 0.5

    async def scrape(timeout_header: str) -> str:
        response = await client.get(
            "/metrics", headers={"X-Prometheus-Scrape-Timeout-Seconds": timeout_header}
        )
        return await response.text()

    first, second, short = await asyncio.gather(scrape("10"), scrape("10"), scrape("0.4"))
    assert first == second  # one rendered body served to both
    assert set(dialog_values(parse(first), "chat_unread_up", "imkit").values()) == {1.0}
    # The short deadline got its own render when it ran out, not the longer scrape's body.
    assert set(dialog_values(parse(short), "chat_unread_up", "imkit").values()) == {0.0}
    assert upstream_calls(sim) == 11  # all three shared one refresh of every account
