"""The HTTP surface: /probe (multi-target), reload, landing page, health, content types."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest

from exporter.configuration.loading import load_config
from exporter.rendering.buildinfo import BUILD
from exporter.service import Exporter
from exporter.simulator import Fault, Simulator
from exporter.web.app import make_app
from tests.support import (
    ClientFactory,
    ScrapeClient,
    config_yaml,
    dialog_values,
    get_metrics,
    parse,
    value,
)


async def test_probe_serves_only_the_named_accounts(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    client = await scrape_client(config_yaml(sim))
    samples = await get_metrics(client, "/probe?account=acme-crisp&account=sb-prod")
    accounts = {dict(labels)["account"] for (name, labels) in samples if name == "chat_unread_up"}
    assert accounts == {"acme-crisp", "sb-prod"}
    assert not any(name.startswith("chat_unread_exporter_") for name, _ in samples)
    assert not any(name.startswith("chat_unread_fetch_") for name, _ in samples)
    assert sim.imkit.requests == []  # an account not probed is not fetched

    by_provider = await get_metrics(client, "/probe?provider=quickblox")
    assert dialog_values(by_provider, "chat_unread_messages", "quickblox") == {
        "all": 7.0,
        "escalations": 4.0,
        "quiet": 0.0,
    }
    assert {dict(labels)["provider"] for (_, labels) in by_provider} == {"quickblox"}


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("", "missing parameter"),
        ("?account=no-such-account", "unknown account or provider: no-such-account"),
        ("?provider=telegram", "unknown account or provider: telegram"),
        ("?target=http://example.com/", "unknown parameter 'target'"),
        ("?account=acme-crisp&target=http://169.254.169.254/", "unknown parameter 'target'"),
        ("?account=acme-crisp&module=x", "unknown parameter 'module'"),
        ("?account=acme-crisp&debug=maybe", "debug must be true or false"),
    ],
)
async def test_probe_refuses_bad_requests(
    sim: Simulator, scrape_client: ScrapeClient, query: str, message: str
) -> None:
    client = await scrape_client(config_yaml(sim))
    response = await client.get(f"/probe{query}")
    assert response.status == 400
    assert message in await response.text()
    assert sum(len(p.requests) for p in sim.providers) == 0


async def test_probe_debug_traces_requests_without_secrets(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    client = await scrape_client(config_yaml(sim))
    sim.crisp.fault = Fault.answer(
        401,
        {"error": True, "reason": "invalid_session", "data": {"message": f"bad {sim.crisp.key}"}},
        path_contains="/conversation/",
    )
    response = await client.get("/probe?account=acme-crisp&account=sb-prod&debug=true")
    text = await response.text()
    assert response.status == 200
    assert response.content_type == "text/plain"
    assert "/v1/website/8c842203-7ed8-4e29-a608-7cf78a7d2fcc/conversations/1" in text
    assert "-> 200" in text
    assert "-> 401" in text
    assert "dialog vip-visitor: up 0, auth: HTTP 401: invalid_session; bad <redacted>" in text
    assert "dialog agent-42: up 1" in text
    for secret in (sim.crisp.key, sim.crisp.identifier, sim.sendbird.api_token):
        assert secret not in text


async def test_openmetrics_when_prometheus_asks(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    client = await scrape_client(config_yaml(sim))
    response = await client.get(
        "/metrics",
        headers={"Accept": "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"},
    )
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    text = await response.text()
    assert text.endswith("# EOF\n")
    assert "# TYPE chat_unread_fetch_errors counter" in text


async def test_text_exposition_has_help_and_no_timestamps(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    client = await scrape_client(config_yaml(sim))
    response = await client.get("/metrics")
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = await response.text()
    samples = parse(text)
    assert value(samples, "chat_unread_exporter_build_info", **asdict(BUILD)) == 1.0
    assert value(samples, "chat_unread_exporter_config_last_reload_successful") == 1.0
    families = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
    helped = {line.split()[2] for line in text.splitlines() if line.startswith("# HELP")}
    assert families == helped
    for line in text.splitlines():
        if line and not line.startswith("#"):
            assert len(line.rsplit("} ", 1)[-1].split()) <= 2  # name/value only, no timestamp


@pytest.mark.parametrize("header", ["soon", "0", "-3"])
async def test_bad_scrape_timeout_header_is_a_400(
    sim: Simulator, scrape_client: ScrapeClient, header: str
) -> None:
    client = await scrape_client(config_yaml(sim))
    response = await client.get("/metrics", headers={"X-Prometheus-Scrape-Timeout-Seconds": header})
    assert response.status == 400


async def test_landing_page_lists_accounts_and_last_results(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    client = await scrape_client(config_yaml(sim))
    sim.imkit.fault = Fault.answer(401, {"RC": 401, "RM": "Unauthorized"})
    await get_metrics(client)
    page = await (await client.get("/")).text()
    assert "chat-unread-exporter" in page
    assert (
        "Providers: chatwoot, crisp, imkit, intercom, matrix, quickblox, sendbird, stream, zendesk."
        in page
    )
    assert '<a href="/metrics">' in page
    for account in ("acme-crisp", "qb-support", "imkit-app", "sb-prod"):
        assert f'href="/probe?account={account}"' in page
    assert "up 1, 72 unread" in page
    assert "auth: HTTP 401: Unauthorized" in page
    assert sim.imkit.client_key not in page


async def test_health_and_readiness(sim: Simulator, scrape_client: ScrapeClient) -> None:
    client = await scrape_client(config_yaml(sim))
    assert (await client.get("/-/healthy")).status == 200
    assert (await client.get("/-/ready")).status == 200
    assert (await client.get("/-/reload")).status == 405
    assert (await client.get("/no-such-page")).status == 404


async def test_reload_keeps_old_config_on_error_and_unchanged_accounts(
    sim: Simulator, aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    path = tmp_path / "config.yaml"
    good = config_yaml(sim)
    path.write_text(good)
    exporter = Exporter(lambda: load_config(path))
    await exporter.start()
    try:
        client = await aiohttp_client(make_app(exporter))
        await get_metrics(client)
        crisp_runtime = exporter.runtimes["acme-crisp"]
        imkit_runtime = exporter.runtimes["imkit-app"]

        path.write_text(good.replace("  - name: sb-prod", "  - name: sb-prod\n    bogus: 1"))
        response = await client.post("/-/reload")
        assert response.status == 500
        assert "accounts[3].bogus: unknown field" in await response.text()
        samples = await get_metrics(client)
        assert value(samples, "chat_unread_exporter_config_last_reload_successful") == 0.0
        assert dialog_values(samples, "chat_unread_up", "sendbird") == {
            "agent-42": 1.0,
            "agent-42-support": 1.0,
        }

        path.write_text(good.replace("room_tags: [work]\n", "room_tags: [personal]\n"))
        response = await client.post("/-/reload")
        assert response.status == 200
        samples = await get_metrics(client)
        assert value(samples, "chat_unread_exporter_config_last_reload_successful") == 1.0
        assert dialog_values(samples, "chat_unread_messages", "imkit")["work"] == 1.0
        assert exporter.runtimes["acme-crisp"] is crisp_runtime  # unchanged: kept
        assert exporter.runtimes["imkit-app"] is not imkit_runtime  # changed: fresh
    finally:
        await exporter.close()


async def test_exporter_metrics_fetch_nothing(sim: Simulator, scrape_client: ScrapeClient) -> None:
    client = await scrape_client(config_yaml(sim))
    samples = await get_metrics(client, "/exporter-metrics")
    assert sum(len(p.requests) for p in sim.providers) == 0
    assert value(samples, "chat_unread_exporter_build_info", **asdict(BUILD)) == 1.0
    assert (
        value(samples, "chat_unread_cache_misses_total", provider="imkit", account="imkit-app") == 0
    )
    assert not any(name == "chat_unread_up" for name, _ in samples)

    await get_metrics(client, "/probe?account=imkit-app")
    after = await get_metrics(client, "/exporter-metrics")
    assert (
        value(after, "chat_unread_cache_misses_total", provider="imkit", account="imkit-app") == 1
    )


async def test_probe_debug_1_shows_queries_and_values_in_the_metrics_words(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    client = await scrape_client(config_yaml(sim))
    response = await client.get("/probe?account=acme-crisp&debug=1")
    text = await response.text()
    assert response.status == 200
    # The URL with its query, as sent; the reading as the metrics name its values.
    assert "/conversations/1?filter_unread=1&filter_not_resolved=1&per_page=50 -> 200" in text
    assert "dialog backlog: up 1, messages=" in text
    assert "Reading(" not in text
    assert (await client.get("/probe?account=acme-crisp&debug=maybe")).status == 400


async def test_landing_page_says_how_to_fetch_until_something_was_fetched(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    client = await scrape_client(config_yaml(sim))
    before = await (await client.get("/")).text()
    assert "Values are fetched when Prometheus scrapes." in before
    assert "not fetched yet" in before
    await get_metrics(client)
    after = await (await client.get("/")).text()
    assert "Values are fetched when Prometheus scrapes." not in after
