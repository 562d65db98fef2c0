"""compose's Kafka (deploy/compose/kafka/) run for real, without Docker: broker.sh formats and starts a
broker from compose's server.properties (its ports moved to free ones on this machine's loopback), and
init.sh creates the topics, the SCRAM users and the ACLs with the kafka-topics, kafka-configs and
kafka-acls commands the compose containers run. Then every principal has exactly the ACLs of
shared/runtime/kafka_auth.py ACCESS, and a service can write its own topics and no other."""

import re
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import TopicAuthorizationFailedError
from aiokafka.protocol.admin import DescribeAclsRequest

from devstack import kafka
from devstack.processes import file_lock, free_ports, terminate
from shared.contract import topics
from shared.runtime.kafka_auth import ACCESS, ADMIN, AclRule, KafkaAuth, acl_rules, password_variable

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
COMPOSE_KAFKA = ROOT / "deploy/compose/kafka"
# What the image's bin/*.sh run (kafka-run-class.sh <class>).
COMMANDS = {"kafka-storage.sh": "kafka.tools.StorageTool", "kafka-server-start.sh": "kafka.Kafka",
            "kafka-topics.sh": "org.apache.kafka.tools.TopicCommand",
            "kafka-configs.sh": "kafka.admin.ConfigCommand", "kafka-acls.sh": "org.apache.kafka.tools.AclCommand"}
# compose's ports, and the listener hosts that only mean something on compose's network.
COMPOSE_PORTS = (9092, 29092, 9093)


def kafka_tools() -> Path:
    """The kafka-tools jar (AclCommand, TopicCommand), which devstack's broker does not need: fetched
    once from Maven Central beside devstack's jars."""
    folder = kafka.cache_dir().parent / f"kafka-tools-{kafka.KAFKA_VERSION}"
    with file_lock(folder / ".lock"):
        if not (folder / f"kafka-tools-{kafka.KAFKA_VERSION}.jar").exists():
            subprocess.run([shutil.which("mvn") or "mvn", "-B", "-q",
                            "org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy",
                            f"-Dartifact=org.apache.kafka:kafka-tools:{kafka.KAFKA_VERSION}",
                            f"-DoutputDirectory={folder}"], check=True, timeout=300)
    return folder


def kafka_home(at: Path) -> Path:
    """A KAFKA_HOME whose bin/*.sh run the same classes from the jars."""
    libs = kafka.ensure_jars(ROOT / "deploy/local/kafka/pom.xml")
    classpath = f"{libs.resolve()}/*:{kafka_tools()}/*"
    log4j = ROOT / "deploy/local/kafka/log4j2.properties"
    (at / "bin").mkdir(parents=True)
    # init.sh starts a few dozen short-lived tools: a JVM tuned for starting fast, not for running long.
    tool_jvm = "-Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Xshare:auto"
    for script, main_class in COMMANDS.items():
        jvm = " ".join(kafka.JVM_OPTS) if main_class == "kafka.Kafka" else tool_jvm
        path = at / "bin" / script
        path.write_text(f"#!/bin/sh\nexec java {jvm} -Dlog4j2.configurationFile={log4j} "
                        f"-cp '{classpath}' {main_class} \"$@\"\n")
        path.chmod(0o755)
    return at


def moved_to(compose_dir: Path, at: Path, ports: list[int], data: Path) -> Path:
    """compose's kafka/ with the broker on these loopback ports and data dir; nothing else changed."""
    shutil.copytree(compose_dir, at)
    config = (at / "server.properties").read_text()
    config = re.sub(r"://(?=:)", "://127.0.0.1", config).replace("kafka:", "127.0.0.1:")
    for old, new in zip(COMPOSE_PORTS, ports, strict=True):
        config = re.sub(rf"(?<=:){old}\b", str(new), config)
    config = config.replace("log.dirs=/tmp/kraft-combined-logs", f"log.dirs={data}")
    assert not re.search(r":(9092|29092|9093)\b", config) and f"log.dirs={data}\n" in config
    (at / "server.properties").write_text(config)
    return at


@pytest.fixture(scope="module")
def compose_kafka(tmp_path_factory):
    """(bootstrap, principal -> password) of a broker set up as compose sets it up."""
    tmp = tmp_path_factory.mktemp("compose-kafka")
    ports = free_ports(3)
    scripts = moved_to(COMPOSE_KAFKA, tmp / "kafka", ports, tmp / "data")
    passwords = {name: secrets.token_urlsafe(18) for name in (ADMIN, *ACCESS)}
    compose = yaml.safe_load((ROOT / "deploy/compose/compose.yaml").read_text())["services"]
    env = {"PATH": "/usr/bin:/bin", "KAFKA_HOME": str(kafka_home(tmp / "home")),
           "CLUSTER_ID": compose["kafka"]["environment"]["CLUSTER_ID"],
           **{password_variable(name): password for name, password in passwords.items()}}
    (tmp / "broker-run").mkdir()
    log = tmp / "broker.log"
    with open(log, "ab") as out:
        broker = subprocess.Popen(["/bin/sh", str(scripts / "broker.sh")], stdout=out, stderr=subprocess.STDOUT,
                                  env={**env, "KAFKA_RUN_DIR": str(tmp / "broker-run")}, start_new_session=True)
    bootstrap = f"127.0.0.1:{ports[0]}"
    try:
        kafka.wait_ready(bootstrap, broker.pid, log, timeout=120, auth=KafkaAuth.scram(ADMIN, passwords[ADMIN]))
        (tmp / "init-run").mkdir()
        init = subprocess.run(["/bin/sh", str(scripts / "init.sh")], capture_output=True, text=True, timeout=600,
                              env={**env, "KAFKA_RUN_DIR": str(tmp / "init-run"), "BOOTSTRAP": bootstrap})
        assert init.returncode == 0, init.stdout + init.stderr
        yield bootstrap, passwords
    finally:
        terminate(broker.pid, ("kafka.Kafka", str(tmp / "broker-run" / "server.properties")))
        broker.wait(timeout=30)


async def described_acls(bootstrap: str, admin: KafkaAuth) -> dict[str, set[AclRule]]:
    """Principal -> its ALLOW rules, as the broker describes them."""
    resource = {code: name for name, code in kafka._RESOURCE.items()}
    pattern = {code: name for name, code in kafka._PATTERN.items()}
    operation = {code: name for name, code in kafka._OPERATION.items()}
    client = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **admin.client_options())
    await client.start()
    try:
        any_ = 1  # ANY for resource type, pattern type, operation and permission
        response = await client._send_request(DescribeAclsRequest(any_, None, any_, None, None, any_, any_))
    finally:
        await client.close()
    assert response.error_code == 0, response.error_message
    found: dict[str, set[AclRule]] = {}
    for resource_type, name, pattern_type, acls in response.resources:
        for principal, host, op, permission in acls:
            assert (host, permission) == ("*", kafka._ALLOW)
            found.setdefault(principal.removeprefix("User:"), set()).add(
                AclRule(resource[resource_type], name, pattern[pattern_type], operation[op]))
    return found


async def test_every_principal_has_exactly_the_acls_of_the_table(compose_kafka):
    bootstrap, passwords = compose_kafka
    found = await described_acls(bootstrap, KafkaAuth.scram(ADMIN, passwords[ADMIN]))
    assert {principal: sorted(rules) for principal, rules in found.items()} == {
        principal: acl_rules(access) for principal, access in ACCESS.items()}


async def test_a_service_authenticates_and_writes_only_its_own_topics(compose_kafka):
    bootstrap, passwords = compose_kafka
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=10000,
                                **KafkaAuth.scram("approval", passwords["approval"]).client_options())
    await producer.start()
    try:
        await producer.send_and_wait(topics.APPROVED, b"{}", key=b"compose-acl")
        with pytest.raises(TopicAuthorizationFailedError):
            await producer.send_and_wait(topics.PAID, b"{}", key=b"compose-acl")
    finally:
        await producer.stop()


async def test_the_operator_sees_every_contract_topic(compose_kafka):
    bootstrap, passwords = compose_kafka
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                **KafkaAuth.scram("operator", passwords["operator"]).client_options())
    await consumer.start()
    try:
        assert {topic.name for topic in topics.TOPICS} <= await consumer.topics()
    finally:
        await consumer.stop()
