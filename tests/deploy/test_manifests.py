"""The scale-out files in deploy/ (compose, Dockerfile, Prometheus, Grafana, Kubernetes) parse, match their
schemas and agree with each other and with the code. Pure file checks: no Docker, no cluster.

- core Kubernetes kinds: the official OpenAPI schemas bundled in kubernetes-validate (strict: unknown fields fail);
- Strimzi and KubeRay resources: tests/deploy/crd_schemas.py; the Serve config inside the RayService: Ray's own
  pydantic schema (ray.serve.schema);
- cross-file: topics vs streams.settings.Topics, SIDSTREAM_* names vs the settings classes, ports vs Prometheus,
  metric names vs the list below, commands vs the real `sidstream` argument parser.
"""
from __future__ import annotations

import ast
import copy
import functools
import json
import re
import shlex
from pathlib import Path
from urllib.parse import urlparse

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.deploy.crd_schemas import SCHEMAS

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
K8S_VERSION = "1.33"
NAMESPACE = "sidstream"
IMAGE = "sidstream:0.1.0"

# Every metric the dashboard and the alert rules may use: name -> type. The code must expose exactly these
# (prometheus-client adds `_total` to counters and `_bucket`/`_sum`/`_count` to histograms).
KNOWN_METRICS = {
    # streams/metrics.py (the worker, SIDSTREAM_WORKER_METRICS_PORT)
    "sidstream_stream_events": "counter",                     # label result
    "sidstream_stream_rewinds": "counter",
    "sidstream_stream_event_to_feast_seconds": "histogram",
    "sidstream_stream_item_to_catalogue_seconds": "histogram",
    # trainer/online_metrics.py (the online trainer, SIDSTREAM_ONLINE_METRICS_PORT)
    "sidstream_trainer_prequential_recall_at_10": "gauge",
    # serving/metrics.py (each Ray Serve replica, GET /metrics)
    "sidstream_serving_requests": "counter",                  # labels route, status
    "sidstream_serving_request_seconds": "histogram",         # label route
    "sidstream_serving_item_lag_seconds": "histogram",
    "sidstream_serving_model_swap_lag_seconds": "histogram",
    "sidstream_serving_score": "histogram",                   # label kind
    # deploy/monitor.py (`sidstream monitor --serve-metrics`, SIDSTREAM_MONITOR_METRICS_PORT)
    "sidstream_monitor_consumer_lag": "gauge",                # labels group, topic
    "sidstream_monitor_model_age_seconds": "gauge",
    "sidstream_monitor_drift_psi": "gauge",                   # label signal
    "sidstream_monitor_drift_kl": "gauge",                    # label signal
    "sidstream_monitor_dead_codes": "gauge",                  # label level
    "sidstream_monitor_overloaded_codes": "gauge",            # label level
    "sidstream_monitor_alert": "gauge",                       # label name; -1 unknown, 0 ok, 1 warn, 2 alert
}
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}

# the metrics port of each component, as the compose file, the manifests and Prometheus must agree
PORTS = {"worker": 9101, "trainer": 9102, "serving": 8000, "monitor": 9103}
PORT_SETTINGS = {"worker": "SIDSTREAM_WORKER_METRICS_PORT", "trainer": "SIDSTREAM_ONLINE_METRICS_PORT",
                 "monitor": "SIDSTREAM_MONITOR_METRICS_PORT"}
CORE_KINDS = {"Namespace", "Deployment", "StatefulSet", "Service", "ConfigMap", "PersistentVolumeClaim",
              "HorizontalPodAutoscaler"}


# ----- loading
def load_all(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


@functools.cache
def k8s_docs() -> tuple[tuple[str, dict], ...]:
    """Parsed once per session: tests that change a document deep-copy it first."""
    return tuple((p.name, doc) for p in sorted(K8S.glob("*.yaml")) for doc in load_all(p))


def by_kind(kind: str) -> list[dict]:
    return [doc for _, doc in k8s_docs() if doc["kind"] == kind]


def one(kind: str, name: str) -> dict:
    found = [d for d in by_kind(kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def configmap_env() -> dict:
    return one("ConfigMap", "sidstream-config")["data"]


def serve_config() -> dict:
    return yaml.safe_load(one("RayService", "sidstream")["spec"]["serveConfigV2"])


def validate_crd(doc: dict) -> None:
    schema = SCHEMAS[(doc["apiVersion"], doc["kind"])]
    jsonschema.Draft202012Validator(schema).validate(doc)


def containers(doc: dict) -> list[dict]:
    return doc["spec"]["template"]["spec"]["containers"]


# ----- every file parses
def yaml_files() -> list[Path]:
    files = [*K8S.glob("*.yaml"), *DEPLOY.glob("*.yaml"), *DEPLOY.glob("*.yml"), *(DEPLOY / "grafana").rglob("*.yaml"),
             *(DEPLOY / "grafana").rglob("*.yml")]
    return sorted(set(files))


def test_the_expected_files_exist():
    expected = ["Dockerfile", "compose.yaml", "prometheus.yml", "prometheus-alerts.yml",
                "grafana/sidstream-dashboard.json", "grafana/provisioning/dashboards/sidstream.yaml",
                "grafana/provisioning/datasources/prometheus.yaml", "k8s/README.md"]
    expected += [f"k8s/{n}.yaml" for n in ("namespace", "pvc", "kafka", "redis", "qdrant", "configmap", "worker",
                                           "trainer", "rayservice", "monitor")]
    missing = [name for name in expected if not (DEPLOY / name).is_file()]
    assert not missing, missing


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_yaml_file_parses(path):
    docs = load_all(path)
    assert docs, f"{path} holds no document"
    assert all(isinstance(d, dict) for d in docs)


@pytest.mark.parametrize("path", sorted(DEPLOY.rglob("*.json")), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_json_file_parses(path):
    assert isinstance(json.loads(path.read_text()), dict)


# ----- Kubernetes: schemas
def test_every_manifest_is_namespaced_and_known():
    for name, doc in k8s_docs():
        kind = doc["kind"]
        assert kind in CORE_KINDS or (doc["apiVersion"], kind) in SCHEMAS, f"{name}: no schema for {kind}"
        if kind != "Namespace":
            assert doc["metadata"].get("namespace") == NAMESPACE, f"{name}: {kind} {doc['metadata']['name']}"
    assert one("Namespace", NAMESPACE)


@pytest.mark.parametrize("name,doc", [(n, d) for n, d in k8s_docs() if d["kind"] in CORE_KINDS],
                         ids=lambda x: x if isinstance(x, str) else f"{x['kind']}/{x['metadata']['name']}")
def test_core_kinds_match_the_kubernetes_openapi_schema(name, doc):
    assert kubernetes_validate.validate(doc, K8S_VERSION, strict=True) == K8S_VERSION


@pytest.mark.parametrize("name,doc", [(n, d) for n, d in k8s_docs() if d["kind"] not in CORE_KINDS],
                         ids=lambda x: x if isinstance(x, str) else f"{x['kind']}/{x['metadata']['name']}")
def test_custom_resources_match_the_operator_schemas(name, doc):
    validate_crd(doc)


def test_ray_pod_templates_match_the_kubernetes_schema():
    cluster = one("RayService", "sidstream")["spec"]["rayClusterConfig"]
    templates = [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]
    for template in templates:
        wrapped = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "ray"}, "template": template}
        kubernetes_validate.validate(wrapped, K8S_VERSION, strict=True)
        assert all(c["image"] == IMAGE for c in template["spec"]["containers"])


def test_the_serve_config_matches_ray_serves_own_schema():
    from ray.serve.config import AutoscalingConfig
    from ray.serve.schema import ServeDeploySchema

    config = ServeDeploySchema.model_validate(serve_config())
    (app,) = config.applications
    assert app.name == "sidstream" and app.route_prefix == "/"
    (deployment,) = app.deployments
    assert deployment.name == "recommender"  # serving.app.build_deployment's default deployment name
    assert deployment.num_replicas == "auto"  # the code sets a number; "auto" lets autoscaling_config replace it
    scaling = AutoscalingConfig(**deployment.autoscaling_config)
    assert (scaling.min_replicas, scaling.max_replicas, scaling.target_ongoing_requests) == (2, 8, 8)
    assert config.http_options.port == PORTS["serving"] and config.http_options.host == "0.0.0.0"


def test_the_serve_import_path_and_its_args_exist():
    from serving.settings import ServingSettings

    (app,) = serve_config()["applications"]
    module, _, attr = app["import_path"].partition(":")
    source = ROOT / (module.replace(".", "/") + ".py")
    assert source.is_file(), f"{app['import_path']}: no module {source}"
    assert set(app.get("args", {})) <= set(ServingSettings.model_fields), "args are ServingSettings fields"
    ServingSettings(**app.get("args", {}))
    functions = {n.name: n for n in ast.parse(source.read_text()).body if isinstance(n, ast.FunctionDef)}
    assert attr in functions, (f"{app['import_path']}: the RayService needs this Ray Serve application builder, "
                               f"`def {attr}(args: dict) -> Application`")
    assert [a.arg for a in functions[attr].args.args] == ["args"], f"{app['import_path']} takes one `args` dict"


def test_the_ray_cluster_runs_the_pinned_ray_on_enough_cpus():
    spec = one("RayService", "sidstream")["spec"]["rayClusterConfig"]
    constraints = (DEPLOY / "constraints.txt").read_text()
    assert f"ray=={spec['rayVersion']}" in constraints.splitlines()
    scaling = serve_config()["applications"][0]["deployments"][0]
    cpus_per_replica = scaling["ray_actor_options"]["num_cpus"]
    (group,) = spec["workerGroupSpecs"]
    pod_cpus = float(group["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"])
    max_replicas = scaling["autoscaling_config"]["max_replicas"]
    assert group["maxReplicas"] * pod_cpus >= max_replicas * cpus_per_replica, "the largest Serve scale must fit"
    assert spec["headGroupSpec"]["rayStartParams"].get("num-cpus") == "0"  # no replicas on the head
    for template in [spec["headGroupSpec"]["template"], group["template"]]:
        env = {e["name"]: e["value"] for e in template["spec"]["containers"][0].get("env", [])}
        assert int(env["SIDSTREAM_TORCH_THREADS"]) * (pod_cpus // cpus_per_replica) <= pod_cpus


# ----- a broken manifest is caught
def test_a_broken_manifest_is_rejected():
    worker = copy.deepcopy(one("Deployment", "sidstream-worker"))
    kubernetes_validate.validate(worker, K8S_VERSION, strict=True)
    worker["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(worker, K8S_VERSION, strict=True)
    typo = copy.deepcopy(one("Deployment", "sidstream-worker"))
    typo["spec"]["template"]["spec"]["containers"][0]["imagee"] = IMAGE  # strict: unknown fields fail
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, K8S_VERSION, strict=True)


@pytest.mark.parametrize("mutation", ["listener type", "storage type", "cleanup policy", "node role",
                                      "ray start param", "topic without cluster"])
def test_a_broken_custom_resource_is_rejected(mutation):
    kind, name, path, value = {
        "listener type": ("Kafka", "sidstream-kafka", ["spec", "kafka", "listeners", 0, "type"], "internal-ish"),
        "storage type": ("KafkaNodePool", "dual-role", ["spec", "storage", "type"], "persistent"),
        "cleanup policy": ("KafkaTopic", "catalogue", ["spec", "config", "cleanup.policy"], "compacted"),
        "node role": ("KafkaNodePool", "dual-role", ["spec", "roles", 0], "leader"),
        "ray start param": ("RayService", "sidstream",
                            ["spec", "rayClusterConfig", "headGroupSpec", "rayStartParams", "num-cpus"], 0),
        "topic without cluster": ("KafkaTopic", "interactions", ["metadata", "labels"], {}),
    }[mutation]
    doc = copy.deepcopy(one(kind, name))
    validate_crd(doc)
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        validate_crd(doc)


# ----- Kafka topics vs the code
def kafka_topics() -> dict[str, dict]:
    return {d["spec"].get("topicName", d["metadata"]["name"]): d for d in by_kind("KafkaTopic")}


def missing_topics(topics: dict[str, dict]) -> list[str]:
    from streams.settings import Topics

    return sorted(set(Topics().model_dump().values()) - set(topics))


def test_every_topic_of_the_settings_has_a_kafka_topic():
    topics = kafka_topics()
    assert missing_topics(topics) == []
    broken = dict(topics)
    broken.pop("catalogue")
    assert missing_topics(broken) == ["catalogue"]  # the check itself notices a missing topic


def test_topic_shapes_follow_the_architecture():
    from streams.settings import Topics

    names = Topics()
    topics = {name: t["spec"] for name, t in kafka_topics().items()}
    expected = {names.interactions: 12, names.items: 1, names.catalogue: 1, names.training: 12,
                names.model_updates: 1, names.dead_letters: 3}
    assert {name: topics[name]["partitions"] for name in expected} == expected
    assert topics[names.catalogue]["config"]["cleanup.policy"] == "compact"
    for name, spec in topics.items():
        assert spec["replicas"] == 3 and int(spec["config"]["min.insync.replicas"]) == 2, name
    kafka = one("Kafka", "sidstream-kafka")
    pools = [p for p in by_kind("KafkaNodePool") if p["metadata"]["labels"]["strimzi.io/cluster"] == "sidstream-kafka"]
    assert sum(p["spec"]["replicas"] for p in pools if "broker" in p["spec"]["roles"]) >= 3
    assert all(t["metadata"]["labels"]["strimzi.io/cluster"] == "sidstream-kafka" for t in by_kind("KafkaTopic"))
    assert kafka["metadata"]["annotations"] == {"strimzi.io/kraft": "enabled", "strimzi.io/node-pools": "enabled"}
    assert {"controller", "broker"} <= {r for p in pools for r in p["spec"]["roles"]}  # KRaft: no ZooKeeper
    assert "zookeeper" not in kafka["spec"]
    # a cluster-wide min ISR above the replication factor of the topics Faust creates itself would refuse writes
    assert "min.insync.replicas" not in kafka["spec"]["kafka"].get("config", {})


def test_partitions_bound_the_workers_and_match_faust():
    from streams.settings import Topics

    names = Topics()
    topics = {name: t["spec"] for name, t in kafka_topics().items()}
    hpa = one("HorizontalPodAutoscaler", "sidstream-worker")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "sidstream-worker"
    assert hpa["spec"]["maxReplicas"] == topics[names.interactions]["partitions"]
    assert hpa["spec"]["minReplicas"] <= one("Deployment", "sidstream-worker")["spec"]["replicas"] <= \
        hpa["spec"]["maxReplicas"]
    # Faust's table changelog is co-partitioned with interactions: SIDSTREAM_PARTITIONS must equal it
    assert int(configmap_env()["SIDSTREAM_PARTITIONS"]) == topics[names.interactions]["partitions"] \
        == topics[names.training]["partitions"]
    assert compose()["services"]["worker"]["deploy"]["replicas"] <= \
        int(compose()["services"]["kafka"]["environment"]["KAFKA_NUM_PARTITIONS"])


def test_the_kafka_bootstrap_address_is_the_strimzi_service():
    kafka = one("Kafka", "sidstream-kafka")
    (listener,) = [li for li in kafka["spec"]["kafka"]["listeners"] if li["type"] == "internal" and not li["tls"]]
    assert configmap_env()["SIDSTREAM_KAFKA_BOOTSTRAP_SERVERS"] == \
        f"{kafka['metadata']['name']}-kafka-bootstrap:{listener['port']}"


# ----- SIDSTREAM_* names vs the settings classes
ROOMS = ("catalogue", "features", "streams", "trainer", "serving", "deploy")


def _literal(node):
    try:
        return ast.literal_eval(node)
    except ValueError:
        return None


@functools.cache
def settings_env_names() -> frozenset[str]:
    """Environment names read by the pydantic settings classes of the rooms: env_prefix + field (nested models
    of a field as FIELD__SUBFIELD), inheritance followed by class name. Parsed, not imported."""
    classes: dict[str, dict] = {}
    for room in ROOMS:
        for path in (ROOT / room).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if not isinstance(node, ast.ClassDef):
                    continue
                info = {"bases": [b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases],
                        "fields": {}, "prefix": None}
                for stmt in node.body:
                    if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                        name = stmt.target.id
                        if name == "model_config" or name.startswith("_"):
                            continue
                        info["fields"][name] = ast.unparse(stmt.annotation)
                    elif isinstance(stmt, ast.Assign) and any(getattr(t, "id", "") == "model_config"
                                                              for t in stmt.targets):
                        for kw in getattr(stmt.value, "keywords", []):
                            if kw.arg == "env_prefix":
                                info["prefix"] = _literal(kw.value)
                classes.setdefault(node.name, info)

    def ancestry(name, seen=()):
        info = classes.get(name)
        if info is None or name in seen:
            return []
        return [name] + [a for b in info["bases"] for a in ancestry(b, seen + (name,))]

    names = set()
    for name, info in classes.items():
        chain = ancestry(name)
        if not any("BaseSettings" in classes[c]["bases"] for c in chain):
            continue
        prefix = next((classes[c]["prefix"] for c in chain if classes[c]["prefix"] is not None), "")
        if not prefix.upper().startswith("SIDSTREAM_"):
            continue
        for c in chain:
            for field, annotation in classes[c]["fields"].items():
                names.add(f"{prefix}{field}".upper())
                if annotation in classes:  # a nested model: SIDSTREAM_TOPICS__INTERACTIONS
                    for sub in classes[annotation]["fields"]:
                        names.add(f"{prefix}{field}__{sub}".upper())
    return frozenset(names)


def unknown_settings(names) -> list[str]:
    known = settings_env_names()
    return sorted(n for n in names if n.startswith("SIDSTREAM_") and n not in known)


def test_the_settings_scan_finds_the_real_fields():
    known = settings_env_names()
    assert {"SIDSTREAM_KAFKA_BOOTSTRAP_SERVERS", "SIDSTREAM_TOPICS__INTERACTIONS", "SIDSTREAM_PARTITIONS",
            "SIDSTREAM_ONLINE_STORE", "SIDSTREAM_REDIS_URL", "SIDSTREAM_QDRANT_URL", "SIDSTREAM_CATALOGUE_DIR",
            "SIDSTREAM_MODEL_DIR", "SIDSTREAM_PROCESSING_GUARANTEE", "SIDSTREAM_TORCH_THREADS"} <= known
    assert unknown_settings(["SIDSTREAM_KAFKA_BOOTSTRAP_SERVER"]) == ["SIDSTREAM_KAFKA_BOOTSTRAP_SERVER"]


def k8s_env_names() -> set[str]:
    names = set(configmap_env())
    for _, doc in k8s_docs():
        if doc["kind"] in {"Deployment", "StatefulSet"}:
            pods = [doc["spec"]["template"]]
        elif doc["kind"] == "RayService":
            cluster = doc["spec"]["rayClusterConfig"]
            pods = [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]
        else:
            continue
        for pod in pods:
            for container in pod["spec"]["containers"]:
                names |= {e["name"] for e in container.get("env", [])}
    return names


def test_compose_and_k8s_use_only_settings_the_code_reads():
    services = compose()["services"]
    compose_names = {name for svc in services.values() for name in (svc.get("environment") or {})}
    assert unknown_settings(compose_names) == []
    assert unknown_settings(k8s_env_names()) == []


# ----- compose
APP_SERVICES = ("worker", "trainer", "serving", "monitor")


def test_compose_keeps_the_external_services_outside_the_app_profile():
    services = compose()["services"]
    for name in ("kafka", "redis", "qdrant"):
        assert "profiles" not in services[name], f"plain `up -d` must still start {name}"
    for name in (*APP_SERVICES, "prometheus", "grafana"):
        assert services[name]["profiles"] == ["app"], name
    assert services["prometheus"]["image"] == "prom/prometheus:v3.5.0"
    assert services["grafana"]["image"] == "grafana/grafana:12.1.0"


def test_compose_app_services_share_one_image_volume_and_settings():
    spec = compose()
    services = spec["services"]
    for name in APP_SERVICES:
        svc = services[name]
        assert svc["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}, name
        assert (DEPLOY / svc["build"]["context"] / svc["build"]["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
        assert svc["image"] == IMAGE
        assert "sidstream-data:/data" in svc["volumes"]
        env = svc["environment"]
        assert env["SIDSTREAM_KAFKA_BOOTSTRAP_SERVERS"] == "kafka:19092"
        assert env["SIDSTREAM_ONLINE_STORE"] == "redis" and env["SIDSTREAM_REDIS_URL"] == "redis://redis:6379"
        assert env["SIDSTREAM_QDRANT_URL"] == "http://qdrant:6333"
        assert env["SIDSTREAM_CATALOGUE_DIR"] == "/data/catalogue" and env["SIDSTREAM_REGISTRY_DIR"] == "/data/registry"
        for dependency in ("kafka", "redis"):
            assert svc["depends_on"][dependency]["condition"] == "service_healthy"
            assert "healthcheck" in services[dependency]
    assert "sidstream-data" in spec["volumes"]
    assert services["worker"]["deploy"]["replicas"] == 2


def _listeners(value: str) -> dict[str, tuple[str, int]]:
    out = {}
    for item in value.split(","):
        name, _, address = item.partition("://")
        host, _, port = address.rpartition(":")
        out[name] = (host, int(port))
    return out


def test_compose_kafka_listeners_are_consistent():
    env = compose()["services"]["kafka"]["environment"]
    listeners = _listeners(env["KAFKA_LISTENERS"])
    advertised = _listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    protocols = dict(item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(listeners) == set(protocols)
    assert set(advertised) <= set(listeners)
    for name, (_, port) in advertised.items():
        assert listeners[name][1] == port, name
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] not in advertised
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in advertised
    assert advertised["PLAINTEXT"] == ("127.0.0.1", 9092)  # host users, as before
    internal = advertised["INTERNAL"]
    assert f"{internal[0]}:{internal[1]}" == compose()["services"]["worker"]["environment"][
        "SIDSTREAM_KAFKA_BOOTSTRAP_SERVERS"]


def test_compose_mounts_files_that_exist():
    services = compose()["services"]
    for name in ("prometheus", "grafana"):
        for volume in services[name]["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source}"
    provider = load_all(DEPLOY / "grafana/provisioning/dashboards/sidstream.yaml")[0]["providers"][0]
    mounts = [v.split(":")[1] for v in services["grafana"]["volumes"] if "sidstream-dashboard.json" in v]
    assert mounts and all(Path(m).parent == Path(provider["options"]["path"]) for m in mounts)


def _sidstream_parser():
    """The real `sidstream` parser, with abbreviations off everywhere: deployment files spell options in full."""
    from deploy.cli import build_parser

    parser = build_parser()
    todo = [parser]
    while todo:
        current = todo.pop()
        current.allow_abbrev = False
        for action in current._actions:
            if action.__class__.__name__ == "_SubParsersAction":
                todo.extend(action.choices.values())
    return parser


def check_command(argv: list[str]) -> None:
    parser = _sidstream_parser()
    try:
        parser.parse_args(argv)
    except SystemExit as exc:  # argparse's way of refusing
        raise AssertionError(f"`sidstream {shlex.join(argv)}` does not parse") from exc


COMMANDS = {
    "worker": ["worker", "--catalogue", "/data/catalogue"],
    "trainer": ["train", "online", "--registry", "/data/registry", "--catalogue", "/data/catalogue"],
    "serving": ["serve", "--model", "/data/registry", "--catalogue", "/data/catalogue", "--host", "0.0.0.0",
                "--port", "8000", "--replicas", "2"],
    "monitor": ["monitor", "--serve-metrics", "--interval", "10"],
}


@pytest.mark.parametrize("service", APP_SERVICES)
def test_compose_and_k8s_commands_are_real_sidstream_commands(service):
    assert compose()["services"][service]["command"] == COMMANDS[service]
    if service != "serving":  # on Kubernetes serving is the RayService
        (container,) = containers(one("Deployment", f"sidstream-{service}"))
        assert container["args"] == COMMANDS[service] and container["image"] == IMAGE
    check_command(COMMANDS[service])


def test_every_command_the_image_runs_is_a_real_sidstream_command():
    """Not only the four above: any service or container of the project's image, now or added later."""
    ran = [svc["command"] for svc in compose()["services"].values() if svc.get("image") == IMAGE]
    for _, doc in k8s_docs():
        if doc["kind"] in {"Deployment", "StatefulSet"}:
            ran += [c["args"] for c in containers(doc) if c["image"] == IMAGE]
    assert len(ran) == len(APP_SERVICES) + len(APP_SERVICES) - 1  # serving on Kubernetes is the RayService
    for argv in ran:
        check_command(argv)
        assert _sidstream_parser().parse_args(argv).handler, f"`sidstream {shlex.join(argv)}` runs nothing"


def test_a_wrong_command_is_noticed():
    for argv in (["worker", "--catalog", "/data/catalogue"], ["train", "online", "--registery", "/data/registry"],
                 ["serve", "--port", "eight thousand"]):
        with pytest.raises(AssertionError):
            check_command(argv)


# ----- ports: compose, Kubernetes and Prometheus agree
def prometheus_targets() -> dict[str, int]:
    config = load_all(DEPLOY / "prometheus.yml")[0]
    ports = {}
    for job in config["scrape_configs"]:
        assert job["metrics_path"] == "/metrics"
        assert job.get("scrape_interval", config["global"]["scrape_interval"]) == "10s"
        component = job["job_name"].removeprefix("sidstream-")
        found = [int(t.rpartition(":")[2]) for s in job.get("static_configs", []) for t in s["targets"]]
        found += [int(s["port"]) for s in job.get("dns_sd_configs", [])]
        assert len(set(found)) == 1, job["job_name"]
        ports[component] = found[0]
    return ports


def test_prometheus_scrapes_every_component_on_its_port():
    config = load_all(DEPLOY / "prometheus.yml")[0]
    assert prometheus_targets() == PORTS
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    (worker_sd,) = jobs["sidstream-worker"]["dns_sd_configs"]  # both compose replicas, by DNS
    assert worker_sd["type"] == "A" and worker_sd["names"] == ["worker"]
    services = compose()["services"]
    for name, job in jobs.items():
        for target in [t for s in job.get("static_configs", []) for t in s["targets"]]:
            assert target.rpartition(":")[0] in services, target
    for rule_file in config["rule_files"]:
        assert (DEPLOY / rule_file).is_file()


def test_compose_metric_ports_match():
    services = compose()["services"]
    for component, setting in PORT_SETTINGS.items():
        assert int(services[component]["environment"][setting]) == PORTS[component]
        assert str(PORTS[component]) in services[component]["expose"]
    assert services["serving"]["command"][services["serving"]["command"].index("--port") + 1] == str(PORTS["serving"])
    assert any(p.endswith(f":{PORTS['serving']}") for p in services["serving"]["ports"])
    scrape_list = services["monitor"]["environment"]["SIDSTREAM_MONITOR_SCRAPE"]
    scrape = dict(item.split("=", 1) for item in scrape_list.split(","))
    assert set(scrape) == {"worker", "trainer", "serving"}
    for name, url in scrape.items():
        parsed = urlparse(url)
        assert parsed.hostname == name and parsed.port == PORTS[name] and parsed.path == "/metrics"


def test_k8s_metric_ports_match():
    env = configmap_env()
    for component, setting in PORT_SETTINGS.items():
        assert int(env[setting]) == PORTS[component]
        deployment = one("Deployment", f"sidstream-{component}")
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == str(PORTS[component])
        assert annotations["prometheus.io/path"] == "/metrics"
        (container,) = containers(deployment)
        assert {"name": "metrics", "containerPort": PORTS[component]} in container["ports"]
        service = one("Service", f"sidstream-{component}")
        assert [p["port"] for p in service["spec"]["ports"]] == [PORTS[component]]
        assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    readiness = containers(one("Deployment", "sidstream-worker"))[0]["readinessProbe"]
    assert readiness["tcpSocket"]["port"] in ("metrics", PORTS["worker"])
    head = one("RayService", "sidstream")["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]
    assert {"name": "serve", "containerPort": PORTS["serving"]} in head["spec"]["containers"][0]["ports"]
    assert head["metadata"]["annotations"]["prometheus.io/port"] == str(PORTS["serving"])
    # the monitor's targets: Services that exist (KubeRay names the Serve service <RayService>-serve-svc)
    services = {s["metadata"]["name"] for s in by_kind("Service")} | {
        f"{r['metadata']['name']}-serve-svc" for r in by_kind("RayService")}
    for item in env["SIDSTREAM_MONITOR_SCRAPE"].split(","):
        name, url = item.split("=", 1)
        parsed = urlparse(url)
        assert parsed.hostname in services and parsed.port == PORTS[name], item


def test_k8s_pods_find_their_services_and_volume():
    names = {s["metadata"]["name"] for s in by_kind("Service")}
    env = configmap_env()
    assert urlparse(env["SIDSTREAM_REDIS_URL"]).hostname in names
    assert urlparse(env["SIDSTREAM_QDRANT_URL"]).hostname in names
    pvc = one("PersistentVolumeClaim", "sidstream-data")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    for name in ("sidstream-worker", "sidstream-trainer", "sidstream-monitor"):
        deployment = one("Deployment", name)
        pod = deployment["spec"]["template"]["spec"]
        claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v]
        assert claims == ["sidstream-data"], name
        assert pod["containers"][0]["envFrom"] == [{"configMapRef": {"name": "sidstream-config"}}]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert deployment["spec"]["selector"]["matchLabels"].items() <= \
            deployment["spec"]["template"]["metadata"]["labels"].items()
    trainer = one("Deployment", "sidstream-trainer")["spec"]
    assert trainer["replicas"] == 1 and trainer["strategy"]["type"] == "Recreate"  # one trainer per group
    assert one("Deployment", "sidstream-worker")["spec"]["replicas"] == 3
    for name in ("redis", "qdrant"):
        sts = one("StatefulSet", name)
        assert sts["spec"]["serviceName"] in names
    assert one("StatefulSet", "qdrant")["spec"]["template"]["spec"]["containers"][0]["image"] == "qdrant/qdrant:v1.15.0"


# ----- Dockerfile
def test_the_dockerfile_builds_one_non_root_image_of_the_project():
    text = (DEPLOY / "Dockerfile").read_text()
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert lines[0] == "FROM python:3.11-slim-bookworm"
    assert "pip install -c deploy/constraints.txt ." in text
    copied = [line.split()[1].rstrip("/") for line in lines if line.startswith("COPY ")]
    for path in ("pyproject.toml", "deploy/constraints.txt", *ROOMS):
        assert path in copied or any(path in line for line in lines if line.startswith("COPY ")), path
    for path in copied:
        assert (ROOT / path).exists(), path
    user = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert user and user[-1] not in ("root", "0")
    entrypoint = json.loads(next(line for line in lines if line.startswith("ENTRYPOINT "))[len("ENTRYPOINT "):])
    assert entrypoint[-1] == "sidstream"


# ----- PromQL: metric names in the dashboard and the alert rules
KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right",
            "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression selects (functions, keywords, labels and durations left out)."""
    assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}") \
        and expr.count("[") == expr.count("]"), f"unbalanced: {expr}"
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = match.group()
        if word.lower() in KEYWORDS or text[match.end():].lstrip().startswith("("):
            continue
        if match.start() > 0 and (text[match.start() - 1].isdigit() or text[match.start() - 1] == "."):
            continue  # a number such as 1e3
        names.add(word)
    return names


def series_known(name: str) -> bool:
    return any(name == base + suffix for base, kind in KNOWN_METRICS.items() for suffix in SUFFIXES[kind])


def dashboard_exprs() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana/sidstream-dashboard.json").read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def alert_rules() -> list[dict]:
    config = load_all(DEPLOY / "prometheus-alerts.yml")[0]
    return [rule for group in config["groups"] for rule in group["rules"]]


def test_metric_name_extraction():
    assert metric_names('histogram_quantile(0.99, sum by (le) (rate(x_bucket{a="b"}[5m]))) > 1') == {"x_bucket"}
    assert metric_names('sum(rate(a_total{s=~"5.."}[5m])) / sum(rate(b_total[5m])) > 0.01') == {"a_total", "b_total"}
    assert metric_names("max by (name) (m) == 2") == {"m"}


def test_dashboard_and_alerts_use_only_known_sidstream_metrics():
    exprs = dashboard_exprs() + [rule["expr"] for rule in alert_rules()]
    used = set().union(*(metric_names(e) for e in exprs))
    assert used, "no metric found"
    assert sorted(n for n in used if not n.startswith("sidstream_")) == []
    assert sorted(n for n in used if not series_known(n)) == []
    assert not series_known("sidstream_serving_requests")  # counters are exposed with _total only


def test_known_metric_types_agree_with_the_code_that_declares_them():
    """Where the code already declares a known metric, it declares it with the same type."""
    declared = {}
    for room in ROOMS:
        for path in (ROOT / room).rglob("*.py"):
            for kind, name in re.findall(r"\b(Counter|Gauge|Histogram|Summary)\(\s*[\"'](sidstream_[a-z0-9_]+)[\"']",
                                         path.read_text()):
                declared[name] = kind.lower()
    mismatched = {n: (t, declared[n]) for n, t in KNOWN_METRICS.items() if n in declared and declared[n] != t}
    assert mismatched == {}


def test_the_dashboard_is_a_grafana_model_with_the_four_rows():
    dashboard = json.loads((DEPLOY / "grafana/sidstream-dashboard.json").read_text())
    assert dashboard["uid"] == "sidstream" and dashboard["title"] == "sidstream: freshness and drift"
    assert dashboard["schemaVersion"] >= 39
    (variable,) = dashboard["templating"]["list"]
    assert variable["type"] == "datasource" and variable["query"] == "prometheus" and variable["name"] == "datasource"
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    assert [p["title"] for p in panels if p["type"] == "row"] == ["Freshness", "Drift", "Quality", "Throughput"]
    graphs = [p for p in panels if p["type"] != "row"]
    assert graphs and all(p["type"] == "timeseries" for p in graphs)
    for panel in graphs:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"])
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24 and grid["h"] > 0
    used = set().union(*(metric_names(e) for e in dashboard_exprs()))
    for base in ("sidstream_monitor_consumer_lag", "sidstream_stream_event_to_feast_seconds_bucket",
                 "sidstream_stream_item_to_catalogue_seconds_bucket", "sidstream_serving_item_lag_seconds_bucket",
                 "sidstream_monitor_model_age_seconds", "sidstream_serving_model_swap_lag_seconds_bucket",
                 "sidstream_monitor_drift_psi", "sidstream_monitor_drift_kl", "sidstream_monitor_dead_codes",
                 "sidstream_monitor_overloaded_codes", "sidstream_monitor_alert",
                 "sidstream_trainer_prequential_recall_at_10", "sidstream_stream_events_total",
                 "sidstream_serving_requests_total", "sidstream_serving_request_seconds_bucket",
                 "sidstream_serving_score_bucket"):
        assert base in used, base


def test_grafana_provisioning_points_at_prometheus():
    (source,) = load_all(DEPLOY / "grafana/provisioning/datasources/prometheus.yaml")[0]["datasources"]
    assert source["type"] == "prometheus"
    parsed = urlparse(source["url"])
    assert parsed.hostname in compose()["services"] and parsed.port == 9090
    (provider,) = load_all(DEPLOY / "grafana/provisioning/dashboards/sidstream.yaml")[0]["providers"]
    assert provider["type"] == "file"


def test_alert_rules_are_well_formed():
    rules = {rule["alert"]: rule for rule in alert_rules()}
    assert set(rules) == {"SidstreamDriftAlert", "SidstreamModelStale", "SidstreamConsumerLag",
                          "SidstreamEventToFeastSlow", "SidstreamStreamRewinds", "SidstreamServingErrors"}
    for name, rule in rules.items():
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}, name
        assert re.fullmatch(r"[0-9]+[smh]", rule["for"]), name
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"]
    assert 'sidstream_monitor_alert{name=~"drift_.*"} == 2' in rules["SidstreamDriftAlert"]["expr"]
    assert 'name="model_age"' in rules["SidstreamModelStale"]["expr"]
    assert 'name="consumer_lag"' in rules["SidstreamConsumerLag"]["expr"]
    assert 'status=~"5.."' in rules["SidstreamServingErrors"]["expr"]
    assert "sidstream_stream_rewinds_total" in rules["SidstreamStreamRewinds"]["expr"]
