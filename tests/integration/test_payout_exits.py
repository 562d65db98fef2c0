"""Exits out of a failed payout, on the real stack: staff re-route it, record it paid outside the
pipeline, or the customer gives a new destination; intake reserves the amount again first.

Failures are real: a payment on a gateway without a route fails `gateway_not_configured` (its payment
also exists at the simulator's `sim` account, where a re-route can pay it), `sim-decline` is declined for
good, and `sim-expired` card refunds fail while a bank transfer works.
"""

import asyncio
import time
import uuid
from datetime import UTC, datetime

import httpx
import orjson
import pytest
import stripe

from shared.contract import contact_seal, topics
from shared.contract.envelope import encode
from shared.contract.events import DestinationProvided
from shared.runtime.roles import Role
from tests.integration.helpers import TopicTail, pay_for, publish, refund_of, staff_auth, valid_request, wait_until
from tests.integration.intake_http import OutcomeTail
from tests.integration.scrape import total
from tests.integration.service_fixtures import request_with_payment, service_configured

pytestmark = pytest.mark.integration
SENIOR = staff_auth("u-senior", Role.SENIOR_REVIEWER)
FINANCE = staff_auth("u-finance", Role.FINANCE_LEAD)
REVIEWER = staff_auth("u-reviewer", Role.REVIEWER)
CE_JSON = [("content-type", b"application/cloudevents+json")]
UNROUTED = "legacy-psp"  # no GATEWAY_ROUTES entry: payout fails it `gateway_not_configured`


def unrouted_request(amount: int, captured: int, payment: dict | None = None) -> dict:
    """A refund on a payment whose gateway has no route (its refund fails), the payment also at `sim`."""
    request = valid_request(amount=amount, captured=captured)
    request["payment"] = dict(payment) if payment else {**request["payment"], "gateway": UNROUTED}
    return request


def on_payment(payment: dict, amount: int) -> dict:
    """Another request on the same payment. Without `captured_at` approval cannot check the card refund
    window, so it waits in review, its amount reserved."""
    same = {key: value for key, value in payment.items() if key != "captured_at"}
    return valid_request(amount=amount, captured=payment["captured"]["value"], payment=same)


async def at_sim(request: dict) -> None:
    await pay_for({**request, "payment": {**request["payment"], "gateway": "sim"}})


async def refunded(db, payment: dict) -> int | None:
    return await db.fetchval("SELECT refunded FROM intake.payment_balances WHERE gateway = $1 AND payment_id = $2",
                             payment["gateway"], payment["id"])


def payout_is(db, refund_id: str, status: str, attempt: int = 1):
    async def check():
        return await db.fetchrow("SELECT * FROM payout.payouts WHERE refund_id = $1 AND status = $2 AND attempt = $3",
                                 refund_id, status, attempt)
    return check


def exit_is(db, refund_id: str, state: str):
    async def check():
        return await db.fetchrow("SELECT * FROM payout.exits WHERE refund_id = $1 AND state = $2", refund_id, state)
    return check


async def failed_payout(producer, db, request: dict) -> str:
    refund_id = refund_of(request)
    await publish(producer, request)
    await wait_until(payout_is(db, refund_id, "failed"), timeout=60)
    await wait_until(lambda: _balance_is(db, request["payment"], 0), timeout=30)
    return refund_id


async def _balance_is(db, payment: dict, value: int) -> bool:
    return await refunded(db, payment) == value


async def processed(db, schema: str, event_id: str) -> bool:
    return bool(await db.fetchval(f"SELECT count(*) FROM {schema}.inbox WHERE event_id = $1", event_id))


async def test_a_rerouted_failed_payout_is_paid_once_on_attempt_two_and_reconciled(stack, producer, db):
    first = unrouted_request(amount=3000, captured=5000)
    await at_sim(first)
    async with TopicTail(stack.bootstrap, topics.PAYOUT_FAILED) as failures:
        refund_id = await failed_payout(producer, db, first)
        failed = await failures.wait_for(lambda e: e["data"]["refund_id"] == refund_id)
    assert failed["data"]["failure_reason"] == "gateway_not_configured" and failed["data"]["attempt"] == 1

    async with httpx.AsyncClient(base_url=stack.service_url("payout"), timeout=30) as http:
        listed = (await http.get("/v1/payouts", params={"status": "failed"}, headers=REVIEWER)).json()["payouts"]
        assert {"refund_id": refund_id, "attempt": 1, "gateway": UNROUTED, "exit_pending": False} \
            .items() <= next(p for p in listed if p["refund_id"] == refund_id).items()
        view = (await http.get(f"/v1/payouts/{refund_id}", headers=REVIEWER)).json()
        assert view["exit_options"] == ["reroute", "paid_outside"] and "sim" in view["gateways"]

        body = {"exit": "reroute", "gateway": "sim", "reason": "legacy PSP retired; pay through sim"}
        assert (await http.post(f"/v1/payouts/{refund_id}/exits", json=body, headers=REVIEWER)).status_code == 403
        assert (await http.post(f"/v1/payouts/{refund_id}/exits", json={**body, "gateway": "nowhere"},
                                headers=SENIOR)).status_code == 422
        bad = await http.post(f"/v1/payouts/{refund_id}/exits", json={"exit": "reroute", "reason": ""}, headers=SENIOR)
        assert bad.status_code == 422 and isinstance(bad.json()["detail"], str)
        async with TopicTail(stack.bootstrap, topics.PAYOUT_SUBMITTED, topics.PAID, topics.REINSTATED) as tail:
            taken = await http.post(f"/v1/payouts/{refund_id}/exits", json=body, headers=SENIOR)
            assert taken.status_code == 202, taken.text
            assert taken.json() | {"state": "requested"} == taken.json()
            assert taken.json()["attempt"] == 2 and taken.json()["requested_by"] == "u-senior"
            again = await http.post(f"/v1/payouts/{refund_id}/exits", json=body, headers=SENIOR)
            assert again.status_code == 409, again.text
            paid = await tail.wait_for(lambda e: e["type"] == "refund.paid.v1" and e["data"]["refund_id"] == refund_id)
        kinds = [e["type"] for e in tail.records if e["data"]["refund_id"] == refund_id]
        assert kinds.index("refund.reinstated.v1") < kinds.index("refund.payout-redriven.v1") < kinds.index(
            "refund.paid.v1")
        redriven = next(e for e in tail.records if e["type"] == "refund.payout-redriven.v1"
                        and e["data"]["refund_id"] == refund_id)
        assert (redriven["data"]["attempt"], redriven["data"]["exit"], redriven["data"]["gateway"]) == (2, "reroute",
                                                                                                         "sim")
        assert paid["data"]["attempt"] == 2 and not paid["data"]["paid_outside"]

        row = await wait_until(payout_is(db, refund_id, "succeeded", attempt=2))
        assert (row["gateway"], row["idempotency_key"]) == ("sim", f"{refund_id}:2")
        view = (await http.get(f"/v1/payouts/{refund_id}", headers=REVIEWER)).json()
        assert [(a["attempt"], a["status"], a["gateway"]) for a in view["attempts"]] == [
            (1, "failed", UNROUTED), (2, "succeeded", "sim")]
        assert [(e["exit"], e["state"], e["requested_by"]) for e in view["exits"]] == [
            ("reroute", "reinstated", "u-senior")]
        assert view["status"] == "succeeded" and view["exit_options"] == []
    # Paid once at the gateway, under the new key.
    assert await db.fetchval("SELECT count(*) FROM gateway_sim.refunds WHERE payment_id = $1",
                             first["payment"]["id"]) == 1

    # The amount is reserved again: another refund that would exceed what was captured is rejected.
    assert await refunded(db, first["payment"]) == 3000
    over = unrouted_request(amount=2500, captured=5000, payment=first["payment"])
    async with OutcomeTail(stack.bootstrap) as outcomes:
        await publish(producer, over)
        [outcome] = (await outcomes.wait_for_outcomes([refund_of(over)]))[refund_of(over)]
    assert outcome["type"] == "refund.rejected.v1"
    assert [e["code"] for e in outcome["data"]["errors"]] == ["exceeds_refundable"]

    # A re-sent failure of attempt 1 (a new event id) gives nothing back: attempt 2 holds the amount.
    resent = {**failed, "id": str(uuid.uuid4())}
    await producer.send_and_wait(topics.PAYOUT_FAILED, orjson.dumps(resent), key=refund_id.encode(), headers=CE_JSON)
    await wait_until(lambda: processed(db, "intake", resent["id"]), timeout=30)
    assert await refunded(db, first["payment"]) == 3000

    async with httpx.AsyncClient(base_url=stack.service_url("reconcile"), timeout=30) as http:
        async def reconciled():
            return await db.fetchrow("SELECT * FROM reconcile.payouts WHERE refund_id = $1 AND state = 'matched'",
                                     refund_id)
        matched = await wait_until(reconciled, timeout=90)
        assert matched["attempt"] == 2
        settlement = (await http.get(f"/v1/refunds/{refund_id}/settlement", headers=FINANCE)).json()
        assert settlement["payout"]["attempt"] == 2 and [line["matched"] for line in settlement["lines"]] == [True]
        ledger = (await http.get("/v1/ledger", headers=FINANCE)).json()
        assert all(entry["balanced"] for entry in ledger["currencies"]), ledger
    assert total(stack, "payout", "refund_payout_exits_total", exit="reroute", outcome="reinstated") >= 1


async def test_a_reinstatement_is_refused_when_another_refund_used_the_balance(stack, producer, db):
    first = unrouted_request(amount=3000, captured=5000)
    await at_sim(first)
    refund_id = await failed_payout(producer, db, first)
    # Meanwhile another refund of the same payment takes 4000 of the 5000 (and waits in review).
    second = on_payment(first["payment"], 4000)
    await publish(producer, second)
    await wait_until(lambda: _balance_is(db, first["payment"], 4000), timeout=30)

    async with httpx.AsyncClient(base_url=stack.service_url("payout"), timeout=30) as http:
        async with TopicTail(stack.bootstrap, topics.REINSTATED) as answers:
            taken = await http.post(f"/v1/payouts/{refund_id}/exits", headers=SENIOR,
                                    json={"exit": "reroute", "gateway": "sim", "reason": "try sim"})
            assert taken.status_code == 202, taken.text
            refused = await answers.wait_for(lambda e: e["data"]["refund_id"] == refund_id)
        assert refused["type"] == "refund.reinstatement-refused.v1"
        assert [(e["field"], e["code"]) for e in refused["data"]["errors"]] == [("amount", "exceeds_refundable")]
        exit_row = await wait_until(exit_is(db, refund_id, "refused"), timeout=30)
        assert exit_row["requested_by"] == "u-senior"
        view = (await http.get(f"/v1/payouts/{refund_id}", headers=REVIEWER)).json()
        # Still failed, attempt 1, and open to another exit once the balance allows.
        assert view["status"] == "failed" and [a["attempt"] for a in view["attempts"]] == [1]
        assert view["exits"][0]["state"] == "refused" and view["exit_options"] == ["reroute", "paid_outside"]
    assert await refunded(db, first["payment"]) == 4000
    assert await db.fetchval("SELECT count(*) FROM gateway_sim.refunds WHERE payment_id = $1",
                             first["payment"]["id"]) == 0


async def test_paid_outside_is_succeeded_and_opens_a_discrepancy_finance_resolves(stack, producer, db):
    request = request_with_payment("sim-decline", amount=2000, captured=2000)
    refund_id = await failed_payout(producer, db, request)
    body = {"exit": "paid_outside", "reference": f"BANK-{uuid.uuid4().hex[:8]}", "evidence": "ticket FIN-42, "
            "bank statement 2026-12-01", "reason": "customer's card was closed; paid by bank transfer by hand"}
    async with httpx.AsyncClient(base_url=stack.service_url("payout"), timeout=30) as http:
        denied = await http.post(f"/v1/payouts/{refund_id}/exits", json=body, headers=SENIOR)
        assert denied.status_code == 403 and "finance_lead" in denied.json()["detail"]
        taken = await http.post(f"/v1/payouts/{refund_id}/exits", json=body, headers=FINANCE)
        assert taken.status_code == 202, taken.text
    row = await wait_until(payout_is(db, refund_id, "succeeded", attempt=2), timeout=30)
    assert row["paid_outside"] and row["gateway_ref"] == body["reference"]
    assert (await db.fetchrow("SELECT * FROM payout.exits WHERE refund_id = $1", refund_id))["evidence"] == \
        body["evidence"]
    assert await refunded(db, request["payment"]) == 2000  # reserved again: the money did go out

    async def discrepancy():
        return await db.fetchrow("SELECT * FROM reconcile.discrepancies WHERE refund_id = $1 AND status = 'open' "
                                 "AND category = 'paid_outside'", refund_id)
    opened = await wait_until(discrepancy, timeout=30)
    assert (opened["expected_value"], opened["gateway_ref"]) == (2000, body["reference"])
    async with httpx.AsyncClient(base_url=stack.service_url("reconcile"), timeout=30) as http:
        ledger = (await http.get("/v1/ledger", headers=FINANCE)).json()["currencies"]
        eur = next(entry for entry in ledger if entry["currency"] == "EUR")
        assert eur["balanced"] and eur["open"] >= 2000 and eur["paid"] == eur["matched"] + eur["open"] + \
            eur["resolved"] + eur["awaiting"], eur
        settlement = (await http.get(f"/v1/refunds/{refund_id}/settlement", headers=FINANCE)).json()
        assert settlement["payout"]["paid_outside"] and settlement["lines"] == []
        assert [d["category"] for d in settlement["discrepancies"]] == ["paid_outside"]
        async with TopicTail(stack.bootstrap, topics.RECONCILED) as reconciled:
            resolved = await http.post(f"/v1/discrepancies/{opened['id']}/resolve", headers=FINANCE,
                                       json={"reason": "bank statement checked against FIN-42"})
            assert resolved.status_code == 200, resolved.text
            await reconciled.wait_for(lambda e: e["data"]["refund_id"] == refund_id)
        ledger = (await http.get("/v1/ledger", headers=FINANCE)).json()["currencies"]
        assert all(entry["balanced"] for entry in ledger), ledger


async def test_duplicate_exits_and_redelivered_answers_pay_at_most_once(stack, producer, db):
    first = unrouted_request(amount=1500, captured=1500)
    await at_sim(first)
    refund_id = await failed_payout(producer, db, first)
    body = {"exit": "reroute", "gateway": "sim", "reason": "pay through sim"}
    async with httpx.AsyncClient(base_url=stack.service_url("payout"), timeout=30) as http:
        async with TopicTail(stack.bootstrap, topics.PAYOUT_EXITS, topics.REINSTATED) as tail:
            # Two staff members at once: one exit is taken, the other is told it is in progress.
            answers = await asyncio.gather(*(http.post(f"/v1/payouts/{refund_id}/exits", json=body, headers=h)
                                             for h in (SENIOR, FINANCE)))
            assert sorted(a.status_code for a in answers) == [202, 409], [a.text for a in answers]
            asked = await tail.wait_for(lambda e: e["type"] == "refund.payout-exit-requested.v1"
                                        and e["data"]["refund_id"] == refund_id)
            answer = await tail.wait_for(lambda e: e["type"] == "refund.reinstated.v1"
                                         and e["data"]["refund_id"] == refund_id)
    await wait_until(payout_is(db, refund_id, "succeeded", attempt=2), timeout=60)

    # The exit request again (a new id: a re-send), and intake's answer again (a redelivery and a re-send).
    resent_ask = {**asked, "id": str(uuid.uuid4())}
    await producer.send_and_wait(topics.PAYOUT_EXITS, orjson.dumps(resent_ask), key=refund_id.encode(),
                                 headers=CE_JSON)
    await producer.send_and_wait(topics.REINSTATED, orjson.dumps(answer), key=refund_id.encode(), headers=CE_JSON)
    resent_answer = {**answer, "id": str(uuid.uuid4())}
    await producer.send_and_wait(topics.REINSTATED, orjson.dumps(resent_answer), key=refund_id.encode(),
                                 headers=CE_JSON)
    await wait_until(lambda: processed(db, "intake", resent_ask["id"]), timeout=30)
    await wait_until(lambda: processed(db, "payout", resent_answer["id"]), timeout=30)
    assert await refunded(db, first["payment"]) == 1500  # reserved once, never twice (captured is 1500)
    assert await db.fetchval("SELECT count(*) FROM payout.payouts WHERE refund_id = $1 AND attempt = 2 "
                             "AND status = 'succeeded'", refund_id) == 1
    assert await db.fetchval("SELECT count(*) FROM payout.payout_attempts WHERE refund_id = $1", refund_id) == 1
    assert await db.fetchval("SELECT count(*) FROM gateway_sim.refunds WHERE payment_id = $1",
                             first["payment"]["id"]) == 1
    async with httpx.AsyncClient(base_url=stack.service_url("payout"), timeout=30) as http:
        late = await http.post(f"/v1/payouts/{refund_id}/exits", json=body, headers=SENIOR)
        assert late.status_code == 409 and "succeeded" in late.json()["detail"]
        # A gateway's (signed) word about attempt 1's key does not touch attempt 2.
        event_id = f"evt_{uuid.uuid4().hex}"
        webhook = orjson.dumps({"id": event_id, "object": "event", "type": "refund.failed", "created": int(time.time()),
                                "livemode": False, "data": {"object": {
                                    "id": "re_old", "object": "refund", "amount": 1500, "currency": "eur",
                                    "status": "failed", "failure_reason": "lost_or_stolen_card",
                                    "metadata": {"refund_key": refund_id}}}})
        secret = stack.gateway_routes()["sim"]["webhook_secret"]
        signature = stripe.WebhookSignature.generate_signature_header(webhook.decode(), secret)
        answer = await http.post("/v1/gateway-events/sim", content=webhook,
                                 headers={"stripe-signature": signature, "content-type": "application/json"})
        assert answer.status_code == 200, answer.text
    assert await db.fetchval("SELECT effect FROM payout.gateway_events WHERE gateway = 'sim' AND event_id = $1",
                             event_id) == "no_payout"
    assert (await db.fetchrow("SELECT * FROM payout.payouts WHERE refund_id = $1", refund_id))["status"] == "succeeded"


async def test_a_customers_new_destination_redrives_the_payout_by_bank_transfer(stack, producer, db):
    # No automatic card -> bank transfer fallback: the dead card's refund fails for good.
    with service_configured(stack, "payout", PAYOUT_FALLBACK_FROM="[]"):
        request = request_with_payment("sim-expired", amount=2200, captured=2200)
        refund_id = await failed_payout(producer, db, request)
        row = await db.fetchrow("SELECT * FROM payout.payouts WHERE refund_id = $1", refund_id)
        assert row["failure_reason"] == "expired_or_canceled_card"

        sealed = contact_seal.seal(contact_seal.public_key(contact_seal.LOCAL_DESTINATION_PUBLIC_KEY),
                                   {"iban": "DE89370400440532013000", "holder": "Ana Example"},
                                   refund_id=refund_id, customer_id="destination")
        provided = DestinationProvided(refund_id=refund_id, channel="bank_transfer", destination_sealed=sealed,
                                       summary="DE89 **** 3000", provided_at=datetime.now(UTC))
        # Sealed for another refund: does not open, changes nothing.
        moved = DestinationProvided(**{**provided.model_dump(), "refund_id": "rf_someone_else"})
        for event in (moved, provided):
            record = encode(event, source="refund-pipeline/notify", key=event.refund_id)
            await producer.send_and_wait(record.topic, record.value, key=record.key.encode(),
                                         headers=list(record.headers.items()))
        paid = await wait_until(payout_is(db, refund_id, "succeeded", attempt=2), timeout=60)
    assert paid["channel"] == "bank_transfer" and paid["idempotency_key"] == f"{refund_id}:2"
    exit_row = await db.fetchrow("SELECT * FROM payout.exits WHERE refund_id = $1", refund_id)
    assert (exit_row["exit"], exit_row["requested_by"], exit_row["destination_summary"]) == (
        "new_destination", "customer", "DE89 **** 3000")
    at_gateway = await db.fetchrow("SELECT * FROM gateway_sim.refunds WHERE idempotency_key = $1", f"{refund_id}:2")
    assert at_gateway["status"] == "succeeded"
    metadata = at_gateway["metadata"]
    metadata = orjson.loads(metadata) if isinstance(metadata, str) else metadata
    assert metadata["destination_iban"] == "DE89370400440532013000"
    # The destination is never stored in the clear.
    assert "DE8937" not in str(dict(exit_row)) and "DE8937" not in str(dict(paid))


async def test_a_reinstatement_racing_a_new_refund_for_the_same_money_lets_only_one_have_it(stack, producer, db):
    # Invariant 2 under concurrency: 3000 of 5000 failed and went back; an exit for it and a new 3000 refund
    # of the same payment arrive together. Whichever locks the payment first has the money; the other is refused.
    first = unrouted_request(amount=3000, captured=5000)
    await at_sim(first)
    refund_id = await failed_payout(producer, db, first)
    rival = on_payment(first["payment"], 3000)  # waits in review if accepted, keeping its amount reserved
    async with httpx.AsyncClient(base_url=stack.service_url("payout"), timeout=30) as http, \
            OutcomeTail(stack.bootstrap) as outcomes:
        taken, _ = await asyncio.gather(
            http.post(f"/v1/payouts/{refund_id}/exits", headers=SENIOR,
                      json={"exit": "reroute", "gateway": "sim", "reason": "pay through sim"}),
            publish(producer, rival))
        assert taken.status_code == 202, taken.text
        [outcome] = (await outcomes.wait_for_outcomes([refund_of(rival)]))[refund_of(rival)]

    async def exit_decided():
        return await db.fetchval("SELECT state FROM payout.exits WHERE refund_id = $1 AND state <> 'requested'",
                                 refund_id)
    state = await wait_until(exit_decided, timeout=60)
    assert (state == "reinstated") != (outcome["type"] == "refund.accepted.v1"), (state, outcome["type"])
    assert await refunded(db, first["payment"]) == 3000


async def test_a_failed_redriven_attempt_gives_the_amount_back_once_and_can_take_another_exit(stack, producer, db):
    # Unrouted first; re-routed to sim, where the payment is declined for good: attempt 2 fails too.
    first = unrouted_request(amount=1200, captured=1200)
    first["payment"]["id"] += "-sim-decline"
    await at_sim(first)
    refund_id = await failed_payout(producer, db, first)
    async with httpx.AsyncClient(base_url=stack.service_url("payout"), timeout=30) as http:
        async with TopicTail(stack.bootstrap, topics.PAYOUT_FAILED) as failures:
            taken = await http.post(f"/v1/payouts/{refund_id}/exits", headers=SENIOR,
                                    json={"exit": "reroute", "gateway": "sim", "reason": "pay through sim"})
            assert taken.status_code == 202, taken.text
            failed = await failures.wait_for(lambda e: e["data"]["refund_id"] == refund_id)
        assert (failed["data"]["attempt"], failed["data"]["failure_reason"]) == (2, "declined")
        await wait_until(payout_is(db, refund_id, "failed", attempt=2), timeout=30)
        await wait_until(lambda: _balance_is(db, first["payment"], 0), timeout=30)  # attempt 2's failure released it
        resent = {**failed, "id": str(uuid.uuid4())}
        await producer.send_and_wait(topics.PAYOUT_FAILED, orjson.dumps(resent), key=refund_id.encode(),
                                     headers=CE_JSON)
        await wait_until(lambda: processed(db, "intake", resent["id"]), timeout=30)
        assert await refunded(db, first["payment"]) == 0  # once, not twice

        # Finance paid it by hand: attempt 3, reserved again, recorded succeeded outside the pipeline.
        outside = await http.post(f"/v1/payouts/{refund_id}/exits", headers=FINANCE, json={
            "exit": "paid_outside", "reference": f"WIRE-{uuid.uuid4().hex[:6]}", "evidence": "FIN-77",
            "reason": "card declined twice; wired by treasury"})
        assert outside.status_code == 202 and outside.json()["attempt"] == 3, outside.text
        await wait_until(payout_is(db, refund_id, "succeeded", attempt=3), timeout=30)
        view = (await http.get(f"/v1/payouts/{refund_id}", headers=REVIEWER)).json()
    assert [(a["attempt"], a["status"]) for a in view["attempts"]] == [(1, "failed"), (2, "failed"), (3, "succeeded")]
    assert [(e["attempt"], e["exit"], e["state"]) for e in view["exits"]] == [
        (2, "reroute", "reinstated"), (3, "paid_outside", "done")]
    assert await refunded(db, first["payment"]) == 1200
