"""Deployment files: the compose stack (PostgreSQL, migration, two replicas, load balancer,
HAPI + seeding) and the Kubernetes manifests, validated offline against the Kubernetes
schemas."""

from __future__ import annotations

import re
from typing import Any

import kubernetes_validate
import pytest
import yaml
from conftest import ROOT

from cds_service.config import ENV_NAMES

K8S = ROOT / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.31"
CONFIG_NAMES = set(ENV_NAMES.values())


def _compose() -> dict[str, Any]:
    compose: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text("utf-8"))
    return compose


def _manifests() -> dict[str, dict[str, Any]]:
    return {
        path.name: yaml.safe_load(path.read_text("utf-8"))
        for path in sorted(K8S.glob("*.yaml"))
        if path.name != "kustomization.yaml"
    }


def test_compose_runs_two_replicas_on_postgres_behind_a_load_balancer() -> None:
    """Two replicas share one PostgreSQL URL and pseudonym key, start after `db upgrade`,
    report ready on their own port; the load balancer sends traffic to exactly those ports
    and hides the operations endpoints; the HAPI seeding flow is still there."""
    services = _compose()["services"]
    assert {"fhir", "seed", "db", "migrate", "cds", "cds-2", "lb"} <= set(services)
    assert re.fullmatch(r"postgres:15\.\d+(-alpine)?", services["db"]["image"])
    assert services["migrate"]["command"] == ["cds-service", "db", "upgrade"]
    ports = []
    for name in ("cds", "cds-2"):
        replica = services[name]
        environment = replica["environment"]
        assert set(environment) <= CONFIG_NAMES
        assert environment["CDS_DATABASE_URL"].startswith("postgresql://cds:")
        assert environment["CDS_DATABASE_URL"].endswith("@127.0.0.1:55432/cds")
        assert environment["CDS_PSEUDONYM_KEY"]
        assert replica["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        command = replica["command"]
        assert command[:2] == ["cds-service", "serve"]
        port = command[command.index("--port") + 1]
        ports.append(port)
        assert f"127.0.0.1:{port}/readyz" in " ".join(replica["healthcheck"]["test"])
    assert services["cds"]["environment"] == services["cds-2"]["environment"]
    assert services["db"]["ports"] == ["127.0.0.1:55432:5432"]
    lb = services["lb"]
    source = lb["volumes"][0].split(":")[0]
    nginx = (ROOT / source).read_text("utf-8")
    upstream = re.findall(r"server 127\.0\.0\.1:(\d+)", nginx)
    assert sorted(upstream) == sorted(ports)
    assert "listen 127.0.0.1:8080" in nginx
    for path in ("/metrics", "/healthz", "/readyz"):
        assert f"location = {path} {{ return 404; }}" in nginx
    assert set(lb["depends_on"]) == {"cds", "cds-2"}
    assert services["seed"]["entrypoint"] == ["/bin/sh", "/seed-fhir.sh"]


@pytest.mark.parametrize("name", sorted(_manifests()))
def test_kubernetes_manifests_validate_against_the_schemas(name: str) -> None:
    """Each manifest is a valid Kubernetes object (strict: no unknown fields)."""
    kubernetes_validate.validate(_manifests()[name], KUBERNETES_VERSION, strict=True)


def test_kubernetes_validation_catches_mistakes() -> None:
    """The offline validator refuses a misspelt field (so the test above can fail)."""
    deployment = _manifests()["deployment.yaml"]
    deployment["spec"]["replicaz"] = deployment["spec"].pop("replicas")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_kubernetes_deployment_is_wired_for_replicas() -> None:
    """Several replicas; probes on /readyz and /healthz at the ops port from the ConfigMap,
    which the Service does not expose; the database URL, pseudonym key and trusted issuers
    come from Secrets; resource requests are set; every setting is one the service reads."""
    manifests = _manifests()
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text("utf-8"))
    assert sorted(kustomization["resources"]) == sorted(manifests)
    config = manifests["configmap.yaml"]["data"]
    assert set(config) <= CONFIG_NAMES
    deployment = manifests["deployment.yaml"]
    assert deployment["spec"]["replicas"] >= 2
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"][:2] == ["cds-service", "serve"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["ops"] == int(config["CDS_OPS_PORT"]) and config["CDS_OPS_ALLOW"] == ""
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "ops"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "ops"}
    assert container["resources"]["requests"]["cpu"]
    assert container["resources"]["requests"]["memory"]
    env = {e["name"]: e for e in container["env"]}
    assert env["CDS_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    for setting, volume in (
        ("CDS_PSEUDONYM_KEY_FILE", "pseudonym-key"),
        ("CDS_TRUSTED_ISSUERS_FILE", "trusted-issuers"),
    ):
        directory, _, file = config[setting].rpartition("/")
        assert mounts[volume] == directory
        assert volumes[volume]["secret"]["secretName"]
        assert file in {item["path"] for item in volumes[volume]["secret"]["items"]}
    service = manifests["service.yaml"]
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    job = manifests["migrate-job.yaml"]["spec"]["template"]["spec"]["containers"][0]
    assert job["command"] == ["cds-service", "db", "upgrade"]
    assert job["env"] == [env["CDS_DATABASE_URL"]]


def test_migrations_ship_in_the_installed_package() -> None:
    """The Alembic environment and revisions are inside the installed package."""
    from cds_service.store import migrate

    assert (migrate.MIGRATIONS / "env.py").is_file()
    assert list((migrate.MIGRATIONS / "versions").glob("0001_*.py"))
    assert list((migrate.MIGRATIONS / "versions").glob("0002_*.py"))
    assert list((migrate.MIGRATIONS / "versions").glob("0003_*.py"))
    assert list((migrate.MIGRATIONS / "versions").glob("0004_*.py"))
    assert list((migrate.MIGRATIONS / "versions").glob("0005_*.py"))
    assert migrate.head() == "0006_key_ids"


def test_compose_requires_a_pseudonym_key_instead_of_shipping_one() -> None:
    """docker-compose.yml has no default pseudonym key: `${CDS_PSEUDONYM_KEY:?...}` makes
    compose refuse to start without one, and the once-shipped default is refused by the
    service itself."""
    from cds_service.store.pseudonym import WELL_KNOWN_KEYS

    text = (ROOT / "docker-compose.yml").read_text("utf-8")
    environment = _compose()["x-cds-environment"]
    assert environment["CDS_PSEUDONYM_KEY"].startswith("${CDS_PSEUDONYM_KEY:?")
    # the rotation ring's earlier keys come from the operator too (empty: no rotation yet)
    assert environment["CDS_PSEUDONYM_PREVIOUS_KEYS"] == "${CDS_PSEUDONYM_PREVIOUS_KEYS:-}"
    for key in WELL_KNOWN_KEYS:
        assert key.decode() not in text


def test_every_shipped_deployment_has_slow_client_protection() -> None:
    """Compose's nginx buffers requests with header and body timeouts; every replica (compose
    and Kubernetes) runs `cds-service serve`, whose worker reads requests whole before a
    thread takes them; the ConfigMap states the limits and the per-worker byte budget."""
    from cds_service.config import ENV_NAMES, from_env

    nginx = (ROOT / "deploy" / "nginx.conf").read_text("utf-8")
    for directive in (
        "client_header_timeout 10s;",
        "client_body_timeout 10s;",
        "proxy_request_buffering on;",
        "client_max_body_size 16m;",
    ):
        assert directive in nginx
    services = _compose()["services"]
    for name in ("cds", "cds-2"):
        assert services[name]["command"][:2] == ["cds-service", "serve"]
    deployment = yaml.safe_load((K8S / "deployment.yaml").read_text("utf-8"))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][:2] == ["cds-service", "serve"]
    data = yaml.safe_load((K8S / "configmap.yaml").read_text("utf-8"))["data"]
    for name in (
        "CDS_HTTP_HEADER_TIMEOUT",
        "CDS_HTTP_BODY_MIN_RATE",
        "CDS_WORKER_INFLIGHT_BYTES",
    ):
        assert name in data and name in ENV_NAMES.values()
    config = from_env({k: v for k, v in data.items() if k.startswith("CDS_HTTP")})
    assert config.http_header_timeout == 10.0
