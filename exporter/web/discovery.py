"""``GET /sd``: Prometheus HTTP service discovery, one ``/probe`` target per configured account.

With ``http_sd_configs`` pointing here, adding an account to the exporter's config (and
reloading it) is all it takes for Prometheus to scrape it: no edit of the Prometheus config.
Each target group is the exporter's own address with the labels Prometheus needs to probe that
one account, so relabeling needs no regex:

- ``provider`` and ``account``: the account's, as its series carry them;
- ``__param_account``: becomes ``?account=NAME`` on the scrape URL;
- ``__metrics_path__``: ``/probe`` under the external URL's path (``--web.external-url``);
- ``__scheme__``: ``https`` when the exporter serves TLS or the external URL is https.

The address and scheme are the external URL's when one is set; otherwise the ``Host`` the
request was sent to and the scheme it came over, which is how the Prometheus that asks
reaches the exporter.
"""

from __future__ import annotations

from aiohttp import web

from exporter.service import Exporter
from exporter.web.routes import WebRoutes

__all__ = ["targets"]


def _address(request: web.Request, routes: WebRoutes) -> str:
    if routes.external_url is not None:
        return routes.external_url.netloc
    if host := request.headers.get("Host"):
        return host
    # HTTP/1.0 without Host: the address the connection came in on.
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    host, port = sockname[:2] if sockname else ("localhost", 9866)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def targets(request: web.Request, exporter: Exporter, routes: WebRoutes) -> list[dict[str, object]]:
    """The HTTP SD answer: one target group per account of the config now loaded."""
    address = _address(request, routes)
    scheme = routes.external_url.scheme if routes.external_url else request.scheme
    accounts = exporter.config.accounts if exporter.config is not None else ()
    return [
        {
            "targets": [address],
            "labels": {
                "provider": account.provider,
                "account": account.name,
                "__param_account": account.name,
                "__metrics_path__": routes.link("/probe"),
                "__scheme__": scheme,
            },
        }
        for account in accounts
    ]
