"""POST /v1/refunds on the running intake: API keys, validation, Stripe-style idempotency, OpenAPI."""

import asyncio
import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import pytest

from shared.contract.ids import refund_id_for
from tests.integration.helpers import pay_for, publish, valid_request, wait_until
from tests.integration.intake_http import OutcomeTail, auth, new_api_key

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
STAGES = ["intake", "approval", "payout", "reconcile", "notify"]


@pytest.fixture
def source():
    return f"shop-http-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def api_key(stack, source):
    return await new_api_key(stack.dsn, source, label="tests")


@pytest.fixture
async def intake(stack):
    async with httpx.AsyncClient(base_url=stack.service_url("intake"), timeout=60) as client:
        yield client


async def post(client, data, key, idempotency_key=None, **headers):
    """POST /v1/refunds as a platform does, once the customer's payment exists at its gateway."""
    await pay_for(data)
    headers = {**auth(key), **headers} if key else headers
    headers["Idempotency-Key"] = idempotency_key or data.get("request_id", "")
    return await client.post("/v1/refunds", json=data, headers=headers)


async def ticket(db, refund_id):
    return await db.fetchrow("SELECT * FROM intake.tickets WHERE refund_id = $1", refund_id)


async def test_no_unknown_or_expired_key_is_401(intake, stack, source):
    data = valid_request()
    missing = await post(intake, data, None)
    assert missing.status_code == 401
    assert "API key is required" in missing.json()["detail"]
    assert missing.headers["www-authenticate"].startswith("Bearer")

    unknown = await post(intake, data, "rk_00000000.not-a-key")
    assert unknown.status_code == 401
    assert unknown.json()["detail"] == "the API key is unknown, revoked or expired"

    expired = await new_api_key(stack.dsn, source, expires_at=datetime.now(UTC) - timedelta(seconds=1))
    assert (await post(intake, data, expired)).status_code == 401


def keys_cli(stack, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "services.intake.keys", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "DATABASE_URL": stack.dsn}, check=True)


async def test_keys_rotate_through_the_cli_and_a_revoked_key_is_401(intake, stack, source):
    old = keys_cli(stack, "create", source, "--label", "old").stdout.strip()
    new = keys_cli(stack, "create", source, "--label", "new", "--expires-in-days", "30").stdout.strip()
    listed = keys_cli(stack, "list", source).stdout
    assert listed.count("\tactive\t") == 2 and old not in listed and new not in listed  # ids only
    # Both keys work meanwhile; the refund's source is the key's.
    for key in (old, new):
        data = valid_request()
        response = await post(intake, data, key)
        assert response.status_code == 202, response.text
        assert response.json()["refund_id"] == refund_id_for(source, data["request_id"])

    old_id = old.split(".")[0]
    assert keys_cli(stack, "revoke", old_id).stdout.strip() == f"revoked {old_id}"
    assert f"{old_id}\t{source}\trevoked" in keys_cli(stack, "list", source).stdout
    refused = await post(intake, valid_request(), old)
    assert refused.status_code == 401
    # X-Api-Key alone works too.
    data = valid_request()
    alone = await intake.post("/v1/refunds", json=data,
                              headers={"X-Api-Key": new, "Idempotency-Key": data["request_id"]})
    assert alone.status_code == 202


async def test_missing_idempotency_key_is_400(intake, api_key):
    data = valid_request()
    response = await intake.post("/v1/refunds", json=data, headers=auth(api_key))
    assert response.status_code == 400
    assert "Idempotency-Key header is required" in response.json()["detail"]
    not_json = await intake.post("/v1/refunds", content=b"{nope", headers={**auth(api_key), "Idempotency-Key": "k"})
    assert not_json.status_code == 400 and "not JSON" in not_json.json()["detail"]


async def test_a_wrong_body_is_422_with_every_error_and_is_published_as_rejected(intake, stack, api_key, source):
    data = valid_request(region="XX", reason="changed_mind", amount={"value": 10.5, "currency": "EUR"})
    del data["customer"]
    async with OutcomeTail(stack.bootstrap) as tail:
        response = await post(intake, data, api_key)
        assert response.status_code == 422
        body = response.json()
        refund_id = refund_id_for(source, data["request_id"])
        assert body["refund_id"] == refund_id and body["status"] == "rejected"
        found = {(e["field"], e["code"]) for e in body["errors"]}
        assert found == {("region", "invalid"), ("reason", "invalid"), ("amount.value", "invalid"),
                         ("customer", "missing")}
        assert all(e["message"] for e in body["errors"])
        [event] = (await tail.wait_for_outcomes([refund_id]))[refund_id]
    assert event["type"] == "refund.rejected.v1"
    assert event["data"]["errors"] == body["errors"] and event["data"]["source"] == source


async def test_body_request_id_must_match_the_header(intake, api_key):
    data = valid_request()
    response = await post(intake, data, api_key, idempotency_key=f"other-{data['request_id']}")
    assert response.status_code == 422
    assert {(e["field"], e["code"]) for e in response.json()["errors"]} == {("request_id", "invalid")}


async def test_same_key_same_body_gets_the_same_response_and_the_same_event(intake, stack, db, api_key, source):
    data = valid_request(amount=1200, captured=5000)
    key = data.pop("request_id")  # taken from the header when the body has none
    refund_id = refund_id_for(source, key)
    async with OutcomeTail(stack.bootstrap) as tail:
        first = await post(intake, data, api_key, idempotency_key=key)
        assert first.status_code == 202, first.text
        assert first.json()["refund_id"] == refund_id and first.json()["status"] == "accepted"
        assert list(first.json()["deadlines"]) == STAGES
        again = await post(intake, {**data, "request_id": key}, api_key, idempotency_key=key)
        events = (await tail.wait_for_outcomes([refund_id], count=2))[refund_id]
    assert (again.status_code, again.json()) == (first.status_code, first.json())
    assert again.headers["idempotent-replayed"] == "true" and "idempotent-replayed" not in first.headers
    # The stored outcome is published again: the same event (same id), not a second refund.
    assert {e["type"] for e in events} == {"refund.accepted.v1"}
    assert len({e["id"] for e in events}) == 1
    row = await ticket(db, refund_id)
    assert row["outcome"] == "accepted" and row["request_hash"]
    balance = await db.fetchval("SELECT refunded FROM intake.payment_balances WHERE payment_id = $1",
                                data["payment"]["id"])
    assert balance == 1200


async def test_same_key_different_body_is_422_and_changes_nothing(intake, db, api_key, source):
    data = valid_request(amount=1000)
    assert (await post(intake, data, api_key)).status_code == 202
    response = await post(intake, {**data, "amount": {"value": 1001, "currency": "EUR"}}, api_key)
    assert response.status_code == 422
    [error] = response.json()["errors"]
    assert error["code"] == "idempotency_key_reused" and error["field"] == "Idempotency-Key"
    assert response.json()["refund_id"] == refund_id_for(source, data["request_id"])
    row = await ticket(db, refund_id_for(source, data["request_id"]))
    assert (row["outcome"], row["amount_value"]) == ("accepted", 1000)
    # A rejected first answer is kept just the same: the key is spent.
    bad = valid_request(region="XX")
    assert (await post(intake, bad, api_key)).status_code == 422
    fixed = await post(intake, {**bad, "region": "DE"}, api_key)
    assert fixed.json()["errors"][0]["code"] == "idempotency_key_reused"


async def test_concurrent_requests_with_one_key_make_one_refund(intake, stack, db, api_key, source):
    data = valid_request(amount=700, captured=1000)
    refund_id = refund_id_for(source, data["request_id"])
    async with OutcomeTail(stack.bootstrap) as tail:
        responses = await asyncio.gather(*(post(intake, data, api_key) for _ in range(10)))
        events = (await tail.wait_for_outcomes([refund_id], count=10))[refund_id]
    assert [r.status_code for r in responses] == [202] * 10, [r.text for r in responses]
    assert len({r.text for r in responses}) == 1
    assert sum(r.headers.get("idempotent-replayed") == "true" for r in responses) == 9
    assert await db.fetchval("SELECT count(*) FROM intake.tickets WHERE refund_id = $1", refund_id) == 1
    assert await db.fetchval("SELECT refunded FROM intake.payment_balances WHERE payment_id = $1",
                             data["payment"]["id"]) == 700
    assert {e["type"] for e in events} == {"refund.accepted.v1"}
    assert len({e["id"] for e in events}) == 1  # one accepted event, published once per request


async def test_over_refund_is_422_with_the_remaining_balance(intake, api_key):
    first = valid_request(amount=3000, captured=5000)
    assert (await post(intake, first, api_key)).status_code == 202
    second = valid_request(amount=2500, captured=5000, payment=first["payment"])
    response = await post(intake, second, api_key)
    assert response.status_code == 422
    assert response.json()["errors"] == [{"field": "amount.value", "code": "exceeds_refundable",
                                          "message": "only 20.00 EUR of this payment is still refundable"}]


async def test_kafka_and_http_share_the_ticket_deadlines_and_idempotency(intake, stack, db, producer,
                                                                        api_key, source):
    data = valid_request(payment={"id": f"pay-{uuid.uuid4().hex[:8]}", "gateway": "sim",
                                  "channel": "bank_transfer", "captured": {"value": 5000, "currency": "EUR"}})
    refund_id = refund_id_for(source, data["request_id"])
    await publish(producer, data, source=source)
    row = await wait_until(lambda: ticket(db, refund_id), timeout=60)
    assert row["outcome"] == "accepted" and row["request_hash"]
    deadlines = {stage: datetime.fromisoformat(due) for stage, due in
                 json.loads(row["deadlines"]).items()}
    assert sorted(deadlines, key=deadlines.get) == STAGES  # jsonb keeps no key order; time does
    # deploy/sla.yaml: bank transfers get 3 days for payout.
    assert deadlines["payout"] - deadlines["approval"] == timedelta(days=3)
    replay = await post(intake, data, api_key)
    assert replay.status_code == 202 and replay.headers["idempotent-replayed"] == "true"
    assert replay.json()["refund_id"] == refund_id
    assert {s: datetime.fromisoformat(d) for s, d in replay.json()["deadlines"].items()} == deadlines
    reused = await post(intake, {**data, "order_id": "another"}, api_key)
    assert reused.json()["errors"][0]["code"] == "idempotency_key_reused"


async def test_openapi_documents_the_route(intake):
    spec = (await intake.get("/openapi.json")).json()
    route = spec["paths"]["/v1/refunds"]["post"]
    assert set(route["responses"]) >= {"202", "400", "401", "422"}
    assert route["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/RefundRequested")
    schemas = spec["components"]["schemas"]
    assert {"RefundRequested", "Money", "Payment", "RefundAcceptedBody", "RefundRejectedBody"} <= set(schemas)
    assert {"HTTPBearer", "APIKeyHeader"} <= set(spec["components"]["securitySchemes"])


async def test_http_racing_kafka_with_one_request_makes_one_refund(intake, stack, db, producer, api_key, source):
    # The Kafka consumer takes no advisory lock: when it saves the refund first, the
    # HTTP path hits the ticket's key and must answer from the saved outcome.
    requests = [valid_request(amount=400, captured=1000) for _ in range(10)]
    responses = await asyncio.gather(
        *(post(intake, data, api_key) for data in requests),
        *(publish(producer, data, source=source) for data in requests))
    assert [r.status_code for r in responses[:10]] == [202] * 10, [r.text for r in responses[:10]]
    refund_ids = [refund_id_for(source, data["request_id"]) for data in requests]
    assert [r.json()["refund_id"] for r in responses[:10]] == refund_ids

    async def all_saved():
        return await db.fetchval("SELECT count(*) FROM intake.tickets WHERE refund_id = ANY($1)", refund_ids) == 10

    await wait_until(all_saved, timeout=60)
    refunded = await db.fetch("SELECT refunded FROM intake.payment_balances WHERE payment_id = ANY($1)",
                              [data["payment"]["id"] for data in requests])
    assert [row["refunded"] for row in refunded] == [400] * 10


async def test_http_losing_the_ticket_to_kafka_answers_from_the_saved_outcome(intake, stack, db, producer,
                                                                              api_key, source):
    # Deterministic race: HTTP passes its dedupe check, then waits on its payment's row,
    # which this test holds; meanwhile Kafka saves the same request_id (with another body,
    # on another payment). Released, the HTTP insert hits the ticket key and must re-read.
    held = valid_request(amount=100, captured=5000)
    assert (await post(intake, held, api_key)).status_code == 202  # the payment row now exists
    over_http = valid_request(amount=200, captured=5000, payment=held["payment"])
    over_kafka = {**valid_request(amount=300, captured=5000), "request_id": over_http["request_id"]}
    refund_id = refund_id_for(source, over_http["request_id"])
    locker = await asyncpg.connect(stack.dsn)
    try:
        async with locker.transaction():
            await locker.execute("SELECT 1 FROM intake.payment_balances WHERE payment_id = $1 FOR UPDATE",
                                 held["payment"]["id"])
            answer = asyncio.ensure_future(post(intake, over_http, api_key))

            async def http_waits_on_the_row():
                return await db.fetchval(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'transactionid' AND NOT granted") > 0

            await wait_until(http_waits_on_the_row, timeout=60)
            await publish(producer, over_kafka, source=source)
            await wait_until(lambda: ticket(db, refund_id), timeout=60)
    finally:
        await locker.close()
    response = await answer
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["code"] == "idempotency_key_reused"
    assert (await ticket(db, refund_id))["amount_value"] == 300
    assert await db.fetchval("SELECT refunded FROM intake.payment_balances WHERE payment_id = $1",
                             held["payment"]["id"]) == 100  # the HTTP reservation was rolled back
