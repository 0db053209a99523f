"""Fixtures for calling the registered functions as the Functions host would."""
import uuid

import pytest

from shared import entrypoints


@pytest.fixture
def env(stack, seeded, airlock_env, monkeypatch):
    """The stand-in's settings in os.environ, a fresh manifests container, and fresh cached services."""
    monkeypatch.setenv("RETRY_BASE_SECONDS", "0.05")
    monkeypatch.setenv("MANIFESTS_CONTAINER", f"manifests-{uuid.uuid4().hex[:8]}")
    entrypoints.reset()
    yield monkeypatch
    entrypoints.reset()


@pytest.fixture
def queue_host(env, registered):
    """Delivers RUNS_QUEUE messages to the registered queue functions (tests/queue_host.py); a fresh queue
    per test."""
    from tests.queue_host import QueueHost

    env.setenv("RUNS_QUEUE", f"runs-{uuid.uuid4().hex[:10]}")
    entrypoints.reset()
    return QueueHost({name: f.get_user_function() for name, f in registered.items()})


@pytest.fixture
def functions(registered):
    """The user functions of function_app, by function name."""
    return {name: f.get_user_function() for name, f in registered.items()}
