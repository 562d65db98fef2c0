"""Reconcile pulls settlement reports from every configured gateway over its HTTP API.

The gateway is the simulator as its own process, on a database of its own: a Stripe-shaped
account (Reports API, like `sim`) that settles in USD and an Adyen-shaped account (settlement
detail report batches, basic auth, like `adyen`) that settles in EUR, with an FX spread and fees;
their gateway names are fresh per run. Refunds are made there over HTTP as payout makes them; the
tests publish payout's `refund.paid.v1` for each and read only what reconcile shows.
"""

import json
import socket
import uuid
from decimal import ROUND_HALF_EVEN, Decimal
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest

from shared.contract import topics
from shared.contract.money import Money
from tests.integration.gateway_simulator import Accounts, SimulatorClient, SimulatorProcess, sim_settings
from tests.integration.helpers import TopicTail, wait_until
from tests.integration.scrape import samples, total
from tests.integration.service_fixtures import service_configured
from tests.integration.settlement_reports import FINANCE, publish_paid

pytestmark = pytest.mark.integration
EUR_USD = Decimal("1.0812")  # the simulator's rate and payout's; the simulator worsens it by its spread
SPREAD_BPS = 30
FAILURES = "refund_reconcile_report_pull_failures_total"


ACCOUNTS = Accounts(stripe_settles_in="USD", adyen_settles_in="EUR")
SIM, ADYEN = ACCOUNTS.stripe, ACCOUNTS.adyen


@pytest.fixture(scope="module")
async def simulator(stack):
    name = f"gatewaysim_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(stack.dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    process = SimulatorProcess(urlunsplit(urlsplit(stack.dsn)._replace(path=f"/{name}")),
                               stack.logs_dir / "gatewaysim-reconcile-pull.log", **sim_settings(
        SIM_ACCOUNTS=json.dumps(ACCOUNTS.settings()), SIM_FX_RATES=json.dumps({"EUR/USD": str(EUR_USD)}),
        SIM_FX_SPREAD_BPS=str(SPREAD_BPS), SIM_FEE_BPS="150"))
    try:
        process.start()
        yield process
    finally:
        process.stop()
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
async def gateway(simulator):
    client = SimulatorClient(simulator.url, ACCOUNTS)
    yield client
    await client.aclose()


@pytest.fixture
def silent_gateway():
    """A gateway that takes the connection and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


def payout_estimate(value: int, rate: Decimal) -> int:
    """What payout expects the balance to move by at its own rate (both currencies have two decimals)."""
    return int((Decimal(value) * rate).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def pulling(simulator: SimulatorProcess, **extra_routes: dict) -> dict[str, str]:
    return {"GATEWAY_ROUTES": json.dumps(ACCOUNTS.routes(simulator.url) | extra_routes),
            "RECONCILE_REPORT_PULL_SECONDS": "1"}


async def states(db, refs: dict[str, tuple[str, str]]) -> dict[str, tuple[str, str | None]]:
    rows = await db.fetch("SELECT gateway, gateway_ref, state, category FROM reconcile.payouts "
                          "WHERE gateway_ref = ANY($1)", [ref for _, ref in refs.values()])
    found = {(r["gateway"], r["gateway_ref"]): (r["state"], r["category"]) for r in rows}
    return {name: found.get(key) for name, key in refs.items()}


async def wait_states(db, refs: dict, expected: dict, timeout: float = 90) -> None:
    async def reached():
        return await states(db, refs) == expected
    try:
        await wait_until(reached, timeout=timeout)
    except AssertionError:
        raise AssertionError(f"payouts {await states(db, refs)} never became {expected}") from None


async def lines_of(db, refs: dict) -> dict[str, list[dict]]:
    rows = await db.fetch("SELECT l.*, r.received_from FROM reconcile.settlement_lines l "
                          "LEFT JOIN reconcile.settlement_reports r ON r.id = l.report_id WHERE l.gateway_ref = ANY($1)",
                          [ref for _, ref in refs.values()])
    return {name: [dict(r) for r in rows if (r["gateway"], r["gateway_ref"]) == key] for name, key in refs.items()}


async def assert_ledger_balances(stack) -> list[dict]:
    async with httpx.AsyncClient(base_url=stack.service_url("reconcile"), timeout=30) as http:
        ledger = (await http.get("/v1/ledger", headers=FINANCE)).json()["currencies"]
    assert ledger and all(entry["imbalance"] == 0 for entry in ledger), ledger
    return ledger


async def test_both_personalities_reports_are_pulled_and_reconcile_to_the_cent(stack, producer, db, simulator,
                                                                                gateway):
    # Stripe-shaped `sim` settles in USD: USD refunds stay USD, EUR ones are converted with the spread.
    refs = {
        "plain": (SIM, await gateway.stripe_refund(2500, "USD")),
        "fee": (SIM, await gateway.stripe_refund(2500, "USD", "sim-fee")),  # 150 bps: 38
        "least_fee": (SIM, await gateway.stripe_refund(10, "USD", "sim-fee")),  # the gateway's minimum: 1
        "fx": (SIM, await gateway.stripe_refund(2500, "EUR")),
        "fx_far": (SIM, await gateway.stripe_refund(2000, "EUR")),
        # Adyen-shaped `adyen` settles in EUR.
        "a_plain": (ADYEN, await gateway.adyen_refund(4000, "EUR")),
        "a_fee": (ADYEN, await gateway.adyen_refund(4000, "EUR", "sim-fee")),
        "a_fx": (ADYEN, await gateway.adyen_refund(5000, "USD")),
    }
    expected_fx = {"fx": payout_estimate(2500, EUR_USD), "a_fx": payout_estimate(5000, 1 / EUR_USD)}
    paid = {
        "plain": (2500, "USD", None), "fee": (2500, "USD", None), "least_fee": (10, "USD", None),
        "fx": (2500, "EUR", Money(value=expected_fx["fx"], currency="USD")),
        # Payout's rate was stale: 2100 USD expected, the gateway settled about 2169.
        "fx_far": (2000, "EUR", Money(value=2100, currency="USD")),
        "a_plain": (4000, "EUR", None), "a_fee": (4000, "EUR", None),
        "a_fx": (5000, "USD", Money(value=expected_fx["a_fx"], currency="EUR")),
    }
    async with TopicTail(stack.bootstrap, topics.RECONCILED, topics.DISCREPANCY) as tail:
        refund_ids = {name: await publish_paid(producer, refs[name][1], value, currency, gateway=refs[name][0],
                                               settlement_amount=settles)
                      for name, (value, currency, settles) in paid.items()}
        env = pulling(simulator)
        with service_configured(stack, "reconcile", **env):
            matched = ("matched", "matched")
            await wait_states(db, refs, {name: matched for name in refs} | {"fx_far": ("discrepancy",
                                                                                        "amount_mismatch")})
            lines = await lines_of(db, refs)
            assert all(len(found) == 1 for found in lines.values()), lines
            line = {name: found[0] for name, found in lines.items()}
            assert all(l["received_from"].startswith("pull:") for l in line.values()), line

            # To the cent: the same amounts, fees within RECONCILE_MAX_FEE_BPS (300) matched.
            assert {name: (l["amount_value"], l["currency"], l["fee_value"]) for name, l in line.items()
                    if not name.endswith("fx") and name != "fx_far"} == {
                "plain": (2500, "USD", 0), "fee": (2500, "USD", 38), "least_fee": (10, "USD", 1),
                "a_plain": (4000, "EUR", 0), "a_fee": (4000, "EUR", 60)}
            # FX within RECONCILE_FX_TOLERANCE_BPS (50) of payout's estimate: matched, the gap recorded.
            gaps = {name: line[name]["amount_value"] - expected_fx[name] for name in expected_fx}
            assert line["fx"]["amount_value"] == payout_estimate(2500, EUR_USD * (1 + Decimal(SPREAD_BPS) / 10_000))
            assert all(0 < gap <= expected_fx[name] * 50 / 10_000 for name, gap in gaps.items()), gaps
            assert {name: line[name]["fx_difference"] for name in line} == {name: gaps.get(name, 0) for name in line}

            def decided(event: dict) -> bool:
                return {e["data"]["refund_id"] for e in tail.records} >= set(refund_ids.values())
            await tail.wait_for(decided, timeout=60)
            outcome = {e["data"]["refund_id"]: e for e in tail.records}
            for name in expected_fx:
                event = outcome[refund_ids[name]]
                assert event["type"] == "refund.reconciled.v1", event
                assert event["data"]["reason_codes"] == [f"fx_difference:{gaps[name]}"]
                assert event["data"]["settled_amount"] == {"value": line[name]["amount_value"],
                                                           "currency": line[name]["currency"]}
            assert outcome[refund_ids["plain"]]["data"]["reason_codes"] == []
            far = outcome[refund_ids["fx_far"]]
            assert (far["type"], far["data"]["category"]) == ("refund.discrepancy.v1", "amount_mismatch")

            # Invariant 5 to the minor unit: FX matches count at payout's amount, their gap shown apart.
            ledger = {entry["currency"]: entry for entry in await assert_ledger_balances(stack)}
            assert ledger["USD"]["fx_difference"] >= gaps["fx"] and ledger["EUR"]["fx_difference"] >= gaps["a_fx"]
            assert ledger["USD"]["settled_by_gateway"] == ledger["USD"]["matched_settled"] + ledger["USD"]["fx_difference"]

            # The cursors advanced; a restarted reconcile goes on from them and pulls no line twice.
            cursors = dict(await db.fetch("SELECT gateway, position FROM reconcile.report_pull_cursors "
                                          "WHERE gateway = ANY($1)", [SIM, ADYEN]))
            assert int(cursors[ADYEN]) >= 1 and json.loads(cursors[SIM])["interval_end"] > 0
            last_report = await db.fetchval("SELECT max(id) FROM reconcile.settlement_reports")
            stack.restart_service("reconcile", env)
            after = {"after": (SIM, await gateway.stripe_refund(1500, "USD")),
                     "a_after": (ADYEN, await gateway.adyen_refund(1500, "EUR"))}
            for name, (gateway_name, ref) in after.items():
                await publish_paid(producer, ref, 1500, "USD" if gateway_name == SIM else "EUR", gateway=gateway_name)
            await wait_states(db, after, {name: matched for name in after})
            moved = dict(await db.fetch("SELECT gateway, position FROM reconcile.report_pull_cursors "
                                        "WHERE gateway = ANY($1)", [SIM, ADYEN]))
            assert int(moved[ADYEN]) > int(cursors[ADYEN])
            assert json.loads(moved[SIM])["interval_end"] > json.loads(cursors[SIM])["interval_end"]
            pulled_again = await db.fetch(
                "SELECT id, received_from, lines_known FROM reconcile.settlement_reports WHERE id > $1 "
                "AND gateway = ANY($2) AND lines_known > 0", last_report, [SIM, ADYEN])
            assert pulled_again == [], pulled_again
            assert all(len(found) == 1 for found in (await lines_of(db, refs | after)).values())
            await assert_ledger_balances(stack)


async def test_a_gateway_that_is_down_is_retried_and_holds_up_no_other(stack, producer, db, simulator, gateway,
                                                                       silent_gateway):
    silent = {"kind": "stripe", "base_url": silent_gateway, "api_key": "sk_test_silent",
              "webhook_secret": "whsec_silent", "timeout_seconds": 1}
    env = pulling(simulator, silent=silent)
    with service_configured(stack, "reconcile", **env):
        before = {"s": (SIM, await gateway.stripe_refund(1200, "USD")),
                  "a": (ADYEN, await gateway.adyen_refund(1200, "EUR"))}
        await publish_paid(producer, before["s"][1], 1200, "USD", gateway=SIM)
        await publish_paid(producer, before["a"][1], 1200, "EUR", gateway=ADYEN)
        # The silent gateway times out every round; the simulator's reports still arrive.
        await wait_states(db, before, {"s": ("matched", "matched"), "a": ("matched", "matched")})
        assert total(stack, "reconcile", FAILURES, gateway="silent") >= 1
        assert not samples(stack, "reconcile", "refund_reconcile_report_last_pull_timestamp_seconds", gateway="silent")

        simulator.stop()
        try:
            failed = {name: total(stack, "reconcile", FAILURES, gateway=name) for name in (SIM, ADYEN)}

            async def counted():
                return all(total(stack, "reconcile", FAILURES, gateway=name) >= failed[name] + 2 for name in failed)
            await wait_until(counted, timeout=60)
        finally:
            simulator.start()
        # Back up: the next rounds pull from the same cursors.
        back = {"s": (SIM, await gateway.stripe_refund(1300, "USD")),
                "a": (ADYEN, await gateway.adyen_refund(1300, "EUR"))}
        await publish_paid(producer, back["s"][1], 1300, "USD", gateway=SIM)
        await publish_paid(producer, back["a"][1], 1300, "EUR", gateway=ADYEN)
        await wait_states(db, back, {"s": ("matched", "matched"), "a": ("matched", "matched")})
        assert all(len(found) == 1 for found in (await lines_of(db, {"s0": before["s"], "a0": before["a"],
                                                                     **back})).values())
        assert total(stack, "reconcile", FAILURES, gateway="silent") >= 2
        await assert_ledger_balances(stack)
