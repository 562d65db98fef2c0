"""Reviewers' HTTP API: the queue, decisions with four eyes, disputes. Staff bearer tokens and roles."""

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, Field

from services.approval import store
from services.approval.domain import ReviewRefused
from services.approval.handlers import ReviewDesk, review_json
from shared.runtime.roles import Role
from shared.runtime.staff import StaffAuth, StaffUser


class Decision(BaseModel):
    action: Literal["approve", "deny", "release"] = Field(
        description="`approve`/`deny` a pending review; `release`/`deny` a risk hold")
    reason: Annotated[str, Field(min_length=3, max_length=2000, description="why; kept in the audit trail")]


class DisputeFlag(BaseModel):
    gateway: Annotated[str, Field(min_length=1, max_length=64)]
    payment_id: Annotated[str, Field(min_length=1, max_length=128)]
    open: bool
    reason: Annotated[str, Field(min_length=3, max_length=2000)]


def review_router(desk: ReviewDesk, auth: StaffAuth) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["reviews"])
    staff = Annotated[StaffUser, Depends(auth.require(*Role))]

    @router.get("/reviews", summary="Refunds waiting for people, oldest deadline first")
    async def list_reviews(request: Request, user: staff,
                           state: Literal["open", "approved", "denied"] = "open",
                           kind: Literal["review", "hold"] | None = None,
                           limit: Annotated[int, Query(ge=1, le=500)] = 100) -> dict:
        async with request.app.state.pool.acquire() as conn:
            rows = await store.list_reviews(conn, state, kind, limit)
        return {"items": [review_json(row) for row in rows]}

    @router.get("/reviews/{refund_id}", summary="One review with its audit trail")
    async def get_review(request: Request, refund_id: str, user: staff) -> dict:
        async with request.app.state.pool.acquire() as conn:
            try:
                return await desk.view(conn, refund_id)
            except LookupError:
                raise HTTPException(404, f"no review for refund {refund_id}") from None

    @router.post("/reviews/{refund_id}/decision", summary="Approve, deny or release; audited",
                 responses={401: {"description": "no or invalid token"},
                            403: {"description": "role not permitted, or the same approver twice (four eyes)"},
                            404: {"description": "no review for this refund"},
                            409: {"description": "already decided"}})
    async def decide(refund_id: str, decision: Decision, user: staff) -> dict:
        try:
            return await desk.decide(refund_id, user, decision.action, decision.reason)
        except LookupError:
            raise HTTPException(404, f"no review for refund {refund_id}") from None
        except ReviewRefused as refused:
            raise HTTPException(refused.status, {"code": refused.code, "message": str(refused)}) from None

    @router.post("/disputes", summary="Flag or clear an open dispute/chargeback on a payment", tags=["risk"])
    async def flag_dispute(request: Request, flag: DisputeFlag,
                           user: Annotated[StaffUser, Depends(auth.require(Role.SENIOR_REVIEWER,
                                                                           Role.FINANCE_LEAD))]) -> dict:
        async with request.app.state.pool.acquire() as conn, conn.transaction():
            await store.set_dispute(conn, flag.gateway, flag.payment_id, flag.open, flag.reason, user.user_id)
        return {"gateway": flag.gateway, "payment_id": flag.payment_id, "open": flag.open,
                "updated_by": user.user_id, "updated_at": datetime.now().astimezone()}

    return router
