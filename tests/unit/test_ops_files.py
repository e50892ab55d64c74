"""The deployment files in ops/ agree with the broker they deploy: the Dockerfile installs the
package as `make run` does and runs `sluice serve` on the broker's ports; the Kubernetes and
Compose files parse, use that image, those ports, the broker's real probe paths and real
`SLUICE_*` options, and give every broker the same controller quorum; the systemd unit runs
`sluice serve` as its own user and stops it with SIGTERM.

The observability half agrees with itself and with the broker: every JSON and YAML file
parses; Compose runs Jaeger, the OpenTelemetry Collector, Prometheus and Grafana with files
that exist, and points the brokers' OTLP exporter at the collector; Prometheus scrapes the
brokers' HTTP port; the collector's pipelines use components it defines; the dashboard uses the
provisioned datasources, its variables are defined and its queries read the brokers' job; every
alert has a severity, a summary and a description; every metric the dashboard and the alerts
name is one the broker's source declares. (tests/integration/test_prometheus.py evaluates all
of it in a real Prometheus scraping real brokers.)"""

from __future__ import annotations

import configparser
import json
import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from broker.config import BrokerConfig
from tests.support.promql import (
    LABEL_VALUES,
    dashboard_queries,
    load_dashboard,
    load_rules,
    metric_names,
    panels,
    selectors,
    substitute,
    variable_queries,
)
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


LOCAL = "127.0.0.1"


def published(service: dict[str, Any]) -> dict[int, tuple[str, int]]:
    """A Compose service's published ports: container port -> (host address, host port), from
    the short syntax `[HOST_IP:]HOST_PORT:CONTAINER_PORT[/PROTOCOL]` or the long one (a mapping
    with `target`, `published`, `host_ip`); no host address reads as "" (every interface)."""
    out: dict[int, tuple[str, int]] = {}
    for spec in service.get("ports", []):
        if isinstance(spec, dict):
            host, published_port = spec.get("host_ip", ""), int(spec["published"])
            out[int(spec["target"])] = (host, published_port)
            continue
        parts = str(spec).split("/")[0].rsplit(":", 2)
        assert len(parts) >= 2, f"{spec!r}: a port published on an ephemeral host port"
        host = parts[0] if len(parts) == 3 else ""
        out[int(parts[-1])] = (host, int(parts[-2]))
    return out


def test_published_ports_read_every_compose_syntax() -> None:
    long_form = {"target": 16686, "published": "16686", "host_ip": "127.0.0.1"}
    service = {"ports": ["3000:3000", "127.0.0.1:19092:9092", "127.0.0.1:4318:4318/tcp", long_form]}
    assert published(service) == {
        3000: ("", 3000),
        9092: (LOCAL, 19092),
        4318: (LOCAL, 4318),
        16686: (LOCAL, 16686),
    }


def test_the_compose_file_publishes_every_port_on_the_loopback_interface_only() -> None:
    """Grafana's anonymous admin, Prometheus (with its lifecycle API), Jaeger, the collector's
    OTLP receivers and the brokers take anything sent to them: the host reaches them, other
    machines do not (ops/README.md says how to expose one deliberately)."""
    services = compose()["services"]
    ports = {name: published(s) for name, s in services.items()}
    assert all(ports[name] for name in services if name.startswith("broker-")), ports
    for name, by_target in ports.items():
        for target, (host, _) in by_target.items():
            assert host == LOCAL, f"{name}: port {target} published on {host or 'every interface'}"
    _, grafana = service_of("grafana/grafana")
    assert published(grafana) == {3000: (LOCAL, 3000)}


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
        assert {k for k in env if not k.startswith("OTEL_")} <= SERVE_OPTIONS
        assert env["SLUICE_NODE_ID"] == i
        assert env["SLUICE_ADVERTISE_PEER"] == f"{name}:{PORTS['peers']}"
        host_port = env["SLUICE_ADVERTISE"].rsplit(":", 1)[1]
        assert published(s)[PORTS["clients"]] == (LOCAL, int(host_port))
        assert s["stop_signal"] == "SIGTERM"


def test_the_systemd_unit_serves_as_its_own_user() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string((OPS / "systemd" / "sluice.service").read_text())
    service = unit["Service"]
    assert service["ExecStart"].endswith("/sluice serve")
    assert service["User"] == "sluice" and service["KillSignal"] == "SIGTERM"
    assert unit["Install"]["WantedBy"] == "multi-user.target"


# -- observability: Compose services, Prometheus, the collector, Grafana ----------------------

DASHBOARD_ROWS = {
    "Cluster overview",
    "Partitions and Raft health",
    "Producer and consumer throughput and latency",
    "Consumer lag",
    "Transactions",
    "Traces",
}
ALERTS = {
    "SluiceBrokerDown",
    "SluicePartitionLeaderless",
    "SluicePartitionUnderReplicated",
    "SluiceConsumerLagGrowing",
    "SluiceTransactionHanging",
    "SluiceDiskFilling",
    "SluiceRequestErrorRateHigh",
}
OTLP_GRPC, OTLP_HTTP = 4317, 4318


def compose() -> dict[str, Any]:
    out: dict[str, Any] = yaml.safe_load((OPS / "compose.yaml").read_text())
    return out


def service_of(image: str) -> tuple[str, dict[str, Any]]:
    """The one Compose service running `image` (any tag)."""
    (found,) = [
        (name, s)
        for name, s in compose()["services"].items()
        if s.get("image", "").rsplit(":", 1)[0] == image
    ]
    return found


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Bind mounts of a Compose service: container path -> source path under ops/."""
    out = {}
    for v in service.get("volumes", []):
        source, target = v.split(":")[:2]
        if source.startswith("./"):
            out[target] = source
    return out


def port_of(address: str) -> tuple[str, int]:
    host, port = address.rsplit(":", 1)
    return host, int(port)


def collector_configs() -> list[Path]:
    return sorted((OPS / "otel-collector").glob("*.yaml"))


def test_every_ops_json_and_yaml_file_parses() -> None:
    files = sorted(p for p in OPS.rglob("*") if p.suffix in (".json", ".yaml", ".yml"))
    assert len(files) >= 9, files
    for path in files:
        if path.suffix == ".json":
            assert isinstance(json.loads(path.read_text()), dict), path
        else:
            assert docs(path), path


def test_compose_runs_the_observability_stack_from_files_that_exist() -> None:
    services = compose()["services"]
    names = {
        image: service_of(image)[0]
        for image in (
            "jaegertracing/all-in-one",
            "otel/opentelemetry-collector-contrib",
            "prom/prometheus",
            "grafana/grafana",
        )
    }
    for name, s in services.items():
        for target, source in mounts(s).items():
            assert (OPS / source).exists(), (name, source)
            assert target.startswith("/"), (name, target)
        for dep in s.get("depends_on", []):
            assert dep in services, (name, dep)
    jaeger = services[names["jaegertracing/all-in-one"]]
    assert jaeger["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"
    collector = services[names["otel/opentelemetry-collector-contrib"]]
    (config_arg,) = [c for c in collector["command"] if c.startswith("--config=")]
    assert mounts(collector)[config_arg.removeprefix("--config=")] == "./otel-collector/config.yaml"
    prometheus = services[names["prom/prometheus"]]
    (config_flag,) = [c for c in prometheus["command"] if c.startswith("--config.file=")]
    config_file = Path(config_flag.removeprefix("--config.file="))
    assert mounts(prometheus)[str(config_file.parent)] == "./prometheus"
    assert (OPS / "prometheus" / config_file.name).is_file()
    assert published(prometheus)[9090] == (LOCAL, 9090)
    grafana = services[names["grafana/grafana"]]
    env = grafana["environment"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert mounts(grafana)["/etc/grafana/provisioning"] == "./grafana/provisioning"
    home = Path(env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert mounts(grafana)[str(home.parent)] == "./grafana/dashboards"
    assert (OPS / "grafana" / "dashboards" / home.name).is_file()


def test_the_brokers_export_traces_to_the_collector() -> None:
    services = compose()["services"]
    collector_name, collector = service_of("otel/opentelemetry-collector-contrib")
    brokers = [s for name, s in services.items() if name.startswith("broker-")]
    for s in brokers:
        env = s["environment"]
        endpoint = urlsplit(env["OTEL_EXPORTER_OTLP_ENDPOINT"])
        assert (endpoint.scheme, endpoint.hostname, endpoint.port) == (
            "http",
            collector_name,
            OTLP_HTTP,
        )
        assert env["OTEL_SERVICE_NAME"] == "sluice-broker"
        assert env["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio"
        assert 0 < float(env["OTEL_TRACES_SAMPLER_ARG"]) <= 1
    assert published(collector)[OTLP_HTTP] == (LOCAL, OTLP_HTTP)


def test_the_collector_configs_receive_otlp_and_export_what_they_define() -> None:
    jaeger_name, _ = service_of("jaegertracing/all-in-one")
    trace_hosts = {}
    for path in collector_configs():
        config = yaml.safe_load(path.read_text())
        protocols = config["receivers"]["otlp"]["protocols"]
        assert port_of(protocols["grpc"]["endpoint"]) == ("0.0.0.0", OTLP_GRPC)
        assert port_of(protocols["http"]["endpoint"]) == ("0.0.0.0", OTLP_HTTP)
        service = config["service"]
        assert set(service.get("extensions", [])) <= set(config.get("extensions", {}))
        pipelines = service["pipelines"]
        assert set(pipelines) == {"traces", "metrics"}, path
        for pipeline in pipelines.values():
            for kind in ("receivers", "processors", "exporters"):
                assert pipeline.get(kind) or kind == "processors", (path, kind)
                assert set(pipeline.get(kind, [])) <= set(config[kind]), (path, kind)
        (traces_out,) = pipelines["traces"]["exporters"]
        assert traces_out.split("/")[0] == "otlp", path
        trace_hosts[path.name] = port_of(config["exporters"][traces_out]["endpoint"])
        assert pipelines["metrics"]["exporters"] == ["prometheus"], path
        assert port_of(config["exporters"]["prometheus"]["endpoint"])[1] == 8889
    assert trace_hosts == {
        "config.yaml": (jaeger_name, OTLP_GRPC),
        "config-tempo.yaml": ("tempo", OTLP_GRPC),
    }


def test_prometheus_scrapes_every_compose_broker_and_loads_the_alerts() -> None:
    config = yaml.safe_load((OPS / "prometheus" / "prometheus.yml").read_text())
    services = compose()["services"]
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    sluice = jobs["sluice"]
    assert sluice.get("metrics_path", "/metrics") in probe_paths() | {"/metrics"}
    assert "/metrics" in (ROOT / "broker" / "app.py").read_text()
    assert sluice["scrape_interval"] == "5s"
    (static,) = sluice["static_configs"]
    brokers = sorted(name for name in services if name.startswith("broker-"))
    assert sorted(static["targets"]) == [f"{b}:{PORTS['http']}" for b in brokers]
    for name in brokers:
        assert services[name]["environment"]["SLUICE_HTTP_LISTEN"].endswith(f":{PORTS['http']}")
    collector_name, _ = service_of("otel/opentelemetry-collector-contrib")
    (collector_static,) = jobs["otel-collector"]["static_configs"]
    assert collector_static["targets"] == [f"{collector_name}:8889"]
    assert config["rule_files"] == ["alerts.yml"]
    for rule_file in config["rule_files"]:
        assert (OPS / "prometheus" / rule_file).is_file()


def test_every_alert_has_a_severity_a_summary_and_a_description() -> None:
    rules = load_rules()
    assert {r["alert"] for r in rules} >= ALERTS
    for rule in rules:
        name = rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        assert rule["annotations"]["summary"].strip(), name
        assert rule["annotations"]["description"].strip(), name
        found = selectors(rule["expr"])
        assert found, name
        for s in found:
            assert s.name == "up" or s.name.startswith("sluice_"), (name, s)
            assert 'job="sluice"' in s.text, (name, s)


def test_the_grafana_datasources_are_the_compose_services() -> None:
    provisioned = docs(OPS / "grafana" / "provisioning" / "datasources" / "sluice.yaml")
    (datasources,) = [d["datasources"] for d in provisioned]
    by_uid = {d["uid"]: d for d in datasources}
    assert {uid: d["type"] for uid, d in by_uid.items()} == {
        "prometheus": "prometheus",
        "jaeger": "jaeger",
    }
    prometheus_name, prometheus = service_of("prom/prometheus")
    jaeger_name, jaeger = service_of("jaegertracing/all-in-one")
    url = urlsplit(by_uid["prometheus"]["url"])
    assert (url.hostname, url.port) == (prometheus_name, 9090)
    url = urlsplit(by_uid["jaeger"]["url"])
    assert (url.hostname, url.port) == (jaeger_name, 16686)
    assert published(jaeger)[16686] == (LOCAL, 16686)
    assert published(prometheus)[9090] == (LOCAL, 9090)
    assert by_uid["prometheus"]["jsonData"]["timeInterval"] == "5s"
    (providers,) = [
        d["providers"]
        for d in docs(OPS / "grafana" / "provisioning" / "dashboards" / "sluice.yaml")
    ]
    (provider,) = providers
    _, grafana = service_of("grafana/grafana")
    assert mounts(grafana)[provider["options"]["path"]] == "./grafana/dashboards"


def test_the_dashboard_uses_the_provisioned_datasources_and_its_own_variables() -> None:
    dashboard = load_dashboard()
    provisioned = docs(OPS / "grafana" / "provisioning" / "datasources" / "sluice.yaml")
    types = {d["uid"]: d["type"] for d in provisioned[0]["datasources"]}
    assert dashboard["schemaVersion"] == 39 and dashboard["uid"] == "sluice"
    everything = panels(dashboard)
    ids = [p["id"] for p in everything]
    assert len(ids) == len(set(ids))
    used = []
    for p in everything:
        sources = [p.get("datasource")] + [t.get("datasource") for t in p.get("targets", [])]
        for ds in sources:
            if ds is not None:
                assert types[ds["uid"]] == ds["type"], (p["title"], ds)
                used.append(ds["uid"])
    for v in dashboard["templating"]["list"]:
        assert types[v["datasource"]["uid"]] == v["datasource"]["type"]
    assert set(used) == set(types)
    for name, query in variable_queries(dashboard).items():
        m = LABEL_VALUES.match(query)
        assert m is not None, (name, query)
        assert metric_names(m.group(1)), (name, query)
    for q in dashboard_queries(dashboard):
        expr = substitute(q.expr, dashboard)  # raises on an undefined variable
        assert "$" not in expr, (q.panel, expr)
        found = selectors(expr)
        assert found, (q.panel, q.expr)
        for s in found:
            assert s.name == "up" or s.name.startswith("sluice_"), (q.panel, s)
            assert 'job="sluice"' in s.text, (q.panel, s)


def test_the_dashboard_has_its_rows_and_a_grid_without_overlaps() -> None:
    dashboard = load_dashboard()
    top = dashboard["panels"]
    assert {p["title"] for p in top if p["type"] == "row"} == DASHBOARD_ROWS
    assert top[0]["type"] == "row"
    cells: dict[tuple[int, int], str] = {}
    for p in panels(dashboard):
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] >= 1 and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, (p["title"], cells.get((x, y)))
                cells[(x, y)] = p["title"]
    (traces,) = [p for p in panels(dashboard) if p["type"] == "traces"]
    assert traces["datasource"]["uid"] == "jaeger"
    (query,) = traces["targets"]
    service = {s["environment"]["OTEL_SERVICE_NAME"] for s in compose()["services"].values()
               if "OTEL_SERVICE_NAME" in s.get("environment", {})}  # fmt: skip
    assert (query["queryType"], {query["service"]}) == ("search", service)


def declared_metrics() -> set[str]:
    """The `sluice_*` metric names in the broker's source, with the names Prometheus text
    gives counters (`_total`) and histograms (`_bucket`, `_sum`, `_count`)."""
    names: set[str] = set()
    for path in (ROOT / "broker").rglob("*.py"):
        names.update(re.findall(r"[\"'](sluice_[a-z0-9_]+)[\"']", path.read_text()))
    suffixes = ("", "_total", "_bucket", "_sum", "_count")
    return {n + s for n in names for s in suffixes}


def test_every_metric_the_dashboard_and_alerts_name_is_declared_by_the_broker() -> None:
    dashboard = load_dashboard()
    exprs = [q.expr for q in dashboard_queries(dashboard)]
    exprs += [LABEL_VALUES.match(q).group(1) for q in variable_queries(dashboard).values()]  # type: ignore[union-attr]
    exprs += [r["expr"] for r in load_rules()]
    named = set().union(*(metric_names(substitute(e, dashboard)) for e in exprs))
    assert "up" in named
    missing = sorted(named - {"up"} - declared_metrics())
    assert not missing, f"named in ops/ but declared nowhere in broker/: {missing}"
