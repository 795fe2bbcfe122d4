"""Each provider end to end over HTTP: requests as the real API wants them, right values back."""

from __future__ import annotations

import base64

from exporter.simulator import Simulator
from tests.conftest import (
    QB_DIALOGS,
    QB_USER,
    ScrapeClient,
    assert_populated_values,
    config_yaml,
    dialog_values,
    errors_of,
    get_metrics,
    value,
)


async def test_every_provider_serves_its_values(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    client = await scrape_client(config_yaml(sim))
    samples = await get_metrics(client)

    assert_populated_values(samples)
    for (name, labels), _ in samples.items():
        if name.startswith("chat_unread_") and "dialog" in dict(labels):
            assert {k for k, _ in labels} == {"provider", "account", "dialog"}, name


async def test_crisp_requests_carry_basic_auth_tier_and_backlog_filters(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    client = await scrape_client(config_yaml(sim))
    await get_metrics(client)

    pages = sim.crisp.calls("/conversations/")
    assert sorted(r.path.rsplit("/", 1)[1] for r in pages) == ["1", "2"]  # stops at a short page
    expected = base64.b64encode(f"{sim.crisp.identifier}:{sim.crisp.key}".encode()).decode()
    for request in sim.crisp.requests:
        assert request.headers["Authorization"] == f"Basic {expected}"
        assert request.headers["X-Crisp-Tier"] == "plugin"
        assert request.headers["User-Agent"].startswith("chat-unread-exporter/")
    for page in pages:
        assert "filter_unread=1" in page.query_string
        assert "filter_not_resolved=1" in page.query_string
        assert "per_page=50" in page.query_string


async def test_crisp_website_tier_is_sent(sim: Simulator, scrape_client: ScrapeClient) -> None:
    client = await scrape_client(
        config_yaml(sim).replace("    key:", "    tier: website\n    key:", 1)
    )
    samples = await get_metrics(client)
    assert (
        value(samples, "chat_unread_up", provider="crisp", account="acme-crisp", dialog="backlog")
        == 1
    )
    assert {r.headers["X-Crisp-Tier"] for r in sim.crisp.requests} == {"website"}


async def test_quickblox_batches_every_dialog_in_one_request(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    client = await scrape_client(config_yaml(sim))
    await get_metrics(client)

    calls = sim.quickblox.calls("/chat/Message/unread.json")
    assert len(calls) == 1
    assert calls[0].query_string == f"chat_dialog_ids={QB_DIALOGS[0]},{QB_DIALOGS[1]}"
    assert calls[0].headers["Authorization"] == f"ApiKey {sim.quickblox.api_key}"
    assert calls[0].headers["On-Behalf-Of"] == str(QB_USER)


QB_APP_ACCOUNT = """\
accounts:
  - name: qb-app
    provider: quickblox
    base_url: {url}
    application_id: {app_id}
    auth_key: {auth_key}
    auth_secret: {auth_secret}
    login: agent
    password: agent-password
    dialogs:
      - name: all
      - name: escalations
        dialog_id: 5d753421a28f9a2596cb0f98
"""


def qb_app_config(sim: Simulator, **overrides: str) -> str:
    fake = sim.quickblox
    fields = {
        "url": fake.url,
        "app_id": str(fake.application_id),
        "auth_key": fake.auth_key,
        "auth_secret": fake.auth_secret,
    }
    return QB_APP_ACCOUNT.format(**(fields | overrides))


async def test_quickblox_session_is_signed_reused_and_renewed(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    client = await scrape_client(qb_app_config(sim))

    first = await get_metrics(client)
    second = await get_metrics(client)
    assert dialog_values(first, "chat_unread_messages", "quickblox") == {
        "all": 7.0,
        "escalations": 4.0,
    }
    assert dialog_values(second, "chat_unread_messages", "quickblox") == {
        "all": 7.0,
        "escalations": 4.0,
    }
    assert len(sim.quickblox.calls("/session.json")) == 1  # the token is reused
    token = sim.quickblox.calls("/chat/")[0].headers["QB-Token"]
    assert sim.quickblox.calls("/chat/")[1].headers["QB-Token"] == token

    sim.quickblox.expire_sessions()  # QuickBlox now answers "Required session does not exist"
    third = await get_metrics(client)
    assert dialog_values(third, "chat_unread_up", "quickblox") == {"all": 1.0, "escalations": 1.0}
    assert len(sim.quickblox.calls("/session.json")) == 2
    assert sim.quickblox.calls("/chat/")[-1].headers["QB-Token"] != token


async def test_quickblox_wrong_secret_is_an_error_not_a_value(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    client = await scrape_client(qb_app_config(sim, auth_secret="wrong-secret"))
    samples = await get_metrics(client)
    assert dialog_values(samples, "chat_unread_up", "quickblox") == {"all": 0.0, "escalations": 0.0}
    assert dialog_values(samples, "chat_unread_messages", "quickblox") == {}
    errors = errors_of(samples, "quickblox", "http_4xx", account="qb-app")
    assert errors == 2.0  # 422 "Unexpected signature", one per dialog


async def test_quickblox_fixed_token_header(sim: Simulator, scrape_client: ScrapeClient) -> None:
    sim.quickblox.sessions["fixed-session-token"] = QB_USER
    text = f"""\
accounts:
  - name: qb-token
    provider: quickblox
    base_url: {sim.quickblox.url}
    token: fixed-session-token
    dialogs: [{{name: all}}]
"""
    client = await scrape_client(text)
    samples = await get_metrics(client)
    assert dialog_values(samples, "chat_unread_messages", "quickblox") == {"all": 7.0}
    assert sim.quickblox.calls("/chat/")[0].headers["QB-Token"] == "fixed-session-token"
    assert sim.quickblox.calls("/chat/")[0].query_string == ""


async def test_imkit_sends_keys_and_repeated_room_tags(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    client = await scrape_client(config_yaml(sim))
    await get_metrics(client)
    queries = sorted(r.query_string for r in sim.imkit.requests)
    assert queries == ["", "roomTags=work", "roomTags=work&roomTags=project"]
    for request in sim.imkit.requests:
        assert request.headers["IM-CLIENT-KEY"] == sim.imkit.client_key
        assert request.headers["IM-Authorization"] == "imkit-user-token-0123"


async def test_sendbird_asks_for_the_channel_kind_keys(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    client = await scrape_client(config_yaml(sim))
    await get_metrics(client)
    by_query = {r.query_string for r in sim.sendbird.requests}
    assert by_query == {
        "item_keys=group_channel_unread_message_count,group_channel_unread_mention_count,"
        "group_channel_invitation_count",
        "item_keys=non_super_group_channel_unread_message_count,"
        "non_super_group_channel_unread_mention_count,non_super_group_channel_invitation_count"
        "&custom_types=support",
    }
    for request in sim.sendbird.requests:
        assert request.path == "/v3/users/agent-42/unread_item_count"
        assert request.headers["Api-Token"] == sim.sendbird.api_token


async def test_sendbird_rate_limit_headers_become_metrics(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    sim.sendbird.rate_limit_per_second = 100
    client = await scrape_client(config_yaml(sim))
    samples = await get_metrics(client)
    remaining = value(
        samples, "chat_unread_rate_limit_remaining", provider="sendbird", account="sb-prod"
    )
    assert remaining in (98.0, 97.0, 96.0)  # two requests in this second (three if it rolled)
    reset = value(
        samples,
        "chat_unread_rate_limit_reset_timestamp_seconds",
        provider="sendbird",
        account="sb-prod",
    )
    assert reset is not None
    assert reset > 1_700_000_000
