"""What every simulated provider shares: request log, injected faults, latency, a server.

The simulators speak the providers' wire formats and check what the real APIs check, so the
demo and the tests exercise the same client code real accounts do. Tests inject faults here
(an error status with a body, a hanging answer, a reset connection, a huge body, a small
compressed body that inflates to a huge one) instead of patching the exporter's own functions.
"""

from __future__ import annotations

import asyncio
import json
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Fault:
    """A misbehaviour to serve instead of the normal answer, for ``times`` requests (None: all)."""

    kind: str
    status: int = 200
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    content_type: str = "application/json"
    path_contains: str = ""

    @classmethod
    def answer(
        cls,
        status: int,
        body: Any,
        headers: dict[str, str] | None = None,
        path_contains: str = "",
    ) -> Fault:
        """Answer ``status`` with ``body`` (JSON-encoded unless bytes or str)."""
        if isinstance(body, bytes):
            raw = body
        elif isinstance(body, str):
            raw = body.encode()
        else:
            raw = json.dumps(body).encode()
        content_type = "text/html" if raw.lstrip().startswith(b"<") else "application/json"
        return cls(
            "answer",
            status,
            raw,
            tuple((headers or {}).items()),
            content_type,
            path_contains,
        )

    @classmethod
    def inflating(
        cls, body: dict[str, Any], size: int, encoding: str = "gzip", chunked: bool = False
    ) -> Fault:
        """Answer 200 with the JSON object ``body`` padded to ``size`` bytes and compressed
        (``gzip`` or ``deflate``), sent with its compressed size as Content-Length, or chunked.

        Padding compresses about a thousandfold: 64 MiB travel as 64 KiB. The body is
        compressed a megabyte at a time, so building it never holds the inflated whole.
        """
        head = json.dumps(body)[:-1].encode() + b', "pad": "'
        compressor = zlib.compressobj(9, zlib.DEFLATED, 31 if encoding == "gzip" else 15)
        parts = [compressor.compress(head)]
        pad = size - len(head) - 2
        step = b"0" * (1 << 20)
        while pad > 0:
            parts.append(compressor.compress(step[:pad]))
            pad -= len(step)
        parts.append(compressor.compress(b'"}') + compressor.flush())
        headers = (("Content-Encoding", encoding),)
        return cls("chunked" if chunked else "answer", 200, b"".join(parts), headers)

    @classmethod
    def hang(cls) -> Fault:
        """Accept the request and never answer."""
        return cls("hang")

    @classmethod
    def reset(cls) -> Fault:
        """Close the connection without an answer."""
        return cls("reset")

    @classmethod
    def huge(cls, size: int = 32 * 1024 * 1024) -> Fault:
        """Stream a JSON-looking body of ``size`` bytes without a Content-Length."""
        return cls("huge", body=str(size).encode())


@dataclass(frozen=True)
class SeenRequest:
    """A request as the simulator received it, for assertions on what the exporter sent."""

    method: str
    path: str
    query_string: str
    headers: dict[str, str]
    body: bytes = b""

    def json(self) -> Any:
        """The request body decoded as JSON."""
        return json.loads(self.body)

    @classmethod
    def of(cls, request: web.Request, body: bytes = b"") -> SeenRequest:
        """The parts of an incoming request that tests assert on."""
        return cls(request.method, request.path, request.query_string, dict(request.headers), body)


@dataclass
class FakeProvider:
    """Base of the simulated providers: serving, request log, faults and latency."""

    name: str = ""
    latency: float = 0.0
    fault: Fault | None = None
    requests: list[SeenRequest] = field(default_factory=list)
    record_requests: bool = True
    _runner: web.AppRunner | None = None
    url: str = ""

    def add_routes(self, app: web.Application) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def route_error(self, status: int, reason: str) -> web.Response:  # pragma: no cover
        """The provider's own JSON error envelope for a path or method it does not serve.

        Real APIs answer an unknown route in their usual error format, never aiohttp's plain
        text; a client that parses the envelope (the official Crisp Python client does) must
        meet the same body here as against the real service.
        """
        raise NotImplementedError

    def make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        self.add_routes(app)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on loopback; returns the base URL (scheme and host, no path)."""
        self._runner = web.AppRunner(self.make_app(), handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound_port = self._runner.addresses[0][1]
        self.url = f"http://{host}:{bound_port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def calls(self, path_contains: str = "") -> list[SeenRequest]:
        """Requests received whose path contains ``path_contains``."""
        return [r for r in self.requests if path_contains in r.path]

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self.record_requests:
            # aiohttp keeps the body for the handler to read again
            self.requests.append(SeenRequest.of(request, await request.read()))
        if self.latency:
            await asyncio.sleep(self.latency)
        fault = self.fault
        if fault is not None and fault.path_contains in request.path:
            return await self._serve_fault(request, fault)
        unrouted = request.match_info.http_exception
        if unrouted is not None:  # no route (404) or not this method (405)
            return self.route_error(unrouted.status, unrouted.reason)
        return await handler(request)

    async def _serve_fault(self, request: web.Request, fault: Fault) -> web.StreamResponse:
        if fault.kind == "hang":
            await asyncio.sleep(3600)
        if fault.kind == "reset":
            assert request.transport is not None
            request.transport.close()
            raise asyncio.CancelledError
        if fault.kind == "chunked":
            response = web.StreamResponse(
                headers={"Content-Type": fault.content_type, **dict(fault.headers)}
            )
            response.enable_chunked_encoding()
            await response.prepare(request)
            for start in range(0, len(fault.body), 64 * 1024):
                await response.write(fault.body[start : start + 64 * 1024])
            return response
        if fault.kind == "huge":
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            response.enable_chunked_encoding()
            await response.prepare(request)
            remaining = int(fault.body)
            chunk = b"[" + b"1," * 32767
            while remaining > 0:
                await response.write(chunk[:remaining])
                remaining -= len(chunk)
            return response
        return web.Response(
            status=fault.status,
            body=fault.body,
            headers=dict(fault.headers),
            content_type=fault.content_type,
        )


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """A JSON answer with the given status."""
    return web.json_response(body, status=status, headers=headers)


@dataclass
class RateWindow:
    """A fixed-window rate limit announced in ``X-RateLimit-*`` headers (Intercom, Stream).

    The window starts with the first request rather than on a clock boundary, so a test that
    makes a few requests sees exact remaining counts.
    """

    limit: int
    seconds: float
    _ends_at: float = 0.0
    _used: int = 0

    def take(self) -> tuple[bool, dict[str, str]]:
        """Spend one request: whether it is allowed, and the headers to answer with."""
        now = time.time()
        if now >= self._ends_at:
            self._ends_at, self._used = now + self.seconds, 0
        self._used += 1
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(max(self.limit - self._used, 0)),
            "X-RateLimit-Reset": str(int(self._ends_at)),
        }
        return self._used <= self.limit, headers
