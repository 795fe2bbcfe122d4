"""Adding a dialog's items up, and split by group, in one pass over the answer.

A provider that reads a dialog item by item (Crisp conversations, Intercom search results,
Matrix rooms, Stream or Sendbird channels, QuickBlox dialogs) feeds each item to a
:class:`GroupTally` and takes the dialog's :class:`~exporter.outcome.Reading` from it. The
dialog's value and its groups then come from the same numbers, so over the groups the counts
add up to the dialog's value exactly, whatever the paging, and a dialog without ``group_by``
costs no more than a running sum.

Cardinality is held here: at most ``max_groups`` group series per dialog. When there are more
groups, the ``max_groups - 1`` with the most waiting (then the oldest, then by id) are kept and
the rest are summed into ``other``; ``folded`` says how many. :func:`split_problem` checks a
finished split (a plugin may build its own) before it is served.
"""

from __future__ import annotations

import heapq
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Final

from exporter.outcome import FetchError, GroupReading, GroupSplit, Reading, Reason

UNASSIGNED: Final = "unassigned"
OTHER: Final = "other"
RESERVED: Final = frozenset({UNASSIGNED, OTHER})
# A provider id that equals a reserved group is served with this prefix, so it never merges
# with the exporter's own ``unassigned`` or ``other``.
RESERVED_ESCAPE: Final = "id:"
# Longer ids are refused: a label value that long is junk, not a team or channel id.
MAX_GROUP_ID_LENGTH: Final = 256
MAX_NAME_LENGTH: Final = 200
# Counts beyond this are not exact as the float a sample carries.
EXACT_LIMIT: Final = 2**53
COUNT_FIELDS: Final = ("messages", "mentions", "conversations")


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def group_id_problem(group: str) -> str | None:
    """Why ``group`` cannot be a label value (``None``: it can)."""
    if not group:
        return "a group id is empty"
    if len(group) > MAX_GROUP_ID_LENGTH:
        return f"a group id is longer than {MAX_GROUP_ID_LENGTH} characters"
    if _CONTROL.search(group):
        return f"group id {group[:40]!r} holds control characters"
    return None


def display_name(name: object) -> str | None:
    """A group's display name as it may be shown: never an email address, never junk.

    Names are labels on ``chat_unread_group_info``; a teammate's email is personal data the
    dashboard does not need, so anything that looks like one is left out (``None``).
    """
    if not isinstance(name, str):
        return None
    text = " ".join(name.split())  # line breaks and tabs would be junk in a label
    if not text or "@" in text or any(ord(char) < 0x20 for char in text):
        return None
    return text[:MAX_NAME_LENGTH]


@dataclass(slots=True)
class _Sums:
    """One group's running values (``None``: no item reported that value)."""

    messages: int | None = None
    mentions: int | None = None
    conversations: int | None = None
    oldest: float | None = None
    name: str | None = None

    def add(
        self,
        messages: int | None,
        mentions: int | None,
        conversations: int | None,
        oldest: float | None,
    ) -> None:
        if messages is not None:
            self.messages = (self.messages or 0) + messages
        if mentions is not None:
            self.mentions = (self.mentions or 0) + mentions
        if conversations is not None:
            self.conversations = (self.conversations or 0) + conversations
        if oldest is not None and (self.oldest is None or oldest < self.oldest):
            self.oldest = oldest

    def waiting(self) -> int:
        """What ranks a group: its unread messages, else its waiting conversations."""
        return self.messages if self.messages is not None else (self.conversations or 0)

    def reading(self, group: str, name: str | None) -> GroupReading:
        return GroupReading(
            group=group,
            messages=self.messages,
            mentions=self.mentions,
            conversations=self.conversations,
            oldest_unread_timestamp=self.oldest,
            name=name,
        )


class GroupTally:
    """A dialog's running totals, and per group when the dialog has a ``group_by``.

    ``reports`` names the counts the dialog has (``messages``, ``mentions``,
    ``conversations``), 0 until an item adds to them; the oldest is whatever items give.
    ``add`` takes an item that may share its group with others (conversations of one inbox);
    ``add_group`` a group that is itself the item (a room, a channel), so seeing it twice in
    one answer is an error rather than a double count.
    """

    def __init__(
        self,
        reports: tuple[str, ...],
        group_by: str | None = None,
        max_groups: int = 20,
    ) -> None:
        unknown = set(reports).difference(COUNT_FIELDS)
        if unknown:
            raise ValueError(f"not a count: {sorted(unknown)}")
        self.group_by = group_by
        self.max_groups = max_groups
        # The counts the dialog reports start at 0: no item is a count of 0, not an absent one.
        self._total = _Sums()
        for name in reports:
            setattr(self._total, name, 0)
        self._groups: dict[str, _Sums] = {}

    def add(
        self,
        group: str | None,
        *,
        messages: int | None = None,
        mentions: int | None = None,
        conversations: int | None = None,
        oldest: float | None = None,
        name: object = None,
    ) -> None:
        """Count one item; ``group`` ``None`` means the item is in no group (``unassigned``).

        With ``group_by``, only the item's group is added to (the dialog's value is the sum of
        its groups, taken once in :meth:`reading`), and a group id already counted is not
        checked again: a backlog of 5,000 conversations costs a dictionary look-up each.
        """
        if self.group_by is None:
            self._total.add(messages, mentions, conversations, oldest)
            return
        # An id that is not reserved is its own key, and only checked ids become keys.
        sums = self._groups.get(group) if group is not None and group not in RESERVED else None
        if sums is None:
            key = self._key(group)
            sums = self._groups.get(key)
            if sums is None:
                sums = self._groups[key] = _Sums()
        sums.add(messages, mentions, conversations, oldest)
        if name is not None and group is not None and sums.name is None:
            sums.name = display_name(name)

    def add_group(
        self,
        group: str,
        *,
        messages: int | None = None,
        mentions: int | None = None,
        conversations: int | None = None,
        oldest: float | None = None,
        name: object = None,
    ) -> None:
        """Count a group that is an item of its own; a repeat in one answer is refused."""
        if self.group_by is not None and self._key(group) in self._groups:
            raise FetchError(Reason.BAD_RESPONSE, f"{group[:40]!r} appears twice in the answer")
        self.add(
            group,
            messages=messages,
            mentions=mentions,
            conversations=conversations,
            oldest=oldest,
            name=name,
        )

    def _key(self, group: str | None) -> str:
        if group is None:
            return UNASSIGNED
        problem = group_id_problem(group)
        if problem is not None:
            raise FetchError(Reason.BAD_RESPONSE, problem)
        return RESERVED_ESCAPE + group if group in RESERVED else group

    def reading(
        self,
        *,
        invitations: int | None = None,
        totals: Reading | None = None,
    ) -> Reading:
        """The dialog's reading: the items' sums, or ``totals`` where the answer had its own.

        ``totals`` is for an answer whose per-group list is capped (Stream lists at most 100
        unread channels beside the user's total): what the groups leave of a total is served
        as ``other``, so the groups still add up. A total below the groups' sum is an answer
        that contradicts itself: ``bad_response``.
        """
        total = self._total
        if self.group_by is not None:
            total = _combined(self._groups.values(), total)
        if totals is not None:
            remainder = _Sums(oldest=None)
            for name in COUNT_FIELDS:
                whole, part = getattr(totals, name), getattr(total, name)
                if whole is None:
                    continue
                left = whole - (part or 0)
                if left < 0:
                    raise FetchError(
                        Reason.BAD_RESPONSE, f"{name}: the groups add up to more than the total"
                    )
                setattr(remainder, name, left)
            total = _Sums(
                messages=totals.messages,
                mentions=totals.mentions,
                conversations=totals.conversations,
                oldest=totals.oldest_unread_timestamp,
            )
            if self.group_by is not None and any(getattr(remainder, name) for name in COUNT_FIELDS):
                self._groups[OTHER] = _combined([remainder], self._groups.get(OTHER))
        for name in COUNT_FIELDS:
            value = getattr(total, name)
            if value is not None and value > EXACT_LIMIT:
                raise FetchError(Reason.BAD_RESPONSE, f"{name} add up to more than 2**53")
        return Reading(
            messages=total.messages,
            mentions=total.mentions,
            invitations=invitations,
            conversations=total.conversations,
            oldest_unread_timestamp=total.oldest,
            groups=self._split(total),
        )

    def _split(self, total: _Sums) -> GroupSplit | None:
        if self.group_by is None:
            return None
        other = self._groups.pop(OTHER, None)
        ranked = self._groups
        folded = 0
        limit = self.max_groups if other is None else self.max_groups - 1
        if len(ranked) > limit:
            limit = self.max_groups - 1  # one series is needed for ``other``
            # Kept: the most waiting, then the oldest, then by id (plain tuples compare fastest).
            ranks = heapq.nsmallest(
                limit,
                [
                    (-sums.waiting(), math.inf if sums.oldest is None else sums.oldest, key)
                    for key, sums in ranked.items()
                ],
            )
            kept = {key: ranked[key] for *_, key in ranks}
            rest = [sums for key, sums in ranked.items() if key not in kept]
            other = _combined(rest, other)
            folded = len(rest)
            ranked = kept
        groups = [sums.reading(key, sums.name) for key, sums in ranked.items()]
        if other is not None:
            groups.append(other.reading(OTHER, None))
        # A group carries exactly the values its dialog carries.
        groups = [_like(group, total) for group in groups]
        groups.sort(key=lambda group: group.group)
        return GroupSplit(group_by=self.group_by, groups=tuple(groups), folded=folded)


def _combined(parts: Iterable[_Sums], start: _Sums | None = None) -> _Sums:
    """``start`` and ``parts`` as one group: what adding all their items to one would give
    (a count only some of them have is the sum of those, the oldest is the earliest)."""
    every = list(parts) if start is None else [start, *parts]
    waits = [sums.oldest for sums in every if sums.oldest is not None]
    return _Sums(
        messages=_sum_present([sums.messages for sums in every]),
        mentions=_sum_present([sums.mentions for sums in every]),
        conversations=_sum_present([sums.conversations for sums in every]),
        oldest=min(waits) if waits else None,
    )


def _sum_present(values: list[int | None]) -> int | None:
    present = [value for value in values if value is not None]
    return sum(present) if present else None


def _like(group: GroupReading, total: _Sums) -> GroupReading:
    """The group with 0 for a count its dialog has and it lacked, ``None`` where the dialog has
    none: a group is counted in the same terms as its dialog."""
    return GroupReading(
        group=group.group,
        messages=None if total.messages is None else group.messages or 0,
        mentions=None if total.mentions is None else group.mentions or 0,
        conversations=None if total.conversations is None else group.conversations or 0,
        oldest_unread_timestamp=None if total.oldest is None else group.oldest_unread_timestamp,
        name=group.name,
    )


def split_problem(reading: Reading, max_groups: int | None) -> str | None:
    """Why a reading's split cannot be served (``None``: it can, or there is none).

    Checked on every reading before it is served, whoever built it: ids are label-safe and
    distinct, at most ``max_groups`` groups, counts add up to the dialog's exactly, and the
    oldest group is the dialog's oldest.
    """
    split = reading.groups
    if split is None:
        return None
    if max_groups is not None and len(split.groups) > max_groups:
        return f"{len(split.groups)} groups, more than max_groups {max_groups}"
    if split.folded < 0:
        return "a negative number of folded groups"
    seen: set[str] = set()
    for group in split.groups:
        problem = group_id_problem(group.group)
        if problem is not None:
            return problem
        if group.group in seen:
            return f"group {group.group[:40]!r} appears twice"
        seen.add(group.group)
    for item in fields(GroupReading):
        name = item.name
        if name in ("group", "name"):
            continue
        whole = getattr(reading, name)
        parts = [getattr(group, name) for group in split.groups]
        if whole is None:
            if any(part is not None for part in parts):
                return f"groups have {name} but the dialog has none"
            continue
        if not split.groups:
            if whole and name != "oldest_unread_timestamp":
                return f"{name} is {whole} but there are no groups"
            continue
        if any(part is None for part in parts) and name != "oldest_unread_timestamp":
            return f"a group lacks {name}"
        present = [part for part in parts if part is not None]
        if not all(_is_value(name, part) for part in present):
            return f"a group's {name} is not a valid value"
        if name == "oldest_unread_timestamp":
            if present and min(present) != whole:
                return "the oldest group is not the dialog's oldest"
        elif sum(present) != whole:
            return f"groups' {name} add up to {sum(present)}, not the dialog's {whole}"
    return None


def _is_value(name: str, value: object) -> bool:
    """A count is a non-negative int within 2**53; a timestamp a finite non-negative number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if name == "oldest_unread_timestamp":
        return math.isfinite(value) and value >= 0
    return isinstance(value, int) and 0 <= value <= EXACT_LIMIT
