"""Staff identity for the back-office APIs (reviews, discrepancies, tracking).

Staff authenticate with a bearer JWT whose `sub` is the user and whose roles claim lists
their roles. In production the token comes from the company's identity provider: RS256 or
ES256, verified against the provider's JWKS (`STAFF_JWKS_URL`, keys fetched and cached by
PyJWT's JWKS client, so a rotated key with a new `kid` is picked up) with its issuer and
audience checked. Locally (`ENVIRONMENT=local` only) an HS256 token signed with
`STAFF_TOKEN_SECRET` is accepted too: `python -m tools.staff token` mints one. Every service
verifies tokens itself, so no service needs another's user table.
"""

import asyncio
import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated

import jwt
from fastapi import Depends, HTTPException, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from shared.runtime.roles import Role

__all__ = ["IdentityProvider", "Role", "StaffAuth", "StaffUser", "StaffVerifier", "mint_token", "verify_token"]
ISSUER = "refund-pipeline"


@dataclasses.dataclass(frozen=True)
class StaffUser:
    user_id: str
    roles: frozenset[Role]

    def has_any(self, roles: tuple[Role, ...]) -> bool:
        return bool(self.roles.intersection(roles))


def mint_token(secret: str, user_id: str, roles: list[Role], ttl: timedelta = timedelta(hours=8)) -> str:
    now = datetime.now(UTC)
    claims = {"iss": ISSUER, "sub": user_id, "roles": [r.value for r in roles], "iat": now, "exp": now + ttl}
    return jwt.encode(claims, secret, algorithm="HS256")


def _user(claims: dict, roles_claim: str = "roles") -> StaffUser:
    try:
        roles = frozenset(Role(r) for r in claims.get(roles_claim, []))
    except ValueError as exc:
        raise jwt.InvalidTokenError(f"unknown role in token: {exc}") from exc
    return StaffUser(user_id=claims["sub"], roles=roles)


def verify_token(secret: str, token: str) -> StaffUser:
    """A local HS256 token. Raises `jwt.InvalidTokenError` (expired, bad signature, wrong issuer, unknown role)."""
    return _user(jwt.decode(token, secret, algorithms=["HS256"], issuer=ISSUER, options={"require": ["exp", "sub"]}))


@dataclasses.dataclass(frozen=True)
class IdentityProvider:
    """Where staff tokens come from in production: the provider's JWKS, issuer and audience."""

    jwks_url: str
    issuer: str
    audience: str
    roles_claim: str = "roles"
    algorithms: tuple[str, ...] = ("RS256", "ES256")
    # A token with an unknown kid refetches the key set (rotation), at most once per this many seconds.
    refresh_cooldown_seconds: float = 30.0


class StaffVerifier:
    """Verifies a staff token: against the identity provider's keys when one is configured, and as a
    local HS256 token when `local_secret` is given (never in production: see shared/runtime/settings.py)."""

    def __init__(self, provider: IdentityProvider | None = None, local_secret: str | None = None) -> None:
        if provider is None and local_secret is None:
            raise ValueError("staff tokens need an identity provider (STAFF_JWKS_URL) or, locally, a secret")
        self.provider = provider
        self.local_secret = local_secret
        self._jwks = jwt.PyJWKClient(provider.jwks_url, cache_keys=True, lifespan=300,
                                     cooldown_duration=provider.refresh_cooldown_seconds) if provider else None

    @classmethod
    def from_settings(cls, settings) -> "StaffVerifier":
        provider = IdentityProvider(settings.staff_jwks_url, settings.staff_token_issuer,
                                    settings.staff_token_audience, settings.staff_roles_claim) \
            if settings.staff_jwks_url else None
        local = settings.staff_token_secret if settings.environment == "local" else None
        return cls(provider, local)

    async def verify(self, token: str) -> StaffUser:
        """Raises `jwt.InvalidTokenError` for anything but a valid, unexpired token with known roles."""
        algorithm = jwt.get_unverified_header(token).get("alg")
        if algorithm == "HS256" and self.local_secret is not None:
            return verify_token(self.local_secret, token)
        if self.provider is None or algorithm not in self.provider.algorithms:
            raise jwt.InvalidAlgorithmError(f"tokens signed with {algorithm} are not accepted here")
        try:
            # The JWKS client fetches over blocking HTTP (cached; refetched for an unknown kid).
            key = await asyncio.to_thread(self._jwks.get_signing_key_from_jwt, token)
        except jwt.PyJWKClientError as exc:
            raise jwt.InvalidTokenError(f"no signing key for this token: {exc}") from exc
        claims = jwt.decode(token, key.key, algorithms=list(self.provider.algorithms), issuer=self.provider.issuer,
                            audience=self.provider.audience, options={"require": ["exp", "sub", "iss", "aud"]})
        return _user(claims, self.provider.roles_claim)


class StaffAuth:
    """FastAPI dependencies: `Depends(auth.require(Role.REVIEWER, ...))` gives the StaffUser or 401/403."""

    def __init__(self, verifier: StaffVerifier | str) -> None:
        # A bare secret: local HS256 tokens only.
        self.verifier = verifier if isinstance(verifier, StaffVerifier) else StaffVerifier(local_secret=verifier)
        self._bearer = HTTPBearer(auto_error=False)

    def require(self, *roles: Role) -> Callable:
        async def dependency(
            credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(self._bearer)],
        ) -> StaffUser:
            if credentials is None:
                raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing bearer token",
                                    headers={"WWW-Authenticate": "Bearer"})
            try:
                user = await self.verifier.verify(credentials.credentials)
            except jwt.InvalidTokenError as exc:
                raise HTTPException(status.HTTP_401_UNAUTHORIZED, f"invalid token: {exc}",
                                    headers={"WWW-Authenticate": "Bearer"}) from exc
            if roles and not user.has_any(roles):
                needed = ", ".join(r.value for r in roles)
                raise HTTPException(status.HTTP_403_FORBIDDEN, f"requires one of the roles: {needed}")
            return user

        return dependency
