"""Simulated providers for the container smoke test (``deploy/container/smoke``).

Runs inside the image under test, with the image's own interpreter and packages, so that the
exporter container sharing its network namespace reaches the providers on loopback and nothing
leaves the machine. Starts every simulator with the demo's data and prints one JSON line: a
config for them in which each secret has moved to a ``<field>_file:`` under ``/run/secrets``
(the documented way of mounting secrets), and the secret files' contents, which the smoke
test writes and mounts. The accounts are renamed ``smoke-*`` so that the test can tell this
config's series from the built-in demo's. Serves until SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import signal
from typing import Any

import yaml

from exporter.fetching.registry import PROVIDERS
from exporter.simulator import Simulator

SECRETS_DIR = "/run/secrets"


def with_secret_files(config_yaml: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The config with every secret field replaced by ``<field>_file``, and the files' contents.

    The secret fields are each provider's own list (``secret_fields``), so a provider added to
    the demo is covered without touching this file.
    """
    config: dict[str, Any] = yaml.safe_load(config_yaml)
    secrets: dict[str, str] = {}
    for account in config["accounts"]:
        account["name"] = "smoke-" + account["name"].removeprefix("demo-")
        for field in PROVIDERS[account["provider"]].account_model.secret_fields:
            if field in account:
                file_name = f"{account['name']}_{field}"
                secrets[file_name] = str(account.pop(field))
                account[f"{field}_file"] = f"{SECRETS_DIR}/{file_name}"
    return config, secrets


async def serve() -> None:
    simulator = Simulator()
    simulator.populate_demo()
    await simulator.start()
    config, secrets = with_secret_files(simulator.demo_config_yaml())
    document = {"config": yaml.safe_dump(config, sort_keys=False), "secrets": secrets}
    print(json.dumps(document), flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await simulator.stop()


if __name__ == "__main__":
    asyncio.run(serve())
