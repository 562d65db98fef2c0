"""Intake's settings, read from the environment by `main` and the key CLI only."""

from pathlib import Path

from shared.settings import ServiceSettings

REPO_SLA_FILE = Path(__file__).resolve().parents[2] / "deploy" / "sla.yaml"


class IntakeSettings(ServiceSettings):
    service_name: str = "intake"
    # The ticket's stage SLAs (shared/sla.py); a bad file stops start-up.
    sla_file: Path = REPO_SLA_FILE
