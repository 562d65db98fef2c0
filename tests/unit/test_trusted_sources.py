"""Every stage's source is the one the contract trusts on the topics it produces."""

from services.approval.handlers import SOURCE as APPROVAL
from services.intake.handlers import SOURCE as INTAKE
from services.notify.handlers import SOURCE as NOTIFY
from services.payout.handlers import SOURCE as PAYOUT
from services.reconcile.handlers import SOURCE as RECONCILE
from shared.contract import topics


def test_each_topic_trusts_exactly_the_stage_that_produces_it():
    produced_by = {
        INTAKE: {topics.ACCEPTED, topics.REJECTED, topics.REINSTATED},
        APPROVAL: {topics.APPROVED, topics.DENIED, topics.HELD},
        PAYOUT: {topics.PAYOUT_SUBMITTED, topics.PAID, topics.PAYOUT_FAILED, topics.PAYOUT_EXITS},
        RECONCILE: {topics.RECONCILED, topics.DISCREPANCY},
        NOTIFY: {topics.STATUS, topics.DESTINATIONS},
    }
    trusted = {topic: source for source, produced in produced_by.items() for topic in produced}
    assert {topic: {source} for topic, source in trusted.items()} == topics.TRUSTED_SOURCES
    assert topics.REQUESTED not in topics.TRUSTED_SOURCES  # the platforms', authenticated by broker ACLs
