"""End to end: the demo exporter scraped by a real Prometheus with the shipped configs and rules.

Starts ``python -m exporter --demo`` and two Prometheus servers on free loopback ports: one
with prometheus/prometheus.yml (plain /metrics scrape), one with prometheus/prometheus-probe.yml
(multi-target /probe?account=..., self-metrics from /exporter-metrics), both rewritten only to
point at the demo exporter and to scrape and evaluate every second. Then, through Prometheus'
HTTP API: the demo's series arrive with exactly the contract's labels (in the probe setup from
the probe job only, each dialog once), every dashboard query returns data, the rules load and
evaluate, and an alert that the demo data must trigger does. Honest totals: an exporter over
overlapping dialogs with ``group_by`` (Matrix rooms, a Chatwoot backlog, a Zendesk search),
reading simulators of this process, scraped by a real Prometheus: each headline and queue
panel's query, with the variables substituted, equals the distinct count of the simulators'
unread messages, conversations and tickets, read from the simulators' own state.

Skips without the ``prometheus``/``promtool`` binaries (Debian package prometheus) unless
``CHAT_UNREAD_REQUIRE_PROMETHEUS=1``. Every wait polls against a deadline.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import threading
import urllib.parse
import urllib.request
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import pytest
import yaml

from exporter.simulator import Simulator
from tests.support import (
    BUILT_IN_PROVIDERS,
    DEMO_ACCOUNTS,
    DEMO_DIALOGS,
    DIALOG_METRICS,
    EXPORTER_JOB,
    MATRIX_ALIAS,
    MATRIX_ROOMS,
    MATRIX_TOKEN,
    PROBE_JOB,
    ROOT,
    ZENDESK_GROUPS,
    Server,
    chatwoot_backlog,
    free_port,
    http_get,
    matrix_yaml,
    poll,
    populate,
    prometheus_tool,
    start_server,
    wait_ready,
    zendesk_tickets,
)

DASHBOARD = ROOT / "grafana" / "dashboards" / "chat-unread.json"
PROMETHEUS_DIR = ROOT / "prometheus"
RULE_FILES = sorted((PROMETHEUS_DIR / "rules").glob("*.rules.yml"))
CONFIGS = {"plain": "prometheus.yml", "probe": "prometheus-probe.yml"}
EXPORTER_PORT_IN_CONFIGS = ":9866"
SERIES_LABELS = {"__name__", "provider", "account", "dialog", "job", "instance"}

METRIC_RE = re.compile(r"\b(chat_unread_[a-z_]+)\b")
# Dashboard variables, as Grafana would fill them with every label variable on "All".
VARIABLE_VALUES = {
    "$provider": ".*",
    "$account": ".*",
    "$dialog": ".*",
    "$group_by": ".*",
    "$__rate_interval": "1m",
    "$__interval": "1m",
    "$__range": "1m",
}

STARTUP_TIMEOUT = 20.0
DATA_TIMEOUT = 30.0


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def exporter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    prometheus_tool("prometheus")  # skip before starting anything when Prometheus is missing
    directory = tmp_path_factory.mktemp("exporter")
    port = free_port()
    server = start_server(
        "exporter",
        [sys.executable, "-m", "exporter", "--demo", "--web.listen-address", f"127.0.0.1:{port}"],
        port,
        directory,
        cwd=directory,
    )
    try:
        wait_ready(server, "/-/ready", STARTUP_TIMEOUT)
        yield server
    finally:
        server.stop()


def _test_config(name: str, exporter_address: str) -> dict[str, Any]:
    """A shipped example config, pointed at the demo exporter and sped up to 1 s."""
    path = PROMETHEUS_DIR / CONFIGS[name]
    config = cast(dict[str, Any], yaml.safe_load(path.read_text(encoding="utf-8")))
    config["global"]["scrape_interval"] = "1s"
    config["global"]["evaluation_interval"] = "1s"
    config["rule_files"] = [str((path.parent / rule).resolve()) for rule in config["rule_files"]]
    config.pop("alerting", None)
    for job in config["scrape_configs"]:
        job["scrape_interval"] = "1s"
        job["scrape_timeout"] = "1s"
        for static in job.get("static_configs", []):
            targets = static["targets"]
            if any(target.endswith(EXPORTER_PORT_IN_CONFIGS) for target in targets):
                static["targets"] = [exporter_address]
            else:  # probe targets: the demo's account names
                static["targets"] = list(DEMO_ACCOUNTS)
        for sd in job.get("http_sd_configs", []):
            sd["url"] = f"http://{exporter_address}/sd"
            sd["refresh_interval"] = "1s"
        for relabel in job.get("relabel_configs", []):
            if str(relabel.get("replacement", "")).endswith(EXPORTER_PORT_IN_CONFIGS):
                relabel["replacement"] = exporter_address
    return config


@contextmanager
def _prometheus_servers(
    exporter: Server, names: Sequence[str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Server]]:
    """Prometheus with each named example setup, scraping ``exporter``; started together so
    their warm-up overlaps."""
    binary = prometheus_tool("prometheus")
    exporter_address = exporter.url.removeprefix("http://")
    servers: dict[str, Server] = {}
    try:
        for name in names:
            directory = tmp_path_factory.mktemp(f"prometheus-{name}")
            config_file = directory / "prometheus.yml"
            config_file.write_text(
                yaml.safe_dump(_test_config(name, exporter_address)), encoding="utf-8"
            )
            port = free_port()
            servers[name] = start_server(
                f"prometheus-{name}",
                [
                    binary,
                    f"--config.file={config_file}",
                    f"--storage.tsdb.path={directory / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--log.level=warn",
                ],
                port,
                directory,
                cwd=directory,
            )
        for server in servers.values():
            wait_ready(server, "/-/ready", STARTUP_TIMEOUT)
        yield servers
    finally:
        for server in servers.values():
            server.stop()


@pytest.fixture(scope="module")
def prometheus(
    exporter: Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Server]]:
    """Both example setups."""
    with _prometheus_servers(exporter, list(CONFIGS), tmp_path_factory) as servers:
        yield servers


# --------------------------------------------------------------------------- API helpers


def _api(server: Server, path: str, **params: str) -> Any:
    url = f"{server.url}/api/v1/{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    status, body = http_get(url)
    answer = json.loads(body)
    assert status == 200, f"{url} -> {status}: {answer}"
    assert answer.get("status") == "success", f"{url} -> {answer}"
    return answer["data"]


def _query(server: Server, expr: str) -> list[dict[str, Any]]:
    data = _api(server, "query", query=expr)
    if data["resultType"] == "scalar":
        return [{"metric": {}, "value": data["result"]}]
    return cast(list[dict[str, Any]], data["result"])


def _substitute_variables(expr: str) -> str:
    for name, value in VARIABLE_VALUES.items():
        expr = expr.replace(name, value)
    # "$1" is label_replace's reference to its regex group, not a variable.
    assert "$" not in expr.replace('"$1"', ""), f"unknown variable left in {expr}"
    return expr


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs: list[str] = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            if "expr" in target:
                exprs.append(target["expr"])
    return exprs


def _demo_metric_names(exporter: Server) -> set[str]:
    """Metric names the demo exporter serves at least one sample of."""
    status, body = http_get(exporter.url + "/metrics")
    assert status == 200
    names = set()
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            names.add(line.split("{", 1)[0].split(" ", 1)[0])
    return names


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("path", ["/metrics", "/probe?account=demo-sendbird&account=demo-crisp"])
def test_demo_output_passes_promtool_check_metrics(exporter: Server, path: str) -> None:
    promtool = prometheus_tool("promtool")
    status, body = http_get(exporter.url + path)
    assert status == 200, body
    result = subprocess.run(
        [promtool, "check", "metrics"], input=body, capture_output=True, timeout=30, check=False
    )
    output = (result.stdout + result.stderr).decode()
    assert result.returncode == 0, output
    assert output.strip() == "", output


@pytest.mark.parametrize("setup", list(CONFIGS))
def test_unread_messages_arrive_with_the_contract_labels(
    exporter: Server, prometheus: dict[str, Server], setup: str
) -> None:
    server = prometheus[setup]

    def all_dialogs() -> list[dict[str, Any]] | None:
        # each dialog's value: unread messages, or waiting conversations where a provider
        # counts no messages (Intercom, Zendesk, most Chatwoot dialogs); `or` keeps one series
        # per dialog
        series = _query(server, "chat_unread_messages or chat_unread_conversations")
        found = {
            (s["metric"]["provider"], s["metric"]["account"], s["metric"]["dialog"]) for s in series
        }
        return series if found >= DEMO_DIALOGS else None

    series = poll(
        all_dialogs,
        "chat_unread_messages of every demo dialog",
        timeout=DATA_TIMEOUT,
        servers=[exporter, server],
    )
    found = [
        (s["metric"]["provider"], s["metric"]["account"], s["metric"]["dialog"]) for s in series
    ]
    assert sorted(found) == sorted(DEMO_DIALOGS), "missing, extra or duplicated series"
    assert {provider for provider, _a, _d in found} == set(BUILT_IN_PROVIDERS)
    for item in series:
        labels = item["metric"]
        assert set(labels) == SERIES_LABELS, labels
        if setup == "plain":
            assert labels["job"] == "chat-unread-exporter"
            assert labels["instance"] == exporter.url.removeprefix("http://")
        else:  # one target per account, named after it
            assert labels["job"] == "chat-unread-exporter-probe"
            assert labels["instance"] == labels["account"]


def test_probe_setup_scrapes_one_target_per_account(
    exporter: Server, prometheus: dict[str, Server]
) -> None:
    server = prometheus["probe"]

    def targets_up() -> list[dict[str, Any]] | None:
        up = _query(server, 'up{job="chat-unread-exporter-probe"} == 1')
        return up if len(up) == len(DEMO_ACCOUNTS) else None

    up = poll(targets_up, "every probe target up", timeout=DATA_TIMEOUT, servers=[exporter, server])
    assert sorted(item["metric"]["instance"] for item in up) == DEMO_ACCOUNTS

    # The self-metrics job scrapes /exporter-metrics, and its one target is up.
    def own_targets() -> list[dict[str, Any]] | None:
        active = cast(list[dict[str, Any]], _api(server, "targets")["activeTargets"])
        own = [t for t in active if t["labels"]["job"] == EXPORTER_JOB]
        return own if own and all(t["health"] == "up" for t in own) else None

    targets = poll(
        own_targets, "the self-metrics target up", timeout=DATA_TIMEOUT, servers=[exporter, server]
    )
    assert [urllib.parse.urlsplit(t["scrapeUrl"]).path for t in targets] == ["/exporter-metrics"]
    assert [s["value"][1] for s in _query(server, f'up{{job="{EXPORTER_JOB}"}}')] == ["1"]

    # It brings the exporter's own metrics: per account (once the probes have fetched) ...
    def own_metrics() -> list[dict[str, Any]] | None:
        series = _query(server, f'chat_unread_fetch_duration_seconds{{job="{EXPORTER_JOB}"}}')
        return series if len(series) >= len(DEMO_ACCOUNTS) else None

    own = poll(
        own_metrics,
        "the exporter's own metrics for every account",
        timeout=DATA_TIMEOUT,
        servers=[exporter, server],
    )
    assert sorted(item["metric"]["account"] for item in own) == DEMO_ACCOUNTS
    # ... and for the exporter, from that job alone (/probe does not serve them).
    build_info = _query(server, "chat_unread_exporter_build_info")
    assert [item["metric"]["job"] for item in build_info] == [EXPORTER_JOB]
    reload_ok = _query(server, "chat_unread_exporter_config_last_reload_successful")
    assert [(item["metric"]["job"], item["value"][1]) for item in reload_ok] == [
        (EXPORTER_JOB, "1")
    ]

    # Its scrape returns no per-dialog series at all: those come only from the probe job.
    assert _query(server, f'{{job="{EXPORTER_JOB}",dialog!=""}}') == []
    for metric in DIALOG_METRICS:
        assert _query(server, f'{metric}{{job!="{PROBE_JOB}"}}') == [], metric
    # Each dialog is stored once, by the probe of its account.
    dialogs = _query(server, "chat_unread_up")
    assert sorted(
        (s["metric"]["provider"], s["metric"]["account"], s["metric"]["dialog"]) for s in dialogs
    ) == sorted(DEMO_DIALOGS)
    assert {s["metric"]["job"] for s in dialogs} == {PROBE_JOB}
    # (ALERTS carry a dialog's labels once per alert name, and a dialog's queues once per
    # group: several alerts or groups are not duplicates.)
    duplicated = (
        "count by (__name__, alertname, provider, account, dialog, group_by, group)"
        " ({dialog!=''}) > 1"
    )
    assert _query(server, duplicated) == []


@pytest.mark.parametrize("setup", list(CONFIGS))
def test_every_dashboard_query_returns_data(
    exporter: Server, prometheus: dict[str, Server], setup: str
) -> None:
    server = prometheus[setup]
    served = _demo_metric_names(exporter)
    pending: dict[str, str] = {}  # query sent -> dashboard expr
    not_in_demo: dict[str, set[str]] = {}
    for expr in _dashboard_exprs():
        missing = set(METRIC_RE.findall(expr)) - served
        if missing:
            not_in_demo[expr] = missing
        pending[_substitute_variables(expr)] = expr

    def remaining() -> dict[str, str] | None:
        for query in list(pending):
            # A query Prometheus rejects fails here at once, with its error.
            if _query(server, query):
                del pending[query]
        waiting = {q: e for q, e in pending.items() if e not in not_in_demo}
        return pending if not waiting else None

    empty = poll(
        remaining,
        "data for every dashboard query",
        timeout=DATA_TIMEOUT,
        servers=[exporter, server],
    )
    # Only queries of metrics the demo does not serve (yet) may stay empty; they were still
    # accepted by Prometheus above.
    for expr in empty.values():
        warnings.warn(
            f"dashboard query has no data because the demo serves no {sorted(not_in_demo[expr])}:"
            f" {expr}",
            stacklevel=1,
        )


def test_dashboard_variables_find_the_demo(exporter: Server, prometheus: dict[str, Server]) -> None:
    server = prometheus["plain"]

    def values(label: str, match: str) -> list[str]:
        return cast(list[str], _api(server, f"label/{label}/values", **{"match[]": match}))

    poll(
        lambda: values("dialog", "chat_unread_up") or None,
        "chat_unread_up",
        timeout=DATA_TIMEOUT,
        servers=[exporter, server],
    )
    # label_values(chat_unread_up, provider) etc., every variable on "All" (.*)
    assert set(values("provider", "chat_unread_up")) == {p for p, _a, _d in DEMO_DIALOGS}
    assert values("account", 'chat_unread_up{provider=~".*"}') == DEMO_ACCOUNTS
    assert set(values("dialog", 'chat_unread_up{provider=~".*",account=~".*"}')) == {
        d for _p, _a, d in DEMO_DIALOGS
    }
    assert values("dialog", 'chat_unread_up{provider=~"sendbird",account=~".*"}') == [
        "agent-42",
        "agent-42-channels",
        "agent-7",
    ]


@pytest.mark.parametrize("setup", list(CONFIGS))
def test_rules_load_and_evaluate(
    exporter: Server, prometheus: dict[str, Server], setup: str
) -> None:
    server = prometheus[setup]
    shipped: dict[str, int] = {}
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]:
            shipped[group["name"]] = len(group.get("rules") or [])

    def evaluated() -> list[dict[str, Any]] | None:
        groups = cast(list[dict[str, Any]], _api(server, "rules")["groups"])
        rules = [rule for group in groups for rule in group["rules"]]
        evaluated_all = all(rule["health"] != "unknown" for rule in rules)
        return groups if rules and evaluated_all else None

    groups = poll(
        evaluated,
        "a first evaluation of every rule",
        timeout=DATA_TIMEOUT,
        servers=[exporter, server],
    )
    assert {group["name"]: len(group["rules"]) for group in groups} == shipped
    for group in groups:
        for rule in group["rules"]:
            assert rule["health"] == "ok", (group["name"], rule)
            assert not rule.get("lastError"), (group["name"], rule)

    # The thresholds follow the demo's dialogs (shipped global defaults: 100 and 900 s).
    def thresholds() -> list[dict[str, Any]] | None:
        series = _query(server, "chat_unread:backlog_threshold")
        return series if len(series) == len(DEMO_DIALOGS) else None

    series = poll(
        thresholds,
        "chat_unread:backlog_threshold",
        timeout=DATA_TIMEOUT,
        servers=[exporter, server],
    )
    assert {float(item["value"][1]) for item in series} == {100.0}
    sla = _query(server, "chat_unread:oldest_unread_sla_seconds")
    assert {float(item["value"][1]) for item in sla} == {900.0}
    waiting_sla = _query(server, "chat_unread:waiting_sla_seconds")
    assert {float(item["value"][1]) for item in waiting_sla} == {900.0}

    # The waiting clock (a rule that reads its own previous value) runs for exactly the dialogs
    # with something unread (polled: the demo's counts move every 2 s, the clock follows one
    # evaluation later), and started no later than now.
    def key(series: dict[str, Any]) -> tuple[str, str, str]:
        return (
            series["metric"]["provider"],
            series["metric"]["account"],
            series["metric"]["dialog"],
        )

    def clocks_match() -> set[tuple[str, str, str]] | None:
        clocks = {key(s) for s in _query(server, "chat_unread:waiting_since_timestamp_seconds")}
        waiting = {
            key(s)
            for s in _query(server, "(chat_unread_conversations or chat_unread_messages) > 0")
        }
        return clocks if clocks and clocks == waiting else None

    clocks = poll(
        clocks_match,
        "a waiting clock for every dialog with something unread",
        timeout=DATA_TIMEOUT,
        servers=[exporter, server],
    )
    assert len(clocks) >= len(DEMO_DIALOGS) // 2, clocks
    assert _query(server, "chat_unread:waiting_since_timestamp_seconds > time()") == []
    accounts = _query(server, "chat_unread:rate_limit_remaining_threshold")
    assert sorted(item["metric"]["account"] for item in accounts) == DEMO_ACCOUNTS


def test_demo_backlog_triggers_the_sla_alert(
    exporter: Server, prometheus: dict[str, Server]
) -> None:
    """The demo's Crisp backlog has conversations waiting for up to an hour (> 15 min SLA).

    (The demo's Intercom backlog waits longer than its SLA too, and may alert first.)
    """
    server = prometheus["plain"]

    def sla_alert() -> dict[str, Any] | None:
        for alert in _api(server, "alerts")["alerts"]:
            labels = alert["labels"]
            # The demo's split backlogs (by inbox, by operator) wait as long and may alert
            # first: the backlog's own alert is the one asserted.
            if (labels["alertname"], labels.get("account"), labels.get("dialog")) == (
                "ChatUnreadOldestUnreadOverSLA",
                "demo-crisp",
                "backlog",
            ):
                return cast(dict[str, Any], alert)
        return None

    alert = poll(
        sla_alert, "ChatUnreadOldestUnreadOverSLA", timeout=DATA_TIMEOUT, servers=[exporter, server]
    )
    assert alert["state"] in ("pending", "firing")
    assert alert["labels"]["dialog"] == "backlog"
    assert alert["labels"]["severity"] == "critical"
    assert "demo-crisp" in alert["annotations"]["description"]
    # The demo exporter is healthy: none of the exporter-health alerts is even pending.
    names = {a["labels"]["alertname"] for a in _api(server, "alerts")["alerts"]}
    assert not names & {
        "ChatUnreadExporterDown",
        "ChatUnreadExporterAbsent",
        "ChatUnreadDialogFailing",
        "ChatUnreadConfigReloadFailed",
    }, names


# --------------------------------------------------------------------------- honest totals

# Dialog-variable selections (Grafana sends a multi-value selection as a|b) for which the
# headline and queue panels must equal the distinct count of the simulators' unread items.
TOTALS_SELECTIONS = (".*", "all", "support|sales", "support", "all|support", "sales|all")


@contextmanager
def _simulators() -> Iterator[Simulator]:
    """``populate``'s data set, a Chatwoot backlog and Zendesk tickets on the simulators,
    served on loopback by an event loop of its own thread (Prometheus and the exporter run as
    processes; the test reads the state)."""
    sim = Simulator()
    populate(sim)
    chatwoot_backlog(sim)
    sim.zendesk.tickets = zendesk_tickets(30)
    sim.zendesk.groups = dict(ZENDESK_GROUPS)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(sim.start(), loop).result(STARTUP_TIMEOUT)
        yield sim
    finally:
        asyncio.run_coroutine_threadsafe(sim.stop(), loop).result(STARTUP_TIMEOUT)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(STARTUP_TIMEOUT)
        loop.close()


@pytest.fixture(scope="module")
def totals_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Simulator, Server]]:
    """An exporter over overlapping dialogs with ``group_by`` (Matrix: all joined rooms split
    by room, and two rooms of it; Chatwoot and Zendesk: ``_helpdesk_yaml``), reading the
    simulators of this process."""
    prometheus_tool("prometheus")
    with _simulators() as sim:
        directory = tmp_path_factory.mktemp("totals-exporter")
        matrix = matrix_yaml(sim).replace(
            "      - name: all\n", "      - name: all\n        group_by: room\n", 1
        )
        config = "accounts:\n" + matrix + _helpdesk_yaml(sim)
        config_file = directory / "config.yaml"
        config_file.write_text(config, encoding="utf-8")
        port = free_port()
        server = start_server(
            "totals-exporter",
            [
                sys.executable,
                "-m",
                "exporter",
                f"--config.file={config_file}",
                "--web.listen-address",
                f"127.0.0.1:{port}",
            ],
            port,
            directory,
            cwd=directory,
        )
        try:
            wait_ready(server, "/-/ready", STARTUP_TIMEOUT)
            yield sim, server
        finally:
            server.stop()


def _matrix_rooms(sim: Simulator) -> dict[str, str | None]:
    """Each Matrix dialog of ``matrix_yaml`` and the room it reads (None: every joined room)."""
    return {"all": None, "support": sim.matrix.aliases[MATRIX_ALIAS], "sales": MATRIX_ROOMS[1]}


def _distinct_unread(sim: Simulator, selection: str, attr: str) -> int:
    """The unread items (``attr`` of the simulated rooms) of the selected dialogs, each room
    counted once however many selected dialogs read it."""
    rooms = sim.matrix.users[MATRIX_TOKEN]
    seen: set[str] = set()
    for dialog, room in _matrix_rooms(sim).items():
        if re.fullmatch(selection, dialog):
            seen |= set(rooms) if room is None else {room}
    return sum(getattr(rooms[room], attr) for room in seen)


def _panel_targets(title: str) -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    for panel in dashboard["panels"]:
        if panel.get("title") == title:
            return [target["expr"] for target in panel["targets"]]
    raise AssertionError(f"no panel {title!r}")


def _selected(expr: str, dialog: str, group_by: str = ".*", provider: str = "matrix") -> str:
    variables = {
        **VARIABLE_VALUES,
        "$provider": provider,
        "$dialog": dialog,
        "$group_by": group_by,
    }
    for name, value in variables.items():
        expr = expr.replace(name, value)
    return expr


@pytest.fixture(scope="module")
def totals_prometheus(
    totals_world: tuple[Simulator, Server], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """The plain example setup scraping the totals exporter."""
    with _prometheus_servers(totals_world[1], ["plain"], tmp_path_factory) as servers:
        yield servers["plain"]


def test_totals_equal_the_distinct_count(
    totals_world: tuple[Simulator, Server], totals_prometheus: Server
) -> None:
    """Each headline panel's query, run by Prometheus with the dialog variable substituted,
    equals the distinct count of the simulators' unread items, for every selection."""
    sim, exporter = totals_world
    headlines = {
        "notifications": _panel_targets("Unread messages")[0],
        "highlights": _panel_targets("Unread mentions")[0],
    }
    assert _panel_targets("Unread backlog") == [headlines["notifications"]]
    by_account = _panel_targets("Unread messages by account")[0]

    def answers() -> dict[tuple[str, str], float] | None:
        got: dict[tuple[str, str], float] = {}
        for attr, expr in {**headlines, "by account": by_account}.items():
            for selection in TOTALS_SELECTIONS:
                result = _query(totals_prometheus, _selected(expr, selection))
                if not result:
                    return None
                got[(attr, selection)] = float(result[0]["value"][1])
        return got

    got = poll(answers, "every headline", timeout=DATA_TIMEOUT, servers=[exporter])
    expected = {
        (attr, selection): float(_distinct_unread(sim, selection, attr))
        for attr in headlines
        for selection in TOTALS_SELECTIONS
    }
    expected.update(
        {
            ("by account", selection): expected[("notifications", selection)]
            for selection in TOTALS_SELECTIONS
        }
    )
    assert got == expected


def test_queue_panels_equal_the_rooms(
    totals_world: tuple[Simulator, Server], totals_prometheus: Server
) -> None:
    """The queue row's queries for group_by room: one group per room with something unread,
    its value the room's own; nothing unassigned; no group for dialogs without group_by."""
    sim, exporter = totals_world
    rooms = sim.matrix.users[MATRIX_TOKEN]
    expected = {
        room_id: float(room.notifications)
        for room_id, room in rooms.items()
        if room.notifications or room.highlights
    }
    assert len(expected) >= 2, "the data set must have more than one queue"
    table, _conversations, _oldest = _panel_targets("Queues: $group_by")
    depth = _panel_targets("Queue depth: $group_by")[0]

    def per_group(expr: str, dialog: str) -> dict[str, float]:
        result = _query(totals_prometheus, _selected(expr, dialog, "room"))
        return {series["metric"]["group"]: float(series["value"][1]) for series in result}

    poll(
        lambda: per_group(table, ".*") or None,
        "queue groups",
        timeout=DATA_TIMEOUT,
        servers=[exporter],
    )
    for expr in (table, depth):
        assert per_group(expr, ".*") == expected
        assert per_group(expr, "all|support") == expected
        assert per_group(expr, "support|sales") == {}
    (unassigned_messages, _unassigned_conversations) = _panel_targets("Unassigned: $group_by")
    assert _query(totals_prometheus, _selected(unassigned_messages, ".*", "room")) == []


# Chatwoot and Zendesk: a whole backlog, a part of it, and a second whole split into queues.
CHATWOOT_ACCOUNT = "totals-chatwoot"
CHATWOOT_INBOX = 7  # one of chatwoot_backlog's two inboxes
ZENDESK_ACCOUNT = "totals-zendesk"
ZENDESK_QUERY = "status<solved"
# Zendesk's ticket statuses before "solved", in its order (new < open < pending < hold).
ZENDESK_UNSOLVED = frozenset({"new", "open", "pending", "hold"})
# Dialog-variable selections per provider: all, each dialog alone, and with the whole the
# others are part_of (Chatwoot: `by-inbox`, the first unfiltered dialog that reads the list).
HELPDESK_SELECTIONS = {
    "chatwoot": (
        ".*",
        "backlog",
        "website",
        "by-team",
        "by-agent",
        "by-inbox",
        "by-inbox|website",
        "backlog|by-inbox",
        "website|by-inbox|backlog|by-agent",
    ),
    "zendesk": (".*", "unsolved", "unsolved-by-group", "unsolved-by-group|unsolved"),
}
# A known limit, kept failing until it is lifted: `part_of` names one whole (`by-inbox`). The
# other wholes (`backlog`, split by team, by agent) are part_of it, as is the inbox's dialog
# (`website`); two of them selected without `by-inbox` count the conversations they share
# twice, since nothing says that `backlog` holds `website`, or that `by-team` and `by-agent`
# hold the same conversations. Lifting it takes the exporter saying which dialogs are wholes
# (or every whole that holds a dialog) and the sums using that.
SECOND_WHOLES_OVERCOUNT = [
    pytest.param(
        "chatwoot",
        selection,
        marks=pytest.mark.xfail(
            strict=True, reason="part_of names one whole: the others are not seen as wholes"
        ),
    )
    for selection in ("backlog|website", "website|by-team", "by-team|by-agent")
]


def _helpdesk_yaml(sim: Simulator) -> str:
    """A Chatwoot account (the backlog, one inbox of it with its unread messages, the backlog
    again split by team, by agent and by inbox) and a Zendesk account (unsolved tickets, and
    the same query split by group), to append to a config's accounts."""
    return f"""\
  - name: {CHATWOOT_ACCOUNT}
    provider: chatwoot
    base_url: {sim.chatwoot.url}
    account_id: {sim.chatwoot.account_id}
    api_access_token: {sim.chatwoot.api_access_token}
    dialogs:
      - name: backlog
      - name: website
        inbox_id: {CHATWOOT_INBOX}
        unread_messages: true
      - name: by-team
        group_by: team
      - name: by-agent
        group_by: agent
      - name: by-inbox
        group_by: inbox
  - name: {ZENDESK_ACCOUNT}
    provider: zendesk
    subdomain: acme
    base_url: {sim.zendesk.url}
    email: {sim.zendesk.email}
    api_token: {sim.zendesk.api_token}
    dialogs:
      - name: unsolved
        query: "{ZENDESK_QUERY}"
      - name: unsolved-by-group
        query: "{ZENDESK_QUERY}"
        group_by: group
"""


def _helpdesk_items(sim: Simulator, provider: str) -> dict[str, set[int]]:
    """Each dialog of ``_helpdesk_yaml`` and the ids of what it counts, read from the
    simulator's own tables: Chatwoot's open conversations (of the inbox, for ``website``),
    Zendesk's tickets whose status comes before ``solved``."""
    if provider == "chatwoot":
        conversations = sim.chatwoot.conversations
        backlog = {i for i, c in conversations.items() if c.status == "open"}
        website = {i for i in backlog if conversations[i].inbox_id == CHATWOOT_INBOX}
        wholes = {"backlog": backlog, "by-team": backlog, "by-agent": backlog}
        return {**wholes, "by-inbox": backlog, "website": website}
    unsolved = {i for i, t in sim.zendesk.tickets.items() if t.status in ZENDESK_UNSOLVED}
    return {"unsolved": unsolved, "unsolved-by-group": unsolved}


# The Chatwoot dialogs that read the conversation list, and so count unread messages too.
CHATWOOT_WALKING = frozenset({"website", "by-inbox"})


def _helpdesk_expected(sim: Simulator, provider: str, selection: str) -> dict[str, float | None]:
    """The headlines' distinct counts for a selection: each conversation or ticket once however
    many selected dialogs count it; unread messages (Chatwoot's ``unread_count``) of each
    conversation once, over the selected dialogs that count messages. None: no selected dialog
    has the value, so the panel has no data."""
    dialogs = _helpdesk_items(sim, provider)
    chosen = [name for name in dialogs if re.fullmatch(selection, name)]
    items = set().union(*(dialogs[name] for name in chosen))
    expected: dict[str, float | None] = {"conversations": float(len(items)) if chosen else None}
    if provider == "chatwoot":
        walking = [name for name in chosen if name in CHATWOOT_WALKING]
        read = set().union(*(dialogs[name] for name in walking))
        unread = sum(sim.chatwoot.conversations[i].unread_count for i in read)
        expected["messages"] = float(unread) if walking else None
        expected["messages by account"] = expected["messages"]
    return expected


def _first_value(result: list[dict[str, Any]]) -> float | None:
    assert len(result) <= 1, result
    return float(result[0]["value"][1]) if result else None


@pytest.mark.parametrize(
    ("provider", "selection"),
    [
        *(
            (provider, selection)
            for provider, chosen in HELPDESK_SELECTIONS.items()
            for selection in chosen
        ),
        *SECOND_WHOLES_OVERCOUNT,
    ],
)
def test_helpdesk_totals_equal_the_distinct_count(
    totals_world: tuple[Simulator, Server],
    totals_prometheus: Server,
    provider: str,
    selection: str,
) -> None:
    """The headlines that count conversations (Chatwoot) or tickets (Zendesk) and unread
    messages, run by Prometheus for a dialog selection, equal the distinct count of the
    simulator's conversations or tickets: an inbox of the backlog and the other wholes (the
    backlog again, split or not) are not counted again beside the whole they are part_of."""
    sim, exporter = totals_world
    panels = {
        "conversations": _panel_targets("Conversations waiting")[0],
        "messages": _panel_targets("Unread messages")[0],
        "messages by account": _panel_targets("Unread messages by account")[0],
    }
    assert "chat_unread_conversations" in panels["conversations"]
    assert "sum(" in panels["conversations"], "the headline adds dialogs up"
    expected = _helpdesk_expected(sim, provider, selection)
    assert expected["conversations"], "nothing to count"

    def answers() -> dict[str, float | None] | None:
        got = {
            panel: _first_value(
                _query(totals_prometheus, _selected(panels[panel], selection, provider=provider))
            )
            for panel in expected
        }
        # Poll until every expected value has data (the first scrapes may not have fetched).
        waiting = any(got[panel] is None and value is not None for panel, value in expected.items())
        return None if waiting else got

    got = poll(answers, f"{provider}'s headlines", timeout=DATA_TIMEOUT, servers=[exporter])
    assert got == expected


# (provider, group_by, the dialog split by it) of ``_helpdesk_yaml``.
HELPDESK_QUEUES = (
    ("chatwoot", "team", "by-team"),
    ("chatwoot", "agent", "by-agent"),
    ("chatwoot", "inbox", "by-inbox"),
    ("zendesk", "group", "unsolved-by-group"),
)


Queues = dict[tuple[str, str], float]


def _helpdesk_queues(sim: Simulator, group_by: str) -> tuple[Queues, Queues]:
    """(group, name) -> the split dialog's conversations or tickets of that group, and its
    unread messages where the split reads them (Chatwoot by inbox: the list), from the
    simulator's tables; those in no team, agent or group are ``unassigned`` (no name)."""
    chatwoot = sim.chatwoot
    opened = [c for c in chatwoot.conversations.values() if c.status == "open"]
    pairs: list[tuple[int | None, int | None]]  # (group id, unread messages or None)
    if group_by == "team":
        names = chatwoot.teams
        pairs = [(c.team_id, None) for c in opened]
    elif group_by == "agent":
        names = {i: agent.name for i, agent in chatwoot.agents.items()}
        pairs = [(c.assignee_id, None) for c in opened]
    elif group_by == "inbox":
        names = chatwoot.inboxes
        pairs = [(c.inbox_id, c.unread_count) for c in opened]
    else:
        names = sim.zendesk.groups
        tickets = sim.zendesk.tickets.values()
        pairs = [(t.group_id, None) for t in tickets if t.status in ZENDESK_UNSOLVED]
    conversations: Queues = {}
    messages: Queues = {}
    for key, unread in pairs:
        group = ("unassigned", "") if key is None else (str(key), names[key])
        conversations[group] = conversations.get(group, 0) + 1
        if unread is not None:
            messages[group] = messages.get(group, 0) + unread
    return conversations, messages


@pytest.mark.parametrize(("provider", "group_by", "split"), HELPDESK_QUEUES)
def test_helpdesk_queue_panels_equal_the_groups(
    totals_world: tuple[Simulator, Server],
    totals_prometheus: Server,
    provider: str,
    group_by: str,
    split: str,
) -> None:
    """The queue row for Chatwoot's ``team``, ``agent`` and ``inbox`` and Zendesk's
    ``group``: one group per team, agent, inbox or group with something waiting, named, its
    value the simulator's count of it; the unassigned panel the conversations or tickets in
    no team, agent or group; unread messages only where the split reads them (by inbox)."""
    sim, exporter = totals_world
    expected, expected_messages = _helpdesk_queues(sim, group_by)
    assert len(expected) >= 2, expected
    assert bool(expected_messages) == (group_by == "inbox"), expected_messages
    table = _panel_targets("Queues: $group_by")
    depth = _panel_targets("Queue depth: $group_by")
    unassigned = _panel_targets("Unassigned: $group_by")

    def per_group(expr: str, dialog: str) -> dict[tuple[str, str], float]:
        result = _query(totals_prometheus, _selected(expr, dialog, group_by, provider))
        return {
            (series["metric"]["group"], series["metric"].get("name", "")): float(series["value"][1])
            for series in result
        }

    # Names are looked up apart from the scrapes: poll until the table has them all.
    poll(
        lambda: per_group(table[1], ".*") == expected or None,
        f"{provider}'s named queues",
        timeout=DATA_TIMEOUT,
        servers=[exporter],
    )
    other = next(name for name in _helpdesk_items(sim, provider) if name != split)
    for messages, conversations in (table[:2], depth):
        for dialog in (".*", split, f"{other}|{split}"):
            assert per_group(conversations, dialog) == expected, dialog
            assert per_group(messages, dialog) == expected_messages, dialog
        assert per_group(conversations, other) == {}
    messages, conversations = unassigned
    for dialog in (".*", split):
        query = _selected(conversations, dialog, group_by, provider)
        assert _first_value(_query(totals_prometheus, query)) == expected.get(("unassigned", ""))
        query = _selected(messages, dialog, group_by, provider)
        assert _first_value(_query(totals_prometheus, query)) == expected_messages.get(
            ("unassigned", "")
        )
    assert _query(totals_prometheus, _selected(conversations, other, group_by, provider)) == []


def _matrix_accounts(names: list[str], homeserver: str) -> str:
    """Matrix accounts on ``homeserver``: a closed loopback port, so every dialog is up 0,
    which is enough to tell that Prometheus scraped the account's target."""
    return "accounts:\n" + "".join(
        f"  - name: {name}\n"
        "    provider: matrix\n"
        f"    base_url: {homeserver}\n"
        f"    access_token: syt_token_of_{name.replace('-', '_')}\n"
        "    dialogs:\n"
        "      - name: all\n"
        for name in names
    )


def test_prometheus_discovers_every_account_from_sd_and_follows_a_reload(
    tmp_path: Path,
) -> None:
    """The shipped probe config's http_sd_configs against a real config file: Prometheus scrapes
    one target per account, and after an account is added and the exporter reloaded, that one
    too, without any change to Prometheus' config."""
    binary = prometheus_tool("prometheus")
    homeserver = f"http://127.0.0.1:{free_port()}"
    config = tmp_path / "config.yaml"
    config.write_text(_matrix_accounts(["alpha", "beta"], homeserver), encoding="utf-8")
    exporter_port = free_port()
    exporter = start_server(
        "exporter",
        [
            sys.executable,
            "-m",
            "exporter",
            f"--config.file={config}",
            f"--web.listen-address=127.0.0.1:{exporter_port}",
        ],
        exporter_port,
        tmp_path,
        cwd=tmp_path,
    )
    prometheus_port = free_port()
    prometheus_config = tmp_path / "prometheus.yml"
    prometheus_config.write_text(
        yaml.safe_dump(_test_config("probe", f"127.0.0.1:{exporter_port}")), encoding="utf-8"
    )
    server = start_server(
        "prometheus-sd",
        [
            binary,
            f"--config.file={prometheus_config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{prometheus_port}",
            "--log.level=warn",
        ],
        prometheus_port,
        tmp_path,
        cwd=tmp_path,
    )
    try:
        wait_ready(exporter, "/-/ready", STARTUP_TIMEOUT)
        wait_ready(server, "/-/ready", STARTUP_TIMEOUT)

        def scraped(accounts: list[str]) -> list[dict[str, Any]] | None:
            active = cast(list[dict[str, Any]], _api(server, "targets")["activeTargets"])
            probes = [t for t in active if t["labels"]["job"] == PROBE_JOB]
            found = sorted(t["labels"]["account"] for t in probes if t["health"] == "up")
            dialogs = {s["metric"]["account"] for s in _query(server, "chat_unread_up")}
            return probes if found == accounts and dialogs == set(accounts) else None

        targets = poll(
            lambda: scraped(["alpha", "beta"]),
            "a scraped target for each account listed by /sd",
            timeout=DATA_TIMEOUT,
            servers=[exporter, server],
        )
        for target in targets:
            account = target["labels"]["account"]
            assert target["labels"]["provider"] == "matrix"
            assert target["labels"]["instance"] == account
            url = urllib.parse.urlsplit(target["scrapeUrl"])
            assert (url.netloc, url.path) == (f"127.0.0.1:{exporter_port}", "/probe")
            assert urllib.parse.parse_qs(url.query) == {"account": [account]}
            assert target["discoveredLabels"]["__param_account"] == account

        config.write_text(_matrix_accounts(["alpha", "beta", "gamma"], homeserver), "utf-8")
        request = urllib.request.Request(f"{exporter.url}/-/reload", method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
        poll(
            lambda: scraped(["alpha", "beta", "gamma"]),
            "the account added by the reload to be discovered and scraped",
            timeout=DATA_TIMEOUT,
            servers=[exporter, server],
        )
        up = _query(server, 'chat_unread_up{account="gamma"}')
        assert [(s["metric"]["instance"], s["value"][1]) for s in up] == [("gamma", "0")]
    finally:
        server.stop()
        exporter.stop()
