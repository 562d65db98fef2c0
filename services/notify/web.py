"""Notify's HTTP side: the tracking API and the customer's signed tracking page."""

import hashlib
import hmac
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated

import asyncpg
import jwt
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from fastapi import Form
from prometheus_client import Counter, Histogram
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.notify import destination, domain, signing, store
from services.notify.handlers import SOURCE
from services.notify.messages import render_page, render_refused
from shared.runtime.http_limits import RateLimit
from shared.contract.envelope import encode
from shared.contract.events import Channel, Status
from shared.contract.lifecycle import TERMINAL_STATUSES
from shared.runtime.staff import StaffVerifier

LOOKUPS = Counter("refund_tracking_lookups_total", "Refund status look-ups (API and customer page)", ["via"])
REPEAT_LOOKUPS = Counter(
    "refund_tracking_repeat_lookups_total", "Look-ups of a refund that had been looked up before (repeat inquiries)",
    ["via"])


FEEDBACK_RATING = Histogram("refund_feedback_rating", "Customers' first rating of a finished refund (1-5)",
                            buckets=(1, 2, 3, 4, 5))
FEEDBACK = Counter("refund_feedback_total", "Customer feedback given on finished refunds", ["kind"])
DESTINATIONS = Counter("refund_destinations_provided_total",
                       "New bank accounts customers gave for failed refunds, by outcome", ["outcome"])


def _counted(row: asyncpg.Record | None, via: str) -> asyncpg.Record | None:
    if row is not None:
        LOOKUPS.labels(via).inc()
        if row["inquiries"] > 1:
            REPEAT_LOOKUPS.labels(via).inc()
    return row


def tracking(row: asyncpg.Record) -> dict:
    """The public tracking view of one refund."""
    status = Status(row["status"])
    stages = domain.timeline(row["timeline"])
    return {
        "refund_id": row["refund_id"], "request_id": row["request_id"], "source": row["source"],
        "order_id": row["order_id"], "status": status.value, "amount": row["amount"],
        "reason_codes": list(row["reason_codes"]), "eta": row["eta"], "progress": domain.PROGRESS[status],
        # {status: timestamp}, in pipeline order; `stages` is the same as a list.
        "timeline": {stage["status"]: stage["at"] for stage in stages}, "stages": stages,
        "terminal": status in TERMINAL_STATUSES, "deadlines": row["deadlines"],
        "inquiries": row["inquiries"], "updated_at": row["updated_at"],
        # Every status and timeline-only event in the order it happened, a re-driven payout's attempts apart.
        "history": domain.history_in_order(row["history"]), "payout_attempt": row["payout_attempt"],
    }


def tracking_access(api_keys: dict[str, str], staff: StaffVerifier, rate_limit: RateLimit) -> Callable:
    """Who may use the tracking API: a platform's API key sees that platform's refunds,
    a staff bearer token (any role) sees all. With no keys configured the API is open
    (local runs); the dependency then gives None, "every platform"."""
    bearer = HTTPBearer(auto_error=False)

    async def platform_scope(request: Request,
                             credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> str | None:
        # Per key (hashed: the limiter's storage may be shared); per client address while the API is open.
        caller = hashlib.sha256(credentials.credentials.encode()).hexdigest() if credentials else _client(request)
        await rate_limit.check(caller)
        if not api_keys:
            return None
        if credentials is None:
            raise HTTPException(401, "missing bearer token (a platform API key or a staff token)",
                                headers={"WWW-Authenticate": "Bearer"})
        offered = credentials.credentials.encode()
        for key, source in api_keys.items():
            if hmac.compare_digest(key.encode(), offered):
                return source
        try:
            await staff.verify(credentials.credentials)
        except jwt.InvalidTokenError:
            raise HTTPException(401, "not a platform API key or a valid staff token",
                                headers={"WWW-Authenticate": "Bearer"}) from None
        return None

    return platform_scope


def tracking_api(pool: Callable[[], asyncpg.Pool], access: Callable) -> APIRouter:
    """`GET /v1/refunds/{refund_id}` and `GET /v1/refunds?source=&request_id=`; each look-up is counted.
    A platform asking about another platform's refund gets the same 404 as for no refund."""
    router = APIRouter()
    Scope = Annotated[str | None, Depends(access)]

    @router.get("/v1/refunds/{refund_id}")
    async def refund_by_id(refund_id: str, scope: Scope) -> dict:
        """A refund's status, stage timeline, progress (percent), ETA and reason codes."""
        row = _counted(await store.count_inquiry(
            pool(), "refund_id = $1 AND ($2::text IS NULL OR source = $2)", refund_id, scope), "api")
        if row is None:
            raise HTTPException(status_code=404, detail=f"no refund {refund_id}")
        return tracking(row)

    @router.get("/v1/refunds")
    async def refund_by_request(scope: Scope, source: str = Query(min_length=1),
                                request_id: str = Query(min_length=1)) -> dict:
        """The same, found by the platform's own keys (source, request_id)."""
        row = None
        if scope is None or scope == source:
            row = _counted(await store.count_inquiry(
                pool(), "source = $1 AND request_id = $2", source, request_id), "api")
        if row is None:
            raise HTTPException(status_code=404, detail=f"no refund for request {request_id} from {source}")
        return tracking(row)

    return router


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def customer_pages(pool: Callable[[], asyncpg.Pool], *, link_secret: str, rate_limit: RateLimit,
                   unit_of_work: Callable, destination_key: X25519PublicKey,
                   clock: Callable[[], float] = time.time) -> APIRouter:
    """The signed customer page, its opt-out, the new bank account of a failed refund and the feedback
    form, each limited per client address; and the feedback API behind the same signed link."""
    async def per_client(request: Request) -> None:
        await rate_limit.check(_client(request))

    router = APIRouter(dependencies=[Depends(per_client)])

    async def _page(token: str, request: Request, refund_id: str, *, status_code: int = 200,
                    destination_error: str | None = None, feedback_error: str | None = None) -> HTMLResponse:
        row = _counted(await store.count_inquiry(pool(), "refund_id = $1", refund_id), "page")
        if row is None:
            raise HTTPException(status_code=404, detail="no such refund")
        customer = row["customer"] or {}
        locale = domain.customer_locale(request.query_params.get("lang") or customer.get("locale"))
        opted_out = await store.opted_out(pool(), row["source"], customer.get("id"))
        destination = await store.destination_for(pool(), refund_id, row["payout_attempt"])
        feedback = await store.feedback_of(pool(), refund_id)
        return HTMLResponse(render_page(
            dict(row), locale=locale, action=f"/r/{token}", opted_out=opted_out,
            destination=dict(destination) if destination else None, destination_error=destination_error,
            feedback=dict(feedback) if feedback else None, feedback_error=feedback_error), status_code=status_code)

    def _read(token: str, request: Request) -> str | HTMLResponse:
        try:
            return signing.read_link(link_secret, token, clock())
        except signing.LinkRefused as refused:
            locale = domain.customer_locale(request.query_params.get("lang")
                                            or request.headers.get("accept-language", "en").split(",")[0])
            return HTMLResponse(render_refused(refused.reason, locale), status_code=403)

    @router.get("/r/{token}", response_class=HTMLResponse, include_in_schema=False)
    async def customer_page(token: str, request: Request) -> HTMLResponse:
        refund_id = _read(token, request)
        if isinstance(refund_id, HTMLResponse):
            return refund_id
        return await _page(token, request, refund_id)

    @router.post("/r/{token}/opt-out", include_in_schema=False)
    async def opt_out(token: str, request: Request):
        """The customer asks for no more email/SMS (webhooks to the platform continue)."""
        refund_id = _read(token, request)
        if isinstance(refund_id, HTMLResponse):
            return refund_id
        row = await pool().fetchrow("SELECT source, customer FROM notify.refund_status WHERE refund_id = $1",
                                    refund_id)
        if row is None or not (row["customer"] or {}).get("id"):
            raise HTTPException(status_code=404, detail="no such refund")
        await store.opt_out(pool(), row["source"], row["customer"]["id"])
        return RedirectResponse(f"/r/{token}", status_code=303)

    @router.post("/r/{token}/destination", include_in_schema=False)
    async def give_destination(token: str, request: Request, holder: Annotated[str, Form()] = "",
                               iban: Annotated[str, Form()] = ""):
        """A failed refund's customer gives a bank account to pay it to: checked, sealed for payout and
        published (`refund.destination-provided.v1`) with the row that keeps it to one per failed attempt."""
        refund_id = _read(token, request)
        if isinstance(refund_id, HTMLResponse):
            return refund_id
        try:
            account = destination.bank_account(holder, iban)
        except destination.DestinationRefused as refused:
            DESTINATIONS.labels(f"invalid_{refused.code}").inc()
            return await _page(token, request, refund_id, status_code=422, destination_error=refused.code)
        outcome = await _provide(refund_id, account)
        DESTINATIONS.labels(outcome).inc()
        if outcome == "not_failed":
            return await _page(token, request, refund_id, status_code=409, destination_error="not_failed")
        return RedirectResponse(f"/r/{token}#destination", status_code=303)

    async def _provide(refund_id: str, account: destination.BankAccount) -> str:
        async with unit_of_work() as uow:
            row = await store.lock_status(uow.conn, refund_id)
            if row is None:
                raise HTTPException(status_code=404, detail="no such refund")
            if not redrivable(row):
                return "not_failed"
            now = datetime.now(UTC)
            if not await store.record_destination(uow.conn, refund_id, row["payout_attempt"],
                                                  Channel.BANK_TRANSFER.value, account.summary, now):
                return "already_given"  # one pending destination per failed attempt: the first stays
            uow.emit(encode(destination.provided(account, refund_id, destination_key, now), source=SOURCE,
                            key=refund_id))
            return "provided"

    @router.post("/r/{token}/feedback", include_in_schema=False)
    async def feedback_form(token: str, request: Request, rating: Annotated[str, Form()] = "",
                            comment: Annotated[str, Form()] = ""):
        refund_id = _read(token, request)
        if isinstance(refund_id, HTMLResponse):
            return refund_id
        try:
            given = Feedback(rating=rating, comment=comment or None)
        except ValidationError:
            return await _page(token, request, refund_id, status_code=422, feedback_error="invalid")
        if not await _keep_feedback(refund_id, given):
            return await _page(token, request, refund_id, status_code=409, feedback_error="not_finished")
        return RedirectResponse(f"/r/{token}#feedback", status_code=303)

    @router.post("/v1/refunds/{refund_id}/feedback")
    async def feedback_api(refund_id: str, given: Feedback, request: Request,
                           token: Annotated[str | None, Query(description="the customer link's token")] = None):
        """The customer's 1–5 rating and optional comment of a finished refund (one per refund; sending
        again replaces it). Authorised by the signed customer link's token (`?token=`, the part after `/r/`)."""
        if not token:
            raise HTTPException(401, "missing token: the signed customer link's token (?token=)")
        try:
            linked = signing.read_link(link_secret, token, clock())
        except signing.LinkRefused as refused:
            raise HTTPException(403, f"customer link {refused.reason}") from None
        if linked != refund_id:
            raise HTTPException(403, "the customer link is for another refund")
        saved = await _keep_feedback(refund_id, given)
        if saved is None:
            raise HTTPException(409, f"refund {refund_id} is not finished yet: feedback is asked once it is")
        return {"refund_id": refund_id, "rating": saved["rating"], "comment": saved["comment"], "at": saved["at"]}

    async def _keep_feedback(refund_id: str, given: "Feedback") -> asyncpg.Record | None:
        status = await pool().fetchval("SELECT status FROM notify.refund_status WHERE refund_id = $1", refund_id)
        if status is None:
            raise HTTPException(status_code=404, detail=f"no refund {refund_id}")
        if Status(status) not in TERMINAL_STATUSES:
            return None
        saved = await store.save_feedback(pool(), refund_id, given.rating, given.comment)
        if saved["first"]:
            FEEDBACK_RATING.observe(given.rating)
        FEEDBACK.labels("new" if saved["first"] else "updated").inc()
        return saved

    return router


class Feedback(BaseModel):
    """A customer's rating of a finished refund."""

    model_config = ConfigDict(extra="forbid")
    rating: int = Field(ge=1, le=5, description="1 (bad) to 5 (very good)")
    comment: str | None = Field(default=None, max_length=1000)


def redrivable(row: asyncpg.Record) -> bool:
    """A failed payout that was not money coming back (a reversal is not paid again from the page)."""
    return row["status"] == Status.FAILED.value

