"""Intake's consume step on the real PostgreSQL, a whole batch at once: the same outcomes as the same
requests one at a time, in a constant number of statements.

Drives `Intake.decide_batch` itself (as the stage runtime calls it, on one connection inside the batch's
transaction), so what is in one batch is exactly what the test puts there.
"""

import time
import uuid
from datetime import UTC, datetime

import orjson
import pytest
from aiokafka import ConsumerRecord

from services.intake.handlers import Intake
from services.intake.settings import REPO_SLA_FILE
from services.intake import sla
from shared.contract import contact_seal, topics
from shared.contract.contact_seal import LOCAL_PUBLIC_KEY
from shared.runtime.db import create_pool
from shared.contract.envelope import decode
from shared.contract.ids import refund_id_for
from shared.runtime.stage import Inbound
from tests.integration.helpers import valid_request

pytestmark = pytest.mark.integration
CE_JSON = [("content-type", b"application/cloudevents+json")]


@pytest.fixture
async def pool(stack):
    pool = await create_pool(stack.dsn)
    yield pool
    await pool.close()


@pytest.fixture
def intake() -> Intake:
    return Intake(sla.load(REPO_SLA_FILE), contact_seal.public_key(LOCAL_PUBLIC_KEY))


def inbound(data: dict, *, source: str, topic: str = topics.REQUESTED,
            event_type: str = "refund.requested.v1") -> Inbound:
    envelope = {"specversion": "1.0", "id": str(uuid.uuid4()), "source": source, "type": event_type,
                "time": datetime.now(UTC).isoformat(), "datacontenttype": "application/json", "data": data}
    record = ConsumerRecord(topic=topic, partition=0, offset=0, timestamp=int(time.time() * 1000),
                            timestamp_type=0, key=None, value=orjson.dumps(envelope), checksum=None,
                            serialized_key_size=0, serialized_value_size=0, headers=CE_JSON)
    return Inbound(record, decode(record.value, record.headers))


async def decided(pool, intake: Intake, items: list[Inbound]) -> tuple[list[dict], int]:
    """The outcome events of one batch, and how many statements it took."""
    statements: list[str] = []

    def count(query) -> None:
        statements.append(query.query)

    async with pool.acquire() as conn, conn.transaction():
        conn.add_query_logger(count)
        try:
            events = await intake.decide_batch(conn, items)
        finally:
            conn.remove_query_logger(count)
    return [orjson.loads(event.value) for event in events], len(statements)


def scenario(tag: str) -> tuple[list[dict], list[dict]]:
    """Requests that exercise every rule a batch could get wrong, in consumption order (on payments of
    their own per `tag`), and the one decided in an earlier batch."""
    shared_payment = {"id": f"pay-{tag}-1", "gateway": "sim", "channel": "card",
                      "captured": {"value": 5000, "currency": "EUR"}}
    small = {**shared_payment, "id": f"pay-{tag}-2", "captured": {"value": 1000, "currency": "EUR"}}
    earlier = valid_request(amount=1000, captured=5000, payment={**shared_payment, "id": f"pay-{tag}-0"})
    first = valid_request(amount=3000, captured=5000, payment=shared_payment)
    batch = [
        first,
        valid_request(amount=3000, captured=5000, payment=shared_payment),  # 20.00 left: exceeds_refundable
        valid_request(amount=2000, captured=5000, payment=shared_payment),  # exactly what is left
        dict(first),  # the same key again in the batch: the first's outcome
        {**first, "order_id": "another-order"},  # the key reused with another body
        valid_request(amount=0, captured=5000, payment=shared_payment),  # invalid: locks nothing
        valid_request(amount=500, captured=1000, payment=small),
        valid_request(amount=500, captured=900,  # the same payment with another captured amount
                      payment={**small, "captured": {"value": 900, "currency": "EUR"}}),
        dict(earlier),  # decided in an earlier batch: its stored outcome
    ]
    return [earlier], batch


def answer(event: dict) -> tuple[str, list | None]:
    return event["type"], [(e["field"], e["code"], e["message"]) for e in event["data"].get("errors", [])] or None


async def balances(pool, tag: str) -> dict[str, int]:
    rows = await pool.fetch("SELECT payment_id, refunded FROM intake.payment_balances WHERE payment_id LIKE $1",
                            f"pay-{tag}-%")
    return {row["payment_id"].removeprefix(f"pay-{tag}-"): row["refunded"] for row in rows}


async def test_a_batch_gets_what_its_requests_get_one_at_a_time_in_four_statements(stack, pool, intake):
    together, alone = f"batch-{uuid.uuid4().hex[:8]}", f"alone-{uuid.uuid4().hex[:8]}"
    before, batch = scenario(together)
    await decided(pool, intake, [inbound(data, source=together) for data in before])
    batched, statements = await decided(pool, intake, [inbound(data, source=together) for data in batch])

    before_alone, batch_alone = scenario(alone)
    await decided(pool, intake, [inbound(data, source=alone) for data in before_alone])
    one_by_one = [(await decided(pool, intake, [inbound(data, source=alone)]))[0][0] for data in batch_alone]

    assert [answer(e) for e in batched] == [answer(e) for e in one_by_one]
    assert [answer(e)[0].removeprefix("refund.") for e in batched] == [
        "accepted.v1", "rejected.v1", "accepted.v1", "accepted.v1", "accepted.v1", "rejected.v1",
        "accepted.v1", "rejected.v1", "accepted.v1"]
    assert answer(batched[1])[1] == [("amount.value", "exceeds_refundable",
                                      "only 20.00 EUR of this payment is still refundable")]
    assert answer(batched[7])[1][0][1] == "captured_mismatch"
    # A duplicate, in the batch or from before it, is the very event the first one got.
    assert batched[3]["id"] == batched[4]["id"] == batched[0]["id"]
    earlier = await pool.fetchval("SELECT outcome_value FROM intake.tickets WHERE refund_id = $1",
                                  refund_id_for(together, batch[8]["request_id"]))
    assert batched[8]["id"] == orjson.loads(earlier)["id"]
    assert await balances(pool, together) == await balances(pool, alone) == {"0": 1000, "1": 5000, "2": 500}
    tickets = await pool.fetchval("SELECT count(*) FROM intake.tickets WHERE source = $1", together)
    assert tickets == 1 + 6  # the earlier one and the batch's first of each key (the amount-0 one too)
    # Stored outcomes, balance locks, reservations, tickets: four statements for nine requests.
    assert statements == 4


async def test_releases_and_requests_in_one_batch_keep_their_consumption_order(stack, pool, intake):
    source = f"release-{uuid.uuid4().hex[:8]}"
    payment = {"id": f"pay-{source}", "gateway": "sim", "channel": "card",
               "captured": {"value": 5000, "currency": "EUR"}}
    first = valid_request(amount=5000, captured=5000, payment=payment)
    [accepted], _ = await decided(pool, intake, [inbound(first, source=source)])
    assert accepted["type"] == "refund.accepted.v1"

    data = accepted["data"]
    denial = {key: data[key] for key in ("refund_id", "request_id", "source", "order_id", "amount", "channel",
                                          "region")}
    denial |= {"policy_version": "v1", "denied_at": datetime.now(UTC).isoformat()}
    too_early = valid_request(amount=5000, captured=5000, payment=payment)
    after_release = valid_request(amount=5000, captured=5000, payment=payment)
    events, _ = await decided(pool, intake, [
        inbound(too_early, source=source),
        inbound(denial, source=topics.APPROVAL_SOURCE, topic=topics.DENIED, event_type="refund.denied.v1"),
        inbound(denial, source=topics.APPROVAL_SOURCE, topic=topics.DENIED, event_type="refund.denied.v1"),
        inbound(after_release, source=source),
    ])
    assert [e["type"] for e in events] == ["refund.rejected.v1", "refund.accepted.v1"]
    assert [e["code"] for e in events[0]["data"]["errors"]] == ["exceeds_refundable"]
    # Given back once, though the denial came twice; then taken again by the request after it.
    assert await pool.fetchval("SELECT refunded FROM intake.payment_balances WHERE payment_id = $1",
                               payment["id"]) == 5000
    assert await pool.fetchval("SELECT released_as FROM intake.tickets WHERE refund_id = $1",
                               data["refund_id"]) == "denied"
