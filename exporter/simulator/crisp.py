"""Simulated Crisp REST API v1: conversations of websites, Basic auth plus X-Crisp-Tier."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from exporter.simulator.base import FakeProvider, json_response

TIERS = frozenset({"plugin", "website"})
INBOX_PAGE = 20


@dataclass
class CrispConversation:
    unread_operator: int = 0
    unread_visitor: int = 0
    resolved: bool = False
    waiting_since_ms: int = 0
    inbox_id: str | None = None  # None: in no inbox
    operator_id: str | None = None  # None: assigned to nobody

    def as_json(self, website_id: str, session_id: str) -> dict[str, Any]:
        unread: dict[str, int] = {}
        if self.unread_operator:
            unread["operator"] = self.unread_operator
        if self.unread_visitor:
            unread["visitor"] = self.unread_visitor
        return {
            "session_id": session_id,
            "website_id": website_id,
            "state": "resolved" if self.resolved else "unresolved",
            "status": 2 if self.resolved else 1,
            "unread": unread,
            "waiting_since": self.waiting_since_ms,
            "meta": {"nickname": f"visitor {session_id[-4:]}"},
            "inbox_id": self.inbox_id,
            **({"assigned": {"user_id": self.operator_id}} if self.operator_id else {}),
        }


@dataclass
class CrispOperator:
    """A website's operator as ``operators/list`` gives it (``details`` of each entry)."""

    user_id: str
    first_name: str
    last_name: str
    email: str

    def as_json(self) -> dict[str, Any]:
        return {
            "type": "operator",
            "details": {
                "user_id": self.user_id,
                "email": self.email,
                "avatar": None,
                "first_name": self.first_name,
                "last_name": self.last_name,
                "role": "member",
                "title": None,
                "availability": "online",
                "has_token": False,
            },
        }


def _error(status: int, reason: str, message: str = "") -> web.Response:
    data = {"message": message} if message else {}
    return json_response({"error": True, "reason": reason, "data": data}, status=status)


@dataclass
class FakeCrisp(FakeProvider):
    name: str = "crisp"
    identifier: str = "crisp-identifier"
    key: str = "crisp-key"
    websites: dict[str, dict[str, CrispConversation]] = field(default_factory=dict)
    inboxes: dict[str, dict[str, str]] = field(default_factory=dict)  # website -> id -> name
    operators: dict[str, list[CrispOperator]] = field(default_factory=dict)  # website -> list
    # Serve at most this many conversations a page whatever ``per_page`` asks (an API that
    # capped or ignored it); None: ``per_page`` is honoured as documented.
    page_size_cap: int | None = None

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/website/{website_id}/conversation/{session_id}", self.conversation)
        app.router.add_get("/v1/website/{website_id}/conversations/{page}", self.conversations)
        # The official PyPI client (crisp-api 1.1.23) asks for the list page with a slash before
        # the query string, so the real API must answer it: the simulator does too.
        app.router.add_get("/v1/website/{website_id}/conversations/{page}/", self.conversations)

        app.router.add_get("/v1/website/{website_id}/inboxes/list/{page}", self.inbox_list)
        app.router.add_get("/v1/website/{website_id}/operators/list", self.operator_list)

    def route_error(self, status: int, reason: str) -> web.Response:
        """Crisp routes by method and path, so any miss is its 404 ``not_found`` (as quoted in
        crisp-im/node-crisp-api#63)."""
        return _error(404, "not_found", "the route does not exist")

    def _check(self, request: web.Request) -> web.Response | dict[str, CrispConversation]:
        expected = base64.b64encode(f"{self.identifier}:{self.key}".encode()).decode()
        if request.headers.get("Authorization") != f"Basic {expected}":
            return _error(401, "invalid_session")
        if request.headers.get("X-Crisp-Tier") not in TIERS:
            return _error(403, "not_allowed", "missing or unknown X-Crisp-Tier")
        website = self.websites.get(request.match_info["website_id"])
        if website is None:
            return _error(404, "not_subscribed", "the plugin is not subscribed to this website")
        return website

    async def conversation(self, request: web.Request) -> web.Response:
        website = self._check(request)
        if isinstance(website, web.Response):
            return website
        session_id = request.match_info["session_id"]
        conversation = website.get(session_id)
        if conversation is None:
            return _error(404, "session_not_found", "the conversation does not exist")
        body = conversation.as_json(request.match_info["website_id"], session_id)
        return json_response({"error": False, "reason": "resolved", "data": body})

    async def conversations(self, request: web.Request) -> web.Response:
        website = self._check(request)
        if isinstance(website, web.Response):
            return website
        try:
            page = int(request.match_info["page"])
            per_page = int(request.query.get("per_page", "20"))
        except ValueError:
            return _error(400, "invalid_data", "page and per_page must be numbers")
        if page < 1 or not 20 <= per_page <= 50:
            return _error(400, "invalid_data", "page starts at 1; per_page is 20..50")
        items = [
            (session_id, c)
            for session_id, c in sorted(website.items())
            if (request.query.get("filter_unread") != "1" or c.unread_operator or c.unread_visitor)
            and (request.query.get("filter_not_resolved") != "1" or not c.resolved)
        ]
        if self.page_size_cap is not None:
            per_page = min(per_page, self.page_size_cap)
        chunk = items[(page - 1) * per_page : page * per_page]
        data = [c.as_json(request.match_info["website_id"], sid) for sid, c in chunk]
        return json_response({"error": False, "reason": "resolved", "data": data})

    async def inbox_list(self, request: web.Request) -> web.Response:
        """Inboxes 20 a page, as ``{inbox_id, name, ...}``; past the last one an empty page."""
        website = self._check(request)
        if isinstance(website, web.Response):
            return website
        try:
            page = int(request.match_info["page"])
        except ValueError:
            return _error(400, "invalid_data", "page must be a number")
        if page < 1:
            return _error(400, "invalid_data", "page starts at 1")
        inboxes = sorted(self.inboxes.get(request.match_info["website_id"], {}).items())
        chunk = inboxes[(page - 1) * INBOX_PAGE : page * INBOX_PAGE]
        data: list[dict[str, Any]] = [
            {"inbox_id": inbox_id, "name": name, "emoji": None, "order": order, "operators": []}
            for order, (inbox_id, name) in enumerate(chunk)
        ]
        return json_response({"error": False, "reason": "listed", "data": data})

    async def operator_list(self, request: web.Request) -> web.Response:
        website = self._check(request)
        if isinstance(website, web.Response):
            return website
        operators = self.operators.get(request.match_info["website_id"], [])
        data = [operator.as_json() for operator in operators]
        return json_response({"error": False, "reason": "listed", "data": data})
