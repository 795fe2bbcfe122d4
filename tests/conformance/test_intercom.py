"""Intercom against its official SDKs, npm intercom-client and PyPI python-intercom.

The exporter's conversation searches (the whole backlog, a team's, a teammate's, and the next
page of a backlog larger than one page) must equal the SDKs' ``conversations.search`` (up to
the allow-list: the exporter's ``sort`` and its pinned ``Intercom-Version``), and both SDKs
must read the simulator's pages, its ``error.list`` envelopes and its rate limit.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import pytest

from exporter.simulator import Simulator
from exporter.simulator.base import RateWindow
from tests.conformance.allowlist import ALLOW_LIST, INTERCOM_NODE, INTERCOM_PYTHON
from tests.conformance.harness import (
    ClientsRun,
    Comparison,
    NodeCall,
    Recorded,
    Recorder,
    assert_conformant,
    assert_no_stale_entry,
    collected,
    python_client,
    setting,
    sole,
)
from tests.support import (
    INTERCOM_ADMIN,
    INTERCOM_TEAM,
    INTERCOM_WAITING,
    intercom_backlog,
    populate_reach,
)

PATH = "/conversations/search"
WAITING_ON_TEAM: list[dict[str, Any]] = [
    {"field": "state", "operator": "=", "value": "open"},
    {"field": "waiting_since", "operator": ">", "value": 0},
]
TEAM = {"field": "team_assignee_id", "operator": "=", "value": INTERCOM_TEAM}
ADMIN = {"field": "admin_assignee_id", "operator": "=", "value": str(INTERCOM_ADMIN)}
# case -> (the exporter account's one dialog, the SDKs' search filters). The account of a case
# has the case's name; ``next-page`` reads a backlog of 400 that ignores ``sort``, and its
# second request (the SDKs follow the first answer's cursor) is the one compared.
CASES: dict[str, tuple[str, list[dict[str, Any]]]] = {
    "whole-backlog": ("{name: inbox}", WAITING_ON_TEAM),
    "team-backlog": (f"{{name: billing, team_id: '{INTERCOM_TEAM}'}}", [*WAITING_ON_TEAM, TEAM]),
    "teammate-backlog": (f"{{name: alice, admin_id: {INTERCOM_ADMIN}}}", [*WAITING_ON_TEAM, ADMIN]),
    "next-page": ("{name: inbox}", WAITING_ON_TEAM),
}
PAGED = "next-page"
# Error cases for both SDKs: the token they use (None: the right one).
ERRORS = {"error-revoked-token": "revoked-token", "rate-limit": None}


def exporter_config(sim: Simulator, base: str) -> str:
    return "accounts:\n" + "".join(
        f"""\
  - name: {case}
    provider: intercom
    base_url: {base}
    access_token: {sim.intercom.access_token}
    dialogs: [{dialog}]
"""
        for case, (dialog, _) in CASES.items()
    )


def search_request(filters: list[dict[str, Any]]) -> dict[str, Any]:
    """The SDKs' ``conversations.search`` arguments: the filters ANDed, pages of 150."""
    return {"query": {"operator": "AND", "value": filters}, "pagination": {"per_page": 150}}


def searches(sim: Simulator, cases: list[str]) -> dict[str, tuple[list[dict[str, Any]], str]]:
    """The SDKs' search of each of ``cases``: its filters and the token it sends."""
    made = {}
    for case in cases:
        filters = CASES[case][1] if case in CASES else WAITING_ON_TEAM
        made[case] = (filters, ERRORS.get(case) or sim.intercom.access_token)
    return made


def node_calls(sim: Simulator, recorder: Recorder, cases: list[str]) -> list[NodeCall]:
    return [
        NodeCall(
            case,
            "intercom",
            "search",
            {
                "base": recorder.case_url(case),
                "token": token,
                "request": search_request(filters),
                "nextPage": case == PAGED,
            },
        )
        for case, (filters, token) in searches(sim, cases).items()
    ]


def python_search(
    base: str, token: str, filters: list[dict[str, Any]], starting_after: str | None = None
) -> Any:
    """python-intercom's ``conversations.search`` as its documentation shows it."""
    intercom = python_client("intercom")
    httpx = python_client("httpx")
    query = intercom.MultipleFilterSearchRequest(
        operator="AND", value=[intercom.SingleFilterSearchRequest(**f) for f in filters]
    )
    cursor = {} if starting_after is None else {"starting_after": starting_after}
    pagination = intercom.StartingAfterPaging(per_page=150, **cursor)
    with httpx.Client() as http:
        client = intercom.Intercom(token=token, base_url=base, httpx_client=http)
        return client.conversations.search(
            query=query, pagination=pagination, request_options={"max_retries": 0}
        )


def python_outcome(base: str, token: str, filters: list[dict[str, Any]], paged: bool) -> Any:
    """The PyPI SDK's ``{"value"}`` (with the second page when ``paged``) or ``{"error"}``."""
    search = partial(python_search, base, token)
    intercom = python_client("intercom")
    try:
        pages = [search(filters)]
        if paged:
            pages.append(search(filters, pages[0].response.pages.next.starting_after))
    except intercom.core.api_error.ApiError as exc:
        headers = exc.headers or {}
        return {"error": {"status": exc.status_code, "body": exc.body, "headers": headers}}
    first = pages[0].response
    return {
        "value": {
            "total_count": first.total_count,
            "next": None if first.pages.next is None else first.pages.next.starting_after,
            "pages": [[c.waiting_since for c in page.items] for page in pages],
        }
    }


def run_python(sim: Simulator, recorder: Recorder, cases: list[str]) -> dict[str, Any]:
    return {
        case: python_outcome(recorder.case_url(case), token, filters, case == PAGED)
        for case, (filters, token) in searches(sim, cases).items()
    }


async def collect(node: str, sim: Simulator, recorder: Recorder) -> ClientsRun:
    recorder.during["rate-limit"] = partial(
        setting, sim.intercom, rate_limit=RateWindow(limit=0, seconds=600)
    )
    config = exporter_config(sim, recorder.url)
    run = ClientsRun()
    # First the 43 conversations of populate_reach, then a backlog of 400 from an API that
    # ignores sort, read page by page.
    for cases in ([*(c for c in CASES if c != PAGED), *ERRORS], [PAGED]):
        if cases == [PAGED]:
            sim.intercom.conversations = intercom_backlog(400)
            sim.intercom.honour_sort = False
        await run.record(
            recorder,
            (config, [c for c in cases if c in CASES]),
            (node, node_calls(sim, recorder, cases)),
            partial(run_python, sim, recorder, cases),
        )
    return run


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> ClientsRun:
    python_client("intercom")
    return collected(tmp_path_factory, "intercom", populate_reach, collect)


COMPARED = [(reference, case) for reference in (INTERCOM_NODE, INTERCOM_PYTHON) for case in CASES]


def compared_request(requests: list[Recorded], case: str) -> Recorded:
    """The request of ``case`` that is compared: the second page's for ``next-page``."""
    if case == PAGED:
        assert len(requests) >= 2, [r.fields["path"] for r in requests]
        return requests[1]
    return sole(requests)


def comparisons(run: ClientsRun) -> dict[tuple[str, str], Comparison]:
    found = {}
    for reference, case in COMPARED:
        client = run.node if reference == INTERCOM_NODE else run.python
        # an SDK asks for the second page once, and nothing more
        assert len(client[case]) == (2 if case == PAGED else 1), (reference, case)
        expected = compared_request(client[case], case)
        actual = compared_request(run.exporter[case], case)
        found[reference, case] = Comparison(case, reference, expected, actual)
    return found


@pytest.mark.parametrize(("reference", "case"), COMPARED)
def test_exporter_request_is_the_official_sdks(run: ClientsRun, reference: str, case: str) -> None:
    assert_conformant(comparisons(run)[reference, case], ALLOW_LIST)


def test_no_allow_list_entry_is_stale(run: ClientsRun) -> None:
    assert_no_stale_entry(comparisons(run), ALLOW_LIST)


def test_the_exporter_searches_once_per_dialog_and_pages_a_large_backlog(
    run: ClientsRun,
) -> None:
    for case in CASES:
        paths = [(r.fields["method"], r.fields["path"]) for r in run.exporter[case]]
        assert paths == [("POST", PATH)] * (3 if case == PAGED else 1), case


def test_python_sdk_reads_a_page(run: ClientsRun) -> None:
    # the SDKs send no sort: the simulator answers most recently updated first
    team = run.python_outcomes["team-backlog"]["value"]
    assert team["total_count"] == 20
    assert team["pages"][0][:2] == [INTERCOM_WAITING + 40 * 60, INTERCOM_WAITING + 38 * 60]
    assert team["next"] is None


def test_python_sdk_follows_the_cursor(run: ClientsRun) -> None:
    pages = run.python_outcomes[PAGED]["value"]
    assert pages["total_count"] == 400
    assert pages["pages"][1][:2] == [INTERCOM_WAITING + 250 * 60, INTERCOM_WAITING + 249 * 60]


def test_node_sdk_follows_the_cursor(run: ClientsRun) -> None:
    value = run.node_outcomes[PAGED]["value"]
    assert value["total_count"] == 400
    assert value["conversations"][0]["waiting_since"] == INTERCOM_WAITING + 400 * 60
    assert value["next_conversations"][0]["waiting_since"] == INTERCOM_WAITING + 250 * 60


def test_sdks_read_the_auth_error(run: ClientsRun) -> None:
    node = run.node_outcomes["error-revoked-token"]["error"]
    python = run.python_outcomes["error-revoked-token"]["error"]
    for error in (node, python):
        assert error["status"] == 401
        assert error["body"]["errors"][0]["code"] == "unauthorized"


def test_sdks_read_the_rate_limit(run: ClientsRun) -> None:
    node = run.node_outcomes["rate-limit"]["error"]
    python = run.python_outcomes["rate-limit"]["error"]
    assert (node["status"], node["body"]["type"]) == (429, "error.list")
    assert python["status"] == 429
    assert python["body"]["errors"][0]["code"] == "rate_limit_exceeded"
    assert int(python["headers"]["x-ratelimit-reset"]) > 1_700_000_000
