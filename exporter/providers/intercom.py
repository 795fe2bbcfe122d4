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

A dialog split by team or teammate (``group_by``) needs every waiting conversation: the search
is paged through once (150 a page, one request each) and every dialog of the account is counted
from those pages as each arrives; nothing is kept of a conversation beyond the counts. A page
cursor answered twice (a loop), or more pages than ``MAX_PAGES`` (or the daily request budget),
end the walk as a bad answer. An empty ``starting_after`` ends the pages, as in the Node SDK.

``sort`` is described in Intercom's "Pagination & Sorting (Search)" guide but absent from the
OpenAPI schema the official SDKs are generated from, so the answer is checked: a page that did
not come back in ascending order means the sort was ignored, and the remaining pages are read
to find the oldest conversation instead of trusting the first one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import BeforeValidator, Field, SecretStr, model_validator

from exporter.envelope import entries_at
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


class IntercomDialog(GroupingDialog):
    """No filter: every waiting conversation; ``team_id`` or ``admin_id``: that assignee's.
    Any of them can be split by the assigned team or teammate (``group_by``)."""

    group_dimensions: ClassVar[tuple[str, ...]] = ("team", "teammate")

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


GROUP_FIELDS = {"team": "team_assignee_id", "teammate": "admin_assignee_id"}


def _assignee_id(conversation: dict[str, Any], key: str) -> str | None:
    """``team_assignee_id`` comes as a string, ``admin_assignee_id`` as a number; null (or 0,
    as some workspaces answer) means nobody."""
    value = conversation.get(key)
    if isinstance(value, bool) or not isinstance(value, str | int | None):
        raise FetchError(Reason.BAD_RESPONSE, f"conversation {key} is {type(value).__name__}")
    if value is None or str(value) == "0":
        return None
    return str(value)


def _count_into(
    dialog: IntercomDialog, tally: GroupTally, conversations: Sequence[dict[str, Any]]
) -> None:
    """A page's waiting conversations, each counted for ``dialog`` if it is the dialog's."""
    assignee = dialog.assignee
    field = GROUP_FIELDS[dialog.group_by] if dialog.group_by else None
    for conversation in conversations:
        if assignee is not None and _assignee_id(conversation, assignee[0]) != assignee[1]:
            continue
        group = _assignee_id(conversation, field) if field else None
        tally.add(group, conversations=1, oldest=float(conversation["waiting_since"]))


@dataclass(frozen=True)
class _Page:
    """What is kept of one page of a search answer: its counts, never its conversations."""

    total: int
    length: int
    oldest: int | None
    ascending: bool
    next_cursor: str | None

    @property
    def complete(self) -> bool:
        """Whether this page holds every conversation the search matched."""
        return self.next_cursor is None and self.length == self.total


def _read_page(body: Any, shared: SharedPass[IntercomDialog]) -> _Page:
    """Count a page's conversations into ``shared`` once the page is read, and keep its summary."""
    total = count(body, "total_count")
    conversations = body.get("conversations")
    if not isinstance(conversations, list):
        raise FetchError(Reason.BAD_RESPONSE, "conversations is not a list")
    oldest: int | None = None
    previous = 0
    ascending = True
    for conversation in conversations:
        if not isinstance(conversation, dict):
            raise FetchError(Reason.BAD_RESPONSE, "conversation is not an object")
        since = count(conversation, "waiting_since")
        ascending = ascending and since >= previous
        previous = since
        oldest = since if oldest is None else min(oldest, since)
    shared.add(conversations, _count_into)
    pages = body.get("pages")
    following = pages.get("next") if isinstance(pages, dict) else None
    cursor = following.get("starting_after") if isinstance(following, dict) else None
    if cursor is not None and not isinstance(cursor, str):
        raise FetchError(Reason.BAD_RESPONSE, "pages.next.starting_after is not a cursor")
    # An empty cursor ends the pages, as the official Node SDK (intercom-client 7.0.3) reads it.
    return _Page(total, len(conversations), oldest, ascending, cursor or None)


class IntercomFetcher:
    """Fetches an Intercom workspace's backlogs with as few searches as their sizes allow.

    A dialog without ``group_by`` needs the first page only (its ``total_count`` and, sorted,
    its oldest conversation). A dialog split by team or teammate needs every waiting
    conversation: the search is paged through once (150 a page, one request each) and every
    dialog of the account is counted from those pages as they arrive.
    """

    def __init__(self, account: IntercomAccount, upstream: Upstream) -> None:
        self._headers = {
            "Authorization": f"Bearer {account.access_token.get_secret_value()}",
            "Intercom-Version": API_VERSION,
            "Accept": "application/json",
        }
        self._root = account.api_root()
        self._url = f"{self._root}/conversations/search"
        self._upstream = upstream
        # A walk never spends more requests than the account may spend in a whole day.
        budget = account.daily_request_budget
        self._max_pages = min(MAX_PAGES, budget) if budget else MAX_PAGES

    async def fetch(self, dialogs: Sequence[IntercomDialog], record: Record) -> None:
        # One dialog searches with its own filter; several search the whole backlog first.
        await self._read(dialogs[0].assignee if len(dialogs) == 1 else None, dialogs, record)

    async def _read(
        self,
        assignee: tuple[str, str] | None,
        dialogs: Sequence[IntercomDialog],
        record: Record,
    ) -> None:
        """Serve ``dialogs`` from the search for ``assignee`` (``None``: every waiting one)."""
        shared = SharedPass(dialogs, ("conversations",))
        try:
            first = await self._search(assignee, None, shared)
            whole = [dialog for dialog in dialogs if dialog.assignee == assignee]
            walk = any(dialog.group_by for dialog in dialogs) or (
                whole and not first.ascending and first.next_cursor is not None
            )
            if first.complete or walk:
                await self._walk(assignee, first, shared)
                shared.record(record)
                return
        except FetchError as exc:
            record_all(dialogs, record, exc)
            return
        # Sorted and larger than a page: the first page answers the whole backlog, and each
        # filtered dialog asks its own search (one page each).
        oldest = float(first.oldest) if first.oldest is not None else None
        record_all(
            whole, record, Reading(None, conversations=first.total, oldest_unread_timestamp=oldest)
        )
        filtered = [dialog for dialog in dialogs if dialog.assignee != assignee]
        await fetch_each(filtered, record, self._alone, self._upstream.max_concurrency)

    async def _alone(self, dialog: IntercomDialog) -> Reading:
        outcome: list[Reading | FetchError] = []
        await self._read(dialog.assignee, (dialog,), lambda _name, result: outcome.append(result))
        if isinstance(outcome[0], FetchError):
            raise outcome[0]
        return outcome[0]

    async def _walk(
        self, assignee: tuple[str, str] | None, first: _Page, shared: SharedPass[IntercomDialog]
    ) -> None:
        """Read the pages after ``first`` into ``shared``: a repeated cursor (a loop) or more
        pages than the limit end the walk as a bad answer, never as an undercount."""
        cursor = first.next_cursor
        seen: set[str] = set()
        pages = 1
        while cursor is not None:
            if cursor in seen:
                raise FetchError(Reason.BAD_RESPONSE, "Intercom answered a page cursor twice")
            if pages >= self._max_pages:
                raise FetchError(Reason.BAD_RESPONSE, f"backlog longer than {pages} pages")
            seen.add(cursor)
            cursor = (await self._search(assignee, cursor, shared)).next_cursor
            pages += 1

    async def _search(
        self,
        assignee: tuple[str, str] | None,
        cursor: str | None,
        shared: SharedPass[IntercomDialog],
    ) -> _Page:
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
        return _read_page(response.body, shared)

    async def group_names(self, group_by: str) -> Mapping[str, str]:
        """Team names (``GET /teams``) or teammates' names (``GET /admins``; never their email
        addresses). Neither list is paged."""
        key = "teams" if group_by == "team" else "admins"
        response = await self._upstream.request("GET", f"{self._root}/{key}", headers=self._headers)
        items = response.body.get(key) if isinstance(response.body, dict) else None
        if not isinstance(items, list):
            raise FetchError(Reason.BAD_RESPONSE, f"{key} is not a list")
        names: dict[str, str] = {}
        for item in items:
            if isinstance(item, dict) and isinstance(item.get("name"), str):
                identifier = item.get("id")
                if isinstance(identifier, str | int) and not isinstance(identifier, bool):
                    names[str(identifier)] = item["name"]
        return names


def error_messages(body: Any) -> list[str]:
    """Intercom's envelope: ``{"type": "error.list", "errors": [{"code", "message"}]}``."""
    return entries_at(body, "errors")


def coverage(account: IntercomAccount) -> Coverage:
    """The dialog without a filter holds every team's and teammate's; two teams (or two
    teammates) never share a conversation, a team and a teammate may."""

    def disjoint(a: IntercomDialog, b: IntercomDialog) -> bool:
        first, second = a.assignee, b.assignee
        return (
            first is not None
            and second is not None
            and first[0] == second[0]
            and first[1] != second[1]
        )

    return nested(
        account.dialogs,
        name=lambda dialog: dialog.name,
        scope=lambda _dialog: account.name,
        is_whole=lambda dialog: dialog.assignee is None,
        disjoint=disjoint,
    )


PROVIDER = Provider(
    name="intercom",
    account_model=IntercomAccount,
    make_fetcher=IntercomFetcher,
    error_messages=error_messages,
    coverage=coverage,
)
