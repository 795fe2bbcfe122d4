"""Simulated Intercom REST API: ``POST /conversations/search`` with Bearer auth.

Speaks what the exporter and the official SDKs (python-intercom, intercom-client) speak: the
nested ``query`` of single filters and ``AND``/``OR`` groups, ``sort``, cursor pagination with
``pages.next.starting_after`` and ``total_count``, the ``Intercom-Version`` header, the
``error.list`` envelope for every error (unknown routes included), and rate limits announced in
``X-RateLimit-*`` headers with 429 once spent, and the unpaged ``GET /teams`` and ``GET /admins``
lists. Date filters take a unix timestamp as a number or, as the SDKs' examples send it, a
string of digits. ``honour_sort = False`` makes it answer in its
default order (most recently updated first), as an API that ignores ``sort`` would.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from exporter.simulator.base import FakeProvider, RateWindow, json_response

MAX_PER_PAGE = 150
DEFAULT_PER_PAGE = 20
MAX_FILTERS_PER_GROUP = 15
MAX_NESTING = 2
VERSIONS = frozenset(
    {f"1.{minor}" for minor in range(5)} | {f"2.{minor}" for minor in range(18)} | {"Unstable"}
)
DATE_FIELDS = frozenset({"created_at", "updated_at", "waiting_since", "snoozed_until"})
STRING_FIELDS = frozenset({"id", "state", "team_assignee_id", "admin_assignee_id"})
BOOLEAN_FIELDS = frozenset({"open", "read"})
CREATED_AT = 1_700_000_000


class SearchError(Exception):
    """A search request Intercom would refuse with 400."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class IntercomConversation:
    """One conversation; ``waiting_since`` unset means a teammate replied last."""

    waiting_since: int | None = None
    state: str = "open"  # open | closed | snoozed
    team_assignee_id: str | None = None
    admin_assignee_id: int | None = None
    read: bool = False

    def value(self, name: str, conversation_id: str) -> Any:
        """The searchable field ``name`` of this conversation."""
        return {
            "id": conversation_id,
            "created_at": CREATED_AT,
            "updated_at": self.waiting_since or CREATED_AT,
            "waiting_since": self.waiting_since,
            "snoozed_until": None,
            "state": self.state,
            "open": self.state != "closed",
            "read": self.read,
            "team_assignee_id": self.team_assignee_id,
            "admin_assignee_id": self.admin_assignee_id,
        }[name]

    def as_json(self, conversation_id: str) -> dict[str, Any]:
        return {
            "type": "conversation",
            "id": conversation_id,
            "title": None,
            "created_at": CREATED_AT,
            "updated_at": self.waiting_since or CREATED_AT,
            "waiting_since": self.waiting_since,
            "snoozed_until": None,
            "open": self.state != "closed",
            "state": self.state,
            "read": self.read,
            "priority": "not_priority",
            "admin_assignee_id": self.admin_assignee_id,
            "team_assignee_id": self.team_assignee_id,
            "tags": {"type": "tag.list", "tags": []},
            "source": {
                "type": "conversation",
                "id": f"source-{conversation_id}",
                "delivered_as": "customer_initiated",
                "subject": "",
                "body": "<p>Hello, I need help</p>",
                "author": {"type": "user", "id": f"contact-{conversation_id}", "name": None},
                "attachments": [],
                "redacted": False,
            },
            "contacts": {
                "type": "contact.list",
                "contacts": [{"type": "contact", "id": f"contact-{conversation_id}"}],
            },
            "teammates": {"type": "admin.list", "teammates": []},
            "custom_attributes": {},
        }


def error_list(status: int, code: str, message: str) -> web.Response:
    """Intercom's error envelope."""
    body = {
        "type": "error.list",
        "request_id": secrets.token_hex(10),
        "errors": [{"code": code, "message": message}],
    }
    return json_response(body, status=status)


def _cursor(offset: int) -> str:
    return base64.b64encode(json.dumps({"offset": offset}).encode()).decode()


def _offset(cursor: Any) -> int:
    try:
        offset = json.loads(base64.b64decode(str(cursor), validate=True))["offset"]
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise SearchError("parameter_invalid", "starting_after is not a valid cursor") from None
    if not isinstance(offset, int) or offset < 0:
        raise SearchError("parameter_invalid", "starting_after is not a valid cursor")
    return offset


Matcher = Callable[[IntercomConversation, str], bool]


def _single(node: dict[str, Any]) -> Matcher:
    """A ``{field, operator, value}`` filter, with the types Intercom's search accepts."""
    name, operator, wanted = node.get("field"), node.get("operator"), node.get("value")
    if name in DATE_FIELDS:
        if operator not in ("=", "!=", ">", "<") or isinstance(wanted, bool):
            raise SearchError("invalid_field", f"{operator!r} is not valid for the date {name}")
        if isinstance(wanted, str) and wanted.isdigit():
            wanted = int(wanted)  # the SDKs' own examples send timestamps as strings
        if not isinstance(wanted, int):
            raise SearchError("invalid_field", f"{name} needs a unix timestamp")
    elif name in STRING_FIELDS:
        if operator not in ("=", "!=", "IN", "NIN"):
            raise SearchError("invalid_field", f"{operator!r} is not valid for the string {name}")
        if (operator in ("IN", "NIN")) != isinstance(wanted, list):
            raise SearchError("invalid_field", "IN and NIN, and only they, take a list")
    elif name in BOOLEAN_FIELDS:
        if operator not in ("=", "!=") or not isinstance(wanted, bool):
            raise SearchError("invalid_field", f"{name} needs true or false")
    else:
        raise SearchError("invalid_field", f"{name!r} is not a searchable field")

    def norm(value: Any) -> Any:
        return str(value) if name in STRING_FIELDS and value is not None else value

    def matches(conversation: IntercomConversation, conversation_id: str) -> bool:
        have = norm(conversation.value(str(name), conversation_id))
        if operator in (">", "<"):  # "greater (or equal)" and "lower (or equal)"; null never
            return have is not None and bool(have >= wanted if operator == ">" else have <= wanted)
        if operator in ("IN", "NIN"):
            return (have in [norm(v) for v in wanted or ()]) is (operator == "IN")
        return (have == norm(wanted)) is (operator == "=")

    return matches


def compile_query(node: Any, depth: int = 0) -> Matcher:
    """A query node to a predicate, refusing what Intercom refuses (nesting, group size)."""
    if not isinstance(node, dict):
        raise SearchError("parameter_invalid", "query must be an object")
    if node.get("operator") not in ("AND", "OR"):
        return _single(node)
    if depth >= MAX_NESTING:
        raise SearchError("parameter_invalid", f"at most {MAX_NESTING} nested filters")
    parts = node.get("value")
    if not isinstance(parts, list) or not parts:
        raise SearchError("parameter_invalid", "an AND/OR group needs a list of filters")
    if len(parts) > MAX_FILTERS_PER_GROUP:
        raise SearchError("parameter_invalid", f"at most {MAX_FILTERS_PER_GROUP} filters a group")
    matchers = [compile_query(part, depth + 1) for part in parts]
    combine = all if node["operator"] == "AND" else any
    return lambda conversation, cid: combine(m(conversation, cid) for m in matchers)


@dataclass
class FakeIntercom(FakeProvider):
    name: str = "intercom"
    access_token: str = "intercom-access-token"
    conversations: dict[str, IntercomConversation] = field(default_factory=dict)  # id -> conv
    honour_sort: bool = True
    rate_limit: RateWindow | None = None
    teams: dict[str, str] = field(default_factory=dict)  # id -> name
    admins: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (name, email)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/conversations/search", self.search)
        app.router.add_get("/teams", self.team_list)
        app.router.add_get("/admins", self.admin_list)
        app.router.add_route("*", "/{tail:.*}", self.unknown)

    def _refusal(self, request: web.Request) -> web.Response | None:
        """Rate limit, auth and version checks, in the order Intercom applies them."""
        if request.headers.get("Authorization") != f"Bearer {self.access_token}":
            return error_list(401, "unauthorized", "Access Token Invalid")
        version = request.headers.get("Intercom-Version")
        if version is not None and version not in VERSIONS:
            return error_list(400, "intercom_version_invalid", f"version {version!r} is unknown")
        return None

    async def unknown(self, request: web.Request) -> web.Response:
        return self._with_rate_limit(
            self._refusal(request) or error_list(404, "not_found", "Resource Not Found")
        )

    def _with_rate_limit(self, response: web.Response) -> web.Response:
        """Count the request; Intercom sends no rate-limit headers without valid credentials."""
        if self.rate_limit is None or response.status == 401:
            return response
        allowed, headers = self.rate_limit.take()
        if not allowed:
            limit = self.rate_limit.limit
            message = f"Exceeded rate limit of {limit} in {self.rate_limit.seconds:g}_seconds"
            response = error_list(429, "rate_limit_exceeded", message)
        response.headers.update(headers)
        return response

    async def search(self, request: web.Request) -> web.Response:
        refusal = self._refusal(request)
        if refusal is not None:
            return self._with_rate_limit(refusal)
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise SearchError("parameter_invalid", "the body must be a JSON object")
            answer = self._answer(body)
        except json.JSONDecodeError:
            return self._with_rate_limit(error_list(400, "parameter_invalid", "invalid JSON"))
        except SearchError as exc:
            return self._with_rate_limit(error_list(400, exc.code, exc.message))
        return self._with_rate_limit(json_response(answer))

    async def team_list(self, request: web.Request) -> web.Response:
        """``GET /teams``: every team, unpaged."""
        teams = [
            {"type": "team", "id": team_id, "name": name, "admin_ids": []}
            for team_id, name in self.teams.items()
        ]
        return self._listing(request, {"type": "team.list", "teams": teams})

    async def admin_list(self, request: web.Request) -> web.Response:
        """``GET /admins``: every teammate with name and email, unpaged."""
        admins = [
            {
                "type": "admin",
                "id": admin_id,
                "name": name,
                "email": email,
                "away_mode_enabled": False,
                "away_mode_reassign": False,
                "has_inbox_seat": True,
                "team_ids": [],
            }
            for admin_id, (name, email) in self.admins.items()
        ]
        return self._listing(request, {"type": "admin.list", "admins": admins})

    def _listing(self, request: web.Request, body: dict[str, Any]) -> web.Response:
        refusal = self._refusal(request)
        return self._with_rate_limit(refusal or json_response(body))

    def _answer(self, body: dict[str, Any]) -> dict[str, Any]:
        if "query" not in body:
            raise SearchError("parameter_not_found", "query is required")
        matches = compile_query(body["query"])
        pagination = body.get("pagination") or {}
        per_page = pagination.get("per_page", DEFAULT_PER_PAGE)
        if isinstance(per_page, bool) or not isinstance(per_page, int):
            raise SearchError("parameter_invalid", "per_page must be an integer")
        if not 1 <= per_page <= MAX_PER_PAGE:
            raise SearchError("parameter_invalid", f"per_page must be 1..{MAX_PER_PAGE}")
        start = _offset(pagination["starting_after"]) if "starting_after" in pagination else 0
        found = [(cid, c) for cid, c in self.conversations.items() if matches(c, cid)]
        found = self._ordered(found, body.get("sort"))
        chunk = found[start : start + per_page]
        total_pages = max(1, -(-len(found) // per_page))
        pages: dict[str, Any] = {
            "type": "pages",
            "page": start // per_page + 1,
            "per_page": per_page,
            "total_pages": total_pages,
        }
        if start + per_page < len(found):
            pages["next"] = {"per_page": per_page, "starting_after": _cursor(start + per_page)}
        return {
            "type": "conversation.list",
            "pages": pages,
            "total_count": len(found),
            "conversations": [c.as_json(cid) for cid, c in chunk],
        }

    def _ordered(
        self, found: list[tuple[str, IntercomConversation]], sort: Any
    ) -> list[tuple[str, IntercomConversation]]:
        """Sorted as asked (nulls last), or most recently updated first when not honoured."""
        if sort is None or not self.honour_sort:
            return sorted(
                found, key=lambda item: item[1].value("updated_at", item[0]), reverse=True
            )
        if not isinstance(sort, dict) or sort.get("order") not in ("ascending", "descending"):
            raise SearchError("invalid_sort_order", "sort.order must be ascending or descending")
        name = sort.get("field")
        if name not in DATE_FIELDS | STRING_FIELDS | BOOLEAN_FIELDS:
            raise SearchError("invalid_field", f"{name!r} cannot be sorted on")
        present = [item for item in found if item[1].value(str(name), item[0]) is not None]
        absent = [item for item in found if item[1].value(str(name), item[0]) is None]
        present.sort(
            key=lambda item: item[1].value(str(name), item[0]),
            reverse=sort["order"] == "descending",
        )
        return present + absent
