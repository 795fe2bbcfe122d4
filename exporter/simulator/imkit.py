"""Simulated IMKit chat server: ``/me/badge`` with client key, user token and room tags."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web

from exporter.simulator.base import FakeProvider, json_response


@dataclass
class IMKitRoom:
    tags: frozenset[str]
    unread: int = 0


def _error(status: int, code: str, message: str) -> web.Response:
    body = {"RC": status, "RM": message, "error": {"code": code, "message": message}}
    return json_response(body, status=status)


@dataclass
class FakeIMKit(FakeProvider):
    name: str = "imkit"
    client_key: str = "imkit-client-key"
    rooms: dict[str, list[IMKitRoom]] = field(default_factory=dict)  # user token -> rooms

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/me/badge", self.badge)

    def route_error(self, status: int, reason: str) -> web.Response:
        """The RC envelope IMKit's docs show for its 404s (the code name is ours)."""
        return _error(status, "NOT_FOUND" if status == 404 else "METHOD_NOT_ALLOWED", reason)

    async def badge(self, request: web.Request) -> web.Response:
        if request.headers.get("IM-CLIENT-KEY") != self.client_key:
            return _error(401, "INVALID_CLIENT_KEY", "Invalid client key")
        rooms = self.rooms.get(request.headers.get("IM-Authorization", ""))
        if rooms is None:
            return _error(401, "INVALID_TOKEN", "Invalid or expired token")
        tags = request.query.getall("roomTags", [])
        if any(not tag.strip() for tag in tags):
            return _error(400, "INVALID_ROOM_TAGS", "Room tags must be valid strings")
        wanted = frozenset(tags)
        badge = sum(room.unread for room in rooms if wanted <= room.tags)
        return json_response({"RC": 0, "RM": "OK", "result": {"badge": badge}})
