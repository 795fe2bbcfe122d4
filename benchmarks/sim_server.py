"""The four simulated providers and the chaos plugin's API, in a process of their own.

Run as ``python -m benchmarks.sim_server --scenario 1k --latency 0.1``. Why a separate process:
the simulators burn CPU answering thousands of requests per scrape; in the exporter's process
(or the benchmark's) that CPU would be charged to the wrong party. The process prints one JSON
line with the providers' base URLs and a control URL, then serves until SIGTERM or SIGINT.

Control endpoints (on their own port, so they are never counted as upstream calls):
``GET /counts`` returns requests received so far per provider (and ``crisp_pages`` for backlog
pages, ``quickblox_sessions`` for session creations); ``POST /latency?seconds=X`` changes the
latency added to every answer; ``POST /fault?provider=NAME&kind=KIND`` makes one provider
misbehave (a kind from ``FAULTS``, or from ``PLUGIN_FAULTS`` for the plugin's ``flaky`` API;
``none`` heals it; ``retry_after=S`` for 429s). Requests
are counted in a middleware rather than through the simulators' request log, which would keep
every request's headers for the whole run.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gzip
import json
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from benchmarks import scenario as sc
from exporter.simulator import (
    CrispConversation,
    FakeCrisp,
    FakeIMKit,
    FakeProvider,
    FakeQuickBlox,
    FakeSendbird,
    Fault,
    IMKitRoom,
    SendbirdChannel,
)
from exporter.simulator.base import Handler

# The inflated size of the gzip_bomb fault's body: eight times the exporter's 8 MiB cap.
GZIP_BOMB_SIZE = 64 * 1024 * 1024


@functools.cache
def gzip_bomb() -> bytes:
    """A JSON string of ``GZIP_BOMB_SIZE`` bytes, gzipped to about 64 kB; made once."""
    return gzip.compress(b'"' + b"0" * (GZIP_BOMB_SIZE - 2) + b'"', compresslevel=9)


# What a provider can be made to do instead of answering, given the Retry-After for 429s.
# gzip_bomb answers with a Content-Length of the compressed size, which once let the body
# past the exporter's size cap (issue 15, defect 1).
FAULTS: dict[str, Callable[[float], Fault]] = {
    "http_500": lambda _: Fault.answer(500, {"error": True, "message": "internal error"}),
    "http_429": lambda retry_after: Fault.answer(
        429, {"error": True, "message": "slow down"}, headers={"Retry-After": f"{retry_after:g}"}
    ),
    "hang": lambda _: Fault.hang(),
    "reset": lambda _: Fault.reset(),
    "html_200": lambda _: Fault.answer(200, "<html><body>maintenance</body></html>"),
    "truncated_json": lambda _: Fault.answer(200, b'{"RC": 0, "result": {"ba'),
    "gzip_bomb": lambda _: Fault.answer(200, gzip_bomb(), headers={"Content-Encoding": "gzip"}),
}


# The chaos run's provider plugin (benchmarks/chaos_plugin/chaos_flaky.py) reads its dialogs'
# counts from a "flaky" API served here. Healthy, it answers FLAKY_UNREAD; each of its faults
# is an answer that finds one of the plugin's bugs.
FLAKY_UNREAD = {"inbox": 3, "support": 1, "sales": 0}
PLUGIN_PAUSE_SECONDS = 0.25
PLUGIN_FAULTS: dict[str, dict[str, Any]] = {
    "plugin_raise": {"unread": FLAKY_UNREAD, "fatal": True},  # it raises SystemExit
    "plugin_junk": {"unread": {"inbox": -5, "support": "7", "sales": True}},  # passed on as is
    "plugin_block": {"unread": FLAKY_UNREAD, "pause": PLUGIN_PAUSE_SECONDS},  # time.sleep
}


@dataclass
class FlakyApi:
    """The plugin's API: ``GET /v1/unread``, answered per ``fault`` (a PLUGIN_FAULTS kind)."""

    latency: float
    fault: str | None = None
    url: str = ""

    async def unread(self, request: web.Request) -> web.Response:
        await asyncio.sleep(self.latency)
        answer = {"unread": FLAKY_UNREAD} if self.fault is None else PLUGIN_FAULTS[self.fault]
        return web.json_response(answer)

    async def start(self) -> web.AppRunner:
        app = web.Application()
        app.router.add_get("/v1/unread", self.unread)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        return runner


def populate(scenario: sc.Scenario) -> tuple[FakeCrisp, FakeQuickBlox, FakeIMKit, FakeSendbird]:
    """Simulators holding the data that every dialog of ``scenario`` reads (all ``up 1``)."""
    crisp = FakeCrisp(identifier=sc.CRISP_IDENTIFIER, key=sc.CRISP_KEY, record_requests=False)
    quickblox = FakeQuickBlox(api_key=sc.QUICKBLOX_API_KEY, record_requests=False)
    imkit = FakeIMKit(client_key=sc.IMKIT_CLIENT_KEY, record_requests=False)
    sendbird = FakeSendbird(api_token=sc.SENDBIRD_API_TOKEN, record_requests=False)
    now_ms = int(time.time() * 1000)
    for a in range(scenario.crisp_accounts):
        website: dict[str, CrispConversation] = {}
        for d in range(scenario.crisp_sessions):
            website[sc.session_id(a, d)] = CrispConversation(
                unread_operator=1, unread_visitor=d % 3 + 1, waiting_since_ms=now_ms - d * 1000
            )
        for d in range(scenario.crisp_backlog_extra):
            website[f"backlog_{d:05d}"] = CrispConversation(
                unread_operator=2, waiting_since_ms=now_ms - 60_000 - d * 1000
            )
        for d in range(scenario.crisp_wide_backlog if a < scenario.crisp_wide else 0):
            website[f"wide_{d:05d}"] = CrispConversation(
                unread_operator=1 + d % 3,
                waiting_since_ms=now_ms - 120_000 - d * 100,
                operator_id=f"operator-{d:05d}",
            )
        # Conversations the backlog filters must skip: resolved ones and fully read ones.
        for d in range(10):
            website[f"resolved_{d:03d}"] = CrispConversation(unread_operator=5, resolved=True)
            website[f"read_{d:03d}"] = CrispConversation()
        crisp.websites[sc.website_id(a)] = website
    for a, ids in enumerate(scenario.quickblox_ids):
        quickblox.unread[sc.quickblox_user(a)] = {
            sc.quickblox_dialog_id(a, d): d % 7 for d in range(ids)
        }
    for a in range(scenario.imkit_accounts):
        imkit.rooms[sc.imkit_token(a)] = [
            IMKitRoom(frozenset({tag}), i + 1) for i, tag in enumerate(sc.IMKIT_TAGS)
        ]
    for a in range(scenario.sendbird_accounts):
        for d in range(scenario.sendbird_dialogs):
            sendbird.channels[sc.sendbird_user(a, d)] = [
                SendbirdChannel("support", unread=d % 5, mentions=d % 2),
                SendbirdChannel("sales", super_group=True, unread=1),
                SendbirdChannel("support", invited=True),
            ]
    return crisp, quickblox, imkit, sendbird


def _kind(provider: str, path: str) -> str | None:
    """The sub-count a request also goes to, if any."""
    if provider == "crisp" and "/conversations/" in path:
        return "crisp_pages"
    if provider == "quickblox" and path.endswith("/session.json"):
        return "quickblox_sessions"
    return None


async def start_provider(provider: FakeProvider, counts: Counter[str]) -> web.AppRunner:
    """Serve one simulator with a counting middleware in front of its own."""

    @web.middleware
    async def count(request: web.Request, handler: Handler) -> web.StreamResponse:
        counts[provider.name] += 1
        kind = _kind(provider.name, request.path)
        if kind is not None:
            counts[kind] += 1
        return await handler(request)

    app = provider.make_app()
    app.middlewares.insert(0, count)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, backlog=4096).start()
    provider.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    return runner


async def serve(scenario: sc.Scenario, latency: float) -> None:
    providers = populate(scenario)
    counts: Counter[str] = Counter()
    runners = [await start_provider(p, counts) for p in providers]
    for provider in providers:
        provider.latency = latency
    flaky = FlakyApi(latency)
    runners.append(await flaky.start())

    async def get_counts(request: web.Request) -> web.Response:
        return web.json_response(dict(counts))

    async def set_latency(request: web.Request) -> web.Response:
        seconds = float(request.query["seconds"])
        for provider in providers:
            provider.latency = seconds
        return web.Response(text="ok\n")

    async def set_fault(request: web.Request) -> web.Response:
        kind = request.query["kind"]
        if request.query["provider"] == "flaky":
            if kind != "none" and kind not in PLUGIN_FAULTS:
                raise web.HTTPBadRequest(text=f"the flaky API has no fault {kind!r}\n")
            flaky.fault = None if kind == "none" else kind
            return web.Response(text="ok\n")
        provider = next(p for p in providers if p.name == request.query["provider"])
        retry_after = float(request.query.get("retry_after", "60"))
        # In a thread: the first gzip_bomb takes seconds to compress, and the other
        # providers keep answering meanwhile.
        provider.fault = (
            None if kind == "none" else await asyncio.to_thread(FAULTS[kind], retry_after)
        )
        return web.Response(text="ok\n")

    control = web.Application()
    control.router.add_get("/counts", get_counts)
    control.router.add_post("/latency", set_latency)
    control.router.add_post("/fault", set_fault)
    control_runner = web.AppRunner(control, access_log=None)
    await control_runner.setup()
    await web.TCPSite(control_runner, "127.0.0.1", 0).start()
    urls = {p.name: p.url for p in providers}
    urls["flaky"] = flaky.url
    urls["control"] = f"http://127.0.0.1:{control_runner.addresses[0][1]}"
    print(json.dumps(urls), flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    for runner in [*runners, control_runner]:
        await runner.cleanup()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--scenario", choices=sorted(sc.SCENARIOS), required=True)
    parser.add_argument("--latency", type=float, default=0.1, help="seconds added per answer")
    args = parser.parse_args()
    asyncio.run(serve(sc.SCENARIOS[args.scenario], args.latency))
    return 0


if __name__ == "__main__":
    sys.exit(main())
