"""TLS for ``--web.config.file``: the server's SSL context, built from the files it names.

Where Python's ``ssl`` module cannot do what Go's ``crypto/tls`` does, the web config refuses
the setting or does something stricter, never something weaker; see docs/web-config.md. This
module knows the files and their problems, not the web config file: a problem is a
:class:`TLSFileError` naming the ``tls_server_config`` key it concerns.

Certificates rotate without a restart, as with exporter-toolkit (which reads the files again
for every new connection): :func:`reloading_context` looks at the files' identity (inode, size,
modification time) at each TLS handshake and, when one has changed, builds a new context from
them; connections from then on get the new certificate. Files that cannot be used (a rotation
half done, a key that does not match) are logged and the previous certificate keeps serving.
"""

from __future__ import annotations

import logging
import os
import ssl
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Final, NoReturn

__all__ = [
    "CLIENT_AUTH_TYPES",
    "TLS_VERSIONS",
    "TLSFileError",
    "reloading_context",
    "server_context",
]

log = logging.getLogger(__name__)

TLS_VERSIONS: Final[Mapping[str, ssl.TLSVersion]] = MappingProxyType(
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
# client_ca_file, which is stricter, and the web config requires that file.
CLIENT_AUTH_TYPES: Final[Mapping[str, ssl.VerifyMode]] = MappingProxyType(
    {
        "NoClientCert": ssl.CERT_NONE,
        "RequestClientCert": ssl.CERT_NONE,
        "RequireAnyClientCert": ssl.CERT_REQUIRED,
        "RequireClientCert": ssl.CERT_REQUIRED,
        "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
        "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
    }
)


class TLSFileError(Exception):
    """A certificate, key or CA file that cannot be used; ``key`` is its config key."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


def server_context(
    *,
    cert_file: Path,
    key_file: Path,
    client_ca_file: Path | None,
    client_auth_type: str,
    min_version: ssl.TLSVersion,
    max_version: ssl.TLSVersion,
    prefer_server_cipher_suites: bool,
) -> ssl.SSLContext:
    """A server context from the files as they are now; TLSFileError if one is unusable.

    Built from ``ssl.SSLContext(PROTOCOL_TLS_SERVER)`` rather than
    ``ssl.create_default_context``, which would honour ``SSLKEYLOGFILE`` and write the session
    keys of every scrape to a file named by the environment.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():
        # Python deprecates TLS 1.0/1.1; the operator asked for it explicitly, so the
        # DeprecationWarning would only be noise (OpenSSL may still refuse them).
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = min_version
        ctx.maximum_version = max_version
    if prefer_server_cipher_suites:
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        ctx.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    _load_cert_chain(ctx, cert_file, key_file)
    if client_ca_file is not None:
        _check_readable_file("client_ca_file", client_ca_file)
        try:
            ctx.load_verify_locations(cafile=client_ca_file)
        except (ssl.SSLError, OSError):
            raise TLSFileError(
                "client_ca_file", f"no PEM CA certificate found in {client_ca_file}"
            ) from None
    ctx.verify_mode = CLIENT_AUTH_TYPES[client_auth_type]
    return ctx


def _refuse_key_password() -> NoReturn:
    # Without a password callback OpenSSL would prompt on the terminal for an encrypted key and
    # hang a daemon; exporter-toolkit does not support encrypted keys either.
    raise _EncryptedKeyError


class _EncryptedKeyError(Exception):
    pass


def _check_readable_file(key: str, path: Path) -> None:
    if not path.exists():
        raise TLSFileError(key, f"file not found: {path}")
    if not path.is_file():
        raise TLSFileError(key, f"not a regular file: {path}")
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise TLSFileError(key, f"cannot read {path}: {exc.strerror or exc}") from None


def _load_cert_chain(ctx: ssl.SSLContext, cert: Path, key: Path) -> None:
    _check_readable_file("cert_file", cert)
    _check_readable_file("key_file", key)
    # OpenSSL reports both a bad certificate and a bad key as "PEM lib"; parsing the certificate
    # on its own first tells the two apart.
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_verify_locations(cafile=cert)
    except (ssl.SSLError, OSError):
        raise TLSFileError("cert_file", f"no PEM certificate found in {cert}") from None
    try:
        ctx.load_cert_chain(cert, key, password=_refuse_key_password)
    except _EncryptedKeyError:
        raise TLSFileError("key_file", f"encrypted private keys are not supported: {key}") from None
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            problem = f"private key {key} does not match the certificate {cert}"
        else:
            problem = f"no usable PEM private key found in {key}"
        raise TLSFileError("key_file", problem) from None
    except OSError as exc:
        raise TLSFileError("key_file", f"cannot load {key}: {exc.strerror or exc}") from None


_Stamp = tuple[tuple[int, int, int] | None, ...]


def _stamp(files: Sequence[Path]) -> _Stamp:
    """What tells a changed file: inode (a file replaced by rename, a Kubernetes secret's
    symlink swap), size and modification time; None for a file that is missing now."""
    stamps: list[tuple[int, int, int] | None] = []
    for path in files:
        try:
            stat = os.stat(path)
        except OSError:
            stamps.append(None)
        else:
            stamps.append((stat.st_ino, stat.st_size, stat.st_mtime_ns))
    return tuple(stamps)


class _Rotation:
    """The context handshakes are served with, rebuilt when the files change."""

    def __init__(
        self, build: Callable[[], ssl.SSLContext], files: Sequence[Path], source: str
    ) -> None:
        self._build, self._files, self._source = build, tuple(files), source
        self._stamp = _stamp(self._files)
        self.current = build()

    def select(self, connection: ssl.SSLObject, _server_name: str | None, _: object) -> None:
        """``sni_callback``: called at every ClientHello, with or without SNI; it hands the
        connection the current context (certificate, key, client CA)."""
        stamp = _stamp(self._files)
        if stamp != self._stamp:
            self._stamp = stamp  # the next change, not the next handshake, tries again
            try:
                self.current = self._build()
            except TLSFileError as exc:
                log.warning(
                    "TLS files changed but cannot be used; still serving the previous ones",
                    extra={"source": self._source, "problem": f"tls_server_config.{exc}"},
                )
            else:
                log.info(
                    "TLS files changed: serving the new certificate", extra={"source": self._source}
                )
        connection.context = self.current


def reloading_context(
    build: Callable[[], ssl.SSLContext], files: Sequence[Path], source: str
) -> ssl.SSLContext:
    """A server context that serves each handshake with ``build()``'s context from the
    ``files`` as they are at that handshake (rebuilt only when one changed).

    TLSFileError if the files cannot be used now. ``source`` names the web config in logs.
    """
    rotation = _Rotation(build, files, source)
    listening = build()  # its settings (versions, client auth) apply before the switch
    listening.sni_callback = rotation.select
    return listening
