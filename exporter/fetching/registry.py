"""The providers this exporter knows, found through the ``chat_unread_exporter.providers`` entry
point group: the built-in ones (declared in this distribution's ``pyproject.toml``) and any
that another installed distribution declares, in exactly the same way.

The entry point's name is the ``provider:`` value in the config, its object a
:class:`~exporter.providers.base.Provider`. A plugin that fails to import, is not a provider,
speaks an interface version this exporter does not, or takes a name already in use is left out
and named in ``PLUGIN_FAILURES``; it never takes the other providers down. Discovery runs once,
at import, so every part of the exporter sees the same set.

A plugin's import is third-party code run inside startup (and ``--config.check``): it may raise
``SystemExit``, raise an exception that cannot even be printed, or never return. So each plugin
is imported in a thread of its own, all at once, and waited for up to
``PLUGIN_IMPORT_TIMEOUT`` in all: whatever it raises is caught and named, and one still
importing then is abandoned (a daemon thread, so it never holds the exit) and named too.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from exporter.logs import printable
from exporter.models import AccountConfig
from exporter.providers.base import API_VERSION, Provider

ENTRY_POINT_GROUP = "chat_unread_exporter.providers"
OWN_DISTRIBUTION = "chat-unread-exporter"
# How long startup waits, in all, for the plugins' imports (run side by side): a heavy SDK
# imports in a second or two; one that takes longer is taken for hung and left out.
PLUGIN_IMPORT_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class PluginFailure:
    """A provider entry point that was left out, and why (one line, for logs and the CLI)."""

    name: str
    source: str
    problem: str

    def __str__(self) -> str:
        return f"provider plugin {self.name!r} ({self.source}) is not loaded: {self.problem}"


def _source(entry_point: EntryPoint) -> str:
    dist = entry_point.dist
    owner = f"{dist.name} {dist.version}" if dist is not None else "unknown distribution"
    return f"{entry_point.value} from {owner}"


def _is_own(entry_point: EntryPoint) -> bool:
    dist = entry_point.dist
    return dist is not None and dist.name.replace("_", "-").lower() == OWN_DISTRIBUTION


def _problem_with(name: str, candidate: Any) -> str | None:
    """Why a loaded entry point object cannot serve as provider ``name`` (None: it can)."""
    if not isinstance(candidate, Provider):
        return f"the entry point is a {type(candidate).__name__}, not an exporter Provider"
    if candidate.api_version != API_VERSION:
        return (
            f"it implements provider interface version {candidate.api_version}; "
            f"this exporter implements version {API_VERSION}"
        )
    if candidate.name != name:
        return f"the entry point is named {name!r} but the provider calls itself {candidate.name!r}"
    model = candidate.account_model
    if not (isinstance(model, type) and issubclass(model, AccountConfig)):
        return "its account_model is not a subclass of exporter.models.AccountConfig"
    return None


class _Import:
    """One entry point loaded and checked; a plugin's in a daemon thread of its own.

    The built-ins are this distribution's own code and load in the calling thread: in a
    thread, one importing a module the caller is still importing would wait for it.
    """

    def __init__(self, entry_point: EntryPoint) -> None:
        self.entry_point = entry_point
        self.provider: Provider[Any] | None = None
        self.problem = ""
        self._thread: threading.Thread | None = None
        if _is_own(entry_point):
            self._load()
        else:
            self._thread = threading.Thread(
                target=self._load, name=f"import plugin {entry_point.name}", daemon=True
            )
            self._thread.start()

    def _load(self) -> None:
        try:
            candidate = self.entry_point.load()
            problem = _problem_with(self.entry_point.name, candidate)
        except BaseException as exc:
            self.problem = f"importing it failed: {type(exc).__name__}: {printable(exc)}"[:300]
            return
        if problem is None:
            self.provider = candidate
        else:
            self.problem = problem

    def finished(self, deadline: float) -> bool:
        """Whether the import is over, waiting for it until ``deadline`` (monotonic)."""
        if self._thread is None:
            return True
        self._thread.join(max(deadline - time.monotonic(), 0.0))
        return not self._thread.is_alive()


def discover(
    found: Iterable[EntryPoint], timeout: float = PLUGIN_IMPORT_TIMEOUT
) -> tuple[dict[str, Provider[Any]], tuple[PluginFailure, ...]]:
    """Load every entry point; the built-ins first, so a plugin cannot shadow one of them.

    The plugins' imports start at once and share one ``timeout``, so hung plugins delay
    startup by at most that, however many there are.
    """
    ordered = sorted(found, key=lambda ep: (not _is_own(ep), ep.name, ep.value))
    imports = [_Import(entry_point) for entry_point in ordered]
    deadline = time.monotonic() + timeout
    providers: dict[str, Provider[Any]] = {}
    failures: list[PluginFailure] = []
    for loading in imports:
        name, source = loading.entry_point.name, _source(loading.entry_point)
        if not loading.finished(deadline):
            problem = f"importing it did not finish within {timeout:g}s; it was abandoned"
            failures.append(PluginFailure(name, source, problem))
        elif name in providers:
            failures.append(PluginFailure(name, source, "that provider name is already taken"))
        elif loading.provider is None:
            failures.append(PluginFailure(name, source, loading.problem))
        else:
            providers[name] = loading.provider
    return providers, tuple(failures)


PROVIDERS, PLUGIN_FAILURES = discover(entry_points(group=ENTRY_POINT_GROUP))
