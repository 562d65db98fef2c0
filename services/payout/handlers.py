"""Payout: record the intent when a refund is approved, execute it at the gateway after.

Consuming only writes the intent (and `payout-submitted`); the executor loop
claims intents, calls the gateway with the refund's idempotency key, and
records the outcome with `paid` or `payout-failed` in one transaction.
"""

import asyncio
from datetime import UTC, datetime

import asyncpg
import structlog

from services.payout.gateway import Gateway, GatewayResult
from shared.envelope import Outgoing, encode
from shared.events import PayoutFailed, PayoutSubmitted, RefundApproved, RefundPaid
from shared.metrics import observe_completion
from shared.stage import Inbound, Stage

SOURCE = "refund-pipeline/payout"
log = structlog.get_logger()


async def record_intent(conn: asyncpg.Connection, item: Inbound) -> list[Outgoing]:
    refund = RefundApproved.model_validate(item.event.get_data())
    payout_id = "po_" + refund.refund_id.removeprefix("rf_")
    inserted = await conn.execute(
        "INSERT INTO payout.payouts (refund_id, payout_id, idempotency_key, status, gateway, payment_id, "
        "amount_value, currency, channel, refund, approved_at) "
        "VALUES ($1, $2, $1, 'pending', $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (refund_id) DO NOTHING",
        refund.refund_id, payout_id, refund.payment.gateway, refund.payment.id, refund.amount.value,
        refund.amount.currency, refund.channel.value, refund.model_dump(mode="json"), refund.approved_at)
    if inserted.endswith("0"):
        return []
    submitted = PayoutSubmitted(**_ref_fields(refund), gateway=refund.payment.gateway, payout_id=payout_id,
                                submitted_at=datetime.now(UTC))
    return [encode(submitted, source=SOURCE, key=refund.refund_id)]


def _ref_fields(refund: RefundApproved) -> dict:
    return {name: getattr(refund, name) for name in
            ("refund_id", "request_id", "source", "order_id", "amount", "channel", "region", "drill")}


class PayoutExecutor:
    """Claims intents and executes them; re-claims ones a crash left `submitting`."""

    def __init__(self, stage: Stage, gateway: Gateway, *, reclaim_after_seconds: float,
                 sla_seconds: float, concurrency: int = 32) -> None:
        self.stage = stage
        self.gateway = gateway
        self.reclaim_after_seconds = reclaim_after_seconds
        self.sla_seconds = sla_seconds
        self.limit = asyncio.Semaphore(concurrency)

    async def run_forever(self) -> None:
        while True:
            try:
                if not await self.run_once():
                    self.stage.committed.clear()
                    try:
                        await asyncio.wait_for(self.stage.committed.wait(), timeout=1.0)
                    except TimeoutError:
                        pass
            except Exception:
                log.exception("payout_executor_failed")
                await asyncio.sleep(1.0)

    async def run_once(self, batch: int = 200) -> int:
        claimed = await self.stage.pool.fetch(
            "UPDATE payout.payouts SET status = 'submitting', attempts = attempts + 1, claimed_at = now() "
            "WHERE refund_id IN (SELECT refund_id FROM payout.payouts "
            "  WHERE status = 'pending' OR (status = 'submitting' AND claimed_at < now() - make_interval(secs => $1)) "
            "  ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING *",
            self.reclaim_after_seconds, batch)
        if not claimed:
            return 0
        results = await asyncio.gather(*(self._execute(row) for row in claimed))
        async with self.stage.pool.acquire() as conn, conn.transaction():
            outgoing = [await self._record(conn, row, result) for row, result in zip(claimed, results, strict=True)]
            pending = await self.stage.publish(conn, outgoing)
        await self.stage.flush(pending)
        return len(claimed)

    async def _execute(self, row: asyncpg.Record) -> GatewayResult:
        async with self.limit:
            return await self.gateway.refund(row["idempotency_key"], row["payment_id"],
                                             row["amount_value"], row["currency"])

    async def _record(self, conn: asyncpg.Connection, row: asyncpg.Record, result: GatewayResult) -> Outgoing:
        now = datetime.now(UTC)
        await conn.execute(
            "UPDATE payout.payouts SET status = $2, gateway_ref = $3, failure_reason = $4, finished_at = $5 "
            "WHERE refund_id = $1", row["refund_id"], "succeeded" if result.succeeded else "failed",
            result.gateway_ref, result.failure_reason, now)
        refund = RefundApproved.model_validate(row["refund"])
        took = (now - row["approved_at"]).total_seconds()
        observe_completion("payout", "succeeded" if result.succeeded else "failed", row["channel"],
                           took, overdue=took > self.sla_seconds)
        common = dict(_ref_fields(refund), gateway=row["gateway"], payout_id=row["payout_id"])
        if result.succeeded:
            payload = RefundPaid(**common, gateway_ref=result.gateway_ref, paid_at=now)
        else:
            log.info("payout_failed", refund_id=row["refund_id"], reason=result.failure_reason)
            payload = PayoutFailed(**common, failure_reason=result.failure_reason or "unknown",
                                   reason_codes=[result.failure_reason or "unknown"], failed_at=now)
        return encode(payload, source=SOURCE, key=row["refund_id"])
