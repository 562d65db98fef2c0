"""The scheduled drill: a synthetic refund sent through every stage, as operators rehearse off-peak.

Every DRILL_INTERVAL_SECONDS (0 = off) within DRILL_OFF_PEAK_HOURS_UTC, intake puts a
drill request on refunds.requested through its own outbox; from there it takes the real
path (approval, payout at the simulator, reconcile against the simulator's settlement
report). Stages leave drills out of their latency/KPI series, notify sends no customer
message for them, and notify exports refund_drill_last_success_timestamp_seconds.
"""

import asyncio
import uuid
from datetime import UTC, datetime

import structlog
from prometheus_client import Gauge

from services.intake import domain
from shared.contract.envelope import encode
from shared.runtime.stage import Stage

log = structlog.get_logger()

# 0 when drills are off, so RefundDrillOverdue only pages where drills are meant to run.
DRILL_INTERVAL = Gauge("refund_drill_interval_seconds", "Seconds between scheduled drill refunds (0 = drills off)")


async def send_drill(stage: Stage, payment: domain.DrillPayment) -> str:
    request = domain.drill_request(uuid.uuid4().hex[:16], datetime.now(UTC), payment)
    outgoing = encode(request, source=domain.DRILL_SOURCE, key=request.request_id)
    async with stage.unit_of_work() as uow:
        uow.emit(outgoing)
    log.info("drill_sent", request_id=request.request_id)
    return request.request_id


async def drill_forever(stage: Stage, interval: float, off_peak_hours_utc: list[int],
                        payment: domain.DrillPayment) -> None:
    DRILL_INTERVAL.set(interval)
    while True:
        await asyncio.sleep(interval)
        if domain.drill_due(datetime.now(UTC), off_peak_hours_utc):
            try:
                await send_drill(stage, payment)
            except Exception:
                log.exception("drill_failed")
