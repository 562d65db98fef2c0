"""Scheduled drills: intake sends synthetic refunds that reach reconciled through every real stage,
notify reports the last success, and the customer-facing latency series do not count them."""

import time

import pytest

from tests.integration.helpers import wait_until
from tests.integration.scrape import samples, total
from tests.integration.service_fixtures import service_configured


def intake_completions(stack) -> float:
    return total(stack, "intake", "refund_stage_duration_seconds_count")


@pytest.fixture
def drilling_intake(stack):
    with service_configured(stack, "intake", DRILL_INTERVAL_SECONDS="2"):
        yield


async def test_drills_reach_reconciled_and_stay_out_of_the_kpis(stack, db, drilling_intake):
    started = time.time()
    before = intake_completions(stack)

    async def last_drill_success() -> float:
        values = samples(stack, "notify", "refund_drill_last_success_timestamp_seconds")
        return values[0].value >= started and values[0].value

    await wait_until(last_drill_success, timeout=90, every=1.0)

    # Drills reconciled during this test (the wait saw one): a drill refund another test folded earlier in
    # the session is not intake's.
    drills = await db.fetch("SELECT refund_id, stage FROM notify.stage_watch WHERE drill "
                            "AND reconciled_at >= to_timestamp($1)", started)
    assert drills and all(row["stage"] == "done" for row in drills)
    statuses = await db.fetch("SELECT status, source FROM notify.refund_status WHERE refund_id = ANY($1::text[])",
                              [row["refund_id"] for row in drills])
    assert {(r["status"], r["source"]) for r in statuses} == {("reconciled", "refund-pipeline/drill")}
    # Intake accepted each drill, yet its customer latency series did not move.
    assert await db.fetchval("SELECT count(*) FROM notify.stage_watch WHERE drill") >= len(drills)
    assert intake_completions(stack) == before
    assert total(stack, "intake", "refund_drill_interval_seconds") == 2.0  # what RefundDrillOverdue keys on
