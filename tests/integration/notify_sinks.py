"""Real servers on the far side of notify's channels: an SMTP server (aiosmtpd) and
one HTTP server standing in for the SMS provider and a platform's webhook endpoint."""

import asyncio
import base64
import email
import email.policy
import threading
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
from aiosmtpd.controller import Controller
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from devstack.processes import free_port

WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"test-webhook-secret").decode()  # as a platform is given it


@dataclass
class Hold:
    """Makes the server stall on one recipient's first delivery, so a test can kill the sender mid-send."""

    recipient: str | None = None
    reached: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    held: str | None = None  # which message it stalled on

    def applies(self, recipient: str, message_key: str) -> bool:
        if recipient != self.recipient or self.reached.is_set():
            return False
        self.held = message_key
        self.reached.set()
        return True


class MailSink:
    """aiosmtpd handler keeping every accepted message."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.hold = Hold()

    async def handle_DATA(self, server, session, envelope) -> str:
        message = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        if any(self.hold.applies(r, str(message["Message-ID"]).strip()) for r in envelope.rcpt_tos):
            await asyncio.get_running_loop().run_in_executor(None, self.hold.release.wait, 120)
            return "451 4.3.0 not accepted, try again"
        self.messages.append(message)
        return "250 2.0.0 accepted"

    def to(self, address: str) -> list[EmailMessage]:
        return [m for m in self.messages if m["To"] == address]


@dataclass
class HttpSink:
    """What the SMS provider and the webhook endpoint received."""

    sms_attempts: list[dict] = field(default_factory=list)
    # The provider delivers each Idempotency-Key once, as real SMS APIs with idempotency keys do.
    sms_delivered: dict[str, dict] = field(default_factory=dict)
    webhooks: list[dict] = field(default_factory=list)
    # refund_id -> how many of its next webhooks to answer 503 (an endpoint having a bad minute).
    webhook_outage: dict[str, int] = field(default_factory=dict)
    # refund_ids whose platform answers 410 Gone (a refusal no retry can fix).
    webhook_gone: set[str] = field(default_factory=set)
    hold: Hold = field(default_factory=Hold)

    def texts_to(self, phone: str) -> list[dict]:
        return [m for m in self.sms_delivered.values() if m["to"] == phone]


def _handler(sink: HttpSink):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def _reply(self, code: int, body: dict) -> None:
            try:
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(orjson.dumps(body))
            except OSError:
                pass  # the client is gone (killed mid-request)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.path == "/sms":
                self._sms(body)
            elif self.path.startswith("/hooks/"):
                self._webhook(body)
            else:
                self._reply(404, {"error": "no such endpoint"})

        def _sms(self, body: bytes) -> None:
            if self.headers.get("Authorization") != "Bearer test-sms-token":
                return self._reply(401, {"error": "bad token"})
            message, key = orjson.loads(body), self.headers.get("Idempotency-Key")
            sink.sms_attempts.append({**message, "key": key})
            sink.sms_delivered.setdefault(key, message)
            if sink.hold.applies(message["to"], key):
                sink.hold.release.wait(120)
            self._reply(200, {"id": key, "status": "queued"})

        def _webhook(self, body: bytes) -> None:
            # A platform's verification as the README shows it: the standardwebhooks library, not notify's code
            # (it also refuses a timestamp more than 5 minutes off).
            try:
                Webhook(WEBHOOK_SECRET).verify(body, {k.lower(): v for k, v in self.headers.items()})
                valid = True
            except WebhookVerificationError:
                valid = False
            event = orjson.loads(body)
            failing = sink.webhook_outage.get(event["refund_id"], 0) > 0
            if failing:
                sink.webhook_outage[event["refund_id"]] -= 1
            gone = event["refund_id"] in sink.webhook_gone
            sink.webhooks.append({"id": self.headers.get("webhook-id"), "valid": valid, "body": event,
                                  "accepted": valid and not failing and not gone, "at": time.monotonic()})
            self._reply(410 if gone else 503 if failing else 204 if valid else 401, {})

    return Handler


class Sinks:
    def __init__(self) -> None:
        self.mail = MailSink()
        self.http = HttpSink()
        self.smtp_port, self.http_port = free_port(), free_port()
        self._smtp = Controller(self.mail, hostname="127.0.0.1", port=self.smtp_port)
        self._server = ThreadingHTTPServer(("127.0.0.1", self.http_port), _handler(self.http))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def env(self, source: str) -> dict[str, str]:
        """Notify's settings pointing at these servers."""
        return {
            "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(self.smtp_port),
            "SMS_PROVIDER_URL": f"http://127.0.0.1:{self.http_port}/sms", "SMS_PROVIDER_TOKEN": "test-sms-token",
            "WEBHOOK_URLS": orjson.dumps({source: f"http://127.0.0.1:{self.http_port}/hooks/{source}"}).decode(),
            # The platform's own secret; the default one must not be what signs its webhooks.
            "WEBHOOK_SECRET": "default-secret-not-this-platforms",
            "WEBHOOK_SECRETS": orjson.dumps({source: WEBHOOK_SECRET}).decode(),
            # Quick retries, and a short lease so a send lost with a killed process is retried soon.
            "NOTIFY_BACKOFF_BASE_SECONDS": "0.5", "NOTIFY_BACKOFF_CAP_SECONDS": "2", "NOTIFY_MAX_ATTEMPTS": "4",
            "NOTIFY_SEND_LEASE_SECONDS": "7",
            "NOTIFY_SEND_TIMEOUT_SECONDS": "6",
        }

    def start(self) -> "Sinks":
        self._smtp.start()
        self._thread.start()
        return self

    def stop(self) -> None:
        for hold in (self.mail.hold, self.http.hold):
            hold.release.set()
        self._server.shutdown()
        self._server.server_close()
        self._smtp.stop()
