"""Queues of QuickBlox, Sendbird and Stream Chat, over HTTP against the simulators.

A grouped dialog's value and its groups come from the same answers, so they add up in every
refresh: Stream's from the unread answer already read (no extra request), QuickBlox's and
Sendbird's from their paged list endpoints (one request a page). Bad answers (a group listed
twice, junk counts, a 10 KB id) put that dialog ``up 0`` and leave the others alone.
"""

from __future__ import annotations

import random

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from exporter.configuration.loading import ConfigError, parse_config
from exporter.simulator import Fault, SendbirdChannel, Simulator, StreamChannel
from tests.support import (
    QB_DIALOGS,
    QB_USER,
    Samples,
    ScrapeClient,
    get_metrics,
    value,
)

GROUP_METRICS = (
    "chat_unread_group_messages",
    "chat_unread_group_mentions",
    "chat_unread_group_conversations",
)


def groups(samples: Samples, metric: str, provider: str, dialog: str) -> dict[str, float]:
    """{group: value} of one group metric of one dialog."""
    found = {}
    for (name, labels), number in samples.items():
        label = dict(labels)
        if name == metric and label["provider"] == provider and label["dialog"] == dialog:
            found[label["group"]] = number
    return found


def dialog_value(samples: Samples, metric: str, provider: str, dialog: str) -> float | None:
    """One dialog's value, whatever its account."""
    for (name, labels), number in samples.items():
        label = dict(labels)
        if name == metric and label.get("provider") == provider and label["dialog"] == dialog:
            return number
    return None


def assert_sums_hold(samples: Samples, provider: str, dialog: str) -> None:
    """Every count of the dialog equals the sum over its groups (and it has groups)."""
    for metric in GROUP_METRICS:
        parts = groups(samples, metric, provider, dialog)
        whole = dialog_value(samples, metric.replace("_group", ""), provider, dialog)
        assert (whole is None) == (not parts), (metric, whole, parts)
        if whole is not None:
            assert sum(parts.values()) == whole, (metric, whole, parts)


def group_name(samples: Samples, dialog: dict[str, str], group_by: str, group: str) -> str:
    """The ``name`` label of a group's ``chat_unread_group_info``."""
    wanted = {**dialog, "group_by": group_by, "group": group}
    names = [
        dict(labels)["name"]
        for (metric, labels), _ in samples.items()
        if metric == "chat_unread_group_info" and wanted.items() <= dict(labels).items()
    ]
    assert len(names) == 1, names
    return names[0]


Client = TestClient[web.Request, web.Application]


async def failure_of(client: Client, account: str, dialog: str) -> str:
    """What a fresh probe's debug output says of one dialog (``up 0, <reason>: <detail>``)."""
    response = await client.get(f"/probe?account={account}&debug=true")
    prefix = f"  dialog {dialog}: "
    lines = [line for line in (await response.text()).splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, lines
    return lines[0].removeprefix(prefix)


async def assert_refused(
    client: Client, samples: Samples, account: str, dialog: str, detail: str
) -> None:
    """The dialog failed with ``bad_response`` and ``detail``, and no group series is served."""
    assert not any(name.startswith("chat_unread_group") for name, _ in samples)
    failure = await failure_of(client, account, dialog)
    assert failure.startswith("up 0, bad_response: "), failure
    assert detail in failure, failure


def up(samples: Samples, provider: str) -> dict[str, float]:
    return {
        dict(labels)["dialog"]: number
        for (name, labels), number in samples.items()
        if name == "chat_unread_up" and dict(labels)["provider"] == provider
    }


# --------------------------------------------------------------------------------------------
# Stream Chat: the unread answer's own channel list


def stream_yaml(sim: Simulator, max_groups: int = 20) -> str:
    return f"""\
accounts:
  - name: acme-stream
    provider: stream
    base_url: {sim.stream.url}
    api_key: {sim.stream.api_key}
    api_secret: {sim.stream.api_secret}
    dialogs:
      - name: agent-42
        user_id: agent-42
        group_by: channel
        max_groups: {max_groups}
      - name: agent-42-messaging
        user_id: agent-42
        channel_type: messaging
        group_by: channel
      - name: agent-42-plain
        user_id: agent-42
      - name: agent-7
        user_id: agent-7
"""


def stream_users(sim: Simulator) -> None:
    sim.stream.users = {
        "agent-42": [
            StreamChannel("messaging", "support-1", unread=4),
            StreamChannel("messaging", "support-2", unread=3),
            StreamChannel("livestream", "launch", unread=9),
            StreamChannel("team", "ops", unread=0),
        ],
        "agent-7": [StreamChannel("messaging", "support-3", unread=2)],
    }


async def test_stream_splits_by_channel_from_the_answer_already_read(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    stream_users(sim)
    client = await scrape_client(stream_yaml(sim))
    for scrape in range(1, 3):
        samples = await get_metrics(client)
        support = float(sim.stream.users["agent-42"][0].unread)
        assert groups(samples, "chat_unread_group_messages", "stream", "agent-42") == {
            "livestream:launch": 9.0,
            "messaging:support-1": support,
            "messaging:support-2": 3.0,
        }
        assert groups(samples, "chat_unread_group_conversations", "stream", "agent-42") == {
            "livestream:launch": 1.0,
            "messaging:support-1": 1.0,
            "messaging:support-2": 1.0,
        }
        assert groups(samples, "chat_unread_group_messages", "stream", "agent-42-messaging") == {
            "messaging:support-1": support,
            "messaging:support-2": 3.0,
        }
        for dialog in ("agent-42", "agent-42-messaging"):
            assert_sums_hold(samples, "stream", dialog)
        assert dialog_value(samples, "chat_unread_messages", "stream", "agent-42") == 12 + support
        assert not groups(samples, "chat_unread_group_messages", "stream", "agent-42-plain")
        # two users: one batch request a scrape, the same as without group_by
        assert len(sim.stream.requests) == scrape
        assert sim.stream.requests[-1].path == "/unread_batch"
        sim.stream.users["agent-42"][0].unread += 5
    assert value(
        samples,
        "chat_unread_dialog_info",
        provider="stream",
        account="acme-stream",
        dialog="agent-42-messaging",
        part_of="agent-42",
    )


async def test_stream_channels_beyond_the_answers_100_are_other(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    sim.stream.users = {
        "agent-42": [StreamChannel("messaging", f"c{i:03d}", unread=1 + i % 3) for i in range(130)],
        "agent-7": [],
    }
    client = await scrape_client(stream_yaml(sim, max_groups=1000))
    samples = await get_metrics(client)
    messages = groups(samples, "chat_unread_group_messages", "stream", "agent-42")
    # the answer lists the last 100 unread channels; the first 30 are in the totals only
    assert len(messages) == 101
    assert messages["other"] == sum(1 + i % 3 for i in range(30))
    assert messages["messaging:c129"] == 1 + 129 % 3
    assert groups(samples, "chat_unread_group_conversations", "stream", "agent-42")["other"] == 30
    assert_sums_hold(samples, "stream", "agent-42")
    assert_sums_hold(samples, "stream", "agent-42-messaging")


async def test_stream_max_groups_folds_the_smallest_channels(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    stream_users(sim)
    client = await scrape_client(stream_yaml(sim, max_groups=2))
    samples = await get_metrics(client)
    assert groups(samples, "chat_unread_group_messages", "stream", "agent-42") == {
        "livestream:launch": 9.0,
        "other": 7.0,
    }
    assert (
        value(
            samples,
            "chat_unread_groups_folded",
            provider="stream",
            account="acme-stream",
            dialog="agent-42",
        )
        == 2.0
    )


def stream_answer(channels: list[object]) -> dict[str, object]:
    """A one-user unread answer whose channel list is ``channels``; totals of 5 in 1 channel."""
    return {
        "total_unread_count": 5,
        "channels": channels,
        "channel_type": [{"channel_type": "messaging", "channel_count": 1, "unread_count": 5}],
        "threads": [],
    }


@pytest.mark.parametrize(
    ("channels", "detail"),
    [
        (
            [{"channel_id": "messaging:a", "unread_count": 2}] * 2,
            "'messaging:a' appears twice in the answer",
        ),
        ([{"channel_id": "messaging:a", "unread_count": "2"}], "unread_count is str"),
        ([{"channel_id": "messaging:" + "x" * 10_240, "unread_count": 2}], "longer than 256"),
        ([{"channel_id": "messaging:a", "unread_count": 9}], "add up to more than the total"),
        ([{"channel_id": 7, "unread_count": 1}], "channel_id is not a string"),
        ("none", "channels is not a list of objects"),
    ],
    ids=["duplicate", "junk-count", "10kb-id", "more-than-total", "id-not-string", "not-a-list"],
)
async def test_stream_bad_channel_list_fails_only_the_grouped_dialogs(
    sim: Simulator, scrape_client: ScrapeClient, channels: object, detail: str
) -> None:
    sim.stream.users = {"agent-42": []}
    text = stream_yaml(sim).split("      - name: agent-7")[0]
    client = await scrape_client(text)
    sim.stream.fault = Fault.answer(200, stream_answer(channels))  # type: ignore[arg-type]
    samples = await get_metrics(client)
    assert up(samples, "stream") == {
        "agent-42": 0.0,
        "agent-42-messaging": 0.0,
        "agent-42-plain": 1.0,
    }
    assert dialog_value(samples, "chat_unread_messages", "stream", "agent-42-plain") == 5.0
    await assert_refused(client, samples, "acme-stream", "agent-42", detail)


async def test_stream_organisation_without_the_unread_endpoint_is_told_so(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    stream_users(sim)
    sim.stream.unread_enabled = False
    client = await scrape_client(stream_yaml(sim))
    samples = await get_metrics(client)
    assert set(up(samples, "stream").values()) == {0.0}
    response = await client.get("/probe?account=acme-stream&debug=true")
    lines = [line for line in (await response.text()).splitlines() if line.startswith("  dialog")]
    assert len(lines) == 4
    for line in lines:
        assert ": up 0, auth: HTTP 403: " in line, line
        assert "the unread endpoint is not enabled for this Stream organisation" in line, line


# --------------------------------------------------------------------------------------------
# QuickBlox: the user's total split by dialog, from the paged dialog list


def quickblox_yaml(sim: Simulator, max_groups: int = 20) -> str:
    return f"""\
accounts:
  - name: qb-support
    provider: quickblox
    base_url: {sim.quickblox.url}
    api_key: {sim.quickblox.api_key}
    on_behalf_of: {QB_USER}
    dialogs:
      - name: all
      - name: by-dialog
        group_by: dialog
        max_groups: {max_groups}
      - name: escalations
        dialog_id: {QB_DIALOGS[0]}
"""


def qb_dialogs(sim: Simulator, size: int) -> dict[str, int]:
    """``size`` dialogs of the test user, every third one without unread messages."""
    dialogs = {QB_DIALOGS[0]: 4, **{f"dlg{i:04d}": i % 3 for i in range(1, size)}}
    sim.quickblox.unread[QB_USER] = dialogs
    sim.quickblox.dialog_names.update({key: f"Room {key}" for key in dialogs})
    return dialogs


async def test_quickblox_total_split_by_dialog_one_request_a_page(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    dialogs = qb_dialogs(sim, 250)
    client = await scrape_client(quickblox_yaml(sim, max_groups=1000))
    for _ in range(2):
        sim.quickblox.requests.clear()
        samples = await get_metrics(client)
        lists = sim.quickblox.calls("/chat/Dialog.json")
        assert [r.query_string for r in lists] == [
            "limit=100&skip=0",
            "limit=100&skip=100",
            "limit=100&skip=200",
        ]
        assert all(r.headers["Authorization"] == "ApiKey qb-api-key" for r in lists)
        assert all(r.headers["On-Behalf-Of"] == str(QB_USER) for r in lists)
        # the ungrouped total and the id dialog still take one request each
        assert len(sim.quickblox.calls("/chat/Message/unread.json")) == 2
        expected = {key: float(n) for key, n in dialogs.items() if n}
        assert groups(samples, "chat_unread_group_messages", "quickblox", "by-dialog") == expected
        total = dialog_value(samples, "chat_unread_messages", "quickblox", "all")
        assert dialog_value(samples, "chat_unread_messages", "quickblox", "by-dialog") == total
        assert_sums_hold(samples, "quickblox", "by-dialog")
        dialogs["dlg0001"] += 10
    info = {"provider": "quickblox", "account": "qb-support", "dialog": "by-dialog"}
    assert group_name(samples, info, "dialog", "dlg0001") == "Room dlg0001"
    del info["dialog"]
    assert value(samples, "chat_unread_dialog_info", **info, dialog="by-dialog", part_of="all")
    assert value(samples, "chat_unread_dialog_info", **info, dialog="escalations", part_of="all")


async def test_quickblox_pages_count_toward_the_budget_and_request_counters(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    qb_dialogs(sim, 250)
    budget = "    daily_request_budget: 5000\n    dialogs:"
    text = quickblox_yaml(sim).replace("    dialogs:", budget)
    client = await scrape_client(text)
    samples = await get_metrics(client)
    account = {"provider": "quickblox", "account": "qb-support"}
    # 3 pages of the dialog list, the total and the id dialog
    assert value(samples, "chat_unread_daily_requests_spent", **account) == 5.0
    requests = "chat_unread_upstream_requests_total"
    assert value(samples, requests, **account, status_class="2xx") == 5.0


async def test_quickblox_pages_follow_total_entries_when_the_server_serves_fewer(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    dialogs = qb_dialogs(sim, 90)
    sim.quickblox.max_page_size = 40
    client = await scrape_client(quickblox_yaml(sim, max_groups=1000))
    samples = await get_metrics(client)
    assert len(sim.quickblox.calls("/chat/Dialog.json")) == 3
    assert dialog_value(samples, "chat_unread_messages", "quickblox", "by-dialog") == sum(
        dialogs.values()
    )
    assert_sums_hold(samples, "quickblox", "by-dialog")


async def test_quickblox_reserved_ids_and_folding(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    # populate's dialogs: 4, 0, and one whose id is "other"
    client = await scrape_client(quickblox_yaml(sim, max_groups=1))
    samples = await get_metrics(client)
    assert groups(samples, "chat_unread_group_messages", "quickblox", "by-dialog") == {"other": 7.0}
    client = await scrape_client(quickblox_yaml(sim))
    samples = await get_metrics(client)
    assert groups(samples, "chat_unread_group_messages", "quickblox", "by-dialog") == {
        QB_DIALOGS[0]: 4.0,
        "id:other": 3.0,
    }


async def test_quickblox_a_list_that_moves_while_paged_is_refused_then_read_again(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    dialogs = qb_dialogs(sim, 150)
    moved: list[bool] = []

    def new_message_in_the_last_dialog() -> None:
        """After the first page, the last dialog gets a message and moves to the top."""
        if moved:
            return
        moved.append(True)
        last = "dlg0149"
        count = dialogs.pop(last) + 1
        sim.quickblox.unread[QB_USER] = {last: count, **dialogs}

    sim.quickblox.after_page = new_message_in_the_last_dialog
    client = await scrape_client(quickblox_yaml(sim))
    text = await (await client.get("/probe?account=qb-support&debug=true")).text()
    assert (
        "dialog by-dialog: up 0, bad_response: dialog 'dlg0099' listed twice: the list moved"
        " while it was paged"
    ) in text, text
    assert "dialog all: up 1" in text, text
    assert "dialog escalations: up 1" in text, text
    samples = await get_metrics(client)
    assert up(samples, "quickblox")["by-dialog"] == 1.0
    assert_sums_hold(samples, "quickblox", "by-dialog")


async def test_quickblox_a_dialog_deleted_while_paged_is_refused(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    dialogs = qb_dialogs(sim, 150)

    def delete_a_dialog_of_the_first_page() -> None:
        dialogs.pop("dlg0003", None)

    sim.quickblox.after_page = delete_a_dialog_of_the_first_page
    client = await scrape_client(quickblox_yaml(sim))
    text = await (await client.get("/probe?account=qb-support&debug=true")).text()
    assert "by-dialog: up 0, bad_response: the dialog list changed while it was paged" in text
    samples = await get_metrics(client)
    assert up(samples, "quickblox")["by-dialog"] == 1.0
    assert_sums_hold(samples, "quickblox", "by-dialog")


@pytest.mark.parametrize(
    ("items", "detail"),
    [
        ([{"_id": "a", "unread_messages_count": 1}] * 2, "dialog 'a' listed twice"),
        ([{"_id": "a", "unread_messages_count": "1"}], "unread_messages_count is str"),
        ([{"_id": "a", "unread_messages_count": -1}], "unread_messages_count is negative"),
        ([{"_id": "x" * 10_240, "unread_messages_count": 1}], "longer than 256"),
        ([{"_id": "a\nb", "unread_messages_count": 1}], "holds control characters"),
        ([{"_id": 12, "unread_messages_count": 1}], "_id is not a string"),
        ("nothing", "items is not a list of objects"),
    ],
    ids=["duplicate", "junk-count", "negative", "10kb-id", "control", "id-not-string", "items"],
)
async def test_quickblox_bad_dialog_list_fails_only_the_grouped_dialog(
    sim: Simulator, scrape_client: ScrapeClient, items: object, detail: str
) -> None:
    client = await scrape_client(quickblox_yaml(sim))
    body = {"total_entries": 2, "skip": 0, "limit": 100, "items": items}
    sim.quickblox.fault = Fault.answer(200, body, path_contains="Dialog.json")
    samples = await get_metrics(client)
    assert up(samples, "quickblox") == {"all": 1.0, "by-dialog": 0.0, "escalations": 1.0}
    await assert_refused(client, samples, "qb-support", "by-dialog", detail)


async def test_quickblox_null_unread_count_counts_nothing(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    client = await scrape_client(quickblox_yaml(sim))
    items = [
        {"_id": "public", "type": 1, "unread_messages_count": None},
        {"_id": "group", "type": 2, "unread_messages_count": 2},
    ]
    body = {"total_entries": 2, "skip": 0, "limit": 100, "items": items}
    sim.quickblox.fault = Fault.answer(200, body, path_contains="Dialog.json")
    samples = await get_metrics(client)
    assert groups(samples, "chat_unread_group_messages", "quickblox", "by-dialog") == {"group": 2.0}


async def test_quickblox_rate_limited_page_shows_no_groups(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    client = await scrape_client(quickblox_yaml(sim))
    samples = await get_metrics(client)
    assert groups(samples, "chat_unread_group_messages", "quickblox", "by-dialog")
    sim.quickblox.fault = Fault.answer(
        429, {"errors": ["Too Many Requests"]}, path_contains="Dialog.json"
    )
    samples = await get_metrics(client)
    assert up(samples, "quickblox")["by-dialog"] == 0.0
    assert not any(name.startswith("chat_unread_group_messages") for name, _ in samples)
    errors = {"provider": "quickblox", "account": "qb-support", "reason": "rate_limited"}
    assert value(samples, "chat_unread_fetch_errors_total", **errors) == 1.0


# --------------------------------------------------------------------------------------------
# Sendbird: every dialog split by channel, from my_group_channels pages


def sendbird_yaml(sim: Simulator) -> str:
    return f"""\
accounts:
  - name: sb-prod
    provider: sendbird
    application_id: 2D7B4CDB-932F-4082-9B09-A1153792DC8D
    base_url: {sim.sendbird.url}
    api_token: {sim.sendbird.api_token}
    dialogs:
      - name: agent-42
        user_id: agent-42
        group_by: channel
      - name: agent-42-support
        user_id: agent-42
        custom_types: [support]
        channels: non_super_group
        group_by: channel
        max_groups: 1000
      - name: agent-42-support-plain
        user_id: agent-42
        custom_types: [support]
        channels: non_super_group
"""


def sendbird_channels(sim: Simulator, size: int) -> list[SendbirdChannel]:
    """``size`` support channels (every fourth a super group, every fifth unread-free), a
    sales channel and an invitation."""
    channels = [
        SendbirdChannel(
            "support",
            super_group=i % 4 == 0,
            unread=i % 5,
            mentions=1 if i % 5 and i % 2 else 0,
            url=f"support-{i:04d}",
            name=f"Ticket {i}",
        )
        for i in range(size)
    ]
    channels += [
        SendbirdChannel("sales", unread=3, url="sales"),
        SendbirdChannel("support", invited=True, unread=1, url="invite"),
    ]
    sim.sendbird.channels["agent-42"] = channels
    return channels


async def test_sendbird_splits_by_channel_one_request_a_page(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    channels = sendbird_channels(sim, 300)
    sim.sendbird.rate_limit_per_second = 1000
    client = await scrape_client(sendbird_yaml(sim))
    samples = await get_metrics(client)
    plain = {
        metric: dialog_value(samples, metric, "sendbird", "agent-42-support-plain")
        for metric in ("chat_unread_messages", "chat_unread_mentions", "chat_unread_invitations")
    }
    for metric, number in plain.items():
        assert dialog_value(samples, metric, "sendbird", "agent-42-support") == number, metric
    assert plain["chat_unread_invitations"] == 1.0
    expected = {
        c.url: float(c.unread)
        for c in channels
        if c.unread and not c.invited and not c.super_group and c.custom_type == "support"
    }
    assert groups(samples, "chat_unread_group_messages", "sendbird", "agent-42-support") == (
        expected
    )
    for dialog in ("agent-42", "agent-42-support"):
        assert_sums_hold(samples, "sendbird", dialog)
    assert groups(samples, "chat_unread_group_messages", "sendbird", "agent-42")["other"] > 0
    pages = sim.sendbird.calls("/my_group_channels")
    support = [r for r in pages if "custom_types=support" in r.query_string]
    # 180 unread non-super support channels: two pages, the second asked by the first's token
    assert [r.query_string for r in support] == [
        "unread_filter=unread_message&member_state_filter=joined_only&super_mode=nonsuper"
        "&limit=100&custom_types=support",
        "unread_filter=unread_message&member_state_filter=joined_only&super_mode=nonsuper"
        "&limit=100&custom_types=support&token=page-100",
    ]
    assert all(r.headers["Api-Token"] == sim.sendbird.api_token for r in pages)
    assert len(pages) == 2 + 3  # agent-42: 240 unread channels (239 support + sales)
    # each grouped dialog asks unread_item_count for its invitations only
    items = sim.sendbird.calls("/unread_item_count")
    assert sorted(r.query_string for r in items) == [
        "item_keys=group_channel_invitation_count",
        "item_keys=non_super_group_channel_invitation_count&custom_types=support",
        "item_keys=non_super_group_channel_unread_message_count,"
        "non_super_group_channel_unread_mention_count,non_super_group_channel_invitation_count"
        "&custom_types=support",
    ]
    info = {"provider": "sendbird", "account": "sb-prod", "dialog": "agent-42-support"}
    assert group_name(samples, info, "channel", "support-0001") == "Ticket 1"
    del info["dialog"]
    assert value(samples, "chat_unread_dialog_info", **info, dialog="agent-42", part_of="")
    assert value(
        samples, "chat_unread_dialog_info", **info, dialog="agent-42-support", part_of="agent-42"
    )


async def test_sendbird_rate_limited_page_fails_the_dialog_and_shows_no_groups(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    sendbird_channels(sim, 150)
    client = await scrape_client(sendbird_yaml(sim))
    sim.sendbird.fault = Fault.answer(
        429,
        {"error": True, "code": 500910, "message": "Too many requests."},
        path_contains="my_group_channels",
    )
    samples = await get_metrics(client)
    assert up(samples, "sendbird") == {
        "agent-42": 0.0,
        "agent-42-support": 0.0,
        "agent-42-support-plain": 1.0,
    }
    assert not any(name.startswith("chat_unread_group") for name, _ in samples)
    errors = {"provider": "sendbird", "account": "sb-prod", "reason": "rate_limited"}
    assert value(samples, "chat_unread_fetch_errors_total", **errors) == 2.0


def sendbird_page(channels: object, next_token: object = "") -> dict[str, object]:
    return {"channels": channels, "next": next_token, "ts": 1}


def channel(url: object, unread: object = 1, mentions: object = 0) -> dict[str, object]:
    return {"channel_url": url, "unread_message_count": unread, "unread_mention_count": mentions}


@pytest.mark.parametrize(
    ("page", "detail"),
    [
        (sendbird_page([channel("a"), channel("a")]), "'a' appears twice in the answer"),
        (sendbird_page([channel("a", unread=None)]), "unread_message_count is null"),
        (sendbird_page([channel("a", mentions=1.5)]), "unread_mention_count is float"),
        (sendbird_page([channel("a" * 10_240)]), "longer than 256"),
        (sendbird_page([channel(None)]), "channel_url is not a string"),
        (sendbird_page([channel("a")], next_token=5), "next token repeats or is not a string"),
        (sendbird_page({"a": 1}), "channels is not a list of objects"),
    ],
    ids=["duplicate", "null-count", "float", "10kb-id", "no-url", "bad-token", "not-a-list"],
)
async def test_sendbird_bad_channel_page_fails_only_the_grouped_dialogs(
    sim: Simulator, scrape_client: ScrapeClient, page: object, detail: str
) -> None:
    client = await scrape_client(sendbird_yaml(sim))
    sim.sendbird.fault = Fault.answer(200, page, path_contains="my_group_channels")
    samples = await get_metrics(client)
    assert up(samples, "sendbird") == {
        "agent-42": 0.0,
        "agent-42-support": 0.0,
        "agent-42-support-plain": 1.0,
    }
    await assert_refused(client, samples, "sb-prod", "agent-42", detail)


async def test_sendbird_a_repeated_next_token_stops_the_paging(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    client = await scrape_client(sendbird_yaml(sim))
    loop = sendbird_page([], next_token="page-1")
    sim.sendbird.fault = Fault.answer(200, loop, path_contains="my_group_channels")
    samples = await get_metrics(client)
    assert up(samples, "sendbird")["agent-42"] == 0.0
    # per grouped dialog: the first page, and the one its token names; then the loop is seen
    assert len(sim.sendbird.calls("/my_group_channels")) == 4


# --------------------------------------------------------------------------------------------
# Random worlds: under paging and folding the groups add up to the simulators' own truth


@pytest.mark.parametrize("seed", range(6))
async def test_paged_groups_add_up_to_the_truth_in_random_worlds(
    sim: Simulator, scrape_client: ScrapeClient, seed: int
) -> None:
    rng = random.Random(seed)
    size = rng.randint(0, 330)
    dialogs = {QB_DIALOGS[0]: rng.randint(0, 5)}
    dialogs.update({f"r{i}": rng.choice((0, 0, 1, 2, 7)) for i in range(size)})
    sim.quickblox.unread[QB_USER] = dialogs
    sim.quickblox.max_page_size = rng.choice((7, 50, 100))
    sendbird = [
        SendbirdChannel(
            rng.choice(("support", "sales")),
            super_group=rng.random() < 0.3,
            unread=(unread := rng.choice((0, 1, 3, 12))),
            mentions=rng.randint(0, unread),
            invited=rng.random() < 0.1,
        )
        for _ in range(rng.randint(0, 260))
    ]
    sim.sendbird.channels["agent-42"] = sendbird
    max_groups = rng.randint(1, 30)
    text = quickblox_yaml(sim, max_groups) + sendbird_yaml(sim).removeprefix("accounts:\n")
    client = await scrape_client(text)
    samples = await get_metrics(client)
    assert_sums_hold(samples, "quickblox", "by-dialog")
    truth = sum(dialogs.values())
    assert dialog_value(samples, "chat_unread_messages", "quickblox", "by-dialog") == truth
    unread_groups = sum(1 for n in dialogs.values() if n)
    assert len(groups(samples, "chat_unread_group_messages", "quickblox", "by-dialog")) == min(
        unread_groups, max_groups
    )
    pages = len(sim.quickblox.calls("/chat/Dialog.json"))
    assert pages == max(1, -(-len(dialogs) // sim.quickblox.max_page_size))
    support = [
        c
        for c in sendbird
        if c.custom_type == "support" and not c.super_group and not c.invited and c.unread
    ]
    for metric, field in (("messages", "unread"), ("mentions", "mentions")):
        whole = dialog_value(samples, f"chat_unread_{metric}", "sendbird", "agent-42-support")
        assert whole == sum(getattr(c, field) for c in support), metric
    for dialog in ("agent-42", "agent-42-support"):
        assert_sums_hold(samples, "sendbird", dialog)
    assert len(sim.sendbird.calls("/my_group_channels")) == sum(
        max(1, -(-n // 100))
        for n in (
            sum(1 for c in sendbird if c.unread and not c.invited),
            len(support),
        )
    )


# --------------------------------------------------------------------------------------------
# Config: group_by where a dialog cannot take it


@pytest.mark.parametrize(
    ("dialog", "location", "problem"),
    [
        (
            "dialog_id: 5d753421a28f9a2596cb0f98\n        group_by: dialog",
            "conf.yaml:8: accounts[0].dialogs[1]: ",
            "group_by: dialog applies only to the user's total (a dialog without dialog_id)",
        ),
        (
            "group_by: channel",
            "conf.yaml:9: accounts[0].dialogs[1].group_by: ",
            "not a dimension this provider splits by (dialog)",
        ),
        (
            "group_by: dialog\n        max_groups: 1001",
            "conf.yaml:10: accounts[0].dialogs[1].max_groups: ",
            "must be at most 1000",
        ),
        (
            "group_by: dialog\n        max_groups: 0",
            "conf.yaml:10: accounts[0].dialogs[1].max_groups: ",
            "must be at least 1",
        ),
    ],
    ids=["quickblox-with-dialog-id", "quickblox-channel", "max-1001", "max-0"],
)
def test_quickblox_group_by_a_dialog_cannot_take_is_refused_at_its_line(
    dialog: str, location: str, problem: str
) -> None:
    text = (
        "accounts:\n"
        "  - name: qb\n"
        "    provider: quickblox\n"
        "    api_key: k\n"
        "    on_behalf_of: 1\n"
        "    dialogs:\n"
        "      - name: all\n"
        "      - name: bad\n"
        f"        {dialog}\n"
    )
    with pytest.raises(ConfigError) as refused:
        parse_config(text, "conf.yaml")
    message = str(refused.value)
    assert message.startswith(location), message
    assert problem in message, message


@pytest.mark.parametrize("provider", ["stream", "sendbird"])
def test_group_by_dialog_is_not_a_channel_providers_dimension(provider: str) -> None:
    fields = {
        "stream": "    api_key: k\n    api_secret: s\n",
        "sendbird": "    application_id: app\n    api_token: t\n",
    }[provider]
    text = (
        f"accounts:\n  - name: a\n    provider: {provider}\n{fields}    dialogs:\n"
        "      - name: d\n        user_id: u\n        group_by: dialog\n"
    )
    with pytest.raises(ConfigError) as refused:
        parse_config(text, "conf.yaml")
    message = str(refused.value)
    assert message.startswith("conf.yaml:9: accounts[0].dialogs[0].group_by: "), message
    assert "not a dimension this provider splits by (channel)" in message, message


# --------------------------------------------------------------------------------------------
# The demo shows these queues at once


async def test_the_demo_shows_quickblox_sendbird_and_stream_queues(
    scrape_client: ScrapeClient,
) -> None:
    demo = Simulator()
    await demo.start()
    try:
        demo.populate_demo()
        client = await scrape_client(demo.demo_config_yaml())
        for _ in range(2):
            samples = await get_metrics(client)
            assert groups(samples, "chat_unread_group_messages", "quickblox", "by-dialog")
            assert groups(samples, "chat_unread_group_messages", "sendbird", "agent-42-channels")
            assert groups(samples, "chat_unread_group_messages", "stream", "agent-42-channels")
            for provider, dialog in (
                ("quickblox", "by-dialog"),
                ("sendbird", "agent-42-channels"),
                ("stream", "agent-42-channels"),
            ):
                assert_sums_hold(samples, provider, dialog)
            demo.evolve()
        info = {"provider": "quickblox", "account": "demo-quickblox", "dialog": "by-dialog"}
        assert group_name(samples, info, "dialog", "5d753421a28f9a2596cb0f98") == "Escalations"
        sendbird = {"provider": "sendbird", "account": "demo-sendbird"}
        # the user's whole (no filter) now holds the custom-type dialog of the same user
        assert value(
            samples,
            "chat_unread_dialog_info",
            **sendbird,
            dialog="agent-42",
            part_of="agent-42-channels",
        )
    finally:
        await demo.stop()
