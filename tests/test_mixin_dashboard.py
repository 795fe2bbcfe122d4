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
from typing import Any, cast, get_args

import yaml

from exporter.fetching.registry import PROVIDERS
from tests.support import DIALOG_METRICS, EXPORTER_JOB, ROOT, load_mapping, prometheus_tool

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
# Queue-group metrics carry the label variables and the queue dimension of their row.
GROUP_METRICS = {
    "chat_unread_group_messages",
    "chat_unread_group_mentions",
    "chat_unread_group_conversations",
    "chat_unread_group_oldest_unread_timestamp_seconds",
    "chat_unread_group_info",
}
# Per dialog, without values to add up.
DIALOG_INFO_METRICS = {"chat_unread_dialog_info", "chat_unread_groups_folded"}
# The dialog metrics whose values panels add up over dialogs.
SUMMED_METRICS = (
    "chat_unread_messages",
    "chat_unread_mentions",
    "chat_unread_invitations",
    "chat_unread_conversations",
)
UNLABELLED_METRICS = {
    "chat_unread_exporter_build_info",
    "chat_unread_exporter_config_last_reload_successful",
    "chat_unread_exporter_config_last_reload_success_timestamp_seconds",
}
SELECTOR_DIALOG = '{provider=~"$provider",account=~"$account",dialog=~"$dialog"}'
RULES = ROOT / "prometheus" / "rules" / "chat-unread.rules.yml"
SELECTOR_ACCOUNT = '{provider=~"$provider",account=~"$account"}'
SELECTOR_GROUP = (
    '{provider=~"$provider",account=~"$account",dialog=~"$dialog",group_by=~"$group_by"}'
)
# The selected dialogs that are part of another dialog (the first half of the honest total).
PARTS = f'chat_unread_dialog_info{SELECTOR_DIALOG[:-1]},part_of!=""}}'
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


def _promtool(*args: str, cwd: Path) -> str:
    """Run promtool in ``cwd``, assert exit 0 (showing its output otherwise), return stdout."""
    result = subprocess.run(
        [prometheus_tool("promtool"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    return result.stdout


def substitute_variables(expr: str, values: dict[str, str] | None = None) -> str:
    """A dashboard query as Prometheus would get it: each label variable's regex (Grafana
    sends a multi-value selection as ``a|b``) from ``values``, "All" (``.*``) otherwise."""
    for name in (*LABEL_VARIABLES, "group_by"):
        expr = expr.replace(f"${name}", (values or {}).get(name, ".*"))
    for name in INTERVAL_VARIABLES:
        expr = expr.replace(name, "1m")
    # "$1" is label_replace's reference to its regex group, not a variable.
    assert "$" not in expr.replace('"$1"', ""), f"unknown variable left in {expr}"
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
    assert list(variables) == ["datasource", *LABEL_VARIABLES, "group_by"]
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
    # The queue dimensions of the selected dialogs, from their group series.
    group_by = variables["group_by"]
    assert group_by["multi"] is True
    assert group_by["includeAll"] is True
    assert (
        group_by["query"]["query"]
        == group_by["definition"]
        == (
            'label_values({__name__=~"chat_unread_group_(messages|conversations)",'
            + SELECTOR_DIALOG[1:-1]
            + "}, group_by)"
        )
    )
    # Rows repeat over whatever dimensions the series carry; the description names them all:
    # every built-in provider's, and Zendesk's ``group`` (a provider of its own branch).
    named = re.search(r"\(([a-z, ]+)\)", group_by["description"])
    assert named
    dimensions = {"group"}
    for provider in PROVIDERS.values():
        dialog = get_args(provider.account_model.model_fields["dialogs"].annotation)[0]
        dimensions.update(getattr(dialog, "group_dimensions", ()))
    assert set(named.group(1).split(", ")) == dimensions


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
        "sum((chat_unread_messages",
        "sum by (provider, account) ((chat_unread_messages",
        "chat_unread_group_messages",
        "chat_unread_group_conversations",
        "chat_unread_group_oldest_unread_timestamp_seconds",
        'group="unassigned"',
        "group_left (name)",
        "chat_unread_groups_folded",
        "chat_unread_daily_request_budget",
        "chat_unread_daily_requests_spent",
        'sum(up{job="chat-unread-exporter"})',
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
            if metric in DIALOG_METRICS or metric in DIALOG_INFO_METRICS:
                # Further matchers may follow the variables' (part_of!="").
                assert selector == SELECTOR_DIALOG or (
                    selector.startswith(SELECTOR_DIALOG[:-1] + ",")
                    and not selector.startswith(SELECTOR_GROUP[:-1])
                ), expr
            elif metric in GROUP_METRICS:
                assert selector.startswith(SELECTOR_GROUP[:-1]), expr
            elif metric in ACCOUNT_METRICS:
                assert selector == SELECTOR_ACCOUNT, expr
            else:
                assert metric in UNLABELLED_METRICS, f"unknown metric {metric} in {expr}"
        records = RECORD_RE.findall(expr)
        for record, selector in records:
            assert record in _recorded(), f"{record} is not recorded by {RULES.name}: {expr}"
            expected = SELECTOR_GROUP if record.startswith("chat_unread:group") else SELECTOR_DIALOG
            assert selector == expected, expr
        if not metrics and not records:
            # Exporters, not probe targets: the job with one target per exporter.
            assert expr == f'sum(up{{job="{EXPORTER_JOB}"}})', expr


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
    output = _promtool("check", "rules", rule_file.name, cwd=tmp_path)
    assert f"SUCCESS: {len(rules)} rules found" in output, output


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


# --------------------------------------------------------------------------- honest totals


def _counted(metric: str, selector: str = SELECTOR_DIALOG) -> str:
    """The selected dialogs' series of ``metric`` without the parts of a whole that has a value
    among them: the only form in which the dashboard adds dialogs up."""
    return (
        f"({metric}{selector} unless on (provider, account, dialog) ({PARTS}"
        f" and on (provider, account, part_of) label_replace({metric}{SELECTOR_DIALOG},"
        ' "part_of", "$1", "dialog", "(.+)")))'
    )


AGGREGATION_RE = re.compile(r"\bsum(?: by \(([^)]*)\))? ?\(")


def test_adding_up_panels_count_each_item_once() -> None:
    """Every sum that drops `dialog` from a dialog value, or `group` from a group value, adds
    the selected dialogs up: it must leave out the parts whose whole is selected too."""
    checked = 0
    for expr in _exprs(_dashboard()):
        for match in AGGREGATION_RE.finditer(expr):
            labels = {label.strip() for label in (match.group(1) or "").split(",")}
            inner = expr[match.end() :]
            if "dialog" not in labels:
                for metric in SUMMED_METRICS:
                    if inner.startswith(f"({metric}{{"):
                        assert inner.startswith(_counted(metric)), expr
                        checked += 1
            if "group" not in labels and "chat_unread_group_" in inner.split(")")[0]:
                assert PARTS in expr, expr
                assert "label_replace(chat_unread_group_" in expr, expr
                checked += 1
    # The four headline stats, the backlog, the by-account series, the unassigned queues.
    assert checked >= 8, checked


# The world of the promtool check: overlapping dialogs as the exporter describes them.
# (provider, account, dialog, part_of, messages or None when the dialog fails)
WORLD: tuple[tuple[str, str, str, str, int | None], ...] = (
    ("quickblox", "qb-support", "all", "", 10),
    ("quickblox", "qb-support", "escalations", "all", 3),
    ("quickblox", "qb-support", "vip", "all", 2),
    ("matrix", "matrix-ops", "all", "", 7),
    ("matrix", "matrix-ops", "support", "all", 4),
    ("stream", "stream-app", "agent-42", "", 5),
    ("stream", "stream-app", "agent-42-messaging", "agent-42", 2),
    ("crisp", "acme-crisp", "backlog", "", 6),
    # a dialog of another account with the same names: part_of is per account
    ("imkit", "imkit-app", "all", "", 4),
    ("imkit", "imkit-app", "work", "all", 1),
    # the whole fails: its parts are all that is known, and they count
    ("sendbird", "sb-prod", "all", "", None),
    ("sendbird", "sb-prod", "agent-7", "all", 3),
    # split by team, the part the same way
    ("intercom", "ic-support", "inbox", "", 6),
    ("intercom", "ic-support", "vip", "inbox", 1),
)
# Queue groups: (account, dialog, group_by, group, messages). Never added to dialog totals.
GROUPS: tuple[tuple[str, str, str, str, int], ...] = (
    ("matrix-ops", "all", "room", "!a:x", 5),
    ("matrix-ops", "all", "room", "!b:x", 2),
    ("ic-support", "inbox", "team", "unassigned", 4),
    ("ic-support", "inbox", "team", "team-1", 2),
    ("ic-support", "vip", "team", "unassigned", 1),
)
# Variable selections (Grafana sends a multi-value selection as a|b).
SELECTIONS: tuple[dict[str, str], ...] = (
    {},
    {"dialog": "all"},
    {"dialog": "escalations|vip"},
    {"dialog": "all|escalations"},
    {"provider": "matrix|stream"},
    {"provider": "stream", "dialog": "agent-42-messaging"},
    {"account": "qb-support|imkit-app", "dialog": "vip|work|all"},
    {"account": "sb-prod"},
    {"dialog": "vip"},
    {"account": "ic-support", "dialog": "inbox|vip"},
)


def _selected(selection: dict[str, str]) -> list[tuple[str, str, str, str, int | None]]:
    return [
        row
        for row in WORLD
        if all(
            re.fullmatch(selection.get(name, ".*"), value)
            for name, value in zip(LABEL_VARIABLES, row[:3], strict=True)
        )
    ]


def _distinct(selection: dict[str, str]) -> dict[tuple[str, str], int]:
    """Unread messages per (provider, account), each counted once: a dialog counts unless its
    whole is selected and has a value."""
    rows = _selected(selection)
    valued = {(p, a, d) for p, a, d, _w, value in rows if value is not None}
    totals: dict[tuple[str, str], int] = {}
    for provider, account, _dialog, whole, value in rows:
        if value is None or (whole and (provider, account, whole) in valued):
            continue
        totals[(provider, account)] = totals.get((provider, account), 0) + value
    return totals


def _panel_expr(title: str) -> str:
    panels = {panel["title"]: panel for panel in _panels(_dashboard())}
    (target,) = panels[title]["targets"]
    return str(target["expr"])


def _world_series() -> list[dict[str, str]]:
    series: list[dict[str, str]] = []
    for provider, account, dialog, whole, value in WORLD:
        labels = f'provider="{provider}",account="{account}",dialog="{dialog}",job="x",instance="y"'
        up = "0" if value is None else "1"
        series.append({"series": f"chat_unread_up{{{labels}}}", "values": f"{up}x5"})
        series.append(
            {"series": f'chat_unread_dialog_info{{{labels},part_of="{whole}"}}', "values": "1x5"}
        )
        if value is not None:
            series.append({"series": f"chat_unread_messages{{{labels}}}", "values": f"{value}x5"})
    providers = {account: provider for provider, account, *_rest in WORLD}
    for account, dialog, group_by, group, value in GROUPS:
        labels = (
            f'provider="{providers[account]}",account="{account}",dialog="{dialog}",'
            f'group_by="{group_by}",group="{group}"'
        )
        series.append({"series": f"chat_unread_group_messages{{{labels}}}", "values": f"{value}x5"})
    return series


def _distinct_unassigned(selection: dict[str, str], group_by: str) -> int:
    """Unassigned messages of the selected dialogs split by ``group_by``, each counted once."""
    selected = {(a, d): whole for _p, a, d, whole, _v in _selected(selection)}
    split = {(a, d) for a, d, dim, _g, _v in GROUPS if dim == group_by and (a, d) in selected}
    return sum(
        value
        for account, dialog, dim, group, value in GROUPS
        if dim == group_by
        and group == "unassigned"
        and (account, dialog) in split
        and (account, selected[(account, dialog)]) not in split
    )


def test_totals_count_each_item_once(tmp_path: Path) -> None:
    """The headline and by-account queries, run by promtool with the variables substituted,
    equal the distinct count for every selection, with wholes and parts overlapping."""
    headline = _panel_expr("Unread messages")
    assert headline == _panel_expr("Unread backlog")
    by_account = _panel_expr("Unread messages by account")
    panels = {panel["title"]: panel for panel in _panels(_dashboard())}
    unassigned = panels["Unassigned: $group_by"]["targets"][0]["expr"]
    tests: list[dict[str, Any]] = []
    for selection in SELECTIONS:
        expected = _distinct_unassigned(selection, "team")
        tests.append(
            {
                "expr": substitute_variables(unassigned, {**selection, "group_by": "team"}),
                "eval_time": "2m",
                "exp_samples": [{"labels": "{}", "value": expected}] if expected else [],
            }
        )
        distinct = _distinct(selection)
        total = sum(distinct.values())
        tests.append(
            {
                "expr": substitute_variables(headline, selection),
                "eval_time": "2m",
                "exp_samples": [{"labels": "{}", "value": total}] if distinct else [],
            }
        )
        tests.append(
            {
                "expr": substitute_variables(by_account, selection),
                "eval_time": "2m",
                "exp_samples": [
                    {"labels": f'{{provider="{p}",account="{a}"}}', "value": value}
                    for (p, a), value in sorted(distinct.items())
                ],
            }
        )
    # The world has overlaps that a plain sum would count twice.
    assert sum(_distinct({}).values()) == 10 + 7 + 5 + 6 + 4 + 3 + 6
    assert _distinct_unassigned({}, "team") == 4
    assert _distinct_unassigned({"dialog": "vip"}, "team") == 1
    unit_test = {
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": _world_series(), "promql_expr_test": tests}],
    }
    test_file = tmp_path / "totals.yml"
    test_file.write_text(yaml.safe_dump(unit_test, sort_keys=False), encoding="utf-8")
    _promtool("test", "rules", test_file.name, cwd=tmp_path)


def test_a_row_of_queue_panels_per_dimension() -> None:
    """One row per value of `group_by`, its panels on that dimension's groups, named."""
    panels = _dashboard()["panels"]
    (start,) = [i for i, panel in enumerate(panels) if panel.get("repeat") == "group_by"]
    row = panels[start]
    assert row["type"] == "row"
    assert "$group_by" in row["title"]
    queue_panels = []
    for panel in panels[start + 1 :]:
        if panel["type"] == "row":
            break
        queue_panels.append(panel)
    titles = {panel["title"] for panel in queue_panels}
    assert {
        "Queues: $group_by",
        "Queue depth: $group_by",
        "Oldest waiting: $group_by",
        "Unassigned: $group_by",
    } <= titles
    for panel in queue_panels:
        for target in panel["targets"]:
            assert SELECTOR_GROUP in target["expr"], (panel["title"], target["expr"])
    # Names joined from chat_unread_group_info; a group without a name is still shown.
    table = next(panel for panel in queue_panels if panel["title"] == "Queues: $group_by")
    for target in table["targets"]:
        expr = target["expr"]
        assert "group_left (name)" in expr, expr
        assert f"chat_unread_group_info{SELECTOR_GROUP}" in expr, expr
        assert " or on (provider, account, dialog, group_by, group) " in expr, expr
    # The budget panel shows both sides.
    budget = next(
        panel for panel in _panels(_dashboard()) if panel["title"] == "Daily request budget"
    )
    exprs = " ".join(target["expr"] for target in budget["targets"])
    assert "chat_unread_daily_request_budget" in exprs
    assert "chat_unread_daily_requests_spent" in exprs
