"""The standing attack suite for the HTTP side (issue 9, rows 5, 8, 9, 10, 11 and 12).

Each test plays a client crafted to break the server: slow or idle connections, malformed
heads, fuzzed Accept and Authorization headers, state-changing requests without credentials.
Most start the real console script in demo mode and talk raw HTTP over loopback sockets; the
basic-auth cost tests run the real app in-process, where the web config's counters of bcrypt
work can be read. Every loop is bounded; no function of the exporter is patched.
"""

from __future__ import annotations

import asyncio
import base64
import os
import random
import resource
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

import aiohttp
import bcrypt
import pytest
import trustme
from aiohttp import web
from aiohttp.test_utils import TestClient

from exporter.simulator import Simulator
from exporter.web.app import make_app
from exporter.web.webconfig import WebConfig, WebConfigError, load_web_config
from tests.support import (
    EXE,
    ClientFactory,
    ExporterFactory,
    ScrapeClient,
    Server,
    config_yaml,
    free_port,
    http_status,
    wait_for,
    wait_ready,
)

HSTS = "max-age=31536000"
PASSWORD = "scrape-password"
# The exposition formats and versions the exporter writes.
SERVED_VERSIONS = {
    "text/plain": {"0.0.4", "1.0.0"},
    "application/openmetrics-text": {"1.0.0", "2.0.0"},
}


def cheap_hash(password: str, cost: int = 4) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=cost)).decode()


@contextmanager
def exporter(
    tmp_path: Path, *args: str, open_files: int | None = None, tls: ssl.SSLContext | None = None
) -> Iterator[Server]:
    """The demo exporter on a free port; ``open_files`` lowers its RLIMIT_NOFILE; ``tls``:
    the client context to check it is up with, when its web config (in ``args``) sets TLS."""
    port = free_port()

    def limit_files() -> None:
        if open_files is not None:
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, hard))

    log = tmp_path / f"exporter-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(EXE), "--demo", f"--web.listen-address=127.0.0.1:{port}", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=limit_files,
        )
    server = Server("exporter", port, process, log)
    try:
        if tls is None:
            wait_ready(server, "/-/healthy")
        else:
            url = f"https://127.0.0.1:{port}/-/healthy"
            wait_for(lambda: https_status(url, tls) == 200, "/-/healthy", servers=[server])
        yield server
    finally:
        server.stop()


def connect(port: int, head: bytes = b"", timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    if head:
        sock.sendall(head)
    return sock


def read_response(sock: socket.socket) -> bytes:
    """Everything until the server closes (requests here say Connection: close)."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def request(port: int, raw: bytes, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """Send one raw request; (status, headers with lower-case names, body)."""
    with connect(port, raw, timeout) as sock:
        response = read_response(sock)
    head, _, body = response.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, content = line.partition(":")
        headers[name.strip().lower()] = content.strip()
    return int(status_line.split()[1]), headers, body


def get(port: int, target: str, *headers: str, method: str = "GET") -> tuple[int, dict[str, str]]:
    lines = [f"{method} {target} HTTP/1.1", "Host: x", "Connection: close", *headers]
    status, response_headers, _ = request(port, ("\r\n".join(lines) + "\r\n\r\n").encode())
    return status, response_headers


def is_closed(sock: socket.socket) -> bool:
    """Whether the server has closed ``sock``, reading (and dropping) what it sent before."""
    sock.setblocking(False)
    try:
        return any(not sock.recv(65536) for _ in range(1000))
    except BlockingIOError:
        return False
    except ConnectionError:
        return True
    finally:
        sock.setblocking(True)


def open_fds(server: Server) -> int:
    return len(list(Path(f"/proc/{server.process.pid}/fd").iterdir()))


def close_all(socks: Sequence[socket.socket]) -> None:
    for sock in socks:
        sock.close()


# --------------------------------------------------------------------------------------------
# Row 5: slow and idle connections, malformed heads


def test_slow_heads_at_a_low_open_file_limit_leave_healthy_answering(tmp_path: Path) -> None:
    # 300 clients dribbling header lines, against 256 open files: before, accept() failed with
    # EMFILE, /-/healthy went unanswered and asyncio logged each failure with a traceback.
    with exporter(tmp_path, open_files=256) as server:
        slow = [connect(server.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n") for _ in range(300)]
        try:
            for round_ in range(3):
                for sock in slow:
                    with suppress(OSError):  # dropped by the server: the point
                        sock.sendall(f"X-Slow-{round_}: 1\r\n".encode())
                assert http_status(f"{server.url}/-/healthy", timeout=5) == 200
                time.sleep(0.3)
            assert open_fds(server) < 256
        finally:
            close_all(slow)
        server.check_alive()
        log = server.output(tail=10**7)
        assert len(log) < 20_000, log[-3000:]
        assert log.count("Traceback") <= 2


def test_slow_heads_are_dropped_within_the_header_timeout(tmp_path: Path) -> None:
    with exporter(tmp_path, "--web.read-header-timeout=1") as server:
        slow = [connect(server.port, b"GET /metrics HTTP/1.1\r\n") for _ in range(50)]
        try:
            started = time.monotonic()
            for _ in range(40):  # a header byte every 0.1 s: never a complete head
                if all(is_closed(sock) for sock in slow):
                    break
                for sock in slow:
                    with suppress(OSError):
                        sock.sendall(b"X")
                time.sleep(0.1)
            assert all(is_closed(sock) for sock in slow)
            assert time.monotonic() - started < 3
            assert http_status(f"{server.url}/-/healthy") == 200
        finally:
            close_all(slow)


def test_a_slow_body_does_not_hold_the_connection(tmp_path: Path) -> None:
    head = b"POST /-/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n"
    with exporter(tmp_path, "--web.read-header-timeout=1") as server, connect(server.port) as sock:
        sock.sendall(head)
        started = time.monotonic()
        for _ in range(40):
            try:
                sock.sendall(b"x")
            except OSError:
                break
            if is_closed(sock):
                break
            time.sleep(0.1)
        assert is_closed(sock)
        assert time.monotonic() - started < 3.5


def test_idle_keep_alive_connections_are_bounded(tmp_path: Path) -> None:
    args = ("--web.max-connections=20", "--web.read-header-timeout=60", "--web.write-timeout=2")
    with exporter(tmp_path, *args) as server:
        baseline = open_fds(server)
        idle = []
        try:
            for _ in range(60):  # each makes one keep-alive request, then stays idle
                sock = connect(server.port, b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
                assert sock.recv(4096).startswith(b"HTTP/1.1 200")
                idle.append(sock)
            wait_for(lambda: open_fds(server) <= baseline + 20, "idle connections to be closed")
            assert sum(not is_closed(sock) for sock in idle) <= 20
            assert not is_closed(idle[-1]), "the newest connections are kept"
            assert http_status(f"{server.url}/-/healthy") == 200
        finally:
            close_all(idle)


def non_reading_client(port: int, requests: int = 500) -> socket.socket:
    """A client that pipelines complete ``GET /metrics`` requests and never reads: the
    answers (about 20 kB each) fill its small receive buffer and the server's send buffers,
    and the server's writes block."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * requests)
    return sock


def send_queues(port: int) -> list[int]:
    """Bytes the kernel holds unsent on each connection of the server on loopback ``port``."""
    local = f"0100007F:{port:04X}"
    rows = [row.split() for row in Path("/proc/net/tcp").read_text().splitlines()[1:]]
    # Columns: sl, local, remote, state (01: established), tx_queue:rx_queue, ...
    return [int(row[4].split(":")[0], 16) for row in rows if row[1] == local and row[3] == "01"]


def wait_until_blocked(server: Server, clients: int) -> None:
    """Until the server has stopped writing to ``clients`` connections: their buffers are full
    (the kernel's send queues non-empty and no longer moving)."""
    last: list[int] = []

    def blocked() -> bool:
        nonlocal last
        queues, last = last, send_queues(server.port)
        return len(last) == clients and min(last) > 0 and queues == last

    wait_for(blocked, f"{clients} connections held by clients that do not read")


def test_clients_that_do_not_read_are_dropped_and_replaced(tmp_path: Path) -> None:
    # Before, a connection whose answers were never read served its request for ever: it
    # was never the one replaced, so with every slot so held /-/healthy was refused for as
    # long as the clients stayed, and each held a handler and its body.
    args = ("--web.max-connections=4", "--web.read-header-timeout=60", "--web.write-timeout=3")
    with exporter(tmp_path, *args) as server:
        readers = [non_reading_client(server.port) for _ in range(4)]
        try:
            wait_until_blocked(server, 4)
            # Health checks get through: the connection blocked longest is replaced.
            for _ in range(3):
                assert http_status(f"{server.url}/-/healthy") == 200
            # And a client that reads nothing for --web.write-timeout is dropped.
            wait_for(lambda: not send_queues(server.port), "the non-reading clients to go")
        finally:
            close_all(readers)
        server.check_alive()


def test_a_client_just_arrived_is_not_replaced_before_one_that_reads_nothing(
    tmp_path: Path,
) -> None:
    # Before, at the limit a new connection replaced the one that had waited longest for a
    # request head, however briefly, ahead of any whose client had read nothing for seconds.
    # With the other slots held by clients that do not read, a scrape or health check whose
    # head had not been read yet was cut off by the next client to connect (the chaos run's
    # failed scrape and failed health checks during its bursts).
    args = ("--web.max-connections=4", "--web.read-header-timeout=60", "--web.write-timeout=60")
    with exporter(tmp_path, *args) as server:
        readers = [non_reading_client(server.port) for _ in range(3)]
        try:
            wait_until_blocked(server, 3)
            # The fourth slot: a client whose head is on its way (not complete yet).
            with connect(server.port, b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n") as arriving:
                # A fifth client takes the place of a client that has read nothing for longest.
                assert http_status(f"{server.url}/-/healthy") == 200
                try:
                    arriving.sendall(b"Connection: close\r\n\r\n")
                    answer = read_response(arriving)
                except ConnectionError as exc:
                    pytest.fail(f"the arriving client was cut off: {exc!r}")
                assert answer.startswith(b"HTTP/1.1 200"), answer[:100]
        finally:
            close_all(readers)
        server.check_alive()


@pytest.fixture(scope="module")
def mtls(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ssl.SSLContext]:
    """A web config file requiring client certificates, and a client context that has one."""
    directory = tmp_path_factory.mktemp("mtls")
    ca = trustme.CA()
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
        str(directory / "server.pem")
    )
    ca.cert_pem.write_to_path(str(directory / "ca.crt"))
    web_config = directory / "web.yml"
    web_config.write_text(
        "tls_server_config:\n"
        f"  cert_file: {directory / 'server.pem'}\n"
        f"  key_file: {directory / 'server.pem'}\n"
        "  client_auth_type: RequireAndVerifyClientCert\n"
        f"  client_ca_file: {directory / 'ca.crt'}\n"
    )
    client = ssl.create_default_context()
    ca.configure_trust(client)
    ca.issue_cert("client.example.org").configure_cert(client)
    return web_config, client


def https_status(url: str, context: ssl.SSLContext) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=5, context=context) as response:
            return int(response.status)
    except OSError:  # refused, reset, timed out, or a handshake that failed
        return None


def test_stalled_tls_handshakes_are_counted_and_bounded(
    tmp_path: Path, mtls: tuple[Path, ssl.SSLContext]
) -> None:
    # Before, asyncio handed a TLS connection to the guard only once its handshake was
    # done: 300 connections that never sent a ClientHello took the exporter to its open-file
    # limit, and health checks over mutual TLS failed 3 times in 5.
    web_config, client = mtls
    args = (f"--web.config.file={web_config}",)
    with exporter(tmp_path, *args, open_files=128, tls=client) as server:
        url = f"https://127.0.0.1:{server.port}/-/healthy"
        stalled = []
        try:
            for _ in range(300):  # a TCP connection, then not a byte
                sock = socket.socket()
                sock.setblocking(False)
                sock.connect_ex(("127.0.0.1", server.port))
                stalled.append(sock)
            wait_for(lambda: len(send_queues(server.port)) <= 64, "at most 64 to be kept")
            for _ in range(5):
                assert https_status(url, client) == 200
            assert open_fds(server) < 128
        finally:
            close_all(stalled)
        server.check_alive()
        assert server.output(tail=10**7).count("Traceback") <= 2


@pytest.mark.parametrize(
    "head",
    [
        b"GET /metrics HTTP/1.1\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(300)) + b"\r\n",
        b"GET /" + b"m" * 20_000 + b" HTTP/1.1\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nBad Header: x\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nX: \x00\x01\r\n\r\n",
        b"GET /metrics HTTP/9.9\r\n\r\n",
    ],
    ids=["huge-header", "many-headers", "huge-target", "space-in-name", "nul", "version"],
)
def test_malformed_heads_get_a_4xx_without_a_traceback_each(tmp_path: Path, head: bytes) -> None:
    with exporter(tmp_path) as server:
        for _ in range(50):
            status, _, _ = request(server.port, head)
            assert 400 <= status < 500
        assert http_status(f"{server.url}/-/healthy") == 200
        assert server.output(tail=10**7).count("Traceback") <= 1


def test_weird_methods_are_refused(tmp_path: Path) -> None:
    with exporter(tmp_path, "--web.disable-reload") as server:
        for method in ("PUT", "DELETE", "PATCH", "TRACE", "PROPFIND", "X" * 100, "get"):
            for path in ("/metrics", "/-/reload", "/-/healthy"):
                status, _ = get(server.port, path, method=method)
                assert status in (400, 405, 501), (method, path, status)
        # POST is refused by --web.disable-reload, with or without a body.
        assert get(server.port, "/-/reload", method="POST")[0] == 403
        assert get(server.port, "/-/reload", "Content-Length: 0", method="POST")[0] == 403
        assert server.output().count("Traceback") == 0


# --------------------------------------------------------------------------------------------
# Rows 8 and 12: what a basic-auth attempt costs; who may reload


def two_cost_users(directory: Path) -> WebConfig:
    """alice with a cost 4 hash, bob with a cost 6 hash; /-/healthy open."""
    path = directory / "web.yml"
    path.write_text(
        "basic_auth_users:\n"
        f"  alice: '{cheap_hash(PASSWORD, 4)}'\n"
        f"  bob: '{cheap_hash(PASSWORD, 6)}'\n"
        "unauthenticated_paths: [/-/healthy]\n"
    )
    return load_web_config(path)


@pytest.fixture
async def guarded(
    sim: Simulator, exporter_for: ExporterFactory, aiohttp_client: ClientFactory, tmp_path: Path
) -> tuple[TestClient[web.Request, web.Application], WebConfig]:
    """The real app behind ``two_cost_users``, served on loopback, and its web config."""
    web_config = two_cost_users(tmp_path)
    exporter = await exporter_for(config_yaml(sim))
    return await aiohttp_client(make_app(exporter, web_config)), web_config


async def test_every_basic_auth_attempt_costs_the_same(
    guarded: tuple[TestClient[web.Request, web.Application], WebConfig],
) -> None:
    # Before, an unknown user cost a cost-6 check and alice's wrong password a cost-4 one:
    # 3 ms against 78 ms with real costs, which told that alice exists.
    client, web_config = guarded

    async def cost_of(user: str, password: str, expected: int) -> dict[int, int]:
        before = dict(web_config.hashes_checked)
        auth = aiohttp.encode_basic_auth(user, password)
        response = await client.get("/exporter-metrics", headers={"Authorization": auth})
        assert response.status == expected, (user, password)
        after = web_config.hashes_checked
        return {cost: n for cost in after if (n := after[cost] - before.get(cost, 0))}

    one_of_each = {4: 1, 6: 1}
    for user, password in [("alice", "wrong"), ("bob", "wrong"), ("mallory", "wrong")]:
        assert await cost_of(user, password, 401) == one_of_each, user
    assert await cost_of("mallory", PASSWORD, 401) == one_of_each
    assert await cost_of("alice", PASSWORD, 200) == one_of_each
    assert await cost_of("bob", PASSWORD, 200) == one_of_each
    # The verified cache answers only the exact (user, password) pair it has seen.
    assert await cost_of("alice", PASSWORD, 200) == {}
    assert await cost_of("alice", PASSWORD + "x", 401) == one_of_each
    assert await cost_of("mallory", PASSWORD, 401) == one_of_each


def fuzzed_authorization(rng: random.Random) -> str:
    """An Authorization value: right or wrong scheme, base64 of random text or not."""
    scheme = rng.choice(["Basic", "basic", "BASIC", "Basic ", "Bearer", "Digest", "", "Basic\t"])
    alphabet = "alice:bob:mallory:" + "".join(chr(c) for c in range(0x20, 0x7F))
    text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 120)))
    if rng.random() < 0.6:
        payload = base64.b64encode(text.encode()).decode()
        payload = payload.rstrip("=") if rng.random() < 0.2 else payload
    else:
        payload = text
    return f"{scheme} {payload}" if rng.random() < 0.9 else payload


async def test_fuzzed_authorization_headers_are_401_at_a_constant_cost(
    guarded: tuple[TestClient[web.Request, web.Application], WebConfig],
) -> None:
    client, web_config = guarded
    rng = random.Random(9)
    for _ in range(150):
        value = fuzzed_authorization(rng)
        response = await client.get("/metrics", headers={"Authorization": value})
        assert response.status == 401, value
        assert response.headers["WWW-Authenticate"] == 'Basic realm="chat-unread-exporter"'
    checked = web_config.hashes_checked
    # Whatever the header, a check that ran checked one hash of each cost.
    assert checked[4] == checked[6] == web_config.bcrypt_checks > 0


async def test_reload_needs_credentials_when_basic_auth_is_on(
    guarded: tuple[TestClient[web.Request, web.Application], WebConfig],
) -> None:
    client, _ = guarded
    assert (await client.post("/-/reload")).status == 401
    right = aiohttp.encode_basic_auth("alice", PASSWORD)
    assert (await client.post("/-/reload", headers={"Authorization": right})).status == 200
    assert (await client.get("/-/reload", headers={"Authorization": right})).status == 405


def test_reload_can_be_disabled(tmp_path: Path) -> None:
    with exporter(tmp_path) as server:
        assert get(server.port, "/-/reload", method="POST")[0] == 200  # the contract's default
    with exporter(tmp_path, "--web.disable-reload") as server:
        assert get(server.port, "/-/reload", method="POST")[0] == 403
        assert get(server.port, "/-/reload")[0] == 405
        server.process.send_signal(signal.SIGHUP)  # the operator's way still works
        assert http_status(f"{server.url}/-/ready") == 200


# --------------------------------------------------------------------------------------------
# Row 10: state-changing paths cannot be opened


@pytest.mark.parametrize("paths", ["[/metrics, /-/reload]", "\n  - /-/healthy\n  - /-/reload"])
def test_reload_cannot_be_an_unauthenticated_path(tmp_path: Path, paths: str) -> None:
    path = tmp_path / "web.yml"
    path.write_text(
        f"basic_auth_users:\n  alice: '{cheap_hash(PASSWORD)}'\nunauthenticated_paths: {paths}\n"
    )
    with pytest.raises(WebConfigError) as caught:
        load_web_config(path)
    line = 3 if paths.startswith("[") else 5
    assert caught.value.problems == (
        f"{path}:{line}: unauthenticated_paths[1]: /-/reload changes the exporter's state and "
        "always needs credentials when basic_auth_users is set (to turn it off, use "
        "--web.disable-reload)",
    )
    check = subprocess.run(
        [str(EXE), "--config.check", "--config.file", str(path), "--web.config.file", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.returncode == 1
    assert f"{path}:{line}: unauthenticated_paths[1]: /-/reload changes" in check.stderr
    assert "Traceback" not in check.stderr


# --------------------------------------------------------------------------------------------
# The web config file is untrusted input as the config file is: the same front-end bounds it


def laughs() -> str:
    """Billion laughs with lists: 9^6 strings from seven lines."""
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * 9)}]" for n in range(1, 7)]
    return "\n".join(lines) + "\n"


WEB_FILE_CASES = [
    pytest.param(
        laughs(),
        "{web}:6: l5: holds more than 100000 values once aliases and merge keys are expanded",
        id="sequence-bomb",
    ),
    pytest.param(
        "unauthenticated_paths: &a [/x, *a]\n",
        "{web}:1: unauthenticated_paths[1]: an alias refers to a collection that contains it",
        id="recursive-alias",
    ),
    pytest.param(
        "unauthenticated_paths: " + "[" * 600 + "]" * 600 + "\n",
        f"{{web}}:1: unauthenticated_paths{'[0]' * 11}...: nested more than 50 levels deep",
        id="flow-nesting-600",
    ),
    pytest.param(
        "basic_auth_users: !!python/object/apply:os.getpid []\n",
        "{web}:1: basic_auth_users: unsupported YAML: the tag "
        "'tag:yaml.org,2002:python/object/apply:os.getpid' is not allowed",
        id="python-tag",
    ),
]


@pytest.mark.parametrize(("text", "problem"), WEB_FILE_CASES)
def test_web_config_text_is_bounded(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "web.yml"
    path.write_text(text)
    with pytest.raises(WebConfigError) as caught:
        load_web_config(path)
    assert caught.value.problems == (problem.format(web=path),)


def test_web_config_file_is_read_bounded(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.yml"
    os.mkfifo(fifo)  # would block an open or a read forever
    huge = tmp_path / "huge.yml"
    with huge.open("wb") as file:
        file.truncate(2 * 1024 * 1024)  # sparse: costs no disk
    for path, reason in [(fifo, "not a regular file"), (huge, "larger than 1048576 bytes")]:
        with pytest.raises(WebConfigError) as caught:
            load_web_config(path)
        assert caught.value.problems == (f"{path}: cannot read the file: {reason}",)


# --------------------------------------------------------------------------------------------
# Row 9: configured headers on every response


def test_configured_headers_are_on_every_response(tmp_path: Path) -> None:
    web_config = tmp_path / "web.yml"
    web_config.write_text(
        "http_server_config:\n"
        f"  headers: {{Strict-Transport-Security: '{HSTS}', X-Frame-Options: deny}}\n"
        f"basic_auth_users:\n  alice: '{cheap_hash(PASSWORD)}'\n"
        "unauthenticated_paths: [/-/healthy]\n"
    )
    auth = "Authorization: " + aiohttp.encode_basic_auth("alice", PASSWORD)
    with exporter(tmp_path, "--web.config.file", str(web_config)) as server:
        for method, target, headers, expected in [
            ("GET", "/metrics", [auth], 200),
            ("GET", "/metrics", [auth, "Accept-Encoding: gzip"], 200),
            ("GET", "/probe?account=demo-crisp", [auth], 200),
            ("GET", "/probe?account=demo-crisp&debug=true", [auth], 200),
            ("GET", "/exporter-metrics", [auth], 200),
            ("GET", "/", [auth], 200),
            ("GET", "/-/ready", [auth], 200),
            ("GET", "/-/healthy", [], 200),
            ("POST", "/-/reload", [auth], 200),
            ("GET", "/metrics", [], 401),
            ("GET", "/nowhere", [auth], 404),
            ("GET", "/-/reload", [auth], 405),
            ("GET", "/probe?target=http://x", [auth], 400),
            ("GET", "/metrics", [auth, "X-Prometheus-Scrape-Timeout-Seconds: nope"], 400),
        ]:
            status, response_headers = get(server.port, target, *headers, method=method)
            assert status == expected, (method, target)
            assert response_headers.get("strict-transport-security") == HSTS, (method, target)
            assert response_headers.get("x-frame-options") == "deny", (method, target)


# --------------------------------------------------------------------------------------------
# Row 11: content negotiation


def fuzzed_accept(rng: random.Random) -> str:
    """An Accept header of media ranges with random, often broken, parameters."""
    pieces = ["abc", "", "1.0.0", "0.0.4", "2.0.0", "99", "1.0.0.0", "1.x", "1..0", "-1"]
    pieces.append("\u0661.\u0660")  # Arabic-Indic digits: int() accepts them
    ranges = []
    for _ in range(rng.randrange(1, 4)):
        media = rng.choice(
            ["application/openmetrics-text", "text/plain", "*/*", "text/*", "", "a/b"]
        )
        params = [
            f"{rng.choice(['version', 'escaping', 'q', 'charset', 'VERSION', 'version '])}"
            f"{rng.choice(['=', '', '=='])}{rng.choice([*pieces, 'allow-utf-8', 'dots'])}"
            for _ in range(rng.randrange(0, 4))
        ]
        ranges.append(";".join([media, *params]))
    return rng.choice([",", ", "]).join(ranges)


def test_any_accept_header_gets_a_served_format(tmp_path: Path) -> None:
    rng = random.Random(11)
    with exporter(tmp_path) as server:
        cases = [("/exporter-metrics", fuzzed_accept(rng)) for _ in range(150)]
        cases += [("/metrics", "application/openmetrics-text; version=abc")]
        cases += [("/probe?account=demo-crisp", fuzzed_accept(rng)) for _ in range(10)]
        for target, accept in cases:
            status, headers = get(server.port, target, f"Accept: {accept}")
            assert status == 200, accept
            media_type, *params = headers["content-type"].split("; ")
            version = params[0].removeprefix("version=")
            served = {
                "text/plain": {"0.0.4", "1.0.0"},
                "application/openmetrics-text": {"1.0.0", "2.0.0"},
            }
            assert version in served[media_type], (accept, headers["content-type"])
        assert "Traceback" not in server.output(tail=10**7)


# --------------------------------------------------------------------------------------------
# HEAD is answered per HTTP: headers, no body, no upstream fetch


async def read_until_closed(reader: asyncio.StreamReader) -> bytes:
    chunks = []
    while chunk := await reader.read(65536):
        chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize("gzip", [False, True], ids=["identity", "gzip"])
@pytest.mark.parametrize(
    "target",
    [
        "/metrics",
        "/probe?account=acme-crisp",
        "/probe?account=acme-crisp&debug=true",
        "/exporter-metrics",
    ],
)
async def test_head_answers_headers_only_and_fetches_nothing(
    sim: Simulator, scrape_client: ScrapeClient, target: str, gzip: bool
) -> None:
    # Before, HEAD ran the GET handler: it fetched every account and wrote the body without
    # framing, so the keep-alive client read the body where its next response should be.
    client = await scrape_client(config_yaml(sim))
    encoding = "Accept-Encoding: gzip\r\n" if gzip else ""
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(
        f"HEAD {target} HTTP/1.1\r\nHost: x\r\n{encoding}\r\n"
        "GET /-/healthy HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    )
    await writer.drain()
    answer = await read_until_closed(reader)
    writer.close()
    head, _, rest = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n"), answer[:300]
    # The next response starts right after the HEAD answer's headers, and parses whole.
    assert rest.startswith(b"HTTP/1.1 200 OK\r\n"), answer[:300]
    assert rest.endswith(b"\r\n\r\nHealthy\n"), answer[:300]
    assert sum(len(p.requests) for p in sim.providers) == 0
    # The headers are those of a GET to the same target.
    get_response = await client.get(target)
    head_type = next(
        line.split(b":", 1)[1].strip().decode()
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-type:")
    )
    assert head_type == get_response.headers["Content-Type"]
