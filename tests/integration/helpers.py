import asyncio
import time
import uuid
from datetime import UTC, datetime

import orjson
from aiokafka import AIOKafkaConsumer

from gatewaysim.gateway import SimFaults, _in_share
from shared import topics
from shared.ids import refund_id_for
from tools.platform import partitions_of, requested_record

SOURCE = "shop-test"


def valid_request(amount: int = 2500, captured: int = 5000, currency: str = "EUR", **changes) -> dict:
    n = uuid.uuid4().hex[:12]
    # The simulator declines 2% of payments (SIM_DECLINE_PERCENT); tests that want the happy path avoid them.
    while _in_share(f"pay-{n}", SimFaults.decline_percent):
        n = uuid.uuid4().hex[:12]
    data = {
        "request_id": f"req-{n}", "order_id": f"ord-{n}",
        "payment": {"id": f"pay-{n}", "gateway": "sim", "channel": "card",
                    "captured": {"value": captured, "currency": currency}},
        "amount": {"value": amount, "currency": currency},
        "customer": {"id": f"cus-{n}", "email": "ana@example.com", "locale": "en"},
        "region": "DE", "reason": "damaged", "requested_at": datetime.now(UTC).isoformat(),
    }
    data.update(changes)
    return data


def refund_of(data: dict, source: str = SOURCE) -> str:
    return refund_id_for(source, data["request_id"])


async def publish(producer, data: dict, *, source: str = SOURCE, binary: bool = False,
                  event_id: str | None = None) -> tuple[bytes, list]:
    value, headers = requested_record(source, data, binary=binary, event_id=event_id)
    await producer.send_and_wait(topics.REQUESTED, value, key=data["request_id"].encode(), headers=headers)
    return value, headers


class TopicTail:
    """Reads a topic from its end at creation, for asserting on what a stage published."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap, self.topic, self.records = bootstrap, topic, []

    async def __aenter__(self):
        self.consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        parts = await self._partitions()
        await self.consumer.start()
        self.consumer.assign(parts)
        await self.consumer.seek_to_end(*parts)
        for tp in parts:
            await self.consumer.position(tp)
        return self

    async def __aexit__(self, *exc):
        await self.consumer.stop()

    async def _partitions(self) -> list:
        return await partitions_of(self.bootstrap, self.topic)

    async def wait_for(self, match, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for records in (await self.consumer.getmany(timeout_ms=300)).values():
                for record in records:
                    event = orjson.loads(record.value)
                    self.records.append(event)
                    if match(event):
                        return event
        raise AssertionError(f"nothing matching on {self.topic} within {timeout}s; saw {len(self.records)}")


async def wait_until(check, timeout: float = 60.0, every: float = 0.2):
    """Poll an async condition until it returns something truthy, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := await check():
            return result
        await asyncio.sleep(every)
    raise AssertionError(f"condition not met within {timeout}s")
