"""Invariant 2 on the real stack: concurrent partial refunds for one payment never exceed its capture.

40 requests over HTTP and 40 over Kafka at the same moment, each for 3.00 EUR of a
100.00 EUR payment: exactly 33 fit. Every request must get exactly one outcome.
"""

import asyncio
import uuid

import httpx
import pytest

from shared.contract.ids import refund_id_for
from tests.integration.helpers import pay_for, publish, valid_request
from tests.integration.intake_http import OutcomeTail, auth, new_api_key

pytestmark = pytest.mark.integration

CAPTURED, AMOUNT, PER_PATH = 10_000, 300, 40
FITTING = CAPTURED // AMOUNT  # 33
REMAINING = "1.00 EUR"  # 10_000 - 33 * 300 = 100 minor units


async def test_concurrent_partials_never_exceed_the_captured_amount(stack, db, producer):
    source = f"shop-race-{uuid.uuid4().hex[:8]}"
    key = await new_api_key(stack.dsn, source)
    payment = {"id": f"pay-race-{uuid.uuid4().hex[:8]}", "gateway": "sim", "channel": "card",
               "captured": {"value": CAPTURED, "currency": "EUR"}}
    over_http = [valid_request(amount=AMOUNT, captured=CAPTURED, payment=payment) for _ in range(PER_PATH)]
    over_kafka = [valid_request(amount=AMOUNT, captured=CAPTURED, payment=payment) for _ in range(PER_PATH)]
    refund_ids = {refund_id_for(source, data["request_id"]): data for data in over_http + over_kafka}

    await pay_for(over_http[0])
    async with OutcomeTail(stack.bootstrap) as tail, \
            httpx.AsyncClient(base_url=stack.service_url("intake"), timeout=120) as client:
        posts = [client.post("/v1/refunds", json=data,
                             headers={**auth(key), "Idempotency-Key": data["request_id"]}) for data in over_http]
        sends = [publish(producer, data, source=source) for data in over_kafka]
        results = await asyncio.gather(*posts, *sends)
        outcomes = await tail.wait_for_outcomes(refund_ids, timeout=120)

    # Every request has exactly one outcome event (one event id), accepted or rejected.
    for refund_id, events in outcomes.items():
        assert len({e["id"] for e in events}) == 1, (refund_id, events)
    kinds = {refund_id: events[0]["type"] for refund_id, events in outcomes.items()}
    accepted = [r for r, kind in kinds.items() if kind == "refund.accepted.v1"]
    rejected = [r for r, kind in kinds.items() if kind == "refund.rejected.v1"]
    assert len(accepted) == FITTING and len(rejected) == 2 * PER_PATH - FITTING
    for refund_id in rejected:
        assert outcomes[refund_id][0]["data"]["errors"] == [{
            "field": "amount.value", "code": "exceeds_refundable",
            "message": f"only {REMAINING} of this payment is still refundable"}]

    # The HTTP answers agree with the events.
    for response, data in zip(results[:PER_PATH], over_http, strict=True):
        refund_id = refund_id_for(source, data["request_id"])
        assert response.status_code == (202 if refund_id in accepted else 422), response.text
        assert response.json()["refund_id"] == refund_id

    # The database: one ticket per request, accepted sum = ledger = at most the capture.
    rows = await db.fetch("SELECT refund_id, outcome, amount_value FROM intake.tickets WHERE source = $1", source)
    assert {row["refund_id"] for row in rows} == set(refund_ids) and len(rows) == len(refund_ids)
    assert {row["refund_id"] for row in rows if row["outcome"] == "accepted"} == set(accepted)
    accepted_sum = sum(row["amount_value"] for row in rows if row["outcome"] == "accepted")
    refunded = await db.fetchval("SELECT refunded FROM intake.payment_balances WHERE gateway = 'sim' "
                                 "AND payment_id = $1", payment["id"])
    assert accepted_sum == refunded == FITTING * AMOUNT <= CAPTURED
