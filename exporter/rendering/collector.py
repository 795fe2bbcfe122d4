"""Rendering: turns results that were already fetched into metric families.

prometheus_client calls ``collect()`` synchronously while writing the response, so this module
does no I/O at all; the HTTP handlers fetch first, then register these collectors on a registry
made for that one request.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter.fetching.scrape import AccountResult, AccountSnapshot
from exporter.outcome import GroupReading, Reading
from exporter.queues.tally import RESERVED, display_name
from exporter.rendering.buildinfo import BuildInfo

NAMESPACE = "chat_unread"
DIALOG_LABELS = ["provider", "account", "dialog"]
GROUP_LABELS = [*DIALOG_LABELS, "group_by", "group"]
ACCOUNT_LABELS = ["provider", "account"]
CACHE_NOTE = (
    " Some accounts serve cached values (cache_ttl or daily_request_budget pacing);"
    " chat_unread_last_success_timestamp_seconds tells their age."
)

# (metric suffix, Reading attribute, HELP)
VALUE_METRICS: tuple[tuple[str, str, str], ...] = (
    ("messages", "messages", "Unread messages in the dialog, as the provider counts them."),
    (
        "mentions",
        "mentions",
        "Unread messages that mention the user (Sendbird, Matrix highlights).",
    ),
    ("invitations", "invitations", "Pending invitations (Sendbird channels, Matrix rooms)."),
    (
        "conversations",
        "conversations",
        "Conversations with at least one unread message (Crisp backlog, Stream Chat"
        " channels), waiting on the team (Intercom), open (Chatwoot), or tickets of a Zendesk"
        " view or search.",
    ),
    (
        "oldest_unread_timestamp_seconds",
        "oldest_unread_timestamp",
        "Unix time since which the oldest unread conversation has been waiting"
        " (Crisp backlog, Intercom, Chatwoot), or the oldest Zendesk ticket's creation.",
    ),
)


class DialogCollector(Collector):
    """Per-dialog values, ``up`` and value age for the accounts of one scrape."""

    def __init__(self, results: Sequence[AccountResult]) -> None:
        self._results = results

    def collect(self) -> Iterator[Metric]:
        cached = any(r.account.cache_ttl or r.account.daily_request_budget for r in self._results)
        note = CACHE_NOTE if cached else ""
        families = {
            attr: GaugeMetricFamily(f"{NAMESPACE}_{suffix}", help_ + note, labels=DIALOG_LABELS)
            for suffix, attr, help_ in VALUE_METRICS
        }
        up = GaugeMetricFamily(
            f"{NAMESPACE}_up",
            "1 if this dialog's value was fetched successfully for this scrape, else 0.",
            labels=DIALOG_LABELS,
        )
        age = GaugeMetricFamily(
            f"{NAMESPACE}_last_success_timestamp_seconds",
            "Unix time at which the value now served was fetched.",
            labels=DIALOG_LABELS,
        )
        info = GaugeMetricFamily(
            f"{NAMESPACE}_dialog_info",
            "Always 1. part_of names the dialog of the same account that already counts all"
            " of this dialog's items (empty: none); sums over dialogs leave such parts out"
            " when their whole is in the sum, so no unread item is counted twice.",
            labels=[*DIALOG_LABELS, "part_of"],
        )
        for result in self._results:
            for dialog in result.dialogs:
                labels = [result.account.provider, result.account.name, dialog.name]
                info.add_metric([*labels, result.part_of.get(dialog.name, "")], 1.0)
                up.add_metric(labels, 0.0 if dialog.error else 1.0)
                if dialog.reading is None:
                    continue
                _add_values(families, labels, dialog.reading)
                if dialog.fetched_at is not None:
                    age.add_metric(labels, dialog.fetched_at)
        yield from families.values()
        yield up
        yield age
        yield info


# (metric suffix, GroupReading attribute, HELP)
GROUP_METRICS: tuple[tuple[str, str, str], ...] = (
    ("group_messages", "messages", "Unread messages of the dialog in this group."),
    ("group_mentions", "mentions", "Unread mentions of the dialog in this group."),
    (
        "group_conversations",
        "conversations",
        "Conversations or channels of the dialog in this group with unread messages, or"
        " waiting on the team.",
    ),
    (
        "group_oldest_unread_timestamp_seconds",
        "oldest_unread_timestamp",
        "Unix time since which the oldest unread conversation of this group has been waiting.",
    ),
)
GROUP_NOTE = (
    " The dialog's value split by its group_by (unassigned: no team, inbox or owner; other:"
    " the groups beyond max_groups, summed); over a dialog's groups it adds up to the"
    " dialog's value. Never add group series to dialog series."
)


class GroupCollector(Collector):
    """Queues: the values of dialogs with ``group_by``, per group, and their names.

    A group is served only with its dialog's ``up 1``: a dialog that failed shows no groups,
    never the last ones.
    """

    def __init__(self, results: Sequence[AccountResult]) -> None:
        self._results = results

    def collect(self) -> Iterator[Metric]:
        families = {
            attr: GaugeMetricFamily(
                f"{NAMESPACE}_{suffix}", help_ + GROUP_NOTE, labels=GROUP_LABELS
            )
            for suffix, attr, help_ in GROUP_METRICS
        }
        info = GaugeMetricFamily(
            f"{NAMESPACE}_group_info",
            "Always 1: a group's display name, where the provider has one (never an email).",
            labels=[*GROUP_LABELS, "name"],
        )
        folded = GaugeMetricFamily(
            f"{NAMESPACE}_groups_folded",
            "Groups of the dialog summed into group other because of max_groups (0: none).",
            labels=DIALOG_LABELS,
        )
        for result in self._results:
            account = result.account
            for dialog in result.dialogs:
                reading = dialog.reading
                if dialog.error is not None or reading is None or reading.groups is None:
                    continue
                split = reading.groups
                names = result.group_names.get(split.group_by, {})
                dialog_labels = [account.provider, account.name, dialog.name]
                folded.add_metric(dialog_labels, float(split.folded))
                for group in split.groups:
                    labels = [*dialog_labels, split.group_by, group.group]
                    _add_values(families, labels, group)
                    name = _group_name(group, names)
                    if name is not None:
                        info.add_metric([*labels, name], 1.0)
        yield from families.values()
        yield info
        yield folded


def _group_name(group: GroupReading, looked_up: Mapping[str, str]) -> str | None:
    """The answer's own name, else the looked-up one; reserved groups have none."""
    if group.group in RESERVED:
        return None
    return display_name(group.name) or looked_up.get(group.group)


def _add_values(
    families: dict[str, GaugeMetricFamily], labels: list[str], values: Reading | GroupReading
) -> None:
    """One sample per family whose attribute the dialog (or group) has; none where it is None."""
    for attr, family in families.items():
        value = getattr(values, attr)
        if value is not None:
            family.add_metric(labels, float(value))


@dataclass(frozen=True)
class ExporterStatus:
    """Exporter-level facts for the self-metrics, snapshotted before rendering."""

    build: BuildInfo
    reload_successful: bool
    reload_success_timestamp: float | None


class SelfCollector(Collector):
    """The exporter's own health: fetch timings, errors, requests, caching, limits, reloads.

    It reads accounts' snapshots, taken before rendering: one consistent moment per account.
    """

    def __init__(self, snapshots: Iterable[AccountSnapshot], status: ExporterStatus) -> None:
        self._snapshots = list(snapshots)
        self._status = status

    def collect(self) -> Iterator[Metric]:
        yield from self._account_metrics()
        yield self._status.build.metric(f"{NAMESPACE}_exporter_build_info")
        yield GaugeMetricFamily(
            f"{NAMESPACE}_exporter_config_last_reload_successful",
            "1 if the last configuration load or reload succeeded, else 0.",
            value=1.0 if self._status.reload_successful else 0.0,
        )
        if self._status.reload_success_timestamp is not None:
            yield GaugeMetricFamily(
                f"{NAMESPACE}_exporter_config_last_reload_success_timestamp_seconds",
                "Unix time of the last successful configuration load or reload.",
                value=self._status.reload_success_timestamp,
            )

    def _account_metrics(self) -> Iterator[Metric]:
        duration = GaugeMetricFamily(
            f"{NAMESPACE}_fetch_duration_seconds",
            "Wall time of the account's last refresh from its provider.",
            labels=ACCOUNT_LABELS,
        )
        errors = CounterMetricFamily(
            f"{NAMESPACE}_fetch_errors",
            "Dialog fetches that failed, by reason.",
            labels=[*ACCOUNT_LABELS, "reason"],
        )
        requests = CounterMetricFamily(
            f"{NAMESPACE}_upstream_requests",
            "HTTP requests made to the provider, by status class (error: no HTTP answer).",
            labels=[*ACCOUNT_LABELS, "status_class"],
        )
        hits = CounterMetricFamily(
            f"{NAMESPACE}_cache_hits",
            "Scrapes of the account served without a refresh of their own "
            "(cache_ttl, budget pacing, or joining a refresh in flight).",
            labels=ACCOUNT_LABELS,
        )
        misses = CounterMetricFamily(
            f"{NAMESPACE}_cache_misses",
            "Scrapes of the account that started a refresh from the provider.",
            labels=ACCOUNT_LABELS,
        )
        remaining = GaugeMetricFamily(
            f"{NAMESPACE}_rate_limit_remaining",
            "Requests left in the provider's current rate-limit window, as it last reported.",
            labels=ACCOUNT_LABELS,
        )
        reset = GaugeMetricFamily(
            f"{NAMESPACE}_rate_limit_reset_timestamp_seconds",
            "Unix time at which the provider's rate-limit window resets, as it last reported.",
            labels=ACCOUNT_LABELS,
        )
        budget = GaugeMetricFamily(
            f"{NAMESPACE}_daily_request_budget",
            "Configured daily_request_budget: upstream requests allowed in any 24 hours.",
            labels=ACCOUNT_LABELS,
        )
        spent = GaugeMetricFamily(
            f"{NAMESPACE}_daily_requests_spent",
            "Upstream requests made in the last 24 hours (accounts with a budget).",
            labels=ACCOUNT_LABELS,
        )
        for snap in self._snapshots:
            labels = [snap.account.provider, snap.account.name]
            if snap.last_fetch_duration is not None:
                duration.add_metric(labels, snap.last_fetch_duration)
            for reason, number in snap.errors.items():
                errors.add_metric([*labels, str(reason)], float(number))
            for status_class, number in sorted(snap.requests_by_status_class.items()):
                requests.add_metric([*labels, status_class], float(number))
            hits.add_metric(labels, float(snap.cache_hits))
            misses.add_metric(labels, float(snap.cache_misses))
            if snap.rate_limit_remaining is not None:
                remaining.add_metric(labels, snap.rate_limit_remaining)
            if snap.rate_limit_reset_at is not None:
                reset.add_metric(labels, snap.rate_limit_reset_at)
            if snap.budget is not None:
                budget.add_metric(labels, float(snap.budget.allowed))
                spent.add_metric(labels, float(snap.budget.spent))
        yield from (duration, errors, requests, hits, misses, remaining, reset, budget, spent)
