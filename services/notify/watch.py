"""Stuck-stage watch: which stage each refund is in, and per stage how many are past their deadline.

Notify sees every lifecycle event, so its view of the pipeline survives a stage's
own service being down (whose gauges vanish with it). The deadlines are the
ticket's, stamped by intake from deploy/sla.yaml (per channel/region).
"""

from datetime import UTC, datetime

import asyncpg
import structlog
from prometheus_client import Gauge, Histogram

from shared.metrics import StageBacklog, set_backlog
from shared.stage import Inbound

log = structlog.get_logger()

# Only notify sees a drill reach reconciled, so only notify exports this (0 until one has).
DRILL_LAST_SUCCESS = Gauge(
    "refund_drill_last_success_timestamp_seconds", "When the last drill refund was reconciled (Unix time)")
_DAY = 86400
TIME_TO_FUNDS = Histogram(
    "refund_time_to_funds_seconds", "From the accepted request to the money at the customer (gateway ETA), drills excluded",
    ["channel"], buckets=(3600, 6 * 3600, 12 * 3600, _DAY, 2 * _DAY, 3 * _DAY, 5 * _DAY, 7 * _DAY, 10 * _DAY, 14 * _DAY))

WATCHED = ("approval", "payout", "reconcile")
DONE = "done"
# The stage a refund is in after each event; a later stage never moves back.
STAGE_AFTER = {
    "refund.accepted.v1": "approval",
    "refund.held.v1": "approval",
    "refund.review-requested.v1": "approval",
    "refund.approved.v1": "payout",
    "refund.payout-submitted.v1": "payout",
    "refund.paid.v1": "reconcile",
    "refund.reconciled.v1": DONE,
    "refund.discrepancy.v1": DONE,
    "refund.denied.v1": DONE,
    "refund.rejected.v1": DONE,
    "refund.payout-failed.v1": DONE,
}
RANK = {"approval": 1, "payout": 2, "reconcile": 3, DONE: 4}

_TRACK = (
    "INSERT INTO notify.stage_watch (refund_id, stage, stage_rank, entered_at, deadlines, drill, reconciled_at, "
    "accepted_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (refund_id) DO UPDATE SET "
    "stage = CASE WHEN EXCLUDED.stage_rank > stage_watch.stage_rank THEN EXCLUDED.stage ELSE stage_watch.stage END, "
    "entered_at = CASE WHEN EXCLUDED.stage_rank > stage_watch.stage_rank "
    "  THEN EXCLUDED.entered_at ELSE stage_watch.entered_at END, "
    "stage_rank = GREATEST(stage_watch.stage_rank, EXCLUDED.stage_rank), "
    "deadlines = COALESCE(stage_watch.deadlines, EXCLUDED.deadlines), "
    "drill = stage_watch.drill OR EXCLUDED.drill, "
    "reconciled_at = COALESCE(stage_watch.reconciled_at, EXCLUDED.reconciled_at), "
    "accepted_at = COALESCE(stage_watch.accepted_at, EXCLUDED.accepted_at) "
    "RETURNING accepted_at, drill"
)
_BACKLOG = (
    "SELECT stage, count(*) AS inflight, "
    "count(*) FILTER (WHERE (deadlines ->> stage)::timestamptz < now()) AS overdue, "
    "extract(epoch FROM now() - min(entered_at)) AS oldest_age "
    "FROM notify.stage_watch WHERE stage <> 'done' GROUP BY stage"
)
_LAST_DRILL = "SELECT extract(epoch FROM max(reconciled_at)) AS at FROM notify.stage_watch WHERE drill"


async def track(conn: asyncpg.Connection, item: Inbound) -> None:
    """Move the refund to the stage this event puts it in (idempotent, never backwards)."""
    event_type = item.event.get_type()
    data = item.event.get_data()
    stage = STAGE_AFTER.get(event_type)
    if stage is None or not isinstance(data, dict) or not data.get("refund_id"):
        return
    now = datetime.now(UTC)
    row = await conn.fetchrow(_TRACK, data["refund_id"], stage, RANK[stage], now, data.get("deadlines"),
                              bool(data.get("drill")), now if event_type == "refund.reconciled.v1" else None,
                              _timestamp(data.get("accepted_at")))
    if event_type == "refund.paid.v1" and row["accepted_at"] and data.get("eta") and not row["drill"]:
        # KPI time to funds: from the accepted request to when the customer has the money (the gateway's ETA).
        TIME_TO_FUNDS.labels(data.get("channel") or "unknown").observe(
            max((_timestamp(data["eta"]) - row["accepted_at"]).total_seconds(), 0.0))


def _timestamp(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


async def read_backlogs(pool: asyncpg.Pool) -> dict[str, StageBacklog]:
    rows = {row["stage"]: row for row in await pool.fetch(_BACKLOG)}
    return {stage: StageBacklog(row["inflight"], row["overdue"], float(row["oldest_age"] or 0.0))
            if (row := rows.get(stage)) else StageBacklog(0, 0, 0.0) for stage in WATCHED}


async def sweep(pool: asyncpg.Pool) -> None:
    """Refresh every watched stage's gauges and the last drill success from the projection."""
    for stage, backlog in (await read_backlogs(pool)).items():
        set_backlog(stage, backlog)
    last = await pool.fetchval(_LAST_DRILL)
    if last is not None:
        DRILL_LAST_SUCCESS.set(float(last))
