"""Simulated Zendesk Support API: views' counts, ticket search, groups.

Follows developer.zendesk.com: ``GET /api/v2/views/count_many?ids=`` (``view_counts`` with
``value``, ``pretty`` and ``fresh``; 6 requests per 5 minutes per account, then 429 with
``Retry-After``), ``GET /api/v2/search?query=`` (``results``, ``count``, ``next_page``;
``sort_by``, ``sort_order``, at most 100 a page and 1,000 results), ``GET
/api/v2/search/count?query=`` (``count``), ``GET /api/v2/groups`` (cursor pages with
``page[size]``, else offset pages); every path also with ``.json``. Auth is Basic
``{email}/token:{api_token}`` or ``Bearer`` an OAuth token; errors come as ``{"error": "...",
"description": "..."}`` or ``{"error": {"title", "message"}}``; every answer carries
``X-Rate-Limit`` and ``X-Rate-Limit-Remaining``.

The query language is a subset: ``type:ticket``, ``status`` with ``:``, ``<``, ``>`` (in
Zendesk's order new < open < pending < hold < solved < closed), ``group:``, ``assignee:`` (an
id or ``none``), ``priority:``, ``tags:``; a term it does not know is refused with 400 rather
than matched loosely. ``stale_views`` answer ``value`` null with ``fresh`` false, as Zendesk
does while it computes a count.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from exporter.simulator.base import FakeProvider, json_response

STATUSES = ("new", "open", "pending", "hold", "solved", "closed")
SORTS = frozenset({"created_at", "updated_at", "priority", "status", "ticket_type"})
MAX_PER_PAGE = 100
MAX_RESULTS = 1000
VIEW_COUNT_LIMIT = 6
VIEW_COUNT_WINDOW = 300.0
CREATED_AT = 1_750_000_000


class SearchError(Exception):
    """A query Zendesk would refuse."""


@dataclass
class ZendeskTicket:
    """One ticket; ``created_at`` in unix seconds."""

    status: str = "new"
    created_at: int = CREATED_AT
    group_id: int | None = None
    assignee_id: int | None = None
    priority: str | None = None
    tags: tuple[str, ...] = ()

    def as_json(self, ticket_id: int, root: str) -> dict[str, Any]:
        stamp = datetime.fromtimestamp(self.created_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {
            "url": f"{root}/api/v2/tickets/{ticket_id}.json",
            "id": ticket_id,
            "created_at": stamp,
            "updated_at": stamp,
            "type": None,
            "subject": f"Ticket {ticket_id}",
            "description": "Hello, I need help",
            "priority": self.priority,
            "status": self.status,
            "requester_id": 9000 + ticket_id,
            "submitter_id": 9000 + ticket_id,
            "assignee_id": self.assignee_id,
            "group_id": self.group_id,
            "tags": list(self.tags),
            "result_type": "ticket",
        }


Matcher = Callable[[ZendeskTicket], bool]


def _term(term: str) -> Matcher:
    for operator in (":", "<", ">"):
        key, found, wanted = term.partition(operator)
        if found:
            break
    else:
        raise SearchError(f"unsupported search term {term!r}")
    if key == "type":
        if operator != ":" or wanted != "ticket":
            raise SearchError("only type:ticket is searched here")
        return lambda _ticket: True
    if key == "status":
        if wanted not in STATUSES:
            raise SearchError(f"unknown status {wanted!r}")
        rank = STATUSES.index(wanted)
        if operator == "<":
            return lambda ticket: STATUSES.index(ticket.status) < rank
        if operator == ">":
            return lambda ticket: STATUSES.index(ticket.status) > rank
        return lambda ticket: ticket.status == wanted
    if operator != ":":
        raise SearchError(f"{key} takes no {operator}")
    if key in ("group", "assignee"):
        if wanted != "none" and not wanted.isdigit():
            raise SearchError(f"{key} takes an id or none")
        value = None if wanted == "none" else int(wanted)
        attr = f"{key}_id"
        return lambda ticket: getattr(ticket, attr) == value
    if key == "priority":
        return lambda ticket: ticket.priority == wanted
    if key in ("tags", "tag"):
        return lambda ticket: wanted in ticket.tags
    raise SearchError(f"unsupported search term {term!r}")


def compile_query(query: str) -> Matcher:
    """A query to a predicate: every term must hold (Zendesk ANDs space-separated terms)."""
    terms = [_term(term) for term in query.split()]
    if not terms:
        raise SearchError("query is empty")
    return lambda ticket: all(term(ticket) for term in terms)


def error(status: int, name: str, description: str) -> web.Response:
    """The ``{"error", "description"}`` envelope."""
    return json_response({"error": name, "description": description}, status=status)


def titled_error(status: int, title: str, message: str) -> web.Response:
    """The ``{"error": {"title", "message"}}`` envelope."""
    return json_response({"error": {"title": title, "message": message}}, status=status)


@dataclass
class FakeZendesk(FakeProvider):
    name: str = "zendesk"
    email: str = "agent@example.com"
    api_token: str = "zendesk-api-token"
    oauth_token: str = "zendesk-oauth-token"
    tickets: dict[int, ZendeskTicket] = field(default_factory=dict)
    views: dict[int, str] = field(default_factory=dict)  # id -> the query it shows
    stale_views: set[int] = field(default_factory=set)
    groups: dict[int, str] = field(default_factory=dict)  # id -> name
    rate_limit: int = 700  # requests a minute (Enterprise)
    clock: Callable[[], float] = time.time
    _view_counts: deque[float] = field(default_factory=deque)
    _minute: deque[float] = field(default_factory=deque)

    def add_routes(self, app: web.Application) -> None:
        for path, handler in (
            ("/api/v2/views/count_many", self.count_many),
            ("/api/v2/search", self.search),
            ("/api/v2/search/count", self.search_count),
            ("/api/v2/groups", self.group_list),
            ("/api/v2/views/{view}/count", self.count_one),
        ):
            app.router.add_get(path, handler)
            app.router.add_get(f"{path}.json", handler)
        app.router.add_route("*", "/{tail:.*}", self.unknown)

    def route_error(self, status: int, reason: str) -> web.Response:
        return error(status, "InvalidEndpoint", reason)

    def _authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        scheme, _, credentials = header.partition(" ")
        if scheme == "Bearer":
            return credentials == self.oauth_token
        if scheme != "Basic":
            return False
        try:
            pair = base64.b64decode(credentials, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        return pair == f"{self.email}/token:{self.api_token}"

    def _guarded(
        self, request: web.Request, answer: Callable[[], web.Response], view_count: bool = False
    ) -> web.Response:
        """Auth, the account's rate limit (and count_many's own), then the answer."""
        if not self._authorized(request):
            return error(401, "Couldn't authenticate you", "Invalid credentials")
        now = self.clock()
        for window, seconds in ((self._minute, 60.0), (self._view_counts, VIEW_COUNT_WINDOW)):
            while window and window[0] <= now - seconds:
                window.popleft()
        headers = {"X-Rate-Limit": str(self.rate_limit)}
        if len(self._minute) >= self.rate_limit:
            retry = int(self._minute[0] + 60.0 - now) + 1 if self._minute else 60
            headers.update({"X-Rate-Limit-Remaining": "0", "Retry-After": str(retry)})
            response = error(429, "APIRateLimitExceeded", "Number of allowed requests exceeded")
        elif view_count and len(self._view_counts) >= VIEW_COUNT_LIMIT:
            retry = int(self._view_counts[0] + VIEW_COUNT_WINDOW - now) + 1
            headers["Retry-After"] = str(retry)
            response = titled_error(
                429, "Too Many Requests", "You have made too many view count requests"
            )
        else:
            self._minute.append(now)
            if view_count:
                self._view_counts.append(now)
            try:
                response = answer()
            except SearchError as exc:
                response = error(400, "InvalidSearchParameters", str(exc))
        headers.setdefault("X-Rate-Limit-Remaining", str(self.rate_limit - len(self._minute)))
        response.headers.update(headers)
        return response

    async def unknown(self, request: web.Request) -> web.Response:
        return self._guarded(request, lambda: error(404, "RecordNotFound", "Not found"))

    async def count_many(self, request: web.Request) -> web.Response:
        def answer() -> web.Response:
            raw = request.query.get("ids", "")
            ids = [part.strip() for part in raw.split(",") if part.strip()]
            if not ids or not all(part.isdigit() for part in ids):
                return error(400, "InvalidParameter", "ids must be a list of view ids")
            counts = [self._view_count(int(view)) for view in ids]
            return json_response({"view_counts": [c for c in counts if c is not None]})

        return self._guarded(request, answer, view_count=True)

    async def count_one(self, request: web.Request) -> web.Response:
        """``GET /api/v2/views/{id}/count``: one view's count, under the same limit."""

        def answer() -> web.Response:
            view = request.match_info["view"].removesuffix(".json")
            found = self._view_count(int(view)) if view.isdigit() else None
            if found is None:
                return error(404, "RecordNotFound", "Not found")
            return json_response({"view_count": found})

        return self._guarded(request, answer, view_count=True)

    def _view_count(self, view: int) -> dict[str, Any] | None:
        if view not in self.views:
            return None
        fresh = view not in self.stale_views
        value = sum(map(compile_query(self.views[view]), self.tickets.values())) if fresh else None
        return {
            "url": f"{self.url}/api/v2/views/{view}/count.json",
            "view_id": view,
            "value": value,
            "pretty": str(value) if value is not None else "...",
            "fresh": fresh,
            **({} if fresh else {"refresh": "pubsub", "poll_wait": 30}),
        }

    def _matching(self, request: web.Request) -> list[tuple[int, ZendeskTicket]]:
        query = request.query.get("query", "")
        matches = compile_query(query)
        return [(tid, ticket) for tid, ticket in self.tickets.items() if matches(ticket)]

    async def search(self, request: web.Request) -> web.Response:
        def answer() -> web.Response:
            found = self._matching(request)
            sort_by = request.query.get("sort_by")
            order = request.query.get("sort_order", "desc")
            if sort_by is not None and sort_by not in SORTS:
                raise SearchError(f"sort_by {sort_by!r} is not supported")
            if order not in ("asc", "desc"):
                raise SearchError("sort_order must be asc or desc")
            if sort_by in (None, "created_at"):
                found.sort(key=lambda item: (item[1].created_at, item[0]), reverse=order == "desc")
            per_page = _positive(request.query.get("per_page", "100"), "per_page")
            page = _positive(request.query.get("page", "1"), "page")
            if per_page > MAX_PER_PAGE:
                raise SearchError(f"per_page is at most {MAX_PER_PAGE}")
            if page * per_page > MAX_RESULTS:
                return error(422, "Insufficient Resource Error", "search is limited to 1000")
            chunk = found[(page - 1) * per_page : page * per_page]
            more = page * per_page < min(len(found), MAX_RESULTS)
            base = f"{self.url}/api/v2/search.json?page="
            return json_response(
                {
                    "results": [ticket.as_json(tid, self.url) for tid, ticket in chunk],
                    "facets": None,
                    "next_page": f"{base}{page + 1}" if more else None,
                    "previous_page": f"{base}{page - 1}" if page > 1 else None,
                    "count": len(found),
                }
            )

        return self._guarded(request, answer)

    async def search_count(self, request: web.Request) -> web.Response:
        return self._guarded(
            request, lambda: json_response({"count": len(self._matching(request))})
        )

    async def group_list(self, request: web.Request) -> web.Response:
        """Cursor pagination (``page[size]``, ``page[after]``; ``meta.has_more``,
        ``meta.after_cursor``, ``links.next``), or offset pages (``page``, ``per_page``,
        ``next_page``) when no ``page[size]`` is asked for."""

        def answer() -> web.Response:
            items = sorted(self.groups.items())
            if "page[size]" in request.query:
                size = min(_positive(request.query["page[size]"], "page[size]"), 100)
                after = request.query.get("page[after]", "")
                start = _cursor_offset(after) if after else 0
                chunk = items[start : start + size]
                more = start + size < len(items)
                cursor = _cursor(start + size)
                body: dict[str, Any] = {
                    "meta": {"has_more": more, "after_cursor": cursor, "before_cursor": None},
                    "links": {
                        "next": f"{self.url}/api/v2/groups.json?page%5Bafter%5D={cursor}"
                        f"&page%5Bsize%5D={size}"
                        if more
                        else None,
                        "prev": None,
                    },
                }
            else:
                per_page = min(_positive(request.query.get("per_page", "100"), "per_page"), 100)
                page = _positive(request.query.get("page", "1"), "page")
                chunk = items[(page - 1) * per_page : page * per_page]
                more = page * per_page < len(items)
                body = {
                    "next_page": f"{self.url}/api/v2/groups.json?page={page + 1}" if more else None,
                    "previous_page": None,
                    "count": len(items),
                }
            groups = [
                {"id": gid, "name": name, "deleted": False, "default": False} for gid, name in chunk
            ]
            return json_response({"groups": groups, **body})

        return self._guarded(request, answer)


def _cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode()


def _cursor_offset(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor.encode()).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise SearchError("page[after] is not a cursor") from None
    kind, _, number = text.partition(":")
    if kind != "offset" or not number.isdigit():
        raise SearchError("page[after] is not a cursor")
    return int(number)


def _positive(text: str, name: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise SearchError(f"{name} must be a positive integer")
    return int(text)
