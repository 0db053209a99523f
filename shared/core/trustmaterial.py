"""The verification material published into the ACR as one OCI artifact, so that verifiers inside the
disconnected cluster (Ratify, Kyverno, cosign, notation) work offline. Pure: builds bytes, no I/O.

``build(policy, policy_bytes, roots)`` lays out, for a validated trust policy (``shared.core.trust``)
and the Sigstore trusted roots it uses (name -> ``trusted_root.json`` bytes; ``public-good`` is the
root sigstore-python ships), these files, each one layer titled with its file name
(``org.opencontainers.image.title``, what ``oras pull`` writes)::

    trust.json                                what each file is, per scope (below)
    trust-policy.yaml                         the policy as uploaded
    sigstore-<root>.trusted_root.json         each trusted root, as it is
    sigstore-<root>-fulcio.pem                its Fulcio CA certificates (intermediates and roots), PEM
    sigstore-<root>-rekor-<log id>.pub        each Rekor log key, PEM (cosign: SIGSTORE_REKOR_PUBLIC_KEY)
    sigstore-<root>-ctlog-<log id>.pub        each CT log key, PEM (cosign: SIGSTORE_CT_LOG_PUBLIC_KEY_FILE)
    sigstore-<root>-tsa.pem                   its timestamp authorities' certificates, when it has some
    cosign-<key id>.pub                       each cosign public key of the policy (key id: 16 hex of its sha256)
    notation-<scope>-<n>.pem                  each notation trust store of the policy (its certificates)

``trust.json``::

    {"version": 1, "policy": {"name", "sha256"},
     "trusted_roots": {"<root>": {"file", "fulcio", "rekor": [{"file", "base_url", "log_id"}],
                                  "ctlogs": [...], "tsa"}},
     "scopes": [{"name", "match", "mode", "require", "trusted_root",
                 "cosign_keys": [file], "keyless": [{"identity" | "identity_regex", "issuer" | "issuer_regex"}],
                 "notation": [{"trust_store": file, "trusted_identities": [...]}]}]}

The manifest is an OCI image manifest with ``artifactType`` ARTIFACT_TYPE and the empty config, its bytes
canonical (sorted keys, no timestamps), so the same material always has the same digest; ``tag`` is
``trust-`` and 16 hex characters of that digest. ``shared.handlers.publish`` pushes it under that tag
and ``latest``.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Mapping, Optional

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ..errors import Problem, ValidationError

ARTIFACT_TYPE = "application/vnd.acr-airlock.trust.v1"
MEDIA_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_EMPTY = "application/vnd.oci.empty.v1+json"
MEDIA_INDEX = "application/vnd.acr-airlock.trust-index.v1+json"
MEDIA_POLICY = "application/vnd.acr-airlock.trust-policy.v1+yaml"
MEDIA_TRUSTED_ROOT = "application/vnd.dev.sigstore.trustedroot.v0.1+json"
MEDIA_PEM = "application/x-pem-file"
TITLE = "org.opencontainers.image.title"
PUBLIC_GOOD = "public-good"
MAX_ROOT_BYTES = 16 * 1024 * 1024
_ROOT_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
EMPTY_CONFIG = b"{}"


@dataclass(frozen=True)
class File:
    name: str
    media_type: str
    data: bytes

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.data).hexdigest()

    def descriptor(self) -> dict:
        return {"mediaType": self.media_type, "digest": self.digest, "size": len(self.data),
                "annotations": {TITLE: self.name}}


@dataclass(frozen=True)
class Material:
    files: tuple[File, ...]
    manifest: bytes
    index: dict

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.manifest).hexdigest()

    @property
    def tag(self) -> str:
        return "trust-" + self.digest[7:23]

    @property
    def blobs(self) -> list[bytes]:
        """The config and every file's bytes (what the registry must hold before the manifest)."""
        return [EMPTY_CONFIG, *(f.data for f in self.files)]


def canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _pem_key(raw_b64: str, where: str) -> bytes:
    try:
        key = serialization.load_der_public_key(base64.b64decode(raw_b64, validate=True))
    except (ValueError, TypeError, binascii.Error) as exc:
        raise ValueError(f"{where}: not a DER public key ({type(exc).__name__})") from None
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _pem_certificates(chain: object, where: str) -> bytes:
    certificates = chain.get("certificates") if isinstance(chain, dict) else None
    if not isinstance(certificates, list) or not certificates:
        raise ValueError(f"{where}: no certChain.certificates")
    out = b""
    for n, item in enumerate(certificates):
        try:
            der = base64.b64decode(item["rawBytes"], validate=True)
            out += x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise ValueError(f"{where}.certificates[{n}]: not a DER certificate ({type(exc).__name__})") from None
    return out


def _log_id(log: dict, where: str) -> str:
    try:
        return base64.b64decode(log["logId"]["keyId"], validate=True).hex()[:16]
    except (KeyError, TypeError, ValueError, binascii.Error):
        raise ValueError(f"{where}: no logId.keyId") from None


def root_files(name: str, data: bytes) -> tuple[list[File], dict]:
    """The files of one Sigstore trusted root (itself and its keys and certificates as PEM), and its
    ``trust.json`` entry. ValueError names what is wrong."""
    if len(data) > MAX_ROOT_BYTES:
        raise ValueError(f"{len(data)} bytes, over the {MAX_ROOT_BYTES} byte limit")
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise ValueError("not JSON") from None
    if not isinstance(doc, dict) or not str(doc.get("mediaType", "")).startswith(
            "application/vnd.dev.sigstore.trustedroot"):
        raise ValueError("not a Sigstore trusted root (its mediaType is not application/vnd.dev.sigstore.trustedroot)")
    prefix = f"sigstore-{name}"
    files = [File(f"{prefix}.trusted_root.json", MEDIA_TRUSTED_ROOT, data)]
    entry: dict = {"file": files[0].name, "fulcio": None, "rekor": [], "ctlogs": [], "tsa": None}
    fulcio = b"".join(_pem_certificates(ca.get("certChain"), f"certificateAuthorities[{n}]")
                      for n, ca in enumerate(doc.get("certificateAuthorities") or []) if isinstance(ca, dict))
    if fulcio:
        files.append(File(f"{prefix}-fulcio.pem", MEDIA_PEM, fulcio))
        entry["fulcio"] = files[-1].name
    for kind, field, label in (("tlogs", "rekor", "rekor"), ("ctlogs", "ctlogs", "ctlog")):
        for n, log in enumerate(doc.get(kind) or []):
            where = f"{kind}[{n}]"
            if not isinstance(log, dict) or not isinstance(log.get("publicKey"), dict):
                raise ValueError(f"{where}: no publicKey")
            log_id = _log_id(log, where)
            files.append(File(f"{prefix}-{label}-{log_id}.pub", MEDIA_PEM,
                              _pem_key(log["publicKey"].get("rawBytes", ""), where)))
            entry[field].append({"file": files[-1].name, "base_url": log.get("baseUrl"), "log_id": log_id})
    if not entry["rekor"]:
        raise ValueError("lists no transparency log (tlogs)")
    tsa = b"".join(_pem_certificates(t.get("certChain"), f"timestampAuthorities[{n}]")
                   for n, t in enumerate(doc.get("timestampAuthorities") or []) if isinstance(t, dict))
    if tsa:
        files.append(File(f"{prefix}-tsa.pem", MEDIA_PEM, tsa))
        entry["tsa"] = files[-1].name
    return files, entry


def build(policy, policy_bytes: bytes, roots: Mapping[str, bytes], *, policy_file: str = "trust-policy.yaml"
          ) -> Material:
    """The artifact for ``policy`` (a ``TrustPolicy``) with ``roots`` (name -> trusted_root.json; must hold
    ``public-good`` and every ``trusted_root`` a scope names). ValidationError lists every problem."""
    problems: list[Problem] = []
    used = {s.trusted_root for s in policy.scopes if s.trusted_root}
    for scope in policy.scopes:
        if scope.trusted_root and scope.trusted_root not in roots:
            problems.append(Problem(f"scope {scope.name!r} names trusted_root {scope.trusted_root!r}, which was "
                                    "not supplied", line=scope.line, field="trusted_root"))
    if PUBLIC_GOOD not in roots:
        problems.append(Problem("the public-good trusted root was not supplied", field=PUBLIC_GOOD))
    files: list[File] = [File(policy_file, MEDIA_POLICY, policy_bytes)]
    index: dict = {"version": 1, "policy": {"name": policy.name, "sha256": policy.content_hash},
                   "trusted_roots": {}, "scopes": []}
    for name in sorted({PUBLIC_GOOD, *used} & set(roots)):
        if not _ROOT_NAME.fullmatch(name):
            problems.append(Problem("a trusted root name is 1-63 lower-case letters, digits or '-'", field=name))
            continue
        try:
            found, entry = root_files(name, roots[name])
        except ValueError as exc:
            problems.append(Problem(f"trusted root {name!r}: {exc}", field=name))
            continue
        files += found
        index["trusted_roots"][name] = entry
    if problems:
        raise ValidationError(f"the trust material cannot be built: {len(problems)} problem(s)", problems,
                              code="InvalidTrustMaterial")
    keys: dict[str, str] = {}
    for scope in policy.scopes:
        doc = {"name": scope.name, "match": [p.text for p in scope.patterns], "mode": scope.mode,
               "require": scope.require, "trusted_root": scope.trusted_root or PUBLIC_GOOD,
               "cosign_keys": [], "keyless": [], "notation": []}
        for n, requirement in enumerate(scope.signatures):
            if requirement.kind == "cosign-key":
                name = f"cosign-{requirement.key_id.split(':')[-1][:16]}.pub"
                if name not in keys:
                    keys[name] = requirement.pem
                    files.append(File(name, MEDIA_PEM, requirement.pem.encode()))
                doc["cosign_keys"].append(name)
            elif requirement.kind == "keyless":
                doc["keyless"].append({k: v for k, v in requirement.canonical().items() if k != "kind"})
            elif requirement.kind == "notation":
                store = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in requirement.certificates)
                files.append(File(f"notation-{scope.name}-{n}.pem", MEDIA_PEM, store))
                doc["notation"].append({"trust_store": files[-1].name,
                                        "trusted_identities": ["*"] if requirement.any_identity
                                        else [i.text for i in requirement.identities]})
        index["scopes"].append(doc)
    files.insert(0, File("trust.json", MEDIA_INDEX, canonical(index)))
    manifest = {"schemaVersion": 2, "mediaType": MEDIA_OCI_MANIFEST, "artifactType": ARTIFACT_TYPE,
                "config": {"mediaType": MEDIA_EMPTY, "digest": "sha256:" + hashlib.sha256(EMPTY_CONFIG).hexdigest(),
                           "size": len(EMPTY_CONFIG)},
                "layers": [f.descriptor() for f in files],
                "annotations": {"org.opencontainers.image.description": "acr-airlock verification material",
                                "io.acr-airlock.trust-policy.sha256": policy.content_hash}}
    return Material(tuple(files), canonical(manifest), index)


def find(material: Material, name: str) -> Optional[File]:
    return next((f for f in material.files if f.name == name), None)
