"""Providers as plugins: a separately installed package adds a provider; broken ones are named.

The example plugin in ``examples/provider-plugin`` is installed with pip into a fresh venv (its
dependencies, the exporter included, come from this test run's venv through a ``.pth`` file, so
nothing is downloaded) and the exporter running from that venv serves its dialogs next to the
built-in ones. A package whose entry points fail to import (raise ``SystemExit``, raise an
exception that cannot be printed, or hang), are not providers, speak another interface version
or try to take a built-in's name is reported at startup and by ``--config.check`` by name, and
the built-in providers keep working.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import sysconfig
import textwrap
from collections.abc import AsyncIterator
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from exporter.fetching.registry import ENTRY_POINT_GROUP, PLUGIN_IMPORT_TIMEOUT, discover
from exporter.simulator import Simulator
from tests.support import ROOT, config_yaml, dialog_values, free_port, http_status, value
from tests.test_cli import DEADLINE, eventually, serving, up_values

EXAMPLE = ROOT / "examples" / "provider-plugin"
TINCAN_KEY = "tincan-plugin-test-key"

BROKEN_PYPROJECT = f"""\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "chat-unread-broken-plugins"
version = "0.0.1"

[project.entry-points."{ENTRY_POINT_GROUP}"]
exploding = "broken_plugins.exploding:PROVIDER"
notaprovider = "broken_plugins:NOT_A_PROVIDER"
future = "broken_plugins:FUTURE"
crisp = "broken_plugins:STOLEN_CRISP"
exiting = "broken_plugins.exiting:PROVIDER"
unprintable = "broken_plugins.unprintable:PROVIDER"
hanging = "broken_plugins.hanging:PROVIDER"

[tool.setuptools]
packages = ["broken_plugins"]
"""
BROKEN_INIT = """\
from dataclasses import replace

from exporter.providers.crisp import PROVIDER as STOLEN_CRISP

NOT_A_PROVIDER = {"name": "notaprovider"}
FUTURE = replace(STOLEN_CRISP, name="future", api_version=99)
"""

BROKEN_MODULES = {
    "exploding": 'raise RuntimeError("this plugin is broken on purpose")\n',
    "exiting": "raise SystemExit(0)\n",  # before isolation: the exporter exited 0 at startup
    "unprintable": textwrap.dedent("""\
        class Unprintable(Exception):
            def __str__(self):
                raise RuntimeError("not even a message")
        raise Unprintable()
        """),
    "hanging": "import threading\nthreading.Event().wait()\n",
}
IMPORT_PROBLEMS = {
    "exploding": "importing it failed: RuntimeError: this plugin is broken on purpose",
    "exiting": "importing it failed: SystemExit: 0",
    "unprintable": "importing it failed: Unprintable: (a Unprintable that cannot be printed)",
    "hanging": f"importing it did not finish within {PLUGIN_IMPORT_TIMEOUT:g}s; it was abandoned",
}


def run(*command: str | Path) -> str:
    """Run a command to completion; its output, or a failure showing it."""
    result = subprocess.run(
        [str(part) for part in command], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def plugin_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The python of a fresh venv holding the example plugin and a package of broken ones."""
    root = tmp_path_factory.mktemp("plugins")
    broken = root / "broken"
    (broken / "broken_plugins").mkdir(parents=True)
    (broken / "pyproject.toml").write_text(BROKEN_PYPROJECT)
    (broken / "broken_plugins" / "__init__.py").write_text(BROKEN_INIT)
    for module, text in BROKEN_MODULES.items():
        (broken / "broken_plugins" / f"{module}.py").write_text(text)
    venv = root / "venv"
    run(sys.executable, "-m", "venv", venv)
    python = venv / "bin" / "python"
    where = "import sysconfig; print(sysconfig.get_path('purelib'))"
    site_packages = Path(run(python, "-c", where).strip())
    ours = sysconfig.get_path("purelib")
    (site_packages / "with_exporter.pth").write_text(f"import site; site.addsitedir({ours!r})\n")
    wheels = root / "wheels"
    offline = ("--quiet", "--no-deps", "--no-build-isolation", "--no-index")
    run(sys.executable, "-m", "pip", "wheel", *offline, f"--wheel-dir={wheels}", EXAMPLE, broken)
    run(python, "-m", "pip", "install", *offline, *sorted(wheels.glob("*.whl")))
    return python


def test_discovery_names_each_entry_point_it_leaves_out() -> None:
    found = [
        EntryPoint("sendbird", "exporter.providers.sendbird:PROVIDER", ENTRY_POINT_GROUP),
        EntryPoint("renamed", "exporter.providers.imkit:PROVIDER", ENTRY_POINT_GROUP),
        EntryPoint("absent", "exporter.providers.no_such_module:PROVIDER", ENTRY_POINT_GROUP),
        EntryPoint("config", "exporter.configuration.loading:ConfigError", ENTRY_POINT_GROUP),
    ]
    providers, failures = discover(found)
    assert list(providers) == ["sendbird"]
    problems = {failure.name: failure.problem for failure in failures}
    assert problems == {
        "absent": "importing it failed: ModuleNotFoundError: "
        "No module named 'exporter.providers.no_such_module'",
        "config": "the entry point is a type, not an exporter Provider",
        "renamed": "the entry point is named 'renamed' but the provider calls itself 'imkit'",
    }


def test_the_plugin_passes_its_own_tests(plugin_python: Path) -> None:
    output = run(plugin_python, "-m", "pytest", "-q", "-p", "no:cacheprovider", EXAMPLE / "tests")
    assert "5 passed" in output


@pytest.fixture
async def tincan_url(plugin_python: Path, tmp_path: Path) -> AsyncIterator[str]:
    """The example plugin's own simulator, run from the plugin's venv on a free port."""
    port = free_port()
    log = (tmp_path / "tincan.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        str(plugin_python),
        "-m",
        "chat_unread_tincan.simulator",
        f"--port={port}",
        f"--api-key={TINCAN_KEY}",
        stdout=log,
        stderr=log,
    )
    url = f"http://127.0.0.1:{port}"

    async def listening() -> bool | None:
        return True if await asyncio.to_thread(http_status, url + "/nowhere") == 404 else None

    try:
        await eventually(listening, "the Tincan simulator to listen")
        yield url
    finally:
        process.kill()
        await process.wait()
        log.close()


async def test_a_plugin_serves_next_to_the_built_in_providers(
    plugin_python: Path, tincan_url: str, sim: Simulator, tmp_path: Path
) -> None:
    tincan_account = textwrap.indent(
        textwrap.dedent(f"""\
            - name: help-tincan
              provider: tincan
              base_url: {tincan_url}
              api_key: {TINCAN_KEY}
              dialogs:
                - name: alice
                  agent_id: alice
                - name: bob
                  agent_id: bob
            """),
        "  ",
    )
    config = tmp_path / "config.yaml"
    config.write_text(config_yaml(sim) + tincan_account)
    command = (str(plugin_python), "-m", "exporter")
    startup = PLUGIN_IMPORT_TIMEOUT + DEADLINE  # the hanging plugin's import is waited for
    async with serving(
        tmp_path, f"--config.file={config}", command=command, startup=startup
    ) as exporter:
        samples = await exporter.metrics()
        _, stderr = exporter.output()
    assert dialog_values(samples, "chat_unread_messages", "tincan") == {"alice": 4, "bob": 0}
    labels = {"provider": "tincan", "account": "help-tincan", "dialog": "alice"}
    assert value(samples, "chat_unread_mentions", **labels) == 1
    assert value(samples, "chat_unread_conversations", **labels) == 2
    assert value(samples, "chat_unread_oldest_unread_timestamp_seconds", **labels) == 1.7e9
    up = up_values(samples)
    assert {provider for provider, _, _ in up} == {
        "crisp",
        "quickblox",
        "imkit",
        "sendbird",
        "tincan",
    }
    assert set(up.values()) == {1.0}, up
    for name in ("exploding", "notaprovider", "future", "crisp", *IMPORT_PROBLEMS):
        assert f"provider={name}" in stderr, stderr
    for problem in IMPORT_PROBLEMS.values():
        assert f'problem="{problem}"' in stderr, stderr
    assert "interface version 99" in stderr
    assert "that provider name is already taken" in stderr


def test_config_check_says_why_a_plugin_provider_is_missing(
    plugin_python: Path, tmp_path: Path
) -> None:
    config = tmp_path / "config.yaml"
    accounts = (
        f"  - name: x{n}\n    provider: {name}\n    dialogs:\n      - name: d\n"
        for n, name in enumerate(IMPORT_PROBLEMS)
    )
    config.write_text("accounts:\n" + "".join(accounts))
    result = subprocess.run(
        [str(plugin_python), "-m", "exporter", f"--config.file={config}", "--config.check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    for n, (name, problem) in enumerate(IMPORT_PROBLEMS.items()):
        assert (
            f"{config}:{3 + 4 * n}: accounts[{n}].provider: provider {name!r} is installed but "
            f"{problem}"
        ) in result.stderr
