from datetime import timedelta

import jwt
import pytest

from shared.runtime.staff import Role, mint_token, verify_token

SECRET = "test-secret-long-enough-for-hs256-keys!"


def test_token_round_trip_carries_user_and_roles():
    user = verify_token(SECRET, mint_token(SECRET, "alice", [Role.REVIEWER, Role.FINANCE_LEAD]))
    assert user.user_id == "alice"
    assert user.roles == {Role.REVIEWER, Role.FINANCE_LEAD}
    assert user.has_any((Role.FINANCE_LEAD,)) and not user.has_any((Role.SENIOR_REVIEWER,))


@pytest.mark.parametrize("token", [
    mint_token("another-secret-long-enough-for-hs256!", "mallory", [Role.FINANCE_LEAD]),
    mint_token(SECRET, "bob", [Role.REVIEWER], ttl=timedelta(seconds=-1)),
    jwt.encode({"iss": "refund-pipeline", "sub": "eve", "roles": ["admin"], "exp": 9999999999}, SECRET),
    "not-a-token",
])
def test_forged_expired_or_unknown_role_tokens_are_refused(token):
    with pytest.raises(jwt.InvalidTokenError):
        verify_token(SECRET, token)
