"""The repeat-inquiry KPI: tracking look-ups per refund, counted by whether they are a refund's first.

Look-ups per refund = all look-ups / first look-ups; every repeat is a customer asking again.
Drills (operators checking a rehearsal) are not counted.
"""

import asyncpg
from prometheus_client import Counter

TRACKING_LOOKUPS = Counter(
    "refund_tracking_lookups_total", "Status look-ups of existing refunds: kind=first or repeat", ["kind"])

_RECORD = (
    "INSERT INTO notify.tracking_lookups (refund_id, lookups, first_at, last_at) VALUES ($1, 1, now(), now()) "
    "ON CONFLICT (refund_id) DO UPDATE SET lookups = tracking_lookups.lookups + 1, last_at = now() "
    "RETURNING lookups, (SELECT drill FROM notify.stage_watch w WHERE w.refund_id = $1) AS drill"
)


async def record_lookup(pool: asyncpg.Pool, refund_id: str) -> int:
    """Count a look-up of an existing refund; returns how many it has had."""
    row = await pool.fetchrow(_RECORD, refund_id)
    if not row["drill"]:
        TRACKING_LOOKUPS.labels("first" if row["lookups"] == 1 else "repeat").inc()
    return row["lookups"]
