"""``--web.config.file``: TLS, basic auth and extra response headers.

The file uses the format of the Prometheus exporter-toolkit
(https://github.com/prometheus/exporter-toolkit/blob/master/docs/web-configuration.md) so that an
operator can reuse the web config they already have for node_exporter & co. One extension is
ours: a top-level ``unauthenticated_paths`` list (exact paths such as ``/-/healthy``) that
health probes may reach without credentials; it is empty by default, so that setting
``basic_auth_users`` protects every path unless the file says otherwise, and it can never
open ``/-/reload``, which changes the exporter's state.

Where Python's ``ssl`` module cannot do what Go's ``crypto/tls`` does, this module refuses the
setting with a message, or does something stricter, never something weaker; see
docs/web-config.md for the differences.

Nothing here ever logs, prints or puts into an exception message a password or a password hash.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import re
import secrets
import ssl
import warnings
from collections import Counter, OrderedDict
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Final, NoReturn

import bcrypt
import yaml
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError, field_validator

__all__ = ["TLSServerConfig", "WebConfig", "WebConfigError", "load_web_config"]

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

# Paths that change the exporter's state: ``unauthenticated_paths`` may not open them, so with
# basic auth configured nobody without credentials can make the exporter reload its config.
ALWAYS_AUTHENTICATED_PATHS: Final = frozenset({"/-/reload"})

_BCRYPT_HASH = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")

_TLS_VERSIONS: Final[Mapping[str, ssl.TLSVersion]] = MappingProxyType(
    {
        "TLS10": ssl.TLSVersion.TLSv1,
        "TLS11": ssl.TLSVersion.TLSv1_1,
        "TLS12": ssl.TLSVersion.TLSv1_2,
        "TLS13": ssl.TLSVersion.TLSv1_3,
    }
)

# client_auth_type -> verify mode. RequestClientCert never refuses anyone in Go (the certificate
# is asked for but not checked, and this exporter never looks at it), so CERT_NONE admits exactly
# the same clients. RequireAnyClientCert (alias RequireClientCert) would need a certificate
# *without* verifying it, which Python's ssl module cannot do: we verify it against
# client_ca_file, which is stricter, and require that file (see _check_tls).
_CLIENT_AUTH_TYPES: Final[Mapping[str, ssl.VerifyMode]] = MappingProxyType(
    {
        "NoClientCert": ssl.CERT_NONE,
        "RequestClientCert": ssl.CERT_NONE,
        "RequireAnyClientCert": ssl.CERT_REQUIRED,
        "RequireClientCert": ssl.CERT_REQUIRED,
        "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
        "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
    }
)
_CLIENT_AUTH_NEEDS_CA: Final = frozenset(
    {
        "RequireAnyClientCert",
        "RequireClientCert",
        "VerifyClientCertIfGiven",
        "RequireAndVerifyClientCert",
    }
)

# Response headers the file may set, with their allowed values where the standard fixes them.
# The list is exporter-toolkit's, kept private there "to ensure consistency in the Prometheus
# ecosystem"; a file that works here therefore works with any other exporter too.
_ALLOWED_HEADERS: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {
        "Strict-Transport-Security": (),
        "X-Content-Type-Options": ("nosniff",),
        "X-Frame-Options": ("deny", "sameorigin"),
        "X-XSS-Protection": (),
        "Content-Security-Policy": (),
    }
)

# exporter-toolkit keys this exporter does not implement. They are refused (like unknown keys)
# but with a message that says so, rather than "unknown field" for a key the user found in the
# upstream documentation.
_TOOLKIT_ONLY_KEYS: Final[Mapping[tuple[str, ...], str]] = MappingProxyType(
    {
        ("rate_limit",): "put a reverse proxy in front for rate limiting",
        ("tls_server_config", "cert"): "put the certificate in a file and use cert_file",
        ("tls_server_config", "key"): "put the key in a file and use key_file",
        ("tls_server_config", "client_ca"): "put the CA in a file and use client_ca_file",
        ("tls_server_config", "cipher_suites"): "the OpenSSL defaults are used",
        ("tls_server_config", "curve_preferences"): "the OpenSSL defaults are used",
        ("tls_server_config", "client_allowed_sans"): (
            "issue client certificates from a dedicated CA instead"
        ),
    }
)


class WebConfigError(Exception):
    """A web config file that cannot be used.

    Each of ``problems`` names the file (and the line, where the problem is in the file's
    text), the field path and the problem, as ``config.yaml`` errors do, e.g.
    ``/x/web.yml:7: unauthenticated_paths[1]: ...`` or
    ``/x/web.yml: tls_server_config.cert_file: file not found: /x/server.crt`` for a problem
    found outside the file. They never contain a password or a password hash, so they are safe
    to log and to print.
    """

    def __init__(self, source: Path | str, problems: Sequence[str | tuple[int, str]]) -> None:
        self.source = str(source)
        self.problems = tuple(
            f"{self.source}:{p[0]}: {p[1]}" if isinstance(p, tuple) else f"{self.source}: {p}"
            for p in problems
        )
        super().__init__("\n".join(f"web config {p}" for p in self.problems))


# --------------------------------------------------------------------------------------------
# The file's schema (pydantic). Only the shape and single-field rules live here; rules that
# involve several fields or the file system are checked afterwards, where the error can name
# the exact field.


def _check_bcrypt_hash(value: str) -> str:
    # The message must not echo the value: it may be a real hash or a pasted plaintext password.
    if not _BCRYPT_HASH.fullmatch(value):
        raise ValueError(
            "not a bcrypt hash (expected $2a$, $2b$ or $2y$, a cost from 04 to 31 and 53 "
            "characters, e.g. $2y$10$...; see docs/web-config.md)"
        )
    return value


def _check_username(value: str) -> str:
    if not value:
        raise ValueError("user name must not be empty")
    if ":" in value:
        raise ValueError("user name must not contain ':' (HTTP basic auth cannot send it)")
    return value


def _check_path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"{value!r} must be an absolute path starting with '/'")
    if any(c in value for c in "?#") or any(ord(c) < 0x21 for c in value):
        raise ValueError(f"{value!r} must be a bare path (no query, fragment or whitespace)")
    if value in ALWAYS_AUTHENTICATED_PATHS:
        raise ValueError(
            f"{value!r} changes the exporter's state and always needs credentials when "
            "basic_auth_users is set (to turn it off, use --web.disable-reload)"
        )
    return value


_BcryptHash = Annotated[str, AfterValidator(_check_bcrypt_hash)]
_UserName = Annotated[str, AfterValidator(_check_username)]
_UrlPath = Annotated[str, AfterValidator(_check_path)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _TLSServerConfigModel(_Strict):
    cert_file: str | None = None
    key_file: str | None = None
    client_auth_type: str | None = None
    client_ca_file: str | None = None
    min_version: str | None = None
    max_version: str | None = None
    prefer_server_cipher_suites: bool = True

    @field_validator("client_auth_type")
    @classmethod
    def _known_client_auth_type(cls, value: str | None) -> str | None:
        if value not in (None, "", *_CLIENT_AUTH_TYPES):
            known = ", ".join(k for k in _CLIENT_AUTH_TYPES if k != "RequireClientCert")
            raise ValueError(f"invalid value {value!r}; expected one of {known}")
        return value

    @field_validator("min_version", "max_version")
    @classmethod
    def _known_tls_version(cls, value: str | None) -> str | None:
        if value not in (None, "", *_TLS_VERSIONS):
            raise ValueError(f"invalid value {value!r}; expected one of {', '.join(_TLS_VERSIONS)}")
        return value


class _HTTPServerConfigModel(_Strict):
    # Accepted so that upstream files load; aiohttp serves HTTP/1.1 only, whatever it says.
    http2: bool = True
    headers: dict[str, str] | None = None

    @field_validator("headers")
    @classmethod
    def _allowed_headers(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for name, content in (value or {}).items():
            if name not in _ALLOWED_HEADERS:
                allowed = ", ".join(_ALLOWED_HEADERS)
                raise ValueError(f"header {name!r} can not be configured (allowed: {allowed})")
            choices = _ALLOWED_HEADERS[name]
            if content and choices and content not in choices:
                raise ValueError(
                    f"{name}: invalid value {content!r}; expected one of {', '.join(choices)}"
                )
            if any(c in content for c in "\r\n\0"):
                raise ValueError(f"{name}: value must be a single line")
        return value


class _WebConfigModel(_Strict):
    tls_server_config: _TLSServerConfigModel | None = None
    http_server_config: _HTTPServerConfigModel | None = None
    basic_auth_users: dict[_UserName, _BcryptHash] | None = None
    unauthenticated_paths: list[_UrlPath] | None = None


def _pydantic_problem(error: Mapping[str, Any]) -> str:
    """``field.path: problem`` for one pydantic error, worded for a YAML author."""
    loc: tuple[str | int, ...] = tuple(error["loc"])
    is_key = bool(loc) and loc[-1] == "[key]"
    if is_key:
        loc = loc[:-1]
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    path = path or "(top level)"
    kind = error["type"]
    if kind == "extra_forbidden":
        hint = _TOOLKIT_ONLY_KEYS.get(tuple(str(p) for p in loc))
        if hint is not None:
            return f"{path}: exporter-toolkit option not supported by {REALM}; {hint}"
        return f"{path}: unknown field"
    messages = {
        "model_type": "must be a mapping",
        "model_attributes_type": "must be a mapping",
        "dict_type": "must be a mapping",
        "list_type": "must be a list",
        "string_type": "must be a string",
        "bool_type": "must be true or false",
        "bool_parsing": "must be true or false",
    }
    if kind in messages:
        return f"{path}: {messages[kind]}"
    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    return f"{path}: {message}"


# --------------------------------------------------------------------------------------------
# YAML


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that refuses duplicate keys.

    Plain YAML loaders keep the last of two equal keys, so a second ``alice:`` under
    ``basic_auth_users`` would silently replace the first password; we refuse it instead.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[Hashable] = set()
        for key_node, _ in node.value:
            if (
                not isinstance(key_node, yaml.ScalarNode)
                or key_node.tag == "tag:yaml.org,2002:merge"
            ):
                continue
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, Hashable):
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r}", key_node.start_mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    # str(exc) of a marked error quotes the offending source line, which may hold a hash or a
    # password; only the problem and its position are reported.
    if isinstance(exc, yaml.MarkedYAMLError):
        where = exc.problem_mark or exc.context_mark
        position = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        return f"malformed YAML{position}: {exc.problem or exc.context or 'syntax error'}"
    if isinstance(exc, yaml.reader.ReaderError):
        what = exc.reason if exc.encoding == "unicode" else f"not valid {exc.encoding} text"
        return f"malformed YAML at offset {exc.position}: {what}"
    return f"malformed YAML: {type(exc).__name__}"


def _line_of(node: yaml.Node | None, loc: Sequence[int | str]) -> int:
    """The line (1-based) of the value at a pydantic error's ``loc``.

    Where the path leaves what the walk can follow (a merged key, a key that is not a plain
    string), the line of the closest enclosing value is taken: still next to the problem.
    """
    line = 1
    for part in loc:
        if node is None:
            break
        line = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if k.value == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            node = node.value[part] if part < len(node.value) else None
        else:
            node = None
    return line if node is None else node.start_mark.line + 1


# --------------------------------------------------------------------------------------------
# The validated configuration


@dataclass(frozen=True)
class TLSServerConfig:
    """Validated ``tls_server_config``, with file paths already made absolute."""

    cert_file: Path
    key_file: Path
    client_auth_type: str = "NoClientCert"
    client_ca_file: Path | None = None
    min_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2
    max_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3
    prefer_server_cipher_suites: bool = True

    @property
    def verify_mode(self) -> ssl.VerifyMode:
        """How the server treats client certificates (see ``_CLIENT_AUTH_TYPES``)."""
        return _CLIENT_AUTH_TYPES[self.client_auth_type]

    def ssl_context(self, source: Path | str = "(no file)") -> ssl.SSLContext:
        """Build a server context from the files as they are now.

        Built from ``ssl.SSLContext(PROTOCOL_TLS_SERVER)`` rather than
        ``ssl.create_default_context``, which would honour ``SSLKEYLOGFILE`` and write the
        session keys of every scrape to a file named by the environment.
        """
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        with warnings.catch_warnings():
            # Python deprecates TLS 1.0/1.1; the operator asked for it explicitly, so the
            # DeprecationWarning would only be noise (OpenSSL may still refuse them).
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = self.min_version
            ctx.maximum_version = self.max_version
        if self.prefer_server_cipher_suites:
            ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
        else:
            ctx.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
        _load_cert_chain(ctx, self.cert_file, self.key_file, source)
        if self.client_ca_file is not None:
            _load_client_ca(ctx, self.client_ca_file, source)
        ctx.verify_mode = self.verify_mode
        return ctx


def _refuse_key_password() -> NoReturn:
    # Without a password callback OpenSSL would prompt on the terminal for an encrypted key and
    # hang a daemon; exporter-toolkit does not support encrypted keys either.
    raise _EncryptedKeyError


class _EncryptedKeyError(Exception):
    pass


def _fail(source: Path | str, field_path: str, problem: str) -> NoReturn:
    raise WebConfigError(source, [f"{field_path}: {problem}"])


def _check_readable_file(source: Path | str, field_path: str, path: Path) -> None:
    if not path.exists():
        _fail(source, field_path, f"file not found: {path}")
    if not path.is_file():
        _fail(source, field_path, f"not a regular file: {path}")
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        _fail(source, field_path, f"cannot read {path}: {exc.strerror or exc}")


def _load_cert_chain(ctx: ssl.SSLContext, cert: Path, key: Path, source: Path | str) -> None:
    cert_field, key_field = "tls_server_config.cert_file", "tls_server_config.key_file"
    _check_readable_file(source, cert_field, cert)
    _check_readable_file(source, key_field, key)
    # OpenSSL reports both a bad certificate and a bad key as "PEM lib"; parsing the certificate
    # on its own first tells the two apart.
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_verify_locations(cafile=cert)
    except (ssl.SSLError, OSError):
        _fail(source, cert_field, f"no PEM certificate found in {cert}")
    try:
        ctx.load_cert_chain(cert, key, password=_refuse_key_password)
    except _EncryptedKeyError:
        _fail(source, key_field, f"encrypted private keys are not supported: {key}")
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            _fail(source, key_field, f"private key {key} does not match the certificate {cert}")
        _fail(source, key_field, f"no usable PEM private key found in {key}")
    except OSError as exc:
        _fail(source, key_field, f"cannot load {key}: {exc.strerror or exc}")


def _load_client_ca(ctx: ssl.SSLContext, ca: Path, source: Path | str) -> None:
    ca_field = "tls_server_config.client_ca_file"
    _check_readable_file(source, ca_field, ca)
    try:
        ctx.load_verify_locations(cafile=ca)
    except (ssl.SSLError, OSError):
        _fail(source, ca_field, f"no PEM CA certificate found in {ca}")


def _bcrypt_cost(hashed: bytes) -> int:
    """The cost of a hash already checked against ``_BCRYPT_HASH`` (``$2b$10$...`` -> 10)."""
    return int(hashed[4:6])


class _AuthState:
    """The mutable part of a ``WebConfig``: the cache of verified credentials and counters.

    A successful bcrypt check costs 50-250 ms of CPU; Prometheus sends the same credentials on
    every scrape, so successes are remembered (as exporter-toolkit does). The key is the user
    name and an HMAC-SHA256 of the password under a per-process random key: it identifies the
    password without keeping it, and unlike a bare SHA-256 a memory dump does not allow a fast
    offline guess of a weak password. Failures are not cached, so an attacker cannot fill the
    cache; they are slowed down by bcrypt instead.

    Users may have hashes of different costs (a cost 4 check takes 1 ms, a cost 10 one 70 ms),
    so checking only the claimed user's hash would tell by the response time which user names
    exist and which cost each has. Every attempt therefore checks one hash of each configured
    cost: the claimed user's own at that user's cost, and a decoy (another user's hash, whose
    result is discarded) at every other cost; an unknown user gets decoys only. Each attempt,
    by any name, costs the same.
    """

    def __init__(self, users: Mapping[str, str]) -> None:
        self.users: tuple[tuple[bytes, bytes], ...] = tuple(
            (name.encode(), hashed.encode()) for name, hashed in users.items()
        )
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


def _bcrypt_check(password: bytes, hashed: bytes) -> bool:
    try:
        return bcrypt.checkpw(password[:_BCRYPT_MAX_PASSWORD_BYTES], hashed)
    except ValueError:
        log.error("basic auth: the bcrypt library rejected a configured hash")
        return False


def _parse_basic_auth(header: str | None) -> tuple[bytes, bytes] | None:
    """(username, password) from an ``Authorization: Basic`` header, or None."""
    if header is None:
        return None
    scheme, _, credentials = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    username, colon, password = decoded.partition(b":")
    if not colon:
        return None
    return username, password


@dataclass(frozen=True)
class WebConfig:
    """A validated web config: what ``--web.config.file`` asks of the HTTP server.

    ``WebConfig()`` is the "no file" configuration: plain HTTP, no auth, no extra headers.
    The object is immutable; reloading means loading a new one (which also starts a new cache
    of verified credentials, so a removed user or changed password takes effect at once).
    """

    source: Path | None = None
    tls: TLSServerConfig | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    # repr=False: the hashes must not end up in logs or tracebacks through repr().
    basic_auth_users: Mapping[str, str] = field(default_factory=dict, repr=False)
    unauthenticated_paths: frozenset[str] = frozenset()
    _auth: _AuthState = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name, hashed in self.basic_auth_users.items():
            _check_username(name)
            _check_bcrypt_hash(hashed)
        for path in self.unauthenticated_paths:
            _check_path(path)
        object.__setattr__(self, "headers", MappingProxyType(dict(self.headers)))
        object.__setattr__(self, "basic_auth_users", MappingProxyType(dict(self.basic_auth_users)))
        object.__setattr__(self, "unauthenticated_paths", frozenset(self.unauthenticated_paths))
        object.__setattr__(self, "_auth", _AuthState(self.basic_auth_users))

    @property
    def tls_enabled(self) -> bool:
        """True when the server must speak HTTPS (for log lines and URLs)."""
        return self.tls is not None

    @property
    def auth_enabled(self) -> bool:
        """True when requests need basic auth credentials."""
        return bool(self.basic_auth_users)

    def describe(self) -> str:
        """A one-line summary without secrets, for the startup log line."""
        parts = [f"tls={'on' if self.tls_enabled else 'off'}"]
        if self.tls is not None:
            parts.append(f"client_auth_type={self.tls.client_auth_type}")
        parts.append(f"basic_auth_users={len(self.basic_auth_users)}")
        if self.unauthenticated_paths:
            parts.append(f"unauthenticated_paths={','.join(sorted(self.unauthenticated_paths))}")
        return " ".join(parts)

    @property
    def verified_cache_size(self) -> int:
        """How many (user, password) pairs are currently remembered as verified."""
        return len(self._auth.cache)

    @property
    def bcrypt_checks(self) -> int:
        """How many credentials have been verified with bcrypt (cache hits do not count)."""
        return self._auth.bcrypt_checks

    @property
    def hashes_checked(self) -> Mapping[int, int]:
        """How many bcrypt hashes of each cost have been checked, decoys included.

        The measure of what an attempt costs: it grows the same for every attempt, whatever
        the user name, which is what keeps user names from showing in response times.
        """
        return MappingProxyType(dict(self._auth.hashes_checked))

    def ssl_context(self) -> ssl.SSLContext | None:
        """A fresh server-side SSL context, or None when the file configures no TLS.

        The files are read again on every call, so calling this on reload picks up rotated
        certificates. Raises WebConfigError if they have become unusable since loading.
        """
        if self.tls is None:
            return None
        return self.tls.ssl_context(self.source or "(no file)")

    def install(self, app: web.Application) -> None:
        """Enforce basic auth on ``app`` and add the configured headers to its responses.

        Call before the app starts. The auth middleware goes first, so that every route,
        including ones answered by other middlewares, is protected. The headers are added
        when a response is prepared (``on_response_prepare``), the one hook every response
        of the app passes, streamed ones and errors (400, 401, 404, 405, 500) included; a
        middleware could not add them to a response its handler has already sent.
        """
        if self.auth_enabled:
            app.middlewares.insert(0, self._auth_middleware())
        headers = {name: value for name, value in self.headers.items() if value}
        if headers:

            async def add_headers(_: web.Request, response: web.StreamResponse) -> None:
                response.headers.update(headers)

            app.on_response_prepare.append(add_headers)

    def _auth_middleware(self) -> Middleware:
        """A middleware enforcing basic auth; the verified cache is shared through this object.

        Each call makes a middleware with its own bcrypt lock.
        """
        auth = self._auth
        open_paths = self.unauthenticated_paths
        # One bcrypt check at a time (as exporter-toolkit does): a flood of bad passwords then
        # costs one CPU core, not all of them, and never takes every thread of the default
        # executor, which aiohttp also uses for DNS lookups.
        lock = asyncio.Lock()

        async def authenticated(request: web.Request) -> bool:
            credentials = _parse_basic_auth(request.headers.get(hdrs.AUTHORIZATION))
            if credentials is None:
                log.debug("basic auth: no usable credentials for %r", request.rel_url.path_safe)
                return False
            username, password = credentials
            key = auth.cache_id(username, password)
            if key in auth.cache:
                auth.cache.move_to_end(key)
                return True
            stored = auth.lookup(username)
            async with lock:
                if key in auth.cache:  # verified by a concurrent request while we waited
                    return True
                auth.bcrypt_checks += 1
                if await asyncio.to_thread(auth.verify, password, stored):
                    auth.remember(key)
                    return True
            log.debug("basic auth: invalid credentials for %r", request.rel_url.path_safe)
            return False

        @web.middleware
        async def basic_auth_middleware(
            request: web.Request, handler: Handler
        ) -> web.StreamResponse:
            # path_safe is what aiohttp's router matches routes against, so an exempt path
            # cannot be reached through another spelling (e.g. %2F) that routes elsewhere.
            exempt = request.rel_url.path_safe in open_paths
            if not exempt and not await authenticated(request):
                raise web.HTTPUnauthorized(
                    text="Unauthorized\n",
                    headers={hdrs.WWW_AUTHENTICATE: WWW_AUTHENTICATE_VALUE},
                )
            return await handler(request)

        return basic_auth_middleware


# --------------------------------------------------------------------------------------------
# Loading


def _resolve(base: Path, value: str) -> Path:
    """A file named in the config, relative to the config file's folder (as exporter-toolkit)."""
    path = Path(value)
    return path if path.is_absolute() else base / path


def _check_tls(source: Path, model: _TLSServerConfigModel) -> TLSServerConfig | None:
    prefix = "tls_server_config"
    cert, key, ca = model.cert_file or None, model.key_file or None, model.client_ca_file or None
    auth_type = model.client_auth_type or "NoClientCert"
    if not (cert or key or ca or model.client_auth_type):
        # As in exporter-toolkit: a section that names no file and no client auth means no TLS.
        return None
    problems: list[str] = []
    if cert is None:
        problems.append(f"{prefix}.cert_file: required when TLS is configured")
    if key is None:
        problems.append(f"{prefix}.key_file: required when TLS is configured")
    if ca is not None and _CLIENT_AUTH_TYPES[auth_type] == ssl.CERT_NONE:
        problems.append(
            f"{prefix}.client_ca_file: set but client_auth_type is {auth_type}, which never "
            "verifies client certificates; use RequireAndVerifyClientCert"
        )
    if ca is None and auth_type in _CLIENT_AUTH_NEEDS_CA:
        why = (
            " (Python's ssl module cannot accept a client certificate without verifying it)"
            if auth_type in ("RequireAnyClientCert", "RequireClientCert")
            else ""
        )
        problems.append(f"{prefix}.client_ca_file: required by client_auth_type {auth_type}{why}")
    min_version = _TLS_VERSIONS[model.min_version or "TLS12"]
    max_version = _TLS_VERSIONS[model.max_version or "TLS13"]
    if min_version > max_version:
        problems.append(
            f"{prefix}.min_version: {model.min_version or 'TLS12'} is above max_version "
            f"{model.max_version or 'TLS13'}"
        )
    if problems or cert is None or key is None:
        raise WebConfigError(source, problems)
    base = source.parent
    tls = TLSServerConfig(
        cert_file=_resolve(base, cert),
        key_file=_resolve(base, key),
        client_auth_type=auth_type,
        client_ca_file=_resolve(base, ca) if ca else None,
        min_version=min_version,
        max_version=max_version,
        prefer_server_cipher_suites=model.prefer_server_cipher_suites,
    )
    tls.ssl_context(source)  # proves that the files exist and load, or raises WebConfigError
    return tls


def load_web_config(path: str | Path) -> WebConfig:
    """Read, validate and return the web config at ``path``.

    Everything that can be checked before serving is checked here: the schema (unknown keys
    are refused), that every password is a bcrypt hash, and that the certificate, key and CA
    files exist and load. Any problem raises WebConfigError with a one-line-per-problem
    message; nothing else escapes, so a caller can print ``str(exc)`` and exit.
    """
    source = Path(path).absolute()
    try:
        raw = source.read_bytes()
    except FileNotFoundError:
        raise WebConfigError(source, ["file not found"]) from None
    except OSError as exc:
        raise WebConfigError(source, [f"cannot read: {exc.strerror or exc}"]) from None
    try:
        # Composed first, then constructed: the nodes give the line of each problem.
        loader = _UniqueKeyLoader(raw)  # a SafeLoader subclass
        try:
            root = loader.get_single_node()
            data = None if root is None else loader.construct_document(root)
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise WebConfigError(source, [_yaml_problem(exc)]) from None
    if data is None:
        data = {}  # an empty file, like no file: plain HTTP without auth
    if not isinstance(data, dict):
        raise WebConfigError(source, ["(top level): must be a mapping"])
    try:
        model = _WebConfigModel.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_input=False, include_url=False)
        raise WebConfigError(
            source, [(_line_of(root, e["loc"]), _pydantic_problem(e)) for e in errors]
        ) from None
    http = model.http_server_config
    return WebConfig(
        source=source,
        tls=_check_tls(source, model.tls_server_config) if model.tls_server_config else None,
        headers=dict(http.headers or {}) if http else {},
        basic_auth_users=dict(model.basic_auth_users or {}),
        unauthenticated_paths=frozenset(model.unauthenticated_paths or ()),
    )
