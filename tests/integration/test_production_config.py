"""Configuration fails closed: each service started as production with its local defaults (public
default secrets, no identity provider) exits non-zero with a message naming the settings, before it
touches Kafka or PostgreSQL."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from devstack.processes import free_port

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ["intake", "approval", "payout", "reconcile", "notify"]


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_started_as_production_with_local_defaults_refuses_to_start(service):
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_SECRET", "_JWKS_URL"))} | {"ENVIRONMENT": "production"}
    started = subprocess.run(
        [sys.executable, "-m", "uvicorn", f"services.{service}.main:app", "--port", str(free_port())],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert started.returncode != 0
    assert "refusing to start in production" in started.stderr, started.stderr[-2000:]
    assert "STAFF_JWKS_URL is not set" in started.stderr
    if service == "notify":
        assert "CUSTOMER_LINK_SECRET is the public default" in started.stderr
    if service == "payout":
        assert "DESTINATION_PRIVATE_KEY is the public default" in started.stderr
