"""Simulated Chatwoot application API: conversation counts, list, live reports and names.

Follows Chatwoot's swagger description (``swagger/swagger.json``) where it describes an
endpoint, and the Rails controllers and jbuilder views where it does not or differs
(``docs/chatwoot.md``): the ``api_access_token`` header (401 ``{"error": "Invalid Access
Token"}`` without a valid one), an account the token's user is not a member of (401, as Pundit
answers), an unknown account or team (404 ``{"error": "Resource could not be found"}``), the
live reports only for administrators and only grouped by ``team_id`` or ``assignee_id`` (422
``{"error": "invalid group_by"}``), the conversation list in pages of 25 sorted by last
activity (newest first), and Rack::Attack's throttle: 429 with the plain text body
``Retry later`` and, by default, no ``Retry-After``.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from exporter.simulator.base import FakeProvider, RateWindow, json_response

PAGE_SIZE = 25
STATUSES = frozenset({"open", "resolved", "pending", "snoozed"})
CREATED_AT = 1_700_000_000


@dataclass
class ChatwootConversation:
    """One conversation; ``waiting_since`` 0 means no contact message waits for a reply."""

    inbox_id: int
    status: str = "open"
    team_id: int | None = None
    assignee_id: int | None = None
    unread_count: int = 0
    waiting_since: int = 0
    last_activity_at: int = CREATED_AT

    def as_json(self, display_id: int, account_id: int, agents: dict[int, ChatwootAgent]) -> Any:
        """The list's rendering of a conversation (``_conversation.json.jbuilder``'s fields)."""
        meta: dict[str, Any] = {
            "sender": {"id": display_id + 10_000, "name": f"Visitor {display_id}"},
            "channel": "Channel::WebWidget",
        }
        agent = agents.get(self.assignee_id) if self.assignee_id is not None else None
        if agent is not None and self.assignee_id is not None:
            meta["assignee"] = agent.as_json(self.assignee_id, account_id)
        if self.team_id is not None:
            meta["team"] = {"id": self.team_id}
        return {
            "meta": meta,
            "id": display_id,
            "messages": [],
            "account_id": account_id,
            "additional_attributes": {},
            "inbox_id": self.inbox_id,
            "labels": [],
            "status": self.status,
            "created_at": CREATED_AT,
            "timestamp": self.last_activity_at,
            "last_activity_at": self.last_activity_at,
            "unread_count": self.unread_count,
            "waiting_since": self.waiting_since,
        }


@dataclass
class ChatwootAgent:
    name: str
    email: str
    administrator: bool = False

    def as_json(self, agent_id: int, account_id: int) -> dict[str, Any]:
        return {
            "id": agent_id,
            "account_id": account_id,
            "availability_status": "available",
            "auto_offline": True,
            "confirmed": True,
            "email": self.email,
            "available_name": self.name,
            "name": self.name,
            "role": "administrator" if self.administrator else "agent",
        }


def _error(status: int, message: str) -> web.Response:
    return json_response({"error": message}, status=status)


@dataclass
class FakeChatwoot(FakeProvider):
    """One installation holding one account; the token is an administrator's unless
    ``administrator`` is off (then the live reports are refused)."""

    name: str = "chatwoot"
    account_id: int = 1
    api_access_token: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    administrator: bool = True
    conversations: dict[int, ChatwootConversation] = field(default_factory=dict)
    teams: dict[int, str] = field(default_factory=dict)
    inboxes: dict[int, str] = field(default_factory=dict)
    agents: dict[int, ChatwootAgent] = field(default_factory=dict)
    # Rack::Attack's ``req/ip`` throttle (3000 a minute by default); None: not enforced.
    rate_limit: RateWindow | None = None
    # Rack::Attack's throttled_response_retry_after_header (off by default).
    retry_after_header: bool = False

    def add_routes(self, app: web.Application) -> None:
        v1 = "/api/v1/accounts/{account_id}"
        routes: dict[str, Callable[[web.Request], Awaitable[web.Response]]] = {
            f"{v1}/conversations/meta": self._meta,
            f"{v1}/conversations": self._list,
            f"{v1}/teams": self._teams,
            f"{v1}/agents": self._agents,
            f"{v1}/inboxes": self._inboxes,
            "/api/v2/accounts/{account_id}/live_reports/grouped_conversation_metrics": (
                self._grouped
            ),
        }
        for path, handler in routes.items():
            app.router.add_get(path, self._gated(handler))

    def _gated(
        self, handler: Callable[[web.Request], Awaitable[web.Response]]
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        """Every route passes the gate first, as every Chatwoot request passes Rack::Attack
        and the token check before its controller."""

        async def gated(request: web.Request) -> web.Response:
            refused = self._gate(request)
            return refused if refused is not None else await handler(request)

        return gated

    def route_error(self, status: int, reason: str) -> web.Response:
        """Rails answers an unknown route with its static 404 page."""
        page = "<html><body><h1>The page you were looking for doesn't exist.</h1></body></html>"
        return web.Response(status=404, text=page, content_type="text/html")

    def _gate(self, request: web.Request) -> web.Response | None:
        """Rack::Attack, then the token, then the account: the answer that ends the request."""
        if self.rate_limit is not None and not self.rate_limit.take()[0]:
            headers = {"Retry-After": str(int(self.rate_limit.seconds))}
            return web.Response(
                status=429,
                text="Retry later\n",
                content_type="text/plain",
                headers=headers if self.retry_after_header else None,
            )
        if request.headers.get("api_access_token") != self.api_access_token:
            return _error(401, "Invalid Access Token")
        if request.match_info["account_id"] != str(self.account_id):
            if request.match_info["account_id"].isdigit():
                return _error(401, "You are not authorized to do this action")
            return _error(404, "Resource could not be found")
        return None

    def _selected(self, request: web.Request) -> list[tuple[int, ChatwootConversation]] | None:
        """ConversationFinder's filters: ``status`` (default open), ``inbox_id``, ``team_id``
        (an unknown team is a 404, as ``teams.find`` raises); ``None`` for that 404."""
        status = request.query.get("status", "open")
        inbox = request.query.get("inbox_id")
        team = request.query.get("team_id")
        if team is not None and (not team.isdigit() or int(team) not in self.teams):
            return None
        chosen = [
            (display_id, conversation)
            for display_id, conversation in self.conversations.items()
            if (status == "all" or conversation.status == status)
            and (inbox is None or str(conversation.inbox_id) == inbox)
            and (team is None or str(conversation.team_id) == team)
        ]
        # ``latest``: the most recent activity first
        chosen.sort(key=lambda pair: (-pair[1].last_activity_at, -pair[0]))
        return chosen

    @staticmethod
    def _counts(chosen: list[tuple[int, ChatwootConversation]]) -> dict[str, int]:
        unassigned = sum(1 for _id, c in chosen if c.assignee_id is None)
        return {
            "mine_count": 0,
            "unassigned_count": unassigned,
            "assigned_count": len(chosen) - unassigned,
            "all_count": len(chosen),
        }

    async def _meta(self, request: web.Request) -> web.Response:
        chosen = self._selected(request)
        if chosen is None:
            return _error(404, "Resource could not be found")
        return json_response({"meta": self._counts(chosen)})

    async def _list(self, request: web.Request) -> web.Response:
        chosen = self._selected(request)
        if chosen is None:
            return _error(404, "Resource could not be found")
        page_text = request.query.get("page", "1")
        page = int(page_text) if page_text.isdigit() and int(page_text) > 0 else 1
        shown = chosen[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
        payload = [c.as_json(i, self.account_id, self.agents) for i, c in shown]
        return json_response({"data": {"meta": self._counts(chosen), "payload": payload}})

    async def _grouped(self, request: web.Request) -> web.Response:
        if not self.administrator:
            return _error(401, "You are not authorized to do this action")
        scope = request.query.get("group_by")
        if scope not in ("team_id", "assignee_id"):
            return _error(422, "invalid group_by")
        team = request.query.get("team_id")
        if team is not None and (not team.isdigit() or int(team) not in self.teams):
            return _error(404, "Resource could not be found")
        groups: dict[int | None, dict[str, Any]] = {}
        for conversation in self.conversations.values():
            if conversation.status != "open" or (
                team is not None and str(conversation.team_id) != team
            ):
                continue
            key = conversation.team_id if scope == "team_id" else conversation.assignee_id
            row = groups.setdefault(key, {"open": 0, "unattended": 0, "unassigned": 0, scope: key})
            row["open"] += 1
            row["unattended"] += conversation.waiting_since > 0
            row["unassigned"] += conversation.assignee_id is None
        return json_response(list(groups.values()))

    async def _teams(self, request: web.Request) -> web.Response:
        return json_response(
            [
                {
                    "id": team_id,
                    "name": name,
                    "description": "",
                    "allow_auto_assign": True,
                    "account_id": self.account_id,
                    "is_member": False,
                }
                for team_id, name in self.teams.items()
            ]
        )

    async def _agents(self, request: web.Request) -> web.Response:
        return json_response(
            [agent.as_json(agent_id, self.account_id) for agent_id, agent in self.agents.items()]
        )

    async def _inboxes(self, request: web.Request) -> web.Response:
        payload = [
            {"id": inbox_id, "channel_id": inbox_id, "name": name, "channel_type": "Channel::Api"}
            for inbox_id, name in self.inboxes.items()
        ]
        return json_response({"payload": payload})
