"""Crisp against its official clients, crisp-api on npm and on PyPI, in both directions.

The exporter's conversation and conversation-list requests must equal the clients' (up to the
allow-list), and both clients must read the simulator's answers and errors as Crisp's.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import pytest

from exporter.simulator import Fault, Simulator
from tests.conformance.allowlist import ALLOW_LIST, CRISP_NODE, CRISP_PYTHON
from tests.conformance.harness import (
    ClientsRun,
    Comparison,
    NodeCall,
    Recorder,
    assert_conformant,
    assert_no_stale_entry,
    collected,
    only,
    python_client,
    setting,
    sole,
)
from tests.support import VIP, WEBSITE, populate

CONVERSATION = f"/v1/website/{WEBSITE}/conversation/{VIP}"
LIST_FILTERS = {"filter_unread": 1, "filter_not_resolved": 1, "per_page": 50}
# Each comparison case: the exporter account that makes the request, the request, and the
# official Node client's call for the same thing.
CASES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "conversation": ("crisp-conversation", CONVERSATION, {"call": "getConversation"}),
    "conversation-website-tier": (
        "crisp-website-tier",
        CONVERSATION,
        {"call": "getConversation", "tier": "website"},
    ),
    "list-page-1": (
        "crisp-backlog",
        f"/v1/website/{WEBSITE}/conversations/1",
        {"call": "listConversations", "page": 1, "options": LIST_FILTERS},
    ),
    "list-page-2": (
        "crisp-backlog",
        f"/v1/website/{WEBSITE}/conversations/2",
        {"call": "listConversations", "page": 2, "options": LIST_FILTERS},
    ),
}
# The PyPI client's calls for the comparison cases it can make (it has no per_page).
PYTHON_CALLS: dict[str, Callable[[Any], Any]] = {
    "conversation": lambda client: client.website.get_conversation(WEBSITE, VIP),
    "list-page-1": lambda client: client.website.search_conversations(
        WEBSITE, 1, filter_unread="1", filter_not_resolved="1"
    ),
}
# The PyPI client's methods for the Node client's calls that the error cases make.
PYTHON_METHODS = {
    "getConversation": "get_conversation",
    "getConversationMetas": "get_conversation_metas",
}
# Error cases for both clients: the call's arguments, and (status, reason) they must report.
ERRORS: dict[str, tuple[dict[str, Any], tuple[int, str]]] = {
    "error-bad-key": ({"key": "wrong"}, (401, "invalid_session")),
    "error-unknown-website": ({"website": "not-a-website"}, (404, "not_subscribed")),
    "error-unknown-session": ({"session": "session_unknown"}, (404, "session_not_found")),
    # A route the simulator does not serve: Crisp answers its JSON envelope, reason not_found
    # ("the route does not exist", crisp-im/node-crisp-api#63).
    "error-unknown-route": ({"call": "getConversationMetas"}, (404, "not_found")),
    "rate-limit-429": ({}, (429, "rate_limited")),
    "rate-limit-420": ({}, (420, "rate_limited")),
}
# Crisp documents 429 and 420 without a body; this is its error envelope with a plausible
# reason (UNVERIFIED), served by the simulator as an injected fault for that case only.
RATE_LIMIT_BODY = {"error": True, "reason": "rate_limited", "data": {"message": "slow down"}}


def exporter_config(sim: Simulator, base: str) -> str:
    account = f"""\
    provider: crisp
    base_url: {base}
    website_id: {WEBSITE}
    identifier: {sim.crisp.identifier}
    key: {sim.crisp.key}
"""
    return f"""\
accounts:
  - name: crisp-conversation
{account}    dialogs:
      - name: vip
        session_id: {VIP}
  - name: crisp-website-tier
{account}    tier: website
    dialogs:
      - name: vip
        session_id: {VIP}
  - name: crisp-backlog
{account}    dialogs:
      - name: backlog
"""


def node_calls(sim: Simulator, recorder: Recorder) -> list[NodeCall]:
    def call(case: str, **overrides: Any) -> NodeCall:
        args: dict[str, Any] = {
            "base": recorder.case_url(case),
            "tier": "plugin",
            "identifier": sim.crisp.identifier,
            "key": sim.crisp.key,
            "website": WEBSITE,
            "session": VIP,
        }
        args.update(overrides)
        return NodeCall(case, "crisp", args.pop("call", "getConversation"), args)

    return [call(case, **spec) for case, (_, _, spec) in CASES.items()] + [
        call(case, **spec) for case, (spec, _) in ERRORS.items()
    ]


def python_outcome(route_error: type[Exception], call: Callable[[], Any]) -> Any:
    """A PyPI-client call's ``{"value"}``, ``{"error"}`` (its RouteError) or ``{"exception"}``."""
    try:
        return {"value": call()}
    except route_error as exc:
        return {"error": exc.args[0]}
    except ValueError as exc:  # the client decodes every answer as JSON
        return {"exception": f"{type(exc).__name__}: {exc}"}


def run_python(sim: Simulator, recorder: Recorder) -> dict[str, Any]:
    """The PyPI client's comparison calls, then the error cases as ``py-<case>``."""

    crisp_api = python_client("crisp_api")

    def client(case: str, key: str) -> Any:
        crisp = crisp_api.Crisp()
        crisp.set_rest_host(recorder.case_url(case))
        crisp.set_tier("plugin")
        crisp.authenticate(sim.crisp.identifier, key)
        return crisp

    outcomes = {
        case: python_outcome(crisp_api.RouteError, partial(call, client(case, sim.crisp.key)))
        for case, call in PYTHON_CALLS.items()
    }
    for case, (spec, _) in ERRORS.items():
        args = {"key": sim.crisp.key, "website": WEBSITE, "session": VIP, **spec}
        crisp = client(f"py-{case}", args["key"])
        method = getattr(crisp.website, PYTHON_METHODS[args.get("call", "getConversation")])
        called = partial(method, args["website"], args["session"])
        outcomes[f"py-{case}"] = python_outcome(crisp_api.RouteError, called)
    return outcomes


async def collect(node: str, sim: Simulator, recorder: Recorder) -> ClientsRun:
    for status in (429, 420):
        for case in (f"rate-limit-{status}", f"py-rate-limit-{status}"):
            fault = Fault.answer(status, RATE_LIMIT_BODY)
            recorder.during[case] = partial(setting, sim.crisp, fault=fault)
    run = ClientsRun()
    accounts = dict.fromkeys(account for account, _, _ in CASES.values())
    await run.record(
        recorder,
        (exporter_config(sim, recorder.url), accounts),
        (node, node_calls(sim, recorder)),
        partial(run_python, sim, recorder),
    )
    return run


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> ClientsRun:
    python_client("crisp_api")
    return collected(tmp_path_factory, "crisp", populate, collect)


# (reference, case) of every comparison: the Node client makes every case, the PyPI client the
# cases it can express.
COMPARED = [(CRISP_NODE, case) for case in CASES] + [(CRISP_PYTHON, case) for case in PYTHON_CALLS]


def comparisons(run: ClientsRun) -> dict[tuple[str, str], Comparison]:
    found = {}
    for reference, case in COMPARED:
        account, path, _ = CASES[case]
        client = run.node if reference == CRISP_NODE else run.python
        found[reference, case] = Comparison(
            case,
            reference,
            sole(client[case]),
            only(run.exporter[account], "GET", path),
        )
    return found


@pytest.mark.parametrize(("reference", "case"), COMPARED)
def test_exporter_request_is_the_official_clients(
    run: ClientsRun, reference: str, case: str
) -> None:
    assert_conformant(comparisons(run)[reference, case], ALLOW_LIST)


def test_no_allow_list_entry_is_stale(run: ClientsRun) -> None:
    assert_no_stale_entry(comparisons(run), ALLOW_LIST)


def test_the_exporter_pages_the_backlog_as_the_client_would(run: ClientsRun) -> None:
    pages = [r.fields["path"] for r in run.exporter["crisp-backlog"]]
    assert pages == [f"/v1/website/{WEBSITE}/conversations/{page}" for page in (1, 2)]


def test_node_client_reads_a_conversation(run: ClientsRun) -> None:
    conversation = run.node_outcomes["conversation"]["value"]
    assert conversation["session_id"] == VIP
    assert conversation["unread"] == {"operator": 2, "visitor": 5}
    assert run.node_outcomes["conversation-website-tier"] == run.node_outcomes["conversation"]


def test_node_client_reads_the_conversation_list(run: ClientsRun) -> None:
    first = run.node_outcomes["list-page-1"]["value"]
    second = run.node_outcomes["list-page-2"]["value"]
    # 72 open conversations with unread messages on either side, 71 of them for operators
    assert (len(first), len(second)) == (50, 22)
    assert sum(c["unread"].get("operator", 0) for c in first + second) == 72


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_node_client_reads_the_error_envelope(run: ClientsRun, case: str) -> None:
    status, reason = ERRORS[case][1]
    error = run.node_outcomes[case]["error"]
    assert (error["code"], error["reason"]) == (status, reason)


def test_python_client_reads_a_conversation(run: ClientsRun) -> None:
    conversation = run.python_outcomes["conversation"]["value"]
    assert conversation["unread"] == {"operator": 2, "visitor": 5}


def test_python_client_reads_the_conversation_list(run: ClientsRun) -> None:
    """The PyPI client asks ``/conversations/1/?...``: the simulator must serve that path."""
    page = run.python_outcomes["list-page-1"].get("value")
    assert page is not None, run.python_outcomes["list-page-1"]
    assert len(page) == 20  # the client cannot ask for more than Crisp's default page size


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_python_client_reads_the_error_envelope(run: ClientsRun, case: str) -> None:
    status, reason = ERRORS[case][1]
    error = run.python_outcomes[f"py-{case}"].get("error")
    assert error is not None, run.python_outcomes[f"py-{case}"]
    assert (error["code"], error["message"]) == (status, reason)
