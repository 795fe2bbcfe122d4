"""Each provider end to end over HTTP: requests as the real API wants them, right values back."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from exporter.configuration.loading import ConfigError, parse_config
from exporter.providers.quickblox import session_signature
from exporter.simulator import FakeProvider, Simulator
from exporter.simulator.quickblox import sdk_signature
from tests.support import (
    QB_DIALOGS,
    QB_USER,
    FakeClock,
    ScrapeClient,
    assert_populated_values,
    config_yaml,
    dialog_values,
    errors_of,
    get_metrics,
    value,
)

SIGNATURE_VECTORS = Path(__file__).parent / "data" / "quickblox_signature_vectors.json"


@pytest.fixture(params=["listed", "all"])
def qb_sim(sim: Simulator, clock: FakeClock, request: pytest.FixtureRequest) -> Simulator:
    """The simulators, run once for each meaning QuickBlox's ``total`` may have when
    ``chat_dialog_ids`` is given: only the listed dialogs (as the API docs' example) or all.

    QuickBlox keeps time on the exporter's hand-moved clock, which session timestamps and
    expiry are checked against.
    """
    sim.quickblox.total_counts = request.param
    sim.quickblox.clock = clock
    return sim


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain client for requests the exporter would never make, sent to the simulators."""
    async with aiohttp.ClientSession() as session:
        yield session


async def test_every_provider_serves_its_values(
    qb_sim: Simulator, scrape_client: ScrapeClient
) -> None:
    sim = qb_sim
    client = await scrape_client(config_yaml(sim))
    samples = await get_metrics(client)

    assert_populated_values(samples)
    for (name, labels), _ in samples.items():
        # The contract's info and queue series carry their own labels beside these three.
        queue_or_info = name.endswith("_info") or name.startswith("chat_unread_group")
        if name.startswith("chat_unread_") and "dialog" in dict(labels) and not queue_or_info:
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


async def test_quickblox_total_comes_from_a_request_without_ids(
    qb_sim: Simulator, scrape_client: ScrapeClient
) -> None:
    sim = qb_sim
    client = await scrape_client(config_yaml(sim))
    samples = await get_metrics(client)

    # The user's total is 7 (4 + 0 in the listed dialogs, 3 in another), whatever ``total``
    # counts in an answer that lists ids.
    assert dialog_values(samples, "chat_unread_messages", "quickblox") == {
        "all": 7.0,
        "escalations": 4.0,
        "quiet": 0.0,
    }
    calls = sim.quickblox.calls("/chat/Message/unread.json")
    assert sorted(c.query_string for c in calls) == [
        "",
        f"chat_dialog_ids={QB_DIALOGS[0]},{QB_DIALOGS[1]}",
    ]
    for call in calls:
        assert call.headers["Authorization"] == f"ApiKey {sim.quickblox.api_key}"
        assert call.headers["On-Behalf-Of"] == str(QB_USER)


async def test_quickblox_dialogs_with_ids_only_take_one_request(
    qb_sim: Simulator, scrape_client: ScrapeClient
) -> None:
    sim = qb_sim
    text = config_yaml(sim).replace(
        "      - name: all\n      - name: escalations", "      - name: escalations", 1
    )
    client = await scrape_client(text)
    samples = await get_metrics(client)

    assert dialog_values(samples, "chat_unread_messages", "quickblox") == {
        "escalations": 4.0,
        "quiet": 0.0,
    }
    calls = sim.quickblox.calls("/chat/Message/unread.json")
    assert [c.query_string for c in calls] == [f"chat_dialog_ids={QB_DIALOGS[0]},{QB_DIALOGS[1]}"]


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
    qb_sim: Simulator, scrape_client: ScrapeClient
) -> None:
    sim = qb_sim
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


@pytest.mark.parametrize("expiry_format", ["quickblox", "iso8601"])
async def test_quickblox_session_is_renewed_before_its_announced_expiry(
    qb_sim: Simulator, scrape_client: ScrapeClient, clock: FakeClock, expiry_format: Any
) -> None:
    sim = qb_sim
    sim.quickblox.expiry_format = expiry_format
    client = await scrape_client(qb_app_config(sim))
    expected = {"all": 7.0, "escalations": 4.0}

    assert dialog_values(await get_metrics(client), "chat_unread_messages", "quickblox") == expected
    assert len(sim.quickblox.calls("/session.json")) == 1

    # Each answer slides the session's two hours from that request: used again after one and
    # then after 1.5 more hours, the same session is still good.
    for hours in (1.0, 1.5):
        clock.advance(hours * 3600)
        samples = await get_metrics(client)
        assert dialog_values(samples, "chat_unread_messages", "quickblox") == expected
    assert len(sim.quickblox.calls("/session.json")) == 1

    # 30 s before the announced expiry: inside the renewal margin, so a new session first.
    clock.advance(7200 - 30)
    assert dialog_values(await get_metrics(client), "chat_unread_messages", "quickblox") == expected
    assert len(sim.quickblox.calls("/session.json")) == 2

    # Long past the expiry: renewed before any request, never answered "session does not exist".
    clock.advance(3 * 7200)
    assert dialog_values(await get_metrics(client), "chat_unread_messages", "quickblox") == expected
    assert len(sim.quickblox.calls("/session.json")) == 3
    assert sim.quickblox.lapsed_requests == []
    assert len(sim.quickblox.calls("/chat/")) == 10  # two a scrape, no retries


async def test_quickblox_simulator_refuses_and_records_a_lapsed_session(
    sim: Simulator, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    """The expiry check above can fail: a session used after its expiry is refused.

    The session is created with a signature the official SDK computed (the fixture's vector
    for the simulator's credentials), so this also proves the simulator's own check accepts it.
    """
    vector = next(v for v in load_vectors() if v["params"].get("user[login]") == "agent")
    clock.now = int(vector["params"]["timestamp"])
    sim.quickblox.clock = clock
    form = vector["params"] | {"signature": vector["signature"]}
    async with http.post(f"{sim.quickblox.url}/session.json", data=form) as response:
        assert response.status == 201
        token = (await response.json())["session"]["token"]
        announced = response.headers["QB-Token-ExpirationDate"]
    assert announced == "2019-09-01 16:55:56 UTC"  # ts 1567349756 plus two hours, real format

    unread = f"{sim.quickblox.url}/chat/Message/unread.json"
    clock.advance(7199)
    async with http.get(unread, headers={"QB-Token": token}) as response:
        assert (response.status, await response.json()) == (200, {"total": 7})
    clock.advance(7200)
    async with http.get(unread, headers={"QB-Token": token}) as response:
        assert response.status == 401
        assert await response.json() == {"errors": {"base": ["Required session does not exist"]}}
    assert [r.headers["QB-Token"] for r in sim.quickblox.lapsed_requests] == [token]


def load_vectors() -> list[dict[str, Any]]:
    vectors: list[dict[str, Any]] = json.loads(SIGNATURE_VECTORS.read_text())["vectors"]
    return vectors


def test_quickblox_signatures_match_the_official_sdk() -> None:
    vectors = load_vectors()
    assert len(vectors) >= 4
    assert any("user[login]" in v["params"] for v in vectors)
    assert any("user[login]" not in v["params"] for v in vectors)
    for vector in vectors:
        params, secret = vector["params"], vector["auth_secret"]
        assert session_signature(params, secret) == vector["signature"], params
        assert sdk_signature(params, secret) == vector["signature"], params


async def test_quickblox_dialog_ids_must_arrive_as_one_list(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    headers = {"Authorization": f"ApiKey {sim.quickblox.api_key}", "On-Behalf-Of": str(QB_USER)}
    base = f"{sim.quickblox.url}/chat/Message/unread.json?"
    a, b = QB_DIALOGS

    async def get(query: str) -> tuple[int, Any]:
        async with http.get(URL(base + query, encoded=True), headers=headers) as response:
            return response.status, await response.json()

    # One encoded comma is still one list once the server decodes the query: the official JS
    # SDK sends exactly this (qbProxy.js encodes "," as "%2c").
    assert await get(f"chat_dialog_ids={a}%2c{b}") == (200, {a: 4, b: 0, "total": 4})
    refused = (400, {"errors": {"base": ["chat_dialog_ids must be one comma-separated list"]}})
    assert await get(f"chat_dialog_ids={a}&chat_dialog_ids={b}") == refused
    assert await get(f"chat_dialog_ids[]={a}&chat_dialog_ids[]={b}") == refused
    assert await get(f"chat_dialog_ids={a}%252C{b}") == refused  # encoded twice


async def test_quickblox_wrong_secret_is_an_error_not_a_value(
    qb_sim: Simulator, scrape_client: ScrapeClient
) -> None:
    sim = qb_sim
    client = await scrape_client(qb_app_config(sim, auth_secret="wrong-secret"))
    samples = await get_metrics(client)
    assert dialog_values(samples, "chat_unread_up", "quickblox") == {"all": 0.0, "escalations": 0.0}
    assert dialog_values(samples, "chat_unread_messages", "quickblox") == {}
    errors = errors_of(samples, "quickblox", "http_4xx", account="qb-app")
    assert errors == 2.0  # 422 "Unexpected signature", one per dialog
    assert sim.quickblox.sessions == {}


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


async def test_sendbird_custom_types_filter_the_counts(
    sim: Simulator, scrape_client: ScrapeClient, http: aiohttp.ClientSession
) -> None:
    text = f"""\
accounts:
  - name: sb-prod
    provider: sendbird
    application_id: 2D7B4CDB-932F-4082-9B09-A1153792DC8D
    base_url: {sim.sendbird.url}
    api_token: {sim.sendbird.api_token}
    dialogs:
      - {{name: everything, user_id: agent-42}}
      - {{name: support, user_id: agent-42, custom_types: [support]}}
      - {{name: sales, user_id: agent-42, custom_types: [sales]}}
      - {{name: both, user_id: agent-42, custom_types: [support, sales]}}
"""
    client = await scrape_client(text)
    samples = await get_metrics(client)

    assert dialog_values(samples, "chat_unread_messages", "sendbird") == {
        "everything": 11.0,
        "support": 8.0,
        "sales": 3.0,
        "both": 11.0,
    }
    assert dialog_values(samples, "chat_unread_invitations", "sendbird") == {
        "everything": 1.0,
        "support": 1.0,
        "sales": 0.0,
        "both": 1.0,
    }
    queries = {r.query_string.rsplit("&", 1)[-1] for r in sim.sendbird.requests}
    assert queries >= {"custom_types=support", "custom_types=sales", "custom_types=support,sales"}

    # The simulator honours only the plural, as the real API is taken to (see sendbird.py):
    # the v1 Platform SDKs' singular "custom_type" filters nothing.
    url = f"{sim.sendbird.url}/v3/users/agent-42/unread_item_count"
    params = {"item_keys": "group_channel_unread_message_count", "custom_type": "sales"}
    async with http.get(url, params=params, headers={"Api-Token": sim.sendbird.api_token}) as r:
        assert await r.json() == {"group_channel_unread_message_count": 11}


def test_sendbird_custom_type_with_a_comma_is_refused() -> None:
    text = """\
accounts:
  - name: sb-prod
    provider: sendbird
    application_id: 2D7B4CDB-932F-4082-9B09-A1153792DC8D
    api_token: token
    dialogs:
      - {name: agent, user_id: agent-42, custom_types: ["support,sales"]}
"""
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "test.yaml")
    assert any("custom_types" in problem for problem in caught.value.problems)


@pytest.mark.parametrize(
    ("provider", "status", "body"),
    [
        (
            "crisp",
            404,
            {"error": True, "reason": "not_found", "data": {"message": "the route does not exist"}},
        ),
        ("quickblox", 404, {"errors": ["The resource wasn't found"]}),
        (
            "imkit",
            404,
            {"RC": 404, "RM": "Not Found", "error": {"code": "NOT_FOUND", "message": "Not Found"}},
        ),
        (
            "sendbird",
            400,
            {
                "error": True,
                "code": 400201,
                "message": "Not Found: the requested resource does not exist.",
            },
        ),
    ],
)
async def test_unknown_route_answers_the_provider_error_envelope(
    sim: Simulator, http: aiohttp.ClientSession, provider: str, status: int, body: Any
) -> None:
    fake: FakeProvider = getattr(sim, provider)
    async with http.get(f"{fake.url}/v9/no/such/route") as response:
        assert response.status == status
        assert response.content_type == "application/json"
        assert await response.json() == body
