"""Every upstream failure kind, injected into one provider at a time, stays with that provider.

The scrape still answers 200 in time, the failing provider's dialogs are ``up 0`` with no value
series, its errors counter names the reason, and every other provider's dialogs are unaffected.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from exporter.simulator import Fault, Simulator
from tests.support import (
    BUILT_IN_PROVIDERS,
    QB_DIALOGS,
    ZENDESK_VIEW,
    ScrapeClient,
    config_yaml,
    dialog_values,
    errors_of,
    every_provider_yaml,
    fake,
    get_metrics,
    parse,
)

PROVIDERS = BUILT_IN_PROVIDERS
VALUE_METRICS = (
    "chat_unread_messages",
    "chat_unread_mentions",
    "chat_unread_invitations",
    "chat_unread_conversations",
    "chat_unread_oldest_unread_timestamp_seconds",
)
# The series that shows a provider's dialogs are served (Intercom, Zendesk, most Chatwoot
# dialogs count no messages)
SERVED_METRIC = {
    "intercom": "chat_unread_conversations",
    "chatwoot": "chat_unread_conversations",
    "zendesk": "chat_unread_conversations",
}
MATRIX_ERRCODES = {401: "M_UNKNOWN_TOKEN", 403: "M_FORBIDDEN", 404: "M_NOT_FOUND"}

SB_KEYS = (
    "group_channel_unread_message_count",
    "group_channel_unread_mention_count",
    "group_channel_invitation_count",
    "non_super_group_channel_unread_message_count",
    "non_super_group_channel_unread_mention_count",
    "non_super_group_channel_invitation_count",
)


def success_body_with(provider: str, bad: Any) -> Any:
    """A 200 body in the provider's own shape whose counts are ``bad``."""
    if provider == "crisp":
        conversation = {"unread": {"operator": bad, "visitor": bad}, "waiting_since": 1}
        return {"error": False, "reason": "resolved", "data": conversation}
    if provider == "quickblox":
        return {QB_DIALOGS[0]: bad, QB_DIALOGS[1]: bad, "total": bad}
    if provider == "imkit":
        return {"RC": 0, "RM": "OK", "result": {"badge": bad}}
    if provider == "intercom":
        conversation = {"id": "1", "waiting_since": bad}
        return {"type": "conversation.list", "total_count": bad, "conversations": [conversation]}
    if provider == "stream":
        counts = {
            "total_unread_count": bad,
            "channel_type": [
                {"channel_type": kind, "channel_count": 1, "unread_count": bad}
                for kind in ("messaging", "team")
            ],
        }
        return {"counts_by_user": {"agent-42": counts, "agent-7": counts}}
    if provider == "chatwoot":
        # the counts (conversations/meta) and a list page (conversations) in one body; the
        # grouped live report, an array, refuses any object
        meta = {"mine_count": bad, "unassigned_count": bad, "assigned_count": bad, "all_count": bad}
        listed = {"id": 1, "inbox_id": 7, "unread_count": bad, "waiting_since": bad}
        return {"meta": meta, "data": {"meta": meta, "payload": [listed]}}
    if provider == "matrix":
        counts = {"notification_count": bad, "highlight_count": bad}
        return {"next_batch": "s1", "rooms": {"join": {"!a:x": {"unread_notifications": counts}}}}
    if provider == "zendesk":  # one body for the view count and the search alike
        views = [{"view_id": ZENDESK_VIEW, "value": bad, "fresh": True}]
        return {"view_counts": views, "count": bad, "results": [{"created_at": bad}]}
    return dict.fromkeys(SB_KEYS, bad)


def error_body(provider: str, status: int) -> Any:
    """The provider's documented error envelope for ``status``."""
    if provider == "crisp":
        return {"error": True, "reason": "invalid_session", "data": {}}
    if provider == "quickblox":
        return {"errors": ["Unauthorized"]} if status == 401 else {"errors": {"base": ["boom"]}}
    if provider == "imkit":
        return {"RC": status, "RM": "Error", "error": {"code": "X", "message": "boom"}}
    if provider == "intercom":
        code = "rate_limit_exceeded" if status == 429 else "boom"
        return {"type": "error.list", "errors": [{"code": code, "message": "boom"}]}
    if provider == "stream":
        stream_code = {429: 9, 401: 5, 403: 17, 404: 16}.get(status, 4 if status < 500 else -1)
        return {"code": stream_code, "message": "boom", "StatusCode": status, "duration": "0.1ms"}
    if provider == "chatwoot":
        # Rack::Attack's throttle answers plain text; the controllers ``{"error": message}``
        return "Retry later\n" if status == 429 else {"error": "boom"}
    if provider == "matrix":
        if status == 429:
            return {
                "errcode": "M_LIMIT_EXCEEDED",
                "error": "Too Many Requests",
                "retry_after_ms": 500,
            }
        return {"errcode": MATRIX_ERRCODES.get(status, "M_UNKNOWN"), "error": "boom"}
    if provider == "zendesk":
        return {"error": "APIRateLimitExceeded" if status == 429 else "boom", "description": "x"}
    return {"message": "boom", "code": 500910 if status == 429 else 400999, "error": True}


FAILURES: dict[str, tuple[Callable[[str], Fault], str]] = {
    "http_500": (lambda p: Fault.answer(500, error_body(p, 500)), "http_5xx"),
    "html_502": (lambda p: Fault.answer(502, "<html><body>Bad gateway</body></html>"), "http_5xx"),
    "http_429": (lambda p: Fault.answer(429, error_body(p, 429)), "rate_limited"),
    "http_401": (lambda p: Fault.answer(401, error_body(p, 401)), "auth"),
    "http_403": (lambda p: Fault.answer(403, error_body(p, 403)), "auth"),
    "http_404": (lambda p: Fault.answer(404, error_body(p, 404)), "not_found"),
    "http_400": (lambda p: Fault.answer(400, error_body(p, 400)), "http_4xx"),
    "html_200": (lambda p: Fault.answer(200, "<html>maintenance</html>"), "bad_response"),
    "truncated_json": (lambda p: Fault.answer(200, b'{"total": 3, "5d7'), "bad_response"),
    "string_number": (lambda p: Fault.answer(200, success_body_with(p, "3")), "bad_response"),
    "null_number": (lambda p: Fault.answer(200, success_body_with(p, None)), "bad_response"),
    "negative_number": (lambda p: Fault.answer(200, success_body_with(p, -1)), "bad_response"),
    "float_number": (lambda p: Fault.answer(200, success_body_with(p, 2.5)), "bad_response"),
    "huge_body": (lambda p: Fault.huge(), "bad_response"),
    "reset_connection": (lambda p: Fault.reset(), "connection"),
    "hang": (lambda p: Fault.hang(), "timeout"),
}


@pytest.mark.parametrize("failure", sorted(FAILURES))
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_failure_stays_with_its_provider(
    sim: Simulator, scrape_client: ScrapeClient, provider: str, failure: str
) -> None:
    make_fault, reason = FAILURES[failure]
    client = await scrape_client(every_provider_yaml(sim))
    fake(sim, provider).fault = make_fault(provider)

    started = time.monotonic()
    response = await client.get("/metrics", headers={"X-Prometheus-Scrape-Timeout-Seconds": "1.5"})
    elapsed = time.monotonic() - started
    assert response.status == 200
    assert elapsed < 1.5  # the deadline (1.5 s minus the offset) bounds even a hanging upstream
    samples = parse(await response.text())

    ups = dialog_values(samples, "chat_unread_up", provider)
    assert ups
    assert set(ups.values()) == {0.0}
    for metric in VALUE_METRICS:
        assert dialog_values(samples, metric, provider) == {}
    errors = errors_of(samples, provider, reason)
    assert errors is not None
    assert errors >= 1
    for other in PROVIDERS:
        if other != provider:
            assert set(dialog_values(samples, "chat_unread_up", other).values()) == {1.0}
            assert dialog_values(samples, SERVED_METRIC.get(other, "chat_unread_messages"), other)


async def test_crisp_backlog_page_with_a_string_count_is_refused(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    client = await scrape_client(config_yaml(sim))
    page = {"error": False, "reason": "resolved", "data": [{"unread": {"operator": "7"}}]}
    sim.crisp.fault = Fault.answer(200, page, path_contains="/conversations/")
    samples = await get_metrics(client)
    assert dialog_values(samples, "chat_unread_up", "crisp") == {
        "backlog": 0.0,
        "vip-visitor": 1.0,
        "vip-operator": 1.0,
    }


async def test_crisp_420_enhance_your_calm_is_a_rate_limit(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    client = await scrape_client(config_yaml(sim))
    sim.crisp.fault = Fault.answer(420, {"error": True, "reason": "rate_limited", "data": {}})
    samples = await get_metrics(client)
    errors = errors_of(samples, "crisp", "rate_limited")
    assert errors == 3.0


async def test_imkit_rc_error_under_http_200_is_an_error(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    client = await scrape_client(config_yaml(sim))
    sim.imkit.fault = Fault.answer(200, {"RC": 401, "RM": "Unauthorized"})
    samples = await get_metrics(client)
    assert set(dialog_values(samples, "chat_unread_up", "imkit").values()) == {0.0}
    auth = errors_of(samples, "imkit", "auth")
    assert auth == 3.0


async def test_sendbird_unknown_user_is_not_found(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    del sim.sendbird.channels["agent-42"]
    client = await scrape_client(config_yaml(sim))
    samples = await get_metrics(client)
    errors = errors_of(samples, "sendbird", "not_found")
    assert errors == 2.0  # Sendbird answers 400 with code 400201; the code decides the reason


async def test_sendbird_wrong_token_is_auth(sim: Simulator, scrape_client: ScrapeClient) -> None:
    client = await scrape_client(config_yaml(sim).replace(sim.sendbird.api_token, "wrong-token"))
    samples = await get_metrics(client)
    auth = errors_of(samples, "sendbird", "auth")
    assert auth == 2.0


async def test_unknown_crisp_website_is_not_found(
    sim: Simulator, scrape_client: ScrapeClient
) -> None:
    sim.crisp.websites = {}
    client = await scrape_client(config_yaml(sim))
    samples = await get_metrics(client)
    found = errors_of(samples, "crisp", "not_found")
    assert found == 3.0
