"""The collectors on hand-built results and snapshots: exact series, labels, HELP and types.

No HTTP and no runtime: each test builds what a scrape would hand the collectors, renders it
as ``/metrics`` does (a registry per scrape) and reads the exposition back with
prometheus_client's own parsers, so what is asserted is what Prometheus would ingest.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from exporter.fetching.scrape import AccountResult, AccountSnapshot, BudgetUse, DialogResult
from exporter.models import AccountConfig
from exporter.outcome import FetchError, GroupReading, GroupSplit, Reading, Reason
from exporter.providers.crisp import CrispAccount
from exporter.providers.sendbird import SendbirdAccount
from exporter.rendering.buildinfo import BuildInfo
from exporter.rendering.collector import (
    DialogCollector,
    ExporterStatus,
    GroupCollector,
    SelfCollector,
)
from exporter.web.app import negotiate

FETCHED_AT = 1_700_000_000.5
Labels = frozenset[tuple[str, str]]

VALUE_HELP = {
    "chat_unread_messages": "Unread messages in the dialog, as the provider counts them.",
    "chat_unread_mentions": "Unread messages that mention the user (Sendbird, Matrix highlights).",
    "chat_unread_invitations": "Pending invitations (Sendbird channels, Matrix rooms).",
    "chat_unread_conversations": "Conversations with at least one unread message (Crisp"
    " backlog, Stream Chat channels), waiting on the team (Intercom), open (Chatwoot), or"
    " tickets of a Zendesk view or search.",
    "chat_unread_oldest_unread_timestamp_seconds": "Unix time since which the oldest unread"
    " conversation has been waiting (Crisp backlog, Intercom, Chatwoot), or the oldest Zendesk"
    " ticket's creation.",
}
CACHE_NOTE = (
    " Some accounts serve cached values (cache_ttl or daily_request_budget pacing);"
    " chat_unread_last_success_timestamp_seconds tells their age."
)


def sendbird(name: str = "sb-prod", **extra: Any) -> AccountConfig:
    dialogs = [{"name": d, "user_id": d} for d in ("agent-42", "agent-7", "ghost")]
    config = {"name": name, "provider": "sendbird", "application_id": "APP-1"}
    return SendbirdAccount.model_validate(
        {**config, "api_token": "token-1234", "dialogs": dialogs, **extra}
    )


def crisp(**extra: Any) -> AccountConfig:
    config = {"name": "acme-crisp", "provider": "crisp", "website_id": "w", "identifier": "i"}
    return CrispAccount.model_validate(
        {**config, "key": "key-1234", "dialogs": [{"name": "backlog"}], **extra}
    )


def render(*collectors: Collector) -> str:
    registry = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        registry.register(collector)
    return generate_latest(registry).decode()


def families(text: str) -> dict[str, tuple[str, str, list[Sample]]]:
    """{family name: (type, HELP, samples)} as prometheus_client's text parser reads them."""
    parsed = {}
    for family in text_string_to_metric_families(text):
        assert family.name not in parsed
        parsed[family.name] = (family.type, family.documentation, family.samples)
    return parsed


def series(samples: list[Sample]) -> dict[tuple[str, Labels], float]:
    found: dict[tuple[str, Labels], float] = {}
    for sample in samples:
        key = (sample.name, frozenset(sample.labels.items()))
        assert key not in found, f"duplicate series {key}"
        assert sample.timestamp is None
        found[key] = sample.value
    return found


def labels(**pairs: str) -> Labels:
    return frozenset(pairs.items())


def dialog(name: str, provider: str = "sendbird", account: str = "sb-prod") -> Labels:
    return labels(provider=provider, account=account, dialog=name)


def result(account: AccountConfig, *dialogs: DialogResult) -> AccountResult:
    return AccountResult(account=account, dialogs=dialogs, source="fresh", trace=())


def test_each_value_has_its_series_and_a_none_value_has_none() -> None:
    results = [
        result(
            sendbird(),
            DialogResult("agent-42", Reading(3, mentions=1, invitations=0), FETCHED_AT, None),
            DialogResult("agent-7", Reading(0, mentions=0, invitations=2), FETCHED_AT + 1, None),
            DialogResult("ghost", None, None, FetchError(Reason.NOT_FOUND, "HTTP 400: gone")),
        )
    ]
    parsed = families(render(DialogCollector(results)))
    assert set(parsed) == {
        *VALUE_HELP,
        "chat_unread_up",
        "chat_unread_last_success_timestamp_seconds",
        "chat_unread_dialog_info",
    }
    assert series(parsed["chat_unread_messages"][2]) == {
        ("chat_unread_messages", dialog("agent-42")): 3.0,
        ("chat_unread_messages", dialog("agent-7")): 0.0,  # a true 0 is a series
    }
    assert series(parsed["chat_unread_mentions"][2]) == {
        ("chat_unread_mentions", dialog("agent-42")): 1.0,
        ("chat_unread_mentions", dialog("agent-7")): 0.0,
    }
    assert series(parsed["chat_unread_invitations"][2]) == {
        ("chat_unread_invitations", dialog("agent-42")): 0.0,
        ("chat_unread_invitations", dialog("agent-7")): 2.0,
    }
    # Sendbird reports no conversations and no waiting time: HELP and TYPE, and no series.
    assert parsed["chat_unread_conversations"][2] == []
    assert parsed["chat_unread_oldest_unread_timestamp_seconds"][2] == []
    assert series(parsed["chat_unread_up"][2]) == {
        ("chat_unread_up", dialog("agent-42")): 1.0,
        ("chat_unread_up", dialog("agent-7")): 1.0,
        ("chat_unread_up", dialog("ghost")): 0.0,
    }
    age = "chat_unread_last_success_timestamp_seconds"
    assert series(parsed[age][2]) == {
        (age, dialog("agent-42")): FETCHED_AT,
        (age, dialog("agent-7")): FETCHED_AT + 1,
    }


def test_help_and_types_without_and_with_cached_accounts() -> None:
    reading = DialogResult("backlog", Reading(5, conversations=2), FETCHED_AT, None)
    for account, note in ((crisp(), ""), (crisp(cache_ttl="1m"), CACHE_NOTE)):
        parsed = families(render(DialogCollector([result(account, reading)])))
        for name, help_ in VALUE_HELP.items():
            assert parsed[name][:2] == ("gauge", help_ + note)
        assert parsed["chat_unread_up"][:2] == (
            "gauge",
            "1 if this dialog's value was fetched successfully for this scrape, else 0.",
        )
        assert parsed["chat_unread_last_success_timestamp_seconds"][:2] == (
            "gauge",
            "Unix time at which the value now served was fetched.",
        )
    budgeted = result(crisp(daily_request_budget=5000), reading)
    parsed = families(render(DialogCollector([budgeted])))
    assert parsed["chat_unread_messages"][1] == VALUE_HELP["chat_unread_messages"] + CACHE_NOTE


def test_a_failure_served_with_a_still_fresh_value_is_up_0_with_its_value() -> None:
    error = FetchError(Reason.TIMEOUT, "no answer within 5s")
    cached = DialogResult("backlog", Reading(7, conversations=3), FETCHED_AT, error)
    parsed = families(render(DialogCollector([result(crisp(cache_ttl=60), cached)])))
    backlog = dialog("backlog", "crisp", "acme-crisp")
    assert series(parsed["chat_unread_up"][2]) == {("chat_unread_up", backlog): 0.0}
    assert series(parsed["chat_unread_messages"][2]) == {("chat_unread_messages", backlog): 7.0}
    assert series(parsed["chat_unread_conversations"][2]) == {
        ("chat_unread_conversations", backlog): 3.0
    }
    assert series(parsed["chat_unread_last_success_timestamp_seconds"][2]) == {
        ("chat_unread_last_success_timestamp_seconds", backlog): FETCHED_AT
    }


def test_a_backlog_without_a_message_count_has_no_messages_series() -> None:
    waiting = Reading(None, conversations=4, oldest_unread_timestamp=1_690_000_000.25)
    parsed = families(
        render(DialogCollector([result(crisp(), DialogResult("backlog", waiting, 1.0, None))]))
    )
    backlog = dialog("backlog", "crisp", "acme-crisp")
    assert parsed["chat_unread_messages"][2] == []
    assert series(parsed["chat_unread_oldest_unread_timestamp_seconds"][2]) == {
        ("chat_unread_oldest_unread_timestamp_seconds", backlog): 1_690_000_000.25
    }


def test_up_0_without_values_and_no_account_no_series() -> None:
    down = [
        DialogResult(name, None, None, FetchError(Reason.AUTH, "HTTP 401"))
        for name in ("agent-42", "agent-7", "ghost")
    ]
    parsed = families(render(DialogCollector([result(sendbird(), *down)])))
    assert {name: samples for name, (_, _, samples) in parsed.items() if samples} == {
        "chat_unread_up": parsed["chat_unread_up"][2],
        "chat_unread_dialog_info": parsed["chat_unread_dialog_info"][2],
    }
    assert set(series(parsed["chat_unread_up"][2]).values()) == {0.0}
    assert all(samples == [] for _, _, samples in families(render(DialogCollector([]))).values())


def test_label_values_are_escaped_and_read_back_exactly() -> None:
    account = sendbird(name='we"ird\\acct')
    odd = DialogResult("agent-42", Reading(1), FETCHED_AT, None)
    parsed = families(render(DialogCollector([result(account, odd)])))
    assert series(parsed["chat_unread_up"][2]) == {
        ("chat_unread_up", dialog("agent-42", account='we"ird\\acct')): 1.0
    }


def snapshot(account: AccountConfig, **fields: Any) -> AccountSnapshot:
    """A snapshot with nothing known yet, but what ``fields`` set."""
    defaults: dict[str, Any] = {
        "last_fetch_duration": None,
        "errors": MappingProxyType(dict.fromkeys(Reason, 0)),
        "requests_by_status_class": MappingProxyType({}),
        "cache_hits": 0,
        "cache_misses": 0,
        "rate_limit_remaining": None,
        "rate_limit_reset_at": None,
        "budget": None,
        "refresh_started_at": None,
        "outcomes": MappingProxyType({}),
    }
    return AccountSnapshot(account=account, **{**defaults, **fields})


def errors(**counts: int) -> Mapping[Reason, int]:
    return MappingProxyType({reason: counts.get(reason.value, 0) for reason in Reason})


BUILD = BuildInfo("1.2.3", revision="0a1b2c3", branch="main", pythonversion="3.11.2")
STATUS = ExporterStatus(BUILD, reload_successful=True, reload_success_timestamp=1_699_999_999.0)


def test_self_metrics_from_a_snapshot() -> None:
    busy = snapshot(
        crisp(daily_request_budget=5000),
        last_fetch_duration=0.25,
        errors=errors(timeout=2, auth=1),
        requests_by_status_class=MappingProxyType({"2xx": 40, "error": 2, "4xx": 1}),
        cache_hits=7,
        cache_misses=3,
        rate_limit_remaining=99.0,
        rate_limit_reset_at=1_700_000_060.0,
        budget=BudgetUse(allowed=5000, spent=43),
    )
    quiet = snapshot(sendbird())
    parsed = families(render(SelfCollector([busy, quiet], STATUS)))
    one = labels(provider="crisp", account="acme-crisp")
    other = labels(provider="sendbird", account="sb-prod")

    assert parsed["chat_unread_fetch_duration_seconds"] == (
        "gauge",
        "Wall time of the account's last refresh from its provider.",
        [Sample("chat_unread_fetch_duration_seconds", dict(one), 0.25)],
    )
    assert parsed["chat_unread_fetch_errors"][:2] == (
        "counter",
        "Dialog fetches that failed, by reason.",
    )
    counted = {"timeout": 2.0, "auth": 1.0}
    expected_errors = {
        ("chat_unread_fetch_errors_total", one | {("reason", r.value)}): counted.get(r.value, 0.0)
        for r in Reason
    }
    expected_errors |= {
        ("chat_unread_fetch_errors_total", other | {("reason", r.value)}): 0.0 for r in Reason
    }
    assert series(parsed["chat_unread_fetch_errors"][2]) == expected_errors
    assert series(parsed["chat_unread_upstream_requests"][2]) == {
        ("chat_unread_upstream_requests_total", one | {("status_class", "2xx")}): 40.0,
        ("chat_unread_upstream_requests_total", one | {("status_class", "4xx")}): 1.0,
        ("chat_unread_upstream_requests_total", one | {("status_class", "error")}): 2.0,
    }
    assert series(parsed["chat_unread_cache_hits"][2]) == {
        ("chat_unread_cache_hits_total", one): 7.0,
        ("chat_unread_cache_hits_total", other): 0.0,
    }
    assert series(parsed["chat_unread_cache_misses"][2]) == {
        ("chat_unread_cache_misses_total", one): 3.0,
        ("chat_unread_cache_misses_total", other): 0.0,
    }
    # Only what is known is a series: the quiet account has no limits and no budget.
    for name, number in {
        "chat_unread_rate_limit_remaining": 99.0,
        "chat_unread_daily_request_budget": 5000.0,
        "chat_unread_daily_requests_spent": 43.0,
    }.items():
        assert series(parsed[name][2]) == {(name, one): number}
    reset = "chat_unread_rate_limit_reset_timestamp_seconds"
    assert series(parsed[reset][2]) == {(reset, one): 1_700_000_060.0}
    assert series(parsed["chat_unread_exporter_build_info"][2]) == {
        (
            "chat_unread_exporter_build_info",
            labels(version="1.2.3", revision="0a1b2c3", branch="main", pythonversion="3.11.2"),
        ): 1.0
    }
    assert series(parsed["chat_unread_exporter_config_last_reload_successful"][2]) == {
        ("chat_unread_exporter_config_last_reload_successful", labels()): 1.0
    }
    assert series(
        parsed["chat_unread_exporter_config_last_reload_success_timestamp_seconds"][2]
    ) == {
        ("chat_unread_exporter_config_last_reload_success_timestamp_seconds", labels()): (
            1_699_999_999.0
        )
    }


def test_a_failed_first_load_has_no_reload_timestamp() -> None:
    status = ExporterStatus(BUILD, reload_successful=False, reload_success_timestamp=None)
    parsed = families(render(SelfCollector([], status)))
    assert series(parsed["chat_unread_exporter_config_last_reload_successful"][2]) == {
        ("chat_unread_exporter_config_last_reload_successful", labels()): 0.0
    }
    assert "chat_unread_exporter_config_last_reload_success_timestamp_seconds" not in parsed
    assert parsed["chat_unread_fetch_duration_seconds"][2] == []


@pytest.mark.parametrize("cached", [False, True])
def test_openmetrics_reads_the_same_series(cached: bool) -> None:
    account = crisp(cache_ttl=60) if cached else crisp()
    backlog = DialogResult("backlog", Reading(5, conversations=2), FETCHED_AT, None)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DialogCollector([result(account, backlog)]))
    registry.register(SelfCollector([snapshot(account, cache_hits=1)], STATUS))
    encode, content_type = negotiate("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    text = encode(registry).decode()
    from_om = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in parse_om(text)  # type: ignore[no-untyped-call]  # untyped upstream
        for s in family.samples
    }
    from_text = {
        key: number
        for _, _, samples in families(generate_latest(registry).decode()).values()
        for key, number in series(samples).items()
    }
    assert from_om == from_text


def test_groups_are_served_with_names_and_folded_count_only_while_the_dialog_is_up() -> None:
    split = GroupSplit(
        "inbox",
        (
            GroupReading("inbox-1", messages=4, conversations=2, oldest_unread_timestamp=5.0),
            GroupReading("unassigned", messages=1, conversations=1, oldest_unread_timestamp=9.0),
            GroupReading("other", messages=2, conversations=1, oldest_unread_timestamp=7.0),
        ),
        folded=3,
    )
    waiting = Reading(7, conversations=4, oldest_unread_timestamp=5.0, groups=split)
    up = result(crisp(), DialogResult("backlog", waiting, FETCHED_AT, None))
    up = AccountResult(
        account=up.account,
        dialogs=up.dialogs,
        source="fresh",
        trace=(),
        part_of={},
        group_names={"inbox": {"inbox-1": "Sales EU"}},
    )
    parsed = families(render(GroupCollector([up])))
    backlog = {"provider": "crisp", "account": "acme-crisp", "dialog": "backlog"}

    def group(name: str) -> Labels:
        return labels(**backlog, group_by="inbox", group=name)

    assert series(parsed["chat_unread_group_messages"][2]) == {
        ("chat_unread_group_messages", group("inbox-1")): 4.0,
        ("chat_unread_group_messages", group("unassigned")): 1.0,
        ("chat_unread_group_messages", group("other")): 2.0,
    }
    assert parsed["chat_unread_group_mentions"][2] == []
    assert series(parsed["chat_unread_group_info"][2]) == {
        (
            "chat_unread_group_info",
            labels(**backlog, group_by="inbox", group="inbox-1", name="Sales EU"),
        ): 1.0
    }
    assert series(parsed["chat_unread_groups_folded"][2]) == {
        ("chat_unread_groups_folded", labels(**backlog)): 3.0
    }
    # The same cached reading served with up 0 (cache_ttl): no group series at all.
    down = result(
        crisp(), DialogResult("backlog", waiting, FETCHED_AT, FetchError(Reason.HTTP_5XX, "502"))
    )
    assert all(samples == [] for _, _, samples in families(render(GroupCollector([down]))).values())


def test_dialog_info_names_the_whole_each_part_is_counted_in() -> None:
    account = sendbird()
    plain = result(
        account, *(DialogResult(n, Reading(1), FETCHED_AT, None) for n in ("agent-42", "agent-7"))
    )
    covered = AccountResult(
        account=account,
        dialogs=plain.dialogs,
        source="fresh",
        trace=(),
        part_of={"agent-7": "agent-42"},
    )
    parsed = families(render(DialogCollector([covered])))
    assert series(parsed["chat_unread_dialog_info"][2]) == {
        ("chat_unread_dialog_info", labels(**dict(dialog("agent-42")), part_of="")): 1.0,
        ("chat_unread_dialog_info", labels(**dict(dialog("agent-7")), part_of="agent-42")): 1.0,
    }
