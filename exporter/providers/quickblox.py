"""QuickBlox: unread messages per dialog and the user's total.

``GET /chat/Message/unread.json?chat_dialog_ids=a,b`` answers the flat object
``{"a": 3, "b": 0, "total": 3}``; without ``chat_dialog_ids`` it answers ``{"total": N}``, the
user's unread messages over all dialogs. ``group_by: dialog`` on that total pages through
``GET /chat/Dialog.json?limit=100&skip=N`` instead (``unread_messages_count`` and ``name`` per
dialog) and takes the total and its groups from the same pages. Three ways to authenticate: a
server API key (``Authorization: ApiKey`` with ``On-Behalf-Of``), a fixed session token
(``QB-Token``), or application credentials from which the exporter creates, reuses and renews
a session token.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal, Self

from pydantic import Field, SecretStr, model_validator

from exporter.envelope import entries
from exporter.models import AccountConfig, GroupingDialog, secret_text
from exporter.providers.base import (
    Coverage,
    FetchError,
    GroupTally,
    Provider,
    Reading,
    Reason,
    Record,
    count,
    nested,
    record_all,
)
from exporter.upstream import Upstream

# Dialog ids per request: keeps the query string far below common URL length limits.
DIALOGS_PER_REQUEST = 100
# Renew a created session this long before the expiry QuickBlox announces (the official JS
# SDK keeps the same minute, qbConfig.js updateSessionExpirationDate), so that a request
# checked just before the deadline still arrives before it.
SESSION_RENEW_MARGIN = 60.0
UNREAD_PATH = "/chat/Message/unread.json"
DIALOG_LIST_PATH = "/chat/Dialog.json"
# Dialogs per page of the list: the largest QuickBlox is known to serve (its docs give no
# maximum). Pages are followed by ``skip`` up to ``total_entries``, so a server that serves
# fewer per page costs more pages, never a short count.
DIALOGS_PER_PAGE = 100
# A user in more dialogs than this (100,000 at 100 a page) is refused rather than paged on.
MAX_DIALOG_PAGES = 1000


class QuickBloxDialog(GroupingDialog):
    """``dialog_id`` set: that dialog; unset: the user's total over all dialogs."""

    group_dimensions: ClassVar[tuple[str, ...]] = ("dialog",)

    dialog_id: str | None = Field(default=None, min_length=1, pattern=r"^[^,\s]+$")

    @model_validator(mode="after")
    def _group_by_needs_the_total(self) -> Self:
        if self.group_by is not None and self.dialog_id is not None:
            raise ValueError(
                "group_by: dialog applies only to the user's total (a dialog without dialog_id)"
            )
        return self


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


def error_messages(body: Any) -> list[str]:
    """QuickBlox's envelope: ``{"errors": [...]}``, or messages by field (``{"errors":
    {"base": [...]}}``)."""
    errors = body.get("errors") if isinstance(body, dict) else None
    return entries(list(errors.values()) if isinstance(errors, dict) else errors)


def session_signature(params: dict[str, str], auth_secret: str) -> str:
    """HMAC-SHA1 over the sorted ``k=v`` pairs, as QuickBlox's SDKs sign ``POST /session``."""
    message = "&".join(f"{key}={params[key]}" for key in sorted(params))
    return hmac.new(auth_secret.encode(), message.encode(), hashlib.sha1).hexdigest()


def _parse_expiry(value: str | None) -> float | None:
    """Unix time from a ``QB-Token-ExpirationDate`` header; None when absent or unreadable.

    Real answers carry ``2016-05-02 19:52:00 UTC`` (the shape the official JS SDK parses, and
    the one a live answer quoted in BrunoAssis/quickblox-rb's tests shows); ISO 8601 such as
    ``2016-05-02T19:52:00Z`` is read too. A time without a zone is taken as UTC.
    """
    if not value:
        return None
    text = value.strip()
    for suffix in (" UTC", "Z"):
        if text.endswith(suffix):
            text = text[: -len(suffix)] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


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
        requests: list[tuple[list[str], list[QuickBloxDialog]]] = []
        for start in range(0, len(ids), DIALOGS_PER_REQUEST):
            batch = ids[start : start + DIALOGS_PER_REQUEST]
            members = set(batch)
            requests.append((batch, [d for d in dialogs if d.dialog_id in members]))
        totals = [d for d in dialogs if d.dialog_id is None and d.group_by is None]
        if totals:
            # A request of its own, without ids: when ids are listed, ``total`` may count only
            # those dialogs (the official API docs' example answers 5 for two dialogs of 2 and
            # 3), so only the answer without ids is the user's total whatever the server does.
            requests.append(([], totals))
        grouped = [d for d in dialogs if d.group_by is not None]
        await asyncio.gather(
            *(self._answer(batch, covered, record) for batch, covered in requests),
            *([self._by_dialog(grouped, record)] if grouped else []),
        )

    async def _by_dialog(self, dialogs: list[QuickBloxDialog], record: Record) -> None:
        """The user's total split by dialog, for every grouped dialog from one pass of pages.

        Each dialog with unread messages is a group (named by its ``name``); the total is their
        sum, so it and its groups agree in every refresh. ``unread_messages_count`` null (the
        official SDK's type allows it, for dialogs without a per-user count) counts nothing.
        """
        tallies = [
            (dialog, GroupTally(("messages",), dialog.group_by, dialog.max_groups))
            for dialog in dialogs
        ]
        try:
            async for item in self._dialog_list():
                if item.get("unread_messages_count") is None:
                    continue
                unread = count(item, "unread_messages_count")
                if unread:
                    for _, tally in tallies:
                        tally.add_group(item["_id"], messages=unread, name=item.get("name"))
        except FetchError as exc:
            record_all(dialogs, record, exc)
            return
        for dialog, tally in tallies:
            try:
                record(dialog.name, tally.reading())
            except FetchError as exc:
                record(dialog.name, exc)

    async def _dialog_list(self) -> AsyncIterator[dict[str, Any]]:
        """Every dialog of the user, a page of ``DIALOGS_PER_PAGE`` per request.

        The list is paged by offset, newest message first, so it can move while it is paged: a
        dialog whose new message sorts it forward pushes another one onto the next page (listed
        twice) and is itself skipped; a dialog created or deleted changes ``total_entries``.
        Either is refused (``bad_response``) rather than counted short or twice, whether or not
        the dialogs involved have unread messages; the next refresh pages again.
        """
        skip = 0
        seen: set[str] = set()
        first_total: int | None = None
        for _ in range(MAX_DIALOG_PAGES):
            params = {"limit": str(DIALOGS_PER_PAGE), "skip": str(skip)}
            body = await self._get(DIALOG_LIST_PATH, params)
            items = body.get("items") if isinstance(body, dict) else None
            if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
                raise FetchError(Reason.BAD_RESPONSE, "items is not a list of objects")
            total = count(body, "total_entries")
            if first_total is not None and total != first_total:
                raise FetchError(Reason.BAD_RESPONSE, "the dialog list changed while it was paged")
            first_total = total
            for item in items:
                dialog_id = item.get("_id")
                if not isinstance(dialog_id, str):
                    raise FetchError(Reason.BAD_RESPONSE, "a dialog's _id is not a string")
                if dialog_id in seen:
                    raise FetchError(
                        Reason.BAD_RESPONSE,
                        f"dialog {dialog_id[:40]!r} listed twice: the list moved while it"
                        " was paged",
                    )
                seen.add(dialog_id)
                yield item
            skip += len(items)
            if not items or skip >= total:
                return
        raise FetchError(
            Reason.BAD_RESPONSE, f"more than {MAX_DIALOG_PAGES} pages of dialogs to list"
        )

    async def _answer(
        self, dialog_ids: list[str], covered: list[QuickBloxDialog], record: Record
    ) -> None:
        """One request for ``dialog_ids`` (none: the total), recorded for ``covered``."""
        params = {"chat_dialog_ids": ",".join(dialog_ids)} if dialog_ids else None
        try:
            body = await self._get(UNREAD_PATH, params)
        except FetchError as exc:
            record_all(covered, record, exc)
            return
        for dialog in covered:
            try:
                record(dialog.name, Reading(messages=count(body, dialog.dialog_id or "total")))
            except FetchError as exc:
                record(dialog.name, exc)

    async def _get(self, path: str, params: dict[str, str] | None, retry: bool = True) -> Any:
        """One GET of ``path``, renewing a created session once if QuickBlox lost it.

        Every answer to a session announces its new expiry (the lifetime slides two hours from
        each request), so a session in use is kept rather than renewed on a fixed schedule.
        """
        headers = await self._auth()
        try:
            response = await self._upstream.request(
                "GET", f"{self._root}{path}", params=params, headers=headers
            )
        except FetchError as exc:
            lost = exc.reason is Reason.AUTH and "session does not exist" in exc.detail.lower()
            if not (retry and self._creates_sessions and lost):
                raise
            if self._session_token == headers["QB-Token"]:
                self._session_token = None
            return await self._get(path, params, retry=False)
        if self._creates_sessions:
            self._note_expiry(headers["QB-Token"], response.headers)
        return response.body

    def _note_expiry(self, token: str, headers: Mapping[str, str]) -> None:
        """Keep the expiry an answer announces for the session it was made with."""
        expires = _parse_expiry(headers.get("QB-Token-ExpirationDate"))
        if token == self._session_token and expires is not None:
            self._session_expires_at = expires

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
        """A session token to send now: the cached one while its announced expiry is more than
        the margin away (or none was announced), else a newly created one."""
        async with self._session_lock:
            expires = self._session_expires_at
            now = self._upstream.now()
            if self._session_token and (expires is None or now < expires - SESSION_RENEW_MARGIN):
                return self._session_token
            account = self._account
            params = {
                "application_id": str(account.application_id),
                "auth_key": secret_text(account.auth_key),
                "nonce": str(secrets.randbelow(2**31 - 1) + 1),
                "timestamp": str(int(now)),
            }
            if account.login is not None:
                params["user[login]"] = account.login
                params["user[password]"] = secret_text(account.password)
            params["signature"] = session_signature(params, secret_text(account.auth_secret))
            self._upstream.add_secret(params["signature"])  # signs this session's request
            response = await self._upstream.request(
                "POST", f"{self._root}/session.json", form=params
            )
            session = response.body.get("session") if isinstance(response.body, dict) else None
            token = session.get("token") if isinstance(session, dict) else None
            if not isinstance(token, str) or not token:
                raise FetchError(Reason.BAD_RESPONSE, "session answer has no token")
            self._session_token = token
            self._upstream.add_secret(token)
            self._session_expires_at = None
            self._note_expiry(token, response.headers)
            return token


def coverage(account: QuickBloxAccount) -> Coverage:
    """The user's total (no ``dialog_id``) counts every dialog's messages; two different
    dialogs share none."""
    return nested(
        account.dialogs,
        name=lambda dialog: dialog.name,
        scope=lambda _dialog: account.name,
        is_whole=lambda dialog: dialog.dialog_id is None,
        disjoint=lambda a, b: a.dialog_id != b.dialog_id,
    )


PROVIDER = Provider(
    name="quickblox",
    account_model=QuickBloxAccount,
    make_fetcher=QuickBloxFetcher,
    error_messages=error_messages,
    coverage=coverage,
)
