"""A gateway reference is only unique on its own gateway: reconcile matches on (gateway, reference).

Two gateways may issue the same reference string; each paid refund then reconciles against its own
gateway's settlement lines, and neither is dead-lettered, mismatched or taken for the other's duplicate.
"""

import uuid

import httpx
import pytest

from shared.contract import topics
from tests.integration.helpers import TopicTail, wait_until
from tests.integration.service_fixtures import service_configured
from tests.integration.settlement_reports import (
    ADYEN_HEADER, FINANCE, STRIPE_HEADER, adyen_line, publish_paid, stripe_line,
)

pytestmark = pytest.mark.integration
CSV = FINANCE | {"Content-Type": "text/csv"}


async def _upload(http: httpx.AsyncClient, fmt: str, gateway: str, header: str, *lines: str) -> dict:
    answer = await http.post(f"/v1/settlements?format={fmt}&gateway={gateway}",
                             content="\n".join([header, *lines]) + "\n", headers=CSV)
    assert answer.status_code == 200, answer.text
    assert answer.json()["errors"] == [] and answer.json()["lines_new"] == len(lines), answer.text
    return answer.json()


async def _assert_ledger_balances(http: httpx.AsyncClient) -> None:
    ledger = (await http.get("/v1/ledger", headers=FINANCE)).json()["currencies"]
    assert ledger and all(entry["imbalance"] == 0 for entry in ledger), ledger


async def test_one_reference_on_two_gateways_reconciles_each_to_the_cent(stack, producer, db):
    ref = f"re_shared_{uuid.uuid4().hex[:10]}"
    async with TopicTail(stack.bootstrap, topics.DLQ, topics.RECONCILED, topics.DISCREPANCY) as tail, \
            httpx.AsyncClient(base_url=stack.service_url("reconcile"), timeout=30) as http:
        on_stripe = await publish_paid(producer, ref, 2500, gateway="stripe")
        on_adyen = await publish_paid(producer, ref, 4000, gateway="adyen")
        await _upload(http, "stripe", "stripe", STRIPE_HEADER, stripe_line(f"txn_{ref}", ref, "-25.00"))
        await _upload(http, "adyen", "adyen", ADYEN_HEADER, adyen_line(ref, "40.00"))

        # The first outcome each refund gets: reconciled, a discrepancy, or its paid event dead-lettered.
        outcomes: dict[str, tuple] = {}

        def both_decided(event: dict) -> bool:
            data = event["data"]
            if event["type"] == "refund.dead-lettered.v1" and data.get("key") in (on_stripe, on_adyen):
                outcomes.setdefault(data["key"], ("dead-lettered", data["error"][:300]))
            elif data.get("refund_id") in (on_stripe, on_adyen):
                outcomes.setdefault(data["refund_id"],
                                    (event["type"], data.get("settled_amount"), data.get("category")))
            return len(outcomes) == 2
        await tail.wait_for(both_decided, timeout=60)

        assert outcomes == {
            on_stripe: ("refund.reconciled.v1", {"value": 2500, "currency": "EUR"}, None),
            on_adyen: ("refund.reconciled.v1", {"value": 4000, "currency": "EUR"}, None),
        }
        assert not [e for e in tail.records if e["type"] == "refund.dead-lettered.v1"
                    and e["data"].get("key") in (on_stripe, on_adyen)]
        states = await db.fetch("SELECT gateway, state FROM reconcile.payouts WHERE gateway_ref = $1", ref)
        assert sorted(map(tuple, states)) == [("adyen", "matched"), ("stripe", "matched")]
        lines = await db.fetch("SELECT gateway, state FROM reconcile.settlement_lines WHERE gateway_ref = $1", ref)
        assert sorted(map(tuple, lines)) == [("adyen", "matched"), ("stripe", "matched")]
        assert await db.fetchval("SELECT count(*) FROM reconcile.discrepancies WHERE gateway_ref = $1", ref) == 0
        await _assert_ledger_balances(http)


async def test_missing_checks_and_resolving_look_only_at_the_same_gateway(stack, producer, db):
    ref = f"re_shared_{uuid.uuid4().hex[:10]}"
    with service_configured(stack, "reconcile", RECONCILE_SLA_SECONDS="15",
                            RECONCILE_MISSING_INTERNALLY_AFTER_SECONDS="3"):
        async with httpx.AsyncClient(base_url=stack.service_url("reconcile"), timeout=30) as http:
            on_stripe = await publish_paid(producer, ref, 2500, gateway="stripe")
            on_adyen = await publish_paid(producer, ref, 4000, gateway="adyen")  # Adyen's report is late
            await _upload(http, "stripe", "stripe", STRIPE_HEADER, stripe_line(f"txn_{ref}", ref, "-25.00"))
            # A third gateway reports the same reference, for nothing paid on it.
            await _upload(http, "stripe", "worldpay", STRIPE_HEADER, stripe_line(f"txn_wp_{ref}", ref, "-25.00"))

            async def open_discrepancies() -> set[tuple]:
                rows = await db.fetch("SELECT category, gateway, refund_id FROM reconcile.discrepancies "
                                      "WHERE gateway_ref = $1 AND status = 'open'", ref)
                return {tuple(row) for row in rows}

            async def both_missing():
                found = await open_discrepancies()
                return found if found == {("missing_in_report", "adyen", on_adyen),
                                          ("missing_internally", "worldpay", None)} else None
            await wait_until(both_missing, timeout=60)
            states = dict(await db.fetch("SELECT refund_id, state FROM reconcile.payouts WHERE gateway_ref = $1",
                                         ref))
            assert states == {on_stripe: "matched", on_adyen: "discrepancy"}
            await _assert_ledger_balances(http)

            # Adyen's line arrives: only Adyen's alarm closes; Worldpay's orphan line stays open.
            await _upload(http, "adyen", "adyen", ADYEN_HEADER, adyen_line(ref, "40.00"))

            async def adyen_rematched():
                return await open_discrepancies() == {("missing_internally", "worldpay", None)}
            await wait_until(adyen_rematched, timeout=30)
            assert await db.fetchval("SELECT state FROM reconcile.payouts WHERE refund_id = $1", on_adyen) == "matched"

            orphan = await db.fetchval("SELECT id FROM reconcile.discrepancies WHERE gateway_ref = $1 "
                                       "AND gateway = 'worldpay' AND status = 'open'", ref)
            resolved = await http.post(f"/v1/discrepancies/{orphan}/resolve", headers=FINANCE,
                                       json={"reason": "worldpay test line, not ours"})
            assert resolved.status_code == 200 and resolved.json()["gateway"] == "worldpay", resolved.text
            listed = (await http.get("/v1/discrepancies", params={"status": "resolved", "gateway": "worldpay"},
                                     headers=FINANCE)).json()
            assert orphan in {d["id"] for d in listed}
            assert {d["gateway"] for d in listed} == {"worldpay"}
            assert await db.fetchval("SELECT state FROM reconcile.payouts WHERE refund_id = $1", on_stripe) == "matched"
            await _assert_ledger_balances(http)
