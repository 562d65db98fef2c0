"""Settings every service reads from its environment (only in its `main`).

Configuration fails closed: with `ENVIRONMENT=production` (what the images and the Kubernetes
overlays set) a service refuses to start -- exit code 1, a message naming each setting -- while any
secret it needs is empty or still the public default, a required setting (e.g. notify's tracking
API keys) is missing, a gateway route points at the simulator, or a fault-injection setting is on.
"""

from typing import ClassVar, Literal

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.runtime.gateway_routes import simulator_routes


class ProductionRefused(SystemExit):
    """The settings are not safe for production; the process exits with the reasons."""


class RefusingSettings(BaseSettings):
    """Settings whose model-level checks (the `_fails_closed_in_production` validators) stop the
    process with one clear line instead of a validation traceback."""

    def __init__(self, **values) -> None:
        try:
            super().__init__(**values)
        except ValidationError as error:
            unsafe = [e["msg"].removeprefix("Value error, ") for e in error.errors() if e["loc"] == ()]
            if not unsafe:
                raise
            raise ProductionRefused(f"{type(self).__name__}: refusing to start in production: {unsafe[0]}") from None


class ServiceSettings(RefusingSettings):
    """Common knobs; each service subclasses this with its own (e.g. its stage SLA)."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore")

    # Settings that hold secrets: in production none may be empty or its (public) default.
    production_secrets: ClassVar[tuple[str, ...]] = ()
    # Settings that must be set in production (empty means something is open, e.g. an API without keys).
    # Staff tokens in production come only from the identity provider (shared/runtime/staff.py).
    production_required: ClassVar[tuple[str, ...]] = ("staff_jwks_url",)

    environment: Literal["local", "production"] = "local"
    service_name: str = "refund-service"
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    # The service's own Kafka principal (shared/runtime/kafka_auth.py): SASL_PLAINTEXT + SCRAM-SHA-512 locally,
    # from the Strimzi KafkaUser's secret on Kubernetes. PLAINTEXT = no authentication.
    kafka_security_protocol: Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: str = "SCRAM-SHA-512"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = None
    database_url: str = "postgresql://postgres@127.0.0.1:5432/refunds"
    http_port: int = 8080
    log_level: str = "INFO"
    migrate_on_start: bool = True
    # Records per consumer poll; one poll is one database transaction.
    batch_max_records: int = 500
    # Producer batching: a few ms of latency per hop buys far fewer broker requests.
    kafka_linger_ms: int = 10
    # Consumer fetches: the broker answers once it has `min_bytes` for us or `max_wait_ms` passed. Every
    # batch costs every stage a transaction, its statements, a produce and an offset commit whatever its
    # size, so while records flow waiting a little is cheaper than answering each one. make bench at
    # 100/s offered: 1 B / 100 ms -> 64 KiB / 25 ms halved the broker's CPU per refund (4.5 -> 2.4 ms);
    # 25 -> 50 ms (2026-12-03, with the idle pacing below): the machine's CPU per refund 20.3 -> 16.5 ms,
    # p99 to succeeded 1,448 -> 482 ms, and 150/s kept up (p99 1,258 ms) where 25 ms fell behind.
    kafka_fetch_min_bytes: int = 65536
    kafka_fetch_max_wait_ms: int = 50
    # ... while records flow. Once 100 ms passed with none, a fetch waits for the first byte, or this long
    # (0: always as above): an idle consumer fetches twice a second, and a lull's first record goes at once.
    kafka_fetch_idle_wait_ms: int = 500
    # How long the inbox remembers an event id: longer than the topics keep records (7 days), so a
    # redelivery is always recognised, without the table growing forever.
    inbox_retention_days: float = 8.0
    db_pool_min: int = 1
    db_pool_max: int = 8
    # How often the stage sweep refreshes the inflight/overdue gauges.
    sweep_interval_seconds: float = 5.0
    # How often the consumer group's lag gauge is measured (0 = off).
    consumer_lag_interval_seconds: float = 15.0
    # A consumer whose assigned partitions have not been fetched for this long (or that the group
    # left without partitions) makes /readyz fail, and past the second bound /healthz, so Kubernetes
    # restarts a service that stopped consuming but still answers HTTP (shared/runtime/consumer_health.py).
    consumer_ready_within_seconds: float = 60.0
    consumer_live_within_seconds: float = 300.0
    # Public HTTP: the largest request body accepted (413 above it), and where rate-limit windows are
    # counted (memory:// per replica; redis://… to share them between replicas).
    max_request_body_bytes: int = 1024 * 1024
    rate_limit_storage_uri: str = "memory://"
    # The dead-letter breaker (shared/runtime/dead_letters.py): a stage that dead-letters more than this many
    # records in a rolling minute stops consuming until staff close it -- a bad deploy must not divert every
    # refund to the dead letters. 0 = off.
    dead_letter_limit_per_minute: int = Field(100, ge=0)
    # Seconds after shutdown starts before in-hand work is abandoned (uncommitted, redelivered).
    graceful_timeout_seconds: float = 15.0
    # Staff bearer tokens (shared/runtime/staff.py): the identity provider's JWKS, issuer and audience, and
    # the claim listing roles. STAFF_TOKEN_SECRET signs local HS256 tokens, accepted only locally.
    staff_jwks_url: str | None = None
    staff_token_issuer: str = "refund-pipeline"
    staff_token_audience: str = "refund-pipeline"
    staff_roles_claim: str = "roles"
    staff_token_secret: str = "local-dev-staff-secret-change-me"
    # Traces (shared/runtime/tracing.py), off while empty: the OTLP/HTTP collector's base URL (spans go to
    # <endpoint>/v1/traces), and the milliseconds a span waits in the batch before export.
    otel_exporter_otlp_endpoint: str = ""
    otel_bsp_schedule_delay: int = 5000

    @model_validator(mode="after")
    def _fails_closed_in_production(self) -> "ServiceSettings":
        if self.environment != "production":
            return self
        problems = []
        for name in self.production_secrets:
            value, default = getattr(self, name), type(self).model_fields[name].default
            if not value:
                problems.append(f"{name.upper()} is empty")
            elif value == default:
                problems.append(f"{name.upper()} is the public default")
        problems += [f"{name.upper()} is not set" for name in self.production_required if not getattr(self, name)]
        problems += [f"{name.upper()} is fault injection, never on in production"
                     for name in type(self).model_fields if "fault" in name and getattr(self, name)]
        problems += [f"GATEWAY_ROUTES routes {gateway!r} to the gateway simulator"
                     for gateway in simulator_routes(getattr(self, "gateway_routes", None) or {})]
        if problems:
            raise ValueError("; ".join(problems))
        return self


class DatabaseSettings(BaseSettings):
    """What one-off jobs (the migration job) need: the database, nothing secret beyond its URL."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore")

    database_url: str = ServiceSettings.model_fields["database_url"].default
