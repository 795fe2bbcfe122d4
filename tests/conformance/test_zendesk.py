"""Zendesk against its community clients, npm node-zendesk and PyPI zenpy.

Zendesk publishes no official client for the Support API; these two are the most used ones.
The exporter's view count, ticket search, per-group search count and group list must equal
the clients' ``views.showCounts``/``views.count_many``, ``search.query``/``search``,
``search.showResultsCount``/``search.count`` and ``groups.list``/``groups`` (up to the
allow-list), and both clients must read the simulator's answers, its 401 and 404 envelopes and
its 429 with ``Retry-After``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest

from exporter.simulator import Simulator
from tests.conformance.allowlist import ALLOW_LIST, ZENDESK_NODE, ZENDESK_PYTHON
from tests.conformance.harness import (
    ClientsRun,
    Comparison,
    NodeCall,
    Recorded,
    Recorder,
    assert_conformant,
    assert_no_stale_entry,
    collected,
    only,
    python_client,
    setting,
    sole,
)
from tests.support import ZENDESK_CREATED, ZENDESK_GROUPS, ZENDESK_VIEW, populate_reach

QUERY = "type:ticket status<solved"
GROUP = next(iter(ZENDESK_GROUPS))
GROUP_QUERY = f"{QUERY} group:{GROUP}"
SORT = {"sort_by": "created_at", "sort_order": "asc", "per_page": "1"}
# The exporter's accounts: each case's one dialog (``count`` and ``groups`` are requests of the
# grouped dialog's refresh).
ACCOUNTS = {
    "views": f"{{name: unassigned, view_id: {ZENDESK_VIEW}}}",
    "search": "{name: unsolved, query: status<solved}",
    "grouped": "{name: by-group, query: status<solved, group_by: group}",
}
CASES = ("views", "search", "count", "groups")
ERRORS = ("error-auth", "error-not-found", "rate-limit")
# zenpy alone: its count_many sends no ids (see the allow-list), so it reads a view's count
# from the single-view endpoint too.
VIEW_COUNT = "view-count"


def exporter_config(sim: Simulator, base: str) -> str:
    return "accounts:\n" + "".join(
        f"""\
  - name: {account}
    provider: zendesk
    subdomain: acme
    base_url: {base}
    email: {sim.zendesk.email}
    api_token: {sim.zendesk.api_token}
    dialogs: [{dialog}]
"""
        for account, dialog in ACCOUNTS.items()
    )


def token_of(sim: Simulator, case: str) -> str:
    return "revoked-token" if case == "error-auth" else sim.zendesk.api_token


def node_calls(sim: Simulator, recorder: Recorder) -> list[NodeCall]:
    calls: dict[str, tuple[str, dict[str, Any]]] = {
        "views": ("viewCounts", {"ids": [ZENDESK_VIEW]}),
        "search": ("search", {"q": QUERY, "query": SORT}),
        "count": ("count", {"q": GROUP_QUERY}),
        "groups": ("groups", {}),
        "error-auth": ("count", {"q": QUERY}),
        "error-not-found": ("viewCount", {"id": 999}),
        "rate-limit": ("count", {"q": QUERY}),
    }
    return [
        NodeCall(
            case,
            "zendesk",
            call,
            {
                "base": recorder.case_url(case),
                "email": sim.zendesk.email,
                "token": token_of(sim, case),
                **args,
            },
        )
        for case, (call, args) in calls.items()
    ]


def zenpy_call(case: str, client: Any) -> Any:
    """The zenpy call of ``case`` and what it read, as plain data."""
    if case == "views":
        return [(c.view_id, c.value, c.fresh) for c in client.views.count_many([ZENDESK_VIEW])]
    if case == "search":
        results = client.search(QUERY, sort_by="created_at", sort_order="asc")
        return [(ticket.id, ticket.created_at) for ticket in results]
    if case in ("count", "error-auth", "rate-limit"):
        return client.search.count(GROUP_QUERY if case == "count" else QUERY)
    if case == "groups":
        return [[group.id, group.name] for group in client.groups()]
    if case == VIEW_COUNT:
        count = client.views.count(ZENDESK_VIEW)
        return [count.view_id, count.value, count.fresh]
    return client.views.count(999).value


def python_outcome(sim: Simulator, case: str) -> dict[str, Any]:
    """zenpy's ``{"value"}`` or ``{"error"}`` for one case, its requests under the case's path.

    zenpy builds ``https://{subdomain}.zendesk.com/api/v2``; its own ``ZENPY_FORCE_SCHEME`` and
    ``ZENPY_FORCE_NETLOC`` point it at the recorder, and each API's prefix names the case.
    """
    zenpy = python_client("zenpy")
    exception = python_client("zenpy.lib.exception")
    client = zenpy.Zenpy(
        subdomain="acme",
        email=sim.zendesk.email,
        token=token_of(sim, case),
        ratelimit_budget=1,  # a 429's Retry-After is waited out only within this budget
        disable_cache=True,
    )
    for api in (client.views, client.search, client.groups):
        api.api_prefix = f"_case/{case}/api/v2"
    try:
        return {"value": zenpy_call(case, client)}
    except exception.APIException as exc:
        body = exc.response.json()
        return {"error": {"status": exc.response.status_code, "type": type(exc).__name__, **body}}
    except exception.RatelimitBudgetExceeded as exc:
        return {"error": {"type": type(exc).__name__, "message": str(exc)}}


def run_python(sim: Simulator, recorder: Recorder) -> dict[str, Any]:
    saved = {name: os.environ.get(name) for name in ("ZENPY_FORCE_SCHEME", "ZENPY_FORCE_NETLOC")}
    os.environ["ZENPY_FORCE_SCHEME"] = "http"
    os.environ["ZENPY_FORCE_NETLOC"] = recorder.url.removeprefix("http://")
    try:
        cases = (*CASES, VIEW_COUNT, *ERRORS)
        return {case: python_outcome(sim, case) for case in cases}
    finally:
        for name, old in saved.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old


async def collect(node: str, sim: Simulator, recorder: Recorder) -> ClientsRun:
    recorder.during["rate-limit"] = partial(setting, sim.zendesk, rate_limit=0)
    run = ClientsRun()
    await run.record(
        recorder,
        (exporter_config(sim, recorder.url), list(ACCOUNTS)),
        (node, node_calls(sim, recorder)),
        partial(run_python, sim, recorder),
    )
    return run


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> ClientsRun:
    python_client("zenpy")
    return collected(tmp_path_factory, "zendesk", populate_reach, collect)


def _with_query(query: str) -> Callable[[Recorded], bool]:
    return lambda r: r.fields.get("query:query") == [[query]]


def exporter_request(run: ClientsRun, case: str) -> Recorded:
    """The exporter's request compared with the clients' for ``case``."""
    if case in ("views", "search"):
        return sole(run.exporter[case])
    grouped = run.exporter["grouped"]
    if case == "groups":
        return only(grouped, "GET", "/api/v2/groups.json")
    (found,) = filter(_with_query(GROUP_QUERY), grouped)
    return found


COMPARED = [(reference, case) for reference in (ZENDESK_NODE, ZENDESK_PYTHON) for case in CASES]


def comparisons(run: ClientsRun) -> dict[tuple[str, str], Comparison]:
    found = {}
    for reference, case in COMPARED:
        client = run.node if reference == ZENDESK_NODE else run.python
        expected = sole(client[case])
        found[reference, case] = Comparison(case, reference, expected, exporter_request(run, case))
    return found


@pytest.mark.parametrize(("reference", "case"), COMPARED)
def test_exporter_request_is_the_clients(run: ClientsRun, reference: str, case: str) -> None:
    assert_conformant(comparisons(run)[reference, case], ALLOW_LIST)


def test_no_allow_list_entry_is_stale(run: ClientsRun) -> None:
    assert_no_stale_entry(comparisons(run), ALLOW_LIST)


def test_the_exporter_spends_what_docs_zendesk_md_says(run: ClientsRun) -> None:
    costs = {account: len(requests) for account, requests in run.exporter.items()}
    # a view (or every view of an account): 1; a query: 1; a grouped query: 1 + the group
    # list + one count per group and one for no group
    assert costs == {"views": 1, "search": 1, "grouped": 2 + len(ZENDESK_GROUPS) + 1}


def test_clients_read_the_view_count(run: ClientsRun) -> None:
    node = run.node_outcomes["views"]["value"]["view_counts"]
    assert [(c["view_id"], c["value"], c["fresh"]) for c in node] == [(ZENDESK_VIEW, 3, True)]
    assert run.python_outcomes[VIEW_COUNT]["value"] == [ZENDESK_VIEW, 3, True]
    # zenpy's count_many sends count_many= for ids=: answered as a request without ids
    assert run.python_outcomes["views"]["error"]["status"] == 400


def test_clients_read_the_search(run: ClientsRun) -> None:
    oldest = "2025-06-15T15:07:40Z"  # ZENDESK_CREATED + 60, as Zendesk writes times
    assert ZENDESK_CREATED + 60 == 1_750_000_060
    node = run.node_outcomes["search"]["value"]
    assert node[0]["created_at"] == oldest
    assert len(node) == 1  # the client-wide per_page=1 was sent
    python = run.python_outcomes["search"]["value"]
    assert len(python) == 9  # zenpy pages through every result, oldest first
    assert python[0][1] == oldest


def test_clients_read_the_count_and_the_groups(run: ClientsRun) -> None:
    assert run.node_outcomes["count"]["value"] == {"count": 3}
    assert run.python_outcomes["count"]["value"] == 3
    named = [[gid, name] for gid, name in ZENDESK_GROUPS.items()]
    assert [[g["id"], g["name"]] for g in run.node_outcomes["groups"]["value"]] == named
    assert run.python_outcomes["groups"]["value"] == named


def test_clients_read_the_errors(run: ClientsRun) -> None:
    node, python = run.node_outcomes, run.python_outcomes
    assert node["error-auth"]["error"]["status"] == 401
    assert node["error-auth"]["error"]["body"]["error"] == "Couldn't authenticate you"
    assert python["error-auth"]["error"]["status"] == 401
    assert python["error-auth"]["error"]["error"] == "Couldn't authenticate you"
    assert node["error-not-found"]["error"]["status"] == 404
    assert node["error-not-found"]["error"]["body"]["error"] == "RecordNotFound"
    assert python["error-not-found"]["error"]["type"] == "RecordNotFoundException"


def test_clients_read_the_rate_limit(run: ClientsRun) -> None:
    """node-zendesk returns (not throws) its 429 error for any answer with Retry-After; zenpy
    waits Retry-After out within its budget (1 s here, the answer asks 60 s) and gives up."""
    node = run.node_outcomes["rate-limit"]["value"]
    assert node["statusCode"] == 429
    assert node["result"]["error"] == "APIRateLimitExceeded"
    python = run.python_outcomes["rate-limit"]["error"]
    assert python["type"] == "RatelimitBudgetExceeded"
