"""The simulator's API: refund (idempotent by key) and the settlement report."""

import hashlib
from dataclasses import dataclass
from pathlib import Path

import asyncpg

MIGRATIONS = Path(__file__).parent / "migrations"
SCHEMA = "gateway_sim"
_REPORT_LOCK = 0x5E771E


@dataclass(frozen=True)
class SimRefund:
    gateway_ref: str
    status: str  # succeeded | failed
    failure_reason: str | None


@dataclass(frozen=True)
class SettlementLine:
    line_id: int
    gateway_ref: str
    amount_value: int
    currency: str
    fee_value: int


def _declines(payment_id: str, decline_percent: int) -> bool:
    # Deterministic per payment, so a retry of the same refund gets the same answer.
    digest = hashlib.sha256(payment_id.encode()).digest()
    return int.from_bytes(digest[:2], "big") % 100 < decline_percent


class SimGateway:
    """A gateway with its own durable ledger; `decline_percent` of payments are declined."""

    def __init__(self, pool: asyncpg.Pool, decline_percent: int = 2) -> None:
        self.pool = pool
        self.decline_percent = decline_percent

    async def refund(self, idempotency_key: str, payment_id: str, amount_value: int, currency: str) -> SimRefund:
        """Refund once per key; a repeated key returns the first outcome, never pays twice."""
        declined = _declines(payment_id, self.decline_percent)
        gateway_ref = "simre_" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:24]
        async with self.pool.acquire() as conn, conn.transaction():
            # The simulator stands in for a remote system: its commits need not cost
            # this machine an fsync each (a crash may lose its last few ms, like a gateway outage).
            await conn.execute("SET LOCAL synchronous_commit = off")
            row = await conn.fetchrow(
                "INSERT INTO gateway_sim.refunds (idempotency_key, gateway_ref, payment_id, amount_value, "
                "currency, status, failure_reason) VALUES ($1, $2, $3, $4, $5, $6, $7) "
                "ON CONFLICT (idempotency_key) DO UPDATE SET idempotency_key = EXCLUDED.idempotency_key "
                "RETURNING gateway_ref, status, failure_reason, (xmax = 0) AS inserted",
                idempotency_key, gateway_ref, payment_id, amount_value, currency,
                "failed" if declined else "succeeded", "card_declined" if declined else None)
            if row["inserted"] and row["status"] == "succeeded":
                # The report is append-only in commit order: serialise appends so a
                # reader's id cursor never skips a line that commits late.
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _REPORT_LOCK)
                await conn.execute(
                    "INSERT INTO gateway_sim.settlement_lines (gateway_ref, amount_value, currency) "
                    "VALUES ($1, $2, $3)", row["gateway_ref"], amount_value, currency)
        return SimRefund(row["gateway_ref"], row["status"], row["failure_reason"])

    async def settlement_lines(self, after_line_id: int, limit: int = 2000) -> list[SettlementLine]:
        """The settlement report from a cursor on, oldest first."""
        rows = await self.pool.fetch(
            "SELECT id, gateway_ref, amount_value, currency, fee_value FROM gateway_sim.settlement_lines "
            "WHERE id > $1 ORDER BY id LIMIT $2", after_line_id, limit)
        return [SettlementLine(r["id"], r["gateway_ref"], r["amount_value"], r["currency"], r["fee_value"])
                for r in rows]
