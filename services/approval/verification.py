"""The verifier: approvals go out, and reviews open, only after the payment was read at its gateway and agrees.

The consumer, the review API and the review clock park those decisions in `approval.verifications`
(handlers.Decisions.after_verification) and move on; this loop claims the due rows, reads each payment
over its gateway's API (services/approval/payments.py), outside any transaction, and then in one
transaction (one loop per gateway, so a gateway that does not answer delays only its own refunds):

- the payment agrees (or disagrees only in ways a person already released): `refund.approved.v1`,
  or the review opens (`refund.review-requested.v1`);
- it disagrees, or the gateway does not know it: `on_hold` with `payment-mismatch` (`refund.held.v1`),
  or, for an approval an expiry gave, denied;
- the gateway did not answer (timeout, network, 5xx, refused key): nothing is decided, the row is
  asked again after a backoff (`APPROVAL_VERIFY_RETRY_BASE_SECONDS` doubling up to
  `..._CAP_SECONDS`), for as long as it takes. It shows in the stage's inflight/overdue gauges.

A claim holds its rows for `lease_seconds` (several approval replicas share the table; a crashed
round's rows become due again then, a stopped one's at once). Every write checks the claim, so a row
is settled once.
"""

import asyncio
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass

import asyncpg
import structlog

from services.approval import domain, store
from services.approval.handlers import PAYMENT_CHECKS, SYSTEM, Decisions, record_decision
from services.approval.payments import GatewayPayments, GatewayUnanswered
from shared.runtime import tracing
from shared.contract.envelope import Outgoing
from shared.runtime.rounds import ClaimRounds
from shared.runtime.stage import Stage

log = structlog.get_logger()


@dataclass(frozen=True)
class Reading:
    """What asking the gateway gave: a payment (None: unknown there), or why there was no answer."""

    payment: domain.GatewayPayment | None = None
    unanswered: str | None = None
    routed: bool = True


class PaymentVerifier:
    def __init__(self, stage: Stage, decisions: Decisions, payments: GatewayPayments, *, claim_size: int = 16,
                 lease_seconds: float = 30.0, retry_base_seconds: float = 1.0,
                 retry_cap_seconds: float = 60.0, rounds_per_gateway: int = 1) -> None:
        self.stage = stage
        self.decisions = decisions
        self.payments = payments
        self.claim_size = claim_size
        self.lease_seconds = lease_seconds
        self.retry_base_seconds = retry_base_seconds
        self.retry_cap_seconds = retry_cap_seconds
        # Rounds in flight per gateway: while one waits on its reads, the next claims and reads (claims
        # skip each other's rows, as two replicas' do), so a gateway's latency does not cap throughput.
        self.rounds_per_gateway = rounds_per_gateway

    async def run_forever(self) -> None:
        """Loops per routed gateway, so one that does not answer delays only its own refunds; one more
        for refunds whose gateway lost its route since they were parked."""
        lanes: list[str | None] = [gateway for gateway in sorted(self.payments.readers)
                                   for _ in range(self.rounds_per_gateway)] + [None]
        rounds = ClaimRounds(len(lanes), claim_size=self.claim_size)

        async def wake_on_commit() -> None:  # a committed batch may have parked something for these gateways
            while True:
                await self.stage.committed.wait()
                self.stage.committed.clear()
                parked, self.decisions.parked_gateways = self.decisions.parked_gateways, set()
                for index, lane in enumerate(lanes):
                    if lane in parked or self.decisions.handed.get(lane):
                        # rows parked unclaimed (no hand-off) are due now, for a claim to find
                        rounds.wake(index, claim=lane in parked)

        def lane_round(index: int, gateway: str | None) -> Awaitable[None]:
            return rounds.run(index, lambda claim: self.run_once(gateway, claim=claim),
                              lambda: bool(self.decisions.handed.get(gateway)),
                              failed="payment_verifier_failed", gateway=gateway)

        try:
            await asyncio.gather(wake_on_commit(), *(lane_round(index, lane) for index, lane in enumerate(lanes)))
        finally:  # stopping: what was handed over and not read yet is due again at once, for any replica
            waiting = [row for rows in self.decisions.handed.values() for row in rows]
            self.decisions.handed.clear()
            if waiting:
                await store.release_claims(self.stage.pool, waiting)

    async def run_once(self, gateway: str | None, *, claim: bool = True) -> int:
        """One round for one gateway (None: the unrouted): the rows the consume step handed over, else
        (with `claim`) due rows claimed; read their payments, settle them."""
        rows = self._handed(gateway)
        if not rows and claim:
            rows = await store.claim_verifications(
                self.stage.pool, self.claim_size, self.lease_seconds, gateway, sorted(self.payments.readers))
        if not rows:
            return 0
        # tracing: one span per row, continuing the trace its decision came in; the read under it
        spans = tracing.resume({row["refund_id"]: row["traceparent"] for row in rows}, "payment verification")
        try:
            with spans:
                readings = await asyncio.gather(*(asyncio.create_task(self._read(row), context=spans.context(
                    row["refund_id"])) for row in rows))
                async with self.stage.unit_of_work() as uow:
                    outgoing = await self._settle(uow.conn, list(zip(rows, readings, strict=True)))
                    uow.emit(*tracing.stamp(outgoing, spans))
        except asyncio.CancelledError:
            # Shutting down: what this round did not settle is due again at once, not after the lease.
            await store.release_claims(self.stage.pool, rows)
            raise
        return len(rows)

    def _handed(self, gateway: str | None) -> list[Mapping]:
        queue = self.decisions.handed.get(gateway) if gateway is not None else None
        return [queue.popleft() for _ in range(min(self.claim_size, len(queue)))] if queue else []

    async def _read(self, row: asyncpg.Record) -> Reading:
        if not self.payments.reaches(row["gateway"]):  # its route was removed since it was parked
            return Reading(routed=False)
        try:
            return Reading(await self.payments.read(row["gateway"], row["payment_id"]))
        except GatewayUnanswered as error:
            return Reading(unanswered=error.reason)
        except Exception as error:  # a client bug must not lose the row either: asked again
            log.exception("payment_read_failed", refund_id=row["refund_id"], gateway=row["gateway"])
            return Reading(unanswered=f"{type(error).__name__}")

    async def _settle(self, conn: asyncpg.Connection, read: list[tuple[asyncpg.Record, Reading]]) -> list[Outgoing]:
        later = [(row, self._delay(row), reading.unanswered) for row, reading in read if reading.unanswered]
        await store.ask_again(conn, later)
        for row, delay, reason in later:
            PAYMENT_CHECKS.labels(row["gateway"], "unanswered").inc()
            log.warning("payment_gateway_unanswered", refund_id=row["refund_id"], gateway=row["gateway"],
                        reason=reason, attempts=row["attempts"] + 1, next_in_seconds=delay)
        answered = [(row, reading) for row, reading in read if not reading.unanswered]
        taken = await store.take_verified(conn, [row for row, _ in answered])
        outcomes = store.Outcomes()
        outgoing = [self._conclude(outcomes, store.awaiting_verification(row), reading) for row, reading in answered
                    if row["refund_id"] in taken]  # else another round settled it after this claim's lease ran out
        await outcomes.save(conn)
        return outgoing

    def _delay(self, row: asyncpg.Record) -> float:
        return domain.recheck_delay(row["attempts"] + 1, self.retry_base_seconds, self.retry_cap_seconds)

    def _conclude(self, outcomes: store.Outcomes, parked: store.AwaitingVerification, reading: Reading) -> Outgoing:
        refund = parked.refund
        gateway = refund.payment.gateway
        if not reading.routed:
            PAYMENT_CHECKS.labels("-", "unrouted").inc()
            return self.decisions.take_effect(outcomes, parked)
        check = domain.check_payment(refund, reading.payment, parked.acknowledged)
        if check.approves:
            PAYMENT_CHECKS.labels(gateway, "released" if check.released else "matched").inc()
            log.info("payment_verified", refund_id=refund.refund_id, gateway=gateway, released=check.released)
            return self.decisions.take_effect(outcomes, parked, released=check.released)
        PAYMENT_CHECKS.labels(gateway, "unknown" if reading.payment is None else "mismatch").inc()
        log.warning("payment_mismatch", refund_id=refund.refund_id, gateway=gateway, codes=check.mismatch)
        seen = reading.payment
        detail = {"gateway": gateway, "payment_id": refund.payment.id, "decided_by": parked.decided_by,
                  "at_gateway": seen and {"currency": seen.currency, "captured": seen.captured,
                                          "refunded": seen.refunded}}
        if parked.on_mismatch == "hold":
            return self.decisions.hold_mismatch(outcomes, parked, check.mismatch, detail)
        outcomes.audit(refund.refund_id, SYSTEM, "deny", "the gateway's payment disagrees with the refund",
                       detail={"rule_ids": list(check.mismatch), **detail})
        return record_decision(outcomes, parked.policy_version, refund, "deny",
                               parked.reason_codes + list(check.mismatch), decided_by=SYSTEM, sla_seconds=None)
