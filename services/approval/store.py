"""Approval's PostgreSQL store (schema `approval`)."""

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import asyncpg

from services.approval.domain import HISTORY_DEPTH, OpenReview, PastRefund, Verdict, customer_key
from shared.runtime import tracing
from shared.contract.events import RefundAccepted
from shared.runtime.roles import Role


@dataclass(frozen=True)
class SeenBefore:
    """What approval already holds of an accepted refund, read before deciding a batch."""

    decided: bool  # decided, parked for people or waiting for its payment: under another event id
    recorded: bool  # in the customer history already
    velocity_since: datetime  # the start of its velocity window, as PostgreSQL reckons the interval


async def seen_before(conn: asyncpg.Connection, refunds: Sequence[RefundAccepted],
                      velocity_window: timedelta | None) -> list[SeenBefore]:
    """One per refund, in order."""
    rows = await conn.fetch(
        "SELECT EXISTS (SELECT 1 FROM approval.decisions d WHERE d.refund_id = r.refund_id) "
        "    OR EXISTS (SELECT 1 FROM approval.reviews v WHERE v.refund_id = r.refund_id) "
        "    OR EXISTS (SELECT 1 FROM approval.verifications w WHERE w.refund_id = r.refund_id) AS decided, "
        "  EXISTS (SELECT 1 FROM approval.customer_refunds c WHERE c.refund_id = r.refund_id) AS recorded, "
        "  r.accepted_at - $3::interval AS velocity_since "
        "FROM unnest($1::text[], $2::timestamptz[]) WITH ORDINALITY AS r(refund_id, accepted_at, n) ORDER BY r.n",
        [refund.refund_id for refund in refunds], [refund.accepted_at for refund in refunds],
        velocity_window or timedelta(0))
    return [SeenBefore(row["decided"], row["recorded"], row["velocity_since"]) for row in rows]


async def latest_customer_refunds(conn: asyncpg.Connection,
                                  customer_keys: Iterable[str]) -> dict[str, list[PastRefund]]:
    """Each customer's latest HISTORY_DEPTH + 1 recorded refunds (domain.customer_histories)."""
    rows = await conn.fetch(
        "SELECT k.customer_key, c.refund_id, c.currency, c.amount_value, c.accepted_at "
        "FROM unnest($1::text[]) AS k(customer_key) CROSS JOIN LATERAL ("
        "  SELECT refund_id, currency, amount_value, accepted_at FROM approval.customer_refunds "
        "  WHERE customer_key = k.customer_key ORDER BY accepted_at DESC LIMIT $2) c",
        sorted(set(customer_keys)), HISTORY_DEPTH + 1)
    latest: dict[str, list[PastRefund]] = {}
    for row in rows:
        latest.setdefault(row["customer_key"], []).append(
            PastRefund(row["refund_id"], row["currency"], row["amount_value"], row["accepted_at"]))
    return latest


async def record_customer_refunds(conn: asyncpg.Connection, refunds: Sequence[RefundAccepted]) -> None:
    """Add the refunds to their customers' histories (a refund recorded before keeps its row)."""
    await conn.execute(
        "INSERT INTO approval.customer_refunds (refund_id, customer_key, currency, amount_value, accepted_at) "
        "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::timestamptz[]) "
        "ON CONFLICT (refund_id) DO NOTHING",
        [r.refund_id for r in refunds], [customer_key(r) for r in refunds], [r.amount.currency for r in refunds],
        [r.amount.value for r in refunds], [r.accepted_at for r in refunds])


async def open_disputes(conn: asyncpg.Connection, payments: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
    """The (gateway, payment id) pairs among `payments` with an open dispute."""
    pairs = sorted(set(payments))
    rows = await conn.fetch(
        "SELECT d.gateway, d.payment_id FROM approval.disputes d "
        "JOIN unnest($1::text[], $2::text[]) AS p(gateway, payment_id) USING (gateway, payment_id) WHERE d.open",
        [gateway for gateway, _ in pairs], [payment_id for _, payment_id in pairs])
    return {(row["gateway"], row["payment_id"]) for row in rows}


async def set_dispute(conn: asyncpg.Connection, gateway: str, payment_id: str, is_open: bool,
                      reason: str, user_id: str) -> None:
    await conn.execute(
        "INSERT INTO approval.disputes (gateway, payment_id, open, reason, updated_by) VALUES ($1, $2, $3, $4, $5) "
        "ON CONFLICT (gateway, payment_id) DO UPDATE SET open = $3, reason = $4, updated_by = $5, updated_at = now()",
        gateway, payment_id, is_open, reason, user_id)


async def lock_review(conn: asyncpg.Connection, refund_id: str) -> tuple[asyncpg.Record, OpenReview] | None:
    row = await conn.fetchrow("SELECT * FROM approval.reviews WHERE refund_id = $1 FOR UPDATE", refund_id)
    if row is None:
        return None
    approvers = await conn.fetchval(
        "SELECT coalesce(array_agg(user_id ORDER BY approved_at), '{}') FROM approval.review_approvals "
        "WHERE refund_id = $1 AND kind = $2", refund_id, row["kind"])
    return row, OpenReview(row["kind"], row["state"], row["required_approvals"], tuple(row["roles"]),
                           tuple(approvers))


async def add_approval(conn: asyncpg.Connection, refund_id: str, kind: str, user_id: str) -> None:
    await conn.execute("INSERT INTO approval.review_approvals (refund_id, kind, user_id) VALUES ($1, $2, $3)",
                       refund_id, kind, user_id)


async def close_review(conn: asyncpg.Connection, refund_id: str, state: str) -> None:
    await conn.execute("UPDATE approval.reviews SET state = $2, closed_at = now() WHERE refund_id = $1",
                       refund_id, state)


_AUDIT = ("INSERT INTO approval.audit (refund_id, actor, roles, action, reason, detail) "
          "VALUES ($1, $2, $3, $4, $5, $6)")


async def audit(conn: asyncpg.Connection, refund_id: str, actor: str, action: str, reason: str,
                roles: list[str] | None = None, detail: dict | None = None) -> None:
    await conn.execute(_AUDIT, refund_id, actor, roles or [], action, reason, detail or {})


async def overdue_reviews(conn: asyncpg.Connection, limit: int = 100) -> list[asyncpg.Record]:
    """Open reviews past their SLA and not yet escalated, locked for this transaction."""
    return await conn.fetch(
        "SELECT * FROM approval.reviews WHERE state = 'open' AND escalated_at IS NULL AND due_at < now() "
        "ORDER BY due_at LIMIT $1 FOR UPDATE SKIP LOCKED", limit)


async def mark_escalated(conn: asyncpg.Connection, refund_id: str) -> None:
    await conn.execute("UPDATE approval.reviews SET escalated_at = now() WHERE refund_id = $1", refund_id)


async def expired_reviews(conn: asyncpg.Connection, limit: int = 100) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT * FROM approval.reviews WHERE state = 'open' AND expires_at < now() "
        "ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED", limit)


_REVIEWS = (
    "SELECT r.*, coalesce((SELECT array_agg(user_id ORDER BY approved_at) FROM approval.review_approvals a "
    "  WHERE a.refund_id = r.refund_id AND a.kind = r.kind), '{}') AS approvers FROM approval.reviews r ")


@dataclass(frozen=True)
class QueueFilter:
    """What the queue is narrowed to (None: any); amounts are minor units of `currency`."""

    state: str = "open"
    kind: str | None = None
    channel: str | None = None
    region: str | None = None
    rule: str | None = None  # one of the review's rule ids / reason codes
    currency: str | None = None
    min_amount: int | None = None
    max_amount: int | None = None


def queue_query(where: QueueFilter, limit: int) -> tuple[str, list]:
    """The queue's SQL and arguments: one state, oldest first. Only the given filters are in the statement,
    so the planner picks the index for them (migration 0006), never a scan of every decided review."""
    clauses, args = ["r.state = $1"], [where.state]
    for value, sql in ((where.kind, "r.kind = {}"), (where.channel, "r.channel = {}"),
                       (where.region, "r.region = {}"), (where.rule, "r.rule_ids @> ARRAY[{}::text]"),
                       (where.currency, "r.currency = {}"), (where.min_amount, "r.amount_value >= {}"),
                       (where.max_amount, "r.amount_value <= {}")):
        if value is not None:
            args.append(value)
            clauses.append(sql.format(f"${len(args)}"))
    args.append(limit)
    return (_REVIEWS + "WHERE " + " AND ".join(clauses) + f" ORDER BY r.opened_at, r.refund_id LIMIT ${len(args)}",
            args)


async def list_reviews(conn: asyncpg.Connection, where: QueueFilter, limit: int) -> list[asyncpg.Record]:
    sql, args = queue_query(where, limit)
    return await conn.fetch(sql, *args)


async def park_expired(conn: asyncpg.Connection, refund_id: str) -> None:
    """Out of the live queue, still waiting in the stage: only a senior reviewer's reopen brings it back."""
    await conn.execute("UPDATE approval.reviews SET state = 'expired', expired_at = now() WHERE refund_id = $1",
                       refund_id)


async def reopen(conn: asyncpg.Connection, refund_id: str, user_id: str, now: datetime, due_at: datetime,
                 expires_at: datetime) -> None:
    """Back in the queue with new deadlines; escalated again if it passes the new SLA. Approvals stand."""
    await conn.execute(
        "UPDATE approval.reviews SET state = 'open', expired_at = NULL, escalated_at = NULL, reopened_at = $2, "
        "reopened_by = $3, due_at = $4, expires_at = $5 WHERE refund_id = $1",
        refund_id, now, user_id, due_at, expires_at)


async def parked_counts(pool: asyncpg.Pool) -> dict[str, int]:
    """Expired (parked) reviews and holds waiting for a senior reviewer, by kind."""
    rows = await pool.fetch("SELECT kind, count(*) AS n FROM approval.reviews WHERE state = 'expired' GROUP BY kind")
    return {row["kind"]: row["n"] for row in rows}


async def review(conn: asyncpg.Connection, refund_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(_REVIEWS + "WHERE refund_id = $1", refund_id)


async def audit_trail(conn: asyncpg.Connection, refund_id: str) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT actor, roles, action, reason, detail, at FROM approval.audit "
                            "WHERE refund_id = $1 ORDER BY id", refund_id)


# Waiting for people (open reviews and holds, and those parked after expiry, due at their SLA) and for a gateway to answer a payment
# read (due at the automatic decision's SLA, $1 seconds after they were parked).
BACKLOG = (
    "SELECT count(*) AS inflight, count(*) FILTER (WHERE due_at < now()) AS overdue, "
    "extract(epoch FROM now() - min(since)) AS oldest_age FROM ("
    "  SELECT opened_at AS since, due_at FROM approval.reviews WHERE state IN ('open', 'expired') "
    "  UNION ALL SELECT created_at, created_at + make_interval(secs => $1) FROM approval.verifications"
    ") waiting")


# ---------------------------------------------------------------- payment verification

@dataclass(frozen=True)
class AwaitingVerification:
    """A decision that takes effect once the refund's payment is verified at its gateway: an approval,
    or (`review` set) the review the policy asked for."""

    refund: RefundAccepted
    policy_version: str
    reason_codes: list[str]
    decided_by: str
    sla_seconds: float | None = None
    acknowledged: frozenset[str] = frozenset()
    on_mismatch: str = "hold"  # or 'deny': nobody is left to release a hold (an expiry approved it)
    review: Verdict | None = None


@dataclass
class Outcomes:
    """What decisions save -- decisions, reviews and holds opened, audit entries, decisions parked for
    payment verification -- written by `save` with one statement per table, however many there are."""

    decisions: list[tuple] = field(default_factory=list)
    reviews: list[tuple] = field(default_factory=list)
    audits: list[tuple] = field(default_factory=list)
    parked: list[tuple] = field(default_factory=list)
    # Set: the decisions parked here are claimed by this process for that long (the verifier is handed
    # them after commit, instead of claiming them with a query of its own); None: parked unclaimed, due now.
    hand_off_lease: float | None = None
    # What `save` parked claimed, as the verifier reads the rows: handed to it once the transaction commits.
    handed: list[dict] = field(default_factory=list)

    def decide(self, refund: RefundAccepted, decision: str, policy_version: str, rule_ids: list[str],
               decided_by: str) -> None:
        """Approved or denied, final."""
        self.decisions.append((refund.refund_id, decision, policy_version, rule_ids, refund.channel.value,
                               refund.accepted_at, decided_by))

    def open_review(self, refund: RefundAccepted, verdict: Verdict, policy_version: str, now: datetime,
                    due_at: datetime, expires_at: datetime, release_codes: list[str] | None = None,
                    acknowledged: frozenset[str] = frozenset()) -> None:
        """Open (or, for a released hold, turn into a review) the refund's row for people to decide.

        `release_codes`: a `payment-mismatch` hold's; releasing it approves with them. `acknowledged`: the
        mismatch codes people released on this refund so far.
        """
        self.reviews.append((
            refund.refund_id, "hold" if verdict.action == "hold" else "review", max(verdict.approvals, 1),
            [str(role) for role in verdict.roles], list(verdict.rule_ids), policy_version,
            refund.model_dump(mode="json"), refund.amount.value, refund.amount.currency, refund.channel.value,
            refund.region, now, due_at, expires_at, release_codes, sorted(acknowledged)))

    def audit(self, refund_id: str, actor: str, action: str, reason: str, detail: dict | None = None) -> None:
        self.audits.append((refund_id, actor, [], action, reason, detail or {}))

    def park(self, parked: AwaitingVerification) -> None:
        """Wait for the verifier to read the refund's payment (a refund parked already stays as it is)."""
        refund, review = parked.refund, parked.review
        self.parked.append((
            refund.refund_id, refund.model_dump(mode="json"), refund.payment.gateway, refund.payment.id,
            parked.policy_version, parked.reason_codes, parked.decided_by, parked.sla_seconds,
            sorted(parked.acknowledged), parked.on_mismatch,
            review and {"approvals": review.approvals, "roles": [str(role) for role in review.roles]},
            tracing.traceparent_for(refund.refund_id),  # tracing: the verifier continues this trace
            uuid.uuid4() if self.hand_off_lease is not None else None))

    async def save(self, conn: asyncpg.Connection) -> None:
        for statement, rows in ((_DECISION, self.decisions), (_REVIEW, self.reviews), (_AUDIT, self.audits)):
            if rows:
                await conn.executemany(statement, rows)
            rows.clear()
        if not self.parked:
            return
        if self.hand_off_lease is None:
            await conn.executemany(_PARK, [row[:-1] for row in self.parked])
        else:
            await conn.executemany(_PARK_CLAIMED, [(*row, self.hand_off_lease) for row in self.parked])
            # A row that met one parked before (ON CONFLICT) keeps that one's claim: settling this copy
            # finds nothing to take, and the other is settled as it would have been.
            self.handed += [{**dict(zip(_PARKED_COLUMNS, row, strict=True)), "attempts": 0} for row in self.parked]
        self.parked.clear()


_DECISION = (
    "INSERT INTO approval.decisions (refund_id, decision, policy_version, rule_ids, channel, accepted_at, "
    "decided_by) VALUES ($1, $2, $3, $4, $5, $6, $7)")
_REVIEW = (
    "INSERT INTO approval.reviews (refund_id, kind, state, required_approvals, roles, rule_ids, policy_version, "
    "refund, amount_value, currency, channel, region, opened_at, due_at, expires_at, release_codes, acknowledged) "
    "VALUES ($1, $2, 'open', $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) "
    "ON CONFLICT (refund_id) DO UPDATE SET kind = EXCLUDED.kind, state = 'open', "
    "required_approvals = EXCLUDED.required_approvals, roles = EXCLUDED.roles, rule_ids = EXCLUDED.rule_ids, "
    "opened_at = EXCLUDED.opened_at, due_at = EXCLUDED.due_at, expires_at = EXCLUDED.expires_at, "
    "escalated_at = NULL, closed_at = NULL, expired_at = NULL, release_codes = EXCLUDED.release_codes, "
    "acknowledged = EXCLUDED.acknowledged")
_PARKED_COLUMNS = ("refund_id", "refund", "gateway", "payment_id", "policy_version", "reason_codes", "decided_by",
                   "sla_seconds", "acknowledged", "on_mismatch", "review", "traceparent", "claim")
_PARK = (
    "INSERT INTO approval.verifications (refund_id, refund, gateway, payment_id, policy_version, reason_codes, "
    "decided_by, sla_seconds, acknowledged, on_mismatch, review, traceparent) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT (refund_id) DO NOTHING")
# Parked and claimed at once, due again (to any round) only once the claim's lease has run out.
_PARK_CLAIMED = (
    "INSERT INTO approval.verifications (refund_id, refund, gateway, payment_id, policy_version, reason_codes, "
    "decided_by, sla_seconds, acknowledged, on_mismatch, review, traceparent, claim, next_check_at) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, now() + make_interval(secs => $14)) "
    "ON CONFLICT (refund_id) DO NOTHING")


def awaiting_verification(row: asyncpg.Record) -> AwaitingVerification:
    review = row["review"] and Verdict("review", tuple(row["reason_codes"]), row["review"]["approvals"],
                                       tuple(Role(role) for role in row["review"]["roles"]))
    return AwaitingVerification(RefundAccepted.model_validate(row["refund"]), row["policy_version"],
                                list(row["reason_codes"]), row["decided_by"], row["sla_seconds"],
                                frozenset(row["acknowledged"]), row["on_mismatch"], review)


async def claim_verifications(pool: asyncpg.Pool, limit: int, lease_seconds: float, gateway: str | None,
                              routed: list[str]) -> list[asyncpg.Record]:
    """Due rows of one gateway (None: of gateways not in `routed`), held by a fresh claim until the lease ends
    (then another round may take them)."""
    return await pool.fetch(
        "UPDATE approval.verifications SET claim = $3, next_check_at = now() + make_interval(secs => $2) "
        "WHERE refund_id IN (SELECT refund_id FROM approval.verifications WHERE next_check_at <= now() "
        "  AND (gateway = $4 OR ($4::text IS NULL AND gateway <> ALL($5::text[]))) "
        "  ORDER BY next_check_at LIMIT $1 FOR UPDATE SKIP LOCKED) RETURNING *",
        limit, lease_seconds, uuid.uuid4(), gateway, routed)


async def release_claims(pool: asyncpg.Pool, rows: list[Mapping]) -> None:
    """The rows due again at once, for any round, where their claim still holds them."""
    await pool.execute(
        "UPDATE approval.verifications v SET claim = NULL, next_check_at = now() "
        "FROM unnest($1::text[], $2::uuid[]) AS c(refund_id, claim) WHERE v.refund_id = c.refund_id "
        "AND v.claim = c.claim", [row["refund_id"] for row in rows], [row["claim"] for row in rows])


async def take_verified(conn: asyncpg.Connection, rows: list[asyncpg.Record]) -> set[str]:
    """Remove rows still held by their claim; the refund ids removed (others were settled elsewhere)."""
    taken = await conn.fetch(
        "DELETE FROM approval.verifications v USING unnest($1::text[], $2::uuid[]) AS c(refund_id, claim) "
        "WHERE v.refund_id = c.refund_id AND v.claim = c.claim RETURNING v.refund_id",
        [row["refund_id"] for row in rows], [row["claim"] for row in rows])
    return {row["refund_id"] for row in taken}


async def ask_again(conn: asyncpg.Connection, rows: list[tuple[asyncpg.Record, float, str]]) -> None:
    """Unanswered reads: (row, seconds until the next read, why), for rows still held by their claim."""
    await conn.execute(
        "UPDATE approval.verifications v SET attempts = v.attempts + 1, last_error = a.error, claim = NULL, "
        "next_check_at = now() + make_interval(secs => a.delay) "
        "FROM unnest($1::text[], $2::uuid[], $3::float8[], $4::text[]) AS a(refund_id, claim, delay, error) "
        "WHERE v.refund_id = a.refund_id AND v.claim = a.claim",
        [row["refund_id"] for row, _, _ in rows], [row["claim"] for row, _, _ in rows],
        [delay for _, delay, _ in rows], [error for _, _, error in rows])


async def verification(conn: asyncpg.Connection, refund_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT gateway, payment_id, attempts, last_error, created_at, next_check_at FROM approval.verifications "
        "WHERE refund_id = $1", refund_id)
