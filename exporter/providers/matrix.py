"""Matrix: a user's unread notifications and highlights per joined room, from ``/sync``.

One ``GET /_matrix/client/v3/sync`` per refresh answers every dialog of the account: each joined
room carries ``unread_notifications.notification_count`` (``messages``) and ``highlight_count``
(``mentions``). The first sync is a full one; later ones pass the ``since`` token of the last
answer, so the homeserver sends only the rooms that changed, and the others keep the counts this
fetcher holds. docs/matrix.md explains the filter, receipts and Synapse's response cache.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Sequence
from typing import Any, ClassVar, Literal, Self
from urllib.parse import quote

from pydantic import Field, SecretStr, model_validator

from exporter.envelope import non_negative_number, scalars
from exporter.models import AccountConfig, GroupingDialog
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

log = logging.getLogger(__name__)

SYNC_PATH = "/_matrix/client/v3/sync"
DIRECTORY_PATH = "/_matrix/client/v3/directory/room/"
# Excluded from every sync, so each request differs from all earlier ones (see _sync_filter).
NONCE_SERVER = "chat-unread-exporter.invalid"

_ERRCODE_REASONS = {
    "M_UNKNOWN_TOKEN": Reason.AUTH,
    "M_MISSING_TOKEN": Reason.AUTH,
    "M_FORBIDDEN": Reason.AUTH,
    "M_LIMIT_EXCEEDED": Reason.RATE_LIMITED,
    "M_NOT_FOUND": Reason.NOT_FOUND,
}

Counts = tuple[int, int]  # (notification_count, highlight_count)
# State events whose content names a room: its name, else its canonical alias.
NAME_EVENTS = ("m.room.name", "m.room.canonical_alias")


class MatrixDialog(GroupingDialog):
    """One room, by id (``!abc:example.org``) or alias (``#support:example.org``); none: all
    joined rooms, summed, and split by room with ``group_by: room``."""

    group_dimensions: ClassVar[tuple[str, ...]] = ("room",)

    room: str | None = Field(default=None, pattern=r"^(![^\s]+|#[^\s:]+:[^\s]+)$")

    @model_validator(mode="after")
    def _group_by_needs_all_rooms(self) -> Self:
        if self.group_by is not None and self.room is not None:
            raise ValueError("group_by applies only to the dialog of all joined rooms (no room)")
        return self


class MatrixAccount(AccountConfig):
    """The user behind an access token on one homeserver (which has no default address)."""

    secret_fields: ClassVar[tuple[str, ...]] = ("access_token",)

    provider: Literal["matrix"]
    base_url: str
    access_token: SecretStr
    dialogs: tuple[MatrixDialog, ...] = Field(min_length=1)


def reason_from_errcode(status: int, body: Any) -> Reason | None:
    """The Matrix error envelope ``{"errcode", "error"}`` names the failure better than the
    status does (a revoked token and a wrong path are both 4xx)."""
    errcode = body.get("errcode") if isinstance(body, dict) else None
    return _ERRCODE_REASONS.get(errcode) if isinstance(errcode, str) else None


def error_messages(body: Any) -> list[str]:
    """The Matrix error envelope: ``{"errcode", "error"}``."""
    return scalars(body, "error", "errcode")


def retry_after(body: Any) -> float | None:
    """``M_LIMIT_EXCEEDED`` answers carry ``retry_after_ms``, milliseconds to wait."""
    milliseconds = (
        non_negative_number(body.get("retry_after_ms")) if isinstance(body, dict) else None
    )
    return None if milliseconds is None else milliseconds / 1000.0


def _sync_filter() -> str:
    """The inline filter of one sync request: every joined room, nothing we do not read.

    Synapse leaves a joined room out of a sync answer when nothing in it survives the filter,
    even a full one, so the timeline keeps its newest event (shrunk to its type by
    ``event_fields``): a room with new messages appears, and a full sync lists every room.
    Read receipts (``m.receipt``) stay, so a room whose count a receipt lowered appears too;
    of the state, only a room's name and canonical alias stay (the names of ``group_by: room``
    groups, at no extra request); presence and account data are dropped.

    Synapse caches a sync answer for minutes under a key that includes the filter text: the
    ``not_rooms`` entry names a random room that cannot exist, so no request ever repeats an
    earlier one's key and no cached (stale) answer is served, after a restart either.
    """
    nonce = secrets.token_hex(8)
    body = {
        "event_fields": ["type", "content.name", "content.alias"],
        "presence": {"not_types": ["*"]},
        "account_data": {"not_types": ["*"]},
        "room": {
            "not_rooms": [f"!{nonce}:{NONCE_SERVER}"],
            "timeline": {"limit": 1},
            "state": {"types": list(NAME_EVENTS)},
            "ephemeral": {"types": ["m.receipt"]},
            "account_data": {"not_types": ["*"]},
        },
    }
    return json.dumps(body, separators=(",", ":"))


def _section(rooms: Any, name: str) -> dict[str, Any]:
    """``rooms.join`` or ``rooms.leave`` of a sync answer (absent: no rooms)."""
    section = rooms.get(name, {})
    if not isinstance(section, dict):
        raise FetchError(Reason.BAD_RESPONSE, f"rooms.{name} is not an object")
    return section


def _room_counts(entry: Any, held: Counts | None) -> Counts:
    """A joined room's counts; in an incremental answer a count left out keeps its value.

    Synapse always sends both counts, but Conduit sends them only when they may have changed
    since the token (a room can appear for another user's receipt without them). A room the
    fetcher holds nothing for must come with both.
    """
    unread = entry.get("unread_notifications") if isinstance(entry, dict) else None
    sent = set(unread) if isinstance(unread, dict) else set()
    values = [
        held[index]
        if held is not None and name not in sent
        else count(entry, "unread_notifications", name)
        for index, name in enumerate(("notification_count", "highlight_count"))
    ]
    return values[0], values[1]


class MatrixFetcher:
    """Holds the account's ``since`` token and the counts of its joined rooms between syncs."""

    def __init__(self, account: MatrixAccount, upstream: Upstream) -> None:
        self._headers = {"Authorization": f"Bearer {account.access_token.get_secret_value()}"}
        self._root = account.api_root()
        self._upstream = upstream
        self._since: str | None = None
        self._rooms: dict[str, Counts] = {}
        self._names: dict[str, dict[str, str]] = {}  # room id -> state event type -> text
        self._aliases: dict[str, str] = {}

    async def fetch(self, dialogs: Sequence[MatrixDialog], record: Record) -> None:
        try:
            await self._sync()
        except FetchError as exc:
            record_all(dialogs, record, exc)
            return
        failed = await self._resolve_aliases({d.room for d in dialogs if d.room})
        for dialog in dialogs:
            try:
                record(dialog.name, self._reading(dialog, failed))
            except FetchError as exc:
                record(dialog.name, exc)

    async def _sync(self) -> None:
        """Sync from the held token; a token the homeserver refuses means a full sync."""
        if self._since is not None:
            try:
                await self._sync_from(self._since)
                return
            except FetchError as exc:
                if exc.reason is not Reason.HTTP_4XX:
                    raise
                log.info("since token refused, falling back to a full sync: %s", exc.detail)
        await self._sync_from(None)

    async def _sync_from(self, since: str | None) -> None:
        params = {"timeout": "0", "set_presence": "offline", "filter": _sync_filter()}
        if since is not None:
            params["since"] = since
        response = await self._upstream.request(
            "GET",
            self._root + SYNC_PATH,
            params=params,
            headers=self._headers,
            refine=reason_from_errcode,
        )
        body = response.body
        if not isinstance(body, dict):
            raise FetchError(Reason.BAD_RESPONSE, "sync answer is not an object")
        next_batch = body.get("next_batch")
        if not isinstance(next_batch, str) or not next_batch:
            raise FetchError(Reason.BAD_RESPONSE, "sync answer lacks next_batch")
        rooms = body.get("rooms", {})
        if not isinstance(rooms, dict):
            raise FetchError(Reason.BAD_RESPONSE, "rooms is not an object")
        # Everything is read before anything is kept: an answer with one bad count is not
        # applied at all, and its token is not taken, so the next sync asks again.
        held = self._rooms if since is not None else {}
        joined = {
            room_id: _room_counts(entry, held.get(room_id))
            for room_id, entry in _section(rooms, "join").items()
        }
        names = {room_id: _names(entry) for room_id, entry in _section(rooms, "join").items()}
        if since is None:
            self._rooms = joined
            self._names = {}
        else:  # rooms absent from an incremental answer did not change
            for room_id in _section(rooms, "leave"):
                self._rooms.pop(room_id, None)
                self._names.pop(room_id, None)
            self._rooms.update(joined)
        for room_id, found in names.items():
            if found:
                self._names.setdefault(room_id, {}).update(found)
        self._since = next_batch

    async def _resolve_aliases(self, rooms: set[str]) -> dict[str, FetchError]:
        """Look up each alias not yet known, once; returns the lookups that failed."""
        failed: dict[str, FetchError] = {}

        async def resolve(alias: str) -> None:
            url = self._root + DIRECTORY_PATH + quote(alias, safe="")
            try:
                response = await self._upstream.request(
                    "GET", url, headers=self._headers, refine=reason_from_errcode
                )
            except FetchError as exc:
                failed[alias] = exc
                return
            room_id = response.body.get("room_id") if isinstance(response.body, dict) else None
            if not isinstance(room_id, str) or not room_id.startswith("!"):
                failed[alias] = FetchError(Reason.BAD_RESPONSE, "directory answer lacks room_id")
                return
            self._aliases[alias] = room_id

        unknown = sorted(r for r in rooms if r.startswith("#") and r not in self._aliases)
        await asyncio.gather(*(resolve(alias) for alias in unknown))
        return failed

    def _reading(self, dialog: MatrixDialog, failed: dict[str, FetchError]) -> Reading:
        room = dialog.room
        if room is None:
            tally = GroupTally(
                ("messages", "mentions", "conversations"), dialog.group_by, dialog.max_groups
            )
            for room_id, (messages, mentions) in self._rooms.items():
                if messages or mentions:  # a room with nothing unread is no queue
                    tally.add_group(
                        room_id,
                        messages=messages,
                        mentions=mentions,
                        conversations=1 if messages else 0,
                        name=self._room_name(room_id),
                    )
            return tally.reading()
        if room in failed:
            raise failed[room]
        counts = self._rooms.get(self._aliases.get(room, room))
        if counts is None:
            raise FetchError(Reason.NOT_FOUND, f"{room} is not a joined room of this user")
        return Reading(messages=counts[0], mentions=counts[1])

    def _room_name(self, room_id: str) -> str | None:
        state = self._names.get(room_id, {})
        return state.get("m.room.name") or state.get("m.room.canonical_alias")


def _names(entry: Any) -> dict[str, str]:
    """A joined room's name and canonical alias from the state and timeline events it carries
    (in an incremental answer, only those that changed)."""
    found: dict[str, str] = {}
    if not isinstance(entry, dict):
        return found
    for section in ("state", "timeline"):
        events = (
            entry.get(section, {}).get("events") if isinstance(entry.get(section), dict) else None
        )
        for event in events if isinstance(events, list) else ():
            if not isinstance(event, dict) or event.get("type") not in NAME_EVENTS:
                continue
            content = event.get("content")
            key = "name" if event["type"] == "m.room.name" else "alias"
            text = content.get(key) if isinstance(content, dict) else None
            if isinstance(text, str):
                found[event["type"]] = text[:200]
    return found


def coverage(account: MatrixAccount) -> Coverage:
    """A room is part of the dialog of all joined rooms; two room ids are two rooms (two
    aliases, or an alias and an id, may name the same room)."""
    return nested(
        account.dialogs,
        name=lambda dialog: dialog.name,
        scope=lambda _: account.name,
        is_whole=lambda dialog: dialog.room is None,
        disjoint=lambda a, b: bool(
            a.room
            and b.room
            and a.room.startswith("!")
            and b.room.startswith("!")
            and a.room != b.room
        ),
    )


PROVIDER = Provider(
    name="matrix",
    account_model=MatrixAccount,
    make_fetcher=MatrixFetcher,
    error_messages=error_messages,
    retry_after=retry_after,
    coverage=coverage,
)
