"""A single-node KRaft Kafka (broker + controller) run from Maven Central jars.

There is no Docker engine on CI machines, so the broker runs as a plain JVM
process; see /work/shared/LOCAL-STACK.md for the recipe this follows.

Clients connect over SASL_PLAINTEXT with SCRAM-SHA-512, one principal each
(shared/runtime/kafka_auth.py ACCESS), and KRaft's StandardAuthorizer denies whatever
no ACL allows. The SCRAM credentials are written into the metadata log when the
dir is formatted (`StorageTool format --add-scram`): the broker authenticates
to itself as `admin` before any client could create a user. The controller
listener stays PLAINTEXT on loopback; its ANONYMOUS principal (the broker
registering with its own controller) is a super user, which only a process on
this machine reaching the controller port could use.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError, for_code
from aiokafka.protocol.admin import CreateAclsRequest

from shared.runtime.kafka_auth import ACCESS, ADMIN, OPERATOR, SCRAM, AclRule, KafkaAuth, acl_rules

from . import processes
from .processes import StackError, console, file_lock, run_sync, spawn, terminate

KAFKA_VERSION = "4.1.1"
MAIN_CLASS = "kafka.Kafka"
JVM_OPTS = ["-Xms512m", "-Xmx1g", "-XX:+UseG1GC"]
_MARKER = ".complete"


def cache_dir() -> Path:
    """Where the jars live: outside the work tree, shared by every checkout."""
    if os.environ.get("REFUND_CACHE_DIR"):
        return Path(os.environ["REFUND_CACHE_DIR"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "refund-pipeline" / f"kafka-{KAFKA_VERSION}"


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    java = shutil.which("java")
    if not java:
        raise StackError("java not found: Kafka 4.1 needs a Java 17+ runtime (apt-get install openjdk-17-jre-headless)")
    return java


def ensure_jars(pom: Path) -> Path:
    """Fetch Kafka's runtime jars once; returns the libs dir for `-cp '<libs>/*'`.

    The marker file holds the pom's hash: a finished copy for this exact pom is
    reused, anything else (partial download, older pom) is wiped and refetched
    so stale jars never end up on the classpath.
    """
    cache = cache_dir()
    libs = cache / "libs"
    marker = libs / _MARKER
    pom_hash = hashlib.sha1(pom.read_bytes()).hexdigest()
    # Two stacks starting at once (e.g. a test run next to `devstack up`) must
    # not download into the same directory concurrently.
    with file_lock(cache / ".lock"):
        if marker.exists() and marker.read_text().strip() == pom_hash:
            return libs
        mvn = shutil.which("mvn")
        if not mvn:
            raise StackError("mvn not found: needed once to fetch the Kafka jars (apt-get install maven)")
        if libs.exists():
            shutil.rmtree(libs)
        console.print(f"[bold]kafka[/]: fetching Kafka {KAFKA_VERSION} jars from Maven Central into {libs} (one-time)…")
        started = time.monotonic()
        cmd = [
            mvn, "-B", "-q", "-Dstyle.color=never",
            "org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy-dependencies",
            "-DincludeScope=runtime", f"-DoutputDirectory={libs}", "-f", str(pom),
        ]
        # mvn's stdout goes to our stderr: stdout of `devstack up` is for the env lines.
        result = subprocess.run(cmd, stdout=sys.stderr, stderr=sys.stderr)
        if result.returncode != 0:
            raise StackError(f"Maven could not fetch the Kafka jars (exit {result.returncode}): {' '.join(cmd)}")
        jars = list(libs.glob("*.jar"))
        marker.write_text(pom_hash + "\n")
        console.print(f"[bold]kafka[/]: {len(jars)} jars fetched in {time.monotonic() - started:.0f}s")
    return libs


def _cluster_id() -> str:
    """Same format as `StorageTool random-uuid` (URL-safe base64 of 16 random bytes,
    no padding), generated here to save a JVM start. Kafka rejects ids starting with '-'."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


# The local stack's own principal for `make bench`'s raw Kafka relay (tools/bench_relay.py): topics and
# consumer groups named `bench.*` only, none of the contract's. Not in shared ACCESS: no deployment has it.
BENCH = "bench"
BENCH_RULES = sorted([AclRule("topic", "bench.", "prefix", op) for op in ("Read", "Write", "Describe")]
                     + [AclRule("group", "bench.", "prefix", op) for op in ("Read", "Describe")])


def new_credentials() -> dict[str, str]:
    """A password for devstack's admin, for every principal of the ACL table and for the bench (hex: safe
    in `--add-scram` and JAAS quoting)."""
    return {name: secrets.token_hex(16) for name in (ADMIN, *ACCESS, BENCH)}


def missing_users(credentials: dict[str, str]) -> dict[str, str]:
    """Principals of the ACL table without a password yet, each with a new one."""
    return {name: password for name, password in new_credentials().items() if name not in credentials}


def auth_for(credentials: dict[str, str], principal: str) -> KafkaAuth:
    """How `principal` connects to our broker; PLAINTEXT when there are no credentials (an external broker)."""
    if not credentials:
        return KafkaAuth()
    if principal not in credentials:
        raise StackError(f"no Kafka principal {principal!r}; known: {', '.join(sorted(credentials))}")
    return KafkaAuth.scram(principal, credentials[principal])


DEMO_PLATFORM = "platform-demo"


def client_env(credentials: dict[str, str]) -> dict[str, str]:
    """What `up`/`env` print: the demo platform's credentials as KAFKA_SASL_*, the operator's as KAFKA_OPS_*."""
    if not credentials:
        return {}
    return {**auth_for(credentials, DEMO_PLATFORM).env(),
            "KAFKA_OPS_USERNAME": OPERATOR, "KAFKA_OPS_PASSWORD": credentials[OPERATOR]}


def write_config(kafka_dir: Path, port: int, controller_port: int, admin_password: str) -> Path:
    """server.properties for one combined broker+controller bound to loopback only."""
    log_dir = kafka_dir / "data"
    jaas = f'org.apache.kafka.common.security.scram.ScramLoginModule required username="{ADMIN}" password="{admin_password}";'
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": f"SASL_PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"SASL_PLAINTEXT://127.0.0.1:{port}",
        "inter.broker.listener.name": "SASL_PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT",
        "sasl.enabled.mechanisms": SCRAM,
        "sasl.mechanism.inter.broker.protocol": SCRAM,
        "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config": jaas,
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found": "false",
        "super.users": f"User:{ADMIN};User:ANONYMOUS",
        "log.dirs": str(log_dir),
        "num.partitions": "6",
        # One node: every replicated internal topic must make do with one replica.
        "default.replication.factor": "1",
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        # Tests start consumers and expect them to get partitions immediately.
        "group.initial.rebalance.delay.ms": "0",
        # Topics are created explicitly (shared.contract.topics); a typo must fail, not create.
        "auto.create.topics.enable": "false",
    }
    path = kafka_dir / "server.properties"
    path.touch(mode=0o600)  # it holds the admin's password
    path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
    return path


def saved_ports(kafka_dir: Path) -> tuple[int, int] | None:
    """(port, controller port) of a formatted log dir, from its server.properties; None if there is none."""
    props = kafka_dir / "server.properties"
    if not (kafka_dir / "data" / "meta.properties").exists() or not props.exists():
        return None
    found = re.search(r"^listeners=(?:SASL_)?PLAINTEXT://[^:]+:(\d+),CONTROLLER://[^:]+:(\d+)$",
                      props.read_text(), re.M)
    return (int(found[1]), int(found[2])) if found else None


def authenticated(kafka_dir: Path) -> bool:
    """Whether the formatted dir is an authenticated broker's (older devstacks made PLAINTEXT ones,
    whose metadata has no SCRAM users: they need `down` once)."""
    props = kafka_dir / "server.properties"
    return props.exists() and "\nlisteners=SASL_PLAINTEXT://" in "\n" + props.read_text()


def start(kafka_dir: Path, libs: Path, log4j_config: Path, log_path: Path, port: int, controller_port: int,
          credentials: dict[str, str]) -> int:
    """Launch the broker detached on its log dir, formatting it first if it is new. Returns its pid.

    An existing log dir is never wiped: its topics and records are the data `up` must bring back.
    `credentials` (principal -> password, with ADMIN) become SCRAM users when the dir is formatted.
    """
    java = _java()
    # The JVM runs with cwd=kafka_dir, so relative paths would resolve there.
    kafka_dir, libs, log4j_config = kafka_dir.resolve(), libs.resolve(), log4j_config.resolve()
    formatted = saved_ports(kafka_dir) is not None
    kafka_dir.mkdir(parents=True, exist_ok=True)
    props = write_config(kafka_dir, port, controller_port, credentials[ADMIN])
    classpath = f"{libs}/*"
    log_opt = f"-Dlog4j2.configurationFile={log4j_config}"
    if not formatted:
        # No --standalone: controller.quorum.voters already names the (static) quorum.
        fmt = subprocess.run(
            [java, log_opt, "-cp", classpath, "kafka.tools.StorageTool", "format",
             "-t", _cluster_id(), "-c", str(props),
             *(arg for name, password in credentials.items()
               for arg in ("--add-scram", f"{SCRAM}=[name={name},password={password}]"))],
            capture_output=True, text=True,
        )
        if fmt.returncode != 0:
            raise StackError(f"kafka storage format failed (exit {fmt.returncode}):\n{fmt.stdout}{fmt.stderr}")
    argv = [java, *JVM_OPTS, log_opt, "-cp", classpath, MAIN_CLASS, str(props)]
    return spawn(argv, log_path, cwd=kafka_dir)


def markers(kafka_dir: Path) -> tuple[str, str]:
    """What /proc/<pid>/cmdline of our broker must contain."""
    return (MAIN_CLASS, str(kafka_dir.resolve() / "server.properties"))


def stop(pid: int | None, kafka_dir: Path, timeout: float = 30.0) -> bool:
    return terminate(pid, markers(kafka_dir), timeout=timeout)


def _admin(bootstrap: str, auth: KafkaAuth | None, **options) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(bootstrap_servers=bootstrap, **(auth or KafkaAuth()).client_options(), **options)


async def _list_topics(bootstrap: str, timeout_s: float, auth: KafkaAuth | None = None) -> list[str]:
    admin = _admin(bootstrap, auth, request_timeout_ms=int(timeout_s * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        return await asyncio.wait_for(admin.list_topics(), timeout_s)
    finally:
        await admin.close()


@contextlib.contextmanager
def _quiet_aiokafka():
    """While polling a broker that is still starting, aiokafka logs every refused
    connection as an error; those are expected, so mute them for the probe."""
    logger = logging.getLogger("aiokafka")
    previous = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(previous)


def probe(bootstrap: str, timeout_s: float = 5.0, auth: KafkaAuth | None = None) -> bool:
    """Healthy = an admin client can connect (authenticate) and list topics."""
    try:
        with _quiet_aiokafka():
            run_sync(_list_topics(bootstrap, timeout_s, auth))
        return True
    except Exception:
        return False


def wait_ready(bootstrap: str, pid: int | None, log_path: Path, timeout: float = 90.0,
               auth: KafkaAuth | None = None) -> None:
    processes.wait_ready(f"Kafka at {bootstrap}", lambda: probe(bootstrap, timeout_s=3.0, auth=auth), pid, log_path,
                         timeout, every=0.5)


async def _create_topics(bootstrap: str, topics: Iterable, auth: KafkaAuth | None) -> list[str]:
    admin = _admin(bootstrap, auth, request_timeout_ms=30000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(t.name, num_partitions=t.partitions, replication_factor=1, topic_configs=dict(t.config))
            for t in topics
            if t.name not in existing
        ]
        if not wanted:
            return []
        response = await admin.create_topics(wanted)
        created = []
        for entry in response.topic_errors:
            name, code = entry[0], entry[1]
            if code == 0:
                created.append(name)
            elif code != TopicAlreadyExistsError.errno:  # lost a race with another `up`: fine
                message = entry[2] if len(entry) > 2 else ""
                raise StackError(f"creating topic {name} failed: {for_code(code).__name__} {message or ''}")
        return created
    finally:
        await admin.close()


def create_topics(bootstrap: str, topics: Iterable, auth: KafkaAuth | None = None) -> list[str]:
    """Create the contract topics that do not exist yet; returns the names created."""
    return run_sync(_create_topics(bootstrap, topics, auth))


async def _describe_topic_configs(bootstrap: str, names: list[str],
                                  auth: KafkaAuth | None) -> dict[str, dict[str, str]]:
    admin = _admin(bootstrap, auth)
    await admin.start()
    try:
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name in names]
        )
        configs: dict[str, dict[str, str]] = {}
        for response in responses:
            for resource in response.resources:
                # (error_code, error_message, resource_type, resource_name, config_entries)
                entries = resource[4]
                configs[resource[3]] = {entry[0]: entry[1] for entry in entries}
        return configs
    finally:
        await admin.close()


def describe_topic_configs(bootstrap: str, names: list[str],
                           auth: KafkaAuth | None = None) -> dict[str, dict[str, str]]:
    """Effective topic configs (used by checks/tests, e.g. refunds.status is compacted)."""
    return run_sync(_describe_topic_configs(bootstrap, names, auth))


def list_topics(bootstrap: str, auth: KafkaAuth | None = None) -> list[str]:
    return run_sync(_list_topics(bootstrap, 10.0, auth))


# Kafka's wire enums (org.apache.kafka.common.acl / resource) for CreateAcls.
_RESOURCE = {"topic": 2, "group": 3, "cluster": 4}
_PATTERN = {"literal": 3, "prefix": 4}
_OPERATION = {"Read": 3, "Write": 4, "Describe": 8, "DescribeConfigs": 10}
_ALLOW = 3


async def _create_acls(bootstrap: str, auth: KafkaAuth, grants: dict[str, list]) -> int:
    # aiokafka 0.14's admin client has no create_acls, but ships the CreateAcls request (one binding
    # each); sent to any broker, which forwards it to the controller. Creating an existing ACL is a no-op.
    admin = _admin(bootstrap, auth, request_timeout_ms=30000)
    await admin.start()
    try:
        requests = [CreateAclsRequest(_RESOURCE[r.resource_type], r.name, _PATTERN[r.pattern], f"User:{principal}",
                                      "*", _OPERATION[r.operation], _ALLOW)
                    for principal, rules in grants.items() for r in rules]
        responses = await asyncio.gather(*(admin._send_request(request) for request in requests))
        for request, response in zip(requests, responses, strict=True):
            for code, message in response.creation_responses:
                if code:
                    raise StackError(f"creating ACL for {request._principal} failed: "
                                     f"{for_code(code).__name__} {message or ''}")
        return len(requests)
    finally:
        await admin.close()


def ensure_acls(bootstrap: str, admin: KafkaAuth) -> int:
    """Grant every principal of the ACL table, and the bench, its rights (idempotent); returns the number of rules."""
    grants = {name: acl_rules(access) for name, access in ACCESS.items()} | {BENCH: BENCH_RULES}
    return run_sync(_create_acls(bootstrap, admin, grants))


def add_scram_users(libs: Path, bootstrap: str, admin_password: str, users: dict[str, str], kafka_dir: Path) -> None:
    """Create SCRAM users on a running broker (principals added to the table after the dir was
    formatted); aiokafka cannot alter SCRAM credentials, so this runs Kafka's ConfigCommand."""
    client = kafka_dir.resolve() / "admin-client.properties"
    client.touch(mode=0o600)
    client.write_text(
        "security.protocol=SASL_PLAINTEXT\n"
        f"sasl.mechanism={SCRAM}\n"
        f'sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required '
        f'username="{ADMIN}" password="{admin_password}";\n')
    for name, password in users.items():
        result = subprocess.run(
            [_java(), "-cp", f"{libs.resolve()}/*", "kafka.admin.ConfigCommand", "--bootstrap-server", bootstrap,
             "--command-config", str(client), "--alter", "--entity-type", "users", "--entity-name", name,
             "--add-config", f"{SCRAM}=[password={password}]"],
            capture_output=True, text=True)
        if result.returncode != 0:
            raise StackError(f"adding Kafka user {name} failed (exit {result.returncode}):\n{result.stdout}{result.stderr}")
