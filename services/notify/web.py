"""Notify's HTTP side: the tracking API and the customer's signed tracking page."""

import hashlib
import hmac
import time
from collections.abc import Callable
from typing import Annotated

import asyncpg
import jwt
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import Counter

from services.notify import domain, signing, store
from services.notify.messages import render_page, render_refused
from shared.runtime.http_limits import RateLimit
from shared.contract.events import Status
from shared.contract.lifecycle import TERMINAL_STATUSES
from shared.runtime.staff import StaffVerifier

LOOKUPS = Counter("refund_tracking_lookups_total", "Refund status look-ups (API and customer page)", ["via"])
REPEAT_LOOKUPS = Counter(
    "refund_tracking_repeat_lookups_total", "Look-ups of a refund that had been looked up before (repeat inquiries)",
    ["via"])


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


def customer_pages(pool: Callable[[], asyncpg.Pool], *, link_secret: str, feedback_url: str, rate_limit: RateLimit,
                   clock: Callable[[], float] = time.time) -> APIRouter:
    """The signed customer page and its opt-out, each limited per client address."""
    async def per_client(request: Request) -> None:
        await rate_limit.check(_client(request))

    router = APIRouter(dependencies=[Depends(per_client)])

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
        row = _counted(await store.count_inquiry(pool(), "refund_id = $1", refund_id), "page")
        if row is None:
            raise HTTPException(status_code=404, detail="no such refund")
        customer = row["customer"] or {}
        locale = domain.customer_locale(request.query_params.get("lang") or customer.get("locale"))
        opted_out = await store.opted_out(pool(), row["source"], customer.get("id"))
        return HTMLResponse(render_page(dict(row), locale=locale, opt_out_action=f"/r/{token}/opt-out",
                                        opted_out=opted_out, feedback_url=feedback_url))

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

    return router
