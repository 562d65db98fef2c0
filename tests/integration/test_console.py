"""The operations console in a real browser (chromium) against the real stack: sign-in, the queue with
four eyes, tickets, reconciliation, dead letters and failed payouts, in English and Chinese.

The console is a process of the stack (devstack starts it with the services); it reaches the services
only over their HTTP APIs with the signed-in person's token. Screenshots go to .run/test/screenshots.
"""

import re
import uuid
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Page, async_playwright, expect

from devstack.stack import CONSOLE
from services.console.settings import ConsoleSettings
from shared.contract import topics
from shared.runtime.roles import Role
from tests.integration.helpers import publish, refund_of, staff_auth, valid_request, wait_until
from tests.integration.service_fixtures import request_with_payment
from tests.integration.settlement_reports import FINANCE, STRIPE_HEADER, publish_paid, stripe_line

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / ".run" / "test" / "screenshots"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PASSWORD = ConsoleSettings().demo_password
ALICE = staff_auth("alice", Role.SENIOR_REVIEWER)


@pytest.fixture(scope="module")
async def browser(stack):
    SHOTS.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest.fixture
def console_url(stack) -> str:
    return stack.service_url(CONSOLE)


async def new_page(browser, locale: str = "en-GB") -> Page:
    context = await browser.new_context(locale=locale, viewport={"width": 1400, "height": 900})
    return await context.new_page()


async def sign_in(page: Page, base: str, user: str, next_path: str = "/queue") -> None:
    await page.goto(f"{base}{next_path}")
    assert "/signin" in page.url  # every page needs a signed-in person
    await page.select_option("#user", user)
    await page.fill("#password", PASSWORD)
    await page.click("#local-signin button[type=submit]")
    await expect(page.locator("#signed-in-as")).to_contain_text(user)
    assert await page.get_attribute("html", "lang") == "en"


async def sign_out(page: Page) -> None:
    await page.click("header form[action='/signout'] button")
    await expect(page.locator("#local-signin")).to_be_visible()


async def notice(page: Page) -> str:
    return (await page.locator(".notice").first.inner_text()).strip()


async def test_queue_decide_with_four_eyes_then_ticket(stack, browser, console_url, producer, status_feed):
    request = valid_request(amount=600_000, captured=600_000)  # 6,000.00 EUR: four eyes
    refund_id = refund_of(request)
    await publish(producer, request)
    assert await status_feed.wait_for(lambda: status_feed.status_of(refund_id) == "pending_review", timeout=60)

    page = await new_page(browser)
    # Keyboard: the first Tab lands on the skip link, which moves focus to the page's content.
    await page.goto(f"{console_url}/signin")
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.className") == "skip"
    # A wrong password is refused with a message; nothing is signed in.
    await page.select_option("#user", "alice")
    await page.fill("#password", "not-the-password")
    await page.click("#local-signin button[type=submit]")
    await expect(page.locator("#signin-error")).to_be_visible()

    await sign_in(page, console_url, "alice")
    row = page.locator(f"tr[data-refund-id='{refund_id}']")
    await expect(row).to_be_visible()
    await expect(row.locator("td.num")).to_have_text("6,000.00 EUR")
    await expect(row.locator("td.approvals")).to_contain_text("0/2")
    await expect(row.locator("td.roles")).to_contain_text("senior reviewer")
    assert "four-eyes-large" in await row.inner_text()
    assert re.search(r"\d+h \d+m left|\d+m left|\d+d \d+h left", await row.locator("td.sla").inner_text())
    # Oldest first: no row above ours is due later than it.
    dues = await page.locator("#queue tbody tr td.sla").evaluate_all("cells => cells.map(c => +c.dataset.seconds)")
    assert dues == sorted(dues), dues

    # A form posted without the session's CSRF token changes nothing.
    forged = await page.request.post(f"{console_url}/queue/{refund_id}/decision",
                                     form={"action": "approve", "reason": "forged", "csrf": "forged"})
    assert forged.ok and "The form expired" in await forged.text()
    review = httpx.get(f"{stack.service_url('approval')}/v1/reviews/{refund_id}", headers=ALICE).json()
    assert review["approvers"] == []

    await row.locator("select[name=action]").select_option("approve")
    await row.locator("input[name=reason]").fill("order and payment checked")
    await row.locator("button[type=submit]").click()
    assert "approve" in await notice(page) and refund_id in await notice(page)
    row = page.locator(f"tr[data-refund-id='{refund_id}']")
    await expect(row.locator(".four-eyes")).to_have_text("waiting for a second approver")
    await expect(row.locator("td.approvals")).to_contain_text("alice")
    await page.screenshot(path=SHOTS / "console-queue.png", full_page=True)

    # The same person again: approval refuses (four eyes) and the console shows its message as it is.
    await row.locator("input[name=reason]").fill("approving once more")
    await row.locator("button[type=submit]").click()
    refused = await notice(page)
    assert refused.startswith("approval refused (403)"), refused
    await page.screenshot(path=SHOTS / "console-queue-four-eyes-refused.png", full_page=True)

    await sign_out(page)
    await sign_in(page, console_url, "bob")
    row = page.locator(f"tr[data-refund-id='{refund_id}']")
    await row.locator("input[name=reason]").fill("second pair of eyes: matches the order")
    await row.locator("button[type=submit]").click()
    assert "approve" in await notice(page)
    await expect(page.locator(f"tr[data-refund-id='{refund_id}']")).to_have_count(0)
    assert await status_feed.wait_for(lambda: status_feed.status_of(refund_id) == "reconciled", timeout=90)

    # The ticket: each section from its owning service; the audit trail names both approvers.
    await page.goto(f"{console_url}/tickets/{refund_id}")
    audit = page.locator("#audit tbody")
    await expect(audit).to_contain_text("alice")
    await expect(audit).to_contain_text("bob")
    await expect(audit).to_contain_text("second pair of eyes: matches the order")
    await expect(page.locator("#policy-version")).to_have_text("2026.11-1")
    await expect(page.locator("#ticket-status")).to_have_attribute("data-status", "reconciled")
    await page.screenshot(path=SHOTS / "console-ticket.png", full_page=True)
    await page.context.close()


async def test_reconciliation_resolve_in_a_browser(stack, browser, console_url, producer):
    ref = f"re_console_{uuid.uuid4().hex[:8]}"
    await publish_paid(producer, ref, 2500)
    report = f"{STRIPE_HEADER}\n{stripe_line(f'txn_{ref}', ref, '-24.50')}\n"  # 50 cents short: amount_mismatch
    reconcile = stack.service_url("reconcile")
    uploaded = httpx.post(f"{reconcile}/v1/settlements?format=stripe", content=report, timeout=30,
                          headers=FINANCE | {"Content-Type": "text/csv"})
    assert uploaded.status_code == 200, uploaded.text

    async def flagged():
        queue = httpx.get(f"{reconcile}/v1/discrepancies", headers=FINANCE, timeout=30).json()
        rows = queue if isinstance(queue, list) else queue.get("discrepancies", [])
        return next((d for d in rows if d["gateway_ref"] == ref and d["category"] == "amount_mismatch"), None)
    discrepancy = await wait_until(flagged, timeout=60)

    page = await new_page(browser)
    # A reviewer may not see finance's queue: reconcile's own answer is shown, the page still renders.
    await sign_in(page, console_url, "rita", "/reconciliation")
    await expect(page.locator("p.error").first).to_contain_text("reconcile answered 403")
    await expect(page.locator("p.error").first).to_contain_text("finance_lead")
    await sign_out(page)

    await sign_in(page, console_url, "bob", "/reconciliation")
    group = page.locator("section.category[data-category='amount_mismatch']")
    await expect(group.locator("h3")).to_contain_text("Amount mismatch")
    row = page.locator(f"tr[data-gateway-ref='{ref}']")
    await expect(row).to_contain_text("25.00 EUR")
    await expect(row).to_contain_text("24.50 EUR")
    await expect(page.locator("#ledger tr[data-currency='EUR']")).to_be_visible()
    await page.screenshot(path=SHOTS / "console-reconciliation.png", full_page=True)
    await row.locator("input[name=reason]").fill("gateway confirmed the 50 cent fee by email")
    await row.locator("button[type=submit]").click()
    assert f"Discrepancy {discrepancy['id']} resolved." == await notice(page)
    await expect(page.locator(f"tr[data-gateway-ref='{ref}']")).to_have_count(0)

    resolved = httpx.get(f"{reconcile}/v1/discrepancies", params={"status": "resolved", "state": "resolved"},
                         headers=FINANCE, timeout=30).json()
    rows = resolved if isinstance(resolved, list) else resolved.get("discrepancies", [])
    mine = next(d for d in rows if d["id"] == discrepancy["id"])
    assert (mine["resolved_by"], mine["resolution"]) == ("bob", "gateway confirmed the 50 cent fee by email")
    await page.context.close()


async def test_console_in_chinese_and_language_switch(browser, console_url, producer, status_feed):
    request = valid_request(amount=90_000, captured=90_000)  # 900.00 EUR: a review to show
    refund_id = refund_of(request)
    await publish(producer, request)
    assert await status_feed.wait_for(lambda: status_feed.status_of(refund_id) == "pending_review", timeout=60)
    page = await new_page(browser, locale="zh-CN")  # the browser asks for Chinese (Accept-Language)
    await page.goto(f"{console_url}/signin")
    assert await page.get_attribute("html", "lang") == "zh-CN"
    await expect(page.locator("h1")).to_have_text("登录")
    await expect(page.locator("label[for=password]")).to_have_text("密码")
    await page.select_option("#user", "fiona")
    await page.fill("#password", PASSWORD)
    await page.click("#local-signin button[type=submit]")
    await expect(page.locator("h1")).to_have_text("审核队列")
    await expect(page.locator("nav")).to_contain_text("对账")
    await expect(page.locator("#queue thead")).to_contain_text("距 SLA")
    row = page.locator(f"tr[data-refund-id='{refund_id}']")
    await expect(row.locator("td.roles")).to_contain_text("高级审核员")
    await expect(row.locator("td.sla")).to_contain_text("剩余")
    await expect(row.locator("select[name=action] option[value=approve]")).to_have_text("批准")
    await page.screenshot(path=SHOTS / "console-queue-zh-CN.png", full_page=True)
    await page.goto(f"{console_url}/reconciliation")
    await expect(page.locator("h1")).to_have_text("对账")
    await expect(page.locator("#h-ledger")).to_have_text("各币种账目")
    # The person's choice beats the browser's: English from the switch, kept across pages.
    await page.click("header .langs a[hreflang=en]")
    await expect(page.locator("h1")).to_have_text("Reconciliation")
    await page.goto(f"{console_url}/queue")
    await expect(page.locator("h1")).to_have_text("Queue")
    await page.context.close()


async def test_console_health_and_metrics(console_url):
    assert httpx.get(f"{console_url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{console_url}/readyz").json()["status"] == "ready"
    metrics = httpx.get(f"{console_url}/metrics").text
    assert "console_page_views_total" in metrics and "console_service_call_seconds" in metrics
    assert "console_sign_ins_total" in metrics
    # Not signed in: no page, no call to any service.
    assert httpx.get(f"{console_url}/queue", follow_redirects=False).status_code == 303


# ---------------------------------------------------------------------------------------------------------------
# The pages below need the services' new read/act APIs (apis.md: tickets, dead letters, payout exits, queue filters).


async def test_ticket_search_and_every_section(stack, browser, console_url, producer, status_feed):
    request = valid_request()
    refund_id = refund_of(request)
    await publish(producer, request)
    assert await status_feed.wait_for(lambda: status_feed.status_of(refund_id) == "reconciled", timeout=90)
    page = await new_page(browser)
    await sign_in(page, console_url, "fiona", "/tickets")
    await page.fill("#q", request["order_id"])
    await page.click("form[role=search] button")
    result = page.locator(f"#results a[href='/tickets/{refund_id}']")
    await expect(result).to_be_visible()
    await result.click()
    await expect(page.locator("#ticket-status")).to_have_attribute("data-status", "reconciled")
    assert await page.locator(".unavailable").count() == 0, await page.locator(".unavailable").all_inner_texts()
    await expect(page.locator("#attempts tbody tr")).to_have_count(1)
    await expect(page.locator("#attempts")).to_contain_text("succeeded")
    await expect(page.locator("#notifications")).to_be_visible()
    paid = page.locator("#timeline tbody tr[data-status='succeeded']")  # a status, of refund.paid.v1
    await expect(paid).to_have_count(1)
    await expect(paid).to_contain_text("refund.paid.v1")
    await page.screenshot(path=SHOTS / "console-ticket-full.png", full_page=True)
    await page.context.close()


async def test_queue_filters(stack, browser, console_url, producer, status_feed):
    request = valid_request(amount=90_000, captured=90_000)  # 900.00 EUR: review
    refund_id = refund_of(request)
    await publish(producer, request)
    assert await status_feed.wait_for(lambda: status_feed.status_of(refund_id) == "pending_review", timeout=60)
    page = await new_page(browser)
    await sign_in(page, console_url, "alice")
    row = f"tr[data-refund-id='{refund_id}']"
    await page.goto(f"{console_url}/queue?kind=review&min_amount=800&max_amount=1000&currency=EUR")
    await expect(page.locator(row)).to_have_count(1)
    await page.goto(f"{console_url}/queue?kind=review&max_amount=100&currency=EUR")
    await expect(page.locator(row)).to_have_count(0)
    await page.goto(f"{console_url}/queue?kind=hold")
    await expect(page.locator(row)).to_have_count(0)
    await page.goto(f"{console_url}/queue?state=expired")
    await expect(page.locator(row)).to_have_count(0)
    await page.context.close()


async def test_dead_letters_page_discard_with_reason(stack, browser, console_url, producer):
    marker = uuid.uuid4().hex
    # Not a CloudEvent at all: approval dead-letters it.
    await producer.send_and_wait(topics.ACCEPTED, f'{{"not": "an event", "marker": "{marker}"}}'.encode(),
                                 key=marker.encode())
    approval = stack.service_url("approval")

    async def dead_lettered():
        answer = httpx.get(f"{approval}/v1/dead-letters", headers=ALICE, timeout=30).json()
        return next((d for d in answer.get("dead_letters", []) if d["key"] == marker), None)
    letter = await wait_until(dead_lettered, timeout=60)

    page = await new_page(browser)
    await sign_in(page, console_url, "alice", "/dead-letters?service=approval")
    panel = page.locator("section.service-panel[data-service='approval']")
    await expect(panel.locator(".breaker")).to_be_visible()
    article = panel.locator(f"article.dead-letter[data-id='{letter['id']}']")
    await expect(article).to_contain_text(letter["reason"])
    await article.locator("summary").click()
    await expect(article.locator("pre")).to_contain_text(marker)
    await page.screenshot(path=SHOTS / "console-dead-letters.png", full_page=True)
    await article.locator("form[action$='/discard'] input[name=reason]").fill("garbage from a load test")
    await article.locator("form[action$='/discard'] button").click()
    assert "discard" in await notice(page)
    answer = httpx.get(f"{approval}/v1/dead-letters", params={"state": "discarded"}, headers=ALICE, timeout=30).json()
    mine = next(d for d in answer["dead_letters"] if d["id"] == letter["id"])
    assert (mine["handled_by"], mine["handled_reason"]) == ("alice", "garbage from a load test")
    await page.context.close()


async def test_failed_payout_reroute(stack, browser, console_url, producer, status_feed):
    request = request_with_payment("sim-decline")  # the gateway declines the refund for good
    refund_id = refund_of(request)
    await publish(producer, request)
    assert await status_feed.wait_for(lambda: status_feed.status_of(refund_id) == "failed", timeout=90)
    page = await new_page(browser)
    await sign_in(page, console_url, "fiona", "/payouts/failed")
    row = page.locator(f"tr[data-refund-id='{refund_id}']")
    await expect(row).to_contain_text("declined")
    await page.screenshot(path=SHOTS / "console-failed-payouts.png", full_page=True)
    form = row.locator("form.reroute")
    gateways = await form.locator("select option").all_inner_texts()
    assert "sim" in gateways, gateways
    await form.locator("select").select_option("adyen" if "adyen" in gateways else "sim")
    await form.locator("input[name=reason]").fill("stripe keeps declining; customer agreed to adyen")
    await form.locator("button").click()
    assert "reroute" in await notice(page) or "Exit" in await notice(page)
    await page.goto(f"{console_url}/tickets/{refund_id}")
    await expect(page.locator("#exits")).to_contain_text("stripe keeps declining")
    await page.context.close()
