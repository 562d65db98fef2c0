"""Intake's decision for refund requests: load, decide, save, publish -- a batch at a time.

One code path for both ways in -- the `refunds.requested` consumer (`Intake.decide_batch`,
the stage's step, a whole batch in a constant number of statements) and `POST /v1/refunds`
(services/intake/api.py, `decide_request`: the same path with a batch of one) -- so a request
gets the same outcome whichever way it arrives. The same step takes the events that end a
refund without money moving (services/intake/release.py).
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import groupby

import asyncpg
import structlog
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from services.intake import domain, reinstate, release, store
from shared.contract.contact_seal import seal
from shared.contract.envelope import Outgoing, encode
from shared.contract.events import FieldError, RefundAccepted, RefundRejected, RefundRequested
from shared.contract.ids import refund_id_for
from shared.runtime.metrics import count_rejections, observe_completion
from services.intake.sla import SlaTable
from shared.runtime.stage import Inbound

SOURCE = "refund-pipeline/intake"
log = structlog.get_logger()


@dataclass(frozen=True)
class Decision:
    """What one request got. For a duplicate, `event` is the stored outcome, to publish again."""

    outcome: str  # accepted | rejected | duplicate
    event: Outgoing
    # A duplicate whose body differs from the first one's (the key was reused).
    reused_key: bool = False


@dataclass(frozen=True)
class _Completion:
    """The stage metrics of one request accepted or rejected, recorded once its ticket is saved."""

    outcome: str
    channel: str
    seconds: float
    overdue: bool
    drill: bool
    codes: tuple[str, ...] = ()

    def record(self) -> None:
        observe_completion("intake", self.outcome, self.channel, self.seconds, overdue=self.overdue,
                           drill=self.drill)
        if self.outcome == "rejected":
            count_rejections("intake", list(self.codes), drill=self.drill)


class Intake:
    """Validates, dedupes, guards the refundable balance and opens the ticket with its SLA deadlines."""

    def __init__(self, sla: SlaTable, contact_key: X25519PublicKey, drill_sources: Sequence[str] = ()) -> None:
        self.sla = sla
        # Notify's public key: the customer's contact goes on sealed for notify alone.
        self.contact_key = contact_key
        # Who may mark a refund as a drill: the drill scheduler, and the sources the settings allow.
        self.drill_sources = frozenset({domain.DRILL_SOURCE, *drill_sources})

    async def decide_batch(self, conn: asyncpg.Connection, items: list[Inbound]) -> list[Outgoing]:
        """The consume step for a batch's events: refund requests, and events that may end a refund.
        Taken in runs of one kind in consumption order, so a request after a release in the batch sees
        the balance it gave back, as it would one event at a time."""
        outgoing: list[Outgoing] = []
        for kind, run in groupby(items, key=_kind):
            if kind == "release":
                outgoing += await release.release_ended_refunds(conn, list(run))
            elif kind == "reinstate":
                outgoing += await reinstate.reinstate_for_exits(conn, list(run))
            else:
                outgoing += await self._answer_requests(conn, list(run))
        return outgoing

    async def _answer_requests(self, conn: asyncpg.Connection, items: list[Inbound]) -> list[Outgoing]:
        submissions = [_submission(item) for item in items]
        decisions = await self.decide_requests(conn, submissions)
        for submission, decision in zip(submissions, decisions, strict=True):
            if decision.reused_key:
                log.warning("request_id_reused_with_another_body", source=submission.source,
                            refund_id=decision.event.key)
        return [decision.event for decision in decisions]

    async def answer_invalid_envelope(self, conn: asyncpg.Connection, item: Inbound) -> list[Outgoing]:
        """A record on `refunds.requested` that is JSON but not a valid CloudEvent: rejected, naming the
        envelope; a re-sent one gets the very answer it got first."""
        source, request_id = domain.readable_ids(item.invalid.raw)
        submission = domain.Submission(source, request_id, "", item.invalid.raw, _received_at(item))
        stored = await store.stored_outcomes(conn, [submission.refund_id] if submission.refund_id else [])
        if submission.refund_id in stored:
            log.info("duplicate_request", source=source, request_id=request_id)
            return [stored[submission.refund_id].event]
        errors = [FieldError(field="envelope", code="invalid", message=str(item.invalid)[:500])]
        decision, ticket, completion = self._reject(submission, errors)
        await store.save_tickets(conn, [ticket] if ticket else [])
        completion.record()
        return [decision.event]

    async def decide_request(self, conn: asyncpg.Connection, *, source: str, request_id: str | None,
                             event_type: str, data: object, received_at: datetime,
                             errors: Sequence[FieldError] = ()) -> Decision:
        """Accept, reject (every problem, plus `errors` the caller found) or recognise a duplicate: one
        request, as a batch of one."""
        submission = domain.Submission(source, request_id, event_type, data, received_at, tuple(errors))
        [decision] = await self.decide_requests(conn, [submission])
        return decision

    async def decide_requests(self, conn: asyncpg.Connection,
                              submissions: Sequence[domain.Submission]) -> list[Decision]:
        """Each request's decision, in order, as if decided one after the other, in four statements
        whatever the number: read the stored outcomes, lock the payments' balances, reserve, save the
        tickets. A request whose key came earlier in the batch gets that one's outcome."""
        stored = await store.stored_outcomes(conn, [s.refund_id for s in submissions if s.refund_id])
        screened = domain.screen(submissions, {refund_id: o.request_hash for refund_id, o in stored.items()})
        balances = await store.lock_balances(conn, domain.payments_to_lock(screened))
        verdicts = domain.settle(screened, balances)
        decisions, tickets, completions = self._outcomes(submissions, verdicts, stored)
        await store.reserve(conn, domain.reservations(verdicts))
        await store.save_tickets(conn, tickets)
        for completion in completions:
            completion.record()
        return decisions

    def _outcomes(self, submissions: Sequence[domain.Submission], verdicts: Sequence[domain.Verdict],
                  stored: dict[str, store.StoredOutcome]
                  ) -> tuple[list[Decision], list[store.Ticket], list[_Completion]]:
        """The outcome events of the verdicts, the tickets to save and the metrics to record."""
        decisions: list[Decision] = []
        tickets: list[store.Ticket] = []
        completions: list[_Completion] = []
        for submission, verdict in zip(submissions, verdicts, strict=True):
            if isinstance(verdict, domain.Duplicate):
                log.info("duplicate_request", source=submission.source, request_id=submission.request_id)
                first = (stored[submission.refund_id].event if verdict.earlier is None
                         else decisions[verdict.earlier].event)
                decisions.append(Decision("duplicate", first, reused_key=verdict.reused_key))
                continue
            if isinstance(verdict, domain.Accepted):
                decision, ticket, completion = self._accept(submission, verdict.request)
            else:
                decision, ticket, completion = self._reject(submission, verdict.errors, verdict.request)
            decisions.append(decision)
            tickets += [ticket] if ticket else []
            completions.append(completion)
        return decisions, tickets, completions

    def _accept(self, submission: domain.Submission,
                request: RefundRequested) -> tuple[Decision, store.Ticket, _Completion]:
        source, received_at = submission.source, submission.received_at
        refund_id = refund_id_for(source, request.request_id)
        now = datetime.now(UTC)
        channel = request.payment.channel.value
        deadlines = self.sla.deadlines(received_at, channel, request.region)
        accepted = RefundAccepted(
            refund_id=refund_id, request_id=request.request_id, source=source, order_id=request.order_id,
            amount=request.amount, channel=request.payment.channel, region=request.region,
            payment=request.payment, customer=self._onward_customer(request, refund_id), reason=request.reason,
            note=request.note,
            requested_at=request.requested_at, accepted_at=now, items=request.items,
            metadata=request.metadata, deadlines=deadlines, drill=self._is_drill(request, source),
        )
        event = encode(accepted, source=SOURCE, key=refund_id)
        ticket = store.Ticket(refund_id=refund_id, source=source, request_id=request.request_id,
                              outcome="accepted", request=request, event=event, received_at=received_at,
                              request_hash=submission.body_hash, deadlines=deadlines)
        completion = _Completion("accepted", channel, (now - received_at).total_seconds(),
                                 overdue=now > deadlines["intake"], drill=accepted.drill)
        return Decision("accepted", event), ticket, completion

    def _reject(self, submission: domain.Submission, errors: list[FieldError],
                request: RefundRequested | None = None) -> tuple[Decision, store.Ticket | None, _Completion]:
        source, request_id, refund_id = submission.source, submission.request_id, submission.refund_id
        rejected = RefundRejected(
            refund_id=refund_id, request_id=request_id, source=source,
            order_id=request.order_id if request else None, amount=request.amount if request else None,
            errors=errors, rejected_at=datetime.now(UTC),
        )
        event = encode(rejected, source=SOURCE, key=refund_id or request_id)
        ticket = None if refund_id is None else store.Ticket(
            refund_id=refund_id, source=source, request_id=request_id, outcome="rejected", request=request,
            event=event, received_at=submission.received_at, request_hash=submission.body_hash)
        drill = request is not None and self._is_drill(request, source)
        codes = tuple(e.code for e in errors)
        completion = _Completion("rejected", request.payment.channel.value if request else "unknown",
                                 (datetime.now(UTC) - submission.received_at).total_seconds(), overdue=False,
                                 drill=drill, codes=codes)
        log.info("request_rejected", source=source, request_id=request_id, codes=list(codes))
        return Decision("rejected", event), ticket, completion

    def _onward_customer(self, request: RefundRequested, refund_id: str):
        contact = domain.contact_of(request.customer)
        sealed = seal(self.contact_key, contact, refund_id=refund_id, customer_id=request.customer.id) if contact else None
        return domain.onward_customer(request.customer, sealed)

    def _is_drill(self, request: RefundRequested, source: str | None) -> bool:
        drill = domain.is_drill(request, source, self.drill_sources)
        if domain.has_drill_marker(request) and not drill:
            log.info("drill_marker_ignored", source=source, request_id=request.request_id)
        return drill


def _kind(item: Inbound) -> str:
    """Which step a record is for: a refund request, an ending that releases, an exit that reinstates."""
    if item.record.topic in release.TOPICS:
        return "release"
    return "reinstate" if item.record.topic in reinstate.TOPICS else "request"


def _received_at(item: Inbound) -> datetime:
    return datetime.fromtimestamp(item.record.timestamp / 1000, UTC)


def _submission(item: Inbound) -> domain.Submission:
    source, raw = item.event.get_source(), item.event.get_data()
    return domain.Submission(source=source, request_id=domain.readable_ids({"source": source, "data": raw})[1],
                             event_type=item.event.get_type(), data=raw, received_at=_received_at(item))
