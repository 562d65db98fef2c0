"""Approval on the real stack: reviews with roles and four eyes, risk holds, and the queue never blocking."""

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from aiokafka.partitioner import DefaultPartitioner

from shared.contract import topics
from shared.runtime.roles import Role
from tests.integration.helpers import TopicTail, publish, refund_of, staff_auth, valid_request

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
ALICE = staff_auth("alice", Role.SENIOR_REVIEWER)
BOB = staff_auth("bob", Role.FINANCE_LEAD)
RITA = staff_auth("rita", Role.REVIEWER)


@pytest.fixture
async def approval(stack):
    async with httpx.AsyncClient(base_url=stack.service_url("approval"), timeout=30) as client:
        yield client


async def decide(approval, refund_id, headers, action, reason="checked order and payment"):
    return await approval.post(f"/v1/reviews/{refund_id}/decision", headers=headers,
                               json={"action": action, "reason": reason})


async def test_large_refund_needs_two_different_approvers_then_is_paid(stack, approval, producer, status_feed, db):
    request = valid_request(amount=600_000, captured=600_000)  # 6,000.00 EUR: four eyes
    refund_id = refund_of(request)
    await publish(producer, request)
    assert await status_feed.wait_for(lambda: status_feed.status_of(refund_id) == "pending_review", timeout=60)
    assert "four-eyes-large" in status_feed.latest[refund_id]["reason_codes"]

    queue = (await approval.get("/v1/reviews", headers=RITA)).json()["reviews"]
    mine = next(item for item in queue if item["refund_id"] == refund_id)
    assert (mine["required_approvals"], mine["status"]) == (2, "pending_review")
    assert mine["amount"] == {"value": 600_000, "currency": "EUR"}

    assert (await approval.get("/v1/reviews")).status_code == 401
    assert (await decide(approval, refund_id, {"Authorization": "Bearer forged"}, "approve")).status_code == 401
    wrong_role = await decide(approval, refund_id, RITA, "approve")
    assert wrong_role.status_code == 403 and wrong_role.json()["code"] == "role_not_permitted"

    first = await decide(approval, refund_id, ALICE, "approve")
    assert first.status_code == 200 and first.json()["approvers"] == ["alice"]
    assert first.json()["state"] == "open"
    again = await decide(approval, refund_id, ALICE, "approve", "approving once more")
    assert again.status_code == 403 and again.json()["code"] == "four_eyes"
    missing_reason = await approval.post(f"/v1/reviews/{refund_id}/decision", headers=BOB, json={"action": "approve"})
    assert missing_reason.status_code == 422

    async with TopicTail(stack.bootstrap, topics.APPROVED) as approvals:
        second = await decide(approval, refund_id, BOB, "approve", "second pair of eyes: matches the order")
        assert second.status_code == 200 and second.json()["state"] == "approved"
        approved = (await approvals.wait_for(lambda e: e["data"]["refund_id"] == refund_id))["data"]
    assert {"four-eyes-large", "review-approved"} <= set(approved["reason_codes"])
    assert approved["policy_version"] == "2026.11-1"
    assert await status_feed.wait_for(lambda: status_feed.status_of(refund_id) == "reconciled", timeout=60)
    assert await db.fetchval("SELECT count(*) FROM gateway_sim.refunds WHERE idempotency_key = $1", refund_id) == 1

    late = await decide(approval, refund_id, RITA, "deny")
    assert late.status_code in (403, 409)

    trail = (await approval.get(f"/v1/reviews/{refund_id}", headers=RITA)).json()["audit"]
    assert [(entry["actor"], entry["action"]) for entry in trail] == [
        ("policy", "opened_review"), ("alice", "approve"), ("bob", "approve")]
    assert trail[2]["reason"] == "second pair of eyes: matches the order"
    with pytest.raises(Exception, match="append-only"):
        await db.execute("UPDATE approval.audit SET actor = 'mallory' WHERE refund_id = $1", refund_id)
    decision = await db.fetchrow("SELECT decision, decided_by, policy_version FROM approval.decisions "
                                 "WHERE refund_id = $1", refund_id)
    assert dict(decision) == {"decision": "approved", "decided_by": "bob", "policy_version": "2026.11-1"}


async def test_fraud_hold_is_released_by_a_senior_and_paid(approval, producer, status_feed):
    request = valid_request(reason="fraudulent")
    refund_id = refund_of(request)
    await publish(producer, request)
    assert await status_feed.wait_for(lambda: status_feed.status_of(refund_id) == "on_hold", timeout=60)
    assert status_feed.latest[refund_id]["reason_codes"] == ["risk-reason-fraudulent"]

    assert (await decide(approval, refund_id, RITA, "release")).status_code == 403
    assert (await decide(approval, refund_id, ALICE, "approve")).status_code == 422  # holds are released
    released = await decide(approval, refund_id, ALICE, "release", "customer verified by phone")
    assert released.status_code == 200
    assert await status_feed.wait_for(lambda: status_feed.status_of(refund_id) == "reconciled", timeout=60)


async def test_open_dispute_holds_and_a_denied_hold_is_final(approval, producer, status_feed, db):
    request = valid_request()
    flag = {"gateway": "sim", "payment_id": request["payment"]["id"], "open": True, "reason": "chargeback CB-1"}
    assert (await approval.post("/v1/disputes", headers=RITA, json=flag)).status_code == 403
    assert (await approval.post("/v1/disputes", headers=BOB, json=flag)).status_code == 200
    refund_id = refund_of(request)
    await publish(producer, request)
    assert await status_feed.wait_for(lambda: status_feed.status_of(refund_id) == "on_hold", timeout=60)
    assert status_feed.latest[refund_id]["reason_codes"] == ["risk-open-dispute"]

    denied = await decide(approval, refund_id, BOB, "deny", "chargeback already refunds the customer")
    assert denied.status_code == 200 and denied.json()["state"] == "denied"
    assert await status_feed.wait_for(lambda: status_feed.status_of(refund_id) == "denied", timeout=60)
    assert await db.fetchval("SELECT count(*) FROM payout.payouts WHERE refund_id = $1", refund_id) == 0


async def test_waiting_reviews_do_not_hold_up_auto_approvals_on_their_partition(stack, producer, status_feed):
    parked = valid_request(amount=90_000, captured=90_000)  # 900.00 EUR: review
    parked_id = refund_of(parked)
    partitions = list(range(6))
    partition = DefaultPartitioner()(parked_id.encode(), partitions, partitions)
    same_partition = []
    while len(same_partition) < 10:
        candidate = valid_request()
        if DefaultPartitioner()(refund_of(candidate).encode(), partitions, partitions) == partition:
            same_partition.append(candidate)

    await publish(producer, parked)
    assert await status_feed.wait_for(lambda: status_feed.status_of(parked_id) == "pending_review", timeout=60)
    for request in same_partition:
        await publish(producer, request)
    ids = [refund_of(request) for request in same_partition]
    assert await status_feed.wait_for(
        lambda: all(status_feed.status_of(i) == "reconciled" for i in ids), timeout=90)
    assert status_feed.status_of(parked_id) == "pending_review"


def test_a_bad_policy_file_stops_approval_from_starting(tmp_path):
    bad = tmp_path / "policy.yaml"
    bad.write_text((ROOT / "deploy/policy/refund-policy.yaml").read_text().replace("approvals: 2", "approvals: 5"))
    started = subprocess.run(
        [sys.executable, "-m", "uvicorn", "services.approval.main:app", "--port", "0"],
        env={**os.environ, "APPROVAL_POLICY_FILE": str(bad)},
        capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert started.returncode != 0
    assert "approval cannot start: invalid refund policy" in started.stderr
    assert f"{bad}:" in started.stderr and "rules.2.approvals" in started.stderr


async def test_concurrent_second_approvals_approve_once(approval, producer, status_feed, db):
    request = valid_request(amount=700_000, captured=700_000)
    refund_id = refund_of(request)
    await publish(producer, request)
    assert await status_feed.wait_for(lambda: status_feed.status_of(refund_id) == "pending_review", timeout=60)
    assert (await decide(approval, refund_id, ALICE, "approve")).status_code == 200
    racers = [staff_auth(f"lead-{n}", Role.FINANCE_LEAD) for n in range(5)]
    answers = await asyncio.gather(*(decide(approval, refund_id, headers, "approve") for headers in racers))
    assert sorted(a.status_code for a in answers) == [200, 409, 409, 409, 409]
    assert await status_feed.wait_for(lambda: status_feed.status_of(refund_id) == "reconciled", timeout=60)
    assert await db.fetchval("SELECT count(*) FROM approval.decisions WHERE refund_id = $1", refund_id) == 1
