"""Which dialogs of an account already count another's items: totals that count once.

A config may watch a whole (a user's total, every joined room, the whole inbox) and parts of it
(one dialog, one room, one team). Adding such dialogs up counts an unread item twice, so each
provider says, from its own config, which dialog already counts all of another's items
(``part_of``, served as ``chat_unread_dialog_info``), and which two dialogs can count the same
items with no configured dialog holding both (``overlapping``, a ``--config.check`` warning).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from types import MappingProxyType
from typing import TypeVar

D = TypeVar("D")
A = TypeVar("A")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Coverage:
    """``part_of``: dialog name to the dialog that counts all its items; ``overlapping``: pairs
    of dialogs that can count the same items where no configured dialog contains both."""

    part_of: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    overlapping: tuple[tuple[str, str], ...] = ()


NO_COVERAGE = Coverage()


def _never(_a: object, _b: object) -> bool:
    return False


def nested(
    dialogs: Sequence[D],
    name: Callable[[D], str],
    scope: Callable[[D], Hashable],
    is_whole: Callable[[D], bool],
    disjoint: Callable[[D, D], bool] = _never,
) -> Coverage:
    """Coverage where dialogs of one ``scope`` (a user, a website, an account) nest.

    In each scope the first whole dialog counts every other dialog's items (a second whole
    counts the same items, so it is part of the first). Without a whole, two dialogs of the
    scope overlap unless ``disjoint`` knows they cannot share an item (two different rooms).
    """
    by_scope: dict[Hashable, list[D]] = {}
    for dialog in dialogs:
        by_scope.setdefault(scope(dialog), []).append(dialog)
    part_of: dict[str, str] = {}
    overlapping: list[tuple[str, str]] = []
    for members in by_scope.values():
        whole = next((dialog for dialog in members if is_whole(dialog)), None)
        if whole is not None:
            part_of.update((name(d), name(whole)) for d in members if d is not whole)
            continue
        overlapping.extend(
            (name(a), name(b)) for a, b in combinations(members, 2) if not disjoint(a, b)
        )
    return Coverage(MappingProxyType(part_of), tuple(overlapping))


def overlap_warning(account: str, pair: tuple[str, str]) -> str:
    """The ``--config.check`` line for two dialogs that can count the same items."""
    first, second = pair
    return (
        f"warning: account {account}: dialogs {first} and {second} can count the same unread"
        " items and no dialog of the account contains both; sums over dialogs may count"
        " them twice (add a dialog that holds both, e.g. one without a filter)"
    )


def coverage_of(coverage: Callable[[A], Coverage], account: A, provider: str) -> Coverage:
    """A provider's coverage of an account; none (every dialog on its own) if a plugin's
    coverage function raises, so a bug there costs the ``part_of`` labels, not the account."""
    try:
        return coverage(account)
    except Exception as exc:
        log.warning(
            "dialog coverage unknown", extra={"provider": provider, "detail": repr(exc)[:200]}
        )
        return NO_COVERAGE
