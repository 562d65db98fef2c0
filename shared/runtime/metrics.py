"""The contract's stage metrics (SPEC.md "SLAs and metrics"), one set per service."""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
from prometheus_client import Counter, Gauge, Histogram

from shared.runtime.periodic import every

log = structlog.get_logger()

_HOUR, _DAY = 3600, 86400
# Buckets with an edge at every SLA threshold of deploy/sla.yaml and the services' settings
# (30s intake, 60s automatic approval, 15m notify, 2h/4h review and wallet payout, 1d/2d/3d/5d
# payout and reconcile), so "within SLA" is an exact bucket count; finer below a minute.
_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 1800, _HOUR, 2 * _HOUR, 4 * _HOUR,
            8 * _HOUR, _DAY, 2 * _DAY, 3 * _DAY, 5 * _DAY)

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
SLA_BUDGET = Gauge(
    "refund_stage_sla_seconds", "The configured SLA budget of a stage (deploy/sla.yaml); channel/region 'any' = default",
    ["stage", "channel", "region"])
REJECTIONS = Counter(
    "refund_rejections_total", "Refunds turned down, by stage and reason code (intake rejections, denials)",
    ["stage", "reason"])
MESSAGES_DEAD_LETTERED = Counter(
    "refund_messages_dead_lettered_total",
    "Records sent to refunds.dlq, by stage and reason (unreadable, invalid_envelope, or the processing error's type)",
    ["stage", "reason"])


@dataclass(frozen=True)
class StageBacklog:
    """What the periodic sweep reads from a stage's own store."""

    inflight: int
    overdue: int
    oldest_age_seconds: float


def observe_completion(stage: str, outcome: str, channel: str, seconds: float, overdue: bool,
                       drill: bool = False) -> None:
    """A refund left the stage. Drills are left out: the latency, SLO and KPI series are customers' only."""
    if drill:
        return
    STAGE_DURATION.labels(stage, outcome, channel).observe(max(seconds, 0.0))
    if overdue:
        STAGE_SLA_BREACHES.labels(stage, channel).inc()


def count_rejections(stage: str, reasons: list[str], drill: bool = False) -> None:
    if not drill:
        for reason in sorted(set(reasons)) or ["unspecified"]:
            REJECTIONS.labels(stage, reason).inc()


def backlog_query(table: str, since: str, open_rows: str) -> str:
    """SQL for a stage's backlog: rows matching `open_rows`, aged from column `since`; $1 = SLA seconds."""
    return (
        "SELECT count(*) AS inflight, "
        f"count(*) FILTER (WHERE {since} < now() - make_interval(secs => $1)) AS overdue, "
        f"extract(epoch FROM now() - min({since})) AS oldest_age FROM {table} WHERE {open_rows}"
    )


async def read_backlog(pool, query: str, *args: object) -> StageBacklog:
    """Run a backlog query (e.g. a `backlog_query`, $1 = SLA seconds) against the stage's own store."""
    row = await pool.fetchrow(query, *args)
    return StageBacklog(row["inflight"], row["overdue"], float(row["oldest_age"] or 0.0))


def set_backlog(stage: str, backlog: StageBacklog) -> None:
    STAGE_INFLIGHT.labels(stage).set(backlog.inflight)
    STAGE_OVERDUE.labels(stage).set(backlog.overdue)
    STAGE_OLDEST_AGE.labels(stage).set(backlog.oldest_age_seconds)


async def sweep_forever(stage: str, read: Callable[[], Awaitable[StageBacklog]], interval: float) -> None:
    """Refresh the gauges from the store, so a stuck stage shows even when nothing completes."""

    async def sweep() -> None:
        set_backlog(stage, await read())

    await every(interval, sweep, name=f"{stage}_stage_sweep")
