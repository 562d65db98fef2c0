"""Kubernetes: every service connects to Kafka as its own Strimzi KafkaUser, whose ACLs are the ones
devstack's broker enforces (shared/runtime/kafka_auth.py ACCESS)."""

import pytest

from devstack import SERVICES
from shared.runtime.kafka_auth import ACCESS, OPERATOR, AclRule, acl_rules
from tests.deploy.test_agreement import container, objects

PRINCIPALS = (*SERVICES, OPERATOR)


def rules_of(user: dict) -> list[AclRule]:
    assert user["spec"]["authentication"] == {"type": "scram-sha-512"}
    assert user["spec"]["authorization"]["type"] == "simple"
    return sorted(AclRule(acl["resource"]["type"], acl["resource"].get("name", "kafka-cluster"),
                          acl["resource"].get("patternType", "literal"), operation)
                  for acl in user["spec"]["authorization"]["acls"] for operation in acl["operations"])


@pytest.mark.parametrize("overlay", ["local", "prod"])
@pytest.mark.parametrize("principal", PRINCIPALS)
def test_each_principal_is_a_kafka_user_with_the_acls_devstack_enforces(rendered, overlay, principal):
    users = objects(rendered[overlay], "KafkaUser")
    assert rules_of(users[f"refund-{principal}"]) == acl_rules(ACCESS[principal])


@pytest.mark.parametrize("overlay", ["local", "prod"])
@pytest.mark.parametrize("service", SERVICES)
def test_each_service_authenticates_as_its_own_user_with_the_password_strimzi_creates(rendered, overlay, service):
    docs = rendered[overlay]
    deployment = objects(docs, "Deployment")[f"refund-{service}"]
    configmaps = objects(docs, "ConfigMap")
    spec = container(deployment)
    literals = {}
    for source in spec.get("envFrom", []):
        literals.update(configmaps[source["configMapRef"]["name"]]["data"])
    assert literals["KAFKA_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT"
    assert literals["KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert literals["KAFKA_SASL_USERNAME"] == f"refund-{service}"
    (password,) = [var for var in spec["env"] if var["name"] == "KAFKA_SASL_PASSWORD"]
    assert password["valueFrom"]["secretKeyRef"] == {"name": f"refund-{service}", "key": "password"}
    # The User Operator writes that Secret beside the KafkaUser: in the pods' namespace.
    user = objects(docs, "KafkaUser")[f"refund-{service}"]
    assert user["metadata"].get("namespace") == deployment["metadata"].get("namespace")
