"""Every setting acr-airlock reads, in one place, read once and typed.

``Settings.from_env(os.environ)`` is the only code that looks at the environment. Everything
else receives a ``Settings`` (or the few fields it needs). The table in docs/settings.md and
local.settings.sample.json list the same names; tests/unit/test_config.py keeps the three in step.
"""
from __future__ import annotations

import os.path
import re
from dataclasses import dataclass, field
from typing import Mapping, Optional

from .core.builds import is_valid_pool_name
from .errors import ConfigError, Problem

_QUEUE_NAME = re.compile(r"[a-z0-9][a-z0-9-]{1,54}[a-z0-9]")
DEFAULT_ALLOWED = ("docker.io", "quay.io", "registry.k8s.io", "mcr.microsoft.com", "ghcr.io")


@dataclass(frozen=True)
class SettingSpec:
    name: str
    default: Optional[str]
    doc: str
    secret: bool = False


# name, default, description. The order is the order of the docs table.
SPECS: tuple[SettingSpec, ...] = (
    SettingSpec("AZURE_SUBSCRIPTION_ID", None, "Subscription of the private ACR."),
    SettingSpec("ACR_RESOURCE_GROUP", None, "Resource group of the private ACR."),
    SettingSpec("ACR_NAME", None, "Name of the private ACR (not its login server)."),
    SettingSpec("ACR_LOGIN_SERVER", "", "Login server of the ACR; empty: read from ARM (registries.get)."),
    SettingSpec("ARM_ENDPOINT", "https://management.azure.com", "Azure Resource Manager endpoint."),
    SettingSpec("ARM_AUDIENCE", "https://management.azure.com", "Token audience for ARM."),
    SettingSpec("ACR_AUDIENCE", "https://containerregistry.azure.net", "Token audience for the ACR data plane."),
    SettingSpec("AzureWebJobsStorage", "", "Storage connection string (or use AzureWebJobsStorage__blobServiceUri)."),
    SettingSpec("AzureWebJobsStorage__blobServiceUri", "",
                "Blob endpoint for identity-based storage access (managed identity)."),
    SettingSpec("MANIFESTS_CONTAINER", "manifests", "Container watched for images.txt uploads and rule files."),
    SettingSpec("OUTCOMES_CONTAINER", "outcomes", "Container that receives one JSON outcome record per run."),
    SettingSpec("SOURCE_REGISTRY_ALLOWLIST", ",".join(DEFAULT_ALLOWED),
                "Comma-separated source registries that manifests may name (host[:port], *.suffix)."),
    SettingSpec("SOURCE_REGISTRY_MIRRORS", "",
                "Comma-separated REGISTRY=HOST[:PORT] pairs: where a source registry is reached from (mirror)."),
    SettingSpec("DOCKERHUB_USERNAME", "", "Docker Hub user for pulls and imports from docker.io."),
    SettingSpec("DOCKERHUB_TOKEN", "", "Docker Hub access token (Key Vault reference in Azure).", secret=True),
    SettingSpec("SYNC_CONCURRENCY", "8", "Imports the CLI sync runs at once (a queued run: one per message)."),
    SettingSpec("PLAN_CONCURRENCY", "16", "Digest look-ups (HEAD requests) run at once while planning."),
    SettingSpec("TOKEN_SCOPES_PER_REQUEST", "50",
                "Repositories one registry token request covers while planning (0: one token per repository)."),
    SettingSpec("IMPORT_TIMEOUT_SECONDS", "600", "Deadline for one import (including polling)."),
    SettingSpec("RETRY_MAX_ATTEMPTS", "4", "Attempts per call on 429, 5xx and dropped connections."),
    SettingSpec("RETRY_BASE_SECONDS", "1.0", "First back-off delay; doubles per attempt, with jitter."),
    SettingSpec("RETRY_MAX_SECONDS", "30", "Largest back-off delay."),
    SettingSpec("MANIFEST_MAX_BYTES", "1048576", "Largest manifest accepted."),
    SettingSpec("MANIFEST_MAX_ENTRIES", "5000", "Most entries in one manifest."),
    SettingSpec("RESYNC_SCHEDULE", "0 0 */6 * * *", "NCRONTAB schedule of the re-sync timer."),
    SettingSpec("SELF_HEAL_ENABLED", "true", "Re-import a mirrored tag when an ImageDeleted event names it."),
    SettingSpec("LOCK_REQUIRED", "false",
                "true: a manifest without its images.lock is invalid (nothing is imported); false: it is imported "
                "as its tags point now, with a warning."),
    SettingSpec("HTTP_MAX_BODY_BYTES", "1048576", "Largest HTTP request body accepted."),
    SettingSpec("HTTP_MAX_WAIT_SECONDS", "200", "Longest ?wait= an HTTP caller may ask for (platform limit 230 s)."),
    SettingSpec("BUILD_DEFAULT_AGENT_POOL", "", "Agent pool used when a build request names none."),
    SettingSpec("POOL_SCALE_UP_COUNT", "1", "Instances a pool at 0 is scaled to when a build needs it."),
    SettingSpec("POOL_IDLE_MINUTES", "30", "Idle time after which an empty pool is scaled to 0."),
    SettingSpec("POOL_SCALE_SCHEDULE", "0 */5 * * * *", "NCRONTAB schedule of the idle-pool timer."),
    SettingSpec("BUILD_RULES_BLOB", "build-rules.yaml", "Blob (in MANIFESTS_CONTAINER) holding the build rules."),
    SettingSpec("REQUESTS_CA_BUNDLE", "", "CA bundle for TLS to Azure and registries; empty: system trust store."),
    # telemetry (docs/operations.md)
    SettingSpec("APPLICATIONINSIGHTS_CONNECTION_STRING", "",
                "Application Insights connection string; set: spans, metrics and logs go to Azure Monitor "
                "(OpenTelemetry); empty: plain logging.", secret=True),
    SettingSpec("PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY", "false",
                "true: the Functions worker configures Azure Monitor itself and the app does not configure it again."),
    # queued runs (docs/architecture.md, "Run lifecycle")
    SettingSpec("AzureWebJobsStorage__queueServiceUri", "",
                "Queue endpoint for identity-based storage access (managed identity)."),
    SettingSpec("RUNS_QUEUE", "airlock-runs",
                "Storage queue of run chunks (the host moves failed messages to RUNS_QUEUE-poison)."),
    SettingSpec("RUN_CHUNK_ENTRIES", "50", "Entries per queue message; larger manifests fan out over instances."),
    SettingSpec("RUN_MAX_DEQUEUE_COUNT", "5",
                "Deliveries of one message before its transient failures are final; equals host.json "
                "queues.maxDequeueCount."),
    SettingSpec("RUN_DEADLINE_SECONDS", "3600",
                "A queued or running run with no progress for this long is abandoned by the reaper."),
    SettingSpec("RUN_LEASE_SECONDS", "60", "Blob lease on a chunk while it runs (15-60; renewed)."),
    SettingSpec("RUN_CLAIM_SECONDS", "300",
                "A blob trigger's claim on (blob name, content hash) expires after this; then another delivery "
                "takes it over. A queued run with no count of its sent chunk messages this long after it was "
                "queued (its sender died) has them sent by the reaper."),
    SettingSpec("REAPER_SCHEDULE", "0 */5 * * * *", "NCRONTAB schedule of the reaper timer."),
    SettingSpec("ACR_POLLING_INTERVAL", "5",
                "Seconds between polls of an import's long-running operation when ARM sends no Retry-After."),
    SettingSpec("ACR_PROBE_INTERVAL", "3",
                "Seconds between data-plane reads of the target tag while an import is pending; 0: off."),
)

_BY_NAME = {s.name: s for s in SPECS}


def appinsights_problem(connection_string: str) -> Optional[str]:
    """Why the Azure Monitor exporter would refuse ``connection_string`` (None: it accepts it).

    The exporter's own parser is the judge (the one ``configure_azure_monitor`` runs on first use), so a
    string is refused here exactly when exporting would fail: every later run would raise its ValueError
    after the trigger had written a record. Its reasons never quote the string (a secret)."""
    from azure.monitor.opentelemetry.exporter._connection_string_parser import ConnectionStringParser

    try:
        ConnectionStringParser(connection_string)
    except ValueError as exc:
        return str(exc).rstrip(".") or "not a connection string"
    return None


def _split_csv(value: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in value.split(",") if p.strip())


@dataclass(frozen=True)
class Settings:
    subscription_id: str
    resource_group: str
    registry_name: str
    login_server: str
    arm_endpoint: str
    arm_audience: str
    acr_audience: str
    storage_connection_string: str
    blob_service_uri: str
    manifests_container: str
    outcomes_container: str
    allowed_registries: tuple[str, ...]
    mirrors: Mapping[str, str]
    dockerhub_username: str
    dockerhub_token: str = field(repr=False)
    concurrency: int = 8
    plan_concurrency: int = 16
    token_scopes_per_request: int = 50
    import_timeout: float = 600.0
    retry_max_attempts: int = 4
    retry_base: float = 1.0
    retry_max: float = 30.0
    manifest_max_bytes: int = 1_048_576
    manifest_max_entries: int = 5000
    self_heal: bool = True
    lock_required: bool = False
    http_max_body: int = 1_048_576
    http_max_wait: float = 200.0
    build_default_pool: str = ""
    pool_scale_up_count: int = 1
    pool_idle_minutes: float = 30.0
    build_rules_blob: str = "build-rules.yaml"
    ca_bundle: str = ""
    appinsights_connection_string: str = field(default="", repr=False)
    worker_telemetry: bool = False
    queue_service_uri: str = ""
    runs_queue: str = "airlock-runs"
    run_chunk_entries: int = 50
    run_max_dequeue: int = 5
    run_deadline: float = 3600.0
    run_lease_seconds: int = 60
    run_claim_seconds: float = 300.0
    acr_polling_interval: float = 5.0
    acr_probe_interval: float = 3.0

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, offline: bool = False) -> "Settings":
        """Read and check every setting; all problems are reported together.

        ``offline`` (manifest validation) does not require the registry and storage settings.
        """
        problems: list[Problem] = []

        def raw(name: str) -> str:
            value = env.get(name)
            if value is None or value == "":
                value = _BY_NAME[name].default or ""
            return value.strip()

        def integer(name: str, low: int, high: int) -> int:
            text = raw(name)
            try:
                value = int(text)
            except ValueError:
                problems.append(Problem(f"must be a whole number, got {text!r}", field=name))
                return int(_BY_NAME[name].default or 0)
            if not low <= value <= high:
                problems.append(Problem(f"must be between {low} and {high}, got {value}", field=name))
            return value

        def number(name: str, low: float, high: float) -> float:
            text = raw(name)
            try:
                value = float(text)
            except ValueError:
                problems.append(Problem(f"must be a number, got {text!r}", field=name))
                return float(_BY_NAME[name].default or 0)
            if not low <= value <= high:
                problems.append(Problem(f"must be between {low:g} and {high:g}, got {value:g}", field=name))
            return value

        def boolean(name: str) -> bool:
            text = raw(name).lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            problems.append(Problem(f"must be true or false, got {text!r}", field=name))
            return True

        required = () if offline else ("AZURE_SUBSCRIPTION_ID", "ACR_RESOURCE_GROUP", "ACR_NAME")
        for name in required:
            if not raw(name):
                problems.append(Problem("is required", field=name))

        mirrors: dict[str, str] = {}
        for pair in _split_csv(raw("SOURCE_REGISTRY_MIRRORS")):
            registry, sep, target = pair.partition("=")
            if not sep or not registry.strip() or not target.strip():
                problems.append(Problem(f"expected REGISTRY=HOST[:PORT], got {pair!r}",
                                        field="SOURCE_REGISTRY_MIRRORS"))
                continue
            mirrors[registry.strip().lower()] = target.strip()

        pool = raw("BUILD_DEFAULT_AGENT_POOL")
        if pool and not is_valid_pool_name(pool):
            problems.append(Problem(f"must be an agent pool name (3-20 letters, digits or '-'), got {pool!r}",
                                    field="BUILD_DEFAULT_AGENT_POOL"))

        for name in ("ARM_ENDPOINT", "ARM_AUDIENCE"):
            if not raw(name).startswith("https://"):
                problems.append(Problem(f"must be an https:// URL, got {raw(name)!r}", field=name))

        settings = cls(
            subscription_id=raw("AZURE_SUBSCRIPTION_ID"),
            resource_group=raw("ACR_RESOURCE_GROUP"),
            registry_name=raw("ACR_NAME"),
            login_server=raw("ACR_LOGIN_SERVER"),
            arm_endpoint=raw("ARM_ENDPOINT").rstrip("/"),
            arm_audience=raw("ARM_AUDIENCE").rstrip("/"),
            acr_audience=raw("ACR_AUDIENCE").rstrip("/"),
            storage_connection_string=raw("AzureWebJobsStorage"),
            blob_service_uri=raw("AzureWebJobsStorage__blobServiceUri"),
            manifests_container=raw("MANIFESTS_CONTAINER"),
            outcomes_container=raw("OUTCOMES_CONTAINER"),
            allowed_registries=tuple(r.lower() for r in _split_csv(raw("SOURCE_REGISTRY_ALLOWLIST"))),
            mirrors=mirrors,
            dockerhub_username=raw("DOCKERHUB_USERNAME"),
            dockerhub_token=raw("DOCKERHUB_TOKEN"),
            concurrency=integer("SYNC_CONCURRENCY", 1, 64),
            plan_concurrency=integer("PLAN_CONCURRENCY", 1, 128),
            token_scopes_per_request=integer("TOKEN_SCOPES_PER_REQUEST", 0, 100),
            import_timeout=number("IMPORT_TIMEOUT_SECONDS", 1, 3600),
            retry_max_attempts=integer("RETRY_MAX_ATTEMPTS", 1, 10),
            retry_base=number("RETRY_BASE_SECONDS", 0, 60),
            retry_max=number("RETRY_MAX_SECONDS", 0, 600),
            manifest_max_bytes=integer("MANIFEST_MAX_BYTES", 1, 64 * 1024 * 1024),
            manifest_max_entries=integer("MANIFEST_MAX_ENTRIES", 1, 100_000),
            self_heal=boolean("SELF_HEAL_ENABLED"),
            lock_required=boolean("LOCK_REQUIRED"),
            http_max_body=integer("HTTP_MAX_BODY_BYTES", 1, 64 * 1024 * 1024),
            http_max_wait=number("HTTP_MAX_WAIT_SECONDS", 0, 229),
            build_default_pool=raw("BUILD_DEFAULT_AGENT_POOL"),
            pool_scale_up_count=integer("POOL_SCALE_UP_COUNT", 1, 100),
            pool_idle_minutes=number("POOL_IDLE_MINUTES", 0, 24 * 60),
            build_rules_blob=raw("BUILD_RULES_BLOB"),
            ca_bundle=raw("REQUESTS_CA_BUNDLE"),
            appinsights_connection_string=raw("APPLICATIONINSIGHTS_CONNECTION_STRING"),
            worker_telemetry=boolean("PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY"),
            queue_service_uri=raw("AzureWebJobsStorage__queueServiceUri"),
            runs_queue=raw("RUNS_QUEUE"),
            run_chunk_entries=integer("RUN_CHUNK_ENTRIES", 1, 5000),
            run_max_dequeue=integer("RUN_MAX_DEQUEUE_COUNT", 1, 100),
            run_deadline=number("RUN_DEADLINE_SECONDS", 1, 7 * 24 * 3600),
            run_lease_seconds=integer("RUN_LEASE_SECONDS", 15, 60),
            run_claim_seconds=number("RUN_CLAIM_SECONDS", 1, 24 * 3600),
            acr_polling_interval=number("ACR_POLLING_INTERVAL", 0.1, 60),
            acr_probe_interval=number("ACR_PROBE_INTERVAL", 0, 60),
        )
        if settings.appinsights_connection_string:
            reason = appinsights_problem(settings.appinsights_connection_string)
            if reason:
                problems.append(Problem(f"is not an Application Insights connection string ({reason}; expected "
                                        "InstrumentationKey=<GUID>;IngestionEndpoint=https://...)",
                                        field="APPLICATIONINSIGHTS_CONNECTION_STRING"))
        if settings.ca_bundle and not offline and not os.path.isfile(settings.ca_bundle):
            problems.append(Problem(f"{settings.ca_bundle}: no such file", field="REQUESTS_CA_BUNDLE"))
        if not _QUEUE_NAME.fullmatch(settings.runs_queue) or "--" in settings.runs_queue:
            problems.append(Problem("must be 3-56 lower-case letters, digits or single '-' (a storage queue name "
                                    f"that '-poison' still fits), got {settings.runs_queue!r}", field="RUNS_QUEUE"))
        if (not offline and not settings.storage_connection_string and settings.blob_service_uri
                and not settings.queue_service_uri):
            problems.append(Problem("is required with AzureWebJobsStorage__blobServiceUri (runs are queued)",
                                    field="AzureWebJobsStorage__queueServiceUri"))
        if not offline and not settings.storage_connection_string and not settings.blob_service_uri:
            problems.append(Problem("set a connection string, or AzureWebJobsStorage__blobServiceUri "
                                    "for managed identity", field="AzureWebJobsStorage"))
        if problems:
            raise ConfigError("invalid settings: " + "; ".join(str(p) for p in problems))
        return settings

    @property
    def registry_id(self) -> str:
        return (f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
                f"/providers/Microsoft.ContainerRegistry/registries/{self.registry_name}")

    def endpoint_for(self, registry: str) -> str:
        """Host[:port] a source registry is reached at (its mirror, when one is configured)."""
        return self.mirrors.get(registry.lower(), registry)

    def secrets(self) -> tuple[str, ...]:
        """Values that must never appear in logs, records or errors."""
        return tuple(v for v in (self.dockerhub_token,) if v)
