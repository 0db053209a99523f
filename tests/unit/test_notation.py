"""Notary Project signature verification (shared.core.trust.notation), offline.

Signatures come from the signer in tests/unit/notary_signer.py (a test PKI made here) and from
one real envelope produced by notation, copied from notation-go's test data
(tests/fixtures/trust/notation/PROVENANCE.md).
"""
import base64
import hashlib
import json
from datetime import datetime, timedelta, timezone

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.core.trust.notation import (
    Verification,
    is_signature_manifest,
    parse_signature_manifest,
    verify_notation,
    verify_notation_signatures,
)
from shared.core.trust import NotationRequirement, parse_trust_policy
from tests.fixture_paths import FIXTURES
from tests.unit import notary_signer as ns
from tests.unit.notary_signer import IMAGE_DIGEST, NOW, OTHER_DIGEST, make_chain, sign_cose, sign_jws

ACME = "x509.subject: C=US, ST=WA, O=acme-rockets.io"
REAL = FIXTURES / "trust" / "notation"
REAL_DIGEST = "sha256:c0669ef34cdc14332c0f1ab0c2c01acb91d96014b172f1a76f3a39e63d1f0bda"  # in its payload
REAL_SIGNED = datetime(2024, 6, 18, 9, 8, 35, tzinfo=timezone.utc)  # its signingTime, 17:08:35+08:00


def requirement(*pems: str, identities=(ACME,)) -> NotationRequirement:
    """A notation requirement read through the trust policy parser, as the product reads it."""
    document = {"scopes": [{"name": "s", "match": "**", "signatures": [
        {"kind": "notation", "trust_store": list(pems), "trusted_identities": list(identities)}]}]}
    result = parse_trust_policy(json.dumps(document), "test")
    assert result.ok, [str(p) for p in result.errors]
    return result.policy.scopes[0].signatures[0]


@pytest.fixture(scope="module")
def chain():
    return make_chain()


@pytest.fixture(scope="module")
def trusted(chain):
    return requirement(chain.root_pem())


def verify(envelope: bytes, req: NotationRequirement, *, media_type="application/jose+json", digest=IMAGE_DIGEST,
           now=NOW, manifest=None) -> Verification:
    manifest = manifest if manifest is not None else ns.signature_manifest(envelope, media_type)
    return verify_notation(manifest, envelope, digest=digest, requirement=req, now=now)


def assert_invalid(verdict: Verification, *words: str) -> None:
    assert verdict.status == "invalid", verdict
    assert verdict.kind == "notation" and verdict.signer is None
    assert verdict.reason and "\n" not in verdict.reason
    for word in words:
        assert word in verdict.reason, verdict.reason


SIGNERS = [pytest.param(sign_jws, "application/jose+json", id="jws"),
           pytest.param(sign_cose, "application/cose", id="cose")]


# --- verified ----------------------------------------------------------------------------------

@pytest.mark.parametrize("sign, media_type", SIGNERS)
def test_verified(chain, trusted, sign, media_type):
    envelope = sign(chain)
    manifest = ns.signature_manifest(envelope, media_type)
    verdict = verify_notation(manifest, envelope, digest=IMAGE_DIGEST, requirement=trusted, now=NOW)
    assert verdict == Verification(
        "verified", "notation", "C=US, ST=WA, O=acme-rockets.io, OU=Finance, CN=SecureBuilder",
        "C=US, ST=WA, O=acme-rockets.io, OU=PKI, CN=Test Root 0",
        "referrers:sha256:" + hashlib.sha256(manifest).hexdigest(), None)


@pytest.mark.parametrize("kind, size", [("rsa", 3072), ("rsa", 4096), ("ec", 256), ("ec", 384), ("ec", 521)])
@pytest.mark.parametrize("sign, media_type", SIGNERS)
def test_every_notary_algorithm(kind, size, sign, media_type):
    chain = make_chain(kind, size)
    assert verify(sign(chain), requirement(chain.root_pem()), media_type=media_type).status == "verified"


def test_old_style_manifest_and_chain_without_intermediate(trusted):
    chain = make_chain(intermediate=False)
    envelope = sign_jws(chain)
    manifest = ns.signature_manifest(envelope, old_style=True, chain=chain)
    assert verify(envelope, trusted, manifest=manifest).status == "verified"


def test_any_identity(chain):
    assert verify(sign_jws(chain), requirement(chain.root_pem(), identities=["*"])).status == "verified"


def test_partial_identity_matches_and_trust_store_with_several_roots(chain):
    other = make_chain(n=1)
    req = requirement(other.root_pem() + chain.root_pem(),
                      identities=["x509.subject: C=US, ST=WA, O=acme-rockets.io, OU=Finance"])
    assert verify(sign_jws(chain), req).status == "verified"


def test_location_can_be_given(chain, trusted):
    envelope = sign_jws(chain)
    verdict = verify_notation(ns.signature_manifest(envelope), envelope, digest=IMAGE_DIGEST, requirement=trusted,
                              now=NOW, location="referrers:sha256:" + "1" * 64)
    assert verdict.location == "referrers:sha256:" + "1" * 64


# --- trust ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("sign, media_type", SIGNERS)
def test_wrong_trust_store_is_invalid(chain, sign, media_type):
    stranger = make_chain(n=1)
    verdict = verify(sign(chain), requirement(stranger.root_pem()), media_type=media_type)
    assert_invalid(verdict, "does not lead to the trust store")


@pytest.mark.parametrize("sign, media_type", SIGNERS)
def test_untrusted_identity_is_invalid(chain, sign, media_type):
    req = requirement(chain.root_pem(), identities=["x509.subject: C=US, ST=WA, O=wabbit-networks.io"])
    verdict = verify(sign(chain), req, media_type=media_type)
    assert_invalid(verdict, "signer C=US, ST=WA, O=acme-rockets.io, OU=Finance, CN=SecureBuilder is not a trusted "
                            "identity")


def test_identity_of_another_unit_is_invalid(chain):
    req = requirement(chain.root_pem(), identities=["x509.subject: C=US, ST=WA, O=acme-rockets.io, OU=Sales"])
    assert_invalid(verify(sign_jws(chain), req), "not a trusted identity")


def test_self_signed_chain_not_in_store_is_invalid(chain, trusted):
    """A chain that ends in its own root: in order, but the root is not the trust store's."""
    impostor = make_chain(n=2, intermediate=False)
    assert_invalid(verify(sign_jws(impostor), trusted), "does not lead to the trust store")


def test_a_pinned_intermediate_in_the_trust_store_is_an_anchor(chain):
    intermediate = chain.certificates[1].public_bytes(serialization.Encoding.PEM).decode()
    assert verify(sign_jws(chain), requirement(intermediate)).status == "verified"


# --- integrity -----------------------------------------------------------------------------------

def test_tampered_payload_is_invalid(chain, trusted):
    envelope = json.loads(sign_jws(chain))
    envelope["payload"] = base64.urlsafe_b64encode(ns.payload(OTHER_DIGEST)).rstrip(b"=").decode()
    assert_invalid(verify(json.dumps(envelope).encode(), trusted), "signature does not verify")


def test_tampered_protected_header_is_invalid(chain, trusted):
    envelope = json.loads(sign_jws(chain))
    protected = json.loads(base64.urlsafe_b64decode(envelope["protected"] + "=="))
    protected["io.cncf.notary.signingTime"] = "2026-02-28T12:00:00Z"
    envelope["protected"] = base64.urlsafe_b64encode(json.dumps(protected).encode()).rstrip(b"=").decode()
    assert_invalid(verify(json.dumps(envelope).encode(), trusted), "signature does not verify")


def test_tampered_cose_payload_is_invalid(chain, trusted):
    message = cbor2.loads(sign_cose(chain))
    protected, unprotected, _, signature = message.value
    forged = cbor2.dumps(cbor2.CBORTag(18, [protected, unprotected, ns.payload(OTHER_DIGEST), signature]))
    assert_invalid(verify(forged, trusted, media_type="application/cose"), "signature does not verify")


@pytest.mark.parametrize("sign, media_type", SIGNERS)
def test_signature_by_another_key_of_the_same_subject_is_invalid(chain, trusted, sign, media_type):
    """The chain is the trusted one, but the signature was made with a different key."""
    other = make_chain(n=3)
    forged = ns.Chain(other.key, chain.certificates)
    assert_invalid(verify(sign(forged), trusted, media_type=media_type), "signature does not verify")


@pytest.mark.parametrize("sign, media_type", SIGNERS)
def test_alg_must_match_the_signing_key(trusted, sign, media_type):
    chain = make_chain("rsa", 3072)
    verdict = verify(sign(chain, alg="PS256"), requirement(chain.root_pem()), media_type=media_type)
    assert_invalid(verdict, "alg is 'PS256' but the signing certificate's key requires PS384")


def test_envelope_blob_must_be_the_manifest_layer(chain, trusted):
    envelope = sign_jws(chain)
    manifest = ns.signature_manifest(envelope, layer_digest="sha256:" + "0" * 64)
    assert_invalid(verify(envelope, trusted, manifest=manifest), "is not the manifest's layer")


# --- the digest --------------------------------------------------------------------------------

@pytest.mark.parametrize("sign, media_type", SIGNERS)
def test_signature_for_another_digest_is_a_mismatch(chain, trusted, sign, media_type):
    verdict = verify(sign(chain, ns.payload(OTHER_DIGEST)), trusted, media_type=media_type)
    assert verdict.status == "mismatch"
    assert verdict.reason == f"the signature is for {OTHER_DIGEST}, not this image ({IMAGE_DIGEST})"


def test_an_untrusted_signature_for_another_digest_is_invalid_not_a_mismatch(chain):
    stranger = make_chain(n=1)
    verdict = verify(sign_jws(chain, ns.payload(OTHER_DIGEST)), requirement(stranger.root_pem()))
    assert_invalid(verdict, "trust store")


# --- time ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("sign, media_type", SIGNERS)
def test_expired_signature_is_invalid(chain, trusted, sign, media_type):
    expiry = NOW - timedelta(minutes=5)
    verdict = verify(sign(chain, expiry=expiry), trusted, media_type=media_type)
    assert_invalid(verdict, "the signature expired at 2026-03-01T11:55:00Z")


def test_signature_before_its_expiry_is_verified(chain, trusted):
    assert verify(sign_jws(chain, expiry=NOW + timedelta(days=1)), trusted).status == "verified"


def test_expiry_must_be_critical(chain, trusted):
    envelope = sign_jws(chain, expiry=NOW + timedelta(days=1), crit=["io.cncf.notary.signingScheme"])
    assert_invalid(verify(envelope, trusted), "io.cncf.notary.expiry is present but not listed in crit")


def test_certificate_expired_now_is_invalid():
    chain = make_chain(n=4, leaf_options={"not_after": NOW - timedelta(days=1),
                                          "not_before": NOW - timedelta(days=30)})
    envelope = sign_jws(chain, signing_time=NOW - timedelta(days=2))
    verdict = verify(envelope, requirement(chain.root_pem()))
    assert_invalid(verdict, "is not valid now", "expired 2026-02-28")


def test_certificate_not_valid_at_signing_time_is_invalid():
    chain = make_chain(n=4, leaf_options={"not_before": NOW - timedelta(days=1)})
    verdict = verify(sign_jws(chain, signing_time=NOW - timedelta(days=3)), requirement(chain.root_pem()))
    assert_invalid(verdict, "is not valid at the signing time")


# --- headers -------------------------------------------------------------------------------------

@pytest.mark.parametrize("sign, media_type", SIGNERS)
def test_unknown_critical_header_is_invalid(chain, trusted, sign, media_type):
    envelope = sign(chain, protected_extra={"io.wabbit-networks.policy": "strict"},
                    crit=["io.cncf.notary.signingScheme", "io.wabbit-networks.policy"])
    assert_invalid(verify(envelope, trusted, media_type=media_type),
                   "unknown critical header 'io.wabbit-networks.policy'")


def test_unknown_non_critical_header_is_allowed(chain, trusted):
    envelope = sign_jws(chain, protected_extra={"io.wabbit-networks.buildId": "123"})
    assert verify(envelope, trusted).status == "verified"


@pytest.mark.parametrize("options, words", [
    ({"crit": []}, "crit is missing or empty"),
    ({"crit": ["io.cncf.notary.expiry"]}, "not in the protected header"),
    ({"protected_drop": ("crit",)}, "crit is missing"),
    ({"crit": ["alg", "io.cncf.notary.signingScheme"]}, "registered header 'alg'"),
    ({"protected_drop": ("io.cncf.notary.signingTime",)}, "io.cncf.notary.signingTime is missing"),
    ({"protected_extra": {"io.cncf.notary.signingScheme": "notary.x509.signingAuthority"}},
     "notary.x509.signingAuthority is not supported"),
    ({"protected_extra": {"io.cncf.notary.signingScheme": "notary.pgp"}}, "unknown signing scheme 'notary.pgp'"),
    ({"protected_extra": {"cty": "application/json"}}, "unsupported payload content type 'application/json'"),
    ({"protected_extra": {"io.cncf.notary.verificationPlugin": "com.example.nv2plugin"},
      "crit": ["io.cncf.notary.signingScheme", "io.cncf.notary.verificationPlugin"]},
     "requires verification plugin 'com.example.nv2plugin'"),
    ({"protected_extra": {"io.cncf.notary.verificationPlugin": "com.example.nv2plugin"}},
     "requires verification plugin"),
    ({"protected_extra": {"io.cncf.notary.signingTime": "yesterday"}}, "not an RFC 3339 date-time"),
    ({"protected_extra": {"io.cncf.notary.signingTime": "2026-03-01T10:00:00"}}, "has no time zone"),
    ({"header_extra": {"io.cncf.notary.expiry": "2030-01-01T00:00:00Z"}}, "must be in the protected header"),
    ({"protected_extra": {"x5c": []}}, "x5c must be in the unprotected header"),
    ({"protected_extra": {"b64": False}, "crit": ["io.cncf.notary.signingScheme", "b64"]}, "b64 header"),
    ({"alg": "ES256"}, "alg is 'ES256'"),
])
def test_jws_header_rules(chain, trusted, options, words):
    assert_invalid(verify(sign_jws(chain, **options), trusted), words)


@pytest.mark.parametrize("options, words", [
    ({"crit": []}, "crit is missing or empty"),
    ({"protected_drop": (3,)}, "unsupported payload content type None"),
    ({"protected_extra": {"io.cncf.notary.signingTime": "2026-03-01T10:00:00Z"}}, "not a CBOR epoch date-time"),
    ({"protected_extra": {258: -16}}, "COSE hash envelopes"),
    ({"header_extra": {1: -37}}, "must be in the protected header"),
    ({"protected_extra": {"io.cncf.notary.signingScheme": "notary.x509.signingAuthority"}}, "not supported"),
])
def test_cose_header_rules(chain, trusted, options, words):
    assert_invalid(verify(sign_cose(chain, **options), trusted, media_type="application/cose"), words)


# --- certificate requirements ------------------------------------------------------------------

@pytest.mark.parametrize("options, words", [
    ({"leaf_options": {"eku": [ExtendedKeyUsageOID.SERVER_AUTH]}}, "must not include serverAuth"),
    ({"leaf_options": {"key_usage_critical": False}}, "needs a critical keyUsage"),
    ({"leaf_options": {"key_usage": x509.KeyUsage(False, False, True, False, False, False, False, False, False)}},
     "lacks digitalSignature"),
    ({"leaf_options": {"key_usage": x509.KeyUsage(True, False, True, False, False, False, False, False, False)}},
     "must not include keyEncipherment"),
    ({"intermediate_options": {"key_usage": x509.KeyUsage(True, False, False, False, False, False, False, False,
                                                          False)}}, "needs a critical keyUsage with keyCertSign"),
    ({"intermediate_options": {"basic_constraints_critical": False}}, "needs a critical basicConstraints"),
    ({"intermediate_options": {"basic_constraints": False}}, "has no basicConstraints"),
])
def test_certificate_requirements(options, words):
    chain = make_chain(n=5, **options)
    assert_invalid(verify(sign_jws(chain), requirement(chain.root_pem())), words)


def test_chain_out_of_order_is_invalid(chain, trusted):
    leaf, intermediate, root = chain.certificates
    envelope = sign_jws(chain, certificates=[leaf, root, intermediate])
    assert_invalid(verify(envelope, trusted), "the chain is out of order")


def test_chain_without_its_root_is_invalid(chain, trusted):
    envelope = sign_jws(chain, certificates=chain.certificates[:2])
    assert_invalid(verify(envelope, trusted), "does not end with a root")


# --- malformed input: a one-line "invalid", never an exception ---------------------------------

def _jws_with(chain, change) -> bytes:
    envelope = json.loads(sign_jws(chain))
    change(envelope)
    return json.dumps(envelope).encode()


@pytest.mark.parametrize("make, words", [
    (lambda c: b"", "not valid JSON"),
    (lambda c: b"\xff\xfe not json", "not valid JSON"),
    (lambda c: b"[1, 2]", "not a JSON object"),
    (lambda c: b'{"payload": "e30", "payload": "e30"}', "has the key 'payload' twice"),
    (lambda c: b'{"payload": NaN}', "not JSON"),
    (lambda c: b"[" * 100_000, "not valid JSON"),
    (lambda c: _jws_with(c, lambda e: e.pop("signature")), "has no signature"),
    (lambda c: _jws_with(c, lambda e: e.update(protected="!!!")), "not base64url"),
    (lambda c: _jws_with(c, lambda e: e.update(protected="e30")), "unsupported payload content type None"),
    (lambda c: _jws_with(c, lambda e: e.update(protected="W10")), "protected header is not a JSON object"),
    (lambda c: _jws_with(c, lambda e: e.update(signatures=[])), "general serialization"),
    (lambda c: _jws_with(c, lambda e: e.update(extra=1)), "unexpected member 'extra'"),
    (lambda c: _jws_with(c, lambda e: e.update(header=[])), "unprotected header is not a JSON object"),
    (lambda c: _jws_with(c, lambda e: e["header"].pop("x5c")), "x5c (the certificate chain) is missing"),
    (lambda c: _jws_with(c, lambda e: e["header"].update(x5c=["not base64!"])), "x5c[0] is not a readable DER X.509"),
    (lambda c: _jws_with(c, lambda e: e["header"].update(x5c=["AAAA"])), "x5c[0] is not a readable DER X.509"),
    (lambda c: _jws_with(c, lambda e: e["header"].update(x5c=[1])), "x5c[0] is not a readable DER X.509"),
    (lambda c: _jws_with(c, lambda e: e["header"].update(x5c=["AAAA"] * 11)), "the limit is 10"),
    (lambda c: _jws_with(c, lambda e: e.update(signature="")), "signature"),
    (lambda c: _jws_with(c, lambda e: e.update(payload=base64.urlsafe_b64encode(b"[]").decode().rstrip("="))),
     "signature does not verify"),
])
def test_malformed_jws(chain, trusted, make, words):
    assert_invalid(verify(make(chain), trusted), words)


def test_malformed_payload_after_a_valid_signature(chain, trusted):
    for body, words in ((b"[]", "no targetArtifact"), (b'{"targetArtifact": {"digest": "sha256:abc", '
                                                         b'"mediaType": "x", "size": 1}}', "not a valid digest"),
                        (b'{"targetArtifact": {"digest": "' + IMAGE_DIGEST.encode() + b'", "size": 1}}',
                         "no mediaType"),
                        (b'{"targetArtifact": {"digest": "' + IMAGE_DIGEST.encode() + b'", "mediaType": "x", '
                         b'"size": true}}', "size is not"),
                        (b"not json", "payload is not valid JSON")):
        assert_invalid(verify(sign_jws(chain, body), trusted), words)


@pytest.mark.parametrize("blob, words", [
    (b"", "not valid CBOR"),
    (b"\xa0", "not a COSE_Sign1_Tagged"),
    (cbor2.dumps(cbor2.CBORTag(18, [b"", {}, b"", b""])), "unsupported payload content type None"),
    (cbor2.dumps(cbor2.CBORTag(18, [b"", {}, None, b""])), "detached payload"),
    (cbor2.dumps(cbor2.CBORTag(18, [1, 2, 3])), "array of 4"),
    (cbor2.dumps(cbor2.CBORTag(18, ["a", {}, b"", b""])), "must be byte strings"),
    (cbor2.dumps(cbor2.CBORTag(18, [b"\xff", {}, b"", b""])), "not valid CBOR"),
    (cbor2.dumps(cbor2.CBORTag(18, [cbor2.dumps([1]), {}, b"", b""])), "protected header is not a map"),
    (cbor2.dumps(cbor2.CBORTag(18, [b"", [], b"", b""])), "unprotected header must be a map"),
    (cbor2.dumps(cbor2.CBORTag(35, "a+")), "semantic tag 35"),
    (b"\x81" * 1000, "not valid CBOR"),
    (b"\xa2\x01\x01\x01\x02", "not valid CBOR"),  # a map with a duplicate key
])
def test_malformed_cose(trusted, blob, words):
    assert_invalid(verify(blob, trusted, media_type="application/cose"), words)


@pytest.mark.parametrize("manifest, words", [
    (b"{}", "not a Notary Project signature"),
    (json.dumps({"artifactType": "application/vnd.cncf.notary.signature"}).encode(), "exactly one layer"),
    (json.dumps({"artifactType": "application/vnd.cncf.notary.signature",
                 "layers": [{"mediaType": "application/pgp", "digest": IMAGE_DIGEST, "size": 1}]}).encode(),
     "unsupported signature envelope type 'application/pgp'"),
    (json.dumps({"artifactType": "application/vnd.cncf.notary.signature",
                 "layers": [{"mediaType": "application/cose", "digest": "md5:00", "size": 1}]}).encode(),
     "not a valid digest"),
    (json.dumps({"artifactType": "application/vnd.cncf.notary.signature",
                 "layers": [{"mediaType": "application/cose", "digest": IMAGE_DIGEST, "size": -1}]}).encode(),
     "size is not a non-negative integer"),
    (b"x" * 70_000, "the limit is 65536"),
])
def test_malformed_signature_manifest(chain, trusted, manifest, words):
    assert_invalid(verify(sign_jws(chain), trusted, manifest=manifest), words)
    with pytest.raises(ValueError, match=words.split("'")[0][:20]):
        parse_signature_manifest(manifest)


def test_envelope_over_the_size_limit(trusted):
    blob = b" " * (256 * 1024 + 1)
    assert_invalid(verify(blob, trusted), "the limit is 262144")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_envelopes_never_crash(chain, trusted, data):
    """Any byte of a valid envelope changed, dropped or repeated: a verdict, never an exception."""
    media_type = data.draw(st.sampled_from(["application/jose+json", "application/cose"]))
    envelope = bytearray(sign_jws(chain) if media_type.endswith("json") else sign_cose(chain))
    position = data.draw(st.integers(0, len(envelope) - 1))
    action = data.draw(st.sampled_from(["flip", "drop", "repeat"]))
    if action == "flip":
        envelope[position] ^= data.draw(st.integers(1, 255))
    elif action == "drop":
        del envelope[position]
    else:
        envelope[position:position] = envelope[position:position + data.draw(st.integers(1, 64))]
    verdict = verify(bytes(envelope), trusted, media_type=media_type)
    # a change in what is not signed (the signing agent, JSON spacing) may still verify; nothing else may
    assert verdict.status in ("invalid", "verified"), verdict
    assert verdict.reason is None or "\n" not in verdict.reason


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blob=st.binary(max_size=2048), media_type=st.sampled_from(["application/jose+json", "application/cose"]))
def test_random_bytes_never_crash(trusted, blob, media_type):
    verdict = verify(blob, trusted, media_type=media_type)
    assert verdict.status == "invalid" and verdict.reason and "\n" not in verdict.reason


# --- several signatures ------------------------------------------------------------------------

def test_several_signatures(chain, trusted):
    stranger = make_chain(n=1)
    untrusted = sign_jws(stranger)
    other_digest = sign_jws(chain, ns.payload(OTHER_DIGEST))
    good = sign_cose(chain)

    def pairs(*envelopes):
        return [(ns.signature_manifest(e, "application/cose" if e[:1] != b"{" else "application/jose+json"), e)
                for e in envelopes]

    unsigned = verify_notation_signatures([], digest=IMAGE_DIGEST, requirement=trusted, now=NOW)
    assert (unsigned.status, unsigned.reason) == ("unsigned", "no Notary Project signature")
    first_good = verify_notation_signatures(pairs(untrusted, good), digest=IMAGE_DIGEST, requirement=trusted, now=NOW)
    assert first_good.status == "verified" and first_good.signer.endswith("CN=SecureBuilder")
    mixed = verify_notation_signatures(pairs(untrusted, other_digest), digest=IMAGE_DIGEST, requirement=trusted,
                                       now=NOW)
    assert mixed.status == "mismatch"
    assert mixed.reason.startswith("2 signatures, none verified; the signature is for " + OTHER_DIGEST)
    one = verify_notation_signatures(pairs(untrusted), digest=IMAGE_DIGEST, requirement=trusted, now=NOW)
    assert one.status == "invalid" and not one.reason.startswith("1 signatures")
    capped = verify_notation_signatures(pairs(untrusted, good), digest=IMAGE_DIGEST, requirement=trusted, now=NOW,
                                        limit=1)
    assert capped.status == "invalid"


def test_signature_manifest_facts(chain):
    envelope = sign_cose(chain)
    manifest = ns.signature_manifest(envelope, "application/cose", chain=chain)
    facts = parse_signature_manifest(manifest)
    assert facts.envelope_type == "application/cose"
    assert facts.envelope_digest == "sha256:" + hashlib.sha256(envelope).hexdigest()
    assert facts.envelope_size == len(envelope) and facts.subject_digest == IMAGE_DIGEST
    assert facts.thumbprints == tuple(c.fingerprint(hashes.SHA256()).hex() for c in chain.certificates)
    assert is_signature_manifest(json.loads(manifest))
    assert is_signature_manifest({"artifactType": "application/vnd.cncf.notary.signature"})
    assert not is_signature_manifest({"artifactType": "application/vnd.dev.cosign.artifact.sig.v1+json"})


# --- a real envelope made by notation ----------------------------------------------------------

@pytest.fixture(scope="module")
def real():
    envelope = (REAL / "notation-go-withoutTimestamp.sig").read_bytes()
    store = (REAL / "notation-go-alpine.crt").read_text()
    return envelope, ns.signature_manifest(envelope, subject=REAL_DIGEST), store


def test_real_notation_signature_verifies(real):
    envelope, manifest, store = real
    req = requirement(store, identities=["x509.subject: C=US, ST=WA, L=Seattle, O=Notary, CN=alpine"])
    verdict = verify_notation(manifest, envelope, digest=REAL_DIGEST, requirement=req, now=NOW)
    assert (verdict.status, verdict.signer) == ("verified", "C=US, ST=WA, L=Seattle, O=Notary, CN=alpine")


def test_real_notation_signature_against_other_policies(real, chain):
    envelope, manifest, store = real
    notary = requirement(store, identities=["*"])
    assert_invalid(verify_notation(manifest, envelope, digest=REAL_DIGEST, requirement=requirement(chain.root_pem()),
                                   now=NOW), "does not lead to the trust store")
    assert_invalid(verify_notation(manifest, envelope, digest=REAL_DIGEST, now=NOW,
                                   requirement=requirement(store, identities=[ACME])), "not a trusted identity")
    assert verify_notation(manifest, envelope, digest=IMAGE_DIGEST, requirement=notary, now=NOW).status == "mismatch"
    after = datetime(2033, 6, 1, tzinfo=timezone.utc)  # the certificate ends 2033-05-10
    assert_invalid(verify_notation(manifest, envelope, digest=REAL_DIGEST, requirement=notary, now=after),
                   "is not valid now")
    before = datetime(2023, 1, 1, tzinfo=timezone.utc)  # its signing time is after "now": the cert is not valid yet
    assert_invalid(verify_notation(manifest, envelope, digest=REAL_DIGEST, requirement=notary, now=before),
                   "is not valid now")
    tampered = json.loads(envelope)
    tampered["signature"] = tampered["signature"][:-4] + ("AAAA" if tampered["signature"][-4:] != "AAAA" else "BBBB")
    tampered = json.dumps(tampered).encode()
    assert_invalid(verify(tampered, notary, digest=REAL_DIGEST), "signature does not verify")


def test_real_signature_time_is_the_signed_one(real):
    """The certificate is checked at the envelope's signingTime (2024-06-18T17:08:35+08:00)."""
    envelope, _, _ = real
    protected = json.loads(base64.urlsafe_b64decode(json.loads(envelope)["protected"] + "=="))
    signing_time = datetime.fromisoformat(protected["io.cncf.notary.signingTime"])
    assert signing_time == REAL_SIGNED


def test_now_must_be_timezone_aware(chain, trusted):
    with pytest.raises(TypeError):
        verify(sign_jws(chain), trusted, now=datetime(2026, 3, 1))


def test_notation_returns_the_one_verification_type():
    """One verdict record for every verifier: notation's is the same class as Sigstore's."""
    from shared.core.trust import verdict

    assert Verification is verdict.Verification
    assert verify_notation_signatures([], digest=IMAGE_DIGEST, requirement=None, now=NOW) == verdict.Verification(
        verdict.UNSIGNED, verdict.KIND_NOTATION, reason="no Notary Project signature")
