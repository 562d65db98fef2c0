"""The in-process simulator: refund (idempotent by key), lookup by key, and the settlement report.

Kept for the pipeline until it reaches the simulator over HTTP (gatewaysim/main.py);
both write the same ledger (gatewaysim/ledger.py). This one works on one
account (default `sim`), lets time act when it is read (`advance`), and
sends no webhooks. Faults: gatewaysim/faults.py.
"""

import asyncio
import hashlib
from dataclasses import dataclass

import asyncpg

from gatewaysim import ledger, reports
from gatewaysim.faults import TRANSIENT_FAILURES, SimFaults, answer_lost, unavailable
# The names the pipeline's tests import from here.
from gatewaysim.faults import first_outcome as _first_outcome, has as _has, in_share as _in_share
from gatewaysim.ledger import MIGRATIONS, SCHEMA, SettlementLine

__all__ = ["MIGRATIONS", "SCHEMA", "TRANSIENT_FAILURES", "GatewayTimeout", "GatewayUnavailable", "SettlementLine",
           "SimFaults", "SimGateway", "SimRefund", "_first_outcome", "_has", "_in_share"]


class GatewayUnavailable(Exception):
    """HTTP 5xx: nothing was recorded; the call may be retried."""

    def __init__(self, status: int = 503) -> None:
        super().__init__(f"gateway answered {status}")
        self.status = status


class GatewayTimeout(Exception):
    """No answer in time: the gateway may or may not have recorded the refund."""


@dataclass(frozen=True)
class SimRefund:
    gateway_ref: str
    status: str  # pending | succeeded | failed | reversed
    failure_reason: str | None


def _refund(row: asyncpg.Record) -> SimRefund:
    return SimRefund(row["gateway_ref"], row["status"], row["failure_reason"])


class SimGateway:
    """A gateway with its own durable ledger (schema `gateway_sim`), called in process."""

    def __init__(self, pool: asyncpg.Pool, faults: SimFaults = SimFaults(), account: str = "sim") -> None:
        self.pool = pool
        self.faults = faults
        self.account = account

    def _gateway_ref(self, idempotency_key: str) -> str:
        scoped = idempotency_key if self.account == "sim" else f"{self.account}:{idempotency_key}"
        return "simre_" + hashlib.sha256(scoped.encode()).hexdigest()[:24]

    async def refund(self, idempotency_key: str, payment_id: str, amount_value: int, currency: str,
                     channel: str = "card", settles_as: tuple[int, str] | None = None) -> SimRefund:
        """Refund once per key; a repeated key returns the current outcome, never pays twice.

        `settles_as`: (value, currency) the merchant's balance moves by, when it
        settles in another currency; the report line is written in it.

        Raises GatewayUnavailable (nothing recorded) or GatewayTimeout (recorded, answer lost).
        """
        if self.faults.latency_ms:
            await asyncio.sleep(self.faults.latency_ms / 1000)
        down, transient = unavailable(payment_id, self.faults)
        if down or (transient and await ledger.count_rejection(self.pool, self.account, idempotency_key)):
            raise GatewayUnavailable(503)
        settle_value, settle_currency = settles_as or (amount_value, currency)
        new = ledger.NewRefund(self.account, idempotency_key, self._gateway_ref(idempotency_key), payment_id,
                               amount_value, currency, settle_value, settle_currency, channel)
        async with self.pool.acquire() as conn, conn.transaction():
            row = await ledger.record_refund(conn, new, self.faults)
        if row["inserted"] and answer_lost(payment_id, self.faults):
            raise GatewayTimeout("the refund was recorded but the answer was lost")
        return _refund(row)

    async def lookup(self, idempotency_key: str) -> SimRefund | None:
        """The refund made under this key, as it stands now; None if the gateway never recorded one."""
        await self.advance()
        row = await self.pool.fetchrow(
            "UPDATE gateway_sim.refunds SET lookups = lookups + 1 WHERE account = $1 AND idempotency_key = $2 "
            "RETURNING gateway_ref, status, failure_reason", self.account, idempotency_key)
        return _refund(row) if row else None

    async def advance(self) -> None:
        """Let time act: confirm due `pending` refunds, reverse due `sim-reverse` ones."""
        async with self.pool.acquire() as conn, conn.transaction():
            await ledger.advance(conn, [self.account])

    async def reversals(self, gateway_refs: list[str]) -> dict[str, str]:
        """Of these refunds, the ones reversed after success, with the reason."""
        await self.advance()
        rows = await self.pool.fetch(
            "SELECT gateway_ref, failure_reason FROM gateway_sim.refunds WHERE account = $1 AND status = 'reversed' "
            "AND gateway_ref = ANY($2)", self.account, gateway_refs)
        return {r["gateway_ref"]: r["failure_reason"] for r in rows}

    async def settlement_lines(self, after_line_id: int, limit: int = 2000) -> list[SettlementLine]:
        """The settlement report from a cursor on, oldest first."""
        await self.advance()
        return await ledger.lines_after(self.pool, self.account, after_line_id, limit)

    async def settlement_report(self, after_line_id: int, fmt: str, limit: int = 2000) -> tuple[str, int]:
        """The report from a cursor on as a file in a real gateway's layout; and the new cursor."""
        lines = await self.settlement_lines(after_line_id, limit)
        text = reports.render(fmt, lines)
        return text, (lines[-1].line_id if lines else after_line_id)
