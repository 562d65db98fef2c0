"""Restart a service with extra settings (fault injection, fast retries, short SLAs) for one test."""

import contextlib
import os

from gatewaysim.gateway import SimFaults, _in_share
from tests.integration.helpers import valid_request


@contextlib.contextmanager
def service_configured(stack, service: str, **env: str):
    """`service` runs with `env` on top of the stack's settings inside the block, and as before after it."""
    saved = {name: os.environ.get(name) for name in env}
    stack.stop_service(service)
    os.environ.update(env)
    try:
        stack.start_service(service)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    try:
        yield
    finally:
        stack.stop_service(service)
        stack.start_service(service)


def payout_configured(stack, **env: str):
    return service_configured(stack, "payout", **env)


def request_with_payment(token: str, channel: str = "card", **changes) -> dict:
    """A valid request whose payment id carries a simulator fault token (gatewaysim/gateway.py)."""
    while True:
        request = valid_request(**changes)
        payment_id = f"{request['payment']['id']}-{token}"
        # valid_request keeps its own id out of the simulator's random 2% declines; this id is another one.
        if not _in_share(payment_id, SimFaults.decline_percent):
            break
    request["payment"] = dict(request["payment"], id=payment_id, channel=channel)
    return request
