"""KPI series move with real traffic: time to funds (notify, at payout) and rejections by reason (intake)."""

import httpx

from tests.integration.helpers import publish, refund_of, valid_request, wait_until
from tests.integration.scrape import total


async def test_a_paid_refund_adds_time_to_funds_and_a_rejection_counts_by_reason(stack, producer, status_feed):
    funds_before = total(stack, "notify", "refund_time_to_funds_seconds_count", channel="card")
    invalid_before = total(stack, "intake", "refund_rejections_total", stage="intake", reason="invalid")
    missing_before = total(stack, "intake", "refund_rejections_total", stage="intake", reason="missing")

    good = valid_request()
    bad = valid_request(region="XX")
    await publish(producer, good)
    await publish(producer, bad)

    assert await status_feed.wait_for(lambda: status_feed.status_of(refund_of(good)) == "reconciled", timeout=60)

    async def counted() -> bool:
        return (total(stack, "notify", "refund_time_to_funds_seconds_count", channel="card") == funds_before + 1
                and total(stack, "intake", "refund_rejections_total", stage="intake", reason="invalid")
                == invalid_before + 1)

    await wait_until(counted, timeout=30, every=0.5)
    assert total(stack, "intake", "refund_rejections_total", stage="intake", reason="missing") == missing_before
    # The refund's ETA lies days ahead of its acceptance: the observation is in a day-scale bucket.
    assert total(stack, "notify", "refund_time_to_funds_seconds_bucket", channel="card", le="3600.0") == 0


async def test_tracking_look_ups_count_first_and_repeat_inquiries(stack, producer, status_feed):
    request = valid_request()
    await publish(producer, request)
    assert await status_feed.wait_for(lambda: status_feed.status_of(refund_of(request)) is not None, timeout=60)
    first = total(stack, "notify", "refund_tracking_lookups_total", kind="first")
    repeat = total(stack, "notify", "refund_tracking_lookups_total", kind="repeat")

    async with httpx.AsyncClient(base_url=stack.service_url("notify"), timeout=10) as client:
        for _ in range(3):
            assert (await client.get(f"/v1/refunds/{refund_of(request)}")).status_code == 200
        assert (await client.get("/v1/refunds/no-such-refund")).status_code == 404

    assert total(stack, "notify", "refund_tracking_lookups_total", kind="first") == first + 1
    assert total(stack, "notify", "refund_tracking_lookups_total", kind="repeat") == repeat + 2
