"""Each provider reads its own error envelope: the failure detail names what the API said.

A 400 in each provider's documented envelope is injected into its simulator; the probe's debug
output shows the detail the provider's ``error_messages`` hook made of it (``upstream`` names
no provider and reads no envelope itself).
"""

from __future__ import annotations

from typing import Any

import pytest

from exporter.simulator import Fault, Simulator
from tests.support import ACCOUNT_OF, ScrapeClient, every_provider_yaml, fake

ENVELOPES: dict[str, tuple[Any, str]] = {
    "crisp": (
        {"error": True, "reason": "invalid_session", "data": {"message": "session expired"}},
        "invalid_session; session expired",
    ),
    "quickblox": (
        {"errors": {"base": ["Forbidden. Need user."], "login": ["is invalid"]}},
        "Forbidden. Need user.; is invalid",
    ),
    "imkit": (
        {"RC": 400, "RM": "Bad Request", "error": {"code": "INVALID", "message": "bad tags"}},
        "INVALID; bad tags; Bad Request",
    ),
    "sendbird": (
        {"error": True, "code": 400111, "message": "Invalid value"},
        "400111; Invalid value",
    ),
    "intercom": (
        {
            "type": "error.list",
            "request_id": "r-1",
            "errors": [{"code": "parameter_invalid", "message": "bad query"}],
        },
        "parameter_invalid; bad query",
    ),
    "stream": (
        {"code": 4, "message": "GetUnreadCounts failed", "StatusCode": 400, "duration": "0.1ms"},
        "4; GetUnreadCounts failed",
    ),
    "chatwoot": ({"error": "invalid group_by"}, "invalid group_by"),
    "matrix": (
        {"errcode": "M_BAD_JSON", "error": "Content not JSON."},
        "Content not JSON.; M_BAD_JSON",
    ),
    "zendesk": (
        {"error": {"title": "Forbidden", "message": "You do not have access to this page"}},
        "Forbidden; You do not have access to this page",
    ),
}


@pytest.mark.parametrize("provider", sorted(ENVELOPES))
async def test_the_detail_is_read_from_the_providers_envelope(
    sim: Simulator, scrape_client: ScrapeClient, provider: str
) -> None:
    client = await scrape_client(every_provider_yaml(sim))
    body, detail = ENVELOPES[provider]
    fake(sim, provider).fault = Fault.answer(400, body)
    response = await client.get(f"/probe?account={ACCOUNT_OF[provider]}&debug=true")
    lines = [line for line in (await response.text()).splitlines() if line.startswith("  dialog")]
    assert lines
    for line in lines:
        assert line.endswith(f": up 0, http_4xx: HTTP 400: {detail}"), line
