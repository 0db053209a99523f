"""Builds the Azure SDK clients from settings, lazily and once.

Nothing here runs at import time: the SDK modules themselves are imported inside the
properties, so ``import function_app`` stays cheap. Retries inside the SDK pipelines are
switched off (``retry_total=0``) for ARM and the ACR data plane because ``shared.adapters.retrying`` owns
those retries: one place decides back-off, and attempts are counted for the outcome record.
Blob storage keeps the storage SDK's own retries (records and leases are not counted).

On the command line (``Settings.cli``) the credential is one azure-identity credential
(``shared.adapters.credentials.cli_credential``), the registry is located from its name (``locate``: the
subscription from the Azure CLI, the resource group and login server through ARM's ``registries.list``),
and every client's transport is a ``FailFastTransport``: a connection attempt takes at most
``credentials.CONNECT_TIMEOUT`` seconds, and an endpoint that has not answered once in this process and
cannot be connected to is ``Unreachable`` at once, naming it (no retries: a person is waiting). Once it
has answered, a dropped connection is retried as in the Function App.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from functools import cached_property
from typing import Optional

from ..config import Settings
from ..errors import NotFoundError

log = logging.getLogger(__name__)

# Connections each SDK client keeps per host. requests' default is 10: a queue instance runs up to 12
# run messages at once (host.json), each with its own pool threads, so storage calls past 10 at once
# opened a new connection every time (urllib3: "Connection pool is full, discarding connection").
POOL_CONNECTIONS = 32


# MSAL (under azure-identity's managed-identity credential) remembers a 429 / 5xx answer of the identity
# endpoint and replays it, without a request, to every token request for the same resource during its
# Retry-After (integer seconds; 5 s when absent or not an integer; at most an hour): msal.throttled_http_client.
MSAL_DEFAULT_THROTTLE_SECONDS = 5
MSAL_MAX_THROTTLE_SECONDS = 3600


def msal_throttle_seconds(retry_after) -> int:
    """How long MSAL replays a throttled identity answer, given its ``Retry-After`` header value."""
    try:
        seconds = int(retry_after) if retry_after is not None else MSAL_DEFAULT_THROTTLE_SECONDS
    except ValueError:
        seconds = MSAL_DEFAULT_THROTTLE_SECONDS
    return min(MSAL_MAX_THROTTLE_SECONDS, seconds)


class ThrottleAwareCredential:
    """DefaultAzureCredential, except that a token request the identity endpoint throttled (429) or failed
    (5xx) raises TransientError. DefaultAzureCredential reports it as a ClientAuthenticationError without
    the status, which reads as permanent; the status is seen here with azure-core's ``raw_response_hook``
    on the credential's own pipeline (the managed-identity endpoint).

    A throttled answer is also remembered per scope for as long as MSAL replays it (its ``Retry-After``,
    plus a second): a token request during that time makes no request at all (no status is seen) and
    fails with the replayed answer. On a fresh process the first SDK calls after a throttle are such
    requests, so without this they failed permanently. A failure with no request outside such a window,
    and any answer that is not 429 / 5xx (400, 401: a wrong identity), stay ClientAuthenticationError."""

    def __init__(self, factory, *, clock=time.monotonic):
        self._local = threading.local()
        self._clock = clock
        self._lock = threading.Lock()
        self._throttled: dict[tuple, tuple[float, int]] = {}  # scopes -> (replayed until, status)
        self._inner = factory(raw_response_hook=self._saw)

    def _saw(self, response) -> None:
        from ..core.retry import RETRYABLE_STATUSES

        status = response.http_response.status_code
        self._local.status = status
        self._local.retry_after = response.http_response.headers.get("Retry-After")
        scopes = getattr(self._local, "scopes", None)
        if scopes is None:
            return
        with self._lock:
            if status in RETRYABLE_STATUSES:
                until = self._clock() + msal_throttle_seconds(self._local.retry_after) + 1
                self._throttled[scopes] = (until, status)
            elif status < 400:
                self._throttled.pop(scopes, None)

    def _replayed(self, scopes: tuple) -> Optional[tuple[float, int]]:
        """(seconds left, status) of a throttled answer MSAL is still replaying for ``scopes``."""
        with self._lock:
            until, status = self._throttled.get(scopes, (0.0, 0))
            left = until - self._clock()
            if left <= 0:
                self._throttled.pop(scopes, None)
                return None
            return left, status

    def _call(self, fn, *scopes, **kwargs):
        from azure.core.exceptions import ClientAuthenticationError

        from ..core.retry import RETRYABLE_STATUSES, parse_retry_after
        from ..errors import TransientError

        self._local.status = self._local.retry_after = None
        self._local.scopes = scopes
        try:
            return fn(*scopes, **kwargs)
        except ClientAuthenticationError:
            status = self._local.status
            if status in RETRYABLE_STATUSES:
                raise TransientError(f"managed-identity endpoint answered {status}", code=f"HTTP{status}",
                                     status=status, retry_after=parse_retry_after(self._local.retry_after)) from None
            replayed = self._replayed(scopes) if status is None else None
            if replayed is not None:
                left, status = replayed
                raise TransientError(f"managed-identity endpoint answered {status} (the answer is replayed for "
                                     f"{left:.0f}s more)", code=f"HTTP{status}", status=status,
                                     retry_after=left) from None
            raise
        finally:
            self._local.scopes = None

    def get_token(self, *scopes, **kwargs):
        return self._call(self._inner.get_token, *scopes, **kwargs)

    def get_token_info(self, *scopes, options=None):
        return self._call(self._inner.get_token_info, *scopes, options=options)

    def close(self) -> None:
        self._inner.close()


class AzureClients:
    def __init__(self, settings: Settings):
        self.settings = settings
        self._lock = threading.Lock()
        self._login_server: str = settings.login_server

    def _common(self, what: str, *, sdk_retries: bool = False) -> dict:
        # blob storage: the SDK's own retries, but short (the Functions host retries the trigger too)
        kwargs: dict = {"retry_total": 3, "initial_backoff": 1, "increment_base": 2} if sdk_retries \
            else {"retry_total": 0}
        kwargs["transport"] = self._transport(what if self.settings.cli else None)
        if self.settings.ca_bundle:
            kwargs["connection_verify"] = self.settings.ca_bundle
        return kwargs

    @staticmethod
    def _transport(what: Optional[str] = None):
        """azure-core's requests transport with a pool of POOL_CONNECTIONS per host (one per client). The
        adapter is set up as azure-core sets up its own (urllib3 retries off, so a failure is raised as
        itself, never as a MaxRetryError that quotes the URL with its query: a SAS would be in it).
        ``what`` (the command line): a ``FailFastTransport`` naming the endpoint as ``what``."""
        import requests
        from azure.core.pipeline.transport import RequestsTransport
        from urllib3.util.retry import Retry

        session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=POOL_CONNECTIONS,
                                                max_retries=Retry(total=False, redirect=False, raise_on_status=False))
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        if what is None:
            return RequestsTransport(session=session, session_owner=True)
        from .credentials import CONNECT_TIMEOUT

        return _fail_fast_transport()(what, session=session, session_owner=True, connection_timeout=CONNECT_TIMEOUT)

    @cached_property
    def credential(self):
        if self.settings.cli:
            from .credentials import cli_credential

            return cli_credential(self.settings.credential, throttle_aware=ThrottleAwareCredential)
        from azure.identity import DefaultAzureCredential

        return ThrottleAwareCredential(
            lambda **hooks: DefaultAzureCredential(exclude_interactive_browser_credential=True, **hooks))

    def locate(self) -> Settings:
        """The command line's registry, from its name: the subscription (settings, else the Azure CLI's current
        one), the resource group and login server (settings, else ARM: ``registries.list`` in the subscription,
        the registry of that name; ``registries.get`` for the login server when only it is missing). Returns
        the completed settings, which these clients use from now on. Raises ``ConfigError`` without a registry
        name or a subscription, ``NotFoundError`` (``RegistryNotFound``) when no registry has the name."""
        from ..errors import ConfigError
        from .retrying import translate

        s = self.settings
        if not s.registry_name:
            raise ConfigError("ACR_NAME: is required: name the registry with --registry NAME (or set ACR_NAME)")
        if not s.subscription_id:
            from .credentials import azure_cli_subscription

            s = self.settings = dataclasses.replace(s, subscription_id=azure_cli_subscription())
        try:
            if not s.resource_group:
                s = dataclasses.replace(s, **self._find_registry(s))
            elif not s.login_server:
                registry = self.registry_mgmt.registries.get(s.resource_group, s.registry_name)
                s = dataclasses.replace(s, login_server=registry.properties.login_server)
        except Exception as exc:  # noqa: BLE001 - ARM's answer in the project's terms (translate)
            from azure.core.exceptions import AzureError

            if isinstance(exc, AzureError):
                error = translate(exc)
                if getattr(error, "status", None) in (401, 403):  # which identity ARM refused
                    error.message = f"{error.message} (ARM refused the identity of {self._credential_name})"
                raise error from None
            raise
        with self._lock:
            self.settings = s
            self._login_server = s.login_server
        return s

    @property
    def _credential_name(self) -> str:
        return getattr(self.credential, "name", None) or "DefaultAzureCredential"

    def _find_registry(self, s: Settings) -> dict:
        wanted = s.registry_name.lower()
        for registry in self.registry_mgmt.registries.list():
            if (registry.name or "").lower() == wanted:
                parts = (registry.id or "").split("/")
                lowered = [p.lower() for p in parts]
                group = parts[lowered.index("resourcegroups") + 1] if "resourcegroups" in lowered[:-1] else ""
                login_server = getattr(registry.properties, "login_server", None) or ""
                log.info("registry %s: resource group %s, login server %s", registry.name, group, login_server)
                return {"resource_group": group, "registry_name": registry.name,
                        "login_server": s.login_server or login_server}
        raise NotFoundError(f"no registry named {s.registry_name!r} in subscription {s.subscription_id}: check "
                            "--registry, or choose the subscription (--subscription, or az account set)",
                            code="RegistryNotFound")

    @cached_property
    def registry_mgmt(self):
        from azure.mgmt.containerregistry import ContainerRegistryManagementClient

        s = self.settings
        return ContainerRegistryManagementClient(
            self.credential, s.subscription_id, base_url=s.arm_endpoint,
            credential_scopes=[f"{s.arm_audience}/.default"], **self._common("ARM"))

    @cached_property
    def tasks_mgmt(self):
        from azure.mgmt.containerregistrytasks import ContainerRegistryTasksMgmtClient

        s = self.settings
        return ContainerRegistryTasksMgmtClient(
            self.credential, s.subscription_id, base_url=s.arm_endpoint,
            credential_scopes=[f"{s.arm_audience}/.default"], **self._common("ARM"))

    @property
    def login_server(self) -> str:
        """The ACR's login server, from settings or (once) from ARM."""
        with self._lock:
            if not self._login_server:
                registry = self.registry_mgmt.registries.get(
                    self.settings.resource_group, self.settings.registry_name)
                self._login_server = registry.properties.login_server
            return self._login_server

    @cached_property
    def data_plane(self):
        from azure.containerregistry import ContainerRegistryClient

        return ContainerRegistryClient(
            f"https://{self.login_server}", self.credential,
            audience=self.settings.acr_audience, **self._common("the registry"))

    @cached_property
    def blob_service(self):
        from azure.storage.blob import BlobServiceClient

        return self._storage_client(BlobServiceClient, self.settings.blob_service_uri, "storage (blobs)")

    @cached_property
    def queue_service(self):
        from azure.storage.queue import QueueServiceClient

        return self._storage_client(QueueServiceClient, self.settings.queue_service_uri, "storage (queues)")

    def _storage_client(self, client_type, service_uri: str, what: str):
        """A storage service client: the connection string when set (Azurite), else the service URI
        with the managed identity (``AzureWebJobsStorage__*ServiceUri``)."""
        s = self.settings
        if s.storage_connection_string:
            return client_type.from_connection_string(s.storage_connection_string,
                                                      **self._common(what, sdk_retries=True))
        return client_type(account_url=service_uri, credential=self.credential, **self._common(what, sdk_retries=True))

    def blob_at(self, sas_url: str):
        """A blob client for a SAS URL (a run log, a build-source upload). The storage SDK redacts the
        signature when it logs URLs; a plain HTTP client would log the whole credential."""
        from azure.storage.blob import BlobClient

        return BlobClient.from_blob_url(sas_url, **self._common("storage (a SAS URL)", sdk_retries=True))


_FAIL_FAST = None


def _fail_fast_transport():
    """The class (made on first use: azure-core is imported lazily)."""
    global _FAIL_FAST
    if _FAIL_FAST is None:
        from azure.core.exceptions import ServiceRequestError
        from azure.core.pipeline.transport import RequestsTransport

        class FailFastTransport(RequestsTransport):
            """The command line's transport: until the endpoint has answered once, a connection that cannot
            be made raises ``Unreachable`` naming ``what`` and the endpoint (an AirlockError: the SDK's retry
            policies do not retry it). Afterwards failures are the SDK's, retried as usual."""

            def __init__(self, what: str, **kwargs):
                super().__init__(**kwargs)
                self.what = what
                self.answered = False

            def send(self, request, **kwargs):
                from .credentials import unreachable

                try:
                    response = super().send(request, **kwargs)
                except ServiceRequestError as exc:
                    if self.answered:
                        raise
                    log.debug("cannot reach %s: %s", self.what, exc)
                    raise unreachable(self.what, request.url, exc, self.connection_config.timeout) from None
                self.answered = True
                return response

        _FAIL_FAST = FailFastTransport
    return _FAIL_FAST
