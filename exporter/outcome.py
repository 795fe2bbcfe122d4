"""What fetching a dialog can come to: a reading, or a classified failure.

These types sit below both the providers and ``upstream`` (which classifies HTTP failures into
them), so neither has to import the other. Providers and plugins import them from
``exporter.providers.base``, the public interface, which re-exports them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum


class Reason(StrEnum):
    """Why a dialog could not be fetched: the fixed ``reason`` label set of the errors counter."""

    TIMEOUT = "timeout"
    HTTP_4XX = "http_4xx"
    HTTP_5XX = "http_5xx"
    RATE_LIMITED = "rate_limited"
    AUTH = "auth"
    NOT_FOUND = "not_found"
    BAD_RESPONSE = "bad_response"
    CONNECTION = "connection"


class FetchError(Exception):
    """An upstream failure, already classified; ``detail`` is one log-safe line."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class GroupReading:
    """One group of a dialog split by ``group_by`` (a team, an inbox, a room, a channel).

    ``group`` is the provider's stable id, or one of the reserved ``unassigned`` and ``other``;
    ``name`` is a display name the answer itself carried (``None``: none, or looked up apart).
    A value is ``None`` exactly where the dialog's own value is.
    """

    group: str
    messages: int | None = None
    mentions: int | None = None
    conversations: int | None = None
    oldest_unread_timestamp: float | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class GroupSplit:
    """A dialog's value split by one dimension: the groups served, and how many were folded.

    Over ``groups`` the counts add up to the dialog's own and the oldest is the dialog's oldest
    (``exporter.queues.tally`` builds splits that hold this, and the runtime checks every split
    before serving it, a plugin's included). ``folded`` groups were summed into ``other``.
    """

    group_by: str
    groups: tuple[GroupReading, ...]
    folded: int = 0


@dataclass(frozen=True, slots=True)
class Reading:
    """What one dialog reported; ``None`` means the provider does not report that value.

    ``messages`` is ``None`` too where the API has no true unread message count (an Intercom
    backlog counts waiting conversations only): an absent series, never a made-up 0.
    ``groups`` is the same value split by the dialog's ``group_by`` (``None``: not split).
    """

    messages: int | None
    mentions: int | None = None
    invitations: int | None = None
    conversations: int | None = None
    oldest_unread_timestamp: float | None = None
    groups: GroupSplit | None = None

    def summary(self) -> str:
        """A few words for the landing page: unread messages, else waiting conversations."""
        if self.messages is not None:
            return f"{self.messages} unread"
        return f"{self.conversations} waiting conversations"


Outcome = Reading | FetchError
Record = Callable[[str, Outcome], None]
