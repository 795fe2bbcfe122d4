"""The Matrix provider against the simulated homeserver: requests, incremental sync, failures.

tests/test_matrix_synapse.py checks the same values against a real Synapse; here the simulator
lets each case be set up exactly (a refused since token, a bad count, a 429 without headers).
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import parse_qs

import aiohttp
import pytest

from exporter.cli import check_config
from exporter.configuration.loading import ConfigError, parse_config
from exporter.simulator import Fault, MatrixRoom, SeenRequest, Simulator
from tests.support import (
    MATRIX_ALIAS,
    MATRIX_ROOMS,
    MATRIX_TOKEN,
    FakeClock,
    Samples,
    ScrapeClient,
    dialog_values,
    errors_of,
    get_metrics,
    matrix_yaml,
    value,
)

SYNC = "/_matrix/client/v3/sync"


def config(sim: Simulator) -> str:
    return "accounts:\n" + matrix_yaml(sim)


def query(request: SeenRequest) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(request.query_string).items()}


def messages(samples: Samples) -> dict[str, float]:
    return dialog_values(samples, "chat_unread_messages", "matrix")


async def test_values_from_one_sync_and_one_alias_lookup(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    client = await scrape_client(config(sim))
    samples = await get_metrics(client)

    assert messages(samples) == {"all": 8.0, "support": 5.0, "sales": 3.0}
    assert dialog_values(samples, "chat_unread_mentions", "matrix") == {
        "all": 2.0,
        "support": 2.0,
        "sales": 0.0,
    }
    assert dialog_values(samples, "chat_unread_conversations", "matrix") == {"all": 2.0}
    assert [r.path for r in sim.matrix.requests] == [
        SYNC,
        "/_matrix/client/v3/directory/room/#support:example.org",
    ]
    for request in sim.matrix.requests:
        assert request.headers["Authorization"] == f"Bearer {MATRIX_TOKEN}"


async def test_sync_asks_for_counts_only_without_waiting_or_presence(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    client = await scrape_client(config(sim))
    await get_metrics(client)

    params = query(sim.matrix.calls(SYNC)[0])
    assert params.keys() == {"timeout", "set_presence", "filter"}  # a full sync: no since
    assert params["timeout"] == "0"
    assert params["set_presence"] == "offline"
    sync_filter = json.loads(params["filter"])
    assert sync_filter["event_fields"] == [
        "type",
        "content.name",
        "content.alias",
        "content.replacement_room",
        "content.global.override",
    ]
    assert sync_filter["presence"] == {"not_types": ["*"]}
    assert sync_filter["account_data"] == {"types": ["m.push_rules"]}
    room = sync_filter["room"]
    assert room["timeline"] == {"limit": 1, "unread_thread_notifications": True}
    assert room["state"] == {"types": ["m.room.name", "m.room.canonical_alias", "m.room.tombstone"]}
    # A full sync lists every room without receipts (their size grows with every member's);
    # an incremental one needs them to see a room whose count a receipt lowered.
    assert room["ephemeral"] == {"not_types": ["*"]}
    assert room["account_data"] == {"not_types": ["*"]}
    [nonce] = room["not_rooms"]
    assert nonce.startswith("!")
    assert nonce.endswith(":chat-unread-exporter.invalid")


async def test_later_syncs_are_incremental_and_never_repeat_a_request(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    client = await scrape_client(config(sim))
    await get_metrics(client)
    rooms = sim.matrix.users[MATRIX_TOKEN]
    rooms[MATRIX_ROOMS[1]].notifications = 7  # only this room changes
    second = await get_metrics(client)
    rooms[MATRIX_ROOMS[1]].notifications = 0  # e.g. a read receipt
    third = await get_metrics(client)

    # The simulator answers only the changed room; the others keep their counts.
    assert messages(second) == {"all": 12.0, "support": 5.0, "sales": 7.0}
    assert messages(third) == {"all": 5.0, "support": 5.0, "sales": 0.0}
    assert dialog_values(third, "chat_unread_conversations", "matrix") == {"all": 1.0}
    syncs = [query(r) for r in sim.matrix.calls(SYNC)]
    assert len(syncs) == 3
    assert len(sim.matrix.calls("/directory/")) == 1  # the alias is looked up once
    assert "since" not in syncs[0]
    assert syncs[1]["since"] != syncs[2]["since"]
    assert len({s["filter"] for s in syncs}) == 3  # no request repeats an earlier cache key
    assert json.loads(syncs[1]["filter"])["room"]["ephemeral"] == {"types": ["m.receipt"]}


async def test_left_room_drops_out(sim: Simulator, scrape_client: ScrapeClient) -> None:
    client = await scrape_client(config(sim))
    await get_metrics(client)
    del sim.matrix.users[MATRIX_TOKEN][MATRIX_ROOMS[1]]
    samples = await get_metrics(client)

    assert messages(samples) == {"all": 5.0, "support": 5.0}
    assert dialog_values(samples, "chat_unread_up", "matrix") == {
        "all": 1.0,
        "support": 1.0,
        "sales": 0.0,
    }
    assert errors_of(samples, "matrix", "not_found") == 1.0


async def test_refused_since_token_falls_back_to_a_full_sync(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    client = await scrape_client(config(sim))
    await get_metrics(client)
    sim.matrix.forget_tokens()
    sim.matrix.users[MATRIX_TOKEN][MATRIX_ROOMS[0]] = MatrixRoom(1, 1)
    samples = await get_metrics(client)

    assert messages(samples) == {"all": 4.0, "support": 1.0, "sales": 3.0}
    assert set(dialog_values(samples, "chat_unread_up", "matrix").values()) == {1.0}
    syncs = [query(r) for r in sim.matrix.calls(SYNC)]
    assert ["since" in s for s in syncs] == [False, True, False]
    assert errors_of(samples, "matrix", "http_4xx") == 0.0  # recovered within the refresh


async def test_answer_with_a_bad_count_is_not_applied(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    client = await scrape_client(config(sim))
    await get_metrics(client)
    first_since = query(sim.matrix.calls(SYNC)[0])  # the full sync has none
    assert "since" not in first_since
    bad = {"notification_count": "3", "highlight_count": 0}
    sim.matrix.fault = Fault.answer(
        200,
        {"next_batch": "s999", "rooms": {"join": {MATRIX_ROOMS[0]: {"unread_notifications": bad}}}},
    )
    failed = await get_metrics(client)
    sim.matrix.fault = None
    recovered = await get_metrics(client)

    assert set(dialog_values(failed, "chat_unread_up", "matrix").values()) == {0.0}
    assert messages(recovered) == {"all": 8.0, "support": 5.0, "sales": 3.0}
    sinces = [query(r).get("since") for r in sim.matrix.calls(SYNC)]
    assert sinces[1] == sinces[2] != "s999"  # the refused answer's token was not taken


async def test_counts_left_out_of_an_incremental_answer_keep_their_value(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    client = await scrape_client(config(sim))
    await get_metrics(client)
    # Conduit's way: a room that appears (for someone's receipt) without counts that did not
    # change, and one with only its highlight count.
    join = {
        MATRIX_ROOMS[0]: {"ephemeral": {"events": []}},
        MATRIX_ROOMS[1]: {"unread_notifications": {"highlight_count": 1}},
    }
    sim.matrix.fault = Fault.answer(200, {"next_batch": "s77", "rooms": {"join": join}})
    samples = await get_metrics(client)

    assert messages(samples) == {"all": 8.0, "support": 5.0, "sales": 3.0}
    assert dialog_values(samples, "chat_unread_mentions", "matrix") == {
        "all": 3.0,
        "support": 2.0,
        "sales": 1.0,
    }


async def test_new_room_without_counts_is_a_bad_response(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    client = await scrape_client(config(sim))
    await get_metrics(client)
    join = {"!new:example.org": {"unread_notifications": {"highlight_count": 0}}}
    sim.matrix.fault = Fault.answer(200, {"next_batch": "s78", "rooms": {"join": join}})
    samples = await get_metrics(client)
    assert errors_of(samples, "matrix", "bad_response") == 3.0


async def test_unknown_alias_fails_only_its_dialog(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    del sim.matrix.aliases[MATRIX_ALIAS]
    client = await scrape_client(config(sim))
    samples = await get_metrics(client)

    assert dialog_values(samples, "chat_unread_up", "matrix") == {
        "all": 1.0,
        "support": 0.0,
        "sales": 1.0,
    }
    assert errors_of(samples, "matrix", "not_found") == 1.0


async def test_unknown_token_is_auth(sim: Simulator, scrape_client: ScrapeClient) -> None:
    client = await scrape_client(config(sim).replace(MATRIX_TOKEN, "syt_wrong"))
    samples = await get_metrics(client)
    assert errors_of(samples, "matrix", "auth") == 3.0
    assert messages(samples) == {}


async def test_limit_exceeded_backs_off_for_retry_after_ms(
    sim: Simulator, scrape_client: ScrapeClient, clock: FakeClock
) -> None:
    client = await scrape_client(config(sim))
    sim.matrix.fault = Fault.answer(
        429, {"errcode": "M_LIMIT_EXCEEDED", "error": "Too Many Requests", "retry_after_ms": 4500}
    )
    first = await get_metrics(client)
    assert errors_of(first, "matrix", "rate_limited") == 3.0
    reset = value(
        first,
        "chat_unread_rate_limit_reset_timestamp_seconds",
        provider="matrix",
        account="team-matrix",
    )
    assert reset == clock.now + 4.5
    sim.matrix.fault = None
    calls = len(sim.matrix.requests)

    clock.advance(4)
    await get_metrics(client)
    assert len(sim.matrix.requests) == calls  # still holding off
    clock.advance(1)
    last = await get_metrics(client)
    assert messages(last) == {"all": 8.0, "support": 5.0, "sales": 3.0}


async def test_simulator_answers_unknown_routes_like_synapse(sim: Simulator) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(sim.matrix.url + "/_matrix/client/v3/nothing") as response,
    ):
        assert response.status == 404
        assert await response.json() == {
            "errcode": "M_UNRECOGNIZED",
            "error": "Unrecognized request",
        }


@pytest.mark.parametrize(
    ("replace", "by", "problem"),
    [
        ("    base_url: {url}\n", "", "accounts[0].base_url: required field is missing"),
        (
            f'room: "{MATRIX_ALIAS}"',
            "room: support",
            "accounts[0].dialogs[1].room: must be a room id",
        ),
        (
            f'room: "{MATRIX_ALIAS}"',
            'room: "#support"',
            "accounts[0].dialogs[1].room: must be a room id",
        ),
    ],
)
def test_config_refuses_missing_homeserver_and_bad_rooms(
    sim: Simulator, replace: str, by: str, problem: str
) -> None:
    text = config(sim).replace(replace.format(url=sim.matrix.url), by)
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "matrix.yaml")
    [reported] = caught.value.problems
    assert reported.startswith("matrix.yaml:")
    assert problem in reported


def grouped_config(sim: Simulator, max_groups: int = 20) -> str:
    return config(sim).replace(
        "      - name: all\n",
        f"      - name: all\n        group_by: room\n        max_groups: {max_groups}\n",
    )


def groups(samples: Samples, metric: str) -> dict[str, float]:
    return {
        dict(labels)["group"]: number
        for (name, labels), number in samples.items()
        if name == metric and dict(labels).get("dialog") == "all"
    }


async def test_all_rooms_split_by_room_with_names_from_the_same_sync(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    rooms = sim.matrix.users[MATRIX_TOKEN]
    rooms[MATRIX_ROOMS[0]].name = "Support"
    client = await scrape_client(grouped_config(sim))
    first = await get_metrics(client)
    rooms[MATRIX_ROOMS[1]].notifications = 7
    rooms[MATRIX_ROOMS[0]].name = "Support desk"  # a rename arrives in the incremental sync
    second = await get_metrics(client)

    assert groups(first, "chat_unread_group_messages") == {
        MATRIX_ROOMS[0]: 5.0,
        MATRIX_ROOMS[1]: 3.0,
    }
    assert groups(second, "chat_unread_group_messages") == {
        MATRIX_ROOMS[0]: 5.0,
        MATRIX_ROOMS[1]: 7.0,
    }
    assert sum(groups(second, "chat_unread_group_messages").values()) == messages(second)["all"]
    assert groups(second, "chat_unread_group_mentions") == {
        MATRIX_ROOMS[0]: 2.0,
        MATRIX_ROOMS[1]: 0.0,
    }
    names = {
        dict(labels)["group"]: dict(labels)["name"]
        for (name, labels), _ in second.items()
        if name == "chat_unread_group_info"
    }
    assert names == {MATRIX_ROOMS[0]: "Support desk"}
    # Zero extra requests: one sync per scrape and the alias lookup once, as without group_by.
    assert [r.path for r in sim.matrix.requests].count(SYNC) == 2
    assert len(sim.matrix.requests) == 3
    part_of = {
        dict(labels)["dialog"]: dict(labels)["part_of"]
        for (name, labels), _ in second.items()
        if name == "chat_unread_dialog_info" and dict(labels)["provider"] == "matrix"
    }
    assert part_of == {"all": "", "support": "all", "sales": "all"}


async def test_rooms_beyond_max_groups_are_folded_into_other(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    client = await scrape_client(grouped_config(sim, max_groups=1))
    samples = await get_metrics(client)

    assert groups(samples, "chat_unread_group_messages") == {"other": 8.0}
    assert (
        value(
            samples,
            "chat_unread_groups_folded",
            provider="matrix",
            account="team-matrix",
            dialog="all",
        )
        == 2.0
    )


async def test_a_failed_sync_shows_no_room_groups(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    client = await scrape_client(grouped_config(sim))
    assert groups(await get_metrics(client), "chat_unread_group_messages")
    sim.matrix.fault = Fault.answer(502, {"errcode": "M_UNKNOWN", "error": "Bad gateway"})
    samples = await get_metrics(client)

    assert (
        value(samples, "chat_unread_up", provider="matrix", account="team-matrix", dialog="all")
        == 0.0
    )
    assert groups(samples, "chat_unread_group_messages") == {}


@pytest.mark.parametrize(
    ("dialog", "line", "problem"),
    [
        pytest.param(
            'room: "!a:x"\n        group_by: room', 7, "only to the dialog of all", id="room"
        ),
        pytest.param(
            "group_by: team", 8, "not a dimension this provider splits by (room)", id="team"
        ),
        pytest.param(
            "group_by: room\n        max_groups: 1001", 9, "must be at most 1000", id="max"
        ),
        pytest.param("max_groups: 5", 7, "max_groups applies only", id="no-group-by"),
    ],
)
def test_a_grouping_matrix_cannot_serve_is_refused_at_its_line(
    dialog: str, line: int, problem: str
) -> None:
    text = f"""accounts:
  - name: m
    provider: matrix
    base_url: https://matrix.example.org
    access_token: t
    dialogs:
      - name: d
        {dialog}
"""
    with pytest.raises(ConfigError) as refused:
        parse_config(text, "config.yaml")
    [message] = refused.value.problems
    assert message.startswith(f"config.yaml:{line}: accounts[0].dialogs[0]")
    assert problem in message


def test_config_check_warns_of_rooms_that_may_be_one_without_a_whole(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "config.yaml"
    rooms = """accounts:
  - name: m
    provider: matrix
    base_url: https://matrix.example.org
    access_token: t
    dialogs:
      - name: support
        room: "#support:example.org"
      - name: desk
        room: "!desk:example.org"
      - name: sales
        room: "!sales:example.org"
"""
    path.write_text(rooms)
    assert check_config(str(path)) == 0
    warnings = capsys.readouterr().err.splitlines()
    # An alias may name either room; two room ids are two rooms.
    assert [w.split(":")[1].strip() for w in warnings] == [
        "account m",
        "account m",
    ]
    assert "dialogs support and desk can count the same unread items" in warnings[0]
    assert "dialogs support and sales" in warnings[1]
    path.write_text(rooms + "      - name: all\n")
    assert check_config(str(path)) == 0
    assert capsys.readouterr().err == ""


# Issue 15: the values a person's client (Element) shows, case by case.


async def test_thread_replies_are_left_out_of_the_room_count_as_element_does(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    sim.matrix.users[MATRIX_TOKEN][MATRIX_ROOMS[1]].thread_notifications = 4
    samples = await get_metrics(await scrape_client(config(sim)))
    assert messages(samples) == {"all": 8.0, "support": 5.0, "sales": 3.0}


async def test_a_muted_room_counts_zero_as_element_shows_it(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    client = await scrape_client(config(sim))
    assert messages(await get_metrics(client))["sales"] == 3.0
    sim.matrix.muted[MATRIX_TOKEN] = {MATRIX_ROOMS[1]}  # muted after the messages arrived
    muted = await get_metrics(client)
    assert messages(muted) == {"all": 5.0, "support": 5.0, "sales": 0.0}
    # The mute holds in later syncs that do not carry the push rules again ...
    sim.matrix.users[MATRIX_TOKEN][MATRIX_ROOMS[0]].notifications = 6
    assert messages(await get_metrics(client)) == {"all": 6.0, "support": 6.0, "sales": 0.0}
    # ... until the rules change again.
    sim.matrix.muted[MATRIX_TOKEN] = set()
    assert messages(await get_metrics(client)) == {"all": 9.0, "support": 6.0, "sales": 3.0}


async def test_invites_are_counted_as_invitations_of_all_rooms(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    sim.matrix.invites[MATRIX_TOKEN] = {"!new:example.org", "!other:example.org"}
    client = await scrape_client(config(sim))
    samples = await get_metrics(client)
    assert dialog_values(samples, "chat_unread_invitations", "matrix") == {"all": 2.0}
    assert messages(samples)["all"] == 8.0  # an invite is no unread message


async def test_an_upgraded_room_is_shown_through_its_successor(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    rooms = sim.matrix.users[MATRIX_TOKEN]
    rooms["!support-v2:example.org"] = MatrixRoom(notifications=1)
    rooms[MATRIX_ROOMS[0]].replaced_by = "!support-v2:example.org"
    samples = await get_metrics(await scrape_client(grouped_config(sim)))
    # The old room's 5 messages are hidden; its 2 highlights count in the successor.
    assert messages(samples) == {"all": 4.0, "support": 0.0, "sales": 3.0}
    assert groups(samples, "chat_unread_group_mentions") == {
        "!support-v2:example.org": 2.0,
        MATRIX_ROOMS[1]: 0.0,
    }


async def test_a_homeserver_restored_from_a_backup_is_followed_by_a_full_sync(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    client = await scrape_client(config(sim))
    for _ in range(12):  # the exporter's since token moves well past the backup's position
        await get_metrics(client)
    sim.matrix.restore_backup()
    sim.matrix.users[MATRIX_TOKEN][MATRIX_ROOMS[1]].notifications = 9
    samples = await get_metrics(client)
    assert messages(samples) == {"all": 14.0, "support": 5.0, "sales": 9.0}
    syncs = [query(r) for r in sim.matrix.calls(SYNC)]
    assert "since" in syncs[-2]  # answered "nothing new" from behind the token ...
    assert "since" not in syncs[-1]  # ... so the same refresh made a full sync


async def test_rooms_beyond_the_bound_fail_the_sync_instead_of_growing_memory(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    client = await scrape_client(config(sim))
    await get_metrics(client)
    join = {
        f"!r{n}:example.org": {
            "unread_notifications": {"notification_count": 0, "highlight_count": 0}
        }
        for n in range(50_001)
    }
    sim.matrix.fault = Fault.answer(200, {"next_batch": "s9999_0_0", "rooms": {"join": join}})
    samples = await get_metrics(client)
    assert (
        value(samples, "chat_unread_up", provider="matrix", account="team-matrix", dialog="all")
        == 0.0
    )
    assert errors_of(samples, "matrix", "bad_response")
