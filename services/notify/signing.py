"""HMAC signatures: expiring customer links and platform webhooks. Pure: stdlib only.

Customer link token: `<refund_id>.<expires unix seconds>.<hex HMAC-SHA256>` over
`customer-page\n<refund_id>\n<expires>`, so a token can be neither edited nor
extended, and it stops working at `expires`.

Webhook signature (documented for platforms in README): header
`Refund-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`.
"""

import hashlib
import hmac


class LinkRefused(Exception):
    """The link was tampered with, signed by someone else, or has expired."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason  # "invalid" or "expired"


def _mac(secret: str, message: str) -> str:
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def _page_mac(secret: str, refund_id: str, expires: int) -> str:
    return _mac(secret, f"customer-page\n{refund_id}\n{expires}")


def sign_link(secret: str, refund_id: str, expires: int) -> str:
    return f"{refund_id}.{expires}.{_page_mac(secret, refund_id, expires)}"


def read_link(secret: str, token: str, now: float) -> str:
    """The refund a customer link is for; LinkRefused if it is not ours or has expired."""
    rest = token.split(".")
    if len(rest) < 3 or not rest[-2].isdigit():
        raise LinkRefused("invalid")
    expires, signature = int(rest[-2]), rest[-1]
    refund_id = ".".join(rest[:-2])
    if not hmac.compare_digest(signature, _page_mac(secret, refund_id, expires)):
        raise LinkRefused("invalid")
    if now >= expires:
        raise LinkRefused("expired")
    return refund_id


def webhook_signature(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_webhook(secret: str, header: str, body: bytes, now: float, tolerance_seconds: int = 300) -> bool:
    """What a platform runs on receipt: right signature, and not a replay of an old delivery."""
    parts = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
    if not parts.get("t", "").isdigit() or "v1" not in parts:
        return False
    timestamp = int(parts["t"])
    expected = webhook_signature(secret, timestamp, body).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts["v1"]) and abs(now - timestamp) <= tolerance_seconds
