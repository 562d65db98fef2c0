"""A refund that ends without money moving, or whose money comes back, frees its amount on the payment.

SPEC.md: a refund that ends `denied`, `failed` (or `rejected`/`canceled` after acceptance) or is
`reversed` gives its amount back to the payment's refundable balance, exactly once. Driven on the real
stack: approval's wallet refund-window rule denies, the simulator declines `sim-decline` payments and
reverses `sim-reverse` ones after paying them.
"""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import orjson
import pytest

from shared.contract import topics
from tests.integration.helpers import TopicTail, publish, refund_of, valid_request, wait_until
from tests.integration.intake_http import OutcomeTail, auth, new_api_key
from tests.integration.scrape import total
from tests.integration.service_fixtures import request_with_payment

pytestmark = pytest.mark.integration
CE_JSON = [("content-type", b"application/cloudevents+json")]


def denied_request(**changes) -> dict:
    """A request approval denies: a wallet refund more than 365 days after capture (refund-window-wallet)."""
    request = valid_request(**changes)
    request["payment"].update(channel="wallet", captured_at=(datetime.now(UTC) - timedelta(days=400)).isoformat())
    return request


def on_payment(payment: dict, amount: int) -> dict:
    """Another request on the same payment (same captured amount), which the policy approves."""
    same = {key: value for key, value in payment.items() if key != "captured_at"}
    return valid_request(amount=amount, captured=payment["captured"]["value"], payment=same)


async def refunded(db, payment: dict) -> int | None:
    return await db.fetchval("SELECT refunded FROM intake.payment_balances WHERE gateway = $1 AND payment_id = $2",
                             payment["gateway"], payment["id"])


def balance_is(db, payment: dict, value: int):
    async def check() -> bool:
        return await refunded(db, payment) == value
    return check


async def resend(producer, event: dict, **changes) -> object:
    """The event again on its topic, as a redelivery (unchanged) or with `changes` (a new id, another source)."""
    topic = topics.DENIED if event["type"] == "refund.denied.v1" else topics.PAYOUT_FAILED
    return await producer.send_and_wait(topic, orjson.dumps({**event, **changes}),
                                        key=event["data"]["refund_id"].encode(), headers=CE_JSON)


def letters_for(dlq: TopicTail, sent) -> list[dict]:
    return [e for e in dlq.records if e["data"]["topic"] == sent.topic
            and (e["data"]["partition"], e["data"]["offset"]) == (sent.partition, sent.offset)]


# Ends `denied` (approval's wallet refund-window rule) or `failed` (the simulator declines the payout).
ENDING = {"denied": denied_request, "failed": lambda **amounts: request_with_payment("sim-decline", **amounts)}


@pytest.mark.parametrize("status", list(ENDING))
async def test_a_full_refund_that_ends_without_money_frees_the_payment_for_a_new_one(status, stack, producer,
                                                                                    status_feed, db):
    first = ENDING[status](amount=5000, captured=5000)
    await publish(producer, first)
    assert await status_feed.wait_for(lambda: status_feed.status_of(refund_of(first)) == status, timeout=60)
    await wait_until(balance_is(db, first["payment"], 0), timeout=30)
    assert total(stack, "intake", "refund_balance_releases_total", status=status) >= 1

    again = on_payment(first["payment"], 5000)
    async with OutcomeTail(stack.bootstrap) as tail:
        await publish(producer, again)
        [outcome] = (await tail.wait_for_outcomes([refund_of(again)]))[refund_of(again)]
    assert outcome["type"] == "refund.accepted.v1", outcome["data"].get("errors")


async def test_a_redelivered_or_resent_denial_releases_the_amount_once(stack, producer, status_feed, db):
    denied = denied_request(amount=6000, captured=10_000)
    kept = on_payment(denied["payment"], 4000)  # approved and paid: stays reserved
    payment = denied["payment"]
    async with TopicTail(stack.bootstrap, topics.DENIED) as denials:
        await publish(producer, denied)
        await publish(producer, kept)
        denial = await denials.wait_for(lambda e: e["data"]["refund_id"] == refund_of(denied))
    await wait_until(balance_is(db, payment, 4000), timeout=30)
    releases = total(stack, "intake", "refund_balance_releases_total", status="denied")
    assert releases >= 1

    async with TopicTail(stack.bootstrap, topics.DLQ) as dlq:
        redelivered = await resend(producer, denial)  # the very same CloudEvent
        resent = await resend(producer, denial, id=str(uuid.uuid4()))  # the same facts, a new event id
        forged = await resend(producer, denial, id=str(uuid.uuid4()), source="shop-test")
        # One key, one partition: once intake has dead-lettered the forged one, it has seen the others.
        await dlq.wait_for(lambda e: e["source"] == "refund-pipeline/intake"
                           and (e["data"]["partition"], e["data"]["offset"]) == (forged.partition, forged.offset)
                           and e["data"]["topic"] == topics.DENIED, timeout=30)
    assert "untrusted_source" in letters_for(dlq, forged)[0]["data"]["error"]
    assert not letters_for(dlq, redelivered) and not letters_for(dlq, resent)
    assert await refunded(db, payment) == 4000
    assert total(stack, "intake", "refund_balance_releases_total", status="denied") == releases
    row = await db.fetchrow("SELECT released_at, released_as FROM intake.tickets WHERE refund_id = $1",
                            refund_of(denied))
    assert row["released_at"] is not None and row["released_as"] == "denied"
    assert (await db.fetchrow("SELECT released_at FROM intake.tickets WHERE refund_id = $1",
                              refund_of(kept)))["released_at"] is None


async def test_a_reversed_refund_gives_its_amount_back_once(stack, producer, db):
    paid = request_with_payment("sim-reverse", amount=7000, captured=10_000)
    payment = paid["payment"]
    async with TopicTail(stack.bootstrap, topics.PAYOUT_FAILED) as failures:
        await publish(producer, paid)
        reversal = await failures.wait_for(lambda e: e["data"]["refund_id"] == refund_of(paid), timeout=90)
    assert reversal["data"]["failure_reason"].startswith("reversed_after_success:")
    await wait_until(balance_is(db, payment, 0), timeout=30)

    # A second release would take the balance below zero (its CHECK fails) and dead-letter the event.
    async with TopicTail(stack.bootstrap, topics.DLQ) as dlq:
        redelivered = await resend(producer, reversal)
        resent = await resend(producer, reversal, id=str(uuid.uuid4()))
        forged = await resend(producer, reversal, id=str(uuid.uuid4()), source="refund-pipeline/approval")
        await dlq.wait_for(lambda e: e["data"]["topic"] == topics.PAYOUT_FAILED
                           and (e["data"]["partition"], e["data"]["offset"]) == (forged.partition, forged.offset),
                           timeout=30)
    assert not letters_for(dlq, redelivered) and not letters_for(dlq, resent)
    assert await refunded(db, payment) == 0
    assert await db.fetchval("SELECT released_as FROM intake.tickets WHERE refund_id = $1",
                             refund_of(paid)) == "reversed"


PARTIAL, PER_WAVE, MAX_WAVES = 3000, 8, 150


async def test_requests_racing_a_release_never_exceed_the_captured_amount(stack, producer, db):
    """Partial refunds arrive over HTTP and Kafka while the full refund before them is denied and released:
    before the release none fits, after it exactly three of 30.00 fit into 100.00."""
    source = f"shop-release-race-{uuid.uuid4().hex[:8]}"
    key = await new_api_key(stack.dsn, source)
    full = denied_request(amount=10_000, captured=10_000)
    payment = full["payment"]
    partials: list[dict] = []
    async with OutcomeTail(stack.bootstrap) as tail, \
            httpx.AsyncClient(base_url=stack.service_url("intake"), timeout=120) as client:
        await publish(producer, full, source=source)
        [accepted] = (await tail.wait_for_outcomes([refund_of(full, source)]))[refund_of(full, source)]
        assert accepted["type"] == "refund.accepted.v1"

        async def wave() -> None:
            batch = [on_payment(payment, PARTIAL) for _ in range(2 * PER_WAVE)]
            partials.extend(batch)
            answers = await asyncio.gather(
                *[client.post("/v1/refunds", json=data, headers={**auth(key), "Idempotency-Key": data["request_id"]})
                  for data in batch[:PER_WAVE]],
                *[publish(producer, data, source=source) for data in batch[PER_WAVE:]])
            assert all(answer.status_code in (202, 422) for answer in answers[:PER_WAVE])

        for _ in range(MAX_WAVES):  # waves back to back until the amount is back, and one more after
            await wave()
            if await refunded(db, payment) < full["amount"]["value"]:
                await wave()
                break
        else:
            raise AssertionError(f"the denied refund's amount was not back after {MAX_WAVES} waves")
        outcomes = await tail.wait_for_outcomes([refund_of(data, source) for data in partials], timeout=120)

    for events in outcomes.values():
        assert len({e["id"] for e in events}) == 1, events
    kinds = {refund_id: events[0]["type"] for refund_id, events in outcomes.items()}
    accepted_partials = [r for r, kind in kinds.items() if kind == "refund.accepted.v1"]
    assert len(accepted_partials) == 3  # 3 x 30.00 of 100.00; a fourth would over-refund
    for refund_id, kind in kinds.items():
        if kind == "refund.rejected.v1":
            assert [e["code"] for e in outcomes[refund_id][0]["data"]["errors"]] == ["exceeds_refundable"]
    outstanding = await db.fetchval(
        "SELECT sum(amount_value) FROM intake.tickets WHERE source = $1 AND outcome = 'accepted' "
        "AND released_at IS NULL", source)
    assert await refunded(db, payment) == outstanding == 3 * PARTIAL
