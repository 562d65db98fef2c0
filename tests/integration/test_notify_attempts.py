"""Notify on the real stack across payout attempts: a failed refund re-driven (forged payout events,
also late and redelivered ones), the customer's new bank account and their rating on the signed page
in a real browser, and a reopened review on the timeline."""

import re
import uuid
from datetime import UTC, datetime

import httpx
import orjson
import pytest
from playwright.async_api import async_playwright

from services.notify import store
from services.notify.signing import sign_link
from shared.contract import contact_seal, topics
from shared.contract.envelope import encode
from shared.contract.events import (PayoutFailed, PayoutRedriven, PayoutSubmitted, RefundPaid, RefundReviewReopened,
                                    RefundReviewRequested)
from shared.runtime.roles import Role
from tests.integration.helpers import TopicTail, publish, refund_of, staff_auth
from tests.integration.service_fixtures import service_configured
from tests.integration.test_notify import (  # noqa: F401 (the module's notify, pointed at real sinks)
    CHROMIUM_ARGS, LINK_SECRET, PLATFORM_AUTH, SOURCE, customer_request, milestone_of, settled, sinks)
from tools.platform import StatusFollower

pytestmark = pytest.mark.integration
PAYOUT = "refund-pipeline/payout"
GOOD_IBAN, BAD_IBAN = "DE89 3704 0044 0532 0130 00", "DE89 3704 0044 0532 0130 01"


def link_for(stack, refund_id: str) -> str:
    return f"{stack.service_url('notify')}/r/{sign_link(LINK_SECRET, refund_id, 2**40)}"


def ticket_fields(request: dict, refund_id: str) -> dict:
    return {"refund_id": refund_id, "request_id": request["request_id"], "source": SOURCE,
            "order_id": request["order_id"], "amount": request["amount"], "channel": "card", "region": "DE"}


async def send(producer, event, source: str = PAYOUT, event_id: str | None = None) -> None:
    """Publish a forged stage event (devstack's admin principal; `source` as the stage would)."""
    out = encode(event, source=source, key=event.refund_id, event_id=event_id)
    await producer.send_and_wait(out.topic, out.value, key=event.refund_id.encode(), headers=list(out.headers.items()))


async def failed_refund(producer, status_feed, request: dict) -> dict:
    """The declined request published and failed by the real pipeline; its payout-failed event's data."""
    refund_id = refund_of(request, SOURCE)
    async with TopicTail(status_feed.bootstrap, topics.PAYOUT_FAILED) as failures:
        await publish(producer, request, source=SOURCE)
        failure = await failures.wait_for(lambda e: e["data"]["refund_id"] == refund_id, timeout=60)
    assert await status_feed.wait_for(lambda: status_feed.status_of(refund_id) == "failed", timeout=60)
    return failure


def redriven(request: dict, refund_id: str, attempt: int) -> PayoutRedriven:
    return PayoutRedriven(**ticket_fields(request, refund_id), attempt=attempt, exit="new_destination",
                          gateway="sim", payout_id=f"po-{refund_id}-{attempt}", redriven_at=datetime.now(UTC))


async def test_a_redriven_refund_moves_on_under_its_new_attempt_and_old_attempts_never_move_it(
        sinks, stack, producer, status_feed, db):
    request = customer_request(declined=True)
    refund_id = refund_of(request, SOURCE)
    failure = await failed_refund(producer, status_feed, request)
    await settled(db, refund_id, None, last="action_needed")

    await send(producer, redriven(request, refund_id, 2))
    assert await status_feed.wait_for(lambda: status_feed.status_of(refund_id) == "processing", timeout=60)

    # Attempt 1 again: its failure redelivered (same event), re-sent (a new id), and its submission late.
    async def answered(publishing) -> None:
        # Notify answers each (a republish, or a fold) with a status record: proof it handled it. One at a
        # time, since notify publishes one record per refund per batch and a batch may take them all.
        seen = len(status_feed.sequences[refund_id])
        await publishing
        assert await status_feed.wait_for(lambda: len(status_feed.sequences[refund_id]) > seen, timeout=60)
        assert status_feed.status_of(refund_id) == "processing"

    await answered(producer.send_and_wait(topics.PAYOUT_FAILED, orjson.dumps(failure), key=refund_id.encode(),
                                          headers=[("content-type", b"application/cloudevents+json")]))
    await answered(send(producer, PayoutFailed.model_validate(failure["data"])))
    await answered(send(producer, PayoutSubmitted(**ticket_fields(request, refund_id), gateway="sim",
                                                  payout_id=f"po-{refund_id}-1", submitted_at=datetime.now(UTC))))

    await send(producer, RefundPaid(**ticket_fields(request, refund_id), gateway="sim", payout_id=f"po-{refund_id}-2",
                                    gateway_ref=f"sim-{uuid.uuid4().hex[:8]}", paid_at=datetime.now(UTC), attempt=2))
    assert await status_feed.wait_for(lambda: status_feed.status_of(refund_id) == "succeeded", timeout=60)
    await send(producer, PayoutFailed.model_validate(failure["data"]))  # attempt 1's failure, later still
    seen = len(status_feed.sequences[refund_id])
    assert await status_feed.wait_for(lambda: len(status_feed.sequences[refund_id]) > seen, timeout=60)
    assert status_feed.status_of(refund_id) == "succeeded"

    # Every record after the first is either newer (one more) or a republished snapshot (the same).
    sequences = status_feed.sequences[refund_id]
    assert sequences == sorted(sequences) and len(set(sequences)) >= len(sequences) - 1, sequences
    # A subscriber reading the compacted feed from the start ends on the current status.
    late = StatusFollower(stack.bootstrap)
    await late.start(from_beginning=True)
    try:
        assert await late.wait_for(lambda: late.latest.get(refund_id, {}).get("sequence")
                                   == status_feed.latest[refund_id]["sequence"], timeout=60)
        assert late.status_of(refund_id) == "succeeded"
    finally:
        await late.stop()

    async with httpx.AsyncClient() as http:
        tracked = (await http.get(f"{stack.service_url('notify')}/v1/refunds/{refund_id}",
                                  headers=PLATFORM_AUTH)).json()
    assert tracked["payout_attempt"] == 2
    attempts = [(e["status"], e["attempt"]) for e in tracked["history"] if e["attempt"]]
    assert attempts[-3:] == [("failed", 1), ("processing", 2), ("succeeded", 2)] and len(attempts) <= 4, attempts

    # The customer heard that we pay again, and then that it is paid; nothing twice.
    rows = await settled(db, refund_id, None, last="paid")
    email = sorted(f"{r['milestone']}" for r in rows if r["channel"] == "email")
    assert email == ["action_needed", "approved", "paid", "received", "redriven"]
    mails = {milestone_of(m): m for m in sinks.mail.to(request["customer"]["email"])}
    assert mails["redriven_2"]["Subject"] == "We are paying your refund of 25.00 EUR again"
    assert sorted(mails) == ["action_needed", "approved", "paid_2", "received", "redriven_2"]


async def test_a_failed_refunds_customer_gives_a_bank_account_on_the_page(sinks, stack, producer, status_feed, db):
    request = customer_request(declined=True)
    refund_id = refund_of(request, SOURCE)
    await failed_refund(producer, status_feed, request)
    link = link_for(stack, refund_id)
    # Payout would act on the destination at once (re-drive, and this payment is declined again); the
    # page is checked while the destination is pending, so payout waits until the end of the test
    # (the end-to-end exit is test_the_customers_bank_account_from_the_page_pays_the_failed_refund_end_to_end).
    stack.stop_service("payout")
    try:
        await _give_a_bank_account_on_the_page(stack, db, refund_id, link)
    finally:
        stack.start_service("payout")


async def _give_a_bank_account_on_the_page(stack, db, refund_id: str, link: str) -> None:
    async with TopicTail(stack.bootstrap, topics.DESTINATIONS) as destinations, async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            assert (await page.goto(link)).status == 200
            await page.fill("#holder", "Ana Lima")
            await page.fill("#iban", BAD_IBAN)
            async with page.expect_navigation():
                await page.click("#destination-submit")
            assert await page.get_attribute("#destination-error", "data-error") == "iban"
            assert "not a valid IBAN" in await page.inner_text("#destination-error")
            assert await db.fetchval("SELECT count(*) FROM notify.destinations WHERE refund_id = $1", refund_id) == 0

            await page.fill("#holder", "Ana Lima")
            await page.fill("#iban", GOOD_IBAN)
            async with page.expect_navigation():
                await page.click("#destination-submit")
            assert "we are paying again" in await page.inner_text("#destination-received")
            assert await page.get_attribute("#destination-received", "data-summary") == "DE89 •••• 3000"
            assert await page.locator("#destination-form").count() == 0  # one pending destination at a time
            zh = await browser.new_page(locale="zh-CN")
            await zh.goto(link + "?lang=zh-CN")
            assert "已收到新的银行账户" in await zh.inner_text("#destination-received")
        finally:
            await browser.close()
        event = await destinations.wait_for(lambda e: e["data"]["refund_id"] == refund_id, timeout=30)
        # Given again (another tab, a double click): the first stays, nothing more is sent.
        async with httpx.AsyncClient() as http:
            again = await http.post(f"{link}/destination", data={"holder": "Eve", "iban": "GB82 WEST 1234 5698 7654 32"})
        assert again.status_code == 303
        await destinations.read_to_end()
    assert [e["data"]["refund_id"] for e in destinations.records].count(refund_id) == 1
    assert (event["source"], event["type"]) == ("refund-pipeline/notify", "refund.destination-provided.v1")
    data = event["data"]
    assert (data["channel"], data["summary"]) == ("bank_transfer", "DE89 •••• 3000")
    payout_key = contact_seal.private_key(contact_seal.LOCAL_DESTINATION_PRIVATE_KEY)
    assert contact_seal.open_seal(payout_key, data["destination_sealed"], refund_id=refund_id,
                                  customer_id="destination") == {"iban": "DE89370400440532013000", "holder": "Ana Lima"}
    assert GOOD_IBAN.replace(" ", "") not in orjson.dumps(event).decode()


async def test_a_finished_refund_asks_for_a_rating_kept_once_per_refund(sinks, stack, producer, status_feed, db):
    request = customer_request()
    refund_id = refund_of(request, SOURCE)
    await publish(producer, request, source=SOURCE)
    assert await status_feed.wait_for(lambda: status_feed.status_of(refund_id) == "reconciled", timeout=60)
    await settled(db, refund_id, None)
    completed = next(m for m in sinks.mail.to(request["customer"]["email"]) if milestone_of(m) == "completed")
    rate_link = re.search(r"Rate your refund from 1 to 5: (\S+)", completed.get_content()).group(1)
    assert rate_link.endswith("#feedback")

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            assert (await page.goto(rate_link)).status == 200
            await page.check("#rating-4")
            await page.fill("#comment", "quick, thanks")
            async with page.expect_navigation():
                await page.click("#feedback-submit")
            assert await page.get_attribute("#feedback-saved", "data-rating") == "4"
            assert await page.locator("#rating-4").is_checked()
        finally:
            await browser.close()

    token = rate_link.split("/r/", 1)[1].split("#")[0]
    base = stack.service_url("notify")
    async with httpx.AsyncClient(base_url=base) as http:
        updated = await http.post(f"/v1/refunds/{refund_id}/feedback", params={"token": token},
                                  json={"rating": 5, "comment": "even better"})
        too_high = await http.post(f"/v1/refunds/{refund_id}/feedback", params={"token": token}, json={"rating": 6})
        too_long = await http.post(f"/v1/refunds/{refund_id}/feedback", params={"token": token},
                                   json={"rating": 3, "comment": "x" * 1001})
        other = await http.post(f"/v1/refunds/rf_{'0' * 32}/feedback", params={"token": token}, json={"rating": 1})
        unsigned = await http.post(f"/v1/refunds/{refund_id}/feedback", json={"rating": 1})
        forged = await http.post(f"/v1/refunds/{refund_id}/feedback", json={"rating": 1},
                                 params={"token": sign_link("guess", refund_id, 2**40)})
        metrics = (await http.get("/metrics")).text
    assert updated.status_code == 200 and updated.json()["rating"] == 5
    assert too_high.status_code == 422 and too_long.status_code == 422
    assert (other.status_code, unsigned.status_code, forged.status_code) == (403, 401, 403)
    assert "another refund" in other.json()["detail"]
    rows = await db.fetch("SELECT rating, comment FROM notify.feedback WHERE refund_id = $1", refund_id)
    assert [(r["rating"], r["comment"]) for r in rows] == [(5, "even better")]
    assert float(re.search(r"^refund_feedback_rating_count (\S+)", metrics, re.M).group(1)) >= 1
    assert float(re.search(r'^refund_feedback_total\{kind="updated"\} (\S+)', metrics, re.M).group(1)) >= 1


async def test_feedback_waits_until_the_refund_is_finished(sinks, stack, producer, status_feed):
    request = customer_request()
    refund_id = refund_of(request, SOURCE)
    # Only notify consumes payout-submitted, so a lone event places this refund mid-pipeline.
    await send(producer, PayoutSubmitted(**ticket_fields(request, refund_id), gateway="sim",
                                         payout_id=f"po-{refund_id}", submitted_at=datetime.now(UTC)))
    assert await status_feed.wait_for(lambda: status_feed.status_of(refund_id) == "processing", timeout=60)
    token = sign_link(LINK_SECRET, refund_id, 2**40)
    async with httpx.AsyncClient(base_url=stack.service_url("notify")) as http:
        early = await http.post(f"/v1/refunds/{refund_id}/feedback", params={"token": token}, json={"rating": 2})
        page = await http.get(f"/r/{token}")
    assert early.status_code == 409 and "not finished" in early.json()["detail"]
    assert 'id="feedback-form"' not in page.text


async def test_a_reopened_review_shows_on_the_timeline_with_its_reason_code(sinks, stack, producer, status_feed):
    request = customer_request()
    refund_id = refund_of(request, SOURCE)
    now = datetime.now(UTC)
    # Only notify consumes refunds.held: forged approval events place the refund in review, then reopen it.
    await send(producer, RefundReviewRequested(**ticket_fields(request, refund_id), policy_version="test",
                                               review_requested_at=now, reason_codes=["above_ceiling"]),
               source="refund-pipeline/approval")
    assert await status_feed.wait_for(lambda: status_feed.status_of(refund_id) == "pending_review", timeout=60)
    sequence = status_feed.latest[refund_id]["sequence"]
    await send(producer, RefundReviewReopened(**ticket_fields(request, refund_id), kind="review", reopened_by="lead-1",
                                              note="customer sent proof", due_at=now, expires_at=now, reopened_at=now),
               source="refund-pipeline/approval")
    assert await status_feed.wait_for(
        lambda: status_feed.latest[refund_id]["reason_codes"] == ["review-reopened"], timeout=60)
    latest = status_feed.latest[refund_id]
    assert (latest["status"], latest["sequence"]) == ("pending_review", sequence + 1)
    async with httpx.AsyncClient() as http:
        page = (await http.get(link_for(stack, refund_id))).text
    assert re.findall(r'<li data-status="(\w+)"(?: data-note="([\w-]+)")?', page) == [
        ("pending_review", ""), ("pending_review", "review-reopened")]
    assert "Review reopened" in page


async def test_staff_find_a_ticket_by_any_of_its_ids_and_read_it_whole(sinks, stack, producer, status_feed, db):
    request = customer_request()
    refund_id = refund_of(request, SOURCE)
    await publish(producer, request, source=SOURCE)
    assert await status_feed.wait_for(lambda: status_feed.status_of(refund_id) == "reconciled", timeout=60)
    await settled(db, refund_id, None)
    staff = staff_auth("agent-7", Role.REVIEWER)
    async with httpx.AsyncClient(base_url=stack.service_url("notify"), headers=staff) as http:
        found = {q: (await http.get("/v1/tickets", params={"q": q})).json()["tickets"]
                 for q in (refund_id, request["request_id"], request["order_id"], request["customer"]["id"])}
        nothing = (await http.get("/v1/tickets", params={"q": "no-such-order"})).json()
        detail = (await http.get(f"/v1/tickets/{refund_id}")).json()
        missing = await http.get(f"/v1/tickets/rf_{'0' * 32}")
        anonymous = await http.get("/v1/tickets", params={"q": refund_id}, headers={"Authorization": ""})
        bad = await http.get(f"/v1/tickets/{refund_id}", headers={"Authorization": "Bearer not-a-token"})
    for q, tickets in found.items():
        assert [t["refund_id"] for t in tickets] == [refund_id], q
    assert found[refund_id][0] | {"updated_at": None} == {
        "refund_id": refund_id, "request_id": request["request_id"], "source": SOURCE, "order_id": request["order_id"],
        "customer_id": request["customer"]["id"], "status": "reconciled", "amount": request["amount"],
        "updated_at": None}
    assert nothing == {"tickets": []}
    assert (missing.status_code, anonymous.status_code, bad.status_code) == (404, 401, 401)
    assert detail["status"] == "reconciled" and detail["feedback"] is None
    assert [(e["status"], e["event_type"]) for e in detail["timeline"]] == [
        ("accepted", "refund.accepted.v1"), ("approved", "refund.approved.v1"),
        ("processing", "refund.payout-submitted.v1"), ("succeeded", "refund.paid.v1"),
        ("reconciled", "refund.reconciled.v1")]
    assert {(n["channel"], n["template"], n["status"]) for n in detail["notifications"]} == {
        (c, m, "sent") for c in ("email", "sms", "webhook") for m in ("received", "approved", "paid", "completed")}
    deadlines = {d["stage"]: d for d in detail["deadlines"]}
    assert list(deadlines) == ["intake", "approval", "payout", "reconcile", "notify"]
    assert all(d["due_at"] and d["done_at"] and d["met"] is not None for d in deadlines.values()), deadlines

    # The search is index scans only, however big the projection grows.
    async with db.transaction():
        await db.execute("SET LOCAL enable_seqscan = off")
        plan = "\n".join(r[0] for r in await db.fetch(f"EXPLAIN {store._SEARCH}", refund_id, 50))
    assert "Seq Scan" not in plan, plan


async def test_the_customers_bank_account_from_the_page_pays_the_failed_refund_end_to_end(
        sinks, stack, producer, status_feed, db):
    # The whole exit, nothing forged: the card is dead (no automatic bank-transfer fallback), the
    # payout fails, the customer gives an IBAN on the signed page, notify seals it for payout, payout
    # asks intake to reserve the amount again, and attempt 2 pays it by bank transfer.
    with service_configured(stack, "payout", PAYOUT_FALLBACK_FROM="[]"):
        request = customer_request(payment_suffix="-sim-expired")
        refund_id = refund_of(request, SOURCE)
        await failed_refund(producer, status_feed, request)
        async with httpx.AsyncClient(timeout=30) as http:
            given = await http.post(f"{link_for(stack, refund_id)}/destination",
                                    data={"holder": "Ana Lima", "iban": GOOD_IBAN})
            assert given.status_code == 303, given.text  # taken: back to the page
        assert await status_feed.wait_for(
            lambda: status_feed.status_of(refund_id) in ("succeeded", "reconciled"), timeout=120)
    paid = await db.fetchrow("SELECT * FROM payout.payouts WHERE refund_id = $1", refund_id)
    assert (paid["status"], paid["attempt"], paid["channel"]) == ("succeeded", 2, "bank_transfer")
    exit_row = await db.fetchrow("SELECT * FROM payout.exits WHERE refund_id = $1", refund_id)
    assert (exit_row["exit"], exit_row["requested_by"]) == ("new_destination", "customer")
    assert await db.fetchval("SELECT count(*) FROM gateway_sim.refunds WHERE payment_id = $1 AND status = 'succeeded'",
                             request["payment"]["id"]) == 1
    # The amount is reserved once again for attempt 2, not given back by attempt 1's failure.
    assert await db.fetchval("SELECT refunded FROM intake.payment_balances WHERE gateway = $1 AND payment_id = $2",
                             request["payment"]["gateway"], request["payment"]["id"]) == request["amount"]["value"]
