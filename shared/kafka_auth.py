"""Who may do what on Kafka, and how a client proves who it is (SPEC.md: every service and platform
is its own authenticated principal with ACLs).

`ACCESS` is the one table of principals and their rights; devstack's broker, the Strimzi
`KafkaUser`s (deploy/k8s/base/kafka-users) and the ACL tests all follow it. A stage may write only
the topics whose trusted source it is (`topics.TRUSTED_SOURCES`) plus the dead-letter topic, and read
only what it consumes. `KafkaAuth` turns settings (KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_*) into the
options of every client a service builds: FastStream's broker, the outbox producer, the lag gauge.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from shared import lifecycle, topics

SCRAM = "SCRAM-SHA-512"


@dataclass(frozen=True)
class KafkaAuth:
    """A client's security settings; the default is an unauthenticated PLAINTEXT connection."""

    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    username: str | None = None
    password: str | None = None

    @classmethod
    def scram(cls, username: str, password: str) -> KafkaAuth:
        return cls("SASL_PLAINTEXT", SCRAM, username, password)

    @classmethod
    def from_settings(cls, settings: object) -> KafkaAuth:
        """From a ServiceSettings (its kafka_security_protocol / kafka_sasl_* fields)."""
        return cls(settings.kafka_security_protocol, settings.kafka_sasl_mechanism,
                   settings.kafka_sasl_username, settings.kafka_sasl_password)

    @classmethod
    def from_env(cls, user_prefix: str = "KAFKA_SASL_", environ: Mapping[str, str] | None = None) -> KafkaAuth:
        """What `eval "$(python -m devstack env)"` exports: the platform's credentials under KAFKA_SASL_*,
        the operator's under KAFKA_OPS_* (user_prefix="KAFKA_OPS_"); nothing set means PLAINTEXT."""
        env = os.environ if environ is None else environ
        username = env.get(f"{user_prefix}USERNAME")
        if not username:
            return cls()
        return cls(env.get("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT"), env.get("KAFKA_SASL_MECHANISM", SCRAM),
                   username, env.get(f"{user_prefix}PASSWORD", ""))

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    def client_options(self) -> dict[str, object]:
        """Keyword arguments for any aiokafka client (producer, consumer, admin)."""
        options: dict[str, object] = {"security_protocol": self.security_protocol}
        if self.security_protocol.endswith("SSL"):
            from aiokafka.helpers import create_ssl_context

            options["ssl_context"] = create_ssl_context()  # the system's CAs
        if self.uses_sasl:
            options.update(sasl_mechanism=self.sasl_mechanism or SCRAM, sasl_plain_username=self.username or "",
                           sasl_plain_password=self.password or "")
        return options

    def faststream_security(self):
        """The `security=` of FastStream's KafkaBroker (None: PLAINTEXT)."""
        from faststream.security import SASLPlaintext, SASLScram256, SASLScram512

        if not self.uses_sasl:
            return None
        kind = {SCRAM: SASLScram512, "SCRAM-SHA-256": SASLScram256, "PLAIN": SASLPlaintext}[self.sasl_mechanism or SCRAM]
        return kind(self.username or "", self.password or "", use_ssl=self.security_protocol == "SASL_SSL")

    def env(self) -> dict[str, str]:
        """The service settings that carry this identity (KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_*)."""
        if not self.uses_sasl:
            return {"KAFKA_SECURITY_PROTOCOL": self.security_protocol}
        return {"KAFKA_SECURITY_PROTOCOL": self.security_protocol, "KAFKA_SASL_MECHANISM": self.sasl_mechanism or SCRAM,
                "KAFKA_SASL_USERNAME": self.username or "", "KAFKA_SASL_PASSWORD": self.password or ""}


@dataclass(frozen=True)
class Access:
    """One principal's rights. `groups` are consumer group ids (READ: join and commit; the lag gauge
    needs DESCRIBE); `group_prefix`: any group id starting with it may be used; `read_everything`:
    every topic read and described, every group described (offsets seen, never joined or committed)."""

    reads: frozenset[str] = frozenset()
    writes: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    group_prefix: str | None = None
    read_everything: bool = False


def _written_by(source: str) -> frozenset[str]:
    """A stage writes the topics it is the trusted source of, and dead letters."""
    return frozenset({topic for topic, sources in topics.TRUSTED_SOURCES.items() if source in sources} | {topics.DLQ})


# What each stage consumes (services/<stage>/main.py subscribes to these, in group refund-<stage>).
SERVICE_READS: dict[str, frozenset[str]] = {
    # intake: requests, and the outcomes that give a refund's amount back (services/intake/release.py)
    "intake": frozenset({topics.REQUESTED, topics.DENIED, topics.PAYOUT_FAILED}),
    "approval": frozenset({topics.ACCEPTED}),
    "payout": frozenset({topics.APPROVED}),
    "reconcile": frozenset({topics.PAID}),
    "notify": frozenset(lifecycle.TOPICS),
}
SERVICE_SOURCES = {"intake": topics.INTAKE_SOURCE, "approval": topics.APPROVAL_SOURCE,
                   "payout": topics.PAYOUT_SOURCE, "reconcile": topics.RECONCILE_SOURCE,
                   "notify": topics.NOTIFY_SOURCE}
# intake's drill scheduler publishes synthetic requests on refunds.requested.
EXTRA_WRITES = {"intake": frozenset({topics.REQUESTED})}

# The platforms of the local stack: the tests' `shop-test` and the demo's (one principal for all four).
PLATFORMS = ("platform-shop-test", "platform-demo")
OPERATOR = "operator"
ADMIN = "admin"  # devstack's own: creates topics and ACLs (a super user, never given to a service)


def platform_access(principal: str) -> Access:
    """SPEC.md: a platform writes only refunds.requested and reads only refunds.status."""
    return Access(reads=frozenset({topics.STATUS}), writes=frozenset({topics.REQUESTED}), group_prefix=principal)


ACCESS: dict[str, Access] = {
    **{name: Access(reads=SERVICE_READS[name],
                    writes=_written_by(SERVICE_SOURCES[name]) | EXTRA_WRITES.get(name, frozenset()),
                    groups=frozenset({f"refund-{name}"}))
       for name in SERVICE_READS},
    **{principal: platform_access(principal) for principal in PLATFORMS},
    # Reads and describes every topic and group (its own consumers may use groups `operator*`); writes nothing.
    OPERATOR: Access(read_everything=True, group_prefix=OPERATOR),
}


@dataclass(frozen=True, order=True)
class AclRule:
    """One ALLOW rule, in Strimzi's `KafkaUser` vocabulary (resource type, name, pattern, operation)."""

    resource_type: str  # topic | group | cluster
    name: str
    pattern: str  # literal | prefix
    operation: str  # Read | Write | Describe | DescribeConfigs


def acl_rules(access: Access) -> list[AclRule]:
    """The ALLOW rules that grant `access` (everything else is denied: allow.everyone.if.no.acl.found=false)."""
    rules = [AclRule("topic", t, "literal", op) for t in access.reads for op in ("Read", "Describe")]
    rules += [AclRule("topic", t, "literal", op) for t in access.writes for op in ("Write", "Describe")]
    rules += [AclRule("group", g, "literal", op) for g in access.groups for op in ("Read", "Describe")]
    if access.group_prefix:
        rules += [AclRule("group", access.group_prefix, "prefix", op) for op in ("Read", "Describe")]
    if access.read_everything:
        rules += [AclRule("topic", "*", "literal", op) for op in ("Read", "Describe", "DescribeConfigs")]
        rules += [AclRule("group", "*", "literal", "Describe"), AclRule("cluster", "kafka-cluster", "literal", "Describe")]
    return sorted(set(rules))
