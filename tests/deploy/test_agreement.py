"""The manifests agree with what the services actually run: images, ports, probes, env, topics, groups."""

import importlib
import json
import os
import re
from pathlib import Path

import pytest

from devstack import SERVICES
from shared.contract.topics import TOPICS
from tests.deploy.conftest import (
    AHEAD_OF_THE_SERVICES, GATEWAY_CLIENTS, ROOT, require_setting, settings_env_names, simulator_env_names,
)
from tests.deploy.dockerfile import DOCKERFILE, service_image, simulator_image
from tools import k8s_kafka, k8s_monitoring

PARTITIONS = {topic.name: topic.partitions for topic in TOPICS}


def objects(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def container(deployment: dict) -> dict:
    return deployment["spec"]["template"]["spec"]["containers"][0]


def env_names(deployment: dict, configmaps: dict[str, dict]) -> dict[str, str | None]:
    """Env name -> literal value (None when it comes from a Secret) as the container sees it."""
    spec = container(deployment)
    names: dict[str, str | None] = {}
    for source in spec.get("envFrom", []):
        names.update(configmaps[source["configMapRef"]["name"]]["data"])
    for var in spec.get("env", []):
        names[var["name"]] = var.get("value")
    return names


@pytest.fixture(scope="module", params=SERVICES)
def service(request):
    main = importlib.import_module(f"services.{request.param}.main")
    return request.param, main


@pytest.mark.parametrize("overlay", ["local", "prod"])
def test_images_ports_probes_and_env_match_the_service(overlay, service, rendered):
    name, main = service
    docs = rendered[overlay]
    deployment = objects(docs, "Deployment")[f"refund-{name}"]
    spec = container(deployment)
    image = service_image(name)

    # Image: the one deploy/Dockerfile builds with SERVICE=<name>, running that service's app.
    assert spec["image"].split(":")[0].rsplit("/", 1)[-1] == f"refund-{name}"
    assert image.app == f"services.{name}.main:app"
    # Ports: container port == the port uvicorn listens on == EXPOSE == HTTP_PORT.
    port = int(image.option("--port"))
    assert [p["containerPort"] for p in spec["ports"] if p["name"] == "http"] == [port]
    assert image.expose == [port]
    env = env_names(deployment, objects(docs, "ConfigMap"))
    assert env["HTTP_PORT"] == str(port)
    # Probes: on the named port, at paths the service's app really serves.
    routes = {getattr(route, "path", None) for route in main.app.routes}  # included routers have none
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert spec[probe]["httpGet"]["port"] == "http"
        assert spec[probe]["httpGet"]["path"] in routes, (probe, spec[probe])
    assert spec["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert spec["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # Env: every name is a field of the service's own Settings class; the required wiring is there.
    fields = settings_env_names(name)
    unread = set(env) - fields - AHEAD_OF_THE_SERVICES
    assert not unread, f"env names the service does not read: {unread}"
    assert {"DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "SERVICE_NAME"} <= set(env)
    assert env["SERVICE_NAME"] == main.settings.service_name == name
    assert env["MIGRATE_ON_START"] == "false"  # the init container migrates
    # Secrets are referenced, never inlined.
    secret_refs = {v["name"]: v["valueFrom"]["secretKeyRef"] for v in spec["env"] if "valueFrom" in v}
    assert "DATABASE_URL" in secret_refs and env["DATABASE_URL"] is None
    assert not [d for d in docs if d["kind"] == "Secret"]


def test_migrations_run_in_an_init_container_before_the_service(service, rendered):
    name, main = service
    deployment = objects(rendered["prod"], "Deployment")[f"refund-{name}"]
    init = deployment["spec"]["template"]["spec"]["initContainers"]
    assert [c["name"] for c in init] == ["migrate"]
    assert init[0]["image"] == container(deployment)["image"]
    module, schema, folder = init[0]["command"][2:5]
    assert init[0]["command"][:2] == ["python", "-m"] and module == "shared.runtime.migrate"
    assert schema == main.stage.schema and (ROOT / folder).is_dir()
    assert [v for v in init[0]["env"] if v["name"] == "DATABASE_URL"][0]["valueFrom"]["secretKeyRef"]


def assert_pod_hardened(pod: dict, docs: list[dict]) -> None:
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] in objects(docs, "ServiceAccount")
    for spec in pod["containers"] + pod.get("initContainers", []):
        security = spec["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        assert {"cpu", "memory"} <= spec["resources"]["requests"].keys()
        assert {"cpu", "memory"} <= spec["resources"]["limits"].keys()


def test_pod_is_hardened_and_shuts_down_inside_its_grace_period(service, rendered):
    name, main = service
    docs = rendered["prod"]
    deployment = objects(docs, "Deployment")[f"refund-{name}"]
    pod = deployment["spec"]["template"]["spec"]
    assert_pod_hardened(pod, docs)
    image = service_image(name)
    assert image.user not in ("root", "0") and int(image.user) == pod["securityContext"]["runAsUser"]
    # Grace period > preStop pause + uvicorn's HTTP drain + the consumer's graceful timeout.
    env = env_names(deployment, objects(docs, "ConfigMap"))
    pre_stop = pod["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
    http_drain = float(image.option("--timeout-graceful-shutdown"))
    consumer = float(env["GRACEFUL_TIMEOUT_SECONDS"])
    assert pod["terminationGracePeriodSeconds"] > pre_stop + http_drain + consumer


def assert_multi_stage_pinned_locked_and_non_root(image) -> None:
    assert len(image.bases) >= 2
    for base in image.bases:
        assert re.search(r":\d+\.\d+\.\d+", base) or "@sha256:" in base, f"unpinned base image {base}"
    assert {"pyproject.toml", "uv.lock", "shared/"} <= image.copied
    assert any(run.startswith("uv sync --frozen") for run in image.runs)
    assert image.user not in ("root", "0")


def test_the_one_dockerfile_builds_each_service_with_only_its_own_package(service):
    name, main = service
    image = service_image(name)
    assert_multi_stage_pinned_locked_and_non_root(image)
    assert {source for source in image.copied if source.startswith("services/")} == {
        "services/__init__.py", f"services/{name}/"}
    # Fails closed: the image says production (shared/runtime/settings.py refuses public defaults there).
    assert image.env["ENVIRONMENT"] == "production" and image.env["SERVICE_NAME"] == name
    # The files the service reads by default (intake's SLA table, approval's policy) are in its image.
    for setting, info in type(main.settings).model_fields.items():
        default = info.default
        if isinstance(default, Path) and default.is_relative_to(ROOT):
            wanted = default.relative_to(ROOT).as_posix()
            assert any(wanted == source.rstrip("/") or wanted.startswith(source) for source in image.copied), (
                setting, wanted)


def test_no_other_dockerfile_is_left():
    found = []
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [Path(folder, f).relative_to(ROOT).as_posix() for f in files if f.startswith("Dockerfile")]
    assert sorted(found) == [DOCKERFILE.relative_to(ROOT).as_posix(), "deploy/Dockerfile.dockerignore"]


def test_selectors_pdb_network_policy_and_service_monitor_select_the_pods(service, rendered):
    name, _ = service
    docs = rendered["prod"]
    app = f"refund-{name}"
    deployment = objects(docs, "Deployment")[app]
    labels = deployment["spec"]["template"]["metadata"]["labels"]

    def selects(selector: dict, target: dict) -> bool:
        return selector.items() <= target.items()

    assert selects(deployment["spec"]["selector"]["matchLabels"], labels)
    assert selects(objects(docs, "PodDisruptionBudget")[app]["spec"]["selector"]["matchLabels"], labels)
    assert selects(objects(docs, "Service")[app]["spec"]["selector"], labels)
    policy = objects(docs, "NetworkPolicy")[app]["spec"]
    assert selects(policy["podSelector"]["matchLabels"], labels)
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    # Outside the cluster: notify reaches SMTP (587) and HTTPS (443: SMS provider, platform webhooks);
    # the gateway clients reach the gateways over HTTPS.
    outside = {"notify": {587, 443}, **dict.fromkeys(GATEWAY_CLIENTS, {443})}.get(name, set())
    assert {port["port"] for rule in policy["egress"] for port in rule["ports"]} == {53, 9092, 5432} | outside
    assert objects(docs, "NetworkPolicy")["default-deny"]["spec"]["podSelector"] == {}
    service_obj = objects(docs, "Service")[app]
    monitor = objects(docs, "ServiceMonitor")["refund-pipeline"]
    assert selects(monitor["spec"]["selector"]["matchLabels"], service_obj["metadata"]["labels"])
    assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in service_obj["spec"]["ports"]}
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"


@pytest.mark.parametrize("overlay", ["local", "prod"])
def test_scaled_object_scales_on_the_services_own_consumer_group_up_to_its_partitions(overlay, service, rendered):
    name, main = service
    docs = rendered[overlay]
    scaled = objects(docs, "ScaledObject")[f"refund-{name}"]
    subscriber = main.consumer
    consumed = list(subscriber.topic_names)
    assert scaled["spec"]["scaleTargetRef"]["name"] in objects(docs, "Deployment")
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["consumerGroup"] == subscriber.group_id
    assert trigger["metadata"].get("topic", consumed[0]) in consumed
    assert trigger["metadata"]["bootstrapServers"] == env_names(
        objects(docs, "Deployment")[f"refund-{name}"], objects(docs, "ConfigMap"))["KAFKA_BOOTSTRAP_SERVERS"]
    assert 1 <= scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"]
    # KEDA's HPA owns the replica count; a fixed one would be reset on every apply.
    assert "replicas" not in objects(docs, "Deployment")[f"refund-{name}"]["spec"]
    assert scaled["spec"]["maxReplicaCount"] <= min(PARTITIONS[topic] for topic in consumed)


def test_every_contract_topic_is_a_kafka_topic_with_its_partitions_and_config(rendered):
    for overlay, docs in rendered.items():
        declared = {d["spec"]["topicName"]: d for d in docs if d["kind"] == "KafkaTopic"}
        assert set(declared) == set(PARTITIONS), overlay
        for topic in TOPICS:
            spec = declared[topic.name]["spec"]
            assert spec["partitions"] == topic.partitions
            assert topic.config.items() <= spec["config"].items()
            assert declared[topic.name]["metadata"]["namespace"] == "kafka"
        assert declared["refunds.status"]["spec"]["config"]["cleanup.policy"] == "compact"
        assert "retention.ms" in declared["refunds.requested"]["spec"]["config"]


def test_monitoring_objects_carry_the_labels_kube_prometheus_stack_selects(rendered):
    docs = rendered["prod"]
    for kind in ("ServiceMonitor", "PrometheusRule"):
        for obj in objects(docs, kind).values():
            assert obj["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    dashboards = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("grafana-")]
    assert dashboards and all(d["metadata"]["labels"]["grafana_dashboard"] == "1" for d in dashboards)
    for board in dashboards:
        for text in board["data"].values():
            assert json.loads(text)["panels"]


def test_generated_monitoring_objects_are_current():
    for path, text in k8s_monitoring.rendered().items():
        assert Path(path).read_text() == text, f"{path} is stale: run .venv/bin/python -m tools.k8s_monitoring"


def test_alert_rules_and_dashboards_use_the_contract_metrics():
    rules = (ROOT / "deploy/prometheus/rules.yml").read_text()
    assert "refund_stage_overdue" in rules
    boards = " ".join(p.read_text() for p in (ROOT / "deploy/grafana/dashboards").glob("*.json"))
    for metric in ("refund_stage_duration_seconds", "refund_stage_inflight", "refund_stage_overdue"):
        assert metric in boards


def secret_ref(deployment: dict, name: str) -> dict:
    """The Secret key an env var of the container comes from."""
    (var,) = [v for v in container(deployment)["env"] if v["name"] == name]
    return var["valueFrom"]["secretKeyRef"]


def test_production_gives_every_setting_a_production_start_requires(service, rendered):
    """With ENVIRONMENT=production a service refuses public default secrets and unset required settings."""
    name, main = service
    settings = type(main.settings)
    docs = rendered["prod"]
    deployment = objects(docs, "Deployment")[f"refund-{name}"]
    env = env_names(deployment, objects(docs, "ConfigMap"))
    for setting in settings.production_secrets:
        assert secret_ref(deployment, setting.upper())["key"], (name, setting)
    for setting in settings.production_required:
        assert setting.upper() in env and env[setting.upper()] != "", (name, setting)


@pytest.mark.parametrize(("overlay", "environment"), [("local", "local"), ("prod", "production")])
def test_every_service_runs_in_its_overlays_environment(overlay, environment, service, rendered):
    name, _ = service
    docs = rendered[overlay]
    env = env_names(objects(docs, "Deployment")[f"refund-{name}"], objects(docs, "ConfigMap"))
    assert env["ENVIRONMENT"] == environment


# Where the gateway clients' GATEWAY_ROUTES come from: operators' Secret of real gateways in production,
# the simulator's routes (local-secrets.sh) in the local overlay.
ROUTES_SECRET = {"prod": {"name": "refund-gateway-routes", "key": "gateway-routes"},
                 "local": {"name": "gatewaysim-routes", "key": "gateway-routes"}}


@pytest.mark.parametrize("overlay", ["local", "prod"])
@pytest.mark.parametrize("name", GATEWAY_CLIENTS)
def test_gateway_clients_get_their_routes_from_a_secret(overlay, name, rendered):
    deployment = objects(rendered[overlay], "Deployment")[f"refund-{name}"]
    assert secret_ref(deployment, "GATEWAY_ROUTES") == ROUTES_SECRET[overlay]
    require_setting(name, "GATEWAY_ROUTES")


@pytest.mark.parametrize("overlay", ["local", "prod"])
def test_only_the_gateway_clients_get_gateway_routes(overlay, rendered):
    deployments = objects(rendered[overlay], "Deployment")
    routed = {name for name in SERVICES
              if "GATEWAY_ROUTES" in {v["name"] for v in container(deployments[f"refund-{name}"])["env"]}}
    assert routed == set(GATEWAY_CLIENTS)


def test_the_production_overlay_has_no_simulator(rendered, rendered_files):
    docs = rendered["prod"]
    text = rendered_files["prod"].read_text()
    assert "gatewaysim" not in text and "gateway-simulator" not in text
    assert not re.search(r"simulator\W*:\s*true", text, re.I)
    assert not [d for d in docs if "gatewaysim" in json.dumps(d)]


def test_the_local_overlay_runs_the_simulator_from_its_dockerfile(rendered):
    docs = rendered["local"]
    deployment = objects(docs, "Deployment")["gatewaysim"]
    pod = deployment["spec"]["template"]["spec"]
    spec = container(deployment)
    image = simulator_image()
    main = importlib.import_module("gatewaysim.main")

    assert spec["image"] == "gatewaysim:dev"  # the tag compose builds
    assert image.app == "gatewaysim.main:app"
    assert image.option("--host") == "0.0.0.0"
    port = int(image.option("--port"))
    assert [p["containerPort"] for p in spec["ports"] if p["name"] == "http"] == [port] and image.expose == [port]
    env = env_names(deployment, objects(docs, "ConfigMap"))
    assert set(env) <= simulator_env_names(), set(env) - simulator_env_names()
    assert env["SIM_HTTP_PORT"] == str(port)
    assert env["SIM_DATABASE_URL"] is None and secret_ref(deployment, "SIM_DATABASE_URL")["key"]
    assert env["SIM_ACCOUNTS"] is None and secret_ref(deployment, "SIM_ACCOUNTS")["key"]
    routes = {getattr(route, "path", None) for route in main.app.routes}
    assert {spec[probe]["httpGet"]["path"] for probe in ("startupProbe", "livenessProbe", "readinessProbe")} <= routes
    assert spec["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert_pod_hardened(pod, docs)
    assert int(image.user) == pod["securityContext"]["runAsUser"]
    pre_stop = spec["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] > pre_stop + float(image.option("--timeout-graceful-shutdown"))
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert objects(docs, "Service")["gatewaysim"]["spec"]["selector"].items() <= labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_the_simulator_target_ships_only_the_simulator():
    image = simulator_image()
    assert_multi_stage_pinned_locked_and_non_root(image)
    assert image.copied == {"pyproject.toml", "uv.lock", "shared/", "gatewaysim/"}, image.copied


def test_generated_kafka_objects_are_current():
    for path, text in k8s_kafka.rendered().items():
        assert Path(path).read_text() == text, f"{path} is stale: run .venv/bin/python -m tools.k8s_kafka"
