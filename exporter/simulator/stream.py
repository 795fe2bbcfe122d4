"""Simulated Stream Chat API: ``GET /unread`` and ``POST /unread_batch`` with server JWT auth.

Checks what Stream checks: the ``api_key`` query parameter, ``Stream-Auth-Type: jwt``, and the
JWT in ``Authorization``, verified here on its own (HS256 over header and claims with the app
secret, ``{"server": true}``), not with the exporter's signing code, so a signing bug fails the
tests. Errors use Stream's envelope ``{"code", "message", "StatusCode", "duration",
"more_info"}`` (unknown routes too), and a spent rate limit answers 429 with code 9 and the
``X-RateLimit-*`` headers every answer carries.

The answer's ``channels`` list holds at most the last ``CHANNEL_LIST_CAP`` unread channels, as
Stream's docs say; totals count them all. An organisation without the unread endpoint
(``unread_enabled`` False: Stream enables it on request) is answered 403 "Not Allowed", code 17.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from exporter.simulator.base import FakeProvider, RateWindow, json_response

MORE_INFO = "https://getstream.io/chat/docs/api_errors_response"
CHANNEL_LIST_CAP = 100


@dataclass
class StreamChannel:
    """A channel the user is a member of, with the user's unread messages in it."""

    channel_type: str = "messaging"
    channel_id: str = "general"
    unread: int = 0


def stream_error(status: int, code: int, message: str) -> web.Response:
    """Stream's error envelope."""
    body = {
        "code": code,
        "message": message,
        "StatusCode": status,
        "duration": "0.42ms",
        "more_info": MORE_INFO,
        "details": [],
    }
    return json_response(body, status=status)


def _unb64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def verify_server_jwt(token: str, secret: str) -> str | None:
    """Why ``token`` is not a valid server token for ``secret``, or None when it is."""
    parts = token.split(".")
    if len(parts) != 3:
        return "token is not a JWT"
    try:
        header, claims = json.loads(_unb64(parts[0])), json.loads(_unb64(parts[1]))
        signature = _unb64(parts[2])
    except (binascii.Error, ValueError):
        return "token is not a JWT"
    if not isinstance(header, dict) or header.get("alg") != "HS256":
        return "token algorithm is not HS256"
    expected = hmac.new(secret.encode(), f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256)
    if not hmac.compare_digest(expected.digest(), signature):
        return "token signature is invalid"
    if not isinstance(claims, dict) or claims.get("server") is not True:
        return "token is not a server-side token"
    return None


def unread_counts(channels: list[StreamChannel]) -> dict[str, Any]:
    """One user's answer: totals, unread channels, and unread channels grouped by type."""
    unread = [c for c in channels if c.unread > 0]
    by_type: dict[str, dict[str, Any]] = {}
    for channel in unread:
        entry = by_type.setdefault(
            channel.channel_type,
            {"channel_type": channel.channel_type, "channel_count": 0, "unread_count": 0},
        )
        entry["channel_count"] += 1
        entry["unread_count"] += channel.unread
    return {
        "total_unread_count": sum(c.unread for c in unread),
        "total_unread_threads_count": 0,
        "total_unread_count_by_team": {},
        "channels": [
            {
                "channel_id": f"{c.channel_type}:{c.channel_id}",
                "unread_count": c.unread,
                "last_read": "2026-01-01T00:00:00Z",
            }
            for c in unread[-CHANNEL_LIST_CAP:]
        ],
        "channel_type": list(by_type.values()),
        "threads": [],
    }


@dataclass
class FakeStream(FakeProvider):
    name: str = "stream"
    api_key: str = "streamapikey"
    api_secret: str = "stream-api-secret-of-the-simulator"
    users: dict[str, list[StreamChannel]] = field(default_factory=dict)  # user -> channels
    rate_limit: RateWindow | None = None
    unread_enabled: bool = True

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/unread", self.unread)
        app.router.add_post("/unread_batch", self.unread_batch)
        app.router.add_route("*", "/{tail:.*}", self.unknown)

    def _refusal(self, request: web.Request) -> web.Response | None:
        if request.query.get("api_key") != self.api_key:
            return stream_error(401, 2, "api_key not valid")
        if request.headers.get("Stream-Auth-Type") != "jwt":
            return stream_error(401, 5, "stream-auth-type header is missing or not jwt")
        problem = verify_server_jwt(request.headers.get("Authorization", ""), self.api_secret)
        if problem is not None:
            return stream_error(401, 43 if "signature" in problem else 5, problem)
        if not self.unread_enabled and request.path.startswith("/unread"):
            return stream_error(403, 17, "GetUnreadCounts failed: not allowed")
        return None

    def _limited(self, response: web.Response) -> web.Response:
        if self.rate_limit is None:
            return response
        allowed, headers = self.rate_limit.take()
        if not allowed:
            response = stream_error(429, 9, "Too many requests, check response headers")
        # lower-case names, as Stream sends them: the Python SDK's rate_limit() looks them up
        # by lower-case name in a case-sensitive dict of the answer's headers
        response.headers.update({name.lower(): text for name, text in headers.items()})
        return response

    async def unknown(self, request: web.Request) -> web.Response:
        refusal = self._refusal(request)
        return self._limited(refusal or stream_error(404, 16, "the requested URL does not exist"))

    async def unread(self, request: web.Request) -> web.Response:
        refusal = self._refusal(request)
        if refusal is not None:
            return self._limited(refusal)
        user_id = request.query.get("user_id", "")
        if not user_id:
            return self._limited(stream_error(400, 4, "user_id is required for server-side auth"))
        channels = self.users.get(user_id)
        if channels is None:
            return self._limited(stream_error(404, 16, f"user {user_id!r} does not exist"))
        return self._limited(json_response({**unread_counts(channels), "duration": "1.05ms"}))

    async def unread_batch(self, request: web.Request) -> web.Response:
        refusal = self._refusal(request)
        if refusal is not None:
            return self._limited(refusal)
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return self._limited(stream_error(400, 4, "invalid JSON body"))
        user_ids = body.get("user_ids") if isinstance(body, dict) else None
        if not isinstance(user_ids, list) or not user_ids:
            return self._limited(stream_error(400, 4, "user_ids is a required list"))
        counts = {
            user_id: unread_counts(self.users[user_id])
            for user_id in user_ids
            if isinstance(user_id, str) and user_id in self.users
        }
        return self._limited(json_response({"counts_by_user": counts, "duration": "2.10ms"}))
