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


def _plain(row: dict) -> dict:
    return {key: value.isoformat() if isinstance(value, datetime) else value for key, value in row.items()}


def _payout_json(row) -> dict:
    return {"gateway": row["gateway"], "gateway_ref": row["gateway_ref"], "attempt": row["attempt"],
            "paid_outside": row["paid_outside"], "amount": {"value": row["amount_value"], "currency": row["currency"]},
            "expected": {"value": row["expected_value"], "currency": row["expected_currency"]},
            "state": row["state"], "category": row["category"], "paid_at": row["paid_at"].isoformat(),
            "settled_at": row["settled_at"].isoformat() if row["settled_at"] else None}


def _line_json(row) -> dict:
    return {"gateway": row["gateway"], "report_id": row["report_id"], "gateway_ref": row["gateway_ref"],
            "amount": {"value": row["amount_value"], "currency": row["currency"]},
            "fee": {"value": row["fee_value"], "currency": row["currency"]}, "line_type": row["kind"],
            "matched": row["state"] == "matched", "state": row["state"],
            "received_at": (row["report_received_at"] or row["ingested_at"]).isoformat()}


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
    async def ledger(user: Annotated[StaffUser, finance]) -> dict:
        """The ledger invariant per currency (minor units): `balanced` when paid = matched + open (+ resolved
        by finance + awaiting a line within the SLA), i.e. `imbalance` is 0. FX-tolerance matches count at
        payout's expected amount in `matched`; `fx_difference` is what the gateway settled beyond it."""
        async with stage.pool.acquire() as conn:
            entries = await store.ledger(conn)
        return {"currencies": [
            dict(vars(entry), matched=entry.matched_settled, open=entry.open_discrepancies,
                 balanced=entry.imbalance == 0, imbalance=entry.imbalance, settled_by_gateway=entry.settled_by_gateway)
            for entry in entries]}

    @router.get("/refunds/{refund_id}/settlement")
    async def settlement(refund_id: str, user: Annotated[StaffUser, finance]) -> dict:
        """Where one refund's money stands: what was paid, the settlement lines bearing its reference, and
        its discrepancies (open and closed)."""
        payout, lines, discrepancies = await store.settlement_of(stage.pool, refund_id)
        if payout is None and not discrepancies:
            raise HTTPException(404, f"reconcile has no paid refund {refund_id!r}")
        return {"refund_id": refund_id, "payout": _payout_json(payout) if payout else None,
                "lines": [_line_json(line) for line in lines],
                "discrepancies": [_plain(dict(row)) for row in discrepancies]}

    return router
