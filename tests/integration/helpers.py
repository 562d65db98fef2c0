import asyncio
import contextlib
import time
import uuid
from datetime import UTC, datetime, timedelta

import orjson

from gatewaysim.gateway import SimFaults, _in_share
from shared.contract import topics
from shared.contract.ids import refund_id_for
from shared.runtime.db import create_pool
from shared.runtime.kafka_auth import KafkaAuth
from shared.runtime.settings import ServiceSettings
from shared.runtime.roles import Role
from shared.runtime.staff import mint_token
from tools.platform import GatewayPayments, consumer_at_end, requested_record

SOURCE = "shop-test"


@contextlib.asynccontextmanager
async def rolled_back(dsn: str, isolation: str | None = None):
    """A connection in a transaction that is rolled back at the end: the running stack never sees what
    the test wrote, and nothing is left behind in the shared test database."""
    pool = await create_pool(dsn, max_size=1)
    try:
        async with pool.acquire() as conn:
            transaction = conn.transaction(isolation=isolation)
            await transaction.start()
            try:
                yield conn
            finally:
                await transaction.rollback()
    finally:
        await pool.close()


def valid_request(amount: int = 2500, captured: int = 5000, currency: str = "EUR", payment_suffix: str = "",
                  **changes) -> dict:
    """A request the pipeline pays; its payment id is `pay-{n}{payment_suffix}` (a suffix may carry a fault token)."""
    n = uuid.uuid4().hex[:12]
    # The simulator declines 2% of payments (SIM_DECLINE_PERCENT); tests that want the happy path avoid them.
    while _in_share(f"pay-{n}{payment_suffix}", SimFaults.decline_percent):
        n = uuid.uuid4().hex[:12]
    now = datetime.now(UTC)
    data = {
        "request_id": f"req-{n}", "order_id": f"ord-{n}",
        # Captured three days ago: approval's refund-window rules can check it (unknown means review).
        "payment": {"id": f"pay-{n}{payment_suffix}", "gateway": "sim", "channel": "card",
                    "captured": {"value": captured, "currency": currency},
                    "captured_at": (now - timedelta(days=3)).isoformat()},
        "amount": {"value": amount, "currency": currency},
        "customer": {"id": f"cus-{n}", "email": "ana@example.com", "locale": "en"},
        "region": "DE", "reason": "damaged", "requested_at": now.isoformat(),
    }
    data.update(changes)
    return data


def refund_of(data: dict, source: str = SOURCE) -> str:
    return refund_id_for(source, data["request_id"])


def staff_auth(user: str, *roles: Role) -> dict:
    """The header a staff member with `roles` sends, signed with the secret the services verify."""
    return {"Authorization": f"Bearer {mint_token(ServiceSettings().staff_token_secret, user, list(roles))}"}


# The session stack's payments at its gateway simulator (set by conftest's `stack` fixture).
gateway_payments: GatewayPayments | None = None


async def pay_for(data: dict) -> dict:
    """The request's payment exists at its gateway (as the customer's charge made it), as publish() does."""
    if gateway_payments is not None:
        await gateway_payments.ensure(data)
    return data


async def publish(producer, data: dict, *, source: str = SOURCE, binary: bool = False,
                  event_id: str | None = None) -> tuple[bytes, list]:
    """Publish a request the way a platform does, after the customer's payment exists at its gateway."""
    await pay_for(data)
    value, headers = requested_record(source, data, binary=binary, event_id=event_id)
    await producer.send_and_wait(topics.REQUESTED, value, key=data["request_id"].encode(), headers=headers)
    return value, headers


class TopicTail:
    """Reads topics from their end at creation, for asserting on what a stage published; as the
    read-only operator (KAFKA_OPS_* exported by the session's stack fixture) unless `auth` says otherwise."""

    def __init__(self, bootstrap: str, *topic_names: str, auth: KafkaAuth | None = None) -> None:
        self.bootstrap, self.topics, self.records = bootstrap, topic_names, []
        self.auth = auth or KafkaAuth.from_env("KAFKA_OPS_")

    async def __aenter__(self):
        self.consumer = await consumer_at_end(self.bootstrap, *self.topics, auth=self.auth)
        return self

    async def __aexit__(self, *exc):
        await self.consumer.stop()

    async def _poll(self) -> list[dict]:
        """The events that arrived since the last poll (waiting briefly for some); all are kept in `records`."""
        batches = await self.consumer.getmany(timeout_ms=300)
        events = [orjson.loads(record.value) for records in batches.values() for record in records]
        self.records.extend(events)
        return events

    async def read_to_end(self, timeout: float = 60.0) -> list[dict]:
        """Every event published to the topics so far (up to their end now), all kept in `records`."""
        ends = await self.consumer.end_offsets(list(self.consumer.assignment()))
        deadline = time.monotonic() + timeout
        while any([await self.consumer.position(tp) < end for tp, end in ends.items()]):
            if time.monotonic() > deadline:
                raise AssertionError(f"{', '.join(self.topics)} not read to the end within {timeout}s")
            await self._poll()
        return self.records

    async def wait_for(self, match, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in await self._poll():
                if match(event):
                    return event
        raise AssertionError(f"nothing matching on {', '.join(self.topics)} within {timeout}s; "
                             f"saw {len(self.records)}")


async def wait_until(check, timeout: float = 60.0, every: float = 0.2):
    """Poll an async condition until it returns something truthy, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := await check():
            return result
        await asyncio.sleep(every)
    raise AssertionError(f"condition not met within {timeout}s")
