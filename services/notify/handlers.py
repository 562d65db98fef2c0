"""Notify's consume step: fold an event into the projection, publish the current status,
and queue the milestone's notifications in the same transaction."""

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg
import structlog
from aiokafka import ConsumerRecord
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from services.notify import domain, store, watch
from shared.contact_seal import SealBroken, open_seal
from shared.envelope import Outgoing, encode
from shared.events import RefundStatus, Status
from shared.money import Money
from shared.stage import Inbound, Stage

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

    def recipients(self, row: asyncpg.Record) -> list[tuple[str, str]]:
        customer = row["customer"] or {}
        found = []
        # Drill refunds exercise the pipeline; no real customer may hear of them.
        if not row["drill"]:
            if self.email and customer.get("email"):
                found.append(("email", customer["email"]))
            if self.sms and customer.get("phone"):
                found.append(("sms", customer["phone"]))
        if url := self.webhook_urls.get(row["source"] or ""):
            found.append(("webhook", url))
        return found


# The stage columns are the stuck-stage watch (watch.py): a refund only moves to a later stage,
# and `entered_at` is when it entered the one it is in.
_FOLD = (
    "INSERT INTO notify.refund_status (refund_id, request_id, source, order_id, status, amount, channel, "
    "reason_codes, eta, timeline, updated_at, customer, drill, deadlines, stage, stage_rank, entered_at, accepted_at, "
    "sequence) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, 1) "
    "ON CONFLICT (refund_id) DO UPDATE SET status = EXCLUDED.status, reason_codes = EXCLUDED.reason_codes, "
    "sequence = refund_status.sequence + 1, "
    "eta = EXCLUDED.eta, updated_at = EXCLUDED.updated_at, "
    "timeline = refund_status.timeline || EXCLUDED.timeline, "
    "request_id = COALESCE(refund_status.request_id, EXCLUDED.request_id), "
    "order_id = COALESCE(refund_status.order_id, EXCLUDED.order_id), "
    "amount = COALESCE(refund_status.amount, EXCLUDED.amount), "
    "channel = COALESCE(refund_status.channel, EXCLUDED.channel), "
    "customer = COALESCE(refund_status.customer, '{}'::jsonb) || COALESCE(EXCLUDED.customer, '{}'::jsonb), "
    "drill = refund_status.drill OR EXCLUDED.drill, "
    "deadlines = COALESCE(refund_status.deadlines, EXCLUDED.deadlines), "
    "stage = CASE WHEN EXCLUDED.stage_rank > COALESCE(refund_status.stage_rank, 0) "
    "  THEN EXCLUDED.stage ELSE refund_status.stage END, "
    "entered_at = CASE WHEN EXCLUDED.stage_rank > COALESCE(refund_status.stage_rank, 0) "
    "  THEN EXCLUDED.entered_at ELSE refund_status.entered_at END, "
    "stage_rank = GREATEST(refund_status.stage_rank, EXCLUDED.stage_rank), "
    "accepted_at = COALESCE(refund_status.accepted_at, EXCLUDED.accepted_at) RETURNING *"
)
# An event that does not advance the status still merges the stage, deadlines and drill as _FOLD does.
_FOLD_LATE = (
    "UPDATE notify.refund_status SET timeline = jsonb_build_object($2::text, $3::text) || timeline, "
    "sequence = sequence + 1, "
    "deadlines = COALESCE(deadlines, $4), drill = drill OR $5, "
    "stage = CASE WHEN $7 > COALESCE(stage_rank, 0) THEN $6 ELSE stage END, "
    "entered_at = CASE WHEN $7 > COALESCE(stage_rank, 0) THEN $8 ELSE entered_at END, "
    "stage_rank = GREATEST(stage_rank, $7), accepted_at = COALESCE(accepted_at, $9), "
    "customer = CASE WHEN $10::jsonb IS NULL THEN customer ELSE COALESCE(customer, '{}'::jsonb) || $10 END "
    "WHERE refund_id = $1 RETURNING *"
)


@dataclass(frozen=True)
class Projection:
    audience: Audience
    # Opens the contact intake sealed for notify (shared/contact_seal.py).
    contact_key: X25519PrivateKey

    async def project(self, conn: asyncpg.Connection, item: Inbound) -> list[Outgoing]:
        event_type = item.event.get_type()
        data = item.event.get_data()
        new = domain.status_of(event_type, data)
        if new is None or not isinstance(data, dict) or not data.get("refund_id"):
            return []  # not a refund's lifecycle (e.g. a rejection nobody can be told about)
        refund_id = data["refund_id"]
        now = datetime.now(UTC)
        stage = watch.STAGE_AFTER[event_type]
        accepted_at = domain.instant(data.get("accepted_at"))
        customer = self._customer(refund_id, data.get("customer"))
        row = await conn.fetchrow(
            "SELECT status, eta, channel FROM notify.refund_status WHERE refund_id = $1 FOR UPDATE", refund_id)
        current = Status(row["status"]) if row else None
        if not domain.advances(current, new):
            # Late or repeated: keep the status, still remember when this stage happened.
            row = await conn.fetchrow(_FOLD_LATE, refund_id, new.value, now.isoformat(), data.get("deadlines"),
                                      bool(data.get("drill")), stage, watch.RANK[stage], now, accepted_at, customer)
            watch.observe_time_to_funds(event_type, data, row)
            return [_status_event(row)]
        codes = data.get("reason_codes") or [e["code"] for e in data.get("errors", [])]
        channel = data.get("channel") or (row["channel"] if row else None)
        eta = domain.eta(new, channel, now, announced=domain.instant(data.get("eta")),
                         previous=row["eta"] if row else None)
        row = await conn.fetchrow(
            _FOLD, refund_id, data.get("request_id"), data.get("source"), data.get("order_id"), new.value,
            data.get("amount"), data.get("channel"), codes, eta, {new.value: now.isoformat()}, now,
            customer, bool(data.get("drill")), data.get("deadlines"), stage, watch.RANK[stage], now,
            accepted_at)
        watch.observe_time_to_funds(event_type, data, row)
        if milestone := domain.MILESTONE_OF_STATUS.get(new):
            await self._queue(conn, row, milestone)
        return [_status_event(row)]

    def _customer(self, refund_id: str, customer: object) -> dict | None:
        """The customer as notify keeps it: the sealed contact opened into `email`/`phone`, the blob dropped.
        A seal that does not open leaves the customer without a contact (nobody to mail), and says so."""
        if not isinstance(customer, dict):
            return None
        kept = {k: v for k, v in customer.items() if k != "contact_sealed"}
        if sealed := customer.get("contact_sealed"):
            try:
                kept |= open_seal(self.contact_key, sealed, refund_id=refund_id, customer_id=str(customer.get("id")))
            except SealBroken as broken:
                log.warning("customer_contact_unreadable", refund_id=refund_id, reason=str(broken))
        return kept

    async def _queue(self, conn: asyncpg.Connection, row: asyncpg.Record, milestone: domain.Milestone) -> None:
        customer = row["customer"] or {}
        context = {"status": row["status"], "eta": row["eta"].isoformat() if row["eta"] else None,
                   "reason_codes": list(row["reason_codes"]), "sequence": row["sequence"]}
        await store.enqueue(conn, row["refund_id"], milestone, self.audience.recipients(row),
                            domain.customer_locale(customer.get("locale")), context)


async def republish(conn: asyncpg.Connection, item: Inbound) -> list[Outgoing]:
    """A redelivered or re-sent event changes nothing; the current status goes out again."""
    data = item.event.get_data()
    if not isinstance(data, dict) or not data.get("refund_id"):
        return []
    status = await current_status(conn, data["refund_id"])
    return [status] if status else []


async def current_status(conn: asyncpg.Connection, refund_id: str) -> Outgoing | None:
    row = await conn.fetchrow("SELECT * FROM notify.refund_status WHERE refund_id = $1", refund_id)
    return _status_event(row) if row else None


def _status_event(row: asyncpg.Record) -> Outgoing:
    status = RefundStatus(
        refund_id=row["refund_id"], request_id=row["request_id"], source=row["source"], order_id=row["order_id"],
        status=Status(row["status"]), amount=Money.model_validate(row["amount"]) if row["amount"] else None,
        reason_codes=list(row["reason_codes"]), eta=row["eta"], updated_at=row["updated_at"],
        deadlines=row["deadlines"], sequence=row["sequence"],
    )
    return encode(status, source=SOURCE, key=row["refund_id"])
