"""The console's pure parts, without a stack: how service answers become what a person sees, languages,
money. (Kept next to the console's browser tests; no fixture here needs the stack.)"""

import httpx
import pytest

from services.console import clients, i18n
from services.console.app import back_target, deadline_rows, money, time_left, to_minor
from services.console.clients import ServiceError, Services, Unavailable


def answering(status: int, body) -> Services:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=body)
    return Services({name: f"http://{name}" for name in clients.SERVICES}, transport=httpx.MockTransport(handler))


async def test_a_missing_endpoint_is_unavailable_and_a_refusal_keeps_the_services_message():
    with pytest.raises(Unavailable, match="not available from payout"):
        await clients.get_payout(answering(404, {"detail": "Not Found"}), "t", "rf_1")
    with pytest.raises(ServiceError) as refused:
        await clients.get_review(answering(404, {"detail": "no review for refund rf_1"}), "t", "rf_1")
    assert (refused.value.status, refused.value.message) == (404, "no review for refund rf_1")
    with pytest.raises(ServiceError) as four_eyes:
        await clients.decide_review(answering(403, {"detail": {"code": "four_eyes", "message": "a second approver"}}),
                                    "t", "rf_1", "approve", "ok")
    assert four_eyes.value.message == "a second approver"
    with pytest.raises(ServiceError) as invalid:
        await clients.resolve_discrepancy(answering(422, {"detail": [{"loc": ["body", "reason"], "msg": "too short"}]}),
                                          "t", 1, "x")
    assert invalid.value.message == "reason: too short"


async def test_ids_stay_one_path_segment_and_messages_are_bounded():
    with pytest.raises(ServiceError):
        await clients.get_ticket(answering(200, {}), "t", "..")
    assert clients.safe_text("a\x00b\n" + "x" * 600).startswith("abx") and len(clients.safe_text("x" * 600)) == 501


async def test_list_answers_bare_or_wrapped_and_the_old_ledger_shape():
    assert await clients.list_reviews(answering(200, {"items": [{"refund_id": "a"}]}), "t") == [{"refund_id": "a"}]
    assert await clients.list_reviews(answering(200, {"reviews": [{"refund_id": "b"}]}), "t") == [{"refund_id": "b"}]
    old = [{"currency": "EUR", "paid": 5000, "matched_settled": 3000, "imbalance": 0}]
    (entry,) = await clients.ledger(answering(200, old), "t")
    assert (entry["matched"], entry["open"], entry["balanced"]) == (3000, 2000, True)


def test_language_negotiation_and_catalogue():
    assert i18n.negotiate("zh-CN,zh;q=0.9,en;q=0.8") == "zh-CN"
    assert i18n.negotiate("en-GB,zh;q=0.5") == "en"
    assert i18n.negotiate("de-DE") == "en"
    assert i18n.negotiate("de;q=1, zh-Hans;q=0.7") == "zh-CN"
    zh = i18n.translator("zh-CN")
    assert zh("{span} left", span="3分") == "剩余 3分" and zh("an unknown message") == "an unknown message"
    assert zh("{service} refused ({status}): {message}", service="approval", status=403, message="no") == \
        "approval 拒绝了请求（403）：no"


def test_money_amounts_and_time_left():
    assert money({"value": 600000, "currency": "EUR"}) == "6,000.00 EUR"
    assert money({"value": 1200, "currency": "JPY"}) == "1,200 JPY"
    assert money({"value": -2450, "currency": "EUR"}) == "-24.50 EUR"
    assert to_minor("100.50", "EUR") == 10050 and to_minor("1,200", "JPY") == 1200
    assert to_minor("0.001", "EUR") is None and to_minor("abc", "EUR") is None and to_minor("-1", "EUR") is None
    en = i18n.translator("en")
    assert time_left(en, 3 * 3600 + 5 * 60) == "3h 5m left" and time_left(en, -120) == "overdue by 2m"
    assert time_left(en, 2 * 86400 + 3600) == "2d 1h left" and time_left(en, None) == "—"


def test_stage_deadlines_against_actual_times():
    rows = deadline_rows({
        "deadlines": {"approval": "2026-12-02T18:00:00+00:00", "intake": "2026-12-02T18:19:35+00:00"},
        "timeline": {"accepted": "2026-12-02T18:19:05+00:00", "approved": "2026-12-02T18:19:09+00:00"}})
    assert [(r["stage"], r["late"]) for r in rows] == [("intake", False), ("approval", True)]


def test_stage_deadlines_as_notify_lists_them():
    # GET /v1/tickets/{id} answers [{stage, due_at, done_at, met}] (services/notify/domain.py).
    rows = deadline_rows({"deadlines": [
        {"stage": "approval", "due_at": "2026-12-02T18:00:00+00:00", "done_at": "2026-12-02T18:19:09+00:00",
         "met": False},
        {"stage": "intake", "due_at": "2026-12-02T18:19:35+00:00", "done_at": "2026-12-02T18:19:05+00:00",
         "met": True},
        {"stage": "payout", "due_at": "2026-12-02T18:30:00+00:00", "done_at": None, "met": None}]})
    assert [(r["stage"], r["due"] is not None, r["actual"], r["late"]) for r in rows] == [
        ("intake", True, "2026-12-02T18:19:05+00:00", False), ("approval", True, "2026-12-02T18:19:09+00:00", True),
        ("payout", True, None, None)]


def test_a_form_goes_back_only_to_a_page_of_the_console():
    own = "http://console.local/"
    assert back_target("http://console.local/queue?kind=hold", own, "/queue") == "http://console.local/queue?kind=hold"
    assert back_target("/tickets/rf_1", own, "/queue") == "/tickets/rf_1"
    assert back_target("//evil.example/queue", own, "/queue") == "/queue"  # another site, to a browser
    assert back_target("https://evil.example/", own, "/queue") == "/queue"
    assert back_target(None, own, "/reconciliation") == "/reconciliation"

