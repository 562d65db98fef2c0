"""Reconcile: record what was paid; ingest the settlement report; match the two."""

import asyncio
from datetime import UTC, datetime

import asyncpg
import structlog

from gatewaysim.gateway import SimGateway
from services.reconcile import domain
from shared.envelope import Outgoing, encode
from shared.events import RefundDiscrepancy, RefundPaid, RefundReconciled
from shared.metrics import observe_completion
from shared.money import Money
from shared.stage import Inbound, Stage

SOURCE = "refund-pipeline/reconcile"
log = structlog.get_logger()


async def record_paid(conn: asyncpg.Connection, item: Inbound) -> list[Outgoing]:
    paid = RefundPaid.model_validate(item.event.get_data())
    await conn.execute(
        "INSERT INTO reconcile.payouts (refund_id, gateway, gateway_ref, amount_value, currency, channel, "
        "refund, paid_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (refund_id) DO NOTHING",
        paid.refund_id, paid.gateway, paid.gateway_ref, paid.amount.value, paid.amount.currency,
        paid.channel.value, paid.model_dump(mode="json"), paid.paid_at)
    return []  # the matcher publishes once the settlement line is there


class Matcher:
    """Reads the gateway's settlement report from a cursor and matches awaiting payouts."""

    def __init__(self, stage: Stage, report: SimGateway, gateway: str, sla_seconds: float) -> None:
        self.stage = stage
        self.report = report
        self.gateway = gateway
        self.sla_seconds = sla_seconds

    async def run_forever(self) -> None:
        while True:
            try:
                self.stage.committed.clear()
                busy = await self.ingest() + await self.match_awaiting()
                if not busy:
                    try:
                        await asyncio.wait_for(self.stage.committed.wait(), timeout=0.5)
                    except TimeoutError:
                        pass
            except Exception:
                log.exception("reconcile_matcher_failed")
                await asyncio.sleep(1.0)

    async def ingest(self) -> int:
        cursor = await self.stage.pool.fetchval(
            "SELECT last_line_id FROM reconcile.report_cursors WHERE gateway = $1", self.gateway) or 0
        lines = await self.report.settlement_lines(cursor)
        if not lines:
            return 0
        async with self.stage.pool.acquire() as conn, conn.transaction():
            await conn.executemany(
                "INSERT INTO reconcile.settlement_lines (gateway, line_id, gateway_ref, amount_value, currency, "
                "fee_value) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                [(self.gateway, l.line_id, l.gateway_ref, l.amount_value, l.currency, l.fee_value) for l in lines])
            await conn.execute(
                "INSERT INTO reconcile.report_cursors (gateway, last_line_id) VALUES ($1, $2) "
                "ON CONFLICT (gateway) DO UPDATE SET last_line_id = GREATEST(report_cursors.last_line_id, $2)",
                self.gateway, lines[-1].line_id)
        return len(lines)

    async def match_awaiting(self, batch: int = 1000) -> int:
        async with self.stage.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "SELECT p.*, s.amount_value AS settled_value, s.currency AS settled_currency "
                "FROM reconcile.payouts p JOIN reconcile.settlement_lines s ON s.gateway_ref = p.gateway_ref "
                "WHERE p.state = 'awaiting' ORDER BY p.paid_at LIMIT $1 FOR UPDATE OF p SKIP LOCKED", batch)
            outgoing = [await self._settle(conn, row) for row in rows]
            pending = await self.stage.publish(conn, outgoing)
        await self.stage.flush(pending)
        return len(rows)

    async def _settle(self, conn: asyncpg.Connection, row: asyncpg.Record) -> Outgoing:
        result = domain.match(row["amount_value"], row["currency"], row["settled_value"], row["settled_currency"])
        now = datetime.now(UTC)
        await conn.execute(
            "UPDATE reconcile.payouts SET state = $2, category = $3, settled_at = $4 WHERE refund_id = $1",
            row["refund_id"], result.state, result.category, now)
        paid = RefundPaid.model_validate(row["refund"])
        took = (now - row["paid_at"]).total_seconds()
        observe_completion("reconcile", result.state, row["channel"], took, overdue=took > self.sla_seconds)
        common = paid.model_dump(include={"refund_id", "request_id", "source", "order_id", "amount", "channel",
                                          "region", "drill", "gateway_ref"})
        settled = Money(value=row["settled_value"], currency=row["settled_currency"])
        if result.state == "matched":
            payload = RefundReconciled(**common, settled_amount=settled, reconciled_at=now)
        else:
            payload = RefundDiscrepancy(**common, category=result.category, settled_amount=settled,
                                        reason_codes=[result.category], detected_at=now)
        return encode(payload, source=SOURCE, key=row["refund_id"])
