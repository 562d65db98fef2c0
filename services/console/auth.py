"""Who is signed in: local demo users (ENVIRONMENT=local only) or the identity provider (OIDC).

The session (a signed cookie) holds the person's id, roles, how they signed in, the bearer token the
services get, and a CSRF token that every POST form must echo. The console authorizes nothing itself:
each service checks the token and the roles on every call.
"""

import hmac
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta

import jwt
from starlette.requests import Request

from shared.runtime.roles import Role
from shared.runtime.staff import mint_token

# The local demo desk: who may sign in with the demo password, with which roles.
DEMO_USERS: dict[str, tuple[Role, ...]] = {
    "rita": (Role.REVIEWER,),
    "alice": (Role.SENIOR_REVIEWER,),
    "sam": (Role.SENIOR_REVIEWER,),
    "bob": (Role.FINANCE_LEAD,),
    "fiona": (Role.FINANCE_LEAD, Role.SENIOR_REVIEWER),
}
LOCAL_TOKEN_TTL = timedelta(hours=8)


@dataclass(frozen=True)
class Person:
    user_id: str
    roles: tuple[str, ...]
    token: str
    via: str  # "local" | "oidc"
    expires_at: float


def current(request: Request) -> Person | None:
    data = request.session.get("person")
    if not data or data.get("expires_at", 0) < time.time():
        return None
    return Person(data["user_id"], tuple(data["roles"]), data["token"], data["via"], data["expires_at"])


def sign_in(request: Request, person: Person) -> None:
    request.session.clear()  # a fresh session (and CSRF token) for every sign-in
    request.session["person"] = {"user_id": person.user_id, "roles": list(person.roles), "token": person.token,
                                 "via": person.via, "expires_at": person.expires_at}
    csrf_token(request)


def sign_out(request: Request) -> None:
    lang = request.session.get("lang")
    request.session.clear()
    if lang:
        request.session["lang"] = lang


def local_person(secret: str, demo_password: str, user_id: str, password: str) -> Person | None:
    """A demo user with the demo password: a local HS256 staff token, exactly as the services verify it."""
    roles = DEMO_USERS.get(user_id)
    if roles is None or not hmac.compare_digest(password.encode(), demo_password.encode()):
        return None
    token = mint_token(secret, user_id, list(roles), LOCAL_TOKEN_TTL)
    return Person(user_id, tuple(r.value for r in roles), token, "local",
                  time.time() + LOCAL_TOKEN_TTL.total_seconds())


def oidc_person(token: dict, roles_claim: str) -> Person:
    """From the provider's token response: the ID token's claims (authlib verified them against the
    provider's keys) name the person; the access token is what the services get and verify themselves."""
    claims = dict(token.get("userinfo") or {})
    access = token["access_token"]
    try:
        # Only to show roles and the expiry; the services verify this token on every call.
        access_claims = jwt.decode(access, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        access_claims = {}
    roles = claims.get(roles_claim) or access_claims.get(roles_claim) or []
    user_id = claims.get("preferred_username") or claims.get("sub") or access_claims.get("sub", "?")
    expires_at = float(token.get("expires_at") or access_claims.get("exp") or time.time() + 3600)
    return Person(str(user_id), tuple(str(r) for r in roles), access, "oidc", expires_at)


def csrf_token(request: Request) -> str:
    if "csrf" not in request.session:
        request.session["csrf"] = secrets.token_urlsafe(24)
    return request.session["csrf"]


def csrf_ok(request: Request, sent: str | None) -> bool:
    expected = request.session.get("csrf")
    return bool(expected and sent and hmac.compare_digest(expected, sent))
