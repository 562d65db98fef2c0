"""The broker enforces who may do what (SPEC.md: every service and platform is its own authenticated
principal with ACLs; platforms write only refunds.requested and read only refunds.status)."""

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError, TopicAuthorizationFailedError

from shared.contract import topics
from shared.runtime.kafka_auth import KafkaAuth
from tests.integration.conftest import PLATFORM
from tests.integration.helpers import TopicTail, publish, refund_of, valid_request

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _authenticated(stack):
    if not stack.kafka_credentials():
        pytest.skip("an external broker: devstack does not manage its principals")


async def _send(stack, auth: KafkaAuth, topic: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, request_timeout_ms=10000, **auth.client_options())
    await producer.start()
    try:
        await asyncio.wait_for(producer.send_and_wait(topic, b"{}", key=b"acl-test"), 20)
    finally:
        await producer.stop()


async def _visible_topics(stack, auth: KafkaAuth) -> set[str]:
    """The topics the cluster's metadata shows this principal: only those it may at least describe."""
    consumer = AIOKafkaConsumer(bootstrap_servers=stack.bootstrap, group_id=None, enable_auto_commit=False,
                                **auth.client_options())
    await consumer.start()
    try:
        return await consumer.topics()
    finally:
        await consumer.stop()


async def test_a_platform_cannot_publish_a_stage_event(stack):
    with pytest.raises(TopicAuthorizationFailedError):
        await _send(stack, stack.kafka_auth(PLATFORM), topics.APPROVED)


async def test_a_platform_sees_only_its_two_topics(stack):
    assert await _visible_topics(stack, stack.kafka_auth(PLATFORM)) == {topics.REQUESTED, topics.STATUS}


async def test_a_platform_publishes_requests_and_follows_their_status(stack, status_feed):
    assert status_feed._consumer is not None  # the fixture's follower authenticates as the platform
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, acks="all", **stack.kafka_auth(PLATFORM).client_options())
    await producer.start()
    try:
        request = valid_request()
        await publish(producer, request)
    finally:
        await producer.stop()
    refund_id = refund_of(request)
    assert await status_feed.wait_for(lambda: status_feed.status_of(refund_id) is not None, timeout=60)


@pytest.mark.parametrize(("service", "topic"), [("intake", topics.APPROVED), ("approval", topics.PAID),
                                                ("payout", topics.STATUS), ("notify", topics.ACCEPTED),
                                                ("reconcile", topics.REQUESTED)])
async def test_a_service_cannot_write_another_stage_topic(stack, service, topic):
    with pytest.raises(TopicAuthorizationFailedError):
        await _send(stack, stack.kafka_auth(service), topic)


async def test_a_service_writes_its_own_topics(stack):
    await _send(stack, stack.kafka_auth("approval"), topics.DLQ)  # every stage may dead-letter


async def test_the_operator_reads_every_topic_and_writes_none(stack, producer):
    operator = stack.kafka_auth("operator")
    async with TopicTail(stack.bootstrap, topics.ACCEPTED, topics.REJECTED, auth=operator) as outcomes:
        request = valid_request()
        await publish(producer, request)
        refund_id = refund_of(request)
        await outcomes.wait_for(lambda event: event["data"].get("refund_id") == refund_id)
    assert await _visible_topics(stack, operator) >= {spec.name for spec in topics.TOPICS}
    for topic in (topics.REQUESTED, topics.APPROVED, topics.DLQ):
        with pytest.raises(TopicAuthorizationFailedError):
            await _send(stack, operator, topic)


async def test_a_wrong_password_is_refused(stack):
    with pytest.raises(KafkaError):
        await _send(stack, KafkaAuth.scram(PLATFORM, "not-the-password"), topics.REQUESTED)
