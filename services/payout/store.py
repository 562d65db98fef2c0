"""Payout's intents, and the claims on them: a claim holds its rows for a lease, and only the holder writes them.

Intents are recorded a consumed batch at a time (`record_intents`: one INSERT, a refund's
first intent stands); the FX rates they need are read with one query (`latest_fx_rates`).

A claim stamps its rows `submitting` with its own token and `claimed_at`; a row
whose lease (`claimed_at` + `lease_seconds`) has run out may be claimed again by
any worker. Renewing and writing match on the token and an unexpired lease, so a
worker that lost its rows cannot change them, whatever it still has in memory.
"""

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import asyncpg

from services.payout.domain import FxQuote
from shared.runtime.db import array_params

# The rows a claim still holds (alias `p`; $1 the claim's token, $2 its lease in seconds).
_HELD = ("p.claim_token = $1 AND p.status = 'submitting' "
         "AND p.claimed_at > now() - make_interval(secs => $2)")


@dataclass(frozen=True)
class Claim:
    """Due intents one worker took under one token, each held for `lease_seconds` from its last renewal."""

    token: uuid.UUID
    lease_seconds: float
    rows: list[asyncpg.Record]

    @property
    def refund_ids(self) -> list[str]:
        return [row["refund_id"] for row in self.rows]


@dataclass(frozen=True)
class PayoutWrite:
    """The state one attempt leaves its row in: every column an outcome may change."""

    refund_id: str
    status: str
    channel: str
    routed_from: str | None
    idempotency_key: str
    attempts: int
    error_attempts: int
    last_error: str | None
    # When an open row is due again; None leaves `next_attempt_at`; WEBHOOK_ONLY: never by the clock, only a
    # webhook moves it (a gateway that cannot be asked).
    retry_in_seconds: float | None
    gateway_ref: str | None
    failure_reason: str | None
    finished_at: datetime | None
    eta: datetime | None
    recovered_by_lookup: bool
    reversed_at: datetime | None

    @classmethod
    def unchanged(cls, row: asyncpg.Record) -> "PayoutWrite":
        """The row as claimed; an outcome replaces what it changes."""
        return cls(**{name: row[name] for name in _COLUMNS if name != "retry_in_seconds"}, retry_in_seconds=None)


# PayoutWrite's fields with their types, in the order `write_outcomes` unnests them.
_COLUMNS = {"refund_id": "text", "status": "text", "channel": "text", "routed_from": "text",
            "idempotency_key": "text", "attempts": "int", "error_attempts": "int", "last_error": "text",
            "retry_in_seconds": "float8", "gateway_ref": "text", "failure_reason": "text",
            "finished_at": "timestamptz", "eta": "timestamptz", "recovered_by_lookup": "bool",
            "reversed_at": "timestamptz"}
WEBHOOK_ONLY = float("inf")


@dataclass(frozen=True)
class Intent:
    """A payout intent as recorded for an approved refund: `pending`, due now, keyed by its refund."""

    refund_id: str
    payout_id: str
    gateway: str
    payment_id: str
    amount_value: int
    currency: str
    channel: str
    refund: dict
    approved_at: datetime
    eta: datetime
    # In the merchant's settlement currency, when it is not the refund's (Nones otherwise; a missing rate
    # leaves only the currency).
    settlement_value: int | None
    settlement_currency: str | None
    fx_rate: Decimal | None
    fx_source: str | None
    # The trace the approval came in, continued by the executor's gateway call (shared/runtime tracing).
    traceparent: str | None = None


_INTENT_COLUMNS = {"refund_id": "text", "payout_id": "text", "gateway": "text", "payment_id": "text",
                   "amount_value": "bigint", "currency": "text", "channel": "text", "refund": "jsonb",
                   "approved_at": "timestamptz", "eta": "timestamptz", "settlement_value": "bigint",
                   "settlement_currency": "text", "fx_rate": "numeric", "fx_source": "text", "traceparent": "text"}
_UNNESTED_INTENTS = (
    f"FROM unnest({array_params(_INTENT_COLUMNS.values())}) "
    f"AS i({', '.join(_INTENT_COLUMNS)}) ON CONFLICT (refund_id) DO NOTHING ")
_RECORD_INTENTS = (
    f"INSERT INTO payout.payouts (idempotency_key, status, {', '.join(_INTENT_COLUMNS)}) "
    f"SELECT i.refund_id, 'pending', i.* {_UNNESTED_INTENTS} RETURNING refund_id")
# The same, recorded as claimed by the recording process (as `claim_due` leaves a row, attempt 1), the
# whole row returned as `claim_due` returns it.
_RECORD_INTENTS_CLAIMED = (
    f"INSERT INTO payout.payouts (idempotency_key, status, attempts, claimed_at, claim_token, "
    f"  {', '.join(_INTENT_COLUMNS)}) "
    f"SELECT i.refund_id, 'submitting', 1, now(), ${len(_INTENT_COLUMNS) + 1}::uuid, i.* {_UNNESTED_INTENTS} "
    "RETURNING *")


async def record_intents(conn: asyncpg.Connection, intents: Sequence[Intent]) -> set[str]:
    """Record the intents in one statement; return the refunds recorded now (the rest had one already).

    The idempotency key is the refund's: a redelivered approval can never make a second payout.
    """
    if not intents:
        return set()
    rows = await conn.fetch(_RECORD_INTENTS, *([getattr(i, name) for i in intents] for name in _INTENT_COLUMNS))
    return {row["refund_id"] for row in rows}


async def record_intents_claimed(conn: asyncpg.Connection, intents: Sequence[Intent], lease_seconds: float) -> Claim:
    """`record_intents`, the rows recorded now claimed for this process under one new token (no claim
    query needed to pay them); its transaction's commit makes the claim real."""
    token = uuid.uuid4()
    rows = await conn.fetch(_RECORD_INTENTS_CLAIMED, *([getattr(i, name) for i in intents] for name in _INTENT_COLUMNS),
                            token) if intents else []
    return Claim(token, lease_seconds, rows)


async def release(pool: asyncpg.Pool, claim: Claim) -> None:
    """Give back claimed rows no gateway was called for (the process is stopping): due again at once,
    for any worker, as if never claimed (so their next attempt is a first call, not a look-up)."""
    await pool.execute(
        "UPDATE payout.payouts p SET status = 'pending', attempts = attempts - 1, claim_token = NULL, "
        f"  next_attempt_at = now() WHERE p.refund_id = ANY($3) AND {_HELD}",
        claim.token, claim.lease_seconds, claim.refund_ids)


async def latest_fx_rates(conn: asyncpg.Connection, pairs: Iterable[tuple[str, str]]
                          ) -> dict[tuple[str, str], FxQuote]:
    """The newest recorded rate of each (base, quote) pair, in one query; a pair with none is left out."""
    pairs = sorted(set(pairs))
    if not pairs:
        return {}
    rows = await conn.fetch(
        "SELECT DISTINCT ON (r.base, r.quote) r.base, r.quote, r.rate, r.source, r.as_of "
        "FROM payout.fx_rates r JOIN unnest($1::text[], $2::text[]) AS p(base, quote) "
        "  ON r.base = p.base AND r.quote = p.quote "
        "ORDER BY r.base, r.quote, r.as_of DESC", [b for b, _ in pairs], [q for _, q in pairs])
    return {(r["base"], r["quote"]): FxQuote(r["base"], r["quote"], r["rate"], r["source"], r["as_of"])
            for r in rows}


def _update(first_param: int, guard: str) -> str:
    """One UPDATE writing every unnested PayoutWrite to its row where `guard` holds."""
    return (
        "UPDATE payout.payouts p SET status = w.status, channel = w.channel, routed_from = w.routed_from, "
        "idempotency_key = w.idempotency_key, attempts = w.attempts, error_attempts = w.error_attempts, "
        "last_error = w.last_error, "
        "next_attempt_at = CASE WHEN w.retry_in_seconds = 'Infinity' THEN 'infinity' "
        "  ELSE coalesce(now() + make_interval(secs => w.retry_in_seconds), p.next_attempt_at) END, "
        "gateway_ref = w.gateway_ref, failure_reason = w.failure_reason, finished_at = w.finished_at, eta = w.eta, "
        "recovered_by_lookup = w.recovered_by_lookup, reversed_at = w.reversed_at, updated_at = now() "
        f"FROM unnest({array_params(_COLUMNS.values(), first_param)}) "
        f"AS w({', '.join(_COLUMNS)}) "
        f"WHERE p.refund_id = w.refund_id AND {guard} RETURNING p.refund_id")


_WRITE_OUTCOMES = _update(3, _HELD)
# Rows no claim holds, locked by the caller's transaction (webhook outcomes): a claimed row is never written.
_WRITE_UNCLAIMED = _update(1, "p.status <> 'submitting'")


async def claim_due(pool: asyncpg.Pool, limit: int, lease_seconds: float) -> Claim:
    """Take up to `limit` due intents, and `submitting` ones whose lease ran out (their holder died or stalled)."""
    token = uuid.uuid4()
    rows = await pool.fetch(
        "UPDATE payout.payouts SET status = 'submitting', attempts = attempts + 1, claimed_at = now(), "
        "claim_token = $3 "
        "WHERE refund_id IN (SELECT refund_id FROM payout.payouts "
        "  WHERE (status IN ('pending', 'confirming') AND next_attempt_at <= now()) "
        "     OR (status = 'submitting' AND claimed_at < now() - make_interval(secs => $1)) "
        "  ORDER BY next_attempt_at LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING *",
        lease_seconds, limit, token)
    return Claim(token, lease_seconds, rows)


async def renew(pool: asyncpg.Pool, claim: Claim) -> set[str]:
    """Restart the lease of the claim's rows it still holds; return those (the others are lost to it)."""
    rows = await pool.fetch(
        f"UPDATE payout.payouts p SET claimed_at = now() WHERE p.refund_id = ANY($3) AND {_HELD} "
        "RETURNING p.refund_id", claim.token, claim.lease_seconds, claim.refund_ids)
    return {row["refund_id"] for row in rows}


async def write_outcomes(conn: asyncpg.Connection, claim: Claim, writes: Sequence[PayoutWrite]) -> set[str]:
    """Write each row's outcome if the claim still holds it, in one statement; return the refunds written.

    The statement cannot fail for one row (every value is a decided status or a
    copied column), so one outcome never costs the others theirs.
    """
    if not writes:
        return set()
    rows = await conn.fetch(_WRITE_OUTCOMES, claim.token, claim.lease_seconds, *_columns(writes))
    return {row["refund_id"] for row in rows}


def _columns(writes: Sequence[PayoutWrite]) -> list[list]:
    return [[getattr(write, name) for write in writes] for name in _COLUMNS]


async def write_unclaimed(conn: asyncpg.Connection, writes: Sequence[PayoutWrite]) -> set[str]:
    """Write outcomes of rows `conn`'s transaction has locked and no claim holds; return the refunds written."""
    if not writes:
        return set()
    return {row["refund_id"] for row in await conn.fetch(_WRITE_UNCLAIMED, *_columns(writes))}


async def record_events(conn: asyncpg.Connection, gateway: str, events: Sequence) -> list[asyncpg.Record]:
    """Record the gateway's events under their ids, each with the payout it names; return the new ones."""
    if not events:
        return []
    return await conn.fetch(
        "INSERT INTO payout.gateway_events (gateway, event_id, refund_id, refund_key, gateway_ref, status, "
        "  failure_reason) "
        "SELECT $1, e.event_id, p.refund_id, e.refund_key, e.gateway_ref, e.status, e.failure_reason "
        "FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[]) WITH ORDINALITY "
        "  AS e(event_id, refund_key, gateway_ref, status, failure_reason, n) "
        "LEFT JOIN payout.payouts p ON p.gateway = $1 AND p.idempotency_key = e.refund_key "
        "ORDER BY e.n ON CONFLICT (gateway, event_id) DO NOTHING RETURNING *",
        gateway, *([getattr(event, name) for event in events]
                   for name in ("event_id", "refund_key", "gateway_ref", "status", "failure_reason")))


async def unclaimed_with_waiting_events(conn: asyncpg.Connection, refund_ids: Sequence[str]
                                        ) -> tuple[list[asyncpg.Record], list[asyncpg.Record]]:
    """Of these payouts, the ones no claim holds, locked for this transaction, and their unapplied events in
    the order they came. A `submitting` row's events keep waiting for its claim's write."""
    # Lock every named row, whatever its status, and only then leave out the claimed ones: a filter in the
    # WHERE would skip a row whose claim's write is not yet committed (it still reads `submitting`) without
    # waiting for it, and the event would be left waiting by both sides.
    locked = await conn.fetch(
        "SELECT * FROM payout.payouts WHERE refund_id = ANY($1) ORDER BY refund_id FOR UPDATE", list(refund_ids))
    rows = [row for row in locked if row["status"] != "submitting"]
    if not rows:
        return [], []
    events = await conn.fetch(
        "SELECT * FROM payout.gateway_events WHERE refund_id = ANY($1) AND applied_at IS NULL ORDER BY seq "
        "FOR UPDATE", [row["refund_id"] for row in rows])
    return rows, events


async def mark_applied(conn: asyncpg.Connection, applied: Sequence[tuple[str, str, str]]) -> None:
    """(gateway, event_id, effect) of the events just applied, in the transaction that applied them."""
    if applied:
        await conn.execute(
            "UPDATE payout.gateway_events g SET applied_at = now(), effect = a.effect "
            "FROM unnest($1::text[], $2::text[], $3::text[]) AS a(gateway, event_id, effect) "
            "WHERE g.gateway = a.gateway AND g.event_id = a.event_id",
            *map(list, zip(*applied, strict=True)))
