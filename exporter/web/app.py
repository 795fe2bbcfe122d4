"""HTTP endpoints: /metrics, /probe, the landing page, health, readiness, reload, /config, /sd.

Handlers fetch first (async, bounded by the scrape deadline), then render on a registry made
for that request, so concurrent scrapes never share metric state.
"""

from __future__ import annotations

import html
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Final
from urllib.parse import quote

from aiohttp import hdrs, web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from exporter import __version__
from exporter.configuration.loading import ConfigError
from exporter.fetching.registry import PROVIDERS
from exporter.fetching.scrape import AccountResult, AccountRuntime, SharedScrapes, observe_all
from exporter.outcome import Reading
from exporter.rendering.buildinfo import BUILD, RuntimeMetrics
from exporter.rendering.collector import (
    DialogCollector,
    ExporterStatus,
    GroupCollector,
    SelfCollector,
)
from exporter.rendering.exposition import encoder_for
from exporter.service import Exporter, UnknownTargetError
from exporter.web import discovery
from exporter.web.configview import redacted_yaml
from exporter.web.routes import WebRoutes
from exporter.web.webconfig import WebConfig

log = logging.getLogger(__name__)

EXPORTER_KEY = web.AppKey("exporter", Exporter)
ROUTES_KEY = web.AppKey("routes", WebRoutes)
DEFAULT_SCRAPE_TIMEOUT = 10.0
# Leave this much of Prometheus' scrape timeout for rendering and the network.
SCRAPE_TIMEOUT_OFFSET = 0.5
PROBE_PARAMS = frozenset({"account", "provider", "debug"})
# Values are fetched when scraped, so a page opened before any scrape would show nothing.
FETCH_HINT = (
    '<p><strong>Values are fetched when Prometheus scrapes.</strong> Open <a href="metrics">'
    "/metrics</a> (or an account's probe link) once to fetch them, then reload this page.</p>"
)
DEBUG_WORDS = {"true": True, "1": True, "false": False, "0": False}


def scrape_timeout(request: web.Request) -> float:
    """The time this scrape may spend fetching, from Prometheus' timeout header."""
    header = request.headers.get("X-Prometheus-Scrape-Timeout-Seconds")
    if header is None:
        return DEFAULT_SCRAPE_TIMEOUT
    try:
        seconds = float(header)
    except ValueError:
        raise web.HTTPBadRequest(
            text="X-Prometheus-Scrape-Timeout-Seconds is not a number\n"
        ) from None
    if not seconds > 0:
        raise web.HTTPBadRequest(text="X-Prometheus-Scrape-Timeout-Seconds must be positive\n")
    return max(seconds - SCRAPE_TIMEOUT_OFFSET, seconds / 2)


# /metrics bodies being fetched and rendered now, by content type and deadline. Scrapes that
# arrive while one is in flight wait for its body instead of rendering their own: at thousands
# of dialogs, rendering is a sizeable share of a scrape's CPU and memory.
IN_FLIGHT_KEY = web.AppKey("metrics_in_flight", SharedScrapes[bytes])


async def _send(request: web.Request, body: bytes, content_type: str) -> web.StreamResponse:
    """Stream a rendered body (gzip when asked): aiohttp keeps the last ``web.Response`` of an
    idle keep-alive connection alive, which would pin a multi-megabyte body per scraper.

    A HEAD request gets the headers alone, and its handler calls this before any upstream
    fetch or rendering: HEAD asks for the headers a GET would get, nothing more. (aiohttp
    answers HEAD on every GET route with the GET handler, and a streamed body written for
    HEAD goes out unframed, where a keep-alive client reads it as its next response.)"""
    response = web.StreamResponse(headers={"Content-Type": content_type})
    if request.method == hdrs.METH_HEAD:  # no compression either: gzip's empty frame is a body
        await response.prepare(request)
        await response.write_eof()
        return response
    response.enable_compression()
    await response.prepare(request)
    await response.write(body)
    await response.write_eof()
    return response


# The versions of each exposition format that prometheus_client writes. Content negotiation
# is prometheus_client's; it only ever sees media ranges naming one of these versions (or
# none), because it trusts the client's ``version``: ``version=abc`` makes it raise, and
# ``version=99`` would be echoed back in Content-Type as if that format were served.
_SERVED_VERSIONS: Final[Mapping[str, frozenset[str]]] = MappingProxyType(
    {
        "application/openmetrics-text": frozenset({"0.0.1", "1.0.0", "2.0.0"}),
        "text/plain": frozenset({"0.0.4", "1.0.0"}),
    }
)


def negotiate(accept: str) -> tuple[Callable[[CollectorRegistry], bytes], str]:
    """Encoder and Content-Type for an Accept header; any header at all gets an answer.

    prometheus_client chooses the format; the exporter's own renderer writes it (``render``).

    Media ranges asking for a version of a format that is not served are skipped, as HTTP
    content negotiation would; when none is left, the answer is the Prometheus text format.
    """
    served = []
    for media_range in accept.split(","):
        media_type, *params = media_range.split(";")
        versions = _SERVED_VERSIONS.get(media_type.strip(), frozenset())
        # Parameters are read as prometheus_client reads them: key=value, split at the first =.
        asked = [p.strip().split("=", 1)[1] for p in params if p.strip().startswith("version=")]
        if all(version in versions for version in asked):
            served.append(media_range)
    _, content_type = choose_encoder(",".join(served))
    return encoder_for(content_type), content_type


async def _render(request: web.Request, registry: CollectorRegistry) -> web.StreamResponse:
    encoder, content_type = negotiate(request.headers.get("Accept", ""))
    return await _send(request, encoder(registry), content_type)


def _status(exporter: Exporter) -> ExporterStatus:
    return ExporterStatus(
        build=BUILD,
        reload_successful=exporter.reload_successful,
        reload_success_timestamp=exporter.reload_success_timestamp,
    )


async def metrics(request: web.Request) -> web.StreamResponse:
    """Every configured account plus the exporter's self-metrics and process metrics (these
    two left out under --web.disable-exporter-metrics)."""
    exporter = request.app[EXPORTER_KEY]
    with_own = request.app[ROUTES_KEY].exporter_metrics
    wait_seconds = scrape_timeout(request)
    encoder, content_type = negotiate(request.headers.get("Accept", ""))
    if request.method == hdrs.METH_HEAD:
        return await _send(request, b"", content_type)
    runtimes = list(exporter.runtimes.values())
    # Only scrapes with the same deadline share: a joiner must not wait past its own timeout.
    key = f"{content_type}|{wait_seconds:.3f}"
    body = await request.app[IN_FLIGHT_KEY].get(
        key,
        runtimes,
        lambda: _fetch_and_render(exporter, runtimes, encoder, wait_seconds, with_own=with_own),
    )
    return await _send(request, body, content_type)


async def _fetch_and_render(
    exporter: Exporter,
    runtimes: Sequence[AccountRuntime],
    encoder: Callable[[CollectorRegistry], bytes],
    wait_seconds: float,
    *,
    with_own: bool,
) -> bytes:
    results = await observe_all(runtimes, wait_seconds)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DialogCollector(results))
    registry.register(GroupCollector(results))
    if with_own:
        registry.register(SelfCollector([rt.snapshot() for rt in runtimes], _status(exporter)))
        registry.register(RuntimeMetrics())
    return encoder(registry)


async def exporter_metrics(request: web.Request) -> web.StreamResponse:
    """Only the exporter's self-metrics and process metrics, with no upstream fetch.

    For the multi-target setup: Probes collect the dialogs, and this endpoint lets Prometheus
    watch the exporter itself without making it fetch every account a second time. It serves
    them under --web.disable-exporter-metrics too: asking for this path is asking for them.
    """
    if request.method == hdrs.METH_HEAD:
        return await _send(request, b"", negotiate(request.headers.get("Accept", ""))[1])
    exporter = request.app[EXPORTER_KEY]
    registry = CollectorRegistry(auto_describe=False)
    snapshots = [runtime.snapshot() for runtime in exporter.runtimes.values()]
    registry.register(SelfCollector(snapshots, _status(exporter)))
    registry.register(RuntimeMetrics())
    return await _render(request, registry)


async def probe(request: web.Request) -> web.StreamResponse:
    """Only the accounts named by ``account=`` or ``provider=`` (multi-target pattern)."""
    exporter = request.app[EXPORTER_KEY]
    query = request.query
    if unknown := sorted(set(query) - PROBE_PARAMS):
        raise web.HTTPBadRequest(
            text=f"unknown parameter {unknown[0]!r}: use account=NAME or provider=NAME\n"
        )
    accounts, providers = query.getall("account", []), query.getall("provider", [])
    if not accounts and not providers:
        raise web.HTTPBadRequest(text="missing parameter: account=NAME or provider=NAME\n")
    debug = DEBUG_WORDS.get(query.get("debug", "false").lower())
    if debug is None:
        raise web.HTTPBadRequest(text="debug must be true or false (or 1 or 0)\n")
    try:
        runtimes = exporter.select(accounts, providers)
    except UnknownTargetError as exc:
        raise web.HTTPBadRequest(text=f"{exc}\n") from None
    wait_seconds = scrape_timeout(request)
    if request.method == hdrs.METH_HEAD:
        accept = request.headers.get("Accept", "")
        content_type = "text/plain; charset=utf-8" if debug else negotiate(accept)[1]
        return await _send(request, b"", content_type)
    results = await observe_all(runtimes, wait_seconds)
    if debug:
        return web.Response(text=_debug_trace(results))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DialogCollector(results))
    registry.register(GroupCollector(results))
    return await _render(request, registry)


def _debug_trace(results: Sequence[AccountResult]) -> str:
    """A plain-text account of one probe: requests, outcomes, cache use; secrets redacted."""
    lines: list[str] = []
    for result in results:
        account = result.account
        lines.append(f"account {account.name} (provider {account.provider}): {result.source}")
        lines.extend(f"  request {entry}" for entry in result.trace)
        for dialog in result.dialogs:
            if dialog.error is not None:
                error = dialog.error
                lines.append(f"  dialog {dialog.name}: up 0, {error.reason}: {error.detail}")
            else:
                lines.append(f"  dialog {dialog.name}: up 1, {_described(dialog.reading)}")
    return "\n".join(lines) + "\n"


def _described(reading: Reading | None) -> str:
    """A reading in the metrics' words: ``messages=3 conversations=2``, and its queues."""
    if reading is None:
        return "no value"
    values = [
        f"{name}={value:g}" if isinstance(value, float) else f"{name}={value}"
        for name in ("messages", "mentions", "invitations", "conversations")
        if (value := getattr(reading, name)) is not None
    ]
    if reading.oldest_unread_timestamp is not None:
        values.append(f"oldest_unread_timestamp_seconds={reading.oldest_unread_timestamp:.3f}")
    if reading.groups is not None:
        split = reading.groups
        values.append(
            f"groups by {split.group_by}: {len(split.groups)} (folded into other: {split.folded})"
        )
    return " ".join(values)


async def config(request: web.Request) -> web.Response:
    """The loaded config as YAML, every secret replaced by ``<secret>``."""
    loaded = request.app[EXPORTER_KEY].config
    if loaded is None:
        raise web.HTTPServiceUnavailable(text="config not loaded\n")
    return web.Response(text=redacted_yaml(loaded), content_type="application/yaml")


async def service_discovery(request: web.Request) -> web.Response:
    """Prometheus HTTP SD: one /probe target per configured account."""
    groups = discovery.targets(request, request.app[EXPORTER_KEY], request.app[ROUTES_KEY])
    return web.json_response(groups)


async def healthy(request: web.Request) -> web.Response:
    return web.Response(text="Healthy\n")


async def ready(request: web.Request) -> web.Response:
    if request.app[EXPORTER_KEY].config is None:
        raise web.HTTPServiceUnavailable(text="config not loaded\n")
    return web.Response(text="Ready\n")


async def reload(request: web.Request) -> web.Response:
    """POST only (aiohttp answers 405 to other methods on this path)."""
    try:
        config = await request.app[EXPORTER_KEY].reload()
    except ConfigError as exc:
        raise web.HTTPInternalServerError(
            text=f"config reload failed; still serving the previous config:\n{exc}\n"
        ) from None
    return web.Response(text=f"config reloaded: {len(config.accounts)} accounts\n")


async def reload_disabled(request: web.Request) -> web.Response:
    """POST /-/reload under --web.disable-reload: refused, as Prometheus refuses it."""
    raise web.HTTPForbidden(
        text="reloading over HTTP is disabled (--web.disable-reload); send SIGHUP instead\n"
    )


def _age(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.1f}s ago"


async def landing(request: web.Request) -> web.Response:
    """A page naming the exporter with each account's and dialog's last result."""
    exporter, routes = request.app[EXPORTER_KEY], request.app[ROUTES_KEY]
    now = time.time()
    rows = []
    unfetched = False
    for name, runtime in exporter.runtimes.items():
        snapshot = runtime.snapshot()
        account, started_at = snapshot.account, snapshot.refresh_started_at
        duration = snapshot.last_fetch_duration
        probe_url = f"{routes.link('/probe')}?account={quote(name, safe='')}"
        probe_link = f'<a href="{html.escape(probe_url)}">probe</a>'
        for dialog in account.dialogs:
            outcome = snapshot.outcomes.get(dialog.name)
            if outcome is None:
                fetched = started_at is not None
                result, reason = ("in flight" if fetched else "not fetched yet"), ""
                unfetched = unfetched or not fetched
            elif isinstance(outcome, Exception):
                result, reason = "up 0", f"{outcome.reason}: {outcome.detail}"
            else:
                result, reason = f"up 1, {outcome.summary()}", ""
            rows.append(
                "<tr>"
                + "".join(
                    f"<td>{html.escape(cell)}</td>"
                    for cell in (
                        account.provider,
                        name,
                        dialog.name,
                        result,
                        reason,
                        "-" if duration is None else f"{duration * 1000:.0f} ms",
                        _age(now - started_at if started_at is not None else None),
                    )
                )
                + f"<td>{probe_link}</td></tr>"
            )
    status = "ok" if exporter.reload_successful else f"failed: {exporter.last_reload_error}"
    links = " &middot;\n".join(
        f'<a href="{html.escape(routes.link(path))}">{html.escape(path)}</a>'
        for path in (
            routes.telemetry_path,
            "/exporter-metrics",
            "/config",
            "/sd",
            "/-/healthy",
            "/-/ready",
        )
    )
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>chat-unread-exporter</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:2px 10px;text-align:left}}
tr:nth-child(even){{background:#f4f4f4}}</style></head>
<body><h1>chat-unread-exporter {html.escape(__version__)}</h1>
<p>Prometheus exporter for unread chat messages. Providers: {html.escape(", ".join(PROVIDERS))}.</p>
<p>{links} &middot; config: {html.escape(status)}</p>
{FETCH_HINT if unfetched else ""}
<table><tr><th>provider</th><th>account</th><th>dialog</th><th>last result</th>
<th>error</th><th>fetch duration</th><th>age</th><th></th></tr>
{"".join(rows)}
</table></body></html>
"""
    return web.Response(text=page, content_type="text/html")


async def _to_landing(request: web.Request) -> web.Response:
    raise web.HTTPFound(request.app[ROUTES_KEY].link("/"))


def make_app(
    exporter: Exporter,
    web_config: WebConfig | None = None,
    *,
    reload_enabled: bool = True,
    routes: WebRoutes | None = None,
) -> web.Application:
    """The aiohttp application behind ``web_config`` (basic auth and headers).

    With ``reload_enabled`` false, POST /-/reload answers 403 (GET still 405), so only
    SIGHUP, which needs the right to signal the process, can reload the config. ``routes``
    places the endpoints (telemetry path, route prefix) and says how they are linked.
    """
    routes = routes or WebRoutes()
    app = web.Application()
    (web_config or WebConfig()).install(app)
    app[EXPORTER_KEY] = exporter
    app[ROUTES_KEY] = routes
    app[IN_FLIGHT_KEY] = SharedScrapes()
    route = routes.route
    if routes.route_prefix:  # /prefix, as typed into a browser, is the landing page too
        app.router.add_get(routes.route_prefix, _to_landing)
    app.router.add_get(route("/"), landing)
    app.router.add_get(route(routes.telemetry_path), metrics)
    app.router.add_get(route("/probe"), probe)
    app.router.add_get(route("/exporter-metrics"), exporter_metrics)
    app.router.add_get(route("/config"), config)
    app.router.add_get(route("/sd"), service_discovery)
    app.router.add_get(route("/-/healthy"), healthy)
    app.router.add_get(route("/-/ready"), ready)
    app.router.add_post(route("/-/reload"), reload if reload_enabled else reload_disabled)
    return app
