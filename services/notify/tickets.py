"""The console's tickets: search by any of a refund's ids, and one ticket in full (any staff role)."""

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated

import asyncpg
from fastapi import APIRouter, Depends, HTTPException, Query

from services.notify import domain, store
from services.notify.web import tracking
from shared.runtime.staff import StaffAuth, StaffUser


def staff_tickets(pool: Callable[[], asyncpg.Pool], auth: StaffAuth) -> APIRouter:
    """The console's view of tickets: search and one ticket in full (any staff role)."""
    router = APIRouter()
    Staff = Annotated[StaffUser, Depends(auth.require())]

    @router.get("/v1/tickets")
    async def search(staff: Staff, q: str = Query(min_length=1, max_length=128,
                                                  description="a refund id, request id, order id or customer id")):
        """Up to 50 tickets `q` names, most recently changed first."""
        rows = await store.search_tickets(pool(), q.strip())
        return {"tickets": [{"refund_id": r["refund_id"], "request_id": r["request_id"], "source": r["source"],
                             "order_id": r["order_id"], "customer_id": r["customer_id"], "status": r["status"],
                             "amount": r["amount"], "updated_at": r["updated_at"]} for r in rows]}

    @router.get("/v1/tickets/{refund_id}")
    async def one(refund_id: str, staff: Staff):
        """The tracking view, with the whole timeline (every status, with its event type and payout attempt),
        the notifications sent, the customer's feedback and each stage's deadline against when it was done."""
        row = await store.ticket(pool(), refund_id)
        if row is None:
            raise HTTPException(status_code=404, detail=f"no refund {refund_id}")
        notifications = await store.notifications_of(pool(), refund_id)
        feedback = await store.feedback_of(pool(), refund_id)
        view = tracking(row)
        history = domain.history_in_order(row["history"])
        done = domain.stage_times(history)
        sent = [n["sent_at"] for n in notifications if n["sent_at"]]
        if sent:
            done["notify"] = max(sent).isoformat()
        return {
            **view,
            "timeline": history or [{**stage, "event_type": None, "attempt": None} for stage in view["stages"]],
            "customer_id": (row["customer"] or {}).get("id"),
            "notifications": [{"channel": n["channel"], "template": n["milestone"], "attempt": n["attempt"],
                               "status": n["state"], "tries": n["attempts"], "sent_at": n["sent_at"]}
                              for n in notifications],
            "feedback": dict(feedback) if feedback else None,
            "deadlines": domain.deadlines_vs_actual(row["deadlines"], done, datetime.now(UTC)),
        }

    return router
