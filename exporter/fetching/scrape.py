"""Fetching: when to call upstream, and what each scrape is served.

One :class:`AccountRuntime` per configured account owns all of that account's state: its
fetcher, its refreshes (each with its own request count and trace), its last good values, and
the counters, daily budget and rate-limit back-off that every request it makes is reported into
(``upstream`` keeps none). The self-metrics and the landing page read it through one immutable
:class:`AccountSnapshot`. A scrape asks every selected account for a view at once; each account
decides whether to join a refresh already in flight (single-flight: simultaneous scrapes cost
upstream what one costs), serve its last results (``cache_ttl``, daily budget pacing), or start
a new refresh. Waiting is bounded by the scrape's deadline; a refresh that outlives it keeps
running and its results serve the next scrape, even when it has finished by then. A failure is
never hidden behind an older value (``up 1``). Nothing here formats metrics (see ``collector``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Generic, Literal, TypeVar

from exporter.envelope import non_negative_number
from exporter.fetching.budget import DailyBudget
from exporter.fetching.containment import GuardedEnvelope, KnownDialogs, admitted, log_crash
from exporter.logs import escape_controls
from exporter.models import AccountConfig
from exporter.outcome import FetchError, Outcome, Reading, Reason
from exporter.providers.base import AccountFetcher, Provider
from exporter.queues.coverage import coverage_of
from exporter.queues.names import GroupNames
from exporter.queues.tally import split_problem
from exporter.upstream import Clock, RequestNote, Upstream, UpstreamPool

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
    """What a scrape serves for one account, and how it was obtained.

    ``part_of`` maps a dialog to the dialog that already counts its items (from the provider's
    coverage of the config); ``group_names`` holds the groups' looked-up names by dimension.
    """

    account: AccountConfig
    dialogs: tuple[DialogResult, ...]
    source: Source
    trace: tuple[str, ...]
    part_of: Mapping[str, str] = field(default_factory=dict)
    group_names: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


@dataclass
class AccountStats:
    """Per-account counters behind the exporter's self-metrics."""

    errors: Counter[Reason] = field(default_factory=Counter)
    requests_by_status_class: Counter[str] = field(default_factory=Counter)
    cache_hits: int = 0
    cache_misses: int = 0
    last_fetch_duration: float | None = None


@dataclass
class RateLimitState:
    """What the provider told us about its rate limit, and until when we hold off."""

    remaining: float | None = None
    reset_at: float | None = None
    blocked_until: float = 0.0


@dataclass(frozen=True, slots=True)
class BudgetUse:
    """A daily request budget and the requests made in the last 24 hours."""

    allowed: int
    spent: int


@dataclass(frozen=True, slots=True)
class AccountSnapshot:
    """One account's state at one moment, for the self-metrics and the landing page.

    Built by the runtime (:meth:`AccountRuntime.snapshot`) so that readers see one consistent
    moment and never reach into its parts. ``errors`` has every reason; ``budget`` is None
    without a daily budget; ``refresh_started_at`` is None before
    the first refresh, and ``outcomes`` holds the newest refresh's dialogs as far as it got.
    """

    account: AccountConfig
    last_fetch_duration: float | None
    errors: Mapping[Reason, int]
    requests_by_status_class: Mapping[str, int]
    cache_hits: int
    cache_misses: int
    rate_limit_remaining: float | None
    rate_limit_reset_at: float | None
    budget: BudgetUse | None
    refresh_started_at: float | None
    outcomes: Mapping[str, Outcome]


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
        self.requests = 0
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
    """All of one account's state (see the module); lives until the account's config changes.

    It is the account's :class:`~exporter.upstream.RequestLedger`: its ``Upstream`` asks it
    before each request and reports each request to it.
    """

    def __init__(
        self,
        account: AccountConfig,
        provider: Provider[Any],
        pool: UpstreamPool,
        clock: Clock = time.time,
    ) -> None:
        self.account = account
        self.stats = AccountStats()
        self.rate_limit = RateLimitState()
        self.budget = (
            DailyBudget(account.daily_request_budget) if account.daily_request_budget else None
        )
        self._upstream = Upstream(
            pool,
            account,
            self,
            envelope=GuardedEnvelope.of(provider),
            clock=clock,
        )
        self.fetcher: AccountFetcher = provider.make_fetcher(account, self._upstream)
        self.coverage = coverage_of(provider.coverage, account, provider.name)
        self.group_names = GroupNames(
            getattr(self.fetcher, "group_names", None),
            (by for d in account.dialogs if (by := getattr(d, "group_by", None)) is not None),
            clock,
        )
        self._clock = clock
        self._last_round: Round | None = None
        self._last_good: dict[str, tuple[Reading, float]] = {}
        self._known = KnownDialogs(account)

    @property
    def last_round(self) -> Round | None:
        """The newest refresh, finished or not."""
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
        elif self.budget is not None and not self.budget.allows_refresh(now):
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
            part_of=self.coverage.part_of,
            group_names=self.group_names.current(),
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
        if self.budget is not None:
            self.budget.refresh_started(now)
        round_.task = asyncio.create_task(self._run(round_), name=f"fetch {self.account.name}")
        self._last_round = round_
        return round_

    async def _run(self, round_: Round) -> None:
        started = time.perf_counter()

        max_groups = {d.name: getattr(d, "max_groups", None) for d in self.account.dialogs}

        def record(dialog: str, outcome: Outcome) -> None:
            if not self._known.admit(dialog):
                return
            outcome = admitted(outcome)
            if isinstance(outcome, Reading):
                outcome = _checked(outcome, max_groups.get(dialog))
            if isinstance(outcome, Reading):
                self._last_good[dialog] = (outcome, self._clock())
            else:
                # Redacted and escaped once here, so logs, the landing page and probe debug
                # output can show details as they are, whatever body text a provider sent.
                detail = escape_controls(self._upstream.redact(outcome.detail))
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
        except BaseException as exc:  # a provider's bug (SystemExit, say) must stay here
            if isinstance(exc, asyncio.CancelledError) and _cancelled_from_outside():
                raise  # shutdown or a retired config: stop as asked
            log_crash(exc, self.account, self._upstream.redact)
            record_missing(FetchError(Reason.BAD_RESPONSE, f"provider raised {type(exc).__name__}"))
        finally:
            round_.finished_at = self._clock()
            self.stats.last_fetch_duration = time.perf_counter() - started
            if self.budget is not None:
                self.budget.refresh_finished(round_.requests)

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

    def admit(self, now: float) -> None:
        """Refuse a request while the provider's rate limit holds the account off."""
        if self.rate_limit.blocked_until > now:
            wait = self.rate_limit.blocked_until - now
            raise FetchError(Reason.RATE_LIMITED, f"holding off for {wait:.0f}s after a 429")

    def on_request(self, note: RequestNote) -> None:
        """Apply one request to the counters, the budget, the rate limit and its refresh.

        Only one refresh runs at a time, and every request is made within it, so the request
        belongs to the newest refresh.
        """
        self.stats.requests_by_status_class[note.status_class] += 1
        if self.budget is not None:
            self.budget.spend(note.sent_at)
        if self._last_round is not None:
            self._last_round.requests += 1
            self._last_round.trace.append(note.trace)
        if note.remaining is not None:
            self.rate_limit.remaining = note.remaining
        if note.reset_at is not None:
            self.rate_limit.reset_at = note.reset_at
        if note.retry_at is not None:
            self.rate_limit.blocked_until = self.rate_limit.reset_at = note.retry_at

    def snapshot(self) -> AccountSnapshot:
        """The account's state now, as one immutable value."""
        stats, last = self.stats, self._last_round
        return AccountSnapshot(
            account=self.account,
            last_fetch_duration=stats.last_fetch_duration,
            errors=MappingProxyType({reason: stats.errors[reason] for reason in Reason}),
            requests_by_status_class=MappingProxyType(dict(stats.requests_by_status_class)),
            cache_hits=stats.cache_hits,
            cache_misses=stats.cache_misses,
            rate_limit_remaining=self.rate_limit.remaining,
            rate_limit_reset_at=self.rate_limit.reset_at,
            budget=None
            if self.budget is None
            else BudgetUse(self.budget.budget, self.budget.spent(self._clock())),
            refresh_started_at=None if last is None else last.started_at,
            outcomes=MappingProxyType({} if last is None else dict(last.outcomes)),
        )

    async def cancel(self) -> None:
        """Stop a refresh and a name lookup still in flight (shutdown)."""
        await self.group_names.close()
        current = self._last_round
        if current is not None and current.task is not None and not current.task.done():
            current.task.cancel()
            await asyncio.gather(current.task, return_exceptions=True)


def _cancelled_from_outside() -> bool:
    """Whether the running task was asked to stop (not a CancelledError a provider raised)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _checked(reading: Reading, max_groups: int | None = None) -> Outcome:
    """The reading, or ``bad_response`` if a value breaks :func:`_value_problem`'s rules or
    its groups do not add up to it."""
    problem = _value_problem(reading)
    if problem is not None:
        return FetchError(Reason.BAD_RESPONSE, problem)
    problem = split_problem(reading, max_groups)
    if problem is not None:
        return FetchError(Reason.BAD_RESPONSE, f"group_by: {problem}")
    return reading


COUNTS = ("messages", "mentions", "invitations", "conversations")


def _value_problem(reading: Reading) -> str | None:
    """What is wrong with a reading's values, by the rules ``count()`` holds built-ins to.

    A count is an int (not a bool, not text), non-negative and at most 2**53 (exposed as a
    float, a larger one is rounded or overflows); the oldest timestamp a finite number >= 0.
    A plugin builds its ``Reading`` itself, so this is where its -5, "7" or True is refused,
    for its own dialog, rather than served ``up 1`` or failing the whole scrape's rendering.
    """
    for name in COUNTS:
        value = getattr(reading, name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            return f"{name} is a {type(value).__name__}, not an integer"
        if not 0 <= value <= 2**53:
            return f"{name} is not a count from 0 to 2**53"
    oldest = reading.oldest_unread_timestamp
    if oldest is not None and (
        isinstance(oldest, bool | str) or non_negative_number(oldest) is None
    ):
        return "oldest_unread_timestamp is not a finite number >= 0"
    return None


async def observe_all(
    runtimes: Sequence[AccountRuntime], wait_seconds: float
) -> list[AccountResult]:
    """Every selected account's view, concurrently, all within one deadline."""
    deadline = time.monotonic() + wait_seconds
    return list(await asyncio.gather(*(rt.observe(deadline - time.monotonic()) for rt in runtimes)))


T = TypeVar("T")


class SharedScrapes(Generic[T]):
    """Scrapes in flight that a later, identical scrape joins instead of making its own.

    The first scrape under a key runs ``make`` (fetch and render, say); one arriving while it
    runs waits for the same result, and each account it covers counts the join as a cache hit
    (it was served another scrape's results), on the runtimes that scrape actually observed.
    """

    def __init__(self) -> None:
        self._in_flight: dict[str, tuple[asyncio.Task[T], Sequence[AccountRuntime]]] = {}

    async def get(
        self,
        key: str,
        runtimes: Sequence[AccountRuntime],
        make: Callable[[], Coroutine[Any, Any, T]],
    ) -> T:
        """The result of the scrape in flight under ``key``, or of a new one of ``runtimes``."""
        entry = self._in_flight.get(key)
        if entry is None:
            task = asyncio.create_task(make())
            self._in_flight[key] = (task, runtimes)
            task.add_done_callback(lambda _: self._in_flight.pop(key, None))
        else:
            task, joined = entry
            for runtime in joined:
                runtime.note_joined_scrape()
        # Shielded: a scraper that gives up must not cancel the result others wait for.
        return await asyncio.shield(task)
