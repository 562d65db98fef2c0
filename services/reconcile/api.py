"""Reconcile's back-office HTTP API: settlement uploads, the discrepancy queue, the ledger."""

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Depends, HTTPException, Query
from pydantic import BaseModel, Field

from services.reconcile import store
from services.reconcile.handlers import refund_event
from services.reconcile.domain import GatewayRef, Match
from services.reconcile.settlement_files import FORMATS
from shared.contract.money import Money
from shared.runtime.stage import Stage
from shared.runtime.staff import Role, StaffAuth, StaffUser


class Resolution(BaseModel):
    reason: Annotated[str, Field(min_length=3, max_length=2000)]


def settlement_router(stage: Stage, auth: StaffAuth) -> APIRouter:
    router = APIRouter(prefix="/v1")
    finance = Depends(auth.require(Role.FINANCE_LEAD))

    @router.post("/settlements", status_code=200)
    async def upload_settlement(
        report: Annotated[str, Body(media_type="text/csv")],
        user: Annotated[StaffUser, finance],
        format: Annotated[Literal["stripe", "adyen"], Query(description=f"one of {FORMATS}")],
        gateway: Annotated[str | None, Query(description="whose report it is (default: the format's name); "
                                                         "its lines match only refunds paid on that gateway")] = None,
    ) -> dict:
        """A gateway's settlement report file (CSV body). Re-uploading the same file changes nothing."""
        async with stage.pool.acquire() as conn, conn.transaction():
            summary = await store.ingest_report(conn, gateway=gateway or format, fmt=format, text=report,
                                                received_from=f"upload:{user.user_id}")
        stage.committed.set()  # wake the matcher
        return summary

    @router.get("/discrepancies")
    async def list_discrepancies(
        user: Annotated[StaffUser, finance],
        status: Literal["open", "resolved", "auto_resolved"] = "open",
        category: str | None = None,
        gateway: str | None = None,
        gateway_ref: Annotated[str | None, Query(description="a reference is only unique on its gateway")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    ) -> list[dict]:
        rows = await store.discrepancies(stage.pool, status=status, category=category, gateway=gateway,
                                         gateway_ref=gateway_ref, limit=limit)
        return [dict(row) for row in rows]

    @router.post("/discrepancies/{discrepancy_id}/resolve")
    async def resolve(discrepancy_id: int, resolution: Resolution, user: Annotated[StaffUser, finance]) -> dict:
        """Close an open discrepancy with a reason; audited. A paid refund's money then counts as resolved."""
        now = datetime.now(UTC)
        async with stage.unit_of_work() as uow:
            conn = uow.conn
            row = await store.resolve_discrepancy(conn, discrepancy_id, closed_at=now, resolved_by=user.user_id,
                                                  reason=resolution.reason)
            if row is None:
                exists = await store.discrepancy_status(conn, discrepancy_id)
                raise HTTPException(404 if exists is None else 409,
                                    "no such discrepancy" if exists is None else f"discrepancy is {exists}")
            await store.audit_resolution(conn, discrepancy_id, actor=user.user_id, reason=resolution.reason)
            outgoing = []
            if row["refund_id"]:
                payout = await store.resolve_payout(conn, row["refund_id"], GatewayRef.of(row), settled_at=now)
                if payout:
                    settled = Money(value=row["settled_value"] or 0,
                                    currency=row["settled_currency"] or payout["expected_currency"])
                    outgoing = [refund_event(payout, Match("matched", "resolved"), settled, now,
                                              reason_codes=[f"resolved:{row['category']}"])]
            uow.emit(*outgoing)
        return dict(row)

    @router.get("/ledger")
    async def ledger(user: Annotated[StaffUser, finance]) -> list[dict]:
        """The ledger invariant per currency: imbalance must be 0. FX-tolerance matches count at payout's
        expected amount in `matched_settled`; `fx_difference` is what the gateway settled beyond it."""
        async with stage.pool.acquire() as conn:
            entries = await store.ledger(conn)
        return [dict(vars(entry), imbalance=entry.imbalance, settled_by_gateway=entry.settled_by_gateway)
                for entry in entries]

    return router
