"""Shared fixtures. The local stand-in (devstack.stack.Stack) starts lazily: only a test that
asks for ``stack`` (directly or through another fixture) starts it, once per test session, so
tests/unit never starts anything.

Fixtures
- ``stack``        (session) the running Stack; stopped at the end of the session.
- ``seeded``       (session) ``{"repo:tag": digest}`` of the upstream catalogue (devstack.oci.CATALOGUE).
- ``seeded_auth``  (session) the same for the token-auth upstream (devstack.oci.AUTH_CATALOGUE); needs
                   the emulator (it serves the token realm), else the test skips.
- ``airlock_env``  (function) applies ``stack.env`` to os.environ for one test; returns the dict.
- ``clean_faults`` (function) clears the emulator's injected faults before and after the test.

Set DEVSTACK_NO_EMULATOR=1 to run the stack without the ACR emulator (tests that need it skip).
"""
from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def stack():
    from devstack.stack import Stack

    with Stack(with_emulator=os.environ.get("DEVSTACK_NO_EMULATOR") != "1") as running:
        yield running


@pytest.fixture(scope="session")
def seeded(stack):
    from devstack.oci import seed_upstream

    return seed_upstream(stack)


@pytest.fixture(scope="session")
def seeded_auth(stack):
    from devstack.oci import seed_upstream_auth

    if stack.emulator is None:
        pytest.skip("the token-auth upstream needs the ACR emulator (it serves the token realm)")
    return seed_upstream_auth(stack)


@pytest.fixture
def airlock_env(stack, monkeypatch):
    stack.apply_env(monkeypatch)
    return dict(stack.env)


@pytest.fixture
def clean_faults(stack):
    if stack.emulator is None:
        pytest.skip("the stack runs without the ACR emulator")
    stack.clear_faults()
    yield stack
    stack.clear_faults()


@pytest.fixture(scope="session")
def registered():
    """function_app's registered functions by name. get_functions() indexes the app and may run once
    per app object, as the Functions host does."""
    import function_app

    return {f.get_function_name(): f for f in function_app.app.get_functions()}


@pytest.fixture(scope="module")
def quick_clock(stack):
    """ACR Task runs move on a fast clock for a module's tests (needs the emulator)."""
    from tests.agent_pools import fast_runs

    if stack.emulator is None:
        pytest.skip("the stack runs without the ACR emulator")
    with fast_runs(stack):
        yield
