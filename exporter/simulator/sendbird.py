"""Simulated Sendbird Platform API v3: ``unread_item_count`` and ``my_group_channels`` with
Api-Token and rate limits.

``my_group_channels`` pages by ``token`` (the answer's ``next``, empty on the last page),
``limit`` 1..100 (default 10), and filters as the Platform API reference lists:
``unread_filter`` (``all``, ``unread_message``), ``member_state_filter`` (``all``,
``joined_only``, ``invited_only``), ``super_mode`` (``all``, ``super``, ``nonsuper``) and
``custom_types``. A channel without ``url`` is served as ``sendbird_group_channel_<index>``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from aiohttp import web

from exporter.simulator.base import FakeProvider, json_response

KINDS = ("group_channel", "super_group_channel", "non_super_group_channel")
ITEMS = ("unread_message_count", "unread_mention_count", "invitation_count")
ITEM_KEYS = frozenset(f"{kind}_{item}" for kind in KINDS for item in ITEMS)


@dataclass
class SendbirdChannel:
    custom_type: str = ""
    super_group: bool = False
    unread: int = 0
    mentions: int = 0
    invited: bool = False
    url: str = ""
    name: str = ""


def _error(status: int, code: int, message: str) -> web.Response:
    return json_response({"message": message, "code": code, "error": True}, status=status)


@dataclass
class FakeSendbird(FakeProvider):
    name: str = "sendbird"
    api_token: str = "sendbird-api-token"
    channels: dict[str, list[SendbirdChannel]] = field(default_factory=dict)  # user -> channels
    rate_limit_per_second: int | None = None
    _window: tuple[int, int] = (0, 0)  # (second, requests in it)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/v3/users/{user_id}/unread_item_count", self.unread_items)
        app.router.add_get("/v3/users/{user_id}/my_group_channels", self.my_group_channels)

    def route_error(self, status: int, reason: str) -> web.Response:
        """Sendbird answers errors as 400 with a six-digit code; 400201 is its "not found"."""
        return _error(400, 400201, f"{reason}: the requested resource does not exist.")

    def _rate_headers(self) -> tuple[bool, dict[str, str]]:
        if self.rate_limit_per_second is None:
            return True, {}
        second = int(time.time())
        used = self._window[1] + 1 if self._window[0] == second else 1
        self._window = (second, used)
        limit = self.rate_limit_per_second
        headers = {
            "X-RateLimit-Limit": f"{limit};w=1",
            "X-RateLimit-Remaining": str(max(limit - used, 0)),
            "X-RateLimit-Reset": str(second + 1),
        }
        return used <= limit, headers

    def _channels_of(
        self, request: web.Request
    ) -> tuple[list[SendbirdChannel], dict[str, str]] | web.Response:
        """The user's channels and the rate-limit headers, or the refusal to answer."""
        allowed, headers = self._rate_headers()
        if not allowed:
            response = _error(429, 500910, "Too many requests.")
            response.headers.update(headers)
            return response
        if request.headers.get("Api-Token") != self.api_token:
            return _error(401, 400401, "Not valid Api-Token. Api-Token is missing.")
        channels = self.channels.get(request.match_info["user_id"])
        if channels is None:
            return _error(400, 400201, '"User" not found.')
        return channels, headers

    async def my_group_channels(self, request: web.Request) -> web.Response:
        found = self._channels_of(request)
        if isinstance(found, web.Response):
            return found
        channels, headers = found
        query = request.query
        try:
            limit = int(query.get("limit", "10"))
            offset = int(query["token"].removeprefix("page-")) if "token" in query else 0
        except ValueError:
            return _error(400, 400111, "Invalid value: limit or token.")
        if not 1 <= limit <= 100 or offset < 0:
            return _error(400, 400111, "Invalid value: limit or token.")
        choices = {
            "unread_filter": ("all", "unread_message"),
            "member_state_filter": ("all", "joined_only", "invited_only"),
            "super_mode": ("all", "super", "nonsuper"),
        }
        for name, allowed in choices.items():
            if query.get(name, "all") not in allowed:
                return _error(400, 400111, f"Invalid value: {name}.")
        custom_types = [t for t in query.get("custom_types", "").split(",") if t]
        state = query.get("member_state_filter", "all")
        mode = query.get("super_mode", "all")
        selected = [
            (index, c)
            for index, c in enumerate(channels)
            if (not custom_types or c.custom_type in custom_types)
            and (state == "all" or c.invited == (state == "invited_only"))
            and (mode == "all" or c.super_group == (mode == "super"))
            and (query.get("unread_filter", "all") == "all" or c.unread > 0)
        ]
        page = selected[offset : offset + limit]
        more = offset + limit < len(selected)
        body = {
            "channels": [
                {
                    "channel_url": c.url or f"sendbird_group_channel_{index}",
                    "name": c.name,
                    "custom_type": c.custom_type,
                    "is_super": c.super_group,
                    "member_state": "invited" if c.invited else "joined",
                    "unread_message_count": c.unread,
                    "unread_mention_count": c.mentions,
                }
                for index, c in page
            ],
            "next": f"page-{offset + limit}" if more else "",
            "ts": 1_700_000_000_000,
        }
        return json_response(body, headers=headers)

    async def unread_items(self, request: web.Request) -> web.Response:
        found = self._channels_of(request)
        if isinstance(found, web.Response):
            return found
        channels, headers = found
        keys = [k for k in request.query.get("item_keys", "").split(",") if k]
        if not keys:
            return _error(400, 400151, '"item_keys" is required.')
        if unknown := [k for k in keys if k not in ITEM_KEYS]:
            return _error(400, 400110, f"Invalid value: {unknown[0]}.")
        custom_types = [t for t in request.query.get("custom_types", "").split(",") if t]
        selected = [c for c in channels if not custom_types or c.custom_type in custom_types]
        body = {key: self._count(selected, key) for key in keys}
        return json_response(body, headers=headers)

    @staticmethod
    def _count(channels: list[SendbirdChannel], key: str) -> int:
        kind = next(k for k in sorted(KINDS, key=len, reverse=True) if key.startswith(k))
        chosen = [
            c
            for c in channels
            if kind == "group_channel" or c.super_group == (kind == "super_group_channel")
        ]
        if key.endswith("invitation_count"):
            return sum(1 for c in chosen if c.invited)
        if key.endswith("unread_mention_count"):
            return sum(c.mentions for c in chosen if not c.invited)
        return sum(c.unread for c in chosen if not c.invited)
