"""Exits out of a failed payout: the customer's new destination, a re-route by staff, or money staff
paid outside the pipeline (with evidence; reconciled by hand).

A failed payout gave its amount back to the payment's refundable balance at intake, so no exit pays
before intake has reserved the amount again: payout records the exit (`requested`, with who, why and the
evidence) and asks intake with `refund.payout-exit-requested.v1`; intake answers on `refunds.reinstated`.
Reinstated: a re-route or a new destination becomes attempt n+1 of the refund's payout, due now, under a
new payout id and idempotency key (`refund.payout-redriven.v1`; the executor pays it as any other), and
paid-outside records attempt n+1 as succeeded (`refund.paid.v1`, `paid_outside`). Refused: the exit is
`refused` and the refund stays failed. Each answer acts once: only an exit still `requested` is decided.
"""

from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import structlog
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from prometheus_client import Counter, Gauge

from services.payout import domain, exit_store
from services.payout.exit_store import ExitAsked
from services.payout.outcomes import SOURCE, ref_fields
from shared.contract import contact_seal
from shared.contract.envelope import Outgoing, encode
from shared.contract.events import (DestinationProvided, PayoutExitRequested, PayoutRedriven, RefundApproved,
                                    RefundPaid, RefundReinstated, ReinstatementRefused)
from shared.runtime.stage import Inbound

log = structlog.get_logger()
EXITS = Counter("refund_payout_exits_total", "Exits out of failed payouts, by kind and what came of them "
                "(requested, conflict, unreadable, reinstated, refused)", ["exit", "outcome"])
AWAITING_EXIT = Gauge("refund_payout_failed_awaiting_exit",
                      "Failed payouts (not reversals) with no exit taken yet, and those with one in flight",
                      ["exit_pending"])
AWAITING_EXIT_OLDEST = Gauge("refund_payout_failed_awaiting_exit_oldest_age_seconds",
                             "Age of the oldest failed payout with no exit taken yet (0: none)")
# The associated data a customer's destination is sealed under, with the refund id (notify seals so).
DESTINATION_SEALED_FOR = "destination"
BANK_TRANSFER = "bank_transfer"


@dataclass
class ExitNotTaken(Exception):
    """Why an exit was not recorded: HTTP status (404, 409, 422) and a message for the person asking."""

    status: int
    message: str


class PayoutExits:
    """Records exits and acts on intake's answers, in the caller's transaction."""

    def __init__(self, gateways: Collection[str], destination_key: X25519PrivateKey) -> None:
        self.gateways = frozenset(gateways)
        self.destination_key = destination_key

    async def request(self, conn: asyncpg.Connection, refund_id: str, asked: ExitAsked
                      ) -> tuple[asyncpg.Record, list[Outgoing]]:
        """Record the exit and ask intake to reserve the amount again; ExitNotTaken if it cannot be taken."""
        if asked.exit == "reroute" and asked.gateway not in self.gateways:
            raise ExitNotTaken(422, f"no gateway route named {asked.gateway!r}; configured: {sorted(self.gateways)}")
        row = await exit_store.lock_payout(conn, refund_id)
        if row is None:
            raise ExitNotTaken(404, f"no payout for refund {refund_id!r}")
        conflict = domain.exit_conflict(row["status"], row["failure_reason"],
                                        await exit_store.exit_pending(conn, refund_id))
        if conflict:
            EXITS.labels(asked.exit, "conflict").inc()
            raise ExitNotTaken(409, conflict)
        attempt = row["attempt"] + 1
        recorded = await exit_store.record_exit(conn, refund_id, attempt, asked)
        refund = RefundApproved.model_validate(row["refund"])
        event = PayoutExitRequested(**ref_fields(refund), attempt=attempt, exit=asked.exit,
                                    requested_by=asked.requested_by, requested_at=recorded["requested_at"],
                                    reason_codes=[asked.exit])
        EXITS.labels(asked.exit, "requested").inc()
        log.info("payout_exit_requested", refund_id=refund_id, exit=asked.exit, attempt=attempt,
                 requested_by=asked.requested_by, reason=asked.reason)
        return recorded, [encode(event, source=SOURCE, key=refund_id)]

    async def on_destinations(self, conn: asyncpg.Connection, items: list[Inbound]) -> list[Outgoing]:
        """Customers' new destinations (from notify's customer page): each an exit asked by the customer."""
        outgoing: list[Outgoing] = []
        for item in items:
            provided: DestinationProvided = item.data
            try:
                destination = contact_seal.open_seal(self.destination_key, provided.destination_sealed,
                                                     refund_id=provided.refund_id,
                                                     customer_id=DESTINATION_SEALED_FOR)
            except contact_seal.SealBroken as broken:
                EXITS.labels("new_destination", "unreadable").inc()
                log.warning("destination_unreadable", refund_id=provided.refund_id, error=str(broken))
                continue
            if not destination.get("iban"):
                EXITS.labels("new_destination", "unreadable").inc()
                log.warning("destination_without_iban", refund_id=provided.refund_id)
                continue
            asked = ExitAsked("new_destination", "customer", "the customer gave a new destination",
                              destination_sealed=provided.destination_sealed, destination_summary=provided.summary)
            try:
                _, events = await self.request(conn, provided.refund_id, asked)
            except ExitNotTaken as not_taken:
                log.warning("destination_not_taken", refund_id=provided.refund_id, why=not_taken.message)
                continue
            outgoing += events
        return outgoing

    async def on_answers(self, conn: asyncpg.Connection, items: list[Inbound]) -> list[Outgoing]:
        """Intake's answers: reinstated (act on the exit) or refused (the refund stays failed)."""
        outgoing: list[Outgoing] = []
        for item in items:
            outgoing += await self._answer(conn, item.data)
        return outgoing

    async def _answer(self, conn: asyncpg.Connection, answer: RefundReinstated | ReinstatementRefused
                      ) -> list[Outgoing]:
        # The payout row first, then the exit: the order the HTTP path takes them in.
        row = await exit_store.lock_payout(conn, answer.refund_id)
        asked = await exit_store.lock_requested_exit(conn, answer.refund_id, answer.attempt) if row else None
        if asked is None:  # answered before (a re-sent answer), or about no exit of ours
            log.info("exit_answer_without_pending_exit", refund_id=answer.refund_id, attempt=answer.attempt)
            return []
        if isinstance(answer, ReinstatementRefused):
            await exit_store.decide_exit(conn, asked["id"], "refused",
                                         [error.model_dump() for error in answer.errors])
            EXITS.labels(asked["exit"], "refused").inc()
            log.warning("payout_exit_refused", refund_id=answer.refund_id, exit=asked["exit"],
                        errors=[error.code for error in answer.errors])
            return []
        await exit_store.archive_attempt(conn, answer.refund_id)
        EXITS.labels(asked["exit"], "reinstated").inc()
        if asked["exit"] == "paid_outside":
            return [await self._paid_outside(conn, row, asked)]
        return [await self._redrive(conn, row, asked)]

    async def _redrive(self, conn: asyncpg.Connection, row: asyncpg.Record, asked: asyncpg.Record) -> Outgoing:
        refund = RefundApproved.model_validate(row["refund"])
        now = datetime.now(UTC)
        channel = BANK_TRANSFER if asked["exit"] == "new_destination" else row["channel"]
        new = await exit_store.start_attempt(
            conn, row, asked["attempt"], gateway=asked["gateway"] or row["gateway"], channel=channel,
            destination_sealed=asked["destination_sealed"], eta=domain.funds_eta(now, channel, refund.region))
        if new is None:
            raise RuntimeError(f"payout of {row['refund_id']} is no longer failed attempt {asked['attempt'] - 1}")
        await exit_store.decide_exit(conn, asked["id"], "reinstated")
        log.info("payout_redriven", refund_id=row["refund_id"], attempt=new["attempt"], gateway=new["gateway"],
                 exit=asked["exit"])
        event = PayoutRedriven(**ref_fields(refund), attempt=new["attempt"], exit=asked["exit"],
                               gateway=new["gateway"], payout_id=new["payout_id"], redriven_at=now,
                               reason_codes=[asked["exit"]])
        return encode(event, source=SOURCE, key=row["refund_id"])

    async def _paid_outside(self, conn: asyncpg.Connection, row: asyncpg.Record, asked: asyncpg.Record
                            ) -> Outgoing:
        refund = RefundApproved.model_validate(row["refund"])
        new = await exit_store.paid_outside(conn, row, asked["attempt"], asked["reference"])
        if new is None:
            raise RuntimeError(f"payout of {row['refund_id']} is no longer failed attempt {asked['attempt'] - 1}")
        await exit_store.decide_exit(conn, asked["id"], "done")
        log.warning("payout_paid_outside", refund_id=row["refund_id"], attempt=new["attempt"],
                    reference=asked["reference"], requested_by=asked["requested_by"])
        event = RefundPaid(**ref_fields(refund), gateway=new["gateway"], payout_id=new["payout_id"],
                           gateway_ref=asked["reference"], paid_at=new["finished_at"], attempt=new["attempt"],
                           paid_outside=True, reason_codes=["paid_outside"])
        return encode(event, source=SOURCE, key=row["refund_id"])


async def sweep_failed(pool: asyncpg.Pool) -> None:
    """Refresh the failed-payout gauges from the store: money owed to customers that nobody has acted on."""
    row = await exit_store.count_failed_awaiting_exit(pool)
    AWAITING_EXIT.labels("false").set(row["waiting"])
    AWAITING_EXIT.labels("true").set(row["pending"])
    AWAITING_EXIT_OLDEST.set(float(row["oldest"]))
