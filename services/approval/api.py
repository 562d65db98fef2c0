"""Reviewers' HTTP API: the queue, decisions with four eyes, disputes. Staff bearer tokens and roles."""

from collections.abc import Awaitable
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from services.approval import store
from services.approval.domain import ReviewRefused
from services.approval.handlers import ReviewDesk, review_json
from services.approval.policy import CurrencyCode
from shared.contract.events import Channel, Country
from shared.runtime.roles import Role
from shared.runtime.staff import StaffAuth, StaffUser


class Decision(BaseModel):
    action: Literal["approve", "deny", "release"] = Field(
        description="`approve`/`deny` a pending review; `release`/`deny` a risk hold")
    reason: Annotated[str, Field(min_length=3, max_length=2000, description="why; kept in the audit trail")]


class Reopen(BaseModel):
    reason: Annotated[str, Field(min_length=1, max_length=500, pattern=r"\S",
                                 description="why it comes back; kept in the audit trail and sent as the event's note")]


class QueueParams(BaseModel):
    """The queue's query string; a bad value is a 422 naming its parameter."""

    model_config = ConfigDict(extra="ignore")
    state: Literal["open", "expired", "approved", "denied"] = "open"
    kind: Literal["review", "hold"] | None = None
    channel: Channel | None = None
    region: Country | None = None
    rule: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_:.-]{0,127}$")] | None = None
    currency: CurrencyCode | None = None
    min_amount: Annotated[int, Field(ge=0)] | None = None  # minor units of `currency`
    max_amount: Annotated[int, Field(ge=0)] | None = None
    limit: Annotated[int, Field(ge=1, le=500)] = 100

    @model_validator(mode="after")
    def _amounts_in_one_currency(self) -> "QueueParams":
        for name in ("min_amount", "max_amount"):
            if getattr(self, name) is not None and self.currency is None:
                raise _Bad(name, "needs currency: amounts are minor units of one currency")
        if self.min_amount is not None and self.max_amount is not None and self.min_amount > self.max_amount:
            raise _Bad("max_amount", f"{self.max_amount} is below min_amount {self.min_amount}")
        return self

    @classmethod
    def of(cls, request: Request) -> "QueueParams":
        repeated = next((key for key in request.query_params if len(request.query_params.getlist(key)) > 1), None)
        if repeated:
            raise HTTPException(422, f"{repeated}: give it once")
        try:
            return cls.model_validate(dict(request.query_params))
        except ValidationError as invalid:
            error = invalid.errors(include_url=False)[0]
            if isinstance(error.get("ctx", {}).get("error"), _Bad):
                raise HTTPException(422, str(error["ctx"]["error"])) from None
            name = str(error["loc"][0]) if error["loc"] else "query"  # the parameter, not the path inside it
            raise HTTPException(422, f"{name}: {error['msg']} (got {error.get('input')!r})") from None

    def filter(self) -> store.QueueFilter:
        return store.QueueFilter(self.state, self.kind, self.channel and self.channel.value, self.region,
                                 self.rule, self.currency, self.min_amount, self.max_amount)


class _Bad(ValueError):
    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")


async def answered(refund_id: str, action: Awaitable[dict]) -> dict | JSONResponse:
    """A desk action's review, a 404 for no such review, or its refusal as `{"detail": message, "code": stable
    code}` (the console shows the detail, clients branch on the code)."""
    try:
        return await action
    except LookupError:
        raise HTTPException(404, f"no review for refund {refund_id}") from None
    except ReviewRefused as error:
        return JSONResponse({"detail": str(error), "code": error.code}, status_code=error.status)


class DisputeFlag(BaseModel):
    gateway: Annotated[str, Field(min_length=1, max_length=64)]
    payment_id: Annotated[str, Field(min_length=1, max_length=128)]
    open: bool
    reason: Annotated[str, Field(min_length=3, max_length=2000)]


def review_router(desk: ReviewDesk, auth: StaffAuth) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["reviews"])
    staff = Annotated[StaffUser, Depends(auth.require(*Role))]

    @router.get("/reviews", summary="Refunds waiting for people (or decided), oldest first",
                responses={422: {"description": "a filter with a bad value; the detail names the parameter"}})
    async def list_reviews(request: Request, user: staff) -> dict:
        """Query: `state` open|expired|approved|denied (default open), `kind` review|hold, `channel`,
        `region` (ISO 3166-1 alpha-2), `rule` (a rule id or reason code), `currency` with `min_amount`/
        `max_amount` (minor units, inclusive), `limit` (1-500, default 100)."""
        params = QueueParams.of(request)
        async with request.app.state.pool.acquire() as conn:
            rows = await store.list_reviews(conn, params.filter(), params.limit)
        return {"reviews": [review_json(row) for row in rows]}

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
                            409: {"description": "already decided, or expired (a senior reviewer reopens it first)"}})
    async def decide(refund_id: str, decision: Decision, user: staff) -> dict:  # or the refusal as a JSONResponse
        return await answered(refund_id, desk.decide(refund_id, user, decision.action, decision.reason))

    @router.post("/reviews/{refund_id}/reopen", summary="Put an expired review or hold back in the queue; audited",
                 responses={401: {"description": "no or invalid token"},
                            403: {"description": "not a senior reviewer"},
                            404: {"description": "no review for this refund"},
                            409: {"description": "the review is not expired"}})
    async def reopen(refund_id: str, body: Reopen, user: staff) -> dict:  # or the refusal as a JSONResponse
        """New due/expiry from now; emits `refund.review-reopened.v1` with the reason as its note."""
        return await answered(refund_id, desk.reopen(refund_id, user, body.reason.strip()))

    @router.post("/disputes", summary="Flag or clear an open dispute/chargeback on a payment", tags=["risk"])
    async def flag_dispute(request: Request, flag: DisputeFlag,
                           user: Annotated[StaffUser, Depends(auth.require(Role.SENIOR_REVIEWER,
                                                                           Role.FINANCE_LEAD))]) -> dict:
        async with request.app.state.pool.acquire() as conn, conn.transaction():
            await store.set_dispute(conn, flag.gateway, flag.payment_id, flag.open, flag.reason, user.user_id)
        return {"gateway": flag.gateway, "payment_id": flag.payment_id, "open": flag.open,
                "updated_by": user.user_id, "updated_at": datetime.now().astimezone()}

    return router
