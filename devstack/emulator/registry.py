"""ARM surface of the registry resource: GET registry, the subscription's registries (``registries.list``),
POST importImage and its operation status.

Every call passes ``arm_preflight`` (bearer token for the ARM audience, api-version, known
subscription / resource group / registry). ``importImage`` validates its body like ARM (400 with an
ErrorResponse) and answers as the public recordings of ACR do (azure-cli
``test_acr_import_with_regional_endpoints.yaml``, azure-sdk-for-js container-registry recordings):
202 with a JSON ``null`` body, ``Location`` under
``/subscriptions/{sub}/providers/Microsoft.ContainerRegistry/locations/{LOCATION}/operationResults/
registries-{uuid}?api-version=...`` and ``Retry-After`` (``config.import_retry_after``: seconds
left, a fixed number, or absent). The poll URL answers 202 ``{"<target>": "Pending", ...,
"status": "Accepted"}`` (with ``Location`` again) while the import runs, then 200
``{"status": "Succeeded"}``, or the failure's status (never 2xx, so azure-core's Location polling
raises HttpResponseError) with an ErrorResponse.

Targets: ``targetTags`` (``repo[:tag]``; the tag defaults to the source's, then ``latest``) and
``untaggedTargetRepositories`` (the manifest lands by digest, no tag), alone or together (the
ImportImageByManifestDigest example sends both); neither means the source's repository and tag, as
``az acr import`` fills in. An imported manifest that has a ``subject`` is indexed as a referrer in
every target repository (referrers.py), so the referrers API lists it; importing an index imports
its platform manifests, not their referrers.

A ``source.resourceId`` names this registry (its own content) or another emulated ACR
(``config.peer_registries``: its content is read with the caller's identity, no credentials, as ACR
imports from a registry of its tenant); any other resource id fails the import with 404
``ResourceNotFound``. ``Importer.accepted()`` lists each import with what it named as its source and
whether credentials came with it (never their values).

Timing (profiles.py): an import runs for its copy time (``import_latency``, spread per source
image up to ``import_latency_max``) and until skopeo is done; with ``import_copy_at_end`` the copy
is made when the copy time is up, so the target tag appears then and not before.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import os
import re
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import referrers
from .auth import AuthError
from .dataplane import BackingRegistry
from .errors import arm_error
from .faults import IMPORT_KINDS

log = logging.getLogger(__name__)

REGISTRY_API_VERSIONS = ("2025-04-01", "2025-11-01", "2026-01-01-preview")
PROVIDER_PATH = (
    "/subscriptions/{subscription_id}/resourceGroups/{resource_group}/providers/Microsoft.ContainerRegistry"
)
REGISTRY_PATH = PROVIDER_PATH + "/registries/{registry_name}"
# Registries_List (Registry.tsp: ArmListBySubscription): every registry of the subscription
SUBSCRIPTION_REGISTRIES_PATH = "/subscriptions/{subscription_id}/providers/Microsoft.ContainerRegistry/registries"
# As recorded: under the subscription, not the resource group; the location in capitals.
OPERATION_PATH = (
    "/subscriptions/{subscription_id}/providers/Microsoft.ContainerRegistry/locations/{location}"
    "/operationResults/{operation_id}"
)
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
SKOPEO_TIMEOUT_SECONDS = 600

_COMPONENT = r"[a-zA-Z0-9]+(?:(?:[._]|__|-+)[a-zA-Z0-9]+)*"
_REPOSITORY = rf"{_COMPONENT}(?:/{_COMPONENT})*"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"sha256:[a-f0-9]{64}"
SOURCE_IMAGE = re.compile(rf"^(?P<repository>{_REPOSITORY})(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?$")
TARGET_TAG = re.compile(rf"^(?P<repository>{_REPOSITORY})(?::(?P<tag>{_TAG}))?$")
REPOSITORY = re.compile(rf"^{_REPOSITORY}$")
REGISTRY_ID = re.compile(
    r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.ContainerRegistry/registries/[^/]+$", re.I
)
JSON_UTF8 = "application/json; charset=utf-8"
_SKOPEO_MESSAGE = re.compile(r'msg="(?P<msg>(?:[^"\\]|\\.)*)"')


# --- preflight shared by every ARM route of the registry ----------------------------------------


def arm_preflight(emu, request: Request, api_versions: tuple[str, ...]) -> Response | None:
    """The 401 / 400 / 404 answer ARM would give before reaching the resource, or None."""
    try:
        emu.auth.check_arm_authorization(request.headers.get("authorization"))
    except AuthError as exc:
        challenge = (
            f'Bearer authorization_uri="https://login.microsoftonline.com/{emu.auth.tenant_id}", '
            f'error="invalid_token", error_description="{exc.message}"'
        )
        return arm_error(401, exc.code, exc.message, {"WWW-Authenticate": challenge})
    api_version = request.query_params.get("api-version")
    if not api_version:
        return arm_error(
            400,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        )
    if api_version not in api_versions:
        return arm_error(
            400,
            "NoRegisteredProviderFound",
            f"No registered resource provider found for API version '{api_version}'. "
            f"The supported api-versions are '{', '.join(api_versions)}'.",
        )
    c, params = emu.config, request.path_params
    expected = {
        "subscription_id": c.subscription_id,
        "resource_group": c.resource_group,
        "registry_name": c.registry_name,
    }
    for key, value in expected.items():
        if key in params and params[key].lower() != value.lower():
            return arm_error(
                404,
                "ResourceNotFound",
                f"The Resource 'Microsoft.ContainerRegistry/registries/{params.get('registry_name', c.registry_name)}' "
                f"under resource group '{params.get('resource_group', c.resource_group)}' was not found.",
            )
    return None


# --- importImage request validation -------------------------------------------------------------


class InvalidImport(Exception):
    def __init__(self, code: str, message: str, target: str) -> None:
        super().__init__(message)
        self.code, self.message, self.target = code, message, target


@dataclass(frozen=True)
class ImageName:
    repository: str
    tag: str | None = None
    digest: str | None = None

    def __str__(self) -> str:
        return self.repository + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")

    @property
    def pullable(self) -> str:
        """What skopeo can pull: by digest when given (it rejects tag+digest), else by tag."""
        return f"{self.repository}@{self.digest}" if self.digest else f"{self.repository}:{self.tag or 'latest'}"


@dataclass(frozen=True)
class ImportRequest:
    source: ImageName
    registry_uri: str | None
    resource_id: str | None
    credentials: tuple[str, str] | None = field(repr=False)
    target_tags: tuple[ImageName, ...]
    untagged_repositories: tuple[str, ...]
    force: bool


def _string_list(body: dict[str, Any], key: str) -> list[str]:
    value = body.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise InvalidImport("InvalidRequestContent", f"'{key}' must be an array of strings.", key)
    return value


def parse_import(body: Any) -> ImportRequest:
    """ImportImageParameters (2025-04-01 schema) -> ImportRequest, or InvalidImport."""
    if not isinstance(body, dict):
        raise InvalidImport("InvalidRequestContent", "The request content must be a JSON object.", "parameters")
    source = body.get("source")
    if not isinstance(source, dict):
        raise InvalidImport("InvalidRequestContent", "Required property 'source' not found in JSON.", "source")
    source_image = source.get("sourceImage")
    if not isinstance(source_image, str) or not source_image:
        raise InvalidImport(
            "InvalidRequestContent", "Required property 'sourceImage' not found in JSON.", "source.sourceImage"
        )
    parsed = SOURCE_IMAGE.match(source_image)
    if parsed is None:
        raise InvalidImport(
            "InvalidParameter", f"Source image '{source_image}' is not a valid image reference.", "source.sourceImage"
        )
    registry_uri, resource_id = source.get("registryUri"), source.get("resourceId")
    if bool(registry_uri) == bool(resource_id):
        raise InvalidImport(
            "InvalidParameter", "Exactly one of 'registryUri' or 'resourceId' must be specified.", "source"
        )
    if resource_id and (not isinstance(resource_id, str) or not REGISTRY_ID.match(resource_id)):
        raise InvalidImport(
            "InvalidParameter", f"'{resource_id}' is not a container registry resource id.", "source.resourceId"
        )
    if registry_uri and not isinstance(registry_uri, str):
        raise InvalidImport("InvalidRequestContent", "'registryUri' must be a string.", "source.registryUri")
    credentials = source.get("credentials")
    if credentials is not None and not (
        isinstance(credentials, dict)
        and isinstance(credentials.get("password"), str)
        and isinstance(credentials.get("username", ""), str)
    ):
        raise InvalidImport(
            "InvalidRequestContent", "'credentials' must be an object with a string 'password'.", "source.credentials"
        )
    mode = body.get("mode", "NoForce")
    if not isinstance(mode, str) or mode.lower() not in ("noforce", "force"):
        raise InvalidImport("InvalidParameter", f"Import mode '{mode}' is invalid; use NoForce or Force.", "mode")

    image = ImageName(parsed["repository"].lower(), parsed["tag"], parsed["digest"])
    target_tags = []
    for entry in _string_list(body, "targetTags"):
        match = TARGET_TAG.match(entry)
        if match is None:
            raise InvalidImport(
                "InvalidParameter", f"Target tag '{entry}' is not of the form repo[:tag].", "targetTags"
            )
        target_tags.append(ImageName(match["repository"].lower(), match["tag"] or image.tag or "latest"))
    untagged = []
    for entry in _string_list(body, "untaggedTargetRepositories"):
        if not REPOSITORY.match(entry):
            raise InvalidImport(
                "InvalidParameter", f"'{entry}' is not a valid repository name.", "untaggedTargetRepositories"
            )
        untagged.append(entry.lower())
    if not target_tags and not untagged:
        target_tags.append(ImageName(image.repository, image.tag or "latest"))
    return ImportRequest(
        source=image,
        registry_uri=registry_uri or None,
        resource_id=resource_id or None,
        credentials=(credentials.get("username", ""), credentials["password"]) if credentials else None,
        target_tags=tuple(target_tags),
        untagged_repositories=tuple(untagged),
        force=mode.lower() == "force",
    )


# --- the import itself --------------------------------------------------------------------------


@dataclass(frozen=True)
class Failure:
    status: int
    code: str
    message: str


class ImportFailed(Exception):
    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


class SkopeoError(Exception):
    pass


@dataclass
class ImportOperation:
    id: str
    copy_seconds: float = 0.0
    targets: tuple[str, ...] = ()
    source: str = ""  # "resourceId <id>" or "registryUri <host>", then the source image
    with_credentials: bool = False  # whether source.credentials came with it (their values are not kept)
    started: float = field(default_factory=time.monotonic)
    done: bool = False
    copied_at: float | None = None  # monotonic time the copy ended (the target tags exist from then)
    failure: Failure | None = None
    task: asyncio.Task | None = None


@dataclass(frozen=True)
class SourceRegistry:
    host: str
    plain_http: bool  # the backing registry itself


async def skopeo(*args: str, secret: str | None = None) -> bytes:
    """Run skopeo; stdout on success, SkopeoError (with ``secret`` scrubbed from stderr) otherwise."""
    process = await asyncio.create_subprocess_exec(
        "skopeo", "--insecure-policy", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), SKOPEO_TIMEOUT_SECONDS)
    except asyncio.TimeoutError as exc:
        raise SkopeoError(f"skopeo {args[0]} timed out after {SKOPEO_TIMEOUT_SECONDS}s") from exc
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    if process.returncode != 0:
        reason = _skopeo_reason(stderr.decode("utf-8", "replace"))
        raise SkopeoError(reason.replace(secret, "***") if secret else reason)
    return stdout


def _skopeo_reason(stderr: str) -> str:
    """The message of skopeo's last logrus line (level=fatal msg="..."), else its last line."""
    messages = _SKOPEO_MESSAGE.findall(stderr)
    if messages:
        return messages[-1].replace('\\"', '"')
    lines = stderr.strip().splitlines()
    return lines[-1] if lines else "skopeo failed"


def _classify(error: str) -> tuple[int, str]:
    lowered = error.lower()
    if any(marker in lowered for marker in ("manifest unknown", "name unknown", "not found")):
        return 404, "ManifestUnknown"
    if any(marker in lowered for marker in ("unauthorized", "authentication required", "denied")):
        return 400, "ImportSourceUnauthorized"
    if any(marker in lowered for marker in ("pinging container registry", "dial tcp", "x509:", "no such host")):
        return 400, "SourceRegistryUnreachable"
    return 400, "ImportFailed"


class Importer:
    def __init__(self, emu, backing: BackingRegistry) -> None:
        self._emu = emu
        self._backing = backing
        self._backing_host = urlsplit(emu.config.backing_url).netloc
        self._operations: dict[str, ImportOperation] = {}
        self._cert_dir: str | None = None

    def _ca_dir(self) -> str | None:
        """A directory holding the local CA as ca.crt, the layout skopeo's --cert-dir expects."""
        if self._cert_dir is None and self._emu.config.ca_cert_path:
            self._cert_dir = tempfile.mkdtemp(prefix="emulator-ca-")
            shutil.copyfile(self._emu.config.ca_cert_path, os.path.join(self._cert_dir, "ca.crt"))
        return self._cert_dir

    def copy_seconds(self, request: ImportRequest) -> float:
        """The copy time of this import: ``import_latency``, or spread up to ``import_latency_max`` by a
        hash of source registry, repository and tag and the targets (not the digest: the same entry of
        a manifest takes the same time in every run, whatever version it copies)."""
        low = max(0.0, float(self._emu.config.import_latency))
        high = float(self._emu.config.import_latency_max or 0.0)
        if high <= low:
            return low
        targets = ",".join(str(t) for t in request.target_tags) + "," + ",".join(request.untagged_repositories)
        source = f"{request.source.repository}:{request.source.tag or ''}"
        key = f"{request.registry_uri or request.resource_id}/{source}>{targets}".lower().encode()
        fraction = int.from_bytes(hashlib.sha256(key).digest()[:8], "big") / 2**64
        return low + (high - low) * fraction

    def start(self, request: ImportRequest, fault: str | None) -> ImportOperation:
        targets = tuple(str(t) for t in request.target_tags) + request.untagged_repositories
        named = f"resourceId {request.resource_id}" if request.resource_id else f"registryUri {request.registry_uri}"
        operation = ImportOperation(f"registries-{uuid.uuid4()}", self.copy_seconds(request), targets,
                                    f"{named} {request.source}", request.credentials is not None)
        self._operations[operation.id] = operation
        if fault == "import-fail":
            operation.failure = self._failure(
                operation, ImportFailed(404, "ManifestUnknown", f"Source image {request.source}: manifest unknown")
            )
            operation.done = True
        elif fault != "import-stuck":
            operation.task = asyncio.get_running_loop().create_task(self._run(operation, request))
        log.info("import %s accepted: %s (fault=%s)", operation.id, request.source, fault)
        return operation

    def get(self, operation_id: str) -> ImportOperation | None:
        return self._operations.get(operation_id)

    def retry_after(self, operation: ImportOperation) -> dict[str, str]:
        """The Retry-After header for a 202 of this operation ({} when the profile sends none)."""
        mode = self._emu.config.import_retry_after
        if mode == "none":
            return {}
        if mode == "auto":
            remaining = operation.started + operation.copy_seconds - time.monotonic()
            return {"Retry-After": str(max(1, math.ceil(remaining)))}
        return {"Retry-After": mode}

    def finished(self, operation: ImportOperation) -> bool:
        return operation.done and time.monotonic() >= operation.started + operation.copy_seconds

    def copy_times(self) -> dict[str, float]:
        """Target -> copy time of the latest import that wrote it (benchmarks subtract it)."""
        ordered = sorted(list(self._operations.values()), key=lambda op: op.started)
        return {target: op.copy_seconds for op in ordered for target in op.targets}

    def timeline(self, since: float) -> list[tuple[float, float]]:
        """(accepted, copy ended) of each import accepted at or after the monotonic time ``since``,
        in seconds after it, in order of acceptance (benchmarks show where a run's time goes)."""
        ordered = sorted(list(self._operations.values()), key=lambda op: op.started)
        return [(op.started - since, op.started + op.copy_seconds - since) for op in ordered if op.started >= since]

    def accepted(self) -> list[ImportOperation]:
        """Every import accepted so far, in order (tests read what each named as its source)."""
        return sorted(list(self._operations.values()), key=lambda op: op.started)

    def in_flight(self) -> int:
        """Imports accepted and not yet finished (what a benchmark reads as the achieved concurrency)."""
        return sum(1 for op in list(self._operations.values()) if not self.finished(op))

    async def aclose(self) -> None:
        pending = [op.task for op in self._operations.values() if op.task and not op.task.done()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if self._cert_dir:
            shutil.rmtree(self._cert_dir, ignore_errors=True)

    def _failure(self, operation: ImportOperation, exc: ImportFailed) -> Failure:
        message = f"Operation {operation.id} failed. Resource {self._emu.registry_id} {exc.detail}"
        return Failure(exc.status, exc.code, message)

    async def _run(self, operation: ImportOperation, request: ImportRequest) -> None:
        try:
            tag_at = operation.started + operation.copy_seconds if self._emu.config.import_copy_at_end else None
            began = time.monotonic()
            await self._copy(request, tag_at)
            operation.copied_at = time.monotonic()
            log.info("import %s copied %s in %.2fs (copy time %.1fs)", operation.id, request.source,
                     operation.copied_at - began, operation.copy_seconds)
        except ImportFailed as exc:
            operation.failure = self._failure(operation, exc)
            log.info("import %s failed: %s %s", operation.id, exc.code, exc.detail)
        except Exception:
            log.exception("import %s crashed", operation.id)
            operation.failure = Failure(500, "InternalServerError", f"Operation {operation.id} failed unexpectedly.")
        finally:
            operation.done = True

    def _locate(self, request: ImportRequest) -> SourceRegistry:
        emu = self._emu
        if request.resource_id:
            if request.resource_id.lower() == emu.registry_id.lower():
                return SourceRegistry(self._backing_host, plain_http=True)
            peers = {rid.lower(): url for rid, url in emu.config.peer_registries.items()}
            peer = peers.get(request.resource_id.lower())
            if peer:  # another ACR of the tenant: its content, read with the caller's identity
                return SourceRegistry(urlsplit(peer).netloc, plain_http=True)
            raise ImportFailed(404, "ResourceNotFound", f"Source registry '{request.resource_id}' was not found.")
        host = request.registry_uri.split("://", 1)[-1].rstrip("/")
        if host.lower() == emu.login_server.lower():
            return SourceRegistry(self._backing_host, plain_http=True)
        if urlsplit(f"//{host}").hostname not in LOOPBACK_HOSTS:
            raise ImportFailed(
                400, "SourceRegistryUnreachable", f"Registry '{host}' is not reachable from the devstack emulator."
            )
        return SourceRegistry(host, plain_http=False)

    def _source_flags(self, source: SourceRegistry, request: ImportRequest, prefix: str) -> list[str]:
        if source.plain_http:
            flags = [f"{prefix}tls-verify=false"]
        else:
            ca_dir = self._ca_dir()
            flags = [f"{prefix}cert-dir", ca_dir] if ca_dir else []
        if request.credentials:
            username, password = request.credentials
            return [*flags, f"{prefix}creds", f"{username}:{password}"]
        return [*flags, f"{prefix}no-creds"]

    async def _copy(self, request: ImportRequest, tag_at: float | None = None) -> None:
        """Copy the image. With ``tag_at`` (monotonic time) the content is copied at once but by
        digest only, and the target tags are written at ``tag_at``: they appear when the copy time is
        up, however long skopeo took (ACR too writes the tags at the end of an import)."""
        source = self._locate(request)
        if not request.force:
            for target in request.target_tags:
                if await self._backing.head_manifest(target.repository, target.tag) is not None:
                    raise ImportFailed(409, "Conflict", f"{target} Tag {target} already exists in target registry.")
        secret = request.credentials[1] if request.credentials else None
        try:
            manifest = await skopeo(
                "inspect",
                "--raw",
                *self._source_flags(source, request, "--"),
                f"docker://{source.host}/{request.source.pullable}",
                secret=secret,
            )
            digest = f"sha256:{hashlib.sha256(manifest).hexdigest()}"
            targets = [(t.repository, f":{t.tag}") for t in request.target_tags]
            targets += [(repository, f"@{digest}") for repository in request.untagged_repositories]
            if tag_at is not None:  # by digest now (each repository once), the tags at tag_at
                targets = list(dict.fromkeys((repository, f"@{digest}") for repository, _ in targets))
            (first_repository, first_reference), *others = targets
            copy = ("copy", "--all", "--preserve-digests", "--dest-tls-verify=false", "--dest-no-creds")
            # by digest (tag_at): content a repository holds already is not copied again, as ACR
            # does not move layers it has (and the stand-in's CPU is not spent on skopeo for nothing)
            if tag_at is None or await self._backing.head_manifest(first_repository, digest) is None:
                await skopeo(
                    *copy,
                    *self._source_flags(source, request, "--src-"),
                    f"docker://{source.host}/{request.source.repository}@{digest}",
                    f"docker://{self._backing_host}/{first_repository}{first_reference}",
                    secret=secret,
                )
            landed = f"docker://{self._backing_host}/{first_repository}@{digest}"
            for repository, reference in others:
                if tag_at is not None and await self._backing.head_manifest(repository, digest) is not None:
                    continue
                await skopeo(
                    *copy, "--src-tls-verify=false", "--src-no-creds", landed,
                    f"docker://{self._backing_host}/{repository}{reference}",
                )
            await self._index_referrers(dict.fromkeys(repository for repository, _ in targets), manifest, digest)
            if tag_at is not None:
                await asyncio.sleep(max(0.0, tag_at - time.monotonic()))
                await self._backing.tag_manifest(
                    [(t.repository, t.tag) for t in request.target_tags], first_repository, digest
                )
        except SkopeoError as exc:
            status, code = _classify(str(exc))
            raise ImportFailed(status, code, f"Import of {request.source} from {source.host} failed: {exc}") from exc


    async def _index_referrers(self, repositories, manifest: bytes, digest: str) -> None:
        """Index the imported manifest (and, for an index, each of its manifests) in every target
        repository when it has a ``subject``, as a data-plane push would. Only what was imported is
        indexed: the referrers of the source's manifests stay behind unless imported themselves."""
        found = [referrers.referrer(manifest, digest)]
        try:
            children = json.loads(manifest).get("manifests") or []
        except (ValueError, AttributeError):
            children = []
        if children:
            first = next(iter(repositories))
            for child in children:
                child_digest = child.get("digest") if isinstance(child, dict) else None
                if not isinstance(child_digest, str) or not referrers.valid_digest(child_digest):
                    continue
                got = await self._backing.get_manifest_bytes(first, child_digest)
                if got is not None:
                    found.append(referrers.referrer(got[1], child_digest, got[0]))
        for item in found:
            if item is None:
                continue
            subject, descriptor = item
            for repository in repositories:
                await asyncio.to_thread(self._emu.referrers.record, repository, subject, descriptor)


# --- routes -------------------------------------------------------------------------------------


def routes(emu, importer: Importer) -> list[Route]:
    async def get_registry(request: Request) -> Response:
        return arm_preflight(emu, request, REGISTRY_API_VERSIONS) or JSONResponse(registry_resource(emu))

    async def list_registries(request: Request) -> Response:
        """``registries.list``: this emulator's one registry, as a RegistryListResult (``value``; no
        ``nextLink``: one page). Another subscription is ARM's 404 SubscriptionNotFound."""
        if refusal := arm_preflight(emu, request, REGISTRY_API_VERSIONS):
            if refusal.status_code != 404:
                return refusal
            subscription = request.path_params["subscription_id"]
            return arm_error(404, "SubscriptionNotFound", f"The subscription '{subscription}' could not be found.")
        return JSONResponse({"value": [registry_resource(emu)]})

    async def import_image(request: Request) -> Response:
        if refusal := arm_preflight(emu, request, REGISTRY_API_VERSIONS):
            return refusal
        try:
            body = await request.json()
        except ValueError:
            return arm_error(400, "InvalidRequestContent", "The request content is not valid JSON.")
        try:
            parsed = parse_import(body)
        except InvalidImport as exc:
            return arm_error(400, exc.code, exc.message, target=exc.target)
        fault = emu.faults.take(IMPORT_KINDS, request.method, request.url.path)
        operation = importer.start(parsed, fault.kind if fault else None)
        location = operation_url(emu, operation.id, request.query_params["api-version"])
        return Response(
            b"null",
            status_code=202,
            media_type=JSON_UTF8,
            headers={"Location": location, **importer.retry_after(operation)},
        )

    async def operation_status(request: Request) -> Response:
        if refusal := arm_preflight(emu, request, REGISTRY_API_VERSIONS):
            return refusal
        operation_id = request.path_params["operation_id"]
        operation = importer.get(operation_id)
        if operation is None or request.path_params["location"].lower() != emu.config.location.lower():
            return arm_error(404, "OperationNotFound", f"Operation {operation_id} was not found.")
        if not importer.finished(operation):
            pending: dict[str, str] = {target: "Pending" for target in operation.targets}
            return JSONResponse(
                {**pending, "status": "Accepted"},
                status_code=202,
                media_type=JSON_UTF8,
                headers={
                    "Location": operation_url(emu, operation.id, request.query_params["api-version"]),
                    **importer.retry_after(operation),
                },
            )
        if operation.failure:
            return arm_error(operation.failure.status, operation.failure.code, operation.failure.message)
        return JSONResponse({"status": "Succeeded"}, media_type=JSON_UTF8)

    return [
        Route(SUBSCRIPTION_REGISTRIES_PATH, list_registries, methods=["GET"]),
        Route(REGISTRY_PATH, get_registry, methods=["GET"]),
        Route(REGISTRY_PATH + "/importImage", import_image, methods=["POST"]),
        Route(OPERATION_PATH, operation_status, methods=["GET"]),
    ]


def operation_url(emu, operation_id: str, api_version: str) -> str:
    c = emu.config
    path = OPERATION_PATH.format(
        subscription_id=c.subscription_id, location=c.location.upper(), operation_id=operation_id
    )
    return f"{emu.base_url}{path}?api-version={api_version}"


def registry_resource(emu) -> dict[str, Any]:
    """The registry as GET returns it (shape of the RegistryGet 2025-04-01 example)."""
    c = emu.config
    return {
        "id": emu.registry_id,
        "name": c.registry_name,
        "type": "Microsoft.ContainerRegistry/registries",
        "location": c.location,
        "tags": {},
        "sku": {"name": "Standard", "tier": "Standard"},
        "properties": {
            "loginServer": emu.login_server,
            "creationDate": emu.created,
            "provisioningState": "Succeeded",
            "adminUserEnabled": False,
            "networkRuleSet": {"defaultAction": "Allow", "ipRules": []},
            "policies": {
                "quarantinePolicy": {"status": "disabled"},
                "trustPolicy": {"type": "Notary", "status": "disabled"},
                "retentionPolicy": {"days": 7, "lastUpdatedTime": emu.created, "status": "disabled"},
                "exportPolicy": {"status": "enabled"},
                "azureADAuthenticationAsArmPolicy": {"status": "enabled"},
            },
            "encryption": {"status": "disabled"},
            "status": None,
            "dataEndpointEnabled": False,
            "dataEndpointHostNames": [],
            "privateEndpointConnections": [],
            "publicNetworkAccess": "Enabled",
            "networkRuleBypassOptions": "AzureServices",
            "zoneRedundancy": "Disabled",
            "anonymousPullEnabled": False,
        },
    }
