"""Every referrer of an image digest in its source registry (not only signatures), with bounded reads.

``ReferrerLookup(source).find(registry, repository, subject)`` reads, for one digest:

1. the OCI 1.1 referrers API, ``GET /v2/<repo>/referrers/<digest>`` (an image index; ``Link: rel="next"``
   pages followed, at most MAX_PAGES). A 404 (or 405) on the first page means the registry has no
   referrers API: then the referrers tag schema, ``GET /v2/<repo>/manifests/sha256-<hex>`` (an index;
   404: none), as ORAS, @sigstore/oci and cosign write it on such registries;
2. cosign's tag scheme: a HEAD of ``sha256-<hex>.sig``, ``.att`` and ``.sbom`` (404: none). A HEAD gives
   the digest without the manifest (and does not count as a Docker Hub pull).

Unlike ``shared.adapters.signatures.SignatureFinder`` (which reads signature artifacts to verify them),
this lists every referrer, whatever its type, and reads no referrer manifest or blob: ``importImage``
copies them server-side. ``shared.core.referrers`` parses and decides.

Bounds: each index is read raw and abandoned past MAX_INDEX_BYTES (``ManifestReader.get_bounded``);
each request has REQUEST_TIMEOUT; at most MAX_PER_SUBJECT referrers per digest. Failures: 429, 5xx and
dropped connections raise TransientError (the caller retries the look-up); a refusal raises
UpstreamError; an index that is not one becomes a ``problems`` entry (the other sources still count).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Optional

import httpx

from ..core import referrers as core
from ..errors import UpstreamError
from .registry import MANIFEST_ACCEPT, ManifestReader, _next_link

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = httpx.Timeout(15.0, connect=10.0)
MAX_PAGES = 4


@dataclass
class Discovery:
    """What one subject's look-up found."""

    subject: str
    referrers: list[core.Referrer] = field(default_factory=list)
    skipped: int = 0                       # index entries left out (unreadable, past MAX_PER_SUBJECT)
    referrers_api: Optional[bool] = None   # True: the API answered; False: the tag schema was read
    problems: list[str] = field(default_factory=list)


class ReferrerLookup:
    """Referrers of digests in source registries (see the module docstring)."""

    def __init__(self, source):
        self._source = source  # shared.adapters.registry.SourceRegistry

    def find(self, registry: str, repository: str, subject: str) -> Discovery:
        if not core.valid_digest(subject):
            raise UpstreamError(f"not a sha256 digest: {subject!r}", code="InvalidDigest")
        reader: ManifestReader = self._source.reader(registry)
        found = Discovery(subject)
        self._api(reader, repository, found)
        for suffix in core.COSIGN_SUFFIXES:
            tag = core.cosign_tag(subject, suffix)
            response = reader.head(repository, tag)
            if response is not None:
                digest = response.headers.get("Docker-Content-Digest", "")
                if core.valid_digest(digest):
                    found.referrers.append(core.tag_referrer(subject, suffix, digest))
                else:
                    found.problems.append(f"tag {tag} answered digest {digest[:80]!r}, not a sha256 digest")
        log.debug("referrers of %s@%s at %s: %d (referrers API %s, %d skipped)", repository, subject, registry,
                  len(found.referrers), found.referrers_api, found.skipped)
        return found

    def _api(self, reader: ManifestReader, repository: str, found: Discovery) -> None:
        scope = f"repository:{repository}:pull"
        path: Optional[str] = f"/v2/{repository}/referrers/{found.subject}"
        for page in range(MAX_PAGES):
            what = f"referrers of {found.subject} (page {page + 1})"
            status, body, headers = reader.get_bounded(path, scope, core.MEDIA_OCI_INDEX, core.MAX_INDEX_BYTES,
                                                       missing=(404, 405) if page == 0 else (404,),
                                                       timeout=REQUEST_TIMEOUT)
            if status != 200:
                if page == 0:
                    self._tag_schema(reader, repository, found)
                return
            found.referrers_api = True
            if not self._add(body, what, found):
                return
            path = _next_link(headers.get("Link"))
            if not path:
                return

    def _tag_schema(self, reader: ManifestReader, repository: str, found: Discovery) -> None:
        found.referrers_api = False
        tag = core.referrers_tag(found.subject)
        status, body, _ = reader.get_bounded(f"/v2/{repository}/manifests/{tag}", f"repository:{repository}:pull",
                                             MANIFEST_ACCEPT, core.MAX_INDEX_BYTES, timeout=REQUEST_TIMEOUT)
        if status == 200:
            self._add(body, f"referrers tag {tag}", found)

    @staticmethod
    def _add(body: bytes, what: str, found: Discovery) -> bool:
        try:
            listed, skipped = core.parse_index(body, found.subject, what)
        except core.Unreadable as exc:
            found.problems.append(str(exc))
            return False
        known = {r.digest for r in found.referrers}
        found.referrers += [r for r in listed if r.digest not in known]
        found.skipped += skipped
        return True
