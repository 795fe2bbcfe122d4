"""The chaos run's provider plugin: third-party code with the faults a sloppy plugin has.

Found by the exporter like any installed plugin: ``benchmarks/run.py chaos`` puts this
directory on the exporter's ``PYTHONPATH``, where ``chaos_flaky-1.0.dist-info`` declares the
``flaky`` entry point. Its API (``GET /v1/unread`` on the simulator process, answering
``{"unread": {"<dialog>": n}}``) is healthy most of the time; what it answers during the
run's faults finds the plugin's bugs:

* ``"fatal": true`` (fault ``plugin_raise``): the plugin raises ``SystemExit``, as an SDK
  that "exits on a fatal error" would. The exporter must fail this plugin's dialogs
  (``bad_response``, "provider raised SystemExit") and go on.
* counts of -5, "7" and true (``plugin_junk``): passed on unchecked (no ``count()``); the
  exporter must refuse them as it refuses them from a built-in provider.
* ``"pause": s`` (``plugin_block``): the plugin waits politely with ``time.sleep``, blocking
  the event loop, then reports good values. Its own dialogs stay up; every other provider's
  must too, as long as the pause is brief (see docs/plugins.md, "Never block").
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field

from exporter.models import AccountConfig, DialogConfig
from exporter.providers.base import FetchError, Provider, Reading, Record, record_all
from exporter.upstream import Upstream


class FlakyDialog(DialogConfig):
    """One inbox of the flaky API, by the dialog's name."""


class FlakyAccount(AccountConfig):
    """A flaky API account: no credentials (the simulator does not ask)."""

    provider: Literal["flaky"]
    dialogs: tuple[FlakyDialog, ...] = Field(min_length=1)


class FlakyFetcher:
    """One request for all dialogs; what the answer holds is trusted, as sloppy code does."""

    def __init__(self, account: FlakyAccount, upstream: Upstream) -> None:
        self._url = f"{account.api_root()}/v1/unread"
        self._upstream = upstream

    async def fetch(self, dialogs: Sequence[FlakyDialog], record: Record) -> None:
        try:
            body: Any = (await self._upstream.request("GET", self._url)).body
        except FetchError as error:  # the one thing it gets right: a failed request
            record_all(dialogs, record, error)
            return
        if body.get("fatal"):
            raise SystemExit(1)
        pause = body.get("pause")
        if pause:
            time.sleep(pause)  # noqa: ASYNC251 - the bug under test: blocking the event loop
        for dialog in dialogs:
            record(dialog.name, Reading(messages=body["unread"][dialog.name]))


PROVIDER = Provider(name="flaky", account_model=FlakyAccount, make_fetcher=FlakyFetcher)
