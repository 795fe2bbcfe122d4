"""The one small protocol every provider implements, and the helpers they share.

This module is the provider interface, for the built-in providers and for plugins alike
(``docs/plugins.md``): what ``__all__`` lists is public and versioned by ``API_VERSION``, which
changes only when a change would break a provider written against the previous version.

A provider turns an account's configuration into an :class:`AccountFetcher`. The fetcher gets
all of the account's dialogs at once (so a provider that can batch, like QuickBlox, answers many
dialogs with one request) and reports each dialog's outcome through ``record`` as soon as it is
known, so a scrape deadline that cuts a slow account short still serves the dialogs already in.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from exporter.envelope import (
    ErrorMessages,
    RetryHint,
    common_error_messages,
    common_retry_after,
    entries,
    entries_at,
    non_negative_number,
    scalars,
)
from exporter.models import AccountConfig, DialogConfig
from exporter.outcome import FetchError, GroupReading, GroupSplit, Outcome, Reading, Reason, Record
from exporter.queues.coverage import NO_COVERAGE, Coverage, nested
from exporter.queues.tally import EXACT_LIMIT, GroupTally

if TYPE_CHECKING:
    from exporter.upstream import Upstream

__all__ = [
    "API_VERSION",
    "AccountFetcher",
    "Coverage",
    "ErrorMessages",
    "FetchError",
    "GroupReading",
    "GroupSplit",
    "GroupTally",
    "Outcome",
    "Provider",
    "Reading",
    "Reason",
    "Record",
    "RetryHint",
    "checked_sum",
    "common_error_messages",
    "common_retry_after",
    "count",
    "entries",
    "entries_at",
    "fetch_each",
    "nested",
    "non_negative_number",
    "record_all",
    "scalars",
]

API_VERSION = 1
"""The provider interface version this exporter implements; a provider states the one it needs."""


AccountT = TypeVar("AccountT", bound=AccountConfig)
DialogT = TypeVar("DialogT", bound=DialogConfig)


class AccountFetcher(Protocol):
    """Fetches an account's dialogs; one instance lives as long as the account's config.

    A fetcher whose groups' names are not in the answers it reads may also have
    ``async def group_names(self, group_by: str) -> Mapping[str, str]`` (group id to display
    name); the exporter calls it in the background, at most once an hour per dimension.
    """

    async def fetch(self, dialogs: Sequence[Any], record: Record) -> None:
        """Fetch every dialog and ``record`` each one's outcome (never raise for one dialog)."""


def no_coverage(_account: Any) -> Coverage:
    """A provider that says nothing of its dialogs' overlaps: every dialog counts on its own."""
    return NO_COVERAGE


@dataclass(frozen=True)
class Provider(Generic[AccountT]):
    """A registry entry: the name used in the config and how to build its fetcher.

    ``name`` must equal the entry point's name; ``account_model`` validates one account of the
    config (a subclass of ``AccountConfig``); ``make_fetcher`` is called once per account and
    config version; ``api_version`` is the interface version the provider was written for.

    The provider's error envelope is its own: ``error_messages`` reads the messages of an
    error body (for failure details), ``retry_after`` the seconds a rate-limit answer's body
    asks to wait (headers such as ``Retry-After`` are read for every provider). Both are
    optional; the defaults read the shapes most JSON APIs use.

    ``coverage`` says, from an account's config, which dialog already counts all of another's
    items (``chat_unread_dialog_info``'s ``part_of``) and which can count the same items; a
    provider that leaves it out gets no ``part_of`` at all.
    """

    name: str
    account_model: type[AccountT]
    make_fetcher: Callable[[AccountT, Upstream], AccountFetcher]
    api_version: int = API_VERSION
    error_messages: ErrorMessages = common_error_messages
    retry_after: RetryHint = common_retry_after
    coverage: Callable[[AccountT], Coverage] = no_coverage


async def fetch_each(
    dialogs: Sequence[DialogT],
    record: Record,
    fetch_one: Callable[[DialogT], Awaitable[Reading]],
    workers: int,
) -> None:
    """Fetch dialogs one request chain each, ``workers`` at a time; a failure stays with its
    dialog.

    A few workers pulling from one queue cost less than a task per dialog all waiting on the
    account's semaphore (measured: about a tenth of a large scrape's CPU).
    """
    pending = iter(dialogs)

    async def worker() -> None:
        for dialog in pending:
            try:
                record(dialog.name, await fetch_one(dialog))
            except FetchError as exc:
                record(dialog.name, exc)

    await asyncio.gather(*(worker() for _ in range(min(workers, len(dialogs)))))


def record_all(dialogs: Sequence[DialogConfig], record: Record, outcome: Outcome) -> None:
    """Give every dialog the same outcome (a batched request that failed as a whole)."""
    for dialog in dialogs:
        record(dialog.name, outcome)


def count(container: Any, *path: str) -> int:
    """Read a non-negative integer count at ``path`` in a decoded JSON body.

    Providers document these as integers; a string, null, float or negative number means the
    answer cannot be trusted, so it is a ``bad_response`` rather than a guessed value. So is
    a count above 2**53: exposed as a float it would be rounded, or overflow (400 digits).
    """
    value = container
    for key in path:
        if not isinstance(value, dict) or key not in value:
            raise FetchError(Reason.BAD_RESPONSE, f"field {'.'.join(path)} is missing")
        value = value[key]
    if type(value) is int and 0 <= value <= EXACT_LIMIT:
        return value  # the usual answer, in one test (a bool's type is not int)
    if isinstance(value, bool) or not isinstance(value, int):
        shown = type(value).__name__ if value is not None else "null"
        raise FetchError(Reason.BAD_RESPONSE, f"field {'.'.join(path)} is {shown}, not an integer")
    if value < 0:
        raise FetchError(Reason.BAD_RESPONSE, f"field {'.'.join(path)} is negative ({value})")
    if value > EXACT_LIMIT:
        raise FetchError(Reason.BAD_RESPONSE, f"field {'.'.join(path)} is beyond 2**53")
    return value


def checked_sum(counts: Iterable[int], what: str) -> int:
    """The sum of counts (each read with :func:`count`), ``bad_response`` beyond 2**53.

    Every count within the bound does not make their sum so: two of 2**63 each are served
    as 1.8e19, a value no client shows. ``what`` names the sum in the failure's detail.
    """
    total = sum(counts)
    if total > EXACT_LIMIT:
        raise FetchError(Reason.BAD_RESPONSE, f"{what} add up to more than 2**53")
    return total
