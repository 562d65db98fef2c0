"""The lifecycle table is the one place stages, lifecycle events and statuses are described."""

import devstack.stack
from services.intake import sla
from shared.contract import lifecycle, topics
from shared.runtime import kafka_auth
from shared.contract.events import EVENT_TYPES, Status


def test_every_lifecycle_event_is_a_contract_event_emitted_by_a_stage_that_may_write_its_topic():
    for step in lifecycle.STEPS:
        assert step.event_type in EVENT_TYPES
        assert step.emitted_by in lifecycle.STAGES
        assert step.topic in kafka_auth.ACCESS[step.emitted_by].writes, step
        assert topics.TRUSTED_SOURCES[step.topic] == {f"refund-pipeline/{step.emitted_by}"}


def test_a_refund_only_moves_to_later_stages():
    order = {stage: i for i, stage in enumerate((*lifecycle.STAGES, lifecycle.DONE))}
    for step in lifecycle.STEPS:
        assert order[step.stage_after] >= order[step.emitted_by], step


def test_every_status_but_the_ones_no_event_names_comes_from_the_table():
    named = {step.status for step in lifecycle.STEPS}
    # reversed comes from payout-failed with a reversal reason (status_of); canceled is the platform's.
    assert set(lifecycle.LIFECYCLE) - named == {Status.REVERSED, Status.CANCELED}


def test_what_is_derived_from_the_table():
    assert sla.STAGES == lifecycle.STAGES
    assert devstack.stack.SERVICES == lifecycle.STAGES
    assert set(kafka_auth.ACCESS["notify"].reads) >= set(lifecycle.TOPICS)
    assert lifecycle.WAITING_STAGES == ("approval", "payout", "reconcile")
