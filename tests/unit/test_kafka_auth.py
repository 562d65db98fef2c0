"""The ACL table: platforms write only requests and read only statuses; the operator writes nothing;
a stage writes only what it is the trusted source of (and dead letters)."""

from shared.contract import topics
from shared.runtime.kafka_auth import ACCESS, OPERATOR, PLATFORMS, KafkaAuth, acl_rules


def test_a_platform_writes_only_requests_and_reads_only_statuses():
    for platform in PLATFORMS:
        rules = acl_rules(ACCESS[platform])
        assert {r.name for r in rules if r.resource_type == "topic" and r.operation == "Write"} == {topics.REQUESTED}
        assert {r.name for r in rules if r.resource_type == "topic" and r.operation == "Read"} == {topics.STATUS}


def test_the_operator_writes_nothing():
    assert not [r for r in acl_rules(ACCESS[OPERATOR]) if r.operation == "Write"]


def test_a_stage_writes_only_its_own_topics_and_dead_letters():
    for topic, sources in topics.TRUSTED_SOURCES.items():
        writers = {name for name, access in ACCESS.items() if topic in access.writes}
        assert len(writers) == 1 and len(sources) == 1, (topic, writers)
    assert {name for name, a in ACCESS.items() if topics.REQUESTED in a.writes} == {"intake", *PLATFORMS}


def test_settings_without_credentials_mean_plaintext_and_with_them_scram():
    assert KafkaAuth.from_env(environ={}).client_options() == {"security_protocol": "PLAINTEXT"}
    auth = KafkaAuth.from_env(environ={"KAFKA_SASL_USERNAME": "intake", "KAFKA_SASL_PASSWORD": "pw"})
    assert auth.client_options() == {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-512",
                                     "sasl_plain_username": "intake", "sasl_plain_password": "pw"}
