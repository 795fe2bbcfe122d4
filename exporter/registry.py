"""The providers this exporter knows, found through the ``chat_unread_exporter.providers`` entry
point group: the built-in ones (declared in this distribution's ``pyproject.toml``) and any
that another installed distribution declares, in exactly the same way.

The entry point's name is the ``provider:`` value in the config, its object a
:class:`~exporter.providers.base.Provider`. A plugin that fails to import, is not a provider,
speaks an interface version this exporter does not, or takes a name already in use is left out
and named in ``PLUGIN_FAILURES``; it never takes the other providers down. Discovery runs once,
at import, so every part of the exporter sees the same set.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from exporter.models import AccountConfig
from exporter.providers.base import API_VERSION, Provider

ENTRY_POINT_GROUP = "chat_unread_exporter.providers"
OWN_DISTRIBUTION = "chat-unread-exporter"


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


def discover(
    found: Iterable[EntryPoint],
) -> tuple[dict[str, Provider[Any]], tuple[PluginFailure, ...]]:
    """Load every entry point; the built-ins first, so a plugin cannot shadow one of them."""
    providers: dict[str, Provider[Any]] = {}
    failures: list[PluginFailure] = []
    for entry_point in sorted(found, key=lambda ep: (not _is_own(ep), ep.name, ep.value)):
        name, source = entry_point.name, _source(entry_point)
        if name in providers:
            failures.append(PluginFailure(name, source, "that provider name is already taken"))
            continue
        try:
            candidate = entry_point.load()
        except Exception as exc:  # any import-time failure of third-party code
            failed = f"importing it failed: {type(exc).__name__}: {exc}"
            failures.append(PluginFailure(name, source, failed[:300]))
            continue
        problem = _problem_with(name, candidate)
        if problem is not None:
            failures.append(PluginFailure(name, source, problem))
            continue
        providers[name] = candidate
    return providers, tuple(failures)


PROVIDERS, PLUGIN_FAILURES = discover(entry_points(group=ENTRY_POINT_GROUP))
