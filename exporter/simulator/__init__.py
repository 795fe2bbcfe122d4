"""Simulated providers for the demo, the tests and the benchmark.

:class:`Simulator` runs every fake API on loopback. ``populate_demo`` gives them a small
support team's worth of chats, ``evolve`` makes messages arrive and get read, and
``demo_config_yaml`` is the matching exporter config (which goes through the normal config
loader, so the demo exercises exactly what a real deployment does).
"""

from __future__ import annotations

import asyncio
import random
import time

from exporter.simulator.base import FakeProvider, Fault, RateWindow, SeenRequest
from exporter.simulator.chatwoot import ChatwootAgent, ChatwootConversation, FakeChatwoot
from exporter.simulator.crisp import CrispConversation, CrispOperator, FakeCrisp
from exporter.simulator.imkit import FakeIMKit, IMKitRoom
from exporter.simulator.intercom import FakeIntercom, IntercomConversation
from exporter.simulator.matrix import FakeMatrix, MatrixRoom
from exporter.simulator.quickblox import FakeQuickBlox
from exporter.simulator.sendbird import FakeSendbird, SendbirdChannel
from exporter.simulator.stream import FakeStream, StreamChannel
from exporter.simulator.zendesk import FakeZendesk, ZendeskTicket

__all__ = [
    "ChatwootAgent",
    "ChatwootConversation",
    "CrispConversation",
    "CrispOperator",
    "FakeChatwoot",
    "FakeCrisp",
    "FakeIMKit",
    "FakeIntercom",
    "FakeMatrix",
    "FakeProvider",
    "FakeQuickBlox",
    "FakeSendbird",
    "FakeStream",
    "FakeZendesk",
    "Fault",
    "IMKitRoom",
    "IntercomConversation",
    "MatrixRoom",
    "SeenRequest",
    "SendbirdChannel",
    "Simulator",
    "StreamChannel",
    "ZendeskTicket",
]

DEMO_WEBSITE = "8c842203-7ed8-4e29-a608-7cf78a7d2fcc"
DEMO_VIP_SESSION = "session_700c65e1-85e2-465a-b9ac-ecb5ec2c9881"
DEMO_QB_USER = 123
DEMO_QB_DIALOGS = (
    "5d753421a28f9a2596cb0f98",
    "5d75393ba28f9a17e1cb0f9e",
    "5d75327ba28f9a0f32cb0f99",
)
DEMO_IMKIT_TOKEN = "imkit-user-token"
DEMO_INTERCOM_TEAM = "5017691"
DEMO_INTERCOM_ADMIN = 991267
DEMO_INTERCOM_TEAM_2 = "5017692"
# Crisp inboxes and operators of the demo website, for its backlog split by each.
DEMO_CRISP_INBOXES = {
    "8b3e1f0c-4a8e-4c51-9d0a-5f3c2b1a0e01": "Support",
    "8b3e1f0c-4a8e-4c51-9d0a-5f3c2b1a0e02": "Sales",
}
DEMO_CRISP_OPERATORS = (
    CrispOperator("c5d1a2b3-0001-4e8f-9a7b-6c5d4e3f2a10", "Ada", "Lovelace", "ada@example.com"),
    CrispOperator("c5d1a2b3-0002-4e8f-9a7b-6c5d4e3f2a20", "Grace", "Hopper", "grace@example.com"),
)
DEMO_MATRIX_TOKEN = "syt_ZGVtbw_matrix-demo-token"
DEMO_MATRIX_ALIAS = "#support:example.org"
# Chatwoot's demo account: two inboxes, two teams, two agents; some conversations in no team
# and assigned to nobody.
DEMO_CHATWOOT_INBOXES = {1: "Website", 2: "Email"}
DEMO_CHATWOOT_TEAMS = {1: "Billing", 2: "Support"}
DEMO_CHATWOOT_AGENTS = {
    1: ChatwootAgent("Ada Lovelace", "ada@example.com", administrator=True),
    2: ChatwootAgent("Grace Hopper", "grace@example.com"),
}
# Zendesk groups and views of the demo account.
DEMO_ZENDESK_GROUPS = {360001: "Tier 1", 360002: "Billing"}
DEMO_ZENDESK_VIEW = 360111  # unassigned unsolved tickets


class Simulator:
    """The simulated providers, started together on loopback."""

    def __init__(self, seed: int = 42) -> None:
        self.crisp = FakeCrisp()
        self.quickblox = FakeQuickBlox()
        self.imkit = FakeIMKit()
        self.sendbird = FakeSendbird()
        self.intercom = FakeIntercom()
        self.stream = FakeStream()
        self.matrix = FakeMatrix()
        self.chatwoot = FakeChatwoot()
        self.zendesk = FakeZendesk()
        self._rng = random.Random(seed)

    @property
    def providers(self) -> tuple[FakeProvider, ...]:
        return (
            self.crisp,
            self.quickblox,
            self.imkit,
            self.sendbird,
            self.intercom,
            self.stream,
            self.matrix,
            self.chatwoot,
            self.zendesk,
        )

    async def start(self) -> None:
        for provider in self.providers:
            await provider.start()

    async def stop(self) -> None:
        for provider in self.providers:
            await provider.stop()

    def populate_demo(self) -> None:
        """A small support team's chats: a Crisp backlog, QuickBlox dialogs, IMKit rooms..."""
        now_ms = int(time.time() * 1000)
        self.crisp.websites[DEMO_WEBSITE] = {
            f"session_{i:04d}": CrispConversation(
                unread_operator=(i % 4), unread_visitor=i % 2, waiting_since_ms=now_ms - i * 60_000
            )
            for i in range(1, 61)
        }
        self.crisp.websites[DEMO_WEBSITE][DEMO_VIP_SESSION] = CrispConversation(
            unread_operator=2, unread_visitor=3, waiting_since_ms=now_ms - 600_000
        )
        # Queues: two inboxes and two operators, some conversations in neither (unassigned).
        inboxes = sorted(DEMO_CRISP_INBOXES)
        for i, conversation in enumerate(self.crisp.websites[DEMO_WEBSITE].values()):
            conversation.inbox_id = inboxes[i % 3] if i % 3 < len(inboxes) else None
            operator = DEMO_CRISP_OPERATORS[i % 5] if i % 5 < len(DEMO_CRISP_OPERATORS) else None
            conversation.operator_id = operator.user_id if operator else None
        self.crisp.inboxes[DEMO_WEBSITE] = dict(DEMO_CRISP_INBOXES)
        self.crisp.operators[DEMO_WEBSITE] = list(DEMO_CRISP_OPERATORS)
        self.quickblox.unread[DEMO_QB_USER] = dict(zip(DEMO_QB_DIALOGS, (4, 1, 7), strict=True))
        self.quickblox.dialog_names.update(
            zip(DEMO_QB_DIALOGS, ("Escalations", "Sales", "Onboarding"), strict=True)
        )
        self.imkit.rooms[DEMO_IMKIT_TOKEN] = [
            IMKitRoom(frozenset({"work", "project"}), 5),
            IMKitRoom(frozenset({"work"}), 2),
            IMKitRoom(frozenset({"personal"}), 1),
        ]
        self.sendbird.channels["agent-42"] = [
            SendbirdChannel("support", unread=6, mentions=1, url="support-refunds", name="Refunds"),
            SendbirdChannel(
                "support", super_group=True, unread=2, url="support-community", name="Community"
            ),
            SendbirdChannel("sales", unread=3, url="sales-leads", name="Leads"),
            SendbirdChannel("support", invited=True, url="support-beta", name="Beta testers"),
        ]
        self.sendbird.channels["agent-7"] = [SendbirdChannel("support", unread=1, mentions=1)]
        self.sendbird.rate_limit_per_second = 100  # so the demo shows rate-limit headroom
        now_s = now_ms // 1000
        self.intercom.conversations = {
            str(1000 + i): IntercomConversation(
                waiting_since=now_s - i * 420 if i % 3 else None,  # every third one answered
                team_assignee_id=DEMO_INTERCOM_TEAM
                if i % 2
                else DEMO_INTERCOM_TEAM_2
                if i % 4
                else None,
                admin_assignee_id=DEMO_INTERCOM_ADMIN if i % 5 == 0 else None,
            )
            for i in range(1, 25)
        }
        self.intercom.rate_limit = RateWindow(limit=1000, seconds=10)
        self.intercom.teams = {DEMO_INTERCOM_TEAM: "Billing", DEMO_INTERCOM_TEAM_2: "Onboarding"}
        self.intercom.admins = {str(DEMO_INTERCOM_ADMIN): ("Alice Martin", "alice@example.com")}
        self.stream.users = {
            "agent-42": [
                StreamChannel("messaging", "support-1", unread=4),
                StreamChannel("messaging", "support-2", unread=1),
                StreamChannel("livestream", "launch", unread=9),
                StreamChannel("team", "ops", unread=0),
            ],
            "agent-7": [StreamChannel("messaging", "support-3", unread=2)],
        }
        self.stream.rate_limit = RateWindow(limit=1000, seconds=60)
        self.matrix.aliases[DEMO_MATRIX_ALIAS] = "!support:example.org"
        self.matrix.users[DEMO_MATRIX_TOKEN] = {
            "!support:example.org": MatrixRoom(notifications=4, highlights=1, name="Support"),
            "!sales:example.org": MatrixRoom(notifications=2, name="Sales"),
            "!random:example.org": MatrixRoom(),
        }
        self.chatwoot.inboxes = dict(DEMO_CHATWOOT_INBOXES)
        self.chatwoot.teams = dict(DEMO_CHATWOOT_TEAMS)
        self.chatwoot.agents = dict(DEMO_CHATWOOT_AGENTS)
        self.chatwoot.conversations = {
            i: ChatwootConversation(
                inbox_id=1 + i % 2,
                status="open" if i % 7 else "resolved",
                team_id=(None, 1, 2)[i % 3],
                assignee_id=(None, 1, 2, None)[i % 4],
                unread_count=i % 5,
                waiting_since=now_s - i * 300 if i % 3 else 0,
                last_activity_at=now_s - i * 60,
            )
            for i in range(1, 31)
        }
        groups = [*DEMO_ZENDESK_GROUPS, None]
        self.zendesk.tickets = {
            5000 + i: ZendeskTicket(
                status=("new", "open", "pending", "solved")[i % 4],
                created_at=now_s - i * 900,
                group_id=groups[i % 3],
                assignee_id=None if i % 2 else 7001,
            )
            for i in range(1, 31)
        }
        self.zendesk.groups = dict(DEMO_ZENDESK_GROUPS)
        self.zendesk.views = {DEMO_ZENDESK_VIEW: "status<solved assignee:none"}

    def evolve(self) -> None:
        """One tick of a working day: some messages arrive, some get read."""
        rng = self._rng
        counters: list[tuple[object, str]] = []
        for conversations in self.crisp.websites.values():
            counters += [(c, "unread_operator") for c in conversations.values()]
        counters += [(room, "unread") for rooms in self.imkit.rooms.values() for room in rooms]
        counters += [(c, "unread") for cs in self.sendbird.channels.values() for c in cs]
        counters += [(c, "unread") for cs in self.stream.users.values() for c in cs]
        for conversation_id in rng.sample(sorted(self.intercom.conversations), k=2):
            # a contact writes (the conversation waits from now on) or a teammate answers
            conversation = self.intercom.conversations[conversation_id]
            answered = conversation.waiting_since is None
            conversation.waiting_since = int(time.time()) if answered else None
        counters += [(r, "notifications") for rs in self.matrix.users.values() for r in rs.values()]
        counters += [(c, "unread_count") for c in self.chatwoot.conversations.values()]
        ticket = self.zendesk.tickets[rng.choice(sorted(self.zendesk.tickets))]
        ticket.status = "solved" if ticket.status != "solved" else "open"  # an agent answers
        for obj, attr in rng.sample(counters, k=min(6, len(counters))):
            value = getattr(obj, attr)
            setattr(obj, attr, max(0, value + rng.choice((-2, -1, 1, 1, 2))))
        for dialogs in self.quickblox.unread.values():
            dialog = rng.choice(sorted(dialogs))
            dialogs[dialog] = max(0, dialogs[dialog] + rng.choice((-1, 1, 2)))

    async def run_evolution(self, interval: float = 2.0) -> None:
        """Evolve forever (the demo's background task)."""
        while True:
            await asyncio.sleep(interval)
            self.evolve()

    def demo_config_yaml(self) -> str:
        """The exporter config for the demo accounts, pointing at the running simulators."""
        return f"""\
accounts:
  - name: demo-crisp
    provider: crisp
    base_url: {self.crisp.url}
    website_id: {DEMO_WEBSITE}
    identifier: {self.crisp.identifier}
    key: {self.crisp.key}
    dialogs:
      - name: backlog
      - name: vip-visitor
        session_id: {DEMO_VIP_SESSION}
      - name: backlog-by-inbox
        group_by: inbox
      - name: backlog-by-operator
        group_by: operator
  - name: demo-quickblox
    provider: quickblox
    base_url: {self.quickblox.url}
    api_key: {self.quickblox.api_key}
    on_behalf_of: {DEMO_QB_USER}
    dialogs:
      - name: all
      - name: escalations
        dialog_id: {DEMO_QB_DIALOGS[0]}
      - name: sales
        dialog_id: {DEMO_QB_DIALOGS[1]}
      - name: by-dialog
        group_by: dialog
  - name: demo-imkit
    provider: imkit
    base_url: {self.imkit.url}
    client_key: {self.imkit.client_key}
    token: {DEMO_IMKIT_TOKEN}
    dialogs:
      - name: all
      - name: work
        room_tags: [work]
  - name: demo-sendbird
    provider: sendbird
    application_id: 2D7B4CDB-932F-4082-9B09-A1153792DC8D
    base_url: {self.sendbird.url}
    api_token: {self.sendbird.api_token}
    dialogs:
      - name: agent-42
        user_id: agent-42
        custom_types: [support]
      - name: agent-7
        user_id: agent-7
      - name: agent-42-channels
        user_id: agent-42
        group_by: channel
  - name: demo-intercom
    provider: intercom
    base_url: {self.intercom.url}
    access_token: {self.intercom.access_token}
    dialogs:
      - name: inbox
      - name: billing
        team_id: "{DEMO_INTERCOM_TEAM}"
      - name: alice
        admin_id: "{DEMO_INTERCOM_ADMIN}"
      - name: inbox-by-team
        group_by: team
  - name: demo-stream
    provider: stream
    base_url: {self.stream.url}
    api_key: {self.stream.api_key}
    api_secret: {self.stream.api_secret}
    dialogs:
      - name: agent-42
        user_id: agent-42
      - name: agent-42-messaging
        user_id: agent-42
        channel_type: messaging
      - name: agent-7
        user_id: agent-7
      - name: agent-42-channels
        user_id: agent-42
        group_by: channel
  - name: demo-matrix
    provider: matrix
    base_url: {self.matrix.url}
    access_token: {DEMO_MATRIX_TOKEN}
    dialogs:
      - name: all
        group_by: room
      - name: support
        room: "{DEMO_MATRIX_ALIAS}"
  - name: demo-chatwoot
    provider: chatwoot
    base_url: {self.chatwoot.url}
    account_id: {self.chatwoot.account_id}
    api_access_token: {self.chatwoot.api_access_token}
    dialogs:
      - name: backlog
      - name: website
        inbox_id: 1
        unread_messages: true
      - name: billing
        team_id: 1
      - name: backlog-by-team
        group_by: team
      - name: backlog-by-agent
        group_by: agent
      - name: backlog-by-inbox
        group_by: inbox
  - name: demo-zendesk
    provider: zendesk
    subdomain: demo
    base_url: {self.zendesk.url}
    email: {self.zendesk.email}
    api_token: {self.zendesk.api_token}
    dialogs:
      - name: unassigned-view
        view_id: {DEMO_ZENDESK_VIEW}
      - name: unsolved
        query: status<solved
      - name: unsolved-by-group
        query: status<solved
        group_by: group
"""
