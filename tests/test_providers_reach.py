"""Intercom and Stream Chat end to end over HTTP: the requests their APIs want, values back."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any
from urllib.parse import parse_qs

import pytest
from aiohttp import ClientSession

from exporter.configuration.loading import ConfigError, parse_config
from exporter.providers.intercom import IntercomAccount
from exporter.providers.stream import server_token
from exporter.simulator import Simulator, StreamChannel
from exporter.simulator.base import RateWindow
from tests.support import (
    ACCOUNT_OF,
    INTERCOM_ADMIN,
    INTERCOM_EXPECTED,
    INTERCOM_TEAM,
    INTERCOM_WAITING,
    STREAM_EXPECTED,
    FakeClock,
    ScrapeClient,
    dialog_values,
    errors_of,
    get_metrics,
    intercom_backlog,
    populate_reach,
    reach_config,
    value,
)

WAITING_ON_TEAM = [
    {"field": "state", "operator": "=", "value": "open"},
    {"field": "waiting_since", "operator": ">", "value": 0},
]
OLDEST_FIRST = {"field": "waiting_since", "order": "ascending"}


def search_body(*extra: dict[str, Any], starting_after: str | None = None) -> dict[str, Any]:
    """The search the exporter sends for a backlog, with an assignee filter if given."""
    pagination: dict[str, Any] = {"per_page": 150}
    if starting_after is not None:
        pagination["starting_after"] = starting_after
    return {
        "query": {"operator": "AND", "value": [*WAITING_ON_TEAM, *extra]},
        "pagination": pagination,
        "sort": OLDEST_FIRST,
    }


TEAM_FILTER = {"field": "team_assignee_id", "operator": "=", "value": INTERCOM_TEAM}
ADMIN_FILTER = {"field": "admin_assignee_id", "operator": "=", "value": str(INTERCOM_ADMIN)}


def intercom_values(samples: dict[Any, float]) -> dict[str, tuple[float, float]]:
    conversations = dialog_values(samples, "chat_unread_conversations", "intercom")
    oldest = dialog_values(samples, "chat_unread_oldest_unread_timestamp_seconds", "intercom")
    return {name: (conversations[name], oldest[name]) for name in conversations}


async def test_intercom_backlogs_come_from_one_search(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    populate_reach(sim)
    client = await scrape_client(reach_config(sim))
    samples = await get_metrics(client)

    assert intercom_values(samples) == INTERCOM_EXPECTED
    assert dialog_values(samples, "chat_unread_messages", "intercom") == {}  # none, not 0
    assert len(sim.intercom.requests) == 1  # the page held the whole backlog: every dialog
    request = sim.intercom.requests[0]
    assert (request.method, request.path) == ("POST", "/conversations/search")
    assert request.json() == search_body()
    assert request.headers["Authorization"] == f"Bearer {sim.intercom.access_token}"
    assert request.headers["Intercom-Version"] == "2.14"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Accept"] == "application/json"


async def test_intercom_large_backlog_costs_one_search_per_assignee(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    sim.intercom.conversations = intercom_backlog(400)
    client = await scrape_client(reach_config(sim))
    samples = await get_metrics(client)

    assert intercom_values(samples) == {
        "inbox": (400.0, INTERCOM_WAITING + 60.0),
        "billing": (200.0, INTERCOM_WAITING + 120.0),
        "alice": (80.0, INTERCOM_WAITING + 300.0),
    }
    bodies = [r.json() for r in sim.intercom.requests]
    assert bodies[0] == search_body()
    assert sorted(bodies[1:], key=str) == sorted(
        [search_body(TEAM_FILTER), search_body(ADMIN_FILTER)], key=str
    )


async def test_intercom_that_ignores_the_sort_is_read_to_the_last_page(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    sim.intercom.conversations = intercom_backlog(400)
    sim.intercom.honour_sort = False  # newest first: the first page does not hold the oldest
    client = await scrape_client(reach_config(sim))
    samples = await get_metrics(client)

    assert intercom_values(samples) == {
        "inbox": (400.0, INTERCOM_WAITING + 60.0),
        "billing": (200.0, INTERCOM_WAITING + 120.0),
        "alice": (80.0, INTERCOM_WAITING + 300.0),
    }
    # the whole backlog's 3 pages, read anyway, serve the team and the teammate too
    assert len(sim.intercom.requests) == 3
    cursors = [r.json()["pagination"].get("starting_after") for r in sim.intercom.requests]
    assert sum(cursor is not None for cursor in cursors) == 2


async def test_intercom_single_dialog_searches_its_own_assignee(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    populate_reach(sim)
    text = reach_config(sim).split("      - name: inbox\n")[0] + (
        f'      - name: billing\n        team_id: "{INTERCOM_TEAM}"\n'
    )
    client = await scrape_client(text)
    samples = await get_metrics(client)

    assert intercom_values(samples) == {"billing": INTERCOM_EXPECTED["billing"]}
    assert [r.json() for r in sim.intercom.requests] == [search_body(TEAM_FILTER)]


async def test_intercom_empty_backlog_has_no_oldest(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    client = await scrape_client(reach_config(sim))
    samples = await get_metrics(client)
    assert dialog_values(samples, "chat_unread_conversations", "intercom") == {
        "inbox": 0.0,
        "billing": 0.0,
        "alice": 0.0,
    }
    assert dialog_values(samples, "chat_unread_oldest_unread_timestamp_seconds", "intercom") == {}
    assert set(dialog_values(samples, "chat_unread_up", "intercom").values()) == {1.0}


@pytest.mark.parametrize(
    ("provider", "limit", "seconds"), [("intercom", 1000, 600), ("stream", 60, 60)]
)
async def test_rate_limit_headers_become_metrics(
    sim: Simulator, scrape_client: ScrapeClient, provider: str, limit: int, seconds: int
) -> None:
    populate_reach(sim)
    simulated = sim.intercom if provider == "intercom" else sim.stream
    simulated.rate_limit = RateWindow(limit=limit, seconds=seconds)
    client = await scrape_client(reach_config(sim))
    samples = await get_metrics(client)
    labels = {"provider": provider, "account": ACCOUNT_OF[provider]}
    assert value(samples, "chat_unread_rate_limit_remaining", **labels) == limit - 1
    reset = value(samples, "chat_unread_rate_limit_reset_timestamp_seconds", **labels)
    assert reset is not None
    assert reset > 1_700_000_000


async def test_intercom_spent_rate_limit_holds_off_until_reset(
    sim: Simulator, scrape_client: ScrapeClient, clock: FakeClock
) -> None:
    clock.now = time.time()  # the simulator's X-RateLimit-Reset is wall-clock time
    populate_reach(sim)
    sim.intercom.rate_limit = RateWindow(limit=1, seconds=600)
    client = await scrape_client(reach_config(sim))
    await get_metrics(client)  # spends the window
    second = await get_metrics(client)  # 429 with X-RateLimit-Reset ten minutes ahead
    third = await get_metrics(client)  # held off: no request
    assert errors_of(second, "intercom", "rate_limited", account="acme-intercom") == 3.0
    assert errors_of(third, "intercom", "rate_limited", account="acme-intercom") == 6.0
    assert len(sim.intercom.requests) == 2


async def test_intercom_wrong_token_is_auth(sim: Simulator, scrape_client: ScrapeClient) -> None:
    populate_reach(sim)
    client = await scrape_client(reach_config(sim).replace(sim.intercom.access_token, "wrong"))
    samples = await get_metrics(client)
    assert set(dialog_values(samples, "chat_unread_up", "intercom").values()) == {0.0}
    assert errors_of(samples, "intercom", "auth", account="acme-intercom") == 3.0


@pytest.mark.parametrize(
    ("region", "host"),
    [
        ("us", "https://api.intercom.io"),
        ("eu", "https://api.eu.intercom.io"),
        ("au", "https://api.au.intercom.io"),
    ],
)
def test_intercom_region_picks_the_api_host(region: str, host: str) -> None:
    account = IntercomAccount.model_validate(
        {
            "name": "i",
            "provider": "intercom",
            "access_token": "t",
            "region": region,
            "dialogs": [{"name": "inbox"}],
        }
    )
    assert account.api_root() == host


def test_intercom_dialog_takes_one_assignee_and_digit_ids() -> None:
    base = "accounts:\n  - name: i\n    provider: intercom\n    access_token: t\n    dialogs:\n"
    config = parse_config(base + "      - {name: a, team_id: 5017691}\n", "c.yaml")
    assert config.accounts[0].dialogs[0].team_id == "5017691"  # type: ignore[attr-defined]
    with pytest.raises(
        ConfigError,
        match=r"c\.yaml:6: accounts\[0\]\.dialogs\[0\]: set team_id or admin_id, not both",
    ):
        parse_config(base + "      - {name: a, team_id: '1', admin_id: '2'}\n", "c.yaml")
    with pytest.raises(ConfigError, match=r"c\.yaml:6: accounts\[0\]\.dialogs\[0\]\.admin_id"):
        parse_config(base + "      - {name: a, admin_id: alice}\n", "c.yaml")


async def test_intercom_simulator_answers_unknown_routes_with_its_error_list(
    sim: Simulator,
) -> None:
    headers = {"Authorization": f"Bearer {sim.intercom.access_token}"}
    async with (
        ClientSession() as session,
        session.get(f"{sim.intercom.url}/conversations/nope", headers=headers) as response,
    ):
        assert response.status == 404
        body = await response.json()
    assert body["type"] == "error.list"
    assert body["errors"] == [{"code": "not_found", "message": "Resource Not Found"}]


def stream_values(samples: dict[Any, float]) -> dict[str, tuple[float, float]]:
    messages = dialog_values(samples, "chat_unread_messages", "stream")
    channels = dialog_values(samples, "chat_unread_conversations", "stream")
    return {name: (messages[name], channels[name]) for name in messages}


def jwt_parts(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes]:
    """Header, claims and signature of a JWT, decoded without the exporter's code."""
    header, claims, signature = (
        base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)) for part in token.split(".")
    )
    return json.loads(header), json.loads(claims), signature


async def test_stream_users_come_from_one_batch_request(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    populate_reach(sim)
    client = await scrape_client(reach_config(sim))
    samples = await get_metrics(client)

    assert stream_values(samples) == STREAM_EXPECTED
    assert len(sim.stream.requests) == 1  # two users, four dialogs: one batch
    request = sim.stream.requests[0]
    assert (request.method, request.path) == ("POST", "/unread_batch")
    assert parse_qs(request.query_string) == {"api_key": [sim.stream.api_key]}
    assert request.json() == {"user_ids": ["agent-42", "agent-7"]}
    assert request.headers["Stream-Auth-Type"] == "jwt"
    header, claims, signature = jwt_parts(request.headers["Authorization"])
    assert header == {"alg": "HS256", "typ": "JWT"}
    assert claims == {"server": True}
    signed = request.headers["Authorization"].rsplit(".", 1)[0].encode()
    assert signature == hmac.new(sim.stream.api_secret.encode(), signed, hashlib.sha256).digest()


async def test_stream_single_user_asks_the_unread_endpoint(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    populate_reach(sim)
    text = reach_config(sim).split("      - name: agent-7\n")[0]
    client = await scrape_client(text)
    samples = await get_metrics(client)

    expected = {k: v for k, v in STREAM_EXPECTED.items() if k != "agent-7"}
    assert stream_values(samples) == expected
    stream_requests = sim.stream.requests
    assert len(stream_requests) == 1
    assert (stream_requests[0].method, stream_requests[0].path) == ("GET", "/unread")
    assert parse_qs(stream_requests[0].query_string) == {
        "api_key": [sim.stream.api_key],
        "user_id": ["agent-42"],
    }


async def test_stream_unknown_user_is_not_found_and_others_stay_up(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    populate_reach(sim)
    del sim.stream.users["agent-7"]
    client = await scrape_client(reach_config(sim))
    samples = await get_metrics(client)
    ups = dialog_values(samples, "chat_unread_up", "stream")
    assert ups == {"agent-42": 1.0, "agent-42-messaging": 1.0, "agent-42-team": 1.0, "agent-7": 0.0}
    assert errors_of(samples, "stream", "not_found", account="acme-stream") == 1.0


async def test_stream_many_users_go_in_batches_of_100(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    sim.stream.users = {f"user-{i:03d}": [StreamChannel(unread=i % 4)] for i in range(250)}
    dialogs = "".join(f"      - {{name: u{i:03d}, user_id: user-{i:03d}}}\n" for i in range(250))
    text = reach_config(sim).split("    dialogs:\n      - name: agent-42\n")[0]
    client = await scrape_client(f"{text}    dialogs:\n{dialogs}")
    samples = await get_metrics(client)

    messages = dialog_values(samples, "chat_unread_messages", "stream")
    assert messages == {f"u{i:03d}": float(i % 4) for i in range(250)}
    sizes = sorted(len(r.json()["user_ids"]) for r in sim.stream.calls("/unread_batch"))
    assert sizes == [50, 100, 100]


async def test_stream_wrong_secret_is_auth(sim: Simulator, scrape_client: ScrapeClient) -> None:
    populate_reach(sim)
    client = await scrape_client(reach_config(sim).replace(sim.stream.api_secret, "other-secret"))
    samples = await get_metrics(client)
    assert set(dialog_values(samples, "chat_unread_up", "stream").values()) == {0.0}
    assert errors_of(samples, "stream", "auth", account="acme-stream") == 4.0


async def test_stream_simulator_answers_unknown_routes_with_its_error_envelope(
    sim: Simulator,
) -> None:
    headers = {"Stream-Auth-Type": "jwt", "Authorization": server_token(sim.stream.api_secret)}
    url = f"{sim.stream.url}/unread/nope?api_key={sim.stream.api_key}"
    async with ClientSession() as session, session.get(url, headers=headers) as response:
        assert response.status == 404
        body = await response.json()
    assert (body["code"], body["StatusCode"]) == (16, 404)
    assert set(body) >= {"code", "message", "StatusCode", "duration", "more_info"}
