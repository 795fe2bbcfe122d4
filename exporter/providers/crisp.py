"""Crisp: unread messages of one conversation, or the whole website's support backlog.

REST API v1 with HTTP Basic ``identifier:key`` and the ``X-Crisp-Tier`` header. Answers come in
the ``{"error": bool, "reason": str, "data": ...}`` envelope; 420 and 429 are rate limits.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, ClassVar, Literal, Self
from urllib.parse import quote

from pydantic import Field, SecretStr, model_validator

from exporter.envelope import entries_at, scalars
from exporter.models import AccountConfig, GroupingDialog
from exporter.providers.base import (
    Coverage,
    FetchError,
    GroupTally,
    Provider,
    Reading,
    Reason,
    Record,
    count,
    fetch_each,
    nested,
    record_all,
)
from exporter.queues.shared import SharedPass
from exporter.upstream import Response, Upstream

# Crisp allows 20..50 conversations a page; the largest page means the fewest requests.
PAGE_SIZE = 50
# Crisp's documented default and smallest page: an API that ignored ``per_page`` would answer
# pages of this size, so a page this long is not taken for the last one on its own.
SMALLEST_PAGE = 20
# A backlog of more than 10,000 open unread conversations is treated as an answer we cannot
# page through within a scrape, rather than looping without end on a misbehaving API.
MAX_PAGES = 200
# Inbox name pages read per lookup (hourly); a website with more inboxes shows the rest by id.
MAX_NAME_PAGES = 20


class CrispDialog(GroupingDialog):
    """``session_id`` set: one conversation; unset: the website's open conversations (the
    backlog), which can be split by inbox or by assigned operator."""

    group_dimensions: ClassVar[tuple[str, ...]] = ("inbox", "operator")

    session_id: str | None = Field(default=None, min_length=1)
    side: Literal["visitor", "operator"] | None = None

    @model_validator(mode="after")
    def _side_needs_session(self) -> Self:
        if self.side is not None and self.session_id is None:
            raise ValueError("side applies only to a dialog with a session_id")
        if self.group_by is not None and self.session_id is not None:
            raise ValueError("group_by applies only to the backlog (a dialog without session_id)")
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


def _group(conversation: dict[str, Any], group_by: str) -> str | None:
    """The conversation's inbox (``inbox_id``, null: none) or assigned operator
    (``assigned.user_id``, absent: nobody); ``None`` is the ``unassigned`` group."""
    if group_by == "inbox":
        value = conversation.get("inbox_id")
    else:
        assigned = conversation.get("assigned")
        if assigned is not None and not isinstance(assigned, dict):
            raise FetchError(Reason.BAD_RESPONSE, "conversation's assigned is not an object")
        value = assigned.get("user_id") if assigned else None
    if value is None:
        return None
    if not isinstance(value, str):
        raise FetchError(Reason.BAD_RESPONSE, f"conversation's {group_by} id is not a string")
    return value


class PageSize:
    """How many conversations a backlog page holds, as far as Crisp's answers have shown it.

    The backlog asks for pages of 50 and stops at a page shorter than the page size. Were Crisp
    to ignore ``per_page`` (its default is 20) or cap it, a short page would not be the last,
    and stopping there would undercount without a word. So a short page is taken for the last
    only when it is shorter than a page Crisp is known to serve: the largest page it has
    answered this fetcher (at least 20, its documented smallest). A page as long as that,
    yet short of 50, is followed by one more request, whose page (shorter, or empty) settles
    it. Once Crisp has answered a full page of 50, no backlog costs a request more than its
    pages; before that, only a backlog of 20 to 49 conversations at its largest yet does.
    """

    def __init__(self) -> None:
        self.known = SMALLEST_PAGE

    def is_last(self, length: int) -> bool:
        """Whether a page of ``length`` conversations ends the backlog."""
        if length < self.known:
            return True
        self.known = min(length, PAGE_SIZE)
        return False


class CrispFetcher:
    """Fetches a Crisp account's dialogs: the backlog pages once for every backlog dialog, and
    one request per single conversation."""

    def __init__(self, account: CrispAccount, upstream: Upstream) -> None:
        credentials = f"{account.identifier.get_secret_value()}:{account.key.get_secret_value()}"
        token = base64.b64encode(credentials.encode()).decode()
        upstream.redactor.derived(token)  # an echoed header shows neither configured text
        self._headers = {"Authorization": f"Basic {token}", "X-Crisp-Tier": account.tier}
        self._website_url = f"{account.api_root()}/v1/website/{quote(account.website_id, safe='')}"
        self._upstream = upstream
        self._page_size = PageSize()

    async def fetch(self, dialogs: Sequence[CrispDialog], record: Record) -> None:
        # Backlog pages are fetched one after another: start that chain beside the single
        # conversations, as it bounds how soon the account is done.
        backlogs = [dialog for dialog in dialogs if dialog.session_id is None]
        sessions = [dialog for dialog in dialogs if dialog.session_id is not None]
        await asyncio.gather(
            self._backlogs(backlogs, record),
            fetch_each(sessions, record, self._conversation, self._upstream.max_concurrency),
        )

    async def _conversation(self, dialog: CrispDialog) -> Reading:
        assert dialog.session_id is not None
        url = f"{self._website_url}/conversation/{quote(dialog.session_id, safe='')}"
        response = await self._upstream.request("GET", url, headers=self._headers)
        return Reading(messages=_unread(_data(response.body), dialog.side or "visitor"))

    async def _backlogs(self, dialogs: Sequence[CrispDialog], record: Record) -> None:
        """Every backlog dialog from one pass over the open conversations with unread messages:
        unread operator messages summed, split by inbox or operator where asked."""
        if not dialogs:
            return
        shared = SharedPass(dialogs, ("messages", "conversations"))
        params = {"filter_unread": "1", "filter_not_resolved": "1", "per_page": str(PAGE_SIZE)}
        try:
            for page in range(1, MAX_PAGES + 1):
                url = f"{self._website_url}/conversations/{page}"
                items = _list(
                    await self._upstream.request("GET", url, params=params, headers=self._headers)
                )
                _count_page(shared, items)
                if self._page_size.is_last(len(items)):
                    shared.record(record)
                    return
            raise FetchError(Reason.BAD_RESPONSE, f"backlog longer than {MAX_PAGES} pages")
        except FetchError as exc:
            record_all(dialogs, record, exc)

    async def group_names(self, group_by: str) -> Mapping[str, str]:
        """Inbox names (``inboxes/list/{page}``, read until an empty page), or operators' first
        and last names (``operators/list``; never their email addresses)."""
        if group_by == "inbox":
            names: dict[str, str] = {}
            for page in range(1, MAX_NAME_PAGES + 1):
                url = f"{self._website_url}/inboxes/list/{page}"
                inboxes = _list(await self._upstream.request("GET", url, headers=self._headers))
                if not inboxes:
                    break
                names.update(_named(inboxes, "inbox_id", lambda inbox: inbox.get("name")))
            return names
        url = f"{self._website_url}/operators/list"
        operators = _list(await self._upstream.request("GET", url, headers=self._headers))
        details = [
            _snake_case(operator["details"])
            for operator in operators
            if isinstance(operator, dict) and isinstance(operator.get("details"), dict)
        ]
        return _named(details, "user_id", _full_name)


# A conversation of the backlog that has unread operator messages, with what every dialog
# counts of it: its unread messages and since when (seconds) its visitor waits, if one does.
_Unread = tuple[dict[str, Any], int, float | None]


def _count_page(shared: SharedPass[CrispDialog], conversations: list[Any]) -> None:
    """Count a backlog page for every backlog dialog. What is wrong with a conversation itself
    (no object, junk counts) fails them all; a group id only one dialog reads fails that one."""
    unread: list[_Unread] = []
    for conversation in conversations:
        messages = _unread(conversation, "operator")
        if messages == 0:
            continue
        oldest: float | None = None
        if conversation.get("waiting_since") is not None:  # null: nobody waits
            waiting = count(conversation, "waiting_since")  # refuses 400-digit junk
            if waiting > 0:
                oldest = waiting / 1000
        unread.append((conversation, messages, oldest))
    shared.add(unread, _count_into)


def _count_into(dialog: CrispDialog, tally: GroupTally, unread: Sequence[_Unread]) -> None:
    group_by = dialog.group_by
    for conversation, messages, oldest in unread:
        group = _group(conversation, group_by) if group_by else None
        tally.add(group, messages=messages, conversations=1, oldest=oldest)


def _list(response: Response) -> list[Any]:
    items = _data(response.body)
    if not isinstance(items, list):
        raise FetchError(Reason.BAD_RESPONSE, "list answer is not a list")
    return items


def _named(items: Sequence[Any], key: str, name: Callable[[dict[str, Any]], Any]) -> dict[str, str]:
    """``{id: name}`` of the items that have a string id and a string name."""
    found: dict[str, str] = {}
    for item in items:
        if isinstance(item, dict) and isinstance(item.get(key), str):
            shown = name(item)
            if isinstance(shown, str) and shown:
                found[item[key]] = shown
    return found


def _full_name(operator: dict[str, Any]) -> str:
    parts = (operator.get("first_name"), operator.get("last_name"))
    return " ".join(part.strip() for part in parts if isinstance(part, str) and part.strip())


# Crisp's REST reference shows an operator's details in snake_case (``user_id``,
# ``first_name``); crisp-api 11.3.0's TypeScript types name them ``userID``, ``firstName``,
# ``lastName``. Either is read.
_OPERATOR_KEYS = {"userID": "user_id", "firstName": "first_name", "lastName": "last_name"}


def _snake_case(details: dict[str, Any]) -> dict[str, Any]:
    return {_OPERATOR_KEYS.get(key, key): value for key, value in details.items()}


def coverage(account: CrispAccount) -> Coverage:
    """The backlog counts every conversation's unread operator messages, so an operator-side
    session is part of it; a visitor-side session (the visitor's unread) is in no whole, and
    only dialogs of the same session overlap."""

    def scope(dialog: CrispDialog) -> Hashable:
        if dialog.session_id is None or dialog.side == "operator":
            return "operator"
        return ("visitor", dialog.session_id)

    return nested(
        account.dialogs,
        name=lambda dialog: dialog.name,
        scope=scope,
        is_whole=lambda dialog: dialog.session_id is None,
        disjoint=lambda a, b: (
            a.session_id is not None and b.session_id is not None and a.session_id != b.session_id
        ),
    )


PROVIDER = Provider(
    name="crisp",
    account_model=CrispAccount,
    make_fetcher=CrispFetcher,
    error_messages=error_messages,
    coverage=coverage,
)
