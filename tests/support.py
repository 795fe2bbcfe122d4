"""Helpers shared by the test modules that run real processes or read the shipped artefacts.

Free loopback ports, subprocess servers with their output in a log file, waits that poll
against a deadline (never a fixed sleep), the Prometheus tools (skipped when absent unless
``CHAT_UNREAD_REQUIRE_PROMETHEUS=1``), YAML loading, and the demo exporter's data set.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
"""The repository's top folder."""
EXE = Path(sys.executable).parent / "chat-unread-exporter"
"""The installed console script, next to the running interpreter (the venv)."""
REQUIRE_PROMETHEUS = os.environ.get("CHAT_UNREAD_REQUIRE_PROMETHEUS") == "1"
"""Set in CI: a missing Prometheus tool fails the test instead of skipping it."""

# The demo's accounts and dialogs (docs/DESIGN-NOTES.md), as (provider, account, dialog).
DEMO_DIALOGS = frozenset(
    {
        ("crisp", "demo-crisp", "backlog"),
        ("crisp", "demo-crisp", "vip-visitor"),
        ("quickblox", "demo-quickblox", "all"),
        ("quickblox", "demo-quickblox", "escalations"),
        ("quickblox", "demo-quickblox", "sales"),
        ("imkit", "demo-imkit", "all"),
        ("imkit", "demo-imkit", "work"),
        ("sendbird", "demo-sendbird", "agent-42"),
        ("sendbird", "demo-sendbird", "agent-7"),
        ("intercom", "demo-intercom", "inbox"),
        ("intercom", "demo-intercom", "billing"),
        ("intercom", "demo-intercom", "alice"),
        ("stream", "demo-stream", "agent-42"),
        ("stream", "demo-stream", "agent-42-messaging"),
        ("stream", "demo-stream", "agent-7"),
        ("matrix", "demo-matrix", "all"),
        ("matrix", "demo-matrix", "support"),
    }
)
DEMO_ACCOUNTS = sorted({account for _provider, account, _dialog in DEMO_DIALOGS})

# Per-dialog series (docs/DESIGN-NOTES.md): labelled provider, account and dialog; served by
# /metrics and /probe, never by /exporter-metrics.
DIALOG_METRICS = (
    "chat_unread_messages",
    "chat_unread_mentions",
    "chat_unread_invitations",
    "chat_unread_conversations",
    "chat_unread_oldest_unread_timestamp_seconds",
    "chat_unread_up",
    "chat_unread_last_success_timestamp_seconds",
)
# The shipped Prometheus configs' jobs, and the self-metrics path (no upstream fetch).
EXPORTER_JOB = "chat-unread-exporter"
PROBE_JOB = f"{EXPORTER_JOB}-probe"
SELF_METRICS_PATH = "/exporter-metrics"

T = TypeVar("T")


# --------------------------------------------------------------------------------------------
# Files and tools


def load_mapping(path: Path) -> dict[str, Any]:
    """A YAML file's content, required to be a mapping."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{path}: expected a YAML mapping"
    return cast(dict[str, Any], data)


def find_tool(name: str) -> str | None:
    """A tool next to the running interpreter (the venv) or on PATH; None when neither has it."""
    candidate = Path(sys.executable).parent / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    return shutil.which(name)


def prometheus_tool(name: str) -> str:
    """Path of prometheus / promtool / amtool; skip (fail under REQUIRE_PROMETHEUS) if absent."""
    path = find_tool(name)
    if path is None:
        message = f"{name} not installed (Debian packages prometheus, prometheus-alertmanager)"
        if REQUIRE_PROMETHEUS:
            pytest.fail(f"{message}, and CHAT_UNREAD_REQUIRE_PROMETHEUS=1 requires it")
        pytest.skip(message)
    return path


# --------------------------------------------------------------------------------------------
# Loopback networking


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def accepts_connections(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:``port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """GET ``url``: (status, body), error statuses included; OSError when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """The status a GET of ``url`` answers with, or None when nothing answers."""
    try:
        return http_get(url, timeout)[0]
    except OSError:
        return None


# --------------------------------------------------------------------------------------------
# Subprocess servers and waits


@dataclass
class Server:
    """A subprocess listening on a loopback port, with its combined output in a log file."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self, tail: int = 6000) -> str:
        """The end of what the process has written so far."""
        return self.log.read_text(encoding="utf-8", errors="replace")[-tail:]

    def check_alive(self, what: str = "") -> None:
        """Fail with the process's output if it has exited."""
        code = self.process.poll()
        if code is not None:
            during = f" while waiting for {what}" if what else ""
            pytest.fail(f"{self.name} exited with {code}{during}:\n{self.output()}")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within 10 s."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_server(
    name: str, command: Sequence[str], port: int, log_dir: Path, cwd: Path | None = None
) -> Server:
    """Start ``command`` (which listens on ``port``), its output in ``log_dir``/``name``.log."""
    log = log_dir / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            list(command), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=cwd
        )
    return Server(name, port, process, log)


def poll(
    check: Callable[[], T | None],
    what: str,
    *,
    timeout: float,
    servers: Sequence[Server] = (),
    interval: float = 0.25,
) -> T:
    """Call ``check`` until it returns something other than None, and return that.

    Fails with the servers' output when one of them exits, or when ``timeout`` seconds pass.
    """
    deadline = time.monotonic() + timeout
    while True:
        for server in servers:
            server.check_alive(what)
        result = check()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            logs = "".join(f"\n--- {s.name}\n{s.output()}" for s in servers)
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}{logs}")
        time.sleep(interval)


def wait_for(
    condition: Callable[[], bool],
    what: str,
    *,
    timeout: float = 30.0,
    servers: Sequence[Server] = (),
) -> None:
    """Wait until ``condition()`` is true, as ``poll`` does."""
    poll(lambda: True if condition() else None, what, timeout=timeout, servers=servers)


def wait_ready(server: Server, path: str = "/-/ready", timeout: float = 30.0) -> None:
    """Wait until ``server`` answers GET ``path`` with 200."""
    wait_for(
        lambda: http_status(server.url + path) == 200,
        f"{server.name} to answer {path}",
        timeout=timeout,
        servers=[server],
    )
