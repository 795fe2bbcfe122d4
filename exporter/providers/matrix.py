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
import re
import secrets
import time
from collections.abc import Sequence
from typing import Any, ClassVar, Literal, Self
from urllib.parse import quote

from pydantic import Field, SecretStr, field_validator, model_validator

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
TOMBSTONE = "m.room.tombstone"
# Incremental syncs only add what changed, so a table kept from them could drift from the
# server's (a room missed, a homeserver restored from a backup that is not Synapse): a full
# sync this often makes it the server's again. And a user in more rooms than this is an
# answer that cannot be right (Synapse's own limits are far lower), not a table to grow.
FULL_SYNC_INTERVAL = 3600.0
MAX_ROOMS = 50_000
STATE_EVENTS = (*NAME_EVENTS, TOMBSTONE)
ROOM_PATTERN = re.compile(r"![^\s]+|#[^\s:]+:[^\s]+")


class MatrixDialog(GroupingDialog):
    """One room, by id (``!abc:example.org``) or alias (``#support:example.org``); none: all
    joined rooms, summed, and split by room with ``group_by: room``."""

    group_dimensions: ClassVar[tuple[str, ...]] = ("room",)

    room: str | None = None

    @field_validator("room")
    @classmethod
    def _room_or_alias(cls, value: str | None) -> str | None:
        if value is not None and not ROOM_PATTERN.fullmatch(value):
            raise ValueError("must be a room id (!id:server) or an alias (#name:server)")
        return value

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


def _sync_filter(full: bool) -> str:
    """The inline filter of one sync request: every joined room, nothing we do not read.

    Synapse leaves a joined room out of a sync answer when nothing in it survives the filter,
    even a full one, so the timeline keeps its newest event (shrunk by ``event_fields``): a
    room with new messages appears, and a full sync lists every room. What else is kept is
    what the counts a person's client (Element) shows depend on:

    - ``unread_thread_notifications``: the room's counts leave thread replies out (Element's
      room badge does), which come apart in ``unread_thread_notifications``, not read here;
    - of the state, a room's name and canonical alias (``group_by: room`` names) and its
      tombstone (an upgraded room, hidden behind its successor as Element hides it);
    - of the account data, the push rules (a muted room counts 0, as Element shows it);
    - in an incremental sync, read receipts (``m.receipt``), so a room whose count a receipt
      lowered appears; a full sync needs none (it lists every room), and leaving them out
      keeps its size from growing with every member's receipt in every room.

    Synapse caches a sync answer for minutes under a key that includes the filter text: the
    ``not_rooms`` entry names a random room that cannot exist, so no request ever repeats an
    earlier one's key and no cached (stale) answer is served, after a restart either.
    """
    nonce = secrets.token_hex(8)
    body = {
        "event_fields": [
            "type",
            "content.name",
            "content.alias",
            "content.replacement_room",
            "content.global.override",
        ],
        "presence": {"not_types": ["*"]},
        "account_data": {"types": ["m.push_rules"]},
        "room": {
            "not_rooms": [f"!{nonce}:{NONCE_SERVER}"],
            "timeline": {"limit": 1, "unread_thread_notifications": True},
            "state": {"types": list(STATE_EVENTS)},
            "ephemeral": {"not_types": ["*"]} if full else {"types": ["m.receipt"]},
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
        self._full_sync_at = 0.0
        self._rooms: dict[str, Counts] = {}
        self._book = RoomBook()
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
        if time.monotonic() - self._full_sync_at > FULL_SYNC_INTERVAL:
            self._since = None  # an hourly full sync: the room table is the server's again
        await self._sync_held()

    async def _sync_held(self) -> None:
        """Sync from the held token; a token the homeserver refuses means a full sync, and so
        does one the homeserver is behind (its database restored from a backup: Synapse then
        answers "nothing new" from its own, older position, and the counts held would stay
        stale for good)."""
        if self._since is not None:
            try:
                if await self._sync_from(self._since):
                    return
                log.info("homeserver is behind the since token; full sync")
            except FetchError as exc:
                if exc.reason is not Reason.HTTP_4XX:
                    raise
                log.info("since token refused, falling back to a full sync: %s", exc.detail)
        await self._sync_from(None)

    async def _sync_from(self, since: str | None) -> bool:
        """Apply one sync; False (nothing applied) when the server is behind ``since``."""
        params = {"timeout": "0", "set_presence": "offline", "filter": _sync_filter(since is None)}
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
        if since is not None and stream_behind(next_batch, since):
            return False
        rooms = body.get("rooms", {})
        if not isinstance(rooms, dict):
            raise FetchError(Reason.BAD_RESPONSE, "rooms is not an object")
        # Everything is read before anything is kept: an answer with one bad count is not
        # applied at all, and its token is not taken, so the next sync asks again.
        join, left = _section(rooms, "join"), _section(rooms, "leave")
        invited = _section(rooms, "invite")
        held = self._rooms if since is not None else {}
        joined = {
            room_id: _room_counts(entry, held.get(room_id)) for room_id, entry in join.items()
        }
        if len(held.keys() | joined.keys()) > MAX_ROOMS:
            raise FetchError(Reason.BAD_RESPONSE, f"more than {MAX_ROOMS} joined rooms")
        if since is None:
            self._full_sync_at = time.monotonic()
            self._rooms = joined
        else:  # rooms absent from an incremental answer did not change
            for room_id in left:
                self._rooms.pop(room_id, None)
            self._rooms.update(joined)
        self._book.apply(body, join, invited, left, full=since is None, joined=self._rooms)
        self._since = next_batch
        return True

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
        shown = self._book.as_shown(self._rooms)
        room = dialog.room
        if room is None:
            tally = GroupTally(
                ("messages", "mentions", "conversations"), dialog.group_by, dialog.max_groups
            )
            for room_id, (messages, mentions) in shown.items():
                if messages or mentions:  # a room with nothing unread is no queue
                    tally.add_group(
                        room_id,
                        messages=messages,
                        mentions=mentions,
                        conversations=1 if messages else 0,
                        name=self._book.name(room_id),
                    )
            return tally.reading(invitations=len(self._book.invites))
        if room in failed:
            raise failed[room]
        room_id = self._aliases.get(room, room)
        if room_id not in self._rooms:
            raise FetchError(Reason.NOT_FOUND, f"{room} is not a joined room of this user")
        messages, mentions = shown.get(room_id, (0, 0))  # replaced: shown in its successor
        return Reading(messages=messages, mentions=mentions)


class RoomBook:
    """What a person's client makes of the joined rooms' counts, kept between syncs: rooms'
    names, the rooms an upgrade replaced, the muted rooms and the pending invites.

    Element (the reference for what a person sees) shows a muted room as 0 whatever the
    server counts, hides a room replaced by an upgrade and adds its highlights to the
    successor, and shows each invite as one. Bounded by the rooms the user is in: entries of
    rooms that are not joined (or invited) are dropped on every sync.
    """

    def __init__(self) -> None:
        self._state: dict[str, dict[str, str]] = {}  # room id -> state event type -> text
        self._muted: frozenset[str] = frozenset()
        self.invites: frozenset[str] = frozenset()

    def apply(
        self,
        body: dict[str, Any],
        join: dict[str, Any],
        invited: dict[str, Any],
        left: dict[str, Any],
        *,
        full: bool,
        joined: dict[str, Counts],
    ) -> None:
        if full:
            self._state, self.invites = {}, frozenset()
        for room_id, entry in join.items():
            found = _state_texts(entry)
            if found:
                self._state.setdefault(room_id, {}).update(found)
        self.invites = (self.invites | invited.keys()) - joined.keys() - left.keys()
        for room_id in [r for r in self._state if r not in joined]:
            del self._state[room_id]
        rules = _push_rules(body)
        if rules is not None:
            self._muted = _muted_rooms(rules)

    def name(self, room_id: str) -> str | None:
        state = self._state.get(room_id, {})
        return state.get("m.room.name") or state.get("m.room.canonical_alias")

    def as_shown(self, rooms: dict[str, Counts]) -> dict[str, Counts]:
        """Each joined room's counts as the client shows them (replaced rooms left out)."""
        shown = {room_id: (0, 0) if room_id in self._muted else c for room_id, c in rooms.items()}
        for room_id in list(shown):
            successor = self._state.get(room_id, {}).get(TOMBSTONE)
            if successor and successor in shown and successor != room_id:
                _, highlights = shown.pop(room_id)
                messages, mentions = shown[successor]
                shown[successor] = (messages, mentions + highlights)
        return shown


def _state_texts(entry: Any) -> dict[str, str]:
    """A joined room's name, canonical alias and successor from the state and timeline events
    it carries (in an incremental answer, only those that changed)."""
    found: dict[str, str] = {}
    if not isinstance(entry, dict):
        return found
    keys = {"m.room.name": "name", "m.room.canonical_alias": "alias", TOMBSTONE: "replacement_room"}
    for section in ("state", "timeline"):
        part = entry.get(section)
        events = part.get("events") if isinstance(part, dict) else None
        for event in events if isinstance(events, list) else ():
            kind = event.get("type") if isinstance(event, dict) else None
            if kind not in keys:
                continue
            content = event.get("content")
            text = content.get(keys[kind]) if isinstance(content, dict) else None
            if isinstance(text, str):
                found[kind] = text[:255]
    return found


def _push_rules(body: dict[str, Any]) -> list[Any] | None:
    """The user's override push rules, when this answer carries the push rules at all."""
    account_data = body.get("account_data")
    events = account_data.get("events") if isinstance(account_data, dict) else None
    for event in events if isinstance(events, list) else ():
        if isinstance(event, dict) and event.get("type") == "m.push_rules":
            content = event.get("content")
            rules = content.get("global") if isinstance(content, dict) else None
            override = rules.get("override") if isinstance(rules, dict) else None
            return override if isinstance(override, list) else []
    return None


def _muted_rooms(override: list[Any]) -> frozenset[str]:
    """Rooms an enabled override rule keeps from notifying (Element's "Mute": a rule that
    matches the room id and whose actions do not notify)."""
    muted: set[str] = set()
    for rule in override:
        if not isinstance(rule, dict) or rule.get("enabled") is False:
            continue
        actions = rule.get("actions")
        conditions = rule.get("conditions")
        if not isinstance(actions, list) or "notify" in actions:
            continue
        if not isinstance(conditions, list) or len(conditions) != 1:
            continue
        condition = conditions[0]
        if (
            isinstance(condition, dict)
            and condition.get("kind") == "event_match"
            and condition.get("key") == "room_id"
            and isinstance(condition.get("pattern"), str)
        ):
            muted.add(condition["pattern"])
    return frozenset(muted)


def stream_behind(answered: str, since: str) -> bool:
    """Whether a Synapse stream token is behind the one sent: any position before it.

    A homeserver answers with a ``next_batch`` at or past the ``since`` it was given in every
    stream; one position before means the homeserver went back (its database restored). Only
    some streams go back: after a restore, a real Synapse was seen answering ``s10_..._4_...``
    to ``s12_..._3_...`` (its room stream behind, its device-list stream past, a new login in
    between), so "every position at or before" misses it. The typing stream lives in memory
    and restarts at 0 with the homeserver, which costs one full sync after a restart. Tokens
    of other homeservers (or shapes) are never judged behind."""
    mine, theirs = _positions(since), _positions(answered)
    if mine is None or theirs is None or len(mine) != len(theirs):
        return False
    return any(a < b for a, b in zip(theirs, mine, strict=True))


def _positions(token: str) -> list[int] | None:
    """Synapse's ``s123_4_5...`` stream positions, or None for any other shape."""
    if not token.startswith("s"):
        return None
    parts = token[1:].split("_")
    return [int(part) for part in parts] if all(part.isdigit() for part in parts) else None


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
