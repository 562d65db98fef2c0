"""Stripe's own API mock server (stripe-mock, built into .tools/bin by scripts/bootstrap.sh)."""

import subprocess
import time
from pathlib import Path

import pytest

from devstack.processes import free_port, port_open

BINARY = Path(__file__).resolve().parents[2] / ".tools" / "bin" / "stripe-mock"


@pytest.fixture(scope="module")
def stripe_mock():
    """The base URL of a running stripe-mock; stopped after the module."""
    assert BINARY.exists(), f"{BINARY} missing: run `make setup` (scripts/bootstrap.sh builds it)"
    port = free_port()
    process = subprocess.Popen([str(BINARY), "-http-addr", f"127.0.0.1:{port}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not port_open(port):
            assert process.poll() is None and time.monotonic() < deadline, "stripe-mock did not start"
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)
