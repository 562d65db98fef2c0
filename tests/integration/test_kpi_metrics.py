"""KPI series move with real traffic: time to funds (notify), rejections and dead letters by reason."""

from shared.contract import topics
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



async def test_dead_letters_count_by_stage_and_reason(stack, producer):
    before = total(stack, "approval", "refund_messages_dead_lettered_total", stage="approval", reason="unreadable")
    await producer.send_and_wait(topics.ACCEPTED, b"\x00\xff{not json", key=b"poison")

    async def counted() -> bool:
        return total(stack, "approval", "refund_messages_dead_lettered_total",
                     stage="approval", reason="unreadable") == before + 1

    await wait_until(counted, timeout=30, every=0.5)
