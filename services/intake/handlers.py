"""Intake's decision for one refund request: load, decide, save, publish.

One code path for both ways in -- the `refunds.requested` consumer (`Intake.decide`,
the stage's step) and `POST /v1/refunds` (services/intake/api.py) -- so a request
gets the same outcome whichever way it arrives. The same step takes the events that
end a refund without money moving (services/intake/release.py).
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import structlog
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from services.intake import domain, release, store
from shared.contact_seal import seal
from shared.envelope import Outgoing, encode
from shared.events import FieldError, RefundAccepted, RefundRejected, RefundRequested
from shared.ids import refund_id_for
from shared.metrics import count_rejections, observe_completion
from shared.sla import SlaTable
from shared.stage import Inbound

SOURCE = "refund-pipeline/intake"
log = structlog.get_logger()


@dataclass(frozen=True)
class Decision:
    """What one request got. For a duplicate, `event` is the stored outcome, to publish again."""

    outcome: str  # accepted | rejected | duplicate
    event: Outgoing
    # A duplicate whose body differs from the first one's (the key was reused).
    reused_key: bool = False


class Intake:
    """Validates, dedupes, guards the refundable balance and opens the ticket with its SLA deadlines."""

    def __init__(self, sla: SlaTable, contact_key: X25519PublicKey, drill_sources: Sequence[str] = ()) -> None:
        self.sla = sla
        # Notify's public key: the customer's contact goes on sealed for notify alone.
        self.contact_key = contact_key
        # Who may mark a refund as a drill: the drill scheduler, and the sources the settings allow.
        self.drill_sources = frozenset({domain.DRILL_SOURCE, *drill_sources})

    async def decide(self, conn: asyncpg.Connection, item: Inbound) -> list[Outgoing]:
        """The consume step for one record: a refund request, or an event that may end a refund."""
        if item.record.topic in release.TOPICS:
            return await release.release_ended_refund(conn, item)
        received_at = datetime.fromtimestamp(item.record.timestamp / 1000, UTC)
        if item.event is None:  # JSON, but not a valid CloudEvent
            source, request_id = domain.readable_ids(item.invalid.raw)
            if previous := await _stored_outcome(conn, source, request_id):
                log.info("duplicate_request", source=source, request_id=request_id)
                return [previous.event]  # a re-sent broken envelope gets the very answer it got first
            errors = [FieldError(field="envelope", code="invalid", message=str(item.invalid)[:500])]
            rejected = await self._reject(conn, source, request_id, errors, received_at,
                                          domain.request_hash(item.invalid.raw))
            return [rejected.event]
        source, raw = item.event.get_source(), item.event.get_data()
        decision = await self.decide_request(
            conn, source=source, request_id=domain.readable_ids({"source": source, "data": raw})[1],
            event_type=item.event.get_type(), data=raw, received_at=received_at)
        if decision.reused_key:
            log.warning("request_id_reused_with_another_body", source=source, refund_id=decision.event.key)
        return [decision.event]

    async def decide_request(self, conn: asyncpg.Connection, *, source: str, request_id: str | None,
                             event_type: str, data: object, received_at: datetime,
                             errors: Sequence[FieldError] = ()) -> Decision:
        """Accept, reject (every problem, plus `errors` the caller found) or recognise a duplicate."""
        body_hash = domain.request_hash(data)
        if previous := await _stored_outcome(conn, source, request_id):
            log.info("duplicate_request", source=source, request_id=request_id)
            reused = previous.request_hash not in (None, body_hash)
            return Decision("duplicate", previous.event, reused_key=reused)

        checked = domain.validate_request(event_type, data)
        if isinstance(checked, list) or errors:
            problems = [*errors, *(checked if isinstance(checked, list) else [])]
            request = checked if isinstance(checked, RefundRequested) else None
            return await self._reject(conn, source, request_id, problems, received_at, body_hash, request)
        balance = await store.lock_balance(conn, checked)
        if problems := domain.balance_errors(balance, checked):
            return await self._reject(conn, source, request_id, problems, received_at, body_hash, checked)
        await store.reserve(conn, checked)
        return await self._accept(conn, source, checked, received_at, body_hash)

    async def _accept(self, conn: asyncpg.Connection, source: str, request: RefundRequested,
                      received_at: datetime, body_hash: str) -> Decision:
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
        await store.save_ticket(conn, refund_id=refund_id, source=source, request_id=request.request_id,
                                outcome="accepted", request=request, event=event, received_at=received_at,
                                request_hash=body_hash, deadlines=deadlines)
        observe_completion("intake", "accepted", channel, (now - received_at).total_seconds(),
                           overdue=now > deadlines["intake"], drill=accepted.drill)
        return Decision("accepted", event)

    async def _reject(self, conn: asyncpg.Connection, source: str | None, request_id: str | None,
                      errors: list[FieldError], received_at: datetime, body_hash: str,
                      request: RefundRequested | None = None) -> Decision:
        refund_id = refund_id_for(source, request_id) if source and request_id else None
        rejected = RefundRejected(
            refund_id=refund_id, request_id=request_id, source=source,
            order_id=request.order_id if request else None, amount=request.amount if request else None,
            errors=errors, rejected_at=datetime.now(UTC),
        )
        event = encode(rejected, source=SOURCE, key=refund_id or request_id)
        if refund_id is not None:
            await store.save_ticket(conn, refund_id=refund_id, source=source, request_id=request_id,
                                    outcome="rejected", request=request, event=event,
                                    received_at=received_at, request_hash=body_hash)
        drill = request is not None and self._is_drill(request, source)
        observe_completion("intake", "rejected", request.payment.channel.value if request else "unknown",
                           (datetime.now(UTC) - received_at).total_seconds(), overdue=False, drill=drill)
        count_rejections("intake", [e.code for e in errors], drill=drill)
        log.info("request_rejected", source=source, request_id=request_id, codes=[e.code for e in errors])
        return Decision("rejected", event)

    def _onward_customer(self, request: RefundRequested, refund_id: str):
        contact = domain.contact_of(request.customer)
        sealed = seal(self.contact_key, contact, refund_id=refund_id, customer_id=request.customer.id) if contact else None
        return domain.onward_customer(request.customer, sealed)

    def _is_drill(self, request: RefundRequested, source: str | None) -> bool:
        drill = domain.is_drill(request, source, self.drill_sources)
        if domain.has_drill_marker(request) and not drill:
            log.info("drill_marker_ignored", source=source, request_id=request.request_id)
        return drill


async def _stored_outcome(conn: asyncpg.Connection, source: str | None,
                          request_id: str | None) -> store.StoredOutcome | None:
    """What (source, request_id) got before, if both can be read and it was seen."""
    if source is None or request_id is None:
        return None
    return await store.stored_outcome(conn, refund_id_for(source, request_id))
