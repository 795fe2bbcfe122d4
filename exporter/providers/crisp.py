"""Crisp: unread messages of one conversation, or the whole website's support backlog.

REST API v1 with HTTP Basic ``identifier:key`` and the ``X-Crisp-Tier`` header. Answers come in
the ``{"error": bool, "reason": str, "data": ...}`` envelope; 420 and 429 are rate limits.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any, ClassVar, Literal, Self
from urllib.parse import quote

from pydantic import Field, SecretStr, model_validator

from exporter.envelope import entries_at, scalars
from exporter.models import AccountConfig, DialogConfig
from exporter.providers.base import (
    FetchError,
    Provider,
    Reading,
    Reason,
    Record,
    checked_sum,
    count,
    fetch_each,
)
from exporter.upstream import Upstream

# Crisp allows 20..50 conversations a page; the largest page means the fewest requests.
PAGE_SIZE = 50
# A backlog of more than 10,000 open unread conversations is treated as an answer we cannot
# page through within a scrape, rather than looping without end on a misbehaving API.
MAX_PAGES = 200


class CrispDialog(DialogConfig):
    """``session_id`` set: one conversation; unset: the website's open conversations."""

    session_id: str | None = Field(default=None, min_length=1)
    side: Literal["visitor", "operator"] | None = None

    @model_validator(mode="after")
    def _side_needs_session(self) -> Self:
        if self.side is not None and self.session_id is None:
            raise ValueError("side applies only to a dialog with a session_id")
        return self


class CrispAccount(AccountConfig):
    """A Crisp website read with a plugin or website token."""

    secret_fields: ClassVar[tuple[str, ...]] = ("identifier", "key")
    default_base_url: ClassVar[str] = "https://api.crisp.chat"

    provider: Literal["crisp"]
    website_id: str = Field(min_length=1)
    tier: Literal["plugin", "website"] = "plugin"
    identifier: SecretStr
    key: SecretStr
    dialogs: tuple[CrispDialog, ...] = Field(min_length=1)


def _data(body: Any) -> Any:
    """Unwrap Crisp's envelope; ``error: true`` under a 2xx status is still an error."""
    if not isinstance(body, dict) or "data" not in body:
        raise FetchError(Reason.BAD_RESPONSE, "answer lacks the Crisp data envelope")
    if body.get("error") is True:
        raise FetchError(Reason.BAD_RESPONSE, f"Crisp error: {body.get('reason')}")
    return body["data"]


def error_messages(body: Any) -> list[str]:
    """Crisp's error envelope: ``{"error": true, "reason", "data": {"message"}}``."""
    return [*scalars(body, "reason"), *entries_at(body, "data")]


def _unread(conversation: Any, side: str) -> int:
    """A conversation's ``unread.<side>``, the same for one conversation and for the list."""
    if not isinstance(conversation, dict):
        raise FetchError(Reason.BAD_RESPONSE, "conversation is not an object")
    unread = conversation.get("unread")
    if unread is None or (isinstance(unread, dict) and side not in unread):
        return 0  # Crisp omits the counter when nothing is unread on that side
    if not isinstance(unread, dict):
        raise FetchError(Reason.BAD_RESPONSE, "conversation's unread is not an object")
    return count(unread, side)


class CrispFetcher:
    """Fetches a Crisp account's dialogs, one request chain per dialog."""

    def __init__(self, account: CrispAccount, upstream: Upstream) -> None:
        credentials = f"{account.identifier.get_secret_value()}:{account.key.get_secret_value()}"
        token = base64.b64encode(credentials.encode()).decode()
        upstream.redactor.derived(token)  # an echoed header shows neither configured text
        self._headers = {"Authorization": f"Basic {token}", "X-Crisp-Tier": account.tier}
        self._website_url = f"{account.api_root()}/v1/website/{quote(account.website_id, safe='')}"
        self._upstream = upstream

    async def fetch(self, dialogs: Sequence[CrispDialog], record: Record) -> None:
        # Backlog pages are fetched one after another: start that chain first so it is not
        # queued behind single conversations, as it bounds how soon the account is done.
        ordered = sorted(dialogs, key=lambda dialog: dialog.session_id is not None)
        await fetch_each(ordered, record, self._fetch_dialog, self._upstream.max_concurrency)

    async def _fetch_dialog(self, dialog: CrispDialog) -> Reading:
        if dialog.session_id is None:
            return await self._backlog()
        url = f"{self._website_url}/conversation/{quote(dialog.session_id, safe='')}"
        response = await self._upstream.request("GET", url, headers=self._headers)
        return Reading(messages=_unread(_data(response.body), dialog.side or "visitor"))

    async def _backlog(self) -> Reading:
        """Sum unread operator messages over every open conversation with unread messages."""
        unread_counts: list[int] = []
        oldest_ms: int | None = None
        params = {"filter_unread": "1", "filter_not_resolved": "1", "per_page": str(PAGE_SIZE)}
        for page in range(1, MAX_PAGES + 1):
            url = f"{self._website_url}/conversations/{page}"
            response = await self._upstream.request(
                "GET", url, params=params, headers=self._headers
            )
            items = _data(response.body)
            if not isinstance(items, list):
                raise FetchError(Reason.BAD_RESPONSE, "conversation list is not a list")
            for conversation in items:
                unread = _unread(conversation, "operator")
                if unread == 0:
                    continue
                unread_counts.append(unread)
                if conversation.get("waiting_since") is not None:  # null: nobody waits
                    waiting = count(conversation, "waiting_since")  # refuses 400-digit junk
                    if waiting > 0:
                        oldest_ms = waiting if oldest_ms is None else min(oldest_ms, waiting)
            if len(items) < PAGE_SIZE:
                return Reading(
                    messages=checked_sum(unread_counts, "conversations' unread messages"),
                    conversations=len(unread_counts),
                    oldest_unread_timestamp=oldest_ms / 1000 if oldest_ms is not None else None,
                )
        raise FetchError(Reason.BAD_RESPONSE, f"backlog longer than {MAX_PAGES} pages")


PROVIDER = Provider(
    name="crisp",
    account_model=CrispAccount,
    make_fetcher=CrispFetcher,
    error_messages=error_messages,
)
