"""Queues of Crisp and Intercom over HTTP, and what Crisp, Intercom and IMKit dialogs contain.

Crisp splits its backlog by inbox or assigned operator from the pages it reads anyway;
Intercom splits any dialog by team or teammate from the search pages, read to the last one.
Names come from the providers' lists in the background, never an email address.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from aiohttp import ClientSession

from exporter.configuration.loading import ConfigError, parse_config
from exporter.providers import imkit, intercom
from exporter.simulator import Simulator
from exporter.simulator.base import Fault
from exporter.simulator.crisp import CrispConversation, CrispOperator
from exporter.simulator.intercom import IntercomConversation
from tests.support import (
    INTERCOM_ADMIN,
    INTERCOM_TEAM,
    INTERCOM_WAITING,
    VIP,
    WAITING_MS,
    WEBSITE,
    Samples,
    ScrapeClient,
    config_yaml,
    dialog_values,
    errors_of,
    get_metrics,
    intercom_backlog,
    populate_reach,
    reach_accounts,
    value,
)
from tests.test_cli import eventually

CRISP = {"provider": "crisp", "account": "acme-crisp"}
INTERCOM = {"provider": "intercom", "account": "acme-intercom"}
# Crisp's backlog dialog of ``config_yaml``, and two more split by inbox and by operator.
CRISP_GROUPED = """\
      - name: by-inbox
        group_by: inbox
      - name: by-operator
        group_by: operator
"""
SALES, SUPPORT = "b1f0a4c2-sales", "c9d2e7aa-support"
ADA, BOB = "4f2c0b7e-ada", "9a1d3c55-bob"


def crisp_config(sim: Simulator, dialogs: str = CRISP_GROUPED) -> str:
    """``config_yaml``'s Crisp account (and the others) with ``dialogs`` added to Crisp's."""
    return config_yaml(sim).replace(
        "      - name: vip-visitor\n", dialogs + "      - name: vip-visitor\n", 1
    )


def assign_crisp(sim: Simulator) -> None:
    """Inboxes and operators over ``populate``'s 70 conversations and the VIP one.

    Conversation i (1..70, one unread each) is in inbox sales when i % 3 == 1, support when
    i % 3 == 0, none otherwise; operators Ada has 1..10 and Bob 11..15. The VIP one (2 unread,
    waiting longest) is Ada's, in no inbox.
    """
    website = sim.crisp.websites[WEBSITE]
    for i in range(1, 71):
        conversation = website[f"session_{i:03d}"]
        conversation.inbox_id = {1: SALES, 0: SUPPORT}.get(i % 3)
        conversation.operator_id = ADA if i <= 10 else BOB if i <= 15 else None
    website[VIP].operator_id = ADA
    sim.crisp.inboxes[WEBSITE] = {SALES: "Sales", SUPPORT: "Support"}
    sim.crisp.operators[WEBSITE] = [
        CrispOperator(ADA, "Ada", "Lovelace", "ada@example.com"),
        CrispOperator(BOB, "Bob", "", "bob@example.com"),
    ]


def groups(samples: Samples, name: str, account: dict[str, str], dialog: str) -> dict[str, float]:
    """{group: value} of one group metric of one dialog."""
    return {
        dict(labels)["group"]: v
        for (metric, labels), v in samples.items()
        if metric == name
        and dict(labels).get("dialog") == dialog
        and dict(labels).get("account") == account["account"]
    }


def group_names(samples: Samples, account: dict[str, str], dialog: str) -> dict[str, str]:
    return {
        dict(labels)["group"]: dict(labels)["name"]
        for (metric, labels), _v in samples.items()
        if metric == "chat_unread_group_info"
        and dict(labels).get("dialog") == dialog
        and dict(labels).get("account") == account["account"]
    }


def part_of(samples: Samples, provider: str) -> dict[str, str]:
    return {
        dict(labels)["dialog"]: dict(labels)["part_of"]
        for (metric, labels), _v in samples.items()
        if metric == "chat_unread_dialog_info" and dict(labels)["provider"] == provider
    }


# --------------------------------------------------------------------------------------------
# Crisp


async def test_crisp_backlog_split_by_inbox_and_operator_from_the_same_pages(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    assign_crisp(sim)
    client = await scrape_client(crisp_config(sim))
    samples = await get_metrics(client)

    messages = dialog_values(samples, "chat_unread_messages", "crisp")
    assert (messages["backlog"], messages["by-inbox"], messages["by-operator"]) == (72, 72, 72)
    assert groups(samples, "chat_unread_group_messages", CRISP, "by-inbox") == {
        SALES: 24.0,
        SUPPORT: 23.0,
        "unassigned": 25.0,  # 23 in no inbox and the VIP's 2
    }
    assert groups(samples, "chat_unread_group_conversations", CRISP, "by-inbox") == {
        SALES: 24.0,
        SUPPORT: 23.0,
        "unassigned": 24.0,
    }
    assert groups(
        samples, "chat_unread_group_oldest_unread_timestamp_seconds", CRISP, "by-inbox"
    ) == {
        SALES: (WAITING_MS + 1000) / 1000,
        SUPPORT: (WAITING_MS + 3000) / 1000,
        "unassigned": (WAITING_MS - 5000) / 1000,
    }
    assert groups(samples, "chat_unread_group_messages", CRISP, "by-operator") == {
        ADA: 12.0,
        BOB: 5.0,
        "unassigned": 55.0,
    }
    assert groups(samples, "chat_unread_group_messages", CRISP, "backlog") == {}
    # three backlog dialogs, one pass over the pages: the same two requests as one backlog
    assert len(sim.crisp.calls("/conversations/")) == 2


async def test_crisp_group_names_are_looked_up_apart_and_never_an_email(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    assign_crisp(sim)
    sim.crisp.inboxes[WEBSITE].update({f"inbox-{i:02d}": f"Inbox {i}" for i in range(25)})
    client = await scrape_client(crisp_config(sim))

    async def named() -> Samples | None:
        samples = await get_metrics(client)
        both = group_names(samples, CRISP, "by-inbox") and group_names(
            samples, CRISP, "by-operator"
        )
        return samples if both else None

    samples = await eventually(named, "inbox and operator names")
    assert group_names(samples, CRISP, "by-inbox") == {SALES: "Sales", SUPPORT: "Support"}
    assert group_names(samples, CRISP, "by-operator") == {ADA: "Ada Lovelace", BOB: "Bob"}
    text = await (await client.get("/metrics")).text()
    assert "@example.com" not in text
    # 27 inboxes, 20 a page: two pages and the empty third; operators in one request
    assert [r.path for r in sim.crisp.calls("/inboxes/list/")] == [
        f"/v1/website/{WEBSITE}/inboxes/list/{page}" for page in (1, 2, 3)
    ]
    assert len(sim.crisp.calls("/operators/list")) == 1


@pytest.mark.parametrize("kept", [70, 59])
async def test_crisp_backlog_is_read_whole_when_crisp_caps_the_page_size(
    sim: Simulator, scrape_client: ScrapeClient, kept: int
) -> None:
    website = sim.crisp.websites[WEBSITE]
    for i in range(kept + 1, 71):
        del website[f"session_{i:03d}"]
    sim.crisp.page_size_cap = 20  # Crisp's default, as if per_page were ignored
    client = await scrape_client(crisp_config(sim, ""))
    samples = await get_metrics(client)

    # the conversations kept (1 unread each) and the VIP's (2 unread)
    assert value(samples, "chat_unread_messages", **CRISP, dialog="backlog") == kept + 2
    assert value(samples, "chat_unread_conversations", **CRISP, dialog="backlog") == kept + 1
    # pages of 20 until a shorter one (71: 20, 20, 20, 11) or the empty one (60)
    assert len(sim.crisp.calls("/conversations/")) == 4


async def test_crisp_honouring_the_page_size_costs_no_request_more(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    client = await scrape_client(crisp_config(sim, ""))
    await get_metrics(client)
    assert len(sim.crisp.calls("/conversations/")) == 2  # 50 and 21
    website = sim.crisp.websites[WEBSITE]
    for i in range(21, 71):
        del website[f"session_{i:03d}"]
    samples = await get_metrics(client)
    assert value(samples, "chat_unread_messages", **CRISP, dialog="backlog") == 22
    # a page of 21, shorter than the 50 Crisp has served: the last, in one request
    assert len(sim.crisp.calls("/conversations/")) == 3


@pytest.mark.parametrize(
    ("inbox", "reason"),
    [(7, "not a string"), ("a\nb", "control characters"), ("x" * 10_000, "longer than 256")],
)
async def test_crisp_junk_group_id_fails_only_the_grouped_dialog(
    sim: Simulator, scrape_client: ScrapeClient, inbox: Any, reason: str
) -> None:
    assign_crisp(sim)
    sim.crisp.websites[WEBSITE]["session_005"].inbox_id = inbox
    client = await scrape_client(crisp_config(sim))
    samples = await get_metrics(client)

    ups = dialog_values(samples, "chat_unread_up", "crisp")
    assert (ups["backlog"], ups["by-inbox"], ups["by-operator"]) == (1, 0, 1)
    assert value(samples, "chat_unread_messages", **CRISP, dialog="backlog") == 72
    assert groups(samples, "chat_unread_group_messages", CRISP, "by-inbox") == {}
    assert errors_of(samples, "crisp", "bad_response") == 1
    page = await (await client.get("/")).text()
    assert reason in page


@pytest.mark.parametrize(
    ("dialog", "at", "problem"),
    [
        (
            f"      - name: one\n        session_id: {VIP}\n        group_by: inbox\n",
            "- name: one",
            ": group_by applies only to the backlog (a dialog without session_id)",
        ),
        (
            "      - name: wrong\n        group_by: team\n",
            "group_by: team",
            ".group_by: the value is not a dimension this provider splits by (inbox, operator)",
        ),
        (
            "      - name: many\n        group_by: inbox\n        max_groups: 1001\n",
            "max_groups: 1001",
            ".max_groups: must be at most 1000",
        ),
    ],
)
def test_crisp_group_by_it_cannot_serve_is_refused_at_its_line(
    sim: Simulator, dialog: str, at: str, problem: str
) -> None:
    text = crisp_config(sim, dialog)
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "test.yaml")
    line = next(n for n, line in enumerate(text.splitlines(), 1) if line.endswith(at))
    assert caught.value.problems == [f"test.yaml:{line}: accounts[0].dialogs[1]{problem}"]


async def test_crisp_operator_side_sessions_are_part_of_the_backlog(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    client = await scrape_client(crisp_config(sim))
    samples = await get_metrics(client)
    assert part_of(samples, "crisp") == {
        "backlog": "",
        "by-inbox": "backlog",  # a second backlog counts the same items
        "by-operator": "backlog",
        "vip-operator": "backlog",
        "vip-visitor": "",  # the visitor's unread messages are in no backlog
    }


# --------------------------------------------------------------------------------------------
# Intercom


def intercom_config(sim: Simulator, inbox: str = "      - name: inbox\n") -> str:
    """``reach_accounts``' Intercom account with the inbox dialog replaced by ``inbox``."""
    accounts = reach_accounts(sim).replace("      - name: inbox\n", inbox, 1)
    return "accounts:\n" + accounts


async def test_intercom_inbox_split_by_team_reads_every_page_once(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    sim.intercom.conversations = intercom_backlog(400)
    client = await scrape_client(
        intercom_config(sim, "      - name: inbox\n        group_by: team\n")
    )
    samples = await get_metrics(client)

    conversations = dialog_values(samples, "chat_unread_conversations", "intercom")
    assert conversations == {"inbox": 400.0, "billing": 200.0, "alice": 80.0}
    assert groups(samples, "chat_unread_group_conversations", INTERCOM, "inbox") == {
        INTERCOM_TEAM: 200.0,
        "unassigned": 200.0,
    }
    assert groups(
        samples, "chat_unread_group_oldest_unread_timestamp_seconds", INTERCOM, "inbox"
    ) == {
        INTERCOM_TEAM: INTERCOM_WAITING + 120.0,
        "unassigned": INTERCOM_WAITING + 60.0,
    }
    # 400 waiting: three pages of 150, which serve the team and teammate dialogs too
    searches = sim.intercom.calls("/conversations/search")
    cursors = [r.json()["pagination"].get("starting_after") for r in searches]
    assert len(cursors) == 3
    assert cursors[0] is None
    assert None not in cursors[1:]


async def test_intercom_split_by_teammate_takes_zero_for_unassigned_and_names_from_admins(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    populate_reach(sim)
    sim.intercom.conversations["77"] = IntercomConversation(
        waiting_since=INTERCOM_WAITING, team_assignee_id="0", admin_assignee_id=0
    )
    sim.intercom.admins = {str(INTERCOM_ADMIN): ("Alice Martin", "alice@example.com")}
    sim.intercom.teams = {INTERCOM_TEAM: "Billing"}
    dialogs = (
        "      - name: inbox\n        group_by: teammate\n"
        "      - name: teams\n        group_by: team\n"
    )
    client = await scrape_client(intercom_config(sim, dialogs))

    async def named() -> Samples | None:
        samples = await get_metrics(client)
        both = group_names(samples, INTERCOM, "inbox") and group_names(samples, INTERCOM, "teams")
        return samples if both else None

    samples = await eventually(named, "team and teammate names")
    assert groups(samples, "chat_unread_group_conversations", INTERCOM, "inbox") == {
        str(INTERCOM_ADMIN): 8.0,
        "unassigned": 33.0,  # 32, and the one assigned to "0"
    }
    assert groups(samples, "chat_unread_group_conversations", INTERCOM, "teams") == {
        INTERCOM_TEAM: 20.0,
        "unassigned": 21.0,
    }
    assert group_names(samples, INTERCOM, "inbox") == {str(INTERCOM_ADMIN): "Alice Martin"}
    assert group_names(samples, INTERCOM, "teams") == {INTERCOM_TEAM: "Billing"}
    assert "alice@example.com" not in await (await client.get("/metrics")).text()
    assert len(sim.intercom.calls("/admins")) == len(sim.intercom.calls("/teams")) == 1


async def test_intercom_junk_team_id_fails_only_the_dialog_split_by_team(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    populate_reach(sim)
    sim.intercom.conversations["77"] = IntercomConversation(
        waiting_since=INTERCOM_WAITING, team_assignee_id="7" * 300
    )
    dialogs = "      - name: inbox\n      - name: teams\n        group_by: team\n"
    client = await scrape_client(intercom_config(sim, dialogs))
    samples = await get_metrics(client)

    ups = dialog_values(samples, "chat_unread_up", "intercom")
    assert ups == {"inbox": 1, "teams": 0, "billing": 1, "alice": 1}
    conversations = dialog_values(samples, "chat_unread_conversations", "intercom")
    assert conversations == {"inbox": 41.0, "billing": 20.0, "alice": 8.0}
    assert groups(samples, "chat_unread_group_conversations", INTERCOM, "teams") == {}
    assert "longer than 256" in await (await client.get("/")).text()


def page(conversations: list[int], cursor: str | None, total: int = 300) -> dict[str, Any]:
    """A search answer of conversations waiting since the given times."""
    pages: dict[str, Any] = {"type": "pages", "per_page": 150}
    if cursor is not None:
        pages["next"] = {"per_page": 150, "starting_after": cursor}
    return {
        "type": "conversation.list",
        "total_count": total,
        "pages": pages,
        "conversations": [
            {"id": str(i), "waiting_since": since, "team_assignee_id": None}
            for i, since in enumerate(conversations)
        ],
    }


async def test_intercom_repeated_cursor_ends_the_refresh_at_once(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    # newest first (the sort ignored), and the same cursor every time: a loop
    sim.intercom.fault = Fault.answer(200, page([20, 10], "c2FtZQ=="))
    client = await scrape_client(intercom_config(sim))
    samples = await get_metrics(client)

    assert value(samples, "chat_unread_up", **INTERCOM, dialog="inbox") == 0
    assert errors_of(samples, "intercom", "bad_response") is not None
    assert "twice" in await (await client.get("/")).text()
    assert len(sim.intercom.requests) == 2  # was 100 pages a dialog


async def test_intercom_empty_cursor_is_the_last_page(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    sim.intercom.fault = Fault.answer(200, page([10, 20], "", total=2))
    client = await scrape_client(
        intercom_config(sim, "      - name: inbox\n        group_by: team\n")
    )
    samples = await get_metrics(client)

    assert value(samples, "chat_unread_conversations", **INTERCOM, dialog="inbox") == 2
    assert groups(samples, "chat_unread_group_conversations", INTERCOM, "inbox") == {
        "unassigned": 2.0
    }
    assert len(sim.intercom.calls("/conversations/search")) == 1


async def test_intercom_walk_spends_no_more_than_the_daily_budget(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    sim.intercom.conversations = intercom_backlog(400)
    sim.intercom.honour_sort = False  # every page must be read to find the oldest
    text = intercom_config(sim).replace(
        "    dialogs:\n      - name: inbox",
        "    daily_request_budget: 2\n    dialogs:\n      - name: inbox",
        1,
    )
    client = await scrape_client(text)
    samples = await get_metrics(client)

    assert value(samples, "chat_unread_up", **INTERCOM, dialog="inbox") == 0
    assert len(sim.intercom.requests) == 2  # three pages would overspend the day


async def test_intercom_simulator_takes_timestamps_as_the_sdk_docs_write_them(
    sim: Simulator,
) -> None:
    populate_reach(sim)
    query = {"field": "waiting_since", "operator": ">", "value": str(INTERCOM_WAITING + 2340)}
    async with ClientSession() as session:
        response = await session.post(
            f"{sim.intercom.url}/conversations/search",
            json={"query": query},
            headers={"Authorization": f"Bearer {sim.intercom.access_token}"},
        )
        assert response.status == 200, await response.text()
        assert (await response.json())["total_count"] == 2  # waiting 39 and 40 minutes


async def test_intercom_team_and_teammate_dialogs_are_part_of_the_inbox(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    populate_reach(sim)
    client = await scrape_client(intercom_config(sim))
    samples = await get_metrics(client)
    assert part_of(samples, "intercom") == {"inbox": "", "billing": "inbox", "alice": "inbox"}


def test_intercom_two_teams_never_overlap_a_team_and_a_teammate_may(sim: Simulator) -> None:
    dialogs = (
        '      - name: other-team\n        team_id: "42"\n'
        '      - name: other-admin\n        admin_id: "43"\n'
    )
    text = intercom_config(sim, dialogs)
    account = parse_config(text, "test.yaml").accounts[0]
    assert isinstance(account, intercom.IntercomAccount)
    found = intercom.PROVIDER.coverage(account)
    assert dict(found.part_of) == {}
    assert {frozenset(pair) for pair in found.overlapping} == {
        frozenset({"billing", "alice"}),
        frozenset({"billing", "other-admin"}),
        frozenset({"other-team", "alice"}),
        frozenset({"other-team", "other-admin"}),
    }


# --------------------------------------------------------------------------------------------
# IMKit


async def test_imkit_tagged_dialogs_are_part_of_the_untagged_one(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    client = await scrape_client(config_yaml(sim))
    samples = await get_metrics(client)
    assert part_of(samples, "imkit") == {"all": "", "work": "all", "work-project": "all"}


def test_imkit_tagged_dialogs_overlap_without_an_untagged_one(sim: Simulator) -> None:
    text = config_yaml(sim).replace("      - name: all\n        room_tags: [work]", "", 1)
    text = text.replace("      - name: all\n      - name: work\n", "      - name: work\n", 1)
    account = next(a for a in parse_config(text, "test.yaml").accounts if a.provider == "imkit")
    assert isinstance(account, imkit.IMKitAccount)
    found = imkit.PROVIDER.coverage(account)
    assert dict(found.part_of) == {}
    assert found.overlapping == (("work", "work-project"),)


# --------------------------------------------------------------------------------------------
# The demo


async def test_demo_shows_crisp_and_intercom_queues_with_names(
    scrape_client: ScrapeClient,
) -> None:
    demo = Simulator()
    await demo.start()
    try:
        demo.populate_demo()
        client = await scrape_client(demo.demo_config_yaml())
        crisp, intercom_ = (
            {"provider": "crisp", "account": "demo-crisp"},
            {"provider": "intercom", "account": "demo-intercom"},
        )

        async def named() -> Samples | None:
            samples = await get_metrics(client)
            dialogs = ((crisp, "backlog-by-inbox"), (crisp, "backlog-by-operator"))
            ready = all(group_names(samples, a, d) for a, d in dialogs)
            return samples if ready and group_names(samples, intercom_, "inbox-by-team") else None

        samples = await eventually(named, "the demo's queues with names")
        for account, dialog, metric in (
            (crisp, "backlog-by-inbox", "messages"),
            (crisp, "backlog-by-operator", "messages"),
            (intercom_, "inbox-by-team", "conversations"),
        ):
            split = groups(samples, f"chat_unread_group_{metric}", account, dialog)
            assert "unassigned" in split
            assert len(split) == 3
            assert sum(split.values()) == value(
                samples, f"chat_unread_{metric}", **account, dialog=dialog
            )
        assert set(group_names(samples, crisp, "backlog-by-inbox").values()) == {"Support", "Sales"}
        assert set(group_names(samples, crisp, "backlog-by-operator").values()) == {
            "Ada Lovelace",
            "Grace Hopper",
        }
        assert set(group_names(samples, intercom_, "inbox-by-team").values()) == {
            "Billing",
            "Onboarding",
        }
    finally:
        await demo.stop()


# --------------------------------------------------------------------------------------------
# Random worlds: in every refresh the groups add up to their dialog, and the dialog to the
# simulator's own state


def random_crisp_world(sim: Simulator, rng: random.Random) -> dict[str, Any]:
    """A new website of random conversations; returns what the backlog must show."""
    inboxes = [None, *(f"inbox-{i}" for i in range(6))]
    operators = [None, *(f"operator-{i}" for i in range(5))]
    website = {
        f"session_{i:04d}": CrispConversation(
            unread_operator=rng.choice((0, 0, 1, 2, 3)),
            unread_visitor=rng.choice((0, 1)),
            resolved=rng.random() < 0.1,
            waiting_since_ms=rng.choice((0, rng.randrange(1, 10**12))),
            inbox_id=rng.choice(inboxes),
            operator_id=rng.choice(operators),
        )
        for i in range(rng.randrange(0, 131))
    }
    sim.crisp.websites[WEBSITE] = website
    waiting = [c for c in website.values() if c.unread_operator and not c.resolved]
    by_operator: dict[str, float] = {}
    for c in waiting:
        key = c.operator_id or "unassigned"
        by_operator[key] = by_operator.get(key, 0) + c.unread_operator
    times = [c.waiting_since_ms / 1000 for c in waiting if c.waiting_since_ms]
    return {
        "messages": sum(c.unread_operator for c in waiting),
        "conversations": len(waiting),
        "oldest": min(times) if times else None,
        "by-operator": by_operator,
    }


@pytest.mark.parametrize("cap", [None, 20])
async def test_crisp_queues_add_up_in_every_refresh_of_random_worlds(
    sim: Simulator, scrape_client: ScrapeClient, cap: int | None
) -> None:
    sim.crisp.page_size_cap = cap
    dialogs = (
        "      - name: by-inbox\n        group_by: inbox\n        max_groups: 3\n"
        "      - name: by-operator\n        group_by: operator\n        max_groups: 1000\n"
    )
    client = await scrape_client(crisp_config(sim, dialogs))
    rng = random.Random(14)
    for _ in range(25):
        expected = random_crisp_world(sim, rng)
        samples = await get_metrics(client)
        for dialog in ("backlog", "by-inbox", "by-operator"):
            labels = {**CRISP, "dialog": dialog}
            assert value(samples, "chat_unread_messages", **labels) == expected["messages"]
            assert (
                value(samples, "chat_unread_conversations", **labels) == (expected["conversations"])
            )
            oldest = value(samples, "chat_unread_oldest_unread_timestamp_seconds", **labels)
            assert oldest == expected["oldest"]
        split = groups(samples, "chat_unread_group_messages", CRISP, "by-inbox")
        assert len(split) <= 3
        assert sum(split.values()) == expected["messages"]
        assert (
            groups(samples, "chat_unread_group_messages", CRISP, "by-operator")
            == (expected["by-operator"])
        )


def random_intercom_world(sim: Simulator, rng: random.Random) -> dict[str, Any]:
    """Random conversations, some not waiting, assignees null, "0" or one of a few."""
    teams = [None, "0", *(str(5_000 + i) for i in range(5))]
    admins = [None, 0, *(900 + i for i in range(4))]
    sim.intercom.conversations = {
        str(10_000 + i): IntercomConversation(
            waiting_since=rng.choice((None, rng.randrange(1, 2 * 10**9))),
            state=rng.choice(("open", "open", "open", "closed", "snoozed")),
            team_assignee_id=rng.choice(teams),
            admin_assignee_id=rng.choice(admins),
        )
        for i in range(rng.randrange(0, 400))
    }
    sim.intercom.honour_sort = rng.random() < 0.5
    waiting = [
        c for c in sim.intercom.conversations.values() if c.state == "open" and c.waiting_since
    ]
    by_teammate: dict[str, float] = {}
    for c in waiting:
        key = str(c.admin_assignee_id) if c.admin_assignee_id else "unassigned"
        by_teammate[key] = by_teammate.get(key, 0) + 1
    return {
        "conversations": len(waiting),
        "oldest": min((float(c.waiting_since or 0) for c in waiting), default=None),
        "by-teammate": by_teammate,
        "pages": max(1, -(-len(waiting) // 150)),
    }


async def test_intercom_queues_add_up_in_every_refresh_of_random_worlds(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    dialogs = (
        "      - name: inbox\n        group_by: team\n        max_groups: 3\n"
        "      - name: by-teammate\n        group_by: teammate\n        max_groups: 1000\n"
    )
    client = await scrape_client(intercom_config(sim, dialogs))
    rng = random.Random(15)
    for _ in range(25):
        expected = random_intercom_world(sim, rng)
        before = len(sim.intercom.calls("/conversations/search"))
        samples = await get_metrics(client)
        for dialog in ("inbox", "by-teammate"):
            labels = {**INTERCOM, "dialog": dialog}
            assert (
                value(samples, "chat_unread_conversations", **labels) == (expected["conversations"])
            )
            oldest = value(samples, "chat_unread_oldest_unread_timestamp_seconds", **labels)
            assert oldest == expected["oldest"]
        split = groups(samples, "chat_unread_group_conversations", INTERCOM, "inbox")
        assert len(split) <= 3
        assert sum(split.values()) == expected["conversations"]
        assert (
            groups(samples, "chat_unread_group_conversations", INTERCOM, "by-teammate")
            == (expected["by-teammate"])
        )
        # one pass over the pages serves every dialog of the account
        searches = len(sim.intercom.calls("/conversations/search")) - before
        assert searches == expected["pages"]
