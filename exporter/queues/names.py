"""Display names of an account's groups, looked up apart from scrapes, at most once an hour.

Providers that carry only ids in the answers a scrape reads (Crisp inboxes and operators,
Intercom teams and teammates) have list endpoints for names. Those cost requests (a Crisp plugin
token has 5,000 a day), and names change rarely, so each account looks them up in the
background, at most once an hour per dimension (sooner again after a failure), and a scrape
never waits for them: until a name is known, the group is served by its id alone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import MappingProxyType

from exporter.outcome import FetchError
from exporter.queues.tally import display_name, group_id_problem

log = logging.getLogger(__name__)

NameLookup = Callable[[str], Awaitable[Mapping[str, str]]]
"""Asks the provider for ``{group id: display name}`` of one dimension (``group_by``)."""

LOOKUP_INTERVAL = 3600.0
RETRY_AFTER_FAILURE = 300.0
# Names kept per dimension: a lookup answering more is cut here (groups beyond are served by id).
MAX_NAMES = 10_000

EMPTY: Mapping[str, Mapping[str, str]] = MappingProxyType({})


class GroupNames:
    """One account's group names by dimension; owns the lookups' schedule and their task."""

    def __init__(
        self,
        lookup: NameLookup | None,
        dimensions: Iterable[str],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._lookup = lookup
        self._dimensions = tuple(sorted(set(dimensions))) if lookup is not None else ()
        self._clock = clock
        self._due_at = 0.0
        self._task: asyncio.Task[None] | None = None
        self._names: Mapping[str, Mapping[str, str]] = EMPTY

    def current(self) -> Mapping[str, Mapping[str, str]]:
        """The names known now, by dimension; starts a lookup when one is due (not waited on)."""
        if self._dimensions and self._task is None and self._clock() >= self._due_at:
            self._task = asyncio.create_task(self._refresh(), name="group names")
        return self._names

    async def _refresh(self) -> None:
        assert self._lookup is not None
        found: dict[str, Mapping[str, str]] = dict(self._names)
        failed = False
        for dimension in self._dimensions:
            try:
                answer = await self._lookup(dimension)
            except FetchError as exc:  # an upstream failure: try again sooner
                log.info(
                    "group names not looked up", extra={"group_by": dimension, "detail": exc.detail}
                )
                failed = True
                continue
            except Exception as exc:  # a provider's bug must not end the lookups for good
                log.warning(
                    "group names lookup failed",
                    extra={"group_by": dimension, "detail": type(exc).__name__},
                )
                failed = True
                continue
            found[dimension] = MappingProxyType(_clean(answer))
        self._names = MappingProxyType(found)
        self._due_at = self._clock() + (RETRY_AFTER_FAILURE if failed else LOOKUP_INTERVAL)
        self._task = None

    def cancel(self) -> None:
        """Stop a lookup in flight (the account's config changed)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()

    async def close(self) -> None:
        """Stop a lookup in flight and wait for it to end (shutdown)."""
        task = self._task
        self.cancel()
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)


def _clean(answer: Mapping[str, str]) -> dict[str, str]:
    """Names fit to show: label-safe ids, no email addresses, a bounded number of them."""
    names: dict[str, str] = {}
    for group, name in answer.items():
        if len(names) >= MAX_NAMES:
            break
        shown = display_name(name)
        if shown is not None and isinstance(group, str) and group_id_problem(group) is None:
            names[group] = shown
    return names
