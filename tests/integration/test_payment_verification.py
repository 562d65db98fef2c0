"""Approval verifies the payment at its gateway before it approves, on the real stack and the gateway simulator.

The test runs its own gateway simulator (`python -m gatewaysim`, an external HTTP system) on the stack's
database, with three accounts: `sim` (Stripe-shaped), `adyen` (Adyen-shaped) and `sim-direct` (Stripe-shaped,
a gateway payout never pays through, where refunds are made "outside the pipeline"), and restarts approval
with GATEWAY_ROUTES pointing at it. Payments are created at the simulator through its API first, as the
platform's own charge would have, so the gateway is the truth the requests are compared with.
"""

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from aiokafka.partitioner import DefaultPartitioner

from shared.contract import topics
from shared.runtime.roles import Role
from tests.integration.helpers import TopicTail, publish, refund_of, staff_auth, valid_request, wait_until
from tests.integration.service_fixtures import service_configured

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
M = "payment-mismatch"
ALICE = staff_auth("alice", Role.SENIOR_REVIEWER)
BOB = staff_auth("bob", Role.FINANCE_LEAD)
RITA = staff_auth("rita", Role.REVIEWER)
PAID = {"succeeded", "reconciled"}
STRIPE_KEY, ADYEN_KEY = "sk_test_verify", "adyen_verify_key"
ADYEN_HMAC = "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


HANGING_PORT = free_port()


class Simulator:
    """The gateway simulator as its own process; stop() and start() make it a gateway that is down, then up."""

    def __init__(self, dsn: str, log_path: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        stripe = {"personality": "stripe", "api_key": STRIPE_KEY, "webhook_secret": "whsec_verify"}
        self.env = {**os.environ, "SIM_DATABASE_URL": dsn, "SIM_HTTP_PORT": str(self.port),
                    "SIM_ACCOUNTS": json.dumps({"sim": stripe, "sim-direct": stripe, "adyen": {
                        "personality": "adyen", "api_key": ADYEN_KEY, "webhook_secret": ADYEN_HMAC}}),
                    # Only its API is used here: time and settlement batches are the stack's business.
                    "SIM_TICK_SECONDS": "3600", "SIM_ADYEN_BATCH_SECONDS": "3600", "SIM_DECLINE_PERCENT": "0"}
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "gatewaysim"], cwd=ROOT, env=self.env,
                                            stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"the simulator exited; see {self.log_path}"
            try:
                if httpx.get(f"{self.base}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"the simulator was not ready within 60 s; see {self.log_path}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)

    def routes(self) -> dict:
        stripe = {"kind": "stripe", "api_key": STRIPE_KEY, "webhook_secret": "whsec_verify", "simulator": True,
                  "timeout_seconds": 3}
        return {"sim": {**stripe, "base_url": f"{self.base}/sim"},
                "sim-direct": {**stripe, "base_url": f"{self.base}/sim-direct"},
                "adyen": {"kind": "adyen", "base_url": f"{self.base}/adyen", "api_key": ADYEN_KEY,
                          "hmac_key": ADYEN_HMAC, "merchant_account": "SimMerchant", "simulator": True,
                          "timeout_seconds": 3},
                # A gateway that takes calls and never answers them (only while a test listens there).
                "hanging": {**stripe, "base_url": f"http://127.0.0.1:{HANGING_PORT}/hanging", "timeout_seconds": 120}}

    async def pay(self, account: str, payment_id: str, value: int, currency: str) -> None:
        """The customer's payment, captured at the gateway."""
        async with httpx.AsyncClient(base_url=f"{self.base}/{account}", timeout=10) as gateway:
            if account == "adyen":
                answer = await gateway.post("/sim/payments", headers={"X-API-Key": ADYEN_KEY}, json={
                    "pspReference": payment_id, "amount": {"value": value, "currency": currency}})
            else:
                answer = await gateway.post("/v1/payment_intents", headers={"Authorization": f"Bearer {STRIPE_KEY}"},
                                            data={"id": payment_id, "amount": value, "currency": currency.lower(),
                                                  "confirm": "true"})
        assert answer.status_code == 200, answer.text

    async def refund_directly(self, account: str, payment_id: str, value: int) -> None:
        """A refund made at the gateway outside the pipeline (e.g. in the merchant's dashboard)."""
        async with httpx.AsyncClient(base_url=f"{self.base}/{account}", timeout=10) as gateway:
            answer = await gateway.post("/v1/refunds", headers={"Authorization": f"Bearer {STRIPE_KEY}"},
                                        data={"payment_intent": payment_id, "amount": value})
        assert answer.status_code == 200 and answer.json()["status"] == "succeeded", answer.text


@pytest.fixture(scope="module")
def simulator(stack, tmp_path_factory):
    sim = Simulator(stack.dsn, tmp_path_factory.mktemp("gatewaysim") / "gatewaysim.log")
    sim.start()
    try:
        with service_configured(stack, "approval", GATEWAY_ROUTES=json.dumps(sim.routes()),
                                APPROVAL_VERIFY_RETRY_BASE_SECONDS="0.5", APPROVAL_VERIFY_RETRY_CAP_SECONDS="1"):
            yield sim
    finally:
        sim.stop()


@pytest.fixture
async def approval(stack, simulator):
    async with httpx.AsyncClient(base_url=stack.service_url("approval"), timeout=30) as client:
        yield client


def on(gateway: str, **changes) -> dict:
    request = valid_request(**changes)
    request["payment"]["gateway"] = gateway
    return request


def denied_by_policy() -> dict:
    """A wallet payment past its refund window: the policy denies it."""
    request = on("sim")
    request["payment"]["channel"] = "wallet"
    request["payment"]["captured_at"] = (datetime.now(UTC) - timedelta(days=400)).isoformat()
    return request


async def decide(approval, refund_id, headers, action, reason="checked the payment with the platform"):
    answer = await approval.post(f"/v1/reviews/{refund_id}/decision", headers=headers,
                                 json={"action": action, "reason": reason})
    assert answer.status_code == 200, answer.text
    return answer.json()


async def held(status_feed, refund_id) -> list[str]:
    assert await status_feed.wait_for(lambda: status_feed.status_of(refund_id) == "on_hold", timeout=60), \
        status_feed.status_of(refund_id)
    return status_feed.latest[refund_id]["reason_codes"]


async def payouts(db, refund_id) -> int:
    return await db.fetchval("SELECT count(*) FROM payout.payouts WHERE refund_id = $1", refund_id)


async def paid(status_feed, db, refund_id) -> None:
    assert await status_feed.wait_for(lambda: status_feed.status_of(refund_id) in PAID, timeout=90), \
        status_feed.status_of(refund_id)
    assert await db.fetchval("SELECT status FROM payout.payouts WHERE refund_id = $1", refund_id) == "succeeded"


async def test_matching_payments_are_approved_and_paid_on_both_personalities(simulator, producer, status_feed, db):
    requests = [on("sim"), on("adyen")]
    for request in requests:
        await simulator.pay(request["payment"]["gateway"], request["payment"]["id"], 5000, "EUR")
        await publish(producer, request)
    for request in requests:
        await paid(status_feed, db, refund_of(request))
        decision = await db.fetchrow("SELECT decision, decided_by, rule_ids FROM approval.decisions "
                                     "WHERE refund_id = $1", refund_of(request))
        assert dict(decision) == {"decision": "approved", "decided_by": "policy", "rule_ids": ["auto-approve-standard"]}


async def test_captured_less_at_the_gateway_is_held_never_paid_until_a_senior_releases_it(
        stack, simulator, approval, producer, status_feed, db):
    request = on("sim", amount=2500, captured=10000)
    refund_id = refund_of(request)
    await simulator.pay("sim", request["payment"]["id"], 9000, "EUR")
    await publish(producer, request)
    assert await held(status_feed, refund_id) == [M, f"{M}:captured 90.00 EUR at gateway, 100.00 EUR claimed"]
    assert await payouts(db, refund_id) == 0

    review = (await approval.get(f"/v1/reviews/{refund_id}", headers=RITA)).json()
    assert (review["kind"], review["status"], review["roles"]) == ("hold", "on_hold", ["senior_reviewer", "finance_lead"])
    opened = review["audit"][-1]
    assert (opened["actor"], opened["action"]) == ("system", "opened_hold")
    assert opened["detail"]["at_gateway"] == {"currency": "EUR", "captured": 9000, "refunded": 0}

    # The senior checks with the platform (the order was 90.00): the refund of 25.00 may go out.
    async with TopicTail(stack.bootstrap, topics.APPROVED) as approvals:
        await decide(approval, refund_id, ALICE, "release", "platform confirms 90.00 was captured; 25.00 is right")
        approved = (await approvals.wait_for(lambda e: e["data"]["refund_id"] == refund_id))["data"]
    assert approved["reason_codes"] == ["auto-approve-standard", "payment-mismatch-released"]
    await paid(status_feed, db, refund_id)


async def test_another_currency_at_the_gateway_is_held_and_a_denial_is_final(
        simulator, approval, producer, status_feed, db):
    request = on("adyen", amount=2500, captured=5000)
    refund_id = refund_of(request)
    await simulator.pay("adyen", request["payment"]["id"], 5000, "USD")
    await publish(producer, request)
    assert await held(status_feed, refund_id) == [M, f"{M}:currency USD at gateway, EUR claimed"]

    await decide(approval, refund_id, BOB, "deny", "paid in USD; the platform must ask in USD")
    assert await status_feed.wait_for(lambda: status_feed.status_of(refund_id) == "denied", timeout=60)
    assert await payouts(db, refund_id) == 0


async def test_a_payment_already_refunded_at_the_gateway_is_held(simulator, producer, status_feed, db):
    request = on("sim-direct", amount=2500, captured=5000)
    refund_id = refund_of(request)
    await simulator.pay("sim-direct", request["payment"]["id"], 5000, "EUR")
    await simulator.refund_directly("sim-direct", request["payment"]["id"], 4000)
    await publish(producer, request)
    assert await held(status_feed, refund_id) == [M, f"{M}:left 10.00 EUR at gateway, 25.00 EUR asked"]
    assert await payouts(db, refund_id) == 0


async def test_a_payment_unknown_at_the_gateway_is_held(simulator, producer, status_feed, db):
    request = on("sim-direct")  # never paid at the gateway
    refund_id = refund_of(request)
    await publish(producer, request)
    assert await held(status_feed, refund_id) == [M, f"{M}:payment not found at gateway"]
    assert await payouts(db, refund_id) == 0


async def test_a_refund_for_review_is_verified_before_anyone_reviews_it(
        stack, simulator, approval, producer, status_feed, db):
    request = on("sim", amount=90_000, captured=100_000)  # 900.00 EUR: a reviewer decides
    refund_id = refund_of(request)
    await simulator.pay("sim", request["payment"]["id"], 95_000, "EUR")
    await publish(producer, request)
    assert await held(status_feed, refund_id) == [M, f"{M}:captured 950.00 EUR at gateway, 1000.00 EUR claimed"]
    assert "pending_review" not in status_feed.history[refund_id]

    # Released, the policy decides again: a review, which this disagreement no longer holds up.
    await decide(approval, refund_id, BOB, "release", "capture of 950.00 confirmed with the platform")
    assert await status_feed.wait_for(lambda: status_feed.status_of(refund_id) == "pending_review", timeout=60)
    assert status_feed.latest[refund_id]["reason_codes"] == ["review-above-auto-limit", "payment-mismatch-released"]
    async with TopicTail(stack.bootstrap, topics.APPROVED) as approvals:
        await decide(approval, refund_id, RITA, "approve", "900.00 is within what was captured")
        approved = (await approvals.wait_for(lambda e: e["data"]["refund_id"] == refund_id))["data"]
    assert approved["reason_codes"] == ["review-above-auto-limit", "payment-mismatch-released", "review-approved"]
    await paid(status_feed, db, refund_id)


async def test_a_reviewers_approval_is_verified_again_at_the_gateway(stack, simulator, approval, producer,
                                                                     status_feed, db):
    request = on("sim-direct", amount=90_000, captured=100_000)
    refund_id = refund_of(request)
    await simulator.pay("sim-direct", request["payment"]["id"], 100_000, "EUR")
    await publish(producer, request)
    assert await status_feed.wait_for(lambda: status_feed.status_of(refund_id) == "pending_review", timeout=60)

    # While it waits for a reviewer, the merchant refunds half of the payment in the gateway's dashboard.
    await simulator.refund_directly("sim-direct", request["payment"]["id"], 50_000)
    async with TopicTail(stack.bootstrap, topics.HELD) as holds:
        decided = await decide(approval, refund_id, RITA, "approve", "order and customer check out")
        assert decided["state"] == "approved" and "payment_verification" in decided
        hold = (await holds.wait_for(lambda e: e["type"] == "refund.held.v1"
                                     and e["data"]["refund_id"] == refund_id))["data"]
    assert hold["reason_codes"] == [M, f"{M}:left 500.00 EUR at gateway, 900.00 EUR asked"]
    review = (await approval.get(f"/v1/reviews/{refund_id}", headers=RITA)).json()
    assert (review["kind"], review["status"]) == ("hold", "on_hold")
    assert await db.fetchval("SELECT count(*) FROM approval.decisions WHERE refund_id = $1", refund_id) == 0

    await decide(approval, refund_id, ALICE, "deny", "already refunded in part by the merchant")
    assert await status_feed.wait_for(lambda: status_feed.status_of(refund_id) == "denied", timeout=60)
    assert await payouts(db, refund_id) == 0


async def test_a_gateway_that_does_not_answer_holds_back_the_approval_and_never_loses_it(
        simulator, producer, status_feed, db):
    waiting = on("sim")
    waiting_id = refund_of(waiting)
    await simulator.pay("sim", waiting["payment"]["id"], 5000, "EUR")
    partitions = list(range(6))
    partition = DefaultPartitioner()(waiting_id.encode(), partitions, partitions)
    behind = denied_by_policy()  # needs no gateway read
    while DefaultPartitioner()(refund_of(behind).encode(), partitions, partitions) != partition:
        behind = denied_by_policy()

    simulator.stop()
    try:
        await publish(producer, waiting)
        await publish(producer, behind)
        # The refund behind it on the same partition is not held up.
        assert await status_feed.wait_for(lambda: status_feed.status_of(refund_of(behind)) == "denied",
                                          timeout=60)
        asked = await wait_until(lambda: db.fetchrow(
            "SELECT attempts, last_error FROM approval.verifications WHERE refund_id = $1 AND attempts >= 3",
            waiting_id), timeout=60)
        assert asked["last_error"] == "stripe_http_connection"
        assert status_feed.status_of(waiting_id) == "accepted"
        assert await db.fetchval("SELECT count(*) FROM approval.decisions WHERE refund_id = $1", waiting_id) == 0
        assert await payouts(db, waiting_id) == 0
    finally:
        simulator.start()
    await paid(status_feed, db, waiting_id)
    assert await db.fetchval("SELECT count(*) FROM approval.verifications WHERE refund_id = $1", waiting_id) == 0


async def test_a_gateway_that_hangs_delays_only_its_own_refunds(simulator, producer, status_feed, db):
    called = asyncio.Event()

    async def never_answer(reader, writer):
        called.set()
        await reader.read()  # until approval gives up on the read
        writer.close()

    server = await asyncio.start_server(never_answer, "127.0.0.1", HANGING_PORT)
    try:
        stuck = on("hanging")
        await publish(producer, stuck)
        await asyncio.wait_for(called.wait(), timeout=60)  # approval is reading it now, for up to 120 s
        other = on("adyen")
        await simulator.pay("adyen", other["payment"]["id"], 5000, "EUR")
        await publish(producer, other)
        await wait_until(lambda: db.fetchval("SELECT decision FROM approval.decisions WHERE refund_id = $1",
                                             refund_of(other)), timeout=30)
        assert status_feed.status_of(refund_of(stuck)) == "accepted"
        assert await db.fetchval("SELECT count(*) FROM approval.decisions WHERE refund_id = $1",
                                 refund_of(stuck)) == 0
    finally:
        server.close()
