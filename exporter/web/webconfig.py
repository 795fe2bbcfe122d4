"""``--web.config.file``: its schema and loading (TLS, basic auth and extra response headers).

The file uses the format of the Prometheus exporter-toolkit
(https://github.com/prometheus/exporter-toolkit/blob/master/docs/web-configuration.md) so that an
operator can reuse the web config they already have for node_exporter & co. One extension is
ours: a top-level ``unauthenticated_paths`` list (exact paths such as ``/-/healthy``) that
health probes may reach without credentials; it is empty by default, so that setting
``basic_auth_users`` protects every path unless the file says otherwise, and it can never
open ``/-/reload``, which changes the exporter's state.

The file is read once, at start: changing it takes a restart (``/-/reload`` and SIGHUP reload
the config file only). The certificate, key and CA files it names are different: they are
watched, and served anew from the first connection after they change. The file is read,
walked and bounded by :mod:`exporter.configuration.yamlfile`, as the config file is; the TLS
context is built by :mod:`exporter.web.tls` and basic auth is enforced by
:mod:`exporter.web.auth`.

Nothing here ever logs, prints or puts into an exception message a password or a password hash.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Final, NoReturn

from aiohttp import web
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from exporter.configuration.yamlfile import YamlFileError, YamlWalker, parse, read_text
from exporter.web.auth import REALM, BasicAuthGuard
from exporter.web.tls import (
    CLIENT_AUTH_TYPES,
    TLS_VERSIONS,
    TLSFileError,
    reloading_context,
    server_context,
)

__all__ = ["TLSServerConfig", "WebConfig", "WebConfigError", "load_web_config"]

# A web config holds a few users and paths; 1 MiB is room for thousands of users, and a bigger
# file is refused before it is read into memory.
MAX_WEB_CONFIG_BYTES: Final = 1024 * 1024

# Paths that change the exporter's state: ``unauthenticated_paths`` may not open them, so with
# basic auth configured nobody without credentials can make the exporter reload its config.
ALWAYS_AUTHENTICATED_PATHS: Final = frozenset({"/-/reload"})

_BCRYPT_HASH = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")

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


class WebConfigError(Exception):
    """A web config file that cannot be used.

    Each of ``problems`` names the file (and the line, where the problem is in the file's
    text), the field path and the problem, as config file problems do, e.g.
    ``/x/web.yml:7: unauthenticated_paths[1]: ...`` or
    ``/x/web.yml: tls_server_config.cert_file: file not found: /x/server.crt`` for a problem
    found outside the file's text. They never contain a password or a password hash, so they
    are safe to log and to print.
    """

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(f"web config {p}" for p in self.problems))


# --------------------------------------------------------------------------------------------
# The file's schema. Messages never quote the value: the line and the path show which it is.


def _check_bcrypt_hash(value: str) -> str:
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
        raise ValueError("must be an absolute path starting with '/'")
    if any(c in value for c in "?#") or any(ord(c) < 0x21 for c in value):
        raise ValueError("must be a bare path (no query, fragment or whitespace)")
    if value in ALWAYS_AUTHENTICATED_PATHS:
        raise ValueError(
            f"{value} changes the exporter's state and always needs credentials when "
            "basic_auth_users is set (to turn it off, use --web.disable-reload)"
        )
    return value


def _one_of(names: Sequence[str]) -> str:
    return f"must be one of {', '.join(names)}"


def _check_client_auth_type(value: str) -> str:
    if value not in CLIENT_AUTH_TYPES:
        raise ValueError(_one_of([k for k in CLIENT_AUTH_TYPES if k != "RequireClientCert"]))
    return value


def _tls_version(value: object) -> object:
    if isinstance(value, str):
        if value not in TLS_VERSIONS:
            raise ValueError(_one_of(list(TLS_VERSIONS)))
        return TLS_VERSIONS[value]
    return value  # anything else is refused by the field's type


def _relative_to_the_file(path: Path, info: ValidationInfo) -> Path:
    """A file named in the config, relative to the config file's folder (as exporter-toolkit)."""
    base: Path | None = (info.context or {}).get("base_dir")
    return path if path.is_absolute() or base is None else base / path


def _toolkit_only(hint: str) -> AfterValidator:
    """Refuses an exporter-toolkit key this exporter does not implement, saying so: "unknown
    field" would puzzle a user who found the key in the upstream documentation."""

    def refuse(_: object) -> NoReturn:
        raise ValueError(f"exporter-toolkit option not supported by {REALM}; {hint}")

    return AfterValidator(refuse)


_BcryptHash = Annotated[str, AfterValidator(_check_bcrypt_hash)]
_UserName = Annotated[str, AfterValidator(_check_username)]
_UrlPath = Annotated[str, AfterValidator(_check_path)]
_ConfigFile = Annotated[Path, AfterValidator(_relative_to_the_file)]
_TLSVersion = Annotated[ssl.TLSVersion, BeforeValidator(_tls_version)]
_OPENSSL_DEFAULTS = "the OpenSSL defaults are used"


class _Strict(BaseModel):
    """Unknown keys are refused; a null or empty value means the key's default, as an unset
    key does in exporter-toolkit (Go's zero values)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _blank_means_default(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if value not in (None, "")}
        return data


class TLSServerConfig(_Strict):
    """``tls_server_config``, with file paths made absolute against the web config's folder."""

    cert_file: _ConfigFile | None = None
    key_file: _ConfigFile | None = None
    client_auth_type: Annotated[str, AfterValidator(_check_client_auth_type)] = "NoClientCert"
    client_ca_file: _ConfigFile | None = None
    min_version: _TLSVersion = ssl.TLSVersion.TLSv1_2
    max_version: _TLSVersion = ssl.TLSVersion.TLSv1_3
    prefer_server_cipher_suites: bool = True
    cert: Annotated[object, _toolkit_only("put the certificate in a file and use cert_file")] = None
    key: Annotated[object, _toolkit_only("put the key in a file and use key_file")] = None
    client_ca: Annotated[object, _toolkit_only("put the CA in a file and use client_ca_file")] = (
        None
    )
    cipher_suites: Annotated[object, _toolkit_only(_OPENSSL_DEFAULTS)] = None
    curve_preferences: Annotated[object, _toolkit_only(_OPENSSL_DEFAULTS)] = None
    client_allowed_sans: Annotated[
        object, _toolkit_only("issue client certificates from a dedicated CA instead")
    ] = None

    @property
    def configures_tls(self) -> bool:
        """False for a section that names no file and no client auth: as in exporter-toolkit,
        that means no TLS."""
        return bool(self.model_fields_set & {"cert_file", "key_file", "client_ca_file"}) or (
            "client_auth_type" in self.model_fields_set
        )

    def problems(self) -> list[tuple[str, str]]:
        """(key, problem) for each rule between keys that the section breaks."""
        problems: list[tuple[str, str]] = []
        for key in ("cert_file", "key_file"):
            if getattr(self, key) is None:
                problems.append((key, "required when TLS is configured"))
        auth_type = self.client_auth_type
        verifies = CLIENT_AUTH_TYPES[auth_type] != ssl.CERT_NONE
        if self.client_ca_file is not None and not verifies:
            problems.append(
                (
                    "client_ca_file",
                    f"set but client_auth_type is {auth_type}, which never verifies client "
                    "certificates; use RequireAndVerifyClientCert",
                )
            )
        if self.client_ca_file is None and verifies:
            why = (
                " (Python's ssl module cannot accept a client certificate without verifying it)"
                if auth_type in ("RequireAnyClientCert", "RequireClientCert")
                else ""
            )
            problems.append(("client_ca_file", f"required by client_auth_type {auth_type}{why}"))
        if self.min_version > self.max_version:
            names = {version: name for name, version in TLS_VERSIONS.items()}
            problems.append(
                (
                    "min_version",
                    f"{names[self.min_version]} is above max_version {names[self.max_version]}",
                )
            )
        return problems

    def ssl_context(self) -> ssl.SSLContext:
        """A server context from the files as they are now (TLSFileError if one is unusable)."""
        if self.cert_file is None or self.key_file is None:
            raise TLSFileError("cert_file", "required when TLS is configured")  # see problems()
        return server_context(
            cert_file=self.cert_file,
            key_file=self.key_file,
            client_ca_file=self.client_ca_file,
            client_auth_type=self.client_auth_type,
            min_version=self.min_version,
            max_version=self.max_version,
            prefer_server_cipher_suites=self.prefer_server_cipher_suites,
        )


class HTTPServerConfig(_Strict):
    """``http_server_config``."""

    # Accepted so that upstream files load; aiohttp serves HTTP/1.1 only, whatever it says.
    http2: bool = True
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("headers")
    @classmethod
    def _allowed_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, content in value.items():
            if name not in _ALLOWED_HEADERS:
                allowed = ", ".join(_ALLOWED_HEADERS)
                raise ValueError(f"header {name!r} can not be configured (allowed: {allowed})")
            choices = _ALLOWED_HEADERS[name]
            if content and choices and content not in choices:
                raise ValueError(f"{name}: {_one_of(choices)}")
            if any(c in content for c in "\r\n\0"):
                raise ValueError(f"{name}: value must be a single line")
        return value


class WebConfig(_Strict):
    """A validated web config: what ``--web.config.file`` asks of the HTTP server.

    ``WebConfig()`` is the "no file" configuration: plain HTTP, no auth, no extra headers. It
    is read once, at start, and immutable; its basic auth guard keeps the cache of verified
    credentials and the counters for as long as the process serves.
    """

    tls_server_config: TLSServerConfig | None = None
    http_server_config: HTTPServerConfig = Field(default_factory=HTTPServerConfig)
    # repr=False: the hashes must not end up in logs or tracebacks through repr().
    basic_auth_users: dict[_UserName, _BcryptHash] = Field(default_factory=dict, repr=False)
    unauthenticated_paths: frozenset[_UrlPath] = frozenset()
    rate_limit: Annotated[
        object, _toolkit_only("put a reverse proxy in front for rate limiting")
    ] = None
    _source: str = PrivateAttr("(no file)")
    _auth: BasicAuthGuard = PrivateAttr()

    @field_validator("tls_server_config")
    @classmethod
    def _tls_only_if_configured(cls, value: TLSServerConfig | None) -> TLSServerConfig | None:
        return value if value is not None and value.configures_tls else None

    def model_post_init(self, context: Any) -> None:
        if isinstance(context, dict) and "source" in context:
            self._source = context["source"]
        self._auth = BasicAuthGuard(self.basic_auth_users, self.unauthenticated_paths)

    @property
    def tls_enabled(self) -> bool:
        """True when the server must speak HTTPS (for log lines and URLs)."""
        return self.tls_server_config is not None

    @property
    def auth_enabled(self) -> bool:
        """True when requests need basic auth credentials."""
        return bool(self.basic_auth_users)

    def describe(self) -> str:
        """A one-line summary without secrets, for the startup log line."""
        parts = [f"tls={'on' if self.tls_enabled else 'off'}"]
        if self.tls_server_config is not None:
            parts.append(f"client_auth_type={self.tls_server_config.client_auth_type}")
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
        """A server-side SSL context, or None when the file configures no TLS.

        The files are read again on every call, so a context built after loading sees them as
        they are then; WebConfigError if they have become unusable since loading. The context
        follows the files afterwards: a certificate rotated on disk is served from the next
        connection on (:func:`exporter.web.tls.reloading_context`).
        """
        tls = self.tls_server_config
        if tls is None:
            return None
        files = [f for f in (tls.cert_file, tls.key_file, tls.client_ca_file) if f is not None]
        try:
            return reloading_context(tls.ssl_context, files, self._source)
        except TLSFileError as exc:
            raise WebConfigError([f"{self._source}: tls_server_config.{exc}"]) from None

    def install(self, app: web.Application) -> None:
        """Enforce basic auth on ``app`` and add the configured headers to its responses.

        Call before the app starts. The auth middleware goes first, so that every route,
        including ones answered by other middlewares, is protected. The headers are added
        when a response is prepared (``on_response_prepare``), the one hook every response
        of the app passes, streamed ones and errors (400, 401, 404, 405, 500) included; a
        middleware could not add them to a response its handler has already sent.
        """
        if self.auth_enabled:
            app.middlewares.insert(0, self._auth.middleware())
        headers = {name: value for name, value in self.http_server_config.headers.items() if value}
        if headers:

            async def add_headers(_: web.Request, response: web.StreamResponse) -> None:
                response.headers.update(headers)

            app.on_response_prepare.append(add_headers)


def load_web_config(path: str | Path) -> WebConfig:
    """Read, validate and return the web config at ``path``.

    Everything that can be checked before serving is checked here: the schema (unknown keys
    are refused), that every password is a bcrypt hash, and that the certificate, key and CA
    files exist and load. Any problem raises WebConfigError with a one-line-per-problem
    message; nothing else escapes, so a caller can print ``str(exc)`` and exit.
    """
    source = Path(path).absolute()
    walker = YamlWalker(str(source))
    try:
        data = parse(read_text(source, MAX_WEB_CONFIG_BYTES, "file"), walker)
    except YamlFileError as exc:
        raise WebConfigError(exc.problems) from None
    context = {"source": str(source), "base_dir": source.parent}
    config: WebConfig | None = None
    try:
        config = WebConfig.model_validate({} if data is None else data, context=context)
    except ValidationError as exc:
        walker.report(exc, data)
    tls = config.tls_server_config if config is not None else None
    if tls is not None:
        for key, problem in tls.problems():
            walker.problem(("tls_server_config", key), problem)
    if walker.problems:
        raise WebConfigError(walker.problems)
    assert config is not None  # validation failures were reported
    config.ssl_context()  # proves that the files exist and load, or raises WebConfigError
    return config
