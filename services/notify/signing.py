"""HMAC signatures of expiring customer links. Pure: stdlib only.

Customer link token: `<refund_id>.<expires unix seconds>.<hex HMAC-SHA256>` over
`customer-page\n<refund_id>\n<expires>`, so a token can be neither edited nor
extended, and it stops working at `expires`.

(Platform webhooks are signed per the Standard Webhooks spec: services/notify/delivery.py.)
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
