"""Restart a service with extra settings (fault injection, fast retries, short SLAs) for one test."""

import contextlib

from tests.integration.helpers import valid_request


@contextlib.contextmanager
def service_configured(stack, service: str, **env: str):
    """`service` runs with `env` on top of the stack's settings inside the block, and as before after it.

    Only the service's process gets `env`: a test that restarts it inside the block passes `env` again.
    """
    stack.restart_service(service, env)
    try:
        yield
    finally:
        stack.restart_service(service)


def request_with_payment(token: str, channel: str = "card", **changes) -> dict:
    """A valid request paid by `channel`, whose payment id ends in `-{token}`: a simulator fault token
    (gatewaysim/gateway.py) or just a label."""
    request = valid_request(payment_suffix=f"-{token}", **changes)
    request["payment"]["channel"] = channel
    return request
