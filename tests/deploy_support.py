"""Shared helpers of the deployment tests (tests/test_deploy_*.py): the artefacts' paths, how
each one is read, and the exporter-config check that the compose stack and the Kubernetes
ConfigMap share.

The Dockerfile is read by BuildKit's own parser (the `dockerfile` package wraps it) and the
build context is computed by the Docker SDK for Python (`docker`), so neither is re-implemented
here. The compose helpers keep a small copy of Compose's rules, each naming the spec it copies.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dockerfile
import pytest
import yaml
from docker.utils.build import PatternMatcher, exclude_paths

from exporter.configuration.loading import ConfigError, load_config
from tests.support import ROOT, load_mapping

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE_DIR = ROOT / "deploy" / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
K8S_DIR = ROOT / "deploy" / "kubernetes"
RULES_DIR = ROOT / "prometheus" / "rules"
RULES_FILE = RULES_DIR / "chat-unread.rules.yml"
THRESHOLDS_FILE = RULES_DIR / "chat-unread-thresholds.rules.yml"
# Rules file -> the PrometheusRule (metadata.name) generated from it by sync-rules.py.
PROMETHEUS_RULES = {
    RULES_FILE: "chat-unread-exporter",
    THRESHOLDS_FILE: "chat-unread-exporter-thresholds",
}

EXPORTER_PORT = 9866
CONFIG_PATH = "/etc/chat-unread-exporter/config.yaml"
PROVIDERS = {"crisp", "quickblox", "imkit", "sendbird"}
ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


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


# ---- Dockerfile: BuildKit's parser, the Docker SDK's .dockerignore matching ----------------


def dockerfile_stages() -> list[list[Any]]:
    """The Dockerfile's instructions (`dockerfile.Command`, cmd upper-cased) by build stage."""
    stages: list[list[Any]] = []
    for command in dockerfile.parse_file(str(DOCKERFILE)):
        command = command._replace(cmd=command.cmd.upper())
        if command.cmd == "FROM":
            stages.append([])
        assert stages, f"{command.cmd} before the first FROM"
        stages[-1].append(command)
    return stages


def dockerignore_patterns() -> list[str]:
    """The patterns as docker-py's APIClient.build reads .dockerignore (docker/api/build.py)."""
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def dockerignore_excludes(relative: str) -> bool:
    """Whether .dockerignore keeps ``relative`` out of the build context."""
    return bool(PatternMatcher(dockerignore_patterns()).matches(relative))


def build_context() -> set[str]:
    """Every path the Docker SDK would send as the build context of ROOT."""
    return set(exclude_paths(str(ROOT), dockerignore_patterns()))


# ---- compose ---------------------------------------------------------------------------------

# Compose's interpolation, the subset this stack uses, from the Compose Specification
# (github.com/compose-spec/compose-spec, 12-interpolation.md at commit 170098ba, 2026-06-23):
# ${VAR}, ${VAR:-default} (unset or empty), ${VAR-default} (unset), ${VAR:?err} (error if unset
# or empty) and ${VAR?err} (error if unset). Anything else with a `$` ($VAR, $$, nesting) is
# refused, so a compose file that outgrows this copy fails here instead of being misread.
_COMPOSE_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}$]*))?\}")


def interpolate(value: str, env: Mapping[str, str]) -> str:
    def substitute(match: re.Match[str]) -> str:
        name, operator, default = match.group(1), match.group(2), match.group(3) or ""
        if operator == ":-":
            return env.get(name) or default
        if operator == "-":
            return env.get(name, default)
        if operator in (":?", "?"):
            assert env.get(name) if operator == ":?" else name in env, f"{name}: {default}"
        return env.get(name, "")

    assert "$" not in _COMPOSE_VAR.sub("", value), f"{value!r}: interpolation beyond the copy"
    return _COMPOSE_VAR.sub(substitute, value)


def read_env_file(path: Path) -> dict[str, str]:
    """A compose .env file, the subset of the Compose Specification's "Env_file format"
    (compose-spec 05-services.md at commit 170098ba) this project uses: comments, blank lines
    and unquoted VAR=VAL. Quotes, inline comments and `$` in values are refused, not misread.
    """
    env: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f"{path.name}: {line!r} is not NAME=value"
            assert not re.search(r"""['"$]| #""", value), f"{path.name}: {line!r}"
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


# ---- kubernetes ------------------------------------------------------------------------------

CRD_GROUP = "monitoring.coreos.com"


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


def exporter_container() -> dict[str, Any]:
    containers = k8s_object("Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


# ---- the exporter's own config check -----------------------------------------------------------


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
