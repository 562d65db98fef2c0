"""The customer's contact data (email, phone) sealed for notify: part of the contract.

Only notify tells customers anything, so only notify may read how to reach them. Intake seals
the contact with notify's public key before the request travels on (`Customer.contact_sealed` in
`refund.accepted.v1`, carried as-is by `refund.approved.v1`); approval, payout and reconcile
store and pass on a blob they cannot open. Notify opens it with its private key.

The seal is an ECIES-style sealed box: an ephemeral X25519 key agreed with notify's key, HKDF-SHA256
to a one-time AES-256-GCM key, the refund and customer id as associated data (a blob moved onto
another refund does not open). Wire format, standard base64 of:
    version (1 byte, 0x01) | key id (8 bytes: SHA-256 of notify's raw public key) |
    ephemeral public key (32) | nonce (12) | AES-GCM ciphertext and tag
The key id says which notify key a blob needs, so keys can rotate while old blobs are in flight.

Keys are given as PEM, or as standard base64 of the raw 32 bytes (`contact-keygen` below prints
a pair). The LOCAL_* pair is public, for local runs only: production refuses it (shared/runtime/settings.py).
"""

import base64
import hashlib
import json
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

VERSION = b"\x01"
_INFO = b"refund-pipeline contact seal v1"
_RAW = serialization.Encoding.Raw, serialization.PublicFormat.Raw

# Local-only pair, published here on purpose so intake and notify agree without setup. Never in production.
LOCAL_PRIVATE_KEY = "mMe2FjT0Uquaj4ZI270cQMQMt+8PcMsGzwL2awKs9mg="
LOCAL_PUBLIC_KEY = "AH1HeIdofesClmYsRXRPTo+TLxU43hLLNuHHUVGvdTM="
# The same seal carries a customer's new payout destination (`refund.destination-provided.v1`) from
# notify's customer page to payout, the only stage that may read it: payout holds this pair's private
# half (DESTINATION_PRIVATE_KEY), notify the public one (DESTINATION_PUBLIC_KEY). Local runs only.
LOCAL_DESTINATION_PRIVATE_KEY = "sGL+uYhrIMbIhNeg5qWX0Eyp8ArQAh+5Hq5AQBQUaWs="
LOCAL_DESTINATION_PUBLIC_KEY = "QcAMLtSozWzj4LBsPdOMqVsMfvRWGVpisdouYPkPSQ0="


class SealBroken(Exception):
    """The blob is not a seal for this key and refund (wrong key, moved, tampered or truncated)."""


def public_key(text: str) -> X25519PublicKey:
    """Notify's public key from PEM or base64 of the raw 32 bytes."""
    if text.lstrip().startswith("-----"):
        key = serialization.load_pem_public_key(text.encode())
        if not isinstance(key, X25519PublicKey):
            raise ValueError("the contact public key must be an X25519 key")
        return key
    return X25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))


def private_key(text: str) -> X25519PrivateKey:
    """Notify's private key from PEM or base64 of the raw 32 bytes."""
    if text.lstrip().startswith("-----"):
        key = serialization.load_pem_private_key(text.encode(), password=None)
        if not isinstance(key, X25519PrivateKey):
            raise ValueError("the contact private key must be an X25519 key")
        return key
    return X25519PrivateKey.from_private_bytes(base64.b64decode(text, validate=True))


def seal(recipient: X25519PublicKey, contact: dict[str, str], *, refund_id: str, customer_id: str) -> str:
    """The contact (e.g. {"email": ..., "phone": ...}) sealed for the holder of `recipient`'s private key."""
    ephemeral = X25519PrivateKey.generate()
    ephemeral_raw = ephemeral.public_key().public_bytes(*_RAW)
    recipient_raw = recipient.public_bytes(*_RAW)
    key = _derive(ephemeral.exchange(recipient), ephemeral_raw, recipient_raw)
    nonce = os.urandom(12)
    plain = json.dumps(contact, separators=(",", ":"), sort_keys=True).encode()
    box = AESGCM(key).encrypt(nonce, plain, _context(refund_id, customer_id))
    return base64.b64encode(VERSION + _key_id(recipient_raw) + ephemeral_raw + nonce + box).decode()


def open_seal(holder: X25519PrivateKey, sealed: str, *, refund_id: str, customer_id: str) -> dict[str, str]:
    """The contact a `seal` for this refund and customer holds; SealBroken if it is not one."""
    try:
        blob = base64.b64decode(sealed, validate=True)
    except (ValueError, TypeError) as error:
        raise SealBroken("not base64") from error
    if len(blob) < 1 + 8 + 32 + 12 + 16 or blob[:1] != VERSION:
        raise SealBroken("not a version 1 seal")
    recipient_raw = holder.public_key().public_bytes(*_RAW)
    if blob[1:9] != _key_id(recipient_raw):
        raise SealBroken("sealed for another key")
    ephemeral_raw, nonce, box = blob[9:41], blob[41:53], blob[53:]
    try:
        shared_secret = holder.exchange(X25519PublicKey.from_public_bytes(ephemeral_raw))
    except ValueError as error:  # a low-order point: no shared secret
        raise SealBroken("not a usable ephemeral key") from error
    key = _derive(shared_secret, ephemeral_raw, recipient_raw)
    try:
        plain = AESGCM(key).decrypt(nonce, box, _context(refund_id, customer_id))
    except InvalidTag as error:
        raise SealBroken("does not open for this refund and customer") from error
    contact = json.loads(plain)
    return {k: v for k, v in contact.items() if isinstance(v, str)}


def _derive(shared_secret: bytes, ephemeral_raw: bytes, recipient_raw: bytes) -> bytes:
    return HKDF(algorithm=SHA256(), length=32, salt=ephemeral_raw + recipient_raw, info=_INFO).derive(shared_secret)


def _key_id(recipient_raw: bytes) -> bytes:
    return hashlib.sha256(recipient_raw).digest()[:8]


def _context(refund_id: str, customer_id: str) -> bytes:
    return f"{refund_id}\n{customer_id}".encode()


def new_key_pair() -> tuple[str, str]:
    """(private, public), each base64 of the raw 32 bytes: CONTACT_PRIVATE_KEY and CONTACT_PUBLIC_KEY."""
    private = X25519PrivateKey.generate()
    raw = private.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                serialization.NoEncryption())
    return base64.b64encode(raw).decode(), base64.b64encode(private.public_key().public_bytes(*_RAW)).decode()


if __name__ == "__main__":  # python -m shared.contract.contact_seal: a fresh pair for a deployment
    private_text, public_text = new_key_pair()
    print(f"CONTACT_PRIVATE_KEY={private_text}  # notify only, a secret\nCONTACT_PUBLIC_KEY={public_text}  # intake")
