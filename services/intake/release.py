"""Giving a refund's amount back to its payment's refundable balance when the refund ends without
money moving, or the money comes back (SPEC.md: exactly once).

Intake consumes `refunds.denied` (approval's denials; review and hold expiry end there too) and
`refunds.payout-failed` (payout: a failed payout, or a paid refund the gateway reversed). Which
statuses give the amount back is the lifecycle table's (`RELEASES_BALANCE`). The ticket is marked
released in the transaction that lowers the balance, so a redelivered event (the inbox skips it)
or a re-sent one (a new id, the same refund) gives nothing back a second time. A batch's events are
released together: lock the payments, then mark the tickets and lower the balances. Only a failure of
the payout attempt the ticket's amount is reserved for releases it (services/intake/reinstate.py).
"""

import asyncpg
import structlog
from prometheus_client import Counter

from services.intake import store
from shared.contract import topics
from shared.contract.envelope import Outgoing
from shared.contract.events import EVENT_TYPES
from shared.contract.lifecycle import RELEASES_BALANCE, status_of
from shared.runtime.stage import Inbound

log = structlog.get_logger()

RELEASES = Counter(
    "refund_balance_releases_total",
    "Refunds whose amount went back to the payment's refundable balance, by the status that ended them",
    ["status"])

# A forged denial would free a payment's balance for another refund: the stage acts only on these
# topics' own sources (shared/contract/topics.py TRUSTED_SOURCES) and dead-letters the rest as untrusted_source.
TOPICS = (topics.DENIED, topics.PAYOUT_FAILED)


def _ending_of(item: Inbound) -> tuple[str, tuple[str, int]] | None:
    """(refund_id, (status, payout attempt)) when the record's event ends its refund with the amount to
    give back (a denial: before any payout, attempt 1)."""
    event_type, data = item.event.get_type(), item.event.get_data()
    status = status_of(event_type, data)
    if status not in RELEASES_BALANCE or EVENT_TYPES[event_type][1] != item.record.topic:
        return None
    event = EVENT_TYPES[event_type][0].model_validate(data)
    return event.refund_id, (status.value, getattr(event, "attempt", 1))


async def release_ended_refunds(conn: asyncpg.Connection, items: list[Inbound]) -> list[Outgoing]:
    """The consume step for a batch's records of `TOPICS`: release the amounts of the refunds their
    events end without money at the customer, in two statements. Publishes nothing."""
    endings: dict[str, tuple[str, int]] = {}
    for item in items:
        if (ending := _ending_of(item)) is not None:
            endings.setdefault(*ending)  # a refund ended twice in the batch: the first ending is the one
    # The ticket's own amount goes back: it is what the accept path reserved.
    released = await store.release(conn, endings)
    for refund_id, (status, attempt) in endings.items():
        if refund_id not in released:  # not a refund intake accepted, given back before, or an older attempt's
            log.info("nothing_to_release", refund_id=refund_id, status=status, attempt=attempt)
            continue
        RELEASES.labels(status).inc()
        log.info("balance_released", refund_id=refund_id, status=status, amount=released[refund_id])
    return []
