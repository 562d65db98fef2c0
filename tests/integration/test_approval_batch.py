"""Approval's consume step on the real PostgreSQL and stack: a batch of accepted refunds is decided as
if one refund after another -- a customer's earlier refunds in the batch count in the later ones'
velocity -- with a constant number of statements."""

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from services.approval import store
from services.approval.handlers import ApprovalStep, Decisions
from services.approval.payments import GatewayPayments
from services.approval.policy import load_policy
from shared.contract.events import RefundAccepted
from shared.runtime.stage import Inbound
from tests.integration.helpers import publish, refund_of, rolled_back, valid_request

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
POLICY = load_policy(ROOT / "deploy" / "policy" / "refund-policy.yaml")  # velocity: a 6th refund in 24h is held


def accepted(customer: str, gateway: str = "sim") -> RefundAccepted:
    n = uuid.uuid4().hex[:12]
    now = datetime.now(UTC)
    return RefundAccepted.model_validate({
        "refund_id": f"rf_{n}", "request_id": f"req-{n}", "source": "shop-test", "order_id": f"ord-{n}",
        "amount": {"value": 2500, "currency": "EUR"}, "channel": "card", "region": "DE",
        "payment": {"id": f"pay-{n}", "gateway": gateway, "channel": "card",
                    "captured": {"value": 5000, "currency": "EUR"}, "captured_at": now - timedelta(days=3)},
        "customer": {"id": customer}, "reason": "damaged", "requested_at": now, "accepted_at": now,
    })


class CountingConnection:
    """The step's connection, counting the statements it sends."""

    def __init__(self, conn) -> None:
        self.conn, self.statements = conn, 0

    def __getattr__(self, name):
        if name in ("fetch", "fetchrow", "fetchval", "execute", "executemany"):
            self.statements += 1
        return getattr(self.conn, name)


async def test_a_batch_is_decided_as_one_refund_after_another_in_a_constant_number_of_statements(stack):
    step = ApprovalStep(Decisions(POLICY, GatewayPayments({"sim": object()})), sla_seconds=60)
    customer = f"cus-{uuid.uuid4().hex[:8]}"
    same_customer = [accepted(customer) for _ in range(7)]
    unrouted, disputed, decided_before = (accepted(f"{customer}-{n}", gateway)
                                          for n, gateway in enumerate(("nowhere", "sim", "sim")))
    batch = [*same_customer[:3], unrouted, same_customer[2], disputed, *same_customer[3:], decided_before]
    async with rolled_back(stack.dsn) as conn:
        await conn.execute("INSERT INTO approval.disputes (gateway, payment_id, open, reason, updated_by) "
                           "VALUES ('sim', $1, true, 'chargeback', 'test')", disputed.payment.id)
        await conn.execute("INSERT INTO approval.decisions (refund_id, decision, policy_version, rule_ids, "
                           "channel, accepted_at) VALUES ($1, 'approved', 'old', '{}', 'card', now())",
                           decided_before.refund_id)
        counted = CountingConnection(conn)
        outgoing = await step(counted, [Inbound(None, None, data=refund) for refund in batch])
        events = {e["data"]["refund_id"]: e for e in (orjson.loads(o.value) for o in outgoing)}
        parked = {row["refund_id"] for row in await conn.fetch("SELECT refund_id FROM approval.verifications")}
        reviews = await conn.fetch("SELECT refund_id, kind, rule_ids FROM approval.reviews "
                                   "WHERE refund_id = ANY($1::text[])", [r.refund_id for r in batch])
        histories = await conn.fetchval(
            "SELECT count(*) FROM approval.customer_refunds WHERE customer_key = $1", f"shop-test/{customer}")

    # Read what approval holds of the refunds, the customers' histories, the disputes; write the histories,
    # the decision, the holds, their audit entries, the approvals parked for verification.
    assert counted.statements == 8
    held = {refund.refund_id for refund in same_customer[5:]}
    assert {r["refund_id"]: (r["kind"], list(r["rule_ids"])) for r in reviews} == {
        **{refund_id: ("hold", ["risk-velocity"]) for refund_id in held},
        disputed.refund_id: ("hold", ["risk-open-dispute"])}
    assert {refund.refund_id for refund in same_customer[:5]} <= parked  # approvals wait for their payment
    assert events.keys() == {*held, disputed.refund_id, unrouted.refund_id}  # the duplicate: decided once
    assert {events[refund_id]["type"] for refund_id in held} == {"refund.held.v1"}
    assert events[unrouted.refund_id]["type"] == "refund.approved.v1"  # nothing to verify against
    assert histories == 7


async def test_the_consume_step_hands_its_approvals_to_the_verifier_claimed_for_the_lease(stack):
    """No claim query per batch: what the step parked is this process's for the lease, handed over in
    memory once the transaction commits; no round (no replica) claims it meanwhile, and releasing it
    (a stop) makes it due at once."""
    decisions = Decisions(POLICY, GatewayPayments({"sim": object()}), hand_off_lease=30)
    step = ApprovalStep(decisions, sla_seconds=60)
    batch = [accepted(f"cus-{uuid.uuid4().hex[:8]}") for _ in range(3)]
    ids = [refund.refund_id for refund in batch]
    async with rolled_back(stack.dsn) as conn:
        assert await step(conn, [Inbound(None, None, data=refund) for refund in batch]) == []
        assert not decisions.handed  # the step's transaction has not committed
        decisions.hand_over()  # what the stage calls once it has
        handed = list(decisions.handed["sim"])
        stored = {row["refund_id"]: row for row in await conn.fetch(
            "SELECT refund_id, claim, next_check_at - now() AS due_in FROM approval.verifications "
            "WHERE refund_id = ANY($1::text[])", ids)}
        claimed_by_a_round = await store.claim_verifications(conn, 100, 30, "sim", ["sim"])
        await store.release_claims(conn, handed)
        claimed_after_release = await store.claim_verifications(conn, 100, 30, "sim", ["sim"])

    assert [row["refund_id"] for row in handed] == ids
    assert {row["refund_id"]: row["claim"] for row in handed} == {i: stored[i]["claim"] for i in ids}
    assert all(timedelta(seconds=25) < stored[i]["due_in"] <= timedelta(seconds=30) for i in ids)
    assert not {row["refund_id"] for row in claimed_by_a_round} & set(ids)
    assert set(ids) <= {row["refund_id"] for row in claimed_after_release}
    assert store.awaiting_verification(handed[0]).refund == batch[0]  # read as a claimed row reads


async def test_a_customers_sixth_refund_in_a_day_is_held_however_the_batches_fall(producer, status_feed):
    customer = {"id": f"cus-{uuid.uuid4().hex[:12]}", "email": "ana@example.com", "locale": "en"}
    requests = [valid_request(customer=customer) for _ in range(7)]
    for request in requests:
        await publish(producer, request)
    ids = [refund_of(request) for request in requests]
    assert await status_feed.wait_for(
        lambda: all(status_feed.status_of(i) not in (None, "accepted") for i in ids), timeout=90)
    held = [i for i in ids if status_feed.status_of(i) == "on_hold"]
    assert len(held) == 2
    assert all(status_feed.latest[i]["reason_codes"] == ["risk-velocity"] for i in held)
