"""Zendesk end to end over HTTP: views and ticket searches, by group, within the API's limits."""

from __future__ import annotations

import base64
from urllib.parse import parse_qs

import pytest
from aiohttp import ClientSession

from exporter.configuration.loading import ConfigError, parse_config
from exporter.providers.zendesk import error_messages
from exporter.simulator import Fault, Simulator, ZendeskTicket
from exporter.simulator.zendesk import VIEW_COUNT_LIMIT
from tests.support import (
    ZENDESK_EXPECTED,
    ZENDESK_VIEW,
    FakeClock,
    ScrapeClient,
    dialog_values,
    errors_of,
    get_metrics,
    populate_reach,
    value,
)

ZD = {"provider": "zendesk", "account": "acme-zendesk"}


def zendesk_config(sim: Simulator, *dialogs: str, auth: str = "", extra: str = "") -> str:
    """One Zendesk account over the simulator; ``dialogs`` are YAML list items."""
    auth = auth or f"email: {sim.zendesk.email}\n    api_token: {sim.zendesk.api_token}"
    items = "".join(f"      - {item}\n" for item in dialogs) or (
        f"      - name: unassigned\n        view_id: {ZENDESK_VIEW}\n"
        "      - name: unsolved\n        query: status<solved\n"
    )
    return f"""\
accounts:
  - name: acme-zendesk
    provider: zendesk
    subdomain: acme
    base_url: {sim.zendesk.url}
    {auth}
{extra}    dialogs:
{items}"""


BY_GROUP = "name: by-group\n        query: status<solved\n        group_by: group"


@pytest.fixture
def zendesk(sim: Simulator, clock: FakeClock) -> Simulator:
    """``populate_reach``'s tickets, on the test's clock (the view-count limit's too)."""
    populate_reach(sim)
    sim.zendesk.clock = clock
    return sim


async def test_views_and_queries_are_counted_with_two_requests(
    zendesk: Simulator, scrape_client: ScrapeClient
) -> None:
    client = await scrape_client(zendesk_config(zendesk))
    samples = await get_metrics(client)
    for dialog, (tickets, oldest) in ZENDESK_EXPECTED.items():
        assert value(samples, "chat_unread_up", **ZD, dialog=dialog) == 1.0
        assert value(samples, "chat_unread_conversations", **ZD, dialog=dialog) == tickets
        stamp = value(samples, "chat_unread_oldest_unread_timestamp_seconds", **ZD, dialog=dialog)
        assert stamp == oldest
        # tickets are not messages: no unread message count is made up
        assert value(samples, "chat_unread_messages", **ZD, dialog=dialog) is None
    views, search = zendesk.zendesk.requests
    assert (views.path, parse_qs(views.query_string)) == (
        "/api/v2/views/count_many.json",
        {"ids": [str(ZENDESK_VIEW)]},
    )
    assert (search.path, parse_qs(search.query_string)) == (
        "/api/v2/search.json",
        {
            "query": ["type:ticket status<solved"],
            "sort_by": ["created_at"],
            "sort_order": ["asc"],
            "per_page": ["1"],
        },
    )
    pair = base64.b64decode(search.headers["Authorization"].removeprefix("Basic ")).decode()
    assert pair == f"{zendesk.zendesk.email}/token:{zendesk.zendesk.api_token}"
    # Zendesk's X-Rate-Limit-Remaining is read: 700 a minute, two spent
    assert value(samples, "chat_unread_rate_limit_remaining", **ZD) == 698.0


async def test_several_views_share_one_count_request(
    zendesk: Simulator, scrape_client: ScrapeClient
) -> None:
    zendesk.zendesk.views[42] = "status:new"
    dialogs = (
        f"name: a\n        view_id: {ZENDESK_VIEW}",
        "name: b\n        view_id: 42",
        f"name: a-again\n        view_id: {ZENDESK_VIEW}",
    )
    client = await scrape_client(zendesk_config(zendesk, *dialogs))
    samples = await get_metrics(client)
    assert dialog_values(samples, "chat_unread_conversations", "zendesk") == {
        "a": 3.0,
        "b": 3.0,  # i = 4, 8, 12
        "a-again": 3.0,
    }
    (request,) = zendesk.zendesk.requests
    assert parse_qs(request.query_string) == {"ids": [f"{ZENDESK_VIEW},42"]}


async def test_an_oauth_token_is_sent_as_bearer(
    zendesk: Simulator, scrape_client: ScrapeClient
) -> None:
    config = zendesk_config(zendesk, auth=f"oauth_token: {zendesk.zendesk.oauth_token}")
    samples = await get_metrics(await scrape_client(config))
    assert set(dialog_values(samples, "chat_unread_up", "zendesk").values()) == {1.0}
    sent = {r.headers["Authorization"] for r in zendesk.zendesk.requests}
    assert sent == {f"Bearer {zendesk.zendesk.oauth_token}"}


async def test_a_wrong_token_is_auth(zendesk: Simulator, scrape_client: ScrapeClient) -> None:
    config = zendesk_config(zendesk).replace(zendesk.zendesk.api_token, "wrong-token")
    client = await scrape_client(config)
    samples = await get_metrics(client)
    assert set(dialog_values(samples, "chat_unread_up", "zendesk").values()) == {0.0}
    assert errors_of(samples, "zendesk", "auth") == 2.0
    debug = await (await client.get("/probe?account=acme-zendesk&debug=true")).text()
    assert "HTTP 401: Couldn't authenticate you; Invalid credentials" in debug


async def test_a_view_count_not_computed_yet_is_no_value(
    zendesk: Simulator, scrape_client: ScrapeClient
) -> None:
    zendesk.zendesk.stale_views.add(ZENDESK_VIEW)
    client = await scrape_client(zendesk_config(zendesk))
    samples = await get_metrics(client)
    assert value(samples, "chat_unread_up", **ZD, dialog="unassigned") == 0.0
    assert value(samples, "chat_unread_conversations", **ZD, dialog="unassigned") is None
    assert value(samples, "chat_unread_up", **ZD, dialog="unsolved") == 1.0
    assert errors_of(samples, "zendesk", "bad_response") == 1.0


async def test_a_view_missing_from_the_answer_is_not_found(
    zendesk: Simulator, scrape_client: ScrapeClient
) -> None:
    client = await scrape_client(zendesk_config(zendesk, "name: gone\n        view_id: 999"))
    samples = await get_metrics(client)
    assert value(samples, "chat_unread_up", **ZD, dialog="gone") == 0.0
    assert errors_of(samples, "zendesk", "not_found") == 1.0


async def test_the_view_count_limit_is_never_reached(
    zendesk: Simulator, scrape_client: ScrapeClient, clock: FakeClock
) -> None:
    """Scraped every 10 s for 10 minutes: count_many at most once a minute (the default
    cache_ttl), 10 requests where the simulator allows 6 per 5 minutes and answers 429 past
    that; none is refused."""
    client = await scrape_client(zendesk_config(zendesk))
    for _ in range(60):
        samples = await get_metrics(client)
        assert value(samples, "chat_unread_up", **ZD, dialog="unassigned") == 1.0
        clock.advance(10)
    assert len(zendesk.zendesk.calls("count_many")) == 10
    assert errors_of(samples, "zendesk", "rate_limited") == 0.0
    assert "cache_ttl" in (await (await client.get("/metrics")).text())  # said in HELP


async def test_the_simulator_enforces_the_view_count_limit(zendesk: Simulator) -> None:
    """The limit the exporter keeps to is real here: a 7th request in 5 minutes is a 429."""
    auth = base64.b64encode(f"{zendesk.zendesk.email}/token:{zendesk.zendesk.api_token}".encode())
    url = f"{zendesk.zendesk.url}/api/v2/views/count_many.json?ids={ZENDESK_VIEW}"
    async with ClientSession(headers={"Authorization": f"Basic {auth.decode()}"}) as session:
        statuses = []
        for _ in range(VIEW_COUNT_LIMIT + 1):
            async with session.get(url) as response:
                statuses.append(response.status)
                body = await response.json()
    assert statuses == [200] * VIEW_COUNT_LIMIT + [429]
    assert response.headers["Retry-After"] == "301"
    assert body == {
        "error": {
            "title": "Too Many Requests",
            "message": "You have made too many view count requests",
        }
    }


async def test_a_rate_limit_answer_backs_off_as_retry_after_asks(
    zendesk: Simulator, scrape_client: ScrapeClient, clock: FakeClock
) -> None:
    zendesk.zendesk.rate_limit = 1  # the view count passes; the search gets Retry-After: 61
    client = await scrape_client(zendesk_config(zendesk))
    samples = await get_metrics(client)
    assert errors_of(samples, "zendesk", "rate_limited") == 1.0
    debug = await (await client.get("/probe?account=acme-zendesk&debug=true")).text()
    assert "HTTP 429: APIRateLimitExceeded; Number of allowed requests exceeded" in debug
    asked = len(zendesk.zendesk.requests)

    zendesk.zendesk.rate_limit = 700
    clock.advance(59)  # within the Retry-After: no request at all
    held = await get_metrics(client)
    assert len(zendesk.zendesk.requests) == asked
    assert value(held, "chat_unread_up", **ZD, dialog="unsolved") == 0.0

    clock.advance(3)  # past it (and past the 60 s cache): both dialogs are asked for again
    after = await get_metrics(client)
    assert len(zendesk.zendesk.requests) == asked + 2
    assert value(after, "chat_unread_up", **ZD, dialog="unsolved") == 1.0


async def test_queries_split_by_group_add_up(
    zendesk: Simulator, scrape_client: ScrapeClient, clock: FakeClock
) -> None:
    client = await scrape_client(zendesk_config(zendesk, BY_GROUP))
    samples = await get_metrics(client)
    labels = {**ZD, "dialog": "by-group", "group_by": "group"}
    groups = {
        dict(key)["group"]: v
        for (name, key), v in samples.items()
        if name == "chat_unread_group_conversations"
    }
    # unsolved i = 1, 2, 4, 5, 6, 8, 9, 10, 12; group by i % 3: Tier 1, Billing, none
    assert groups == {"360001": 3.0, "360002": 3.0, "unassigned": 3.0}
    assert value(samples, "chat_unread_conversations", **ZD, dialog="by-group") == 9.0
    samples = await get_metrics(client)  # names are looked up beside the first scrape
    info = {**labels, "group": "360001", "name": "Tier 1"}
    assert samples.get(("chat_unread_group_info", frozenset(info.items()))) == 1.0
    paths = [(r.path, parse_qs(r.query_string).get("query")) for r in zendesk.zendesk.requests]
    assert paths == [
        ("/api/v2/search.json", ["type:ticket status<solved"]),
        ("/api/v2/groups.json", None),
        ("/api/v2/search/count.json", ["type:ticket status<solved group:360001"]),
        ("/api/v2/search/count.json", ["type:ticket status<solved group:360002"]),
        ("/api/v2/search/count.json", ["type:ticket status<solved group:none"]),
    ]
    # the next refresh lists the groups no more (kept an hour): 1 + 3 requests
    clock.advance(60)
    zendesk.zendesk.requests.clear()
    await get_metrics(client)
    assert len(zendesk.zendesk.requests) == 4
    assert not zendesk.zendesk.calls("groups")


async def test_tickets_of_a_group_not_listed_yet_are_other(
    zendesk: Simulator, scrape_client: ScrapeClient
) -> None:
    zendesk.zendesk.tickets[1] = ZendeskTicket(status="open", group_id=360009)
    client = await scrape_client(zendesk_config(zendesk, BY_GROUP))
    samples = await get_metrics(client)
    groups = {
        dict(key)["group"]: v
        for (name, key), v in samples.items()
        if name == "chat_unread_group_conversations"
    }
    assert groups == {"360001": 3.0, "360002": 3.0, "unassigned": 3.0, "other": 1.0}


async def test_group_counts_above_the_total_are_refused(
    zendesk: Simulator, scrape_client: ScrapeClient
) -> None:
    """The index moved between the search and the counts: a split that cannot add up is
    ``up 0``, never served."""
    zendesk.zendesk.fault = Fault.answer(200, {"count": 50}, path_contains="search/count")
    client = await scrape_client(zendesk_config(zendesk, BY_GROUP))
    samples = await get_metrics(client)
    assert value(samples, "chat_unread_up", **ZD, dialog="by-group") == 0.0
    assert errors_of(samples, "zendesk", "bad_response") == 1.0


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"count": 2, "results": []}, "count 2 with 0 results"),
        ({"count": 1, "results": [{"created_at": "yesterday"}]}, "is no time"),
        ({"count": 1, "results": [{"created_at": "2025-01-01T00:00:00"}]}, "no time zone"),
        ({"count": None, "results": []}, "count is null"),
    ],
)
async def test_a_bad_search_answer_is_up_0(
    zendesk: Simulator, scrape_client: ScrapeClient, body: object, problem: str
) -> None:
    zendesk.zendesk.fault = Fault.answer(200, body, path_contains="search")
    client = await scrape_client(zendesk_config(zendesk))
    samples = await get_metrics(client)
    assert value(samples, "chat_unread_up", **ZD, dialog="unsolved") == 0.0
    assert value(samples, "chat_unread_up", **ZD, dialog="unassigned") == 1.0
    debug = await (await client.get("/probe?account=acme-zendesk&debug=true")).text()
    assert problem in debug


def test_both_error_envelopes_are_read() -> None:
    assert error_messages({"error": "RecordNotFound", "description": "Not found"}) == [
        "RecordNotFound",
        "Not found",
    ]
    assert error_messages({"error": {"title": "Forbidden", "message": "No access"}}) == [
        "Forbidden",
        "No access",
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("    cache_ttl: 30s\n", "cache_ttl must be at least 50s"),
        ("    oauth_token: x\n", "not both"),
    ],
)
def test_a_config_that_would_break_the_limits_is_refused(
    sim: Simulator, change: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(zendesk_config(sim, extra=change), "zendesk.yaml")


@pytest.mark.parametrize(
    ("dialog", "message"),
    [
        (f"name: v\n        view_id: {ZENDESK_VIEW}\n        group_by: group", "use a query"),
        ("name: v\n        view_id: 1\n        query: status:new", "exactly one"),
        ("name: v", "exactly one"),
    ],
)
def test_a_dialog_is_a_view_or_a_query(sim: Simulator, dialog: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(zendesk_config(sim, dialog), "zendesk.yaml")


def test_no_credentials_is_refused(sim: Simulator) -> None:
    with pytest.raises(ConfigError, match="set email and api_token"):
        parse_config(zendesk_config(sim, auth="email: a@example.com"), "zendesk.yaml")


async def test_a_count_zendesk_is_recomputing_is_its_last_one(
    zendesk: Simulator, scrape_client: ScrapeClient
) -> None:
    """``fresh`` false with a value: Zendesk's last computed count, served as its agent
    interface shows it while it recomputes (docs/zendesk.md)."""
    counts = [{"view_id": ZENDESK_VIEW, "value": 5, "pretty": "5", "fresh": False}]
    zendesk.zendesk.fault = Fault.answer(200, {"view_counts": counts}, path_contains="count_many")
    client = await scrape_client(zendesk_config(zendesk))
    samples = await get_metrics(client)
    assert value(samples, "chat_unread_conversations", **ZD, dialog="unassigned") == 5.0


async def test_more_groups_than_a_refresh_may_search_are_refused(
    zendesk: Simulator, scrape_client: ScrapeClient
) -> None:
    """101 groups, listed by cursor in two pages: the split would cost 103 requests a refresh,
    so the dialog is ``up 0`` saying why, and no count is spent on it."""
    zendesk.zendesk.groups = {360000 + i: f"Group {i}" for i in range(1, 102)}
    client = await scrape_client(zendesk_config(zendesk, BY_GROUP))
    samples = await get_metrics(client)
    assert value(samples, "chat_unread_up", **ZD, dialog="by-group") == 0.0
    pages = [parse_qs(r.query_string) for r in zendesk.zendesk.calls("/groups")]
    assert pages[0] == {"page[size]": ["100"]}
    assert list(pages[1]) == ["page[size]", "page[after]"]
    assert len(pages) == 2
    assert not zendesk.zendesk.calls("search/count")
    debug = await (await client.get("/probe?account=acme-zendesk&debug=true")).text()
    assert "101 groups: more than 100 searches a refresh" in debug


async def test_dialogs_of_the_same_view_or_query_are_part_of_the_first(
    zendesk: Simulator, scrape_client: ScrapeClient
) -> None:
    dialogs = (
        f"name: view\n        view_id: {ZENDESK_VIEW}",
        f"name: view-again\n        view_id: {ZENDESK_VIEW}",
        "name: unsolved\n        query: status<solved",
        BY_GROUP.replace("status<solved", "status<solved  "),
        "name: new\n        query: status:new",
    )
    client = await scrape_client(zendesk_config(zendesk, *dialogs))
    samples = await get_metrics(client)
    part_of = {
        dict(labels)["dialog"]: dict(labels)["part_of"]
        for (name, labels), _ in samples.items()
        if name == "chat_unread_dialog_info"
    }
    assert part_of == {
        "view": "",
        "view-again": "view",
        "unsolved": "",
        "by-group": "unsolved",
        "new": "",
    }


async def test_dialogs_of_one_query_share_its_search_and_group_counts(
    zendesk: Simulator, scrape_client: ScrapeClient
) -> None:
    """A query split by group and the same query unsplit (the demo's pair) count the same
    tickets: one search and one set of group counts serve both, 1 + 1 + 3 requests."""
    config = zendesk_config(
        zendesk,
        "name: unsolved\n        query: status<solved",
        BY_GROUP,
        BY_GROUP.replace("by-group", "by-group-top").replace(
            "group_by: group", "group_by: group\n        max_groups: 2"
        ),
    )
    samples = await get_metrics(await scrape_client(config))
    assert len(zendesk.zendesk.calls("search.json")) == 1
    assert len(zendesk.zendesk.calls("search/count.json")) == 3  # Tier 1, Billing, none
    assert dialog_values(samples, "chat_unread_conversations", "zendesk") == {
        "unsolved": 9.0,
        "by-group": 9.0,
        "by-group-top": 9.0,
    }
    top = {
        dict(key)["group"]: v
        for (name, key), v in samples.items()
        if name == "chat_unread_group_conversations" and dict(key)["dialog"] == "by-group-top"
    }
    assert sum(top.values()) == 9.0
    assert len(top) == 2  # one group kept, the rest folded into other
    assert "other" in top
