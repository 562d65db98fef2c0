"""One real stack per test session: Kafka, PostgreSQL and the five service processes.

Where a Docker engine answers, Kafka and PostgreSQL come from testcontainers;
otherwise (as on the CI machines) from the project's native stack (devstack).
The services always run as separate OS processes, started by devstack.
"""

import os
import shutil
import subprocess
from pathlib import Path

import asyncpg
import pytest

from devstack import Stack
from tests.integration import helpers
from tools.platform import GatewayPayments, StatusFollower, start_producer

ROOT = Path(__file__).resolve().parents[2]
PLATFORM = "platform-shop-test"  # the Kafka principal of the tests' platform (source shop-test)


def _docker_engine() -> bool:
    if os.environ.get("REFUND_TEST_NATIVE") or not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0


@pytest.fixture(scope="session")
def stack():
    containers = []
    if _docker_engine() and not os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        from testcontainers.kafka import KafkaContainer
        from testcontainers.postgres import PostgresContainer

        kafka = KafkaContainer("confluentinc/cp-kafka:7.6.0").start()
        postgres = PostgresContainer("postgres:16", driver=None).start()
        containers = [kafka, postgres]
        os.environ["KAFKA_BOOTSTRAP_SERVERS"] = kafka.get_bootstrap_server()
        os.environ["DATABASE_URL"] = postgres.get_connection_url()
    # Fast crash recovery for the kill tests; everything else is the services' defaults.
    os.environ.setdefault("PAYOUT_RECLAIM_AFTER_SECONDS", "3")
    test_stack = Stack(run_dir=ROOT / ".run" / "test")
    test_stack.up()
    # As `eval "$(python -m devstack env)"` would: tools.platform clients authenticate as the tests'
    # platform (KAFKA_SASL_*), TopicTail as the read-only operator (KAFKA_OPS_*). Services never see
    # these: devstack gives each its own principal.
    saved = dict(os.environ)
    os.environ.update({k: v for k, v in test_stack.env().items() if k.startswith("KAFKA_OPS_")})
    os.environ.update(test_stack.kafka_auth(PLATFORM).env())
    helpers.gateway_payments = GatewayPayments(test_stack.gateway_routes())
    try:
        yield test_stack
    finally:
        os.environ.clear()
        os.environ.update(saved)
        test_stack.down()
        for container in containers:
            container.stop()


@pytest.fixture
async def status_feed(stack):
    follower = StatusFollower(stack.bootstrap)
    await follower.start()
    yield follower
    await follower.stop()


@pytest.fixture
async def producer(stack):
    # Devstack's admin: tests also forge events of every stage (the platform may write only refunds.requested).
    producer = await start_producer(stack.bootstrap, auth=stack.kafka_auth("admin"))
    yield producer
    await producer.stop()


@pytest.fixture
async def db(stack):
    conn = await asyncpg.connect(stack.dsn)
    yield conn
    await conn.close()
