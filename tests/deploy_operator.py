"""What the tests copy from the Prometheus Operator, each copy naming where it came from.

No package on PyPI or npm ships the operator's CRD schemas as data, so the fields below are
copied by hand from prometheus-operator v0.93.0 (github.com/prometheus-operator/
prometheus-operator, tag v0.93.0), and so is the scrape config it generates for a Probe.
Compare against a newer tag before raising the version named here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

OPERATOR_VERSION = "v0.93.0"

# ---- the CRDs' field lists --------------------------------------------------------------------
# From prometheus-operator v0.93.0, example/prometheus-operator-crd/monitoring.coreos.com_*.yaml,
# version v1, openAPIV3Schema: the `properties` keys of each object named in the comment.

# servicemonitors: spec
SERVICEMONITOR_SPEC = {
    "attachMetadata",
    "bodySizeLimit",
    "convertClassicHistogramsToNHCB",
    "endpoints",
    "fallbackScrapeProtocol",
    "jobLabel",
    "keepDroppedTargets",
    "labelLimit",
    "labelNameLengthLimit",
    "labelValueLengthLimit",
    "namespaceSelector",
    "nativeHistogramBucketLimit",
    "nativeHistogramMinBucketFactor",
    "podTargetLabels",
    "sampleLimit",
    "scrapeClass",
    "scrapeClassicHistograms",
    "scrapeNativeHistograms",
    "scrapeProtocols",
    "selector",
    "selectorMechanism",
    "serviceDiscoveryRole",
    "targetLabels",
    "targetLimit",
}
# servicemonitors: spec.endpoints[]
SERVICEMONITOR_ENDPOINT = {
    "authorization",
    "basicAuth",
    "bearerTokenFile",
    "bearerTokenSecret",
    "enableHttp2",
    "filterRunning",
    "followRedirects",
    "honorLabels",
    "honorTimestamps",
    "interval",
    "metricRelabelings",
    "noProxy",
    "oauth2",
    "params",
    "path",
    "port",
    "proxyConnectHeader",
    "proxyFromEnvironment",
    "proxyUrl",
    "relabelings",
    "scheme",
    "scrapeTimeout",
    "targetPort",
    "tlsConfig",
    "trackTimestampsStaleness",
}
# probes: spec
PROBE_SPEC = {
    "authorization",
    "basicAuth",
    "bearerTokenSecret",
    "convertClassicHistogramsToNHCB",
    "enableHttp2",
    "fallbackScrapeProtocol",
    "followRedirects",
    "interval",
    "jobName",
    "keepDroppedTargets",
    "labelLimit",
    "labelNameLengthLimit",
    "labelValueLengthLimit",
    "metricRelabelings",
    "module",
    "nativeHistogramBucketLimit",
    "nativeHistogramMinBucketFactor",
    "oauth2",
    "params",
    "prober",
    "sampleLimit",
    "scrapeClass",
    "scrapeClassicHistograms",
    "scrapeNativeHistograms",
    "scrapeProtocols",
    "scrapeTimeout",
    "targetLimit",
    "targets",
    "tlsConfig",
}
# probes: spec.prober (required: url)
PROBE_PROBER = {
    "noProxy",
    "path",
    "proxyConnectHeader",
    "proxyFromEnvironment",
    "proxyUrl",
    "scheme",
    "url",
}
# probes: spec.targets.staticConfig
PROBE_STATIC_CONFIG = {"labels", "relabelingConfigs", "static"}
# prometheusrules: spec.groups[] (required: name) and spec.groups[].rules[] (required: expr)
RULE_GROUP = {
    "interval",
    "labels",
    "limit",
    "name",
    "partial_response_strategy",
    "query_offset",
    "rules",
}
RULE = {"alert", "annotations", "expr", "for", "keep_firing_for", "labels", "record"}
# Every RelabelConfig (servicemonitors: spec.endpoints[].relabelings[]; the same in probes).
RELABEL_CONFIG = {
    "action",
    "modulus",
    "regex",
    "replacement",
    "separator",
    "sourceLabels",
    "targetLabel",
}
# RelabelConfig.action's enum, which lists each action lower-case and capitalised.
RELABEL_ACTIONS = {
    "replace",
    "keep",
    "drop",
    "hashmod",
    "labelmap",
    "labeldrop",
    "labelkeep",
    "lowercase",
    "uppercase",
    "keepequal",
    "dropequal",
}
RELABEL_ACTIONS |= {
    "Replace",
    "Keep",
    "Drop",
    "HashMod",
    "LabelMap",
    "LabelDrop",
    "LabelKeep",
    "Lowercase",
    "Uppercase",
    "KeepEqual",
    "DropEqual",
}
# The `pattern` of every Duration field (spec.endpoints[].interval, scrapeTimeout, ...).
DURATION = re.compile(
    r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
)
_DURATION_UNITS = {"y": 365 * 86400, "w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}


def seconds(value: Any) -> float:
    """A Duration such as ``1m30s`` in seconds (Prometheus' units: a year is 365 days)."""
    assert isinstance(value, str), f"{value!r} is not a duration"
    assert DURATION.fullmatch(value), f"{value!r} is not a Prometheus duration"
    units = {**_DURATION_UNITS, "ms": 0.001}
    return sum(int(n) * units[unit] for n, unit in re.findall(r"(\d+)(ms|y|w|d|h|m|s)", value))


# ---- the scrape config the operator generates -------------------------------------------------


def to_prometheus_relabel(config: Mapping[str, Any]) -> dict[str, Any]:
    """A RelabelConfig as Prometheus config, as prometheus-operator v0.93.0 writes it
    (pkg/prometheus/promcfg.go, generateRelabelConfig: snake_case keys, action lower-cased).
    """
    names = {"sourceLabels": "source_labels", "targetLabel": "target_label"}
    result = {names.get(k, k): v for k, v in config.items()}
    if "action" in result:
        result["action"] = str(result["action"]).lower()
    return result


def probe_scrape_config(
    probe: Mapping[str, Any], prober: str, targets: list[str] | None = None
) -> dict[str, Any]:
    """The scrape config prometheus-operator v0.93.0 generates for a static-target Probe in
    namespace "test", with the prober's URL replaced by ``prober``.

    From pkg/prometheus/promcfg.go at v0.93.0 (initRelabelings, generateProbeConfig): job into
    __tmp_prometheus_job_name, job from jobName, then for staticConfig __param_target and
    instance from the target, __address__ = prober URL, then the Probe's relabelingConfigs; the
    static config's labels default to {namespace: <the Probe's namespace>}.
    """
    spec = probe["spec"]
    static = spec["targets"]["staticConfig"]
    relabel: list[dict[str, Any]] = [
        {"source_labels": ["job"], "target_label": "__tmp_prometheus_job_name"},
        {"target_label": "job", "replacement": spec["jobName"]},
        {"source_labels": ["__address__"], "target_label": "__param_target"},
        {"source_labels": ["__param_target"], "target_label": "instance"},
        {"target_label": "__address__", "replacement": prober},
    ]
    relabel += [to_prometheus_relabel(r) for r in static.get("relabelingConfigs", [])]
    return {
        "job_name": f"probe/test/{probe['metadata']['name']}",
        "metrics_path": spec["prober"]["path"],
        "scheme": spec["prober"].get("scheme", "http"),
        "static_configs": [
            {"targets": targets or static["static"], "labels": {"namespace": "test"}}
        ],
        "relabel_configs": relabel,
    }


def servicemonitor_scrape_config(
    monitor: Mapping[str, Any], service: Mapping[str, Any], address: str
) -> dict[str, Any]:
    """A ServiceMonitor's first endpoint as a static scrape config: its path, its
    metricRelabelings, and the job label the operator takes from the Service's label named by
    spec.jobLabel (prometheus-operator v0.93.0, Documentation/api-reference/api.md,
    ServiceMonitorSpec.jobLabel). The Kubernetes service discovery itself is left out.
    """
    endpoint = monitor["spec"]["endpoints"][0]
    job = service["metadata"]["labels"][monitor["spec"]["jobLabel"]]
    return {
        "job_name": job,
        "metrics_path": endpoint.get("path", "/metrics"),
        "static_configs": [{"targets": [address]}],
        "metric_relabel_configs": [
            to_prometheus_relabel(r) for r in endpoint.get("metricRelabelings", [])
        ],
    }
