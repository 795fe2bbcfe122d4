"""Simulated QuickBlox REST API: sessions signed with HMAC-SHA1, API keys, unread counts."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from exporter.providers.quickblox import session_signature
from exporter.simulator.base import FakeProvider, json_response

SESSION_LIFETIME = 7200.0
MAX_CLOCK_SKEW = 3600.0


def _errors(status: int, *messages: str, base: bool = True) -> web.Response:
    body: dict[str, Any] = {"errors": {"base": list(messages)} if base else list(messages)}
    return json_response(body, status=status)


@dataclass
class FakeQuickBlox(FakeProvider):
    name: str = "quickblox"
    application_id: int = 76730
    auth_key: str = "qb-auth-key"
    auth_secret: str = "qb-auth-secret"
    api_key: str = "qb-api-key"
    users: dict[str, tuple[str, int]] = field(default_factory=dict)  # login -> (password, id)
    unread: dict[int, dict[str, int]] = field(default_factory=dict)  # user id -> dialog -> n
    sessions: dict[str, int] = field(default_factory=dict)  # token -> user id (0: app only)
    seen_nonces: set[str] = field(default_factory=set)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/session.json", self.create_session)
        app.router.add_get("/chat/Message/unread.json", self.unread_count)

    def expire_sessions(self) -> None:
        """Forget every session, as QuickBlox does two hours after a session's last use."""
        self.sessions.clear()

    async def create_session(self, request: web.Request) -> web.Response:
        if request.content_type == "application/json":
            raw: Any = await request.json()
        else:
            raw = dict(await request.post())
        params = {str(k): str(v) for k, v in raw.items()}
        signature = params.pop("signature", "")
        if params.get("application_id") != str(self.application_id):
            return _errors(422, "Unknown application")
        if params.get("auth_key") != self.auth_key:
            return _errors(422, "Unexpected auth key")
        try:
            timestamp = int(params.get("timestamp", ""))
        except ValueError:
            return _errors(422, "Timestamp is missing")
        if abs(time.time() - timestamp) > MAX_CLOCK_SKEW:
            return _errors(422, "Timestamp is out of range")
        nonce = params.get("nonce", "")
        if not nonce or nonce + str(timestamp) in self.seen_nonces:
            return _errors(422, "Nonce was already used")
        if session_signature(params, self.auth_secret) != signature:
            return _errors(422, "Unexpected signature")
        self.seen_nonces.add(nonce + str(timestamp))
        user_id = 0
        if "user[login]" in params:
            known = self.users.get(params["user[login]"])
            if known is None or known[0] != params.get("user[password]"):
                return _errors(401, "Unauthorized", base=False)
            user_id = known[1]
        token = secrets.token_hex(20)
        self.sessions[token] = user_id
        expires = datetime.fromtimestamp(time.time() + SESSION_LIFETIME, UTC)
        body = {
            "session": {
                "application_id": self.application_id,
                "token": token,
                "user_id": user_id,
                "nonce": int(nonce) if nonce.isdigit() else nonce,
                "ts": timestamp,
            }
        }
        return json_response(
            body, status=201, headers={"QB-Token-ExpirationDate": expires.isoformat()}
        )

    def _user(self, request: web.Request) -> int | web.Response:
        token = request.headers.get("QB-Token")
        authorization = request.headers.get("Authorization")
        if (token is None) == (authorization is None):
            return _errors(401, "Must be used either QB-Token or Authorization")
        if token is not None:
            if token not in self.sessions:
                return _errors(401, "Required session does not exist")
            user_id = self.sessions[token]
        else:
            if authorization != f"ApiKey {self.api_key}":
                return _errors(401, "Unauthorized", base=False)
            on_behalf = request.headers.get("On-Behalf-Of", "0")
            user_id = int(on_behalf) if on_behalf.isdigit() else 0
        if user_id == 0 or user_id not in self.unread:
            return _errors(403, "Forbidden. Need user.")
        return user_id

    async def unread_count(self, request: web.Request) -> web.Response:
        user_id = self._user(request)
        if isinstance(user_id, web.Response):
            return user_id
        dialogs = self.unread[user_id]
        body: dict[str, int] = {}
        if "chat_dialog_ids" in request.query:
            if "%2C" in request.query_string.upper():
                return _errors(400, "chat_dialog_ids must be a plain comma-separated list")
            for dialog_id in request.query["chat_dialog_ids"].split(","):
                if dialog_id in dialogs:
                    body[dialog_id] = dialogs[dialog_id]
        body["total"] = sum(dialogs.values())
        return json_response(body)
