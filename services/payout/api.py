"""Payout's HTTP API: the gateways' signed webhooks, `POST /v1/gateway-events/{gateway}`; and the payout
desk (`payouts_router`): attempts, failed payouts awaiting an exit, and exits (services/payout/exits.py).

400: not the gateway's (bad or missing signature, a timestamp outside the window,
an item for another merchant account, unreadable): nothing is recorded. 404: no
route by that name. 200 with the gateway's acknowledgement otherwise, replays too
(a replayed event id changes nothing), so the gateway stops re-sending.
"""

import json
from collections.abc import Collection, Mapping
from typing import Annotated, Literal

import asyncpg
import structlog
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError

from services.payout import domain, exit_store
from services.payout.exit_store import ExitAsked
from services.payout.exits import ExitNotTaken, PayoutExits
from services.payout.gateway import Gateway, WebhookRejected
from services.payout.webhooks import WEBHOOKS, GatewayEventReceiver
from shared.runtime.roles import Role
from shared.runtime.stage import Stage
from shared.runtime.staff import StaffAuth, StaffUser

log = structlog.get_logger()


def gateway_events_router(gateways: Mapping[str, Gateway], receiver: GatewayEventReceiver) -> APIRouter:
    router = APIRouter(prefix="/v1")

    @router.post("/gateway-events/{gateway}", responses={400: {"description": "not signed by the gateway"},
                                                          404: {"description": "no route by that name"}})
    async def gateway_event(gateway: str, request: Request) -> Response:
        """A gateway's webhook: verified, recorded under its event ids, applied once."""
        adapter = gateways.get(gateway)
        if adapter is None:
            raise HTTPException(404, f"no gateway route named {gateway!r}")
        payload = await request.body()
        try:
            events = adapter.events(payload, request.headers)
        except WebhookRejected as rejected:
            WEBHOOKS.labels(gateway, f"rejected_{rejected.reason}").inc()
            log.warning("gateway_webhook_rejected", gateway=gateway, reason=rejected.reason)
            raise HTTPException(400, f"webhook rejected: {rejected.reason}") from rejected
        fresh = await receiver.receive(gateway, events) if events else 0
        WEBHOOKS.labels(gateway, "accepted" if fresh else "replayed" if events else "no_outcome").inc()
        return Response(adapter.acknowledgement.body, media_type=adapter.acknowledgement.media_type)

    return router


# Why, for the audit trail: required, not blank, at most 500 characters.
Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]


class RerouteExit(BaseModel):
    """Staff pay the failed refund again through another configured gateway (senior_reviewer, finance_lead)."""

    model_config = ConfigDict(extra="forbid")
    exit: Literal["reroute"]
    gateway: Annotated[str, Field(min_length=1, max_length=64)]
    reason: Reason


class PaidOutsideExit(BaseModel):
    """Finance recorded that the money reached the customer outside the pipeline (finance_lead only)."""

    model_config = ConfigDict(extra="forbid")
    exit: Literal["paid_outside"]
    reference: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
                         Field(description="the payment's reference (bank transfer id, cheque number)")]
    evidence: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000),
                        Field(description="where the proof is (ticket, statement)")]
    reason: Reason


EXIT_BODY = TypeAdapter(Annotated[RerouteExit | PaidOutsideExit, Field(discriminator="exit")])


def _money(value: int, currency: str) -> dict:
    return {"value": value, "currency": currency}


def _time(value) -> str | None:
    return value.isoformat() if value else None


def exit_json(row) -> dict:
    return {"attempt": row["attempt"], "exit": row["exit"], "state": row["state"],
            "requested_by": row["requested_by"], "reason": row["reason"], "requested_at": _time(row["requested_at"]),
            "gateway": row["gateway"], "destination_summary": row["destination_summary"],
            "reference": row["reference"], "evidence": row["evidence"], "decided_at": _time(row["decided_at"]),
            "refusal": json.loads(row["refusal"]) if isinstance(row["refusal"], str) else row["refusal"]}


def _attempt_json(row) -> dict:
    return {"attempt": row["attempt"], "payout_id": row["payout_id"], "gateway": row["gateway"],
            "status": row["status"], "gateway_ref": row["gateway_ref"], "failure_reason": row["failure_reason"],
            "idempotency_key": row["idempotency_key"], "amount": _money(row["amount_value"], row["currency"]),
            "created_at": _time(row["created_at"]), "updated_at": _time(row["updated_at"])}


def payouts_router(stage: Stage, exits: PayoutExits, auth: StaffAuth, gateways: Collection[str]) -> APIRouter:
    """The payout desk: a refund's payout attempts and exits, the failed ones awaiting an exit, and exits."""
    router = APIRouter(prefix="/v1", tags=["payouts"])
    staff = Depends(auth.require(*Role))
    exit_roles = Depends(auth.require(Role.SENIOR_REVIEWER, Role.FINANCE_LEAD))

    @router.get("/payouts", summary="Failed payouts awaiting an exit, oldest first")
    async def failed_payouts(user: Annotated[StaffUser, staff], status: Literal["failed"] = "failed",
                             limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> dict:
        rows = await exit_store.failed_awaiting_exit(stage.pool, limit)
        return {"payouts": [{"refund_id": r["refund_id"], "attempt": r["attempt"], "gateway": r["gateway"],
                             "failure_reason": r["failure_reason"], "amount": _money(r["amount_value"], r["currency"]),
                             "failed_at": _time(r["failed_at"]), "exit_pending": r["exit_pending"]} for r in rows]}

    @router.get("/payouts/{refund_id}", summary="A refund's payout: every attempt and every exit")
    async def payout(refund_id: str, user: Annotated[StaffUser, staff]) -> dict:
        async with stage.pool.acquire() as conn:
            attempts = await exit_store.attempts_of(conn, refund_id)
            exit_rows = await exit_store.exits_of(conn, refund_id)
            current = await conn.fetchrow("SELECT status, failure_reason FROM payout.payouts WHERE refund_id = $1",
                                          refund_id)
        if current is None:
            raise HTTPException(404, f"no payout for refund {refund_id!r}")
        pending = any(row["state"] == "requested" for row in exit_rows)
        open_ = domain.exit_conflict(current["status"], current["failure_reason"], pending) is None
        return {"refund_id": refund_id, "status": current["status"],
                "attempts": [_attempt_json(row) for row in attempts], "exits": [exit_json(row) for row in exit_rows],
                "exit_options": list(domain.EXIT_OPTIONS) if open_ else [], "gateways": sorted(gateways)}

    @router.post("/payouts/{refund_id}/exits", status_code=202, summary="Take a failed payout out another way",
                 responses={404: {"description": "no payout for that refund"},
                            409: {"description": "the payout is not failed, or an exit is already in progress"},
                            422: {"description": "a bad body, or a gateway without a route"}})
    async def request_exit(refund_id: str, request: Request, user: Annotated[StaffUser, exit_roles]) -> dict:
        """Re-route (`{"exit": "reroute", "gateway", "reason"}`) or record it paid outside the pipeline
        (`{"exit": "paid_outside", "reference", "evidence", "reason"}`, finance_lead only); audited.
        Nothing is paid until intake has reserved the amount on the payment again."""
        try:
            body = EXIT_BODY.validate_json(await request.body())
        except ValidationError as error:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in error.errors())
            raise HTTPException(422, f"invalid exit: {problems}") from None
        if body.exit == "paid_outside" and not user.has_any((Role.FINANCE_LEAD,)):
            raise HTTPException(403, "recording a payout as paid outside the pipeline requires the finance_lead role")
        asked = ExitAsked(body.exit, user.user_id, body.reason,
                          evidence=getattr(body, "evidence", None), reference=getattr(body, "reference", None),
                          gateway=getattr(body, "gateway", None))
        try:
            async with stage.unit_of_work() as uow:
                recorded, events = await exits.request(uow.conn, refund_id, asked)
                uow.emit(*events)
        except ExitNotTaken as not_taken:
            raise HTTPException(not_taken.status, not_taken.message) from None
        except asyncpg.UniqueViolationError:  # a concurrent request for the same refund got in first
            raise HTTPException(409, "an exit for this payout is already in progress") from None
        return exit_json(recorded)

    return router
