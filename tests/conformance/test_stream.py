"""Stream Chat against its official SDKs, npm stream-chat and PyPI stream-chat, server side.

The exporter's unread requests (one user, several users in one batch) must equal the SDKs'
``getUnreadCount`` / ``unread_counts`` and ``getUnreadCountBatch`` / ``unread_counts_batch``,
the server JWT byte for byte (and PyJWT verifies it against the app secret); both SDKs must
read the simulator's counts, its rate-limit headers and its error envelopes.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import partial
from typing import Any

import pytest

from exporter.simulator import Simulator
from exporter.simulator.base import RateWindow
from tests.conformance.allowlist import ALLOW_LIST, STREAM_NODE, STREAM_PYTHON
from tests.conformance.harness import (
    ClientsRun,
    Comparison,
    NodeCall,
    Recorder,
    assert_conformant,
    assert_no_stale_entry,
    collected,
    python_client,
    setting,
    sole,
)
from tests.support import populate_reach

# case -> the users of the request; the exporter account of a case has the case's name and one
# dialog per user, so it asks for one user alone and for several in one batch.
CASES = {"one-user": ["agent-42"], "several-users": ["agent-42", "agent-7"]}
PATHS = {"one-user": ("GET", "/unread"), "several-users": ("POST", "/unread_batch")}


@dataclass(frozen=True)
class Refused:
    """An error case for both SDKs: whose counts they ask for, with which secret (None: the
    app's), and the (status, Stream error code) they must report."""

    users: list[str]
    secret: str | None
    status: int
    code: int


ERRORS = {
    "error-unknown-user": Refused(["nobody"], None, 404, 16),
    "error-bad-secret": Refused(["agent-42"], "not-the-app-secret-but-just-as-long", 401, 43),
    "rate-limit-one": Refused(["agent-42"], None, 429, 9),
    "rate-limit-batch": Refused(["agent-42", "agent-7"], None, 429, 9),
    # an organisation without the unread endpoint: Stream's "Not Allowed" (docs/stream.md)
    "error-not-enabled": Refused(["agent-42"], None, 403, 17),
}
RATE_LIMIT = 60


def exporter_config(sim: Simulator, base: str) -> str:
    accounts = ""
    for case, users in CASES.items():
        dialogs = "".join(f"      - {{name: d-{user}, user_id: {user}}}\n" for user in users)
        accounts += f"""\
  - name: {case}
    provider: stream
    base_url: {base}
    api_key: {sim.stream.api_key}
    api_secret: {sim.stream.api_secret}
    dialogs:
{dialogs}"""
    return "accounts:\n" + accounts


def calls(sim: Simulator) -> dict[str, tuple[list[str], str]]:
    """Every case both SDKs make: its users and the secret they sign with."""
    made = {case: (users, sim.stream.api_secret) for case, users in CASES.items()}
    for case, refused in ERRORS.items():
        made[case] = (refused.users, refused.secret or sim.stream.api_secret)
    return made


def node_calls(sim: Simulator, recorder: Recorder) -> list[NodeCall]:
    return [
        NodeCall(
            case,
            "stream",
            "getUnreadCount" if len(users) == 1 else "getUnreadCountBatch",
            {
                "base": recorder.case_url(case),
                "apiKey": sim.stream.api_key,
                "apiSecret": secret,
                "userId": users[0],
                "userIds": users,
            },
        )
        for case, (users, secret) in calls(sim).items()
    ]


def python_call(
    base: str, key: str, secret: str, users: list[str]
) -> tuple[Any, tuple[int, int, float] | None]:
    """The stream-chat answer for ``users`` (``unread_counts`` for one, the batch for more),
    with its ``rate_limit()`` as (limit, remaining, reset) when the answer announces one."""
    stream_chat = python_client("stream_chat")
    client = stream_chat.StreamChat(api_key=key, api_secret=secret, base_url=base)
    try:
        if len(users) == 1:
            answer = client.unread_counts(users[0])
        else:
            answer = client.unread_counts_batch(users)
    finally:
        client.session.close()
    limit = answer.rate_limit()
    if limit is None:
        return dict(answer), None
    return dict(answer), (limit.limit, limit.remaining, limit.reset.timestamp())


def run_python(sim: Simulator, recorder: Recorder) -> dict[str, Any]:
    """The PyPI SDK's ``{"value", "rate_limit"}`` or ``{"error"}`` for every case."""
    stream_chat = python_client("stream_chat")
    outcomes: dict[str, Any] = {}
    for case, (users, secret) in calls(sim).items():
        base = recorder.case_url(case)
        try:
            value, limit = python_call(base, sim.stream.api_key, secret, users)
        except stream_chat.base.exceptions.StreamAPIException as exc:
            outcomes[case] = {"error": {"status": exc.status_code, "code": exc.error_code}}
        else:
            outcomes[case] = {"value": value, "rate_limit": limit}
    return outcomes


@dataclass
class StreamRun(ClientsRun):
    secret: str = ""  # the app secret the simulator checks tokens against


async def collect(node: str, sim: Simulator, recorder: Recorder) -> StreamRun:
    def limited(limit: int) -> Callable[[], AbstractContextManager[None]]:
        # a window of its own for each request, so every reader sees the same remaining count
        return lambda: setting(sim.stream, rate_limit=RateWindow(limit=limit, seconds=600))

    recorder.during["one-user"] = limited(RATE_LIMIT)
    recorder.during["rate-limit-one"] = recorder.during["rate-limit-batch"] = limited(0)
    recorder.during["error-not-enabled"] = partial(setting, sim.stream, unread_enabled=False)
    run = StreamRun(secret=sim.stream.api_secret)
    await run.record(
        recorder,
        (exporter_config(sim, recorder.url), CASES),
        (node, node_calls(sim, recorder)),
        partial(run_python, sim, recorder),
    )
    return run


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> StreamRun:
    python_client("stream_chat")
    return collected(tmp_path_factory, "stream", populate_reach, collect)


COMPARED = [(reference, case) for reference in (STREAM_NODE, STREAM_PYTHON) for case in CASES]


def comparisons(run: StreamRun) -> dict[tuple[str, str], Comparison]:
    found = {}
    for reference, case in COMPARED:
        client = run.node if reference == STREAM_NODE else run.python
        exporter = sole(run.exporter[case])
        assert (exporter.fields["method"], exporter.fields["path"]) == PATHS[case]
        found[reference, case] = Comparison(case, reference, sole(client[case]), exporter)
    return found


@pytest.mark.parametrize(("reference", "case"), COMPARED)
def test_exporter_request_is_the_official_sdks(run: StreamRun, reference: str, case: str) -> None:
    assert_conformant(comparisons(run)[reference, case], ALLOW_LIST)


def test_no_allow_list_entry_is_stale(run: StreamRun) -> None:
    assert_no_stale_entry(comparisons(run), ALLOW_LIST)


def test_the_exporters_token_is_the_server_jwt(run: StreamRun) -> None:
    """One token for every request, which PyJWT verifies against the app secret; the
    comparisons above find the SDKs' tokens byte for byte equal to it."""
    jwt = python_client("jwt")
    tokens = {sole(run.exporter[case]).fields["header:authorization"] for case in CASES}
    assert len(tokens) == 1
    [token] = tokens
    assert jwt.decode(token, run.secret, algorithms=["HS256"]) == {"server": True}
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT"}


def test_python_sdk_reads_one_users_counts_and_rate_limit(run: StreamRun) -> None:
    one = run.python_outcomes["one-user"]
    assert one["value"]["total_unread_count"] == 16
    by_type = {
        t["channel_type"]: (t["channel_count"], t["unread_count"])
        for t in one["value"]["channel_type"]
    }
    assert by_type == {"messaging": (2, 7), "livestream": (1, 9)}
    assert one["rate_limit"] is not None
    limit, remaining, reset = one["rate_limit"]
    assert (limit, remaining) == (RATE_LIMIT, RATE_LIMIT - 1)
    assert reset > 1_700_000_000


@pytest.mark.parametrize("outcomes", ["node_outcomes", "python_outcomes"])
def test_sdks_read_the_batch(run: StreamRun, outcomes: str) -> None:
    counts = getattr(run, outcomes)["several-users"]["value"]["counts_by_user"]
    totals = {user: c["total_unread_count"] for user, c in counts.items()}
    assert totals == {"agent-42": 16, "agent-7": 2}


@pytest.mark.parametrize("outcomes", ["node_outcomes", "python_outcomes"])
@pytest.mark.parametrize("case", sorted(ERRORS))
def test_sdks_read_the_error_envelope(run: StreamRun, outcomes: str, case: str) -> None:
    refused = ERRORS[case]
    error = getattr(run, outcomes)[case].get("error")
    assert error == {"status": refused.status, "code": refused.code}
