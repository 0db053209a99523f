"""The app's credential (shared.adapters.azure_clients) against the emulator's managed-identity endpoint.

A throttled (429) or failing (5xx) token endpoint is transient, also while MSAL replays the throttled
answer without a request; a refused identity (400, 401) is not.
"""
from __future__ import annotations

import time

import pytest
from azure.core.exceptions import ClientAuthenticationError

from shared.adapters.azure_clients import AzureClients
from shared.adapters.retrying import translate
from shared.config import Settings
from shared.errors import TransientError

# the managed-identity credential reads IDENTITY_ENDPOINT / IDENTITY_HEADER from os.environ
pytestmark = pytest.mark.usefixtures("clean_faults", "airlock_env")


def fresh_credential(stack):
    """A credential with empty caches, as on a newly started process."""
    return AzureClients(Settings.from_env(dict(stack.env))).credential


def scope(stack) -> str:
    return f"{Settings.from_env(dict(stack.env)).arm_audience}/.default"


def fault_left(stack) -> int:
    return sum(rule.times for rule in stack.emulator.faults.rules)


@pytest.mark.parametrize("status", [429, 503])
def test_a_throttled_token_request_and_its_replays_are_transient(stack, status):
    stack.emulator.faults.add("status", path=r"^/msi/token", status=status, times=50, retry_after=2)
    credential = fresh_credential(stack)
    with pytest.raises(TransientError) as first:
        credential.get_token(scope(stack))
    assert first.value.status == status and first.value.retry_after == 2
    sent = 50 - fault_left(stack)
    assert sent >= 1
    # MSAL replays the throttled answer for its Retry-After: no request is made, and it is still transient,
    # through both of the credential's entry points (SDK pipelines call get_token_info)
    with pytest.raises(TransientError) as replayed:
        credential.get_token_info(scope(stack))
    with pytest.raises(TransientError):
        credential.get_token(scope(stack))
    assert 50 - fault_left(stack) == sent, "the replay made a request"
    assert replayed.value.status == status and 0 < replayed.value.retry_after <= 3
    assert translate(replayed.value) is replayed.value
    # once the replay is over and the endpoint answers again, a token
    stack.emulator.faults.clear()
    time.sleep(replayed.value.retry_after)
    assert credential.get_token_info(scope(stack)).token


def test_a_refused_identity_is_not_transient(stack, monkeypatch):
    monkeypatch.setenv("IDENTITY_HEADER", "not-the-identity-header")  # the endpoint answers 401
    credential = fresh_credential(stack)
    for _ in range(2):
        with pytest.raises(ClientAuthenticationError) as refused:
            credential.get_token_info(scope(stack))
        assert not isinstance(translate(refused.value), TransientError)


def test_a_bad_request_answer_is_not_transient_even_after_a_throttle(stack):
    stack.emulator.faults.add("status", path=r"^/msi/token", status=429, times=4, retry_after=1)
    credential = fresh_credential(stack)
    with pytest.raises(TransientError):
        credential.get_token_info(scope(stack))
    time.sleep(2.1)  # the replay is over
    stack.emulator.faults.add("status", path=r"^/msi/token", status=400, times=10)
    with pytest.raises(ClientAuthenticationError) as bad:
        credential.get_token_info(scope(stack))
    assert not isinstance(translate(bad.value), TransientError)
