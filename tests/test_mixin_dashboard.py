"""The Grafana side of the monitoring mixin: dashboard JSON and provisioning files.

Structural checks need nothing but the JSON. Every panel query is also parsed by promtool
(as a recording rule in a generated rule file, since promtool cannot parse a bare
expression); that test skips without promtool unless ``CHAT_UNREAD_REQUIRE_PROMETHEUS=1``.
Whether each query returns data is checked against a real Prometheus in
test_prometheus_e2e.py.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import yaml

from tests.support import DIALOG_METRICS, ROOT, load_mapping, prometheus_tool

GRAFANA_DIR = ROOT / "grafana"
DASHBOARD = GRAFANA_DIR / "dashboards" / "chat-unread.json"
DATASOURCE_PROVISIONING = GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVISIONING = GRAFANA_DIR / "provisioning" / "dashboards" / "chat-unread.yml"

DATASOURCE_REF = {"type": "prometheus", "uid": "${datasource}"}
LABEL_VARIABLES = ("provider", "account", "dialog")
# Which of the label variables each exporter metric carries (DIALOG_METRICS, from
# tests.support, carry all three).
ACCOUNT_METRICS = {
    "chat_unread_fetch_duration_seconds",
    "chat_unread_fetch_errors_total",
    "chat_unread_upstream_requests_total",
    "chat_unread_cache_hits_total",
    "chat_unread_cache_misses_total",
    "chat_unread_rate_limit_remaining",
    "chat_unread_rate_limit_reset_timestamp_seconds",
    "chat_unread_daily_request_budget",
    "chat_unread_daily_requests_spent",
}
UNLABELLED_METRICS = {
    "chat_unread_exporter_build_info",
    "chat_unread_exporter_config_last_reload_successful",
    "chat_unread_exporter_config_last_reload_success_timestamp_seconds",
}
SELECTOR_DIALOG = '{provider=~"$provider",account=~"$account",dialog=~"$dialog"}'
RULES = ROOT / "prometheus" / "rules" / "chat-unread.rules.yml"
SELECTOR_ACCOUNT = '{provider=~"$provider",account=~"$account"}'
METRIC_RE = re.compile(r"\b(chat_unread_[a-z_]+)\b(\{[^}]*\})?")
# Series recorded by the shipped rules (per dialog, like the metrics they come from).
RECORD_RE = re.compile(r"\b(chat_unread:[a-z_:]+)(\{[^}]*\})?")
# Grafana's interval variables, and what the parse check substitutes for them.
INTERVAL_VARIABLES = ("$__rate_interval", "$__interval", "$__range")


def _dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return cast(dict[str, Any], data)


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    """Every JSON object in the document, depth first."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item)


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # panels of collapsed rows
    return panels


def _exprs(dashboard: dict[str, Any]) -> list[str]:
    return [
        target["expr"]
        for panel in _panels(dashboard)
        for target in panel.get("targets", [])
        if "expr" in target
    ]


def _variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {variable["name"]: variable for variable in dashboard["templating"]["list"]}


def _recorded() -> set[str]:
    """Names of the series the shipped rules record."""
    return {
        rule["record"]
        for group in load_mapping(RULES)["groups"]
        for rule in group["rules"]
        if "record" in rule
    }


def _alert_expr(name: str) -> str:
    for group in load_mapping(RULES)["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == name:
                return str(rule["expr"])
    raise AssertionError(f"no alert {name} in {RULES.name}")


def substitute_variables(expr: str) -> str:
    """A dashboard query as Prometheus would get it with every variable on "All"."""
    for name in LABEL_VARIABLES:
        expr = expr.replace(f"${name}", ".*")
    for name in INTERVAL_VARIABLES:
        expr = expr.replace(name, "1m")
    assert "$" not in expr, f"unknown variable left in {expr}"
    return expr


def test_dashboard_is_import_ready() -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] == "chat-unread"
    assert dashboard["title"]
    assert dashboard["id"] is None
    assert 36 <= dashboard["schemaVersion"] <= 41
    (ds_input,) = dashboard["__inputs"]
    assert ds_input["name"] == "DS_PROMETHEUS"
    assert ds_input["type"] == "datasource"
    assert ds_input["pluginId"] == "prometheus"
    required = {(item["type"], item["id"]) for item in dashboard["__requires"]}
    used = {("panel", panel["type"]) for panel in _panels(dashboard) if panel["type"] != "row"}
    assert used <= required, used - required


def test_datasource_is_a_variable_and_no_uid_is_hard_coded() -> None:
    dashboard = _dashboard()
    variables = _variables(dashboard)
    datasource = variables["datasource"]
    assert datasource["type"] == "datasource"
    assert datasource["query"] == "prometheus"
    refs = 0
    for node in _walk(dashboard):
        if "datasource" in node:
            refs += 1
            ref = node["datasource"]
            assert ref in (DATASOURCE_REF, "${datasource}", "$datasource"), ref
    assert refs > 0
    # The only uid in the whole document besides the datasource references is the
    # dashboard's own.
    uids = [node["uid"] for node in _walk(dashboard) if "uid" in node]
    assert set(uids) == {"chat-unread", "${datasource}"}, uids
    # ${DS_PROMETHEUS} (replaced on import) appears only as the variable's initial value.
    text = json.dumps({**dashboard, "__inputs": []})
    assert text.count("${DS_PROMETHEUS}") == text.count('"${DS_PROMETHEUS}"') == 2


def test_label_variables() -> None:
    variables = _variables(_dashboard())
    assert list(variables) == ["datasource", *LABEL_VARIABLES]
    previous: list[str] = []
    for name in LABEL_VARIABLES:
        variable = variables[name]
        assert variable["type"] == "query"
        assert variable["multi"] is True
        assert variable["includeAll"] is True
        assert variable["allValue"] == ".*"
        assert variable["datasource"] == DATASOURCE_REF
        query = variable["query"]["query"]
        assert query == variable["definition"]
        match = re.fullmatch(r"label_values\(chat_unread_up(\{.*\})?, (\w+)\)", query)
        assert match, query
        assert match.group(2) == name
        # Each variable is narrowed by the ones before it.
        expected = ",".join(f'{prev}=~"${prev}"' for prev in previous)
        assert (match.group(1) or "{}") == "{" + expected + "}", query
        previous.append(name)


def test_panels_have_titles_ids_and_a_layout() -> None:
    panels = _panels(_dashboard())
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    occupied: set[tuple[int, int]] = set()
    for panel in panels:
        assert panel.get("title", "").strip(), f"panel {panel['id']} has no title"
        grid = panel["gridPos"]
        assert grid["x"] >= 0, panel["title"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & occupied, f"{panel['title']} overlaps another panel"
        occupied |= cells
        if panel["type"] != "row":
            assert panel.get("description", "").strip(), f"{panel['title']}: no description"
            assert panel.get("targets"), f"{panel['title']} has no query"
            ref_ids = [target["refId"] for target in panel["targets"]]
            assert len(ref_ids) == len(set(ref_ids)), panel["title"]


def test_the_issue_panels_are_there() -> None:
    exprs = "\n".join(_exprs(_dashboard()))
    for needle in (
        "sum(chat_unread_messages",
        "sum by (provider, account) (chat_unread_messages",
        "topk(",
        "chat_unread_mentions",
        "chat_unread_invitations",
        "chat_unread_conversations",
        "time() - (chat_unread_oldest_unread_timestamp_seconds",
        "chat_unread_up",
        "rate(chat_unread_fetch_errors_total",
        "chat_unread_fetch_duration_seconds",
        "time() - chat_unread_last_success_timestamp_seconds",
        "chat_unread_rate_limit_remaining",
        "time() - chat_unread:waiting_since_timestamp_seconds",
        "chat_unread:waiting_sla_seconds",
    ):
        assert needle in exprs, needle


def test_waiting_panels_show_the_clock_of_the_alert() -> None:
    """The waiting panels read the same clock and SLA as ChatUnreadWaitingTooLong."""
    panels = {panel["title"]: panel for panel in _panels(_dashboard())}
    alert = _alert_expr("ChatUnreadWaitingTooLong")
    assert "time() - chat_unread:waiting_since_timestamp_seconds" in alert
    assert "chat_unread:waiting_sla_seconds" in alert
    clock = f"time() - chat_unread:waiting_since_timestamp_seconds{SELECTOR_DIALOG}"
    sla = f"chat_unread:waiting_sla_seconds{SELECTOR_DIALOG}"
    table = panels["Waiting without a break"]
    assert table["type"] == "table"
    assert [target["expr"] for target in table["targets"]] == [
        f"max by (provider, account, dialog) ({clock})",
        f"max by (provider, account, dialog) ({sla})",
        f"max by (provider, account, dialog) ({clock}) / on (provider, account, dialog)"
        f" max by (provider, account, dialog) ({sla})",
    ]
    organize = table["transformations"][1]["options"]["renameByName"]
    assert [organize[f"Value #{ref}"] for ref in "ABC"] == ["Unread for", "SLA", "Of SLA"]
    (share,) = table["fieldConfig"]["overrides"]
    assert share["matcher"]["options"] == "Of SLA"
    properties = {prop["id"]: prop["value"] for prop in share["properties"]}
    assert properties["unit"] == "percentunit"
    # Red from the SLA on, whatever its value for the dialog.
    assert properties["thresholds"]["steps"][-1] == {"color": "red", "value": 1}
    (series,) = panels["Unread without a break"]["targets"]
    assert series["expr"] == f"max by (account, dialog) ({clock})"
    assert series["range"] is True


def test_every_selector_uses_the_variables() -> None:
    exprs = _exprs(_dashboard())
    assert exprs
    for expr in exprs:
        metrics = METRIC_RE.findall(expr)
        for metric, selector in metrics:
            if metric in DIALOG_METRICS:
                assert selector == SELECTOR_DIALOG, expr
            elif metric in ACCOUNT_METRICS:
                assert selector == SELECTOR_ACCOUNT, expr
            else:
                assert metric in UNLABELLED_METRICS, f"unknown metric {metric} in {expr}"
        records = RECORD_RE.findall(expr)
        for record, selector in records:
            assert record in _recorded(), f"{record} is not recorded by {RULES.name}: {expr}"
            assert selector == SELECTOR_DIALOG, expr
        if not metrics and not records:
            assert re.fullmatch(r'sum\(up\{job=~"[^"]+"\}\)', expr), expr


def test_instant_panels_query_instantly() -> None:
    for panel in _panels(_dashboard()):
        for target in panel.get("targets", []):
            if panel["type"] in ("table", "bargauge"):
                assert target["instant"] is True, panel["title"]
            if "topk(" in target.get("expr", ""):
                assert target["instant"] is True, panel["title"]


def test_every_query_parses(tmp_path: Path) -> None:
    exprs = _exprs(_dashboard())
    rules = [
        {"record": f"dashboard:query_{index}", "expr": substitute_variables(expr)}
        for index, expr in enumerate(exprs)
    ]
    rule_file = tmp_path / "dashboard-queries.rules.yml"
    rule_file.write_text(
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}), encoding="utf-8"
    )
    result = subprocess.run(
        [prometheus_tool("promtool"), "check", "rules", str(rule_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout, result.stdout


def test_datasource_provisioning() -> None:
    provisioning = load_mapping(DATASOURCE_PROVISIONING)
    assert provisioning["apiVersion"] == 1
    (datasource,) = provisioning["datasources"]
    assert datasource["type"] == "prometheus"
    assert datasource["uid"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    assert datasource["access"] == "proxy"


def test_dashboard_provisioning() -> None:
    provisioning = load_mapping(DASHBOARD_PROVISIONING)
    assert provisioning["apiVersion"] == 1
    (provider,) = provisioning["providers"]
    assert provider["type"] == "file"
    # deploy/compose mounts grafana/dashboards there.
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
