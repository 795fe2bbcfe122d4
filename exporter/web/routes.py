"""Where the endpoints are: ``--web.telemetry-path``, ``--web.route-prefix`` and
``--web.external-url``, with the meaning Prometheus and Alertmanager give them.

``--web.external-url`` is the URL under which users and Prometheus reach the exporter, e.g.
behind a reverse proxy (``https://proxy.example/chat-unread/``): the landing page's links and
the ``/sd`` targets are built from it. ``--web.route-prefix`` is the path prefix the exporter
itself serves under; it defaults to the external URL's path, so a proxy that passes the path on
unchanged needs only ``--web.external-url``, and one that strips it sets ``--web.route-prefix=/``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Final
from urllib.parse import SplitResult, urlsplit

__all__ = ["RESERVED_PATHS", "WebRoutes", "external_url", "route_prefix", "telemetry_path"]

# The exporter's other endpoints: the telemetry path may not take one of their places.
RESERVED_PATHS: Final = frozenset(
    {"/", "/probe", "/exporter-metrics", "/config", "/sd", "/-/healthy", "/-/ready", "/-/reload"}
)


def _bare_path(text: str, flag: str) -> str:
    if any(c in text for c in "?#") or any(ord(c) < 0x21 for c in text):
        raise argparse.ArgumentTypeError(
            f"{flag} {text!r} must be a bare path (no query, fragment or whitespace)"
        )
    return text


def telemetry_path(text: str) -> str:
    """``--web.telemetry-path``: an absolute path that no other endpoint uses."""
    _bare_path(text, "--web.telemetry-path")
    if not text.startswith("/") or text in RESERVED_PATHS or text.endswith("/"):
        raise argparse.ArgumentTypeError(
            f"--web.telemetry-path {text!r} must start with '/', not end with one, and not be "
            f"one of the other endpoints ({', '.join(sorted(RESERVED_PATHS))})"
        )
    return text


def route_prefix(text: str) -> str:
    """``--web.route-prefix``, normalised as Prometheus does: a leading '/' added, the trailing
    one removed ('' for the root)."""
    _bare_path(text, "--web.route-prefix")
    return ("/" + text.strip("/")).rstrip("/")


def external_url(text: str) -> SplitResult:
    """``--web.external-url``: an absolute http(s) URL without query or fragment."""
    url = urlsplit(text)
    if url.scheme not in ("http", "https") or not url.netloc or url.query or url.fragment:
        raise argparse.ArgumentTypeError(
            f"--web.external-url {text!r} must be an http(s) URL such as "
            "https://proxy.example/chat-unread/, without query or fragment"
        )
    if url.username is not None or url.password is not None:
        raise argparse.ArgumentTypeError("--web.external-url must not carry credentials")
    return url


@dataclass(frozen=True)
class WebRoutes:
    """The flags above, resolved: where each endpoint is served and how it is linked."""

    telemetry_path: str = "/metrics"
    external_url: SplitResult | None = None
    prefix: str | None = None
    exporter_metrics: bool = True  # False under --web.disable-exporter-metrics

    @property
    def route_prefix(self) -> str:
        """The prefix routes are served under ('' for the root); by default the external
        URL's path."""
        if self.prefix is not None:
            return self.prefix
        return route_prefix(self.external_url.path) if self.external_url else ""

    def route(self, path: str) -> str:
        """Where the exporter serves ``path`` (one of its endpoints, e.g. ``/probe``)."""
        return self.route_prefix + path

    def link(self, path: str) -> str:
        """The absolute path users reach ``path`` at: under the external URL's path."""
        base = route_prefix(self.external_url.path) if self.external_url else self.route_prefix
        return base + path
