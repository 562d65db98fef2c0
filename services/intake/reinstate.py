"""Reserving a failed refund's amount again for an exit out of its failed payout (a new destination, a
re-route, money paid outside the pipeline).

The failed payout gave the ticket's amount back to its payment (services/intake/release.py), and another
refund may have used it since; so payout pays nothing for an exit until intake has reserved the amount
again. Intake consumes `refunds.payout-exits` (payout's own: a forged exit request is dead-lettered as
untrusted) and answers each with `refund.reinstated.v1` or `refund.reinstatement-refused.v1` (the balance
no longer covers it: `exceeds_refundable`). The payment rows are locked as the accept path locks them, so
invariant 2 holds against concurrent requests. The ticket records the attempt it reserves for, so only a
failure of that attempt releases it again; a re-sent request for an attempt already reserved gets the
same answer again and reserves nothing more.
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import asyncpg
import structlog
from prometheus_client import Counter

from services.intake import domain, store
from shared.contract import topics
from shared.contract.envelope import Outgoing, encode
from shared.contract.events import PayoutExitRequested, RefundReinstated, ReinstatementRefused, TYPE_OF
from shared.runtime.stage import Inbound

log = structlog.get_logger()
SOURCE = "refund-pipeline/intake"
TOPICS = (topics.PAYOUT_EXITS,)
REINSTATEMENTS = Counter("refund_balance_reinstatements_total",
                         "Exits out of failed payouts intake answered, by outcome (reinstated, or the refusal code)",
                         ["exit", "outcome"])


def _requests(items: Sequence[Inbound]) -> dict[str, PayoutExitRequested]:
    requests: dict[str, PayoutExitRequested] = {}
    for item in items:
        if item.event.get_type() == TYPE_OF[PayoutExitRequested] and item.record.topic == topics.PAYOUT_EXITS:
            request = PayoutExitRequested.model_validate(item.event.get_data())
            requests.setdefault(request.refund_id, request)  # twice in a batch: the first one stands
    return requests


async def reinstate_for_exits(conn: asyncpg.Connection, items: list[Inbound]) -> list[Outgoing]:
    """The consume step for a batch's records of `TOPICS`: reserve the amounts the exits need, in one lock
    pass and one update, and answer each exit."""
    requests = _requests(items)
    if not requests:
        return []
    found = await store.lock_for_reinstatement(conn, list(requests))
    left: dict[domain.PaymentKey, int] = {}  # what each payment has left as this batch reserves from it
    reserve: dict[str, int] = {}
    answers: list[Outgoing] = []
    now = datetime.now(UTC)
    for refund_id, request in requests.items():
        ticket, payment, balance = found.get(refund_id, (None, None, None))
        refundable = left.setdefault(payment, balance.refundable) if payment else 0
        refusal = domain.reinstatement(ticket, request.attempt, refundable)
        common = request.model_dump(include={"refund_id", "request_id", "source", "order_id", "amount", "channel",
                                             "region", "drill"})
        if refusal is not None:
            answers.append(encode(ReinstatementRefused(**common, attempt=request.attempt, errors=[refusal],
                                                       reason_codes=[refusal.code], refused_at=now),
                                  source=SOURCE, key=refund_id))
            REINSTATEMENTS.labels(request.exit, refusal.code).inc()
            log.warning("reinstatement_refused", refund_id=refund_id, attempt=request.attempt, code=refusal.code)
            continue
        if ticket.released_as is not None:  # not reserved for this attempt yet (else: answered again)
            left[payment] -= ticket.amount
            reserve[refund_id] = request.attempt
        answers.append(encode(RefundReinstated(**common, attempt=request.attempt, reinstated_at=now),
                              source=SOURCE, key=refund_id))
        REINSTATEMENTS.labels(request.exit, "reinstated").inc()
        log.info("balance_reinstated", refund_id=refund_id, attempt=request.attempt, exit=request.exit,
                 requested_by=request.requested_by, again=refund_id not in reserve)
    await store.reinstate(conn, reserve)
    return answers
