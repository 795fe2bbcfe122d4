"""Intercom and Stream Chat against their official SDKs, both ways, on loopback.

Requests: for every request the exporter makes, the official clients (PyPI ``python-intercom``
and ``stream-chat``, npm ``intercom-client`` and ``stream-chat``, pinned in pyproject.toml and
tests/conformance_reach/node/package-lock.json) make the same call against the same simulator,
which records every request before checking it. Method, path, decoded query, the auth and
provider headers, the content type and the JSON body must be equal; the Stream JWT is compared
by its decoded header and claims, each token verified with PyJWT against the app secret. Each
deliberate difference is an entry of ``ALLOWED`` with its reason and source: a new difference
fails, and so does an entry that no longer happens.

Answers: the SDKs parse the simulators' answers (values, pages, error envelopes, rate limits)
into what the simulators were given.

The SDKs are test dependencies; where one is missing the tests skip with the reason, except
under ``CHAT_UNREAD_REQUIRE_SDKS=1`` (set by ``.ci/run``), where a skip would hide a broken
install and fails instead.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import shutil
from collections.abc import Callable
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs

import pytest

from exporter.simulator import FakeProvider, SeenRequest, Simulator
from exporter.simulator.base import RateWindow
from tests.conftest import ScrapeClient, get_metrics
from tests.reach import (
    INTERCOM_ADMIN,
    INTERCOM_TEAM,
    INTERCOM_WAITING,
    intercom_backlog,
    populate_reach,
)
from tests.support import ROOT

REQUIRED = os.environ.get("CHAT_UNREAD_REQUIRE_SDKS") == "1"
NODE_PROJECT = ROOT / "tests" / "conformance_reach" / "node"

WAITING_ON_TEAM: list[dict[str, Any]] = [
    {"field": "state", "operator": "=", "value": "open"},
    {"field": "waiting_since", "operator": ">", "value": 0},
]
TEAM: dict[str, Any] = {"field": "team_assignee_id", "operator": "=", "value": INTERCOM_TEAM}
ADMIN: dict[str, Any] = {
    "field": "admin_assignee_id",
    "operator": "=",
    "value": str(INTERCOM_ADMIN),
}

ALLOWED: dict[tuple[str, str, str], str] = {
    ("intercom", "python", "body.sort"): (
        "the exporter asks for the oldest waiting conversation first; sort is described in "
        "Intercom's 'Pagination & Sorting (Search)' guide but not in the OpenAPI description "
        "the SDKs are generated from (intercom/Intercom-OpenAPI issue #114), so no SDK sends it"
    ),
    ("intercom", "node", "body.sort"): "as for python: the generated SearchRequest has no sort",
    ("intercom", "python", "headers.intercom-version"): (
        "python-intercom 5.0.1 sends no Intercom-Version (core/client_wrapper.py), so the "
        "workspace default applies; the exporter pins 2.14, the Node SDK's default"
    ),
}
PROVIDER_HEADERS = {
    "intercom": ("authorization", "intercom-version"),
    "stream": ("authorization", "stream-auth-type"),
}


def require(ready: bool, reason: str) -> None:
    """Skip when a conformance tool is missing; under CI, fail instead."""
    if not ready:
        if REQUIRED:
            pytest.fail(f"{reason}, and CHAT_UNREAD_REQUIRE_SDKS=1 requires it")
        pytest.skip(reason)


def python_sdk(module: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError:
        require(False, f"{module} is not installed (pip install -e '.[test]')")
        raise


async def run_node(calls: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The Node SDKs' outcomes of ``calls``, by call name."""
    node = shutil.which("node")
    require(node is not None, "node is not installed")
    installed = (NODE_PROJECT / "node_modules" / "intercom-client").is_dir() and (
        NODE_PROJECT / "node_modules" / "stream-chat"
    ).is_dir()
    require(installed, f"the Node SDKs are not installed (npm ci --prefix {NODE_PROJECT})")
    assert node is not None
    process = await asyncio.create_subprocess_exec(
        node,
        str(NODE_PROJECT / "sdk.mjs"),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(json.dumps(calls).encode()), 120)
    assert process.returncode == 0, err.decode()
    return {result["name"]: result for result in json.loads(out)}


def jwt_header_and_claims(token: str, secret: str) -> dict[str, Any]:
    """A JWT's header and claims, after PyJWT has verified its HS256 signature."""
    jwt = python_sdk("jwt")
    claims = jwt.decode(token, secret, algorithms=["HS256"])
    return {"header": jwt.get_unverified_header(token), "claims": claims}


def wire(request: SeenRequest, provider: str, secret: str = "") -> dict[str, Any]:
    """What is compared of a request; the Stream JWT by its verified header and claims."""
    headers = {name.lower(): text for name, text in request.headers.items()}
    compared: dict[str, Any] = {
        name: headers[name] for name in PROVIDER_HEADERS[provider] if name in headers
    }
    if request.body:
        compared["content-type"] = headers.get("content-type", "").split(";")[0].strip()
    if provider == "stream" and "authorization" in compared:
        compared["authorization"] = jwt_header_and_claims(compared["authorization"], secret)
    return {
        "method": request.method,
        "path": request.path,
        "query": parse_qs(request.query_string, keep_blank_values=True),
        "headers": compared,
        "body": request.json() if request.body else None,
    }


def differences(ours: dict[str, Any], theirs: dict[str, Any]) -> set[str]:
    """Dotted names of what differs: ``method``, ``headers.x``, ``body.sort``..."""
    found = set()
    for key in ours.keys() | theirs.keys():
        mine, other = ours.get(key), theirs.get(key)
        if key in ("headers", "body") and isinstance(mine, dict) and isinstance(other, dict):
            found |= {
                f"{key}.{k}" for k in mine.keys() | other.keys() if mine.get(k) != other.get(k)
            }
        elif mine != other:
            found.add(key)
    return found


class Comparison:
    """Collects request comparisons of one provider and checks them against ``ALLOWED``."""

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self.compared = self.equal = 0
        self.used: set[tuple[str, str, str]] = set()
        self.unexpected: list[str] = []

    def check(self, case: str, sdk: str, ours: dict[str, Any], theirs: dict[str, Any]) -> None:
        self.compared += 1
        found = differences(ours, theirs)
        self.equal += not found
        for name in sorted(found):
            key = (self.provider, sdk, name)
            if key in ALLOWED:
                self.used.add(key)
            else:
                self.unexpected.append(f"{case} ({sdk}): {name}: {ours} != {theirs}")

    def assert_clean(self) -> None:
        assert not self.unexpected, "\n".join(self.unexpected)
        stale = {key for key in ALLOWED if key[0] == self.provider} - self.used
        assert not stale, f"allowed differences that no longer happen: {sorted(stale)}"


def taken(fake: FakeProvider) -> list[SeenRequest]:
    """The requests the simulator recorded since the last call, and forget them."""
    requests = list(fake.requests)
    fake.requests.clear()
    return requests


# --------------------------------------------------------------------------------------------
# Intercom

INTERCOM_CASES: dict[str, tuple[str, list[dict[str, Any]]]] = {
    # case: (the account's one dialog in the exporter's config, the SDK's filters)
    "whole backlog": ("{name: inbox}", WAITING_ON_TEAM),
    "a team's backlog": (
        f"{{name: billing, team_id: '{INTERCOM_TEAM}'}}",
        [*WAITING_ON_TEAM, TEAM],
    ),
    "a teammate's backlog": (
        f"{{name: alice, admin_id: {INTERCOM_ADMIN}}}",
        [*WAITING_ON_TEAM, ADMIN],
    ),
}


def intercom_config(sim: Simulator, dialog: str) -> str:
    return f"""\
accounts:
  - name: ic
    provider: intercom
    base_url: {sim.intercom.url}
    access_token: {sim.intercom.access_token}
    dialogs: [{dialog}]
"""


def python_intercom_search(
    sim: Simulator, filters: list[dict[str, Any]], starting_after: str | None = None
) -> Any:
    """python-intercom's ``conversations.search`` as its documentation shows it."""
    intercom = python_sdk("intercom")
    httpx = python_sdk("httpx")
    query = intercom.MultipleFilterSearchRequest(
        operator="AND", value=[intercom.SingleFilterSearchRequest(**f) for f in filters]
    )
    cursor = {} if starting_after is None else {"starting_after": starting_after}
    pagination = intercom.StartingAfterPaging(per_page=150, **cursor)
    with httpx.Client() as http:
        client = intercom.Intercom(
            token=sim.intercom.access_token, base_url=sim.intercom.url, httpx_client=http
        )
        return client.conversations.search(
            query=query, pagination=pagination, request_options={"max_retries": 0}
        )


def node_intercom_call(
    sim: Simulator, name: str, filters: list[dict[str, Any]], next_page: bool = False
) -> dict[str, Any]:
    return {
        "provider": "intercom",
        "name": name,
        "base_url": sim.intercom.url,
        "token": sim.intercom.access_token,
        "request": {
            "query": {"operator": "AND", "value": filters},
            "pagination": {"per_page": 150},
        },
        "next_page": next_page,
    }


async def test_intercom_requests_match_the_official_sdks(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    populate_reach(sim)
    comparison = Comparison("intercom")
    exporter_requests = {}
    for case, (dialog, filters) in INTERCOM_CASES.items():
        client = await scrape_client(intercom_config(sim, dialog))
        await get_metrics(client)
        [exporter_requests[case]] = [wire(r, "intercom") for r in taken(sim.intercom)]
        await asyncio.to_thread(python_intercom_search, sim, filters)
        [python] = [wire(r, "intercom") for r in taken(sim.intercom)]
        comparison.check(case, "python", exporter_requests[case], python)
    # one Node process for the three cases; it makes their requests in this order
    await run_node([node_intercom_call(sim, c, f) for c, (_, f) in INTERCOM_CASES.items()])
    node_requests = [wire(r, "intercom") for r in taken(sim.intercom)]
    assert len(node_requests) == len(INTERCOM_CASES)
    for case, node in zip(INTERCOM_CASES, node_requests, strict=True):
        comparison.check(case, "node", exporter_requests[case], node)

    # the next page: a backlog of 400 from an API that ignores sort, read page by page
    sim.intercom.conversations = intercom_backlog(400)
    sim.intercom.honour_sort = False
    client = await scrape_client(intercom_config(sim, "{name: inbox}"))
    await get_metrics(client)
    ours_pages = [wire(r, "intercom") for r in taken(sim.intercom)]
    assert len(ours_pages) == 3
    cursor = ours_pages[1]["body"]["pagination"]["starting_after"]
    await asyncio.to_thread(python_intercom_search, sim, WAITING_ON_TEAM, cursor)
    [python] = [wire(r, "intercom") for r in taken(sim.intercom)]
    comparison.check("next page", "python", ours_pages[1], python)
    await run_node([node_intercom_call(sim, "next page", WAITING_ON_TEAM, next_page=True)])
    node_pages = [wire(r, "intercom") for r in taken(sim.intercom)]
    comparison.check("next page", "node", ours_pages[1], node_pages[1])

    comparison.assert_clean()
    # 4 requests x 2 SDKs; what differs is only what ALLOWED explains
    assert (comparison.compared, comparison.equal) == (8, 0)


async def test_intercom_sdks_read_the_simulators_answers(sim: Simulator) -> None:
    populate_reach(sim)
    pager = await asyncio.to_thread(python_intercom_search, sim, [*WAITING_ON_TEAM, TEAM])
    # the SDKs send no sort: the simulator answers most recently updated first
    assert pager.response.total_count == 20
    assert [c.waiting_since for c in pager.items][:2] == [
        INTERCOM_WAITING + 40 * 60,
        INTERCOM_WAITING + 38 * 60,
    ]
    assert pager.response.pages.next is None

    sim.intercom.conversations = intercom_backlog(400)
    python_pages = await asyncio.to_thread(python_intercom_search, sim, WAITING_ON_TEAM)
    cursor = python_pages.response.pages.next.starting_after
    second = await asyncio.to_thread(python_intercom_search, sim, WAITING_ON_TEAM, cursor)
    assert [c.waiting_since for c in second.items][:2] == [
        INTERCOM_WAITING + 250 * 60,
        INTERCOM_WAITING + 249 * 60,
    ]
    node = await run_node([node_intercom_call(sim, "pages", WAITING_ON_TEAM, next_page=True)])
    value = node["pages"]["value"]
    assert value["total_count"] == 400
    assert value["conversations"][0]["waiting_since"] == INTERCOM_WAITING + 400 * 60
    assert value["next_conversations"][0]["waiting_since"] == INTERCOM_WAITING + 250 * 60


async def test_intercom_sdks_read_the_simulators_errors(sim: Simulator) -> None:
    intercom = python_sdk("intercom")
    # every authenticated request is refused; an unauthenticated one is a 401 first
    sim.intercom.rate_limit = RateWindow(limit=0, seconds=600)
    with pytest.raises(intercom.core.api_error.ApiError) as refused:
        await asyncio.to_thread(python_intercom_search, sim, WAITING_ON_TEAM)
    assert refused.value.status_code == 429
    assert refused.value.body["errors"][0]["code"] == "rate_limit_exceeded"
    assert refused.value.headers is not None
    assert int(refused.value.headers["x-ratelimit-reset"]) > 1_700_000_000

    revoked = node_intercom_call(sim, "auth", WAITING_ON_TEAM)
    revoked["token"] = "revoked-token"
    node = await run_node([revoked, node_intercom_call(sim, "limited", WAITING_ON_TEAM)])
    assert node["auth"]["error"]["status"] == 401
    assert node["auth"]["error"]["body"]["errors"][0]["code"] == "unauthorized"
    assert node["limited"]["error"]["status"] == 429
    assert node["limited"]["error"]["body"]["type"] == "error.list"


# --------------------------------------------------------------------------------------------
# Stream Chat


def stream_config(sim: Simulator, users: list[str]) -> str:
    dialogs = "".join(f"      - {{name: d-{user}, user_id: {user}}}\n" for user in users)
    return f"""\
accounts:
  - name: st
    provider: stream
    base_url: {sim.stream.url}
    api_key: {sim.stream.api_key}
    api_secret: {sim.stream.api_secret}
    dialogs:
{dialogs}"""


def python_stream(sim: Simulator, call: Callable[[Any], Any]) -> Any:
    """Run ``call`` on a server-side ``stream_chat.StreamChat`` pointed at the simulator."""
    stream_chat = python_sdk("stream_chat")
    client = stream_chat.StreamChat(
        api_key=sim.stream.api_key, api_secret=sim.stream.api_secret, base_url=sim.stream.url
    )
    try:
        return call(client)
    finally:
        client.session.close()


def node_stream_call(sim: Simulator, name: str, users: list[str]) -> dict[str, Any]:
    single = len(users) == 1
    return {
        "provider": "stream",
        "name": name,
        "base_url": sim.stream.url,
        "api_key": sim.stream.api_key,
        "api_secret": sim.stream.api_secret,
        "op": "unread" if single else "unread_batch",
        "user_id": users[0],
        "user_ids": users,
    }


def python_unread_call(users: list[str]) -> Callable[[Any], Any]:
    """The stream-chat call for ``users``: ``unread_counts`` for one, the batch for more."""
    if len(users) == 1:
        return lambda client: client.unread_counts(users[0])
    return lambda client: client.unread_counts_batch(users)


STREAM_CASES = {"one user": ["agent-42"], "several users": ["agent-42", "agent-7"]}


async def test_stream_requests_match_the_official_sdks(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    populate_reach(sim)
    secret = sim.stream.api_secret
    comparison = Comparison("stream")
    tokens: set[str] = set()

    def recorded() -> list[dict[str, Any]]:
        requests = taken(sim.stream)
        tokens.update(r.headers["Authorization"] for r in requests)
        return [wire(r, "stream", secret) for r in requests]

    exporter_requests = {}
    for case, users in STREAM_CASES.items():
        client = await scrape_client(stream_config(sim, users))
        await get_metrics(client)
        [exporter_requests[case]] = recorded()
        await asyncio.to_thread(python_stream, sim, python_unread_call(users))
        [python] = recorded()
        comparison.check(case, "python", exporter_requests[case], python)
    await run_node([node_stream_call(sim, case, users) for case, users in STREAM_CASES.items()])
    node_requests = recorded()
    assert len(node_requests) == len(STREAM_CASES)
    for case, node in zip(STREAM_CASES, node_requests, strict=True):
        comparison.check(case, "node", exporter_requests[case], node)

    comparison.assert_clean()
    assert (comparison.compared, comparison.equal) == (4, 4)
    assert len(tokens) == 1  # the exporter's JWT is byte for byte the one both SDKs sign


async def test_stream_sdks_read_the_simulators_answers(sim: Simulator) -> None:
    populate_reach(sim)
    sim.stream.rate_limit = RateWindow(limit=60, seconds=600)
    one = await asyncio.to_thread(python_stream, sim, python_unread_call(["agent-42"]))
    assert one["total_unread_count"] == 16
    assert {
        t["channel_type"]: (t["channel_count"], t["unread_count"]) for t in one["channel_type"]
    } == {
        "messaging": (2, 7),
        "livestream": (1, 9),
    }
    limit = one.rate_limit()
    assert (limit.limit, limit.remaining) == (60, 59)
    assert limit.reset.timestamp() > 1_700_000_000

    node = await run_node([node_stream_call(sim, "batch", ["agent-42", "agent-7"])])
    counts = node["batch"]["value"]["counts_by_user"]
    assert {user: c["total_unread_count"] for user, c in counts.items()} == {
        "agent-42": 16,
        "agent-7": 2,
    }


async def test_stream_sdks_read_the_simulators_errors(sim: Simulator) -> None:
    stream_chat = python_sdk("stream_chat")
    populate_reach(sim)
    with pytest.raises(stream_chat.base.exceptions.StreamAPIException) as unknown:
        await asyncio.to_thread(python_stream, sim, python_unread_call(["nobody"]))
    assert (unknown.value.status_code, unknown.value.error_code) == (404, 16)

    call = node_stream_call(sim, "auth", ["agent-42"])
    call["api_secret"] = "not-the-app-secret"
    node = await run_node([call])
    assert node["auth"]["error"] == {"status": 401, "code": 43}

    sim.stream.rate_limit = RateWindow(limit=0, seconds=600)
    with pytest.raises(stream_chat.base.exceptions.StreamAPIException) as limited:
        await asyncio.to_thread(python_stream, sim, python_unread_call(["agent-42"]))
    assert (limited.value.status_code, limited.value.error_code) == (429, 9)
    node = await run_node([node_stream_call(sim, "limited", ["agent-42", "agent-7"])])
    assert node["limited"]["error"] == {"status": 429, "code": 9}
