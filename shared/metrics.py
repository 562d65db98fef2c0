"""The contract's stage metrics (SPEC.md "SLAs and metrics"), one set per service."""

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
from prometheus_client import Counter, Gauge, Histogram

log = structlog.get_logger()

# Buckets around stage SLAs from sub-second automation up to a day of review.
_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)

STAGE_DURATION = Histogram(
    "refund_stage_duration_seconds", "Time a refund spent in a stage, by outcome",
    ["stage", "outcome", "channel"], buckets=_BUCKETS,
)
STAGE_INFLIGHT = Gauge("refund_stage_inflight", "Refunds currently in the stage", ["stage"])
STAGE_OVERDUE = Gauge("refund_stage_overdue", "Refunds in the stage past their SLA deadline", ["stage"])
STAGE_OLDEST_AGE = Gauge(
    "refund_stage_oldest_age_seconds", "Age of the oldest refund still in the stage", ["stage"])
STAGE_SLA_BREACHES = Counter(
    "refund_stage_sla_breaches_total", "Refunds that left the stage after its SLA deadline", ["stage", "channel"])
MESSAGES_DEAD_LETTERED = Counter(
    "refund_messages_dead_lettered_total", "Records sent to refunds.dlq", ["stage"])


@dataclass(frozen=True)
class StageBacklog:
    """What the periodic sweep reads from a stage's own store."""

    inflight: int
    overdue: int
    oldest_age_seconds: float


def observe_completion(stage: str, outcome: str, channel: str, seconds: float, overdue: bool) -> None:
    STAGE_DURATION.labels(stage, outcome, channel).observe(max(seconds, 0.0))
    if overdue:
        STAGE_SLA_BREACHES.labels(stage, channel).inc()


def backlog_query(table: str, since: str, open_rows: str) -> str:
    """SQL for a stage's backlog: rows matching `open_rows`, aged from column `since`; $1 = SLA seconds."""
    return (
        "SELECT count(*) AS inflight, "
        f"count(*) FILTER (WHERE {since} < now() - make_interval(secs => $1)) AS overdue, "
        f"extract(epoch FROM now() - min({since})) AS oldest_age FROM {table} WHERE {open_rows}"
    )


async def read_backlog(pool, query: str, sla_seconds: float) -> StageBacklog:
    """Run a `backlog_query` against the stage's own store."""
    row = await pool.fetchrow(query, sla_seconds)
    return StageBacklog(row["inflight"], row["overdue"], float(row["oldest_age"] or 0.0))


async def sweep_forever(stage: str, read: Callable[[], Awaitable[StageBacklog]], interval: float) -> None:
    """Refresh the gauges from the store, so a stuck stage shows even when nothing completes."""
    while True:
        try:
            backlog = await read()
            STAGE_INFLIGHT.labels(stage).set(backlog.inflight)
            STAGE_OVERDUE.labels(stage).set(backlog.overdue)
            STAGE_OLDEST_AGE.labels(stage).set(backlog.oldest_age_seconds)
        except Exception:
            log.exception("stage_sweep_failed", stage=stage)
        await asyncio.sleep(interval)
