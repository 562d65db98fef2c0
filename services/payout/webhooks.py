"""Gateway webhooks: each verified outcome recorded once under the gateway's event id, applied exactly once.

Recording the event and applying it happen in one transaction with the payout's
new state and the events announcing it (the stage's outbox), so a replayed event
id finds its row already there and changes nothing.

The race with a claim: a webhook may come while its payout is `submitting`, a
claim's gateway call under way (the outcome of a `pending` refund can come back
before the create call's answer is even written). The claim holds the row, and
only the holder writes it; so the event is recorded and left waiting, and the
claim applies it in the transaction that writes the claim's own answer, on top of
that answer (`apply_waiting`, called by the executor after `write_outcomes`). If the
claim loses its row (its lease ran out) it writes nothing, and the next claim's
write applies the event instead. Both sides lock the payout row before they look
at it, so whichever commits second sees the other's work: the claim's write sees
an event committed before it, and a webhook waiting on the claim's lock sees the
row the claim left, no longer `submitting`, and applies its event itself.
"""

from collections.abc import Sequence

import asyncpg
import structlog
from prometheus_client import Counter

from services.payout import store
from services.payout.gateway import GatewayEvent
from services.payout.outcomes import Outcome, OutcomeRules, observe
from shared.runtime.stage import Stage

log = structlog.get_logger()
WEBHOOKS = Counter("refund_payout_webhooks_total", "Gateway webhook requests, by what came of them",
                   ["gateway", "result"])
EVENTS = Counter("refund_payout_gateway_events_total", "Gateway-reported outcomes applied, by their effect",
                 ["gateway", "effect"])


def _effect(before: str, outcome: Outcome | None) -> str:
    if outcome is None:
        return "unchanged"
    after = outcome.write.status
    if after == "pending":
        return "rerouted"
    return {"succeeded": "paid"}.get(after, after) if before != after else "unchanged"


async def apply_waiting(conn: asyncpg.Connection, rules: OutcomeRules,
                        refund_ids: Sequence[str]) -> list[tuple[asyncpg.Record, Outcome]]:
    """Apply, in `conn`'s transaction, the waiting events of these payouts that no claim holds.

    Each payout's events apply in the order they came, each to the state the one
    before left; returns every payout changed with its outcome (state and events).
    """
    rows, events = await store.unclaimed_with_waiting_events(conn, refund_ids)
    by_refund: dict[str, list[asyncpg.Record]] = {}
    for event in events:
        by_refund.setdefault(event["refund_id"], []).append(event)
    changed, applied = [], []
    for row in rows:
        held, outcome = store.PayoutWrite.unchanged(row), None
        for event in by_refund.get(row["refund_id"], []):
            step = rules.after_event(row, held, _event(event))
            effect = "superseded" if event["refund_key"] != held.idempotency_key else _effect(held.status, step)
            applied.append((event["gateway"], event["event_id"], effect))
            EVENTS.labels(event["gateway"], effect).inc()
            log.info("gateway_event_applied", refund_id=row["refund_id"], event_id=event["event_id"],
                     effect=effect)
            if step is not None:
                outcome = step if outcome is None else Outcome(
                    step.write, outcome.events + step.events, outcome.completed or step.completed, step.drill)
                held = step.write
        if outcome is not None:
            changed.append((row, outcome))
    await store.write_unclaimed(conn, [outcome.write for _, outcome in changed])
    await store.mark_applied(conn, applied)
    return changed


def _event(row: asyncpg.Record) -> GatewayEvent:
    return GatewayEvent(row["event_id"], row["refund_key"], row["gateway_ref"], row["status"], row["failure_reason"])


class GatewayEventReceiver:
    """Records a webhook's verified events and applies those whose payout no claim holds."""

    def __init__(self, stage: Stage, rules: OutcomeRules, *, sla_seconds: float) -> None:
        self.stage = stage
        self.rules = rules
        self.sla_seconds = sla_seconds

    async def receive(self, gateway: str, events: list[GatewayEvent]) -> int:
        """Record and apply; returns how many of the events were new (the rest are replays)."""
        async with self.stage.unit_of_work() as uow:
            fresh = await store.record_events(uow.conn, gateway, events)
            orphans = [(gateway, event["event_id"], "no_payout") for event in fresh if event["refund_id"] is None]
            await store.mark_applied(uow.conn, orphans)
            changed = await apply_waiting(uow.conn, self.rules,
                                          sorted({e["refund_id"] for e in fresh if e["refund_id"]}))
            uow.emit(*(event for _, outcome in changed for event in outcome.events))
        for _, event_id, _ in orphans:
            log.warning("gateway_event_for_no_payout", gateway=gateway, event_id=event_id)
            EVENTS.labels(gateway, "no_payout").inc()
        for row, outcome in changed:
            observe(row, outcome, self.sla_seconds)
        if changed:
            # A re-routed payout is due now: an executor that claims after every commit (no hand-off) goes
            # at once; with the hand-off, its once-a-second claim takes it.
            self.stage.committed.set()
        return len(fresh)
