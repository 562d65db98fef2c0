"""The compacted status feed keeps the current status last, whatever a crash leaves in the outbox.

Drives the shared consume loop (shared/runtime/stage.py) itself against the real PostgreSQL and Kafka:
a stage publishes a status, "crashes" before deleting its outbox row (a new Stage object has
none of the old one's memory, as after kill -9), publishes a newer status, and its relay runs.
"""

import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from aiokafka import ConsumerRecord

from shared.contract import topics
from shared.runtime.db import apply_migrations, create_pool
from shared.contract.envelope import encode
from shared.contract.events import RefundStatus, Status
from shared.runtime.stage import Handler, Inbound, Stage, one_at_a_time
from tools.platform import consumer_at_end

pytestmark = pytest.mark.integration
SCHEMA = "outbox_order_test"


async def _status_for(conn, item: Inbound) -> list:
    data = item.event.get_data()
    status = RefundStatus(refund_id=data["refund_id"], request_id=None, source=None, order_id=None,
                          status=Status(data["status"]), amount=None, updated_at=datetime.now(UTC))
    return [encode(status, source="test/outbox-order", key=data["refund_id"])]


def _record(refund_id: str, status: str, offset: int) -> ConsumerRecord:
    envelope = {"specversion": "1.0", "id": str(uuid.uuid4()), "source": "test/outbox-order-input",
                "type": "refund.test.v1", "time": datetime.now(UTC).isoformat(),
                "datacontenttype": "application/json", "data": {"refund_id": refund_id, "status": status}}
    return ConsumerRecord(topic="test.input", partition=0, offset=offset, timestamp=int(time.time() * 1000),
                          timestamp_type=0, key=refund_id.encode(), value=orjson.dumps(envelope),
                          checksum=None, serialized_key_size=0, serialized_value_size=0,
                          headers=[("content-type", b"application/cloudevents+json")])


@pytest.fixture
async def pool(stack, tmp_path: Path):
    await apply_migrations(stack.dsn, SCHEMA, tmp_path)  # just the shared inbox and outbox
    pool = await create_pool(stack.dsn)
    yield pool
    await pool.execute(f"DELETE FROM {SCHEMA}.outbox")
    await pool.close()


def _handler(decide) -> Handler:
    return Handler(one_at_a_time(decide), validated=False)


async def _stage(stack, pool) -> Stage:
    stage = Stage(schema=SCHEMA, source="test/outbox-order", default=_handler(_status_for))
    await stage.start(pool, stack.bootstrap, "outbox-order-test", linger_ms=0, auth=stack.kafka_auth("admin"))
    return stage


async def _statuses_of(consumer, refund_id: str, expected: int) -> list[str]:
    seen: list[str] = []
    deadline = time.monotonic() + 20
    while len(seen) < expected and time.monotonic() < deadline:
        for records in (await consumer.getmany(timeout_ms=200)).values():
            seen += [orjson.loads(r.value)["data"]["status"] for r in records if r.key == refund_id.encode()]
    return seen


async def test_a_status_left_in_the_outbox_by_a_crash_never_lands_after_a_newer_one(stack, pool):
    refund_id = f"rf-outbox-{uuid.uuid4().hex[:8]}"
    feed = await consumer_at_end(stack.bootstrap, topics.STATUS)
    try:
        before_crash = await _stage(stack, pool)
        await before_crash.process([_record(refund_id, "succeeded", 1)])
        await before_crash.stop()  # killed: the acked row was never deleted

        after_restart = await _stage(stack, pool)
        await after_restart.process([_record(refund_id, "reconciled", 2)])
        await after_restart.relay_once(older_than_seconds=0)
        await after_restart.stop()

        seen = await _statuses_of(feed, refund_id, expected=3)
        assert seen[-1] == "reconciled", f"the feed ends on a stale status: {seen}"
        assert await pool.fetchval(f"SELECT count(*) FROM {SCHEMA}.outbox WHERE key = $1", refund_id) == 0
    finally:
        await feed.stop()


async def test_acked_rows_are_deleted_even_when_the_batch_that_should_delete_them_rolls_back(stack, pool):
    refund_id = f"rf-outbox-{uuid.uuid4().hex[:8]}"
    stage = await _stage(stack, pool)
    try:
        await stage.process([_record(refund_id, "succeeded", 1)])
        await stage.acked()  # sends are not waited for; their acks come while the next batch is saved

        async def fail(conn, item):
            raise OSError("database went away mid-batch")

        stage.default = _handler(fail)
        with pytest.raises(OSError):
            await stage.process([_record(f"{refund_id}-other", "accepted", 2)])
        stage.default = _handler(_status_for)
        await stage.process([_record(f"{refund_id}-other", "accepted", 3)])
        await stage.acked()
        await stage.process([_record(f"{refund_id}-third", "accepted", 4)])  # deletes what the last one published

        left = await pool.fetch(f"SELECT key FROM {SCHEMA}.outbox WHERE key <> $1", f"{refund_id}-third")
        assert [row["key"] for row in left] == [], "acked rows stay behind for the relay to publish again"
    finally:
        await stage.stop()


async def test_the_inbox_forgets_event_ids_past_retention_and_remembers_the_rest(stack, pool):
    stage = await _stage(stack, pool)
    try:
        old, recent = f"old-{uuid.uuid4().hex[:8]}", f"recent-{uuid.uuid4().hex[:8]}"
        await pool.execute(
            f"INSERT INTO {SCHEMA}.inbox (source, event_id, received_at) VALUES "
            "('test/prune', $1, now() - interval '9 days'), ('test/prune', $2, now() - interval '1 day')",
            old, recent)
        assert await stage.prune_inbox(retention_days=8, chunk=1) >= 1
        left = await pool.fetch(f"SELECT event_id FROM {SCHEMA}.inbox WHERE source = 'test/prune'")
        assert [row["event_id"] for row in left] == [recent]
    finally:
        await stage.stop()
