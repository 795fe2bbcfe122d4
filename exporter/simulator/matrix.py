"""Simulated Matrix homeserver: ``/sync`` with since tokens and ``/directory/room/{alias}``.

Answers in Synapse's wire format: ``rooms.join.{room_id}.unread_notifications``,
``rooms.leave``, ``next_batch``, the ``{"errcode", "error"}`` envelope (``M_UNRECOGNIZED`` for an
unknown route, ``M_LIMIT_EXCEEDED`` with ``retry_after_ms``). An incremental sync lists only the
rooms whose counts changed since the token was issued, as a homeserver does, so a client that
forgot the other rooms' counts would be caught.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from aiohttp import web

from exporter.simulator.base import FakeProvider, json_response

Snapshot = dict[str, tuple[int, int, int, str | None, str | None]]
MAX_TOKENS = 1000  # issued since tokens remembered; older ones are refused like garbage


@dataclass
class MatrixRoom:
    notifications: int = 0  # in the main timeline
    highlights: int = 0
    name: str | None = None  # the m.room.name state event's content.name
    thread_notifications: int = 0  # in threads: apart only when the filter asks for it
    replaced_by: str | None = None  # an m.room.tombstone's replacement_room


def _error(status: int, errcode: str, message: str, **extra: object) -> web.Response:
    return json_response({"errcode": errcode, "error": message, **extra}, status=status)


@dataclass
class FakeMatrix(FakeProvider):
    name: str = "matrix"
    server_name: str = "example.org"
    # access token -> that user's joined rooms by room id
    users: dict[str, dict[str, MatrixRoom]] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)  # "#alias:server" -> room id
    invites: dict[str, set[str]] = field(default_factory=dict)  # access token -> invited rooms
    muted: dict[str, set[str]] = field(default_factory=dict)  # access token -> muted rooms
    rate_limit_per_second: int | None = None
    _tokens: OrderedDict[str, tuple[str, Snapshot]] = field(default_factory=OrderedDict)
    _next_token: int = 0
    _rules_sent: dict[str, frozenset[str]] = field(default_factory=dict)
    _window: tuple[int, int] = (0, 0)  # (second, requests in it)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/_matrix/client/v3/sync", self.sync)
        app.router.add_get("/_matrix/client/v3/directory/room/{alias}", self.directory)
        app.router.add_route("*", "/{tail:.*}", self.unrecognized)

    def forget_tokens(self) -> None:
        """Refuse every since token issued so far (as after a homeserver's database reset)."""
        self._tokens.clear()

    def restore_backup(self) -> None:
        """Go back to an earlier stream position, as a homeserver whose database was restored
        from a backup: tokens issued since are ahead of it, and like Synapse it clamps such a
        token to its own position and answers "nothing new" there."""
        self._tokens.clear()
        self._next_token = max(0, self._next_token - 10)

    def _throttled(self) -> web.Response | None:
        if self.rate_limit_per_second is None:
            return None
        second = int(time.time())
        used = self._window[1] + 1 if self._window[0] == second else 1
        self._window = (second, used)
        if used <= self.rate_limit_per_second:
            return None
        return _error(429, "M_LIMIT_EXCEEDED", "Too Many Requests", retry_after_ms=2000)

    def _user(self, request: web.Request) -> tuple[str, dict[str, MatrixRoom]] | web.Response:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            return _error(401, "M_MISSING_TOKEN", "Missing access token.")
        token = header.removeprefix("Bearer ")
        rooms = self.users.get(token)
        if rooms is None:
            return _error(401, "M_UNKNOWN_TOKEN", "Invalid access token passed.")
        return token, rooms

    async def sync(self, request: web.Request) -> web.Response:
        if (throttled := self._throttled()) is not None:
            return throttled
        user = self._user(request)
        if isinstance(user, web.Response):
            return user
        token, rooms = user
        if not request.query.get("timeout", "0").isdigit():
            return _error(400, "M_INVALID_PARAM", "Query parameter 'timeout' must be an integer")
        room_filter = self._room_filter(request.query.get("filter", "{}"))
        if isinstance(room_filter, web.Response):
            return room_filter
        not_rooms = room_filter.get("not_rooms", [])
        excluded = set(not_rooms) if isinstance(not_rooms, list) else set()
        timeline = room_filter.get("timeline")
        threads_apart = isinstance(timeline, dict) and timeline.get("unread_thread_notifications")
        # A highlight is a notification with the highlight tweak: never more of them.
        current = {
            room_id: (
                room.notifications,
                min(room.highlights, room.notifications),
                room.thread_notifications,
                room.name,
                room.replaced_by,
            )
            for room_id, room in rooms.items()
            if room_id not in excluded
        }
        since = request.query.get("since")
        if since is None:
            changed, left = current, set[str]()
        else:
            issued = self._tokens.get(since)
            if issued is None and _position(since) > self._next_token:
                # Synapse clamps a token ahead of it: nothing new, from its own position.
                position = f"s{self._next_token}_0_0"
                return json_response({"next_batch": position, "rooms": {"join": {}}})
            if issued is None or issued[0] != token:
                return _error(400, "M_UNKNOWN", "Invalid stream token")
            seen = issued[1]
            changed = {r: c for r, c in current.items() if seen.get(r) != c}
            left = seen.keys() - current.keys()
        next_batch = self._issue(token, current)
        state_filter = room_filter.get("state")
        join = {
            room_id: {
                "timeline": {"events": [], "limited": False},
                "state": {"events": _state_events(state_filter, name, replaced_by)},
                "ephemeral": {"events": []},
                "account_data": {"events": []},
                "unread_notifications": {
                    "notification_count": n if threads_apart else n + threads,
                    "highlight_count": h,
                },
                **(
                    {"unread_thread_notifications": {"$thread": {"notification_count": threads}}}
                    if threads_apart and threads
                    else {}
                ),
                "summary": {},
            }
            for room_id, (n, h, threads, name, replaced_by) in changed.items()
        }
        leave: dict[str, object] = {
            room_id: {"timeline": {"events": []}, "state": {"events": []}} for room_id in left
        }
        invite: dict[str, object] = {
            room_id: {"invite_state": {"events": []}} for room_id in self.invites.get(token, ())
        }
        rooms_body = {"join": join, "invite": invite, "leave": leave, "knock": {}}
        answer: dict[str, object] = {"next_batch": next_batch, "rooms": rooms_body}
        if self._push_rules_changed(token) or since is None:
            answer["account_data"] = {"events": [self._push_rules(token)]}
        return json_response(answer)

    def _push_rules_changed(self, token: str) -> bool:
        """An incremental sync carries the push rules only when they changed since the user's
        last sync (the client must keep them otherwise)."""
        current = frozenset(self.muted.get(token, ()))
        changed = self._rules_sent.get(token) != current
        self._rules_sent[token] = current
        return changed

    def _push_rules(self, token: str) -> dict[str, object]:
        """Element's "Mute" for each muted room: an override rule matching the room, no actions."""
        override = [
            {
                "rule_id": room_id,
                "default": False,
                "enabled": True,
                "conditions": [{"kind": "event_match", "key": "room_id", "pattern": room_id}],
                "actions": [],
            }
            for room_id in sorted(self.muted.get(token, ()))
        ]
        return {"type": "m.push_rules", "content": {"global": {"override": override}}}

    @staticmethod
    def _room_filter(text: str) -> dict[str, object] | web.Response:
        """The filter's ``room`` part: ``not_rooms`` and whether state names pass it."""
        try:
            sync_filter = json.loads(text)
        except ValueError:
            return _error(400, "M_NOT_JSON", "Invalid filter JSON")
        room = sync_filter.get("room", {}) if isinstance(sync_filter, dict) else None
        if not isinstance(room, dict):
            return _error(400, "M_BAD_JSON", "Invalid filter")
        return room

    def _issue(self, token: str, snapshot: Snapshot) -> str:
        self._next_token += 1
        next_batch = f"s{self._next_token}_0_0"
        self._tokens[next_batch] = (token, snapshot)
        while len(self._tokens) > MAX_TOKENS:
            self._tokens.popitem(last=False)
        return next_batch

    async def directory(self, request: web.Request) -> web.Response:
        alias = request.match_info["alias"]
        room_id = self.aliases.get(alias)
        if room_id is None:
            return _error(404, "M_NOT_FOUND", f"Room alias {alias} not found")
        return json_response({"room_id": room_id, "servers": [self.server_name]})

    async def unrecognized(self, request: web.Request) -> web.Response:
        return _error(404, "M_UNRECOGNIZED", "Unrecognized request")


def _state_passes(state_filter: object, event_type: str) -> bool:
    """Whether a room state filter (``types`` / ``not_types``, ``*`` a wildcard) lets an event
    type through, as a homeserver applies it."""
    if not isinstance(state_filter, dict):
        return True
    types, not_types = state_filter.get("types"), state_filter.get("not_types", [])
    if isinstance(not_types, list) and ("*" in not_types or event_type in not_types):
        return False
    return not isinstance(types, list) or "*" in types or event_type in types


def _state_events(
    state_filter: object, name: str | None, replaced_by: str | None
) -> list[dict[str, object]]:
    """A room's name and tombstone state events, as far as the filter lets them through."""
    events: list[dict[str, object]] = []
    if name is not None and _state_passes(state_filter, "m.room.name"):
        events.append({"type": "m.room.name", "state_key": "", "content": {"name": name}})
    if replaced_by is not None and _state_passes(state_filter, "m.room.tombstone"):
        content = {"body": "This room has been replaced", "replacement_room": replaced_by}
        events.append({"type": "m.room.tombstone", "state_key": "", "content": content})
    return events


def _position(token: str) -> int:
    """The stream position of one of this simulator's ``s<n>_0_0`` tokens (-1: not one)."""
    head = token.removeprefix("s").split("_", 1)[0]
    return int(head) if token.startswith("s") and head.isdigit() else -1
