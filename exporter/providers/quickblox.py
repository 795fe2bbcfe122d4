"""QuickBlox: unread messages per dialog and in total, all of an account's dialogs in one call.

``GET /chat/Message/unread.json?chat_dialog_ids=a,b`` answers the flat object
``{"a": 3, "b": 0, "total": 3}``. Three ways to authenticate: a server API key
(``Authorization: ApiKey`` with ``On-Behalf-Of``), a fixed session token (``QB-Token``), or
application credentials from which the exporter creates, reuses and renews a session token.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any, ClassVar, Literal, Self

from pydantic import Field, SecretStr, model_validator

from exporter.models import AccountConfig, DialogConfig, secret_text
from exporter.providers.base import FetchError, Provider, Reading, Reason, Record, count, record_all
from exporter.upstream import Upstream

# Dialog ids per request: keeps the query string far below common URL length limits.
DIALOGS_PER_REQUEST = 100
# Renew a created session this long before QuickBlox says it expires.
SESSION_RENEW_MARGIN = 60.0


class QuickBloxDialog(DialogConfig):
    """``dialog_id`` set: that dialog; unset: the user's total over all dialogs."""

    dialog_id: str | None = Field(default=None, min_length=1, pattern=r"^[^,\s]+$")


class QuickBloxAccount(AccountConfig):
    """A QuickBlox user, authenticated by API key, session token or app credentials."""

    secret_fields: ClassVar[tuple[str, ...]] = (
        "api_key",
        "token",
        "auth_key",
        "auth_secret",
        "password",
    )
    default_base_url: ClassVar[str] = "https://api.quickblox.com"

    provider: Literal["quickblox"]
    api_key: SecretStr | None = None
    on_behalf_of: int | None = Field(default=None, ge=1)
    token: SecretStr | None = None
    application_id: int | None = Field(default=None, ge=1)
    auth_key: SecretStr | None = None
    auth_secret: SecretStr | None = None
    login: str | None = Field(default=None, min_length=1)
    password: SecretStr | None = None
    dialogs: tuple[QuickBloxDialog, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _one_auth_mode(self) -> Self:
        app_fields = (self.application_id, self.auth_key, self.auth_secret)
        modes = [self.api_key is not None, self.token is not None, any(app_fields)]
        if sum(modes) != 1:
            raise ValueError(
                "set exactly one of api_key, token, or application_id/auth_key/auth_secret"
            )
        if any(app_fields) and not all(app_fields):
            raise ValueError("application_id, auth_key and auth_secret go together")
        if (self.login is None) != (self.password is None):
            raise ValueError("login and password go together")
        if self.login is not None and not any(app_fields):
            raise ValueError("login/password apply only with application credentials")
        if self.on_behalf_of is not None and self.api_key is None:
            raise ValueError("on_behalf_of applies only with api_key")
        return self


def session_signature(params: dict[str, str], auth_secret: str) -> str:
    """HMAC-SHA1 over the sorted ``k=v`` pairs, as QuickBlox's SDKs sign ``POST /session``."""
    message = "&".join(f"{key}={params[key]}" for key in sorted(params))
    return hmac.new(auth_secret.encode(), message.encode(), hashlib.sha1).hexdigest()


def _parse_expiry(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class QuickBloxFetcher:
    """Fetches all of an account's dialogs with as few requests as the API allows."""

    def __init__(self, account: QuickBloxAccount, upstream: Upstream) -> None:
        self._account = account
        self._upstream = upstream
        self._root = account.api_root()
        self._session_token: str | None = None
        self._session_expires_at: float | None = None
        self._session_lock = asyncio.Lock()

    async def fetch(self, dialogs: Sequence[QuickBloxDialog], record: Record) -> None:
        ids = list(dict.fromkeys(d.dialog_id for d in dialogs if d.dialog_id is not None))
        chunks = [ids[i : i + DIALOGS_PER_REQUEST] for i in range(0, len(ids), DIALOGS_PER_REQUEST)]

        async def answer(index: int, chunk: list[str]) -> None:
            covered = [d for d in dialogs if d.dialog_id in set(chunk)]
            if index == 0:  # the first answer's total feeds the dialogs without an id
                covered += [d for d in dialogs if d.dialog_id is None]
            try:
                body = await self._unread(chunk)
            except FetchError as exc:
                record_all(covered, record, exc)
                return
            for dialog in covered:
                try:
                    record(dialog.name, Reading(messages=count(body, dialog.dialog_id or "total")))
                except FetchError as exc:
                    record(dialog.name, exc)

        await asyncio.gather(*(answer(i, chunk) for i, chunk in enumerate(chunks or [[]])))

    async def _unread(self, dialog_ids: list[str]) -> Any:
        """One unread-count request, renewing a created session once if QuickBlox lost it."""
        params = {"chat_dialog_ids": ",".join(dialog_ids)} if dialog_ids else None
        url = f"{self._root}/chat/Message/unread.json"
        try:
            response = await self._upstream.request(
                "GET", url, params=params, headers=await self._auth()
            )
        except FetchError as exc:
            lost = exc.reason is Reason.AUTH and "session does not exist" in exc.detail.lower()
            if not (self._creates_sessions and lost):
                raise
            self._session_token = None
            response = await self._upstream.request(
                "GET", url, params=params, headers=await self._auth()
            )
        return response.body

    @property
    def _creates_sessions(self) -> bool:
        return self._account.application_id is not None

    async def _auth(self) -> dict[str, str]:
        account = self._account
        if account.api_key is not None:
            headers = {"Authorization": f"ApiKey {account.api_key.get_secret_value()}"}
            if account.on_behalf_of is not None:
                headers["On-Behalf-Of"] = str(account.on_behalf_of)
            return headers
        if account.token is not None:
            return {"QB-Token": account.token.get_secret_value()}
        return {"QB-Token": await self._session()}

    async def _session(self) -> str:
        """A valid session token: the cached one, or a newly created one."""
        async with self._session_lock:
            expires = self._session_expires_at
            if self._session_token and (
                expires is None or time.time() < expires - SESSION_RENEW_MARGIN
            ):
                return self._session_token
            account = self._account
            params = {
                "application_id": str(account.application_id),
                "auth_key": secret_text(account.auth_key),
                "nonce": str(secrets.randbelow(2**31 - 1) + 1),
                "timestamp": str(int(time.time())),
            }
            if account.login is not None:
                params["user[login]"] = account.login
                params["user[password]"] = secret_text(account.password)
            params["signature"] = session_signature(params, secret_text(account.auth_secret))
            response = await self._upstream.request(
                "POST", f"{self._root}/session.json", form=params
            )
            session = response.body.get("session") if isinstance(response.body, dict) else None
            token = session.get("token") if isinstance(session, dict) else None
            if not isinstance(token, str) or not token:
                raise FetchError(Reason.BAD_RESPONSE, "session answer has no token")
            self._session_token = token
            self._upstream.add_secret(token)
            self._session_expires_at = _parse_expiry(
                response.headers.get("QB-Token-ExpirationDate")
            )
            return token


PROVIDER = Provider(name="quickblox", account_model=QuickBloxAccount, make_fetcher=QuickBloxFetcher)
