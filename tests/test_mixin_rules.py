"""The Prometheus side of the monitoring mixin: rule files, their unit tests, example configs.

promtool (Debian package ``prometheus``) runs ``check rules``, ``test rules`` and ``check
config``; without it those tests skip, unless ``CHAT_UNREAD_REQUIRE_PROMETHEUS=1`` (CI) makes
them fail. The structural checks below need only PyYAML.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.support import (
    EXPORTER_JOB,
    PROBE_JOB,
    ROOT,
    SELF_METRICS_PATH,
    load_mapping,
    prometheus_tool,
)

PROMETHEUS_DIR = ROOT / "prometheus"
RULES_DIR = PROMETHEUS_DIR / "rules"
MAIN_RULES = RULES_DIR / "chat-unread.rules.yml"
THRESHOLD_RULES = RULES_DIR / "chat-unread-thresholds.rules.yml"
RULE_FILES = sorted(RULES_DIR.glob("*.rules.yml"))
FIXTURE_RULE_FILES = sorted((RULES_DIR / "tests" / "fixtures").glob("*.yml"))
UNIT_TEST_FILES = sorted((RULES_DIR / "tests").glob("*.yml"))
CONFIG_FILES = sorted(PROMETHEUS_DIR.glob("*.yml"))
README = PROMETHEUS_DIR / "README.md"
SEVERITIES = {"critical", "warning", "info"}


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _run_promtool(*args: str, cwd: Path) -> str:
    """Run promtool and assert exit 0, showing its whole output otherwise."""
    result = subprocess.run(
        [prometheus_tool("promtool"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    assert result.returncode == 0, f"promtool {' '.join(args)} exited {result.returncode}\n{output}"
    return output


def _rules(path: Path) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = []
    for group in load_mapping(path)["groups"]:
        rules.extend(group.get("rules") or [])
    return rules


def _alerts() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for rule in _rules(MAIN_RULES) if "alert" in rule}


def _alert_rule_tests() -> list[tuple[Path, dict[str, Any]]]:
    cases: list[tuple[Path, dict[str, Any]]] = []
    for path in UNIT_TEST_FILES:
        for test in load_mapping(path).get("tests") or []:
            for case in test.get("alert_rule_test") or []:
                cases.append((path, case))
    return cases


# --------------------------------------------------------------------------- promtool


def test_mixin_files_exist() -> None:
    assert MAIN_RULES in RULE_FILES
    assert THRESHOLD_RULES in RULE_FILES
    assert UNIT_TEST_FILES, "no rule unit tests in prometheus/rules/tests/"
    names = {path.name for path in CONFIG_FILES}
    assert {"prometheus.yml", "prometheus-probe.yml"} <= names
    assert README.is_file()


@pytest.mark.parametrize(
    "rule_file", [*RULE_FILES, *FIXTURE_RULE_FILES], ids=lambda path: _rel(path)
)
def test_promtool_check_rules(rule_file: Path) -> None:
    output = _run_promtool("check", "rules", rule_file.name, cwd=rule_file.parent)
    assert "SUCCESS" in output, output


@pytest.mark.parametrize("test_file", UNIT_TEST_FILES, ids=lambda path: _rel(path))
def test_promtool_test_rules(test_file: Path) -> None:
    # rule_files in a unit test resolve relative to the test file's directory.
    output = _run_promtool("test", "rules", test_file.name, cwd=test_file.parent)
    assert "SUCCESS" in output, output


@pytest.mark.parametrize("config_file", CONFIG_FILES, ids=lambda path: _rel(path))
def test_promtool_check_config(config_file: Path) -> None:
    # Run from elsewhere: rule_files must resolve relative to the config file, not the cwd.
    output = _run_promtool("check", "config", str(config_file), cwd=ROOT / "tests")
    assert "is valid prometheus config file syntax" in output, output
    assert "FAILED" not in output, output


# --------------------------------------------------------------------------- rules


def test_every_alert_has_severity_summary_and_description() -> None:
    alerts = _alerts()
    assert alerts
    for name, rule in alerts.items():
        assert re.fullmatch(r"ChatUnread[A-Za-z]+", name), name
        assert rule.get("labels", {}).get("severity") in SEVERITIES, name
        annotations = rule.get("annotations", {})
        assert annotations.get("summary", "").strip(), f"{name}: no summary"
        assert "{{" in annotations.get("description", ""), f"{name}: description not templated"


def test_descriptions_name_the_alert_labels() -> None:
    """Where an alert carries account/dialog (per the unit tests), its texts name them."""
    alerts = _alerts()
    carried: dict[str, set[str]] = {name: set() for name in alerts}
    for _path, case in _alert_rule_tests():
        for expected in case.get("exp_alerts") or []:
            carried[case["alertname"]].update(expected.get("exp_labels", {}))
    for name, labels in carried.items():
        description = alerts[name]["annotations"]["description"]
        summary = alerts[name]["annotations"]["summary"]
        for label in ("account", "dialog"):
            if label in labels:
                assert f"$labels.{label}" in description, f"{name}: description lacks {label}"
                assert f"$labels.{label}" in summary, f"{name}: summary lacks {label}"
        if "account" not in labels:
            # Exporter-level alerts name the target instead, and what it affects.
            for label in labels & {"instance", "job"}:
                assert f"$labels.{label}" in description, f"{name}: description lacks {label}"
            assert "dialog" in description.lower(), f"{name}: affected dialogs not named"


def test_every_alert_is_unit_tested_firing_and_not_firing() -> None:
    fires: set[str] = set()
    quiet: set[str] = set()
    for _path, case in _alert_rule_tests():
        (fires if case.get("exp_alerts") else quiet).add(case["alertname"])
    alerts = set(_alerts())
    assert alerts - fires == set(), "alerts never tested firing"
    assert alerts - quiet == set(), "alerts never tested not firing"
    assert (fires | quiet) - alerts == set(), "unit tests name alerts that do not exist"


def test_firing_expectations_carry_the_rule_severity() -> None:
    alerts = _alerts()
    for path, case in _alert_rule_tests():
        for expected in case.get("exp_alerts") or []:
            severity = alerts[case["alertname"]]["labels"]["severity"]
            assert expected["exp_labels"]["severity"] == severity, (path.name, case)


def test_unit_tests_load_the_shipped_rules() -> None:
    for path in UNIT_TEST_FILES:
        rule_files = [
            (path.parent / name).resolve() for name in load_mapping(path).get("rule_files", [])
        ]
        assert MAIN_RULES in rule_files, f"{path.name} does not test {_rel(MAIN_RULES)}"


def test_thresholds_are_overridable_and_documented() -> None:
    """Every threshold the alerts use has an :override series, a default and documentation."""
    main = MAIN_RULES.read_text(encoding="utf-8")
    records = {rule["record"] for rule in _rules(MAIN_RULES) if "record" in rule}
    thresholds = {
        name for name in records if name.endswith("_threshold") or name.endswith("_sla_seconds")
    }
    assert "chat_unread:backlog_threshold" in thresholds
    overrides = {rule["record"] for rule in _rules(THRESHOLD_RULES)}
    readme = README.read_text(encoding="utf-8")
    header = THRESHOLD_RULES.read_text(encoding="utf-8")
    assert "chat_unread:group_waiting_sla_seconds" in thresholds
    for name in thresholds:
        # A queue group's threshold is its dialog's, overridden down to the group by the
        # dialog threshold's overrides with a `group` label.
        dialog_threshold = name.replace("chat_unread:group_", "chat_unread:")
        assert f"{dialog_threshold}:override" in main, f"{name} cannot be overridden"
        if dialog_threshold != name:
            assert f'{dialog_threshold}:override{{account!="", dialog!="", group!=""}}' in main
            assert f'{dialog_threshold}:override{{account!="", dialog!="", group=""}}' in main
        assert f"{dialog_threshold}:override" in overrides, f"{_rel(THRESHOLD_RULES)} lacks {name}"
        assert name in readme, f"{name} is not documented in {_rel(README)}"
        assert name in header, f"{name} is not documented in {_rel(THRESHOLD_RULES)}"
        assert any(name in str(rule.get("expr", "")) for rule in _alerts().values()), name
    # Only overrides live in the thresholds file.
    assert all(name.endswith(":override") for name in overrides), overrides


# --------------------------------------------------------------------------- configs


def _scrape_configs(path: Path) -> dict[str, dict[str, Any]]:
    return {job["job_name"]: job for job in load_mapping(path)["scrape_configs"]}


@pytest.mark.parametrize("config_file", CONFIG_FILES, ids=lambda path: _rel(path))
def test_configs_load_the_rules(config_file: Path) -> None:
    config = load_mapping(config_file)
    rule_files = {(config_file.parent / name).resolve() for name in config["rule_files"]}
    assert rule_files == {MAIN_RULES, THRESHOLD_RULES}
    jobs = _scrape_configs(config_file)
    # ChatUnreadExporterAbsent looks for this job.
    assert EXPORTER_JOB in jobs
    # Alone it scrapes everything; next to a probe job, which collects the dialogs, only the
    # self-metrics (/metrics would fetch every account again and store every dialog twice).
    expected = SELF_METRICS_PATH if PROBE_JOB in jobs else "/metrics"
    assert jobs[EXPORTER_JOB].get("metrics_path", "/metrics") == expected


def test_plain_config_scrapes_metrics() -> None:
    job = _scrape_configs(PROMETHEUS_DIR / "prometheus.yml")[EXPORTER_JOB]
    targets = [t for static in job["static_configs"] for t in static["targets"]]
    assert targets == ["chat-unread-exporter:9866"]


@pytest.mark.parametrize("name", ["prometheus-probe.yml", "prometheus-sharded.yml"])
def test_probe_configs_discover_the_accounts_from_the_exporter(name: str) -> None:
    job = _scrape_configs(PROMETHEUS_DIR / name)[PROBE_JOB]
    # /sd gives each target __metrics_path__=/probe and __param_account: nothing to rewrite
    # but the instance, and the target's provider/account must not rename the series' own.
    assert "metrics_path" not in job
    assert [urlsplit(sd["url"]).path for sd in job["http_sd_configs"]] == ["/sd"]
    assert [urlsplit(sd["url"]).port for sd in job["http_sd_configs"]] == [9866]
    assert job["honor_labels"] is True
    relabel = job["relabel_configs"]
    assert relabel[0] == {"source_labels": ["__param_account"], "target_label": "instance"}
    # The self-metrics job reads /exporter-metrics, which has no per-dialog series to drop and
    # makes no upstream fetch, so it needs no relabeling and no long interval.
    own = _scrape_configs(PROMETHEUS_DIR / name)[EXPORTER_JOB]
    assert own["metrics_path"] == SELF_METRICS_PATH
    assert not own.get("metric_relabel_configs"), own["metric_relabel_configs"]
    assert own.get("scrape_interval") in (None, "15s", "30s", "60s", "1m")


def test_sharded_config_uses_hashmod() -> None:
    job = _scrape_configs(PROMETHEUS_DIR / "prometheus-sharded.yml")[PROBE_JOB]
    actions = [rule.get("action", "replace") for rule in job["relabel_configs"]]
    assert actions.count("hashmod") == 2
    assert "keep" in actions
