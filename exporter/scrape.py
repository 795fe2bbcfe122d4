"""Fetching: when to call upstream, and what each scrape is served.

One :class:`AccountRuntime` per configured account owns that account's fetcher, HTTP state and
last results. A scrape asks every selected account for a view at once; each account decides
whether to join a refresh already in flight (single-flight: simultaneous scrapes cost upstream
what one costs), serve its last results (``cache_ttl``, daily budget pacing), or start a new
refresh. Waiting is bounded by the scrape's deadline; a refresh that outlives it keeps running
and its results serve the next scrape, even when it has finished by then. A failure is never
hidden behind an older value (``up 1``). Nothing here formats metrics (see ``collector``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from exporter.logs import escape_controls
from exporter.models import AccountConfig
from exporter.outcome import FetchError, Outcome, Reading, Reason
from exporter.providers.base import AccountFetcher, Provider
from exporter.upstream import Clock, Upstream, UpstreamPool

log = logging.getLogger(__name__)

Source = Literal["fresh", "shared", "late", "cache", "budget"]

# A refresh (all of an account's requests, e.g. many Crisp pages) may take at most this many
# request timeouts (30 s at the default 5 s); scrapes that join a refresh in flight then get a
# fresh attempt instead of waiting on one that cannot finish.
ROUND_LIMIT_TIMEOUTS = 6
# A refresh that finished after its scrape's deadline serves the next scrape if that comes
# within this long (Prometheus' default lookback delta); an older one is fetched again.
LATE_RESULTS_MAX_AGE = 300.0


@dataclass(frozen=True, slots=True)
class DialogResult:
    """What a scrape serves for one dialog.

    ``reading`` is the value to expose (``None``: expose no value series), ``fetched_at`` when
    that value was fetched, and ``error`` why this scrape could not fetch it (``up 0``).
    """

    name: str
    reading: Reading | None
    fetched_at: float | None
    error: FetchError | None


@dataclass(frozen=True, slots=True)
class AccountResult:
    """What a scrape serves for one account, and how it was obtained."""

    account: AccountConfig
    dialogs: tuple[DialogResult, ...]
    source: Source
    trace: tuple[str, ...]


@dataclass
class AccountStats:
    """Per-account counters behind the exporter's self-metrics."""

    errors: Counter[Reason] = field(default_factory=Counter)
    cache_hits: int = 0
    cache_misses: int = 0
    last_fetch_duration: float | None = None


class Round:
    """One refresh of an account; outcomes arrive dialog by dialog while it runs.

    ``delivered`` says whether a scrape has been served the finished refresh; until one has,
    the refresh's results are the freshest answer the provider gave, not a cache.
    """

    def __init__(self, started_at: float) -> None:
        self.started_at = started_at
        self.finished_at: float | None = None
        self.delivered = False
        self.outcomes: dict[str, Outcome] = {}
        self.trace: list[str] = []
        self.task: asyncio.Task[None] | None = None

    @property
    def done(self) -> bool:
        return self.task is None or self.task.done()

    def has_undelivered_results(self, now: float) -> bool:
        """Whether it finished after its scrapes gave up, recently, with a value to serve."""
        return (
            not self.delivered
            and self.finished_at is not None
            and now - self.finished_at < LATE_RESULTS_MAX_AGE
            and any(isinstance(outcome, Reading) for outcome in self.outcomes.values())
        )

    async def wait(self, seconds: float) -> None:
        """Wait for the refresh to finish, at most ``seconds`` (it keeps running after)."""
        if self.task is not None and not self.task.done():
            await asyncio.wait({self.task}, timeout=max(seconds, 0.0))


class AccountRuntime:
    """One account's fetcher, HTTP state, cache and statistics; lives until its config changes."""

    def __init__(
        self,
        account: AccountConfig,
        provider: Provider[Any],
        pool: UpstreamPool,
        clock: Clock = time.time,
    ) -> None:
        self.account = account
        self.upstream = Upstream(pool, account, clock)
        self.fetcher: AccountFetcher = provider.make_fetcher(account, self.upstream)
        self.stats = AccountStats()
        self._clock = clock
        self._last_round: Round | None = None
        self._last_good: dict[str, tuple[Reading, float]] = {}

    @property
    def last_round(self) -> Round | None:
        """The newest refresh, finished or not (for the landing page)."""
        return self._last_round

    @property
    def refresh_in_flight(self) -> asyncio.Task[None] | None:
        """The refresh still running, if any (a retired runtime lives until it ends)."""
        current = self._last_round
        return None if current is None or current.done else current.task

    async def observe(self, wait_seconds: float) -> AccountResult:
        """This scrape's view of the account, waiting at most ``wait_seconds``."""
        now = self._clock()
        current = self._last_round
        source: Source
        if current is None:
            source, current = "fresh", self._start_round(now)
        elif not current.done:
            source = "shared"
        elif current.has_undelivered_results(now):
            source = "late"
        elif now - current.started_at < self.account.cache_ttl:
            source = "cache"
        elif self.upstream.budget is not None and not self.upstream.budget.allows_refresh(now):
            source = "budget"
        else:
            source, current = "fresh", self._start_round(now)
        if source == "fresh":
            self.stats.cache_misses += 1
        else:
            self.stats.cache_hits += 1
        await current.wait(wait_seconds)
        if current.done:
            current.delivered = True
        return AccountResult(
            account=self.account,
            dialogs=tuple(self._dialog_result(d.name, current) for d in self.account.dialogs),
            source=source,
            trace=tuple(current.trace),
        )

    def _dialog_result(self, name: str, current: Round) -> DialogResult:
        outcome = current.outcomes.get(name)
        if outcome is None:
            outcome = FetchError(Reason.TIMEOUT, "not back before the scrape deadline")
            self._count_error(name, outcome)
        good = self._last_good.get(name)
        if isinstance(outcome, Reading):
            assert good is not None
            return DialogResult(name, outcome, good[1], None)
        # The last refresh failed: up 0, whatever the source (budget pacing included); an
        # older value is shown with it only while cache_ttl says it is still fresh.
        if good is not None and self._clock() - good[1] < self.account.cache_ttl:
            return DialogResult(name, good[0], good[1], outcome)
        return DialogResult(name, None, None, outcome)

    def _start_round(self, now: float) -> Round:
        round_ = Round(started_at=now)
        if self.upstream.budget is not None:
            self.upstream.budget.refresh_started(now)
        round_.task = asyncio.create_task(self._run(round_), name=f"fetch {self.account.name}")
        self._last_round = round_
        return round_

    async def _run(self, round_: Round) -> None:
        self.upstream.start_round()
        round_.trace = self.upstream.trace
        started = time.perf_counter()

        def record(dialog: str, outcome: Outcome) -> None:
            if isinstance(outcome, Reading):
                outcome = _checked(outcome)
            if isinstance(outcome, Reading):
                self._last_good[dialog] = (outcome, self._clock())
            else:
                # Redacted and escaped once here, so logs, the landing page and probe debug
                # output can show details as they are, whatever body text a provider sent.
                detail = escape_controls(self.upstream.redact(outcome.detail))
                outcome = FetchError(outcome.reason, detail)
                self._count_error(dialog, outcome)
            round_.outcomes[dialog] = outcome

        def record_missing(error: FetchError) -> None:
            for dialog in self.account.dialogs:
                if dialog.name not in round_.outcomes:
                    record(dialog.name, error)

        limit = ROUND_LIMIT_TIMEOUTS * self.account.timeout
        try:
            async with asyncio.timeout(limit):
                await self.fetcher.fetch(self.account.dialogs, record)
        except TimeoutError:  # many slow pages or retries: give up so the next scrape retries
            record_missing(FetchError(Reason.TIMEOUT, f"refresh exceeded {limit:g}s"))
        except Exception:  # a provider bug must not take other dialogs or the scrape down
            log.exception("fetch failed unexpectedly account=%s", self.account.name)
            record_missing(FetchError(Reason.BAD_RESPONSE, "internal error"))
        finally:
            round_.finished_at = self._clock()
            self.stats.last_fetch_duration = time.perf_counter() - started
            if self.upstream.budget is not None:
                self.upstream.budget.refresh_finished(self.upstream.requests_this_round)

    def _count_error(self, dialog: str, error: FetchError) -> None:
        self.stats.errors[error.reason] += 1
        log.warning(
            "fetch failed",
            extra={
                "provider": self.account.provider,
                "account": self.account.name,
                "dialog": dialog,
                "reason": str(error.reason),
                "detail": error.detail,
            },
        )

    def note_joined_scrape(self) -> None:
        """Count a scrape served by another scrape's results as a cache hit."""
        self.stats.cache_hits += 1

    async def cancel(self) -> None:
        """Stop a refresh still in flight (shutdown)."""
        current = self._last_round
        if current is not None and current.task is not None and not current.task.done():
            current.task.cancel()
            await asyncio.gather(current.task, return_exceptions=True)


def _checked(reading: Reading) -> Outcome:
    """The reading, or ``bad_response`` if a value is not a finite float.

    Exposition writes every value as a float: one that overflows (a 400-digit count) or is
    NaN or infinite must fail its own dialog here, not the rendering of the whole scrape.
    """
    for item in fields(reading):
        value = getattr(reading, item.name)
        if value is None:
            continue
        try:
            finite = math.isfinite(float(value))
        except (OverflowError, TypeError, ValueError):
            finite = False
        if not finite:
            return FetchError(Reason.BAD_RESPONSE, f"{item.name} is not a finite number")
    return reading


async def observe_all(
    runtimes: Sequence[AccountRuntime], wait_seconds: float
) -> list[AccountResult]:
    """Every selected account's view, concurrently, all within one deadline."""
    deadline = time.monotonic() + wait_seconds
    return list(await asyncio.gather(*(rt.observe(deadline - time.monotonic()) for rt in runtimes)))
