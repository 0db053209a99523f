"""Finding an image's signatures in its source registry, with bounded reads; the trusted roots.

``SignatureFinder(source).find(registry, repository, digest)`` reads, for one image digest:

1. the OCI 1.1 referrers API, ``GET /v2/<repo>/referrers/<digest>`` (an image index; ``Link: rel="next"``
   pages followed, at most MAX_REFERRER_PAGES). A 404 (or 405) means the registry has no referrers API:
   then the referrers tag schema, ``GET /v2/<repo>/manifests/sha256-<hex>`` (an index; 404: none), as
   @sigstore/oci and cosign write it on such registries (Debian's docker-registry is one). With
   ``remember_missing_api`` (the plan's finder) a host that answered so once is asked the tag schema
   directly for the rest of the process;
2. cosign's tag scheme, ``GET /v2/<repo>/manifests/sha256-<hex>.sig`` (404: none);
3. for each signature the index lists (Sigstore bundles, cosign 2 signature referrers, Notary
   Project signatures; other referrers such as SBOMs are passed over), its manifest by digest, then
   the blobs ``shared.core.trust.artifacts.plan_artifact`` names: each content checked against its digest.

It returns the ``SignatureArtifact`` values for ``shared.core.trust.sigstore.verify_image``.
``SignatureFinder.image(...)`` reads the same places one at a time (``cosign_tag()``, ``referrers()``),
under the same deadline, for a caller that can stop at the first place holding a signature it accepts. Multi-platform
images: signatures are attached to the digest that was signed, normally the index a tag names; the
airlock imports that index digest, so that is the digest to look up (per-platform signatures are not
consulted).

Bounds, so that a hostile registry cannot make one image expensive or hang a worker:
- every body is streamed (``Accept-Encoding: identity``, read raw: no decompression) and abandoned past
  its limit: MAX_MANIFEST_BYTES for indexes and manifests, MAX_BLOB_BYTES for signature blobs; a
  declared ``Content-Length`` or descriptor size over the limit is refused before any byte is read;
- each request has REQUEST_TIMEOUT (connect, and each read), and the whole lookup one deadline
  (``deadline``, default LOOKUP_DEADLINE seconds): a body still arriving when it passes is abandoned;
- at most MAX_ARTIFACTS signature artifacts and MAX_SIGNATURE_LAYERS layers per cosign manifest.

What a failure becomes: a size over a limit, a digest that does not match, an unreadable document or a
body still arriving at the deadline is a ``SignatureArtifact.problem`` (the core reports ``invalid`` with
it); 429, 5xx, a dropped connection or a registry that stops answering (read timeout) raise
``TransientError`` (the caller retries the image); 401/403 after the challenge raise ``UpstreamError``.

Trusted roots (``SigstoreTrust``): ``public_good_trust()`` is the Sigstore public-good root that
sigstore-python ships (no TUF refresh: offline); ``trust_from_file(path)`` reads one the operator
supplies (e.g. made with ``cosign trusted-root create`` for a private Sigstore, as air-gapped guides do).
"""
from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import httpx

from ..core import trust as core
from ..core.trust.artifacts import SignatureArtifact
from ..errors import ConfigError, TransientError, ValidationError
from .registry import MANIFEST_ACCEPT, ManifestReader, _next_link
from .registry_auth import _status_error

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = httpx.Timeout(15.0, connect=10.0)
LOOKUP_DEADLINE = 60.0
MAX_REFERRER_PAGES = 4
MAX_TRUSTED_ROOT_BYTES = 16 * 1024 * 1024
MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
PUBLIC_GOOD_ROOT = "https%3A%2F%2Ftuf-repo-cdn.sigstore.dev/trusted_root.json"  # in sigstore's _store package


@dataclass(frozen=True)
class SignatureLookup:
    digest: str
    artifacts: tuple[SignatureArtifact, ...]
    referrers_api: Optional[bool]  # True: the registry answered the referrers API; False: tag schema read
    passed_over: int = 0  # referrers of other kinds (SBOMs, attestations...) or beyond MAX_ARTIFACTS


class _Refused(Exception):
    """A document this lookup will not use (the message says why); it becomes an artifact problem."""


class _Deadline:
    def __init__(self, seconds: float, clock: Callable[[], float]):
        self.seconds = seconds
        self._clock = clock
        self._end = clock() + seconds

    def left(self) -> float:
        return self._end - self._clock()

    def timeout(self) -> httpx.Timeout:
        left = max(0.5, self.left())
        return httpx.Timeout(min(REQUEST_TIMEOUT.read, left), connect=min(REQUEST_TIMEOUT.connect, left))

    def check(self, what: str) -> None:
        if self.left() <= 0:
            raise _Refused(f"{what} did not arrive within the {self.seconds:g} s allowed for an image's signatures")


class SignatureFinder:
    """Signature artifacts of image digests in source registries (see the module docstring).

    ``SignatureFinder.lookups`` counts the look-ups this process started (every finder's), so tests and
    benchmarks can tell a verdict read from a cache from one that went to the registry."""

    lookups = 0
    _count_lock = threading.Lock()
    _without_api: set[str] = set()  # hosts whose referrers API answered 404/405 (``remember_missing_api``)

    def __init__(self, source, *, deadline: float = LOOKUP_DEADLINE, clock: Callable[[], float] = time.monotonic,
                 remember_missing_api: bool = False):
        self._source = source  # shared.adapters.registry.SourceRegistry
        self._deadline = deadline
        self._clock = clock
        # a registry without the referrers API (404/405 for an image that exists) has none for any image:
        # with this, later look-ups on that host go straight to the tag schema (one request less per image)
        self._remember = remember_missing_api

    def find(self, registry: str, repository: str, digest: str) -> SignatureLookup:
        """Every signature artifact of ``digest``: the referrers (API or tag schema), then cosign's tag."""
        image = self.image(registry, repository, digest)
        found = image.referrers()
        return SignatureLookup(digest, found.artifacts + image.cosign_tag().artifacts, found.referrers_api,
                               found.passed_over)

    def image(self, registry: str, repository: str, digest: str) -> "ImageSignatures":
        """One image's look-up, read place by place (one deadline for all of it): a caller that is
        satisfied by the first place it reads (a verified signature) need not read the others."""
        if not core.valid_digest(digest):
            raise ValidationError(f"not a sha256 digest: {core.one_line(repr(digest), 90)}", code="InvalidDigest")
        with SignatureFinder._count_lock:
            SignatureFinder.lookups += 1
        reader: ManifestReader = self._source.reader(registry)
        lookup = _Lookup(reader, repository, _Deadline(self._deadline, self._clock),
                         SignatureFinder._without_api if self._remember else None)
        return ImageSignatures(lookup, registry, repository, digest)


class ImageSignatures:
    """The places one image's signatures live, each read on demand (``SignatureFinder.image``)."""

    def __init__(self, lookup: "_Lookup", registry: str, repository: str, digest: str):
        self._lookup = lookup
        self.registry, self.repository, self.digest = registry, repository, digest

    def cosign_tag(self) -> SignatureLookup:
        """cosign's ``sha256-<hex>.sig`` tag (one GET when there is none)."""
        tag = self.digest.replace(":", "-") + ".sig"
        found = self._lookup.artifact(f"tag:{tag}", f"/v2/{self.repository}/manifests/{tag}", None, missing_ok=True)
        return SignatureLookup(self.digest, (found,) if found is not None else (), None)

    def referrers(self) -> SignatureLookup:
        """The OCI referrers API (or, without one, the referrers tag schema) and each signature it lists."""
        lookup = self._lookup
        artifacts: list[SignatureArtifact] = []
        listed, passed, api = lookup.referrers(self.digest, artifacts)
        for desc in listed:
            location = f"{'referrers' if api else 'referrers-tag'}:{desc.digest}"
            artifacts.append(lookup.artifact(location, f"/v2/{self.repository}/manifests/{desc.digest}", desc.digest,
                                             declared=desc.size))
        log.debug("referrers of %s@%s at %s: %d artifact(s), referrers API %s, %d passed over", self.repository,
                  self.digest, self.registry, len(artifacts), api, passed)
        return SignatureLookup(self.digest, tuple(artifacts), api, passed)


class _Lookup:
    def __init__(self, reader: ManifestReader, repository: str, budget: _Deadline,
                 without_api: Optional[set[str]] = None):
        self.reader = reader
        self.repository = repository
        self.scope = f"repository:{repository}:pull"
        self.budget = budget
        self.without_api = without_api  # hosts known to have no referrers API (None: always ask)

    def referrers(self, digest: str, problems: list[SignatureArtifact]
                  ) -> tuple[list[core.Descriptor], int, Optional[bool]]:
        """The signature descriptors the referrers API (or, without one, the tag schema) lists; an index
        that cannot be used is added to ``problems``."""
        listed: list[core.Descriptor] = []
        passed = 0
        if self.without_api is not None and self.reader.host in self.without_api:
            return self._referrers_tag(digest, problems)
        path: Optional[str] = f"/v2/{self.repository}/referrers/{digest}"
        for page in range(MAX_REFERRER_PAGES):
            what = f"referrers index of {digest}"
            try:
                status, body, headers = self.get(path, MEDIA_INDEX, core.MAX_MANIFEST_BYTES, what,
                                                 missing=(404, 405) if page == 0 else (404,))
                if status != 200:
                    if page == 0:
                        if self.without_api is not None:
                            self.without_api.add(self.reader.host)
                        return self._referrers_tag(digest, problems)
                    break
                found, skipped = core.referrers(body, what)
            except (_Refused, core.Unreadable) as exc:
                problems.append(SignatureArtifact(f"referrers:{digest}", problem=str(exc)))
                break
            listed += found
            passed += skipped
            path = _next_link(headers.get("Link"))
            if not path:
                break
        return _capped(listed, passed) + (True,)

    def _referrers_tag(self, digest: str, problems: list[SignatureArtifact]
                       ) -> tuple[list[core.Descriptor], int, Optional[bool]]:
        tag = digest.replace(":", "-")
        what = f"referrers tag {tag}"
        try:
            status, body, _ = self.get(f"/v2/{self.repository}/manifests/{tag}", MANIFEST_ACCEPT,
                                       core.MAX_MANIFEST_BYTES, what, missing=(404,))
            listed, passed = core.referrers(body, what) if status == 200 else ([], 0)
        except (_Refused, core.Unreadable) as exc:
            problems.append(SignatureArtifact(f"referrers-tag:{tag}", problem=str(exc)))
            listed, passed = [], 0
        return _capped(listed, passed) + (False,)

    def artifact(self, location: str, path: str, expected: Optional[str], *, declared: Optional[int] = None,
                 missing_ok: bool = False) -> Optional[SignatureArtifact]:
        """One signature manifest and the blobs its plan names; None for a missing tag (``missing_ok``)."""
        what = f"signature manifest at {location}"
        try:
            if declared is not None and declared > core.MAX_MANIFEST_BYTES:
                raise _Refused(f"{what} declares {declared} bytes, over the {core.MAX_MANIFEST_BYTES} byte limit")
            status, manifest, _ = self.get(path, MANIFEST_ACCEPT, core.MAX_MANIFEST_BYTES, what,
                                           missing=(404,) if missing_ok else ())
            if status == 404:
                return None
            if expected is not None and _sha256(manifest) != expected:
                raise _Refused(f"{what} does not match its digest (got {_sha256(manifest)})")
            plan = core.plan_artifact(manifest, what)
        except (_Refused, core.Unreadable) as exc:
            return SignatureArtifact(location, problem=str(exc))
        blobs: dict[str, bytes] = {}
        blob_problems: dict[str, str] = {}
        for layer in plan.fetch:
            try:
                _, data, _ = self.get(f"/v2/{self.repository}/blobs/{layer.digest}", "*/*", core.MAX_BLOB_BYTES,
                                      f"blob {layer.digest}")
                if _sha256(data) != layer.digest:
                    raise _Refused(f"blob {layer.digest} does not match its digest (got {_sha256(data)})")
                blobs[layer.digest] = data
            except _Refused as exc:
                blob_problems[layer.digest] = str(exc)
        return SignatureArtifact(location, manifest, blobs, None, blob_problems)

    def get(self, path: str, accept: str, limit: int, what: str,
            missing: tuple[int, ...] = ()) -> tuple[int, bytes, httpx.Headers]:
        """(status, body, headers) of a bounded GET; ``missing`` statuses come back with an empty body."""
        self.budget.check(what)
        headers = {"Accept": accept, "Accept-Encoding": "identity"}
        try:
            with self.reader.open(path, self.scope, headers, timeout=self.budget.timeout()) as response:
                status = response.status_code
                if status in missing:
                    _drain(response, self.budget)  # a short "not found" body: read, so the connection is reused
                    return status, b"", response.headers
                if status in (401, 403):
                    raise self.reader.denied(status)
                if status != 200:
                    raise _status_error(response, f"{self.reader.name} ({what})")
                return status, _bounded(response, limit, what, self.budget), response.headers
        except httpx.TooManyRedirects:
            raise _Refused(f"{what}: too many redirects") from None
        except httpx.TransportError as exc:  # refused or dropped connection, silent registry: retry the image
            raise TransientError(f"{self.reader.name}: {what}: {type(exc).__name__}",
                                 code="SignatureReadFailed") from exc


MAX_DRAINED = 64 * 1024  # an error body read to keep its connection; a longer one is dropped with it


def _drain(response: httpx.Response, budget: _Deadline) -> None:
    """Read a short answer that is not used (a 404's JSON): a response closed unread closes its
    connection, and the next request would pay for a new TLS handshake. A long or slow one is left."""
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > MAX_DRAINED:
        return
    read = 0
    for chunk in response.iter_raw():
        read += len(chunk)
        if read > MAX_DRAINED or budget.left() <= 0:
            return


def _capped(listed: list[core.Descriptor], passed: int) -> tuple[list[core.Descriptor], int]:
    extra = max(0, len(listed) - core.MAX_ARTIFACTS)
    return listed[:core.MAX_ARTIFACTS], passed + extra


def _bounded(response: httpx.Response, limit: int, what: str, budget: _Deadline) -> bytes:
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _Refused(f"{what} is {declared} bytes, over the {limit} byte limit")
    body = bytearray()
    for chunk in response.iter_raw():
        body += chunk
        if len(body) > limit:
            raise _Refused(f"{what} is over the {limit} byte limit (stopped reading at {len(body)} bytes)")
        budget.check(what)
    return bytes(body)


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# --- trusted roots -----------------------------------------------------------------------------------

_public_good: Optional[core.SigstoreTrust] = None
_public_good_lock = threading.Lock()


def public_good_bytes() -> bytes:
    """The bytes of the public-good trusted root sigstore-python ships (read, not parsed: its sha256 is the
    root's fingerprint in verdict cache keys)."""
    from importlib.resources import files

    return files("sigstore._store").joinpath(PUBLIC_GOOD_ROOT).read_bytes()


def public_good_trust() -> core.SigstoreTrust:
    """Sigstore's public-good trusted root as sigstore-python ships it (parsed once per process)."""
    global _public_good
    with _public_good_lock:
        if _public_good is None:
            _public_good = core.SigstoreTrust(public_good_bytes(),
                                              source="Sigstore public-good trusted root (sigstore-python)")
        return _public_good


def trust_from_file(path: str) -> core.SigstoreTrust:
    """A trusted root the operator supplies (``trusted_root.json``); errors name the file."""
    file = Path(path)
    try:
        size = file.stat().st_size
        if size > MAX_TRUSTED_ROOT_BYTES:
            raise ConfigError(f"trusted root {path} is {size} bytes, over {MAX_TRUSTED_ROOT_BYTES}")
        data = file.read_bytes()
    except OSError as exc:
        raise ConfigError(f"trusted root {path} cannot be read: {exc.strerror or exc}") from None
    return core.SigstoreTrust(data, source=f"trusted root {path}")
