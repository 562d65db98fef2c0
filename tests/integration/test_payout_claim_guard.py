"""The claim guard on the real PostgreSQL: only the claim that holds a payout row may write it.

The payout service is stopped meanwhile, so nothing else claims these rows; they are due
since 1970, so every claim here takes them before any other due row.
"""

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from aiokafka import ConsumerRecord
from prometheus_client import REGISTRY

from services.payout import store
from services.payout.gateway import GatewayEvent, GatewayResult, RefundOrder
from services.payout.handlers import SOURCE, HandOff, IntentRecorder, PayoutExecutor, PayoutPolicy
from services.payout.outcomes import OutcomeRules
from services.payout.webhooks import GatewayEventReceiver
from shared.contract import topics
from shared.runtime.db import create_pool
from shared.contract.events import TYPE_OF, RefundApproved
from shared.runtime.stage import Handler, Stage
from tests.integration.helpers import SOURCE as PLATFORM, refund_of, valid_request

pytestmark = pytest.mark.integration
LEASE = 60.0
MADE: list[str] = []  # the intents a test made up, removed after it


@pytest.fixture(scope="module")
def payout_stopped(stack):
    stack.stop_service("payout")
    yield
    stack.start_service("payout")


@pytest.fixture
async def pool(stack, payout_stopped):
    pool = await create_pool(stack.dsn)
    yield pool
    # Nothing of these made-up refunds may reach Kafka once payout's outbox relay runs again.
    await pool.execute("DELETE FROM payout.outbox WHERE key = ANY($1)", MADE)
    await pool.execute("DELETE FROM payout.gateway_events WHERE refund_id = ANY($1)", MADE)
    await pool.execute("DELETE FROM payout.payouts WHERE refund_id = ANY($1)", MADE)
    MADE.clear()
    await pool.close()


def approved(data: dict) -> dict:
    now = datetime.now(UTC).isoformat()
    return RefundApproved.model_validate({
        **{name: data[name] for name in ("request_id", "order_id", "amount", "payment", "customer", "region",
                                         "reason", "requested_at")},
        "refund_id": refund_of(data), "source": PLATFORM, "channel": data["payment"]["channel"],
        "accepted_at": now, "policy_version": "test", "approved_at": now}).model_dump(mode="json")


async def intent(pool, refund: dict | None = None) -> str:
    """A payout intent due since 1970 (first in claim order); `refund` replaces its stored refund."""
    data = valid_request()
    refund_id = refund_of(data)
    await pool.execute(
        "INSERT INTO payout.payouts (refund_id, payout_id, idempotency_key, status, gateway, payment_id, "
        "amount_value, currency, channel, refund, approved_at, next_attempt_at) "
        "VALUES ($1, 'po_' || $1, $1, 'pending', 'sim', $2, $3, $4, 'card', $5, now(), '1970-01-01')",
        refund_id, data["payment"]["id"], data["amount"]["value"], data["amount"]["currency"],
        refund or approved(data))
    MADE.append(refund_id)
    return refund_id


async def lapse(pool, refund_id: str) -> None:
    """Its holder stalled past the lease (a GC pause, a blocked event loop): the lease has run out."""
    await pool.execute("UPDATE payout.payouts SET claimed_at = claimed_at - make_interval(secs => $2) "
                       "WHERE refund_id = $1", refund_id, 2 * LEASE)


async def row_of(pool, refund_id: str) -> dict:
    return dict(await pool.fetchrow("SELECT * FROM payout.payouts WHERE refund_id = $1", refund_id))


def paid(claim: store.Claim, gateway_ref: str) -> store.PayoutWrite:
    return replace(store.PayoutWrite.unchanged(claim.rows[0]), status="succeeded", gateway_ref=gateway_ref,
                   finished_at=datetime.now(UTC))


def retry_later(claim: store.Claim) -> store.PayoutWrite:
    """What a worker whose call timed out writes: try again soon."""
    return replace(store.PayoutWrite.unchanged(claim.rows[0]), status="pending", retry_in_seconds=0.5,
                   last_error="gateway_timeout", error_attempts=1)


async def write(pool, claim: store.Claim, *writes: store.PayoutWrite) -> set[str]:
    async with pool.acquire() as conn, conn.transaction():
        return await store.write_outcomes(conn, claim, writes)


async def test_a_claim_superseded_after_its_lease_can_neither_renew_nor_write(pool):
    refund_id = await intent(pool)
    first = await store.claim_due(pool, 1, LEASE)
    assert first.refund_ids == [refund_id]
    await lapse(pool, refund_id)
    second = await store.claim_due(pool, 1, LEASE)
    assert second.refund_ids == [refund_id] and second.token != first.token
    assert await write(pool, second, paid(second, "simre_second")) == {refund_id}
    settled = await row_of(pool, refund_id)

    # The first holder comes back with its own answer (a timeout): nothing of it lands.
    assert await write(pool, first, retry_later(first)) == set()
    assert await store.renew(pool, first) == set()
    assert await row_of(pool, refund_id) == settled
    assert (settled["status"], settled["gateway_ref"], settled["attempts"]) == ("succeeded", "simre_second", 2)


async def test_a_lapsed_lease_writes_nothing_even_before_anyone_claims_the_row_again(pool):
    refund_id = await intent(pool)
    claim = await store.claim_due(pool, 1, LEASE)
    assert await store.renew(pool, claim) == {refund_id}
    await lapse(pool, refund_id)

    assert await write(pool, claim, paid(claim, "simre_late")) == set()
    assert await store.renew(pool, claim) == set()
    assert (await row_of(pool, refund_id))["status"] == "submitting"
    assert (await store.claim_due(pool, 1, LEASE)).refund_ids == [refund_id]


class SettlingGateway:
    """Pays every refund at once (or answers `answers[key]`); `during_call` runs inside the call (another
    replica, or the gateway's webhook, acting meanwhile)."""

    name = "sim"
    looks_up = False

    def __init__(self, during_call, answers: dict[str, str] | None = None) -> None:
        self.during_call = during_call
        self.answers = answers or {}

    async def refund(self, order: RefundOrder) -> GatewayResult:
        await self.during_call(order.idempotency_key)
        return GatewayResult(self.answers.get(order.idempotency_key, "succeeded"), f"simre_{order.idempotency_key}",
                             None)

    async def lookup(self, idempotency_key: str, payment_id: str) -> GatewayResult | None:
        return None


class RecordingProducer:
    """Stands in for Kafka: what the stage publishes after commit, acked at once."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    async def send(self, topic: str, value: bytes, key: bytes | None = None, headers=None) -> asyncio.Future:
        self.sent.append((topic, key.decode()))
        acked = asyncio.get_running_loop().create_future()
        acked.set_result(None)
        return acked


def recording_stage(pool) -> Stage:
    stage = Stage(schema="payout", source=SOURCE,
                  handlers={TYPE_OF[RefundApproved]: Handler(IntentRecorder(PayoutPolicy()))})
    stage.pool, stage.producer = pool, RecordingProducer()
    return stage


def abandoned(reason: str) -> float:
    return REGISTRY.get_sample_value("refund_payout_claims_abandoned_total", {"reason": reason}) or 0.0


async def test_an_unrecordable_row_and_a_row_taken_over_mid_call_cost_the_rest_of_the_batch_nothing(pool):
    good = await intent(pool)
    broken = await intent(pool, refund={"not": "a refund payout can read"})
    taken = await intent(pool)

    async def other_replica_takes_over(key: str) -> None:
        if key == taken:
            await lapse(pool, taken)
            theirs = await store.claim_due(pool, 1, LEASE)
            assert theirs.refund_ids == [taken]
            assert await write(pool, theirs, paid(theirs, "simre_theirs")) == {taken}

    stage = recording_stage(pool)
    executor = PayoutExecutor(stage, {"sim": SettlingGateway(other_replica_takes_over)},
                              reclaim_after_seconds=LEASE, sla_seconds=120, concurrency=3)
    stale_before, unrecordable_before = abandoned("stale_write"), abandoned("unrecordable")

    assert await executor.run_once() == 3

    assert (await row_of(pool, good))["status"] == "succeeded"
    assert stage.producer.sent == [(topics.PAID, good)]
    assert await pool.fetchval("SELECT count(*) FROM payout.outbox WHERE key = ANY($1)", [broken, taken]) == 0
    # The unreadable one is left to its lease; the taken-over one keeps the other replica's outcome.
    assert (await row_of(pool, broken))["status"] == "submitting"
    assert ((await row_of(pool, taken))["status"], (await row_of(pool, taken))["gateway_ref"]) == \
        ("succeeded", "simre_theirs")
    assert abandoned("stale_write") == stale_before + 1
    assert abandoned("unrecordable") == unrecordable_before + 1


async def test_webhooks_that_come_while_the_claim_calls_wait_for_its_write_and_apply_once_on_top_of_it(pool):
    confirmed = await intent(pool)  # the gateway answers `pending`; its webhook says `succeeded` first
    reversed_ = await intent(pool)  # the gateway answers `succeeded`; its webhook says it was reversed first
    stage = recording_stage(pool)
    receiver = GatewayEventReceiver(stage, OutcomeRules(PayoutPolicy()), sla_seconds=120)
    webhook = {confirmed: GatewayEvent("evt_confirmed", confirmed, f"simre_{confirmed}", "succeeded"),
               reversed_: GatewayEvent("evt_reversed", reversed_, f"simre_{reversed_}", "failed",
                                       "lost_or_stolen_card")}

    async def webhook_during_call(key: str) -> None:
        assert await receiver.receive("sim", [webhook[key]]) == 1
        # The claim holds the row: the event is recorded and waits; the row is the claim's to write.
        assert (await row_of(pool, key))["status"] == "submitting"
        assert await pool.fetchval("SELECT applied_at FROM payout.gateway_events WHERE gateway = 'sim' "
                                   "AND event_id = $1", webhook[key].event_id) is None
        assert await receiver.receive("sim", [webhook[key]]) == 0  # the gateway's retry: a replay
    executor = PayoutExecutor(stage, {"sim": SettlingGateway(webhook_during_call, {confirmed: "pending"})},
                              reclaim_after_seconds=LEASE, sla_seconds=120, concurrency=2)

    assert await executor.run_once() == 2

    assert ((await row_of(pool, confirmed))["status"], (await row_of(pool, reversed_))["status"]) == \
        ("succeeded", "reversed")
    announced = stage.producer.sent
    assert sorted(announced) == sorted([(topics.PAID, confirmed), (topics.PAID, reversed_),
                                        (topics.PAYOUT_FAILED, reversed_)])
    assert announced.index((topics.PAID, reversed_)) < announced.index((topics.PAYOUT_FAILED, reversed_))
    effects = dict(await pool.fetch("SELECT refund_id, effect FROM payout.gateway_events WHERE refund_id = ANY($1) "
                                    "AND applied_at IS NOT NULL", [confirmed, reversed_]))
    assert effects == {confirmed: "paid", reversed_: "reversed"}
    # Delivered again once applied: still nothing more.
    assert await receiver.receive("sim", list(webhook.values())) == 0
    assert len(stage.producer.sent) == 3


def consumed(offset: int, refund: dict) -> ConsumerRecord:
    """An approval as payout's consumer reads it off `refunds.approved`."""
    value = orjson.dumps({"id": f"evt-{refund['refund_id']}", "source": topics.APPROVAL_SOURCE,
                          "type": "refund.approved.v1", "specversion": "1.0", "time": refund["approved_at"],
                          "datacontenttype": "application/json", "data": refund})
    return ConsumerRecord(topics.APPROVED, 0, offset, 0, 0, refund["refund_id"].encode(), value, None, 1, len(value),
                          [("content-type", b"application/cloudevents+json")])


async def test_the_consume_step_hands_its_intents_to_the_executor_claimed_and_a_stop_gives_back_the_uncalled(pool):
    """No claim query per batch: the intents are recorded claimed for this process (attempt 1, as a claim
    leaves them, so no other worker takes them within the lease), handed over in claims of the executor's
    size once the transaction commits, paid by a first call (no look-up); what a stop leaves uncalled is
    due again at once, as never attempted."""
    hand_off = HandOff(LEASE, claim_size=2)
    stage = Stage(schema="payout", source=SOURCE,
                  handlers={TYPE_OF[RefundApproved]: Handler(IntentRecorder(PayoutPolicy(), hand_off))},
                  on_commit=hand_off.committed, on_rollback=hand_off.rolled_back)
    stage.pool, stage.producer = pool, RecordingProducer()
    refunds = [approved(valid_request()) for _ in range(3)]
    ids = [refund["refund_id"] for refund in refunds]
    MADE.extend(ids)

    await stage.process([consumed(n, refund) for n, refund in enumerate(refunds)])

    claims = [claim for _, claim in hand_off.claims]
    assert [claim.refund_ids for claim in claims] == [ids[:2], ids[2:]]
    stored = [await row_of(pool, refund_id) for refund_id in ids]
    assert [(row["status"], row["attempts"], row["claim_token"]) for row in stored] == \
        [("submitting", 1, claims[0].token)] * 3
    assert all(datetime.now(UTC) - row["claimed_at"] < timedelta(seconds=5) for row in stored)
    assert stage.producer.sent == [(topics.PAYOUT_SUBMITTED, refund_id) for refund_id in ids]

    called: list[str] = []

    async def note_call(key: str) -> None:
        called.append(key)

    executor = PayoutExecutor(stage, {"sim": SettlingGateway(note_call)}, reclaim_after_seconds=LEASE,
                              sla_seconds=120, concurrency=2, hand_off=hand_off)
    assert await executor.run_once(claim=False) == 2
    assert called == ids[:2]
    assert [(await row_of(pool, refund_id))["status"] for refund_id in ids[:2]] == ["succeeded"] * 2

    await store.release(pool, hand_off.claims.popleft()[1])  # what run_forever does at a stop
    left = await row_of(pool, ids[2])
    assert (left["status"], left["attempts"], left["claim_token"]) == ("pending", 0, None)
    assert left["next_attempt_at"] <= datetime.now(UTC)
    assert await executor.run_once(claim=False) == 0  # nothing handed is left, and no claim was asked for
