"""Sendbird against its official Platform SDK for JavaScript (npm sendbird-platform-sdk).

The exporter's ``unread_item_count`` request in each channel scope, with and without custom
types, must equal the SDK's ``viewNumberOfUnreadItems`` (up to the allow-list: the SDK's
``custom_type`` against the documented ``custom_types``), its ``my_group_channels`` page for
``group_by: channel`` the SDK's ``listMyGroupChannels``, and the SDK must read the simulator's
counts, channel pages, error envelopes and rate limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import pytest

from exporter.simulator import Simulator
from tests.conformance.allowlist import ALLOW_LIST, SENDBIRD_JS
from tests.conformance.harness import (
    Comparison,
    NodeCall,
    Recorded,
    Recorder,
    assert_conformant,
    assert_no_stale_entry,
    by_case,
    collected,
    only,
    probe_each,
    run_node,
    setting,
    sole,
)
from tests.support import populate

USER = "agent-42"
PATH = f"/v3/users/{USER}/unread_item_count"
TYPES = ("support", "sales")
# The exporter's channel scopes (``channels:``) with populate()'s counts for agent-42 in each:
# (unread messages, unread mentions, invitations).
SCOPES = {"all": (11, 3, 1), "super_group": (2, 2, 0), "non_super_group": (9, 1, 1)}


def item_keys(scope: str) -> str:
    """A scope's three keys, as the document lists them for unread_item_count."""
    prefix = "group_channel" if scope == "all" else f"{scope}_channel"
    return f"{prefix}_unread_message_count,{prefix}_unread_mention_count,{prefix}_invitation_count"


# case -> (scope, custom types); the exporter account of a case has the case's name.
CASES = {
    f"unread-{scope}{'-types' if types else ''}": (scope, types)
    for scope in SCOPES
    for types in ((), TYPES)
}
# ``group_by: channel`` cases: scope and custom types, as above, and the SDK's options for the
# same first page of my_group_channels.
CHANNELS = f"/v3/users/{USER}/my_group_channels"
SUPER_MODE = {"all": "all", "super_group": "super", "non_super_group": "nonsuper"}
CHANNEL_CASES = {
    "channels-all": ("all", ()),
    "channels-non_super_group-types": ("non_super_group", TYPES),
}
# Error cases: the SDK call's arguments, and the body's (code) the SDK must surface.
ERRORS: dict[str, tuple[dict[str, Any], int]] = {
    "error-bad-token": ({"token": "wrong-token"}, 400401),
    "error-unknown-user": ({"userId": "nobody"}, 400201),
    "error-no-item-keys": ({"itemKeys": None}, 400151),
    "error-unknown-route": ({"call": "viewNumberOfUnreadMessages"}, 400201),
    "rate-limit": ({}, 500910),
}


def exporter_config(sim: Simulator, base: str) -> str:
    accounts = ""
    for case, (scope, types) in {**CASES, **CHANNEL_CASES}.items():
        grouped = "\n        group_by: channel" if case in CHANNEL_CASES else ""
        accounts += f"""\
  - name: {case}
    provider: sendbird
    application_id: 2D7B4CDB-932F-4082-9B09-A1153792DC8D
    base_url: {base}
    api_token: {sim.sendbird.api_token}
    dialogs:
      - name: {USER}
        user_id: {USER}
        channels: {scope}
        custom_types: [{", ".join(types)}]{grouped}
"""
    return "accounts:\n" + accounts


@dataclass(frozen=True)
class SendbirdRun:
    exporter: dict[str, list[Recorded]]
    sdk: dict[str, list[Recorded]]
    outcomes: dict[str, Any]


def sdk_calls(sim: Simulator, recorder: Recorder) -> list[NodeCall]:
    def call(case: str, **spec: Any) -> NodeCall:
        args: dict[str, Any] = {
            "base": recorder.case_url(case),
            "token": sim.sendbird.api_token,
            "userId": USER,
            "itemKeys": item_keys("all"),
            **spec,
        }
        return NodeCall(case, "sendbird", args.pop("call", "viewNumberOfUnreadItems"), args)

    calls = [
        call(case, itemKeys=item_keys(scope), **({"customType": ",".join(types)} if types else {}))
        for case, (scope, types) in CASES.items()
    ]
    for case, (scope, types) in CHANNEL_CASES.items():
        opts = {
            "unreadFilter": "unread_message",
            "memberStateFilter": "joined_only",
            "superMode": SUPER_MODE[scope],
            "limit": 100,
            **({"customTypes": ",".join(types)} if types else {}),
        }
        calls.append(call(case, call="listMyGroupChannels", opts=opts))
    return calls + [call(case, **spec) for case, (spec, _) in ERRORS.items()]


async def collect(node: str, sim: Simulator, recorder: Recorder) -> SendbirdRun:
    recorder.during["rate-limit"] = partial(setting, sim.sendbird, rate_limit_per_second=0)
    exporter = await probe_each(
        exporter_config(sim, recorder.url), [*CASES, *CHANNEL_CASES], recorder
    )
    outcomes = await run_node(node, sdk_calls(sim, recorder), recorder)
    return SendbirdRun(exporter, by_case(recorder.take()), outcomes)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> SendbirdRun:
    return collected(tmp_path_factory, "sendbird", populate, collect)


def comparisons(run: SendbirdRun) -> dict[str, Comparison]:
    return {
        case: Comparison(
            case,
            SENDBIRD_JS,
            sole(run.sdk[case]),
            only(run.exporter[case], "GET", CHANNELS if case in CHANNEL_CASES else PATH),
        )
        for case in [*CASES, *CHANNEL_CASES]
    }


@pytest.mark.parametrize("case", [*CASES, *CHANNEL_CASES])
def test_exporter_request_is_the_sdks(run: SendbirdRun, case: str) -> None:
    assert_conformant(comparisons(run)[case], ALLOW_LIST)


def test_no_allow_list_entry_is_stale(run: SendbirdRun) -> None:
    assert_no_stale_entry(comparisons(run), ALLOW_LIST)


@pytest.mark.parametrize("scope", SCOPES)
def test_sdk_reads_the_unread_items(run: SendbirdRun, scope: str) -> None:
    keys = item_keys(scope).split(",")
    outcome = run.outcomes[f"unread-{scope}"]
    assert "value" in outcome, outcome
    assert outcome["value"] == dict(zip(keys, SCOPES[scope], strict=True))


@pytest.mark.parametrize("scope", SCOPES)
def test_sdk_custom_type_is_not_the_documented_filter(run: SendbirdRun, scope: str) -> None:
    """The SDK filters with ``custom_type``; the simulator, like the document, knows only
    ``custom_types``, so the SDK's filter changes nothing (the exporter sends the plural)."""
    filtered = run.outcomes[f"unread-{scope}-types"]
    assert "value" in filtered, filtered
    assert filtered == run.outcomes[f"unread-{scope}"]


def test_sdk_reads_a_page_of_channels(run: SendbirdRun) -> None:
    """populate()'s agent-42 has three joined channels with unread messages, two of them
    non-super support channels; the last page's ``next`` is empty."""
    every = run.outcomes["channels-all"]["value"]
    assert every["next"] == ""
    assert sorted(
        (c["unread_message_count"], c["unread_mention_count"]) for c in every["channels"]
    ) == [(2, 2), (3, 0), (6, 1)]
    support = run.outcomes["channels-non_super_group-types"]["value"]["channels"]
    assert [(c["channel_url"], c["unread_message_count"]) for c in support] == [
        ("sendbird_group_channel_0", 6),
        ("sendbird_group_channel_2", 3),
    ]


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_sdk_reads_the_error_envelope(run: SendbirdRun, case: str) -> None:
    error = run.outcomes[case].get("error")
    assert error is not None, run.outcomes[case]
    assert error["body"]["error"] is True
    assert error["body"]["code"] == ERRORS[case][1]
    if case == "rate-limit":
        assert error["status"] == 429
    else:
        assert 400 <= error["status"] < 500


def test_sdk_sees_the_rate_limit_headers(run: SendbirdRun) -> None:
    headers = run.outcomes["rate-limit"]["error"]["headers"]
    assert headers["x-ratelimit-limit"] == "0;w=1"
    assert headers["x-ratelimit-remaining"] == "0"
    assert headers["x-ratelimit-reset"].isdigit()
