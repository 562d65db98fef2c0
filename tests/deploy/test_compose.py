"""deploy/compose/compose.yaml is a valid Compose file that runs what the services expect."""

import json
import re
import shlex

import jsonschema
import pytest
import yaml

from devstack import SERVICES
from shared.topics import TOPICS
from tests.deploy.conftest import ROOT, SCHEMAS, settings_env_names

COMPOSE_DIR = ROOT / "deploy/compose"


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


@pytest.mark.parametrize("name", SERVICES)
def test_each_service_is_built_from_its_dockerfile_with_env_it_reads(compose, name):
    service = compose["services"][name]
    assert (COMPOSE_DIR / service["build"]["context"]).resolve() == ROOT
    assert service["build"]["dockerfile"] == f"services/{name}/Dockerfile"
    assert service["image"] == f"refund-{name}:dev"  # the tag the local Kubernetes overlay runs
    env = service["environment"]
    fields = settings_env_names(name)
    assert set(env) <= fields, set(env) - fields
    assert env["SERVICE_NAME"] == name
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert env["DATABASE_URL"].split("@")[1].startswith("postgres:5432/")
    assert service["ports"][0].endswith(f":{env['HTTP_PORT']}")
    assert "/readyz" in " ".join(service["healthcheck"]["test"])
    assert service["read_only"] is True and service["user"] != "0" and service["cap_drop"] == ["ALL"]
    grace = int(service["stop_grace_period"].rstrip("s"))
    assert grace > 20 + float(env["GRACEFUL_TIMEOUT_SECONDS"])  # uvicorn drain + consumer graceful timeout
    assert service["depends_on"]["kafka-topics"]["condition"] == "service_completed_successfully"


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
        if name not in SERVICES:
            # A full release version (PostgreSQL's are major.minor), never `latest` or a bare major.
            assert re.search(r":v?\d+\.\d+(\.\d+)?(-\w+)?$", service["image"]), f"{name}: unpinned {service['image']}"
