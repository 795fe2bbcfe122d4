"""IMKit: a user's unread badge, optionally limited to rooms carrying all given tags.

Each application has its own domain, so ``base_url`` is required. Requests carry the public
``IM-CLIENT-KEY`` and the user's token in ``IM-Authorization``; answers use the
``{"RC": 0, "RM": "OK", "result": ...}`` envelope, where ``RC != 0`` is an error even under
HTTP 200.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

from pydantic import Field, SecretStr

from exporter.envelope import entries_at, scalars
from exporter.models import AccountConfig, DialogConfig
from exporter.providers.base import (
    Coverage,
    FetchError,
    Provider,
    Reading,
    Reason,
    Record,
    count,
    fetch_each,
    nested,
)
from exporter.upstream import Upstream

# RC values that mean the same as their HTTP namesakes.
_RC_REASONS = {401: Reason.AUTH, 403: Reason.AUTH, 404: Reason.NOT_FOUND, 429: Reason.RATE_LIMITED}


class IMKitDialog(DialogConfig):
    """Rooms carrying all of ``room_tags`` (an AND filter); none given: every room."""

    room_tags: tuple[str, ...] = ()


class IMKitAccount(AccountConfig):
    """An IMKit user of one application (client key plus that user's token)."""

    secret_fields: ClassVar[tuple[str, ...]] = ("client_key", "token")

    provider: Literal["imkit"]
    base_url: str
    client_key: SecretStr
    token: SecretStr
    dialogs: tuple[IMKitDialog, ...] = Field(min_length=1)


def _result(body: Any) -> Any:
    if not isinstance(body, dict) or "RC" not in body:
        raise FetchError(Reason.BAD_RESPONSE, "answer lacks the IMKit RC envelope")
    code = body["RC"]
    if code != 0:
        reason = _RC_REASONS.get(code, Reason.BAD_RESPONSE) if isinstance(code, int) else None
        raise FetchError(reason or Reason.BAD_RESPONSE, f"RC {code}: {body.get('RM')}")
    return body.get("result")


class IMKitFetcher:
    """Fetches an IMKit account's dialogs, one ``/me/badge`` request per dialog."""

    def __init__(self, account: IMKitAccount, upstream: Upstream) -> None:
        self._headers = {
            "IM-CLIENT-KEY": account.client_key.get_secret_value(),
            "IM-Authorization": account.token.get_secret_value(),
        }
        self._url = f"{account.api_root()}/me/badge"
        self._upstream = upstream

    async def fetch(self, dialogs: Sequence[IMKitDialog], record: Record) -> None:
        await fetch_each(dialogs, record, self._fetch_dialog, self._upstream.max_concurrency)

    async def _fetch_dialog(self, dialog: IMKitDialog) -> Reading:
        params = [("roomTags", tag) for tag in dialog.room_tags]
        response = await self._upstream.request(
            "GET", self._url, params=params, headers=self._headers
        )
        return Reading(messages=count(_result(response.body), "badge"))


def error_messages(body: Any) -> list[str]:
    """IMKit's envelope: ``{"RC", "RM", "error": {"code", "message"}}`` (``error`` may be
    absent, ``RM`` is the message)."""
    return [*entries_at(body, "error"), *scalars(body, "RM")]


def coverage(account: IMKitAccount) -> Coverage:
    """The untagged dialog (every room) holds every tagged one's rooms; without it two tagged
    dialogs can overlap, since a room may carry both dialogs' tags."""
    return nested(
        account.dialogs,
        name=lambda dialog: dialog.name,
        scope=lambda _dialog: account.name,
        is_whole=lambda dialog: not dialog.room_tags,
    )


PROVIDER = Provider(
    name="imkit",
    account_model=IMKitAccount,
    make_fetcher=IMKitFetcher,
    error_messages=error_messages,
    coverage=coverage,
)
