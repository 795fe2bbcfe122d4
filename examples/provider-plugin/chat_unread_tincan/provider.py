"""Tincan: an agent's inbox (unread messages, mentions, waiting threads and the oldest wait).

One ``GET /api/v2/agents/{agent_id}/inbox[?queue=NAME]`` per dialog, authenticated with
``Authorization: Tincan-Key <key>``. Everything HTTP (timeouts, the body cap, 429 back-off,
classifying errors, redacting the key) is the exporter's ``Upstream``; this module only builds
the request and reads the answer, which is all a provider should have to do.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal
from urllib.parse import quote

from exporter.models import AccountConfig, DialogConfig
from exporter.providers.base import (
    FetchError,
    Provider,
    Reading,
    Reason,
    Record,
    count,
    fetch_each,
    scalars,
)
from exporter.upstream import Upstream
from pydantic import Field, SecretStr


class TincanDialog(DialogConfig):
    """One agent's inbox, optionally only one queue of it."""

    agent_id: str = Field(min_length=1)
    queue: str | None = Field(default=None, min_length=1)


class TincanAccount(AccountConfig):
    """A Tincan workspace, read with one API key."""

    secret_fields: ClassVar[tuple[str, ...]] = ("api_key",)
    default_base_url: ClassVar[str] = "https://api.tincan.example"

    provider: Literal["tincan"]
    api_key: SecretStr
    dialogs: tuple[TincanDialog, ...] = Field(min_length=1)


def _oldest_wait(inbox: Any) -> float | None:
    """``oldest_waiting_at`` is unix seconds, or null when nothing waits (no series then)."""
    value = inbox.get("oldest_waiting_at")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise FetchError(Reason.BAD_RESPONSE, "field inbox.oldest_waiting_at is not a timestamp")
    return float(value)


def error_messages(body: Any) -> list[str]:
    """Tincan's error envelope, ``{"error": {"type", "message"}}``: the type names the failure
    (the exporter's default would read only the message, as it looks for ``code``)."""
    return scalars(body.get("error") if isinstance(body, dict) else None, "type", "message")


class TincanFetcher:
    """Fetches a Tincan account's dialogs, one request per dialog, a few at a time."""

    def __init__(self, account: TincanAccount, upstream: Upstream) -> None:
        self._headers = {"Authorization": f"Tincan-Key {account.api_key.get_secret_value()}"}
        self._agents_url = f"{account.api_root()}/api/v2/agents"
        self._upstream = upstream

    async def fetch(self, dialogs: Sequence[TincanDialog], record: Record) -> None:
        await fetch_each(dialogs, record, self._fetch_dialog, self._upstream.max_concurrency)

    async def _fetch_dialog(self, dialog: TincanDialog) -> Reading:
        params = {"queue": dialog.queue} if dialog.queue is not None else None
        url = f"{self._agents_url}/{quote(dialog.agent_id, safe='')}/inbox"
        response = await self._upstream.request("GET", url, params=params, headers=self._headers)
        inbox = response.body.get("inbox") if isinstance(response.body, dict) else None
        if not isinstance(inbox, dict):
            raise FetchError(Reason.BAD_RESPONSE, "answer has no inbox object")
        return Reading(
            messages=count(inbox, "unread_messages"),
            mentions=count(inbox, "unread_mentions"),
            conversations=count(inbox, "waiting_threads"),
            oldest_unread_timestamp=_oldest_wait(inbox),
        )


PROVIDER = Provider(
    name="tincan",
    account_model=TincanAccount,
    make_fetcher=TincanFetcher,
    error_messages=error_messages,
)
