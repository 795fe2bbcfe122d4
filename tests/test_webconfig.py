"""Tests for exporter/web/webconfig.py, tls.py and auth.py against real servers on 127.0.0.1.

Each test writes a web config file, loads it with ``load_web_config``, serves a tiny aiohttp app
with the resulting auth and headers and SSL context, and talks to it with ``aiohttp.ClientSession``;
nothing is mocked. Certificates come from a throw-away CA made with trustme.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import bcrypt
import pytest
import trustme
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from yarl import URL

from exporter.web.webconfig import WebConfig, WebConfigError, load_web_config

PASSWORD = "s3cret-Passw0rd"
REALM_HEADER = 'Basic realm="chat-unread-exporter"'


def bcrypt_hash(password: str, prefix: str = "$2b$") -> str:
    """A cheap (cost 4) bcrypt hash; ``prefix`` rewrites the variant, e.g. to htpasswd's $2y$."""
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    return prefix + hashed[4:]


@dataclass(frozen=True)
class PKI:
    """A test CA with a server certificate for 127.0.0.1 and a client certificate."""

    ca: trustme.CA
    client: trustme.LeafCert
    dir: Path

    def client_context(
        self,
        *,
        trust: bool = True,
        client_cert: bool = False,
        max_tls: ssl.TLSVersion | None = None,
    ) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        if trust:
            self.ca.configure_trust(ctx)
        if client_cert:
            self.client.configure_cert(ctx)
        if max_tls is not None:
            ctx.maximum_version = max_tls
        return ctx


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    directory = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1")
    (directory / "server.crt").write_bytes(b"".join(b.bytes() for b in server.cert_chain_pems))
    server.private_key_pem.write_to_path(str(directory / "server.key"))
    ca.cert_pem.write_to_path(str(directory / "ca.crt"))
    other = trustme.CA().issue_cert("127.0.0.1")
    other.private_key_pem.write_to_path(str(directory / "other.key"))
    key = serialization.load_pem_private_key(server.private_key_pem.bytes(), password=None)
    (directory / "encrypted.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    (directory / "junk.pem").write_text("not a certificate\n")
    return PKI(ca=ca, client=ca.issue_cert("client.example.org"), dir=directory)


def write_config(directory: Path, text: str, name: str = "web.yml") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


def tls_config(pki: PKI, extra: str = "") -> str:
    return (
        "tls_server_config:\n"
        f"  cert_file: {pki.dir / 'server.crt'}\n"
        f"  key_file: {pki.dir / 'server.key'}\n" + textwrap.indent(textwrap.dedent(extra), "  ")
    )


@asynccontextmanager
async def serve(config: WebConfig) -> AsyncIterator[URL]:
    """Serve /metrics and /-/healthy behind ``config`` on an ephemeral loopback port."""

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text="chat_unread_up 1\n")

    async def healthy(_: web.Request) -> web.Response:
        return web.Response(text="Healthy\n")

    app = web.Application()
    config.install(app)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/-/healthy", healthy)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=config.ssl_context())
    await site.start()
    try:
        port = runner.addresses[0][1]
        scheme = "https" if config.tls_enabled else "http"
        yield URL.build(scheme=scheme, host="127.0.0.1", port=port)
    finally:
        await runner.cleanup()


async def get(
    url: URL,
    *,
    auth: tuple[str, str] | None = None,
    headers: dict[str, str] | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> tuple[int, dict[str, str], str]:
    """(status, headers, body) of one GET with a fresh session (no pooled TLS connection)."""
    request_headers = dict(headers or {})
    if auth is not None:
        request_headers["Authorization"] = aiohttp.encode_basic_auth(*auth)
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, headers=request_headers, ssl=ssl_context or True) as response,
    ):
        return response.status, dict(response.headers), await response.text()


# --------------------------------------------------------------------------------------------
# TLS


async def test_tls_serves_a_client_that_trusts_the_ca(pki: PKI, tmp_path: Path) -> None:
    config = load_web_config(write_config(tmp_path, tls_config(pki)))
    async with serve(config) as base:
        assert base.scheme == "https"
        status, _, body = await get(base / "metrics", ssl_context=pki.client_context())
        assert (status, body) == (200, "chat_unread_up 1\n")
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await get(base / "metrics", ssl_context=pki.client_context(trust=False))


async def test_min_version_tls13_refuses_a_tls12_only_client(pki: PKI, tmp_path: Path) -> None:
    config = load_web_config(write_config(tmp_path, tls_config(pki, "min_version: TLS13\n")))
    assert config.tls_server_config is not None
    assert config.tls_server_config.min_version == ssl.TLSVersion.TLSv1_3
    async with serve(config) as base:
        status, _, _ = await get(base / "metrics", ssl_context=pki.client_context())
        assert status == 200
        tls12_only = pki.client_context(max_tls=ssl.TLSVersion.TLSv1_2)
        with pytest.raises(aiohttp.ClientConnectorError):
            await get(base / "metrics", ssl_context=tls12_only)


async def test_default_min_version_accepts_a_tls12_client(pki: PKI, tmp_path: Path) -> None:
    config = load_web_config(write_config(tmp_path, tls_config(pki)))
    async with serve(config) as base:
        tls12_only = pki.client_context(max_tls=ssl.TLSVersion.TLSv1_2)
        status, _, _ = await get(base / "metrics", ssl_context=tls12_only)
        assert status == 200


async def test_mtls_requires_a_client_certificate_from_the_ca(pki: PKI, tmp_path: Path) -> None:
    extra = f"client_auth_type: RequireAndVerifyClientCert\nclient_ca_file: {pki.dir / 'ca.crt'}\n"
    config = load_web_config(write_config(tmp_path, tls_config(pki, extra)))
    async with serve(config) as base:
        # Over TLS 1.3 the server refuses after the client considers the handshake done, so the
        # failure surfaces as a connection or read error rather than a handshake error.
        with pytest.raises(aiohttp.ClientError):
            await get(base / "metrics", ssl_context=pki.client_context())
        status, _, _ = await get(base / "metrics", ssl_context=pki.client_context(client_cert=True))
        assert status == 200


async def test_mtls_refuses_a_certificate_from_another_ca(pki: PKI, tmp_path: Path) -> None:
    extra = f"client_auth_type: RequireAndVerifyClientCert\nclient_ca_file: {pki.dir / 'ca.crt'}\n"
    config = load_web_config(write_config(tmp_path, tls_config(pki, extra)))
    stranger = trustme.CA().issue_cert("client.example.org")
    ctx = pki.client_context()
    stranger.configure_cert(ctx)
    async with serve(config) as base:
        with pytest.raises(aiohttp.ClientError):
            await get(base / "metrics", ssl_context=ctx)


async def test_verify_client_cert_if_given_admits_clients_without_one(
    pki: PKI, tmp_path: Path
) -> None:
    extra = f"client_auth_type: VerifyClientCertIfGiven\nclient_ca_file: {pki.dir / 'ca.crt'}\n"
    config = load_web_config(write_config(tmp_path, tls_config(pki, extra)))
    async with serve(config) as base:
        for ctx in (pki.client_context(), pki.client_context(client_cert=True)):
            status, _, _ = await get(base / "metrics", ssl_context=ctx)
            assert status == 200


async def test_relative_paths_are_relative_to_the_config_file(
    pki: PKI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("server.crt", "server.key"):
        (tmp_path / name).write_bytes((pki.dir / name).read_bytes())
    path = write_config(
        tmp_path, "tls_server_config: {cert_file: server.crt, key_file: server.key}"
    )
    monkeypatch.chdir(pki.dir.parent)  # somewhere else entirely
    config = load_web_config(path)
    assert config.tls_server_config is not None
    assert config.tls_server_config.cert_file == tmp_path / "server.crt"
    async with serve(config) as base:
        status, _, _ = await get(base / "metrics", ssl_context=pki.client_context())
        assert status == 200


# --------------------------------------------------------------------------------------------
# Basic auth


def auth_config(directory: Path, extra: str = "", prefix: str = "$2b$") -> WebConfig:
    text = f"basic_auth_users:\n  alice: {bcrypt_hash(PASSWORD, prefix)}\n{extra}"
    return load_web_config(write_config(directory, text))


async def test_basic_auth(tmp_path: Path) -> None:
    config = auth_config(tmp_path)
    async with serve(config) as base:
        status, headers, _ = await get(base / "metrics")
        assert status == 401
        assert headers["WWW-Authenticate"] == REALM_HEADER

        status, headers, _ = await get(base / "metrics", auth=("alice", "wrong"))
        assert (status, headers["WWW-Authenticate"]) == (401, REALM_HEADER)
        assert config.bcrypt_checks == 1

        # An unknown user still costs a bcrypt check (no user enumeration by timing).
        status, _, _ = await get(base / "metrics", auth=("mallory", PASSWORD))
        assert status == 401
        assert config.bcrypt_checks == 2
        assert config.verified_cache_size == 0  # failures are never cached

        status, _, body = await get(base / "metrics", auth=("alice", PASSWORD))
        assert (status, body) == (200, "chat_unread_up 1\n")
        assert (config.bcrypt_checks, config.verified_cache_size) == (3, 1)

        # The second correct request is answered from the cache: no new bcrypt check.
        status, _, _ = await get(base / "metrics", auth=("alice", PASSWORD))
        assert status == 200
        assert (config.bcrypt_checks, config.verified_cache_size) == (3, 1)

        # A cached success does not let a different password in.
        status, _, _ = await get(base / "metrics", auth=("alice", PASSWORD + "x"))
        assert status == 401
        assert config.bcrypt_checks == 4


@pytest.mark.parametrize("prefix", ["$2a$", "$2b$", "$2y$"])
async def test_every_bcrypt_variant_is_accepted(tmp_path: Path, prefix: str) -> None:
    config = auth_config(tmp_path, prefix=prefix)
    async with serve(config) as base:
        status, _, _ = await get(base / "metrics", auth=("alice", PASSWORD))
        assert status == 200


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer abc",
        "Basic",
        "Basic !!!not-base64!!!",
        "Basic " + base64.b64encode(b"no-colon").decode(),
        "Basic " + base64.b64encode(b"alice:\xff\xfe").decode(),
        "Basic " + base64.b64encode(b"alice:" + b"x" * 100).decode(),
    ],
)
async def test_malformed_credentials_are_a_401(tmp_path: Path, authorization: str) -> None:
    config = auth_config(tmp_path)
    async with serve(config) as base:
        status, headers, _ = await get(base / "metrics", headers={"Authorization": authorization})
        assert (status, headers["WWW-Authenticate"]) == (401, REALM_HEADER)


async def test_concurrent_requests_share_one_bcrypt_check(tmp_path: Path) -> None:
    config = auth_config(tmp_path)
    async with serve(config) as base:
        results = await asyncio.gather(
            *(get(base / "metrics", auth=("alice", PASSWORD)) for _ in range(5))
        )
        assert [status for status, _, _ in results] == [200] * 5
        assert config.bcrypt_checks == 1


async def test_bcrypt_does_not_block_the_event_loop(tmp_path: Path) -> None:
    # A costlier hash (about 0.2 s) so that the check is still running while /-/healthy is
    # served. Were bcrypt run on the event loop, bcrypt_checks could only be observed as 1 after
    # the check had finished and cached its success.
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=12)).decode()
    text = f"basic_auth_users: {{alice: '{hashed}'}}\nunauthenticated_paths: [/-/healthy]\n"
    config = load_web_config(write_config(tmp_path, text))
    async with serve(config) as base:
        scrape = asyncio.create_task(get(base / "metrics", auth=("alice", PASSWORD)))
        for _ in range(5000):  # until the server has started the check (bounded: no hang)
            if config.bcrypt_checks:
                break
            await asyncio.sleep(0.001)
        assert config.bcrypt_checks == 1
        status, _, _ = await get(base / "-/healthy")
        assert status == 200
        assert config.verified_cache_size == 0, "bcrypt finished before /-/healthy was served"
        assert (await scrape)[0] == 200
        assert config.verified_cache_size == 1


async def test_healthy_needs_auth_unless_listed(tmp_path: Path) -> None:
    closed = auth_config(tmp_path)
    async with serve(closed) as base:
        status, _, _ = await get(base / "-/healthy")
        assert status == 401

    opened = auth_config(tmp_path, 'unauthenticated_paths: ["/-/healthy"]\n')
    async with serve(opened) as base:
        status, _, body = await get(base / "-/healthy")
        assert (status, body) == (200, "Healthy\n")
        status, _, _ = await get(base / "metrics")
        assert status == 401
        # Another spelling that the router would not send to /-/healthy is not exempt.
        status, _, _ = await get(base.join(URL("/-%2Fhealthy", encoded=True)))
        assert status == 401
    assert opened.bcrypt_checks == 0


async def test_no_users_means_no_auth(tmp_path: Path) -> None:
    config = load_web_config(write_config(tmp_path, "basic_auth_users: {}\n"))
    assert not config.auth_enabled
    async with serve(config) as base:
        status, _, _ = await get(base / "metrics")
        assert status == 200


async def test_basic_auth_over_mtls(pki: PKI, tmp_path: Path) -> None:
    extra = f"client_auth_type: RequireAndVerifyClientCert\nclient_ca_file: {pki.dir / 'ca.crt'}\n"
    text = tls_config(pki, extra) + f"basic_auth_users:\n  alice: {bcrypt_hash(PASSWORD)}\n"
    config = load_web_config(write_config(tmp_path, text))
    ctx = pki.client_context(client_cert=True)
    async with serve(config) as base:
        status, _, _ = await get(base / "metrics", ssl_context=ctx)
        assert status == 401
        status, _, _ = await get(base / "metrics", auth=("alice", PASSWORD), ssl_context=ctx)
        assert status == 200


# --------------------------------------------------------------------------------------------
# Headers


async def test_configured_headers_are_on_every_response(tmp_path: Path) -> None:
    text = f"""\
        http_server_config:
          http2: false
          headers:
            X-Frame-Options: deny
            X-Content-Type-Options: nosniff
            Content-Security-Policy: ""
        basic_auth_users:
          alice: {bcrypt_hash(PASSWORD)}
        """
    config = load_web_config(write_config(tmp_path, text))
    async with serve(config) as base:
        for path, auth, expected in [
            ("metrics", ("alice", PASSWORD), 200),
            ("metrics", None, 401),
            ("nowhere", ("alice", PASSWORD), 404),
        ]:
            status, headers, _ = await get(base / path, auth=auth)
            assert status == expected
            assert headers["X-Frame-Options"] == "deny"
            assert headers["X-Content-Type-Options"] == "nosniff"
            assert "Content-Security-Policy" not in headers  # blank means unset


# --------------------------------------------------------------------------------------------
# Loading and refusals


def test_no_file_and_empty_file_mean_plain_http(tmp_path: Path) -> None:
    for config in (WebConfig(), load_web_config(write_config(tmp_path, ""))):
        assert config.ssl_context() is None
        assert not config.tls_enabled
        assert not config.auth_enabled


def test_an_empty_tls_section_means_no_tls(tmp_path: Path) -> None:
    config = load_web_config(write_config(tmp_path, "tls_server_config: {}\n"))
    assert config.tls_server_config is None


def test_repr_and_describe_never_show_hashes(tmp_path: Path) -> None:
    hashed = bcrypt_hash(PASSWORD)
    config = load_web_config(write_config(tmp_path, f"basic_auth_users:\n  alice: {hashed}\n"))
    assert hashed not in repr(config)
    assert hashed not in config.describe()
    assert config.describe() == "tls=off basic_auth_users=1"


def refusal(directory: Path, text: str) -> str:
    path = write_config(directory, text)
    with pytest.raises(WebConfigError) as caught:
        load_web_config(path)
    message = str(caught.value)
    assert message.startswith(f"web config {path}"), message
    return message


def test_unknown_keys_are_refused(tmp_path: Path) -> None:
    message = refusal(tmp_path, "basic_auth_user:\n  alice: x\n")
    assert message.endswith(": basic_auth_user: unknown field")
    message = refusal(tmp_path, "tls_server_config:\n  cert_fil: a.crt\n")
    assert message.endswith(": tls_server_config.cert_fil: unknown field")
    message = refusal(tmp_path, "http_server_config:\n  header: {}\n")
    assert message.endswith(": http_server_config.header: unknown field")


def test_toolkit_options_we_lack_are_refused_by_name(tmp_path: Path) -> None:
    message = refusal(tmp_path, "tls_server_config:\n  cipher_suites: [TLS_AES_128_GCM_SHA256]\n")
    assert "tls_server_config.cipher_suites: exporter-toolkit option not supported" in message
    message = refusal(tmp_path, "rate_limit: {interval: 1s, burst: 5}\n")
    assert ": rate_limit: exporter-toolkit option not supported" in message


def test_missing_cert_file_is_refused(pki: PKI, tmp_path: Path) -> None:
    message = refusal(tmp_path, "tls_server_config: {cert_file: nope.crt, key_file: nope.key}\n")
    assert message.endswith(f": tls_server_config.cert_file: file not found: {tmp_path}/nope.crt")
    text = f"tls_server_config: {{cert_file: {pki.dir / 'server.crt'}}}\n"
    message = refusal(tmp_path, text)
    assert message.endswith(": tls_server_config.key_file: required when TLS is configured")


def test_unusable_cert_and_key_files_are_refused(pki: PKI, tmp_path: Path) -> None:
    cert, key, junk = pki.dir / "server.crt", pki.dir / "server.key", pki.dir / "junk.pem"
    message = refusal(tmp_path, f"tls_server_config: {{cert_file: {junk}, key_file: {key}}}\n")
    assert message.endswith(f": tls_server_config.cert_file: no PEM certificate found in {junk}")
    message = refusal(tmp_path, f"tls_server_config: {{cert_file: {cert}, key_file: {junk}}}\n")
    assert message.endswith(
        f": tls_server_config.key_file: no usable PEM private key found in {junk}"
    )
    other = pki.dir / "other.key"
    message = refusal(tmp_path, f"tls_server_config: {{cert_file: {cert}, key_file: {other}}}\n")
    assert f": tls_server_config.key_file: private key {other} does not match" in message
    encrypted = pki.dir / "encrypted.key"
    text = f"tls_server_config: {{cert_file: {cert}, key_file: {encrypted}}}\n"
    message = refusal(tmp_path, text)
    assert ": tls_server_config.key_file: encrypted private keys are not supported" in message


def test_non_bcrypt_hash_is_refused_without_echoing_it(tmp_path: Path) -> None:
    message = refusal(tmp_path, "basic_auth_users:\n  alice: hunter2-plaintext\n")
    assert ": basic_auth_users.alice: not a bcrypt hash" in message
    assert "hunter2" not in message
    hashed = bcrypt_hash(PASSWORD)
    md5ish = "$1$" + hashed[4:]
    message = refusal(tmp_path, f"basic_auth_users:\n  bob: '{md5ish}'\n")
    assert ": basic_auth_users.bob: not a bcrypt hash" in message
    assert hashed[7:] not in message


def test_bad_client_auth_type_is_refused(pki: PKI, tmp_path: Path) -> None:
    message = refusal(tmp_path, tls_config(pki, "client_auth_type: Sometimes\n"))
    assert ": tls_server_config.client_auth_type: must be one of NoClientCert," in message
    assert "Sometimes" not in message
    assert "RequireAndVerifyClientCert" in message


def test_client_auth_and_ca_must_agree(pki: PKI, tmp_path: Path) -> None:
    message = refusal(tmp_path, tls_config(pki, f"client_ca_file: {pki.dir / 'ca.crt'}\n"))
    assert ": tls_server_config.client_ca_file: set but client_auth_type is NoClientCert" in message
    message = refusal(tmp_path, tls_config(pki, "client_auth_type: RequireAndVerifyClientCert\n"))
    assert message.endswith(
        ": tls_server_config.client_ca_file: required by client_auth_type "
        "RequireAndVerifyClientCert"
    )
    message = refusal(tmp_path, tls_config(pki, "client_auth_type: RequireAnyClientCert\n"))
    assert "cannot accept a client certificate without verifying it" in message
    extra = "client_auth_type: RequireAndVerifyClientCert\nclient_ca_file: missing-ca.crt\n"
    message = refusal(tmp_path, tls_config(pki, extra))
    assert message.endswith(
        f": tls_server_config.client_ca_file: file not found: {tmp_path}/missing-ca.crt"
    )


def test_bad_tls_versions_are_refused(pki: PKI, tmp_path: Path) -> None:
    message = refusal(tmp_path, tls_config(pki, "min_version: TLS1.2\n"))
    assert message.endswith(
        ": tls_server_config.min_version: must be one of TLS10, TLS11, TLS12, TLS13"
    )
    message = refusal(tmp_path, tls_config(pki, "min_version: TLS13\nmax_version: TLS12\n"))
    assert message.endswith(": tls_server_config.min_version: TLS13 is above max_version TLS12")


def test_header_rules_follow_exporter_toolkit(tmp_path: Path) -> None:
    message = refusal(tmp_path, "http_server_config:\n  headers: {Server: nginx}\n")
    assert ": http_server_config.headers: header 'Server' can not be configured" in message
    message = refusal(tmp_path, "http_server_config:\n  headers: {X-Frame-Options: allow}\n")
    assert (
        ": http_server_config.headers: X-Frame-Options: must be one of deny, sameorigin" in message
    )


def test_bad_unauthenticated_paths_are_refused(tmp_path: Path) -> None:
    message = refusal(tmp_path, "unauthenticated_paths: [-/healthy]\n")
    assert message.endswith(
        ":1: unauthenticated_paths[0]: must be an absolute path starting with '/'"
    )
    message = refusal(tmp_path, "unauthenticated_paths: /-/healthy\n")
    assert message.endswith(": unauthenticated_paths: must be a list")


def test_malformed_yaml_is_refused_without_quoting_the_line(tmp_path: Path) -> None:
    hashed = bcrypt_hash(PASSWORD)
    message = refusal(tmp_path, f"basic_auth_users:\n  alice: {hashed}\n bob: [\n")
    assert ":3: not valid YAML: " in message
    assert hashed not in message
    message = refusal(tmp_path, f"basic_auth_users:\n  alice: {hashed}\n  alice: {hashed}\n")
    assert message.endswith(":3: basic_auth_users.alice: duplicate key")
    assert hashed not in message
    message = refusal(tmp_path, "- just\n- a list\n")
    assert message.endswith(": (top level): must be a mapping")
    path = tmp_path / "latin1.yml"
    path.write_bytes("basic_auth_users:\n  jürgen: x\n".encode("latin-1"))
    with pytest.raises(WebConfigError, match=r":2: not UTF-8 text \(byte 21\)$"):
        load_web_config(path)


def test_several_problems_are_reported_together(tmp_path: Path) -> None:
    message = refusal(tmp_path, "basic_auth_users: {alice: x, bob: y}\nextra: 1\n")
    lines = message.splitlines()
    assert len(lines) == 3
    assert all(line.startswith("web config ") for line in lines)


def test_a_missing_web_config_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(WebConfigError) as caught:
        load_web_config(tmp_path / "absent.yml")
    assert str(caught.value) == (
        f"web config {tmp_path / 'absent.yml'}: cannot read the file: No such file or directory"
    )


def test_ssl_context_reports_files_that_vanished_after_loading(pki: PKI, tmp_path: Path) -> None:
    for name in ("server.crt", "server.key"):
        (tmp_path / name).write_bytes((pki.dir / name).read_bytes())
    path = write_config(
        tmp_path, "tls_server_config: {cert_file: server.crt, key_file: server.key}"
    )
    config = load_web_config(path)
    (tmp_path / "server.key").unlink()
    with pytest.raises(WebConfigError, match=r"tls_server_config\.key_file: file not found"):
        config.ssl_context()


# --------------------------------------------------------------------------------------------
# Certificate rotation


def write_leaf(leaf: trustme.LeafCert, directory: Path, stem: str) -> tuple[Path, Path]:
    """``leaf``'s chain and key as ``stem``.crt and ``stem``.key in ``directory``."""
    cert, key = directory / f"{stem}.crt", directory / f"{stem}.key"
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key))
    return cert, key


async def served_common_name(base: URL, ca: trustme.CA) -> tuple[str, int]:
    """The CN of the certificate a new connection is served, and the status of a GET on it."""
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    assert base.host is not None
    assert base.port is not None
    reader, writer = await asyncio.open_connection(base.host, base.port, ssl=ctx)
    try:
        subject = dict(item[0] for item in writer.get_extra_info("peercert")["subject"])
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        status_line = await reader.readline()
        return str(subject["commonName"]), int(status_line.split()[1])
    finally:
        writer.close()


async def test_rotated_certificate_files_are_served_without_a_restart(tmp_path: Path) -> None:
    ca = trustme.CA()
    first, second, third = (
        ca.issue_cert("127.0.0.1", common_name=name) for name in ("first", "second", "third")
    )
    cert, key = write_leaf(first, tmp_path, "server")
    config = load_web_config(
        write_config(tmp_path, f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n")
    )
    async with serve(config) as base:
        assert await served_common_name(base, ca) == ("first", 200)
        # As cert-manager or certbot rotate: new files written aside, renamed into place.
        new_cert, new_key = write_leaf(second, tmp_path, "new")
        new_key.replace(key)
        new_cert.replace(cert)
        assert await served_common_name(base, ca) == ("second", 200)
        # A rotation caught half done (third's certificate, second's key) cannot be served:
        # the last good certificate keeps serving, and the rotation's end is picked up.
        third_cert, third_key = write_leaf(third, tmp_path, "third")
        third_cert.replace(cert)
        assert await served_common_name(base, ca) == ("second", 200)
        third_key.replace(key)
        assert await served_common_name(base, ca) == ("third", 200)
