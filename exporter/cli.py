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
from exporter.app import make_app
from exporter.config import ConfigError, ExporterConfig, load_config, parse_config
from exporter.logs import LEVELS, setup_logging
from exporter.service import Exporter
from exporter.simulator import Simulator
from exporter.webconfig import WebConfigError, load_web_config

log = logging.getLogger("exporter")

DEFAULT_LISTEN = ":9866"
SHUTDOWN_GRACE = 10.0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="chat-unread-exporter",
        description="Prometheus exporter for unread chat messages "
        "(Crisp, QuickBlox, IMKit, Sendbird).",
    )
    parser.add_argument(
        "--config.file",
        dest="config_file",
        default="config.yaml",
        help="YAML file listing accounts and dialogs (default: %(default)s)",
    )
    parser.add_argument(
        "--config.check",
        dest="config_check",
        action="store_true",
        help="validate the config file, print the result and exit 0 or 1",
    )
    parser.add_argument(
        "--web.listen-address",
        dest="listen",
        default=DEFAULT_LISTEN,
        help="address to listen on, [host]:port (default: %(default)s)",
    )
    parser.add_argument(
        "--web.config.file",
        dest="web_config_file",
        default=None,
        help="TLS and basic auth, in the Prometheus exporter-toolkit format",
    )
    parser.add_argument("--log.level", dest="log_level", default="info", choices=sorted(LEVELS))
    parser.add_argument(
        "--log.format", dest="log_format", default="logfmt", choices=["logfmt", "json"]
    )
    parser.add_argument(
        "--demo",
        action="store_true",
        help="serve simulated providers on loopback with a matching config (ignores --config.file)",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser.parse_args(argv)


def parse_listen_address(address: str) -> tuple[str | None, int]:
    """``:9866`` (all interfaces), ``127.0.0.1:9866`` or ``[::1]:9866``."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"--web.listen-address {address!r} is not [host]:port")
    host = host.strip("[]")
    return (host or None), int(port_text)


def check_config(path: str) -> int:
    """``--config.check``: report and exit status, never serve."""
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"config {path} is invalid:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    dialogs = sum(len(a.dialogs) for a in config.accounts)
    print(f"config {path} is valid: {len(config.accounts)} accounts, {dialogs} dialogs")
    return 0


async def serve(args: argparse.Namespace) -> int:
    """Run until SIGTERM/SIGINT; SIGHUP reloads the config."""
    host, port = parse_listen_address(args.listen)
    ssl_context, middlewares = None, []
    if args.web_config_file:
        web_config = load_web_config(args.web_config_file)
        ssl_context = web_config.ssl_context()
        middlewares.append(web_config.middleware())
    simulator: Simulator | None = None
    load: Callable[[], ExporterConfig]
    if args.demo:
        simulator = Simulator()
        await simulator.start()
        simulator.populate_demo()
        demo_yaml = simulator.demo_config_yaml()
        load = lambda: parse_config(demo_yaml, "<demo>", base_dir=Path.cwd())  # noqa: E731
    else:
        config_path = args.config_file
        load = lambda: load_config(config_path)  # noqa: E731
    exporter = Exporter(load)
    evolution: asyncio.Task[None] | None = None
    try:
        await exporter.start()
        if simulator is not None:
            evolution = asyncio.create_task(simulator.run_evolution())
        runner = web.AppRunner(
            make_app(exporter, middlewares), access_log=None, shutdown_timeout=SHUTDOWN_GRACE
        )
        await runner.setup()
        await web.TCPSite(runner, host, port, ssl_context=ssl_context).start()
        log.info("listening", extra={"address": args.listen, "tls": ssl_context is not None})
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: _reload_quietly(exporter))
        await stop.wait()
        log.info("shutting down: finishing scrapes in flight")
        await runner.cleanup()
    finally:
        if evolution is not None:
            evolution.cancel()
        await exporter.close()
        if simulator is not None:
            await simulator.stop()
    return 0


def _reload_quietly(exporter: Exporter) -> None:
    with contextlib.suppress(ConfigError):  # already logged; the old config keeps serving
        exporter.reload()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    if args.config_check:
        return check_config(args.config_file)
    try:
        return asyncio.run(serve(args))
    except ConfigError as exc:
        print(f"cannot start: config {args.config_file} is invalid:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    except (WebConfigError, ValueError, OSError) as exc:
        print(f"cannot start: {exc}", file=sys.stderr)
        return 1
