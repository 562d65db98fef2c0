"""Intake's settings, read from the environment by `main` and the key CLI only."""

from pathlib import Path

from shared.contract.contact_seal import LOCAL_PUBLIC_KEY
from shared.runtime.settings import ServiceSettings

REPO_SLA_FILE = Path(__file__).resolve().parents[2] / "deploy" / "sla.yaml"


class IntakeSettings(ServiceSettings):
    # Not secret, but the local default's private half is public: production must bring notify's own key.
    production_secrets = (*ServiceSettings.production_secrets, "contact_public_key")

    service_name: str = "intake"
    # Notify's X25519 public key (PEM or base64 of the raw 32 bytes): the customer's email and phone
    # travel on sealed with it, readable by notify alone (shared/contract/contact_seal.py).
    contact_public_key: str = LOCAL_PUBLIC_KEY
    # The ticket's stage SLAs (services/intake/sla.py); a bad file stops start-up.
    sla_file: Path = REPO_SLA_FILE
    # Scheduled drills (services/intake/drill.py): seconds between drill refunds, 0 = off; the UTC
    # hours they may run in (off-peak), empty = any hour.
    drill_interval_seconds: float = 0.0
    drill_off_peak_hours_utc: list[int] = []
    # Sources besides the drill scheduler whose `metadata: {"drill": "true"}` makes a drill (a JSON list,
    # e.g. ["shop-eu-staging"]); anyone else's marker is ignored and the refund is a normal one.
    drill_sources: list[str] = []
    # The standing payment drills refund against (it must exist at that gateway; devstack seeds it at
    # the simulator). EUR minor units.
    drill_payment_gateway: str = "sim"
    drill_payment_id: str = "pi_drill_standing"
    drill_payment_captured_value: int = 10**12
    # POST /v1/refunds per API key (429 with Retry-After above it).
    intake_rate_limit: str = "200/second"
