"""Giving a refund's amount back to its payment's refundable balance when the refund ends without
money moving, or the money comes back (SPEC.md: exactly once).

Intake consumes `refunds.denied` (approval's denials; review and hold expiry end there too) and
`refunds.payout-failed` (payout: a failed payout, or a paid refund the gateway reversed). Which
statuses give the amount back is the lifecycle table's (`RELEASES_BALANCE`). The ticket is marked
released in the transaction that lowers the balance, so a redelivered event (the inbox skips it)
or a re-sent one (a new id, the same refund) gives nothing back a second time.
"""

import asyncpg
import structlog
from prometheus_client import Counter

from services.intake import store
from shared import topics
from shared.envelope import Outgoing
from shared.events import EVENT_TYPES
from shared.lifecycle import RELEASES_BALANCE, status_of
from shared.metrics import MESSAGES_DEAD_LETTERED
from shared.stage import Inbound, dead_letter

log = structlog.get_logger()

RELEASES = Counter(
    "refund_balance_releases_total",
    "Refunds whose amount went back to the payment's refundable balance, by the status that ended them",
    ["status"])

# Each consumed topic accepts events only from the stage that owns it (SPEC.md); a forged denial
# would otherwise free a payment's balance for another refund.
OWNER_OF_TOPIC = {topics.DENIED: "refund-pipeline/approval", topics.PAYOUT_FAILED: "refund-pipeline/payout"}
TOPICS = tuple(OWNER_OF_TOPIC)


async def release_ended_refund(conn: asyncpg.Connection, item: Inbound, *, source: str) -> list[Outgoing]:
    """The consume step for one record of `TOPICS`: release the refund's amount if its event ends it
    without money at the customer. Publishes nothing but a dead letter for an unusable record."""
    topic = item.record.topic
    if item.event is None:
        return [_dead_letter(item, "invalid_envelope", str(item.invalid), source)]
    owner, sender = OWNER_OF_TOPIC[topic], item.event.get_source()
    if sender != owner:
        return [_dead_letter(item, "untrusted_source", f"{topic} takes events only from {owner}, not {sender!r}",
                             source)]
    event_type, data = item.event.get_type(), item.event.get_data()
    status = status_of(event_type, data)
    if status not in RELEASES_BALANCE or EVENT_TYPES[event_type][1] != topic:
        return []
    refund_id = EVENT_TYPES[event_type][0].model_validate(data).refund_id
    # The ticket's own amount goes back: it is what the accept path reserved.
    amount = await store.release(conn, refund_id, status.value)
    if amount is None:  # not a refund intake accepted, or given back before
        log.info("nothing_to_release", refund_id=refund_id, status=status.value)
        return []
    RELEASES.labels(status.value).inc()
    log.info("balance_released", refund_id=refund_id, status=status.value, amount=amount)
    return []


def _dead_letter(item: Inbound, reason: str, error: str, source: str) -> Outgoing:
    log.warning("release_event_dead_lettered", reason=reason, topic=item.record.topic, offset=item.record.offset)
    # Counted before commit (the stage counts only its own letters after it): a retried batch counts twice.
    MESSAGES_DEAD_LETTERED.labels("intake", reason).inc()
    return dead_letter(item.record, f"{reason}: {error}", source=source)
