"""The command line's Azure credential and the Azure CLI's current subscription, the way ``az`` works.

The Function App uses DefaultAzureCredential (``azure_clients.AzureClients.credential``). The command line
uses ONE azure-identity credential, the one ``Settings.credential`` names (``CLI_CREDENTIAL``, resolved by
``shared.config.credential_kind``): the Azure CLI's login (``AzureCliCredential``), the managed identity,
a service principal from the environment, workload identity, or DefaultAzureCredential's chain when asked
for. ``cli_credential`` builds it:

- failures are one line naming the credential and why (``CredentialUnavailable``: "AzureCliCredential
  could not get a token for https://management.azure.com: Please run 'az login' to set up an account");
  azure-identity's full text (DefaultAzureCredential's chain) is logged at DEBUG only (``-vv``);
- an identity endpoint that cannot be connected to is ``Unreachable``, naming it, after one attempt of at
  most ``CONNECT_TIMEOUT`` seconds (azure-identity would retry it with back-off);
- the Azure CLI gets at most ``AZ_TIMEOUT`` seconds per call, and its tokens are kept per scope until
  ``REFRESH_MARGIN`` seconds before they expire (azure-identity's AzureCliCredential runs ``az`` for every
  request of a token; each SDK client asks once, so a plan would run ``az`` three times).

``azure_cli_subscription`` is ``az account show``'s subscription id: the command line's default subscription.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import threading
import time
from typing import Callable, Optional

from ..errors import ConfigError, UpstreamError

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5.0   # seconds to open a connection on the command line (identity endpoint, ARM, storage)
AZ_TIMEOUT = 10         # seconds the Azure CLI may take to answer (azure-identity's own default)
REFRESH_MARGIN = 300    # seconds before expiry a kept Azure CLI token is asked for again

NAMES = {"azure-cli": "AzureCliCredential", "managed-identity": "ManagedIdentityCredential",
         "environment": "EnvironmentCredential", "workload-identity": "WorkloadIdentityCredential",
         "default": "DefaultAzureCredential"}
_ATTEMPT = re.compile(r"^(\w+Credential): (.*)$")
_TROUBLESHOOT = re.compile(r"\s*(To mitigate this issue|(Please\s+)?visit https://aka\.ms|For more information|"
                           r"To troubleshoot|See the troubleshooting guide).*$", re.IGNORECASE | re.DOTALL)
_UNAVAILABLE = re.compile(r"^\w*Credential (authentication )?unavailable\.\s*")


def one_line(message: str) -> str:
    """azure-identity's failure text in one line: the first line of one credential's message; for
    DefaultAzureCredential's chain, each attempted credential with the first line of its reason."""
    lines = [line.strip() for line in (message or "").splitlines() if line.strip()]
    attempts = [m for m in (_ATTEMPT.match(line) for line in lines) if m]
    if attempts:
        return "; ".join(f"{m.group(1)}: {_reason(m.group(2))}" for m in attempts)
    return _TROUBLESHOOT.sub("", lines[0]).strip() if lines else "no reason given"


def _reason(text: str) -> str:
    """One attempt's reason without azure-identity's boilerplate ("X authentication unavailable.", links)."""
    return _UNAVAILABLE.sub("", _TROUBLESHOOT.sub("", text).strip()) or "unavailable"


def connection_reason(exc: BaseException, timeout: Optional[float] = None) -> str:
    """A connection that could not be made, in a few words (refused, no answer, unknown name, TLS)."""
    import socket
    import ssl

    seen: list[BaseException] = []
    current: Optional[BaseException] = exc
    while current is not None and current not in seen and len(seen) < 10:
        seen.append(current)
        current = getattr(current, "inner_exception", None) or current.__cause__ or current.__context__
    text = " ".join(str(e) for e in seen)
    if any(isinstance(e, ConnectionRefusedError) for e in seen) or "Connection refused" in text:
        return "connection refused"
    if any(isinstance(e, (socket.timeout, TimeoutError)) for e in seen) or "timed out" in text:
        return f"no connection within {timeout:g}s" if timeout else "connection timed out"
    if any(isinstance(e, socket.gaierror) for e in seen) or "Name or service not known" in text \
            or "name resolution" in text or "nodename nor servname" in text:
        return "host name not found"
    tls = next((e for e in seen if isinstance(e, ssl.SSLError)), None)
    if tls is not None:
        return f"TLS: {getattr(tls, 'reason', None) or str(tls).splitlines()[0][:160]}"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return first[:200]


def origin(url: str) -> str:
    """scheme://host[:port] of a URL: where, never a path or a query (a SAS)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}" if parts.netloc else url.split("?")[0]


def unreachable(what: str, url: str, exc: BaseException, timeout: Optional[float] = None) -> UpstreamError:
    return UpstreamError(f"cannot reach {what} at {origin(url)}: {connection_reason(exc, timeout)}",
                         code="Unreachable")


class NamedCredential:
    """One azure-identity credential whose failures are one line naming it (see the module docstring)."""

    def __init__(self, inner, name: str, *, endpoint: str = ""):
        self._inner, self.name, self.endpoint = inner, name, endpoint

    def _call(self, fn: Callable, *scopes: str, **kwargs):
        from azure.core.exceptions import ClientAuthenticationError, ServiceRequestError

        try:
            return fn(*scopes, **kwargs)
        except ClientAuthenticationError as exc:
            log.debug("%s: %s", self.name, exc.message)  # the whole text (DefaultAzureCredential's chain): -vv
            raise UpstreamError(f"{self.name} could not get a token for {_resources(scopes)}: {one_line(exc.message)}",
                                code="CredentialUnavailable") from None
        except ServiceRequestError as exc:
            log.debug("%s: %s", self.name, exc)
            raise unreachable(f"the identity endpoint of {self.name}", self.endpoint or "", exc,
                              CONNECT_TIMEOUT) from None

    def get_token(self, *scopes, **kwargs):
        return self._call(self._inner.get_token, *scopes, **kwargs)

    def get_token_info(self, *scopes, options=None):
        return self._call(self._inner.get_token_info, *scopes, options=options)

    def close(self) -> None:
        close = getattr(self._inner, "close", None)
        if close:
            close()


class KeptTokens:
    """A credential's tokens kept per (scopes, tenant) until ``REFRESH_MARGIN`` before expiry (the Azure CLI
    has no cache of its own that azure-identity uses: every request of a token runs ``az``)."""

    def __init__(self, inner, *, clock: Callable[[], float] = time.time):
        self._inner, self._clock = inner, clock
        self._lock = threading.Lock()
        self._kept: dict[tuple, object] = {}

    def _get(self, key: tuple, fetch: Callable):
        with self._lock:
            token = self._kept.get(key)
            if token is not None and token.expires_on - REFRESH_MARGIN > self._clock():
                return token
        token = fetch()
        with self._lock:
            self._kept[key] = token
        return token

    def get_token(self, *scopes, claims=None, tenant_id=None, **kwargs):
        if claims:  # a claims challenge is never answered from what was kept
            return self._inner.get_token(*scopes, claims=claims, tenant_id=tenant_id, **kwargs)
        return self._get(("token", scopes, tenant_id),
                         lambda: self._inner.get_token(*scopes, tenant_id=tenant_id, **kwargs))

    def get_token_info(self, *scopes, options=None):
        if options and options.get("claims"):
            return self._inner.get_token_info(*scopes, options=options)
        return self._get(("info", scopes, (options or {}).get("tenant_id")),
                         lambda: self._inner.get_token_info(*scopes, options=options))

    def close(self) -> None:
        close = getattr(self._inner, "close", None)
        if close:
            close()


def _resources(scopes) -> str:
    return ", ".join(s.removesuffix("/.default") for s in scopes) or "no scope"


def cli_credential(kind: str, *, throttle_aware: Callable, connect_timeout: float = CONNECT_TIMEOUT):
    """The command line's credential of ``kind`` (``Settings.credential``), wrapped as the module docstring
    says. ``throttle_aware(factory)``: ``azure_clients.ThrottleAwareCredential`` (429 / 5xx from an identity
    endpoint are transient)."""
    from azure import identity

    name = NAMES[kind]
    pipeline = {"connection_timeout": connect_timeout, "retry_connect": 0}  # one attempt to connect
    if kind == "azure-cli":
        return NamedCredential(KeptTokens(identity.AzureCliCredential(process_timeout=AZ_TIMEOUT)), name)
    if kind == "managed-identity":
        endpoint = os.environ.get("IDENTITY_ENDPOINT") or os.environ.get("MSI_ENDPOINT") \
            or "http://169.254.169.254/metadata/identity/oauth2/token"
        return NamedCredential(throttle_aware(lambda **hooks: identity.ManagedIdentityCredential(**pipeline, **hooks)),
                               name, endpoint=endpoint)
    if kind == "environment":
        return NamedCredential(identity.EnvironmentCredential(**pipeline), name,
                               endpoint="https://login.microsoftonline.com")
    if kind == "workload-identity":
        return NamedCredential(identity.WorkloadIdentityCredential(**pipeline), name,
                               endpoint="https://login.microsoftonline.com")
    return NamedCredential(throttle_aware(lambda **hooks: identity.DefaultAzureCredential(
        exclude_interactive_browser_credential=True, process_timeout=AZ_TIMEOUT, **pipeline, **hooks)), name)


def azure_cli_subscription(*, timeout: float = AZ_TIMEOUT) -> str:
    """The Azure CLI's current subscription id (``az account show``); ConfigError when there is none."""
    hint = "run az login (and az account set --subscription ...), or pass --subscription / set AZURE_SUBSCRIPTION_ID"
    az = shutil.which("az")
    if not az:
        raise ConfigError(f"no subscription: AZURE_SUBSCRIPTION_ID is not set and the Azure CLI (az) is not on "
                          f"PATH to take its current one; {hint}")
    try:
        done = subprocess.run([az, "account", "show", "--output", "json"], capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL,
                              env={**os.environ, "AZURE_CORE_NO_COLOR": "true"})
    except subprocess.TimeoutExpired:
        raise ConfigError(f"no subscription: az account show did not answer within {timeout:g}s; {hint}") from None
    except OSError as exc:
        raise ConfigError(f"no subscription: cannot run {az}: {exc.strerror or exc}; {hint}") from None
    if done.returncode != 0:
        reason = next((line.strip() for line in done.stderr.splitlines() if line.strip()), f"exit {done.returncode}")
        raise ConfigError(f"no subscription: az account show failed ({reason.removeprefix('ERROR: ')}); {hint}")
    try:
        account = json.loads(done.stdout)
        subscription = str(account["id"]).strip()
    except (ValueError, KeyError, TypeError):
        raise ConfigError(f"no subscription: az account show printed no account id; {hint}") from None
    if not subscription:
        raise ConfigError(f"no subscription: az account show printed an empty id; {hint}")
    log.info("subscription %s (%s) from the Azure CLI", subscription, account.get("name") or "unnamed")
    return subscription
