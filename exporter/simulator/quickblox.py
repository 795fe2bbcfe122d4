"""Simulated QuickBlox REST API: sessions signed with HMAC-SHA1, API keys, unread counts.

Session tokens live two hours after their last use, as QuickBlox documents; every answer to a
session carries ``QB-Token-ExpirationDate`` in the format real answers use
(``2016-05-02 19:52:00 UTC``), and a token used after that moment is refused with the real
401 "Required session does not exist" and remembered in ``lapsed_requests``. Time comes from
``clock`` so tests can move it by hand.

``GET /chat/Dialog.json?limit=&skip=`` lists the user's dialogs in the order of ``unread``'s
mapping (a test re-inserts a dialog to move it, as a new message moves it up the real list),
``max_page_size`` at most per page, with ``total_entries``; ``after_page`` runs after each
page is answered, so a test can move the list while it is paged.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from aiohttp import web

from exporter.simulator.base import FakeProvider, SeenRequest, json_response

SESSION_LIFETIME = 7200.0
MAX_CLOCK_SKEW = 3600.0
REAL_EXPIRY_FORMAT = "%Y-%m-%d %H:%M:%S UTC"


def _errors(status: int, *messages: str, base: bool = True) -> web.Response:
    body: dict[str, Any] = {"errors": {"base": list(messages)} if base else list(messages)}
    return json_response(body, status=status)


def sdk_signature(form: Mapping[str, str], auth_secret: str) -> str:
    """The signature the official JS SDK computes, rebuilt from the form it posts.

    Written independently of the exporter's signer so that a signing bug there fails the
    tests: like the server, it first nests ``user[login]``-style fields back into objects, then
    signs as ``qbAuth.js`` ``signMessage`` does: each top-level value as ``k=v``, each object
    as its ``k[sub]=v`` pairs sorted and joined by ``&``, those strings sorted and joined by
    ``&``, HMAC-SHA1 in lower-case hex.
    """
    nested: dict[str, str | dict[str, str]] = {}
    for key, value in form.items():
        outer, bracket, inner = key.partition("[")
        if bracket and inner.endswith("]"):
            group = nested.setdefault(outer, {})
            if isinstance(group, dict):
                group[inner[:-1]] = value
        else:
            nested[key] = value
    parts = [
        "&".join(sorted(f"{key}[{sub}]={v}" for sub, v in value.items()))
        if isinstance(value, dict)
        else f"{key}={value}"
        for key, value in nested.items()
    ]
    message = "&".join(sorted(parts))
    return hmac.new(auth_secret.encode(), message.encode(), hashlib.sha1).hexdigest()


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
    # token -> unix time it lapses; a token a test puts only in ``sessions`` never lapses
    session_expiry: dict[str, float] = field(default_factory=dict)
    seen_nonces: set[str] = field(default_factory=set)
    # What ``total`` counts when ``chat_dialog_ids`` is given: "listed" (only those dialogs,
    # as the official API docs' example shows) or "all" (every dialog of the user).
    total_counts: Literal["listed", "all"] = "listed"
    # "quickblox": the format real answers carry; "iso8601" for clients that must take both.
    expiry_format: Literal["quickblox", "iso8601"] = "quickblox"
    clock: Callable[[], float] = time.time
    lapsed_requests: list[SeenRequest] = field(default_factory=list)
    dialog_names: dict[str, str] = field(default_factory=dict)  # dialog id -> name
    max_page_size: int = 100
    after_page: Callable[[], None] | None = None

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/session.json", self.create_session)
        app.router.add_get("/chat/Message/unread.json", self.unread_count)
        app.router.add_get("/chat/Dialog.json", self.list_dialogs)

    def route_error(self, status: int, reason: str) -> web.Response:
        """The list form of QuickBlox's error body, as its docs show for a 404."""
        return _errors(status, "The resource wasn't found", base=False)

    def expire_sessions(self) -> None:
        """Forget every session, as QuickBlox does two hours after a session's last use."""
        self.sessions.clear()
        self.session_expiry.clear()

    def _slide(self, token: str) -> dict[str, str]:
        """Restart the token's two hours from now and announce the new expiry, as every real
        answer to a session does."""
        expires_at = self.clock() + SESSION_LIFETIME
        self.session_expiry[token] = expires_at
        moment = datetime.fromtimestamp(expires_at, UTC)
        if self.expiry_format == "iso8601":
            return {"QB-Token-ExpirationDate": moment.isoformat()}
        return {"QB-Token-ExpirationDate": moment.strftime(REAL_EXPIRY_FORMAT)}

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
        if abs(self.clock() - timestamp) > MAX_CLOCK_SKEW:
            return _errors(422, "Timestamp is out of range")
        nonce = params.get("nonce", "")
        if not nonce or nonce + str(timestamp) in self.seen_nonces:
            return _errors(422, "Nonce was already used")
        if not hmac.compare_digest(sdk_signature(params, self.auth_secret), signature):
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
        body = {
            "session": {
                "application_id": self.application_id,
                "token": token,
                "user_id": user_id,
                "nonce": int(nonce) if nonce.isdigit() else nonce,
                "ts": timestamp,
            }
        }
        return json_response(body, status=201, headers=self._slide(token))

    def _user(self, request: web.Request) -> tuple[int, dict[str, str]] | web.Response:
        """The user a request acts for, and the headers its answer carries."""
        token = request.headers.get("QB-Token")
        authorization = request.headers.get("Authorization")
        if (token is None) == (authorization is None):
            return _errors(401, "Must be used either QB-Token or Authorization")
        headers: dict[str, str] = {}
        if token is not None:
            if token in self.session_expiry and self.clock() >= self.session_expiry[token]:
                self.lapsed_requests.append(SeenRequest.of(request))
                self.sessions.pop(token, None)
                del self.session_expiry[token]
            if token not in self.sessions:
                return _errors(401, "Required session does not exist")
            user_id = self.sessions[token]
            headers = self._slide(token) if token in self.session_expiry else {}
        else:
            if authorization != f"ApiKey {self.api_key}":
                return _errors(401, "Unauthorized", base=False)
            on_behalf = request.headers.get("On-Behalf-Of", "0")
            user_id = int(on_behalf) if on_behalf.isdigit() else 0
        if user_id == 0 or user_id not in self.unread:
            return _errors(403, "Forbidden. Need user.")
        return user_id, headers

    async def unread_count(self, request: web.Request) -> web.Response:
        found = self._user(request)
        if isinstance(found, web.Response):
            return found
        user_id, headers = found
        dialogs = self.unread[user_id]
        names = [key for key, _ in request.query.items() if key.startswith("chat_dialog_ids")]
        if not names:
            return json_response({"total": sum(dialogs.values())}, headers=headers)
        # The server decodes the query once, so "a%2Cb" (what the official JS SDK sends) is
        # the list a,b. What does not arrive as one comma-separated list is refused: the
        # parameter repeated or in array form (a server keeping one value would silently
        # count only part of the list), or a comma encoded twice (one id with "%2C" in it).
        listed = request.query.get("chat_dialog_ids", "")
        if names != ["chat_dialog_ids"] or "%" in listed:
            return _errors(400, "chat_dialog_ids must be one comma-separated list")
        ids = listed.split(",")
        body = {dialog_id: dialogs[dialog_id] for dialog_id in ids if dialog_id in dialogs}
        counted = body if self.total_counts == "listed" else dialogs
        body["total"] = sum(counted.values())
        return json_response(body, headers=headers)

    async def list_dialogs(self, request: web.Request) -> web.Response:
        """A page of the user's dialogs, as the "List dialogs" reference answers it."""
        found = self._user(request)
        if isinstance(found, web.Response):
            return found
        user_id, headers = found
        try:
            limit = int(request.query.get("limit", "100"))
            skip = int(request.query.get("skip", "0"))
        except ValueError:
            return _errors(422, "limit and skip must be integers")
        if limit < 1 or skip < 0:
            return _errors(422, "limit and skip must be positive")
        dialogs = list(self.unread[user_id].items())
        page = dialogs[skip : skip + min(limit, self.max_page_size)]
        body = {
            "total_entries": len(dialogs),
            "skip": skip,
            "limit": limit,
            "items": [
                {
                    "_id": dialog_id,
                    "name": self.dialog_names.get(dialog_id, ""),
                    "type": 2,
                    "occupants_ids": [user_id],
                    "unread_messages_count": unread,
                }
                for dialog_id, unread in page
            ],
        }
        if self.after_page is not None:
            self.after_page()
        return json_response(body, headers=headers)
