"""Trust at the border: the trust policy, and verifying image signatures against it. Pure code.

One module per concern (each says its contract in its docstring):

    policy.py              the validated policy: scopes, modes, required signatures, scope choice
    parse.py               reading and checking a trust policy file (line-numbered problems)
    parse_signatures.py    the checks of one ``signatures`` entry (cosign-key, keyless, notation)
    patterns.py            scope ``match`` globs on registry/repository
    identities.py          X.509 subjects and Notary Project trusted identities
    keys.py                public keys and PEM text: key ids, accepted key types
    verdict.py             ``Verification``: the one verdict record every verifier returns
    artifacts.py           signature artifacts as the adapter reads them (formats, bounds)
    signers.py             cosign / Sigstore requirements (``Keyless``, ``CosignKey``), trusted roots
    sigstore.py            ``verify_image``: cosign and Sigstore verification
    cosign.py              cosign's tag scheme (simple signing, Rekor SET)
    fulcio.py              identity and issuer in a Fulcio certificate
    notation.py            Notary Project verification (manifest, chain, identity, expiry, target)
    notation_envelopes.py  Notary Project JWS and COSE envelopes
    verify.py              one image against its scope: any or all of its signatures, one verdict; cache keys

The package's public names can be imported from it directly (``from shared.core.trust import
parse_trust_policy``); each is loaded from its module on first use, so importing one module does
not import the others (sigstore, cryptography and re2 load only when something needs them).
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "verdict": ("Verification", "VERIFIED", "UNSIGNED", "INVALID", "MISMATCH", "SKIPPED", "STATUSES",
                "KIND_COSIGN_KEY", "KIND_KEYLESS", "KIND_NOTATION", "KINDS", "MAX_REASON", "one_line", "FAILED",
                "REJECTED_CODE"),
    "artifacts": ("MEDIA_SIMPLESIGNING", "ARTIFACT_COSIGN_SIG", "MEDIA_BUNDLE_V03", "MEDIA_BUNDLES",
                  "ARTIFACT_NOTATION", "MEDIA_NOTATION_ENVELOPES", "MEDIA_OCI_MANIFEST", "MEDIA_OCI_INDEX",
                  "PAYLOAD_IN_TOTO", "IN_TOTO_STATEMENTS", "ANNOTATION_SIGNATURE", "ANNOTATION_CERTIFICATE",
                  "ANNOTATION_CHAIN", "ANNOTATION_BUNDLE", "MAX_MANIFEST_BYTES", "MAX_BLOB_BYTES", "MAX_ARTIFACTS",
                  "MAX_SIGNATURE_LAYERS", "Descriptor", "SignatureArtifact", "Unreadable", "load_json",
                  "valid_digest", "descriptor", "is_signature_type", "referrers", "ArtifactPlan", "plan_artifact",
                  "CosignSignature", "BundleSignature", "NotationSignature", "Unusable", "Candidate", "candidates",
                  "notation_signatures"),
    "signers": ("Keyless", "CosignKey", "requirements_fingerprint", "verdict_key", "SigstoreTrust", "MAX_PATTERN"),
    "sigstore": ("verify_image", "MAX_CANDIDATES"),
    "policy": ("MODE_ENFORCE", "MODE_AUDIT", "MODE_SKIP", "MODES", "REQUIRE_ANY", "REQUIRE_ALL", "MAX_BYTES",
               "MAX_SCOPES", "MAX_PATTERNS", "MAX_CERTIFICATES", "MAX_IDENTITIES", "MAX_REGEX", "MAX_ERRORS",
               "CosignKeyRequirement", "KeylessRequirement", "NotationRequirement", "Requirement", "Scope",
               "TrustPolicy", "TrustPolicyResult"),
    "parse": ("parse_trust_policy",),
    "identities": ("TrustedIdentity", "format_subject", "parse_trusted_identity", "subject_attributes"),
    "keys": ("key_id",),
    "patterns": ("Pattern",),
    "verify": ("PreparedPolicy", "ScopeCheck", "ScopeVerdict"),
    "notation": ("SignatureManifest", "is_signature_manifest", "parse_signature_manifest", "verify_notation",
                 "verify_notation_signatures"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # the next look-up is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
