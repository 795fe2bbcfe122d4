"""The console script as users run it: a subprocess on a free loopback port, nothing patched.

The tests that serve real configs own the simulated providers (started in this process, on
loopback), so they can break them between scrapes: error answers that echo credentials, hangs,
resets, rotated credentials. Every wait polls against a deadline; nothing relies on a fixed
sleep being long enough.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

import aiohttp
import bcrypt
import pytest

from exporter import __version__
from exporter.rendering.buildinfo import BUILD
from exporter.simulator import FakeProvider, FakeQuickBlox, Fault, Simulator
from tests.support import (
    DEMO_ACCOUNTS,
    DEMO_DIALOGS,
    EXE,
    IMKIT_TOKEN,
    QB_DIALOGS,
    QB_USER,
    Samples,
    assert_populated_values,
    config_yaml,
    dialog_values,
    free_port,
    parse,
    value,
)

DEADLINE = 10.0  # generous: only a broken exporter takes this long
FLAGS = (
    "--web.listen-address",
    "--config.file",
    "--log.level",
    "--log.format",
    "--web.config.file",
    "--web.disable-reload",
    "--web.read-header-timeout",
    "--web.max-connections",
    "--web.systemd-socket",
    "--web.telemetry-path",
    "--web.disable-exporter-metrics",
    "--web.external-url",
    "--web.route-prefix",
    "--config.check",
    "--demo",
)
T = TypeVar("T")


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the console script to completion (for commands that exit by themselves)."""
    result = subprocess.run(
        [str(EXE), *args], capture_output=True, text=True, timeout=30, cwd=cwd, check=False
    )
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    return result


async def eventually(
    check: Callable[[], Awaitable[T | None]], what: str, seconds: float = DEADLINE
) -> T:
    """Poll ``check`` until it returns something other than None, or fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        result = await check()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@dataclass
class Running:
    """A started exporter process and an HTTP client for it."""

    process: asyncio.subprocess.Process
    base_url: str
    http: aiohttp.ClientSession
    stdout_path: Path
    stderr_path: Path

    async def get(self, path: str, **headers: str) -> tuple[int, str]:
        async with self.http.get(self.base_url + path, headers=headers) as response:
            return response.status, await response.text()

    async def post(self, path: str) -> tuple[int, str]:
        async with self.http.post(self.base_url + path) as response:
            return response.status, await response.text()

    async def metrics(self, path: str = "/metrics") -> Samples:
        # A hanging upstream costs its account's timeout, not this (generous) scrape deadline.
        status, text = await self.get(path, **{"X-Prometheus-Scrape-Timeout-Seconds": "10"})
        assert status == 200, text
        return parse(text)

    def output(self) -> tuple[str, str]:
        return self.stdout_path.read_text(), self.stderr_path.read_text()

    async def stop(self) -> int:
        """SIGTERM, then the exit status, which must come within a few seconds."""
        self.process.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.process.wait(), timeout=5.0)


@asynccontextmanager
async def serving(
    tmp_path: Path,
    *args: str,
    env: Mapping[str, str] | None = None,
    command: Sequence[str] = (str(EXE),),
    startup: float = DEADLINE,
) -> AsyncIterator[Running]:
    """Start the exporter on a free loopback port; it is killed afterwards whatever happens.

    ``command`` runs it: the console script of this venv unless another installation is meant.
    ``startup`` is how long it may take to listen (longer where a plugin's import hangs).
    """
    port = free_port()
    stdout_path, stderr_path = tmp_path / "stdout.log", tmp_path / "stderr.log"
    with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            *command,
            f"--web.listen-address=127.0.0.1:{port}",
            *args,
            stdout=stdout,
            stderr=stderr,
            env={**os.environ, **(env or {})},
            cwd=tmp_path,
        )
    try:
        async with aiohttp.ClientSession() as http:
            running = Running(process, f"http://127.0.0.1:{port}", http, stdout_path, stderr_path)

            async def healthy() -> bool | None:
                if process.returncode is not None:
                    raise AssertionError(f"exporter exited: {running.output()}")
                try:
                    status, _ = await running.get("/-/healthy")
                except aiohttp.ClientConnectionError:
                    return None
                return True if status == 200 else None

            await eventually(healthy, "the exporter to listen", startup)
            yield running
    finally:
        if process.returncode is None:
            process.kill()
        await asyncio.wait_for(process.wait(), timeout=10.0)


def up_values(samples: Samples) -> dict[tuple[str, str, str], float]:
    """{(provider, account, dialog): chat_unread_up}."""
    return {
        (labels["provider"], labels["account"], labels["dialog"]): v
        for (name, frozen), v in samples.items()
        if name == "chat_unread_up"
        for labels in [dict(frozen)]
    }


# --------------------------------------------------------------------------------------------
# Commands that exit by themselves


def test_version() -> None:
    result = run_cli("--version")
    assert (result.returncode, result.stdout.strip()) == (0, f"chat-unread-exporter {__version__}")


def test_python_dash_m_runs_the_same_cli() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "--version"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (result.returncode, result.stdout.strip()) == (0, f"chat-unread-exporter {__version__}")


def test_help_names_every_flag() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for flag in FLAGS:
        assert flag in result.stdout
    assert "9866" in result.stdout  # the default listen address is documented


def valid_config_text() -> str:
    """Four accounts, eight dialogs, a secret from the environment; no server needed."""
    return """\
accounts:
  - name: acme-crisp
    provider: crisp
    website_id: 8c842203-7ed8-4e29-a608-7cf78a7d2fcc
    identifier: crisp-id
    key: ${CHECK_TEST_CRISP_KEY}
    dialogs:
      - name: backlog
      - name: vip
        session_id: session_1
  - name: qb
    provider: quickblox
    token: qb-token
    dialogs:
      - name: all
      - name: escalations
        dialog_id: 5d753421a28f9a2596cb0f98
  - name: im
    provider: imkit
    base_url: https://app.imkit.example
    client_key: im-client
    token: im-token
    dialogs:
      - name: all
      - name: work
        room_tags: [work]
  - name: sb
    provider: sendbird
    application_id: APP-1
    api_token: sb-token
    dialogs:
      - name: agent-42
        user_id: agent-42
      - name: agent-7
        user_id: agent-7
"""


def test_config_check_accepts_a_valid_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHECK_TEST_CRISP_KEY", "crisp-key-from-env")
    path = tmp_path / "config.yaml"
    path.write_text(valid_config_text())
    result = run_cli("--config.check", "--config.file", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"config {path} is valid: 4 accounts, 8 dialogs"


def test_config_check_refuses_an_invalid_file(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    text = valid_config_text().replace("token: qb-token\n", "token: qb-token\n    timeout: -1s\n")
    path.write_text(text)
    lines = text.splitlines()
    key_line = lines.index("    key: ${CHECK_TEST_CRISP_KEY}") + 1
    timeout_line = lines.index("    timeout: -1s") + 1
    result = run_cli("--config.check", f"--config.file={path}")  # the variable is unset too
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"config {path} is invalid:",
        f"  {path}:{key_line}: accounts[0].key: environment variable CHECK_TEST_CRISP_KEY "
        "is not set",
        f"  {path}:{timeout_line}: accounts[1].timeout: must not be negative",
    ]


def test_config_check_of_a_missing_file(tmp_path: Path) -> None:
    result = run_cli("--config.check", cwd=tmp_path)  # default --config.file: config.yaml
    assert result.returncode == 1
    assert "config.yaml: cannot read the config file: No such file or directory" in result.stderr


def test_config_check_covers_the_web_config(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(valid_config_text().replace("${CHECK_TEST_CRISP_KEY}", "k"))
    web = tmp_path / "web.yml"
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()
    web.write_text(f"basic_auth_users:\n  prometheus: '{hashed}'\n")
    base = ("--config.check", "--config.file", str(config), "--web.config.file")

    good = run_cli(*base, str(web))
    assert good.returncode == 0, good.stderr
    assert f"web config {web} is valid: tls=off basic_auth_users=1" in good.stdout

    web.write_text("basic_auth_users:\n  prometheus: not-a-hash\nbasic_auth: {}\n")
    bad = run_cli(*base, str(web))
    assert bad.returncode == 1
    assert f"web config {web} is invalid:" in bad.stderr
    assert "basic_auth_users.prometheus" in bad.stderr
    assert "basic_auth" in bad.stderr
    assert "not-a-hash" not in bad.stderr  # the value might be a pasted password

    missing = run_cli(*base, str(tmp_path / "nope.yml"))
    assert missing.returncode == 1
    nope = tmp_path / "nope.yml"
    assert (
        f"web config {nope} is invalid:\n  {nope}: cannot read the file: No such" in missing.stderr
    )


# --------------------------------------------------------------------------------------------
# Refusing to start


def test_invalid_config_at_startup_exits_1_listing_problems(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("accounts:\n  - name: x\n    provider: slack\nscrape_interval: 1m\n")
    result = run_cli("--config.file", str(path), f"--web.listen-address=127.0.0.1:{free_port()}")
    assert result.returncode == 1
    assert f"cannot start: config {path} is invalid:" in result.stderr
    assert f"{path}:3: accounts[0].provider: provider 'slack' is not known" in result.stderr
    assert f"{path}:4: scrape_interval: unknown field" in result.stderr


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.1:http", "127.0.0.1:70000", ""])
def test_invalid_listen_address_exits_1(address: str) -> None:
    result = run_cli("--demo", f"--web.listen-address={address}")
    assert result.returncode == 1
    assert f"cannot start: --web.listen-address {address!r} is not [host]:port" in result.stderr


def test_listen_address_in_use_exits_1() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("--demo", f"--web.listen-address=127.0.0.1:{port}")
    assert result.returncode == 1
    assert f"cannot start: cannot listen on 127.0.0.1:{port}: " in result.stderr
    assert "in use" in result.stderr


def test_listen_host_that_idna_refuses_exits_1() -> None:
    host = "a" * 64  # a label longer than DNS allows: a ValueError, not an OSError
    result = run_cli("--demo", f"--web.listen-address={host}:{free_port()}")
    assert result.returncode == 1
    assert "cannot start: cannot listen on " in result.stderr


def test_missing_web_config_file_exits_1(tmp_path: Path) -> None:
    missing = tmp_path / "web.yml"
    result = run_cli("--demo", "--web.config.file", str(missing))
    assert result.returncode == 1
    assert f"cannot start: web config {missing}: cannot read the file: No such" in result.stderr


def test_an_unexpected_error_shows_its_traceback(tmp_path: Path) -> None:
    """Only the foreseen refusals are one "cannot start" line; any other error propagates, so
    Python prints its traceback and the exit status is 1.

    The unexpected error is real, nothing patched: with its open-file limit at the few that
    Python needs to start, the exporter cannot make its event loop (an OSError, which used to
    be printed as "cannot start: [Errno 24] Too many open files" without a traceback). The
    lowest limit at which the interpreter itself starts is searched, as it varies by machine.
    """
    path = tmp_path / "config.yaml"
    path.write_text(valid_config_text().replace("${CHECK_TEST_CRISP_KEY}", "crisp-key"))
    command = [str(EXE), "--config.file", str(path), f"--web.listen-address=:{free_port()}"]
    for limit in range(4, 12):
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit)),  # noqa: B023
        )
        if "Fatal Python error" not in result.stderr:  # the interpreter started
            break
    assert result.returncode == 1, result.stderr
    assert "cannot start" not in result.stderr
    assert "Traceback (most recent call last):" in result.stderr
    assert "OSError: [Errno 24] Too many open files" in result.stderr


# --------------------------------------------------------------------------------------------
# Serving


async def test_demo_serves_every_provider(tmp_path: Path) -> None:
    async with serving(tmp_path, "--demo") as exporter:

        async def all_up() -> Samples | None:
            samples = await exporter.metrics()
            return samples if set(up_values(samples).values()) == {1.0} else None

        samples = await eventually(all_up, "every demo dialog to be up")
        assert up_values(samples) == dict.fromkeys(DEMO_DIALOGS, 1.0)
        served = {
            (labels["provider"], labels["account"], labels["dialog"])
            for (name, frozen), v in samples.items()
            # each dialog's value: unread messages, or waiting conversations (Intercom)
            if name in ("chat_unread_messages", "chat_unread_conversations") and v >= 0
            for labels in [dict(frozen)]
        }
        assert served == DEMO_DIALOGS
        assert value(samples, "chat_unread_exporter_build_info", **asdict(BUILD)) == 1.0
        assert value(samples, "chat_unread_exporter_config_last_reload_successful") == 1.0

        status, page = await exporter.get("/")
        assert status == 200
        assert "chat-unread-exporter" in page
        for account in DEMO_ACCOUNTS:
            assert f'href="/probe?account={account}"' in page
            probe_status, probe_text = await exporter.get(f"/probe?account={account}")
            assert probe_status == 200
            assert {a for _, a, _ in up_values(parse(probe_text))} == {account}
        assert await exporter.get("/-/healthy") == (200, "Healthy\n")
        assert await exporter.get("/-/ready") == (200, "Ready\n")

        assert await exporter.stop() == 0
        stdout, stderr = exporter.output()
        assert "Traceback" not in stdout + stderr
        assert 'msg="shutting down' in stderr


def replace_line(text: str, field: str, new: str) -> str:
    """Replace the one ``    field: ...`` line (an account's field) by ``    new``."""
    result, count = re.subn(rf"(?m)^    {field}: .*$", f"    {new}", text)
    assert count == 1, field
    return result


def config_with_secrets_outside(sim: Simulator, folder: Path, extra: str = "") -> str:
    """``config_yaml``'s four accounts, with credentials from the environment and from files.

    The files are named relative to the config file, except the Sendbird token's, which is
    absolute; the environment variables are those of :func:`secret_env`.
    """
    secrets = folder / "secrets"
    secrets.mkdir(exist_ok=True)
    (secrets / "crisp").write_text(sim.crisp.key + "\n")
    (secrets / "imkit").write_text(imkit_token(sim) + "\n")
    (folder / "sendbird").write_text(sim.sendbird.api_token + "\n")
    text = config_yaml(sim, extra)
    text = replace_line(text, "identifier", "identifier: ${T_CRISP_IDENTIFIER}")
    text = replace_line(text, "key", "key_file: secrets/crisp")
    text = replace_line(text, "api_key", "api_key: ${T_QB_API_KEY}")
    text = replace_line(text, "client_key", "client_key: ${T_IMKIT_CLIENT_KEY}")
    text = replace_line(text, "token", "token_file: secrets/imkit")
    text = replace_line(text, "api_token", f"api_token_file: {folder / 'sendbird'}")
    inline = [*secret_env(sim).values(), sim.crisp.key, imkit_token(sim), sim.sendbird.api_token]
    assert not [secret for secret in inline if secret in text]
    return text


def secret_env(sim: Simulator) -> dict[str, str]:
    return {
        "T_CRISP_IDENTIFIER": sim.crisp.identifier,
        "T_QB_API_KEY": sim.quickblox.api_key,
        "T_IMKIT_CLIENT_KEY": sim.imkit.client_key,
    }


def imkit_token(sim: Simulator) -> str:
    (token,) = sim.imkit.rooms
    return token


def without_dialog(samples: Samples, dialog: str) -> Samples:
    return {key: v for key, v in samples.items() if dict(key[1]).get("dialog") != dialog}


NEW_DIALOG = """\
      - name: agent-42-super
        user_id: agent-42
        channels: super_group
"""


async def test_real_config_sighup_reload_and_sigterm(sim: Simulator, tmp_path: Path) -> None:
    folder = tmp_path / "etc"
    folder.mkdir()
    config = folder / "config.yaml"
    text = config_with_secrets_outside(sim, folder)
    config.write_text(text)
    # cwd is tmp_path, not etc/: relative secret files must resolve against the config's folder.
    async with serving(tmp_path, "--config.file", str(config), env=secret_env(sim)) as exporter:
        samples = await exporter.metrics()
        assert_populated_values(samples)
        first_reload = value(
            samples, "chat_unread_exporter_config_last_reload_success_timestamp_seconds"
        )
        assert first_reload is not None

        # SIGHUP picks up a new dialog.
        config.write_text(text + NEW_DIALOG)
        exporter.process.send_signal(signal.SIGHUP)

        async def new_dialog_served() -> Samples | None:
            samples = await exporter.metrics()
            served = dialog_values(samples, "chat_unread_messages", "sendbird")
            return samples if "agent-42-super" in served else None

        samples = await eventually(new_dialog_served, "the reloaded config to serve")
        assert dialog_values(samples, "chat_unread_messages", "sendbird")["agent-42-super"] == 2.0
        assert dialog_values(samples, "chat_unread_mentions", "sendbird")["agent-42-super"] == 2.0
        assert value(samples, "chat_unread_exporter_config_last_reload_successful") == 1.0
        second_reload = value(
            samples, "chat_unread_exporter_config_last_reload_success_timestamp_seconds"
        )
        assert second_reload is not None
        assert second_reload > first_reload

        # A broken file: the old config keeps serving, and the failure shows.
        broken = text + NEW_DIALOG + "scrape_interval: 30s\n"
        config.write_text(broken)
        problem = f"{config}:{broken.count(chr(10))}: scrape_interval: unknown field"
        exporter.process.send_signal(signal.SIGHUP)

        async def reload_failed() -> Samples | None:
            samples = await exporter.metrics()
            failed = value(samples, "chat_unread_exporter_config_last_reload_successful") == 0.0
            return samples if failed else None

        samples = await eventually(reload_failed, "the failed reload to show")
        assert dialog_values(samples, "chat_unread_messages", "sendbird")["agent-42-super"] == 2.0
        assert_populated_values(without_dialog(samples, "agent-42-super"))
        assert (
            value(samples, "chat_unread_exporter_config_last_reload_success_timestamp_seconds")
            == second_reload
        )
        status, page = await exporter.get("/")
        assert status == 200
        assert problem in page

        status, body = await exporter.post("/-/reload")
        assert status == 500
        assert "still serving the previous config" in body
        assert problem in body
        assert (await exporter.get("/-/reload"))[0] == 405

        config.write_text(text)  # fixed (and without the added dialog)
        status, body = await exporter.post("/-/reload")
        assert (status, body) == (200, "config reloaded: 4 accounts\n")
        samples = await exporter.metrics()
        assert value(samples, "chat_unread_exporter_config_last_reload_successful") == 1.0
        assert "agent-42-super" not in dialog_values(samples, "chat_unread_messages", "sendbird")
        assert_populated_values(samples)

        started = time.monotonic()
        assert await exporter.stop() == 0
        assert time.monotonic() - started < 5.0
        stdout, stderr = exporter.output()
        assert "Traceback" not in stdout + stderr
        assert stderr.count('msg="config reload failed"') == 2  # SIGHUP and POST


# --------------------------------------------------------------------------------------------
# Secrets never leak


@dataclass
class LeakSetup:
    """Simulators with distinctive credentials, and the exporter config that uses them."""

    sim: Simulator
    qb_token_sim: FakeQuickBlox
    qb_app_sim: FakeQuickBlox
    config: Path
    env: dict[str, str]
    secrets: dict[str, list[str]]  # simulator name -> the credentials its account(s) send

    @property
    def fakes(self) -> dict[str, FakeProvider]:
        return {
            "crisp": self.sim.crisp,
            "quickblox": self.sim.quickblox,
            "qb-token": self.qb_token_sim,
            "qb-app": self.qb_app_sim,
            "imkit": self.sim.imkit,
            "sendbird": self.sim.sendbird,
        }

    @property
    def all_secrets(self) -> list[str]:
        return [secret for secrets in self.secrets.values() for secret in secrets]


ACCOUNTS = ("acme-crisp", "qb-support", "qb-token", "qb-app", "imkit-app", "sb-prod")


@contextmanager
def faults(setup: LeakSetup, make: Callable[[list[str]], Fault | None]) -> Iterator[None]:
    """Serve ``make(secrets of that simulator's account)`` from every simulator."""
    for name, fake in setup.fakes.items():
        fake.fault = make(setup.secrets[name])
    try:
        yield
    finally:
        for fake in setup.fakes.values():
            fake.fault = None


@pytest.fixture
async def leak_setup(sim: Simulator, tmp_path: Path) -> AsyncIterator[LeakSetup]:
    sim.crisp.identifier = "S3CRET-crisp-identifier-123"
    sim.crisp.key = "S3CRET-crisp-key-123"
    sim.quickblox.api_key = "S3CRET-qb-api-key-123"
    sim.imkit.client_key = "S3CRET-imkit-client-key-123"
    sim.imkit.rooms["S3CRET-imkit-token-123"] = sim.imkit.rooms.pop(IMKIT_TOKEN)
    sim.sendbird.api_token = "S3CRET-sendbird-token-123"
    # Two more QuickBlox accounts, each on its own simulator so that an error answer echoing
    # one account's credentials reaches only that account (as a real API's would).
    qb_token_sim = FakeQuickBlox()
    qb_token_sim.sessions["S3CRET-qb-session-token-123"] = QB_USER
    qb_app_sim = FakeQuickBlox(
        auth_key="S3CRET-qb-auth-key-123", auth_secret="S3CRET-qb-auth-secret-123"
    )
    qb_app_sim.users["agent"] = ("S3CRET-qb-password-123", QB_USER)
    for fake in (qb_token_sim, qb_app_sim):
        fake.unread[QB_USER] = {QB_DIALOGS[0]: 4, "other": 1}
        await fake.start()
    folder = tmp_path / "etc"
    folder.mkdir()
    (folder / "qb-auth-key").write_text(qb_app_sim.auth_key)
    (folder / "qb-password").write_text("S3CRET-qb-password-123\n")
    extra_accounts = f"""\
  - name: qb-token
    provider: quickblox
    base_url: {qb_token_sim.url}
    token: ${{T_QB_TOKEN}}
    timeout: 500ms
    dialogs:
      - name: escalations
        dialog_id: {QB_DIALOGS[0]}
  - name: qb-app
    provider: quickblox
    base_url: {qb_app_sim.url}
    application_id: {qb_app_sim.application_id}
    auth_key_file: qb-auth-key
    auth_secret: ${{T_QB_AUTH_SECRET}}
    login: agent
    password_file: qb-password
    timeout: 500ms
    dialogs:
      - name: all
"""
    config = folder / "config.yaml"
    config.write_text(config_with_secrets_outside(sim, folder, "timeout: 500ms") + extra_accounts)
    env = {
        **secret_env(sim),
        "T_QB_TOKEN": "S3CRET-qb-session-token-123",
        "T_QB_AUTH_SECRET": "S3CRET-qb-auth-secret-123",
    }
    secrets = {
        "crisp": [sim.crisp.identifier, sim.crisp.key],
        "quickblox": [sim.quickblox.api_key],
        "qb-token": ["S3CRET-qb-session-token-123"],
        "qb-app": ["S3CRET-qb-auth-key-123", "S3CRET-qb-auth-secret-123", "S3CRET-qb-password-123"],
        "imkit": [sim.imkit.client_key, "S3CRET-imkit-token-123"],
        "sendbird": [sim.sendbird.api_token],
    }
    try:
        yield LeakSetup(sim, qb_token_sim, qb_app_sim, config, env, secrets)
    finally:
        await qb_token_sim.stop()
        await qb_app_sim.stop()


async def visit_everything(exporter: Running, pages: list[str]) -> Samples:
    """Scrape /metrics, the landing page and every account's debug probe; keep every page."""
    status, text = await exporter.get("/metrics", **{"X-Prometheus-Scrape-Timeout-Seconds": "10"})
    assert status == 200, text
    pages.append(text)
    probes = await asyncio.gather(
        *(exporter.get(f"/probe?account={account}&debug=true") for account in ACCOUNTS)
    )
    for account, (probe_status, probe_text) in zip(ACCOUNTS, probes, strict=True):
        assert probe_status == 200, probe_text
        assert f"account {account} " in probe_text
        pages.append(probe_text)
    status, page = await exporter.get("/")
    assert status == 200
    pages.append(page)
    return parse(text)


def echo_json(secrets: list[str]) -> Fault:
    return Fault.answer(401, {"message": "rejected " + " ".join(secrets), "code": 400401})


def echo_html(secrets: list[str]) -> Fault:
    return Fault.answer(502, f"<html>denied {secrets[0]}</html>")


def echo_plain_200(secrets: list[str]) -> Fault:
    return Fault.answer(200, f"maintenance for {secrets[-1]}".encode())


@pytest.mark.parametrize("log_format", ["logfmt", "json"])
async def test_secrets_never_leak(leak_setup: LeakSetup, tmp_path: Path, log_format: str) -> None:
    setup = leak_setup
    pages: list[str] = []
    args = (
        "--config.file",
        str(setup.config),
        "--log.level",
        "debug",
        f"--log.format={log_format}",
    )
    async with serving(tmp_path, *args, env=setup.env) as exporter:
        samples = await visit_everything(exporter, pages)
        assert set(up_values(samples).values()) == {1.0}, up_values(samples)
        assert len(up_values(samples)) == 13

        redacted_probes: set[str] = set()
        for make in (echo_json, echo_html, echo_plain_200, lambda _: Fault.hang(),
                     lambda _: Fault.reset()):  # fmt: skip
            with faults(setup, make):
                first_page = len(pages)
                samples = await visit_everything(exporter, pages)
                assert set(up_values(samples).values()) == {0.0}, up_values(samples)
                redacted_probes |= {
                    account
                    for account in ACCOUNTS
                    for page in pages[first_page:]
                    if f"account {account} " in page and "<redacted>" in page
                }
        # Each account's own credentials came back in an error answer and were cut out.
        assert redacted_probes == set(ACCOUNTS)

        # Credentials rotated upstream: genuine authentication failures.
        setup.sim.crisp.key = setup.sim.sendbird.api_token = "rotated"
        setup.sim.quickblox.api_key = setup.sim.imkit.client_key = "rotated"
        setup.qb_token_sim.sessions.clear()
        setup.qb_app_sim.sessions.clear()
        setup.qb_app_sim.users["agent"] = ("rotated", QB_USER)
        samples = await visit_everything(exporter, pages)
        assert set(up_values(samples).values()) == {0.0}
        reasons = {
            dict(labels)["reason"]
            for (name, labels), v in samples.items()
            if name == "chat_unread_fetch_errors_total" and v > 0
        }
        assert {"auth", "http_5xx", "bad_response", "timeout", "connection"} <= reasons

        assert await exporter.stop() == 0
        stdout, stderr = exporter.output()

    assert "fetch failed" in stderr
    lines = stderr.splitlines()
    assert lines, "debug logging wrote nothing"
    for line in lines:
        if log_format == "json":
            record = json.loads(line)
            assert isinstance(record, dict), line
            assert {"ts", "level", "msg"} <= record.keys(), line
        else:
            assert re.match(r"ts=\S+ level=(debug|info|warn|error) logger=\S+ msg=", line), line
    outputs = {"stdout": stdout, "stderr": stderr, **{f"page {i}": p for i, p in enumerate(pages)}}
    for where, text in outputs.items():
        for secret in setup.all_secrets:
            assert secret not in text, f"{secret} in {where}"
        assert "S3CRET" not in text, where  # not even a part of one


async def test_secret_cut_by_error_body_truncation_does_not_leak(
    leak_setup: LeakSetup, tmp_path: Path
) -> None:
    setup = leak_setup
    token = setup.sim.sendbird.api_token
    args = ("--config.file", str(setup.config))
    async with serving(tmp_path, *args, env=setup.env) as exporter:
        setup.sim.sendbird.fault = Fault.answer(401, {"message": "x" * 185 + token})
        status, text = await exporter.get("/probe?account=sb-prod&debug=true")
        assert status == 200
        assert "up 0" in text
        await exporter.stop()
        _, stderr = exporter.output()
    assert token[:10] not in text + stderr


def test_demo_config_check_checks_the_demo_not_the_working_directory(tmp_path: Path) -> None:
    result = run_cli("--demo", "--config.check", cwd=tmp_path)  # no config.yaml here
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("config <demo> is valid: ")


def test_log_level_warning_is_accepted_as_warn(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("accounts: []\n")
    result = run_cli("--log.level=warning", "--config.check", cwd=tmp_path)
    assert "invalid choice" not in result.stderr
    assert result.returncode == 1  # the empty config, not the flag, is refused
    assert "accounts: must be a non-empty list of accounts" in result.stderr
