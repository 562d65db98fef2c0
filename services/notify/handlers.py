"""Notify's consume step: fold a batch's events into the projection, publish each refund's current
status, and queue the milestones' notifications in the same transaction."""

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import chain

import asyncpg
import structlog
from aiokafka import ConsumerRecord
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from services.notify import domain, store, watch
from shared.contract.contact_seal import SealBroken, open_seal
from shared.contract.envelope import Outgoing, encode
from shared.contract.events import RefundStatus
from shared.contract.money import Money
from shared.runtime.stage import Handler, Inbound, Stage

SOURCE = "refund-pipeline/notify"
log = structlog.get_logger()


class CausalStage(Stage):
    """Notify reads ten topics; a poll groups records by partition, so one refund's
    `paid` could be folded before its `approved` and the (monotonic) projection would
    skip the approved milestone. Folding each batch in production-time order keeps
    a refund's events in the order they happened (stable: a partition's order stays)."""

    async def process(self, records: Sequence[ConsumerRecord]) -> None:
        await super().process(in_production_order(records))


def in_production_order(records: Sequence[ConsumerRecord]) -> list[ConsumerRecord]:
    return sorted(records, key=lambda record: record.timestamp)


@dataclass(frozen=True)
class Audience:
    """Which channels are switched on: email needs an SMTP server, SMS a provider, webhooks a platform's URL."""

    email: bool = False
    sms: bool = False
    webhook_urls: dict[str, str] = field(default_factory=dict)

    def recipients(self, row: domain.StatusRow) -> list[tuple[str, str]]:
        customer = row.customer or {}
        found = []
        # Drill refunds exercise the pipeline; no real customer may hear of them.
        if not row.drill:
            if self.email and customer.get("email"):
                found.append(("email", customer["email"]))
            if self.sms and customer.get("phone"):
                found.append(("sms", customer["phone"]))
        if url := self.webhook_urls.get(row.source or ""):
            found.append(("webhook", url))
        return found


@dataclass(frozen=True)
class Projection:
    audience: Audience
    # Opens the contact intake sealed for notify (shared/contract/contact_seal.py).
    contact_key: X25519PrivateKey

    async def fold_batch(self, conn: asyncpg.Connection, items: list[Inbound]) -> list[Outgoing]:
        """Fold a batch's lifecycle events into the projection: every refund's events in the order they
        came, its row locked, written and its milestones queued together with the others' (one statement
        each), and its latest status published once."""
        events: list[domain.LifecycleEvent] = []
        for item in items:
            event_type, data = item.event.get_type(), item.event.get_data()
            if refund_id := domain.refund_of(event_type, data):
                events.append(domain.LifecycleEvent(event_type, data, self._customer(refund_id, data.get("customer"))))
        if not events:
            return []
        folded = await _fold_locked(conn, domain.per_refund(events), datetime.now(UTC))
        every_step = list(chain.from_iterable(folded.values()))
        for step in every_step:
            watch.observe_time_to_funds(step)
        await store.enqueue(conn, [notification for step in every_step if step.milestone
                                   for notification in domain.notifications(step, self.audience.recipients(step.row))])
        return [_status_event(steps[-1].row) for steps in folded.values()]

    def _customer(self, refund_id: str, customer: object) -> dict | None:
        """The customer as notify keeps it: the sealed contact opened into `email`/`phone`, the blob dropped.
        A seal that does not open leaves the customer without a contact (nobody to mail), and says so."""
        if not isinstance(customer, dict):
            return None
        kept = {k: v for k, v in customer.items() if k != "contact_sealed"}
        if sealed := customer.get("contact_sealed"):
            try:
                kept |= dict(_opened(self.contact_key, sealed, refund_id, str(customer.get("id"))))
            except SealBroken as broken:
                log.warning("customer_contact_unreadable", refund_id=refund_id, reason=str(broken))
        return kept


@functools.lru_cache(maxsize=4096)
def _opened(contact_key: X25519PrivateKey, sealed: str, refund_id: str, customer_id: str) -> tuple[tuple[str, str], ...]:
    """The sealed contact, opened once for all of a refund's events (each carries the same seal; an open
    is an X25519 exchange, ~65 us: a fifth of notify's CPU per refund when made for every event). Holds
    the contacts of the last 4,096 refunds folded, which notify's projection keeps anyway; a seal that
    does not open is not cached, and is tried again the next time."""
    return tuple(open_seal(contact_key, sealed, refund_id=refund_id, customer_id=customer_id).items())


async def _fold_locked(conn: asyncpg.Connection, by_refund: dict[str, list[domain.LifecycleEvent]],
                       now: datetime) -> dict[str, list[domain.Folded]]:
    """Lock the refunds' rows, fold their events in memory, write the rows back. A refund another replica
    inserted after the lock is folded again on its row (a second pass: by then the row is locked too)."""
    done: dict[str, list[domain.Folded]] = {}
    pending = by_refund
    while pending:
        rows = await store.lock_statuses(conn, sorted(pending))
        folded = domain.fold_batch(rows, pending, now)
        # A timeline-only event for a refund notify has no status of yet: nothing to save or publish.
        folded = {refund_id: steps for refund_id, steps in folded.items() if steps[-1].row.status is not None}
        pending = {refund_id: pending[refund_id] for refund_id in folded}
        written = await store.save_statuses(conn, [steps[-1].row for steps in folded.values()], rows)
        done |= {refund_id: steps for refund_id, steps in folded.items() if refund_id in written}
        pending = {refund_id: events for refund_id, events in pending.items() if refund_id not in written}
    return {refund_id: done[refund_id] for refund_id in by_refund if refund_id in done}


async def republish(conn: asyncpg.Connection, items: list[Inbound]) -> list[Outgoing]:
    """Redelivered or re-sent events change nothing; each refund's current status goes out again, once."""
    named = (item.event.get_data() for item in items)
    refund_ids = sorted({data["refund_id"] for data in named if isinstance(data, dict) and data.get("refund_id")})
    if not refund_ids:
        return []
    return [_status_event(row) for row in await store.statuses(conn, refund_ids)]


def _status_event(row: domain.StatusRow) -> Outgoing:
    status = RefundStatus(
        refund_id=row.refund_id, request_id=row.request_id, source=row.source, order_id=row.order_id,
        status=row.status, amount=Money.model_validate(row.amount) if row.amount else None,
        reason_codes=row.reason_codes, eta=row.eta, updated_at=row.updated_at, deadlines=row.deadlines,
        sequence=row.sequence,
    )
    return encode(status, source=SOURCE, key=row.refund_id)


def lifecycle_handlers(projection: Projection) -> dict[str, Handler]:
    """Every event type that moves a status, to the projection's one batch fold: one handler, so a batch's
    events of all these types reach it together, in order. Their data is folded as it came, as it always
    was (a field the projection does not read never keeps a customer from hearing of their refund)."""
    return dict.fromkeys([*domain.STAGE_AFTER, *domain.TIMELINE_TYPES], Handler(projection.fold_batch, validated=False))
