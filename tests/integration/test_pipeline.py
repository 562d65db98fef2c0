"""End to end on the real stack: Kafka, PostgreSQL, five service processes, public contract only."""

import uuid
from datetime import datetime

import httpx
import orjson
import pytest

from services.notify.domain import RANK
from shared.contract import topics
from shared.contract.events import Status
from tools.platform import requested_record
from tests.integration.helpers import TopicTail, pay_for, publish, refund_of, valid_request, wait_until

pytestmark = pytest.mark.integration
LIFECYCLE = ["accepted", "approved", "processing", "succeeded", "reconciled"]


async def test_one_refund_goes_through_all_five_services(stack, producer, status_feed, db):
    request = valid_request(amount=1999, captured=1999, currency="KWD", region="KW")
    refund_id = refund_of(request)
    await publish(producer, request)

    assert await status_feed.wait_for(lambda: status_feed.status_of(refund_id) == "reconciled", timeout=60)
    history = status_feed.history[refund_id]
    assert [RANK[Status(s)] for s in history] == sorted(RANK[Status(s)] for s in history), history
    # Each record says where it stands in the refund's history, so a subscriber can drop stale ones.
    sequences = status_feed.sequences[refund_id]
    assert sequences == sorted(set(sequences)) and sequences[0] >= 1, sequences
    final = status_feed.latest[refund_id]
    assert final["amount"] == {"value": 1999, "currency": "KWD"}
    assert (final["request_id"], final["source"], final["order_id"]) == (
        request["request_id"], "shop-test", request["order_id"])
    assert final["eta"] is not None
    # The ticket's stage deadlines (intake, from deploy/sla.yaml) ride on the status feed; each stage's
    # deadline follows the one before.
    deadlines = final["deadlines"]
    stages = ["intake", "approval", "payout", "reconcile", "notify"]
    assert set(deadlines) == set(stages)
    due = [datetime.fromisoformat(deadlines[stage]) for stage in stages]
    assert due == sorted(due) and due[0] < due[-1]

    async with httpx.AsyncClient() as http:
        tracked = (await http.get(f"{stack.service_url('notify')}/v1/refunds/{refund_id}")).json()
        assert set(LIFECYCLE) <= set(tracked["timeline"])
        assert tracked["deadlines"] == deadlines
        for name in ("intake", "approval", "payout", "reconcile"):
            metrics = (await http.get(f"{stack.service_url(name)}/metrics")).text
            assert 'refund_stage_duration_seconds_count{channel="card",outcome=' in metrics, name
            assert f'stage="{name}"' in metrics, name

    assert await db.fetchval("SELECT count(*) FROM gateway_sim.refunds WHERE idempotency_key = $1", refund_id) == 1
    assert await db.fetchval("SELECT state FROM reconcile.payouts WHERE refund_id = $1", refund_id) == "matched"


async def test_binary_mode_request_is_accepted(stack, producer, status_feed):
    request = valid_request(amount=500, captured=500, currency="JPY", region="JP")
    await publish(producer, request, binary=True)
    refund_id = refund_of(request)
    assert await status_feed.wait_for(lambda: status_feed.status_of(refund_id) == "reconciled", timeout=60)


async def test_same_request_twice_is_one_refund_and_one_payout(stack, producer, status_feed, db):
    request = valid_request()
    refund_id = refund_of(request)
    event_id = str(uuid.uuid4())
    await publish(producer, request, event_id=event_id)
    await publish(producer, request, event_id=event_id)  # a redelivery: same CloudEvent
    assert await status_feed.wait_for(lambda: status_feed.status_of(refund_id) == "reconciled", timeout=60)

    # The platform re-sends the request under a new event id: no new refund, status re-published.
    seen = len(status_feed.history[refund_id])
    await publish(producer, request)
    assert await status_feed.wait_for(lambda: len(status_feed.history[refund_id]) > seen, timeout=30)
    assert status_feed.status_of(refund_id) == "reconciled"

    assert await db.fetchval("SELECT count(*) FROM intake.tickets WHERE refund_id = $1", refund_id) == 1
    assert await db.fetchval("SELECT count(*) FROM payout.payouts WHERE refund_id = $1", refund_id) == 1
    assert await db.fetchval("SELECT count(*) FROM gateway_sim.refunds WHERE idempotency_key = $1", refund_id) == 1
    assert await db.fetchval("SELECT refunded FROM intake.payment_balances WHERE payment_id = $1",
                             request["payment"]["id"]) == request["amount"]["value"]


async def test_a_redelivered_approval_never_pays_twice(stack, producer, status_feed, db):
    request = valid_request()
    refund_id = refund_of(request)
    async with TopicTail(stack.bootstrap, topics.APPROVED) as approved:
        await publish(producer, request)
        event = await approved.wait_for(lambda e: e["data"]["refund_id"] == refund_id)
    assert await status_feed.wait_for(lambda: status_feed.status_of(refund_id) == "reconciled", timeout=60)

    replay_id = str(uuid.uuid4())
    replay = orjson.dumps({**event, "id": replay_id})
    await producer.send_and_wait(topics.APPROVED, replay, key=refund_id.encode(),
                                 headers=[("content-type", b"application/cloudevents+json")])
    await wait_until(lambda: db.fetchval("SELECT 1 FROM payout.inbox WHERE event_id = $1", replay_id))
    assert await db.fetchval("SELECT count(*) FROM payout.payouts WHERE refund_id = $1", refund_id) == 1
    assert await db.fetchval("SELECT count(*) FROM gateway_sim.refunds WHERE idempotency_key = $1", refund_id) == 1


async def test_invalid_request_is_rejected_naming_every_problem(stack, producer, status_feed):
    request = valid_request(region="XX")
    del request["order_id"]
    request["amount"]["value"] = 12.5
    request["reason"] = "bored"
    refund_id = refund_of(request)
    async with TopicTail(stack.bootstrap, topics.REJECTED) as rejected:
        await publish(producer, request)
        event = await rejected.wait_for(lambda e: e["data"].get("refund_id") == refund_id)
    errors = {(e["field"], e["code"]) for e in event["data"]["errors"]}
    assert {("order_id", "missing"), ("region", "invalid"), ("amount.value", "invalid"),
            ("reason", "invalid")} <= errors
    assert (event["data"]["source"], event["data"]["request_id"]) == ("shop-test", request["request_id"])
    assert await status_feed.wait_for(lambda: status_feed.status_of(refund_id) == "rejected", timeout=30)
    assert {"missing", "invalid"} <= set(status_feed.latest[refund_id]["reason_codes"])


async def test_over_refund_of_a_payment_is_rejected_with_the_remaining_balance(stack, producer, status_feed):
    first = valid_request(amount=3000, captured=5000)
    second = valid_request(amount=2001, captured=5000, payment=first["payment"])
    async with TopicTail(stack.bootstrap, topics.REJECTED) as rejected:
        await publish(producer, first)
        await publish(producer, second)
        event = await rejected.wait_for(lambda e: e["data"].get("refund_id") == refund_of(second))
    [error] = event["data"]["errors"]
    assert error["code"] == "exceeds_refundable" and "20.00 EUR" in error["message"]
    assert await status_feed.wait_for(lambda: status_feed.status_of(refund_of(first)) == "reconciled", timeout=60)


async def test_poison_message_is_dead_lettered_and_the_next_message_flows(stack, producer, status_feed):
    key = b"same-partition"
    async with TopicTail(stack.bootstrap, topics.DLQ) as dlq:
        poison = await producer.send_and_wait(topics.REQUESTED, b"\x00\xff{not json", key=key,
                                              headers=[("x-trace", b"\xff\xfe")])
        request = await pay_for(valid_request())
        value, headers = requested_record("shop-test", request)
        await producer.send_and_wait(topics.REQUESTED, value, key=key, headers=headers)
        letter = await dlq.wait_for(lambda e: e["data"]["offset"] == poison.offset
                                    and e["data"]["partition"] == poison.partition)
    assert letter["type"] == "refund.dead-lettered.v1"
    assert letter["data"]["topic"] == topics.REQUESTED
    assert "not a CloudEvent" in letter["data"]["error"]
    assert letter["data"]["raw_base64"]
    assert await status_feed.wait_for(lambda: status_feed.status_of(refund_of(request)) == "reconciled", timeout=60)


async def test_an_event_a_stage_cannot_process_is_dead_lettered_without_blocking(stack, producer, status_feed):
    # A well-formed CloudEvent whose data breaks the contract reaches payout: its batch
    # fails, is retried one record per transaction, and only the bad record is dead-lettered.
    bad_id = str(uuid.uuid4())
    bad = orjson.dumps({"specversion": "1.0", "id": bad_id, "source": topics.APPROVAL_SOURCE, "type": "refund.approved.v1",
                        "data": {"refund_id": "rf_broken", "amount": {"value": 1.5, "currency": "EUR"}}})
    request = valid_request()
    async with TopicTail(stack.bootstrap, topics.DLQ) as dlq:
        sent = await producer.send_and_wait(topics.APPROVED, bad, key=b"rf_broken",
                                            headers=[("content-type", b"application/cloudevents+json")])
        await publish(producer, request)
        # Payout and notify both consume refunds.approved; each dead-letters it on its own.
        letter = await dlq.wait_for(lambda e: e["source"] == "refund-pipeline/payout"
                                    and e["data"]["topic"] == topics.APPROVED
                                    and e["data"]["offset"] == sent.offset and e["data"]["partition"] == sent.partition)
    assert "ValidationError" in letter["data"]["error"]
    assert await status_feed.wait_for(lambda: status_feed.status_of(refund_of(request)) == "reconciled", timeout=60)


async def test_a_forged_approval_from_another_source_is_dead_lettered_and_never_paid(stack, producer, db):
    # A genuine approval, re-signed by anyone but approval (a platform with broker access, say).
    request = valid_request()
    refund_id = refund_of(request)
    async with TopicTail(stack.bootstrap, topics.APPROVED) as approved:
        await publish(producer, valid_request())  # any approval, to copy its shape
        genuine = await approved.wait_for(lambda e: e["type"] == "refund.approved.v1")
    forged = {**genuine, "id": str(uuid.uuid4()), "source": "shop-test",
              "data": {**genuine["data"], "refund_id": refund_id, "request_id": request["request_id"]}}
    async with TopicTail(stack.bootstrap, topics.DLQ) as dlq:
        sent = await producer.send_and_wait(topics.APPROVED, orjson.dumps(forged), key=refund_id.encode(),
                                            headers=[("content-type", b"application/cloudevents+json")])
        letter = await dlq.wait_for(lambda e: e["source"] == topics.PAYOUT_SOURCE
                                    and e["data"]["offset"] == sent.offset and e["data"]["partition"] == sent.partition)
    assert letter["data"]["error"].startswith("untrusted_source: refunds.approved accepts events only from "
                                              "refund-pipeline/approval")
    assert await db.fetchval("SELECT count(*) FROM payout.payouts WHERE refund_id = $1", refund_id) == 0
    assert await db.fetchval("SELECT count(*) FROM gateway_sim.refunds WHERE idempotency_key LIKE $1",
                             refund_id + "%") == 0
    async with httpx.AsyncClient() as http:
        metrics = (await http.get(f"{stack.service_url('payout')}/metrics")).text
    assert 'refund_messages_dead_lettered_total{reason="untrusted_source",stage="payout"}' in metrics


async def test_stages_export_backlog_gauges_from_their_own_store(stack):
    async with httpx.AsyncClient() as http:
        for name in ("payout", "reconcile"):
            metrics = (await http.get(f"{stack.service_url(name)}/metrics")).text
            for gauge in ("refund_stage_inflight", "refund_stage_overdue", "refund_stage_oldest_age_seconds"):
                assert f'{gauge}{{stage="{name}"}}' in metrics, (name, gauge)
