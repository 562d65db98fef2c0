"""deploy/compose/compose.yaml is a valid Compose file that runs what the services expect."""

import importlib
import json
import re
import shlex
from collections import defaultdict
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml
from pydantic import TypeAdapter

from devstack import SERVICES
from gatewaysim.settings import Account
from shared.runtime.kafka_auth import ACCESS, ADMIN, SCRAM, AclRule, acl_rules, compose_access_script, password_variable
from shared.contract.topics import TOPICS
from tests.deploy.conftest import (
    AHEAD_OF_THE_SERVICES, GATEWAY_CLIENTS, ROOT, SCHEMAS, assert_routes_reach_the_simulator_accounts, require_setting,
    settings_env_names, simulator_env_names,
)
from tests.deploy.dockerfile import DOCKERFILE, build

COMPOSE_DIR = ROOT / "deploy/compose"
KAFKA_DIR = COMPOSE_DIR / "kafka"
# Built from this repository (not pinned third-party images): the services and the gateway simulator.
BUILT_HERE = (*SERVICES, "console", "gatewaysim")  # the console: services/console, built from deploy/Dockerfile


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
    assert service["depends_on"]["kafka-init"]["condition"] == "service_completed_successfully"


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
    script = (KAFKA_DIR / "topics.sh").read_text()
    created = {}
    for line in script.splitlines():
        if line.startswith("create "):
            _, topic, partitions, *options = shlex.split(line)
            created[topic] = (int(partitions), dict(v.split("=", 1) for o, v in zip(options, options[1:])
                                                     if o == "--config"))
    assert created == {t.name: (t.partitions, t.config) for t in TOPICS}


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


# Kafka: SCRAM-SHA-512 principals with the ACLs of shared/runtime/kafka_auth.py ACCESS (kafka/).

def broker_config() -> dict[str, str]:
    lines = (KAFKA_DIR / "server.properties").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def listeners(config: dict[str, str], key: str = "listeners") -> dict[str, str]:
    """Listener name -> its host:port."""
    return dict(entry.split("://") for entry in config[key].split(","))


def protocols(config: dict[str, str]) -> dict[str, str]:
    """Listener name -> its security protocol."""
    return dict(entry.split(":") for entry in config["listener.security.protocol.map"].split(","))


def access_script() -> list[list[str]]:
    """The calls of kafka/access.sh, each as its words."""
    lines = (KAFKA_DIR / "access.sh").read_text().splitlines()
    return [shlex.split(line) for line in lines if line and not line.startswith("#")]


def granted() -> dict[str, set[AclRule]]:
    """Principal -> the ALLOW rules its `acl` calls add (kafka-acls grants each operation on each resource)."""
    grants: dict[str, set[AclRule]] = defaultdict(set)
    for call, *words in access_script():
        if call != "acl":
            continue
        principal, pattern, operations, resources = None, "literal", [], []
        while words:
            option = words.pop(0)
            if option == "--cluster":
                resources.append(("cluster", "kafka-cluster"))
            elif option in ("--topic", "--group"):
                resources.append((option[2:], words.pop(0)))
            elif option == "--operation":
                operations.append(words.pop(0))
            elif option == "--resource-pattern-type":
                pattern = {"prefixed": "prefix", "literal": "literal"}[words.pop(0)]
            elif option == "--allow-principal":
                principal = words.pop(0).removeprefix("User:")
            else:
                pytest.fail(f"unexpected kafka-acls option {option}")
        grants[principal] |= {AclRule(kind, name, pattern, op) for kind, name in resources for op in operations}
    return grants


def users() -> dict[str, str]:
    """Principal -> the variable its password comes from, as access.sh creates the SCRAM users."""
    return {words[1]: words[2] for words in access_script() if words[0] == "user"}


def test_the_broker_authenticates_every_listener_and_denies_what_no_acl_allows(compose):
    config = broker_config()
    protocol = protocols(config)
    controller = config["controller.listener.names"]
    bound = listeners(config)
    clients = set(bound) - {controller}
    assert clients and {protocol[name] for name in clients} == {"SASL_PLAINTEXT"}
    assert set(listeners(config, "advertised.listeners")) == clients
    assert config["sasl.enabled.mechanisms"] == config["sasl.mechanism.inter.broker.protocol"] == SCRAM
    assert config["inter.broker.listener.name"] in clients
    assert config["authorizer.class.name"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert config["allow.everyone.if.no.acl.found"] == "false"
    # The super users: the admin, and the controller listener's ANONYMOUS, which only the container's
    # loopback reaches (the broker registering with its own controller).
    assert set(config["super.users"].split(";")) == {f"User:{ADMIN}", "User:ANONYMOUS"}
    assert protocol[controller] == "PLAINTEXT" and bound[controller].startswith("127.0.0.1:")
    assert config["controller.quorum.voters"] == f"1@{bound[controller]}"
    # broker.sh gives every SASL listener the SCRAM login and formats with the admin as a SCRAM user.
    kafka = compose["services"]["kafka"]
    assert kafka["entrypoint"] == ["/bin/sh", "/refunds/kafka/broker.sh"]
    assert "./kafka:/refunds/kafka:ro" in kafka["volumes"]
    broker = (KAFKA_DIR / "broker.sh").read_text()
    for name in clients:
        assert f"listener.name.{name.lower()}.{SCRAM.lower()}.sasl.jaas.config=" in broker
    assert "--add-scram \"$SCRAM=[name=$ADMIN" in broker
    assert kafka["environment"][password_variable(ADMIN)] == compose["services"]["kafka-init"]["environment"][
        password_variable(ADMIN)]
    # Published on the host's loopback only, on the host listener.
    (published,) = kafka["ports"]
    host, port, _ = published.split(":")
    assert host == "127.0.0.1" and listeners(config, "advertised.listeners")["HOST"] == f"127.0.0.1:{port}"


def test_kafka_init_creates_every_principal_with_exactly_the_acls_of_the_table(compose):
    init = compose["services"]["kafka-init"]
    assert init["entrypoint"] == ["/bin/sh", "/refunds/kafka/init.sh"]
    assert "./kafka:/refunds/kafka:ro" in init["volumes"]
    assert init["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert users() == {principal: password_variable(principal) for principal in ACCESS}
    grants = granted()
    assert set(grants) == set(ACCESS)
    for principal, access in ACCESS.items():
        assert sorted(grants[principal]) == acl_rules(access), principal
    # It has every password it sets, and the admin's it connects with.
    assert set(init["environment"]) == {*users().values(), password_variable(ADMIN), "BOOTSTRAP"}


def test_the_access_script_is_current():
    assert (KAFKA_DIR / "access.sh").read_text() == compose_access_script(), (
        "deploy/compose/kafka/access.sh is stale: run "
        ".venv/bin/python -m shared.runtime.kafka_auth compose-acls > deploy/compose/kafka/access.sh")


@pytest.mark.parametrize("name", SERVICES)
def test_each_service_connects_as_its_own_principal_with_scram(compose, name):
    env = compose["services"][name]["environment"]
    assert env["KAFKA_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT" and env["KAFKA_SASL_MECHANISM"] == SCRAM
    assert env["KAFKA_SASL_USERNAME"] == name and name in ACCESS
    # The password kafka-init gives that principal.
    assert env["KAFKA_SASL_PASSWORD"] == compose["services"]["kafka-init"]["environment"][users()[name]]
    assert {"KAFKA_SECURITY_PROTOCOL", "KAFKA_SASL_MECHANISM", "KAFKA_SASL_USERNAME",
            "KAFKA_SASL_PASSWORD"} <= settings_env_names(name)


def test_no_container_connects_to_kafka_without_authentication(compose):
    advertised = listeners(broker_config(), "advertised.listeners")
    protocol = protocols(broker_config())
    for name, service in compose["services"].items():
        env = service.get("environment", {})
        if "KAFKA_BOOTSTRAP_SERVERS" in env:
            assert env["KAFKA_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT", name
            for address in env["KAFKA_BOOTSTRAP_SERVERS"].split(","):
                (listener,) = [listener for listener, value in advertised.items() if value == address]
                assert protocol[listener] == "SASL_PLAINTEXT", name
    assert "--command-config" in compose["services"]["kafka"]["healthcheck"]["test"]
