"""Two instances of every service in the same consumer groups: partitions shared, every refund paid once."""

import asyncio

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

from devstack.stack import SERVICES
from shared.runtime.kafka_auth import KafkaAuth
from tests.integration.helpers import publish, refund_of, valid_request, wait_until
from tests.integration.money_checks import assert_every_refund_terminal_and_paid_at_most_once

pytestmark = pytest.mark.integration


def mixed_batch() -> list[dict]:
    """Paid and rejected refunds in several currencies (amounts approval decides automatically)."""
    batch = [valid_request(amount=100 + i, captured=1000 + i) for i in range(60)]
    batch += [valid_request(amount=500 + i, captured=500 + i, currency="JPY", region="JP") for i in range(20)]
    batch += [valid_request(amount=1999, captured=1999, currency="KWD", region="KW") for _ in range(10)]
    batch += [valid_request(amount=2000, captured=1000) for _ in range(10)]  # exceeds the captured amount
    batch += [valid_request(amount=10, captured=10, currency="XXY") for _ in range(5)]  # not a currency
    return batch


async def members_with_partitions(bootstrap: str, group: str) -> list[int]:
    """How many partitions each member of `group` holds right now."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **KafkaAuth.from_env("KAFKA_OPS_").client_options())
    await admin.start()
    try:
        (response,) = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    (described,) = response.groups
    members = described[5]
    # Mid-rebalance a member has no assignment yet (empty bytes): it holds nothing so far.
    return [sum(len(parts) for _, parts in ConsumerProtocolMemberAssignment.decode(m[4]).assignment)
            if m[4] else 0 for m in members]


async def received(url: str) -> float:
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"{url}/metrics")).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("refund_consumer_batch_records_sum{"))


async def test_two_instances_of_every_service_share_partitions_and_pay_once(stack, producer, status_feed, db):
    instances = await asyncio.to_thread(stack.start_instances, *SERVICES)
    try:
        for name in SERVICES:
            # Both instances are in the group, and each holds some of its partitions.
            shares = await wait_until(
                lambda: _split(stack.bootstrap, f"refund-{name}"), timeout=60, every=1.0)
            assert len(shares) == 2 and min(shares) > 0, (name, shares)

        batch = mixed_batch()
        await asyncio.gather(*(publish(producer, request) for request in batch))
        expected = {refund_of(request) for request in batch}
        final = await assert_every_refund_terminal_and_paid_at_most_once(status_feed, db, expected)
        outcomes = set(final.values())
        assert {"reconciled", "rejected"} <= outcomes, outcomes

        for name, second in zip(SERVICES, instances, strict=True):
            # Each instance consumed part of the batch itself.
            assert await received(stack.service_url(name)) > 0, name
            assert await received(stack.service_url(second)) > 0, second
    finally:
        for name in instances:
            await asyncio.to_thread(stack.stop_service, name)


async def _split(bootstrap: str, group: str) -> list[int] | None:
    shares = await members_with_partitions(bootstrap, group)
    return shares if len(shares) == 2 and min(shares) > 0 else None
