"""Helpers shared by the test modules; the fixtures are in ``conftest.py``.

The simulators' data set and the configs that read it (``populate``, ``config_yaml``, and for
Intercom, Stream Chat and Zendesk ``populate_reach``, ``reach_accounts``), reading the exposition
(``parse``, ``value``, ``get_metrics``), free loopback ports, subprocess servers with their
output in a log file, waits that poll against a deadline (never a fixed sleep), the Prometheus
tools (skipped when absent unless ``CHAT_UNREAD_REQUIRE_PROMETHEUS=1``), YAML loading, and the
demo exporter's data set.
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
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from exporter.service import Exporter
from exporter.simulator import (
    ChatwootAgent,
    ChatwootConversation,
    CrispConversation,
    FakeProvider,
    IMKitRoom,
    IntercomConversation,
    MatrixRoom,
    SendbirdChannel,
    Simulator,
    StreamChannel,
    ZendeskTicket,
)

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
        ("crisp", "demo-crisp", "backlog-by-inbox"),
        ("crisp", "demo-crisp", "backlog-by-operator"),
        ("quickblox", "demo-quickblox", "all"),
        ("quickblox", "demo-quickblox", "escalations"),
        ("quickblox", "demo-quickblox", "sales"),
        ("quickblox", "demo-quickblox", "by-dialog"),
        ("imkit", "demo-imkit", "all"),
        ("imkit", "demo-imkit", "work"),
        ("sendbird", "demo-sendbird", "agent-42"),
        ("sendbird", "demo-sendbird", "agent-7"),
        ("sendbird", "demo-sendbird", "agent-42-channels"),
        ("intercom", "demo-intercom", "inbox"),
        ("intercom", "demo-intercom", "billing"),
        ("intercom", "demo-intercom", "alice"),
        ("intercom", "demo-intercom", "inbox-by-team"),
        ("stream", "demo-stream", "agent-42"),
        ("stream", "demo-stream", "agent-42-messaging"),
        ("stream", "demo-stream", "agent-7"),
        ("stream", "demo-stream", "agent-42-channels"),
        ("matrix", "demo-matrix", "all"),
        ("matrix", "demo-matrix", "support"),
        ("chatwoot", "demo-chatwoot", "backlog"),
        ("chatwoot", "demo-chatwoot", "website"),
        ("chatwoot", "demo-chatwoot", "billing"),
        ("chatwoot", "demo-chatwoot", "backlog-by-team"),
        ("chatwoot", "demo-chatwoot", "backlog-by-agent"),
        ("chatwoot", "demo-chatwoot", "backlog-by-inbox"),
        ("zendesk", "demo-zendesk", "unassigned-view"),
        ("zendesk", "demo-zendesk", "unsolved"),
        ("zendesk", "demo-zendesk", "unsolved-by-group"),
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


# --------------------------------------------------------------------------------------------
# The simulators' data set, and the test configs that read it


# Every built-in provider, written down (not read from the registry the tests check).
BUILT_IN_PROVIDERS = (
    "crisp",
    "quickblox",
    "imkit",
    "sendbird",
    "intercom",
    "stream",
    "matrix",
    "chatwoot",
    "zendesk",
)
WEBSITE = "8c842203-7ed8-4e29-a608-7cf78a7d2fcc"
VIP = "session_700c65e1-85e2-465a-b9ac-ecb5ec2c9881"
QB_USER = 123
QB_DIALOGS = ("5d753421a28f9a2596cb0f98", "5d75393ba28f9a17e1cb0f9e")
IMKIT_TOKEN = "imkit-user-token-0123"
WAITING_MS = 1_700_000_000_000
MATRIX_TOKEN = "syt_bWF0cml4_matrix-user-token"
MATRIX_ROOMS = ("!support:example.org", "!sales:example.org", "!quiet:example.org")
MATRIX_ALIAS = "#support:example.org"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
ClientFactory = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]
ScrapeClient = Callable[[str], Awaitable[TestClient[web.Request, web.Application]]]
"""The ``scrape_client`` fixture: an HTTP client for an exporter app built from config text."""
ExporterFactory = Callable[[str], Awaitable[Exporter]]
"""The ``exporter_for`` fixture: a started Exporter built from config text."""


class FakeClock:
    """A wall clock the test moves by hand (cache TTLs, budgets, rate-limit back-off)."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def populate(sim: Simulator) -> None:
    """A fixed data set whose expected values the tests assert."""
    conversations = {
        f"session_{i:03d}": CrispConversation(
            unread_operator=1, unread_visitor=0, waiting_since_ms=WAITING_MS + i * 1000
        )
        for i in range(1, 71)  # 70 conversations with 1 unread each: two pages of 50
    }
    conversations["session_resolved"] = CrispConversation(unread_operator=9, resolved=True)
    conversations["session_visitor_only"] = CrispConversation(unread_visitor=4)
    conversations[VIP] = CrispConversation(
        unread_operator=2, unread_visitor=5, waiting_since_ms=WAITING_MS - 5000
    )
    sim.crisp.websites[WEBSITE] = conversations
    sim.quickblox.unread[QB_USER] = {QB_DIALOGS[0]: 4, QB_DIALOGS[1]: 0, "other": 3}
    sim.quickblox.users["agent"] = ("agent-password", QB_USER)
    sim.imkit.rooms[IMKIT_TOKEN] = [
        IMKitRoom(frozenset({"work", "project"}), 5),
        IMKitRoom(frozenset({"work"}), 2),
        IMKitRoom(frozenset({"personal"}), 1),
    ]
    sim.sendbird.channels["agent-42"] = [
        SendbirdChannel("support", unread=6, mentions=1),
        SendbirdChannel("support", super_group=True, unread=2, mentions=2),
        SendbirdChannel("sales", unread=3),
        SendbirdChannel("support", invited=True),
    ]
    sim.matrix.users[MATRIX_TOKEN] = dict(
        zip(MATRIX_ROOMS, (MatrixRoom(5, 2), MatrixRoom(3), MatrixRoom()), strict=True)
    )
    sim.matrix.aliases[MATRIX_ALIAS] = MATRIX_ROOMS[0]


def assert_populated_values(samples: Samples) -> None:
    """Assert the values of ``populate``'s data set, as served for ``config_yaml``'s dialogs."""
    assert dialog_values(samples, "chat_unread_messages", "crisp") == {
        "backlog": 72.0,  # 70 conversations x 1 + VIP's 2; resolved and visitor-only excluded
        "vip-visitor": 5.0,
        "vip-operator": 2.0,
    }
    assert dialog_values(samples, "chat_unread_conversations", "crisp") == {"backlog": 71.0}
    assert dialog_values(samples, "chat_unread_oldest_unread_timestamp_seconds", "crisp") == {
        "backlog": (WAITING_MS - 5000) / 1000
    }
    assert dialog_values(samples, "chat_unread_messages", "quickblox") == {
        "all": 7.0,
        "escalations": 4.0,
        "quiet": 0.0,
    }
    assert dialog_values(samples, "chat_unread_messages", "imkit") == {
        "all": 8.0,
        "work": 7.0,
        "work-project": 5.0,
    }
    assert dialog_values(samples, "chat_unread_messages", "sendbird") == {
        "agent-42": 11.0,
        "agent-42-support": 6.0,
    }
    assert dialog_values(samples, "chat_unread_mentions", "sendbird") == {
        "agent-42": 3.0,
        "agent-42-support": 1.0,
    }
    assert dialog_values(samples, "chat_unread_invitations", "sendbird") == {
        "agent-42": 1.0,
        "agent-42-support": 1.0,
    }
    ups = [v for (name, _), v in samples.items() if name == "chat_unread_up"]
    assert ups == [1.0] * 11  # every one of the 11 dialogs up


def config_yaml(sim: Simulator, extra: str = "") -> str:
    """One account per provider against the simulators; ``extra`` is appended to each."""
    indent = "".join(f"    {line}\n" for line in extra.splitlines())
    return f"""\
accounts:
  - name: acme-crisp
    provider: crisp
    base_url: {sim.crisp.url}
    website_id: {WEBSITE}
    identifier: {sim.crisp.identifier}
    key: {sim.crisp.key}
{indent}    dialogs:
      - name: backlog
      - name: vip-visitor
        session_id: {VIP}
      - name: vip-operator
        session_id: {VIP}
        side: operator
  - name: qb-support
    provider: quickblox
    base_url: {sim.quickblox.url}
    api_key: {sim.quickblox.api_key}
    on_behalf_of: {QB_USER}
{indent}    dialogs:
      - name: all
      - name: escalations
        dialog_id: {QB_DIALOGS[0]}
      - name: quiet
        dialog_id: {QB_DIALOGS[1]}
  - name: imkit-app
    provider: imkit
    base_url: {sim.imkit.url}
    client_key: {sim.imkit.client_key}
    token: {IMKIT_TOKEN}
{indent}    dialogs:
      - name: all
      - name: work
        room_tags: [work]
      - name: work-project
        room_tags: [work, project]
  - name: sb-prod
    provider: sendbird
    application_id: 2D7B4CDB-932F-4082-9B09-A1153792DC8D
    base_url: {sim.sendbird.url}
    api_token: {sim.sendbird.api_token}
{indent}    dialogs:
      - name: agent-42
        user_id: agent-42
      - name: agent-42-support
        user_id: agent-42
        custom_types: [support]
        channels: non_super_group
"""


def matrix_yaml(sim: Simulator) -> str:
    """A Matrix account over ``populate``'s rooms, to append to ``config_yaml``'s accounts."""
    return f"""\
  - name: team-matrix
    provider: matrix
    base_url: {sim.matrix.url}
    access_token: {MATRIX_TOKEN}
    dialogs:
      - name: all
      - name: support
        room: "{MATRIX_ALIAS}"
      - name: sales
        room: "{MATRIX_ROOMS[1]}"
"""


# --------------------------------------------------------------------------------------------
# Intercom, Stream Chat and Zendesk: their data set, and accounts to append to a test config


CHATWOOT_INBOXES = {7: "Website", 8: "Email"}
CHATWOOT_TEAMS = {3: "Billing", 4: "Sales"}
CHATWOOT_WAITING = 1_750_000_000  # unix seconds


def chatwoot_backlog(sim: Simulator, size: int = 60) -> None:
    """``size`` open conversations and five resolved ones (which no dialog counts).

    Conversation i is in inbox 7 when i is odd, else 8; in team 3 when i % 3 == 0, team 4 when
    i % 3 == 1, else none; assigned to agent 11 when i % 4 == 0, 12 when i % 4 == 1, else to
    nobody; it has i % 3 unread messages, and waits since ``CHATWOOT_WAITING`` + i minutes
    unless i % 5 == 0 (answered).
    """
    sim.chatwoot.inboxes = dict(CHATWOOT_INBOXES)
    sim.chatwoot.teams = dict(CHATWOOT_TEAMS)
    sim.chatwoot.agents = {
        11: ChatwootAgent("Ada Lovelace", "ada@example.com", administrator=True),
        12: ChatwootAgent("Bob", "bob@example.com"),
    }
    conversations = {
        i: ChatwootConversation(
            inbox_id=7 if i % 2 else 8,
            team_id={0: 3, 1: 4}.get(i % 3),
            assignee_id={0: 11, 1: 12}.get(i % 4),
            unread_count=i % 3,
            waiting_since=CHATWOOT_WAITING + i * 60 if i % 5 else 0,
            last_activity_at=CHATWOOT_WAITING + i,
        )
        for i in range(1, size + 1)
    }
    for i in range(size + 1, size + 6):
        conversations[i] = ChatwootConversation(
            inbox_id=7, status="resolved", team_id=3, unread_count=9, waiting_since=1
        )
    sim.chatwoot.conversations = conversations


INTERCOM_TEAM = "5017691"
INTERCOM_ADMIN = 991267
INTERCOM_WAITING = 1_750_000_000  # unix seconds


def intercom_backlog(size: int) -> dict[str, IntercomConversation]:
    """``size`` open conversations waiting since ``INTERCOM_WAITING`` + i minutes.

    Every second one is the team's, every fifth one the teammate's; ids count down as waiting
    times go up, so an API that ignores ``sort`` answers newest first.
    """
    return {
        str(900_000 - i): IntercomConversation(
            waiting_since=INTERCOM_WAITING + i * 60,
            team_assignee_id=INTERCOM_TEAM if i % 2 == 0 else None,
            admin_assignee_id=INTERCOM_ADMIN if i % 5 == 0 else None,
        )
        for i in range(1, size + 1)
    }


def populate_reach(sim: Simulator) -> None:
    """40 waiting conversations, and three that are not waiting on the team."""
    conversations = intercom_backlog(40)
    # closed, snoozed, and answered by a teammate: none of them is waiting on the team
    conversations["1"] = IntercomConversation(
        waiting_since=INTERCOM_WAITING - 1000, state="closed", team_assignee_id=INTERCOM_TEAM
    )
    conversations["2"] = IntercomConversation(
        waiting_since=INTERCOM_WAITING - 2000, state="snoozed"
    )
    conversations["3"] = IntercomConversation(
        team_assignee_id=INTERCOM_TEAM, admin_assignee_id=INTERCOM_ADMIN
    )
    sim.intercom.conversations = conversations
    chatwoot_backlog(sim)
    sim.stream.users = {
        "agent-42": [
            StreamChannel("messaging", "support-1", unread=4),
            StreamChannel("messaging", "support-2", unread=3),
            StreamChannel("livestream", "launch", unread=9),
            StreamChannel("team", "ops", unread=0),
        ],
        "agent-7": [StreamChannel("messaging", "support-3", unread=2)],
    }
    sim.zendesk.tickets = zendesk_tickets(12)
    sim.zendesk.groups = dict(ZENDESK_GROUPS)
    sim.zendesk.views = {ZENDESK_VIEW: "status<solved assignee:none"}


ZENDESK_GROUPS = {360001: "Tier 1", 360002: "Billing"}
ZENDESK_VIEW = 360111
ZENDESK_CREATED = 1_750_000_000  # unix seconds


def zendesk_tickets(size: int) -> dict[int, ZendeskTicket]:
    """``size`` tickets created ``ZENDESK_CREATED`` + i minutes: new, open, pending, solved in
    turn; in Tier 1, Billing or no group in turn; every second one assigned."""
    groups = [*ZENDESK_GROUPS, None]
    return {
        7000 - i: ZendeskTicket(
            status=("new", "open", "pending", "solved")[i % 4],
            created_at=ZENDESK_CREATED + i * 60,
            group_id=groups[i % 3],
            assignee_id=None if i % 2 else 8001,
        )
        for i in range(1, size + 1)
    }


# (tickets, oldest created) per dialog of ``reach_accounts`` for ``populate_reach``: i = 1..12
# without the solved ones (i = 3, 7, 11); the view's are the unassigned (odd) ones: 1, 5, 9
ZENDESK_EXPECTED = {"unassigned": (3.0, None), "unsolved": (9.0, ZENDESK_CREATED + 60.0)}


# (conversations, oldest waiting) per dialog of ``reach_accounts`` for ``populate_reach``
INTERCOM_EXPECTED = {
    "inbox": (40.0, INTERCOM_WAITING + 60.0),
    "billing": (20.0, INTERCOM_WAITING + 120.0),
    "alice": (8.0, INTERCOM_WAITING + 300.0),
}


# The account of each provider in ``reach_accounts``
# (messages, unread channels) per dialog of ``reach_accounts`` for ``populate_reach``
STREAM_EXPECTED = {
    "agent-42": (16.0, 3.0),
    "agent-42-messaging": (7.0, 2.0),
    "agent-42-team": (0.0, 0.0),  # a member of a team channel, with nothing unread in it
    "agent-7": (2.0, 1.0),
}


def reach_accounts(sim: Simulator) -> str:
    """Accounts to append to ``config_yaml`` (list items under ``accounts:``)."""
    return f"""\
  - name: acme-intercom
    provider: intercom
    base_url: {sim.intercom.url}
    access_token: {sim.intercom.access_token}
    dialogs:
      - name: inbox
      - name: billing
        team_id: "{INTERCOM_TEAM}"
      - name: alice
        admin_id: {INTERCOM_ADMIN}
  - name: acme-stream
    provider: stream
    base_url: {sim.stream.url}
    api_key: {sim.stream.api_key}
    api_secret: {sim.stream.api_secret}
    dialogs:
      - name: agent-42
        user_id: agent-42
      - name: agent-42-messaging
        user_id: agent-42
        channel_type: messaging
      - name: agent-42-team
        user_id: agent-42
        channel_type: team
      - name: agent-7
        user_id: agent-7
  - name: acme-chatwoot
    provider: chatwoot
    base_url: {sim.chatwoot.url}
    account_id: {sim.chatwoot.account_id}
    api_access_token: {sim.chatwoot.api_access_token}
    dialogs:
      - name: backlog
      - name: website
        inbox_id: 7
      - name: billing
        team_id: 3
      - name: by-team
        group_by: team
      - name: by-inbox
        group_by: inbox
  - name: acme-zendesk
    provider: zendesk
    subdomain: acme
    base_url: {sim.zendesk.url}
    email: {sim.zendesk.email}
    api_token: {sim.zendesk.api_token}
    dialogs:
      - name: unassigned
        view_id: {ZENDESK_VIEW}
      - name: unsolved
        query: status<solved
"""


def reach_config(sim: Simulator) -> str:
    """A config of only these providers' accounts."""
    return "accounts:\n" + reach_accounts(sim)


# --------------------------------------------------------------------------------------------
# Reading the exposition


def parse(text: str) -> Samples:
    """Exposition text to {(sample name, labels): value}, through prometheus_client's parser."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in samples, f"duplicate series {key}"
            samples[key] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """The value of one series, or None when it is absent."""
    return samples.get((name, frozenset(labels.items())))


ACCOUNT_OF = {
    "crisp": "acme-crisp",
    "quickblox": "qb-support",
    "imkit": "imkit-app",
    "sendbird": "sb-prod",
    "matrix": "team-matrix",
    "intercom": "acme-intercom",  # of reach_accounts
    "stream": "acme-stream",
    "chatwoot": "acme-chatwoot",  # of reach_accounts
    "zendesk": "acme-zendesk",  # of reach_accounts
}


def errors_of(samples: Samples, provider: str, reason: str, account: str = "") -> float | None:
    """``chat_unread_fetch_errors_total`` for one reason of an account of the test configs."""
    return value(
        samples,
        "chat_unread_fetch_errors_total",
        provider=provider,
        account=account or ACCOUNT_OF[provider],
        reason=reason,
    )


def dialog_values(samples: Samples, name: str, provider: str) -> dict[str, float]:
    """{dialog: value} of one per-dialog metric for one provider."""
    return {
        dict(labels)["dialog"]: v
        for (metric, labels), v in samples.items()
        if metric == name and dict(labels).get("provider") == provider
    }


async def get_metrics(
    client: TestClient[web.Request, web.Application], path: str = "/metrics", **headers: str
) -> Samples:
    response = await client.get(path, headers=headers)
    assert response.status == 200, await response.text()
    return parse(await response.text())


def fake(sim: Simulator, provider: str) -> FakeProvider:
    """The simulator of ``provider`` (for injecting faults by provider name)."""
    return {
        "crisp": sim.crisp,
        "quickblox": sim.quickblox,
        "imkit": sim.imkit,
        "sendbird": sim.sendbird,
        "intercom": sim.intercom,
        "stream": sim.stream,
        "matrix": sim.matrix,
        "chatwoot": sim.chatwoot,
        "zendesk": sim.zendesk,
    }[provider]


def every_provider_yaml(sim: Simulator, extra: str = "") -> str:
    """A config with an account of every provider over the simulators, ``extra`` (one line)
    added to each account."""
    populate_reach(sim)
    text = config_yaml(sim) + reach_accounts(sim) + matrix_yaml(sim)
    return text.replace("\n    dialogs:", f"\n    {extra}\n    dialogs:") if extra else text
