"""Intake's answers on the real stack: a conflicting captured amount, a re-sent invalid envelope,
and who may mark a refund as a drill."""

import uuid

import httpx
import orjson
import pytest

from shared.contract import topics
from tests.integration.helpers import SOURCE, TopicTail, publish, refund_of, valid_request
from tests.integration.intake_http import OutcomeTail, auth, new_api_key
from tests.integration.service_fixtures import request_with_payment, service_configured

pytestmark = pytest.mark.integration
CE_JSON = [("content-type", b"application/cloudevents+json")]


async def test_a_conflicting_captured_amount_is_captured_mismatch_naming_both_values(stack):
    source = f"shop-captured-{uuid.uuid4().hex[:8]}"
    key = await new_api_key(stack.dsn, source)
    first = valid_request(amount=1000, captured=10_000)
    second = valid_request(amount=1000, captured=9000,
                           payment={**first["payment"], "captured": {"value": 9000, "currency": "EUR"}})
    async with httpx.AsyncClient(base_url=stack.service_url("intake"), timeout=60) as client:
        answers = [await client.post("/v1/refunds", json=data,
                                     headers={**auth(key), "Idempotency-Key": data["request_id"]})
                   for data in (first, second)]
    assert answers[0].status_code == 202, answers[0].text
    assert answers[1].status_code == 422
    assert answers[1].json()["errors"] == [{
        "field": "payment.captured", "code": "captured_mismatch",
        "message": "this payment was first seen with captured 100.00 EUR; this request says 90.00 EUR"}]


async def test_an_invalid_envelope_sent_twice_gets_one_rejection_twice_and_no_dead_letter(stack, producer, db):
    data = valid_request()
    # Readable source and request_id, but `time` is not an RFC 3339 timestamp: the envelope is invalid.
    envelope = orjson.dumps({"specversion": "1.0", "id": str(uuid.uuid4()), "source": SOURCE,
                             "type": "refund.requested.v1", "time": "yesterday", "data": data})
    key = data["request_id"].encode()
    refund_id = refund_of(data)
    async with OutcomeTail(stack.bootstrap) as outcomes, TopicTail(stack.bootstrap, topics.DLQ) as dlq:
        sent = [await producer.send_and_wait(topics.REQUESTED, envelope, key=key, headers=CE_JSON) for _ in (1, 2)]
        # Unreadable bytes on the same partition, after both: once they are dead-lettered, intake has seen both.
        marker = await producer.send_and_wait(topics.REQUESTED, b"not json", key=key)
        await dlq.wait_for(lambda e: (e["data"]["partition"], e["data"]["offset"]) == (marker.partition, marker.offset)
                           and e["data"]["topic"] == topics.REQUESTED, timeout=60)
        events = (await outcomes.wait_for_outcomes([refund_id], count=2, timeout=30))[refund_id]

    dead = {(e["data"]["partition"], e["data"]["offset"]) for e in dlq.records if e["data"]["topic"] == topics.REQUESTED}
    assert not dead & {(record.partition, record.offset) for record in sent}
    assert len(events) == 2 and events[0] == events[1]  # the stored outcome again: the same event, same id
    assert events[0]["type"] == "refund.rejected.v1"
    assert [(e["field"], e["code"]) for e in events[0]["data"]["errors"]] == [("envelope", "invalid")]
    assert await db.fetchval("SELECT count(*) FROM intake.tickets WHERE refund_id = $1", refund_id) == 1


async def accepted_drill_flag(stack, producer, source: str) -> tuple[bool, dict]:
    # A declined payment: the refund ends `failed`, so no drill of these reaches reconciled next to the
    # scheduler's own (test_drills.py counts those).
    data = request_with_payment("sim-decline", metadata={"drill": "true", "order_ref": "A-1"})
    async with OutcomeTail(stack.bootstrap) as outcomes:
        await publish(producer, data, source=source)
        [event] = (await outcomes.wait_for_outcomes([refund_of(data, source)]))[refund_of(data, source)]
    assert event["type"] == "refund.accepted.v1", event["data"].get("errors")
    return event["data"]["drill"], event["data"]["metadata"]


async def test_a_drill_marker_from_a_platform_is_ignored_unless_the_source_is_allowed(stack, producer):
    # An ordinary platform's marker: a normal refund (customer messages, SLO series), metadata passed through.
    drill, metadata = await accepted_drill_flag(stack, producer, SOURCE)
    assert (drill, metadata) == (False, {"drill": "true", "order_ref": "A-1"})

    with service_configured(stack, "intake", DRILL_SOURCES='["shop-rehearsal"]'):
        assert (await accepted_drill_flag(stack, producer, "shop-rehearsal"))[0] is True
        assert (await accepted_drill_flag(stack, producer, SOURCE))[0] is False


async def test_another_contract_type_on_the_request_topic_is_rejected_naming_type(stack, producer):
    data = valid_request()
    envelope = orjson.dumps({"specversion": "1.0", "id": str(uuid.uuid4()), "source": SOURCE,
                             "type": "refund.denied.v1", "time": "2026-12-01T10:00:00Z", "data": data})
    async with OutcomeTail(stack.bootstrap) as outcomes:
        await producer.send_and_wait(topics.REQUESTED, envelope, key=data["request_id"].encode(), headers=CE_JSON)
        [event] = (await outcomes.wait_for_outcomes([refund_of(data)]))[refund_of(data)]
    assert event["type"] == "refund.rejected.v1"
    assert ("type", "invalid") in [(e["field"], e["code"]) for e in event["data"]["errors"]]
