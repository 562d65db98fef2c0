"""Dead letters on the real stack: each stage keeps what it dead-letters, staff read it decoded, discard it or
replay it through the same stage once the cause is fixed, and a stage dead-lettering past its limit stops
consuming until staff close its breaker (shared/runtime/dead_letters.py, dead_letter_api.py, tools/dead_letters.py)."""

import asyncio
import os
import subprocess
import sys
import time
import uuid

import httpx
import orjson

from shared.contract import topics
from shared.runtime.roles import Role
from tests.integration.helpers import TopicTail, publish, refund_of, staff_auth, valid_request, wait_until
from tests.integration.service_fixtures import service_configured

SENIOR = staff_auth("sam", Role.SENIOR_REVIEWER)
REVIEWER = staff_auth("rita", Role.REVIEWER)
CE = [("content-type", b"application/cloudevents+json")]


async def _letters(stack, service: str, state: str | None = None, headers=SENIOR) -> list[dict]:
    async with httpx.AsyncClient(base_url=stack.service_url(service), headers=headers) as http:
        response = await http.get("/v1/dead-letters", params={"state": state} if state else {})
    assert response.status_code == 200, response.text
    assert response.json()["service"] == service
    return response.json()["dead_letters"]


async def _letter_at(stack, service: str, sent, timeout: float = 30.0) -> dict:
    async def found():
        return next((letter for letter in await _letters(stack, service) if letter["topic"] == sent.topic
                     and letter["partition"] == sent.partition and letter["offset"] == sent.offset), None)

    return await wait_until(found, timeout=timeout)


async def _post(stack, service: str, path: str, body: dict, headers=SENIOR) -> httpx.Response:
    async with httpx.AsyncClient(base_url=stack.service_url(service), headers=headers, timeout=30) as http:
        return await http.post(f"/v1/dead-letters{path}", json=body)


def _cli(stack, service: str, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "tools.dead_letters", "--url", stack.service_url(service), *args],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


async def _genuine_approval(stack, producer) -> dict:
    async with TopicTail(stack.bootstrap, topics.APPROVED) as approved:
        await publish(producer, valid_request())
        return await approved.wait_for(lambda e: e["type"] == "refund.approved.v1")


async def test_poison_and_untrusted_records_are_listed_decoded_and_the_untrusted_one_is_discarded(
        stack, producer, db):
    genuine = await _genuine_approval(stack, producer)
    forged = {**genuine, "id": str(uuid.uuid4()), "source": "shop-test"}
    poison = await producer.send_and_wait(topics.APPROVED, b"refund me twice, please", key=b"poison",
                                          headers=[("x-note", b"hand-written")])
    untrusted = await producer.send_and_wait(topics.APPROVED, orjson.dumps(forged), key=b"rf_forged", headers=CE)

    letter = await _letter_at(stack, "payout", poison)
    assert (letter["reason"], letter["state"], letter["key"]) == ("not_cloudevent", "open", "poison")
    assert (letter["payload"], letter["payload_encoding"]) == ("refund me twice, please", "text")
    assert letter["headers"] == {"x-note": "hand-written"}
    forged_letter = await _letter_at(stack, "payout", untrusted)
    assert forged_letter["reason"] == "untrusted_source"
    assert forged_letter["error"].startswith("untrusted_source: refunds.approved accepts events only from")
    assert forged_letter["payload"]["id"] == forged["id"]  # decoded JSON, not base64
    assert forged_letter in await _letters(stack, "payout", "open", headers=REVIEWER)  # any staff may read
    # Each stage keeps its own: notify consumes refunds.approved too.
    assert await db.fetchval("SELECT count(*) FROM notify.dead_letters WHERE topic = $1 AND \"offset\" = $2",
                             untrusted.topic, untrusted.offset) == 1

    letter_id = forged_letter["id"]
    assert (await _post(stack, "payout", f"/{letter_id}/discard", {"reason": "forged"}, headers=REVIEWER)
            ).status_code == 403
    assert (await _post(stack, "payout", f"/{letter_id}/discard", {"reason": "  "})).status_code == 422
    assert (await _post(stack, "payout", f"/{letter_id}/discard", {"reason": "forged"}, headers={})
            ).status_code == 401
    assert (await _post(stack, "payout", "/999999999/discard", {"reason": "forged"})).status_code == 404
    discarded = await _post(stack, "payout", f"/{letter_id}/discard", {"reason": "forged by shop-test; ticket OPS-1"})
    assert discarded.status_code == 200, discarded.text
    assert (discarded.json()["state"], discarded.json()["handled_by"], discarded.json()["handled_reason"]) == (
        "discarded", "sam", "forged by shop-test; ticket OPS-1")
    assert discarded.json()["handled_at"]
    again = await _post(stack, "payout", f"/{letter_id}/replay", {"reason": "oops"})
    assert again.status_code == 409 and "discarded, not open" in again.json()["detail"]
    assert letter_id not in [found["id"] for found in await _letters(stack, "payout", "open")]

    listed = _cli(stack, "payout", "list", "--state", "discarded")
    assert str(letter_id) in listed and "untrusted_source" in listed
    shown = _cli(stack, "payout", "show", str(letter["id"]))
    assert "refund me twice, please" in shown and "not_cloudevent" in shown


async def test_a_failed_record_is_replayed_once_the_cause_is_fixed_and_a_second_replay_is_a_no_op(
        stack, producer, db, status_feed):
    request = valid_request()
    refund_id = refund_of(request)
    # The cause: payout's store refuses this refund (think: a migration gone wrong), so its approval fails
    # every retry and is dead-lettered.
    await db.execute(f"""
        CREATE FUNCTION payout.refuse_test_refund() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.refund_id = '{refund_id}' THEN RAISE EXCEPTION 'payouts table refuses this refund'; END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER refuse_test_refund BEFORE INSERT ON payout.payouts
            FOR EACH ROW EXECUTE FUNCTION payout.refuse_test_refund();""")
    try:
        async with TopicTail(stack.bootstrap, topics.APPROVED) as approved:
            await publish(producer, request)
            approval = await approved.wait_for(lambda e: e["data"].get("refund_id") == refund_id)

        async def failed_letters():
            found = [letter for letter in await _letters(stack, "payout", "open") if letter["key"] == refund_id]
            return found if found else None

        [first] = await wait_until(failed_letters)
        assert first["reason"] == "processing_failed" and "payouts table refuses this refund" in first["error"]
        assert first["payload"]["id"] == approval["id"]
        # The same approval delivered once more (a producer retry, say): a second dead letter of one event.
        duplicate_sent = await producer.send_and_wait(topics.APPROVED, orjson.dumps(approval),
                                                      key=refund_id.encode(), headers=CE)
        duplicate = await _letter_at(stack, "payout", duplicate_sent)

        # Replayed before the fix: dead-lettered again, and the old one says so.
        early = await _post(stack, "payout", f"/{first['id']}/replay", {"reason": "try again"})
        assert early.status_code == 200, early.text
        assert early.json()["state"] == "replayed" and early.json()["replayed_as"]
        [second] = [letter for letter in await _letters(stack, "payout", "open")
                    if letter["id"] == early.json()["replayed_as"]]
        assert second["replay_of"] == first["id"] and second["reason"] == "processing_failed"
    finally:
        await db.execute("DROP TRIGGER IF EXISTS refuse_test_refund ON payout.payouts; "
                         "DROP FUNCTION IF EXISTS payout.refuse_test_refund()")

    replayed = await _post(stack, "payout", f"/{second['id']}/replay", {"reason": "trigger dropped, OPS-2"})
    assert replayed.status_code == 200, replayed.text
    assert (replayed.json()["state"], replayed.json()["replayed_as"], replayed.json()["handled_by"]) == (
        "replayed", None, "sam")
    assert await status_feed.wait_for(lambda: status_feed.status_of(refund_id) == "reconciled", timeout=90)

    # The duplicate's event is in the inbox now: replaying it changes nothing, and is no new dead letter.
    out = _cli(stack, "payout", "replay", str(duplicate["id"]), "--reason", "the duplicate too")
    assert "replayed" in out
    assert await db.fetchval("SELECT count(*) FROM payout.payouts WHERE refund_id = $1", refund_id) == 1
    assert [letter["id"] for letter in await _letters(stack, "payout", "open") if letter["key"] == refund_id] == []
    assert (await _post(stack, "payout", f"/{duplicate['id']}/replay", {"reason": "again"})).status_code == 409


async def test_the_breaker_stops_a_stage_dead_lettering_past_its_limit_until_it_is_closed(
        stack, producer, db, status_feed):
    with service_configured(stack, "payout", DEAD_LETTER_LIMIT_PER_MINUTE="3"):
        url = stack.service_url("payout")
        async with httpx.AsyncClient(base_url=url, headers=SENIOR, timeout=30) as http:
            assert (await http.get("/v1/dead-letters/breaker")).json()["limit_per_minute"] == 3
            for n in range(5):  # a bad deploy: every record dead-lettered
                await producer.send_and_wait(topics.APPROVED, b"garbage %d" % n, key=b"garbage")

            async def opened():
                status = (await http.get("/v1/dead-letters/breaker")).json()
                return status if status["open"] else None

            status = await wait_until(opened, timeout=30)
            assert status["last_minute"] > 3 and status["opened_at"]
            metrics = (await http.get("/metrics")).text
            assert 'refund_stage_dead_letter_breaker_open{stage="payout"} 1.0' in metrics
            assert 'refund_dead_letters_total{reason="not_cloudevent",stage="payout"}' in metrics
            ready = await http.get("/readyz")
            assert ready.status_code == 200, ready.text  # paused on purpose, not broken

            request = valid_request()
            refund_id = refund_of(request)
            await publish(producer, request)
            assert await status_feed.wait_for(lambda: status_feed.status_of(refund_id) == "approved", timeout=60)
            # Payout holds its partitions: the approval waits on the topic, unpaid.
            deadline = time.monotonic() + 8
            while time.monotonic() < deadline:
                assert await db.fetchval("SELECT count(*) FROM payout.payouts WHERE refund_id = $1", refund_id) == 0
                assert (await http.get("/readyz")).status_code == 200
                await asyncio.sleep(0.5)
            assert (await http.post("/v1/dead-letters/breaker/close", json={"reason": "x"},
                                    headers=REVIEWER)).status_code == 403

            out = _cli(stack, "payout", "breaker", "--close", "--reason", "bad deploy rolled back")
            assert "closed" in out
            assert await status_feed.wait_for(lambda: status_feed.status_of(refund_id) == "reconciled", timeout=90)
            assert 'refund_stage_dead_letter_breaker_open{stage="payout"} 0.0' in (await http.get("/metrics")).text
        assert "OPEN" not in _cli(stack, "payout", "breaker")
