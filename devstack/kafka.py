"""A single-node KRaft Kafka (broker + controller) run from Maven Central jars.

There is no Docker engine on CI machines, so the broker runs as a plain JVM
process; see /work/shared/LOCAL-STACK.md for the recipe this follows.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import os
import re
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


def write_config(kafka_dir: Path, port: int, controller_port: int) -> Path:
    """server.properties for one combined broker+controller bound to loopback only."""
    log_dir = kafka_dir / "data"
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "inter.broker.listener.name": "PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
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
        # Topics are created explicitly (shared.topics); a typo must fail, not create.
        "auto.create.topics.enable": "false",
    }
    path = kafka_dir / "server.properties"
    path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
    return path


def saved_ports(kafka_dir: Path) -> tuple[int, int] | None:
    """(port, controller port) of a formatted log dir, from its server.properties; None if there is none."""
    props = kafka_dir / "server.properties"
    if not (kafka_dir / "data" / "meta.properties").exists() or not props.exists():
        return None
    found = re.search(r"^listeners=PLAINTEXT://[^:]+:(\d+),CONTROLLER://[^:]+:(\d+)$", props.read_text(), re.M)
    return (int(found[1]), int(found[2])) if found else None


def start(kafka_dir: Path, libs: Path, log4j_config: Path, log_path: Path, port: int, controller_port: int) -> int:
    """Launch the broker detached on its log dir, formatting it first if it is new. Returns its pid.

    An existing log dir is never wiped: its topics and records are the data `up` must bring back.
    """
    java = _java()
    # The JVM runs with cwd=kafka_dir, so relative paths would resolve there.
    kafka_dir, libs, log4j_config = kafka_dir.resolve(), libs.resolve(), log4j_config.resolve()
    formatted = saved_ports(kafka_dir) is not None
    kafka_dir.mkdir(parents=True, exist_ok=True)
    props = write_config(kafka_dir, port, controller_port)
    classpath = f"{libs}/*"
    log_opt = f"-Dlog4j2.configurationFile={log4j_config}"
    if not formatted:
        # No --standalone: controller.quorum.voters already names the (static) quorum.
        fmt = subprocess.run(
            [java, log_opt, "-cp", classpath, "kafka.tools.StorageTool", "format",
             "-t", _cluster_id(), "-c", str(props)],
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


async def _list_topics(bootstrap: str, timeout_s: float) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000))
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


def probe(bootstrap: str, timeout_s: float = 5.0) -> bool:
    """Healthy = an admin client can connect and list topics."""
    try:
        with _quiet_aiokafka():
            run_sync(_list_topics(bootstrap, timeout_s))
        return True
    except Exception:
        return False


def wait_ready(bootstrap: str, pid: int | None, log_path: Path, timeout: float = 90.0) -> None:
    processes.wait_ready(f"Kafka at {bootstrap}", lambda: probe(bootstrap, timeout_s=3.0), pid, log_path, timeout,
                         every=0.5)


async def _create_topics(bootstrap: str, topics: Iterable) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30000)
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


def create_topics(bootstrap: str, topics: Iterable) -> list[str]:
    """Create the contract topics that do not exist yet; returns the names created."""
    return run_sync(_create_topics(bootstrap, topics))


async def _describe_topic_configs(bootstrap: str, names: list[str]) -> dict[str, dict[str, str]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
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


def describe_topic_configs(bootstrap: str, names: list[str]) -> dict[str, dict[str, str]]:
    """Effective topic configs (used by checks/tests, e.g. refunds.status is compacted)."""
    return run_sync(_describe_topic_configs(bootstrap, names))


def list_topics(bootstrap: str) -> list[str]:
    return run_sync(_list_topics(bootstrap, 10.0))
