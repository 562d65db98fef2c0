"""Notify's pure parts: milestones, ETA, backoff, signed links, webhook signatures, templates."""

import re
import base64
import time
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka import ConsumerRecord
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from services.notify import delivery, domain, signing
from services.notify.handlers import Audience, in_production_order
from services.notify.messages import render_message, render_page, render_refused
from shared.contract.events import Status

NOW = datetime(2026, 11, 25, 9, 30, tzinfo=UTC)
MILESTONES = list(domain.Milestone)


def test_the_customer_hears_of_each_milestone_they_care_about():
    # Every milestone but the re-drive (failed -> processing again, not a status of its own) is a status's.
    assert set(domain.MILESTONE_OF_STATUS.values()) == set(domain.Milestone) - {domain.Milestone.REDRIVEN}
    assert domain.MILESTONE_OF_STATUS[Status.SUCCEEDED] == domain.Milestone.PAID
    assert Status.PROCESSING not in domain.MILESTONE_OF_STATUS  # internal step, no message


def test_progress_only_grows_along_the_lifecycle():
    lifecycle = [Status.ACCEPTED, Status.APPROVED, Status.PROCESSING, Status.SUCCEEDED, Status.RECONCILED]
    values = [domain.PROGRESS[s] for s in lifecycle]
    assert values == sorted(values) and values[-1] == 100 and len(set(values)) == len(values)
    assert set(domain.PROGRESS) == set(Status)


def test_payouts_own_eta_wins_and_is_kept_once_money_moves():
    announced = NOW + timedelta(days=2)
    assert domain.eta(Status.PROCESSING, "card", NOW, announced=announced) == announced
    # reconciled carries no ETA: the one announced at payout stays.
    assert domain.eta(Status.RECONCILED, "card", NOW + timedelta(days=1), previous=announced) == announced
    # before payout, a channel estimate
    assert domain.eta(Status.APPROVED, "alipay", NOW, previous=announced) == NOW + timedelta(days=1)
    assert domain.eta(Status.FAILED, "card", NOW, announced=announced) is None


@pytest.mark.parametrize(("tag", "locale"), [
    ("zh-CN", "zh-CN"), ("zh", "zh-CN"), ("zh-Hans-CN", "zh-CN"), ("ZH-tw", "zh-CN"),
    ("en", "en"), ("de-DE", "en"), (None, "en"), ("", "en")])
def test_customer_locale(tag, locale):
    assert domain.customer_locale(tag) == locale


def test_retry_backoff_doubles_up_to_the_cap():
    assert [domain.retry_delay_seconds(n, 2, 30) for n in range(1, 7)] == [2, 4, 8, 16, 30, 30]


def test_timeline_is_in_pipeline_order_whatever_the_arrival_order():
    stages = {"reconciled": "2026-11-25T10:05:00+00:00", "accepted": "2026-11-25T10:00:00+00:00",
              "succeeded": "2026-11-25T10:04:00+00:00", "approved": "2026-11-25T10:01:00+00:00"}
    assert [s["status"] for s in domain.timeline(stages)] == ["accepted", "approved", "succeeded", "reconciled"]


@pytest.mark.parametrize(("drill", "channels"), [(False, ["email", "sms", "webhook"]), (True, ["webhook"])])
def test_drills_reach_the_platform_but_never_a_customer(drill, channels):
    audience = Audience(email=True, sms=True, webhook_urls={"shop-eu": "https://shop.example/hooks"})
    row = domain.StatusRow("rf_1", source="shop-eu", drill=drill,
                           customer={"email": "a@example.com", "phone": "+4915112345678"})
    assert [c for c, _ in audience.recipients(row)] == channels


def test_channels_without_configuration_are_not_queued():
    row = domain.StatusRow("rf_1", source="shop-eu", customer={"email": "a@example.com", "phone": "+4915112345678"})
    assert Audience().recipients(row) == []


def test_customer_link_round_trips_and_refuses_tampering_and_expiry():
    token = signing.sign_link("secret", "rf_abc", expires=1000)
    assert signing.read_link("secret", token, now=999) == "rf_abc"
    with pytest.raises(signing.LinkRefused) as expired:
        signing.read_link("secret", token, now=1000)
    assert expired.value.reason == "expired"
    longer = token.replace(".1000.", ".9999.")  # trying to extend the link
    for bad in (longer, "rf_abc", "", token + "0", signing.sign_link("other", "rf_abc", 1000),
                token.replace("rf_abc", "rf_abd")):
        with pytest.raises(signing.LinkRefused) as refused:
            signing.read_link("secret", bad, now=0)
        assert refused.value.reason == "invalid", bad


@pytest.mark.parametrize("secret", ["whsec_" + base64.b64encode(b"platform-key").decode(), "plain-string-secret"])
def test_webhooks_are_signed_so_the_standardwebhooks_library_verifies_them(secret):
    body = b'{"refund_id":"rf_1","sequence":3}'
    signature = delivery.standard_webhook(secret).sign("rf_1.paid.webhook", datetime.now(UTC), body.decode())
    headers = {"webhook-id": "rf_1.paid.webhook", "webhook-timestamp": str(int(time.time())),
               "webhook-signature": signature}
    platform = Webhook(secret if secret.startswith("whsec_") else secret.encode())
    assert platform.verify(body, headers) == {"refund_id": "rf_1", "sequence": 3}
    with pytest.raises(WebhookVerificationError):
        platform.verify(b'{"refund_id":"rf_2"}', headers)
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + base64.b64encode(b"guess").decode()).verify(body, headers)


@pytest.mark.parametrize("locale", domain.SUPPORTED_LOCALES)
@pytest.mark.parametrize("milestone", MILESTONES)
@pytest.mark.parametrize("channel", ["email", "sms"])
def test_every_milestone_renders_in_every_locale(channel, milestone, locale):
    message = render_message(channel, locale, milestone, order_id="ord-7", amount={"value": 1050, "currency": "CNY"},
                             eta=NOW, reason_codes=["above_ceiling"], link="https://t.example/r/x",
                             feedback_url="https://fb.example")
    assert "https://t.example/r/x" in message.text
    assert (message.subject != "") == (channel == "email")
    if milestone in (domain.Milestone.PAID, domain.Milestone.COMPLETED):
        assert "10.50 CNY" in message.subject + message.text
    if milestone == domain.Milestone.PAID:
        assert ("2026年11月25日" if locale == "zh-CN" else "25 Nov 2026") in message.text
    # Feedback is asked for once the refund is complete, never before.
    assert ("https://fb.example" in message.text) == (milestone == domain.Milestone.COMPLETED and channel == "email")


def _row(status: str, **changes) -> dict:
    return {"refund_id": "rf_1", "status": status, "order_id": "<script>x</script>",
            "amount": {"value": 500, "currency": "JPY"}, "eta": NOW,
            "timeline": {"accepted": NOW.isoformat()}, **changes}


def test_page_escapes_what_came_from_platforms_and_shows_progress():
    page = render_page(_row("processing"), locale="en", action="/r/t", opted_out=False)
    assert "<script>x</script>" not in page and "&lt;script&gt;" in page
    assert 'aria-valuenow="60"' in page and "width: 60%" in page and "25 Nov 2026" in page
    assert 'id="feedback-form"' not in page and 'id="destination-form"' not in page  # not finished, not failed
    assert 'action="/r/t/opt-out"' in page


def test_page_asks_for_a_rating_when_complete_and_confirms_opt_out():
    page = render_page(_row("reconciled"), locale="zh-CN", action="/r/t", opted_out=True,
                       feedback={"rating": 4, "comment": "<b>ok</b>"})
    assert 'action="/r/t/feedback"' in page and "已完成" in page and 'id="opted-out"' in page
    assert 'value="4" id="rating-4" required checked' in page and "&lt;b&gt;ok&lt;/b&gt;" in page


@pytest.mark.parametrize("locale", domain.SUPPORTED_LOCALES)
def test_a_failed_refund_asks_for_a_bank_account_until_one_is_given(locale):
    asking = render_page(_row("failed"), locale=locale, action="/r/t", opted_out=False, destination_error="iban")
    assert 'action="/r/t/destination"' in asking and 'data-error="iban"' in asking and "IBAN" in asking
    given = render_page(_row("failed"), locale=locale, action="/r/t", opted_out=False,
                        destination={"summary": "DE89 •••• 3000"})
    assert 'id="destination-form"' not in given and "DE89 •••• 3000" in given
    reversed_ = render_page(_row("reversed"), locale=locale, action="/r/t", opted_out=False)
    assert 'id="destination"' not in reversed_


def test_the_page_shows_every_attempt_and_a_reopened_review_in_order():
    history = [{"status": "processing", "at": "2026-11-25T09:40:00+00:00", "attempt": 2},
               {"status": "failed", "at": "2026-11-25T09:35:00+00:00", "attempt": 1},
               {"status": "pending_review", "at": "2026-11-25T09:10:00+00:00", "attempt": 0},
               {"status": "pending_review", "at": "2026-11-25T09:20:00+00:00", "attempt": 0, "note": "review-reopened"},
               {"status": "accepted", "at": "2026-11-25T09:00:00+00:00", "attempt": 0}]
    page = render_page(_row("processing", history=history), locale="en", action="/r/t", opted_out=False)
    order = re.findall(r'<li data-status="(\w+)"(?: data-note="([\w-]+)")?', page)
    assert order == [("accepted", ""), ("pending_review", ""), ("pending_review", "review-reopened"),
                     ("failed", ""), ("processing", "")]
    assert "Review reopened" in page


def test_refused_page_says_why():
    assert 'data-reason="expired"' in render_refused("expired", "en") and "expired" in render_refused("expired", "en")
    assert "无效" in render_refused("invalid", "zh-CN")


def _record(topic: str, partition: int, offset: int, timestamp: int) -> ConsumerRecord:
    return ConsumerRecord(topic, partition, offset, timestamp, 0, b"k", b"v", None, 1, 1, [])


def test_a_batch_is_folded_in_the_order_events_were_produced_not_grouped_by_topic():
    # One poll: all of refunds.paid's partition first, then refunds.approved's.
    paid = _record("refunds.paid", 0, 7, timestamp=1_000_300)
    approved = _record("refunds.approved", 0, 4, timestamp=1_000_100)
    same_ms = [_record("refunds.accepted", 1, n, timestamp=1_000_000) for n in (10, 11, 12)]
    ordered = in_production_order([paid, *same_ms, approved])
    assert ordered == [*same_ms, approved, paid]  # a partition's own order is kept on ties


def test_a_refunds_sealed_contact_is_opened_once_for_all_its_events_and_a_broken_seal_never_opens(monkeypatch):
    from services.notify import handlers
    from shared.contract import contact_seal

    key = contact_seal.private_key(contact_seal.LOCAL_PRIVATE_KEY)
    projection = handlers.Projection(handlers.Audience(), key)
    sealed = contact_seal.seal(key.public_key(), {"email": "ana@example.com"}, refund_id="rf_once", customer_id="c-1")
    opens = []
    real_open = handlers.open_seal
    monkeypatch.setattr(handlers, "open_seal", lambda *args, **kwargs: opens.append(1) or real_open(*args, **kwargs))
    customer = {"id": "c-1", "locale": "de", "contact_sealed": sealed}

    seen = [projection._customer("rf_once", dict(customer)) for _ in range(5)]  # accepted ... reconciled

    assert seen == [{"id": "c-1", "locale": "de", "email": "ana@example.com"}] * 5
    assert len(opens) == 1
    seen[0]["email"] = "changed@example.com"  # a caller's copy: the next event still gets the sealed contact
    assert projection._customer("rf_once", dict(customer))["email"] == "ana@example.com"
    # Bound to its refund: the same seal on another refund's event does not open, however often it comes.
    assert projection._customer("rf_other", dict(customer)) == {"id": "c-1", "locale": "de"}
    assert projection._customer("rf_other", dict(customer)) == {"id": "c-1", "locale": "de"}
    assert len(opens) == 3
