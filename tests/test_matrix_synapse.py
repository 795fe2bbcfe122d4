"""End to end against a real Synapse: the exporter's Matrix values equal Synapse's own /sync.

Starts Synapse (``matrix-synapse`` from tests/synapse/requirements.lock, installed into
``.venv-synapse`` by .ci/run) on loopback with SQLite, a client listener only (no federation),
no key servers, presence off and rate limits lifted. Users are registered through the
shared-secret admin API; rooms are created, messages sent and read receipts posted through the
client API. The exporter is scraped over HTTP from its app; the oracle is what Synapse answers
the same user on a plain full sync from a new login (a new device, so that Synapse's sync
response cache cannot answer it with an older result).

Skips when ``.venv-synapse`` is missing, unless ``CHAT_UNREAD_REQUIRE_SYNAPSE=1`` (.ci/run).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Awaitable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import web

from tests.support import (
    ROOT,
    Samples,
    ScrapeClient,
    Server,
    dialog_values,
    free_port,
    get_metrics,
    start_server,
    value,
    wait_ready,
)

SYNAPSE_PYTHON = ROOT / ".venv-synapse" / "bin" / "python"
REQUIRE_SYNAPSE = os.environ.get("CHAT_UNREAD_REQUIRE_SYNAPSE") == "1"
"""Set in CI: a missing Synapse fails the tests instead of skipping them."""
SERVER_NAME = "test.local"
SHARED_SECRET = secrets.token_hex(16)
PASSWORD = "correct-horse-battery-staple"
STARTUP_TIMEOUT = 60.0
# SQLite syncs every commit to disk; a memory-backed folder makes creating rooms several times
# faster where there is one (Synapse persists each room's events in its own commits).
FAST_DIR = Path("/dev/shm")
CLIENT = "/_matrix/client/v3"
ACCOUNT = "synapse-user"
LIFTED = {"per_second": 10000, "burst_count": 10000}

Counts = dict[str, tuple[int, int]]  # room id -> (notification_count, highlight_count)


def synapse_config(directory: Path, port: int) -> Path:
    """A homeserver that talks to nothing but the test, on loopback."""
    seed = secrets.token_bytes(32)
    key = "ed25519 a_test " + base64.b64encode(seed).decode().rstrip("=")
    (directory / "signing.key").write_text(key + "\n")
    (directory / "log.yaml").write_text(
        "version: 1\n"
        "formatters: {plain: {format: '%(asctime)s %(levelname)s %(name)s %(message)s'}}\n"
        "handlers: {console: {class: logging.StreamHandler, formatter: plain}}\n"
        "root: {level: WARNING, handlers: [console]}\n"
        "disable_existing_loggers: false\n"
    )
    config = {
        "server_name": SERVER_NAME,
        "public_baseurl": f"http://127.0.0.1:{port}/",
        "pid_file": str(directory / "homeserver.pid"),
        "listeners": [
            {
                "port": port,
                "bind_addresses": ["127.0.0.1"],
                "type": "http",
                "tls": False,
                "x_forwarded": False,
                "resources": [{"names": ["client"], "compress": False}],
            }
        ],
        "database": {"name": "sqlite3", "args": {"database": str(directory / "homeserver.db")}},
        "log_config": str(directory / "log.yaml"),
        "media_store_path": str(directory / "media"),
        "signing_key_path": str(directory / "signing.key"),
        "registration_shared_secret": SHARED_SECRET,
        "report_stats": False,
        "trusted_key_servers": [],
        "suppress_key_server_warning": True,
        "federation_domain_whitelist": [],
        "presence": {"enabled": False},
        "user_directory": {"enabled": False},
        "enable_metrics": False,
        "bcrypt_rounds": 4,
        "rc_message": LIFTED,
        "rc_registration": LIFTED,
        "rc_room_creation": LIFTED,
        "rc_login": {"address": LIFTED, "account": LIFTED, "failed_attempts": LIFTED},
        "rc_joins": {"local": LIFTED, "remote": LIFTED},
        "rc_joins_per_room": LIFTED,
        "rc_invites": {"per_room": LIFTED, "per_user": LIFTED, "per_issuer": LIFTED},
    }
    path = directory / "homeserver.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


def require_synapse() -> None:
    """Skip (or, in CI, fail) where Synapse is not installed."""
    if not SYNAPSE_PYTHON.exists():
        message = (
            "Synapse not installed: python3 -m venv .venv-synapse && "
            ".venv-synapse/bin/pip install -r tests/synapse/requirements.lock"
        )
        if REQUIRE_SYNAPSE:
            pytest.fail(f"{message} (CHAT_UNREAD_REQUIRE_SYNAPSE=1 requires it)")
        pytest.skip(message)


def synapse_directory() -> Path:
    base = FAST_DIR if FAST_DIR.is_dir() and os.access(FAST_DIR, os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix="chat-unread-synapse-", dir=base))


@pytest.fixture(scope="module")
def synapse() -> Iterator[Server]:
    require_synapse()
    directory = synapse_directory()
    try:
        port = free_port()
        synapse_config(directory, port)
        server = launch_synapse(directory, port)
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def launch_synapse(directory: Path, port: int) -> Server:
    """Start Synapse on the config ``synapse_config`` wrote in ``directory``; wait until ready."""
    command = [str(SYNAPSE_PYTHON), "-m", "synapse.app.homeserver", "-c"]
    config = directory / "homeserver.yaml"
    server = start_server("synapse", [*command, str(config)], port, directory, cwd=directory)
    wait_ready(server, "/health", STARTUP_TIMEOUT)
    return server


@dataclass(frozen=True)
class User:
    user_id: str
    token: str

    @property
    def localpart(self) -> str:
        return self.user_id[1:].split(":", 1)[0]


class Homeserver:
    """The test's own client of the Synapse under test (plain client and admin API calls)."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self._session = session
        self.url = url

    async def call(self, method: str, path: str, user: User | None = None, body: Any = None) -> Any:
        headers = {"Authorization": f"Bearer {user.token}"} if user else {}
        async with self._session.request(
            method, self.url + path, json=body, headers=headers
        ) as response:
            answer = await response.json()
            assert response.status == 200, f"{method} {path} -> {response.status}: {answer}"
            return answer

    async def register(self, prefix: str) -> User:
        """A new user, through the shared-secret registration admin API (HMAC-SHA1)."""
        localpart = f"{prefix}-{secrets.token_hex(3)}"
        nonce = (await self.call("GET", "/_synapse/admin/v1/register"))["nonce"]
        message = b"\x00".join(part.encode() for part in (nonce, localpart, PASSWORD, "notadmin"))
        mac = hmac.new(SHARED_SECRET.encode(), message, hashlib.sha1).hexdigest()
        body = {"nonce": nonce, "username": localpart, "password": PASSWORD, "mac": mac}
        answer = await self.call("POST", "/_synapse/admin/v1/register", body=body)
        return User(answer["user_id"], answer["access_token"])

    async def create_room(self, creator: User, alias: str | None = None) -> str:
        body: dict[str, Any] = {"preset": "public_chat"}
        if alias is not None:
            body["room_alias_name"] = alias
        return str((await self.call("POST", f"{CLIENT}/createRoom", creator, body))["room_id"])

    async def join(self, user: User, room: str) -> None:
        await self.call("POST", f"{CLIENT}/join/{quote(room)}", user, {})

    async def leave(self, user: User, room: str) -> None:
        await self.call("POST", f"{CLIENT}/rooms/{quote(room)}/leave", user, {})

    async def send(self, sender: User, room: str, mention: User | None = None) -> str:
        """A text message; one that mentions a user highlights for them (m.mentions)."""
        content: dict[str, Any] = {"msgtype": "m.text", "body": "a customer writes"}
        if mention is not None:
            content["body"] = f"{mention.localpart}: please look"
            content["m.mentions"] = {"user_ids": [mention.user_id]}
        path = f"{CLIENT}/rooms/{quote(room)}/send/m.room.message/{secrets.token_hex(8)}"
        return str((await self.call("PUT", path, sender, content))["event_id"])

    async def receipt(self, user: User, room: str, event_id: str) -> None:
        path = f"{CLIENT}/rooms/{quote(room)}/receipt/m.read/{quote(event_id)}"
        await self.call("POST", path, user, {})

    async def counts(self, user: User) -> Counts:
        """Synapse's own counts for ``user``: a plain full sync from a new login (device)."""
        login = {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": user.localpart},
            "password": PASSWORD,
        }
        device = await self.call("POST", f"{CLIENT}/login", body=login)
        fresh = User(user.user_id, device["access_token"])
        return unread_counts(await self.call("GET", f"{CLIENT}/sync?timeout=0", fresh))


def unread_counts(sync: Any) -> Counts:
    return {
        room_id: (
            room["unread_notifications"]["notification_count"],
            room["unread_notifications"]["highlight_count"],
        )
        for room_id, room in sync["rooms"]["join"].items()
    }


async def gather_limited(calls: Iterable[Awaitable[Any]], limit: int = 2) -> list[Any]:
    """Run the calls two at a time: one waits on the network while Synapse works on the
    other (more only contend for Synapse's one process; measured)."""
    semaphore = asyncio.Semaphore(limit)

    async def bounded(call: Awaitable[Any]) -> Any:
        async with semaphore:
            return await call

    return list(await asyncio.gather(*(bounded(call) for call in calls)))


@pytest.fixture
async def homeserver(synapse: Server) -> Any:
    async with aiohttp.ClientSession() as session:
        yield Homeserver(session, synapse.url)


def exporter_config(url: str, user: User, dialogs: dict[str, str | None]) -> str:
    """One Matrix account; ``dialogs`` maps each dialog name to its room (None: all rooms)."""
    lines = [
        "accounts:",
        f"  - name: {ACCOUNT}",
        "    provider: matrix",
        f"    base_url: {url}",
        f"    access_token: {user.token}",
        "    timeout: 30s",
        "    dialogs:",
    ]
    for name, room in dialogs.items():
        lines.append(f"      - name: {name}")
        if room is not None:
            lines.append(f'        room: "{room}"')
    return "\n".join(lines) + "\n"


def expected(oracle: Counts, dialogs: dict[str, str | None], aliases: dict[str, str]) -> Samples:
    """The series the exporter must serve when Synapse reports ``oracle``."""
    want: Samples = {}
    for name, room in dialogs.items():
        labels = frozenset({"provider": "matrix", "account": ACCOUNT, "dialog": name}.items())
        if room is None:
            messages = sum(n for n, _ in oracle.values())
            mentions = sum(h for _, h in oracle.values())
        else:
            messages, mentions = oracle[aliases.get(room, room)]
        want[("chat_unread_messages", labels)] = float(messages)
        want[("chat_unread_mentions", labels)] = float(mentions)
    return want


def served(samples: Samples) -> Samples:
    return {
        key: number
        for key, number in samples.items()
        if key[0] in ("chat_unread_messages", "chat_unread_mentions")
    }


def upstream_requests(samples: Samples) -> float:
    labels = {"provider": "matrix", "account": ACCOUNT, "status_class": "2xx"}
    return value(samples, "chat_unread_upstream_requests_total", **labels) or 0.0


async def test_values_equal_synapse_through_receipts_mentions_restart_and_leave(
    homeserver: Homeserver, scrape_client: ScrapeClient
) -> None:
    watched, sender = await asyncio.gather(
        homeserver.register("agent"), homeserver.register("customer")
    )
    alias_name = f"support-{secrets.token_hex(3)}"
    alias = f"#{alias_name}:{SERVER_NAME}"
    support, sales, quiet = await asyncio.gather(
        homeserver.create_room(watched, alias_name),
        homeserver.create_room(watched),
        homeserver.create_room(watched),
    )
    await asyncio.gather(*(homeserver.join(sender, room) for room in (support, sales, quiet)))
    for _ in range(3):
        last_support = await homeserver.send(sender, support)
    await homeserver.send(sender, sales)
    await homeserver.send(sender, sales, mention=watched)
    dialogs = {"all": None, "support": alias, "sales": sales, "quiet": quiet}
    aliases = {alias: support}
    config = exporter_config(homeserver.url, watched, dialogs)

    client = await scrape_client(config)
    first = await get_metrics(client)
    oracle = await homeserver.counts(watched)
    assert oracle == {support: (3, 0), sales: (2, 1), quiet: (0, 0)}
    assert served(first) == expected(oracle, dialogs, aliases)
    assert dialog_values(first, "chat_unread_conversations", "matrix") == {"all": 2.0}
    assert upstream_requests(first) == 2.0  # one full sync, one alias lookup

    # A read receipt lowers a count to 0: the incremental sync must carry that room.
    await homeserver.receipt(watched, support, last_support)
    after_receipt = await get_metrics(client)
    oracle = await homeserver.counts(watched)
    assert oracle[support] == (0, 0)
    assert served(after_receipt) == expected(oracle, dialogs, aliases)

    # A mention in a room that had nothing: a highlight.
    await homeserver.send(sender, quiet, mention=watched)
    after_mention = await get_metrics(client)
    oracle = await homeserver.counts(watched)
    assert oracle[quiet] == (1, 1)
    assert served(after_mention) == expected(oracle, dialogs, aliases)
    assert upstream_requests(after_mention) == 4.0  # one incremental sync per scrape

    # A new exporter (as after a restart) starts with a full sync, within Synapse's response
    # cache time of the first exporter's full sync: it must see today's counts, not that answer.
    await homeserver.send(sender, sales)
    restarted = await scrape_client(config)
    after_restart = await get_metrics(restarted)
    oracle = await homeserver.counts(watched)
    assert oracle == {support: (0, 0), sales: (3, 1), quiet: (1, 1)}
    assert served(after_restart) == expected(oracle, dialogs, aliases)

    # Leaving a room drops it from "all", and its own dialog fails (never a stale value).
    await homeserver.leave(watched, quiet)
    after_leave = await get_metrics(restarted)
    oracle = await homeserver.counts(watched)
    assert quiet not in oracle
    del dialogs["quiet"]
    assert served(after_leave) == expected(oracle, dialogs, aliases)
    assert (
        value(after_leave, "chat_unread_up", provider="matrix", account=ACCOUNT, dialog="quiet")
        == 0.0
    )


async def test_synapse_answers_a_repeated_full_sync_from_its_cache(
    homeserver: Homeserver, scrape_client: ScrapeClient
) -> None:
    """Why the exporter varies its requests: Synapse serves an identical /sync from a cache."""
    watched, sender = await asyncio.gather(
        homeserver.register("agent"), homeserver.register("customer")
    )
    room = await homeserver.create_room(watched)
    await homeserver.join(sender, room)
    await homeserver.send(sender, room)
    plain = f"{CLIENT}/sync?timeout=0"
    before = unread_counts(await homeserver.call("GET", plain, watched))
    await homeserver.send(sender, room)

    repeated = unread_counts(await homeserver.call("GET", plain, watched))
    assert before == repeated == {room: (1, 0)}  # the cached answer, one message short
    assert await homeserver.counts(watched) == {room: (2, 0)}
    config = exporter_config(homeserver.url, watched, {"room": room})
    samples = await get_metrics(await scrape_client(config))
    assert dialog_values(samples, "chat_unread_messages", "matrix") == {"room": 2.0}


ROOMS = 200
# A full sync of 200 rooms takes Synapse seconds on a busy machine: a deadline like a slow job's.
SLOW_SCRAPE = {"X-Prometheus-Scrape-Timeout-Seconds": "30"}


async def test_two_hundred_rooms_in_one_sync(
    homeserver: Homeserver, scrape_client: ScrapeClient
) -> None:
    watched, sender = await asyncio.gather(
        homeserver.register("agent"), homeserver.register("customer")
    )
    rooms: list[str] = await gather_limited(homeserver.create_room(watched) for _ in range(ROOMS))
    # Room i gets i % 3 messages (the sender joins only rooms that get some); in rooms 1, 11,
    # 21, ... the last one mentions the watched user.
    busy = [(index, room) for index, room in enumerate(rooms) if index % 3]
    await gather_limited(homeserver.join(sender, room) for _, room in busy)

    async def send_all(index: int, room: str) -> str:
        """The room's messages one after another, so the last one sent is the newest."""
        for k in range(index % 3):
            mention = watched if index % 10 == 1 and k == index % 3 - 1 else None
            event = await homeserver.send(sender, room, mention)
        return event

    events = await gather_limited(send_all(index, room) for index, room in busy)
    last_event = {room: event for (_, room), event in zip(busy, events, strict=True)}
    dialogs: dict[str, str | None] = {"all": None} | {f"r{i:03d}": r for i, r in enumerate(rooms)}
    client = await scrape_client(exporter_config(homeserver.url, watched, dialogs))

    first = await get_metrics(client, **SLOW_SCRAPE)
    oracle = await homeserver.counts(watched)
    assert len(oracle) == ROOMS
    assert sum(n for n, _ in oracle.values()) == 199  # room i: i % 3
    assert sum(h for _, h in oracle.values()) == 14  # rooms 1, 11, ..., 191 with messages
    assert served(first) == expected(oracle, dialogs, {})

    # Receipts in the first 50 rooms, new messages in 30 others: one incremental sync.
    read = [room for room in rooms[:50] if room in last_event]
    await gather_limited(homeserver.receipt(watched, room, last_event[room]) for room in read)
    await gather_limited(homeserver.send(sender, room) for _, room in busy[-30:])
    second = await get_metrics(client, **SLOW_SCRAPE)
    oracle = await homeserver.counts(watched)
    assert sum(n for n, _ in oracle.values()) == 199 - 49 + 30
    assert served(second) == expected(oracle, dialogs, {})
    assert upstream_requests(second) == 2.0  # one sync per scrape, whatever the room count


def sync_filter_with_threads_apart() -> str:
    return quote(json.dumps({"room": {"timeline": {"unread_thread_notifications": True}}}))


async def test_values_equal_what_element_shows_threads_mutes_invites_upgrades(
    homeserver: Homeserver, scrape_client: ScrapeClient
) -> None:
    """Synapse's counts, read as Element reads them: thread replies left out of the room's
    badge, a muted room at 0, an invite as one, an upgraded room hidden behind its successor
    with its highlights carried over."""
    watched, sender, inviter = await asyncio.gather(
        homeserver.register("agent"), homeserver.register("customer"), homeserver.register("peer")
    )
    threaded, muted, upgraded = await asyncio.gather(
        *(homeserver.create_room(watched) for _ in range(3))
    )
    await asyncio.gather(*(homeserver.join(sender, r) for r in (threaded, muted, upgraded)))
    root = await homeserver.send(sender, threaded)
    reply = {
        "msgtype": "m.text",
        "body": "in a thread",
        "m.relates_to": {"rel_type": "m.thread", "event_id": root},
    }
    path = f"{CLIENT}/rooms/{quote(threaded)}/send/m.room.message/{secrets.token_hex(8)}"
    await homeserver.call("PUT", path, sender, reply)
    for _ in range(2):
        await homeserver.send(sender, muted)
    await homeserver.send(sender, upgraded)
    await homeserver.send(sender, upgraded, mention=watched)
    # Element's "Mute", after the messages arrived: an override rule matching the room.
    rule = {
        "conditions": [{"kind": "event_match", "key": "room_id", "pattern": muted}],
        "actions": [],
    }
    await homeserver.call(
        "PUT", f"{CLIENT}/pushrules/global/override/{quote(muted)}", watched, rule
    )
    successor = (
        await homeserver.call(
            "POST", f"{CLIENT}/rooms/{quote(upgraded)}/upgrade", watched, {"new_version": "10"}
        )
    )["replacement_room"]
    invited = await homeserver.create_room(inviter)
    await homeserver.call(
        "POST", f"{CLIENT}/rooms/{quote(invited)}/invite", inviter, {"user_id": watched.user_id}
    )

    # What Synapse itself counts: threads in the room's count, the mute not applied backwards.
    plain = await homeserver.counts(watched)
    assert plain[threaded] == (2, 0)
    assert plain[muted] == (2, 0)
    assert plain[upgraded] == (2, 1)
    dialogs = {"all": None, "threaded": threaded, "muted": muted, "upgraded": upgraded}
    samples = await get_metrics(
        await scrape_client(exporter_config(homeserver.url, watched, dialogs))
    )

    assert dialog_values(samples, "chat_unread_messages", "matrix") == {
        "all": 1.0 + plain[successor][0],  # the thread root only; muted and replaced hidden
        "threaded": 1.0,
        "muted": 0.0,
        "upgraded": 0.0,
    }
    assert dialog_values(samples, "chat_unread_mentions", "matrix") == {
        "all": 1.0 + plain[successor][1],  # the replaced room's highlight, in its successor
        "threaded": 0.0,
        "muted": 0.0,
        "upgraded": 0.0,
    }
    assert dialog_values(samples, "chat_unread_invitations", "matrix") == {"all": 1.0}
    # The thread's root is what the room's own main-timeline count holds, as Synapse says
    # when asked for thread counts apart.
    path = f"{CLIENT}/sync?timeout=0&filter={sync_filter_with_threads_apart()}"
    device = await homeserver.call(
        "POST",
        f"{CLIENT}/login",
        body={
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": watched.localpart},
            "password": PASSWORD,
        },
    )
    apart = unread_counts(
        await homeserver.call("GET", path, User(watched.user_id, device["access_token"]))
    )
    assert apart[threaded] == (1, 0)


class SyncRecorder:
    """A loopback proxy in front of Synapse that keeps every /sync answer it forwards, so a
    test sees what the exporter's own requests brought back."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.answers: list[tuple[bool, Any]] = []  # (incremental, decoded body)
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> SyncRecorder:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        self._session = aiohttp.ClientSession(auto_decompress=True)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._session is not None
        assert self._runner is not None
        await self._session.close()
        await self._runner.cleanup()

    async def _forward(self, request: web.Request) -> web.Response:
        assert self._session is not None
        headers = {"Authorization": request.headers.get("Authorization", "")}
        url = self.target + request.path_qs
        async with self._session.get(url, headers=headers) as answer:
            raw = await answer.read()
            status, content_type = answer.status, answer.content_type
        if request.path.endswith("/sync") and status == 200:
            self.answers.append(("since" in request.query, json.loads(raw)))
        return web.Response(body=raw, status=status, content_type=content_type)


def receipt_senders(sync: Any, room: str) -> set[str]:
    """The users whose read receipts a sync answer carries for ``room``."""
    entry = sync.get("rooms", {}).get("join", {}).get(room, {})
    senders: set[str] = set()
    for event in entry.get("ephemeral", {}).get("events", []):
        if event.get("type") == "m.receipt":
            for receipts in event["content"].values():
                for users in receipts.values():
                    senders.update(users)
    return senders


MEMBERS = 30


async def test_full_syncs_leave_every_members_receipts_out(
    homeserver: Homeserver, scrape_client: ScrapeClient
) -> None:
    """Synapse puts every member's read receipt in a full sync (46.5 bytes each: at about
    180,000 of them an answer passes the 8 MiB cap, and fails for good); the exporter's full
    syncs ask for none, its incremental ones for those since the token (a receipt that lowers
    a count must reach it), and its values stay Synapse's."""
    watched, sender = await asyncio.gather(
        homeserver.register("agent"), homeserver.register("customer")
    )
    members: list[User] = await gather_limited(
        homeserver.register("member") for _ in range(MEMBERS)
    )
    room = await homeserver.create_room(watched)
    await gather_limited(homeserver.join(user, room) for user in [sender, *members])
    first_message = await homeserver.send(sender, room)
    await gather_limited(homeserver.receipt(user, room, first_message) for user in members)
    last_message = await homeserver.send(sender, room)

    # The premise, from Synapse itself: a plain full sync carries every member's receipt.
    plain = await homeserver.call("GET", f"{CLIENT}/sync?timeout=0", sender)
    assert {user.user_id for user in members} <= receipt_senders(plain, room)

    async with SyncRecorder(homeserver.url) as recorder:
        dialogs: dict[str, str | None] = {"room": room}
        client = await scrape_client(exporter_config(recorder.url, watched, dialogs))
        first = await get_metrics(client)
        assert [incremental for incremental, _ in recorder.answers] == [False]
        assert receipt_senders(recorder.answers[0][1], room) == set()
        oracle = await homeserver.counts(watched)
        assert oracle == {room: (2, 0)}
        assert served(first) == expected(oracle, dialogs, {})

        # The watched user reads: only the incremental sync can carry that receipt.
        await homeserver.receipt(watched, room, last_message)
        second = await get_metrics(client)
        incremental, answer = recorder.answers[-1]
        assert incremental
        assert watched.user_id in receipt_senders(answer, room)
        oracle = await homeserver.counts(watched)
        assert oracle == {room: (0, 0)}
        assert served(second) == expected(oracle, dialogs, {})


async def test_a_homeserver_restored_from_a_backup_is_caught_up_with_a_full_sync(
    scrape_client: ScrapeClient,
) -> None:
    """A homeserver whose database is restored from a backup is behind the exporter's
    ``since`` token. Synapse then answers an incremental sync with nothing new, from its own
    older position (the premise, checked here with a plain client), so counts held from
    before would stay for good: the exporter must notice and sync in full."""
    require_synapse()
    directory = synapse_directory()
    port = free_port()
    synapse_config(directory, port)
    database = directory / "homeserver.db"
    backup = directory / "backup.db"
    own = launch_synapse(directory, port)
    try:
        async with aiohttp.ClientSession() as session:
            server = Homeserver(session, own.url)
            watched, sender = await asyncio.gather(
                server.register("agent"), server.register("customer")
            )
            room = await server.create_room(watched)
            await server.join(sender, room)
            for _ in range(2):
                await server.send(sender, room)
        dialogs: dict[str, str | None] = {"room": room}
        client = await scrape_client(exporter_config(own.url, watched, dialogs))
        assert dialog_values(await get_metrics(client), "chat_unread_messages", "matrix") == {
            "room": 2.0
        }

        own.stop()  # the backup, taken while the homeserver is down
        shutil.copyfile(database, backup)
        own = launch_synapse(directory, port)
        async with aiohttp.ClientSession() as session:
            server = Homeserver(session, own.url)
            for _ in range(3):
                await server.send(sender, room)
            ahead = (await server.call("GET", f"{CLIENT}/sync?timeout=0", watched))["next_batch"]
        assert await messages_when_up(client) == 5.0

        own.stop()  # the restore
        shutil.copyfile(backup, database)
        for journal in directory.glob("homeserver.db-*"):
            journal.unlink()
        own = launch_synapse(directory, port)
        async with aiohttp.ClientSession() as session:
            server = Homeserver(session, own.url)
            await server.send(sender, room)
            since_ahead = f"{CLIENT}/sync?timeout=0&since={quote(ahead)}"
            stale = await server.call("GET", since_ahead, watched)
            assert room not in stale.get("rooms", {}).get("join", {})  # "nothing new"
            oracle = await server.counts(watched)
        assert oracle == {room: (3, 0)}
        assert await messages_when_up(client) == 3.0
    finally:
        own.stop()
        shutil.rmtree(directory, ignore_errors=True)


async def messages_when_up(client: Any, attempts: int = 5) -> float | None:
    """The dialog's messages at the first scrape that has it ``up 1``: the first request
    after a homeserver restart can meet a connection the old process closed."""
    for _ in range(attempts):
        samples = await get_metrics(client)
        labels = {"provider": "matrix", "account": ACCOUNT, "dialog": "room"}
        if value(samples, "chat_unread_up", **labels) == 1.0:
            return value(samples, "chat_unread_messages", **labels)
        await asyncio.sleep(1.0)
    return None
