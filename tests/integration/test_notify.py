"""Notify on the real stack: every milestone reaches the customer once by email (real SMTP),
SMS (HTTP provider) and signed webhook, across redelivery and a restart in the middle of a send."""

import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import pytest

from playwright.async_api import async_playwright

from services.notify.signing import sign_link
from shared.contract.envelope import encode
from devstack.kafka import describe_topic_configs
from shared.contract import topics
from shared.contract.events import PayoutSubmitted, RefundAccepted
from shared.runtime.roles import Role
from tools.platform import StatusFollower
from tests.integration.helpers import TopicTail, pay_for, publish, refund_of, staff_auth, valid_request, wait_until
from tests.integration.notify_sinks import Sinks
from tests.integration.service_fixtures import service_configured

pytestmark = pytest.mark.integration
SOURCE = "shop-notify"
LINK_SECRET = "test-customer-link-secret"
PLATFORM_AUTH = {"Authorization": "Bearer test-platform-api-key"}
SUCCESS = ["received", "approved", "paid", "completed"]
CHANNELS = ["email", "sms", "webhook"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def notify_env(servers: Sinks) -> dict[str, str]:
    """What notify runs with in this module: the sinks as its providers, our link secret and platform key."""
    return {**servers.env(SOURCE), "CUSTOMER_LINK_SECRET": LINK_SECRET,
            "TRACKING_API_KEYS": orjson.dumps({"test-platform-api-key": SOURCE}).decode()}


@pytest.fixture(scope="module")
def sinks(stack):
    """Real SMTP/SMS/webhook servers; notify restarted pointing at them, and restored afterwards."""
    servers = Sinks().start()
    try:
        with service_configured(stack, "notify", **notify_env(servers)):
            yield servers
    finally:
        servers.stop()


def customer_request(locale: str = "en", declined: bool = False, **changes) -> dict:
    """A request valid_request would make (paid by the simulator), for a customer of its own."""
    request = valid_request(**changes)
    n = uuid.uuid4().hex[:8]
    request["customer"] = {"id": f"cus-{n}", "email": f"c-{n}@example.com", "phone": f"+4915{int(n, 16) % 10**8:08d}",
                           "locale": locale}
    if declined:  # the gateway simulator declines such payments for good
        request["payment"]["id"] = f"pay-sim-decline-{n}"
    return request


async def settled(db, refund_id: str, count: int | None, last: str = "completed"):
    """The refund's notifications once `count` of them (or, for None, its `last` milestone's) exist
    and none is still pending or sending."""
    async def check():
        rows = await db.fetch("SELECT milestone, channel, state, attempts FROM notify.notifications "
                              "WHERE refund_id = $1", refund_id)
        there = len(rows) == count if count is not None else any(r["milestone"] == last for r in rows)
        done = there and all(r["state"] in ("sent", "skipped", "failed") for r in rows)
        return rows if done else None
    return await wait_until(check, timeout=60)


def milestone_of(message) -> str:
    found = re.fullmatch(r"<rf_[0-9a-f]+\.(\w+)\.email@refunds\.example\.com>", str(message["Message-ID"]).strip())
    assert found, message["Message-ID"]
    return found.group(1)


async def test_each_milestone_reaches_the_customer_once_by_email_sms_and_webhook(sinks, stack, producer,
                                                                                status_feed, db):
    request = customer_request()
    refund_id = refund_of(request, SOURCE)
    await publish(producer, request, source=SOURCE)
    assert await status_feed.wait_for(lambda: status_feed.status_of(refund_id) == "reconciled", timeout=60)

    rows = await settled(db, refund_id, len(SUCCESS) * len(CHANNELS))
    assert {(r["milestone"], r["channel"], r["state"]) for r in rows} == {
        (m, c, "sent") for m in SUCCESS for c in CHANNELS}

    mails = sinks.mail.to(request["customer"]["email"])
    assert sorted(milestone_of(m) for m in mails) == sorted(SUCCESS)
    by_milestone = {milestone_of(m): m for m in mails}
    assert by_milestone["received"]["Subject"] == f"We received your refund request for order {request['order_id']}"
    eta = status_feed.latest[refund_id]["eta"]
    paid_text = by_milestone["paid"].get_content()
    assert "Expect the money by" in paid_text and "25.00 EUR" in paid_text, paid_text
    assert "Rate your refund from 1 to 5: http" in by_milestone["completed"].get_content()  # its page's form
    assert "feedback" not in by_milestone["received"].get_content()
    assert eta is not None

    # The link in the email opens the customer's page, which shows the refund complete.
    link = re.search(r"http://\S+/r/\S+", by_milestone["completed"].get_content()).group(0)
    async with httpx.AsyncClient() as http:
        page = await http.get(link)
    assert page.status_code == 200 and 'aria-valuenow="100"' in page.text and request["order_id"] in page.text

    texts = sinks.http.texts_to(request["customer"]["phone"])
    assert len(texts) == len(SUCCESS) and any("25.00 EUR paid" in t["body"] for t in texts), texts

    hooks = [h for h in sinks.http.webhooks if h["body"]["refund_id"] == refund_id]
    assert all(h["valid"] and h["accepted"] for h in hooks) and sorted(h["body"]["type"] for h in hooks) == sorted(
        f"refund.{m}" for m in SUCCESS)
    assert {h["body"]["source"] for h in hooks} == {SOURCE}


async def test_declined_payout_asks_a_chinese_customer_to_act_in_chinese(sinks, stack, producer, status_feed, db):
    request = customer_request(locale="zh-CN", declined=True)
    refund_id = refund_of(request, SOURCE)
    await publish(producer, request, source=SOURCE)
    assert await status_feed.wait_for(lambda: status_feed.status_of(refund_id) == "failed", timeout=60)

    expected = ["received", "approved", "action_needed"]
    await settled(db, refund_id, len(expected) * len(CHANNELS))
    mails = {milestone_of(m): m for m in sinks.mail.to(request["customer"]["email"])}
    assert sorted(mails) == sorted(expected)
    assert mails["action_needed"]["Subject"] == f"需要您处理：订单 {request['order_id']} 的退款无法支付"
    assert mails["action_needed"]["Content-Language"] == "zh-CN"
    assert "请打开下方链接提供银行账户" in mails["action_needed"].get_content()  # the page takes a new account
    assert any("需要您处理" in t["body"] for t in sinks.http.texts_to(request["customer"]["phone"]))


async def test_denied_refund_tells_the_customer_with_the_reason(sinks, stack, producer, status_feed, db):
    # The policy denies wallet refunds more than 365 days after capture (refund-window-wallet).
    request = customer_request()
    request["payment"].update(channel="wallet", captured_at=(datetime.now(UTC) - timedelta(days=400)).isoformat())
    refund_id = refund_of(request, SOURCE)
    await publish(producer, request, source=SOURCE)
    assert await status_feed.wait_for(lambda: status_feed.status_of(refund_id) == "denied", timeout=60)
    await settled(db, refund_id, 2 * len(CHANNELS))
    mails = {milestone_of(m): m for m in sinks.mail.to(request["customer"]["email"])}
    assert sorted(mails) == ["denied", "received"]
    assert "refund-window-wallet" in mails["denied"].get_content()


async def test_redelivered_and_resent_events_notify_nobody_twice(sinks, stack, producer, status_feed, db):
    request = customer_request()
    refund_id = refund_of(request, SOURCE)
    async with TopicTail(stack.bootstrap, "refunds.accepted") as accepted:
        await publish(producer, request, source=SOURCE)
        record = await accepted.wait_for(lambda e: e["data"]["refund_id"] == refund_id)
    assert await status_feed.wait_for(lambda: status_feed.status_of(refund_id) == "reconciled", timeout=60)
    await settled(db, refund_id, len(SUCCESS) * len(CHANNELS))

    # The same CloudEvent again (a redelivery), then the same facts under a new event id (a re-send).
    seen = len(status_feed.history[refund_id])
    accepted_event = RefundAccepted.model_validate(record["data"])
    for event_id in (record["id"], None):
        out = encode(accepted_event, source=record["source"], key=refund_id)
        value = out.value if event_id is None else out.value.replace(out.event_id.encode(), event_id.encode())
        await producer.send_and_wait(out.topic, value, key=refund_id.encode(), headers=list(out.headers.items()))
    # Notify answers both by re-publishing the unchanged status: proof it has handled them.
    assert await status_feed.wait_for(lambda: len(status_feed.history[refund_id]) >= seen + 2, timeout=60)
    assert status_feed.status_of(refund_id) == "reconciled"

    rows = await settled(db, refund_id, len(SUCCESS) * len(CHANNELS))
    assert all(r["attempts"] == 1 for r in rows)
    assert sorted(milestone_of(m) for m in sinks.mail.to(request["customer"]["email"])) == sorted(SUCCESS)
    assert len(sinks.http.texts_to(request["customer"]["phone"])) == len(SUCCESS)


async def test_restart_in_the_middle_of_a_send_still_delivers_once(sinks, stack, producer, status_feed, db):
    request = customer_request()
    refund_id = refund_of(request, SOURCE)
    email, phone = request["customer"]["email"], request["customer"]["phone"]
    sinks.mail.hold.recipient, sinks.http.hold.recipient = email, phone
    await publish(producer, request, source=SOURCE)

    # Kill notify while both servers hold its send (SMTP DATA, SMS POST) and nothing else of
    # this refund is in flight. (A kill in the instant between a provider accepting a message and
    # notify recording it would resend it under the same identity: see README, not tested here.)
    async def only_the_held_sends_in_flight() -> bool:
        sending = await db.fetchval("SELECT count(*) FROM notify.notifications WHERE refund_id = $1 "
                                    "AND state = 'sending'", refund_id)
        return sinks.mail.hold.reached.is_set() and sinks.http.hold.reached.is_set() and sending == 2

    await wait_until(only_the_held_sends_in_flight, timeout=60)
    stack.kill_service("notify")
    sinks.mail.hold.release.set()
    sinks.http.hold.release.set()
    stack.start_service("notify", notify_env(sinks))

    assert await status_feed.wait_for(lambda: status_feed.status_of(refund_id) == "reconciled", timeout=60)
    # Catching up after the restart, notify may learn of `approved` only after `paid`: a stale
    # milestone is not announced late. Every milestone it did queue went out exactly once.
    rows = await settled(db, refund_id, None)
    assert {r["state"] for r in rows} == {"sent"}
    queued = sorted(r["milestone"] for r in rows if r["channel"] == "email")
    assert {"received", "completed"} <= set(queued) and len(rows) == len(queued) * len(CHANNELS)
    attempts = {f"{refund_id}.{r['milestone']}.{r['channel']}": r["attempts"] for r in rows}
    held_mail = re.fullmatch(r"<(.+)@refunds\.example\.com>", sinks.mail.hold.held).group(1)
    assert attempts[held_mail] == 2 and attempts[sinks.http.hold.held] == 2, attempts
    # SMTP never said 250 to the killed attempt, so the retry is the one delivery.
    assert sorted(milestone_of(m) for m in sinks.mail.to(email)) == queued
    # The provider had the SMS before the kill; the retry carried the same Idempotency-Key.
    assert [a["key"] for a in sinks.http.sms_attempts].count(sinks.http.hold.held) == 2
    assert len(sinks.http.texts_to(phone)) == len(queued)


async def test_drill_refund_notifies_the_platform_but_no_customer(sinks, stack, producer, status_feed, db):
    request = await pay_for(customer_request())
    refund_id = refund_of(request, SOURCE)
    now = request["requested_at"]
    drill = RefundAccepted.model_validate({
        **request, "refund_id": refund_id, "source": SOURCE, "channel": "card", "drill": True,
        "accepted_at": now})
    out = encode(drill, source="refund-pipeline/intake", key=refund_id)
    await producer.send_and_wait(out.topic, out.value, key=refund_id.encode(), headers=list(out.headers.items()))
    assert await status_feed.wait_for(lambda: status_feed.status_of(refund_id) == "reconciled", timeout=60)

    rows = await settled(db, refund_id, len(SUCCESS))
    assert {(r["channel"], r["state"]) for r in rows} == {("webhook", "sent")}
    assert sinks.mail.to(request["customer"]["email"]) == []
    assert sinks.http.texts_to(request["customer"]["phone"]) == []


async def test_opted_out_customer_gets_no_more_email_or_sms(sinks, stack, producer, status_feed, db):
    first = customer_request()
    await publish(producer, first, source=SOURCE)
    first_id = refund_of(first, SOURCE)
    assert await status_feed.wait_for(lambda: status_feed.status_of(first_id) == "reconciled", timeout=60)
    await settled(db, first_id, len(SUCCESS) * len(CHANNELS))
    # The mail client's one-click unsubscribe (RFC 8058): a POST to the List-Unsubscribe URL.
    mail = sinks.mail.to(first["customer"]["email"])[0]
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    unsubscribe = str(mail["List-Unsubscribe"]).strip("<> ")
    async with httpx.AsyncClient(follow_redirects=True) as http:
        page = await http.post(unsubscribe, data={"List-Unsubscribe": "One-Click"})
    assert page.status_code == 200 and 'id="opted-out"' in page.text

    second = customer_request()
    second["customer"] = first["customer"]
    await publish(producer, second, source=SOURCE)
    second_id = refund_of(second, SOURCE)
    assert await status_feed.wait_for(lambda: status_feed.status_of(second_id) == "reconciled", timeout=60)
    rows = await settled(db, second_id, len(SUCCESS) * len(CHANNELS))
    assert {(r["channel"], r["state"]) for r in rows} == {("email", "skipped"), ("sms", "skipped"),
                                                           ("webhook", "sent")}
    assert len(sinks.mail.to(first["customer"]["email"])) == len(SUCCESS)  # the first refund's only


async def test_tracking_api_by_id_and_by_request_counts_repeat_inquiries(sinks, stack, producer, status_feed, db):
    request = customer_request()
    refund_id = refund_of(request, SOURCE)
    await publish(producer, request, source=SOURCE)
    assert await status_feed.wait_for(lambda: status_feed.status_of(refund_id) == "reconciled", timeout=60)
    await settled(db, refund_id, len(SUCCESS) * len(CHANNELS))

    base = stack.service_url("notify")
    async with httpx.AsyncClient(base_url=base, headers=PLATFORM_AUTH) as http:
        by_id = (await http.get(f"/v1/refunds/{refund_id}")).json()
        by_request = await http.get("/v1/refunds", params={"source": SOURCE, "request_id": request["request_id"]})
        missing = await http.get("/v1/refunds", params={"source": SOURCE, "request_id": "never-sent"})
        metrics = (await http.get("/metrics")).text
    assert by_id["status"] == "reconciled" and by_id["progress"] == 100 and by_id["eta"]
    assert [s["status"] for s in by_id["stages"]] == ["accepted", "approved", "processing", "succeeded",
                                                      "reconciled"]
    assert list(by_id["timeline"]) == [s["status"] for s in by_id["stages"]]
    assert by_id["amount"] == {"value": 2500, "currency": "EUR"} and by_id["inquiries"] == 1
    assert by_request.status_code == 200 and by_request.json()["refund_id"] == refund_id
    assert by_request.json()["inquiries"] == 2
    assert missing.status_code == 404 and "never-sent" in missing.json()["detail"]
    assert _metric(metrics, 'refund_tracking_lookups_total{via="api"}') >= 2
    assert _metric(metrics, 'refund_tracking_repeat_lookups_total{via="api"}') >= 1
    # Notify's own stage (milestone -> message out) in the contract's metrics.
    assert _metric(metrics, 'refund_stage_duration_seconds_count{channel="card",outcome="sent",stage="notify"}') >= 4
    assert _metric(metrics, 'refund_notifications_total{channel="email",milestone="completed",outcome="sent"}') >= 1
    assert 'refund_stage_inflight{stage="notify"}' in metrics


async def test_tracking_api_shows_a_platform_only_its_own_refunds(sinks, stack, producer, status_feed):
    ours, theirs = customer_request(), valid_request()
    await publish(producer, ours, source=SOURCE)
    await publish(producer, theirs)  # another platform (shop-test)
    ours_id, theirs_id = refund_of(ours, SOURCE), refund_of(theirs)
    assert await status_feed.wait_for(
        lambda: status_feed.status_of(ours_id) == status_feed.status_of(theirs_id) == "reconciled", timeout=60)
    base = stack.service_url("notify")
    staff = staff_auth("agent-7", Role.REVIEWER)
    async with httpx.AsyncClient(base_url=base) as http:
        anonymous = await http.get(f"/v1/refunds/{ours_id}")
        wrong_key = await http.get(f"/v1/refunds/{ours_id}", headers={"Authorization": "Bearer guessed"})
        own = await http.get(f"/v1/refunds/{ours_id}", headers=PLATFORM_AUTH)
        other = await http.get(f"/v1/refunds/{theirs_id}", headers=PLATFORM_AUTH)
        other_by_request = await http.get("/v1/refunds", headers=PLATFORM_AUTH,
                                          params={"source": "shop-test", "request_id": theirs["request_id"]})
        by_staff = await http.get(f"/v1/refunds/{theirs_id}", headers=staff)
    assert anonymous.status_code == 401 and wrong_key.status_code == 401
    assert own.status_code == 200 and own.json()["refund_id"] == ours_id
    assert other.status_code == 404 and other_by_request.status_code == 404  # no hint that it exists
    assert by_staff.status_code == 200 and by_staff.json()["source"] == "shop-test"


def _metric(text: str, name: str) -> float:
    return float(re.search(re.escape(name) + r" (\S+)", text).group(1))


def test_customer_link_signature_is_checked(sinks, stack):
    base = stack.service_url("notify")
    good = sign_link(LINK_SECRET, "rf_00000000000000000000000000000000", 2**40)
    tampered = sign_link(LINK_SECRET, "rf_11111111111111111111111111111111", 2**40).rsplit(".", 1)[0] + "." + \
        good.rsplit(".", 1)[1]
    expired = sign_link(LINK_SECRET, "rf_00000000000000000000000000000000", 1_000_000_000)
    forged = sign_link("someone-else", "rf_00000000000000000000000000000000", 2**40)
    for token, reason in ((tampered, "invalid"), (expired, "expired"), (forged, "invalid")):
        page = httpx.get(f"{base}/r/{token}")
        assert page.status_code == 403 and f'data-reason="{reason}"' in page.text, (token, page.text)
    assert "已过期" in httpx.get(f"{base}/r/{expired}", headers={"Accept-Language": "zh-CN,zh;q=0.9"}).text
    assert httpx.get(f"{base}/r/{good}").status_code == 404  # genuine link, no such refund


async def test_customer_page_mid_pipeline_in_a_real_browser(sinks, stack, producer, status_feed):
    request = customer_request(locale="zh-CN")
    refund_id = refund_of(request, SOURCE)
    stack.stop_service("payout")  # holds the refund at `approved`, mid-pipeline
    try:
        await publish(producer, request, source=SOURCE)
        assert await status_feed.wait_for(lambda: status_feed.status_of(refund_id) == "approved", timeout=60)

        async def received_mail():
            return sinks.mail.to(request["customer"]["email"])

        mail = (await wait_until(received_mail, timeout=60))[0]
        link = re.search(r"http://\S+/r/\S+", mail.get_content()).group(0)
        ARTIFACTS.mkdir(exist_ok=True)
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page(locale="zh-CN")  # a Chinese customer's browser
                response = await page.goto(link)
                assert response.status == 200
                bar = page.locator("#progress")
                assert await bar.get_attribute("aria-valuenow") == "45"
                width = await page.evaluate(
                    "() => document.querySelector('#progress > div').getBoundingClientRect().width "
                    "/ document.querySelector('#progress').getBoundingClientRect().width")
                assert abs(width - 0.45) < 0.02, width
                eta_text = (await page.inner_text("#eta")).strip()
                assert re.fullmatch(r"预计到账时间 \d{4}年\d{1,2}月\d{1,2}日", eta_text), eta_text
                shown = datetime.fromisoformat(await page.get_attribute("#eta", "data-eta"))
                assert shown == datetime.fromisoformat(status_feed.latest[refund_id]["eta"])
                assert await page.locator("#timeline li").evaluate_all("items => items.map(i => i.dataset.status)") \
                    == ["accepted", "approved"]
                assert "退回您的原支付方式" in await page.inner_text("#next")
                await page.screenshot(path=ARTIFACTS / "notify-customer-page-zh-CN.png", full_page=True)

                refused = await page.goto(link[:-4] + "0000")
                assert refused.status == 403 and "链接无效" in await page.inner_text("h1")
                await page.screenshot(path=ARTIFACTS / "notify-customer-page-refused.png")
            finally:
                await browser.close()
    finally:
        stack.start_service("payout")
    assert await status_feed.wait_for(lambda: status_feed.status_of(refund_id) == "reconciled", timeout=60)


async def test_webhook_endpoint_down_is_retried_with_backoff_until_delivered(sinks, stack, producer, status_feed,
                                                                             db):
    request = customer_request()
    refund_id = refund_of(request, SOURCE)
    sinks.http.webhook_outage[refund_id] = 2
    await publish(producer, request, source=SOURCE)
    assert await status_feed.wait_for(lambda: status_feed.status_of(refund_id) == "reconciled", timeout=60)
    rows = await settled(db, refund_id, len(SUCCESS) * len(CHANNELS))
    assert {r["state"] for r in rows} == {"sent"}
    assert sum(r["attempts"] for r in rows if r["channel"] == "webhook") == len(SUCCESS) + 2

    hooks = [h for h in sinks.http.webhooks if h["body"]["refund_id"] == refund_id]
    accepted = [h["id"] for h in hooks if h["accepted"]]
    assert sorted(accepted) == sorted(f"{refund_id}.{m}.webhook" for m in SUCCESS)  # each exactly once
    refused = [h for h in hooks if not h["accepted"]]
    assert len(refused) == 2
    for failed in refused:
        retry = next(h for h in hooks if h["id"] == failed["id"] and h["at"] > failed["at"])
        assert retry["at"] - failed["at"] >= 0.4  # backoff (0.5 s base in this test), not a hot loop


async def test_a_send_that_cannot_succeed_ends_failed_not_retried_forever(sinks, stack, producer, status_feed, db):
    down, gone = customer_request(), customer_request()
    down_id, gone_id = refund_of(down, SOURCE), refund_of(gone, SOURCE)
    sinks.http.webhook_outage[down_id] = 1000  # never comes back
    sinks.http.webhook_gone.add(gone_id)
    for request in (down, gone):
        await publish(producer, request, source=SOURCE)
    for refund_id in (down_id, gone_id):
        assert await status_feed.wait_for(lambda: status_feed.status_of(refund_id) == "reconciled", timeout=60)

    webhooks = ("SELECT state, attempts, last_error FROM notify.notifications "
                "WHERE refund_id = $1 AND channel = 'webhook'")
    await settled(db, down_id, len(SUCCESS) * len(CHANNELS))
    assert {(r["state"], r["attempts"]) for r in await db.fetch(webhooks, down_id)} == {("failed", 4)}  # the maximum
    await settled(db, gone_id, len(SUCCESS) * len(CHANNELS))
    rows = await db.fetch(webhooks, gone_id)
    assert {(r["state"], r["attempts"]) for r in rows} == {("failed", 1)}  # 4xx: no retry helps
    assert all("HTTP 410" in r["last_error"] for r in rows)
    assert len(sinks.mail.to(gone["customer"]["email"])) == len(SUCCESS)  # other channels unaffected


async def test_payouts_eta_is_what_the_customer_sees(sinks, stack, producer, status_feed):
    # Only notify consumes payout-submitted, so a lone event places this refund mid-pipeline.
    request = customer_request()
    refund_id = refund_of(request, SOURCE)
    announced = datetime(2026, 12, 3, 17, 0, tzinfo=UTC)
    event = PayoutSubmitted(
        refund_id=refund_id, request_id=request["request_id"], source=SOURCE, order_id=request["order_id"],
        amount=request["amount"], channel="card", region="DE", gateway="sim", payout_id=f"po-{refund_id}",
        submitted_at=datetime.now(UTC), eta=announced)
    out = encode(event, source="refund-pipeline/payout", key=refund_id)
    await producer.send_and_wait(out.topic, out.value, key=refund_id.encode(), headers=list(out.headers.items()))
    assert await status_feed.wait_for(lambda: status_feed.status_of(refund_id) == "processing", timeout=60)
    assert datetime.fromisoformat(status_feed.latest[refund_id]["eta"]) == announced
    async with httpx.AsyncClient() as http:
        tracked = (await http.get(f"{stack.service_url('notify')}/v1/refunds/{refund_id}",
                                  headers=PLATFORM_AUTH)).json()
    assert datetime.fromisoformat(tracked["eta"]) == announced and tracked["progress"] == 60


async def test_a_platform_that_subscribes_late_still_gets_every_current_status(stack, producer, status_feed):
    request = valid_request()
    refund_id = refund_of(request)
    await publish(producer, request)
    assert await status_feed.wait_for(lambda: status_feed.status_of(refund_id) == "reconciled", timeout=60)

    late = StatusFollower(stack.bootstrap)
    await late.start(from_beginning=True)
    try:
        assert await late.wait_for(lambda: late.status_of(refund_id) == "reconciled", timeout=60)
    finally:
        await late.stop()
    # Compaction keeps the latest status per refund_id for such a subscriber, however old the feed.
    config = describe_topic_configs(stack.bootstrap, [topics.STATUS], stack.kafka_auth("operator"))[topics.STATUS]
    assert config["cleanup.policy"] == "compact"
