"""Bounds on the HTTP server's connections, so that slow or idle clients cannot starve it.

aiohttp waits for a request's headers as long as a client takes to send them, and accepts
connections until the process runs out of file descriptors. 800 connections dribbling header
bytes then hold 800 descriptors; at a 1,024 open-file limit ``accept()`` fails, asyncio logs
that failure with a traceback thousands of times a second, and even ``/-/healthy`` goes
unanswered. ``ConnectionGuard`` wraps the protocol aiohttp makes for each connection and:

- gives a connection ``header_timeout`` seconds, from when it opens or finishes a request, to
  deliver a complete request head; a connection that has not is closed. Slow and idle clients
  alike are dropped, whatever aiohttp's keep-alive timer (which in older versions is not armed
  before the first request) does;
- gives a response ``write_timeout`` seconds whenever its output is blocked because the
  client reads nothing (the socket's buffers are full and asyncio pauses the writer); a
  connection still blocked then is closed. Without it, clients that send complete requests
  and never read the answers hold a handler, its body and a slot each for ever;
- does the TLS handshake itself (``loop.start_tls``) after admitting the connection, so a
  connection in its handshake is counted and bounded like one sending its head. Left to
  ``create_server``, asyncio hands a connection to the protocol only once its handshake is
  done: 300 stalled handshakes were never counted and took the process to its file limit;
- keeps at most ``max_connections`` open. At the limit, a new connection takes the place of
  the one that has been idle longest: waiting for a request head (the slow client, a stalled
  handshake, or an idle keep-alive connection that its client reopens on demand) since it
  opened or finished its last request, or with its output blocked (a client that does not
  read its answer) since it blocked. Only when every connection is serving a request and
  writing is the new one refused. So a health check still gets through while slow or
  non-reading clients hold every slot, and a client that has just connected is not the one
  replaced while another has read nothing for seconds: the loop may not have read its head
  yet (before, with every other slot held by non-reading clients, each new scrape or health
  check was cut off by the next client to connect).

A connection counts as serving from the moment its request reaches the app (the head is
complete) until the handler returns; the guard learns both from a middleware it installs.

``RepeatedLogFilter`` keeps asyncio and aiohttp from filling the log with a traceback per
malformed request, or per failed ``accept()`` when the process runs out of descriptors anyway.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler

__all__ = ["ConnectionGuard", "RepeatedLogFilter", "default_max_connections"]

log = logging.getLogger(__name__)

DEFAULT_HEADER_TIMEOUT: Final = 20.0
DEFAULT_WRITE_TIMEOUT: Final = 20.0
DEFAULT_MAX_CONNECTIONS: Final = 512
# Records of one kind that clients can cause are logged at most this often; see
# RepeatedLogFilter.
REPEATED_LOG_INTERVAL: Final = 60.0
MAX_LOG_KINDS: Final = 1000


class _Connection(asyncio.Protocol):
    """One client connection: aiohttp's protocol, with the guard's deadlines and bookkeeping."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self.guard = guard
        self.inner = inner
        self.transport: asyncio.Transport | None = None
        self.started = False  # handed to aiohttp (after the TLS handshake, with TLS)
        self.requests = 0  # in progress: more than one only if a client pipelines
        self.deadline: asyncio.TimerHandle | None = None  # for a request head
        self.write_deadline: asyncio.TimerHandle | None = None  # while output is blocked
        self.handshake: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if not self.guard.admit(self):
            transport.abort()
        elif self.guard.ssl_context is None:
            self.start(transport)
        else:
            transport.pause_reading()  # the handshake's bytes are for start_tls, not aiohttp
            self.handshake = asyncio.ensure_future(self._handshake(transport))

    async def _handshake(self, transport: asyncio.Transport) -> None:
        """TLS on an admitted connection; it waits for a request head meanwhile, so the
        guard's header deadline and the connection limit apply to it."""
        assert self.guard.ssl_context is not None
        if transport.is_closing():  # lost before this task ran; start_tls would wait it out
            return
        try:
            tls = await asyncio.get_running_loop().start_tls(
                transport,
                self,
                self.guard.ssl_context,
                server_side=True,
                ssl_handshake_timeout=self.guard.header_timeout,
            )
        except OSError as exc:  # TLS errors, resets and timeouts are OSErrors; start_tls closed it
            self.drop(f"TLS handshake failed: {type(exc).__name__}")
            return
        if tls is None or not self.guard.counts(self):  # closed or replaced meanwhile
            return
        self.start(tls)

    def start(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.started = True
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.guard.blocked(self)
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.guard.unblocked(self)
        self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.forget(self)
        if self.started:
            self.inner.connection_lost(exc)

    def drop(self, why: str) -> None:
        """Close at once, without a goodbye, and stop counting the connection now rather than
        when asyncio reports it lost. It waits for a request head (no handler is cut short)
        or has a response blocked that its client does not read (that handler's write fails)."""
        self.guard.forget(self)
        if self.transport is not None:
            log.debug("closing a connection", extra={"reason": why})
            self.transport.abort()


class ConnectionGuard:
    """Header-read deadline and connection limit for one HTTP server (see the module doc)."""

    def __init__(
        self,
        header_timeout: float,
        max_connections: int,
        write_timeout: float = DEFAULT_WRITE_TIMEOUT,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.header_timeout = header_timeout
        self.max_connections = max_connections
        self.write_timeout = write_timeout
        self.ssl_context = ssl_context  # None: plain HTTP
        self._open: dict[asyncio.BaseProtocol, _Connection] = {}  # by aiohttp's protocol
        # Connections waiting for a request head, longest-waiting first, with when they began.
        self._waiting: OrderedDict[_Connection, float] = OrderedDict()
        # Connections whose output is blocked by a client not reading, longest-blocked first,
        # with when they blocked.
        self._blocked: OrderedDict[_Connection, float] = OrderedDict()

    def protocol_factory(
        self, factory: Callable[[], asyncio.Protocol]
    ) -> Callable[[], asyncio.Protocol]:
        """Wrap aiohttp's protocol factory (``runner.server``) for ``loop.create_server``."""
        return lambda: _Connection(self, factory())

    def install(self, app: web.Application) -> None:
        """Add the middleware that tells the guard when a connection serves a request.

        It goes first, so that the time spent checking credentials counts as serving.
        """
        app.middlewares.insert(0, self._middleware)

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        connection = self._open.get(request.protocol)
        if connection is None:  # already dropped; aiohttp finds the transport closed
            return await handler(request)
        self._serving(connection)
        try:
            return await handler(request)
        finally:
            connection.requests -= 1
            if connection.requests == 0 and connection.inner in self._open:
                self._wait(connection)

    def admit(self, connection: _Connection) -> bool:
        """Count a new connection, making room for it if need be; False: refuse it."""
        if len(self._open) >= self.max_connections:
            waiting = next(iter(self._waiting.items()), None)
            blocked = next(iter(self._blocked.items()), None)
            if waiting is not None and (blocked is None or waiting[1] <= blocked[1]):
                waiting[0].drop("connection limit reached: the longest wait for a request head")
            elif blocked is not None:
                blocked[0].drop("connection limit reached: the longest-blocked response")
            else:
                log.debug("refusing a connection: every connection is serving a request")
                return False
        self._open[connection.inner] = connection
        self._wait(connection)
        return True

    def counts(self, connection: _Connection) -> bool:
        """Whether ``connection`` is open and counted (not dropped or replaced)."""
        return self._open.get(connection.inner) is connection

    def forget(self, connection: _Connection) -> None:
        """Stop counting a connection that is closed or being closed."""
        if self._open.pop(connection.inner, None) is not None:
            self._stop_waiting(connection)
            self.unblocked(connection)

    def blocked(self, connection: _Connection) -> None:
        """The connection's output is paused: its client has not read what was sent."""
        if self.counts(connection) and connection.write_deadline is None:
            loop = asyncio.get_running_loop()
            self._blocked[connection] = loop.time()
            connection.write_deadline = loop.call_later(
                self.write_timeout, self._expire_write, connection
            )

    def unblocked(self, connection: _Connection) -> None:
        """The client read enough for output to flow again (or the connection is gone)."""
        self._blocked.pop(connection, None)
        if connection.write_deadline is not None:
            connection.write_deadline.cancel()
            connection.write_deadline = None

    def _wait(self, connection: _Connection) -> None:
        loop = asyncio.get_running_loop()
        self._waiting[connection] = loop.time()
        connection.deadline = loop.call_later(self.header_timeout, self._expire, connection)

    def _serving(self, connection: _Connection) -> None:
        connection.requests += 1
        self._stop_waiting(connection)

    def _stop_waiting(self, connection: _Connection) -> None:
        self._waiting.pop(connection, None)
        if connection.deadline is not None:
            connection.deadline.cancel()
            connection.deadline = None

    def _expire(self, connection: _Connection) -> None:
        connection.drop(f"no complete request head within {self.header_timeout:g} s")

    def _expire_write(self, connection: _Connection) -> None:
        connection.drop(f"the client read nothing of its response for {self.write_timeout:g} s")


def default_max_connections() -> int:
    """``DEFAULT_MAX_CONNECTIONS``, or half the open-file limit if that is lower.

    The other half is left for upstream connections, config and secret files, and for the
    moment between accepting a connection over the limit and closing another.
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return DEFAULT_MAX_CONNECTIONS
    return max(1, min(DEFAULT_MAX_CONNECTIONS, soft // 2))


class RepeatedLogFilter(logging.Filter):
    """Lets each kind of record through at most once per ``interval`` seconds.

    For the loggers whose records a client can cause at will: asyncio reports every failed
    ``accept()`` with its traceback, as fast as clients knock, once the process is out of file
    descriptors (95 MB of log in 35 s); aiohttp logs every malformed request with its
    traceback. The first record of a kind passes; repeats within ``interval`` are counted, and
    the next record that passes says how many were left out. The kind is the logger, the
    exception type and the message template up to its first parenthesis or line break, which
    leaves out the socket, handle and address details that differ from one record to the next.
    """

    def __init__(self, interval: float = REPEATED_LOG_INTERVAL) -> None:
        super().__init__()
        self.interval = interval
        self._last: dict[tuple[str, str, str], float] = {}
        self._left_out: dict[tuple[str, str, str], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        exc_type = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else ""
        kind = (record.name, exc_type, str(record.msg).split("\n", 1)[0].split("(", 1)[0])
        now = time.monotonic()
        if now - self._last.get(kind, -self.interval) < self.interval:
            self._left_out[kind] = self._left_out.get(kind, 0) + 1
            return False
        if len(self._last) > MAX_LOG_KINDS:  # a bound, should messages ever vary more
            self._last.clear()
        self._last[kind] = now
        if left_out := self._left_out.pop(kind, 0):
            record.msg = f"{record.msg} [{left_out} more like this not logged]"
        return True

    def install(self) -> None:
        """Filter the loggers of asyncio and of aiohttp's server."""
        for name in ("asyncio", "aiohttp.server"):
            logging.getLogger(name).addFilter(self)
