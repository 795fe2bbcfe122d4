"""The conformance harness: a recording proxy, the official clients' runner, the comparison.

The exporter and the simulators were written from the providers' documents; the providers'
official clients are the closest thing to the real APIs that runs here. Each test module sends
the exporter's requests and the official client's requests for the same thing through one
:class:`Recorder` (a loopback proxy in front of the provider's simulator), compares them field
by field, and lets the official client parse the simulator's answers. Every difference must be
an :class:`Allowed` entry with its reason and source, so a new difference fails the suite.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import shutil
import ssl
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import aiohttp
import pytest
import trustme
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from exporter.configuration.loading import parse_config
from exporter.service import Exporter
from exporter.simulator import Simulator
from exporter.web.app import make_app

NODE_PROJECT = Path(__file__).resolve().parent / "node"
"""The pinned official JavaScript clients (package.json, package-lock.json, driver.mjs)."""
REQUIRE_SDKS = os.environ.get("CHAT_UNREAD_REQUIRE_SDKS") == "1"
"""Set in CI: missing official clients fail the suite instead of skipping it."""
CASE_PREFIX = "/_case/"
"""An official client's base URL is ``<recorder>/_case/<name>``, so each request names its
case; the recorder strips the prefix before recording and forwarding."""

# Headers the HTTP library sets on its own, with no meaning to the API: the host and port, the
# connection handling, compression, the client's name, and the Fetch standard's defaults that
# Node's fetch adds to every request. Everything else is compared.
TRANSPORT_HEADERS = frozenset(
    {
        "host",
        "connection",
        "keep-alive",
        "content-length",
        "transfer-encoding",
        "accept-encoding",
        "user-agent",
        "accept-language",
        "sec-fetch-mode",
    }
)
_HOP_BY_HOP = frozenset({"content-length", "transfer-encoding", "content-encoding", "connection"})

Fields = dict[str, Any]
Run = TypeVar("Run")


def require(available: bool, message: str) -> None:
    """Skip when an official client is missing; fail instead under CHAT_UNREAD_REQUIRE_SDKS=1."""
    if available:
        return
    if REQUIRE_SDKS:
        pytest.fail(f"{message}, and CHAT_UNREAD_REQUIRE_SDKS=1 requires it")
    pytest.skip(message)


def require_node_clients() -> str:
    """The node executable, once the pinned clients are installed (``npm ci`` in node/)."""
    node = shutil.which("node")
    require(node is not None, "node is not installed")
    installed = (NODE_PROJECT / "node_modules" / ".package-lock.json").is_file()
    require(installed, f"official clients not installed: run npm ci in {NODE_PROJECT}")
    assert node is not None
    return node


# --------------------------------------------------------------------------------------------
# Recording


@dataclass(frozen=True)
class Recorded:
    """One request as the provider would see it, decoded into comparable fields.

    ``fields`` maps ``method``, ``path``, ``query:<name>`` (one list of comma-separated items
    per occurrence, so repeated keys and comma lists both show), ``header:<name>`` (lower-case,
    transport headers left out) and ``form:<name>`` / ``json:<name>`` / ``body`` to values.
    """

    case: str | None
    fields: Fields


def decode(
    method: str, path: str, query_string: str, headers: Mapping[str, str], body: bytes
) -> Fields:
    """The comparable fields of a request (see :class:`Recorded`)."""
    fields: Fields = {"method": method, "path": path}
    for name, value in parse_qsl(query_string, keep_blank_values=True):
        fields.setdefault(f"query:{name}", []).append(value.split(","))
    for name, value in headers.items():
        if name.lower() not in TRANSPORT_HEADERS:
            fields[f"header:{name.lower()}"] = value
    content_type = headers.get("Content-Type", "").split(";")[0].strip().lower()
    if content_type == "application/x-www-form-urlencoded" and body:
        for name, value in parse_qsl(body.decode(), keep_blank_values=True):
            fields.setdefault(f"form:{name}", []).append(value)
    elif content_type == "application/json" and body:
        decoded = json.loads(body)
        items = decoded.items() if isinstance(decoded, dict) else [("", decoded)]
        fields.update((f"json:{name}", value) for name, value in items)
    elif body:
        fields["body"] = body.decode(errors="replace")
    return fields


class Recorder:
    """A loopback proxy in front of one simulator: records each request, then forwards it.

    It listens on plain HTTP and on HTTPS (a trustme CA that ``ca_file`` holds for Node's
    ``NODE_EXTRA_CA_CERTS``), because the QuickBlox SDK only builds ``https://`` URLs.
    ``during[case]`` wraps the forwarding of that case's requests, so a case can put the
    simulator in a state (a fault, a rate limit) for its own requests only.
    """

    def __init__(self, target: str, workdir: Path) -> None:
        self.target = target
        self.requests: list[Recorded] = []
        self.during: dict[str, Callable[[], AbstractContextManager[None]]] = {}
        self.url = ""
        self.tls_host = ""
        self.ca_file = workdir / "recorder-ca.pem"
        self._ca = trustme.CA()
        self._runner: web.AppRunner | None = None
        self._client: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._ca.issue_cert("127.0.0.1").configure_cert(tls)
        self._ca.cert_pem.write_to_path(str(self.ca_file))
        plain = web.TCPSite(self._runner, "127.0.0.1", 0)
        secure = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=tls)
        await plain.start()
        await secure.start()
        ports = [address[1] for address in self._runner.addresses]
        self.url = f"http://127.0.0.1:{ports[0]}"
        self.tls_host = f"127.0.0.1:{ports[1]}"
        self._client = aiohttp.ClientSession()

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def case_url(self, case: str, *, tls: bool = False) -> str:
        """The base URL (scheme, host and case prefix) an official client uses for ``case``;
        ``tls`` picks the HTTPS listener."""
        return f"{'https://' + self.tls_host if tls else self.url}{CASE_PREFIX}{case}"

    def take(self) -> list[Recorded]:
        """The requests recorded so far, forgetting them."""
        taken, self.requests = self.requests, []
        return taken

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        assert self._client is not None
        body = await request.read()
        case: str | None = None
        path, raw = request.path, request.raw_path
        if path.startswith(CASE_PREFIX):
            case, _, rest = path[len(CASE_PREFIX) :].partition("/")
            path = "/" + rest
            raw = raw[len(CASE_PREFIX) + len(case) :]
        self.requests.append(
            Recorded(
                case, decode(request.method, path, request.query_string, request.headers, body)
            )
        )
        headers = {
            k: v for k, v in request.headers.items() if k.lower() not in {"host", *_HOP_BY_HOP}
        }
        during = self.during.get(case or "")
        with during() if during is not None else nullcontext():
            async with self._client.request(
                request.method,
                URL(self.target + raw, encoded=True),
                headers=headers,
                data=body or None,
                allow_redirects=False,
            ) as answer:
                payload = await answer.read()
                # as sent, names' case included: a client may look a header up case-sensitively
                kept = CIMultiDict(
                    (name.decode("latin-1"), value.decode("latin-1"))
                    for name, value in answer.raw_headers
                    if name.decode("latin-1").lower() not in _HOP_BY_HOP
                )
        return web.Response(status=answer.status, body=payload, headers=kept)


@contextmanager
def setting(target: object, **values: Any) -> Iterator[None]:
    """``target``'s attributes hold ``values`` while the block runs, then their old values (for
    ``Recorder.during``: a simulator's fault or rate limit for one case's requests)."""
    saved = {name: getattr(target, name) for name in values}
    for name, value in values.items():
        setattr(target, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(target, name, value)


def python_client(module: str) -> ModuleType:
    """An official Python client's module (the test extras install them all)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        require(False, f"{module} is not installed: pip install -e '.[test]'")
        raise


# --------------------------------------------------------------------------------------------
# Running the exporter and the official clients


async def probe_each(
    config_text: str, accounts: Iterable[str], recorder: Recorder
) -> dict[str, list[Recorded]]:
    """Scrape each account alone through ``/probe``; what each scrape sent to the provider."""
    exporter = Exporter(lambda: parse_config(config_text, "conformance.yaml"))
    await exporter.start()
    runner = web.AppRunner(make_app(exporter), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/probe"
        sent: dict[str, list[Recorded]] = {}
        async with aiohttp.ClientSession() as http:
            for account in accounts:
                recorder.take()
                async with http.get(url, params={"account": account}) as response:
                    assert response.status == 200, await response.text()
                sent[account] = recorder.take()
        return sent
    finally:
        await runner.cleanup()
        await exporter.close()


def collected(
    tmp_path_factory: pytest.TempPathFactory,
    provider: str,
    prepare: Callable[[Simulator], None],
    collect: Callable[[str, Simulator, Recorder], Coroutine[Any, Any, Run]],
) -> Run:
    """A test module's run: ``collect(node, sim, recorder)`` with the official clients
    installed, the simulators set up by ``prepare`` and a :class:`Recorder` in front of
    ``provider``'s simulator (``sim.<provider>``), all stopped afterwards."""
    node = require_node_clients()
    workdir = tmp_path_factory.mktemp(provider)

    async def main() -> Run:
        sim = Simulator()
        await sim.start()
        prepare(sim)
        recorder = Recorder(getattr(sim, provider).url, workdir)
        await recorder.start()
        try:
            return await collect(node, sim, recorder)
        finally:
            await recorder.stop()
            await sim.stop()

    return asyncio.run(main())


@dataclass
class ClientsRun:
    """What a run with a Node and a Python official client recorded: the exporter's requests by
    account, and each client's requests and outcomes by case."""

    exporter: dict[str, list[Recorded]] = field(default_factory=dict)
    node: dict[str, list[Recorded]] = field(default_factory=dict)
    node_outcomes: dict[str, Any] = field(default_factory=dict)
    python: dict[str, list[Recorded]] = field(default_factory=dict)
    python_outcomes: dict[str, Any] = field(default_factory=dict)

    async def record(
        self,
        recorder: Recorder,
        exporter: tuple[str, Iterable[str]],
        node: tuple[str, Sequence[NodeCall]],
        python: Callable[[], dict[str, Any]],
    ) -> None:
        """Adds the exporter's requests (``exporter``: its config, the accounts to probe), then
        the Node client's (``node``: the node executable, its calls) and the Python client's
        (``python``, run in a thread), with their outcomes."""
        self.exporter.update(await probe_each(*exporter, recorder))
        self.node_outcomes.update(await run_node(*node, recorder))
        self.node.update(by_case(recorder.take()))
        self.python_outcomes.update(await asyncio.to_thread(python))
        self.python.update(by_case(recorder.take()))


@dataclass(frozen=True)
class NodeCall:
    """One call of an official JavaScript client: ``clients/<client>.mjs``'s ``calls[call]``."""

    case: str
    client: str
    call: str
    args: dict[str, Any]


async def run_node(node: str, calls: Sequence[NodeCall], recorder: Recorder) -> dict[str, Any]:
    """Run every call in one Node process; each case's ``{"value"}`` or ``{"error"}``."""
    payload = json.dumps([{"client": c.client, "call": c.call, "args": c.args} for c in calls])
    process = await asyncio.create_subprocess_exec(
        node,
        str(NODE_PROJECT / "driver.mjs"),
        cwd=NODE_PROJECT,
        env={**os.environ, "NODE_EXTRA_CA_CERTS": str(recorder.ca_file)},
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(payload.encode()), timeout=120)
    assert process.returncode == 0, stderr.decode(errors="replace")[-4000:]
    outcomes = json.loads(stdout)
    assert len(outcomes) == len(calls)
    return {call.case: outcome for call, outcome in zip(calls, outcomes, strict=True)}


def by_case(recorded: Iterable[Recorded]) -> dict[str, list[Recorded]]:
    """Recorded official-client requests grouped by the case named in their URL prefix."""
    grouped: dict[str, list[Recorded]] = {}
    for request in recorded:
        if request.case is not None:
            grouped.setdefault(request.case, []).append(request)
    return grouped


def sole(requests: Sequence[Recorded]) -> Recorded:
    """The one request an official client made for a case."""
    assert len(requests) == 1, [f"{r.fields['method']} {r.fields['path']}" for r in requests]
    return requests[0]


def only(requests: Sequence[Recorded], method: str, path: str) -> Recorded:
    """The single request with this method and path (there must be exactly one)."""
    found = [r for r in requests if r.fields["method"] == method and r.fields["path"] == path]
    seen = [f"{r.fields['method']} {r.fields['path']}" for r in requests]
    assert len(found) == 1, f"expected one {method} {path}, got {seen}"
    return found[0]


# --------------------------------------------------------------------------------------------
# Comparing


@dataclass(frozen=True)
class Difference:
    field: str
    reference: Any
    exporter: Any


@dataclass(frozen=True)
class Allowed:
    """A deliberate difference between a reference's request and the exporter's."""

    reference: str
    field: str
    cases: frozenset[str]
    reason: str
    source: str


@dataclass(frozen=True)
class Comparison:
    """The same request as a reference (an official client, or a document) and the exporter
    send it."""

    case: str
    reference: str
    expected: Recorded
    actual: Recorded

    def differences(self) -> list[Difference]:
        names = sorted(self.expected.fields.keys() | self.actual.fields.keys())
        return [
            Difference(name, self.expected.fields.get(name), self.actual.fields.get(name))
            for name in names
            if self.expected.fields.get(name) != self.actual.fields.get(name)
        ]


@dataclass
class Ledger:
    """The suite's figures, printed at the end of the run (tests/conformance/conftest.py)."""

    compared: int = 0
    equal: int = 0
    allowed: list[tuple[str, str]] = field(default_factory=list)  # (reference, field)


LEDGER = Ledger()


def allowed_for(
    comparison: Comparison, difference: Difference, allow_list: Sequence[Allowed]
) -> Allowed | None:
    for entry in allow_list:
        if (
            entry.reference == comparison.reference
            and entry.field == difference.field
            and comparison.case in entry.cases
        ):
            return entry
    return None


def assert_conformant(comparison: Comparison, allow_list: Sequence[Allowed]) -> None:
    """Every difference must be on the allow-list; counts the comparison in the figures."""
    differences = comparison.differences()
    unexplained = [d for d in differences if allowed_for(comparison, d, allow_list) is None]
    assert not unexplained, (
        f"{comparison.case}: the exporter's request differs from {comparison.reference}'s:\n"
        + "\n".join(
            f"  {d.field}: {d.reference!r} (reference) != {d.exporter!r} (exporter)"
            for d in unexplained
        )
    )
    LEDGER.compared += 1
    LEDGER.equal += not differences
    LEDGER.allowed += [(comparison.reference, d.field) for d in differences]


def assert_no_stale_entry(
    comparisons: Mapping[Any, Comparison], allow_list: Sequence[Allowed]
) -> None:
    """Every entry of ``allow_list`` for the references compared is still needed."""
    references = {c.reference for c in comparisons.values()}
    entries = [e for e in allow_list if e.reference in references]
    assert stale_entries(list(comparisons.values()), entries) == []


def stale_entries(
    comparisons: Sequence[Comparison], allow_list: Sequence[Allowed]
) -> list[tuple[str, str, str]]:
    """(reference, field, case) of allow-list entries that no difference uses any more."""
    used = {(allowed_for(c, d, allow_list), c.case) for c in comparisons for d in c.differences()}
    return [
        (entry.reference, entry.field, case)
        for entry in allow_list
        for case in sorted(entry.cases)
        if (entry, case) not in used
    ]
