"""Notify's status projection on the real PostgreSQL: a status update writes no index entry (a HOT
update) until the refund is done, so no index may key on a column that changes with every event."""

import uuid
from dataclasses import replace
from datetime import UTC, datetime

from services.notify import store
from services.notify.domain import StatusRow
from shared.contract.events import Status
from tests.integration.helpers import rolled_back

# This transaction's own counts for the table: exact at once (the cumulative statistics are not).
_COUNTS = ("SELECT pg_stat_get_xact_tuples_updated('notify.refund_status'::regclass) AS updated, "
           "pg_stat_get_xact_tuples_hot_updated('notify.refund_status'::regclass) AS hot")


async def test_status_updates_are_hot_until_the_refund_is_done(stack):
    now = datetime.now(UTC)
    refund_id = f"rf_hot{uuid.uuid4().hex}"
    row = StatusRow(refund_id, status=Status.ACCEPTED, request_id=f"req-{refund_id}", source="shop-test",
                    order_id=f"ord-{refund_id}", amount={"value": 1250, "currency": "EUR"}, channel="card",
                    timeline={"accepted": now.isoformat()}, updated_at=now, customer={"id": "cus-hot"},
                    stage="approval", stage_rank=1, entered_at=now, accepted_at=now, sequence=1)
    async with rolled_back(stack.dsn) as conn:
        assert await store.save_statuses(conn, [row], locked=[]) == {refund_id}
        for status, stage, rank in ((Status.APPROVED, "payout", 2), (Status.SUCCEEDED, "reconcile", 3)):
            row = replace(row, status=status, stage=stage, stage_rank=rank, entered_at=now,
                          timeline={**row.timeline, status.value: now.isoformat()}, sequence=row.sequence + 1)
            assert await store.save_statuses(conn, [row], locked=[refund_id]) == {refund_id}
        assert dict(await conn.fetchrow(_COUNTS)) == {"updated": 2, "hot": 2}
        assert await conn.fetchval("SELECT open FROM notify.refund_status WHERE refund_id = $1", refund_id) is True

        # Done: `open` flips, so the row leaves the open-stage index (the one update that is not HOT).
        row = replace(row, status=Status.RECONCILED, stage="done", stage_rank=4,
                      timeline={**row.timeline, "reconciled": now.isoformat()}, sequence=row.sequence + 1)
        await store.save_statuses(conn, [row], locked=[refund_id])
        assert dict(await conn.fetchrow(_COUNTS)) == {"updated": 3, "hot": 2}
        assert await conn.fetchval("SELECT count(*) FROM notify.refund_status WHERE open AND refund_id = $1",
                                   refund_id) == 0
