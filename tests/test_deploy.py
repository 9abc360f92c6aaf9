"""The deploy kit checked against itself and against the gateway (no Docker engine or cluster
here: Prometheus itself is exercised in test_prometheus.py). Each check is something that would
break a real deployment: a mount of a file that does not exist, a probe on the wrong port, a
setting the gateway does not know (it would be silently ignored), a root container."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from gateway.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
KUBE = DEPLOY / "kubernetes"


def setting_names() -> set[str]:
    names = {f"GATEWAY_{name.upper()}" for name in Settings.model_fields}
    return names | {"PROMETHEUS_MULTIPROC_DIR"}


def settings_from(env: dict[str, str]) -> Settings:
    prefix = "GATEWAY_"
    values = {k.removeprefix(prefix).lower(): v for k, v in env.items() if k.startswith(prefix)}
    return Settings(**values)


def kube_documents() -> dict[str, dict[str, Any]]:
    kustomization = yaml.safe_load((KUBE / "kustomization.yaml").read_text())
    out: dict[str, dict[str, Any]] = {}
    for resource in kustomization["resources"]:
        for doc in yaml.safe_load_all((KUBE / resource).read_text()):
            out[doc["kind"]] = doc
    return out


def test_compose_mounts_builds_and_wires_what_exists() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"gateway", "prometheus", "grafana"}
    build = services["gateway"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).is_file()
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in compose["volumes"], f"{name} uses undeclared volume {source}"
    env = services["gateway"]["environment"]
    assert set(env) <= setting_names()
    settings_from(env)  # valid values

    scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (job,) = scrape["scrape_configs"]
    assert job["static_configs"][0]["targets"] == [f"gateway:{env['GATEWAY_PORT']}"]
    assert job["metrics_path"] == "/metrics"
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]
    assert "./prometheus:/etc/prometheus:ro" in services["prometheus"]["volumes"]
    for rule_file in scrape["rule_files"]:
        assert (DEPLOY / "prometheus" / rule_file).is_file()

    datasource = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"][0]
    assert datasource["url"] == "http://prometheus:9090" and datasource["uid"] == "prometheus"
    provider = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "dashboards" / "kontext-gateway.yml").read_text()
    )["providers"][0]
    assert f"./grafana/dashboards:{provider['options']['path']}:ro" in services["grafana"]["volumes"]


def test_kubernetes_manifests_fit_together_and_the_gateway() -> None:
    docs = kube_documents()
    deployment, service, config, claim = (
        docs["Deployment"], docs["Service"], docs["ConfigMap"], docs["PersistentVolumeClaim"]
    )
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    # One writer on SQLite: one replica, never two pods at once on the volume.
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"

    (container,) = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == int(config["data"]["GATEWAY_PORT"])
    assert service["spec"]["ports"][0]["targetPort"] in ports
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(ports["http"])
    assert pod["metadata"]["annotations"]["prometheus.io/path"] == "/metrics"

    assert container["envFrom"] == [{"configMapRef": {"name": config["metadata"]["name"]}}]
    assert set(config["data"]) <= setting_names()
    settings = settings_from(config["data"])
    assert settings.host == "0.0.0.0" and settings.log_format == "json"  # noqa: S104 (in a pod)
    for variable in container["env"]:
        assert variable["name"] in setting_names()
        ref = variable["valueFrom"]["secretKeyRef"]
        assert ref["name"] == "kontext-gateway-secrets"
    assert {v["name"] for v in container["env"]} >= {"GATEWAY_WAVESPEED_API_KEY", "GATEWAY_ADMIN_TOKEN"}
    assert "Secret" not in docs, "secrets are created by the operator, never committed"

    security = pod["spec"]["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] != 0
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    database = settings.database_path
    assert any(database.startswith(path + "/") for path in mounts), "the database is on a volume"
    # Shutdown: the pod is given longer than the gateway's own grace period.
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > float(
        config["data"]["GATEWAY_SHUTDOWN_GRACE_SECONDS"]
    )


def test_dockerfile_is_small_non_root_and_checks_health() -> None:
    text = (ROOT / "Dockerfile").read_text()
    final = text[text.rindex("\nFROM "):]
    assert "-slim" in final.splitlines()[1]
    user = re.search(r"^USER (\S+)", final, re.M)
    assert user is not None and user.group(1).split(":")[0] not in ("0", "root")
    assert re.search(r"^HEALTHCHECK .*\n?.*/healthz", final, re.M)
    assert "EXPOSE 8000" in final and "GATEWAY_HOST=0.0.0.0" in final
    # The code and the document served at /openapi.json (gateway/api/ops.py looks beside gateway/).
    assert "COPY gateway ./gateway" in final and "COPY openapi ./openapi" in final
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "tests"} <= set(ignored)


def test_dashboard_panels_are_well_formed() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "kontext-gateway.json").read_text())
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            used = set(re.findall(r"\$(\w+)", target["expr"])) - {"__rate_interval", "__range"}
            assert used <= variables, (panel["title"], used)
            assert "gateway_" in target["expr"]
