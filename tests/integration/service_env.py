"""Run a service of the session stack with extra environment for one test, then restore it."""

import contextlib
import os


@contextlib.contextmanager
def restarted_with(stack, service: str, **env: str):
    """Services are spawned with os.environ, so set `env`, restart `service`, and undo both afterwards."""
    os.environ.update(env)
    try:
        stack.restart_service(service)
        yield
    finally:
        for key in env:
            del os.environ[key]
        stack.restart_service(service)
