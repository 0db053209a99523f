"""Configuration and runtime state of the ACR emulator.

``EmulatorConfig`` is plain data (loadable from JSON); ``Emulator`` bundles the live parts that the
routes share: token authority, fault injector, event bus, what the emulator learned about the
backing registry's manifests (``ManifestLedger``) and the referrers index (``referrers.ReferrersIndex``).
"""
from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from typing import Any, Optional

from .auth import TokenAuthority
from .events import EventBus
from .faults import FaultInjector
from .profiles import check_retry_after
from .referrers import ReferrersIndex
from .upstream_auth import UpstreamTokenService


@dataclass
class EmulatorConfig:
    subscription_id: str = "00000000-0000-0000-0000-000000000000"
    resource_group: str = "airlock-rg"
    registry_name: str = "airlockacr"
    location: str = "westus"
    host: str = "127.0.0.1"
    port: int = 0  # 0: the server picks a free port when it starts and writes it back here
    backing_url: str = "http://127.0.0.1:5000"
    # The backing registry's storage root (its filesystem driver's rootdirectory). When set, tag
    # listings read the tag links there, as ACR answers them from its metadata index, instead of
    # one HEAD per tag; empty: HEADs.
    backing_storage_path: str = ""
    # Where the referrers index lives (referrers.py); empty: <backing_storage_path>/airlock-emulator/
    # referrers, or a temporary directory without a storage path.
    referrers_path: str = ""
    ca_cert_path: str = ""
    storage_connection_string: str = ""
    identity_header: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    arm_audience: str = "https://management.azure.com"
    # Timing (see profiles.py; the defaults are the "fast" profile).
    profile: str = "fast"
    import_latency: float = 1.0  # an import's copy time (seconds), or the least of it when spread
    import_latency_max: float = 0.0  # > import_latency: copy times spread per source image up to this
    import_retry_after: str = "auto"  # Retry-After on import 202s: "auto" (seconds left), "none", "10"
    import_copy_at_end: bool = False  # True: the copy is made when the copy time is up (tag shows then)
    pool_scale_seconds: Optional[float] = None  # agent pool create/scale; None: one run step
    pool_delete_seconds: Optional[float] = None  # agent pool delete; None: one run step
    run_step_seconds: float = 1.0
    agent_pools: dict[str, dict[str, Any]] = field(default_factory=dict)
    event_sink_url: str | None = None
    # Data-plane roles by managed identity client id (auth.py ROLE_ACTIONS), e.g. {"<client id>":
    # ["AcrPull"]}; an identity without an entry may do everything (as before roles were modelled).
    identity_roles: dict[str, list[str]] = field(default_factory=dict)
    # Other ACRs an importImage may name by source.resourceId: resource id (any case) -> the URL of
    # the registry holding that ACR's content (its backing registry), read as ACR reads a source
    # registry of its tenant: with the caller's identity, no credentials (devstack.stack's source_acr()).
    peer_registries: dict[str, str] = field(default_factory=dict)
    # The token service (realm) of the authenticated upstream registry, see upstream_auth.py;
    # off unless a signing key is given.
    upstream_token_key_path: str = ""  # PEM private key (EC or RSA) that signs the tokens
    upstream_token_cert_path: str = ""  # PEM certificate of that key: the registry's rootcertbundle
    upstream_token_service: str = "upstream-auth"
    upstream_token_issuer: str = "airlock-devstack"
    upstream_token_username: str = ""
    upstream_token_password: str = field(default="", repr=False)
    upstream_token_public_prefix: str = "public/"
    upstream_token_seconds: float = 300.0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EmulatorConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown emulator config keys: {', '.join(unknown)}")
        return cls(**data)

    def __post_init__(self) -> None:
        self.import_retry_after = check_retry_after(self.import_retry_after)


def utc_timestamp() -> str:
    """Now, ISO 8601 UTC with a trailing Z, the way ACR and Event Grid write times."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class ManifestLedger:
    """What the backing registry told us through its notifications.

    distribution 2.8 keeps no tag timestamps and its delete notifications carry no media type, so
    the emulator remembers when manifests and tags were pushed and which digests are manifests.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._manifests: dict[tuple[str, str], tuple[str, str, str]] = {}  # media type, created, updated
        self._tags: dict[tuple[str, str], tuple[str, str]] = {}  # created, updated

    def record_push(self, repository: str, digest: str, media_type: str, tag: str | None) -> None:
        now = utc_timestamp()
        with self._lock:
            _, created, _ = self._manifests.get((repository, digest), (media_type, now, now))
            self._manifests[(repository, digest)] = (media_type, created, now)
            if tag:
                created, _ = self._tags.get((repository, tag), (now, now))
                self._tags[(repository, tag)] = (created, now)

    def forget_tag(self, repository: str, tag: str) -> None:
        with self._lock:
            self._tags.pop((repository, tag), None)

    def media_type(self, repository: str, digest: str) -> str | None:
        with self._lock:
            known = self._manifests.get((repository, digest))
        return known[0] if known else None

    def manifest_times(self, repository: str, digest: str) -> tuple[str, str]:
        """(createdTime, lastUpdateTime); something pushed before the emulator listened gets 'now'."""
        now = utc_timestamp()
        with self._lock:
            _, created, updated = self._manifests.get((repository, digest), ("", now, now))
        return created, updated

    def tag_times(self, repository: str, tag: str) -> tuple[str, str]:
        """(createdTime, lastUpdateTime) of a tag, 'now' for one pushed before the emulator listened."""
        now = utc_timestamp()
        with self._lock:
            return self._tags.get((repository, tag), (now, now))


class Emulator:
    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.created = utc_timestamp()
        self.auth = TokenAuthority(config)
        self.faults = FaultInjector()
        self.events = EventBus(config)
        self.ledger = ManifestLedger()
        self.referrers = ReferrersIndex.for_config(config)
        self.tasks: Any = None  # set by tasks.install(emu)
        self.importer: Any = None  # set by app.create_app (registry.Importer)
        self.upstream_tokens = UpstreamTokenService.from_config(config)  # None when not configured

    @property
    def login_server(self) -> str:
        return f"{self.config.host}:{self.config.port}"

    @property
    def base_url(self) -> str:
        return f"https://{self.login_server}"

    @property
    def registry_id(self) -> str:
        c = self.config
        return (
            f"/subscriptions/{c.subscription_id}/resourceGroups/{c.resource_group}"
            f"/providers/Microsoft.ContainerRegistry/registries/{c.registry_name}"
        )

    def close(self) -> None:
        self.events.close()
        self.referrers.close()
