"""An expired review under `on_expiry: park` waits for a senior reviewer, who reopens it with a reason.

Approval is restarted with a policy whose clocks run in seconds and that parks at expiry, then restored.
"""

from datetime import UTC, datetime

import httpx
import pytest

from shared.contract import topics
from shared.runtime.roles import Role
from tests.integration.helpers import TopicTail, publish, refund_of, staff_auth, valid_request, wait_until
from tests.integration.scrape import total
from tests.integration.service_fixtures import service_configured
from tests.integration.test_review_clock import fast_clock_policy

pytestmark = pytest.mark.integration
ALICE = staff_auth("alice", Role.SENIOR_REVIEWER)
BOB = staff_auth("bob", Role.FINANCE_LEAD)
RITA = staff_auth("rita", Role.REVIEWER)


@pytest.fixture
def parking_approval(stack, tmp_path):
    with service_configured(stack, "approval", APPROVAL_POLICY_FILE=str(fast_clock_policy(tmp_path, "park")),
                            REVIEW_CLOCK_INTERVAL_SECONDS="0.5", SWEEP_INTERVAL_SECONDS="0.5"):
        yield


@pytest.fixture
async def approval(stack):
    async with httpx.AsyncClient(base_url=stack.service_url("approval"), timeout=30) as client:
        yield client


async def test_expired_review_is_parked_then_reopened_by_a_senior_and_paid(stack, parking_approval, approval,
                                                                          producer, status_feed, db):
    request = valid_request(amount=90_000, captured=90_000)  # 900.00 EUR: one reviewer
    refund_id = refund_of(request)
    fraud = valid_request(reason="fraudulent")  # a risk hold: parked the same way
    hold_id = refund_of(fraud)
    await publish(producer, request)
    await publish(producer, fraud)
    assert await status_feed.wait_for(lambda: status_feed.status_of(refund_id) == "pending_review", timeout=60)

    async def parked(which=refund_id):
        answer = (await approval.get("/v1/reviews", params={"state": "expired"}, headers=RITA)).json()
        return next((item for item in answer["reviews"] if item["refund_id"] == which), None)
    item = await wait_until(parked, timeout=40)
    # Out of the live queue, still waiting in the stage: nothing was decided, the status is unchanged.
    assert (item["state"], item["status"], item["overdue"]) == ("expired", "pending_review", True)
    assert item["seconds_to_due"] < 0 and item["expired_at"] is not None
    assert (item["allowed_roles"], item["can_reopen_roles"]) == ([], ["senior_reviewer"])
    live = (await approval.get("/v1/reviews", headers=RITA)).json()["reviews"]
    assert refund_id not in [entry["refund_id"] for entry in live]
    assert await db.fetchval("SELECT count(*) FROM approval.decisions WHERE refund_id = $1", refund_id) == 0
    assert status_feed.status_of(refund_id) == "pending_review"

    async def gauge_shows_it():
        return total(stack, "approval", "refund_approval_reviews_expired", kind="review") >= 1
    await wait_until(gauge_shows_it, timeout=20)

    refused = await approval.post(f"/v1/reviews/{refund_id}/decision", headers=RITA,
                                  json={"action": "approve", "reason": "looks fine"})
    assert refused.status_code == 409 and refused.json()["code"] == "expired", refused.text
    assert "reopen" in refused.json()["detail"]
    for who in (RITA, BOB):
        forbidden = await approval.post(f"/v1/reviews/{refund_id}/reopen", headers=who,
                                        json={"reason": "customer called"})
        assert forbidden.status_code == 403 and forbidden.json()["code"] == "role_not_permitted", forbidden.text
    assert (await approval.post(f"/v1/reviews/{refund_id}/reopen", headers=ALICE,
                                json={"reason": "  "})).status_code == 422
    assert (await approval.post("/v1/reviews/rf_nope/reopen", headers=ALICE,
                                json={"reason": "customer called"})).status_code == 404

    async with TopicTail(stack.bootstrap, topics.HELD) as held:
        reopened = await approval.post(f"/v1/reviews/{refund_id}/reopen", headers=ALICE,
                                       json={"reason": "customer called: the parcel came back"})
        assert reopened.status_code == 200, reopened.text
        event = await held.wait_for(lambda e: e["data"]["refund_id"] == refund_id
                                    and e["type"] == "refund.review-reopened.v1")
    body = reopened.json()
    assert (body["state"], body["status"], body["seconds_to_due"] > 0) == ("open", "pending_review", True)
    assert body["reopened_by"] == "alice" and body["allowed_roles"] and body["can_reopen_roles"] == []
    data = event["data"]
    assert (data["kind"], data["reopened_by"], data["note"]) == ("review", "alice",
                                                                  "customer called: the parcel came back")
    assert datetime.fromisoformat(data["expires_at"]) > datetime.now(UTC)
    assert datetime.fromisoformat(data["due_at"]) == datetime.fromisoformat(body["due_at"])
    assert event["source"] == "refund-pipeline/approval"
    trail = body["audit"]
    assert [(entry["actor"], entry["action"]) for entry in trail][-2:] == [("system", "expired"),
                                                                          ("alice", "reopened")]
    assert trail[-1]["note"] == trail[-1]["reason"] == "customer called: the parcel came back"
    assert trail[-1]["roles"] == ["senior_reviewer"]

    hold = await wait_until(lambda: parked(hold_id), timeout=40)
    assert (hold["kind"], hold["state"], hold["status"]) == ("hold", "expired", "on_hold")
    assert status_feed.status_of(hold_id) == "on_hold"
    async with TopicTail(stack.bootstrap, topics.HELD) as held:
        reopened_hold = await approval.post(f"/v1/reviews/{hold_id}/reopen", headers=ALICE,
                                            json={"reason": "card holder confirmed by phone"})
        assert reopened_hold.status_code == 200, reopened_hold.text
        hold_event = await held.wait_for(lambda e: e["data"]["refund_id"] == hold_id
                                         and e["type"] == "refund.review-reopened.v1")
    assert (reopened_hold.json()["state"], hold_event["data"]["kind"]) == ("open", "hold")

    again = await approval.post(f"/v1/reviews/{refund_id}/reopen", headers=ALICE, json={"reason": "once more"})
    assert again.status_code == 409 and again.json()["code"] == "not_expired", again.text

    approved = await approval.post(f"/v1/reviews/{refund_id}/decision", headers=RITA,
                                   json={"action": "approve", "reason": "return confirmed by the warehouse"})
    assert approved.status_code == 200 and approved.json()["state"] == "approved", approved.text
    assert await status_feed.wait_for(
        lambda: status_feed.status_of(refund_id) in ("succeeded", "reconciled"), timeout=60)
    assert await db.fetchval("SELECT count(*) FROM gateway_sim.refunds WHERE idempotency_key = $1", refund_id) == 1
