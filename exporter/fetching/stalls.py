"""Noticing a provider that blocks the event loop, while it does, and saying which one it is.

Every account's fetching and every HTTP request the exporter serves share one event loop. A
provider that does blocking work between two ``await``\\ s (``time.sleep``, a synchronous HTTP
client, a long computation) stops all of it: other accounts' requests are not sent, scrapes
miss their deadline and healthy accounts are served ``up 0``. That cannot be prevented from
here, but it can be named. :class:`LoopWatchdog` has the loop touch a heartbeat a few times a
second; a thread of its own watches it, and when the heartbeat is older than
``STALL_LIMIT_SECONDS`` it looks at what the loop's thread is running and warns, naming the
provider whose code is on that stack. The blocking code may run in any task the provider
started (``fetch_each``'s workers, say), which is why the stack is read rather than the fetch
coroutine timed. A stall with no provider on the stack (a huge scrape being rendered) is not
a plugin's fault and is not reported here.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections.abc import Callable, Mapping
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

# A loop blocked for longer than this is a fault: every request the exporter has in flight,
# and every scrape it serves, waited that long. Parsing a body at the 8 MiB cap takes about
# a tenth of it.
STALL_LIMIT_SECONDS = 1.0
HEARTBEAT_SECONDS = 0.1


def _code_module(provider: Any) -> str:
    """The module a provider's code lives in: where its ``make_fetcher`` is defined."""
    return str(getattr(provider.make_fetcher, "__module__", "") or "")


def culprit(frame: FrameType | None, providers: Mapping[str, Any]) -> str | None:
    """The provider whose code is on the stack ending in ``frame`` (innermost first), if any.

    A frame is a provider's when its module is the one that defines the provider's fetcher,
    or, for a plugin (not this package's own), any module of the plugin's top-level package.
    """
    modules = {module: name for name, p in providers.items() if (module := _code_module(p))}
    packages = {
        module.split(".")[0]: name
        for module, name in modules.items()
        if not module.startswith("exporter.")
    }
    while frame is not None:
        module = str(frame.f_globals.get("__name__", ""))
        found = modules.get(module) or packages.get(module.split(".")[0])
        if found is not None:
            return found
        frame = frame.f_back
    return None


class LoopWatchdog:
    """Warns, naming the provider on the loop's stack, while the event loop is blocked.

    ``providers`` is read at each stall (the registry, plugins included): a stall is rare,
    and the set is then the one in use.
    """

    def __init__(
        self,
        providers: Mapping[str, Any],
        limit: float = STALL_LIMIT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._providers = providers
        self._limit = limit
        self._clock = clock
        self._beat = clock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._loop_thread = threading.get_ident()

    def start(self) -> None:
        """Start beating in the running loop, and watching from a daemon thread."""
        self._loop_thread = threading.get_ident()
        self._beat = self._clock()
        self._schedule(asyncio.get_running_loop())
        self._thread = threading.Thread(target=self._watch, name="loop watchdog", daemon=True)
        self._thread.start()

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        def beat() -> None:
            self._beat = self._clock()
            self._schedule(loop)

        self._handle = loop.call_later(HEARTBEAT_SECONDS, beat)

    def _watch(self) -> None:
        reported = None
        while not self._stop.wait(HEARTBEAT_SECONDS):
            beat = self._beat
            stalled = self._clock() - beat
            if stalled > self._limit and beat != reported:
                reported = beat  # once per stall
                self._report(stalled)

    def _report(self, stalled: float) -> None:
        frame = sys._current_frames().get(self._loop_thread)
        provider = culprit(frame, self._providers)
        if provider is None:
            return
        log.warning(
            "a provider is blocking the event loop: every account and scrape waits for it",
            extra={"provider": provider, "seconds": round(stalled, 3)},
        )

    def stop(self) -> None:
        """Stop watching (the thread ends within one heartbeat)."""
        self._stop.set()
        if self._handle is not None:
            self._handle.cancel()
