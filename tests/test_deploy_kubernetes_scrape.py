"""The Kubernetes scrape setup run for real: the Probes and the ServiceMonitor, turned into the
scrape configs the Prometheus Operator would generate (tests/deploy_operator.py, which names the
operator release it copies), scraped by a real Prometheus server, first from a fake exporter
that records every request, then from the real exporter in demo mode with the PrometheusRules.
Prometheus skips with a reason when absent, unless CHAT_UNREAD_REQUIRE_PROMETHEUS=1 (CI).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import sys
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.deploy_operator import probe_scrape_config, servicemonitor_scrape_config
from tests.deploy_support import (
    PROMETHEUS_RULES,
    compose_service,
    dockerfile_stages,
    interpolate,
    k8s_object,
    k8s_objects,
    run,
)
from tests.support import (
    DEMO_DIALOGS,
    DIALOG_METRICS,
    ROOT,
    SELF_METRICS_PATH,
    free_port,
    prometheus_tool,
    start_server,
    wait_for,
    wait_ready,
)


def monitor_scrape_config(address: str) -> dict[str, Any]:
    """The ServiceMonitor's scrape config, with ``address`` as its one target."""
    return servicemonitor_scrape_config(
        k8s_object("ServiceMonitor"), k8s_object("Service"), address
    )


class _FakeExporter(BaseHTTPRequestHandler):
    """The exporter's endpoints in miniature, recording every request.

    /probe?account=X: X's dialog series; /metrics: every account's dialog series plus the
    self-metrics; /exporter-metrics: the self-metrics only.
    """

    requests: list[str] = []  # noqa: RUF012 - shared on purpose, reset per test
    lock = threading.Lock()

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        with self.lock:
            self.requests.append(self.path)
        accounts = {"/probe": query.get("account", []), "/metrics": ["all"]}.get(url.path, [])
        lines = []
        for account in accounts:
            labels = f'provider="crisp",account="{account}",dialog="backlog"'
            lines += [f"chat_unread_up{{{labels}}} 1", f"chat_unread_messages{{{labels}}} 3"]
        if url.path in ("/metrics", SELF_METRICS_PATH):
            lines.append('chat_unread_fetch_duration_seconds{provider="crisp",account="all"} 0.1')
            lines.append('chat_unread_exporter_build_info{version="0.1.0"} 1')
        body = ("\n".join(lines) + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def fake_exporter() -> Iterator[tuple[str, list[str]]]:
    _FakeExporter.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeExporter)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", _FakeExporter.requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextlib.contextmanager
def running_prometheus(config: Mapping[str, Any], tmp_path: Path) -> Iterator[int]:
    """A real Prometheus server on a free loopback port with ``config``; yields the port."""
    prometheus = prometheus_tool("prometheus")
    config_file = tmp_path / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(dict(config)), encoding="utf-8")
    port = free_port()
    server = start_server(
        "prometheus",
        [
            prometheus,
            f"--config.file={config_file}",
            f"--storage.tsdb.path={tmp_path / 'prometheus-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        port,
        tmp_path,
    )
    try:
        wait_ready(server)
        yield port
    finally:
        server.stop()


@contextlib.contextmanager
def running_demo_exporter(args: list[str], tmp_path: Path) -> Iterator[int]:
    """The real exporter (``python -m exporter``) with ``args`` on a free loopback port."""
    if importlib.util.find_spec("exporter.cli") is None:
        pytest.skip("exporter/cli.py not written yet")
    port = free_port()
    server = start_server(
        "exporter",
        [sys.executable, "-m", "exporter", *args, f"--web.listen-address=127.0.0.1:{port}"],
        port,
        tmp_path,
        cwd=ROOT,
    )
    try:
        wait_ready(server)
        yield port
    finally:
        server.stop()


def query_prometheus(port: int, promql: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            payload = json.load(response)
    except OSError:
        return []
    result: list[dict[str, Any]] = payload["data"]["result"]
    return result


def scrape_counters(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The per-account scrape and upstream request counters an exporter endpoint serves."""
    counted = (
        "chat_unread_cache_hits_total",
        "chat_unread_cache_misses_total",
        "chat_unread_upstream_requests_total",
    )
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name in counted
    }


def test_probe_and_servicemonitor_relabeling_in_prometheus(
    tmp_path: Path, fake_exporter: tuple[str, list[str]]
) -> None:
    address, requests = fake_exporter
    probes = k8s_objects("Probe")
    monitor = monitor_scrape_config(address)
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [*(probe_scrape_config(p, address) for p in probes), monitor],
    }
    accounts = sorted(t for p in probes for t in p["spec"]["targets"]["staticConfig"]["static"])
    probe_jobs = {p["spec"]["jobName"] for p in probes}
    probe_selector = f"chat_unread_up{{job=~{json.dumps('|'.join(sorted(probe_jobs)))}}}"
    own_selector = f"{{job={json.dumps(monitor['job_name'])}}}"
    with running_prometheus(config, tmp_path) as port:
        wait_for(
            lambda: (
                len(query_prometheus(port, probe_selector)) == len(accounts)
                and bool(query_prometheus(port, own_selector))
            ),
            f"every target to be scraped (requests seen: {requests[:10]})",
        )
        probe_series = query_prometheus(port, probe_selector)
        own = query_prometheus(port, own_selector)

    # Each Probe target became exactly ?account=<name>, nothing else: the exporter answers an
    # unknown parameter such as ?target= with 400.
    probe_queries = [
        urllib.parse.parse_qs(urllib.parse.urlsplit(r).query)
        for r in requests
        if r.startswith("/probe")
    ]
    assert probe_queries
    assert all(set(q) == {"account"} and len(q["account"]) == 1 for q in probe_queries)
    assert sorted({q["account"][0] for q in probe_queries}) == accounts

    for series in probe_series:
        labels = series["metric"]
        assert labels["instance"] == labels["account"]
        assert not [name for name in labels if name.startswith("exported_")], labels
    assert sorted(s["metric"]["account"] for s in probe_series) == accounts

    # The ServiceMonitor asks for the self-metrics only, never for /metrics (which would fetch
    # every account again), and gets no per-dialog series from it.
    paths = {urllib.parse.urlsplit(r).path for r in requests}
    assert SELF_METRICS_PATH in paths
    assert paths == {"/probe", SELF_METRICS_PATH}, paths
    names = {s["metric"]["__name__"] for s in own}
    assert {"chat_unread_fetch_duration_seconds", "chat_unread_exporter_build_info"} <= names
    assert not names & set(DIALOG_METRICS), names
    assert not [s for s in own if "dialog" in s["metric"]], own


def test_kubernetes_scrape_setup_against_demo_exporter(tmp_path: Path) -> None:
    """Probes + ServiceMonitor + the PrometheusRules, against the real exporter in demo mode.

    The exporter runs with the compose stack's demo arguments; its four demo accounts stand in
    for the Probes' targets (one per provider, as the Probes are split).
    """
    compose_args = [interpolate(str(arg), {}) for arg in compose_service("exporter")["command"]]
    with running_demo_exporter(compose_args, tmp_path) as exporter_port:
        # The image's HEALTHCHECK command, run as written, against the running exporter.
        final = dockerfile_stages()[-1]
        healthcheck = next(c for c in final if c.cmd == "HEALTHCHECK")
        assert healthcheck.json
        assert healthcheck.value[0] == "CMD"
        command = list(healthcheck.value[1:])
        assert command[:2] == ["python", "-c"]
        url = f"http://127.0.0.1:{exporter_port}/-/healthy"
        env = {**os.environ, "CHAT_UNREAD_HEALTHCHECK_URL": url}
        assert run([sys.executable, "-c", command[2]], env=env).returncode == 0
        closed = {**env, "CHAT_UNREAD_HEALTHCHECK_URL": f"http://127.0.0.1:{free_port()}/"}
        assert run([sys.executable, "-c", command[2]], env=closed).returncode != 0

        address = f"127.0.0.1:{exporter_port}"
        probes = k8s_objects("Probe")
        monitor = monitor_scrape_config(address)
        demo_accounts = {f"demo-{p['metadata']['name'].rsplit('-', 1)[1]}": p for p in probes}
        scrape_configs = [
            probe_scrape_config(p, address, [account]) for account, p in demo_accounts.items()
        ]
        config = {
            "global": {
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "evaluation_interval": "1s",
            },
            "rule_files": [str(path) for path in PROMETHEUS_RULES],
            "scrape_configs": [*scrape_configs, monitor],
        }
        own_job = json.dumps(monitor["job_name"])
        probed = {p["metadata"]["name"].rsplit("-", 1)[1] for p in probes}
        probed_dialogs = len([d for d in DEMO_DIALOGS if d[0] in probed])
        with running_prometheus(config, tmp_path) as port:
            wait_for(
                lambda: (
                    len(query_prometheus(port, "up == 1")) == len(probes) + 1
                    and len(query_prometheus(port, "chat_unread:dialogs")) == probed_dialogs
                    # The Probes' fetches show in the pod's self-metrics.
                    and len(
                        query_prometheus(
                            port, f"chat_unread_fetch_duration_seconds{{job={own_job}}}"
                        )
                    )
                    == len(probes)
                ),
                "every target up and the recording rules evaluated",
                timeout=45,
            )
            up = query_prometheus(port, "chat_unread_up")
            duplicates = query_prometheus(
                port, "count by (provider, account, dialog) (chat_unread_messages) > 1"
            )
            build_info = query_prometheus(port, "chat_unread_exporter_build_info")
            own_targets = query_prometheus(port, f"up{{job={own_job}}}")
            own_dialog_series = query_prometheus(port, f'{{job={own_job},dialog!=""}}')
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/rules", timeout=5) as r:
                groups = json.load(r)["data"]["groups"]

        # Prometheus is gone, so only this test scrapes the exporter now. Scraping the
        # ServiceMonitor's path neither fetches upstream nor counts as a scrape of an account:
        # once a fetch still in flight has finished, the counters it serves stand still.
        monitor_url = f"http://127.0.0.1:{exporter_port}{monitor['metrics_path']}"
        readings = [scrape_counters(monitor_url)]
        assert readings[0], "no per-account counters on the ServiceMonitor's path"

        def settled() -> bool:
            readings.append(scrape_counters(monitor_url))
            return readings[-1] == readings[-2]

        wait_for(settled, "scrapes of the self-metrics to stop changing them", timeout=10)

    # The probed accounts' demo dialogs, all fetched, each stored once: from its Probe, none
    # from the monitor.
    assert len(up) == probed_dialogs
    assert all(s["value"][1] == "1" for s in up), up
    assert all(s["metric"]["instance"] == s["metric"]["account"] for s in up)
    assert not [n for s in up for n in s["metric"] if n.startswith("exported_")]
    assert not duplicates, duplicates
    assert {s["metric"]["job"] for s in up} == {p["spec"]["jobName"] for p in probes}
    # The ServiceMonitor's target is up and brings the self-metrics, and no dialog series.
    assert [s["value"][1] for s in own_targets] == ["1"]
    assert [s["metric"]["job"] for s in build_info] == [monitor["job_name"]]
    assert not own_dialog_series, own_dialog_series
    unhealthy = [
        (rule["name"], rule.get("lastError"))
        for group in groups
        for rule in group["rules"]
        if rule["health"] != "ok"
    ]
    assert not unhealthy, unhealthy
