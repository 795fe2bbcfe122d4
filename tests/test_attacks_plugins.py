"""Standing attacks by a provider plugin (issue 15, defect 8): third-party code held in place.

A plugin runs inside the exporter: its import at startup, its fetch in the event loop, its
envelope hooks inside ``upstream``. Here a hostile plugin is registered in-process (as an
installed one would be, under its entry point name) and every scrape goes over HTTP to the
real app: whatever the plugin does (raise ``SystemExit``, leak its token in an exception,
block the loop, record dialogs it was not given, report -5 or "7", answer NaN to a back-off
question, name a reason with a line break), its own dialogs are served ``up 0`` with a
reason, the log names it, and the rest of the exporter goes on. Broken imports are in
``test_plugins.py`` too (an installed package); the hung import is tested on ``discover``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pydantic import Field, SecretStr

from exporter.fetching import registry
from exporter.fetching.registry import ENTRY_POINT_GROUP, discover
from exporter.fetching.stalls import STALL_LIMIT_SECONDS
from exporter.models import AccountConfig, DialogConfig
from exporter.providers.base import FetchError, Provider, Reading, Record, fetch_each
from exporter.providers.sendbird import PROVIDER as SENDBIRD
from exporter.simulator import Fault, Simulator
from exporter.upstream import Upstream
from exporter.web.app import make_app
from tests.support import (
    ClientFactory,
    ExporterFactory,
    FakeClock,
    Samples,
    ScrapeClient,
    config_yaml,
    errors_of,
    get_metrics,
    value,
)
from tests.test_attacks_runtime import SB_429, formatted_log_lines, probe_debug
from tests.test_cli import up_values

Client = TestClient[web.Request, web.Application]
TOKEN = "hostile-plugin-token-5f1e2d"


class HostileDialog(DialogConfig):
    """A dialog whose ``act`` says what the plugin does when it fetches it."""

    act: str = "ok"


class HostileAccount(AccountConfig):
    secret_fields: ClassVar[tuple[str, ...]] = ("token",)

    provider: Literal["hostile"]
    token: SecretStr
    dialogs: tuple[HostileDialog, ...] = Field(min_length=1)


class OwnError(Exception):
    """An exception whose message cannot be printed at all."""

    def __str__(self) -> str:
        raise RuntimeError("no message for you")


def _raise(exc: BaseException) -> Callable[[str, Record], None]:
    def act(_name: str, _record: Record) -> None:
        raise exc

    return act


def _report(outcome: Any) -> Callable[[str, Record], None]:
    def act(name: str, record: Record) -> None:
        record(name, outcome)

    return act


def _strays(name: str, record: Record) -> None:
    for n in range(500):
        record(f"stray-{n}", Reading(messages=n))
    record(name, Reading(messages=2))


def _block(name: str, record: Record) -> None:
    time.sleep(STALL_LIMIT_SECONDS + 0.3)  # the fault under test: blocking work in the loop
    record(name, Reading(messages=1))


def _block_in_a_worker(name: str, record: Record) -> Awaitable[None]:
    """Blocks in a task that ``fetch_each`` started, not in the fetch coroutine itself."""

    async def fetch_one(_dialog: HostileDialog) -> Reading:
        time.sleep(STALL_LIMIT_SECONDS + 0.3)  # noqa: ASYNC251 - the fault under test
        return Reading(messages=1)

    return fetch_each([HostileDialog(name=name)], record, fetch_one, workers=1)


ACTS: dict[str, Callable[[str, Record], Awaitable[None] | None]] = {
    "ok": _report(Reading(messages=3)),
    "keyboard-interrupt": _raise(KeyboardInterrupt()),
    "system-exit": _raise(SystemExit(0)),
    "own-cancel": _raise(asyncio.CancelledError()),
    "leak-token": _raise(RuntimeError(f"upstream refused {TOKEN}")),
    "unprintable": _raise(OwnError()),
    "strays": _strays,
    "block": _block,
    "block-in-a-worker": _block_in_a_worker,
    "negative": _report(Reading(messages=-5)),
    "text": _report(Reading(messages="7")),  # type: ignore[arg-type]
    "bool": _report(Reading(messages=True)),
    "float": _report(Reading(messages=1.5)),  # type: ignore[arg-type]
    "huge": _report(Reading(messages=2**53 + 1)),
    "negative-mentions": _report(Reading(messages=1, mentions=-1)),
    "text-oldest": _report(Reading(messages=1, oldest_unread_timestamp="1700000000")),  # type: ignore[arg-type]
    "nan-oldest": _report(Reading(messages=1, oldest_unread_timestamp=math.nan)),
    "negative-oldest": _report(Reading(messages=1, oldest_unread_timestamp=-1.0)),
    "newline-reason": _report(FetchError("bad\nreason", "line one\nline two")),  # type: ignore[arg-type]
    "not-an-outcome": _report({"messages": 3}),
}


class HostileFetcher:
    """Does each dialog's ``act``, in config order, one event loop step apart."""

    def __init__(self, account: HostileAccount, upstream: Upstream) -> None:
        self._upstream = upstream

    async def fetch(self, dialogs: Sequence[HostileDialog], record: Record) -> None:
        for dialog in dialogs:
            await asyncio.sleep(0)
            more = ACTS[dialog.act](dialog.name, record)
            if more is not None:
                await more


HOSTILE = Provider(name="hostile", account_model=HostileAccount, make_fetcher=HostileFetcher)


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> Callable[[Provider[Any]], None]:
    """Register a provider under its name, as its installed entry point would be."""

    def install(provider: Provider[Any]) -> None:
        monkeypatch.setitem(registry.PROVIDERS, provider.name, provider)

    return install


def hostile_yaml(*accounts: tuple[str, Sequence[tuple[str, str]]]) -> str:
    """Accounts of the hostile provider: (account, [(dialog, act), ...]) each."""
    text = "accounts:\n"
    for account, dialogs in accounts:
        text += f"  - name: {account}\n    provider: hostile\n    token: {TOKEN}\n    dialogs:\n"
        text += "".join(f"      - name: {d}\n        act: {act}\n" for d, act in dialogs)
    return text


def messages(samples: Samples, account: str, dialog: str) -> float | None:
    """The unread messages served for one dialog of the hostile provider."""
    return value(
        samples, "chat_unread_messages", provider="hostile", account=account, dialog=dialog
    )


@pytest.fixture
async def hostile(
    installed: Callable[[Provider[Any]], None], scrape_client: ScrapeClient
) -> Callable[[str], Any]:
    installed(HOSTILE)
    return scrape_client


# --- At fetch: exceptions that are not Exceptions ------------------------------------------


@pytest.mark.parametrize("act", ["keyboard-interrupt", "system-exit", "own-cancel", "unprintable"])
async def test_a_plugin_raising_anything_fails_only_its_own_dialogs(
    hostile: ScrapeClient, caplog: pytest.LogCaptureFixture, act: str
) -> None:
    config = hostile_yaml(("calm", [("fine", "ok")]), ("wild", [("first", "ok"), ("boom", act)]))
    client = await hostile(config)
    with caplog.at_level(logging.ERROR):
        samples = await get_metrics(client)
        again = await get_metrics(client)  # the exporter is still there, and still fetching
    assert up_values(samples) == {
        ("hostile", "calm", "fine"): 1.0,
        ("hostile", "wild", "first"): 1.0,
        ("hostile", "wild", "boom"): 0.0,
    }
    assert messages(samples, "wild", "first") == 3
    assert errors_of(samples, "hostile", "bad_response", "wild") == 1.0
    assert errors_of(again, "hostile", "bad_response", "wild") == 2.0
    crashes = [r for r in caplog.records if r.getMessage() == "provider fetch raised"]
    assert [(r.provider, r.account) for r in crashes] == [("hostile", "wild")] * 2  # type: ignore[attr-defined]
    debug = await probe_debug(client, "wild")
    assert "dialog boom: up 0, bad_response: provider raised " in debug


async def test_a_plugin_exception_holding_its_token_is_logged_redacted(
    hostile: ScrapeClient, caplog: pytest.LogCaptureFixture
) -> None:
    client = await hostile(hostile_yaml(("wild", [("boom", "leak-token")])))
    with caplog.at_level(logging.WARNING):
        samples = await get_metrics(client)
    assert up_values(samples) == {("hostile", "wild", "boom"): 0.0}
    lines = formatted_log_lines(caplog.records)
    crash = [line for line in lines if "provider fetch raised" in line]
    assert len(crash) == 2  # logfmt and JSON
    assert all("upstream refused <redacted>" in line for line in crash), crash
    assert all("RuntimeError" in line and "Traceback" in line for line in crash), crash
    for line in lines:
        assert TOKEN not in line


# --- Blocking the loop ---------------------------------------------------------------------


@pytest.mark.parametrize("act", ["block", "block-in-a-worker"])
async def test_a_plugin_blocking_the_loop_is_named(
    hostile: ScrapeClient, caplog: pytest.LogCaptureFixture, act: str
) -> None:
    client = await hostile(hostile_yaml(("calm", [("fine", "ok")]), ("slow", [("d", act)])))
    with caplog.at_level(logging.WARNING):
        samples = await get_metrics(client)
    assert up_values(samples)[("hostile", "slow", "d")] == 1.0
    stalls = [r for r in caplog.records if "blocking the event loop" in r.getMessage()]
    assert [r.provider for r in stalls] == ["hostile"]  # type: ignore[attr-defined]
    assert stalls[0].seconds > STALL_LIMIT_SECONDS  # type: ignore[attr-defined]


# --- Dialogs it was not given --------------------------------------------------------------


async def test_outcomes_for_dialogs_not_given_are_dropped_with_one_warning(
    installed: Callable[[Provider[Any]], None],
    exporter_for: ExporterFactory,
    aiohttp_client: ClientFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    installed(HOSTILE)
    exporter = await exporter_for(hostile_yaml(("leaky", [("mine", "strays")])))
    client = await aiohttp_client(make_app(exporter))
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            samples = await get_metrics(client)
    assert up_values(samples) == {("hostile", "leaky", "mine"): 1.0}
    assert messages(samples, "leaky", "mine") == 2
    # What the account keeps is its own dialog's outcome, however many names were recorded.
    assert list(exporter.runtimes["leaky"].snapshot().outcomes) == ["mine"]
    warnings = [r for r in caplog.records if "dialog it was not given" in r.getMessage()]
    assert [(r.provider, r.dialog) for r in warnings] == [("hostile", "stray-0")]  # type: ignore[attr-defined]


# --- Values by the built-ins' rules -------------------------------------------------------


@pytest.mark.parametrize(
    "act",
    [
        "negative",
        "text",
        "bool",
        "float",
        "huge",
        "negative-mentions",
        "text-oldest",
        "nan-oldest",
        "negative-oldest",
    ],
)
async def test_a_plugin_value_a_built_in_would_refuse_is_bad_response(
    hostile: ScrapeClient, act: str
) -> None:
    client = await hostile(hostile_yaml(("wild", [("fine", "ok"), ("odd", act)])))
    samples = await get_metrics(client)
    assert up_values(samples) == {("hostile", "wild", "fine"): 1.0, ("hostile", "wild", "odd"): 0.0}
    assert messages(samples, "wild", "odd") is None
    assert errors_of(samples, "hostile", "bad_response", "wild") == 1.0


async def test_a_plugin_reason_outside_the_set_is_bad_response_and_escaped(
    hostile: ScrapeClient,
) -> None:
    client = await hostile(
        hostile_yaml(("wild", [("odd", "newline-reason"), ("thing", "not-an-outcome")]))
    )
    samples = await get_metrics(client)
    assert errors_of(samples, "hostile", "bad_response", "wild") == 2.0
    debug = await probe_debug(client, "wild")
    lines = debug.splitlines()
    odd = "  dialog odd: up 0, bad_response: unknown reason 'bad\\\\nreason': line one\\nline two"
    thing = "  dialog thing: up 0, bad_response: the provider recorded a dict, not a Reading or"
    assert odd in lines, debug
    assert f"{thing} FetchError" in lines, debug
    assert all(line.startswith(("account ", "  ")) for line in lines), debug


# --- Envelope hooks ------------------------------------------------------------------------


def _raises(_body: Any) -> Any:
    raise ValueError("hook broke")


@pytest.mark.parametrize(
    "hint",
    [
        lambda _: math.nan,
        lambda _: -5.0,
        lambda _: math.inf,
        lambda _: "30",
        lambda _: True,
        _raises,
    ],
    ids=["nan", "negative", "inf", "text", "bool", "raises"],
)
async def test_junk_from_a_retry_after_hook_means_the_default_back_off(
    sim: Simulator,
    installed: Callable[[Provider[Any]], None],
    scrape_client: ScrapeClient,
    clock: FakeClock,
    hint: Callable[[Any], Any],
) -> None:
    installed(dataclasses.replace(SENDBIRD, retry_after=hint))
    client = await scrape_client(config_yaml(sim))
    sim.sendbird.fault = Fault.answer(429, SB_429)  # no rate-limit header: the hook decides
    labels = {"provider": "sendbird", "account": "sb-prod"}
    first = await get_metrics(client)
    assert errors_of(first, "sendbird", "rate_limited") == 2.0
    reset = value(first, "chat_unread_rate_limit_reset_timestamp_seconds", **labels)
    assert reset == clock.now + 60

    sim.sendbird.fault = None
    calls = len(sim.sendbird.requests)
    clock.advance(59)
    held = await get_metrics(client)
    assert len(sim.sendbird.requests) == calls  # the back-off held
    assert errors_of(held, "sendbird", "rate_limited") == 4.0


@pytest.mark.parametrize(
    "messages",
    [_raises, lambda _: "not a list", lambda _: [1, None, {"x": 1}]],
    ids=["raises", "not-a-list", "not-text"],
)
async def test_junk_from_an_error_messages_hook_leaves_the_failure_classified(
    sim: Simulator,
    installed: Callable[[Provider[Any]], None],
    scrape_client: ScrapeClient,
    messages: Callable[[Any], Any],
) -> None:
    installed(dataclasses.replace(SENDBIRD, error_messages=messages))
    client = await scrape_client(config_yaml(sim))
    sim.sendbird.fault = Fault.answer(500, {"message": "boom", "code": 500901})
    samples = await get_metrics(client)
    assert errors_of(samples, "sendbird", "http_5xx") == 2.0
    assert errors_of(samples, "sendbird", "bad_response") == 0.0
    debug = await probe_debug(client, "sb-prod")
    assert ": up 0, http_5xx: HTTP 500: error body without a message" in debug, debug


# --- At import -----------------------------------------------------------------------------


@pytest.fixture
def plugin_modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder on ``sys.path`` for plugin modules; they are forgotten after the test."""
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        if name.startswith("hostile_"):
            del sys.modules[name]


def plugin(name: str, module: str) -> EntryPoint:
    return EntryPoint(name, f"{module}:PROVIDER", ENTRY_POINT_GROUP)


def test_an_import_raising_anything_is_named_and_the_rest_load(plugin_modules: Path) -> None:
    (plugin_modules / "hostile_exits.py").write_text("raise SystemExit(0)\n")
    (plugin_modules / "hostile_interrupts.py").write_text("raise KeyboardInterrupt\n")
    (plugin_modules / "hostile_unprintable.py").write_text(
        textwrap.dedent("""\
            class Odd(Exception):
                def __str__(self):
                    raise RuntimeError("no message")
            raise Odd()
            """)
    )
    found = [
        plugin("exits", "hostile_exits"),
        plugin("interrupts", "hostile_interrupts"),
        plugin("unprintable", "hostile_unprintable"),
        plugin("sendbird", "exporter.providers.sendbird"),
    ]
    providers, failures = discover(found)
    assert list(providers) == ["sendbird"]
    assert {f.name: f.problem for f in failures} == {
        "exits": "importing it failed: SystemExit: 0",
        "interrupts": "importing it failed: KeyboardInterrupt: ",
        "unprintable": "importing it failed: Odd: (a Odd that cannot be printed)",
    }


def test_a_hung_import_is_abandoned_and_named(plugin_modules: Path) -> None:
    (plugin_modules / "hostile_gate.py").write_text("import threading\nOPEN = threading.Event()\n")
    (plugin_modules / "hostile_hangs.py").write_text(
        "import hostile_gate\nhostile_gate.OPEN.wait()\n"
    )
    (plugin_modules / "hostile_hangs_too.py").write_text(
        "import hostile_gate\nhostile_gate.OPEN.wait()\n"
    )
    found = [
        plugin("hangs", "hostile_hangs"),
        plugin("hangs2", "hostile_hangs_too"),
        plugin("sendbird", "exporter.providers.sendbird"),
    ]
    try:
        providers, failures = discover(found, timeout=2.0)
    finally:
        import hostile_gate  # type: ignore[import-not-found]

        hostile_gate.OPEN.set()  # let the abandoned imports end
    assert list(providers) == ["sendbird"]
    abandoned = "importing it did not finish within 2s; it was abandoned"
    assert {f.name: f.problem for f in failures} == {"hangs": abandoned, "hangs2": abandoned}
