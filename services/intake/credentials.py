"""Platform API keys: high-entropy random secrets, kept only as SHA-256 hashes.

A key reads `rk_<8 hex>.<secret>`; the part before the dot is its visible id,
the whole key is what the platform sends and what gets hashed.
"""

import hashlib
import secrets
from dataclasses import dataclass


@dataclass(frozen=True)
class NewApiKey:
    key_id: str
    key: str  # shown once, at creation; never stored

    @property
    def key_hash(self) -> str:
        return hash_key(self.key)


def mint() -> NewApiKey:
    key_id = "rk_" + secrets.token_hex(4)
    return NewApiKey(key_id=key_id, key=f"{key_id}.{secrets.token_urlsafe(32)}")


def hash_key(key: str) -> str:
    # A plain hash suffices: the key carries 256 random bits, so there is nothing to brute-force.
    return hashlib.sha256(key.encode()).hexdigest()
