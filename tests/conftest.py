"""Shared fixtures: simulated providers on loopback, an exporter built from YAML, and parsing.

Every provider test talks HTTP to the simulators in ``exporter.simulator`` (which check auth
headers, signatures and parameters as the real APIs do); nothing in the exporter is patched.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from exporter.app import make_app
from exporter.config import parse_config
from exporter.service import Exporter
from exporter.simulator import (
    CrispConversation,
    IMKitRoom,
    MatrixRoom,
    SendbirdChannel,
    Simulator,
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


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    simulator = Simulator()
    await simulator.start()
    populate(simulator)
    yield simulator
    await simulator.stop()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def exporter_for(clock: FakeClock) -> AsyncIterator[ExporterFactory]:
    """Build and start an Exporter from config text; closed after the test."""
    started: list[Exporter] = []

    async def build(text: str) -> Exporter:
        exporter = Exporter(lambda: parse_config(text, "test.yaml"), clock=clock)
        await exporter.start()
        started.append(exporter)
        return exporter

    yield build
    for exporter in started:
        await exporter.close()


@pytest.fixture
async def scrape_client(
    aiohttp_client: ClientFactory, exporter_for: ExporterFactory
) -> ScrapeClient:
    """An HTTP client for an exporter app built from config text."""

    async def build(text: str) -> TestClient[web.Request, web.Application]:
        return await aiohttp_client(make_app(await exporter_for(text)))

    return build


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
    "intercom": "acme-intercom",  # of tests.reach.reach_accounts
    "stream": "acme-stream",
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


@pytest.fixture
def tmp_config(tmp_path: Path) -> Callable[[str], Path]:
    """Write config text to a file in the test's temporary folder."""

    def write(text: str) -> Path:
        path = tmp_path / "config.yaml"
        path.write_text(text)
        return path

    return write
