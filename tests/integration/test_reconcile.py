"""Reconcile against uploaded Stripe and Adyen files: every category, late lines, the queue, the invariant."""

import uuid

import httpx
import pytest

from shared.runtime.roles import Role
from tests.integration.helpers import staff_auth, wait_until
from tests.integration.service_fixtures import service_configured
from tests.integration.settlement_reports import (
    ADYEN_HEADER, FINANCE, STRIPE_HEADER, adyen_line, publish_paid as _paid, stripe_line as _stripe_line,
)

pytestmark = pytest.mark.integration


async def test_every_category_late_lines_resolve_and_invariant(stack, producer, db):
    n = uuid.uuid4().hex[:8]
    ref = {name: f"re_{name}_{n}" for name in ("ok", "amount", "ccy", "late", "dup", "orphan", "lost", "fee")}
    with service_configured(stack, "reconcile", RECONCILE_SLA_SECONDS="6",
                            RECONCILE_MISSING_INTERNALLY_AFTER_SECONDS="3"):
        url = stack.service_url("reconcile")
        for name in ("ok", "amount", "ccy", "late", "dup", "lost", "fee"):
            # The late refund was paid through Adyen: its line comes in Adyen's report.
            await _paid(producer, ref[name], 2500, gateway="adyen" if name == "late" else "stripe")
        report = "\n".join([
            STRIPE_HEADER,
            _stripe_line(f"txn_ok_{n}", ref["ok"], "-25.00"),                   # line 2: matched
            _stripe_line(f"txn_amount_{n}", ref["amount"], "-24.99"),           # 3: amount_mismatch
            _stripe_line(f"txn_ccy_{n}", ref["ccy"], "-25.00", currency="usd"), # 4: currency_mismatch
            _stripe_line(f"txn_dup1_{n}", ref["dup"], "-25.00"),                # 5: matched
            _stripe_line(f"txn_dup2_{n}", ref["dup"], "-25.00"),                # 6: duplicate
            _stripe_line(f"txn_orphan_{n}", ref["orphan"], "-9.00"),            # 7: missing_internally
            _stripe_line(f"txn_bad1_{n}", ref["ok"], "-25.001"),                # 8: too many decimals
            _stripe_line(f"txn_bad2_{n}", "", "-25.00"),                        # 9: missing source_id
            f"txn_bad3_{n},2026-11-24,eur,-25.00",                              # 10: wrong column count
            _stripe_line(f"txn_charge_{n}", "ch_1", "50.00", category="charge"),  # 11: ignored, not a refund
            f"txn_net_{n},2026-11-24,2026-11-26,eur,-25.00,0.00,-20.00,refund,{ref['ok']},x",  # 12: net != gross-fee
            f"txn_fee_{n},2026-11-24,2026-11-26,eur,-25.00,5.00,-30.00,refund,{ref['fee']},x",  # 13: fee 20%
        ]) + "\n"
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            assert (await http.post("/v1/settlements?format=stripe", content=report)).status_code == 401
            first = await http.post("/v1/settlements?format=stripe", content=report,
                                    headers=FINANCE | {"Content-Type": "text/csv"})
            assert first.status_code == 200, first.text
            summary = first.json()
            assert summary["rows"] == 12 and summary["lines_new"] == 7 and not summary["duplicate_file"]
            assert [(e["line_no"], e["field"]) for e in summary["errors"]] == [
                (8, "gross"), (9, "source_id"), (10, "*"), (12, "net")]
            assert summary["ignored"] == [{"line": 11, "why": "reporting_category charge is not a refund"}]
            again = (await http.post("/v1/settlements?format=stripe", content=report, headers=FINANCE)).json()
            assert again["duplicate_file"] and again["report_id"] == summary["report_id"]
            assert await db.fetchval("SELECT count(*) FROM reconcile.settlement_lines WHERE gateway_ref = ANY($1)",
                                     list(ref.values())) == 7

            async def categories():
                rows = await db.fetch("SELECT category, gateway_ref FROM reconcile.discrepancies "
                                      "WHERE status = 'open' AND gateway_ref = ANY($1)", list(ref.values()))
                found = {(r["category"], r["gateway_ref"]) for r in rows}
                expected = {("amount_mismatch", ref["amount"]), ("currency_mismatch", ref["ccy"]),
                            ("duplicate", ref["dup"]), ("missing_internally", ref["orphan"]),
                            ("missing_in_report", ref["late"]), ("missing_in_report", ref["lost"]),
                            ("fee_mismatch", ref["fee"])}
                return found if found == expected else None
            await wait_until(categories, timeout=60)
            states = dict(await db.fetch("SELECT gateway_ref, state FROM reconcile.payouts WHERE gateway_ref = ANY($1)",
                                         list(ref.values())))
            assert states[ref["ok"]] == "matched" and states[ref["dup"]] == "matched"

            # The late line arrives in an Adyen report: it re-matches, the alarm closes by itself.
            adyen = ADYEN_HEADER + "\n" + adyen_line(ref["late"], "25.00") + "\n"
            late = (await http.post("/v1/settlements?format=adyen", content=adyen, headers=FINANCE)).json()
            assert late["lines_new"] == 1 and late["errors"] == []

            async def rematched():
                return await db.fetchval("SELECT state = 'matched' FROM reconcile.payouts WHERE gateway_ref = $1",
                                         ref["late"])
            await wait_until(rematched, timeout=30)
            assert await db.fetchval("SELECT status FROM reconcile.discrepancies WHERE gateway_ref = $1",
                                     ref["late"]) == "auto_resolved"

            # The paid event for the orphan line arrives late: the line matches, its alarm closes.
            await _paid(producer, ref["orphan"], 900)

            async def orphan_matched():
                return await db.fetchval("SELECT state = 'matched' FROM reconcile.payouts WHERE gateway_ref = $1",
                                         ref["orphan"])
            await wait_until(orphan_matched, timeout=30)
            assert await db.fetchval("SELECT status FROM reconcile.discrepancies WHERE gateway_ref = $1 "
                                     "AND category = 'missing_internally'", ref["orphan"]) == "auto_resolved"

            # Resolving: finance only, reason required, audited.
            lost = await db.fetchval("SELECT id FROM reconcile.discrepancies WHERE gateway_ref = $1", ref["lost"])
            path = f"/v1/discrepancies/{lost}/resolve"
            assert (await http.post(path, json={"reason": "gateway confirmed"},
                                    headers=staff_auth("fin-ana", Role.REVIEWER))).status_code == 403
            assert (await http.post(path, json={}, headers=FINANCE)).status_code == 422
            done = await http.post(path, json={"reason": "gateway confirmed payout by phone"}, headers=FINANCE)
            assert done.status_code == 200 and done.json()["resolved_by"] == "fin-ana"
            assert (await http.post(path, json={"reason": "twice"}, headers=FINANCE)).status_code == 409
            audit = await db.fetchrow("SELECT actor, action, reason FROM reconcile.discrepancy_audit "
                                      "WHERE discrepancy_id = $1", lost)
            assert tuple(audit) == ("fin-ana", "resolved", "gateway confirmed payout by phone")
            queue = (await http.get("/v1/discrepancies", headers=FINANCE)).json()
            assert lost not in {d["id"] for d in queue}

            # Invariant 5, to the minor unit, across everything reconcile holds.
            ledger = (await http.get("/v1/ledger", headers=FINANCE)).json()["currencies"]
            eur = next(entry for entry in ledger if entry["currency"] == "EUR")
            assert eur["open_discrepancies"] >= 3 * 2500 and eur["resolved"] >= 2500
            assert all(entry["imbalance"] == 0 for entry in ledger), ledger
            metrics = (await http.get("/metrics")).text
            assert 'refund_ledger_imbalance_minor{currency="EUR"} 0.0' in metrics
