"""Wires settings to adapters. Handlers receive a ``Services``; tests build one from the stand-in's env.

Clients are created on first use, so constructing ``Services`` does no I/O. ``Services.for_cli`` is the
command line's: settings in the ``cli`` mode (shared.config), and, for commands that use the registry,
the registry located from its name before any work starts (``AzureClients.locate``), so a wrong name,
subscription, credential or an unreachable ARM fails once, in one line, instead of once per entry.
"""
from __future__ import annotations

import os
import random
import ssl
import time
from functools import cached_property
from typing import Callable, Mapping, Optional

from .config import Settings
from .errors import ConfigError

STORAGE_HINT = ("set AzureWebJobsStorage (a storage connection string) or AzureWebJobsStorage__blobServiceUri "
                "(with the credential's access to it)")

DOCKER_HUB = "docker.io"  # kept for callers; credentials are looked up in Settings.credentials_for


class Services:
    def __init__(self, settings: Settings, *, sleep: Callable[[float], None] = time.sleep,
                 rand: Callable[[], float] = random.random):
        self.settings = settings
        self._sleep = sleep
        self._rand = rand

    @classmethod
    def from_env(cls, env: Optional[Mapping[str, str]] = None, **kwargs) -> "Services":
        return cls(Settings.from_env(os.environ if env is None else env), **kwargs)

    @classmethod
    def for_cli(cls, env: Mapping[str, str], *, registry: bool = True, storage: Optional[str] = None,
                **kwargs) -> "Services":
        """The command line's services. ``registry``: locate the registry now (its name is required);
        ``storage``: the command needs the outcome records (its name, for the error when storage is not set)."""
        services = cls(Settings.from_env(env, cli=True), **kwargs)
        if storage and not services.settings.has_storage:
            raise ConfigError(f"{storage} needs the outcome records in storage: {STORAGE_HINT}")
        if registry:
            services.settings = services.clients.locate()
        return services

    @cached_property
    def clients(self):
        from .adapters.azure_clients import AzureClients

        return AzureClients(self.settings)

    @cached_property
    def http(self):
        import httpx

        from .adapters import urllib3_transport

        verify = ssl.create_default_context(cafile=self.settings.ca_bundle or None)  # once per process
        # urllib3's pools under httpx's API: a plan is thousands of small HEADs (urllib3_transport.py)
        return urllib3_transport.client(verify, max_connections=max(32, self.settings.plan_concurrency * 2),
                                        timeout=httpx.Timeout(30.0, connect=10.0),
                                        headers={"User-Agent": "acr-airlock"})

    def credentials_for(self, registry: str) -> Optional[tuple[str, str]]:
        """(user, password) for a source registry: SOURCE_REGISTRY_CREDENTIALS, or DOCKERHUB_* for docker.io."""
        return self.settings.credentials_for(registry)

    def acr_source_for(self, registry: str) -> Optional[str]:
        """The resource id of a source registry that is an ACR (SOURCE_ACR_RESOURCE_IDS), or None."""
        return self.settings.source_acr_id(registry)

    def _identity_for(self, registry: str) -> Optional[Callable[[], str]]:
        """For an ACR source: the app identity's token for the ACR audience (the data plane's exchange)."""
        if self.acr_source_for(registry) is None:
            return None
        audience = f"{self.settings.acr_audience}/.default"
        return lambda: self.clients.credential.get_token(audience).token

    @cached_property
    def source(self):
        from .adapters.registry import SourceRegistry

        return SourceRegistry(self.http, endpoint_for=self.settings.endpoint_for,
                              credentials_for=self.credentials_for, identity_for=self._identity_for)

    @cached_property
    def acr(self):
        from .adapters.acr import Acr

        return Acr(self.clients, self.http)

    @cached_property
    def store(self):
        from .adapters.blobstore import BlobStore

        if not self.settings.has_storage:  # the command line without storage: say so, not "Invalid URL"
            raise ConfigError(f"this needs the outcome records in storage: {STORAGE_HINT}")
        return BlobStore(self.clients.blob_service)

    @cached_property
    def runs_queue(self):
        from .adapters.queues import RunQueue

        return RunQueue(self.clients.queue_service, self.settings.runs_queue)

    @cached_property
    def retrier(self):
        from .adapters.retrying import Retrier
        from .core.retry import RetryPolicy

        s = self.settings
        policy = RetryPolicy(max_attempts=s.retry_max_attempts, base_delay=s.retry_base, max_delay=s.retry_max)
        return Retrier(policy, sleep=self._sleep, rand=self._rand)

    @cached_property
    def tasks(self):
        from .adapters.tasks import Tasks

        return Tasks(self.clients, self.retrier)
