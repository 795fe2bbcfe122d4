"""QuickBlox against its official JavaScript SDK (npm quickblox), in both directions.

The exporter's session requests (with and without a user) must sign exactly as the SDK does
for the same nonce and timestamp, and its unread requests and dialog-list pages
(``group_by: dialog``) with ``QB-Token`` must equal the SDK's. The SDK has no API-key mode
for unread counts (only its AI module takes an API key), so ``Authorization: ApiKey`` with
``On-Behalf-Of`` is compared with the document's form. The SDK must also read the simulator's
sessions, counts, dialog-list pages and errors.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from typing import Any

import pytest

from exporter.simulator import Fault, Simulator
from tests.conformance.allowlist import ALLOW_LIST, QUICKBLOX_DOCS, QUICKBLOX_JS
from tests.conformance.harness import (
    Comparison,
    NodeCall,
    Recorded,
    Recorder,
    assert_conformant,
    assert_no_stale_entry,
    by_case,
    collected,
    decode,
    only,
    probe_each,
    run_node,
    setting,
)
from tests.support import QB_DIALOGS, QB_USER, populate

SESSION = "/session.json"
UNREAD = "/chat/Message/unread.json"
DIALOGS = "/chat/Dialog.json"
TOKEN = "conformance-session-token"
LOGIN, PASSWORD = "agent", "agent-password"  # populate()'s QuickBlox user
IDS = list(QB_DIALOGS)
# Comparison cases the SDK can make: the exporter account, the request, and the SDK call.
SDK_CASES: dict[str, tuple[str, str, str, dict[str, Any]]] = {
    "session-app": ("qb-session-app", "POST", SESSION, {"call": "createSession"}),
    "session-user": (
        "qb-session-user",
        "POST",
        SESSION,
        {"call": "createSession", "login": LOGIN, "password": PASSWORD},
    ),
    "unread-token-ids": (
        "qb-token-ids",
        "GET",
        UNREAD,
        {"call": "unreadCount", "token": TOKEN, "params": {"chat_dialog_ids": IDS}},
    ),
    "unread-token-total": (
        "qb-token-total",
        "GET",
        UNREAD,
        {"call": "unreadCount", "token": TOKEN, "params": {}},
    ),
    "dialogs-token": (
        "qb-token-dialogs",
        "GET",
        DIALOGS,
        {"call": "listDialogs", "token": TOKEN, "params": {"limit": 100, "skip": 0}},
    ),
}
# The API-key requests as docs.quickblox.com/reference/get-unread-message-count gives them: its
# headers table (Authorization: ApiKey, On-Behalf-Of), its query table (chat_dialog_ids, a
# comma-separated list, omitted for the total), and curl's Accept.
DOC_CASES: dict[str, tuple[str, str]] = {
    "unread-apikey-ids": ("qb-apikey-ids", f"chat_dialog_ids={','.join(IDS)}"),
    "unread-apikey-total": ("qb-apikey-total", ""),
}
# The SDK reading the simulator: a session with a user then counts, and each error answer.
READ_CASES: dict[str, dict[str, Any]] = {
    "read-user-ids": {
        "call": "sessionThenUnread",
        "login": LOGIN,
        "password": PASSWORD,
        "params": {"chat_dialog_ids": IDS},
    },
    "read-user-total": {
        "call": "sessionThenUnread",
        "login": LOGIN,
        "password": PASSWORD,
        "params": {},
    },
    "read-app-session": {"call": "createSession"},
    "error-app-session-unread": {"call": "sessionThenUnread", "params": {}},
    "error-signature": {"call": "createSession", "authSecret": "wrong-secret"},
    "error-password": {"call": "createSession", "login": LOGIN, "password": "wrong"},
    "error-lost-session": {"call": "unreadCount", "token": "forgotten-token", "params": {}},
    "read-dialog-list": {"call": "listDialogs", "token": TOKEN, "params": {"limit": 2}},
    "error-unknown-route": {"call": "listUsers", "token": TOKEN},
    "rate-limit": {"call": "unreadCount", "token": TOKEN, "params": {}},
}
# QuickBlox documents 429 "Rate limit for your current plan is exceeded" (quickblox.com/
# developers/Errors) but no body; this is its list error form, served as an injected fault.
RATE_LIMIT_BODY = {"errors": ["Rate limit for your current plan is exceeded"]}


def exporter_config(sim: Simulator, base: str) -> str:
    qb = sim.quickblox
    app = f"application_id: {qb.application_id}\n    auth_key: {qb.auth_key}\n"
    app += f"    auth_secret: {qb.auth_secret}"
    api_key = f"api_key: {qb.api_key}\n    on_behalf_of: {QB_USER}"
    ids = "".join(f"      - name: d{i}\n        dialog_id: {d}\n" for i, d in enumerate(IDS))
    total = "      - name: all\n"
    accounts = {
        "qb-session-app": (app, total),
        "qb-session-user": (f"{app}\n    login: {LOGIN}\n    password: {PASSWORD}", total),
        "qb-token-ids": (f"token: {TOKEN}", ids),
        "qb-token-total": (f"token: {TOKEN}", total),
        "qb-token-dialogs": (f"token: {TOKEN}", "      - name: all\n        group_by: dialog\n"),
        "qb-apikey-ids": (api_key, ids),
        "qb-apikey-total": (api_key, total),
    }
    return "accounts:\n" + "".join(
        f"  - name: {name}\n    provider: quickblox\n    base_url: {base}\n    {auth}\n"
        f"    dialogs:\n{dialogs}"
        for name, (auth, dialogs) in accounts.items()
    )


@dataclass(frozen=True)
class QuickBloxRun:
    exporter: dict[str, list[Recorded]]
    sdk: dict[str, list[Recorded]]
    outcomes: dict[str, Any]
    api_key: str
    application_id: int
    started: float
    finished: float


def sdk_calls(
    sim: Simulator, recorder: Recorder, exporter: dict[str, list[Recorded]]
) -> list[NodeCall]:
    qb = sim.quickblox

    def call(case: str, spec: dict[str, Any]) -> NodeCall:
        args: dict[str, Any] = {
            "api": recorder.case_url(case, tls=True).removeprefix("https://"),
            "appId": qb.application_id,
            "authKey": qb.auth_key,
            "authSecret": qb.auth_secret,
            **spec,
        }
        return NodeCall(case, "quickblox", args.pop("call"), args)

    calls = []
    for case, (account, method, path, spec) in SDK_CASES.items():
        if method == "POST":  # sign with the nonce and timestamp the exporter used
            form = only(exporter[account], method, path).fields
            spec = {**spec, "nonce": int(form["form:nonce"][0])}
            spec["timestamp"] = int(form["form:timestamp"][0])
        calls.append(call(case, spec))
    return calls + [call(case, spec) for case, spec in READ_CASES.items()]


def prepare(sim: Simulator) -> None:
    populate(sim)
    sim.quickblox.sessions[TOKEN] = QB_USER


async def collect(node: str, sim: Simulator, recorder: Recorder) -> QuickBloxRun:
    fault = Fault.answer(429, RATE_LIMIT_BODY)
    recorder.during["rate-limit"] = partial(setting, sim.quickblox, fault=fault)
    accounts = [account for account, *_ in SDK_CASES.values()]
    accounts += [account for account, _ in DOC_CASES.values()]
    exporter = await probe_each(exporter_config(sim, recorder.url), accounts, recorder)
    started = time.time()
    outcomes = await run_node(node, sdk_calls(sim, recorder, exporter), recorder)
    finished = time.time()
    return QuickBloxRun(
        exporter,
        by_case(recorder.take()),
        outcomes,
        sim.quickblox.api_key,
        sim.quickblox.application_id,
        started,
        finished,
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> QuickBloxRun:
    return collected(tmp_path_factory, "quickblox", prepare, collect)


def documented(run: QuickBloxRun, query: str) -> Recorded:
    headers = {
        "Accept": "*/*",
        "Authorization": f"ApiKey {run.api_key}",
        "On-Behalf-Of": str(QB_USER),
    }
    return Recorded(None, decode("GET", UNREAD, query, headers, b""))


def comparisons(run: QuickBloxRun) -> dict[str, Comparison]:
    """Each case's comparison: with the SDK's request, or with the document's form."""
    found = {
        case: Comparison(
            case,
            QUICKBLOX_JS,
            only(run.sdk[case], method, path),
            only(run.exporter[account], method, path),
        )
        for case, (account, method, path, _) in SDK_CASES.items()
    }
    for case, (account, query) in DOC_CASES.items():
        exporter = only(run.exporter[account], "GET", UNREAD)
        found[case] = Comparison(case, QUICKBLOX_DOCS, documented(run, query), exporter)
    return found


@pytest.mark.parametrize("case", [*SDK_CASES, *DOC_CASES])
def test_exporter_request_is_the_sdks_or_the_documents(run: QuickBloxRun, case: str) -> None:
    assert_conformant(comparisons(run)[case], ALLOW_LIST)


def test_session_signatures_are_equal_for_the_same_nonce_and_timestamp(run: QuickBloxRun) -> None:
    """Spelled out although the form comparison covers it: the signature is what QuickBlox
    checks, and a nonce or timestamp that differed would make the comparison meaningless."""
    for case in ("session-app", "session-user"):
        account = SDK_CASES[case][0]
        sdk = only(run.sdk[case], "POST", SESSION).fields
        exporter = only(run.exporter[account], "POST", SESSION).fields
        for name in ("form:nonce", "form:timestamp", "form:signature"):
            assert sdk[name] == exporter[name], (case, name)


def test_no_allow_list_entry_is_stale(run: QuickBloxRun) -> None:
    assert_no_stale_entry(comparisons(run), ALLOW_LIST)


def test_sdk_reads_counts_of_listed_dialogs(run: QuickBloxRun) -> None:
    """``total`` counts the listed dialogs, as the official docs' example (2 + 3 = 5) shows."""
    outcome = run.outcomes["read-user-ids"]
    assert "value" in outcome, outcome
    assert outcome["value"]["userId"] == QB_USER
    assert outcome["value"]["unread"] == {IDS[0]: 4, IDS[1]: 0, "total": 4}


def test_sdk_reads_the_users_total(run: QuickBloxRun) -> None:
    outcome = run.outcomes["read-user-total"]
    assert outcome["value"]["unread"] == {"total": 7}


def test_sdk_reads_the_session_expiry(run: QuickBloxRun) -> None:
    """The SDK parses ``QB-Token-ExpirationDate`` (minus its one-minute margin): the format
    must be the one real answers carry, or the SDK's expiry is an invalid date (null here)."""
    expires = run.outcomes["read-user-total"]["value"]["expires"]
    assert expires is not None, "the SDK could not parse QB-Token-ExpirationDate"
    assert run.started + 7200 - 60 - 1 <= expires <= run.finished + 7200 - 60


def test_sdk_reads_an_application_session(run: QuickBloxRun) -> None:
    session = run.outcomes["read-app-session"]["value"]["session"]
    assert session["user_id"] == 0
    assert session["application_id"] == run.application_id


def test_sdk_reads_a_page_of_the_dialog_list(run: QuickBloxRun) -> None:
    """The SDK pages by ``limit``/``skip`` and reads ``items`` and ``total_entries``."""
    page = run.outcomes["read-dialog-list"]["value"]
    assert page["total_entries"] == 3
    assert [(d["_id"], d["unread_messages_count"]) for d in page["items"]] == [
        (IDS[0], 4),
        (IDS[1], 0),
    ]


ERRORS: dict[str, tuple[int, Any]] = {
    "error-app-session-unread": (403, {"base": ["Forbidden. Need user."]}),
    "error-signature": (422, {"base": ["Unexpected signature"]}),
    "error-password": (401, ["Unauthorized"]),
    "error-lost-session": (401, {"base": ["Required session does not exist"]}),
    "error-unknown-route": (404, ["The resource wasn't found"]),
    "rate-limit": (429, RATE_LIMIT_BODY["errors"]),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_sdk_reads_the_error_envelope(run: QuickBloxRun, case: str) -> None:
    outcome = run.outcomes[case]
    assert "error" in outcome, outcome
    assert (outcome["error"]["code"], outcome["error"]["detail"]) == ERRORS[case]
