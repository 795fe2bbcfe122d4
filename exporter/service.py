"""The running exporter: its config, one runtime per account, the shared HTTP session.

Reloading swaps the account runtimes atomically: an account whose config is unchanged keeps
its runtime (HTTP sessions such as a QuickBlox token, caches, budget ledger, counters), a
changed or new one gets a fresh runtime, and a config that fails to load changes nothing. A
replaced runtime lives on until its refresh in flight ends, for the scrapes waiting on it.
The file is read and validated in a worker thread (seconds at 10,000 accounts), so scrapes
and health checks keep being answered meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from exporter import __version__
from exporter.configuration.loading import ConfigError, ExporterConfig
from exporter.fetching.registry import PROVIDERS
from exporter.fetching.scrape import AccountRuntime
from exporter.fetching.stalls import LoopWatchdog
from exporter.upstream import Clock, UpstreamPool, default_connection_limit

log = logging.getLogger(__name__)

USER_AGENT = f"chat-unread-exporter/{__version__}"


class UnknownTargetError(ValueError):
    """A /probe parameter names an account or provider that is not configured."""


class Exporter:
    """Owns everything that outlives a single scrape."""

    def __init__(
        self,
        load: Callable[[], ExporterConfig],
        clock: Clock = time.time,
        upstream_connections: int | None = None,
    ) -> None:
        """``upstream_connections`` bounds upstream connections across all accounts (default:
        half the open-file limit, see ``default_connection_limit``)."""
        self._load = load
        self._clock = clock
        self._upstream_connections = upstream_connections or default_connection_limit()
        self._pool: UpstreamPool | None = None
        self.config: ExporterConfig | None = None
        self.runtimes: dict[str, AccountRuntime] = {}
        self.reload_successful = False
        self.reload_success_timestamp: float | None = None
        self.last_reload_error: str | None = None
        self._retired: set[AccountRuntime] = set()
        self._reload_lock = asyncio.Lock()
        self._next_reload: asyncio.Task[ExporterConfig] | None = None
        self._watchdog = LoopWatchdog(PROVIDERS)

    async def start(self) -> None:
        """Open the shared HTTP session, watch the loop for a blocking provider, and load the
        config (raises ConfigError)."""
        self._pool = UpstreamPool(self._upstream_connections, {"User-Agent": USER_AGENT})
        await self.reload()
        self._watchdog.start()

    async def reload(self) -> ExporterConfig:
        """Load the config again; on failure keep serving the old one and raise ConfigError.

        One load runs at a time. Requests made while one runs share the next load, which starts
        when it ends (so it sees an edit made meanwhile): a storm of SIGHUPs and POSTs costs two
        loads, not a queue of one per request.
        """
        if self._next_reload is None:
            self._next_reload = asyncio.create_task(self._reload_when_free())
        # Shielded: a POST whose client gives up must not cancel the load others wait for.
        return await asyncio.shield(self._next_reload)

    async def _reload_when_free(self) -> ExporterConfig:
        async with self._reload_lock:
            self._next_reload = None  # requests from now on need a load that starts later
            try:
                config = await asyncio.to_thread(self._load)
            except Exception as exc:
                # Whatever failed (the loader refuses with ConfigError; a worker thread cannot
                # start at shutdown), it shows as a failed reload, never as a silent one.
                error = exc if isinstance(exc, ConfigError) else ConfigError([repr(exc)])
                self.reload_successful = False
                self.last_reload_error = str(error)
                what = "config reload failed" if self.config is not None else "config load failed"
                log.error(what, extra={"problems": error.problems})
                raise error from None
            self._apply(config)
            self.reload_successful = True
            self.reload_success_timestamp = self._clock()
            self.last_reload_error = None
            log.info(
                "config loaded",
                extra={"source": config.source, "accounts": len(config.accounts)},
            )
            return config

    def _apply(self, config: ExporterConfig) -> None:
        assert self._pool is not None, "start() first"
        runtimes: dict[str, AccountRuntime] = {}
        for account in config.accounts:
            old = self.runtimes.get(account.name)
            if old is not None and old.account == account:
                runtimes[account.name] = old
            else:
                provider = PROVIDERS[account.provider]
                runtimes[account.name] = AccountRuntime(account, provider, self._pool, self._clock)
        for name, old in self.runtimes.items():
            if runtimes.get(name) is not old:
                self._retire(old)
        self.config = config
        self.runtimes = runtimes

    def _retire(self, runtime: AccountRuntime) -> None:
        """Keep a replaced runtime until its refresh in flight ends, rather than cancel it.

        Scrapes that started before the reload wait on that refresh; cancelled, it would leave
        them nothing but a made-up timeout for healthy dialogs. The refresh is bounded by its
        round limit, and ``close()`` cancels it.
        """
        runtime.group_names.cancel()
        task = runtime.refresh_in_flight
        if task is not None:
            self._retired.add(runtime)
            task.add_done_callback(lambda _: self._retired.discard(runtime))

    def select(self, accounts: Sequence[str], providers: Sequence[str]) -> list[AccountRuntime]:
        """The runtimes named by /probe parameters, in config order; unknown names raise."""
        unknown = [a for a in accounts if a not in self.runtimes]
        configured_providers = {rt.account.provider for rt in self.runtimes.values()}
        unknown += [p for p in providers if p not in configured_providers]
        if unknown:
            raise UnknownTargetError(f"unknown account or provider: {', '.join(unknown)}")
        return [
            rt
            for name, rt in self.runtimes.items()
            if name in accounts or rt.account.provider in providers
        ]

    async def close(self) -> None:
        """Cancel refreshes in flight and close upstream connections."""
        self._watchdog.stop()
        every_runtime = [*self.runtimes.values(), *self._retired]
        await asyncio.gather(*(rt.cancel() for rt in every_runtime))
        if self._pool is not None:
            await self._pool.close()
