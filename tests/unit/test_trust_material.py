"""shared.core.trustmaterial: the verification material laid out as one OCI artifact, from the example trust
policy (tests/fixtures/trust/policy.yaml: keyless, cosign-key and notation scopes, one naming an operator
trusted root) with the Sigstore roots sigstore-python ships (public-good, and sigstage standing in for an
operator's own Sigstore)."""
from __future__ import annotations

import hashlib
import json
from importlib.resources import files

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from shared.core import trustmaterial as tm
from shared.core.trust.parse import parse_trust_policy
from shared.errors import ValidationError
from tests.fixture_paths import FIXTURES

POLICY_BYTES = (FIXTURES / "trust" / "policy.yaml").read_bytes()
STORE = files("sigstore._store")
PUBLIC_GOOD = STORE.joinpath("https%3A%2F%2Ftuf-repo-cdn.sigstore.dev/trusted_root.json").read_bytes()
SIGSTAGE = STORE.joinpath("https%3A%2F%2Ftuf-repo-cdn.sigstage.dev/trusted_root.json").read_bytes()
ROOTS = {"public-good": PUBLIC_GOOD, "acme-sigstore": SIGSTAGE}


@pytest.fixture(scope="module")
def policy():
    result = parse_trust_policy(POLICY_BYTES, "policy.yaml")
    assert result.ok
    return result.policy


@pytest.fixture(scope="module")
def material(policy):
    return tm.build(policy, POLICY_BYTES, ROOTS)


def test_the_manifest_is_an_oci_artifact_whose_layers_are_the_files(material):
    manifest = json.loads(material.manifest)
    assert manifest["artifactType"] == tm.ARTIFACT_TYPE and manifest["mediaType"] == tm.MEDIA_OCI_MANIFEST
    assert manifest["config"] == {"mediaType": "application/vnd.oci.empty.v1+json", "size": 2,
                                  "digest": "sha256:" + hashlib.sha256(b"{}").hexdigest()}
    assert [layer["annotations"]["org.opencontainers.image.title"] for layer in manifest["layers"]] == \
        [f.name for f in material.files]
    for layer, file in zip(manifest["layers"], material.files):
        assert layer["digest"] == "sha256:" + hashlib.sha256(file.data).hexdigest() and layer["size"] == len(file.data)
    assert material.digest == "sha256:" + hashlib.sha256(material.manifest).hexdigest()
    assert material.tag == "trust-" + material.digest[7:23]
    assert material.blobs[0] == b"{}" and len(material.blobs) == len(material.files) + 1
    assert manifest["annotations"]["io.acr-airlock.trust-policy.sha256"] == \
        "sha256:" + hashlib.sha256(POLICY_BYTES).hexdigest()


def test_same_material_same_digest_and_a_changed_policy_changes_it(policy, material):
    assert tm.build(policy, POLICY_BYTES, dict(reversed(list(ROOTS.items())))).manifest == material.manifest
    changed = POLICY_BYTES.replace(b"mode: audit", b"mode: enforce")
    other = parse_trust_policy(changed, "policy.yaml").policy
    assert tm.build(other, changed, ROOTS).digest != material.digest


def test_trusted_roots_are_carried_with_their_keys_and_certificates_as_pem(material):
    names = [f.name for f in material.files]
    roots = material.index["trusted_roots"]
    assert set(roots) == {"public-good", "acme-sigstore"}
    good = roots["public-good"]
    assert tm.find(material, good["file"]).data == PUBLIC_GOOD
    fulcio = x509.load_pem_x509_certificates(tm.find(material, good["fulcio"]).data)
    assert fulcio and any(c.subject == c.issuer for c in fulcio)  # the chain includes its root
    source = json.loads(PUBLIC_GOOD)
    assert len(good["rekor"]) == len(source["tlogs"]) and len(good["ctlogs"]) == len(source["ctlogs"])
    rekor = next(r for r in good["rekor"] if r["base_url"] == "https://rekor.sigstore.dev")
    key = serialization.load_pem_public_key(tm.find(material, rekor["file"]).data)
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert hashlib.sha256(der).hexdigest().startswith(rekor["log_id"])  # Rekor's log id is its key's hash
    assert good["tsa"] in names and x509.load_pem_x509_certificates(tm.find(material, good["tsa"]).data)
    assert tm.find(material, roots["acme-sigstore"]["file"]).data == SIGSTAGE


def test_scopes_name_their_keys_certificates_and_identities(policy, material):
    index = json.loads(tm.find(material, "trust.json").data)
    assert index == material.index and index["policy"]["name"] == "policy.yaml"
    scopes = {s["name"]: s for s in index["scopes"]}
    assert scopes["kubernetes"]["keyless"] == [{"identity": "krel-trust@k8s-releng-prod.iam.gserviceaccount.com",
                                                "issuer": "https://accounts.google.com"}]
    assert scopes["kubernetes"]["trusted_root"] == "public-good"
    [cosign] = scopes["ublue"]["cosign_keys"]
    requirement = policy.get("ublue").signatures[0]
    assert tm.find(material, cosign).data == requirement.pem.encode()
    assert cosign == f"cosign-{requirement.key_id[7:23]}.pub"
    acme = scopes["acme"]
    assert acme["trusted_root"] == "acme-sigstore" and acme["match"] == ["registry.acme-rockets.io/**",
                                                                          "*.acme-rockets.io/apps/**"]
    [notation] = acme["notation"]
    assert notation["trusted_identities"] == ["x509.subject: C=US, ST=WA, L=Seattle, O=Notary"]
    [certificate] = x509.load_pem_x509_certificates(tm.find(material, notation["trust_store"]).data)
    assert certificate == policy.get("acme").signatures[0].certificates[0]
    assert tm.find(material, "trust-policy.yaml").data == POLICY_BYTES


def test_a_trusted_root_the_policy_names_must_be_supplied(policy):
    with pytest.raises(ValidationError) as caught:
        tm.build(policy, POLICY_BYTES, {"public-good": PUBLIC_GOOD})
    [problem] = caught.value.problems
    assert "acme-sigstore" in problem.message and problem.line == policy.get("acme").line


@pytest.mark.parametrize("data, reason", [
    (b"not json", "not JSON"),
    (b'{"mediaType": "application/json"}', "not a Sigstore trusted root"),
    (json.dumps({"mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1", "tlogs": []}).encode(),
     "no transparency log"),
    (json.dumps({"mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
                 "tlogs": [{"publicKey": {"rawBytes": "bm90IGEga2V5"}, "logId": {"keyId": "AA=="}}]}).encode(),
     "not a DER public key"),
])
def test_a_malformed_trusted_root_is_named(policy, data, reason):
    with pytest.raises(ValidationError) as caught:
        tm.build(policy, POLICY_BYTES, {**ROOTS, "acme-sigstore": data})
    [problem] = caught.value.problems
    assert problem.field == "acme-sigstore" and reason in problem.message
