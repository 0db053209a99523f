"""Publishing the verification material into the ACR: ``publish_trust_material(services, policy_bytes)``.

The trust policy decides which signatures an image needs before it crosses; the clusters behind the
border verify them again at admission, without internet. They need the same material: the Sigstore
trusted roots (the public-good root sigstore-python ships, and each operator root a scope names),
the cosign public keys and the notation trust stores of the policy, and the policy itself. This pushes
them as one OCI artifact (``shared.core.trustmaterial``: one layer per file, ``trust.json`` saying what
each is) to TRUST_REPOSITORY in the ACR, under ``trust-<16 hex of its digest>`` and ``latest``, then
reads ``latest`` back. The same material gives the same digest, so publishing again changes nothing.

Callers: ``airlock trust publish FILE`` (shared/cli/trust_publish.py) and, when the trust policy is
uploaded, its upload check (it calls this with the uploaded bytes). Needs the app's identity to push
(AcrPush; infra/ROLES.md): without it the data plane refuses and this raises UpstreamError
``PushDenied``. An invalid policy, or a trusted root a scope names that was not supplied, raises
ValidationError before anything is pushed.
"""
from __future__ import annotations

import logging
from typing import Mapping, Optional

from ..adapters.signatures import public_good_bytes as public_good_root
from ..core import trustmaterial
from ..core.trust.parse import parse_trust_policy
from ..errors import UpstreamError

log = logging.getLogger(__name__)


def publish_trust_material(services, policy_bytes: bytes, *, name: str = "trust-policy.yaml",
                           trusted_roots: Optional[Mapping[str, bytes]] = None) -> dict:
    """Push the material of ``policy_bytes`` (``trusted_roots``: the operator's roots by the names the
    policy uses); returns {"repository", "reference", "digest", "tags", "files": [{name, media_type,
    digest, size}]}."""
    result = parse_trust_policy(policy_bytes, name)
    result.raise_for_errors()
    roots = {trustmaterial.PUBLIC_GOOD: public_good_root(), **(trusted_roots or {})}
    material = trustmaterial.build(result.policy, policy_bytes, roots)
    repository = services.settings.trust_repository
    acr = services.acr
    tags = [material.tag, "latest"]
    digest = services.retrier.call(
        lambda: acr.push_artifact(repository, material.manifest, trustmaterial.MEDIA_OCI_MANIFEST,
                                  material.blobs, tags), what=f"push {repository}")
    landed = services.retrier.call(lambda: acr.tag_digest(repository, "latest"), what=f"read back {repository}")
    if landed != digest:
        raise UpstreamError(f"{repository}:latest is {landed} after the push, expected {digest}",
                            code="DigestMismatch")
    reference = f"{acr.login_server()}/{repository}@{digest}"
    log.info("published the trust material of %s as %s (%d files)", name, reference, len(material.files))
    return {"repository": repository, "reference": reference, "digest": digest, "tags": tags,
            "artifact_type": trustmaterial.ARTIFACT_TYPE,
            "files": [{"name": f.name, "media_type": f.media_type, "digest": f.digest, "size": len(f.data)}
                      for f in material.files]}
