"""Several dialogs counted from one pass over the same answer pages.

A Crisp backlog split by inbox and the same backlog split by operator, or an Intercom inbox and
its teams, are read from the same pages: reading them once costs no extra request. Each dialog
keeps its own :class:`~exporter.queues.tally.GroupTally`, and a failure that is one dialog's (a
junk group id only the dialog split by it reads) ends that dialog's count, not the others'.
Nothing of an item is kept beyond the tallies, so a pass over many pages holds bounded memory.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from exporter.models import GroupingDialog
from exporter.outcome import FetchError, Reading, Record
from exporter.queues.tally import GroupTally

D = TypeVar("D", bound=GroupingDialog)
T = TypeVar("T")


@dataclass
class _Share(Generic[D]):
    dialog: D
    tally: GroupTally
    failure: FetchError | None = None


class SharedPass(Generic[D]):
    """The dialogs served by one pass over an answer, each with its running tally."""

    def __init__(self, dialogs: Sequence[D], reports: tuple[str, ...]) -> None:
        self._shares = [
            _Share(dialog, GroupTally(reports, dialog.group_by, dialog.max_groups))
            for dialog in dialogs
        ]

    def add(
        self, items: Sequence[T], count_items: Callable[[D, GroupTally, Sequence[T]], None]
    ) -> None:
        """Count a page's items for every dialog still counting; ``count_items`` adds to a
        dialog's tally those of the items that are the dialog's, and may raise ``FetchError``.

        A page at a time, not an item at a time: a call per item and dialog was a measurable
        share of a scrape's CPU on a backlog of thousands of conversations (issue 14).
        """
        for share in self._shares:
            if share.failure is None:
                try:
                    count_items(share.dialog, share.tally, items)
                except FetchError as exc:
                    share.failure = exc

    def record(self, record: Record) -> None:
        """Record every dialog's reading, or the failure that ended its count."""
        for share in self._shares:
            outcome: Reading | FetchError
            if share.failure is not None:
                outcome = share.failure
            else:
                try:
                    outcome = share.tally.reading()
                except FetchError as exc:
                    outcome = exc
            record(share.dialog.name, outcome)
