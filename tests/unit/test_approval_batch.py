"""Approval decides a batch of accepted refunds at once: the same histories as one refund after another."""

import random
from datetime import UTC, datetime, timedelta

from services.approval.domain import (
    HISTORY_DEPTH, CustomerHistory, PastRefund, customer_histories, customer_key, first_sightings,
)
from shared.contract.events import RefundAccepted

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def accepted(refund_id: str, customer: str = "cus-1", value: int = 2500, currency: str = "EUR",
             at: datetime = NOW) -> RefundAccepted:
    return RefundAccepted.model_validate({
        "refund_id": refund_id, "request_id": f"req-{refund_id}", "source": "shop-eu", "order_id": "ord-1",
        "amount": {"value": value, "currency": currency}, "channel": "card", "region": "DE",
        "payment": {"id": f"pay-{refund_id}", "gateway": "sim", "channel": "card",
                    "captured": {"value": value, "currency": currency}},
        "customer": {"id": customer}, "reason": "damaged", "requested_at": at, "accepted_at": at,
    })


def past(refund: RefundAccepted) -> PastRefund:
    return PastRefund(refund.refund_id, refund.amount.currency, refund.amount.value, refund.accepted_at)


def histories(batch, recorded=(), window=DAY):
    """customer_histories as the consume step calls it: the stored rows by customer, the latest first."""
    by_customer: dict[str, list[PastRefund]] = {}
    for key, row in sorted(recorded, key=lambda kr: kr[1].accepted_at, reverse=True):
        if len(by_customer.setdefault(key, [])) <= HISTORY_DEPTH:
            by_customer[key].append(row)
    stored = {row.refund_id for _, row in recorded}
    return customer_histories(batch, [r.accepted_at - window if window else None for r in batch], by_customer,
                              {r.refund_id for r in batch if r.refund_id in stored})


def one_after_another(batch, recorded=(), window=DAY):
    """What deciding each refund in its own transaction read (the store's former per-refund query):
    the customer's latest HISTORY_DEPTH other refunds, then its own row, unless it had one."""
    table = list(recorded)
    found = []
    for refund in batch:
        key = customer_key(refund)
        rows = sorted((row for k, row in table if k == key and row.refund_id != refund.refund_id),
                      key=lambda row: row.accepted_at, reverse=True)[:HISTORY_DEPTH]
        recent = sum(row.accepted_at > refund.accepted_at - window for row in rows) if window else 0
        found.append(CustomerHistory(recent, tuple(row.amount_value for row in rows
                                                   if row.currency == refund.amount.currency)))
        if all(row.refund_id != refund.refund_id for _, row in table):
            table.append((key, past(refund)))
    return found


def comparable(found):
    return [(history.refunds_in_velocity_window, sorted(history.past_amounts)) for history in found]


def test_an_earlier_refund_of_the_batch_counts_in_a_later_ones_history():
    first, second = accepted("rf_1", value=1000), accepted("rf_2", value=3000)
    other_customer = accepted("rf_3", customer="cus-2")
    assert histories([first, other_customer, second]) == [
        CustomerHistory(0, ()), CustomerHistory(0, ()), CustomerHistory(1, (1000,))]


def test_a_later_accepted_refund_counts_in_an_earlier_accepted_ones_window_as_it_did():
    late = accepted("rf_late", at=NOW + DAY)
    early = accepted("rf_early", at=NOW - 3 * DAY)
    assert histories([late, early]) == [CustomerHistory(0, ()), CustomerHistory(1, (2500,))]


def test_the_velocity_window_and_currency_pick_from_the_stored_history():
    stored = [(customer_key(r), past(r)) for r in (
        accepted("rf_old", at=NOW - 2 * DAY, value=700), accepted("rf_usd", currency="USD", value=900),
        accepted("rf_new", at=NOW - timedelta(hours=1), value=800))]
    assert histories([accepted("rf_1")], stored) == [CustomerHistory(2, (800, 700))]
    assert histories([accepted("rf_1")], stored, window=None) == [CustomerHistory(0, (800, 700))]


def test_a_refund_recorded_before_keeps_its_row_and_never_counts_in_its_own_history():
    stored_row = accepted("rf_1", value=1111, at=NOW - timedelta(hours=2))
    stored = [(customer_key(stored_row), past(stored_row))]
    again, later = accepted("rf_1", value=1111, at=NOW - timedelta(hours=2)), accepted("rf_2")
    assert histories([again, later], stored) == [CustomerHistory(0, ()), CustomerHistory(1, (1111,))]


def test_only_the_latest_history_depth_refunds_count():
    stored = [(customer_key(r), past(r)) for r in (
        accepted(f"rf_{n}", value=n, at=NOW - timedelta(minutes=n)) for n in range(1, HISTORY_DEPTH + 6))]
    newer = [accepted(f"rf_new_{n}", value=10_000 + n, at=NOW + timedelta(minutes=n)) for n in range(3)]
    assert comparable(histories(newer, stored)) == comparable(one_after_another(newer, stored))
    # The oldest stored ones fell out: for two of the batch's, and the limit of the history.
    assert sorted(histories(newer, stored)[2].past_amounts) == [*range(1, HISTORY_DEPTH - 1), 10_000, 10_001]


def test_a_refund_recorded_before_still_sees_a_full_history_after_the_batch_added_newer_ones():
    stored_refunds = [accepted(f"rf_{n}", value=n, at=NOW - timedelta(minutes=n)) for n in range(1, HISTORY_DEPTH + 3)]
    stored = [(customer_key(r), past(r)) for r in stored_refunds]
    batch = [accepted("rf_new", value=10_000, at=NOW + timedelta(minutes=1)), stored_refunds[0]]
    assert comparable(histories(batch, stored)) == comparable(one_after_another(batch, stored))
    assert len(histories(batch, stored)[1].past_amounts) == HISTORY_DEPTH


def test_a_batch_decides_exactly_as_one_refund_after_another():
    rng = random.Random(20261125)
    for _ in range(20):
        customers = [f"cus-{n}" for n in range(3)]
        times = rng.sample(range(-10 * 24 * 60, 24 * 60), 600)  # distinct minutes: no ties at the cut
        stored_refunds = [accepted(f"rf_s{n}", rng.choice(customers[:1] * 8 + customers[1:]),
                                   rng.choice((1000, 2000, 5000)), rng.choice(("EUR", "EUR", "USD")),
                                   NOW + timedelta(minutes=times.pop())) for n in range(rng.randrange(0, 300))]
        stored = [(customer_key(r), past(r)) for r in stored_refunds]
        batch = [accepted(f"rf_b{n}", rng.choice(customers), rng.choice((1000, 2000, 50_000)),
                          rng.choice(("EUR", "USD")), NOW + timedelta(minutes=times.pop())) for n in range(60)]
        batch += rng.sample(stored_refunds, min(5, len(stored_refunds)))  # recorded before, not decided
        rng.shuffle(batch)
        window = rng.choice((DAY, 3 * DAY, None))
        assert comparable(histories(batch, stored, window)) == comparable(one_after_another(batch, stored, window))


def test_each_refund_is_decided_once_and_never_again():
    assert first_sightings(["rf_1", "rf_2", "rf_1", "rf_3", "rf_2"], {"rf_3"}) == [0, 1]
    assert first_sightings([], set()) == []
