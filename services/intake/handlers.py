"""Intake's consume step: load, decide, save, publish -- one request at a time."""

from datetime import UTC, datetime

import asyncpg
import structlog

from services.intake import domain, store
from shared.envelope import Outgoing, encode
from shared.events import FieldError, RefundAccepted, RefundRejected, RefundRequested
from shared.ids import refund_id_for
from shared.metrics import observe_completion
from shared.stage import Inbound

SOURCE = "refund-pipeline/intake"
log = structlog.get_logger()


async def decide(conn: asyncpg.Connection, item: Inbound) -> list[Outgoing]:
    received_at = datetime.fromtimestamp(item.record.timestamp / 1000, UTC)
    if item.event is None:  # JSON, but not a valid CloudEvent
        source, request_id = domain.readable_ids(item.invalid.raw)
        errors = [FieldError(field="envelope", code="invalid", message=str(item.invalid)[:500])]
        return await _reject(conn, source, request_id, errors, received_at)

    source = item.event.get_source()
    raw = item.event.get_data()
    request_id = domain.readable_ids({"source": source, "data": raw})[1]
    if request_id is not None:
        previous = await store.stored_outcome(conn, refund_id_for(source, request_id))
        if previous is not None:
            log.info("duplicate_request", source=source, request_id=request_id)
            return [previous]  # the same event again: consumers dedupe, notify re-publishes status

    checked = domain.validate_request(item.event.get_type(), raw)
    if not isinstance(checked, RefundRequested):
        return await _reject(conn, source, request_id, checked, received_at)
    balance = await store.lock_balance(conn, checked)
    if errors := domain.balance_errors(balance, checked):
        return await _reject(conn, source, request_id, errors, received_at, checked)
    await store.reserve(conn, checked)
    return [await _accept(conn, source, checked, received_at)]


async def _accept(conn: asyncpg.Connection, source: str, request: RefundRequested,
                  received_at: datetime) -> Outgoing:
    refund_id = refund_id_for(source, request.request_id)
    now = datetime.now(UTC)
    accepted = RefundAccepted(
        refund_id=refund_id, request_id=request.request_id, source=source, order_id=request.order_id,
        amount=request.amount, channel=request.payment.channel, region=request.region,
        payment=request.payment, customer=request.customer, reason=request.reason, note=request.note,
        requested_at=request.requested_at, accepted_at=now, items=request.items, metadata=request.metadata,
    )
    event = encode(accepted, source=SOURCE, key=refund_id)
    await store.save_ticket(conn, refund_id=refund_id, source=source, request_id=request.request_id,
                            outcome="accepted", request=request, event=event, received_at=received_at)
    observe_completion("intake", "accepted", request.payment.channel.value,
                       (now - received_at).total_seconds(), overdue=False)
    return event


async def _reject(conn: asyncpg.Connection, source: str | None, request_id: str | None,
                  errors: list[FieldError], received_at: datetime,
                  request: RefundRequested | None = None) -> list[Outgoing]:
    refund_id = refund_id_for(source, request_id) if source and request_id else None
    rejected = RefundRejected(
        refund_id=refund_id, request_id=request_id, source=source,
        order_id=request.order_id if request else None, amount=request.amount if request else None,
        errors=errors, rejected_at=datetime.now(UTC),
    )
    event = encode(rejected, source=SOURCE, key=refund_id or request_id)
    if refund_id is not None:
        await store.save_ticket(conn, refund_id=refund_id, source=source, request_id=request_id,
                                outcome="rejected", request=request, event=event, received_at=received_at)
    observe_completion("intake", "rejected", request.payment.channel.value if request else "unknown",
                       (datetime.now(UTC) - received_at).total_seconds(), overdue=False)
    log.info("request_rejected", source=source, request_id=request_id,
             codes=[e.code for e in errors])
    return [event]
