"""The real exporter behind --web.config.file: TLS and basic auth on every endpoint.

Starts the console script in demo mode as a subprocess with a web config made in the test
(a throw-away CA from trustme, a bcrypt hash), and talks to it over HTTPS on loopback.
"""

from __future__ import annotations

import asyncio
import base64
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.support import EXE, accepts_connections, free_port, start_server, wait_for
from tests.test_webconfig import PKI, bcrypt_hash, pki

__all__ = ["pki"]  # the module-scoped CA fixture, shared with test_webconfig


@pytest.fixture
def secured_exporter(pki: PKI, tmp_path: Path) -> Iterator[str]:
    web_config = tmp_path / "web.yml"
    web_config.write_text(
        "tls_server_config:\n"
        f"  cert_file: {pki.dir / 'server.crt'}\n"
        f"  key_file: {pki.dir / 'server.key'}\n"
        "basic_auth_users:\n"
        f"  prometheus: '{bcrypt_hash('scrape-password')}'\n"
        "unauthenticated_paths: [/-/healthy]\n"
    )
    port = free_port()
    server = start_server(
        "exporter",
        [
            str(EXE),
            "--demo",
            f"--web.listen-address=127.0.0.1:{port}",
            "--web.config.file",
            str(web_config),
        ],
        port,
        tmp_path,
    )
    try:
        wait_for(lambda: accepts_connections(port), "the exporter to listen", servers=[server])
        yield f"https://127.0.0.1:{port}"
    finally:
        server.stop()


async def fetch(url: str, pki: PKI, auth: str = "", trust: bool = True) -> tuple[int, str]:
    """GET over TLS; ``auth`` is an Authorization header value ('' for none)."""
    context = pki.client_context(trust=trust)
    headers = {"Authorization": auth} if auth else {}
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, ssl=context, headers=headers) as resp,
    ):
        return resp.status, await resp.text()


async def test_tls_and_basic_auth_guard_every_endpoint(secured_exporter: str, pki: PKI) -> None:
    right = "Basic " + base64.b64encode(b"prometheus:scrape-password").decode()
    wrong = "Basic " + base64.b64encode(b"prometheus:guess").decode()

    status, body = await fetch(f"{secured_exporter}/metrics", pki, right)
    assert status == 200
    assert 'chat_unread_up{account="demo-crisp",dialog="backlog",provider="crisp"} 1.0' in body

    for path in ("/metrics", "/probe?account=demo-crisp", "/", "/-/ready", "/exporter-metrics"):
        assert (await fetch(secured_exporter + path, pki))[0] == 401
        assert (await fetch(secured_exporter + path, pki, wrong))[0] == 401
    assert (await fetch(f"{secured_exporter}/-/healthy", pki))[0] == 200

    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await fetch(f"{secured_exporter}/-/healthy", pki, trust=False)
    plain = secured_exporter.replace("https://", "http://")
    async with aiohttp.ClientSession() as session:
        with pytest.raises((aiohttp.ClientError, asyncio.TimeoutError)):
            async with session.get(f"{plain}/-/healthy", timeout=aiohttp.ClientTimeout(5)) as r:
                await r.read()


def test_a_broken_web_config_is_refused_at_start(tmp_path: Path) -> None:
    web_config = tmp_path / "web.yml"
    web_config.write_text("basic_auth_users:\n  prometheus: not-a-hash\n")
    result = subprocess.run(
        [str(EXE), "--demo", "--web.config.file", str(web_config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "basic_auth_users.prometheus" in result.stderr
    assert "not a bcrypt hash" in result.stderr
    assert "Traceback" not in result.stderr
