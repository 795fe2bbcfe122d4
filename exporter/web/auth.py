"""Basic auth for ``--web.config.file``: bcrypt checks, a cache of verified credentials, and
equal-cost attempts whatever the user name.

Nothing here ever logs, prints or puts into an exception message a password or a password hash.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
from collections import Counter, OrderedDict
from collections.abc import Mapping
from typing import Final

import bcrypt
from aiohttp import BasicAuth, hdrs, web
from aiohttp.typedefs import Handler, Middleware

__all__ = ["REALM", "BasicAuthGuard"]

log = logging.getLogger(__name__)

REALM: Final = "chat-unread-exporter"
WWW_AUTHENTICATE_VALUE: Final = f'Basic realm="{REALM}"'

# How many successful (username, password) verifications are remembered. Prometheus servers
# scrape with the same few credentials forever, so a small bound covers every real client and
# keeps an attacker who owns a valid account from growing the cache without limit.
VERIFIED_CACHE_MAX: Final = 128

# bcrypt only ever looks at the first 72 bytes of a password (Go's implementation, which
# exporter-toolkit uses, behaves the same); the Python library raises on longer input instead.
_BCRYPT_MAX_PASSWORD_BYTES: Final = 72

# The header's bytes as sent: latin-1 maps each byte to one character and back, so user names
# and passwords in any encoding compare and hash as the bytes the client sent.
_HEADER_ENCODING: Final = "latin-1"


class BasicAuthGuard:
    """Requires basic auth credentials of ``users`` (name -> bcrypt hash) on every path but
    ``open_paths``, and counts what it checks.

    A successful bcrypt check costs 50-250 ms of CPU; Prometheus sends the same credentials on
    every scrape, so successes are remembered (as exporter-toolkit does). The key is the user
    name and an HMAC-SHA256 of the password under a per-process random key: it identifies the
    password without keeping it, and unlike a bare SHA-256 a memory dump does not allow a fast
    offline guess of a weak password. Failures are not cached, so an attacker cannot fill the
    cache; they are slowed down by bcrypt instead. The guard lives as long as the web config it
    belongs to, which is read once at start, so a changed password needs a restart.

    Users may have hashes of different costs (a cost 4 check takes 1 ms, a cost 10 one 70 ms),
    so checking only the claimed user's hash would tell by the response time which user names
    exist and which cost each has. Every attempt therefore checks one hash of each configured
    cost: the claimed user's own at that user's cost, and a decoy (another user's hash, whose
    result is discarded) at every other cost; an unknown user gets decoys only. Each attempt,
    by any name, costs the same.
    """

    def __init__(self, users: Mapping[str, str], open_paths: frozenset[str]) -> None:
        self.users: tuple[tuple[bytes, bytes], ...] = tuple(
            (name.encode(), hashed.encode()) for name, hashed in users.items()
        )
        self.open_paths = open_paths
        self.decoys: dict[int, bytes] = {}
        for _, hashed in self.users:
            self.decoys.setdefault(_bcrypt_cost(hashed), hashed)
        self.cache: OrderedDict[tuple[bytes, bytes], None] = OrderedDict()
        self.cache_key = secrets.token_bytes(32)
        self.bcrypt_checks = 0
        self.hashes_checked: Counter[int] = Counter()

    def cache_id(self, username: bytes, password: bytes) -> tuple[bytes, bytes]:
        return username, hmac.new(self.cache_key, password, hashlib.sha256).digest()

    def remember(self, key: tuple[bytes, bytes]) -> None:
        self.cache[key] = None
        self.cache.move_to_end(key)
        while len(self.cache) > VERIFIED_CACHE_MAX:
            self.cache.popitem(last=False)

    def lookup(self, username: bytes) -> bytes | None:
        """The stored hash for ``username``, comparing every name in constant time."""
        found: bytes | None = None
        for name, hashed in self.users:
            if hmac.compare_digest(name, username):
                found = hashed  # no early exit: the loop always visits every user
        return found

    def verify(self, password: bytes, stored: bytes | None) -> bool:
        """Run in a worker thread: one bcrypt check per configured cost, see the class doc."""
        verified = False
        for cost, decoy in self.decoys.items():
            own = stored if stored is not None and _bcrypt_cost(stored) == cost else None
            matches = _bcrypt_check(password, own or decoy)
            verified = verified or (own is not None and matches)
            self.hashes_checked[cost] += 1
        return verified

    def middleware(self) -> Middleware:
        """A middleware enforcing basic auth; the verified cache is shared through this object.

        Each call makes a middleware with its own bcrypt lock.
        """
        # One bcrypt check at a time (as exporter-toolkit does): a flood of bad passwords then
        # costs one CPU core, not all of them, and never takes every thread of the default
        # executor, which aiohttp also uses for DNS lookups.
        lock = asyncio.Lock()

        async def authenticated(request: web.Request) -> bool:
            credentials = _credentials(request.headers.get(hdrs.AUTHORIZATION))
            if credentials is None:
                log.debug("basic auth: no usable credentials for %r", request.rel_url.path_safe)
                return False
            username, password = credentials
            key = self.cache_id(username, password)
            if key in self.cache:
                self.cache.move_to_end(key)
                return True
            stored = self.lookup(username)
            async with lock:
                if key in self.cache:  # verified by a concurrent request while we waited
                    return True
                self.bcrypt_checks += 1
                if await asyncio.to_thread(self.verify, password, stored):
                    self.remember(key)
                    return True
            log.debug("basic auth: invalid credentials for %r", request.rel_url.path_safe)
            return False

        @web.middleware
        async def basic_auth_middleware(
            request: web.Request, handler: Handler
        ) -> web.StreamResponse:
            # path_safe is what aiohttp's router matches routes against, so an exempt path
            # cannot be reached through another spelling (e.g. %2F) that routes elsewhere.
            exempt = request.rel_url.path_safe in self.open_paths
            if not exempt and not await authenticated(request):
                raise web.HTTPUnauthorized(
                    text="Unauthorized\n",
                    headers={hdrs.WWW_AUTHENTICATE: WWW_AUTHENTICATE_VALUE},
                )
            return await handler(request)

        return basic_auth_middleware


def _credentials(header: str | None) -> tuple[bytes, bytes] | None:
    """(username, password) as the client's bytes, from an ``Authorization`` header, or None."""
    if header is None:
        return None
    try:
        auth = BasicAuth.decode(header, encoding=_HEADER_ENCODING)
    except ValueError:  # not Basic, not base64, no colon, not ASCII
        return None
    return auth.login.encode(_HEADER_ENCODING), auth.password.encode(_HEADER_ENCODING)


def _bcrypt_cost(hashed: bytes) -> int:
    """The cost of a hash the web config has checked (``$2b$10$...`` -> 10)."""
    return int(hashed[4:6])


def _bcrypt_check(password: bytes, hashed: bytes) -> bool:
    try:
        return bcrypt.checkpw(password[:_BCRYPT_MAX_PASSWORD_BYTES], hashed)
    except ValueError:
        log.error("basic auth: the bcrypt library rejected a configured hash")
        return False
