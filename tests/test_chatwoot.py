"""Chatwoot over HTTP against the simulator: counts, queues, names, costs and failures.

``populate_reach`` gives the simulated account 60 open conversations (and five resolved ones
no dialog counts); ``tests/support.chatwoot_backlog`` says which inbox, team and agent each is
in. Every figure asserted here follows from that data set, and every request the exporter
makes is counted, since the request cost per dialog is part of the documented behaviour.
"""

from __future__ import annotations

import pytest

from exporter.configuration.loading import ConfigError, parse_config
from exporter.providers import chatwoot
from exporter.simulator import Simulator
from exporter.simulator.base import Fault, RateWindow
from tests.support import (
    CHATWOOT_WAITING,
    Samples,
    ScrapeClient,
    chatwoot_backlog,
    errors_of,
    get_metrics,
    populate_reach,
    value,
)
from tests.test_cli import eventually

ACCOUNT = {"provider": "chatwoot", "account": "acme-chatwoot"}


def account_yaml(sim: Simulator, dialogs: str, token: str = "") -> str:
    """A config of one Chatwoot account over the simulator with ``dialogs``."""
    return f"""\
accounts:
  - name: acme-chatwoot
    provider: chatwoot
    base_url: {sim.chatwoot.url}
    account_id: {sim.chatwoot.account_id}
    api_access_token: {token or sim.chatwoot.api_access_token}
    dialogs:
{dialogs}"""


EVERY_KIND = """\
      - name: backlog
      - name: website
        inbox_id: 7
      - name: billing
        team_id: 3
      - name: by-team
        group_by: team
      - name: by-agent
        group_by: agent
      - name: by-inbox
        group_by: inbox
      - name: email-unread
        inbox_id: 8
        unread_messages: true
"""


def dialog(samples: Samples, name: str, dialog_name: str) -> float | None:
    return value(samples, f"chat_unread_{name}", **ACCOUNT, dialog=dialog_name)


def split(samples: Samples, name: str, dialog_name: str) -> dict[str, float]:
    return {
        dict(labels)["group"]: v
        for (metric, labels), v in samples.items()
        if metric == f"chat_unread_group_{name}"
        and dict(labels)["dialog"] == dialog_name
        and dict(labels)["provider"] == "chatwoot"
    }


def names(samples: Samples, dialog_name: str) -> dict[str, str]:
    return {
        dict(labels)["group"]: dict(labels)["name"]
        for (metric, labels), _v in samples.items()
        if metric == "chat_unread_group_info"
        and dict(labels)["dialog"] == dialog_name
        and dict(labels)["provider"] == "chatwoot"
    }


async def test_every_kind_of_dialog_and_what_it_costs(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    populate_reach(sim)
    client = await scrape_client(account_yaml(sim, EVERY_KIND))
    sim.chatwoot.requests.clear()
    samples = await get_metrics(client)

    counted = {
        d: dialog(samples, "conversations", d)
        for d in ("backlog", "website", "billing", "by-team", "by-agent", "by-inbox")
    }
    assert counted == dict.fromkeys(counted, 60.0) | {"website": 30.0, "billing": 20.0}
    # unread messages and the oldest waiting only where the list is read
    assert dialog(samples, "messages", "by-inbox") == 60.0
    assert dialog(samples, "oldest_unread_timestamp_seconds", "by-inbox") == CHATWOOT_WAITING + 60
    assert dialog(samples, "messages", "email-unread") == 30.0
    assert dialog(samples, "conversations", "email-unread") == 30.0
    assert dialog(samples, "oldest_unread_timestamp_seconds", "email-unread") == (
        CHATWOOT_WAITING + 120
    )
    for plain in ("backlog", "website", "billing", "by-team", "by-agent"):
        assert dialog(samples, "messages", plain) is None
        assert dialog(samples, "oldest_unread_timestamp_seconds", plain) is None

    assert split(samples, "conversations", "by-team") == {"3": 20, "4": 20, "unassigned": 20}
    assert split(samples, "conversations", "by-agent") == {"11": 15, "12": 15, "unassigned": 30}
    assert split(samples, "conversations", "by-inbox") == {"7": 30, "8": 30}
    assert split(samples, "messages", "by-inbox") == {"7": 30, "8": 30}
    assert split(samples, "oldest_unread_timestamp_seconds", "by-inbox") == {
        "7": CHATWOOT_WAITING + 60,
        "8": CHATWOOT_WAITING + 120,
    }

    # meta: one per filter not read from the list (inbox 7, team 3; the backlog is counted
    # from by-inbox's pages); one grouped report per dimension; the unfiltered list in 3
    # pages of 25 (it ends once all_count conversations are read) and inbox 8's in 2
    # (the names' lists are read apart, in the background: not counted here)
    names_lists = ("/teams", "/agents", "/inboxes")
    counting = [r for r in sim.chatwoot.requests if not r.path.endswith(names_lists)]
    paths = sorted((r.path.rsplit("/", 1)[-1], r.query_string) for r in counting)
    assert paths == sorted(
        [
            ("meta", "status=open&inbox_id=7"),
            ("meta", "status=open&team_id=3"),
            ("grouped_conversation_metrics", "group_by=team_id"),
            ("grouped_conversation_metrics", "group_by=assignee_id"),
            *[("conversations", f"status=open&page={page}") for page in (1, 2, 3)],
            *[("conversations", f"status=open&inbox_id=8&page={page}") for page in (1, 2)],
        ]
    )
    for request in counting:
        assert request.headers["api_access_token"] == sim.chatwoot.api_access_token


async def test_a_plain_dialog_shares_the_pages_of_its_filter(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    populate_reach(sim)
    dialogs = "      - name: backlog\n      - name: by-inbox\n        group_by: inbox\n"
    client = await scrape_client(account_yaml(sim, dialogs))
    sim.chatwoot.requests.clear()
    samples = await get_metrics(client)
    assert dialog(samples, "conversations", "backlog") == 60.0
    assert dialog(samples, "messages", "backlog") is None  # as configured: counts only
    assert sim.chatwoot.calls("/meta") == []
    assert len(sim.chatwoot.calls("/conversations")) == 3


async def test_an_empty_backlog_costs_one_page_and_is_zero(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    chatwoot_backlog(sim, size=0)
    dialogs = "      - name: unread\n        unread_messages: true\n"
    client = await scrape_client(account_yaml(sim, dialogs))
    sim.chatwoot.requests.clear()
    samples = await get_metrics(client)
    assert dialog(samples, "messages", "unread") == 0.0
    assert dialog(samples, "conversations", "unread") == 0.0
    assert dialog(samples, "oldest_unread_timestamp_seconds", "unread") is None
    assert len(sim.chatwoot.requests) == 1


async def test_group_names_come_from_the_lists_and_never_an_email(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    populate_reach(sim)
    client = await scrape_client(account_yaml(sim, EVERY_KIND))

    async def named() -> Samples | None:
        samples = await get_metrics(client)
        ready = all(names(samples, d) for d in ("by-team", "by-agent", "by-inbox"))
        return samples if ready else None

    samples = await eventually(named, "team, agent and inbox names")
    assert names(samples, "by-team") == {"3": "Billing", "4": "Sales"}
    assert names(samples, "by-agent") == {"11": "Ada Lovelace", "12": "Bob"}
    assert names(samples, "by-inbox") == {"7": "Website", "8": "Email"}
    assert "@example.com" not in await (await client.get("/metrics")).text()
    for path in ("/teams", "/agents", "/inboxes"):
        assert len(sim.chatwoot.calls(path)) == 1


async def test_a_wrong_token_is_auth_for_every_dialog(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    populate_reach(sim)
    client = await scrape_client(account_yaml(sim, EVERY_KIND, token="not-the-token"))
    samples = await get_metrics(client)
    ups = {d: dialog(samples, "up", d) for d in ("backlog", "by-team", "by-inbox")}
    assert ups == dict.fromkeys(ups, 0.0)
    assert dialog(samples, "conversations", "backlog") is None
    assert errors_of(samples, "chatwoot", "auth") == 7.0  # one per dialog
    debug = await (await client.get("/probe?account=acme-chatwoot&debug=true")).text()
    assert "HTTP 401: Invalid Access Token" in debug


async def test_an_agents_token_loses_only_the_live_reports(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    populate_reach(sim)
    sim.chatwoot.administrator = False
    client = await scrape_client(account_yaml(sim, EVERY_KIND))
    samples = await get_metrics(client)
    assert dialog(samples, "up", "by-team") == 0.0
    assert dialog(samples, "up", "by-agent") == 0.0
    assert split(samples, "conversations", "by-team") == {}
    assert dialog(samples, "up", "backlog") == 1.0
    assert dialog(samples, "up", "by-inbox") == 1.0
    assert errors_of(samples, "chatwoot", "auth") == 2.0


async def test_an_unknown_team_is_not_found_for_its_dialog_only(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    populate_reach(sim)
    dialogs = "      - name: backlog\n      - name: gone\n        team_id: 99\n"
    client = await scrape_client(account_yaml(sim, dialogs))
    samples = await get_metrics(client)
    assert dialog(samples, "up", "gone") == 0.0
    assert dialog(samples, "conversations", "backlog") == 60.0
    assert errors_of(samples, "chatwoot", "not_found") == 1.0


async def test_rack_attack_throttle_is_a_rate_limit(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    populate_reach(sim)
    sim.chatwoot.rate_limit = RateWindow(limit=2, seconds=60)
    sim.chatwoot.retry_after_header = True
    client = await scrape_client(account_yaml(sim, EVERY_KIND))
    samples = await get_metrics(client)
    ups = [dialog(samples, "up", d) for d in ("backlog", "website", "billing", "by-team")]
    assert 0.0 in ups
    limited = errors_of(samples, "chatwoot", "rate_limited")
    assert limited is not None
    assert limited >= 1


async def test_a_list_that_ignores_the_page_is_refused(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    """A list answering page 1 for every page would loop: refused, never counted twice."""
    populate_reach(sim)
    listed = [{"id": i, "inbox_id": 7, "unread_count": 1, "waiting_since": 0} for i in range(25)]
    meta = {"mine_count": 0, "unassigned_count": 0, "assigned_count": 60, "all_count": 60}
    sim.chatwoot.fault = Fault.answer(200, {"data": {"meta": meta, "payload": listed}})
    dialogs = "      - name: by-inbox\n        group_by: inbox\n"
    client = await scrape_client(account_yaml(sim, dialogs))
    samples = await get_metrics(client)
    assert dialog(samples, "up", "by-inbox") == 0.0
    assert errors_of(samples, "chatwoot", "bad_response") == 1.0
    assert len(sim.chatwoot.calls("/conversations")) == 2


async def test_a_grouped_report_with_a_junk_group_fails_that_dialog(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    populate_reach(sim)
    rows = [{"open": 3, "unattended": 0, "unassigned": 0, "team_id": "3"}]
    sim.chatwoot.fault = Fault.answer(200, rows, path_contains="/live_reports/")
    client = await scrape_client(account_yaml(sim, EVERY_KIND))
    samples = await get_metrics(client)
    assert dialog(samples, "up", "by-team") == 0.0
    assert dialog(samples, "up", "by-agent") == 0.0  # its rows lack assignee_id
    assert dialog(samples, "up", "backlog") == 1.0


async def test_many_agents_fold_into_other_and_still_add_up(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    populate_reach(sim)
    for display_id, conversation in sim.chatwoot.conversations.items():
        conversation.assignee_id = 100 + display_id % 12
    dialogs = "      - name: by-agent\n        group_by: agent\n        max_groups: 5\n"
    client = await scrape_client(account_yaml(sim, dialogs))
    samples = await get_metrics(client)
    groups = split(samples, "conversations", "by-agent")
    assert len(groups) == 5
    assert "other" in groups
    assert sum(groups.values()) == dialog(samples, "conversations", "by-agent") == 60.0


@pytest.mark.parametrize(
    ("dialogs", "problem"),
    [
        ("inbox_id: 7\n        team_id: 3", "set inbox_id or team_id, not both"),
        ("group_by: team\n        inbox_id: 7", "group_by team reads Chatwoot's live reports"),
        ("group_by: agent\n        unread_messages: true", "not with inbox_id or unread_messages"),
        ("group_by: label", "not a dimension this provider splits by (team, agent, inbox)"),
        ("inbox_id: 0", "inbox_id: must be at least 1"),
    ],
)
def test_configs_it_cannot_serve_are_refused(sim: Simulator, dialogs: str, problem: str) -> None:
    text = account_yaml(sim, f"      - name: bad\n        {dialogs}\n")
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "test.yaml")
    assert problem in str(caught.value)


def test_default_installation_is_chatwoot_cloud(sim: Simulator) -> None:
    text = account_yaml(sim, "      - name: backlog\n").replace(
        f"    base_url: {sim.chatwoot.url}\n", ""
    )
    account = parse_config(text, "test.yaml").accounts[0]
    assert account.api_root() == "https://app.chatwoot.com"


def test_an_inbox_or_team_is_part_of_the_unfiltered_backlog(sim: Simulator) -> None:
    """Without a listing whole, the first unfiltered dialog holds the others."""
    every_kind = EVERY_KIND.replace("      - name: by-inbox\n        group_by: inbox\n", "")
    account = parse_config(account_yaml(sim, every_kind), "test.yaml").accounts[0]
    assert isinstance(account, chatwoot.ChatwootAccount)
    found = chatwoot.PROVIDER.coverage(account)
    assert dict(found.part_of) == {
        name: "backlog" for name in ("website", "billing", "by-team", "by-agent", "email-unread")
    }


def test_the_whole_that_reads_the_list_holds_the_others(sim: Simulator) -> None:
    """``by-inbox`` reads the list, so only it has unread messages among the wholes: a part
    ``part_of`` the counting ``backlog`` instead would stay in a sum of unread messages over
    every dialog beside ``by-inbox``, its messages counted twice."""
    account = parse_config(account_yaml(sim, EVERY_KIND), "test.yaml").accounts[0]
    assert isinstance(account, chatwoot.ChatwootAccount)
    found = chatwoot.PROVIDER.coverage(account)
    assert dict(found.part_of) == {
        name: "by-inbox"
        for name in ("backlog", "website", "billing", "by-team", "by-agent", "email-unread")
    }


def test_without_the_backlog_two_inboxes_never_overlap_an_inbox_and_a_team_may(
    sim: Simulator,
) -> None:
    dialogs = (
        "      - name: website\n        inbox_id: 7\n"
        "      - name: email\n        inbox_id: 8\n"
        "      - name: billing\n        team_id: 3\n"
    )
    account = parse_config(account_yaml(sim, dialogs), "test.yaml").accounts[0]
    assert isinstance(account, chatwoot.ChatwootAccount)
    found = chatwoot.PROVIDER.coverage(account)
    assert dict(found.part_of) == {}
    assert {frozenset(pair) for pair in found.overlapping} == {
        frozenset({"website", "billing"}),
        frozenset({"email", "billing"}),
    }


async def test_demo_shows_chatwoot_queues_with_names(scrape_client: ScrapeClient) -> None:
    demo = Simulator()
    await demo.start()
    try:
        demo.populate_demo()
        client = await scrape_client(demo.demo_config_yaml())
        account = {"provider": "chatwoot", "account": "demo-chatwoot"}
        dimensions = ("backlog-by-team", "backlog-by-agent", "backlog-by-inbox")

        async def named() -> Samples | None:
            samples = await get_metrics(client)
            return samples if all(names(samples, d) for d in dimensions) else None

        samples = await eventually(named, "the demo's Chatwoot queues with names")
        backlog = value(samples, "chat_unread_conversations", **account, dialog="backlog")
        assert backlog is not None
        assert backlog > 0
        for grouped in dimensions:
            groups = split(samples, "conversations", grouped)
            assert sum(groups.values()) == backlog
        assert "unassigned" in split(samples, "conversations", "backlog-by-team")
        assert "unassigned" in split(samples, "conversations", "backlog-by-agent")
        assert set(names(samples, "backlog-by-agent").values()) == {"Ada Lovelace", "Grace Hopper"}
        assert set(names(samples, "backlog-by-team").values()) == {"Billing", "Support"}
        assert value(samples, "chat_unread_messages", **account, dialog="website") is not None
        oldest = "chat_unread_oldest_unread_timestamp_seconds"
        assert value(samples, oldest, **account, dialog="website") is not None
    finally:
        await demo.stop()
