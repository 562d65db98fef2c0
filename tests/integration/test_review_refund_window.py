"""A refund whose refund window cannot be checked waits for a person, through the real stack."""

import httpx
import pytest

from shared.runtime.roles import Role
from tests.integration.helpers import publish, refund_of, staff_auth, valid_request

pytestmark = pytest.mark.integration


async def test_a_card_refund_without_a_capture_time_goes_to_review(stack, producer, status_feed):
    request = valid_request()
    del request["payment"]["captured_at"]
    refund_id = refund_of(request)
    await publish(producer, request)
    assert await status_feed.wait_for(lambda: status_feed.status_of(refund_id) is not None
                                      and status_feed.status_of(refund_id) != "accepted", timeout=60)
    assert status_feed.status_of(refund_id) == "pending_review"
    assert "refund-window-card:captured_at_unknown" in status_feed.latest[refund_id]["reason_codes"]

    async with httpx.AsyncClient(base_url=stack.service_url("approval"), timeout=30) as approval:
        review = await approval.get(f"/v1/reviews/{refund_id}", headers=staff_auth("rita", Role.REVIEWER))
    assert review.status_code == 200, review.text
    assert "refund-window-card:captured_at_unknown" in review.json()["rule_ids"]
