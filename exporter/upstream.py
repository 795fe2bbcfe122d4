"""HTTP to one account's provider: the only place that talks to upstream APIs.

Everything providers would otherwise each re-implement lives here once: the concurrency bound,
the per-request timeout, a cap on how much of a body is read, classification of failures into
the fixed ``reason`` set, rate-limit headers and back-off, the daily budget ledger, request
counting and the debug trace. Providers only build requests and read the decoded JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import logging
import math
import resource
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

import aiohttp
from multidict import CIMultiDictProxy

from exporter.budget import DailyBudget
from exporter.models import AccountConfig
from exporter.outcome import FetchError, Reason

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 8 * 1024 * 1024
DEFAULT_RATE_LIMIT_BACKOFF = 60.0
MAX_RATE_LIMIT_BACKOFF = 86400.0
RATE_LIMIT_STATUSES = frozenset({420, 429})  # Crisp answers 420 "Enhance Your Calm" too
# Shorter strings would redact innocent text (and say which characters a credential has).
MIN_SECRET_LENGTH = 4
# Run-time credentials remembered for redaction: a renewed session token replaces the last
# one, but an answer in flight may still echo the previous few.
RUNTIME_SECRETS_KEPT = 8
# Open files left for the HTTP server's connections, config and secret files, and idle
# keep-alive connections: upstream requests in flight may use the other half.
UPSTREAM_SHARE_OF_OPEN_FILES = 0.5

Clock = Callable[[], float]
Params = Mapping[str, str] | Sequence[tuple[str, str]]
ReasonRefiner = Callable[[int, Any], Reason | None]


@dataclass(frozen=True)
class Response:
    """A successful (2xx) upstream answer with its JSON already decoded."""

    status: int
    body: Any
    headers: CIMultiDictProxy[str]


@dataclass
class RateLimitState:
    """What the provider told us about its rate limit, and until when we hold off."""

    remaining: float | None = None
    reset_at: float | None = None
    blocked_until: float = 0.0


@dataclass
class UpstreamStats:
    """Counters behind the exporter's self-metrics for one account."""

    requests_by_status_class: Counter[str] = field(default_factory=Counter)


def _epoch_or_delta(value: float, now: float) -> float:
    """Interpret a reset header as epoch milliseconds, epoch seconds or seconds from now."""
    if value > 1e11:
        return value / 1000.0
    if value > 1e9:
        return value
    return now + value


def non_negative_number(value: object) -> float | None:
    """A header or JSON value as a finite number >= 0, or None when it is anything else.

    Every rate-limit figure (remaining requests, seconds to wait, a reset time) is such a
    number; "soon", "nan", "inf", "-5" or an integer too large for a float is junk that must
    not reach a gauge or a back-off computation.
    """
    if isinstance(value, str):
        try:
            value = float(value.split(";", 1)[0].strip())
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def _header_number(headers: Mapping[str, str], name: str) -> float | None:
    raw = headers.get(name)
    return None if raw is None else non_negative_number(raw)


def _http_date(text: str) -> float | None:
    """An HTTP-date (``Retry-After: Wed, 21 Oct 2015 07:28:00 GMT``) as unix time, or None."""
    try:
        parsed = email.utils.parsedate_to_datetime(text)
        if parsed.tzinfo is None:  # "-0000" parses without a zone; HTTP dates are GMT
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.timestamp()
    except (TypeError, ValueError, IndexError, OverflowError, OSError):
        return None


def retry_at_from(headers: Mapping[str, str], body: Any, now: float) -> float:
    """When a rate-limited account may be called again, from whatever the provider sent.

    A value that cannot be read is skipped, so junk falls through to the next hint and in the
    end to the default back-off: a 429 always holds the account off for a while.
    """
    retry_after = headers.get("Retry-After")
    if retry_after is not None:
        seconds = non_negative_number(retry_after)
        if seconds is not None:
            return now + seconds
        date = _http_date(retry_after)
        if date is not None:
            return max(date, now)
    for name in ("X-RateLimit-RetryAfter", "X-RateLimit-Reset"):
        number = _header_number(headers, name)
        if number is not None:
            return _epoch_or_delta(number, now)
    if not isinstance(body, dict):
        return now + DEFAULT_RATE_LIMIT_BACKOFF
    seconds = non_negative_number(body.get("retryAfter"))
    milliseconds = non_negative_number(body.get("retry_after_ms"))  # Matrix M_LIMIT_EXCEEDED
    if seconds is None and milliseconds is not None:
        seconds = milliseconds / 1000.0
    return now + (DEFAULT_RATE_LIMIT_BACKOFF if seconds is None else seconds)


def describe_error_body(raw: bytes, redact: Callable[[str], str] = str) -> str:
    """One short, redacted line from a provider's error body, whatever its envelope.

    ``redact`` runs before the line is shortened: cutting first could leave the head of a
    credential that the provider echoed, which redaction would then no longer recognise.

    Crisp ``{"reason", "data": {"message"}}``, QuickBlox ``{"errors": [...]}`` or
    ``{"errors": {"base": [...]}}``, IMKit ``{"RM", "error": {"code", "message"}}``, Sendbird
    ``{"code", "message"}`` and Matrix ``{"errcode", "error"}`` are all recognised; anything
    else is summarised.
    """
    try:
        body = json.loads(raw)
    except ValueError:
        text = redact(raw[:4096].decode("utf-8", "replace")).strip().replace("\n", " ")
        return f"non-JSON body: {text[:80]!r}" if text else "empty body"
    if not isinstance(body, dict):
        return f"body: {redact(str(body))[:120]}"
    parts: list[str] = []
    errors = body.get("errors")
    if isinstance(errors, dict):
        errors = [msg for messages in errors.values() for msg in (messages or [])]
    if isinstance(errors, list):
        parts.extend(str(e) for e in errors)
    error = body.get("error")
    if isinstance(error, dict):
        parts.extend(str(error[k]) for k in ("code", "message") if k in error)
    elif isinstance(error, str):
        parts.append(error)
    for key in ("reason", "code", "errcode", "message", "RM"):
        if key in body and not isinstance(body[key], dict | list):
            parts.append(str(body[key]))
    data = body.get("data")
    if isinstance(data, dict) and "message" in data:
        parts.append(str(data["message"]))
    return redact("; ".join(dict.fromkeys(parts)))[:200] or "error body without a message"


def default_connection_limit() -> int:
    """Upstream connections allowed at once: a share of this process's open-file limit.

    Each request in flight holds a socket, that is a file descriptor. Unbounded, enough
    accounts exhaust the limit, and then upstream requests, the HTTP server's own connections
    and config reloads all fail with "Too many open files" at random.
    """
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 2**16
    return max(1, int(soft * UPSTREAM_SHARE_OF_OPEN_FILES))


class UpstreamPool:
    """The HTTP session every account shares, and the exporter-wide bound on its connections.

    The bound is a semaphore taken around each request (besides the connector's own limit) so
    that a request that waits too long for a free connection fails with that reason, instead
    of a timeout that blames the provider.
    """

    def __init__(self, limit: int, headers: Mapping[str, str]) -> None:
        self.limit = limit
        self._slots = asyncio.Semaphore(limit)
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=limit, ttl_dns_cache=300),
            headers=dict(headers),
            raise_for_status=False,
        )

    @contextlib.asynccontextmanager
    async def connection(self, wait: float) -> AsyncIterator[None]:
        """Hold one of the ``limit`` connections; raise FetchError after ``wait`` seconds.

        Only a wait for a free slot arms a timer: a free one is taken at once, and a timer per
        request is a measurable share of a scrape's CPU (issue 10).
        """
        if self._slots.locked():
            try:
                async with asyncio.timeout(wait):
                    await self._slots.acquire()
            except TimeoutError:
                raise FetchError(
                    Reason.TIMEOUT,
                    f"all {self.limit} upstream connections (the exporter-wide bound, from the "
                    f"open-file limit) stayed busy for {wait:g}s",
                ) from None
        else:
            await self._slots.acquire()
        try:
            yield
        finally:
            self._slots.release()

    async def close(self) -> None:
        await self.session.close()


class Upstream:
    """One account's view of the shared HTTP session."""

    def __init__(
        self,
        pool: UpstreamPool,
        account: AccountConfig,
        clock: Clock = time.time,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self._pool = pool
        self.max_concurrency = account.max_concurrency
        self._semaphore = asyncio.Semaphore(account.max_concurrency)
        self._timeout = aiohttp.ClientTimeout(total=account.timeout)
        self._timeout_seconds = account.timeout
        self._secrets = [s for s in account.secret_values() if len(s) >= MIN_SECRET_LENGTH]
        self._obtained_secrets: deque[str] = deque(maxlen=RUNTIME_SECRETS_KEPT)
        self._clock = clock
        self._max_body_bytes = max_body_bytes
        self.stats = UpstreamStats()
        self.rate_limit = RateLimitState()
        self.budget = (
            DailyBudget(account.daily_request_budget) if account.daily_request_budget else None
        )
        self.requests_this_round = 0
        self.trace: list[str] = []

    def now(self) -> float:
        """The account's wall clock (injectable), for providers that track expiry times."""
        return self._clock()

    def add_secret(self, secret: str) -> None:
        """Redact a credential obtained at run time (a session token the exporter created)
        from now on, as configured ones are: a provider may echo it in an error body."""
        if len(secret) >= MIN_SECRET_LENGTH and secret not in self._obtained_secrets:
            self._obtained_secrets.append(secret)

    def redact(self, text: str) -> str:
        """Remove every credential, configured or obtained, from text bound for logs or pages."""
        for secret in (*self._secrets, *self._obtained_secrets):
            text = text.replace(secret, "<redacted>")
        return text

    def start_round(self) -> None:
        """Reset the per-refresh request count and trace."""
        self.requests_this_round = 0
        self.trace = []

    async def request(
        self,
        method: str,
        url: str,
        *,
        params: Params | None = None,
        headers: Mapping[str, str] | None = None,
        form: Mapping[str, str] | None = None,
        json_body: Any = None,
        refine: ReasonRefiner | None = None,
    ) -> Response:
        """Make one request; return the decoded 2xx JSON or raise a classified FetchError.

        ``refine`` lets a provider whose error codes live in the body (Sendbird answers 400 for
        "user not found" and for a bad token) pick the reason; ``None`` keeps the status's.
        """
        now = self._clock()
        if self.rate_limit.blocked_until > now:
            wait = self.rate_limit.blocked_until - now
            raise FetchError(Reason.RATE_LIMITED, f"holding off for {wait:.0f}s after a 429")
        async with self._semaphore, self._pool.connection(self._timeout_seconds):
            started = time.perf_counter()
            self.requests_this_round += 1
            if self.budget is not None:
                self.budget.spend(self._clock())
            try:
                async with self._pool.session.request(
                    method,
                    url,
                    params=params,
                    headers=headers,
                    data=form,
                    json=json_body,
                    timeout=self._timeout,
                    allow_redirects=False,
                ) as resp:
                    raw = await self._read_capped(resp)
                    status, resp_headers = resp.status, resp.headers
            except TimeoutError:
                self._note(method, url, started, failure="timeout")
                raise FetchError(
                    Reason.TIMEOUT, f"no answer within {self._timeout_seconds:g}s"
                ) from None
            except FetchError:
                self._note(method, url, started, failure="body too large")
                raise
            except aiohttp.ClientError as exc:
                self._note(method, url, started, failure=type(exc).__name__)
                raise FetchError(
                    Reason.CONNECTION, self.redact(f"{type(exc).__name__}: {exc}")[:200]
                ) from None
        self._note(method, url, started, status=status)
        self._read_rate_limit_headers(resp_headers)
        if status >= 300:
            raise self._http_error(status, resp_headers, raw, refine)
        try:
            body = json.loads(raw)
        except ValueError:
            preview = describe_error_body(raw, self.redact)
            raise FetchError(Reason.BAD_RESPONSE, f"HTTP {status} {preview}") from None
        return Response(status, body, resp_headers)

    async def _read_capped(self, resp: aiohttp.ClientResponse) -> bytes:
        """Read at most the cap; a larger body is refused, never buffered whole."""
        declared = resp.content_length
        if declared is not None and declared > self._max_body_bytes:
            raise FetchError(
                Reason.BAD_RESPONSE, f"body of {declared} bytes exceeds {self._max_body_bytes}"
            )
        if declared is not None:  # aiohttp reads exactly the declared length, in one call
            return await resp.read()
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > self._max_body_bytes:
                raise FetchError(Reason.BAD_RESPONSE, f"body exceeds {self._max_body_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def _note(
        self, method: str, url: str, started: float, status: int = 0, failure: str = ""
    ) -> None:
        """Count the request by status class ("error": no HTTP answer) and trace it."""
        self.stats.requests_by_status_class[f"{status // 100}xx" if status else "error"] += 1
        elapsed_ms = (time.perf_counter() - started) * 1000
        outcome = str(status) if status else failure
        self.trace.append(self.redact(f"{method} {url} -> {outcome} in {elapsed_ms:.1f} ms"))

    def _read_rate_limit_headers(self, headers: Mapping[str, str]) -> None:
        remaining = _header_number(headers, "X-RateLimit-Remaining")
        if remaining is not None:
            self.rate_limit.remaining = remaining
        reset = _header_number(headers, "X-RateLimit-Reset")
        if reset is not None:
            self.rate_limit.reset_at = _epoch_or_delta(reset, self._clock())

    def _http_error(
        self, status: int, headers: Mapping[str, str], raw: bytes, refine: ReasonRefiner | None
    ) -> FetchError:
        detail = f"HTTP {status}: {describe_error_body(raw, self.redact)}"
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        reason = refine(status, body) if refine is not None else None
        if status in RATE_LIMIT_STATUSES or reason is Reason.RATE_LIMITED:
            now = self._clock()
            retry_at = min(retry_at_from(headers, body, now), now + MAX_RATE_LIMIT_BACKOFF)
            self.rate_limit.blocked_until = retry_at
            self.rate_limit.reset_at = retry_at
            return FetchError(Reason.RATE_LIMITED, f"{detail} (retry in {retry_at - now:.0f}s)")
        if reason is not None:
            return FetchError(reason, detail)
        if status < 400:
            return FetchError(Reason.BAD_RESPONSE, f"unexpected redirect: {detail}")
        if status in (401, 403):
            return FetchError(Reason.AUTH, detail)
        if status == 404:
            return FetchError(Reason.NOT_FOUND, detail)
        if status >= 500:
            return FetchError(Reason.HTTP_5XX, detail)
        return FetchError(Reason.HTTP_4XX, detail)
