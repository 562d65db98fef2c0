"""`up` and `restart` bring a crashed or restarted component back on its own data and port.

A stack of its own in a temp run dir (Kafka, PostgreSQL and only intake, to spare
the shared CPU), so the session stack is not disturbed.
"""

import contextlib
import os
import signal
import subprocess
import uuid

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from devstack import Stack, postgres, prometheus
from devstack.processes import pid_alive, wait_exit
from tests.integration.helpers import wait_until

pytestmark = pytest.mark.integration
SERVICE = "intake"


@pytest.fixture(scope="module")
def local_stack(tmp_path_factory):
    with pytest.MonkeyPatch.context() as env:
        # Ours, not an existing cluster someone exported, and no pinned ports.
        for var in ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL", "KAFKA_PORT", "PGPORT_LOCAL", "INTAKE_PORT",
                    "PROMETHEUS_PORT"):
            env.delenv(var, raising=False)
        stack = Stack(run_dir=tmp_path_factory.mktemp("devstack-restart"))
        try:
            stack.up(services=False)
            stack.start_service(SERVICE)
            yield stack
        finally:
            pids = _our_pids(Stack(stack.run_dir))
            stack.down()
            assert not [pid for pid in pids if pid_alive(pid)], "down left processes running"
            assert not postgres.pg_root(stack.run_dir).exists() and not stack.kafka_dir.exists()


def _our_pids(stack: Stack) -> list[int]:
    return [row["pid"] for row in stack.status() if row["pid"]]


def _crash(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    assert wait_exit(pid, 20.0)


def _ports(stack: Stack) -> dict[str, str]:
    return {**stack.env(), SERVICE: stack.service_url(SERVICE)}


async def _save_row(dsn: str) -> tuple[str, str]:
    table, value = f"restart_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"CREATE TABLE public.{table} (value text)")
        await conn.execute(f"INSERT INTO public.{table} VALUES ($1)", value)
    finally:
        await conn.close()
    return table, value


async def _rows(dsn: str, table: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return [row["value"] for row in await conn.fetch(f"SELECT value FROM public.{table}")]
    finally:
        await conn.close()


async def _produce_record(stack: Stack) -> tuple[str, bytes]:
    """A new topic with one record, made as devstack's admin (the only principal that may create topics)."""
    bootstrap, auth = stack.bootstrap, stack.kafka_auth("admin").client_options()
    topic, value = f"devstack.restart-{uuid.uuid4().hex[:8]}", uuid.uuid4().bytes
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **auth)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", **auth)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value)
    finally:
        await producer.stop()
    return topic, value


async def _records(stack: Stack, topic: str) -> list[bytes]:
    consumer = AIOKafkaConsumer(bootstrap_servers=stack.bootstrap, group_id=None, enable_auto_commit=False,
                                request_timeout_ms=10000, **stack.kafka_auth("operator").client_options())
    await consumer.start()
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        batches = await consumer.getmany(partition, timeout_ms=10000)
        return [record.value for record in batches.get(partition, [])]
    finally:
        await consumer.stop()


async def _saved_data(stack: Stack) -> tuple:
    return await _save_row(stack.dsn), await _produce_record(stack)


async def _assert_data_survived(stack: Stack, saved: tuple) -> None:
    (table, value), (topic, record) = saved
    assert await _rows(stack.dsn, table) == [value], "the table or its row is gone"
    assert await _records(stack, topic) == [record], "the topic or its record is gone"


def _row(stack: Stack, component: str) -> dict:
    return next(row for row in stack.status() if row["component"] == component)


async def _wait_ready(stack: Stack, component: str, ready: bool = True, timeout: float = 60.0) -> dict:
    async def check():
        row = _row(stack, component)
        return row if row["alive"] and row["ready"] == ready else None

    return await wait_until(check, timeout=timeout, every=0.5)


async def test_up_after_kafka_and_postgres_crash_restarts_them_on_their_data_and_ports(local_stack):
    saved = await _saved_data(local_stack)
    before = _ports(local_stack)

    _crash(local_stack.state["kafka"]["pid"])
    _crash(local_stack.state["postgres"]["pid"])
    local_stack.up(services=False)

    assert _ports(local_stack) == before
    await _assert_data_survived(local_stack, saved)
    await _wait_ready(local_stack, SERVICE)  # intake reconnected to both


async def test_up_keeps_a_postgres_that_was_restarted_under_a_new_pid(local_stack):
    saved = await _saved_data(local_stack)
    before, old_pid = _ports(local_stack), _row(local_stack, "postgres")["pid"]
    root = postgres.pg_root(local_stack.run_dir)
    argv = [str(postgres.find_bindir() / "pg_ctl"), "-D", str(postgres.data_dir(root)), "-m", "fast", "-w",
            "restart"]
    if os.geteuid() == 0:
        argv = ["runuser", "-u", postgres.PG_USER, "--", *argv]
    subprocess.run(argv, cwd=root, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, start_new_session=True, timeout=120)

    local_stack.up(services=False)

    assert _ports(local_stack) == before
    assert _row(local_stack, "postgres")["pid"] not in (None, old_pid)
    await _assert_data_survived(local_stack, saved)


@pytest.mark.parametrize("component", ["kafka", "postgres", SERVICE])
async def test_restart_one_component_keeps_its_data_and_port(local_stack, component):
    saved = await _saved_data(local_stack)
    before, old_pid = _ports(local_stack), _row(local_stack, component)["pid"]

    local_stack.restart(component)

    assert _ports(local_stack) == before
    assert _row(local_stack, component)["pid"] != old_pid
    await _assert_data_survived(local_stack, saved)
    await _wait_ready(local_stack, SERVICE)  # the service works on (reconnected, or restarted)


async def test_status_shows_an_unready_service_and_up_restarts_a_dead_one(local_stack):
    service_pid = _row(local_stack, SERVICE)["pid"]
    _crash(local_stack.state["kafka"]["pid"])
    # Alive but not ready: its /readyz answers 503 while the broker is gone.
    await _wait_ready(local_stack, SERVICE, ready=False)
    assert not _row(local_stack, "kafka")["alive"]

    local_stack.up(services=[SERVICE])  # brings the broker back; intake reconnects within the grace period
    assert (await _wait_ready(local_stack, SERVICE))["pid"] == service_pid

    url = local_stack.service_url(SERVICE)
    _crash(service_pid)
    assert not _row(local_stack, SERVICE)["alive"]
    local_stack.up(services=[SERVICE])
    row = await _wait_ready(local_stack, SERVICE, timeout=5)
    assert row["pid"] != service_pid and local_stack.service_url(SERVICE) == url


async def test_up_restarts_a_service_that_stays_unready_past_the_grace_period(local_stack):
    pid = _row(local_stack, SERVICE)["pid"]
    os.kill(pid, signal.SIGSTOP)  # alive, but it answers nothing
    try:
        row = _row(local_stack, SERVICE)
        assert row["alive"] and not row["ready"]
        Stack(local_stack.run_dir, unready_grace_s=2).up(services=[SERVICE])
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    row = await _wait_ready(local_stack, SERVICE, timeout=5)
    assert row["pid"] != pid and not pid_alive(pid)


@pytest.mark.skipif(not prometheus.binary(), reason="prometheus is not installed")
async def test_up_keeps_prometheus_and_its_data(local_stack):
    url = local_stack.start_prometheus(scrape_interval="1s", evaluation_interval="1s")

    async def first_scrape():
        answer = httpx.get(f"{url}/api/v1/query", params={"query": f'up{{job="refund-{SERVICE}"}}[1h]'})
        result = answer.json()["data"]["result"]
        return result and result[0]["values"][0][0]

    first = await wait_until(first_scrape, timeout=60, every=0.5)
    pid = local_stack.state["prometheus"]["pid"]
    assert local_stack.start_prometheus(scrape_interval="1s", evaluation_interval="1s") == url
    assert local_stack.state["prometheus"]["pid"] == pid, "a healthy Prometheus was restarted"

    _crash(pid)
    assert local_stack.start_prometheus(scrape_interval="1s", evaluation_interval="1s") == url
    assert await wait_until(first_scrape, timeout=60, every=0.5) == first, "samples from before were lost"
