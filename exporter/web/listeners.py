"""Where the exporter listens: ``--web.listen-address`` (repeatable) or systemd's sockets.

Named and behaving as in the Prometheus exporter-toolkit: ``--web.listen-address`` may be given
several times and the exporter serves the same endpoints on each address; with
``--web.systemd-socket`` it serves on the sockets that systemd socket activation passed
(``LISTEN_PID``/``LISTEN_FDS``, file descriptors from 3 on) and ignores the listen addresses,
so that a ``.socket`` unit can own a privileged port or keep connections queued across
restarts.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Final

__all__ = [
    "DEFAULT_LISTEN",
    "Listener",
    "StartupError",
    "listen",
    "parse_listen_address",
    "systemd_sockets",
]

DEFAULT_LISTEN: Final = ":9866"
# sd_listen_fds(3): the first passed descriptor is always 3 (after stdin, stdout, stderr).
SD_LISTEN_FDS_START: Final = 3


class StartupError(Exception):
    """Serving cannot begin for a reason the operator can fix (a listen address that is not
    [host]:port or cannot be bound, no socket passed by systemd); the message says why, and no
    traceback is shown."""


def parse_listen_address(address: str) -> tuple[str | None, int]:
    """``:9866`` (all interfaces), ``127.0.0.1:9866`` or ``[::1]:9866``; else StartupError."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise StartupError(f"--web.listen-address {address!r} is not [host]:port")
    host = host.strip("[]")
    return (host or None), int(port_text)


def systemd_sockets(environ: MutableMapping[str, str] | None = None) -> list[socket.socket]:
    """The listening stream sockets systemd passed to this process, as sd_listen_fds(3) reads
    them; StartupError when there are none for this process or one is not a stream socket.

    The variables are removed afterwards (sd_listen_fds' ``unset_environment``), so that a
    process started later does not take the descriptors for its own.
    """
    env = os.environ if environ is None else environ
    pid_text, fds_text = env.get("LISTEN_PID", ""), env.get("LISTEN_FDS", "")
    if not (pid_text.isdigit() and int(pid_text) == os.getpid()):
        raise StartupError(
            "--web.systemd-socket: no socket was passed to this process (LISTEN_PID is "
            f"{pid_text or 'unset'}, this process is {os.getpid()}); start it from a systemd "
            ".socket unit, or leave the flag out and use --web.listen-address"
        )
    if not fds_text.isdigit() or int(fds_text) < 1:
        raise StartupError(f"--web.systemd-socket: LISTEN_FDS is {fds_text or 'unset'}")
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        env.pop(name, None)
    sockets = []
    for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + int(fds_text)):
        try:
            sock = socket.socket(fileno=fd)
        except OSError as exc:
            raise StartupError(
                f"--web.systemd-socket: descriptor {fd} is not a socket ({exc.strerror})"
            ) from None
        if sock.type != socket.SOCK_STREAM:
            raise StartupError(
                f"--web.systemd-socket: descriptor {fd} is not a stream socket "
                "(use ListenStream= in the .socket unit)"
            )
        sockets.append(sock)
    return sockets


@dataclass(frozen=True)
class Listener:
    """One place to serve: a ``[host]:port`` to bind, or a socket that is already bound."""

    name: str
    address: tuple[str | None, int] | None = None
    sock: socket.socket | None = None

    @classmethod
    def plan(cls, addresses: Sequence[str], systemd: bool) -> list[Listener]:
        """The listeners the flags ask for, every address checked before anything is bound."""
        if systemd:
            return [cls(f"systemd socket fd {s.fileno()}", sock=s) for s in systemd_sockets()]
        return [cls(a, address=parse_listen_address(a)) for a in addresses]


async def listen(
    listeners: Sequence[Listener],
    protocol_factory: Callable[[], asyncio.Protocol],
) -> list[asyncio.Server]:
    """Start serving on every listener, or on none: when one cannot be opened the ones already
    open are closed and StartupError names the address and the reason. No TLS here: the
    connection guard does the handshake, so that handshakes count toward its limit."""
    loop = asyncio.get_running_loop()
    servers: list[asyncio.Server] = []
    for listener in listeners:
        try:
            if listener.sock is not None:
                server = await loop.create_server(protocol_factory, sock=listener.sock)
            else:
                host, port = listener.address or (None, 0)
                server = await loop.create_server(protocol_factory, host, port)
        except (OSError, ValueError) as exc:  # ValueError: a host name that IDNA refuses
            for opened in servers:
                opened.close()
            reason = getattr(exc, "strerror", None) or str(exc)
            raise StartupError(f"cannot listen on {listener.name}: {reason}") from None
        servers.append(server)
    return servers
