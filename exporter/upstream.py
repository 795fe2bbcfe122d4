"""HTTP to one account's provider: the only place that talks to upstream APIs.

Everything providers would otherwise each re-implement lives here once: the concurrency bound,
the per-request timeout, a cap on how much of a body is read, classification of failures into
the fixed ``reason`` set, reading rate-limit headers and back-off hints, redaction, and one
trace line per request. Providers only build requests and read the decoded JSON.

This module keeps no account state. Each request is reported, whatever came of it, to the
account's :class:`RequestLedger` (the account's runtime), which keeps the counters, the daily
budget and the rate-limit back-off, and which is asked before each request whether the account
may call now. How an error body reads is the provider's (``exporter.envelope``).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import logging
import resource
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC
from typing import Any, Protocol

import aiohttp
from aiohttp import hdrs
from multidict import CIMultiDictProxy
from yarl import URL

from exporter.envelope import (
    COMMON_ENVELOPE,
    Envelope,
    ErrorMessages,
    common_error_messages,
    non_negative_number,
)
from exporter.memory.heap import HeapTrimmer
from exporter.models import AccountConfig
from exporter.outcome import FetchError, Reason
from exporter.redaction import Redactor

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 8 * 1024 * 1024
DEFAULT_RATE_LIMIT_BACKOFF = 60.0
MAX_RATE_LIMIT_BACKOFF = 86400.0
RATE_LIMIT_STATUSES = frozenset({420, 429})  # Crisp answers 420 "Enhance Your Calm" too
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


@dataclass(frozen=True, slots=True)
class RequestNote:
    """What one request sent to the provider came to, for the account's ledger to apply.

    ``status`` is 0 when no HTTP answer came (timeout, connection failure, cut off); ``trace``
    is the request's redacted debug line. ``remaining`` and ``reset_at`` are what the
    rate-limit headers said, ``retry_at`` the back-off a rate-limit answer asked for.
    """

    sent_at: float
    status: int
    trace: str
    remaining: float | None = None
    reset_at: float | None = None
    retry_at: float | None = None

    @property
    def status_class(self) -> str:
        """``2xx``..``5xx``, or ``error`` for a request that got no HTTP answer, or one whose
        status is none HTTP defines for an answer (999, say): the label's set stays fixed."""
        return f"{self.status // 100}xx" if is_http_status(self.status) else "error"


def is_http_status(status: int) -> bool:
    """Whether ``status`` is one of HTTP's final answers (200..599; 1xx are never final)."""
    return 200 <= status <= 599


class RequestLedger(Protocol):
    """Where an account's requests are admitted and accounted for (its runtime)."""

    def admit(self, now: float) -> None:
        """Raise FetchError when the account must not call its provider now (a back-off)."""

    def on_request(self, note: RequestNote) -> None:
        """Account for one request sent, once, whatever came of it."""


class Unaccounted:
    """A ledger that admits every request and keeps nothing.

    For a provider's own tests, which exercise its requests without an exporter around it.
    """

    def admit(self, now: float) -> None:
        """Every request may go."""

    def on_request(self, note: RequestNote) -> None:
        """Nothing is kept."""


UNACCOUNTED = Unaccounted()


def _epoch_or_delta(value: float, now: float) -> float:
    """Interpret a reset header as epoch milliseconds, epoch seconds or seconds from now."""
    if value > 1e11:
        return value / 1000.0
    if value > 1e9:
        return value
    return now + value


def _header_number(
    headers: CIMultiDictProxy[str], name: str, pick: Callable[[list[float]], float]
) -> float | None:
    """A rate-limit header's number, ``pick`` (min or max) of all it says, or None.

    A header sent twice may arrive as two fields or as one joined with commas (``10, 10``, as
    proxies fold duplicates): every value counts, and ``pick`` keeps the most cautious one
    (the fewest requests remaining, the latest reset). Values that are junk are skipped.
    """
    if name not in headers:
        return None  # most answers carry no rate-limit header: asked twice per request
    parts = (part for raw in headers.getall(name) for part in raw.split(","))
    numbers = [n for part in parts if (n := non_negative_number(part)) is not None]
    return pick(numbers) if numbers else None


def _remaining(headers: CIMultiDictProxy[str]) -> float | None:
    """Requests left in the window: ``X-RateLimit-Remaining``, or Zendesk's
    ``X-Rate-Limit-Remaining``; the fewer where both are sent."""
    found = [
        number
        for name in ("X-RateLimit-Remaining", "X-Rate-Limit-Remaining")
        if (number := _header_number(headers, name, min)) is not None
    ]
    return min(found) if found else None


def _http_date(text: str) -> float | None:
    """An HTTP-date (``Retry-After: Wed, 21 Oct 2015 07:28:00 GMT``) as unix time, or None."""
    try:
        parsed = email.utils.parsedate_to_datetime(text)
        if parsed.tzinfo is None:  # "-0000" parses without a zone; HTTP dates are GMT
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.timestamp()
    except (TypeError, ValueError, IndexError, OverflowError, OSError):
        return None


def retry_at_from(headers: CIMultiDictProxy[str], hint: float | None, now: float) -> float:
    """When a rate-limited account may be called again, from whatever the provider sent.

    Headers first, then ``hint``, the seconds the provider's body asked for (its
    ``retry_after`` hook). A value that cannot be read is skipped, so junk falls through to the
    next hint and in the end to the default back-off: a 429 always holds the account off for a
    while.
    """
    seconds = _header_number(headers, "Retry-After", max)
    if seconds is not None:
        return now + seconds
    retry_after = headers.get("Retry-After")
    if retry_after is not None:
        date = _http_date(retry_after)  # a date has a comma of its own: never split
        if date is not None:
            return max(date, now)
    for name in ("X-RateLimit-RetryAfter", "X-RateLimit-Reset"):
        number = _header_number(headers, name, max)
        if number is not None:
            return _epoch_or_delta(number, now)
    return now + (DEFAULT_RATE_LIMIT_BACKOFF if hint is None else hint)


def decode_json(raw: bytes) -> Any:
    """A body's JSON; ValueError when it is not JSON this process can decode.

    That includes a body nested deeper than the interpreter's recursion limit (``[[[[...``),
    which ``json`` refuses with RecursionError: junk like any other, never a crash that skips
    the request's accounting.
    """
    try:
        return json.loads(raw)
    except RecursionError:
        raise ValueError("JSON nested too deeply to decode") from None


def describe_error_body(
    raw: bytes,
    error_messages: ErrorMessages = common_error_messages,
    redact: Callable[[str], str] = str,
) -> str:
    """One short, redacted line from a provider's error body, read with its ``error_messages``.

    ``redact`` runs before the line is shortened: cutting first could leave the head of a
    credential that the provider echoed, which redaction would then no longer recognise.
    A body that is not JSON, or from which the provider reads no message, is summarised.
    """
    try:
        body = decode_json(raw)
    except ValueError:
        text = redact(raw[:4096].decode("utf-8", "replace")).strip().replace("\n", " ")
        return f"non-JSON body: {text[:80]!r}" if text else "empty body"
    if not isinstance(body, dict):
        return f"body: {redact(str(body))[:120]}"
    parts = error_messages(body)
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

    The session keeps no cookies: shared, its jar sent a cookie one account's upstream set
    with every other account's requests to that host. No provider's API needs one (each
    authenticates by header), so no jar at all beats one per account: nothing an upstream
    sets can reach a later request, not even the same account's.
    """

    def __init__(self, limit: int, headers: Mapping[str, str]) -> None:
        self.limit = limit
        self._slots = asyncio.Semaphore(limit)
        self.heap = HeapTrimmer()  # large bodies read through the pool hand their pages back
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=limit, ttl_dns_cache=300),
            headers=dict(headers),
            cookie_jar=aiohttp.DummyCookieJar(),
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
        self.heap.close()
        await self.session.close()


class Upstream:
    """One account's view of the shared HTTP session; every request is reported to ``ledger``.

    ``envelope`` reads the provider's error bodies: the account's ``Provider`` (its
    ``error_messages`` and ``retry_after`` hooks); the default reads the common shapes.
    """

    def __init__(
        self,
        pool: UpstreamPool,
        account: AccountConfig,
        ledger: RequestLedger = UNACCOUNTED,
        *,
        envelope: Envelope = COMMON_ENVELOPE,
        clock: Clock = time.time,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self._pool = pool
        self._ledger = ledger
        self._error_messages = envelope.error_messages
        self._retry_after = envelope.retry_after
        self.max_concurrency = account.max_concurrency
        self._semaphore = asyncio.Semaphore(account.max_concurrency)
        self._timeout = aiohttp.ClientTimeout(total=account.timeout)
        self._timeout_seconds = account.timeout
        self.redactor = Redactor(account.secret_values())
        self._clock = clock
        self._max_body_bytes = max_body_bytes

    def now(self) -> float:
        """The account's wall clock (injectable), for providers that track expiry times."""
        return self._clock()

    def add_secret(self, secret: str) -> None:
        """Redact a credential obtained at run time (a session token the exporter created)
        from now on, as configured ones are: a provider may echo it in an error body."""
        self.redactor.obtained(secret)

    def redact(self, text: str) -> str:
        """Remove every credential (configured, derived, obtained) from text bound for people."""
        return self.redactor.redact(text)

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
        The ledger is told of every request sent, also one cut off by cancellation: it was
        sent, so it counts against the budget.
        """
        self._ledger.admit(self._clock())
        # The URL as sent, query included, built once: aiohttp would parse and extend it anyway,
        # and the trace shows it as it went out.
        target = URL(url).extend_query(params) if params else URL(url)
        shown = str(target)
        async with self._semaphore, self._pool.connection(self._timeout_seconds):
            sent_at, started = self._clock(), time.perf_counter()
            answer: tuple[int, CIMultiDictProxy[str], bytes] | None = None
            failure = ""
            try:
                answer = await self._exchange(method, target, headers, form, json_body)
            except TimeoutError:
                failure = "timeout"
                raise FetchError(
                    Reason.TIMEOUT, f"no answer within {self._timeout_seconds:g}s"
                ) from None
            except FetchError:
                failure = "body too large"
                raise
            except aiohttp.ClientError as exc:
                failure = type(exc).__name__
                raise FetchError(
                    Reason.CONNECTION, self.redact(f"{type(exc).__name__}: {exc}")[:200]
                ) from None
            except BaseException as exc:  # cancelled (round limit, shutdown) after sending
                failure = type(exc).__name__
                raise
            finally:
                if answer is None:
                    trace = self._trace(method, shown, failure, started)
                    self._ledger.on_request(RequestNote(sent_at, 0, trace))
            status, resp_headers, raw = answer
            trace = self._trace(method, shown, str(status), started)
            retry_at: float | None = None
            try:
                outcome, retry_at = self._outcome(status, resp_headers, raw, refine)
            finally:  # an answer that breaks its reading was still sent: it counts all the same
                self._ledger.on_request(
                    RequestNote(
                        sent_at,
                        status,
                        trace,
                        remaining=_remaining(resp_headers),
                        reset_at=self._reset_at(resp_headers),
                        retry_at=retry_at,
                    )
                )
        if isinstance(outcome, FetchError):
            raise outcome
        return outcome

    async def _exchange(
        self,
        method: str,
        url: URL,
        headers: Mapping[str, str] | None,
        form: Mapping[str, str] | None,
        json_body: Any,
    ) -> tuple[int, CIMultiDictProxy[str], bytes]:
        """Send the request and read its answer: status, headers and the (capped) body."""
        async with self._pool.session.request(
            method,
            url,
            headers=headers,
            data=form,
            json=json_body,
            timeout=self._timeout,
            allow_redirects=False,
        ) as resp:
            return resp.status, resp.headers, await self._read_capped(resp)

    async def _read_capped(self, resp: aiohttp.ClientResponse) -> bytes:
        """Read at most the cap; a larger body is refused, never buffered whole.

        The cap is on the body as decoded: a gzip, deflate, br or zstd answer's Content-Length
        is its compressed size, which says nothing of what it inflates to (1,000 times more
        for gzip), so only a body sent as is may be read in one call by its declared length.
        aiohttp (3.13.4 on) inflates a bounded step at a time as chunks are read, so counting them
        stops a compressed body at the cap too.
        """
        declared = resp.content_length
        if declared is not None and declared > self._max_body_bytes:
            raise FetchError(
                Reason.BAD_RESPONSE, f"body of {declared} bytes exceeds {self._max_body_bytes}"
            )
        encoding = resp.headers.get(hdrs.CONTENT_ENCODING, "").strip().lower()
        if declared is not None and encoding in ("", "identity"):
            raw = await resp.read()  # exactly the declared length, in one call
            self._pool.heap.body_read(len(raw))
            return raw
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in resp.content.iter_chunked(64 * 1024):
                size += len(chunk)
                if size > self._max_body_bytes:
                    decoded = f" once {encoding}-decoded" if encoding else ""
                    raise FetchError(
                        Reason.BAD_RESPONSE, f"body exceeds {self._max_body_bytes} bytes{decoded}"
                    )
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            self._pool.heap.body_read(size)

    def _trace(self, method: str, url: str, outcome: str, started: float) -> str:
        elapsed_ms = (time.perf_counter() - started) * 1000
        return self.redact(f"{method} {url} -> {outcome} in {elapsed_ms:.1f} ms")

    def _reset_at(self, headers: CIMultiDictProxy[str]) -> float | None:
        reset = _header_number(headers, "X-RateLimit-Reset", max)
        return None if reset is None else _epoch_or_delta(reset, self._clock())

    def _outcome(
        self,
        status: int,
        headers: CIMultiDictProxy[str],
        raw: bytes,
        refine: ReasonRefiner | None,
    ) -> tuple[Response | FetchError, float | None]:
        """The decoded answer or its classified failure, and the back-off a rate limit asks."""
        if 200 <= status < 300:
            try:
                return Response(status, decode_json(raw), headers), None
            except ValueError:
                preview = describe_error_body(raw, self._error_messages, self.redact)
                return FetchError(Reason.BAD_RESPONSE, f"HTTP {status} {preview}"), None
        detail = f"HTTP {status}: {describe_error_body(raw, self._error_messages, self.redact)}"
        try:
            body = decode_json(raw)
        except ValueError:
            body = None
        reason = refine(status, body) if refine is not None else None
        if status in RATE_LIMIT_STATUSES or reason is Reason.RATE_LIMITED:
            now = self._clock()
            retry_at = retry_at_from(headers, self._retry_after(body), now)
            retry_at = min(retry_at, now + MAX_RATE_LIMIT_BACKOFF)
            error = FetchError(Reason.RATE_LIMITED, f"{detail} (retry in {retry_at - now:.0f}s)")
            return error, retry_at
        return _classified(status, reason, detail), None


def _classified(status: int, reason: Reason | None, detail: str) -> FetchError:
    """A non-2xx answer's failure: the provider's reason if it named one, else the status's."""
    if reason is not None:
        return FetchError(reason, detail)
    if not is_http_status(status):
        return FetchError(Reason.BAD_RESPONSE, f"not an HTTP status: {detail}")
    if status < 400:
        return FetchError(Reason.BAD_RESPONSE, f"unexpected redirect: {detail}")
    if status in (401, 403):
        return FetchError(Reason.AUTH, detail)
    if status == 404:
        return FetchError(Reason.NOT_FOUND, detail)
    if status >= 500:
        return FetchError(Reason.HTTP_5XX, detail)
    return FetchError(Reason.HTTP_4XX, detail)
