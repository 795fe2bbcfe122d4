"""The Kubernetes manifests in deploy/kubernetes and their kustomization.

kubernetes-validate checks the core manifests against the Kubernetes OpenAPI schemas, kubectl
kustomize builds the kustomization (skipped without kubectl), and the Prometheus Operator's
resources are checked against the CRD fields copied in tests/deploy_operator.py, which names the
operator release they come from.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests import deploy_operator as operator
from tests.deploy_support import (
    COMPOSE_DIR,
    CONFIG_PATH,
    CRD_GROUP,
    ENV_REF,
    EXPORTER_PORT,
    K8S_DIR,
    PROMETHEUS_RULES,
    PROVIDERS,
    RULES_FILE,
    check_exporter_config,
    exporter_container,
    is_crd,
    k8s_docs,
    k8s_files,
    k8s_object,
    k8s_objects,
    kustomization,
    load_docs,
    run,
)
from tests.support import ROOT, SELF_METRICS_PATH, load_mapping

SYNC_RULES = K8S_DIR / "sync-rules.py"
# Fields that hold credentials (each also accepts <field>_file); they must never be literal.
SECRET_FIELDS = {
    "identifier",
    "key",
    "api_key",
    "token",
    "auth_key",
    "auth_secret",
    "password",
    "client_key",
    "api_token",
}
# Oldest Kubernetes minor still commonly run, and the newest the installed schemas know.
K8S_VERSIONS = ("1.30.0", str(kubernetes_validate.latest_version()))


def configmap_config() -> dict[str, Any]:
    text = k8s_object("ConfigMap")["data"]["config.yaml"]
    data = yaml.safe_load(text)
    assert isinstance(data, dict)
    return data


def secret_mounts() -> dict[str, set[str]]:
    """Secret volume mount path -> file names the mount provides."""
    pod = k8s_object("Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounts: dict[str, set[str]] = {}
    for mount in exporter_container().get("volumeMounts", []):
        secret = volumes[mount["name"]].get("secret")
        if secret is not None:
            mounts[mount["mountPath"].rstrip("/")] = {i["path"] for i in secret["items"]}
    return mounts


def secret_example_keys() -> set[str]:
    secret = load_docs(K8S_DIR / "secret.example.yaml")
    assert len(secret) == 1
    assert secret[0]["kind"] == "Secret"
    return set(secret[0]["stringData"])


def test_kustomization_lists_every_manifest() -> None:
    resources = kustomization()["resources"]
    assert len(resources) == len(set(resources)), "duplicate resources"
    missing = [r for r in resources if not (K8S_DIR / r).is_file()]
    assert not missing, f"kustomization.yaml lists missing files: {missing}"
    # *.example.yaml are templates applied by hand (the Secret); never re-applied over the
    # real credentials by `kubectl apply -k`.
    manifests = {p.name for p in k8s_files() if not p.name.endswith(".example.yaml")}
    assert set(resources) == manifests


def core_doc_params() -> list[Any]:
    return [
        pytest.param(doc, version, id=f"{name}@{version}")
        for name, doc in k8s_docs()
        if not is_crd(doc)
        for version in K8S_VERSIONS
    ]


@pytest.mark.parametrize(("doc", "version"), core_doc_params())
def test_core_manifest_validates(doc: dict[str, Any], version: str) -> None:
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = ".".join(str(p) for p in exc.path)
        pytest.fail(f"{doc['kind']} invalid for Kubernetes {version} at {where}: {exc.message}")
    except kubernetes_validate.SchemaNotFoundError as exc:
        pytest.fail(exc.message)


def test_expected_kinds_present() -> None:
    kinds = {str(doc["kind"]) for _, doc in k8s_docs()}
    expected = {"ConfigMap", "Deployment", "Service", "Secret", "ServiceMonitor", "Probe"}
    assert expected | {"PrometheusRule"} <= kinds
    for _, doc in k8s_docs():
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"])
        assert "namespace" not in doc["metadata"] or doc["kind"] == "Secret", (
            "the namespace comes from kustomization.yaml"
        )


def _check_relabelings(configs: list[dict[str, Any]], where: str) -> None:
    for config in configs:
        assert set(config) <= operator.RELABEL_CONFIG, f"{where}: {sorted(config)}"
        action = str(config.get("action", "replace"))
        assert action in operator.RELABEL_ACTIONS, f"{where}: action {action}"
        if action.lower() in {"replace", "hashmod", "lowercase", "uppercase"}:
            assert "targetLabel" in config, f"{where}: {action} needs targetLabel"
        if "regex" in config:
            re.compile(str(config["regex"]))


def _check_durations(spec: dict[str, Any], where: str) -> None:
    for key in ("interval", "scrapeTimeout"):
        if key in spec:
            assert isinstance(spec[key], str), f"{where} {key}: {spec[key]!r}"
            assert operator.DURATION.fullmatch(spec[key]), f"{where} {key}: {spec[key]!r}"


def test_crd_manifests_structure() -> None:
    """Against prometheus-operator's CRD fields (tests/deploy_operator.py names the version):
    typos and misplaced keys that the API server would reject or silently prune.
    """
    for name, doc in k8s_docs():
        if not is_crd(doc):
            continue
        assert doc["apiVersion"] == f"{CRD_GROUP}/v1", name
        assert set(doc) == {"apiVersion", "kind", "metadata", "spec"}, name
        spec = doc["spec"]
        if doc["kind"] == "ServiceMonitor":
            assert set(spec) <= operator.SERVICEMONITOR_SPEC, name
            assert spec["selector"]["matchLabels"], name
            assert spec["endpoints"], name
            for endpoint in spec["endpoints"]:
                assert set(endpoint) <= operator.SERVICEMONITOR_ENDPOINT, f"{name}: {endpoint}"
                assert "port" in endpoint or "targetPort" in endpoint, name
                _check_durations(endpoint, name)
                _check_relabelings(endpoint.get("relabelings", []), name)
                _check_relabelings(endpoint.get("metricRelabelings", []), name)
        elif doc["kind"] == "Probe":
            assert set(spec) <= operator.PROBE_SPEC, name
            assert set(spec["prober"]) <= operator.PROBE_PROBER, name
            assert spec["prober"]["url"], name
            assert set(spec["targets"]) == {"staticConfig"}, name
            static = spec["targets"]["staticConfig"]
            assert set(static) <= operator.PROBE_STATIC_CONFIG, name
            _check_durations(spec, name)
            _check_relabelings(static.get("relabelingConfigs", []), name)
            _check_relabelings(spec.get("metricRelabelings", []), name)
        elif doc["kind"] == "PrometheusRule":
            assert set(spec) == {"groups"}, name
            for group in spec["groups"]:
                assert set(group) <= operator.RULE_GROUP, f"{name}: {sorted(group)}"
                for rule in group["rules"]:
                    assert set(rule) <= operator.RULE, f"{name}: {sorted(rule)}"
                    assert ("record" in rule) != ("alert" in rule), f"{name}: {rule}"
                    assert str(rule["expr"]).strip(), f"{name}: {rule}"
        else:
            pytest.fail(f"{name}: unexpected {CRD_GROUP} kind {doc['kind']}")


def test_deployment_hardening() -> None:
    deployment = k8s_object("Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    assert pod.get("automountServiceAccountToken") is False

    container = exporter_container()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http-metrics": EXPORTER_PORT}
    for probe, path in (("livenessProbe", "/-/healthy"), ("readinessProbe", "/-/ready")):
        http = container[probe]["httpGet"]
        assert http["path"] == path
        assert http["port"] in ("http-metrics", EXPORTER_PORT)

    resources = container["resources"]
    for section in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(resources[section]), f"resources.{section}"

    pod_security = pod.get("securityContext", {})
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert security.get("runAsNonRoot", pod_security.get("runAsNonRoot")) is True
    uid = security.get("runAsUser", pod_security.get("runAsUser"))
    assert isinstance(uid, int)
    assert uid != 0
    seccomp = security.get("seccompProfile", pod_security.get("seccompProfile"))
    assert seccomp == {"type": "RuntimeDefault"}

    # The config file the args name is what the ConfigMap volume provides.
    args = container["args"]
    assert f"--config.file={CONFIG_PATH}" in args
    volumes = {v["name"]: v for v in pod["volumes"]}
    config_mount = next(
        m for m in container["volumeMounts"] if m["mountPath"] == str(Path(CONFIG_PATH).parent)
    )
    config_volume = volumes[config_mount["name"]]["configMap"]
    assert config_volume["name"] == k8s_object("ConfigMap")["metadata"]["name"]
    assert "config.yaml" in {
        i["path"] for i in config_volume.get("items", [{"path": "config.yaml"}])
    }
    # A writable /tmp, since the root filesystem is read-only.
    assert any(m["mountPath"] == "/tmp" for m in container["volumeMounts"])

    secret_name = load_docs(K8S_DIR / "secret.example.yaml")[0]["metadata"]["name"]
    keys = secret_example_keys()
    for env in container.get("env", []):
        ref = env.get("valueFrom", {}).get("secretKeyRef")
        if ref is not None:
            assert ref["name"] == secret_name, env["name"]
            assert ref["key"] in keys, env["name"]
    for volume in pod["volumes"]:
        if "secret" in volume:
            assert volume["secret"]["secretName"] == secret_name
            assert {i["key"] for i in volume["secret"]["items"]} <= keys


def test_service_selects_the_pods() -> None:
    service = k8s_object("Service")
    labels = k8s_object("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    ports = service["spec"]["ports"]
    assert [(p["name"], p["port"]) for p in ports] == [("http-metrics", EXPORTER_PORT)]
    assert ports[0]["targetPort"] in ("http-metrics", EXPORTER_PORT)


def test_configmap_config_secrets_come_from_env_or_files() -> None:
    config = configmap_config()
    accounts = config["accounts"]
    assert {a["provider"] for a in accounts} == PROVIDERS
    assert len({a["name"] for a in accounts}) == len(accounts)

    container_env = {e["name"] for e in exporter_container().get("env", [])}
    mounts = secret_mounts()
    for account in accounts:
        for field, value in account.items():
            if field in SECRET_FIELDS:
                assert re.fullmatch(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}", str(value)), (
                    f"{account['name']}.{field}: secrets only as ${{VAR}} or {field}_file"
                )
            if field.endswith("_file"):
                assert field.removesuffix("_file") in SECRET_FIELDS, field
                folder, _, name = str(value).rpartition("/")
                assert folder.startswith("/run/secrets"), value
                assert name in mounts.get(folder, set()), f"{value} is not mounted from the Secret"
    text = k8s_object("ConfigMap")["data"]["config.yaml"]
    missing = set(ENV_REF.findall(text)) - container_env
    assert not missing, f"the Deployment sets no {sorted(missing)}"


def test_configmap_config_validates(tmp_path: Path) -> None:
    args = [str(a) for a in exporter_container()["args"]]
    check_exporter_config(k8s_object("ConfigMap")["data"]["config.yaml"], tmp_path, args)


def test_servicemonitor_targets_the_service() -> None:
    monitor = k8s_object("ServiceMonitor")
    service = k8s_object("Service")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    port_names = {p["name"] for p in service["spec"]["ports"]}
    endpoints = monitor["spec"]["endpoints"]
    assert endpoints
    for endpoint in endpoints:
        assert endpoint["port"] in port_names
        # Self-metrics only: the per-dialog series come from the Probes, and /metrics would make
        # every pod fetch every account again on each scrape.
        assert endpoint.get("path", "/metrics") == SELF_METRICS_PATH
        # Nothing to drop (a leftover rule could only hide self-metrics).
        assert not endpoint.get("metricRelabelings"), endpoint["metricRelabelings"]
        # No upstream fetch behind it: a normal interval, not the 2m a fetching scrape needed.
        assert operator.seconds(endpoint["interval"]) <= 60
        assert operator.seconds(endpoint["scrapeTimeout"]) < operator.seconds(endpoint["interval"])


def test_probes_cover_every_account_once() -> None:
    probes = k8s_objects("Probe")
    assert probes
    service = k8s_object("Service")
    namespace = kustomization()["namespace"]
    expected_url = f"{service['metadata']['name']}.{namespace}.svc:{EXPORTER_PORT}"
    probed: list[str] = []
    for probe in probes:
        spec = probe["spec"]
        assert spec["prober"]["url"] == expected_url
        assert spec["prober"].get("path") == "/probe"
        assert "module" not in spec
        static = spec["targets"]["staticConfig"]
        assert "labels" not in static, "target labels would clash with the exporter's labels"
        targets = static["static"]
        assert targets
        assert all(isinstance(t, str) for t in targets)
        probed.extend(targets)
        relabelings = static["relabelingConfigs"]
        assert {"sourceLabels": ["__param_target"], "targetLabel": "__param_account"} in relabelings
        assert any(
            r.get("action") == "labeldrop" and r.get("regex") == "__param_target"
            for r in relabelings
        )
    names = [a["name"] for a in configmap_config()["accounts"]]
    assert sorted(probed) == sorted(names)


@pytest.mark.parametrize(
    ("rules_file", "name"),
    [pytest.param(path, name, id=path.name) for path, name in PROMETHEUS_RULES.items()],
)
def test_prometheusrule_equals_rules_file(rules_file: Path, name: str) -> None:
    assert rules_file.is_file(), f"{rules_file.relative_to(ROOT)} is missing"
    rules = [r for r in k8s_objects("PrometheusRule") if r["metadata"]["name"] == name]
    assert len(rules) == 1, f"no PrometheusRule {name}: run deploy/kubernetes/sync-rules.py"
    groups = load_mapping(rules_file)["groups"]
    assert groups, "the rules file has no groups"
    assert rules[0]["spec"]["groups"] == groups, "run deploy/kubernetes/sync-rules.py"
    for group in groups:
        assert group["name"]
        assert group["rules"]


def test_sync_rules_check() -> None:
    result = run([sys.executable, str(SYNC_RULES), "--check"], cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_scrape_job_names_match_the_alerts() -> None:
    """The alerts select the exporter's targets by job; every deployment must use those names."""
    matchers = re.findall(
        r'\bup\{[^}]*\bjob(=~?)"([^"]*)"',
        " ".join(
            str(rule.get("expr", ""))
            for group in load_mapping(RULES_FILE)["groups"]
            for rule in group["rules"]
        ),
    )
    exact = {value for op, value in matchers if op == "="}
    patterns = {value for op, value in matchers if op == "=~"}
    assert exact, "no up{job=...} alert in the rules file"

    # Kubernetes: the ServiceMonitor's job is the Service's jobLabel value; Probes set jobName.
    monitor = k8s_object("ServiceMonitor")
    monitor_job = k8s_object("Service")["metadata"]["labels"][monitor["spec"]["jobLabel"]]
    probe_jobs = {p["spec"]["jobName"] for p in k8s_objects("Probe")}
    # Compose: the job scraping the exporter.
    compose_prometheus = load_mapping(COMPOSE_DIR / "prometheus.yml")
    compose_jobs = {
        job["job_name"]
        for job in compose_prometheus["scrape_configs"]
        for static in job.get("static_configs", [])
        if f"exporter:{EXPORTER_PORT}" in static["targets"]
    }
    for always_present in (monitor_job, *compose_jobs):
        assert always_present in exact, f"job {always_present} is not what {exact} expects"
    # ExporterDown covers the probe jobs (one target per account) with a pattern that leaves
    # out the exporter's own job (one target per exporter), which it names exactly.
    assert patterns, "no up{job=~...} alert for the probe jobs"
    for job in probe_jobs:
        assert job not in exact, f"probe job {job} would count as an exporter"
        assert any(re.fullmatch(pattern, job) for pattern in patterns), f"job {job} escapes"
    for job in (monitor_job, *compose_jobs):
        assert not any(re.fullmatch(pattern, job) for pattern in patterns), job


def test_kustomize_build() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed")
    result = run([kubectl, "kustomize", str(K8S_DIR)])
    assert result.returncode == 0, result.stderr
    objects = [d for d in yaml.safe_load_all(result.stdout) if d]
    listed = [doc for r in kustomization()["resources"] for doc in load_docs(K8S_DIR / r)]
    assert len(objects) == len(listed)
    namespace = kustomization()["namespace"]
    assert all(o["metadata"]["namespace"] == namespace for o in objects)
    images = {
        c["image"]
        for o in objects
        if o["kind"] == "Deployment"
        for c in o["spec"]["template"]["spec"]["containers"]
    }
    assert len(images) == 1
    assert next(iter(images)).rsplit(":", 1)[1] not in {"", "latest"}


def test_readme_shard_overlay_builds(tmp_path: Path) -> None:
    """The per-shard overlay shown in deploy/README.md builds against this kustomization."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed")
    readme = (ROOT / "deploy" / "README.md").read_text(encoding="utf-8")
    match = re.search(r"```yaml\n(# shards/b/kustomization.yaml\n.*?)```", readme, re.DOTALL)
    assert match, "deploy/README.md has no shards/b/kustomization.yaml example"
    shutil.copytree(K8S_DIR, tmp_path / "deploy" / "kubernetes")
    shard = tmp_path / "shards" / "b"
    shard.mkdir(parents=True)
    (shard / "kustomization.yaml").write_text(match.group(1), encoding="utf-8")
    probe = next(p for p in k8s_objects("Probe"))
    probe["metadata"]["name"] = "chat-unread"
    probe["spec"]["prober"]["url"] = "chat-unread-exporter-shard-b.monitoring.svc:9866"
    probe["spec"]["targets"]["staticConfig"]["static"] = ["sb-prod"]
    (shard / "probe.yaml").write_text(yaml.safe_dump(probe), encoding="utf-8")
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "chat-unread-exporter"},
        "data": {"config.yaml": "accounts: []\n"},
    }
    (shard / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")

    result = run([kubectl, "kustomize", str(shard)])
    assert result.returncode == 0, result.stderr
    objects = {(o["kind"], o["metadata"]["name"]): o for o in yaml.safe_load_all(result.stdout)}
    kinds = sorted(kind for kind, _ in objects)
    assert "ServiceMonitor" not in kinds
    assert "PrometheusRule" not in kinds
    assert kinds.count("Probe") == 1
    name = "chat-unread-exporter-shard-b"
    selector = objects[("Deployment", name)]["spec"]["selector"]["matchLabels"]
    assert selector["app.kubernetes.io/instance"] == "shard-b"
    assert objects[("Service", name)]["spec"]["selector"] == selector
    assert objects[("ConfigMap", name)]["data"]["config.yaml"] == "accounts: []\n"
    volumes = objects[("Deployment", name)]["spec"]["template"]["spec"]["volumes"]
    # kustomize renamed the ConfigMap reference along with the ConfigMap.
    assert [v["configMap"]["name"] for v in volumes if "configMap" in v] == [name]
