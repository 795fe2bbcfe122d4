"""Zendesk Support: the tickets of a view, or of a search query, waiting on the team.

A dialog is a view (``view_id``) or a ticket search (``query``). Tickets are not messages:
Zendesk has no count of unread messages, so ``chat_unread_messages`` stays absent and a dialog
serves ``chat_unread_conversations`` (the matching tickets) and, for a query, the creation time
of the oldest matching ticket as ``chat_unread_oldest_unread_timestamp_seconds``.

- Views: one ``GET /api/v2/views/count_many.json?ids=`` answers every view dialog of the
  account (``view_counts[].value``). Zendesk allows that endpoint 6 requests per 5 minutes, so
  an account with a view dialog refreshes at most once per ``cache_ttl`` (60 s by default,
  at least 50 s: 6 refreshes in any 5 minutes). A count Zendesk has not computed yet
  (``value`` null, ``fresh`` false) is no count: that dialog is ``up 0``, never 0. A count
  with ``fresh`` false but a value is Zendesk's last computed one, as its agent interface
  shows it while recomputing, and is served.
- Queries: one ``GET /api/v2/search.json?query=type:ticket <query>&sort_by=created_at&
  sort_order=asc&per_page=1`` per distinct query (dialogs of one query share it): its
  ``count`` is the number of matching tickets (exact, beyond the 1,000 results search pages
  through) and its first result the oldest.
  The search index lags by minutes: refreshing more often than the 60 s ``cache_ttl``
  default would not make a query's value fresher.
- ``group_by: group`` (queries only): the account's groups (``GET /api/v2/groups.json`` by
  cursor, kept an hour) and one ``GET /api/v2/search/count.json`` per group (``group:<id>``)
  and for no group (``group:none``, served as ``unassigned``); tickets of a group the list does
  not hold yet are served as ``other``, and counts that add up to more than the dialog's (the
  index moved between the requests) are ``up 0``. A grouped query costs 2 + groups requests,
  however many dialogs share it.
- Dialogs of the same view or the same query count the same tickets: each is ``part_of`` the
  first (``coverage``).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import BeforeValidator, Field, SecretStr, model_validator

from exporter.envelope import entries_at, scalars
from exporter.models import AccountConfig, Duration, GroupingDialog, secret_text
from exporter.providers.base import (
    Coverage,
    FetchError,
    GroupTally,
    Provider,
    Reading,
    Reason,
    Record,
    count,
    nested,
    record_all,
)
from exporter.upstream import Upstream

# count_many is allowed 6 requests per 5 minutes: one refresh every 50 s at most.
MIN_VIEW_INTERVAL = 50.0
DEFAULT_CACHE_TTL = 60.0
GROUPS_PER_PAGE = 100
# An account with more groups than this is not split by group: a refresh would cost more
# than 100 searches (at the lowest plan, 200 requests a minute).
MAX_GROUPS = 100
GROUP_LIST_TTL = 3600.0


def _digits(value: Any) -> Any:
    """Zendesk ids are integers; accept them quoted in YAML too."""
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return value


ZendeskId = Annotated[int, BeforeValidator(_digits), Field(ge=1, le=2**53)]


class ZendeskDialog(GroupingDialog):
    """A view (``view_id``) or a ticket search (``query``); a query can be split by group."""

    group_dimensions: ClassVar[tuple[str, ...]] = ("group",)

    view_id: ZendeskId | None = None
    query: str | None = Field(default=None, min_length=1, max_length=1000)

    @model_validator(mode="after")
    def _view_or_query(self) -> Self:
        if (self.view_id is None) == (self.query is None):
            raise ValueError("set view_id or query, exactly one")
        if self.view_id is not None and self.group_by is not None:
            raise ValueError("a view's count does not split by group; use a query")
        return self

    @property
    def source(self) -> tuple[str, str]:
        """What the dialog counts: its view, or its query (spaces aside)."""
        if self.view_id is not None:
            return ("view", str(self.view_id))
        return ("query", " ".join((self.query or "").split()))

    @property
    def search(self) -> str:
        """The search query sent: ``type:ticket`` first, so every result is a ticket."""
        assert self.query is not None
        return f"type:ticket {self.query.strip()}"


class ZendeskAccount(AccountConfig):
    """A Zendesk Support account, read with an API token or an OAuth access token."""

    secret_fields: ClassVar[tuple[str, ...]] = ("api_token", "oauth_token")
    default_base_url: ClassVar[str] = "https://{subdomain}.zendesk.com"

    provider: Literal["zendesk"]
    subdomain: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    email: str | None = Field(default=None, min_length=3, pattern=r"^[^\s/:]+@[^\s/:]+$")
    api_token: SecretStr | None = None
    oauth_token: SecretStr | None = None
    cache_ttl: Duration = DEFAULT_CACHE_TTL
    dialogs: tuple[ZendeskDialog, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _one_scheme(self) -> Self:
        token = self.api_token is not None
        if self.oauth_token is not None:
            if token or self.email is not None:
                raise ValueError("set oauth_token, or email and api_token, not both")
        elif not (token and self.email is not None):
            raise ValueError("set email and api_token (API token), or oauth_token (OAuth)")
        return self

    @model_validator(mode="after")
    def _view_count_limit(self) -> Self:
        if any(d.view_id is not None for d in self.dialogs) and self.cache_ttl < MIN_VIEW_INTERVAL:
            raise ValueError(
                "cache_ttl must be at least 50s with a view dialog: Zendesk allows"
                " views/count_many 6 requests per 5 minutes (default 60s)"
            )
        return self

    def authorization(self) -> str:
        """``Basic {email}/token:{api_token}`` or ``Bearer {oauth_token}``."""
        if self.oauth_token is not None:
            return f"Bearer {self.oauth_token.get_secret_value()}"
        pair = f"{self.email}/token:{secret_text(self.api_token)}"
        return "Basic " + base64.b64encode(pair.encode()).decode()


def _created_at(ticket: Any) -> float:
    """A ticket's ``created_at`` (ISO 8601, ``2024-05-01T09:30:00Z``) as unix time."""
    text = ticket.get("created_at") if isinstance(ticket, dict) else None
    if not isinstance(text, str):
        raise FetchError(Reason.BAD_RESPONSE, "a ticket's created_at is not a timestamp")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise FetchError(Reason.BAD_RESPONSE, f"created_at {text[:40]!r} is no time") from None
    if moment.tzinfo is None:
        raise FetchError(Reason.BAD_RESPONSE, f"created_at {text[:40]!r} has no time zone")
    return moment.timestamp()


def view_counts(body: Any, wanted: Sequence[int]) -> dict[int, int | FetchError]:
    """Each wanted view's count from a ``count_many`` answer, or why it has none."""
    entries = body.get("view_counts") if isinstance(body, dict) else None
    if not isinstance(entries, list):
        raise FetchError(Reason.BAD_RESPONSE, "view_counts is not a list")
    found: dict[int, int | FetchError] = {}
    for entry in entries:
        view = entry.get("view_id") if isinstance(entry, dict) else None
        if view not in wanted or isinstance(view, bool) or not isinstance(view, int):
            continue
        if entry.get("value") is None:
            found[view] = FetchError(
                Reason.BAD_RESPONSE, "Zendesk has not computed this view's count yet (fresh false)"
            )
            continue
        try:
            found[view] = count(entry, "value")
        except FetchError as exc:
            found[view] = exc
    return found


class ZendeskFetcher:
    """Fetches a Zendesk account's views in one request and each query in one more."""

    def __init__(self, account: ZendeskAccount, upstream: Upstream) -> None:
        authorization = account.authorization()
        upstream.redactor.derived(authorization.split(" ", 1)[1])
        self._headers = {"Authorization": authorization, "Accept": "application/json"}
        self._root = f"{account.api_root()}/api/v2"
        self._upstream = upstream
        self._groups: tuple[float, tuple[str, ...], dict[str, str]] | None = None
        self._groups_lock = asyncio.Lock()

    async def fetch(self, dialogs: Sequence[ZendeskDialog], record: Record) -> None:
        views = [dialog for dialog in dialogs if dialog.view_id is not None]
        searches: dict[str, list[ZendeskDialog]] = {}
        for dialog in dialogs:
            if dialog.query is not None:
                searches.setdefault(dialog.search, []).append(dialog)
        await asyncio.gather(
            self._views(views, record),
            *(self._search(group, record) for group in searches.values()),
        )

    async def _get(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        response = await self._upstream.request(
            "GET", f"{self._root}/{path}", params=params, headers=self._headers
        )
        return response.body

    async def _views(self, dialogs: Sequence[ZendeskDialog], record: Record) -> None:
        """Every view dialog's count from one ``count_many`` request."""
        if not dialogs:
            return
        wanted = list(dict.fromkeys(d.view_id for d in dialogs if d.view_id is not None))
        try:
            body = await self._get("views/count_many.json", {"ids": ",".join(map(str, wanted))})
            found = view_counts(body, wanted)
        except FetchError as exc:
            record_all(dialogs, record, exc)
            return
        for dialog in dialogs:
            value = found.get(dialog.view_id or 0)
            if value is None:
                value = FetchError(Reason.NOT_FOUND, f"view {dialog.view_id} is not in the answer")
            record(
                dialog.name,
                value if isinstance(value, FetchError) else Reading(None, conversations=value),
            )

    async def _search(self, dialogs: Sequence[ZendeskDialog], record: Record) -> None:
        """Dialogs of one query (a split and an unsplit one count the same tickets) from one
        search, and those split by group from one set of counts per group."""
        try:
            reading = await self._query(dialogs[0].search)
        except FetchError as exc:
            record_all(dialogs, record, exc)
            return
        grouped = [dialog for dialog in dialogs if dialog.group_by is not None]
        for dialog in dialogs:
            if dialog.group_by is None:
                record(dialog.name, reading)
        if not grouped:
            return
        try:
            counts = await self._group_counts(dialogs[0].search)
        except FetchError as exc:
            record_all(grouped, record, exc)
            return
        for dialog in grouped:
            tally = GroupTally(("conversations",), dialog.group_by, dialog.max_groups)
            for group, tickets in counts:
                tally.add(group, conversations=tickets)
            try:
                record(dialog.name, tally.reading(totals=reading))
            except FetchError as exc:
                record(dialog.name, exc)

    async def _query(self, search: str) -> Reading:
        """The matching tickets and the oldest one's creation, from one search."""
        params = {
            "query": search,
            "sort_by": "created_at",
            "sort_order": "asc",
            "per_page": "1",
        }
        body = await self._get("search.json", params)
        total = count(body, "count")
        results = body.get("results")
        if not isinstance(results, list):
            raise FetchError(Reason.BAD_RESPONSE, "results is not a list")
        if bool(results) != bool(total):
            raise FetchError(Reason.BAD_RESPONSE, f"count {total} with {len(results)} results")
        oldest = _created_at(results[0]) if results else None
        return Reading(None, conversations=total, oldest_unread_timestamp=oldest)

    async def _group_counts(self, search: str) -> list[tuple[str | None, int]]:
        """The query's tickets counted per listed group (``None``: no group, ``unassigned``);
        what the groups leave is ``other`` once the tally adds them up."""
        groups = await self._group_ids()
        if len(groups) > MAX_GROUPS:
            raise FetchError(
                Reason.BAD_RESPONSE,
                f"{len(groups)} groups: more than {MAX_GROUPS} searches a refresh to split by",
            )
        keys = [*groups, "none"]
        counts = await asyncio.gather(*(self._count(f"{search} group:{key}") for key in keys))
        return [
            (None if key == "none" else key, tickets)
            for key, tickets in zip(keys, counts, strict=True)
            if tickets
        ]

    async def _count(self, query: str) -> int:
        return count(await self._get("search/count.json", {"query": query}), "count")

    async def _group_ids(self) -> tuple[str, ...]:
        """The account's group ids, listed at most once an hour."""
        async with self._groups_lock:
            now = self._upstream.now()
            if self._groups is None or now - self._groups[0] >= GROUP_LIST_TTL:
                ids, names = await self._list_groups()
                self._groups = (now, ids, names)
            return self._groups[1]

    async def _list_groups(self) -> tuple[tuple[str, ...], dict[str, str]]:
        """``GET /api/v2/groups.json``, 100 a page by cursor (``page[size]``, ``page[after]``
        while ``meta.has_more``), as Zendesk recommends and both community clients page."""
        ids: list[str] = []
        names: dict[str, str] = {}
        params = {"page[size]": str(GROUPS_PER_PAGE)}
        for _ in range(MAX_GROUPS // GROUPS_PER_PAGE + 1):
            body = await self._get("groups.json", params)
            items = body.get("groups") if isinstance(body, dict) else None
            if not isinstance(items, list):
                raise FetchError(Reason.BAD_RESPONSE, "groups is not a list")
            for item in items:
                identifier = item.get("id") if isinstance(item, dict) else None
                if isinstance(identifier, bool) or not isinstance(identifier, int):
                    raise FetchError(Reason.BAD_RESPONSE, "a group's id is not an integer")
                ids.append(str(identifier))
                if isinstance(item.get("name"), str):
                    names[str(identifier)] = item["name"]
            meta = body.get("meta")
            cursor = meta.get("after_cursor") if isinstance(meta, dict) else None
            if not (isinstance(meta, dict) and meta.get("has_more") is True):
                return tuple(dict.fromkeys(ids)), names
            if not isinstance(cursor, str) or not cursor or cursor == params.get("page[after]"):
                raise FetchError(Reason.BAD_RESPONSE, "meta.after_cursor is missing or repeats")
            params["page[after]"] = cursor
        return tuple(dict.fromkeys(ids)), names  # more than MAX_GROUPS: refused by the caller

    async def group_names(self, group_by: str) -> Mapping[str, str]:
        """Group names from the same list (``GET /api/v2/groups.json``), refreshed hourly."""
        await self._group_ids()
        assert self._groups is not None
        return self._groups[2]


def error_messages(body: Any) -> list[str]:
    """Zendesk's two envelopes: ``{"error": "RecordNotFound", "description": "Not found"}``
    and ``{"error": {"title": "Forbidden", "message": "..."}}``."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return scalars(error, "title", "message")
    return [*entries_at(body, "error"), *scalars(body, "description")]


def coverage(account: ZendeskAccount) -> Coverage:
    """Dialogs of one view, or of one query (a split and an unsplit one), count the same
    tickets: each is ``part_of`` the first. How two different queries or views overlap is
    Zendesk's to know, not the config's, so nothing is said of them."""
    return nested(
        account.dialogs,
        name=lambda dialog: dialog.name,
        scope=lambda dialog: dialog.source,
        is_whole=lambda _dialog: True,
    )


PROVIDER = Provider(
    name="zendesk",
    account_model=ZendeskAccount,
    make_fetcher=ZendeskFetcher,
    error_messages=error_messages,
    coverage=coverage,
)
