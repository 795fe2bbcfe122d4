"""What Prometheus users expect of an exporter, named as node_exporter, blackbox_exporter,
Prometheus and the exporter-toolkit name it: the telemetry path, several listen addresses and
systemd sockets, build info and process metrics (and leaving them out), a route prefix and an
external URL behind a reverse proxy, ``/config`` with secrets redacted and ``/sd`` for HTTP
service discovery.

The endpoints are asked over HTTP, of the app as the exporter builds it or of the console
script in a subprocess on loopback; the providers are the simulators. Rotating TLS certificates
are tested with the web config (tests/test_webconfig.py), the real Prometheus discovering /sd
targets in tests/test_prometheus_e2e.py.
"""

from __future__ import annotations

import asyncio
import os
import platform
import resource
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import asdict
from pathlib import Path

import aiohttp
import pytest
import yaml

from exporter.rendering.buildinfo import BUILD, BuildInfo
from exporter.simulator import Simulator
from exporter.web.app import make_app
from exporter.web.configview import SECRET
from exporter.web.routes import WebRoutes, external_url
from exporter.web.webconfig import load_web_config
from tests.support import (
    EXE,
    IMKIT_TOKEN,
    ClientFactory,
    ExporterFactory,
    config_yaml,
    free_port,
    get_metrics,
    http_get,
    parse,
    value,
)
from tests.test_cli import run_cli
from tests.test_webconfig import PASSWORD, bcrypt_hash

ACCOUNTS = ["acme-crisp", "qb-support", "imkit-app", "sb-prod"]
PROVIDERS = {"acme-crisp": "crisp", "qb-support": "quickblox", "imkit-app": "imkit"}
PROVIDERS["sb-prod"] = "sendbird"


def secrets_of(sim: Simulator) -> list[str]:
    """Every credential in ``config_yaml(sim)``."""
    return [
        sim.crisp.identifier,
        sim.crisp.key,
        sim.quickblox.api_key,
        sim.imkit.client_key,
        IMKIT_TOKEN,
        sim.sendbird.api_token,
    ]


def names(samples: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> set[str]:
    return {name for name, _labels in samples}


# --------------------------------------------------------------------------------------------
# Telemetry path, build info, process metrics


async def test_telemetry_path_serves_every_account_there_and_only_there(
    sim: Simulator, exporter_for: ExporterFactory, aiohttp_client: ClientFactory
) -> None:
    exporter = await exporter_for(config_yaml(sim))
    client = await aiohttp_client(
        make_app(exporter, routes=WebRoutes(telemetry_path="/internal/telemetry"))
    )
    samples = await get_metrics(client, "/internal/telemetry")
    up = {dict(labels)["account"] for name, labels in samples if name == "chat_unread_up"}
    assert sorted(up) == sorted(ACCOUNTS)
    assert (await client.get("/metrics")).status == 404
    landing = await (await client.get("/")).text()
    assert '<a href="/internal/telemetry">' in landing


async def test_metrics_carry_build_info_and_process_metrics(
    sim: Simulator, exporter_for: ExporterFactory, aiohttp_client: ClientFactory
) -> None:
    client = await aiohttp_client(make_app(await exporter_for(config_yaml(sim))))
    for path in ("/metrics", "/exporter-metrics"):
        samples = await get_metrics(client, path)
        build = [dict(labels) for name, labels in samples if name.endswith("build_info")]
        assert build == [asdict(BUILD)]
        assert set(build[0]) == {"version", "revision", "branch", "pythonversion"}
        assert build[0]["pythonversion"] == platform.python_version()
        # prometheus_client's process collector reads this very process
        assert value(samples, "process_resident_memory_bytes")
        assert value(samples, "process_open_fds")
        soft_limit, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        assert value(samples, "process_max_fds") == float(soft_limit)
        assert "python_info" in names(samples)
        assert "python_gc_objects_collected_total" in names(samples)


async def test_disable_exporter_metrics_leaves_only_the_dialogs_on_metrics(
    sim: Simulator, exporter_for: ExporterFactory, aiohttp_client: ClientFactory
) -> None:
    exporter = await exporter_for(config_yaml(sim))
    client = await aiohttp_client(make_app(exporter, routes=WebRoutes(exporter_metrics=False)))
    served = names(await get_metrics(client, "/metrics"))
    assert "chat_unread_up" in served
    own = {n for n in served if n.startswith(("process_", "python_", "chat_unread_exporter_"))}
    assert own == set()
    assert "chat_unread_fetch_duration_seconds" not in served
    # /exporter-metrics is where they are asked for by name: still served there.
    kept = names(await get_metrics(client, "/exporter-metrics"))
    assert {"process_cpu_seconds_total", "chat_unread_exporter_build_info"} <= kept


def test_build_info_reads_the_stamped_revision_and_branch(tmp_path: Path) -> None:
    stamp = tmp_path / "BUILD_INFO"
    stamp.write_text("revision=4f1c2a9e\nbranch=release-1.2\n")
    stamped = BuildInfo.read(stamp)
    assert (stamped.revision, stamped.branch) == ("4f1c2a9e", "release-1.2")
    unstamped = BuildInfo.read(tmp_path / "absent")
    assert (unstamped.revision, unstamped.branch) == ("unknown", "unknown")


# --------------------------------------------------------------------------------------------
# Behind a reverse proxy


async def test_external_url_path_is_the_route_prefix_and_the_links_base(
    sim: Simulator, exporter_for: ExporterFactory, aiohttp_client: ClientFactory
) -> None:
    routes = WebRoutes(external_url=external_url("https://proxy.example/chat-unread/"))
    client = await aiohttp_client(make_app(await exporter_for(config_yaml(sim)), routes=routes))
    assert (await client.get("/metrics")).status == 404
    assert (await client.get("/chat-unread/-/healthy")).status == 200
    samples = await get_metrics(client, "/chat-unread/metrics")
    assert value(
        samples, "chat_unread_up", provider="crisp", account="acme-crisp", dialog="backlog"
    )
    page = await (await client.get("/chat-unread/")).text()
    for link in ("/chat-unread/metrics", "/chat-unread/-/ready", "/chat-unread/sd"):
        assert f'<a href="{link}">' in page
    assert 'href="/chat-unread/probe?account=acme-crisp"' in page


async def test_a_proxy_that_strips_the_prefix_gets_routes_at_the_root_and_links_under_it(
    sim: Simulator, exporter_for: ExporterFactory, aiohttp_client: ClientFactory
) -> None:
    routes = WebRoutes(external_url=external_url("http://proxy.example:8080/exp"), prefix="")
    client = await aiohttp_client(make_app(await exporter_for(config_yaml(sim)), routes=routes))
    assert (await client.get("/metrics")).status == 200
    page = await (await client.get("/")).text()
    assert '<a href="/exp/metrics">' in page
    assert 'href="/exp/probe?account=sb-prod"' in page


async def test_route_prefix_alone_moves_the_routes_and_the_links(
    sim: Simulator, exporter_for: ExporterFactory, aiohttp_client: ClientFactory
) -> None:
    client = await aiohttp_client(
        make_app(await exporter_for(config_yaml(sim)), routes=WebRoutes(prefix="/exporter"))
    )
    assert (await client.get("/exporter/probe?account=sb-prod")).status == 200
    assert (await client.get("/probe?account=sb-prod")).status == 404
    page = await (await client.get("/exporter/")).text()
    assert '<a href="/exporter/metrics">' in page
    redirect = await client.get("/exporter", allow_redirects=False)
    assert (redirect.status, redirect.headers["Location"]) == (302, "/exporter/")


# --------------------------------------------------------------------------------------------
# /config and /sd


async def test_config_shows_the_loaded_config_with_every_secret_redacted(
    sim: Simulator, exporter_for: ExporterFactory, aiohttp_client: ClientFactory
) -> None:
    client = await aiohttp_client(make_app(await exporter_for(config_yaml(sim))))
    response = await client.get("/config")
    assert response.status == 200
    assert response.content_type == "application/yaml"
    text = await response.text()
    for secret in secrets_of(sim):
        assert secret not in text
    loaded = yaml.safe_load(text)
    accounts = {account["name"]: account for account in loaded["accounts"]}
    assert list(accounts) == ACCOUNTS
    crisp = accounts["acme-crisp"]
    assert (crisp["identifier"], crisp["key"]) == (SECRET, SECRET)
    assert crisp["base_url"] == sim.crisp.url
    assert crisp["timeout"] == 5.0  # defaults are shown as loaded
    assert [d["name"] for d in crisp["dialogs"]] == ["backlog", "vip-visitor", "vip-operator"]
    assert accounts["qb-support"]["api_key"] == SECRET
    assert "token" not in accounts["qb-support"]  # unset options are left out
    assert (accounts["imkit-app"]["client_key"], accounts["imkit-app"]["token"]) == (SECRET,) * 2
    assert accounts["sb-prod"]["api_token"] == SECRET


async def test_sd_lists_each_account_as_a_probe_target_at_the_host_asked(
    sim: Simulator, exporter_for: ExporterFactory, aiohttp_client: ClientFactory
) -> None:
    client = await aiohttp_client(make_app(await exporter_for(config_yaml(sim))))
    response = await client.get("/sd", headers={"Host": "exporter.example:9866"})
    assert response.status == 200
    assert response.content_type == "application/json"
    groups = await response.json()
    assert groups == [
        {
            "targets": ["exporter.example:9866"],
            "labels": {
                "provider": PROVIDERS[account],
                "account": account,
                "__param_account": account,
                "__metrics_path__": "/probe",
                "__scheme__": "http",
            },
        }
        for account in ACCOUNTS
    ]
    # Each target is what Prometheus then scrapes: that account alone.
    for group in groups:
        labels = group["labels"]
        path = f"{labels['__metrics_path__']}?account={labels['__param_account']}"
        samples = await get_metrics(client, path)
        accounts = {dict(lab)["account"] for name, lab in samples if name == "chat_unread_up"}
        assert accounts == {labels["account"]}


async def test_sd_targets_follow_the_external_url(
    sim: Simulator, exporter_for: ExporterFactory, aiohttp_client: ClientFactory
) -> None:
    routes = WebRoutes(external_url=external_url("https://proxy.example:8443/chat/"))
    client = await aiohttp_client(make_app(await exporter_for(config_yaml(sim)), routes=routes))
    groups = await (await client.get("/chat/sd")).json()
    assert {target for group in groups for target in group["targets"]} == {"proxy.example:8443"}
    assert {group["labels"]["__metrics_path__"] for group in groups} == {"/chat/probe"}
    assert {group["labels"]["__scheme__"] for group in groups} == {"https"}


async def test_config_and_sd_need_the_same_credentials_as_metrics(
    sim: Simulator, exporter_for: ExporterFactory, aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    web_yml = tmp_path / "web.yml"
    web_yml.write_text(f"basic_auth_users:\n  alice: '{bcrypt_hash(PASSWORD)}'\n")
    app = make_app(await exporter_for(config_yaml(sim)), load_web_config(web_yml))
    client = await aiohttp_client(app)
    good = {"Authorization": aiohttp.encode_basic_auth("alice", PASSWORD)}
    bad = {"Authorization": aiohttp.encode_basic_auth("alice", "wrong")}
    for path in ("/metrics", "/config", "/sd"):
        assert (await client.get(path)).status == 401, path
        assert (await client.get(path, headers=bad)).status == 401, path
        assert (await client.get(path, headers=good)).status == 200, path


# --------------------------------------------------------------------------------------------
# Listening: the console script in a subprocess


def get_status(url: str) -> int:
    """GET with a fresh connection; the status (OSError when nothing answers)."""
    with urllib.request.urlopen(url, timeout=5) as response:
        return int(response.status)


async def wait_serving(process: asyncio.subprocess.Process, url: str, log: Path) -> None:
    """Poll ``url`` until it answers 200; fail with the output if the process exits."""
    deadline = asyncio.get_running_loop().time() + 10.0
    while True:
        if process.returncode is not None:
            output = await asyncio.to_thread(log.read_text)
            raise AssertionError(f"exporter exited {process.returncode}: {output}")
        try:
            if await asyncio.to_thread(get_status, url) == 200:
                return
        except OSError:
            pass
        if asyncio.get_running_loop().time() > deadline:
            output = await asyncio.to_thread(log.read_text)
            raise AssertionError(f"{url} never answered: {output}")
        await asyncio.sleep(0.05)


async def test_several_listen_addresses_serve_the_same_endpoints(tmp_path: Path) -> None:
    ports = [free_port(), free_port()]
    log = tmp_path / "exporter.log"
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            str(EXE),
            "--demo",
            *(f"--web.listen-address=127.0.0.1:{port}" for port in ports),
            "--web.telemetry-path=/telemetry",
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    try:
        for port in ports:
            await wait_serving(process, f"http://127.0.0.1:{port}/telemetry", log)
        for port in ports:
            assert f"address=127.0.0.1:{port}" in await asyncio.to_thread(log.read_text)
    finally:
        process.terminate()
        assert await asyncio.wait_for(process.wait(), 10) == 0


async def test_systemd_socket_serves_on_the_passed_descriptor(tmp_path: Path) -> None:
    """As systemd does: a bound, listening socket at fd 3, LISTEN_FDS=1 and LISTEN_PID set to
    the exporter's pid (that of the launcher that then execs it, so the pid is the same)."""
    activation = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    activation.bind(("127.0.0.1", 0))
    activation.listen()
    port = activation.getsockname()[1]
    unused = free_port()  # --web.listen-address is ignored under --web.systemd-socket
    fd = activation.fileno()
    launcher = (
        f"import os, sys; os.dup2({fd}, 3); os.close({fd}); "
        "os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1'); "
        "os.execv(sys.argv[1], sys.argv[1:])"
    )
    log = tmp_path / "exporter.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")}
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            launcher,
            str(EXE),
            "--demo",
            "--web.systemd-socket",
            f"--web.listen-address=127.0.0.1:{unused}",
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            pass_fds=(fd,),
            env=env,
        )
    activation.close()  # only the exporter holds it now
    try:
        await wait_serving(process, f"http://127.0.0.1:{port}/metrics", log)
        _status, body = await asyncio.to_thread(http_get, f"http://127.0.0.1:{port}/metrics")
        assert value(parse(body.decode()), "chat_unread_exporter_config_last_reload_successful")
        with pytest.raises(urllib.error.URLError, match="Connection refused"):
            get_status(f"http://127.0.0.1:{unused}/-/healthy")
        assert "systemd socket fd 3" in await asyncio.to_thread(log.read_text)
    finally:
        process.terminate()
        assert await asyncio.wait_for(process.wait(), 10) == 0


def test_systemd_socket_without_a_socket_says_so(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")}
    result = subprocess.run(
        [str(EXE), "--demo", "--web.systemd-socket"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 1
    assert "cannot start: --web.systemd-socket: no socket was passed" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("flag", "problem"),
    [
        ("--web.telemetry-path=/probe", "must start with '/'"),
        ("--web.telemetry-path=metrics", "must start with '/'"),
        ("--web.telemetry-path=/m?x=1", "bare path"),
        ("--web.external-url=proxy.example/chat", "must be an http(s) URL"),
        ("--web.route-prefix=/a b", "bare path"),
    ],
)
def test_bad_web_flags_are_refused_with_the_reason(flag: str, problem: str) -> None:
    result = run_cli(flag, "--config.check")
    assert result.returncode == 2, result
    assert problem in result.stderr
