"""Notify process: `uvicorn services.notify.main:app`."""

import time
from pathlib import Path

import httpx
from pydantic import model_validator

from services.notify import watch
from services.notify.delivery import EmailChannel, Sender, SmsChannel, WebhookChannel
from services.notify.handlers import SOURCE, Audience, CausalStage, Projection, lifecycle_handlers, republish
from services.notify.signing import sign_link
from services.notify.tickets import staff_tickets
from services.notify.web import customer_pages, tracking_access, tracking_api
from shared.contract import contact_seal, lifecycle
from shared.runtime.http_limits import RateLimit
from shared.runtime.metrics import backlog_query, read_backlog, sweep_forever
from shared.runtime.periodic import every
from shared.runtime.service import make_app, make_broker, subscribe_stage
from shared.runtime.settings import ServiceSettings
from shared.runtime.staff import StaffAuth, StaffVerifier


class NotifySettings(ServiceSettings):
    production_secrets = (*ServiceSettings.production_secrets, "customer_link_secret", "webhook_secret",
                          "contact_private_key", "destination_public_key")
    # An open tracking API would show every platform's refunds to anyone.
    production_required = (*ServiceSettings.production_required, "tracking_api_keys")

    service_name: str = "notify"
    # Where customers' links point; defaults to this process on localhost.
    public_base_url: str | None = None
    # Tracking API keys: {"<api key>": "<platform source>"}. Empty: the API is open (local runs only).
    tracking_api_keys: dict[str, str] = {}
    # 429 with Retry-After above: the tracking API per key (or per client while it is open), the
    # customer page per client address.
    tracking_rate_limit: str = "20/second"
    customer_page_rate_limit: str = "120/minute"
    customer_link_secret: str = "local-dev-customer-link-secret-change-me"
    # The X25519 private key (PEM or base64 of the raw 32 bytes) that opens the customer contact intake
    # seals with CONTACT_PUBLIC_KEY (shared/contract/contact_seal.py); the default is the public local-only pair.
    contact_private_key: str = contact_seal.LOCAL_PRIVATE_KEY
    customer_link_max_age_seconds: int = 30 * 24 * 3600
    # Where the completion message asks for a rating; by default the customer's own page (its 1-5 form).
    feedback_url: str | None = None
    # The X25519 public key a customer's new bank account is sealed with for payout (payout holds the
    # private half, DESTINATION_PRIVATE_KEY); the default is the public local-only pair.
    destination_public_key: str = contact_seal.LOCAL_DESTINATION_PUBLIC_KEY
    # Email is off until an SMTP server is configured.
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_start_tls: bool = False
    smtp_from: str = "Refunds <refunds@example.com>"
    message_id_domain: str = "refunds.example.com"
    # SMS is off until a provider is configured.
    sms_provider_url: str | None = None
    sms_provider_token: str = ""
    # Platform (CloudEvents `source`) -> webhook URL, e.g. {"shop-eu": "https://shop.example/hooks/refunds"}.
    webhook_urls: dict[str, str] = {}
    webhook_secret: str = "local-dev-webhook-secret-change-me"
    # Per-platform secrets (source -> secret), so one platform cannot forge another's webhooks.
    webhook_secrets: dict[str, str] = {}
    notify_max_attempts: int = 8
    notify_backoff_base_seconds: float = 2.0
    notify_backoff_cap_seconds: float = 600.0
    # A send not confirmed within this lease is presumed lost with its sender and tried again;
    # it must outlast the send timeout, or a slow send that succeeds would be sent twice.
    notify_send_lease_seconds: float = 60.0
    notify_send_timeout_seconds: float = 30.0
    notify_poll_interval_seconds: float = 0.5
    # A notification not out within this long after its milestone is an SLA breach.
    notify_sla_seconds: float = 300.0


    @model_validator(mode="after")
    def _lease_outlasts_a_send(self) -> "NotifySettings":
        if self.notify_send_lease_seconds <= self.notify_send_timeout_seconds:
            raise ValueError("NOTIFY_SEND_LEASE_SECONDS must be longer than NOTIFY_SEND_TIMEOUT_SECONDS")
        return self


settings = NotifySettings()
base_url = (settings.public_base_url or f"http://127.0.0.1:{settings.http_port}").rstrip("/")
broker = make_broker(settings)
try:
    contact_key = contact_seal.private_key(settings.contact_private_key)
except ValueError as error:
    raise SystemExit(f"notify cannot start: CONTACT_PRIVATE_KEY is not an X25519 private key: {error}") from None
try:
    destination_key = contact_seal.public_key(settings.destination_public_key)
except ValueError as error:
    raise SystemExit(f"notify cannot start: DESTINATION_PUBLIC_KEY is not an X25519 public key: {error}") from None
projection = Projection(Audience(email=bool(settings.smtp_host), sms=bool(settings.sms_provider_url),
                                  webhook_urls=settings.webhook_urls), contact_key)

stage = CausalStage(schema="notify", source=SOURCE, handlers=lifecycle_handlers(projection), redelivered=republish)
consumer = subscribe_stage(stage, *lifecycle.TOPICS, group_id="refund-notify",
                           max_records=settings.batch_max_records)


def customer_link(refund_id: str) -> str:
    expires = int(time.time()) + settings.customer_link_max_age_seconds
    return f"{base_url}/r/{sign_link(settings.customer_link_secret, refund_id, expires)}"


async def send_notifications() -> None:
    async with httpx.AsyncClient(timeout=settings.notify_send_timeout_seconds) as http:
        channels = {
            "email": EmailChannel(settings.smtp_host or "", settings.smtp_port, settings.smtp_from,
                                  settings.message_id_domain, settings.smtp_username, settings.smtp_password,
                                  settings.smtp_start_tls, settings.notify_send_timeout_seconds),
            "sms": SmsChannel(http, settings.sms_provider_url or "", settings.sms_provider_token),
            "webhook": WebhookChannel(http, settings.webhook_secret, settings.webhook_secrets),
        }
        sender = Sender(stage.pool, channels, customer_link, settings.feedback_url,
                        max_attempts=settings.notify_max_attempts,
                        backoff_base_seconds=settings.notify_backoff_base_seconds,
                        backoff_cap_seconds=settings.notify_backoff_cap_seconds,
                        lease_seconds=settings.notify_send_lease_seconds,
                        poll_interval_seconds=settings.notify_poll_interval_seconds,
                        sla_seconds=settings.notify_sla_seconds)
        await sender.run_forever()


BACKLOG = backlog_query("notify.notifications", since="created_at", open_rows="state IN ('pending', 'sending')")


async def sweep_stage_watch() -> None:
    await every(settings.sweep_interval_seconds, lambda: watch.sweep(stage.pool), name="stage_watch_sweep")


async def sweep_backlog() -> None:
    await sweep_forever("notify", lambda: read_backlog(stage.pool, BACKLOG, settings.notify_sla_seconds),
                        settings.sweep_interval_seconds)


app = make_app(settings, broker=broker, stage=stage, consumers=[consumer],
               migrations=Path(__file__).parent / "migrations",
               background=[send_notifications, sweep_backlog, sweep_stage_watch], title="Refund notify")
app.include_router(tracking_api(lambda: app.state.pool, tracking_access(
    settings.tracking_api_keys, StaffVerifier.from_settings(settings),
    RateLimit("tracking_per_key", settings.tracking_rate_limit, settings.rate_limit_storage_uri))))
app.include_router(customer_pages(lambda: app.state.pool, link_secret=settings.customer_link_secret,
                                 rate_limit=RateLimit("customer_page_per_client", settings.customer_page_rate_limit,
                                                      settings.rate_limit_storage_uri),
                                  unit_of_work=stage.unit_of_work, destination_key=destination_key))
app.include_router(staff_tickets(lambda: app.state.pool, StaffAuth(StaffVerifier.from_settings(settings))))
