"""Intercom: the backlog of open conversations waiting on the team, a team or a teammate.

One ``POST /conversations/search`` answers a backlog: ``state = open`` and ``waiting_since``
set (Intercom sets it when a contact writes and clears it when a teammate replies, so these are
the conversations waiting on the team), sorted by ``waiting_since`` ascending. Its
``total_count`` is the number of waiting conversations and its first conversation is the one
waiting longest, so one page answers a backlog of any size. Intercom has no count of unread
messages, so ``chat_unread_messages`` stays absent for these dialogs.

An account with several dialogs first asks for the whole backlog in one page of the largest
size; when that page holds every waiting conversation, each team's and teammate's backlog is
counted from it, and the whole account costs one request. Only a larger backlog costs one more
search per team or teammate dialog.

``sort`` is described in Intercom's "Pagination & Sorting (Search)" guide but absent from the
OpenAPI schema the official SDKs are generated from, so the answer is checked: a page that did
not come back in ascending order means the sort was ignored, and the remaining pages are read
to find the oldest conversation instead of trusting the first one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import BeforeValidator, Field, SecretStr, model_validator

from exporter.envelope import entries_at
from exporter.models import AccountConfig, DialogConfig
from exporter.providers.base import (
    FetchError,
    Provider,
    Reading,
    Reason,
    Record,
    count,
    fetch_each,
    record_all,
)
from exporter.upstream import Upstream

# The newest numbered version, and the one the official Node SDK (intercom-client 7.0.3) sends
# by default. Pinned so that a change of the workspace's default version cannot change the
# shape of the answers under a running exporter.
API_VERSION = "2.14"
REGION_HOSTS = {
    "us": "https://api.intercom.io",
    "eu": "https://api.eu.intercom.io",
    "au": "https://api.au.intercom.io",
}
# Intercom's largest page: the fewer pages, the fewer requests.
PAGE_SIZE = 150
# A backlog walked page by page (only when Intercom ignores the sort) stops here rather than
# looping without end on a misbehaving API: 15,000 waiting conversations.
MAX_PAGES = 100


def _id_text(value: Any) -> Any:
    """Intercom ids are digit strings; accept them unquoted in YAML too (``team_id: 5017691``)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


IntercomId = Annotated[
    str, BeforeValidator(_id_text), Field(min_length=1, max_length=64, pattern=r"^[0-9]+$")
]


class IntercomDialog(DialogConfig):
    """No filter: every waiting conversation; ``team_id`` or ``admin_id``: that assignee's."""

    team_id: IntercomId | None = None
    admin_id: IntercomId | None = None

    @model_validator(mode="after")
    def _one_assignee(self) -> Self:
        if self.team_id is not None and self.admin_id is not None:
            raise ValueError("set team_id or admin_id, not both")
        return self

    @property
    def assignee(self) -> tuple[str, str] | None:
        """The search field and value that pick this dialog's conversations, if any."""
        if self.team_id is not None:
            return ("team_assignee_id", self.team_id)
        if self.admin_id is not None:
            return ("admin_assignee_id", self.admin_id)
        return None


class IntercomAccount(AccountConfig):
    """An Intercom workspace read with an access token, in its data-hosting region."""

    secret_fields: ClassVar[tuple[str, ...]] = ("access_token",)

    provider: Literal["intercom"]
    access_token: SecretStr
    region: Literal["us", "eu", "au"] = "us"
    dialogs: tuple[IntercomDialog, ...] = Field(min_length=1)

    def api_root(self) -> str:
        """The region's API host unless ``base_url`` overrides it."""
        return self.base_url or REGION_HOSTS[self.region]


@dataclass(frozen=True)
class _Waiting:
    """What the exporter reads of one conversation in a search answer."""

    since: int
    team: str | None
    admin: str | None

    def assigned_to(self, assignee: tuple[str, str]) -> bool:
        field, value = assignee
        return (self.team if field == "team_assignee_id" else self.admin) == value


@dataclass(frozen=True)
class _Page:
    """One page of a search answer."""

    total: int
    waiting: tuple[_Waiting, ...]
    next_cursor: str | None

    @property
    def complete(self) -> bool:
        """Whether this page holds every conversation the search matched."""
        return self.next_cursor is None and len(self.waiting) == self.total

    @property
    def ascending(self) -> bool:
        """Whether the page came back sorted as asked (oldest waiting first)."""
        return all(a.since <= b.since for a, b in zip(self.waiting, self.waiting[1:], strict=False))


def _backlog_reading(total: int, waiting: Sequence[_Waiting]) -> Reading:
    oldest = min((w.since for w in waiting), default=None)
    return Reading(
        messages=None,
        conversations=total,
        oldest_unread_timestamp=float(oldest) if oldest is not None else None,
    )


def _optional_id(conversation: dict[str, Any], key: str) -> str | None:
    """``team_assignee_id`` comes as a string, ``admin_assignee_id`` as a number; null: none."""
    value = conversation.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise FetchError(Reason.BAD_RESPONSE, f"conversation {key} is {type(value).__name__}")
    return str(value)


def _parse_page(body: Any) -> _Page:
    total = count(body, "total_count")
    conversations = body.get("conversations")
    if not isinstance(conversations, list):
        raise FetchError(Reason.BAD_RESPONSE, "conversations is not a list")
    waiting = []
    for conversation in conversations:
        if not isinstance(conversation, dict):
            raise FetchError(Reason.BAD_RESPONSE, "conversation is not an object")
        waiting.append(
            _Waiting(
                since=count(conversation, "waiting_since"),
                team=_optional_id(conversation, "team_assignee_id"),
                admin=_optional_id(conversation, "admin_assignee_id"),
            )
        )
    pages = body.get("pages")
    following = pages.get("next") if isinstance(pages, dict) else None
    cursor = following.get("starting_after") if isinstance(following, dict) else None
    if cursor is not None and (not isinstance(cursor, str) or not cursor):
        raise FetchError(Reason.BAD_RESPONSE, "pages.next.starting_after is not a cursor")
    return _Page(total, tuple(waiting), cursor)


class IntercomFetcher:
    """Fetches an Intercom workspace's backlogs with as few searches as their sizes allow."""

    def __init__(self, account: IntercomAccount, upstream: Upstream) -> None:
        self._headers = {
            "Authorization": f"Bearer {account.access_token.get_secret_value()}",
            "Intercom-Version": API_VERSION,
            "Accept": "application/json",
        }
        self._url = f"{account.api_root()}/conversations/search"
        self._upstream = upstream

    async def fetch(self, dialogs: Sequence[IntercomDialog], record: Record) -> None:
        if len(dialogs) == 1:
            await fetch_each(dialogs, record, self._backlog, 1)
            return
        try:
            everything = await self._search(None, None)
        except FetchError as exc:
            record_all(dialogs, record, exc)
            return
        if everything.complete:
            for dialog in dialogs:
                assignee = dialog.assignee
                mine = [
                    w for w in everything.waiting if assignee is None or w.assigned_to(assignee)
                ]
                record(dialog.name, _backlog_reading(len(mine), mine))
            return
        filtered = [dialog for dialog in dialogs if dialog.assignee is not None]
        whole = [dialog for dialog in dialogs if dialog.assignee is None]
        if whole:
            try:
                outcome: Reading | FetchError = await self._finish(None, everything)
            except FetchError as exc:
                outcome = exc
            record_all(whole, record, outcome)
        await fetch_each(filtered, record, self._backlog, self._upstream.max_concurrency)

    async def _backlog(self, dialog: IntercomDialog) -> Reading:
        return await self._finish(dialog.assignee, await self._search(dialog.assignee, None))

    async def _finish(self, assignee: tuple[str, str] | None, first: _Page) -> Reading:
        """The backlog from its first page, reading further pages only if the sort was ignored."""
        if first.next_cursor is None or first.ascending:
            return _backlog_reading(first.total, first.waiting)
        waiting = list(first.waiting)
        cursor = first.next_cursor
        for _ in range(MAX_PAGES - 1):
            page = await self._search(assignee, cursor)
            waiting.extend(page.waiting)
            if page.next_cursor is None:
                return _backlog_reading(first.total, waiting)
            cursor = page.next_cursor
        raise FetchError(Reason.BAD_RESPONSE, f"backlog longer than {MAX_PAGES} pages")

    async def _search(self, assignee: tuple[str, str] | None, cursor: str | None) -> _Page:
        filters: list[dict[str, Any]] = [
            {"field": "state", "operator": "=", "value": "open"},
            {"field": "waiting_since", "operator": ">", "value": 0},
        ]
        if assignee is not None:
            filters.append({"field": assignee[0], "operator": "=", "value": assignee[1]})
        pagination: dict[str, Any] = {"per_page": PAGE_SIZE}
        if cursor is not None:
            pagination["starting_after"] = cursor
        body = {
            "query": {"operator": "AND", "value": filters},
            "pagination": pagination,
            "sort": {"field": "waiting_since", "order": "ascending"},
        }
        response = await self._upstream.request(
            "POST", self._url, headers=self._headers, json_body=body
        )
        return _parse_page(response.body)


def error_messages(body: Any) -> list[str]:
    """Intercom's envelope: ``{"type": "error.list", "errors": [{"code", "message"}]}``."""
    return entries_at(body, "errors")


PROVIDER = Provider(
    name="intercom",
    account_model=IntercomAccount,
    make_fetcher=IntercomFetcher,
    error_messages=error_messages,
)
