"""Settings every service reads from its environment (only in its `main`)."""

from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """Common knobs; each service subclasses this with its own (e.g. its stage SLA)."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore")

    service_name: str = "refund-service"
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    database_url: str = "postgresql://postgres@127.0.0.1:5432/refunds"
    http_port: int = 8080
    log_level: str = "INFO"
    migrate_on_start: bool = True
    # Records per consumer poll; one poll is one database transaction.
    batch_max_records: int = 500
    # Producer batching: a few ms of latency per hop buys far fewer broker requests.
    kafka_linger_ms: int = 10
    db_pool_min: int = 1
    db_pool_max: int = 8
    # How often the stage sweep refreshes the inflight/overdue gauges.
    sweep_interval_seconds: float = 5.0
    # How often the consumer group's lag gauge is measured (0 = off).
    consumer_lag_interval_seconds: float = 15.0
    # A consumer whose assigned partitions have not been fetched for this long (or that the group
    # left without partitions) makes /readyz fail, and past the second bound /healthz, so Kubernetes
    # restarts a service that stopped consuming but still answers HTTP (shared/consumer_health.py).
    consumer_ready_within_seconds: float = 60.0
    consumer_live_within_seconds: float = 300.0
    # Seconds after shutdown starts before in-hand work is abandoned (uncommitted, redelivered).
    graceful_timeout_seconds: float = 15.0
    # Verifies staff bearer tokens (shared/staff.py). The default is for local runs only.
    staff_token_secret: str = "local-dev-staff-secret-change-me"
