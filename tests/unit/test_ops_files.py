"""The deployment files in ops/ agree with the broker they deploy: the Dockerfile installs the
package as `make run` does and runs `sluice serve` on the broker's ports; the Kubernetes and
Compose files parse, use that image, those ports, the broker's real probe paths and real
`SLUICE_*` options, and give every broker the same controller quorum; the systemd unit runs
`sluice serve` as its own user and stops it with SIGTERM."""

from __future__ import annotations

import configparser
import re
import tomllib
from pathlib import Path
from typing import Any

import yaml

from broker.config import BrokerConfig
from tests.support.sluice_cli import ROOT

OPS = ROOT / "ops"
PORTS = {
    "clients": BrokerConfig().listen.port,
    "peers": BrokerConfig().peer_listen.port,
    "http": BrokerConfig().http_listen.port,
}
IMAGE = "sluice:latest"
SERVE_OPTIONS = {
    "SLUICE_DATA_DIR", "SLUICE_LISTEN", "SLUICE_PEER_LISTEN", "SLUICE_HTTP_LISTEN",
    "SLUICE_NODE_ID", "SLUICE_CONTROLLERS", "SLUICE_ADVERTISE", "SLUICE_ADVERTISE_PEER",
    "SLUICE_RACK", "SLUICE_CONFIG", "SLUICE_LOG_FORMAT",
}  # fmt: skip


def probe_paths() -> set[str]:
    """The paths the broker's HTTP listener serves (its route table in broker/app.py)."""
    return set(re.findall(r'"(/[a-z]+)": lambda', (ROOT / "broker" / "app.py").read_text()))


def serve_env_vars() -> set[str]:
    """The environment variables `sluice serve` reads: SLUICE_ and each option's name."""
    options = re.findall(r'_opt\(\s*"--([a-z-]+)"', (ROOT / "cli" / "serve.py").read_text())
    return {"SLUICE_" + o.replace("-", "_").upper() for o in options}


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def test_the_serve_options_named_here_are_the_real_ones() -> None:
    assert serve_env_vars() == SERVE_OPTIONS
    assert {"/healthz", "/readyz"} <= probe_paths()


def test_the_dockerfile_installs_like_make_run_and_serves_the_default_ports() -> None:
    text = (OPS / "Dockerfile").read_text()
    makefile = (ROOT / "Makefile").read_text()
    assert (
        "-c constraints.txt" in makefile
        and "pip install --no-cache-dir -c constraints.txt ." in text
    )
    packages = re.findall(r"include = \[(.*?)\]", (ROOT / "pyproject.toml").read_text())[0]
    for package in re.findall(r'"(\w+)\*"', packages):
        assert f"COPY {package} ./{package}" in text, package
    exposed = {int(p) for p in re.findall(r"^EXPOSE (.*)$", text, re.M)[0].split()}
    assert exposed == set(PORTS.values())
    for name, port in PORTS.items():
        key = {
            "clients": "SLUICE_LISTEN",
            "peers": "SLUICE_PEER_LISTEN",
            "http": "SLUICE_HTTP_LISTEN",
        }
        assert f"{key[name]}=0.0.0.0:{port}" in text
    assert 'ENTRYPOINT ["sluice", "serve"]' in text
    assert f"127.0.0.1:{PORTS['http']}/readyz" in text
    assert "STOPSIGNAL SIGTERM" in text


def test_the_kubernetes_manifests_agree_with_the_broker() -> None:
    by_kind = {d["kind"]: d for d in docs(OPS / "kubernetes" / "sluice.yaml")}
    assert set(by_kind) == {"ConfigMap", "Service", "PodDisruptionBudget", "StatefulSet"}
    sts = by_kind["StatefulSet"]["spec"]
    assert sts["podManagementPolicy"] == "Parallel"
    replicas = sts["replicas"]
    pod = sts["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == IMAGE
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == PORTS
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] in probe_paths() and get["port"] == "http"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    env = {e["name"]: e for e in container["env"]}
    sluice_env = {n for n in env if n.startswith("SLUICE_")}
    assert sluice_env <= SERVE_OPTIONS
    controllers = env["SLUICE_CONTROLLERS"]["value"].split(",")
    assert [c.split("@")[0] for c in controllers] == [str(i) for i in range(replicas)]
    assert all(c.endswith(f":{PORTS['peers']}") for c in controllers)
    assert env["SLUICE_ADVERTISE"]["value"].endswith(f":{PORTS['clients']}")
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert env["SLUICE_DATA_DIR"]["value"].startswith(mounts["data"] + "/")
    assert env["SLUICE_CONFIG"]["value"].startswith(mounts["config"] + "/")
    config_name = Path(env["SLUICE_CONFIG"]["value"]).name
    toml = by_kind["ConfigMap"]["data"][config_name]
    values = tomllib.loads(toml)
    assert set(values) <= {f.name for f in BrokerConfig.__dataclass_fields__.values()}
    assert [t["metadata"]["name"] for t in sts["volumeClaimTemplates"]] == ["data"]
    labels = sts["template"]["metadata"]["labels"]
    assert (
        by_kind["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    )
    assert by_kind["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1


def test_the_headless_service_publishes_peers_before_they_are_ready() -> None:
    services = [d for d in docs(OPS / "kubernetes" / "sluice.yaml") if d["kind"] == "Service"]
    sts = next(d for d in docs(OPS / "kubernetes" / "sluice.yaml") if d["kind"] == "StatefulSet")
    headless = next(s for s in services if s["spec"].get("clusterIP") == "None")
    assert headless["metadata"]["name"] == sts["spec"]["serviceName"]
    assert headless["spec"]["publishNotReadyAddresses"] is True
    assert {p["name"]: p["port"] for p in headless["spec"]["ports"]} == PORTS


def test_the_compose_file_runs_three_brokers_of_one_quorum() -> None:
    compose = yaml.safe_load((OPS / "compose.yaml").read_text())
    brokers = {name: s for name, s in compose["services"].items() if name.startswith("broker-")}
    assert sorted(brokers) == ["broker-0", "broker-1", "broker-2"]
    quorum = {s["environment"]["SLUICE_CONTROLLERS"] for s in brokers.values()}
    assert quorum == {
        f"0@broker-0:{PORTS['peers']},1@broker-1:{PORTS['peers']},2@broker-2:{PORTS['peers']}"
    }
    for name, s in brokers.items():
        i = name.removeprefix("broker-")
        assert s["image"] == IMAGE and s["build"]["dockerfile"] == "ops/Dockerfile"
        env = s["environment"]
        assert set(env) <= SERVE_OPTIONS
        assert env["SLUICE_NODE_ID"] == i
        assert env["SLUICE_ADVERTISE_PEER"] == f"{name}:{PORTS['peers']}"
        host_port = env["SLUICE_ADVERTISE"].rsplit(":", 1)[1]
        assert f"{host_port}:{PORTS['clients']}" in s["ports"]
        assert s["stop_signal"] == "SIGTERM"


def test_the_systemd_unit_serves_as_its_own_user() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string((OPS / "systemd" / "sluice.service").read_text())
    service = unit["Service"]
    assert service["ExecStart"].endswith("/sluice serve")
    assert service["User"] == "sluice" and service["KillSignal"] == "SIGTERM"
    assert unit["Install"]["WantedBy"] == "multi-user.target"
