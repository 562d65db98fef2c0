"""deploy/compose/compose.yaml is a valid Compose file that runs what the services expect."""

import importlib
import json
import re
import shlex
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml
from pydantic import TypeAdapter

from devstack import SERVICES
from gatewaysim.settings import Account
from shared.topics import TOPICS
from tests.deploy.conftest import (
    AHEAD_OF_THE_SERVICES, GATEWAY_CLIENTS, ROOT, SCHEMAS, assert_routes_reach_the_simulator_accounts, require_setting,
    settings_env_names, simulator_env_names,
)
from tests.deploy.dockerfile import DOCKERFILE, build

COMPOSE_DIR = ROOT / "deploy/compose"
# Built from this repository (not pinned third-party images): the services and the gateway simulator.
BUILT_HERE = (*SERVICES, "gatewaysim")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((COMPOSE_DIR / "compose.yaml").read_text())


def test_compose_file_is_valid_against_the_compose_specification(compose):
    schema = json.loads((SCHEMAS / "compose-spec.json").read_text())
    jsonschema.Draft7Validator(schema).validate(compose)
    broken = {**compose, "services": {**compose["services"], "intake": {**compose["services"]["intake"],
                                                                          "stop_grace_period": [60]}}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(schema).validate(broken)


def built_image(service: dict):
    """What the service's `build:` makes of the one Dockerfile (its target and build args)."""
    spec = service["build"]
    assert (COMPOSE_DIR / spec["context"]).resolve() == ROOT
    assert ROOT / spec["dockerfile"] == DOCKERFILE
    return build(spec.get("target"), **spec.get("args", {}))


@pytest.mark.parametrize("name", SERVICES)
def test_each_service_is_built_from_the_dockerfile_with_env_it_reads(compose, name):
    service = compose["services"][name]
    assert built_image(service).app == f"services.{name}.main:app"
    assert service["image"] == f"refund-{name}:dev"  # the tag the local Kubernetes overlay runs
    env = service["environment"]
    fields = settings_env_names(name)
    assert set(env) - AHEAD_OF_THE_SERVICES <= fields, set(env) - fields
    assert env["SERVICE_NAME"] == name
    # The images say production; compose routes to the simulator, which production refuses.
    assert env["ENVIRONMENT"] == "local"
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert env["DATABASE_URL"].split("@")[1].startswith("postgres:5432/")
    assert service["ports"][0].endswith(f":{env['HTTP_PORT']}")
    assert "/readyz" in " ".join(service["healthcheck"]["test"])
    assert service["read_only"] is True and service["user"] != "0" and service["cap_drop"] == ["ALL"]
    grace = int(service["stop_grace_period"].rstrip("s"))
    assert grace > 20 + float(env["GRACEFUL_TIMEOUT_SECONDS"])  # uvicorn drain + consumer graceful timeout
    assert service["depends_on"]["kafka-topics"]["condition"] == "service_completed_successfully"


@pytest.mark.parametrize("name", SERVICES)
def test_each_service_connects_as_its_own_role_which_owns_its_schema(compose, name):
    schema = importlib.import_module(f"services.{name}.main").stage.schema
    role = urlsplit(compose["services"][name]["environment"]["DATABASE_URL"]).username
    assert role == f"refund_{schema}"
    assert owned_schemas(compose)[role] == schema


def owned_schemas(compose: dict) -> dict[str, str]:
    """Role -> the schema it owns, as postgres-init/ creates them (mounted where the image runs them)."""
    mounts = compose["services"]["postgres"]["volumes"]
    assert "./postgres-init:/docker-entrypoint-initdb.d:ro" in mounts
    sql = " ".join(path.read_text() for path in sorted((COMPOSE_DIR / "postgres-init").glob("*.sql")))
    logins = set(re.findall(r"CREATE ROLE (\w+) LOGIN", sql))
    owned = dict((role, schema) for schema, role in re.findall(r"CREATE SCHEMA (\w+) AUTHORIZATION (\w+)", sql))
    assert set(owned) <= logins
    return owned


def test_the_gateway_simulator_runs_as_its_own_process_role_and_schema(compose):
    sim = compose["services"]["gatewaysim"]
    assert built_image(sim).app == "gatewaysim.main:app"
    assert sim["image"] == "gatewaysim:dev"  # the tag the local Kubernetes overlay runs
    env = sim["environment"]
    assert set(env) <= simulator_env_names(), set(env) - simulator_env_names()
    assert owned_schemas(compose)[urlsplit(env["SIM_DATABASE_URL"]).username] == "gateway_sim"
    assert sim["ports"][0].endswith(f":{env['SIM_HTTP_PORT']}")
    assert "/readyz" in " ".join(sim["healthcheck"]["test"])
    assert sim["read_only"] is True and sim["user"] != "0" and sim["cap_drop"] == ["ALL"]
    assert set(sim["depends_on"]) == {"postgres"}
    # Its accounts: the pipeline's gateway names, each posting its webhooks to payout.
    accounts = TypeAdapter(dict[str, Account]).validate_json(env["SIM_ACCOUNTS"])
    assert {name: a.personality for name, a in accounts.items()} == {"sim": "stripe", "stripe": "stripe",
                                                                     "adyen": "adyen"}
    payout_port = compose["services"]["payout"]["environment"]["HTTP_PORT"]
    for name, account in accounts.items():
        assert account.webhook_url == f"http://payout:{payout_port}/v1/gateway-events/{name}"
    seeds = json.loads(env["SIM_SEED_PAYMENTS"])
    assert {seed["account"] for seed in seeds} <= set(accounts)


@pytest.mark.parametrize("name", GATEWAY_CLIENTS)
def test_gateway_clients_route_every_gateway_to_the_simulator_with_its_keys(compose, name):
    service = compose["services"][name]
    sim = compose["services"]["gatewaysim"]["environment"]
    assert_routes_reach_the_simulator_accounts(service["environment"]["GATEWAY_ROUTES"], sim["SIM_ACCOUNTS"],
                                               f"http://gatewaysim:{sim['SIM_HTTP_PORT']}")
    assert service["depends_on"]["gatewaysim"]["condition"] == "service_healthy"
    require_setting(name, "GATEWAY_ROUTES")


def test_only_the_gateway_clients_get_gateway_routes(compose):
    routed = {name for name in SERVICES if "GATEWAY_ROUTES" in compose["services"][name]["environment"]}
    assert routed == set(GATEWAY_CLIENTS)


def test_topic_script_creates_every_contract_topic(compose):
    script = (COMPOSE_DIR / "create-topics.sh").read_text()
    created = {}
    for line in script.splitlines():
        if line.startswith("create "):
            _, topic, partitions, *options = shlex.split(line)
            created[topic] = (int(partitions), dict(v.split("=", 1) for o, v in zip(options, options[1:])
                                                     if o == "--config"))
    assert created == {t.name: (t.partitions, t.config) for t in TOPICS}
    mounts = compose["services"]["kafka-topics"]["volumes"]
    assert any(m.startswith("./create-topics.sh:") for m in mounts)


def test_prometheus_scrapes_every_service_and_loads_the_rules(compose):
    config = yaml.safe_load((COMPOSE_DIR / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
    assert jobs == {f"refund-{name}": [f"{name}:8080"] for name in SERVICES}
    mounts = dict(m.rsplit(":", 1)[0].split(":", 1) for m in compose["services"]["prometheus"]["volumes"])
    assert mounts["../prometheus/rules.yml"] in config["rule_files"]
    assert mounts["./prometheus.yml"] == "/etc/prometheus/prometheus.yml"


def test_grafana_provisions_the_dashboards(compose):
    mounts = dict(m.rsplit(":", 1)[0].split(":", 1) for m in compose["services"]["grafana"]["volumes"])
    provider = yaml.safe_load((COMPOSE_DIR / "grafana/provisioning/dashboards/refunds.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == mounts["../grafana/dashboards"]
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    datasource = yaml.safe_load((COMPOSE_DIR / "grafana/provisioning/datasources/prometheus.yml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"


def test_third_party_images_are_pinned(compose):
    for name, service in compose["services"].items():
        if name not in BUILT_HERE:
            # A full release version (PostgreSQL's are major.minor), never `latest` or a bare major.
            assert re.search(r":v?\d+\.\d+(\.\d+)?(-\w+)?$", service["image"]), f"{name}: unpinned {service['image']}"
