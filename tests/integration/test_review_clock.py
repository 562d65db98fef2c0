"""Nothing waits forever: a review past its SLA is escalated, and past its expiry the policy's on_expiry applies.

Approval is restarted with a policy whose clocks run in seconds, then restored.
"""

import re
from pathlib import Path

import pytest

from shared.contract import topics
from tests.integration.helpers import TopicTail, publish, refund_of, valid_request
from tests.integration.service_fixtures import service_configured

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def fast_clock_policy(tmp_path, on_expiry: str) -> Path:
    """The shipped policy with clocks in seconds and `on_expiry` for both reviews and holds."""
    policy = (ROOT / "deploy/policy/refund-policy.yaml").read_text()
    policy = policy.replace('version: "2026.11-1"', 'version: "test-fast-clock"')
    policy = policy.replace("  sla: 4h\n  expire_after: 3d", "  sla: 2s\n  expire_after: 8s")
    policy = policy.replace("  sla: 24h\n  expire_after: 7d", "  sla: 2s\n  expire_after: 8s")
    policy = re.sub(r"(?m)^  on_expiry: \w+", f"  on_expiry: {on_expiry}", policy)
    assert policy.count("expire_after: 8s") == 2 and policy.count(f"on_expiry: {on_expiry}") == 2
    path = tmp_path / "fast-policy.yaml"
    path.write_text(policy)
    return path


@pytest.fixture
def fast_clock_approval(stack, tmp_path):
    """Expiry denies (the code's default; the shipped policy parks)."""
    with service_configured(stack, "approval", APPROVAL_POLICY_FILE=str(fast_clock_policy(tmp_path, "deny")),
                            REVIEW_CLOCK_INTERVAL_SECONDS="0.5"):
        yield


async def test_unanswered_review_is_escalated_then_denied_on_expiry(stack, fast_clock_approval, producer,
                                                                   status_feed, db):
    request = valid_request(amount=90_000, captured=90_000)
    refund_id = refund_of(request)
    async with TopicTail(stack.bootstrap, topics.HELD) as held:
        await publish(producer, request)
        requested = await held.wait_for(lambda e: e["data"]["refund_id"] == refund_id
                                        and e["type"] == "refund.review-requested.v1")
        escalated = await held.wait_for(lambda e: e["data"]["refund_id"] == refund_id
                                        and e["type"] == "refund.review-escalated.v1", timeout=30)
    assert requested["data"]["policy_version"] == "test-fast-clock"
    assert escalated["data"]["due_at"] == requested["data"]["due_at"]

    assert await status_feed.wait_for(lambda: status_feed.status_of(refund_id) == "denied", timeout=60)
    assert "review-expired" in status_feed.latest[refund_id]["reason_codes"]
    trail = await db.fetch("SELECT actor, action FROM approval.audit WHERE refund_id = $1 ORDER BY id", refund_id)
    assert [tuple(row) for row in trail] == [("policy", "opened_review"), ("system", "escalated"),
                                             ("system", "deny")]
    assert await db.fetchval("SELECT count(*) FROM payout.payouts WHERE refund_id = $1", refund_id) == 0
