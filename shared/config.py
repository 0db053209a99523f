"""Every setting acr-airlock reads, in one place, read once and typed.

``Settings.from_env(os.environ)`` is the only code that looks at the environment. Everything
else receives a ``Settings`` (or the few fields it needs). The table in docs/settings.md and
local.settings.sample.json list the same names; tests/unit/test_config.py keeps the three in step.
One unit on purpose: one place for settings (each spec, its type, its check) is the rule this module
exists for, so it grows by a few lines with every setting rather than being split by concern.

Three modes. The Function App (default) needs the registry (subscription, resource group, name) and
storage, and uses DefaultAzureCredential. ``offline`` (manifest checks, ``lock``) needs neither.
``cli`` (the command line, the way ``az`` works): the registry's name is enough - the subscription
comes from the Azure CLI's current account and the resource group is found from the name through ARM
(``shared.adapters.azure_clients.AzureClients.locate``), settings and flags still win - and storage is
optional (without it nothing is recorded, and the commands that read records say so). The credential
is one azure-identity credential, chosen by ``CLI_CREDENTIAL`` (``credential_kind``), named in its errors.

Source registry credentials: ``SOURCE_REGISTRY_CREDENTIALS`` (``ghcr.io=GHCR,reg.example.com:5000=EXAMPLE``)
gives each source registry a name, and the name the two settings ``REGISTRY_<NAME>_USERNAME`` and
``REGISTRY_<NAME>_PASSWORD`` (a Key Vault reference in Azure). These are the only settings whose names
are not in ``SPECS``; docs/settings.md describes them. Registries are matched as manifests name them
(lower case, Docker Hub aliases folded into ``docker.io``). ``DOCKERHUB_USERNAME`` / ``DOCKERHUB_TOKEN``
still give docker.io its credentials. ``SOURCE_ACR_RESOURCE_IDS`` marks source registries that are
Azure Container Registries: read with the app's identity and imported by resource id, no password.
Passwords are in ``Settings.secrets()``; no problem reported here quotes a value of these settings.
"""
from __future__ import annotations

import os.path
import re
from dataclasses import dataclass, field
from typing import Mapping, Optional

from .core.builds import is_valid_pool_name
from .core.reference import ReferenceSyntaxError, normalise_registry, validate_registry
from .errors import ConfigError, Problem

_QUEUE_NAME = re.compile(r"[a-z0-9][a-z0-9-]{1,54}[a-z0-9]")
_MEDIA_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}")
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
# CLI_CREDENTIAL values: the azure-identity credential the command line uses ("default": the whole
# DefaultAzureCredential chain, which the Function App always uses)
CREDENTIALS = ("auto", "azure-cli", "managed-identity", "environment", "workload-identity", "default")
DEFAULT_ALLOWED = ("docker.io", "quay.io", "registry.k8s.io", "mcr.microsoft.com", "ghcr.io")


@dataclass(frozen=True)
class SettingSpec:
    name: str
    default: Optional[str]
    doc: str
    secret: bool = False


# name, default, description. The order is the order of the docs table.
SPECS: tuple[SettingSpec, ...] = (
    SettingSpec("AZURE_SUBSCRIPTION_ID", None,
                "Subscription of the private ACR (command line: optional, default the Azure CLI's current one)."),
    SettingSpec("ACR_RESOURCE_GROUP", None,
                "Resource group of the private ACR (command line: optional, found from ACR_NAME through ARM)."),
    SettingSpec("ACR_NAME", None, "Name of the private ACR (not its login server)."),
    SettingSpec("ACR_LOGIN_SERVER", "", "Login server of the ACR; empty: read from ARM (registries.get)."),
    SettingSpec("ARM_ENDPOINT", "https://management.azure.com", "Azure Resource Manager endpoint."),
    SettingSpec("ARM_AUDIENCE", "https://management.azure.com", "Token audience for ARM."),
    SettingSpec("ACR_AUDIENCE", "https://containerregistry.azure.net", "Token audience for the ACR data plane."),
    SettingSpec("AzureWebJobsStorage", "",
                "Storage connection string (or use AzureWebJobsStorage__blobServiceUri). Command line: optional; "
                "without storage nothing is recorded."),
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
    SettingSpec("SOURCE_REGISTRY_CREDENTIALS", "",
                "Comma-separated REGISTRY=NAME pairs: the source registry's user and password are the settings "
                "REGISTRY_<NAME>_USERNAME and REGISTRY_<NAME>_PASSWORD (the password a Key Vault reference in Azure)."),
    SettingSpec("SOURCE_ACR_RESOURCE_IDS", "",
                "Comma-separated LOGIN_SERVER=RESOURCE_ID pairs: source registries that are Azure Container "
                "Registries, read with the app's identity and imported by resource id (no password)."),
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
    SettingSpec("REFERRERS_ENABLED", "true",
                "Carry an imported image's referrers (signatures, SBOMs, attestations; OCI referrers API and cosign "
                ".sig/.att/.sbom tags) into the ACR after it lands."),
    SettingSpec("REFERRERS_UNCHANGED", "true",
                "Also compare the referrers of unchanged entries on every run and import the missing ones (new "
                "signatures upstream, or one that failed before)."),
    SettingSpec("REFERRER_ARTIFACT_TYPES", "",
                "Comma-separated artifact types to carry; empty: every referrer. cosign tags count as "
                "application/vnd.dev.cosign.artifact.<sig|att|sbom>.v1+json."),
    SettingSpec("TRUST_REPOSITORY", "airlock/trust",
                "ACR repository the verification material is published to (airlock trust publish)."),
    SettingSpec("HTTP_MAX_BODY_BYTES", "1048576", "Largest HTTP request body accepted."),
    SettingSpec("HTTP_MAX_WAIT_SECONDS", "200", "Longest ?wait= an HTTP caller may ask for (platform limit 230 s)."),
    SettingSpec("SERVE_API_KEY", "",
                "`airlock serve` only: the key every request must carry (x-functions-key header or ?code=); "
                "empty: none (the Functions host checks function keys itself).", secret=True),
    SettingSpec("BUILD_DEFAULT_AGENT_POOL", "", "Agent pool used when a build request names none."),
    SettingSpec("POOL_SCALE_UP_COUNT", "1", "Instances a pool at 0 is scaled to when a build needs it."),
    SettingSpec("POOL_IDLE_MINUTES", "30", "Idle time after which an empty pool is scaled to 0."),
    SettingSpec("POOL_SCALE_SCHEDULE", "0 */5 * * * *", "NCRONTAB schedule of the idle-pool timer."),
    SettingSpec("BUILD_RULES_BLOB", "build-rules.yaml", "Blob (in MANIFESTS_CONTAINER) holding the build rules."),
    SettingSpec("BUILD_RULE_MAX_CHAIN", "5",
                "Most rules in one chain of rule builds (a rule firing for an image pushed by a rule build "
                "extends that build's chain); a longer chain is cut and recorded (1-20)."),
    SettingSpec("BUILD_RULE_PRODUCER_WAIT_SECONDS", "20",
                "How long a push event waits for running rule builds that may have pushed it to end (their "
                "output images tell); then the event fails and Event Grid delivers it again (0-25)."),
    # trust at the border (docs/trust.md)
    SettingSpec("TRUST_POLICY_BLOB", "trust-policy.yaml",
                "Blob (in MANIFESTS_CONTAINER) holding the trust policy: the signatures each source must carry. "
                "Absent: no signature is verified (records say which policy a run verified under, or null)."),
    SettingSpec("TRUST_ROOTS_PREFIX", "trust/roots/",
                "Where (in MANIFESTS_CONTAINER) operator-supplied Sigstore trusted roots are: a scope's trusted_root "
                "NAME is the blob <prefix>NAME.json. Scopes without one use the public-good root shipped with "
                "sigstore."),
    SettingSpec("TRUST_VERDICT_PREFIX", "verdicts/",
                "Where (in OUTCOMES_CONTAINER) verified signature verdicts are cached, one blob per (image digest, "
                "scope signatures, trusted root), shared by every instance."),
    SettingSpec("TRUST_VERDICT_TTL_SECONDS", "86400",
                "How long a verified verdict is reused (never past the expiry of a certificate or signature it "
                "depended on); 0: verify every time."),
    SettingSpec("TRUST_LOOKUP_DEADLINE_SECONDS", "60",
                "Longest time finding one image's signatures at its source may take (reads past it are abandoned "
                "and the verdict is invalid)."),
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
    # the command line (README "Command line")
    SettingSpec("CLI_CREDENTIAL", "auto",
                "The Azure credential of the command line: auto (the managed identity when IDENTITY_ENDPOINT is "
                "set, a service principal when AZURE_CLIENT_ID and AZURE_TENANT_ID come with a secret, certificate "
                "or federated token file, else the Azure CLI's login), azure-cli, managed-identity, environment, "
                "workload-identity, or default (DefaultAzureCredential's chain). The Function App always uses "
                "DefaultAzureCredential."),
)

_BY_NAME = {s.name: s for s in SPECS}

# SOURCE_REGISTRY_CREDENTIALS names settings: REGISTRY_<NAME>_USERNAME / REGISTRY_<NAME>_PASSWORD
CREDENTIAL_NAME = re.compile(r"[A-Z][A-Z0-9]{0,39}")
_ACR_ID = re.compile(r"/subscriptions/[^/\s]+/resourceGroups/[^/\s]+/providers/Microsoft\.ContainerRegistry"
                     r"/registries/[A-Za-z0-9]{5,50}", re.IGNORECASE)


def credential_settings(name: str) -> tuple[str, str]:
    """The user and password settings of a SOURCE_REGISTRY_CREDENTIALS name."""
    return f"REGISTRY_{name}_USERNAME", f"REGISTRY_{name}_PASSWORD"


def _registry_key(text: str) -> str:
    """A source registry as manifests name it after normalisation (lower case, Docker Hub aliases folded);
    ValueError with the reason when it is not ``host[:port]``."""
    if "/" in text or "@" in text:
        raise ValueError(f"{text!r} is not a registry host[:port] (no scheme or path)")
    try:
        return normalise_registry(validate_registry(text))
    except ReferenceSyntaxError as exc:
        raise ValueError(str(exc)) from None


NO_EXPORTER = ("is set, but exporting needs the Azure Monitor exporter, which `pip install acr-airlock` leaves out: "
               "pip install 'acr-airlock[functions]', or unset it")


def appinsights_problem(connection_string: str) -> Optional[str]:
    """Why the Azure Monitor exporter would refuse ``connection_string`` (None: it accepts it).

    The exporter's own parser is the judge (the one ``configure_azure_monitor`` runs on first use), so a
    string is refused here exactly when exporting would fail: every later run would raise its ValueError
    after the trigger had written a record. Its reasons never quote the string (a secret). Without the exporter
    installed (the command line's wheel without the ``functions`` extra) a set string is refused too."""
    try:
        from azure.monitor.opentelemetry.exporter._connection_string_parser import ConnectionStringParser
    except ImportError:  # the command line installed without the Function App's extra
        return NO_EXPORTER
    try:
        ConnectionStringParser(connection_string)
    except ValueError as exc:
        return str(exc).rstrip(".") or "not a connection string"
    return None


def credential_kind(env: Mapping[str, str]) -> str:
    """``CLI_CREDENTIAL=auto``: which credential the environment sets up (azure-identity's variables), else
    the Azure CLI's login."""
    def has(*names: str) -> bool:
        return all(env.get(name) for name in names)

    if has("IDENTITY_ENDPOINT") or has("MSI_ENDPOINT"):
        return "managed-identity"
    if has("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_FEDERATED_TOKEN_FILE"):
        return "workload-identity"
    if has("AZURE_CLIENT_ID", "AZURE_TENANT_ID") and (has("AZURE_CLIENT_SECRET")
                                                       or has("AZURE_CLIENT_CERTIFICATE_PATH")):
        return "environment"
    return "azure-cli"


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
    # registry (normalised host[:port]) -> (user, password), from SOURCE_REGISTRY_CREDENTIALS
    registry_credentials: Mapping[str, tuple[str, str]] = field(default_factory=dict, repr=False)
    # registry (login server) -> ARM resource id of that ACR, from SOURCE_ACR_RESOURCE_IDS
    source_acrs: Mapping[str, str] = field(default_factory=dict)
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
    referrers_enabled: bool = True
    referrers_unchanged: bool = True
    referrer_artifact_types: tuple[str, ...] = ()
    trust_repository: str = "airlock/trust"
    http_max_body: int = 1_048_576
    http_max_wait: float = 200.0
    serve_api_key: str = field(default="", repr=False)
    build_default_pool: str = ""
    pool_scale_up_count: int = 1
    pool_idle_minutes: float = 30.0
    build_rules_blob: str = "build-rules.yaml"
    rule_max_chain: int = 5
    rule_producer_wait: float = 20.0
    trust_policy_blob: str = "trust-policy.yaml"
    trust_roots_prefix: str = "trust/roots/"
    trust_verdict_prefix: str = "verdicts/"
    trust_verdict_ttl: float = 86400.0
    trust_lookup_deadline: float = 60.0
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
    cli: bool = False             # the command line: fail fast on unreachable endpoints (azure_clients)
    credential: str = "default"   # CREDENTIALS less "auto": the credential AzureClients builds

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, offline: bool = False, cli: bool = False) -> "Settings":
        """Read and check every setting; all problems are reported together.

        ``offline`` (manifest validation) does not require the registry and storage settings; ``cli`` (the
        command line) requires only the registry's name (see the module docstring).
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

        # the command line asks for the registry's name only in commands that use the registry (Services.for_cli)
        required = () if offline or cli else ("AZURE_SUBSCRIPTION_ID", "ACR_RESOURCE_GROUP", "ACR_NAME")
        for name in required:
            if not raw(name):
                problems.append(Problem("is required", field=name))

        credential = "default"
        if cli:
            credential = raw("CLI_CREDENTIAL").lower()
            if credential not in CREDENTIALS:
                problems.append(Problem(f"must be one of {', '.join(CREDENTIALS)}, got {credential!r}",
                                        field="CLI_CREDENTIAL"))
                credential = "default"
            elif credential == "auto":
                credential = credential_kind(env)

        mirrors: dict[str, str] = {}
        for pair in _split_csv(raw("SOURCE_REGISTRY_MIRRORS")):
            registry, sep, target = pair.partition("=")
            if not sep or not registry.strip() or not target.strip():
                problems.append(Problem(f"expected REGISTRY=HOST[:PORT], got {pair!r}",
                                        field="SOURCE_REGISTRY_MIRRORS"))
                continue
            mirrors[registry.strip().lower()] = target.strip()

        registry_credentials = _read_credentials(env, raw("SOURCE_REGISTRY_CREDENTIALS"), problems)
        source_acrs = _read_source_acrs(raw("SOURCE_ACR_RESOURCE_IDS"), problems)
        for registry in sorted(set(registry_credentials) & set(source_acrs)):
            problems.append(Problem(f"{registry} is also in SOURCE_REGISTRY_CREDENTIALS: an ACR source is read with "
                                    "the app's identity, give it one or the other", field="SOURCE_ACR_RESOURCE_IDS"))
        if "docker.io" in registry_credentials and (raw("DOCKERHUB_USERNAME") or raw("DOCKERHUB_TOKEN")):
            problems.append(Problem("docker.io has credentials there and in DOCKERHUB_USERNAME / DOCKERHUB_TOKEN: "
                                    "keep one", field="SOURCE_REGISTRY_CREDENTIALS"))

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
            registry_credentials=registry_credentials,
            source_acrs=source_acrs,
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
            referrers_enabled=boolean("REFERRERS_ENABLED"),
            referrers_unchanged=boolean("REFERRERS_UNCHANGED"),
            referrer_artifact_types=_split_csv(raw("REFERRER_ARTIFACT_TYPES")),
            trust_repository=raw("TRUST_REPOSITORY"),
            http_max_body=integer("HTTP_MAX_BODY_BYTES", 1, 64 * 1024 * 1024),
            http_max_wait=number("HTTP_MAX_WAIT_SECONDS", 0, 229),
            serve_api_key=raw("SERVE_API_KEY"),
            build_default_pool=raw("BUILD_DEFAULT_AGENT_POOL"),
            pool_scale_up_count=integer("POOL_SCALE_UP_COUNT", 1, 100),
            pool_idle_minutes=number("POOL_IDLE_MINUTES", 0, 24 * 60),
            build_rules_blob=raw("BUILD_RULES_BLOB"),
            rule_max_chain=integer("BUILD_RULE_MAX_CHAIN", 1, 20),
            rule_producer_wait=number("BUILD_RULE_PRODUCER_WAIT_SECONDS", 0, 25),
            trust_policy_blob=raw("TRUST_POLICY_BLOB"),
            trust_roots_prefix=raw("TRUST_ROOTS_PREFIX"),
            trust_verdict_prefix=raw("TRUST_VERDICT_PREFIX"),
            trust_verdict_ttl=number("TRUST_VERDICT_TTL_SECONDS", 0, 30 * 24 * 3600),
            trust_lookup_deadline=number("TRUST_LOOKUP_DEADLINE_SECONDS", 1, 600),
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
            cli=cli,
            credential=credential,
        )
        if settings.appinsights_connection_string:
            reason = appinsights_problem(settings.appinsights_connection_string)
            if reason == NO_EXPORTER:
                problems.append(Problem(reason, field="APPLICATIONINSIGHTS_CONNECTION_STRING"))
            elif reason:
                problems.append(Problem(f"is not an Application Insights connection string ({reason}; expected "
                                        "InstrumentationKey=<GUID>;IngestionEndpoint=https://...)",
                                        field="APPLICATIONINSIGHTS_CONNECTION_STRING"))
        key = settings.serve_api_key
        if key and (len(key) < 16 or not all("!" <= c <= "~" for c in key)):  # never quoted: a secret
            problems.append(Problem(f"must be at least 16 printable ASCII characters without spaces (got {len(key)} "
                                    "characters); e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'",
                                    field="SERVE_API_KEY"))
        if settings.ca_bundle and not offline and not os.path.isfile(settings.ca_bundle):
            problems.append(Problem(f"{settings.ca_bundle}: no such file", field="REQUESTS_CA_BUNDLE"))
        for media_type in settings.referrer_artifact_types:
            if not _MEDIA_TYPE.fullmatch(media_type):
                problems.append(Problem(f"must list media types (type/subtype), got {media_type[:100]!r}",
                                        field="REFERRER_ARTIFACT_TYPES"))
        if not _REPOSITORY.fullmatch(settings.trust_repository) or len(settings.trust_repository) > 255:
            problems.append(Problem("must be a repository name (lower-case path components), got "
                                    f"{settings.trust_repository[:100]!r}", field="TRUST_REPOSITORY"))
        for name, value in (("TRUST_ROOTS_PREFIX", settings.trust_roots_prefix),
                            ("TRUST_VERDICT_PREFIX", settings.trust_verdict_prefix)):
            if not value.endswith("/") or value.startswith("/") or "//" in value or ".." in value.split("/"):
                problems.append(Problem(f"must be a blob name prefix ending in '/', got {value!r}", field=name))
        if settings.trust_policy_blob in (settings.build_rules_blob,) or settings.trust_policy_blob.endswith(
                (".txt", ".lock")):
            problems.append(Problem("must name a blob of its own (not a manifest, a lock or the build rule file), "
                                    f"got {settings.trust_policy_blob!r}", field="TRUST_POLICY_BLOB"))
        if not _QUEUE_NAME.fullmatch(settings.runs_queue) or "--" in settings.runs_queue:
            problems.append(Problem("must be 3-56 lower-case letters, digits or single '-' (a storage queue name "
                                    f"that '-poison' still fits), got {settings.runs_queue!r}", field="RUNS_QUEUE"))
        app = not offline and not cli  # the command line runs in process: storage optional, no queue
        if app and not settings.storage_connection_string and settings.blob_service_uri \
                and not settings.queue_service_uri:
            problems.append(Problem("is required with AzureWebJobsStorage__blobServiceUri (runs are queued)",
                                    field="AzureWebJobsStorage__queueServiceUri"))
        if app and not settings.storage_connection_string and not settings.blob_service_uri:
            problems.append(Problem("set a connection string, or AzureWebJobsStorage__blobServiceUri "
                                    "for managed identity", field="AzureWebJobsStorage"))
        if problems:
            raise ConfigError("invalid settings: " + "; ".join(str(p) for p in problems))
        return settings

    @property
    def has_storage(self) -> bool:
        """Whether outcome records can be written and read (a connection string or a blob endpoint)."""
        return bool(self.storage_connection_string or self.blob_service_uri)

    @property
    def registry_id(self) -> str:
        return (f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
                f"/providers/Microsoft.ContainerRegistry/registries/{self.registry_name}")

    def endpoint_for(self, registry: str) -> str:
        """Host[:port] a source registry is reached at (its mirror, when one is configured)."""
        return self.mirrors.get(registry.lower(), registry)

    def secrets(self) -> tuple[str, ...]:
        """Values that must never appear in logs, records or errors."""
        passwords = (password for _, password in self.registry_credentials.values())
        return tuple(v for v in (self.dockerhub_token, self.serve_api_key, *passwords) if v)

    def credentials_for(self, registry: str) -> Optional[tuple[str, str]]:
        """(user, password) for a source registry (as manifests name it), or None."""
        key = registry.lower()
        if key in self.registry_credentials:
            return self.registry_credentials[key]
        if key == "docker.io" and self.dockerhub_username and self.dockerhub_token:
            return (self.dockerhub_username, self.dockerhub_token)
        return None

    def source_acr_id(self, registry: str) -> Optional[str]:
        """The resource id of a source registry that is an ACR (SOURCE_ACR_RESOURCE_IDS), or None."""
        return self.source_acrs.get(registry.lower())


def _pairs(value: str, field_name: str, shape: str, problems: list[Problem]) -> list[tuple[str, str]]:
    """``A=B, C=D`` -> [(registry key, B), ...]; malformed pairs and registries are problems."""
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for pair in _split_csv(value):
        registry, sep, target = (part.strip() for part in pair.partition("="))
        if not sep or not registry or not target:
            problems.append(Problem(f"expected {shape}, got {pair!r}", field=field_name))
            continue
        try:
            key = _registry_key(registry)
        except ValueError as exc:
            problems.append(Problem(f"{registry!r}: {exc}", field=field_name))
            continue
        if key in seen:
            problems.append(Problem(f"{key} is listed twice", field=field_name))
            continue
        seen.add(key)
        out.append((key, target))
    return out


def _read_credentials(env: Mapping[str, str], value: str, problems: list[Problem]) -> dict[str, tuple[str, str]]:
    """SOURCE_REGISTRY_CREDENTIALS and the settings it names. Problems name settings, never values."""
    found: dict[str, tuple[str, str]] = {}
    for registry, name in _pairs(value, "SOURCE_REGISTRY_CREDENTIALS", "REGISTRY=NAME", problems):
        if not CREDENTIAL_NAME.fullmatch(name):
            problems.append(Problem(f"{registry}: the name {name!r} must be 1-40 upper-case letters or digits, "
                                    "starting with a letter (it names REGISTRY_<NAME>_USERNAME and "
                                    "REGISTRY_<NAME>_PASSWORD)", field="SOURCE_REGISTRY_CREDENTIALS"))
            continue
        user_setting, password_setting = credential_settings(name)
        user, password = (env.get(user_setting) or "").strip(), (env.get(password_setting) or "").strip()
        missing = [n for n, v in ((user_setting, user), (password_setting, password)) if not v]
        for setting in missing:
            problems.append(Problem(f"is required: SOURCE_REGISTRY_CREDENTIALS gives {registry} the name {name}",
                                    field=setting))
        if password.startswith("@Microsoft.KeyVault("):
            problems.append(Problem("is a Key Vault reference the platform did not resolve (check the app's "
                                    "identity and its Key Vault Secrets User role)", field=password_setting))
            continue
        if not missing:
            found[registry] = (user, password)
    return found


def _read_source_acrs(value: str, problems: list[Problem]) -> dict[str, str]:
    found: dict[str, str] = {}
    for registry, resource_id in _pairs(value, "SOURCE_ACR_RESOURCE_IDS", "LOGIN_SERVER=RESOURCE_ID", problems):
        if not _ACR_ID.fullmatch(resource_id):
            problems.append(Problem(f"{registry}: {resource_id!r} is not a container registry's resource id "
                                    "(/subscriptions/<id>/resourceGroups/<group>/providers/"
                                    "Microsoft.ContainerRegistry/registries/<name>)", field="SOURCE_ACR_RESOURCE_IDS"))
            continue
        found[registry] = resource_id
    return found
