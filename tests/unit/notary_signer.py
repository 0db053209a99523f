"""A small Notary Project signer for the tests: a test PKI and signature envelopes made here.

Written from the specifications (notaryproject/specifications: signature-specification.md,
signature-envelope-jws.md, signature-envelope-cose.md), with ``cryptography`` only: the JWS
signing input and the COSE Sig_structure are built by hand, so the verifier (which uses joserfc
for JWS) is checked against an independent signer. Every knob a test needs to make a bad
signature (wrong alg, extra critical header, tampered payload, expiry, odd chain) is a keyword.
"""
from __future__ import annotations

import base64
import functools
import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Optional, Sequence

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
IMAGE_DIGEST = "sha256:" + hashlib.sha256(b"an image manifest").hexdigest()
OTHER_DIGEST = "sha256:" + hashlib.sha256(b"another image manifest").hexdigest()
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
PAYLOAD_TYPE = "application/vnd.cncf.notary.payload.v1+json"
SCHEME = "io.cncf.notary.signingScheme"
SIGNING_TIME = "io.cncf.notary.signingTime"
EXPIRY = "io.cncf.notary.expiry"

_JWS_ALG = {("rsa", 2048): ("PS256", hashes.SHA256), ("rsa", 3072): ("PS384", hashes.SHA384),
            ("rsa", 4096): ("PS512", hashes.SHA512), ("ec", 256): ("ES256", hashes.SHA256),
            ("ec", 384): ("ES384", hashes.SHA384), ("ec", 521): ("ES512", hashes.SHA512)}
_COSE_ALG = {"PS256": -37, "PS384": -38, "PS512": -39, "ES256": -7, "ES384": -35, "ES512": -36}
_CURVES = {256: ec.SECP256R1, 384: ec.SECP384R1, 521: ec.SECP521R1}


@functools.lru_cache(maxsize=None)
def private_key(kind: str = "rsa", size: int = 2048, n: int = 0):
    """A key, made once per (kind, size, n) for the whole test session (RSA generation is slow)."""
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=size)
    return ec.generate_private_key(_CURVES[size]())


def name(cn: str, *, country: str = "US", state: str = "WA", org: str = "acme-rockets.io",
         unit: Optional[str] = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COUNTRY_NAME, country),
                  x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, state),
                  x509.NameAttribute(NameOID.ORGANIZATION_NAME, org)]
    if unit:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit))
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attributes)


def _key_usage(*, signing: bool = False, cert_sign: bool = False, key_encipherment: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=signing, content_commitment=False, key_encipherment=key_encipherment,
                         data_encipherment=False, key_agreement=False, key_cert_sign=cert_sign, crl_sign=cert_sign,
                         encipher_only=False, decipher_only=False)


def certificate(subject: x509.Name, key, issuer: x509.Name, issuer_key, *, ca: bool,
                not_before: datetime = NOW - timedelta(days=365), not_after: datetime = NOW + timedelta(days=365),
                key_usage: Optional[x509.KeyUsage] = None, key_usage_critical: bool = True,
                basic_constraints: bool = True, basic_constraints_critical: bool = True,
                eku: Optional[Sequence[x509.ObjectIdentifier]] = None, hash_type=hashes.SHA256) -> x509.Certificate:
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(not_before).not_valid_after(not_after)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
    if basic_constraints:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=None),
                                        critical=basic_constraints_critical)
    usage = key_usage if key_usage is not None else _key_usage(signing=not ca, cert_sign=ca)
    builder = builder.add_extension(usage, critical=key_usage_critical)
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    if issuer != subject:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    return builder.sign(issuer_key, hash_type())


@dataclass
class Chain:
    """A signing key with its chain, leaf first, root last (as x5c lists it)."""

    key: Any
    certificates: list[x509.Certificate]
    kind: str = "rsa"
    size: int = 2048

    @property
    def leaf(self) -> x509.Certificate:
        return self.certificates[0]

    @property
    def root(self) -> x509.Certificate:
        return self.certificates[-1]

    def root_pem(self) -> str:
        return self.root.public_bytes(serialization.Encoding.PEM).decode()

    @property
    def alg(self) -> str:
        return _JWS_ALG[(self.kind, self.size)][0]


def make_chain(kind: str = "rsa", size: int = 2048, *, n: int = 0, leaf_name: Optional[x509.Name] = None,
               leaf_options: Optional[dict] = None, intermediate_options: Optional[dict] = None,
               root_options: Optional[dict] = None, intermediate: bool = True) -> Chain:
    """root -> intermediate -> leaf (code signing). ``n`` picks a different set of keys."""
    root_key = private_key("rsa", 2048, 100 + n)
    root_name = name(f"Test Root {n}", unit="PKI")
    root = certificate(root_name, root_key, root_name, root_key, ca=True, **(root_options or {}))
    issuer_name, issuer_key = root_name, root_key
    middle = []
    if intermediate:
        mid_key = private_key("rsa", 2048, 200 + n)
        mid_name = name(f"Test Intermediate {n}", unit="PKI")
        middle = [certificate(mid_name, mid_key, root_name, root_key, ca=True, **(intermediate_options or {}))]
        issuer_name, issuer_key = mid_name, mid_key
    key = private_key(kind, size, n)
    options = {"eku": [ExtendedKeyUsageOID.CODE_SIGNING], **(leaf_options or {})}
    leaf = certificate(leaf_name or name("SecureBuilder", unit="Finance"), key, issuer_name, issuer_key, ca=False,
                       **options)
    return Chain(key, [leaf, *middle, root], kind, size)


def payload(digest: str = IMAGE_DIGEST, *, media_type: str = MANIFEST_TYPE, size: int = 1234, **extra) -> bytes:
    return json.dumps({"targetArtifact": {"digest": digest, "mediaType": media_type, "size": size}, **extra},
                      separators=(",", ":")).encode()


def _sign(chain: Chain, message: bytes, alg: str) -> bytes:
    """Sign with the alg's hash (RSA: PSS with salt = hash length; EC: ECDSA as raw r||s)."""
    hash_type = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}[alg[2:]]
    if isinstance(chain.key, rsa.RSAPrivateKey):
        return chain.key.sign(message, padding.PSS(padding.MGF1(hash_type()), hash_type.digest_size), hash_type())
    r, s = decode_dss_signature(chain.key.sign(message, ec.ECDSA(hash_type())))
    size = (chain.key.curve.key_size + 7) // 8
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Options:
    """What to put in (or leave out of) an envelope."""

    signing_time: datetime = NOW - timedelta(hours=1)
    expiry: Optional[datetime] = None
    alg: Optional[str] = None  # default: the one the leaf key dictates
    crit: Optional[list] = None  # default: signingScheme (+ expiry when set)
    protected_extra: dict = field(default_factory=dict)
    protected_drop: tuple = ()
    header_extra: dict = field(default_factory=dict)
    certificates: Optional[list[x509.Certificate]] = None  # default: the chain's


def sign_jws(chain: Chain, body: bytes = b"", options: Optional[Options] = None, **kwargs) -> bytes:
    """A flattened JWS JSON envelope over ``body`` (default: a payload for IMAGE_DIGEST)."""
    o = options or Options(**kwargs)
    body = body or payload()
    protected: dict = {"alg": o.alg or chain.alg, "cty": PAYLOAD_TYPE, SCHEME: "notary.x509",
                       SIGNING_TIME: _rfc3339(o.signing_time)}
    if o.expiry is not None:
        protected[EXPIRY] = _rfc3339(o.expiry)
    protected["crit"] = o.crit if o.crit is not None else [SCHEME] + ([EXPIRY] if o.expiry is not None else [])
    protected.update(o.protected_extra)
    for key in o.protected_drop:
        protected.pop(key, None)
    protected_segment = _b64url(json.dumps(protected, separators=(",", ":")).encode())
    payload_segment = _b64url(body)
    signature = _sign(chain, f"{protected_segment}.{payload_segment}".encode(), o.alg or chain.alg)
    certificates = o.certificates if o.certificates is not None else chain.certificates
    header = {"x5c": [base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode() for c in certificates],
              "io.cncf.notary.signingAgent": "airlock-tests/1.0", **o.header_extra}
    return json.dumps({"payload": payload_segment, "protected": protected_segment, "header": header,
                       "signature": _b64url(signature)}).encode()


def sign_cose(chain: Chain, body: bytes = b"", options: Optional[Options] = None, **kwargs) -> bytes:
    """A COSE_Sign1_Tagged envelope over ``body`` (default: a payload for IMAGE_DIGEST)."""
    o = options or Options(**kwargs)
    body = body or payload()
    alg = o.alg or chain.alg
    protected: dict = {1: _COSE_ALG[alg], 3: PAYLOAD_TYPE, SCHEME: "notary.x509",
                       SIGNING_TIME: cbor2.CBORTag(1, int(o.signing_time.timestamp()))}
    if o.expiry is not None:
        protected[EXPIRY] = cbor2.CBORTag(1, int(o.expiry.timestamp()))
    protected[2] = o.crit if o.crit is not None else [SCHEME] + ([EXPIRY] if o.expiry is not None else [])
    protected.update(o.protected_extra)
    for key in o.protected_drop:
        protected.pop(key, None)
    protected_bytes = cbor2.dumps(protected)
    to_be_signed = cbor2.dumps(["Signature1", protected_bytes, b"", body])
    signature = _sign(chain, to_be_signed, alg)
    certificates = o.certificates if o.certificates is not None else chain.certificates
    unprotected = {33: [c.public_bytes(serialization.Encoding.DER) for c in certificates],
                   "io.cncf.notary.signingAgent": "airlock-tests/1.0", **o.header_extra}
    return cbor2.dumps(cbor2.CBORTag(18, [protected_bytes, unprotected, body, signature]))


def signature_manifest(envelope: bytes, media_type: str = "application/jose+json", *,
                       subject: str = IMAGE_DIGEST, chain: Optional[Chain] = None, old_style: bool = False,
                       layer_digest: Optional[str] = None) -> bytes:
    """The OCI image manifest that stores ``envelope`` (OCI 1.1 artifactType form, or the older config form)."""
    config = ({"mediaType": "application/vnd.cncf.notary.signature", "size": 2,
               "digest": "sha256:" + hashlib.sha256(b"{}").hexdigest()} if old_style else
              {"mediaType": "application/vnd.oci.empty.v1+json", "size": 2,
               "digest": "sha256:" + hashlib.sha256(b"{}").hexdigest(), "data": "e30="})
    manifest: dict = {"schemaVersion": 2, "mediaType": MANIFEST_TYPE, "config": config,
                      "layers": [{"mediaType": media_type,
                                  "digest": layer_digest or "sha256:" + hashlib.sha256(envelope).hexdigest(),
                                  "size": len(envelope)}],
                      "subject": {"mediaType": MANIFEST_TYPE, "digest": subject, "size": 1234}}
    if not old_style:
        manifest["artifactType"] = "application/vnd.cncf.notary.signature"
    if chain is not None:
        thumbprints = [c.fingerprint(hashes.SHA256()).hex().upper() for c in chain.certificates]
        manifest["annotations"] = {"io.cncf.notary.x509chain.thumbprint#S256": json.dumps(thumbprints)}
    return json.dumps(manifest).encode()
