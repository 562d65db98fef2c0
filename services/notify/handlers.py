"""Notify's consume step: fold an event into the projection, publish the current status."""

from datetime import UTC, datetime

import asyncpg

from services.notify import domain
from shared.envelope import Outgoing, encode
from shared.events import RefundStatus, Status
from shared.money import Money
from shared.stage import Inbound

SOURCE = "refund-pipeline/notify"


async def project(conn: asyncpg.Connection, item: Inbound) -> list[Outgoing]:
    event_type = item.event.get_type()
    data = item.event.get_data()
    new = domain.STATUS_OF_TYPE.get(event_type)
    if new is None or not isinstance(data, dict) or not data.get("refund_id"):
        return []  # not a refund's lifecycle (e.g. a rejection nobody can be told about)
    refund_id = data["refund_id"]
    now = datetime.now(UTC)
    row = await conn.fetchrow("SELECT status FROM notify.refund_status WHERE refund_id = $1 FOR UPDATE", refund_id)
    current = Status(row["status"]) if row else None
    if domain.advances(current, new):
        codes = data.get("reason_codes") or [e["code"] for e in data.get("errors", [])]
        row = await conn.fetchrow(
            "INSERT INTO notify.refund_status (refund_id, request_id, source, order_id, status, amount, channel, "
            "reason_codes, eta, timeline, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) "
            "ON CONFLICT (refund_id) DO UPDATE SET status = EXCLUDED.status, reason_codes = EXCLUDED.reason_codes, "
            "eta = EXCLUDED.eta, updated_at = EXCLUDED.updated_at, "
            "timeline = refund_status.timeline || EXCLUDED.timeline, "
            "request_id = COALESCE(refund_status.request_id, EXCLUDED.request_id), "
            "order_id = COALESCE(refund_status.order_id, EXCLUDED.order_id), "
            "amount = COALESCE(refund_status.amount, EXCLUDED.amount), "
            "channel = COALESCE(refund_status.channel, EXCLUDED.channel) RETURNING *",
            refund_id, data.get("request_id"), data.get("source"), data.get("order_id"), new.value,
            data.get("amount"), data.get("channel"), codes, domain.eta(new, data.get("channel"), now),
            {new.value: now.isoformat()}, now)
    else:
        # Late or repeated: keep the status, still remember when this stage happened.
        row = await conn.fetchrow(
            "UPDATE notify.refund_status SET timeline = jsonb_build_object($2::text, $3::text) || timeline "
            "WHERE refund_id = $1 RETURNING *", refund_id, new.value, now.isoformat())
    return [_status_event(row)]


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
    )
    return encode(status, source=SOURCE, key=row["refund_id"])
