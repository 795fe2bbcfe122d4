"""Stream Chat: a user's unread messages and unread channels, optionally of one channel type.

Server-side auth as the official SDKs do it: a JWT ``{"server": true}`` signed HS256 with the
app's secret in ``Authorization``, ``Stream-Auth-Type: jwt``, and the app's key as the
``api_key`` query parameter. An account with one user asks ``GET /unread?user_id=...``; with
several users it asks ``POST /unread_batch`` with ``{"user_ids": [...]}``, which answers every
user in one request (``counts_by_user``). Dialogs of the same user share that user's answer.

``group_by: channel`` splits a dialog by the answer's own per-channel counts (``channels``), so
it costs no request; that list holds at most the user's last 100 unread channels, and what it
leaves of the dialog's total is served as group ``other``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections.abc import Awaitable, Sequence
from typing import Any, ClassVar, Literal

from pydantic import Field, SecretStr

from exporter.envelope import common_error_messages
from exporter.models import AccountConfig, GroupingDialog
from exporter.providers.base import (
    Coverage,
    FetchError,
    GroupTally,
    Provider,
    Reading,
    Reason,
    Record,
    checked_sum,
    count,
    nested,
    record_all,
)
from exporter.upstream import Upstream

# Users per batch request. Stream documents no limit for unread_batch; a bounded batch keeps
# one request's answer (every unread channel of every user) of a predictable size.
USERS_PER_BATCH = 100
# "Not Allowed Error" (403) in Stream's API error codes. A server token may do everything an
# app may, so the one thing this code can mean for ``/unread`` is the endpoint itself: it "is
# not enabled for every org" (stream-chat 8.7.0 release note) and is enabled on request.
NOT_ALLOWED_CODE = 17
NOT_ENABLED = (
    "not allowed to a server token: the unread endpoint is not enabled for this Stream"
    " organisation (Stream enables it on request)"
)


class StreamDialog(GroupingDialog):
    """One user's unread messages, in all channels or only those of ``channel_type``."""

    group_dimensions: ClassVar[tuple[str, ...]] = ("channel",)

    user_id: str = Field(min_length=1, max_length=255)
    channel_type: str | None = Field(default=None, min_length=1, pattern=r"^[A-Za-z0-9_-]+$")


class StreamAccount(AccountConfig):
    """A Stream Chat app read with its key and secret (server-side auth)."""

    secret_fields: ClassVar[tuple[str, ...]] = ("api_secret",)
    default_base_url: ClassVar[str] = "https://chat.stream-io-api.com"

    provider: Literal["stream"]
    api_key: str = Field(min_length=1)
    api_secret: SecretStr
    dialogs: tuple[StreamDialog, ...] = Field(min_length=1)


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def server_token(api_secret: str) -> str:
    """The server JWT the official SDKs send: HS256 over ``{"server": true}``, no expiry.

    Header and claims are serialised compactly with sorted keys, as PyJWT and jsonwebtoken do,
    so the token is byte for byte the one ``stream-chat`` (Python and JS) would send.
    """
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    claims = _b64url(json.dumps({"server": True}, separators=(",", ":")).encode())
    signing_input = f"{header}.{claims}".encode()
    signature = hmac.new(api_secret.encode(), signing_input, hashlib.sha256).digest()
    return f"{header}.{claims}.{_b64url(signature)}"


def error_messages(body: Any) -> list[str]:
    """Stream's envelope (the common one), with what a "Not Allowed" answer means here."""
    messages = common_error_messages(body)
    if isinstance(body, dict) and body.get("code") == NOT_ALLOWED_CODE:
        return [NOT_ENABLED, *messages]
    return messages


def _objects(counts: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """The list of objects at ``key`` of one user's counts (``bad_response`` if it is not)."""
    items = counts.get(key)
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise FetchError(Reason.BAD_RESPONSE, f"{key} is not a list of objects")
    return items


def _totals(counts: dict[str, Any], dialog: StreamDialog) -> Reading:
    """A dialog's values from one user's unread counts.

    ``channel_type`` lists the user's unread channels grouped by type, so a type that is not
    listed has no unread channel: 0 messages in 0 channels, a true zero.
    """
    by_type = _objects(counts, "channel_type")
    if dialog.channel_type is None:
        return Reading(
            messages=count(counts, "total_unread_count"),
            conversations=checked_sum(
                (count(entry, "channel_count") for entry in by_type), "channel counts"
            ),
        )
    for entry in by_type:
        if entry.get("channel_type") == dialog.channel_type:
            return Reading(
                messages=count(entry, "unread_count"),
                conversations=count(entry, "channel_count"),
            )
    return Reading(messages=0, conversations=0)


def _reading(counts: Any, dialog: StreamDialog) -> Reading:
    """A dialog's reading, split by channel when it has ``group_by``.

    Each listed channel (``channel_id`` is the cid, ``type:id``) of the dialog's type is a
    group with its unread messages and one unread conversation; the list is capped at the
    user's last 100 unread channels, so the dialog's totals come from the answer's own totals
    and the rest of them is group ``other``. Only grouped dialogs read the list, so an
    ungrouped one costs and risks nothing more than before.
    """
    if not isinstance(counts, dict):
        raise FetchError(Reason.BAD_RESPONSE, "unread counts are not an object")
    totals = _totals(counts, dialog)
    if dialog.group_by is None:
        return totals
    tally = GroupTally(("messages", "conversations"), dialog.group_by, dialog.max_groups)
    for channel in _objects(counts, "channels"):
        cid = channel.get("channel_id")
        if not isinstance(cid, str):
            raise FetchError(Reason.BAD_RESPONSE, "a channel's channel_id is not a string")
        if dialog.channel_type is not None and cid.partition(":")[0] != dialog.channel_type:
            continue
        unread = count(channel, "unread_count")
        tally.add_group(cid, messages=unread, conversations=1 if unread else 0)
    return tally.reading(totals=totals)


def coverage(account: StreamAccount) -> Coverage:
    """A user's dialog without ``channel_type`` counts all of that user's unread channels;
    dialogs of two different channel types share none."""
    return nested(
        account.dialogs,
        name=lambda dialog: dialog.name,
        scope=lambda dialog: dialog.user_id,
        is_whole=lambda dialog: dialog.channel_type is None,
        disjoint=lambda a, b: (
            a.channel_type is not None
            and b.channel_type is not None
            and a.channel_type != b.channel_type
        ),
    )


class StreamFetcher:
    """Fetches a Stream Chat app's dialogs: one request for one user, batches for several."""

    def __init__(self, account: StreamAccount, upstream: Upstream) -> None:
        token = server_token(account.api_secret.get_secret_value())
        # The token never expires and does not contain the secret's text: redacted on its own,
        # and its signature apart, should an error body echo only that part.
        upstream.redactor.derived(token)
        upstream.redactor.derived(token.rsplit(".", 1)[1])
        self._headers = {"Authorization": token, "Stream-Auth-Type": "jwt"}
        self._params = {"api_key": account.api_key}
        self._root = account.api_root()
        self._upstream = upstream

    async def fetch(self, dialogs: Sequence[StreamDialog], record: Record) -> None:
        users = list(dict.fromkeys(dialog.user_id for dialog in dialogs))
        if len(users) == 1:
            await self._answer(dialogs, record, self._one(users[0]))
            return
        batches = [users[i : i + USERS_PER_BATCH] for i in range(0, len(users), USERS_PER_BATCH)]
        await asyncio.gather(
            *(
                self._answer([d for d in dialogs if d.user_id in batch], record, self._batch(batch))
                for batch in batches
            )
        )

    @staticmethod
    async def _answer(
        dialogs: Sequence[StreamDialog],
        record: Record,
        request: Awaitable[dict[str, Any]],
    ) -> None:
        """Record each dialog's reading from one request's counts by user."""
        try:
            by_user = await request
        except FetchError as exc:
            record_all(dialogs, record, exc)
            return
        for dialog in dialogs:
            try:
                if dialog.user_id not in by_user:
                    raise FetchError(Reason.NOT_FOUND, "the answer has no counts for this user")
                record(dialog.name, _reading(by_user[dialog.user_id], dialog))
            except FetchError as exc:
                record(dialog.name, exc)

    async def _one(self, user_id: str) -> dict[str, Any]:
        response = await self._upstream.request(
            "GET",
            f"{self._root}/unread",
            params={**self._params, "user_id": user_id},
            headers=self._headers,
        )
        return {user_id: response.body}

    async def _batch(self, user_ids: list[str]) -> dict[str, Any]:
        response = await self._upstream.request(
            "POST",
            f"{self._root}/unread_batch",
            params=self._params,
            headers=self._headers,
            json_body={"user_ids": user_ids},
        )
        by_user = response.body.get("counts_by_user") if isinstance(response.body, dict) else None
        if not isinstance(by_user, dict):
            raise FetchError(Reason.BAD_RESPONSE, "counts_by_user is not an object")
        return by_user


# Errors come as {"code", "message", "StatusCode", ...}: the common envelope.
PROVIDER = Provider(
    name="stream",
    account_model=StreamAccount,
    make_fetcher=StreamFetcher,
    error_messages=error_messages,
    coverage=coverage,
)
