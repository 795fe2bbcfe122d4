"""The benchmark's synthetic world: accounts, dialogs and the data the simulators serve.

One :class:`Scenario` is the single source of truth for three consumers that must agree exactly:
the simulator process (what data to serve), the exporter's generated config (what to ask for),
and the in-process baselines (the same upstream requests, replayed without the exporter). The
numbers a scenario implies (dialogs, minimum upstream calls) are derived here too, so the
"calls per scrape against the minimum" check is computed from the data rather than hard-coded.
"""

from __future__ import annotations

import base64
from collections import Counter
from dataclasses import dataclass

# Must match the exporter's provider modules (checked against what the simulators count).
CRISP_PAGE_SIZE = 50
QUICKBLOX_IDS_PER_REQUEST = 100
SENDBIRD_ITEM_KEYS = (
    "group_channel_unread_message_count,group_channel_unread_mention_count,"
    "group_channel_invitation_count"
)
IMKIT_TAGS = ("sales", "support", "billing", "vip", "night")

PROVIDER_NAMES = ("crisp", "quickblox", "imkit", "sendbird")
# Fixed credentials; the simulators are started with the same ones.
CRISP_IDENTIFIER, CRISP_KEY = "bench-crisp-identifier", "bench-crisp-key"
QUICKBLOX_API_KEY = "bench-qb-api-key"
IMKIT_CLIENT_KEY = "bench-imkit-client-key"
SENDBIRD_API_TOKEN = "bench-sendbird-api-token"
SENDBIRD_APP_ID = "2D7B4CDB-932F-4082-9B09-A1153792DC8D"


@dataclass(frozen=True)
class Scenario:
    """A mix of the four providers sized to a dialog count.

    Crisp accounts have ``crisp_sessions`` single-conversation dialogs plus one backlog dialog,
    whose website holds ``crisp_sessions + crisp_backlog_extra`` unread open conversations (so
    the backlog costs several pages). Each QuickBlox account has one ``total`` dialog plus the
    number of dialog ids given for it in ``quickblox_ids`` (values over 100 need several
    batched requests).
    """

    name: str
    crisp_accounts: int
    crisp_sessions: int
    crisp_backlog_extra: int
    imkit_accounts: int
    imkit_dialogs: int
    sendbird_accounts: int
    sendbird_dialogs: int
    quickblox_ids: tuple[int, ...]
    # The upstream latency this scenario is defined at (None: the run's --latency).
    latency: float | None = None
    # Queues (issue 14): the first ``crisp_grouped`` Crisp backlogs take ``group_by: operator``;
    # the first ``crisp_wide`` of them hold ``crisp_wide_backlog`` more conversations, each
    # assigned to an operator of its own (that many groups, folded to max_groups).
    crisp_grouped: int = 0
    crisp_wide: int = 0
    crisp_wide_backlog: int = 0

    @property
    def accounts(self) -> int:
        return (
            self.crisp_accounts
            + self.imkit_accounts
            + self.sendbird_accounts
            + len(self.quickblox_ids)
        )

    @property
    def dialogs(self) -> int:
        return (
            self.crisp_accounts * (self.crisp_sessions + 1)
            + self.imkit_accounts * self.imkit_dialogs
            + self.sendbird_accounts * self.sendbird_dialogs
            + sum(ids + 1 for ids in self.quickblox_ids)
        )

    @property
    def crisp_backlog_pages(self) -> int:
        """Pages a backlog costs: the last page is the first one shorter than a full page."""
        return self.backlog_pages(self.crisp_wide)  # an account that is not a wide one

    def crisp_backlog_size(self, account: int) -> int:
        """Unread open conversations in the backlog of Crisp account ``account``."""
        wide = self.crisp_wide_backlog if account < self.crisp_wide else 0
        return self.crisp_sessions + self.crisp_backlog_extra + wide

    def backlog_pages(self, account: int) -> int:
        """Pages account ``account``'s backlog costs (grouped or not: the same pages)."""
        return self.crisp_backlog_size(account) // CRISP_PAGE_SIZE + 1

    def critical_path(self, max_concurrency: int = 8) -> int:
        """Upstream round trips that must follow one another in any account's refresh.

        Backlog pages are sequential (each page says whether there is another), and an
        account's ``max_concurrency`` (8 by default) lets only that many requests overlap, so a
        scrape cannot finish in less than this many times the upstream latency.
        """

        def rounds(requests: int) -> int:
            return -(-requests // max_concurrency)

        crisp = max(
            (
                max(self.backlog_pages(a), rounds(self.crisp_sessions + self.backlog_pages(a)))
                for a in range(self.crisp_accounts)
            ),
            default=0,
        )
        quickblox = max((rounds(quickblox_calls(ids)) for ids in self.quickblox_ids), default=0)
        return max(
            crisp if self.crisp_accounts else 0,
            quickblox,
            rounds(self.imkit_dialogs) if self.imkit_accounts else 0,
            rounds(self.sendbird_dialogs) if self.sendbird_accounts else 0,
        )

    def minimum_calls(self) -> Counter[str]:
        """The fewest upstream requests per scrape each provider's API allows for this data."""
        return Counter(
            {
                "crisp": sum(
                    self.crisp_sessions + self.backlog_pages(a) for a in range(self.crisp_accounts)
                ),
                "quickblox": sum(quickblox_calls(ids) for ids in self.quickblox_ids),
                "imkit": self.imkit_accounts * self.imkit_dialogs,
                "sendbird": self.sendbird_accounts * self.sendbird_dialogs,
            }
        )


SCENARIOS = {
    # 220 accounts, 1,000 dialogs: 60 accounts x 4 dialogs for Crisp/IMKit/Sendbird and
    # 40 QuickBlox accounts of 6 ids + total.
    "1k": Scenario(
        name="1k",
        crisp_accounts=60,
        crisp_sessions=3,
        crisp_backlog_extra=67,
        imkit_accounts=60,
        imkit_dialogs=4,
        sendbird_accounts=60,
        sendbird_dialogs=4,
        quickblox_ids=(6,) * 40,
    ),
    # 220 accounts, 5,000 dialogs: 60 accounts x 20 dialogs for Crisp/IMKit/Sendbird, 36
    # QuickBlox accounts of 14 ids and 4 of 214 ids (three batched requests each).
    "5k": Scenario(
        name="5k",
        crisp_accounts=60,
        crisp_sessions=19,
        crisp_backlog_extra=101,
        imkit_accounts=60,
        imkit_dialogs=20,
        sendbird_accounts=60,
        sendbird_dialogs=20,
        quickblox_ids=(14,) * 36 + (214,) * 4,
    ),
    # Many small accounts (issue 10): 300 Sendbird accounts x 3 dialogs at 200 ms latency, where
    # the exporter's cost per account and per series (tasks, self-metric series, rendering)
    # weighs most against the cost of the requests themselves.
    "300x3": Scenario(
        name="300x3",
        crisp_accounts=0,
        crisp_sessions=0,
        crisp_backlog_extra=0,
        imkit_accounts=0,
        imkit_dialogs=0,
        sendbird_accounts=300,
        sendbird_dialogs=3,
        quickblox_ids=(),
        latency=0.2,
    ),
    # Queues (issue 14): 1,000 dialogs of which 50 grouped. 50 Crisp accounts (a backlog split
    # by operator and 3 sessions each; 3 backlogs hold 5,000 more conversations, each with an
    # operator of its own: 101 pages and 5,000 groups folded to 20) and 200 Sendbird accounts
    # x 4 dialogs. A split costs no request: the minimum is the ungrouped one.
    "queues": Scenario(
        name="queues",
        crisp_accounts=50,
        crisp_sessions=3,
        crisp_backlog_extra=67,
        imkit_accounts=0,
        imkit_dialogs=0,
        sendbird_accounts=200,
        sendbird_dialogs=4,
        quickblox_ids=(),
        crisp_grouped=50,
        crisp_wide=3,
        crisp_wide_backlog=5000,
    ),
    # The --quick smoke mode's own small world.
    "smoke": Scenario(
        name="smoke",
        crisp_accounts=5,
        crisp_sessions=3,
        crisp_backlog_extra=60,
        imkit_accounts=5,
        imkit_dialogs=4,
        sendbird_accounts=5,
        sendbird_dialogs=4,
        quickblox_ids=(6,) * 4 + (120,),
    ),
}


def website_id(account: int) -> str:
    return f"website-{account:04d}"


def session_id(account: int, dialog: int) -> str:
    return f"session_{account:04d}_{dialog:04d}"


def quickblox_calls(ids: int) -> int:
    """Requests a QuickBlox account with ``ids`` dialog ids and a total dialog needs: one per
    100 ids, and one without ids for the user's total (``total`` beside ids may count only
    the listed dialogs)."""
    return -(-ids // QUICKBLOX_IDS_PER_REQUEST) + 1


def quickblox_user(account: int) -> int:
    return 1000 + account


def quickblox_dialog_id(account: int, dialog: int) -> str:
    return f"{account:08x}{dialog:016x}"


def imkit_token(account: int) -> str:
    return f"imkit-token-{account:04d}"


def imkit_tags(dialog: int) -> list[str]:
    """Dialog 0 counts every room; the others filter on one tag."""
    return [] if dialog == 0 else [IMKIT_TAGS[dialog % len(IMKIT_TAGS)]]


def sendbird_user(account: int, dialog: int) -> str:
    return f"agent-{account:04d}-{dialog:04d}"


def config_yaml(scenario: Scenario, urls: dict[str, str]) -> str:
    """The exporter's config for the scenario, pointing at the simulators' ``urls``."""
    lines = ["accounts:"]
    for a in range(scenario.crisp_accounts):
        lines += [
            f"  - name: crisp-{a:04d}",
            "    provider: crisp",
            f"    base_url: {urls['crisp']}",
            f"    website_id: {website_id(a)}",
            f"    identifier: {CRISP_IDENTIFIER}",
            f"    key: {CRISP_KEY}",
            "    dialogs:",
            "      - name: backlog",
        ]
        if a < scenario.crisp_grouped:
            lines.append("        group_by: operator")
        for d in range(scenario.crisp_sessions):
            lines += [f"      - name: s{d:04d}", f"        session_id: '{session_id(a, d)}'"]
    for a, ids in enumerate(scenario.quickblox_ids):
        lines += [
            f"  - name: quickblox-{a:04d}",
            "    provider: quickblox",
            f"    base_url: {urls['quickblox']}",
            f"    api_key: {QUICKBLOX_API_KEY}",
            f"    on_behalf_of: {quickblox_user(a)}",
            "    dialogs:",
            "      - name: total",
        ]
        for d in range(ids):
            lines += [
                f"      - name: d{d:04d}",
                f"        dialog_id: '{quickblox_dialog_id(a, d)}'",
            ]
    for a in range(scenario.imkit_accounts):
        lines += [
            f"  - name: imkit-{a:04d}",
            "    provider: imkit",
            f"    base_url: {urls['imkit']}",
            f"    client_key: {IMKIT_CLIENT_KEY}",
            f"    token: {imkit_token(a)}",
            "    dialogs:",
        ]
        for d in range(scenario.imkit_dialogs):
            lines += [f"      - name: r{d:04d}", f"        room_tags: {imkit_tags(d)}"]
    for a in range(scenario.sendbird_accounts):
        lines += [
            f"  - name: sendbird-{a:04d}",
            "    provider: sendbird",
            f"    application_id: {SENDBIRD_APP_ID}",
            f"    base_url: {urls['sendbird']}",
            f"    api_token: {SENDBIRD_API_TOKEN}",
            "    dialogs:",
        ]
        for d in range(scenario.sendbird_dialogs):
            lines += [f"      - name: u{d:04d}", f"        user_id: {sendbird_user(a, d)}"]
    return "\n".join(lines) + "\n"


Pairs = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class PlannedRequest:
    """One upstream request exactly as the exporter makes it (for the in-process baselines).

    ``account`` groups requests the way the exporter bounds them (``max_concurrency`` each).
    Requests of one ``chain`` are made one after another, in order: a Crisp backlog's next page
    can only be asked for once the page before has answered (Crisp gives no total), by the
    exporter as by any client.
    """

    account: str
    url: str
    params: Pairs
    headers: Pairs
    chain: str | None = None


def planned_requests(scenario: Scenario, urls: dict[str, str]) -> list[PlannedRequest]:
    """Every upstream request one scrape of the scenario needs, at the API's minimum count."""
    out: list[PlannedRequest] = []
    basic = base64.b64encode(f"{CRISP_IDENTIFIER}:{CRISP_KEY}".encode()).decode()
    crisp_headers: Pairs = (("Authorization", f"Basic {basic}"), ("X-Crisp-Tier", "plugin"))
    backlog_params: Pairs = (
        ("filter_unread", "1"),
        ("filter_not_resolved", "1"),
        ("per_page", "50"),
    )
    for a in range(scenario.crisp_accounts):
        root = f"{urls['crisp']}/v1/website/{website_id(a)}"
        for page in range(1, scenario.backlog_pages(a) + 1):
            out.append(
                PlannedRequest(
                    f"crisp-{a}",
                    f"{root}/conversations/{page}",
                    backlog_params,
                    crisp_headers,
                    chain=f"crisp-{a}-backlog",
                )
            )
        for d in range(scenario.crisp_sessions):
            url = f"{root}/conversation/{session_id(a, d)}"
            out.append(PlannedRequest(f"crisp-{a}", url, (), crisp_headers))
    for a, ids in enumerate(scenario.quickblox_ids):
        headers: Pairs = (
            ("Authorization", f"ApiKey {QUICKBLOX_API_KEY}"),
            ("On-Behalf-Of", str(quickblox_user(a))),
        )
        all_ids = [quickblox_dialog_id(a, d) for d in range(ids)]
        url = f"{urls['quickblox']}/chat/Message/unread.json"
        for start in range(0, len(all_ids), QUICKBLOX_IDS_PER_REQUEST):
            chunk = all_ids[start : start + QUICKBLOX_IDS_PER_REQUEST]
            params: Pairs = (("chat_dialog_ids", ",".join(chunk)),)
            out.append(PlannedRequest(f"quickblox-{a}", url, params, headers))
        out.append(PlannedRequest(f"quickblox-{a}", url, (), headers))  # the total
    for a in range(scenario.imkit_accounts):
        headers = (("IM-CLIENT-KEY", IMKIT_CLIENT_KEY), ("IM-Authorization", imkit_token(a)))
        for d in range(scenario.imkit_dialogs):
            params = tuple(("roomTags", tag) for tag in imkit_tags(d))
            out.append(PlannedRequest(f"imkit-{a}", f"{urls['imkit']}/me/badge", params, headers))
    for a in range(scenario.sendbird_accounts):
        headers = (("Api-Token", SENDBIRD_API_TOKEN),)
        for d in range(scenario.sendbird_dialogs):
            url = f"{urls['sendbird']}/v3/users/{sendbird_user(a, d)}/unread_item_count"
            params = (("item_keys", SENDBIRD_ITEM_KEYS),)
            out.append(PlannedRequest(f"sendbird-{a}", url, params, headers))
    return out
