"""Staff identity for the back-office APIs (reviews, discrepancies).

Staff authenticate with a bearer token: an HS256 JWT whose `sub` is the user and
whose `roles` claim lists their roles. In production the token comes from the
company's identity provider; locally `python -m tools.staff token` mints one.
Every service verifies tokens itself with the shared secret, so no service needs
another's user table.
"""

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated

import jwt
from fastapi import Depends, HTTPException, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from shared.roles import Role

__all__ = ["Role", "StaffAuth", "StaffUser", "mint_token", "verify_token"]
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


def verify_token(secret: str, token: str) -> StaffUser:
    """Raises `jwt.InvalidTokenError` (expired, bad signature, wrong issuer, unknown role)."""
    claims = jwt.decode(token, secret, algorithms=["HS256"], issuer=ISSUER, options={"require": ["exp", "sub"]})
    try:
        roles = frozenset(Role(r) for r in claims.get("roles", []))
    except ValueError as exc:
        raise jwt.InvalidTokenError(f"unknown role in token: {exc}") from exc
    return StaffUser(user_id=claims["sub"], roles=roles)


class StaffAuth:
    """FastAPI dependencies: `Depends(auth.require(Role.REVIEWER, ...))` gives the StaffUser or 401/403."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self._bearer = HTTPBearer(auto_error=False)

    def require(self, *roles: Role) -> Callable:
        async def dependency(
            credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(self._bearer)],
        ) -> StaffUser:
            if credentials is None:
                raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing bearer token",
                                    headers={"WWW-Authenticate": "Bearer"})
            try:
                user = verify_token(self.secret, credentials.credentials)
            except jwt.InvalidTokenError as exc:
                raise HTTPException(status.HTTP_401_UNAUTHORIZED, f"invalid token: {exc}",
                                    headers={"WWW-Authenticate": "Bearer"}) from exc
            if roles and not user.has_any(roles):
                needed = ", ".join(r.value for r in roles)
                raise HTTPException(status.HTTP_403_FORBIDDEN, f"requires one of the roles: {needed}")
            return user

        return dependency
