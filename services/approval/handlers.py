"""Approval's steps: decide accepted refunds, apply reviewers' decisions, escalate and expire waits.

Consuming never waits for people nor for gateways: a refund needing review is
parked in `approval.reviews`, an approval waiting for its payment to be verified
in `approval.verifications`, and the batch moves on, so refunds behind them on
the same partition flow. The reviewer's decision and the verifier's outcome later
publish through the same outbox.
"""

import collections
import math
from dataclasses import replace
from datetime import UTC, datetime

import asyncpg
import structlog
from prometheus_client import Counter, Gauge

from services.approval import domain, store
from services.approval.payments import GatewayPayments
from services.approval.policy import Policy, Waiting
from shared.contract.envelope import Outgoing, encode
from shared.contract.events import (
    RefundAccepted, RefundApproved, RefundDenied, RefundHeld, RefundReviewEscalated, RefundReviewReopened,
    RefundReviewRequested,
)
from shared.runtime.metrics import count_rejections, observe_completion
from shared.runtime.stage import Inbound, Stage
from shared.runtime.staff import StaffUser

SOURCE = "refund-pipeline/approval"
SYSTEM = "system"
log = structlog.get_logger()


PAYMENT_CHECKS = Counter(
    "refund_approval_payment_checks_total",
    "Payments read at their gateway before an approval, by result: matched, released (disagrees only as a "
    "person released), mismatch, unknown (404), unanswered (asked again later), unrouted (left to payout)",
    ["gateway", "outcome"])
PARKED = Gauge(
    "refund_approval_reviews_expired",
    "Reviews and holds that expired unanswered under `on_expiry: park`, waiting for a senior reviewer to reopen "
    "them (from a periodic count of approval's store; every replica reports the same number)", ["kind"])


class ApprovalStep:
    """The consume step: a batch of accepted refunds -> each approved (once verified), denied,
    pending_review or on_hold. A constant number of statements per batch: what approval holds of the
    refunds, their customers' histories and their payments' disputes are read once; each refund is
    decided in memory, in consumption order; the outcomes are written set-based."""

    def __init__(self, decisions: "Decisions", sla_seconds: float) -> None:
        self.decisions = decisions
        self.policy = decisions.policy
        self.sla_seconds = sla_seconds

    async def __call__(self, conn: asyncpg.Connection, items: list[Inbound]) -> list[Outgoing]:
        refunds: list[RefundAccepted] = [item.data for item in items]
        velocity = self.policy.risk.velocity
        window = velocity.window if velocity else None
        seen = await store.seen_before(conn, refunds, window)
        # A refund decided (or parked) before under another event id, or twice in this batch, is done.
        fresh = domain.first_sightings([refund.refund_id for refund in refunds],
                                       {r.refund_id for r, s in zip(refunds, seen, strict=True) if s.decided})
        if not fresh:
            return []
        batch = [refunds[n] for n in fresh]
        recorded = await store.latest_customer_refunds(conn, map(domain.customer_key, batch))
        histories = domain.customer_histories(
            batch, [seen[n].velocity_since if window else None for n in fresh], recorded,
            {refunds[n].refund_id for n in fresh if seen[n].recorded})
        disputed = await store.open_disputes(conn, [(r.payment.gateway, r.payment.id) for r in batch])
        outcomes = store.Outcomes(hand_off_lease=self.decisions.hand_off_lease)
        outgoing: list[Outgoing] = []
        for refund, history in zip(batch, histories, strict=True):
            dispute_open = (refund.payment.gateway, refund.payment.id) in disputed
            verdict = domain.decide(self.policy, refund, history, dispute_open)
            outgoing += self.decisions.apply(outcomes, refund, verdict, decided_by="policy",
                                             sla_seconds=self.sla_seconds)
        await store.record_customer_refunds(conn, batch)
        await outcomes.save(conn)
        self.decisions.keep_handed(outcomes)
        return outgoing


class Decisions:
    """How a verdict takes effect. An approval, whoever gives it, and a review the policy asks for wait
    until the refund's payment is verified at its gateway (services/approval/verification.py), so nobody
    reviews and nothing is approved against a payment the gateway disagrees with; only a gateway
    without a route is left to payout."""

    def __init__(self, policy: Policy, payments: GatewayPayments, *, hand_off_lease: float | None = None) -> None:
        self.policy = policy
        self.payments = payments
        # Gateways something was parked for unclaimed since the verifier last looked: after a commit it
        # wakes only their rounds (waking every gateway's cost a claim query per round per batch).
        self.parked_gateways: set[str] = set()
        # The consume step parks its decisions claimed by this process for `hand_off_lease` seconds
        # (None: unclaimed, for a round to claim) and, once its transaction has committed, hands them to
        # the verifier in memory (`handed`, per gateway): no claim query per batch. A crash leaves them
        # to any round once the lease has run out.
        self.hand_off_lease = hand_off_lease
        self._handing: list[dict] = []  # parked by the consume step's transaction in progress
        self.handed: dict[str, collections.deque[dict]] = collections.defaultdict(collections.deque)

    def keep_handed(self, outcomes: store.Outcomes) -> None:
        self._handing += outcomes.handed

    def hand_over(self) -> None:
        """The consume step's transaction committed: what it parked is the verifier's now."""
        for row in self._handing:
            self.handed[row["gateway"]].append(row)
        self._handing = []

    def drop_handing(self) -> None:
        """The consume step's transaction rolled back: what it parked was never stored."""
        self._handing = []

    def apply(self, outcomes: store.Outcomes, refund: RefundAccepted, verdict: domain.Verdict, *,
              decided_by: str, sla_seconds: float | None = None,
              acknowledged: frozenset[str] = frozenset()) -> list[Outgoing]:
        """Record a verdict: an approval or review once the payment is verified, a denial, or a hold."""
        if verdict.action in ("approve", "review"):
            return self.after_verification(outcomes, store.AwaitingVerification(
                refund, self.policy.version, list(verdict.rule_ids), decided_by, sla_seconds, acknowledged,
                review=verdict if verdict.action == "review" else None))
        if verdict.action == "deny":
            return [record_decision(outcomes, self.policy.version, refund, "deny", list(verdict.rule_ids),
                                    decided_by=decided_by, sla_seconds=sla_seconds)]
        return [self.open_waiting(outcomes, refund, verdict, decided_by=decided_by, acknowledged=acknowledged)]

    def after_verification(self, outcomes: store.Outcomes, awaiting: store.AwaitingVerification) -> list[Outgoing]:
        """Park the decision until the verifier has read the payment; nothing is published yet."""
        refund = awaiting.refund
        if not self.payments.reaches(refund.payment.gateway):
            # Nothing to verify against: payout never pays an unrouted gateway (`gateway_not_configured`).
            PAYMENT_CHECKS.labels("-", "unrouted").inc()
            return [self.take_effect(outcomes, awaiting)]
        outcomes.park(awaiting)
        if outcomes.hand_off_lease is None:
            self.parked_gateways.add(refund.payment.gateway)
        log.debug("decision_awaits_payment_verification", refund_id=refund.refund_id,
                 gateway=refund.payment.gateway, decided_by=awaiting.decided_by,
                 then="review" if awaiting.review else "approve")
        return []

    def take_effect(self, outcomes: store.Outcomes, awaiting: store.AwaitingVerification, *,
                    released: bool = False) -> Outgoing:
        """The payment agrees (`released`: only in ways people released), or it cannot be verified."""
        codes = awaiting.reason_codes
        if released and domain.PAYMENT_MISMATCH_RELEASED not in codes:
            codes = codes + [domain.PAYMENT_MISMATCH_RELEASED]
        if awaiting.review:
            return self.open_waiting(outcomes, awaiting.refund, replace(awaiting.review, rule_ids=tuple(codes)),
                                     decided_by=awaiting.decided_by, policy_version=awaiting.policy_version,
                                     acknowledged=awaiting.acknowledged)
        return record_decision(outcomes, awaiting.policy_version, awaiting.refund, "approve", codes,
                               decided_by=awaiting.decided_by, sla_seconds=awaiting.sla_seconds)

    def hold_mismatch(self, outcomes: store.Outcomes, awaiting: store.AwaitingVerification,
                      mismatch: tuple[str, ...], detail: dict) -> Outgoing:
        """The gateway's payment disagrees: `on_hold` until a person releases or denies it. Released, an
        approval goes ahead and a review opens, each verified again: only what that person saw no longer
        holds it."""
        verdict = domain.Verdict("hold", mismatch, roles=tuple(self.policy.risk.release_roles))
        return self.open_waiting(outcomes, awaiting.refund, verdict, decided_by=SYSTEM,
                                 policy_version=awaiting.policy_version,
                                 release_codes=None if awaiting.review else awaiting.reason_codes,
                                 acknowledged=awaiting.acknowledged,
                                 why="the gateway's payment disagrees with the refund", detail=detail)

    def open_waiting(self, outcomes: store.Outcomes, refund: RefundAccepted, verdict: domain.Verdict, *,
                     decided_by: str, policy_version: str | None = None,
                     release_codes: list[str] | None = None, acknowledged: frozenset[str] = frozenset(),
                     why: str = "policy", detail: dict | None = None) -> Outgoing:
        """Park a refund for people: a review, or a hold; and build its event."""
        now = datetime.now(UTC)
        version = policy_version or self.policy.version
        waiting = self.policy.hold if verdict.action == "hold" else self.policy.review
        due_at, expires_at = now + waiting.sla, now + waiting.expire_after
        outcomes.open_review(refund, verdict, version, now, due_at, expires_at, release_codes, acknowledged)
        kind = "hold" if verdict.action == "hold" else "review"
        outcomes.audit(refund.refund_id, decided_by, f"opened_{kind}", why,
                       detail={"rule_ids": list(verdict.rule_ids), "policy_version": version, **(detail or {})})
        log.info("refund_parked", refund_id=refund.refund_id, kind=verdict.action, rule_ids=verdict.rule_ids)
        common = carried(refund, list(verdict.rule_ids))
        if verdict.action == "hold":
            payload = RefundHeld(**common, held_at=now, due_at=due_at)
        else:
            payload = RefundReviewRequested(**common, policy_version=version,
                                            required_approvals=verdict.approvals, review_requested_at=now,
                                            due_at=due_at)
        return encode(payload, source=SOURCE, key=refund.refund_id)


def carried(refund: RefundAccepted, reason_codes: list[str]) -> dict:
    """The accepted refund's fields, carried onto the next event with this step's reason codes."""
    return dict(refund.model_dump(exclude={"reason_codes"}), reason_codes=reason_codes)


def record_decision(outcomes: store.Outcomes, policy_version: str, refund: RefundAccepted, decision: str,
                    reason_codes: list[str], *, decided_by: str, sla_seconds: float | None) -> Outgoing:
    """Approved or denied, final: stored once with the policy version and rules, then published.

    Only `Decisions.take_effect` approves through here: once the payment is verified, or unroutable."""
    now = datetime.now(UTC)
    outcome = "approved" if decision == "approve" else "denied"
    outcomes.decide(refund, outcome, policy_version, reason_codes, decided_by)
    waited = (now - refund.accepted_at).total_seconds()
    observe_completion("approval", outcome, refund.channel.value, waited,
                       overdue=sla_seconds is not None and waited > sla_seconds, drill=refund.drill)
    if outcome == "denied":
        count_rejections("approval", domain.counted_codes(reason_codes), drill=refund.drill)
    common = carried(refund, reason_codes)
    if outcome == "approved":
        payload = RefundApproved(**common, policy_version=policy_version, approved_at=now)
    else:
        payload = RefundDenied(**common, policy_version=policy_version, denied_at=now)
    return encode(payload, source=SOURCE, key=refund.refund_id)


class ReviewDesk:
    """Reviewers' decisions and the clock on waiting refunds (escalation, expiry)."""

    def __init__(self, stage: Stage, decisions: Decisions) -> None:
        self.stage = stage
        self.decisions = decisions
        self.policy = decisions.policy

    async def decide(self, refund_id: str, user: StaffUser, action: str, reason: str) -> dict:
        """Apply one reviewer's action; raises domain.ReviewRefused, or LookupError if no such review."""
        async with self.stage.pool.acquire() as conn:
            async with self.stage.unit_of_work(conn) as uow:
                row, review, roles = await _locked(conn, refund_id, user)
                effect = domain.check_decision(review, action, user.user_id, frozenset(roles))
                await store.audit(conn, refund_id, user.user_id, action, reason, roles,
                                  {"kind": review.kind, "approvals_before": list(review.approvers)})
                outcomes = store.Outcomes()
                uow.emit(*await self._apply(conn, outcomes, row, review, effect, user.user_id))
                await outcomes.save(conn)
            self.stage.committed.set()  # wake the verifier for an approval just parked
            return await self.view(conn, refund_id)

    async def _apply(self, conn: asyncpg.Connection, outcomes: store.Outcomes, row: asyncpg.Record,
                     review: domain.OpenReview, effect: str, user_id: str) -> list[Outgoing]:
        refund = RefundAccepted.model_validate(row["refund"])
        if effect == "approval_recorded":
            await store.add_approval(conn, refund.refund_id, review.kind, user_id)
            return []
        acknowledged = frozenset(row["acknowledged"])
        if effect == "release":
            await store.close_review(conn, refund.refund_id, "approved")
            # The payment is verified once more; the disagreements this person saw no longer hold it.
            acknowledged |= domain.mismatch_codes(row["rule_ids"])
            if row["release_codes"] is not None:  # a payment-mismatch hold on an approval: it goes ahead
                return self.decisions.after_verification(outcomes, store.AwaitingVerification(
                    refund, row["policy_version"], list(row["release_codes"]), user_id, acknowledged=acknowledged))
            # A risk hold (or a mismatch found before a review) is lifted; the policy decides as if it had
            # not fired.
            verdict = domain.apply_rules(self.policy, refund)
            return self.decisions.apply(outcomes, refund, verdict, decided_by=user_id, acknowledged=acknowledged)
        if effect == "approve":
            await store.add_approval(conn, refund.refund_id, review.kind, user_id)
        await store.close_review(conn, refund.refund_id, "approved" if effect == "approve" else "denied")
        codes = list(row["rule_ids"]) + [f"review-{'approved' if effect == 'approve' else 'denied'}"]
        if effect == "approve":
            return self.decisions.after_verification(outcomes, store.AwaitingVerification(
                refund, row["policy_version"], codes, user_id, acknowledged=acknowledged))
        return [record_decision(outcomes, row["policy_version"], refund, effect, codes,
                                decided_by=user_id, sla_seconds=None)]

    async def reopen(self, refund_id: str, user: StaffUser, reason: str) -> dict:
        """Put an expired (parked) review or hold back in the queue with new deadlines from now; raises
        domain.ReviewRefused, or LookupError if no such review."""
        async with self.stage.pool.acquire() as conn:
            async with self.stage.unit_of_work(conn) as uow:
                row, review, roles = await _locked(conn, refund_id, user)
                domain.check_reopen(review, frozenset(roles))
                waiting = self.policy.hold if review.kind == "hold" else self.policy.review
                now = datetime.now(UTC)
                due_at, expires_at = now + waiting.sla, now + waiting.expire_after
                await store.reopen(conn, refund_id, user.user_id, now, due_at, expires_at)
                await store.audit(conn, refund_id, user.user_id, "reopened", reason, roles,
                                  {"kind": review.kind, "expired_at": row["expired_at"].isoformat(),
                                   "due_at": due_at.isoformat(), "expires_at": expires_at.isoformat(),
                                   "approvals_before": list(review.approvers)})
                log.info("review_reopened", refund_id=refund_id, kind=review.kind, reopened_by=user.user_id)
                refund = RefundAccepted.model_validate(row["refund"])
                # `note` here is the senior reviewer's reason, not the customer's note the refund carries.
                uow.emit(encode(RefundReviewReopened(
                    **{**carried(refund, list(row["rule_ids"])), "note": reason}, kind=review.kind,
                    reopened_by=user.user_id, due_at=due_at, expires_at=expires_at, reopened_at=now),
                    source=SOURCE, key=refund_id))
            return await self.view(conn, refund_id)

    async def count_parked(self) -> None:
        """Refresh the gauge of expired (parked) reviews and holds."""
        counts = await store.parked_counts(self.stage.pool)
        for kind in ("review", "hold"):
            PARKED.labels(kind).set(counts.get(kind, 0))

    async def view(self, conn: asyncpg.Connection, refund_id: str) -> dict:
        row = await store.review(conn, refund_id)
        if row is None:
            raise LookupError(refund_id)
        trail = await store.audit_trail(conn, refund_id)
        waiting = await store.verification(conn, refund_id)
        # `note` is the console's name for the reason (apis.md); `reason` is kept for existing clients.
        return {**review_json(row), "audit": [dict(entry, note=entry["reason"]) for entry in trail],
                # An approval given here goes out once its payment is verified at its gateway.
                "payment_verification": dict(waiting, state="pending") if waiting else None}

    async def tick(self) -> int:
        """Escalate reviews and holds past their SLA; apply `on_expiry` to those past expiry."""
        async with self.stage.unit_of_work() as uow:
            outgoing = [await self._escalate(uow.conn, row) for row in await store.overdue_reviews(uow.conn)]
            outcomes = store.Outcomes()
            for row in await store.expired_reviews(uow.conn):
                outgoing += await self._expire(uow.conn, outcomes, row)
            await outcomes.save(uow.conn)
            uow.emit(*outgoing)
        self.stage.committed.set()
        return len(outgoing)

    async def _escalate(self, conn: asyncpg.Connection, row: asyncpg.Record) -> Outgoing:
        refund = RefundAccepted.model_validate(row["refund"])
        await store.mark_escalated(conn, refund.refund_id)
        await store.audit(conn, refund.refund_id, SYSTEM, "escalated", f"{row['kind']} passed its SLA",
                          detail={"due_at": row["due_at"].isoformat()})
        log.warning("review_escalated", refund_id=refund.refund_id, kind=row["kind"], due_at=row["due_at"])
        payload = RefundReviewEscalated(
            **carried(refund, list(row["rule_ids"])),
            waiting_since=row["opened_at"], due_at=row["due_at"], escalated_at=datetime.now(UTC))
        return encode(payload, source=SOURCE, key=refund.refund_id)

    async def _expire(self, conn: asyncpg.Connection, outcomes: store.Outcomes,
                      row: asyncpg.Record) -> list[Outgoing]:
        refund = RefundAccepted.model_validate(row["refund"])
        waiting: Waiting = self.policy.hold if row["kind"] == "hold" else self.policy.review
        if waiting.on_expiry == "park":
            await store.park_expired(conn, refund.refund_id)
            await store.audit(conn, refund.refund_id, SYSTEM, "expired",
                              f"{row['kind']} expired unanswered; parked until a senior reviewer reopens it",
                              detail={"expires_at": row["expires_at"].isoformat(), "on_expiry": "park"})
            log.warning("review_parked_on_expiry", refund_id=refund.refund_id, kind=row["kind"],
                        expires_at=row["expires_at"])
            return []
        effect = "approve" if waiting.on_expiry == "approve" else "deny"
        await store.close_review(conn, refund.refund_id, "approved" if effect == "approve" else "denied")
        await store.audit(conn, refund.refund_id, SYSTEM, effect, f"{row['kind']} expired unanswered",
                          detail={"expires_at": row["expires_at"].isoformat()})
        if effect == "deny":
            return [record_decision(outcomes, row["policy_version"], refund, "deny",
                                    list(row["rule_ids"]) + [f"{row['kind']}-expired"],
                                    decided_by=SYSTEM, sla_seconds=None)]
        # Nobody is left to release a new hold: a payment that still disagrees is denied instead.
        codes = list(row["release_codes"] if row["release_codes"] is not None else row["rule_ids"])
        return self.decisions.after_verification(outcomes, store.AwaitingVerification(
            refund, row["policy_version"], codes + [f"{row['kind']}-expired"], SYSTEM,
            acknowledged=frozenset(row["acknowledged"]), on_mismatch="deny"))


async def _locked(conn: asyncpg.Connection, refund_id: str,
                  user: StaffUser) -> tuple[asyncpg.Record, domain.OpenReview, list[str]]:
    """The review locked for a person's action on it, and that person's roles; LookupError if there is none."""
    locked = await store.lock_review(conn, refund_id)
    if locked is None:
        raise LookupError(refund_id)
    return *locked, sorted(str(role) for role in user.roles)


def review_json(row: asyncpg.Record) -> dict:
    refund = row["refund"]
    review = domain.OpenReview(row["kind"], row["state"], row["required_approvals"], tuple(row["roles"]),
                               tuple(row["approvers"]))
    now = datetime.now(UTC)
    waiting = row["state"] in domain.WAITING_STATES
    return {
        "refund_id": row["refund_id"], "kind": row["kind"], "state": row["state"],
        # The refund's status: a parked (expired) one is still waiting in the approval stage.
        "status": {"hold": "on_hold", "review": "pending_review"}[row["kind"]] if waiting else row["state"],
        "amount": {"value": row["amount_value"], "currency": row["currency"]},
        "channel": row["channel"], "region": row["region"], "reason": refund.get("reason"),
        "source": refund.get("source"), "order_id": refund.get("order_id"),
        "rule_ids": list(row["rule_ids"]), "policy_version": row["policy_version"],
        "required_approvals": row["required_approvals"], "approvers": list(row["approvers"]),
        "roles": list(row["roles"]), "opened_at": row["opened_at"], "due_at": row["due_at"],
        "expires_at": row["expires_at"], "escalated_at": row["escalated_at"],
        "expired_at": row["expired_at"], "reopened_at": row["reopened_at"], "reopened_by": row["reopened_by"],
        "overdue": waiting and row["due_at"] < now,
        "seconds_to_due": math.floor((row["due_at"] - now).total_seconds()),  # negative: overdue
        "waiting_for_second_approver": domain.waiting_for_second_approver(review),
        "allowed_roles": list(domain.allowed_roles(review)),
        "can_reopen_roles": list(domain.can_reopen_roles(review)),
    }
