"""The reviewers' queue on the real stack: filters return the right subset, bad filters say which one, and the
queries it runs can be served by an index (no scan of every review ever decided)."""

import httpx
import pytest

from services.approval import store
from shared.runtime.roles import Role
from tests.integration.helpers import publish, refund_of, staff_auth, valid_request

pytestmark = pytest.mark.integration
ALICE = staff_auth("alice", Role.SENIOR_REVIEWER)
RITA = staff_auth("rita", Role.REVIEWER)


@pytest.fixture
async def approval(stack):
    async with httpx.AsyncClient(base_url=stack.service_url("approval"), timeout=30) as client:
        yield client


def bank_transfer(**changes) -> dict:
    request = valid_request(**changes)
    request["payment"]["channel"] = "bank_transfer"
    return request


async def test_queue_filters_return_the_right_subset(approval, producer, status_feed):
    card_de = valid_request(amount=90_000, captured=90_000)  # review-above-auto-limit
    bank_fr = bank_transfer(amount=30_000, captured=30_000, region="FR")  # bank-transfer-review
    large_nl = valid_request(amount=700_000, captured=700_000, region="NL")  # four-eyes-large
    fraud = valid_request(reason="fraudulent")  # a risk hold
    ids = {name: refund_of(request) for name, request in
           (("card_de", card_de), ("bank_fr", bank_fr), ("large_nl", large_nl), ("fraud", fraud))}
    for request in (card_de, bank_fr, large_nl, fraud):
        await publish(producer, request)
    assert await status_feed.wait_for(lambda: all(status_feed.status_of(ids[name]) == "pending_review"
                                                  for name in ("card_de", "bank_fr", "large_nl")), timeout=60)
    assert await status_feed.wait_for(lambda: status_feed.status_of(ids["fraud"]) == "on_hold", timeout=60)
    first = await approval.post(f"/v1/reviews/{ids['large_nl']}/decision", headers=ALICE,
                                json={"action": "approve", "reason": "first pair of eyes"})
    assert first.status_code == 200, first.text

    async def queue(**query) -> list[dict]:
        answer = await approval.get("/v1/reviews", params={**query, "limit": 500}, headers=RITA)
        assert answer.status_code == 200, answer.text
        return answer.json()["reviews"]

    def ours(items: list[dict]) -> set[str]:
        return {name for name, refund_id in ids.items() if refund_id in {item["refund_id"] for item in items}}

    everything = await queue()
    assert ours(everything) == {"card_de", "bank_fr", "large_nl", "fraud"}
    opened = [item["opened_at"] for item in everything]
    assert opened == sorted(opened)  # oldest first
    assert ours(await queue(kind="hold")) == {"fraud"}
    assert ours(await queue(kind="review")) == {"card_de", "bank_fr", "large_nl"}
    assert ours(await queue(channel="bank_transfer")) == {"bank_fr"}
    assert ours(await queue(region="NL")) == {"large_nl"}
    assert ours(await queue(rule="four-eyes-large")) == {"large_nl"}
    assert ours(await queue(rule="risk-reason-fraudulent")) == {"fraud"}
    assert ours(await queue(currency="EUR", min_amount=80_000, max_amount=100_000)) == {"card_de"}
    assert ours(await queue(currency="EUR", min_amount=90_001)) == {"large_nl"}
    assert ours(await queue(currency="USD")) == set()
    assert ours(await queue(state="expired")) == set()
    assert ours(await queue(kind="review", channel="card", region="DE")) == {"card_de"}
    for item in await queue(kind="review", channel="card", currency="EUR", min_amount=80_000):
        assert (item["kind"], item["channel"], item["amount"]["currency"]) == ("review", "card", "EUR")
        assert item["amount"]["value"] >= 80_000

    by_id = {item["refund_id"]: item for item in everything}
    large, card = by_id[ids["large_nl"]], by_id[ids["card_de"]]
    assert (large["waiting_for_second_approver"], card["waiting_for_second_approver"]) == (True, False)
    assert large["allowed_roles"] == ["senior_reviewer", "finance_lead"] and large["approvers"] == ["alice"]
    assert card["can_reopen_roles"] == [] and 0 < card["seconds_to_due"] <= 4 * 3600
    assert by_id[ids["fraud"]]["status"] == "on_hold"


@pytest.mark.parametrize(("query", "names"), [
    ({"kind": "refund"}, "kind"), ({"state": "closed"}, "state"), ({"channel": "cash"}, "channel"),
    ({"region": "Germany"}, "region"), ({"currency": "EURO"}, "currency"),
    ({"currency": "EUR", "min_amount": "ten"}, "min_amount"), ({"min_amount": "100"}, "min_amount"),
    ({"currency": "EUR", "min_amount": "500", "max_amount": "100"}, "max_amount"),
])
async def test_bad_filters_are_422_naming_the_parameter(approval, query, names):
    answer = await approval.get("/v1/reviews", params=query, headers=RITA)
    assert answer.status_code == 422
    assert answer.json()["detail"].startswith(f"{names}:"), answer.text


@pytest.mark.parametrize("where", [
    store.QueueFilter("open"), store.QueueFilter("expired"), store.QueueFilter("denied"),
    store.QueueFilter("open", kind="hold", channel="card", region="DE"),
    store.QueueFilter("open", rule="four-eyes-large"),
    store.QueueFilter("expired", currency="EUR", min_amount=1000, max_amount=5000),
])
async def test_queue_queries_can_use_an_index(db, where):
    sql, args = store.queue_query(where, 100)
    async with db.transaction():
        # With sequential scans priced out, a plan still scanning approval.reviews means no index serves it.
        await db.execute("SET LOCAL enable_seqscan = off")
        plan = "\n".join(row[0] for row in await db.fetch("EXPLAIN " + sql, *args))
    assert "Seq Scan on reviews" not in plan, plan
