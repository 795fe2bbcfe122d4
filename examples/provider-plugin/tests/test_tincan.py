"""The Tincan provider against its simulator, over loopback HTTP, as the exporter runs it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from exporter.providers.base import FetchError, Outcome, Reading, Reason
from exporter.upstream import Upstream, UpstreamPool

from chat_unread_tincan.provider import PROVIDER, TincanAccount
from chat_unread_tincan.simulator import FakeTincan

KEY = "tincan-test-key-123"
ServerFactory = Callable[..., Awaitable[TestServer]]


async def fetch(url: str, dialogs: list[dict[str, Any]], key: str = KEY) -> dict[str, Outcome]:
    """One refresh of an account with ``dialogs``, as the exporter would make it."""
    account = TincanAccount.model_validate(
        {"name": "t", "provider": "tincan", "base_url": url, "api_key": key, "dialogs": dialogs}
    )
    outcomes: dict[str, Outcome] = {}
    pool = UpstreamPool(limit=10, headers={})
    try:
        fetcher = PROVIDER.make_fetcher(account, Upstream(pool, account, envelope=PROVIDER))
        await fetcher.fetch(account.dialogs, outcomes.__setitem__)
    finally:
        await pool.close()
    return outcomes


@pytest.fixture
async def tincan(aiohttp_server: ServerFactory) -> tuple[FakeTincan, str]:
    fake = FakeTincan(KEY)
    server = await aiohttp_server(fake.make_app())
    return fake, str(server.make_url("")).rstrip("/")


async def test_values_come_from_each_agents_inbox(tincan: tuple[FakeTincan, str]) -> None:
    fake, url = tincan
    fake.set_inbox("alice", messages=5, mentions=2, threads=3, oldest=1_700_000_123)
    fake.set_inbox("alice", messages=1, queue="billing")
    dialogs = [
        {"name": "alice", "agent_id": "alice"},
        {"name": "alice-billing", "agent_id": "alice", "queue": "billing"},
    ]
    outcomes = await fetch(url, dialogs)
    assert outcomes == {
        "alice": Reading(5, mentions=2, conversations=3, oldest_unread_timestamp=1_700_000_123),
        "alice-billing": Reading(1, mentions=0, conversations=0),
    }
    assert {"queue": "billing"} in fake.seen_queries


@pytest.mark.parametrize(
    ("setup", "key", "reason", "detail"),
    [
        (
            lambda fake: None,
            "wrong-key-456",
            Reason.AUTH,
            "HTTP 401: unauthorized; missing or wrong Tincan-Key",
        ),
        (lambda fake: None, KEY, Reason.NOT_FOUND, "HTTP 404: not_found; no inbox for agent carol"),
        (
            lambda fake: setattr(fake, "rate_limited", 1),
            KEY,
            Reason.RATE_LIMITED,
            "HTTP 429: rate_limited; slow down (retry in 30s)",
        ),
    ],
    ids=["wrong key", "unknown agent", "throttled"],
)
async def test_errors_are_classified_per_dialog(
    tincan: tuple[FakeTincan, str],
    setup: Callable[[FakeTincan], None],
    key: str,
    reason: Reason,
    detail: str,
) -> None:
    fake, url = tincan
    fake.set_inbox("bob", messages=2)
    setup(fake)
    outcome = (await fetch(url, [{"name": "x", "agent_id": "carol"}], key))["x"]
    assert isinstance(outcome, FetchError)
    assert outcome.reason is reason
    assert outcome.detail == detail  # read with the provider's own error_messages
    assert key not in outcome.detail


async def test_a_negative_count_is_a_bad_response(tincan: tuple[FakeTincan, str]) -> None:
    fake, url = tincan
    fake.set_inbox("dave", messages=-1)
    outcome = (await fetch(url, [{"name": "d", "agent_id": "dave"}]))["d"]
    assert isinstance(outcome, FetchError)
    assert outcome.reason is Reason.BAD_RESPONSE
