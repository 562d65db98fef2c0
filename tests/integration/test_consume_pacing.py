"""The consume loop's fetch pacing on the real broker (shared/runtime/consume.py `_pace`): while records
flow a fetch waits for a batch (64 KiB or 25 ms); once the loop saw none for a window, a fetch waits for
the first byte (or 500 ms), so an idle consumer fetches a couple of times a second instead of 40, and the
first record after the lull is not held back."""

import asyncio
import time
import uuid
from types import SimpleNamespace

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from shared.runtime.consume import StageConsumer
from tools.platform import start_producer

pytestmark = pytest.mark.integration
FETCH_API_KEY = 1


class Recorder:
    """Stands in for a stage: the loop under test only needs `process` and the breaker's state."""

    def __init__(self) -> None:
        self.breaker = SimpleNamespace(open=False)
        self.seen: list[tuple[bytes, float]] = []

    async def process(self, records) -> None:
        self.seen += [(record.value, time.monotonic()) for record in records]


async def _topic(stack) -> str:
    name = f"test.pacing.{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.bootstrap, **stack.kafka_auth("admin").client_options())
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=3, replication_factor=1)])
    finally:
        await admin.close()
    return name


def _count_fetches(loop: StageConsumer) -> list[float]:
    sent: list[float] = []
    client = loop.consumer._client
    send = client.send

    def counting(node_id, request, *args, **kwargs):
        if request.API_KEY == FETCH_API_KEY:
            sent.append(time.monotonic())
        return send(node_id, request, *args, **kwargs)

    client.send = counting
    return sent


async def test_an_idle_consumer_long_polls_and_a_lulls_first_record_goes_at_once(stack):
    topic = await _topic(stack)
    stage = Recorder()
    loop = StageConsumer(stage, [topic], group_id=f"pacing-{uuid.uuid4().hex[:6]}", max_records=100)
    await loop.start(stack.bootstrap, "pacing-test", stack.kafka_auth("admin"),
                     fetch_min_bytes=65536, fetch_max_wait_ms=25, fetch_idle_wait_ms=500)
    producer = await start_producer(stack.bootstrap, auth=stack.kafka_auth("admin"))
    try:
        fetches = _count_fetches(loop)
        await asyncio.sleep(2.0)  # joined the group, assigned, idle
        idle_from = time.monotonic()
        await asyncio.sleep(3.0)
        idle_fetches = [t for t in fetches if t >= idle_from]

        sent_at = time.monotonic()
        await producer.send_and_wait(topic, b"first after the lull", key=b"k")
        deadline = sent_at + 5
        while not stage.seen and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        pacing_after_a_record = loop._pacing
    finally:
        await producer.stop()
        await loop.stop(timeout=5)

    # 500 ms long polls: ~6 in 3 s (with 25 ms waits it was ~120).
    assert len(idle_fetches) <= 12, f"{len(idle_fetches)} fetches in 3 s idle"
    assert stage.seen and stage.seen[0][0] == b"first after the lull"
    assert stage.seen[0][1] - sent_at < 0.25  # the idle fetch answered with the first byte, not after 500 ms
    assert pacing_after_a_record == (65536, 25)  # records flowing: batching again
