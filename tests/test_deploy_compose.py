"""The compose stack in deploy/compose: exporter, Prometheus, Alertmanager and Grafana.

promtool and amtool check the Prometheus and Alertmanager configs, the exporter's own loader its
config; they skip with a reason when absent, unless CHAT_UNREAD_REQUIRE_PROMETHEUS=1 (CI).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.deploy_support import (
    COMPOSE_DIR,
    CONFIG_PATH,
    DOCKERFILE,
    ENV_REF,
    EXPORTER_PORT,
    PROMETHEUS_RULES,
    bind_mounts,
    check_exporter_config,
    compose,
    compose_service,
    interpolate,
    read_env_file,
    run,
)
from tests.support import ROOT, load_mapping, prometheus_tool

GRAFANA_PROVISIONING = ROOT / "grafana" / "provisioning"


def compose_mount_params() -> list[Any]:
    params = []
    for name, service in sorted(compose()["services"].items()):
        for source, target in bind_mounts(service):
            params.append(pytest.param(name, source, target, id=f"{name}:{source}"))
    return params


def materialize(service: Mapping[str, Any], root: Path) -> None:
    """Lay the service's bind mounts out under ``root`` as the container would see them."""
    for source, target in bind_mounts(service):
        origin = (COMPOSE_DIR / source).resolve()
        destination = root / target.lstrip("/")
        if origin.is_dir():
            shutil.copytree(origin, destination)
        else:
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(origin, destination)


def command_flag(service: Mapping[str, Any], flag: str) -> str:
    for arg in service.get("command", []):
        if str(arg).startswith(f"{flag}="):
            return str(arg).split("=", 1)[1]
    raise AssertionError(f"{flag} not in the service command")


def test_interpolate_follows_the_copied_spec() -> None:
    """The copy of Compose's interpolation (tests/deploy_support.py) on the spec's own cases."""
    env = {"SET": "value", "EMPTY": ""}
    assert interpolate("${SET}-${UNSET}", env) == "value-"
    assert interpolate("${EMPTY:-d} ${UNSET:-d} ${SET:-d}", env) == "d d value"
    assert interpolate("${EMPTY-d} ${UNSET-d}", env) == " d"
    assert interpolate("${EMPTY?e}", env) == ""
    for refused in ("${UNSET?e}", "${EMPTY:?e}", "$SET", "$$SET", "${UNSET:-${SET}}"):
        with pytest.raises(AssertionError):
            interpolate(refused, env)


def test_compose_services() -> None:
    services = compose()["services"]
    assert set(services) >= {"exporter", "prometheus", "alertmanager", "grafana"}

    build = services["exporter"]["build"]
    assert (COMPOSE_DIR / build["context"]).resolve() == ROOT
    assert (ROOT / build.get("dockerfile", "Dockerfile")).resolve() == DOCKERFILE

    for name, service in services.items():
        image = service.get("image", "")
        if "build" in service:
            continue
        tag = image.rpartition(":")[2]
        assert tag != "latest", f"{name}: pin {image}"
        assert re.search(r"\d+\.\d+\.\d+", tag), f"{name}: pin {image} to a full version"
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name}: {port} should bind to loopback"

    grafana_env = services["grafana"]["environment"]
    assert str(grafana_env["GF_AUTH_ANONYMOUS_ENABLED"]).lower() == "true"
    assert grafana_env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"


def test_compose_exporter_demo_by_default_and_one_file_switch() -> None:
    exporter = compose_service("exporter")
    demo = [interpolate(str(arg), {}) for arg in exporter["command"]]
    assert demo[0] == "--demo"

    env = read_env_file(COMPOSE_DIR / "env.example")
    real = [interpolate(str(arg), env) for arg in exporter["command"]]
    assert "--demo" not in real
    mounted = {target: source for source, target in bind_mounts(exporter)}
    assert real[0] == f"--config.file={CONFIG_PATH}"
    assert CONFIG_PATH in mounted
    assert (COMPOSE_DIR / ".gitignore").read_text(encoding="utf-8").split().count(".env") == 1

    # Every ${VAR} the mounted config needs is in env.example.
    config_text = (COMPOSE_DIR / mounted[CONFIG_PATH]).read_text(encoding="utf-8")
    missing = set(ENV_REF.findall(config_text)) - set(env)
    assert not missing, f"env.example lacks {sorted(missing)}"


@pytest.mark.parametrize(("service", "source", "target"), compose_mount_params())
def test_compose_mount_exists(service: str, source: str, target: str) -> None:
    path = (COMPOSE_DIR / source).resolve()
    assert path.exists(), f"{service} mounts {source} ({path}) at {target}, which does not exist"


def test_compose_config_yaml_validates(tmp_path: Path) -> None:
    env = read_env_file(COMPOSE_DIR / "env.example")
    args = [interpolate(str(a), env) for a in compose_service("exporter")["command"]]
    check_exporter_config((COMPOSE_DIR / "config.yaml").read_text(encoding="utf-8"), tmp_path, args)


def test_compose_prometheus_config(tmp_path: Path) -> None:
    promtool = prometheus_tool("promtool")
    service = compose_service("prometheus")
    materialize(service, tmp_path)
    config = tmp_path / command_flag(service, "--config.file").lstrip("/")
    result = run([promtool, "check", "config", str(config)])
    assert result.returncode == 0, result.stdout + result.stderr
    # The rule_files glob, resolved inside the container layout, loads the project's rules.
    for rules_file in PROMETHEUS_RULES:
        assert rules_file.name in result.stdout, result.stdout

    prometheus = load_mapping(config)
    services = set(compose()["services"])
    for job in prometheus["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host = target.rsplit(":", 1)[0]
                assert host in services | {"localhost"}, f"{job['job_name']}: {target}"
    targets = {
        t for j in prometheus["scrape_configs"] for s in j["static_configs"] for t in s["targets"]
    }
    assert f"exporter:{EXPORTER_PORT}" in targets


def test_compose_alertmanager_config(tmp_path: Path) -> None:
    amtool = prometheus_tool("amtool")
    service = compose_service("alertmanager")
    materialize(service, tmp_path)
    config = tmp_path / command_flag(service, "--config.file").lstrip("/")
    result = run([amtool, "check-config", str(config)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_grafana_provisioning_points_into_the_stack() -> None:
    datasource_files = sorted((GRAFANA_PROVISIONING / "datasources").glob("*.y*ml"))
    dashboard_files = sorted((GRAFANA_PROVISIONING / "dashboards").glob("*.y*ml"))
    if not datasource_files and not dashboard_files:
        pytest.skip("grafana/provisioning has no datasources or dashboards providers yet")
    mounts = {target: source for source, target in bind_mounts(compose_service("grafana"))}
    for path in datasource_files:
        for source in load_mapping(path).get("datasources", []):
            if source.get("type") == "prometheus":
                assert source["url"].rstrip("/") == "http://prometheus:9090", path.name
    for path in dashboard_files:
        for provider in load_mapping(path).get("providers", []):
            folder = provider["options"]["path"].rstrip("/")
            assert any(folder == t or folder.startswith(f"{t}/") for t in mounts), path.name
