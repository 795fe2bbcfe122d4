"""Noticing a provider that blocks the event loop, and saying which one it is.

Every account's fetching and every HTTP request the exporter serves share one event loop. A
provider that does blocking work between two ``await``\\ s (``time.sleep``, a synchronous HTTP
client, a long computation) stops all of it: other accounts' requests are not sent, scrapes
miss their deadline and healthy accounts are served ``up 0``. That cannot be prevented from
here, but it can be named: :func:`timed_steps` runs a fetch coroutine one step at a time (a
step is the code between two suspensions, run synchronously) and reports each step that held
the loop for longer than a limit, while the coroutine runs exactly as it would unwrapped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine, Generator
from typing import Any, Generic, TypeVar

T = TypeVar("T")

# A step longer than this is blocking: every request the exporter has in flight, and every
# scrape it serves, waited that long. Parsing a body at the 8 MiB cap takes about a tenth.
STALL_LIMIT_SECONDS = 1.0


class _TimedSteps(Generic[T]):
    """An awaitable driving ``coro`` as ``await coro`` would, timing each step it runs."""

    def __init__(
        self, coro: Coroutine[Any, Any, T], limit: float, on_stall: Callable[[float], None]
    ) -> None:
        self._coro = coro
        self._limit = limit
        self._on_stall = on_stall

    def __await__(self) -> Generator[Any, Any, T]:
        coro = self._coro
        sent: Any = None
        thrown: BaseException | None = None
        while True:
            started = time.perf_counter()
            try:
                yielded = coro.send(sent) if thrown is None else coro.throw(thrown)
            except StopIteration as finished:
                return finished.value  # type: ignore[no-any-return]
            finally:
                took = time.perf_counter() - started
                if took > self._limit:
                    self._on_stall(took)
            sent, thrown = None, None
            try:
                sent = yield yielded
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:
                thrown = exc


async def timed_steps(
    coro: Coroutine[Any, Any, T],
    on_stall: Callable[[float], None],
    limit: float = STALL_LIMIT_SECONDS,
) -> T:
    """Await ``coro``; ``on_stall(seconds)`` after each of its steps that took over ``limit``."""
    return await _TimedSteps(coro, limit, on_stall)
