"""The simulator's API: refund (idempotent by key), lookup by key, and the settlement report.

Faults are chosen per payment, like a real gateway's magic test values
(Stripe's `pm_card_refundFail` and friends): a payment id containing one of
these tokens behaves so on every call, which makes fault tests deterministic.

| token          | behaviour                                                             |
|----------------|-----------------------------------------------------------------------|
| `sim-5xx`      | the first two calls answer 503 before anything is recorded            |
| `sim-down`     | every call answers 503                                                |
| `sim-timeout`  | the first call is recorded (money moves) but the answer never arrives  |
| `sim-async`    | accepted as `pending`; confirmed `succeeded` after `confirm_after`     |
| `sim-reverse`  | succeeds, then is reversed (money back) after `reverse_after`         |
| `sim-decline`  | declined for good: `declined`                                         |
| `sim-expired`  | card refunds declined for good: `expired_or_canceled_card`            |

On top, a share of other payments gets each fault at random but fixed per
payment (`decline_percent`, `transient_percent` -> `sim-5xx`,
`timeout_percent` -> `sim-timeout`, `async_percent` -> `sim-async`,
`reverse_percent` -> `sim-reverse`), and every call takes `latency_ms`.
"""

import asyncio
import hashlib
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import asyncpg

from gatewaysim import reports

MIGRATIONS = Path(__file__).parent / "migrations"
SCHEMA = "gateway_sim"
_REPORT_LOCK = 0x5E771E
TRANSIENT_FAILURES = 2  # how many calls `sim-5xx` answers with 503


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


@dataclass(frozen=True)
class SimFaults:
    """Knobs for the simulator's behaviour (see the module docstring)."""

    decline_percent: int = 2
    transient_percent: int = 0
    timeout_percent: int = 0
    async_percent: int = 0
    reverse_percent: int = 0
    latency_ms: int = 0
    confirm_after: timedelta = timedelta(seconds=2)
    reverse_after: timedelta = timedelta(seconds=2)


@dataclass(frozen=True)
class SettlementLine:
    line_id: int
    gateway_ref: str
    amount_value: int
    currency: str
    fee_value: int
    kind: str = "refund"


def _in_share(payment_id: str, percent: int, fault: str = "") -> bool:
    # Deterministic per payment, so a retry of the same refund gets the same answer.
    digest = hashlib.sha256((fault + payment_id).encode()).digest()
    return int.from_bytes(digest[:2], "big") % 100 < percent


def _has(payment_id: str, fault: str, percent: int) -> bool:
    """The payment carries the fault's token, or falls in its random (fixed per payment) share."""
    return f"sim-{fault}" in payment_id or _in_share(payment_id, percent, fault)


def _first_outcome(payment_id: str, channel: str, faults: SimFaults) -> tuple[str, str | None]:
    if "sim-expired" in payment_id and channel == "card":  # a dead card; a bank transfer still works
        return "failed", "expired_or_canceled_card"
    if "sim-decline" in payment_id or _in_share(payment_id, faults.decline_percent):
        return "failed", "declined"
    if _has(payment_id, "async", faults.async_percent):
        return "pending", None
    return "succeeded", None


class SimGateway:
    """A gateway with its own durable ledger (schema `gateway_sim`)."""

    def __init__(self, pool: asyncpg.Pool, faults: SimFaults = SimFaults()) -> None:
        self.pool = pool
        self.faults = faults

    async def refund(self, idempotency_key: str, payment_id: str, amount_value: int, currency: str,
                     channel: str = "card", settles_as: tuple[int, str] | None = None) -> SimRefund:
        """Refund once per key; a repeated key returns the current outcome, never pays twice.

        `settles_as`: (value, currency) the merchant's balance moves by, when it
        settles in another currency; the report line is written in it.

        Raises GatewayUnavailable (nothing recorded) or GatewayTimeout (recorded, answer lost).
        """
        if self.faults.latency_ms:
            await asyncio.sleep(self.faults.latency_ms / 1000)
        if "sim-down" in payment_id or (_has(payment_id, "5xx", self.faults.transient_percent)
                                        and await self._count_rejection(idempotency_key)):
            raise GatewayUnavailable(503)
        status, reason = _first_outcome(payment_id, channel, self.faults)
        gateway_ref = "simre_" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:24]
        async with self.pool.acquire() as conn, conn.transaction():
            # The simulator stands in for a remote system: its commits need not cost
            # this machine an fsync each (a crash may lose its last few ms, like a gateway outage).
            await conn.execute("SET LOCAL synchronous_commit = off")
            row = await conn.fetchrow(
                "INSERT INTO gateway_sim.refunds (idempotency_key, gateway_ref, payment_id, amount_value, "
                "currency, status, failure_reason, confirm_at, reverse_at, settle_value, settle_currency) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, "
                "  CASE WHEN $6 = 'pending' THEN now() + $8::interval END, "
                "  CASE WHEN $10 AND $6 = 'succeeded' THEN now() + $9::interval END, $11, $12) "
                "ON CONFLICT (idempotency_key) DO UPDATE SET refund_calls = refunds.refund_calls + 1 "
                "RETURNING gateway_ref, status, failure_reason, (xmax = 0) AS inserted",
                idempotency_key, gateway_ref, payment_id, amount_value, currency, status, reason,
                self.faults.confirm_after, self.faults.reverse_after,
                _has(payment_id, "reverse", self.faults.reverse_percent), *(settles_as or (amount_value, currency)))
            if row["inserted"] and row["status"] == "succeeded":
                await self._append_line(conn, row["gateway_ref"], *(settles_as or (amount_value, currency)), "refund")
        if row["inserted"] and _has(payment_id, "timeout", self.faults.timeout_percent):
            raise GatewayTimeout("the refund was recorded but the answer was lost")
        return SimRefund(row["gateway_ref"], row["status"], row["failure_reason"])

    async def lookup(self, idempotency_key: str) -> SimRefund | None:
        """The refund made under this key, as it stands now; None if the gateway never recorded one."""
        await self.advance()
        row = await self.pool.fetchrow(
            "UPDATE gateway_sim.refunds SET lookups = lookups + 1 WHERE idempotency_key = $1 "
            "RETURNING gateway_ref, status, failure_reason", idempotency_key)
        return SimRefund(row["gateway_ref"], row["status"], row["failure_reason"]) if row else None

    async def advance(self) -> None:
        """Let time act: confirm due `pending` refunds, reverse due `sim-reverse` ones."""
        async with self.pool.acquire() as conn, conn.transaction():
            confirmed = await conn.fetch(
                "UPDATE gateway_sim.refunds SET status = 'succeeded' WHERE status = 'pending' "
                "AND confirm_at <= now() RETURNING gateway_ref, settle_value, settle_currency")
            for r in confirmed:
                await self._append_line(conn, r["gateway_ref"], r["settle_value"], r["settle_currency"], "refund")
            reversed_ = await conn.fetch(
                "UPDATE gateway_sim.refunds SET status = 'reversed', failure_reason = 'lost_or_stolen_card', "
                "reversed_at = now() WHERE status = 'succeeded' AND reverse_at <= now() "
                "RETURNING gateway_ref, settle_value, settle_currency")
            for r in reversed_:
                await self._append_line(conn, r["gateway_ref"], r["settle_value"], r["settle_currency"],
                                        "refund_reversal")

    async def reversals(self, gateway_refs: list[str]) -> dict[str, str]:
        """Of these refunds, the ones reversed after success, with the reason."""
        await self.advance()
        rows = await self.pool.fetch(
            "SELECT gateway_ref, failure_reason FROM gateway_sim.refunds WHERE status = 'reversed' "
            "AND gateway_ref = ANY($1)", gateway_refs)
        return {r["gateway_ref"]: r["failure_reason"] for r in rows}

    async def _count_rejection(self, idempotency_key: str) -> bool:
        calls = await self.pool.fetchval(
            "INSERT INTO gateway_sim.rejected_calls VALUES ($1, 1) ON CONFLICT (idempotency_key) "
            "DO UPDATE SET calls = rejected_calls.calls + 1 RETURNING calls", idempotency_key)
        return calls <= TRANSIENT_FAILURES

    async def _append_line(self, conn: asyncpg.Connection, gateway_ref: str, amount_value: int, currency: str,
                           kind: str) -> None:
        # The report is append-only in commit order: serialise appends so a
        # reader's id cursor never skips a line that commits late.
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _REPORT_LOCK)
        await conn.execute(
            "INSERT INTO gateway_sim.settlement_lines (gateway_ref, amount_value, currency, kind) "
            "VALUES ($1, $2, $3, $4)", gateway_ref, amount_value, currency, kind)

    async def settlement_lines(self, after_line_id: int, limit: int = 2000) -> list[SettlementLine]:
        """The settlement report from a cursor on, oldest first."""
        await self.advance()
        rows = await self.pool.fetch(
            "SELECT id, gateway_ref, amount_value, currency, fee_value, kind FROM gateway_sim.settlement_lines "
            "WHERE id > $1 ORDER BY id LIMIT $2", after_line_id, limit)
        return [SettlementLine(r["id"], r["gateway_ref"], r["amount_value"], r["currency"], r["fee_value"],
                               r["kind"]) for r in rows]

    async def settlement_report(self, after_line_id: int, fmt: str, limit: int = 2000) -> tuple[str, int]:
        """The report from a cursor on as a file in a real gateway's layout; and the new cursor."""
        lines = await self.settlement_lines(after_line_id, limit)
        text = reports.render(fmt, lines)
        return text, (lines[-1].line_id if lines else after_line_id)
