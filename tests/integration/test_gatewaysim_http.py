"""The gateway simulator as an external system: its own OS process, reached over HTTP only.

The official `stripe` package calls the Stripe-shaped accounts; plain httpx calls
the Adyen-shaped one. Webhooks land on a receiver in this process and are
verified by the official packages (`stripe.Webhook.construct_event`,
`Adyen.util.is_valid_hmac_notification`); settlement files are parsed by
reconcile's own parser. Only the stack's PostgreSQL is used.
"""

import asyncio
import csv
import io
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import Adyen.util
import httpx
import pytest
import stripe

from devstack.processes import free_port
from gatewaysim.gateway import GatewayTimeout, GatewayUnavailable, SimFaults, SimGateway
from services.reconcile.settlement_files import parse
from shared.runtime.db import create_pool
from tests.integration.helpers import wait_until

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
REPORT = "balance_change_from_activity.itemized.1"
FX_RATE, SPREAD_BPS, FEE_BPS = Decimal("1.0812"), 50, 150
HOLD_SECONDS, WEBHOOK_ATTEMPTS = 4, 3


class Receiver:
    """Webhook endpoints: /hooks/* answer 200; /flaky/* fail each body's first two deliveries; /dead/* always 500."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict, bytes]] = []
        self.hits: Counter = Counter()
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    receiver.received.append((self.path, dict(self.headers), body))
                    receiver.hits[(self.path, body)] += 1
                    hits = receiver.hits[(self.path, body)]
                failing = self.path.startswith("/dead") or (self.path.startswith("/flaky") and hits <= 2)
                self.send_response(500 if failing else 200)
                self.end_headers()
                self.wfile.write(b"[accepted]")

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_port}{path}"

    def deliveries(self, path: str) -> list[tuple[dict, bytes]]:
        with self.lock:
            return [(headers, body) for p, headers, body in self.received if p == path]

    async def wait_for(self, path: str, match, count: int = 1, timeout: float = 30.0) -> list[tuple]:
        """At least `count` deliveries to `path` whose parsed body matches, each as (headers, raw body, parsed)."""
        async def found():
            hits = [(h, b, json.loads(b)) for h, b in self.deliveries(path) if match(json.loads(b))]
            return hits if len(hits) >= count else None
        return await wait_until(found, timeout=timeout, every=0.1)


@dataclass
class Sim:
    base: str
    accounts: dict
    seed: str

    def stripe(self, account: str = "acme-stripe", timeout: float = 15.0,
               api_key: str | None = None) -> stripe.StripeClient:
        return stripe.StripeClient(api_key or self.accounts[account]["api_key"], max_network_retries=0,
                                   base_addresses={"api": f"{self.base}/{account}"},
                                   http_client=stripe.HTTPXClient(timeout=timeout))

    def adyen(self, timeout: float = 15.0) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=f"{self.base}/acme-adyen", timeout=timeout,
                                 headers={"X-API-Key": self.accounts["acme-adyen"]["api_key"]})


@pytest.fixture(scope="module")
def receiver():
    receiver = Receiver()
    yield receiver
    receiver.server.shutdown()


@pytest.fixture(scope="module")
def sim(stack, receiver):
    port = free_port()
    accounts = {
        "acme-stripe": {"personality": "stripe", "api_key": "sk_test_" + secrets.token_hex(8),
                        "webhook_url": receiver.url("/hooks/acme-stripe"),
                        "webhook_secret": "whsec_" + secrets.token_hex(16), "settlement_currency": "USD"},
        "acme-adyen": {"personality": "adyen", "api_key": "AQE" + secrets.token_hex(8),
                       "webhook_url": receiver.url("/hooks/acme-adyen"), "webhook_secret": secrets.token_hex(32),
                       "settlement_currency": "USD", "report_user": "report@acme",
                       "report_password": secrets.token_hex(8)},
        "acme-flaky": {"personality": "stripe", "api_key": "sk_test_" + secrets.token_hex(8),
                       "webhook_url": receiver.url("/flaky/acme-flaky"), "webhook_secret": "whsec_flaky"},
        "acme-dead": {"personality": "stripe", "api_key": "sk_test_" + secrets.token_hex(8),
                      "webhook_url": receiver.url("/dead/acme-dead"), "webhook_secret": "whsec_dead"},
    }
    seed = f"pi_seed_{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "SIM_DATABASE_URL": stack.dsn, "SIM_HTTP_PORT": str(port),
           "SIM_ACCOUNTS": json.dumps(accounts), "SIM_DECLINE_PERCENT": "0", "SIM_CONFIRM_AFTER_SECONDS": "1",
           "SIM_REVERSE_AFTER_SECONDS": "1", "SIM_TIMEOUT_HOLD_SECONDS": str(HOLD_SECONDS),
           "SIM_FX_RATES": json.dumps({"EUR/USD": str(FX_RATE)}), "SIM_FX_SPREAD_BPS": str(SPREAD_BPS),
           "SIM_FEE_BPS": str(FEE_BPS), "SIM_WEBHOOK_MAX_ATTEMPTS": str(WEBHOOK_ATTEMPTS),
           "SIM_WEBHOOK_RETRY_BASE_SECONDS": "0.2", "SIM_TICK_SECONDS": "0.2", "SIM_ADYEN_BATCH_SECONDS": "1",
           "SIM_SEED_PAYMENTS": json.dumps([{"account": "acme-stripe", "id": seed, "amount": 9900,
                                             "currency": "usd"}])}
    log = ROOT / ".run" / "test" / "logs" / "gatewaysim-http.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "gatewaysim"], cwd=ROOT, env=env, stdout=out,
                                   stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            ready = httpx.get(f"{base}/readyz", timeout=2)
            if ready.status_code == 200 and ready.json()["pid"] == process.pid:
                break
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the simulator did not become ready:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    yield Sim(base, accounts, seed)
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _id(token: str = "") -> str:
    return f"pi_{uuid.uuid4().hex[:12]}{'_' + token if token else ''}"


async def _payment(client: stripe.StripeClient, token: str = "", amount: int = 5000, currency: str = "usd") -> str:
    intent = await client.v1.payment_intents.create_async(
        {"id": _id(token), "amount": amount, "currency": currency, "confirm": True})
    assert (intent.status, intent.amount_received) == ("succeeded", amount)
    return intent.id


async def _refund(client: stripe.StripeClient, payment_id: str, amount: int, key: str | None = None, **metadata):
    key = key or uuid.uuid4().hex
    return await client.v1.refunds.create_async(
        {"payment_intent": payment_id, "amount": amount, "metadata": {"refund_key": key, **metadata}},
        {"idempotency_key": key})


async def _row(db, account: str, key: str):
    return await db.fetchrow("SELECT * FROM gateway_sim.refunds WHERE account = $1 AND idempotency_key = $2",
                             account, key)


def _stripe_event(sim: Sim, account: str, headers: dict, body: bytes) -> stripe.Event:
    return stripe.Webhook.construct_event(body, headers["Stripe-Signature"], sim.accounts[account]["webhook_secret"])


def _refund_event(refund_id: str, event_type: str):
    return lambda event: event["type"] == event_type and event["data"]["object"]["id"] == refund_id


async def test_stripe_refund_replay_conflict_list_and_payment_read(sim, db):
    client = sim.stripe()
    payment_id = await _payment(client, amount=5000)
    assert await _payment_again(client, payment_id) == payment_id
    key = uuid.uuid4().hex
    refund = await _refund(client, payment_id, 1500, key)
    assert (refund.status, refund.amount, refund.currency, refund.payment_intent) == ("succeeded", 1500, "usd",
                                                                                   payment_id)
    assert refund.id.startswith("re_") and refund.metadata["refund_key"] == key

    replay = await _refund(client, payment_id, 1500, key)
    assert replay.last_response.headers["Idempotent-Replayed"] == "true"
    assert replay.to_dict() == refund.to_dict()
    with pytest.raises(stripe.IdempotencyError) as changed:
        await _refund(client, payment_id, 1600, key)
    assert changed.value.http_status == 400

    row = await _row(db, "acme-stripe", key)
    assert (row["gateway_ref"], row["status"], row["amount_value"], row["currency"]) == (
        refund.id, "succeeded", 1500, "USD")
    assert row["refund_calls"] == 2  # the replay reached the gateway; the refused one did not
    assert await db.fetchval("SELECT count(*) FROM gateway_sim.refunds WHERE idempotency_key = $1", key) == 1
    assert await db.fetchval("SELECT count(*) FROM gateway_sim.settlement_lines WHERE account = 'acme-stripe' "
                             "AND gateway_ref = $1 AND kind = 'refund'", refund.id) == 1

    later = [await _refund(client, payment_id, 500) for _ in range(2)]
    page = await client.v1.refunds.list_async({"payment_intent": payment_id, "limit": 2})
    assert [r.id for r in page.data] == [later[1].id, later[0].id] and page.has_more
    assert [r.id async for r in page.auto_paging_iter()] == [later[1].id, later[0].id, refund.id]
    assert (await client.v1.refunds.retrieve_async(refund.id)).status == "succeeded"
    assert (await _row(db, "acme-stripe", key))["lookups"] == 2  # listed once (second page), read once

    intent = await client.v1.payment_intents.retrieve_async(payment_id)
    assert (intent.amount, intent.amount_received, intent.currency) == (5000, 5000, "usd")
    assert (intent.latest_charge.amount_captured, intent.latest_charge.amount_refunded) == (5000, 2500)
    seeded = await client.v1.payment_intents.retrieve_async(sim.seed)
    assert (seeded.amount, seeded.currency) == (9900, "usd")


async def _payment_again(client: stripe.StripeClient, payment_id: str) -> str:
    """Creating a payment again with the same values is a no-op; with others it is refused."""
    again = await client.v1.payment_intents.create_async(
        {"id": payment_id, "amount": 5000, "currency": "usd", "confirm": True})
    with pytest.raises(stripe.InvalidRequestError):
        await client.v1.payment_intents.create_async({"id": payment_id, "amount": 5001, "currency": "usd"})
    return again.id


async def test_concurrent_requests_under_one_key_pay_once(sim, db):
    payment_id = await _payment(sim.stripe())
    key = uuid.uuid4().hex
    headers = {"Authorization": f"Bearer {sim.accounts['acme-stripe']['api_key']}", "Idempotency-Key": key}
    form = {"payment_intent": payment_id, "amount": "700", "metadata[refund_key]": key}
    async with httpx.AsyncClient(base_url=f"{sim.base}/acme-stripe", timeout=15) as http:
        answers = await asyncio.gather(*(http.post("/v1/refunds", data=form, headers=headers) for _ in range(6)))
    assert {a.status_code for a in answers} <= {200, 409}, [a.text for a in answers]
    ok = [a.json() for a in answers if a.status_code == 200]
    assert ok and all(body == ok[0] for body in ok)
    for conflict in (a.json()["error"] for a in answers if a.status_code == 409):
        assert (conflict["type"], conflict["code"]) == ("idempotency_error", "idempotency_key_in_use")
    assert await db.fetchval("SELECT count(*) FROM gateway_sim.refunds WHERE account = 'acme-stripe' "
                             "AND idempotency_key = $1", key) == 1
    intent = await sim.stripe().v1.payment_intents.retrieve_async(payment_id)
    assert intent.latest_charge.amount_refunded == 700


async def test_refusals_in_both_shapes(sim, db):
    client = sim.stripe()
    with pytest.raises(stripe.InvalidRequestError) as unknown:
        await _refund(client, "pi_nobody_knows", 100)
    assert (unknown.value.http_status, unknown.value.code) == (404, "resource_missing")
    payment_id = await _payment(client, amount=1000)
    with pytest.raises(stripe.InvalidRequestError) as too_large:
        await _refund(client, payment_id, 1001)
    assert (too_large.value.http_status, too_large.value.code) == (400, "amount_too_large")
    await _refund(client, payment_id, 1000)
    with pytest.raises(stripe.InvalidRequestError) as nothing_left:
        await _refund(client, payment_id, 1)
    assert (nothing_left.value.http_status, nothing_left.value.code) == (400, "charge_already_refunded")
    for api_key in ("sk_test_wrong", sim.accounts["acme-flaky"]["api_key"]):  # another account's key is wrong too
        with pytest.raises(stripe.AuthenticationError) as wrong_key:
            await sim.stripe(api_key=api_key).v1.refunds.list_async({"payment_intent": payment_id})
        assert wrong_key.value.http_status == 401

    async with sim.adyen() as adyen:
        psp = await _adyen_payment(adyen, amount=1000)
        unknown = await adyen.post("/v71/payments/NOSUCHPSP0000000/refunds", json=_adyen_body(100))
        assert (unknown.status_code, unknown.json()["errorCode"]) == (422, "167")
        over = await adyen.post(f"/v71/payments/{psp}/refunds", json=_adyen_body(1001))
        assert (over.status_code, over.json()["errorCode"]) == (422, "137")
        missing = await adyen.get("/v71/payments/NOSUCHPSP0000000")
        assert (missing.status_code, missing.json()["errorType"]) == (404, "validation")
        bad_key = await adyen.get(f"/v71/payments/{psp}", headers={"X-API-Key": "wrong"})
        assert (bad_key.status_code, bad_key.json()["errorType"]) == (401, "security")
    assert await db.fetchval("SELECT count(*) FROM gateway_sim.refunds WHERE payment_id = $1", psp) == 0


async def _answered_503(client: stripe.StripeClient, payment_id: str, key: str, times: int) -> None:
    for _ in range(times):
        with pytest.raises(stripe.APIError) as unavailable:
            await _refund(client, payment_id, 1000, key)
        assert unavailable.value.http_status == 503


async def test_stripe_faults(sim, db, receiver):
    client = sim.stripe()
    hooks = "/hooks/acme-stripe"

    flaky, key = await _payment(client, "sim-5xx"), uuid.uuid4().hex
    await _answered_503(client, flaky, key, times=2)
    assert await _row(db, "acme-stripe", key) is None
    assert (await _refund(client, flaky, 1000, key)).status == "succeeded"
    assert (await _row(db, "acme-stripe", key))["refund_calls"] == 1

    down, key = await _payment(client, "sim-down"), uuid.uuid4().hex
    await _answered_503(client, down, key, times=3)
    assert await _row(db, "acme-stripe", key) is None

    slow = await _payment(client, "sim-timeout")
    key = uuid.uuid4().hex
    started = time.monotonic()
    with pytest.raises(stripe.APIConnectionError):
        await _refund(sim.stripe(timeout=1.0), slow, 1000, key)
    assert time.monotonic() - started < HOLD_SECONDS
    recorded = await wait_until(lambda: _row(db, "acme-stripe", key), timeout=10)  # it may commit after we gave up
    assert (recorded["status"], recorded["refund_calls"]) == ("succeeded", 1)  # money moved, answer lost
    retried = await _refund(client, slow, 1000, key)
    assert (retried.id, retried.last_response.headers["Idempotent-Replayed"]) == (recorded["gateway_ref"], "true")

    declined = await _refund(client, await _payment(client, "sim-decline"), 1000)
    assert (declined.status, declined.failure_reason) == ("failed", "declined")
    expired_payment = await _payment(client, "sim-expired")
    expired = await _refund(client, expired_payment, 1000)
    assert (expired.status, expired.failure_reason) == ("failed", "expired_or_canceled_card")
    by_bank = await _refund(client, expired_payment, 1000, channel="bank_transfer")
    assert by_bank.status == "succeeded"

    pending = await _refund(client, await _payment(client, "sim-async"), 1000)
    assert pending.status == "pending"
    [(headers, body, _)] = await receiver.wait_for(hooks, _refund_event(pending.id, "charge.refund.updated"))
    event = _stripe_event(sim, "acme-stripe", headers, body)
    assert (event.data.object.status, event.data.object.metadata["refund_key"]) == ("succeeded",
                                                                                  pending.metadata["refund_key"])
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(body, headers["Stripe-Signature"], "whsec_not_the_secret")
    assert (await client.v1.refunds.retrieve_async(pending.id)).status == "succeeded"

    reversing = await _refund(client, await _payment(client, "sim-reverse"), 1000)
    assert reversing.status == "succeeded"
    [(headers, body, _)] = await receiver.wait_for(hooks, _refund_event(reversing.id, "refund.failed"))
    event = _stripe_event(sim, "acme-stripe", headers, body)
    assert (event.type, event.data.object.status, event.data.object.failure_reason) == (
        "refund.failed", "failed", "lost_or_stolen_card")
    assert (await _row(db, "acme-stripe", reversing.metadata["refund_key"]))["status"] == "reversed"
    kinds = [r["kind"] for r in await db.fetch("SELECT kind FROM gateway_sim.settlement_lines WHERE gateway_ref = $1 "
                                               "ORDER BY id", reversing.id)]
    assert kinds == ["refund", "refund_reversal"]


def _adyen_body(value: int, currency: str = "EUR", reference: str | None = None) -> dict:
    return {"merchantAccount": "AcmeEU", "amount": {"value": value, "currency": currency},
            "reference": reference or uuid.uuid4().hex}


async def _adyen_payment(adyen: httpx.AsyncClient, token: str = "", amount: int = 5000,
                         currency: str = "EUR") -> str:
    psp = f"PSP{uuid.uuid4().hex[:12].upper()}{token}"
    created = await adyen.post("/sim/payments", json={"pspReference": psp,
                                                      "amount": {"value": amount, "currency": currency}})
    assert created.status_code == 200, created.text
    return psp


async def _adyen_refund(adyen: httpx.AsyncClient, psp: str, value: int, reference: str | None = None,
                        **extra) -> httpx.Response:
    body = _adyen_body(value, reference=reference) | extra
    return await adyen.post(f"/v71/payments/{psp}/refunds", json=body, headers={"Idempotency-Key": body["reference"]})


def _notification(psp: str, event_code: str):
    def match(body: dict) -> bool:
        item = body["notificationItems"][0]["NotificationRequestItem"]
        return (item["pspReference"], item["eventCode"]) == (psp, event_code)
    return match


async def _adyen_item(sim: Sim, receiver: Receiver, psp: str, event_code: str) -> dict:
    [(_, _, body)] = await receiver.wait_for("/hooks/acme-adyen", _notification(psp, event_code))
    item = body["notificationItems"][0]["NotificationRequestItem"]
    key = sim.accounts["acme-adyen"]["webhook_secret"]
    assert Adyen.util.is_valid_hmac_notification(body, key)
    tampered = {**item, "amount": {**item["amount"], "value": item["amount"]["value"] + 1}}
    assert not Adyen.util.is_valid_hmac_notification(tampered, key)
    return item


async def test_adyen_faults(sim, db, receiver):
    async with sim.adyen() as adyen:
        ok = await _adyen_refund(adyen, await _adyen_payment(adyen), 1000)
        assert (ok.status_code, ok.json()["status"]) == (201, "received")
        assert len(ok.json()["pspReference"]) == 16
        item = await _adyen_item(sim, receiver, ok.json()["pspReference"], "REFUND")
        assert (item["success"], item["merchantReference"], item["amount"]) == (
            "true", ok.json()["reference"], {"value": 1000, "currency": "EUR"})
        replay = await _adyen_refund(adyen, ok.json()["paymentPspReference"], 1000, ok.json()["reference"])
        assert (replay.status_code, replay.json(), replay.headers["Idempotent-Replayed"]) == (201, ok.json(), "true")
        changed = await _adyen_refund(adyen, ok.json()["paymentPspReference"], 999, ok.json()["reference"])
        assert changed.status_code == 400

        flaky = await _adyen_payment(adyen, "sim-5xx")
        reference = uuid.uuid4().hex
        assert [(await _adyen_refund(adyen, flaky, 1000, reference)).status_code for _ in range(3)] == [503, 503, 201]
        down = await _adyen_payment(adyen, "sim-down")
        reference = uuid.uuid4().hex
        assert {(await _adyen_refund(adyen, down, 1000, reference)).status_code for _ in range(3)} == {503}
        assert await _row(db, "acme-adyen", reference) is None

        slow = await _adyen_payment(adyen, "sim-timeout")
        reference = uuid.uuid4().hex
        async with sim.adyen(timeout=1.0) as impatient:
            with pytest.raises(httpx.TimeoutException):
                await _adyen_refund(impatient, slow, 1000, reference)
        recorded = await wait_until(lambda: _row(db, "acme-adyen", reference), timeout=10)
        assert (recorded["status"], recorded["refund_calls"]) == ("succeeded", 1)
        retried = await _adyen_refund(adyen, slow, 1000, reference)
        assert retried.json()["pspReference"] == recorded["gateway_ref"]

        declined = await _adyen_refund(adyen, await _adyen_payment(adyen, "sim-decline"), 1000)
        assert declined.status_code == 201  # the outcome comes by notification, declines too
        item = await _adyen_item(sim, receiver, declined.json()["pspReference"], "REFUND")
        assert (item["success"], item["reason"]) == ("false", "declined")
        expired_psp = await _adyen_payment(adyen, "sim-expired")
        item = await _adyen_item(sim, receiver, (await _adyen_refund(adyen, expired_psp, 1000)).json()["pspReference"],
                                 "REFUND")
        assert (item["success"], item["reason"]) == ("false", "expired_or_canceled_card")
        by_bank = await _adyen_refund(adyen, expired_psp, 1000, channel="bank_transfer")
        item = await _adyen_item(sim, receiver, by_bank.json()["pspReference"], "REFUND")
        assert item["success"] == "true"

        pending = (await _adyen_refund(adyen, await _adyen_payment(adyen, "sim-async"), 1000)).json()
        assert (await _row(db, "acme-adyen", pending["reference"]))["confirm_at"] is not None  # accepted as pending
        item = await _adyen_item(sim, receiver, pending["pspReference"], "REFUND")
        assert item["success"] == "true"
        assert (await _row(db, "acme-adyen", pending["reference"]))["status"] == "succeeded"

        reversing = (await _adyen_refund(adyen, await _adyen_payment(adyen, "sim-reverse"), 1000)).json()
        assert (await _adyen_item(sim, receiver, reversing["pspReference"], "REFUND"))["success"] == "true"
        item = await _adyen_item(sim, receiver, reversing["pspReference"], "REFUNDED_REVERSED")
        assert (item["success"], item["originalReference"]) == ("true", reversing["paymentPspReference"])
        assert (await _row(db, "acme-adyen", reversing["reference"]))["status"] == "reversed"

        payment = (await adyen.get(f"/v71/payments/{reversing['paymentPspReference']}")).json()
        assert (payment["capturedAmount"]["value"], payment["refundedAmount"]["value"]) == (5000, 0)


async def test_webhooks_are_retried_until_2xx_and_given_up_after_the_last_attempt(sim, db, receiver):
    for account, path in (("acme-flaky", "/flaky/acme-flaky"), ("acme-dead", "/dead/acme-dead")):
        client = sim.stripe(account)
        refund = await _refund(client, await _payment(client, "sim-async"), 1000)
        deliveries = await receiver.wait_for(path, _refund_event(refund.id, "charge.refund.updated"),
                                             count=WEBHOOK_ATTEMPTS)
        [event_id] = {_stripe_event(sim, account, headers, body).id for headers, body, _ in deliveries}
        # Every attempt is the same event (each signed anew); none comes after the last.

        async def settled(account=account, event_id=event_id):
            row = await db.fetchrow("SELECT attempts, delivered_at, next_attempt_at FROM gateway_sim.webhook_outbox "
                                    "WHERE account = $1 AND event_id = $2", account, event_id)
            return row if row and row["next_attempt_at"] is None else None
        row = await wait_until(settled, timeout=15)
        assert row["attempts"] == WEBHOOK_ATTEMPTS
        assert (row["delivered_at"] is not None) == (account == "acme-flaky")
    assert len(receiver.deliveries("/dead/acme-dead")) == WEBHOOK_ATTEMPTS


def _major(cents: int) -> str:
    return f"{Decimal(cents).scaleb(-2):.2f}"


def _settled(value: int) -> tuple[int, int]:
    """(USD cents, fee) for a EUR refund at the simulator's rate worsened by its spread, with the sim-fee fee."""
    usd = (Decimal(value) / 100 * FX_RATE * (1 + Decimal(SPREAD_BPS) / 10_000) * 100)
    cents = int(usd.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))
    return cents, max(1, int((Decimal(cents) * FEE_BPS / 10_000).quantize(Decimal(1), rounding=ROUND_HALF_EVEN)))


async def test_stripe_report_run_carries_fee_and_fx_spread(sim, db):
    client = sim.stripe()
    refund = await _refund(client, await _payment(client, "sim-fee", currency="eur"), 2500)
    cents, fee = _settled(2500)
    line = await db.fetchrow("SELECT amount_value, currency, fee_value, created_at FROM gateway_sim.settlement_lines "
                             "WHERE account = 'acme-stripe' AND gateway_ref = $1", refund.id)
    assert (line["amount_value"], line["currency"], line["fee_value"]) == (cents, "USD", fee)
    assert cents != round(2500 * FX_RATE)  # the spread moved it off the plain rate
    start = int(line["created_at"].timestamp())

    async def available():
        report_type = await client.v1.reporting.report_types.retrieve_async(REPORT)
        return report_type if report_type.data_available_end > start else None
    report_type = await wait_until(available, timeout=15)
    with pytest.raises(stripe.InvalidRequestError):
        await client.v1.reporting.report_runs.create_async(
            {"report_type": REPORT, "parameters": {"interval_start": start,
                                                   "interval_end": report_type.data_available_end + 60}})
    run = await client.v1.reporting.report_runs.create_async(
        {"report_type": REPORT, "parameters": {"interval_start": start,
                                               "interval_end": report_type.data_available_end}})
    assert run.status == "succeeded"
    assert (await client.v1.reporting.report_runs.retrieve_async(run.id)).result.id == run.result.id
    bearer = {"Authorization": f"Bearer {sim.accounts['acme-stripe']['api_key']}"}
    async with httpx.AsyncClient(timeout=15) as http:
        file = await http.get(run.result.url, headers=bearer)
    assert file.status_code == 200
    row = next(r for r in csv.DictReader(io.StringIO(file.text)) if r["source_id"] == refund.id)
    assert (row["currency"], row["gross"], row["fee"], row["reporting_category"]) == (
        "usd", f"-{_major(cents)}", _major(fee), "refund")
    parsed = next(p for p in parse("stripe", file.text).lines if p.gateway_ref == refund.id)
    assert (parsed.amount_value, parsed.currency, parsed.fee_value, parsed.kind) == (cents, "USD", fee, "refund")


async def test_adyen_settlement_batch_carries_fee_and_fx_spread(sim, db):
    async with sim.adyen() as adyen:
        refund = (await _adyen_refund(adyen, await _adyen_payment(adyen, "sim-fee"), 2500)).json()
    cents, fee = _settled(2500)
    account = sim.accounts["acme-adyen"]
    auth = (account["report_user"], account["report_password"])
    async with httpx.AsyncClient(base_url=f"{sim.base}/acme-adyen/reports", timeout=15) as reports:
        assert (await reports.get("/settlement_detail_report_batch_1.csv", auth=("report@acme", "wrong"))
                ).status_code == 401

        async def batch_with_line():
            batch = await db.fetchval("SELECT batch FROM gateway_sim.settlement_lines WHERE account = 'acme-adyen' "
                                      "AND gateway_ref = $1", refund["pspReference"])
            if batch is None:
                return None
            answer = await reports.get(f"/settlement_detail_report_batch_{batch}.csv", auth=auth)
            return (batch, answer.text) if answer.status_code == 200 else None
        batch, text = await wait_until(batch_with_line, timeout=15)
        assert (await reports.get(f"/settlement_detail_report_batch_{batch + 1000}.csv", auth=auth)).status_code == 404
    row = next(r for r in csv.DictReader(io.StringIO(text)) if r["Modification Reference"] == refund["pspReference"])
    assert (row["Type"], row["Gross Currency"], row["Gross Debit (GC)"], row["Commission (NC)"], row["Batch Number"]) \
        == ("Refunded", "USD", _major(cents), _major(fee), str(batch))
    parsed = next(p for p in parse("adyen", text).lines if p.gateway_ref == refund["pspReference"])
    assert (parsed.amount_value, parsed.currency, parsed.fee_value, parsed.kind) == (cents, "USD", fee, "refund")


async def test_the_in_process_gateway_keeps_working_on_the_same_ledger(stack, db):
    """The pipeline's SimGateway (until it switches to HTTP): its own account, advance on read, no webhooks."""
    pool = await create_pool(stack.dsn, max_size=2)
    try:
        gateway = SimGateway(pool, SimFaults(decline_percent=0, confirm_after=timedelta(0),
                                             reverse_after=timedelta(0)), account="acme-legacy")
        key, pending_key, reversing_key = (uuid.uuid4().hex for _ in range(3))
        first = await gateway.refund(key, "pay-legacy", 2500, "EUR", settles_as=(2703, "USD"))
        assert (await gateway.refund(key, "pay-legacy", 2500, "EUR")) == first and first.status == "succeeded"
        row = await _row(db, "acme-legacy", key)
        assert (row["refund_calls"], row["settle_value"], row["settle_currency"], row["personality"]) == (
            2, 2703, "USD", None)
        assert (await gateway.refund(pending_key, "pay-legacy-sim-async", 100, "EUR")).status == "pending"
        assert (await gateway.lookup(pending_key)).status == "succeeded"  # time acts when it is read
        reversing = await gateway.refund(reversing_key, "pay-legacy-sim-reverse", 100, "EUR")
        assert await gateway.reversals([reversing.gateway_ref]) == {reversing.gateway_ref: "lost_or_stolen_card"}
        with pytest.raises(GatewayUnavailable):
            await gateway.refund(uuid.uuid4().hex, "pay-legacy-sim-down", 100, "EUR")
        with pytest.raises(GatewayTimeout):
            await gateway.refund(uuid.uuid4().hex, "pay-legacy-sim-timeout", 100, "EUR")
        text, cursor = await gateway.settlement_report(0, "stripe")
        refs = {line.gateway_ref for line in parse("stripe", text).lines}
        own = {r["gateway_ref"] for r in await db.fetch("SELECT gateway_ref FROM gateway_sim.refunds "
                                                        "WHERE account = 'acme-legacy'")}
        assert {first.gateway_ref, reversing.gateway_ref} <= refs <= own and cursor > 0  # its account's lines only
        assert not await db.fetchval("SELECT count(*) FROM gateway_sim.webhook_outbox WHERE account = 'acme-legacy'")
    finally:
        await pool.close()
