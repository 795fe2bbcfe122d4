"""Command line: flags named as Prometheus exporters name them, and the serving loop."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from aiohttp import web

from exporter import __version__
from exporter.configuration.loading import ConfigError, ExporterConfig, load_config, parse_config
from exporter.fetching.registry import PLUGIN_FAILURES, PROVIDERS
from exporter.logs import LEVELS, setup_logging
from exporter.memory import gc_policy
from exporter.queues.coverage import coverage_of, overlap_warning
from exporter.service import Exporter
from exporter.simulator import Simulator
from exporter.web.app import make_app
from exporter.web.connections import (
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_WRITE_TIMEOUT,
    ConnectionGuard,
    RepeatedLogFilter,
    default_max_connections,
)
from exporter.web.listeners import DEFAULT_LISTEN, Listener, StartupError, listen
from exporter.web.routes import WebRoutes, external_url, route_prefix, telemetry_path
from exporter.web.webconfig import WebConfig, WebConfigError, load_web_config

DEMO_CONFIG = "<demo>"  # the source name of the demo's built-in config
log = logging.getLogger("exporter")

SHUTDOWN_GRACE = 10.0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="chat-unread-exporter",
        description="Prometheus exporter for unread chat messages; providers: "
        f"{', '.join(PROVIDERS)} (installed plugins included).",
    )
    parser.add_argument(
        "--config.file",
        dest="config_file",
        default="config.yaml",
        metavar="PATH",
        help="YAML file listing accounts and dialogs (default: %(default)s)",
    )
    parser.add_argument(
        "--config.check",
        dest="config_check",
        action="store_true",
        help="validate the config file (and --web.config.file, if given), print the result "
        "and exit 0 or 1",
    )
    parser.add_argument(
        "--web.listen-address",
        dest="listen",
        action="append",
        metavar="[HOST]:PORT",
        help=f"address to listen on, [host]:port; repeat the flag for several addresses "
        f"(default: {DEFAULT_LISTEN})",
    )
    parser.add_argument(
        "--web.systemd-socket",
        dest="systemd_socket",
        action="store_true",
        help="serve on the sockets passed by systemd socket activation (LISTEN_FDS) instead "
        "of --web.listen-address (Linux only)",
    )
    parser.add_argument(
        "--web.telemetry-path",
        dest="telemetry_path",
        type=telemetry_path,
        default="/metrics",
        metavar="PATH",
        help="path under which to expose all accounts' metrics (default: %(default)s)",
    )
    parser.add_argument(
        "--web.disable-exporter-metrics",
        dest="disable_exporter_metrics",
        action="store_true",
        help="leave the exporter's own metrics (process_*, python_*, chat_unread_exporter_*, "
        "per-account fetch metrics) out of the telemetry path; /exporter-metrics still has them",
    )
    parser.add_argument(
        "--web.external-url",
        dest="external_url",
        type=external_url,
        default=None,
        metavar="URL",
        help="the URL under which the exporter is reached (e.g. behind a reverse proxy); "
        "links and /sd targets are built from it",
    )
    parser.add_argument(
        "--web.route-prefix",
        dest="route_prefix",
        type=route_prefix,
        default=None,
        metavar="PATH",
        help="prefix of every endpoint's path (default: the path of --web.external-url, else /)",
    )
    parser.add_argument(
        "--web.config.file",
        dest="web_config_file",
        default=None,
        metavar="PATH",
        help="TLS and basic auth, in the Prometheus exporter-toolkit format",
    )
    parser.add_argument(
        "--web.disable-reload",
        dest="disable_reload",
        action="store_true",
        help="refuse POST /-/reload with 403; SIGHUP still reloads (by default /-/reload is "
        "open, or needs basic auth when --web.config.file sets basic_auth_users)",
    )
    parser.add_argument(
        "--web.read-header-timeout",
        dest="header_timeout",
        type=_positive_seconds,
        default=DEFAULT_HEADER_TIMEOUT,
        metavar="SECONDS",
        help="close a connection that has not sent a complete request head this long after "
        "opening or after its previous request, idle keep-alive ones included "
        "(default: %(default)g)",
    )
    parser.add_argument(
        "--web.write-timeout",
        dest="write_timeout",
        type=_positive_seconds,
        default=DEFAULT_WRITE_TIMEOUT,
        metavar="SECONDS",
        help="close a connection whose client has read nothing of a response for this long "
        "(its output blocked); at --web.max-connections such a connection is replaced "
        "(default: %(default)g)",
    )
    parser.add_argument(
        "--web.max-connections",
        dest="max_connections",
        type=_positive_int,
        default=default_max_connections(),
        metavar="N",
        help="most client connections open at once; at the limit a new one replaces the one "
        "waiting longest for a request (default: half the open-file limit, at most 512: "
        "%(default)s)",
    )
    parser.add_argument(
        "--log.level",
        dest="log_level",
        default="info",
        choices=list(LEVELS),
        help="only log messages of this level or above: %(choices)s (default: %(default)s)",
    )
    parser.add_argument(
        "--log.format",
        dest="log_format",
        default="logfmt",
        choices=["logfmt", "json"],
        help="log line format on stderr: %(choices)s (default: %(default)s)",
    )
    parser.add_argument(
        "--demo",
        action="store_true",
        help="serve simulated providers on loopback with a matching config (ignores --config.file)",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser.parse_args(argv)


def _positive_seconds(text: str) -> float:
    seconds = float(text)
    if not 0 < seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return seconds


def _positive_int(text: str) -> int:
    number = int(text)
    if number < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return number


def _print_problems(headline: str, problems: Sequence[str]) -> None:
    print(headline, file=sys.stderr)
    for problem in problems:
        print(f"  {problem}", file=sys.stderr)


def _demo_config() -> ExporterConfig:
    """The demo's config, as ``--demo`` builds it (its simulators started to name their ports)."""

    async def build() -> str:
        simulator = Simulator()
        await simulator.start()
        try:
            return simulator.demo_config_yaml()
        finally:
            await simulator.stop()

    return parse_config(asyncio.run(build()), DEMO_CONFIG, base_dir=Path.cwd())


def check_config(path: str, web_config_file: str | None = None) -> int:
    """``--config.check``: report and exit status, never serve.

    The web config is checked too when given, so that a deployment pipeline's check covers
    everything the exporter would refuse at startup.
    """
    status = 0
    try:
        config = _demo_config() if path == DEMO_CONFIG else load_config(path)
    except ConfigError as exc:
        _print_problems(f"config {path} is invalid:", exc.problems)
        status = 1
    else:
        dialogs = sum(len(a.dialogs) for a in config.accounts)
        print(f"config {path} is valid: {len(config.accounts)} accounts, {dialogs} dialogs")
        for account in config.accounts:
            provider = PROVIDERS[account.provider]
            for pair in coverage_of(provider.coverage, account, provider.name).overlapping:
                print(overlap_warning(account.name, pair), file=sys.stderr)
    if web_config_file:
        try:
            web_config = load_web_config(web_config_file)
        except WebConfigError as exc:
            _print_problems(f"web config {web_config_file} is invalid:", exc.problems)
            status = 1
        else:
            print(f"web config {web_config_file} is valid: {web_config.describe()}")
    return status


async def serve(args: argparse.Namespace) -> int:
    """Run until SIGTERM/SIGINT; SIGHUP reloads the config."""
    gc_policy.apply()
    listeners = Listener.plan(args.listen or [DEFAULT_LISTEN], args.systemd_socket)
    web_config = load_web_config(args.web_config_file) if args.web_config_file else WebConfig()
    ssl_context = web_config.ssl_context()
    simulator: Simulator | None = None
    load: Callable[[], ExporterConfig]
    if args.demo:
        simulator = Simulator()
        await simulator.start()
        simulator.populate_demo()
        demo_yaml = simulator.demo_config_yaml()
        load = lambda: parse_config(demo_yaml, DEMO_CONFIG, base_dir=Path.cwd())  # noqa: E731
    else:
        config_path = args.config_file
        load = lambda: load_config(config_path)  # noqa: E731
    exporter = Exporter(load)
    evolution: asyncio.Task[None] | None = None
    try:
        await exporter.start()
        if simulator is not None:
            evolution = asyncio.create_task(simulator.run_evolution())
        routes = WebRoutes(
            telemetry_path=args.telemetry_path,
            external_url=args.external_url,
            prefix=args.route_prefix,
            exporter_metrics=not args.disable_exporter_metrics,
        )
        app = make_app(exporter, web_config, reload_enabled=not args.disable_reload, routes=routes)
        guard = ConnectionGuard(
            args.header_timeout, args.max_connections, args.write_timeout, ssl_context
        )
        guard.install(app)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_GRACE)
        await runner.setup()
        RepeatedLogFilter().install()
        assert runner.server is not None  # set by setup()
        try:
            # Not web.TCPSite: it cannot put the guard between the socket and aiohttp. No ssl=
            # either: the guard does the handshake, so that it counts and bounds it.
            servers = await listen(listeners, guard.protocol_factory(runner.server))
        except StartupError:
            await runner.cleanup()
            raise
        try:
            for listener in listeners:
                log.info(
                    "listening", extra={"address": listener.name, "tls": ssl_context is not None}
                )
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGTERM, stop.set)
            loop.add_signal_handler(signal.SIGINT, stop.set)
            reloads: set[asyncio.Task[None]] = set()  # held until done, as asyncio requires
            loop.add_signal_handler(signal.SIGHUP, lambda: _reload_quietly(exporter, reloads))
            await stop.wait()
            log.info("shutting down: finishing scrapes in flight")
        finally:  # on an unexpected error too: the port is released before the traceback
            for server in servers:
                server.close()
            await runner.cleanup()
    finally:
        if evolution is not None:
            evolution.cancel()
        await exporter.close()
        if simulator is not None:
            await simulator.stop()
    return 0


def _reload_quietly(exporter: Exporter, reloads: set[asyncio.Task[None]]) -> None:
    """SIGHUP: reload in the background, so the signal handler returns at once."""

    async def reload() -> None:
        with contextlib.suppress(ConfigError):  # already logged; the old config keeps serving
            await exporter.reload()

    task = asyncio.get_running_loop().create_task(reload())
    reloads.add(task)
    task.add_done_callback(reloads.discard)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script and ``python -m exporter``; returns the exit status."""
    args = parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    for failure in PLUGIN_FAILURES:  # the other providers work; say which one does not, once
        log.warning(
            "provider plugin not loaded",
            extra={"provider": failure.name, "source": failure.source, "problem": failure.problem},
        )
    if args.config_check:
        config_file = DEMO_CONFIG if args.demo else args.config_file
        return check_config(config_file, args.web_config_file)
    # Only the refusals foreseen above are one line without a traceback; anything else
    # (an OSError or ValueError included) is a bug or an environment problem whose traceback
    # is what it takes to find it, so it propagates and Python prints it and exits 1.
    try:
        return asyncio.run(serve(args))
    except ConfigError as exc:
        _print_problems(f"cannot start: config {args.config_file} is invalid:", exc.problems)
        return 1
    except (WebConfigError, StartupError) as exc:
        print(f"cannot start: {exc}", file=sys.stderr)
        return 1
