"""What the console reads from its environment (only in services/console/main.py).

The console owns no stage and no data: it needs the services' addresses, how people sign in, and the
secret its session cookie is signed with. Like the services it fails closed in production.
"""

from typing import Literal

from pydantic import model_validator
from pydantic_settings import SettingsConfigDict

from shared.runtime.settings import RefusingSettings, ServiceSettings

DEFAULT_SESSION_SECRET = "local-dev-console-session-secret-change-me"


class ConsoleSettings(RefusingSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore")

    environment: Literal["local", "production"] = "local"
    service_name: str = "console"
    http_port: int = 8080
    log_level: str = "INFO"
    # The services' base URLs (in-cluster Service names on Kubernetes).
    intake_url: str = "http://intake:8080"
    approval_url: str = "http://approval:8080"
    payout_url: str = "http://payout:8080"
    reconcile_url: str = "http://reconcile:8080"
    notify_url: str = "http://notify:8080"
    # Seconds one call to a service may take before the page says it is not available.
    service_timeout_seconds: float = 10.0
    # Signs the session cookie (who is signed in, their bearer token, the CSRF token).
    session_secret: str = DEFAULT_SESSION_SECRET
    session_max_age_seconds: int = 8 * 3600
    # The cookie is sent over HTTPS only (production sits behind TLS; local runs plain HTTP).
    session_https_only: bool = False
    # OIDC authorization-code sign-in: the provider's issuer (its discovery document is
    # <issuer>/.well-known/openid-configuration) and this console's client at it.
    oidc_issuer: str = ""
    oidc_client_id: str = ""
    oidc_client_secret: str = ""
    oidc_scope: str = "openid profile email"
    # The claim listing roles (in the ID token or the access token), as the services read it.
    staff_roles_claim: str = "roles"
    # Where people reach the console (for the OIDC redirect URI behind a proxy); empty = the request's own URL.
    public_url: str = ""
    # Local sign-in (ENVIRONMENT=local only): the demo users below, one password, tokens signed with
    # the secret the services verify local tokens with.
    staff_token_secret: str = ServiceSettings.model_fields["staff_token_secret"].default
    demo_password: str = "console-demo"

    @property
    def service_urls(self) -> dict[str, str]:
        return {"intake": self.intake_url, "approval": self.approval_url, "payout": self.payout_url,
                "reconcile": self.reconcile_url, "notify": self.notify_url}

    @property
    def local_sign_in(self) -> bool:
        return self.environment == "local"

    @property
    def oidc_enabled(self) -> bool:
        return bool(self.oidc_issuer and self.oidc_client_id)

    @model_validator(mode="after")
    def _fails_closed_in_production(self) -> "ConsoleSettings":
        if self.environment != "production":
            return self
        problems = [f"{name.upper()} is not set" for name in ("oidc_issuer", "oidc_client_id", "oidc_client_secret")
                    if not getattr(self, name)]
        if not self.session_secret or self.session_secret == DEFAULT_SESSION_SECRET:
            problems.append("SESSION_SECRET is empty or the public default")
        if problems:
            raise ValueError("; ".join(problems))
        return self
