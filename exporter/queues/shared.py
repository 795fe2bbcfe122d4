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

    def add(self, count_item: Callable[[D, GroupTally], None]) -> None:
        """Count one item for every dialog still counting; ``count_item`` adds it to a dialog's
        tally (or not, when the item is not the dialog's) and may raise ``FetchError``."""
        for share in self._shares:
            if share.failure is None:
                try:
                    count_item(share.dialog, share.tally)
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
