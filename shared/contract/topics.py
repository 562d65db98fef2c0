"""Kafka topics of the public contract (SPEC.md), with how they are created."""

from dataclasses import dataclass, field

REQUESTED = "refunds.requested"
ACCEPTED = "refunds.accepted"
REJECTED = "refunds.rejected"
DLQ = "refunds.dlq"
APPROVED = "refunds.approved"
DENIED = "refunds.denied"
HELD = "refunds.held"
PAYOUT_SUBMITTED = "refunds.payout-submitted"
PAID = "refunds.paid"
PAYOUT_FAILED = "refunds.payout-failed"
PAYOUT_EXITS = "refunds.payout-exits"
REINSTATED = "refunds.reinstated"
DESTINATIONS = "refunds.destinations"
RECONCILED = "refunds.reconciled"
DISCREPANCY = "refunds.discrepancy"
STATUS = "refunds.status"

DEFAULT_PARTITIONS = 6

# The CloudEvents `source` of each stage: the only producer a consumer accepts on the stage's topics.
INTAKE_SOURCE = "refund-pipeline/intake"
APPROVAL_SOURCE = "refund-pipeline/approval"
PAYOUT_SOURCE = "refund-pipeline/payout"
RECONCILE_SOURCE = "refund-pipeline/reconcile"
NOTIFY_SOURCE = "refund-pipeline/notify"


@dataclass(frozen=True)
class TopicSpec:
    """How a contract topic is created: partitions and topic-level config."""

    name: str
    partitions: int = DEFAULT_PARTITIONS
    config: dict[str, str] = field(default_factory=dict)


TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(REQUESTED),
    TopicSpec(ACCEPTED),
    TopicSpec(REJECTED),
    TopicSpec(DLQ, partitions=1, config={"retention.ms": str(30 * 24 * 3600 * 1000)}),
    TopicSpec(APPROVED),
    TopicSpec(DENIED),
    TopicSpec(HELD),
    TopicSpec(PAYOUT_SUBMITTED),
    TopicSpec(PAID),
    TopicSpec(PAYOUT_FAILED),
    TopicSpec(PAYOUT_EXITS),
    TopicSpec(REINSTATED),
    TopicSpec(DESTINATIONS),
    TopicSpec(RECONCILED),
    TopicSpec(DISCREPANCY),
    TopicSpec(
        STATUS,
        config={"cleanup.policy": "compact", "min.compaction.lag.ms": "60000"},
    ),
)

# Latest-state topics: the last record per key is what a late reader gets, so the outbox never
# relays an older record for a key after a newer one (shared/runtime/stage.py).
COMPACTED = frozenset(spec.name for spec in TOPICS if spec.config.get("cleanup.policy") == "compact")

# Who may publish on each topic (SPEC.md "Each consumed topic accepts events only from the source that
# owns it"); an event from another source is dead-lettered as `untrusted_source`, never acted on.
# `refunds.requested` is the platforms' (each its own source, authenticated by the broker's ACLs).
TRUSTED_SOURCES: dict[str, frozenset[str]] = {
    ACCEPTED: frozenset({INTAKE_SOURCE}),
    REJECTED: frozenset({INTAKE_SOURCE}),
    APPROVED: frozenset({APPROVAL_SOURCE}),
    DENIED: frozenset({APPROVAL_SOURCE}),
    HELD: frozenset({APPROVAL_SOURCE}),
    PAYOUT_SUBMITTED: frozenset({PAYOUT_SOURCE}),
    PAID: frozenset({PAYOUT_SOURCE}),
    PAYOUT_FAILED: frozenset({PAYOUT_SOURCE}),
    PAYOUT_EXITS: frozenset({PAYOUT_SOURCE}),
    REINSTATED: frozenset({INTAKE_SOURCE}),
    # A customer's new payout destination, taken on notify's signed customer page.
    DESTINATIONS: frozenset({NOTIFY_SOURCE}),
    RECONCILED: frozenset({RECONCILE_SOURCE}),
    DISCREPANCY: frozenset({RECONCILE_SOURCE}),
    STATUS: frozenset({NOTIFY_SOURCE}),
}

# The Kafka key of each topic's records: the first of these `data` fields that is set (SPEC.md: the
# refund_id, so one refund's events stay ordered on one partition; on refunds.requested the request_id).
RECORD_KEY_FIELDS: dict[str, tuple[str, ...]] = {
    **{spec.name: ("refund_id",) for spec in TOPICS if spec.name != DLQ},
    REQUESTED: ("request_id",),
    # A request too broken to derive a refund id from is rejected under its request_id.
    REJECTED: ("refund_id", "request_id"),
}
# A dead letter is keyed by where the record it carries was (shared/runtime/stage.py `dead_letter`).
DLQ_KEY = "{topic}/{partition}/{offset}"
