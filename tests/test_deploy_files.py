"""The deployment files in deploy/ agree with the service (no Docker or Kubernetes here, so
they are parsed and checked): ports are the settings' defaults, probes ask the gRPC port for
the health service name the server registers, every environment variable set is one the
settings declare, compose runs 2 replicas, and the PDB and the headless Service select the
Deployment's pods."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.app import SERVICE_NAME
from service.config import variables

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"

# Variables other engineers are adding to service.config in parallel branches (issue 12):
# the deploy files may set them already. Their defaults as those branches declare them.
BEING_ADDED: dict[str, object] = {
    "SHUTDOWN_DRAIN_SECONDS": 5.0,  # health / drain on SIGTERM
}
# Environment the image sets for Python itself, not for the service.
INTERPRETER_ENV = {"PATH", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE"}


def defaults() -> dict[str, object]:
    """Every variable the service accepts, with its default."""
    return {**BEING_ADDED, **{v.name: v.default for v in variables()}}


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_all(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def k8s(kind: str) -> dict[str, Any]:
    """The one manifest of ``kind`` under deploy/k8s that kustomization.yaml applies."""
    resources = load(DEPLOY / "k8s" / "kustomization.yaml")["resources"]
    found = [
        doc
        for name in resources
        for doc in load_all(DEPLOY / "k8s" / name)
        if doc.get("kind") == kind
    ]
    assert len(found) == 1, (kind, found)
    return found[0]


def container() -> dict[str, Any]:
    containers = k8s("Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def undeclared(names: set[str]) -> set[str]:
    return names - set(defaults())


# --- Dockerfile -------------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) per instruction, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    out = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_is_multi_stage_on_a_pinned_base() -> None:
    steps = dockerfile()
    args = dict(a.split("=", 1) for i, a in steps if i == "ARG" and "=" in a)
    stages = [a for i, a in steps if i == "FROM"]
    assert len(stages) >= 2
    for stage in stages:
        image = stage.split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        # An exact version (x.y.z) or a digest; never `latest` or a floating major tag.
        assert re.search(r":\d+\.\d+\.\d+[\w.-]*$|@sha256:[0-9a-f]{64}$", image), image
    # The runtime stage gets the built venv, not the sources or the dev tools.
    runtime = [i for i, (word, _) in enumerate(steps) if word == "FROM"][-1]
    assert any(w == "COPY" and a.startswith("--from=build") for w, a in steps[runtime:])
    installs = [a for w, a in steps if w == "RUN" and "pip install" in a]
    assert installs
    assert all("--group" not in a and "dev" not in a.split() for a in installs)


def test_dockerfile_runs_as_a_non_root_user_with_a_grpc_healthcheck() -> None:
    steps = dockerfile()
    users = [a for w, a in steps if w == "USER"]
    assert users
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    checks = [a for w, a in steps if w == "HEALTHCHECK"]
    assert len(checks) == 1
    assert '"-m", "service.healthcheck"' in checks[0]
    assert importlib.util.find_spec("service.healthcheck") is not None
    runtime = [i for i, (word, _) in enumerate(steps) if word == "FROM"][-1]
    env = " ".join(a for w, a in steps[runtime:] if w == "ENV")
    names = set(re.findall(r"(\w+)=", env))
    assert undeclared(names - INTERPRETER_ENV) == set()
    grpc_port = str(defaults()["GRPC_PORT"])
    expose = " ".join(a for w, a in steps if w == "EXPOSE").split()
    assert grpc_port in expose
    assert str(defaults()["METRICS_PORT"]) in expose


# --- compose ----------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    return load(DEPLOY / "compose.yaml")


def test_compose_runs_two_replicas_on_postgres_18_with_declared_settings() -> None:
    services = compose()["services"]
    service = services["writeback"]
    assert service["deploy"]["replicas"] == 2
    assert services["postgres"]["image"].startswith("postgres:18")
    env = service["environment"]
    assert undeclared(set(env)) == set()
    assert env["DATABASE_URL"].startswith("postgresql://")
    assert "@postgres:5432/" in env["DATABASE_URL"]
    assert int(env["GRPC_PORT"]) == defaults()["GRPC_PORT"]
    assert int(env["METRICS_PORT"]) == defaults()["METRICS_PORT"]
    assert [p.rsplit(":", 1)[1] for p in service["ports"]] == [env["GRPC_PORT"]]
    assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
    # Docker's SIGKILL comes after the drain and the delivery grace.
    stop = float(service["stop_grace_period"].removesuffix("s"))
    assert stop > float(env["SHUTDOWN_DRAIN_SECONDS"]) + float(env["SHUTDOWN_GRACE_SECONDS"])


@pytest.mark.parametrize("name", ["powerschool", "clever", "classlink"])
def test_compose_runs_each_simulator_module_listening_beyond_loopback(name: str) -> None:
    sim = compose()["services"][name]
    command = sim["command"]
    assert command[:3] == ["python", "-m", f"simulators.{name}"]
    assert importlib.util.find_spec(f"simulators.{name}.__main__") is not None
    args = dict(zip(command[3::2], command[4::2], strict=True))
    assert args["--host"] == "0.0.0.0"  # noqa: S104  (other containers reach it)
    assert sim["ports"] == [f"{args['--port']}:{args['--port']}"]
    assert sim["healthcheck"] == {"disable": True}  # the image's check is the service's


def test_prometheus_scrapes_every_replica_on_the_metrics_port() -> None:
    services = compose()["services"]
    prometheus = services["prometheus"]
    config_flag = next(a for a in prometheus["command"] if a.startswith("--config.file="))
    mount = next(v for v in prometheus["volumes"] if v.startswith("./prometheus:"))
    container_dir = mount.split(":")[1]
    config_path = config_flag.split("=", 1)[1]
    assert config_path.startswith(container_dir + "/")
    config = load(DEPLOY / "prometheus" / Path(config_path).name)
    [job] = config["scrape_configs"]
    [sd] = job["dns_sd_configs"]
    assert sd["names"] == ["writeback"]
    assert sd["port"] == int(services["writeback"]["environment"]["METRICS_PORT"])


# --- Kubernetes -------------------------------------------------------------------------


def test_probes_ask_the_grpc_port_for_the_registered_health_names() -> None:
    c = container()
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["grpc"] == defaults()["GRPC_PORT"]
    assert ports["metrics"] == defaults()["METRICS_PORT"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["grpc"]["port"] == ports["grpc"], probe
    assert c["readinessProbe"]["grpc"]["service"] == SERVICE_NAME
    assert c["startupProbe"]["grpc"]["service"] == SERVICE_NAME
    # Liveness asks about the process as a whole ("").
    assert c["livenessProbe"]["grpc"].get("service", "") == ""


def test_env_comes_from_declared_settings_and_the_url_from_a_secret() -> None:
    c = container()
    config_map = k8s("ConfigMap")
    assert [ref["configMapRef"]["name"] for ref in c["envFrom"]] == [config_map["metadata"]["name"]]
    names = set(config_map["data"]) | {e["name"] for e in c["env"]}
    assert undeclared(names) == set()
    assert int(config_map["data"]["GRPC_PORT"]) == defaults()["GRPC_PORT"]
    [url] = [e for e in c["env"] if e["name"] == "DATABASE_URL"]
    assert set(url["valueFrom"]) == {"secretKeyRef"}
    assert "DATABASE_URL" not in config_map["data"]


def test_termination_grace_outlasts_drain_plus_delivery_grace() -> None:
    pod = k8s("Deployment")["spec"]["template"]["spec"]
    data = k8s("ConfigMap")["data"]
    drain = float(data.get("SHUTDOWN_DRAIN_SECONDS", defaults()["SHUTDOWN_DRAIN_SECONDS"]))
    grace = float(data.get("SHUTDOWN_GRACE_SECONDS", defaults()["SHUTDOWN_GRACE_SECONDS"]))
    assert pod["terminationGracePeriodSeconds"] > drain + grace
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0


def test_pdb_and_headless_service_select_the_deployment_pods() -> None:
    deployment = k8s("Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    pdb = k8s("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == selector
    assert pdb["spec"]["maxUnavailable"] < deployment["spec"]["replicas"]
    svc = k8s("Service")
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    assert svc["spec"]["selector"] == selector
    grpc_port = next(p for p in svc["spec"]["ports"] if p["name"] == "grpc")
    assert grpc_port["targetPort"] == "grpc"
    assert grpc_port["port"] == defaults()["GRPC_PORT"]


def test_resource_requests_are_set_next_to_their_measurement() -> None:
    c = container()
    assert {"cpu", "memory"} <= set(c["resources"]["requests"])
    text = (DEPLOY / "k8s" / "deployment.yaml").read_text()
    assert "scripts/measure_footprint.py" in text
    assert (DEPLOY.parent / "scripts" / "measure_footprint.py").exists()
