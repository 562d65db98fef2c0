"""The console's exits in a real browser (chromium) against the real stack, each driven like a person: an
expired review reopened by a senior reviewer, a failed payout recorded paid outside and its discrepancy
resolved on the reconciliation page, a dead letter replayed once its cause is fixed, a breaker closed.

Each effect is checked through the owning service's API or the status feed; screenshots go to
.run/test/screenshots.
"""

import re
import uuid

import httpx
import pytest
from playwright.async_api import Page, expect

from shared.contract import topics
from shared.runtime.roles import Role
from tests.integration.helpers import publish, refund_of, staff_auth, valid_request, wait_until
from tests.integration.service_fixtures import request_with_payment, service_configured
from tests.integration.test_console import (  # noqa: F401 (browser, console_url: fixtures)
    ROOT, SHOTS, browser, console_url, new_page, notice, sign_in, sign_out)

pytestmark = pytest.mark.integration
SAM = staff_auth("sam", Role.SENIOR_REVIEWER)
FIONA = staff_auth("fiona", Role.FINANCE_LEAD)
# How long a reopened review stays open before it parks again: long enough for a loaded machine to
# look at it in the queue, short enough that the first expiry comes within the test.
EXPIRE_AFTER = "25s"


def parking_policy(tmp_path) -> str:
    """The shipped policy (it parks at expiry) with an SLA of seconds and a short expiry."""
    policy = (ROOT / "deploy/policy/refund-policy.yaml").read_text()
    policy = policy.replace('version: "2026.11-1"', 'version: "test-console-park"')
    policy = policy.replace("  sla: 4h\n  expire_after: 3d", f"  sla: 2s\n  expire_after: {EXPIRE_AFTER}")
    policy = policy.replace("  sla: 24h\n  expire_after: 7d", f"  sla: 2s\n  expire_after: {EXPIRE_AFTER}")
    policy = re.sub(r"(?m)^  on_expiry: \w+", "  on_expiry: park", policy)
    assert policy.count(f"expire_after: {EXPIRE_AFTER}") == 2
    path = tmp_path / "parking-policy.yaml"
    path.write_text(policy)
    return str(path)


async def csrf_of(page: Page) -> str:
    """The session's CSRF token, as every form of the page carries it (the sign-out form in the header)."""
    return await page.locator("header form[action='/signout'] input[name=csrf]").get_attribute("value")


async def get(stack, service: str, path: str, headers: dict, **params) -> dict | list:
    async with httpx.AsyncClient(base_url=stack.service_url(service), headers=headers, timeout=30) as http:
        response = await http.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def test_expired_review_is_reopened_by_a_senior_reviewer_from_the_queue(stack, tmp_path, browser,
                                                                              console_url, producer, status_feed):
    with service_configured(stack, "approval", APPROVAL_POLICY_FILE=parking_policy(tmp_path),
                            REVIEW_CLOCK_INTERVAL_SECONDS="0.5", SWEEP_INTERVAL_SECONDS="0.5"):
        request = valid_request(amount=90_000, captured=90_000)  # 900.00 EUR: one reviewer
        refund_id = refund_of(request)
        await publish(producer, request)
        assert await status_feed.wait_for(lambda: status_feed.status_of(refund_id) == "pending_review", timeout=60)

        async def parked():
            answer = await get(stack, "approval", "/v1/reviews", SAM, state="expired")
            return next((r for r in answer["reviews"] if r["refund_id"] == refund_id), None)
        await wait_until(parked, timeout=90)

        # A reviewer sees the parked review, who may reopen it, and no reopen button.
        page = await new_page(browser)
        await sign_in(page, console_url, "rita", "/queue?state=expired")
        row = page.locator(f"tr[data-refund-id='{refund_id}']")
        await expect(row).to_have_attribute("data-state", "expired")
        await expect(row.locator(".reopen-denied")).to_contain_text("senior reviewer")
        await expect(row.locator("form.reopen")).to_have_count(0)
        await expect(row.locator("form.decide")).to_have_count(0)
        # Posting the form anyway: approval refuses, and the console shows approval's own message.
        forced = await page.request.post(f"{console_url}/queue/{refund_id}/reopen",
                                         form={"reason": "customer called", "csrf": await csrf_of(page)},
                                         headers={"Referer": f"{console_url}/queue?state=expired"})
        assert forced.ok and "approval refused (403)" in await forced.text(), await forced.text()
        await page.screenshot(path=SHOTS / "console-reopen-reviewer.png", full_page=True)
        review = await get(stack, "approval", f"/v1/reviews/{refund_id}", SAM)
        assert review["state"] == "expired" and "reopened" not in [e["action"] for e in review["audit"]]
        await sign_out(page)

        # A senior reviewer reopens it with a reason; it is back in the live queue.
        await sign_in(page, console_url, "sam", "/queue?state=expired")
        row = page.locator(f"tr[data-refund-id='{refund_id}']")
        form = row.locator("form.reopen")
        await form.locator("input[name=reason]").fill("customer called: the parcel came back")
        await page.screenshot(path=SHOTS / "console-reopen-senior.png", full_page=True)
        await form.locator("button[type=submit]").click()
        assert await notice(page) == f"Reopened {refund_id}.", await notice(page)
        await page.goto(f"{console_url}/queue?state=open")
        await expect(page.locator(f"tr[data-refund-id='{refund_id}']")).to_have_attribute("data-state", "open")
        await expect(page.locator(f"tr[data-refund-id='{refund_id}'] form.decide")).to_be_visible()
        await page.screenshot(path=SHOTS / "console-reopened.png", full_page=True)
        review = await get(stack, "approval", f"/v1/reviews/{refund_id}", SAM)
        assert review["reopened_by"] == "sam", review
        reopened = [e for e in review["audit"] if e["action"] == "reopened"]
        assert [(e["actor"], e["note"]) for e in reopened] == [("sam", "customer called: the parcel came back")]
        assert status_feed.status_of(refund_id) == "pending_review"  # nothing decided: still waiting
        await page.context.close()


async def test_failed_payout_paid_outside_then_its_discrepancy_resolved(stack, browser, console_url, producer,
                                                                        status_feed):
    request = request_with_payment("sim-decline", amount=2000, captured=2000)  # declined for good
    refund_id = refund_of(request)
    await publish(producer, request)
    assert await status_feed.wait_for(lambda: status_feed.status_of(refund_id) == "failed", timeout=90)
    reference = f"BANK-{uuid.uuid4().hex[:8]}"

    page = await new_page(browser)
    await sign_in(page, console_url, "fiona", "/payouts/failed")
    row = page.locator(f"tr[data-refund-id='{refund_id}']")
    await expect(row).to_contain_text("20.00 EUR")
    form = row.locator("form.paid-outside")
    await form.locator("input[name=reference]").fill(reference)
    await form.locator("input[name=evidence]").fill("ticket FIN-42, bank statement 2026-12-01")
    await form.locator("input[name=reason]").fill("customer's card was closed; paid by bank transfer by hand")
    await form.locator("button[type=submit]").click()
    done = await notice(page)
    assert "refused" not in done and refund_id in done, done

    async def paid_outside():
        view = await get(stack, "payout", f"/v1/payouts/{refund_id}", FIONA)
        return view if view["status"] == "succeeded" else None
    view = await wait_until(paid_outside, timeout=60)
    [exit_] = view["exits"]
    assert (exit_["exit"], exit_["requested_by"], exit_["reference"]) == ("paid_outside", "fiona", reference), exit_
    # Succeeded (attempt 2 re-drives the failed refund), then a discrepancy: no gateway line will bear it.
    assert await status_feed.wait_for(lambda: status_feed.status_of(refund_id) == "discrepancy", timeout=60), \
        status_feed.history.get(refund_id)
    assert "succeeded" in status_feed.history[refund_id], status_feed.history[refund_id]
    await page.reload()
    await expect(page.locator(f"tr[data-refund-id='{refund_id}']")).to_have_count(0)

    # The discrepancy reconcile opened for money paid outside, on the reconciliation page.
    async def discrepancy():
        rows = await get(stack, "reconcile", "/v1/discrepancies", FIONA, status="open", category="paid_outside")
        return next((d for d in rows if d["refund_id"] == refund_id), None)
    opened = await wait_until(discrepancy, timeout=60)
    await page.goto(f"{console_url}/reconciliation")
    group = page.locator("section.category[data-category='paid_outside']")
    row = group.locator(f"tr[data-gateway-ref='{reference}']")
    await expect(row).to_contain_text("20.00 EUR")
    await expect(row).to_contain_text(refund_id)
    await expect(page.locator("#ledger tr[data-currency='EUR'] td.balanced")).to_have_text("yes")
    await page.screenshot(path=SHOTS / "console-paid-outside-discrepancy.png", full_page=True)
    await row.locator("input[name=reason]").fill("bank statement checked against FIN-42")
    await row.locator("button[type=submit]").click()
    assert await notice(page) == f"Discrepancy {opened['id']} resolved."
    await expect(page.locator(f"tr[data-gateway-ref='{reference}']")).to_have_count(0)
    assert await status_feed.wait_for(lambda: status_feed.status_of(refund_id) == "reconciled", timeout=60), \
        status_feed.history.get(refund_id)

    resolved = await get(stack, "reconcile", "/v1/discrepancies", FIONA, status="resolved", category="paid_outside")
    mine = next(d for d in resolved if d["id"] == opened["id"])
    assert (mine["resolved_by"], mine["resolution"]) == ("fiona", "bank statement checked against FIN-42")
    await page.goto(f"{console_url}/reconciliation")
    await expect(page.locator("#ledger tr[data-currency='EUR'] td.balanced")).to_have_text("yes")
    ledger = await get(stack, "reconcile", "/v1/ledger", FIONA)
    assert next(c for c in ledger["currencies"] if c["currency"] == "EUR")["balanced"], ledger
    await page.screenshot(path=SHOTS / "console-paid-outside-resolved.png", full_page=True)
    settled = await get(stack, "reconcile", f"/v1/refunds/{refund_id}/settlement", FIONA)
    assert settled["payout"]["paid_outside"] and [(d["category"], d["status"]) for d in settled["discrepancies"]] \
        == [("paid_outside", "resolved")], settled
    await page.context.close()


async def test_dead_letter_replayed_from_the_console_once_its_cause_is_fixed(stack, browser, console_url, producer,
                                                                            status_feed, db):
    request = valid_request()
    refund_id = refund_of(request)
    # The cause: payout's store refuses this refund, so its approval fails every retry and is dead-lettered.
    suffix = uuid.uuid4().hex[:8]
    await db.execute(f"""
        CREATE FUNCTION payout.refuse_{suffix}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.refund_id = '{refund_id}' THEN RAISE EXCEPTION 'payouts table refuses this refund'; END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER refuse_{suffix} BEFORE INSERT ON payout.payouts
            FOR EACH ROW EXECUTE FUNCTION payout.refuse_{suffix}();""")
    try:
        await publish(producer, request)

        async def dead_lettered():
            answer = await get(stack, "payout", "/v1/dead-letters", SAM, state="open")
            return next((d for d in answer["dead_letters"] if d["key"] == refund_id), None)
        letter = await wait_until(dead_lettered, timeout=90)
        assert letter["reason"] == "processing_failed", letter
    finally:
        await db.execute(f"DROP TRIGGER IF EXISTS refuse_{suffix} ON payout.payouts; "
                         f"DROP FUNCTION IF EXISTS payout.refuse_{suffix}()")
    assert await status_feed.wait_for(lambda: status_feed.status_of(refund_id) == "approved", timeout=30)

    page = await new_page(browser)
    await sign_in(page, console_url, "sam", "/dead-letters?service=payout")
    article = page.locator(f"section.service-panel[data-service='payout'] article.dead-letter[data-id='{letter['id']}']")
    await expect(article).to_contain_text("processing_failed")
    await expect(article.locator(".error-text")).to_contain_text("payouts table refuses this refund")
    await article.locator("summary").click()
    await expect(article.locator("pre")).to_contain_text(refund_id)
    replay = article.locator("form[action$='/replay']")
    await replay.locator("input[name=reason]").fill("trigger dropped, OPS-2")
    await page.screenshot(path=SHOTS / "console-dead-letter-replay.png", full_page=True)
    await replay.locator("button[type=submit]").click()
    done = await notice(page)
    assert "refused" not in done and str(letter["id"]) in done and "replay" in done, done
    assert await status_feed.wait_for(lambda: status_feed.status_of(refund_id) == "reconciled", timeout=90)

    answer = await get(stack, "payout", "/v1/dead-letters", SAM, state="replayed")
    mine = next(d for d in answer["dead_letters"] if d["id"] == letter["id"])
    assert (mine["handled_by"], mine["handled_reason"], mine["replayed_as"]) == ("sam", "trigger dropped, OPS-2", None)
    await page.goto(f"{console_url}/dead-letters?service=payout&state=replayed")
    await expect(page.locator(f"article.dead-letter[data-id='{letter['id']}']")).to_contain_text("trigger dropped")
    await page.context.close()


async def test_breaker_shown_open_then_closed_from_the_console(stack, browser, console_url, producer):
    with service_configured(stack, "payout", DEAD_LETTER_LIMIT_PER_MINUTE="3"):
        marker = uuid.uuid4().hex[:8].encode()
        for n in range(5):  # a bad deploy: every record dead-lettered
            await producer.send_and_wait(topics.APPROVED, b"garbage %d" % n, key=b"garbage-" + marker)

        async def opened():
            status = await get(stack, "payout", "/v1/dead-letters/breaker", SAM)
            return status if status["open"] else None
        await wait_until(opened, timeout=60)

        page = await new_page(browser)
        await sign_in(page, console_url, "sam", "/dead-letters?service=payout")
        panel = page.locator("section.service-panel[data-service='payout']")
        await expect(panel.locator(".breaker")).to_have_attribute("data-open", "true")
        await expect(panel.locator(".breaker")).to_contain_text("limit 3")
        await page.screenshot(path=SHOTS / "console-breaker-open.png", full_page=True)
        close = panel.locator("form.breaker-close")
        await close.locator("input[name=reason]").fill("bad deploy rolled back")
        await close.locator("button[type=submit]").click()
        assert await notice(page) == "The breaker of payout is closed; it consumes again."
        status = await get(stack, "payout", "/v1/dead-letters/breaker", SAM)
        assert status["open"] is False, status
        await page.goto(f"{console_url}/dead-letters?service=payout")
        await expect(panel.locator(".breaker")).to_have_attribute("data-open", "false")
        await expect(panel.locator("form.breaker-close")).to_have_count(0)
        await page.screenshot(path=SHOTS / "console-breaker-closed.png", full_page=True)
        await page.context.close()
