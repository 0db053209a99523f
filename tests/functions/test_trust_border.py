"""Trust at the border through the registered functions, against the stand-in, with signatures made by others.

- a cosign key signature: the key and signature made by node:crypto in tests/sigstore/sign.js (cosign's
  scheme: simple-signing payload, ``sha256-<hex>.sig`` tag pushed with devstack.oci.push_cosign);
- a Sigstore keyless bundle: made by @sigstore/sign against @sigstore/mock's Fulcio and Rekor
  (tests/sigstore/sign.js) and attached by @sigstore/oci (tests/sigstore/attach.js) to an image index in
  the stand-in's token-auth upstream (no referrers API there: the referrers tag schema); its trusted
  root is an operator-supplied root uploaded as ``trust/roots/<name>.json``;
- a Notary Project signature: a JWS envelope from tests/unit/notary_signer.py (written from the
  specification, independent of the verifier) pushed as an OCI 1.1 referrer (devstack.oci.push_artifact,
  referrers tag schema on the upstream).

The policy is uploaded to the manifests container (the blob trigger checks and records it), then a
manifest: the queued run verifies each digest to import in its chunk; verified images are imported with
``verification`` in the record, an unsigned image and a copied signature (``mismatch``) are rejected
under ``enforce`` and not imported, an unsigned image under ``audit`` is imported and recorded
``unsigned``. A re-plan on "another instance" (this process's memory cache cleared) reads the shared
verdict blobs instead of looking signatures up again.
"""
from __future__ import annotations

import base64
import io
import json
import logging
import textwrap
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import azure.functions as func
import pytest
from azure.functions.timer import TimerRequest

from devstack import oci
from shared import entrypoints
from tests.records import run_records_of
from shared.adapters.signatures import SignatureFinder
from shared.cli import main as cli_main
from shared.handlers import trust as trust_handler
from tests.signing import IDENTITY, ISSUER, attach, sign, simple_signing
from tests.unit import notary_signer as ns

pytestmark = pytest.mark.timeout(600)
SUBJECT = "x509.subject: C=US, ST=WA, O=acme-rockets.io"


@pytest.fixture
def prefix():
    return f"tb{uuid.uuid4().hex[:8]}"


@pytest.fixture
def trust_env(env, stack, seeded_auth):
    """docker.io mirrored to the token-auth upstream (with its credentials), quay.io to the plain upstream."""
    env.setenv("SOURCE_REGISTRY_MIRRORS", f"docker.io={stack.upstream_auth_host},quay.io={stack.upstream_host}")
    env.setenv("DOCKERHUB_USERNAME", stack.upstream_auth_user)
    env.setenv("DOCKERHUB_TOKEN", stack.upstream_auth_password)
    entrypoints.reset()
    trust_handler.clear_memory()
    yield env
    trust_handler.clear_memory()


def services():
    return entrypoints.services()


def upload(name: str, data: bytes) -> str:
    s = services()
    s.store.put_bytes(s.settings.manifests_container, name, data)
    return s.store.get_bytes_etag(s.settings.manifests_container, name)[1]


def deliver(functions, name: str, data: bytes) -> None:
    etag = upload(name, data)
    container = services().settings.manifests_container
    functions["manifest_uploaded"](func.blob.InputStream(data=data, name=f"{container}/{name}",
                                                         blob_properties={"ETag": etag}))


def records_for(name: str) -> list[dict]:
    return run_records_of(services(), name)


def indent(pem: str, spaces: int) -> str:
    return textwrap.indent(pem.strip() + "\n", " " * spaces)


def notation_chain():
    """root -> intermediate -> signer, valid around the real time (the stand-in verifies at "now")."""
    now = datetime.now(timezone.utc)
    valid = {"not_before": now - timedelta(days=30), "not_after": now + timedelta(days=30)}
    return ns.make_chain(n=7, root_options=valid, intermediate_options=valid, leaf_options=valid)


class Upstreams:
    """The signed and unsigned images of one test, pushed to the stand-in's upstreams."""

    def __init__(self, stack, prefix: str, tmp: Path):
        self.stack, self.prefix, self.tmp = stack, prefix, tmp
        up = stack.upstream_host
        self.digests: dict[str, str] = {}
        for name in ("cosign", "notation", "unsigned", "copied", "audit/tool"):
            self.digests[name] = oci.push(oci.build_image(f"{prefix}/{name}", seed=f"{prefix}-{name}", layers=1),
                                          f"{up}/{prefix}/{name}:1.0", cert_dir=stack.certs_dir)
        index = oci.build_image(f"{prefix}/keyless", platforms=oci.MULTI, seed=prefix)  # what a tag names
        self.digests["keyless"] = oci.push(index, f"{stack.upstream_auth_host}/{prefix}/keyless:1.0",
                                           cert_dir=stack.certs_dir, creds=stack.upstream_auth_creds)
        self.notation_layout = oci.build_image(f"{prefix}/notation", seed=f"{prefix}-notation", layers=1)

        # sign.js: a cosign key signature over the simple-signing payload, and a keyless DSSE bundle
        payload = simple_signing(self.digests["cosign"], f"quay.io/{prefix}/cosign")
        (tmp / "payload.json").write_bytes(payload)
        made = sign({"keys": [{"name": "release", "type": "ec", "curve": "P-256",
                               "payloads": [str(tmp / "payload.json")]}],
                     "bundles": [{"name": "keyless", "kind": "dsse", "predicateType": "https://slsa.dev/provenance/v1",
                                  "subjects": [{"name": f"docker.io/{prefix}/keyless",
                                                "digest": self.digests["keyless"]}]}]}, tmp / "made")
        self.public_key = Path(made["keys"]["release"]["publicKey"]).read_text()
        self.trusted_root = Path(made["trustedRoot"]).read_bytes()
        signature = Path(made["keys"]["release"]["signatures"][0]).read_text().strip()
        layer = oci.cosign_signature_layer(payload, signature)
        for name in ("cosign", "copied"):  # the second: someone copying a valid signature to another image
            oci.push_cosign([layer], f"{up}/{prefix}/{name}", self.digests[name], cert_dir=stack.certs_dir)
        attach(stack, f"{prefix}/keyless", self.digests["keyless"], made["bundles"]["keyless"])

        # a Notary Project signature (JWS) of the notation image, as an OCI 1.1 referrer
        self.chain = notation_chain()
        layout = self.notation_layout
        envelope = ns.sign_jws(self.chain, ns.payload(layout.digest, media_type=layout.media_type, size=layout.size),
                               signing_time=datetime.now(timezone.utc) - timedelta(minutes=5))
        artifact = oci.build_artifact("application/vnd.cncf.notary.signature",
                                      [oci.ArtifactLayer.of("application/jose+json", envelope)],
                                      subject=oci.layout_descriptor(layout))
        pushed = oci.push_artifact(artifact, f"{up}/{prefix}/notation", cert_dir=stack.certs_dir)
        self.notation_signature = pushed.digest
        # where the finder reads it: the referrers API when the registry keeps referrers (it answered the push
        # with OCI-Subject), else the referrers tag schema's index the push updated
        self.notation_location = f"{'referrers' if pushed.oci_subject else 'referrers-tag'}:{pushed.digest}"

    def policy(self, root_name: str) -> bytes:
        p = self.prefix
        return f"""\
version: 1
scopes:
  - name: keyless
    match: docker.io/{p}/**
    trusted_root: {root_name}
    signatures:
      - kind: keyless
        identity: {IDENTITY}
        issuer: {ISSUER}
  - name: cosign
    match: quay.io/{p}/*
    signatures:
      - kind: cosign-key
        key: |
{indent(self.public_key, 10)}\
  - name: notation
    match: quay.io/{p}/notation
    signatures:
      - kind: notation
        trust_store: |
{indent(self.chain.root_pem(), 10)}\
        trusted_identities: ["{SUBJECT}"]
  - name: audit
    match: quay.io/{p}/audit/**
    mode: audit
    signatures:
      - kind: cosign-key
        key: |
{indent(self.public_key, 10)}""".encode()

    def manifest(self, names=("keyless", "cosign", "notation", "unsigned", "copied", "audit/tool"), suffix="") -> bytes:
        registry = {"keyless": "docker.io"}
        return "".join(f"{registry.get(n, 'quay.io')}/{self.prefix}/{n}:1.0 => {self.prefix}/{n.replace('/', '-')}"
                       f"{suffix}\n" for n in names).encode()


def test_signed_images_cross_unsigned_and_copied_ones_do_not(trust_env, stack, functions, queue_host, prefix,
                                                              tmp_path, caplog):
    images = Upstreams(stack, prefix, tmp_path)
    s = services()
    container = s.settings.outcomes_container
    root_name = f"mock-{prefix}"

    # the policy and the operator's trusted root are checked on upload and the result recorded
    deliver(functions, f"trust/roots/{root_name}.json", images.trusted_root)
    deliver(functions, "trust-policy.yaml", images.policy(root_name))
    policy_sha = __import__("hashlib").sha256(images.policy(root_name)).hexdigest()
    checked = s.store.get_json(container, f"trust-policies/{policy_sha}.json")
    assert checked["status"] == "valid" and [sc["name"] for sc in checked["scopes"]] == [
        "keyless", "cosign", "notation", "audit"]
    root_sha = __import__("hashlib").sha256(images.trusted_root).hexdigest()
    assert s.store.get_json(container, f"trust-roots/{root_sha}.json")["status"] == "valid"

    manifest = images.manifest()
    lookups = SignatureFinder.lookups
    with caplog.at_level(logging.WARNING):
        deliver(functions, f"{prefix}.txt", manifest)
        queue_host.drain()
    assert SignatureFinder.lookups - lookups == 6  # one per digest to import
    [run] = records_for(f"{prefix}.txt")
    assert run["status"] == "failed" and run["trust"]["policy"] == "trust-policy.yaml"
    assert run["trust"]["sha256"] == f"sha256:{policy_sha}"
    by_target = {e["target"].split(":")[0].split("/", 1)[1]: e for e in run["entries"]}

    keyless = by_target["keyless"]
    assert keyless["result"] == "imported" and keyless["source_digest"] == images.digests["keyless"]
    assert keyless["verification"] == {
        "status": "verified", "kind": "keyless", "signer": IDENTITY, "issuer": ISSUER,
        "location": keyless["verification"]["location"], "reason": None, "scope": "keyless", "mode": "enforce"}
    assert keyless["verification"]["location"].startswith("referrers-tag:sha256:")  # no referrers API upstream

    cosign = by_target["cosign"]
    key_id = "sha256:" + __import__("hashlib").sha256(base64.b64decode(
        "".join(images.public_key.strip().splitlines()[1:-1]))).hexdigest()
    assert cosign["result"] == "imported" and cosign["verification"]["status"] == "verified"
    assert cosign["verification"]["kind"] == "cosign-key" and cosign["verification"]["signer"] == key_id
    assert cosign["verification"]["location"] == "tag:" + images.digests["cosign"].replace(":", "-") + ".sig"

    notation = by_target["notation"]
    assert notation["result"] == "imported" and notation["verification"]["scope"] == "notation"  # the exact pattern
    assert notation["verification"]["status"] == "verified" and notation["verification"]["kind"] == "notation"
    assert notation["verification"]["signer"] == "C=US, ST=WA, O=acme-rockets.io, OU=Finance, CN=SecureBuilder"
    assert notation["verification"]["issuer"] == "C=US, ST=WA, O=acme-rockets.io, OU=PKI, CN=Test Root 7"
    assert notation["verification"]["location"] == images.notation_location

    unsigned, copied = by_target["unsigned"], by_target["copied"]
    for entry, status in ((unsigned, "unsigned"), (copied, "mismatch")):
        assert entry["result"] == "failed" and entry["action"] == "error" and entry["target_digest"] is None
        assert entry["error"]["code"] == "SignatureRejected" and entry["error"]["retryable"] is False
        assert entry["error"]["message"].startswith(f"scope cosign (enforce): {status}: ")
        assert "\n" not in entry["error"]["message"]
        assert entry["verification"]["status"] == status and entry["verification"]["mode"] == "enforce"
        assert s.acr.tag_digest(f"{prefix}/{entry['target'].split('/', 1)[1].split(':')[0]}", "1.0") is None
    assert images.digests["cosign"] in copied["error"]["message"]  # a valid signature, for another digest

    audit = by_target["audit-tool"]
    assert audit["result"] == "imported" and audit["verification"]["status"] == "unsigned"
    assert audit["verification"]["mode"] == "audit" and audit["verification"]["scope"] == "audit"
    assert s.acr.tag_digest(f"{prefix}/audit-tool", "1.0") == images.digests["audit/tool"]

    assert run["summary"]["rejected"] == 2 and run["summary"]["unverified"] == 3
    assert run["summary"]["imported"] == 4 and run["summary"]["failed"] == 2
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("AIRLOCK_RUN_FAILED")
              and run["run_id"] in r.getMessage()]
    assert "failed=2" in line and "rejected=2" in line

    # a re-plan on another instance (this process's verdicts forgotten): the verified digests come from the
    # shared verdict blobs, so nothing is looked up again; the rejected ones are verified again
    trust_handler.clear_memory()
    plan = tmp_path / "images-elsewhere.txt"
    plan.write_bytes(images.manifest(suffix="-copy"))
    lookups = SignatureFinder.lookups
    out, err = io.StringIO(), io.StringIO()
    assert cli_main(["plan", str(plan), "--json", "--no-lock"], out=out, err=err) == 1
    assert SignatureFinder.lookups - lookups == 3  # unsigned, copied and audit: never cached
    planned = {e["target"].split(":")[0].split("/", 1)[1]: e for e in json.loads(out.getvalue())["entries"]}
    for name in ("keyless", "cosign", "notation"):
        verification = planned[f"{name}-copy"]["verification"]
        assert verification["status"] == "verified" and verification["cached"] is True
        assert verification["signer"] == by_target[name]["verification"]["signer"]
    assert planned["unsigned-copy"]["error"]["code"] == "SignatureRejected"
    verdicts = s.store.list_names(container, s.settings.trust_verdict_prefix)
    assert len(verdicts) == 3 and all(json.loads(s.store.get_bytes(container, n))["verification"]["status"] ==
                                      "verified" for n in verdicts)

    # the re-sync timer: imported entries are unchanged (nothing imported, nothing verified), the rejected
    # ones are verified again and still rejected
    functions["resync_timer"](TimerRequest(past_due=False))
    queue_host.drain()
    again = records_for(f"{prefix}.txt")[-1]
    assert again["run_id"] != run["run_id"] and again["summary"]["rejected"] == 2
    assert {e["verification"]["status"] for e in again["entries"] if e["action"] == "unchanged"} == {"skipped"}


def test_an_invalid_policy_is_recorded_on_upload_and_runs_import_nothing_until_it_is_fixed(
        trust_env, stack, functions, queue_host, prefix):
    digest = oci.push(oci.build_image(f"{prefix}/app", seed=prefix, layers=1),
                      f"{stack.upstream_host}/{prefix}/app:1.0", cert_dir=stack.certs_dir)
    s = services()
    container = s.settings.outcomes_container
    bad = f"version: 1\nscopes:\n  - name: apps\n    match: quay.io/{prefix}/*\n    mode: strict\n".encode()
    deliver(functions, "trust-policy.yaml", bad)
    checked = s.store.get_json(container, f"trust-policies/{__import__('hashlib').sha256(bad).hexdigest()}.json")
    assert checked["status"] == "invalid" and checked["scopes"] == []
    assert {(e["line"], e["field"]) for e in checked["errors"]} == {(3, "scopes[0]"), (5, "scopes[0].mode")}

    manifest = f"quay.io/{prefix}/app:1.0 => {prefix}/app\n".encode()
    deliver(functions, f"{prefix}.txt", manifest)
    queue_host.drain()
    [run] = records_for(f"{prefix}.txt")
    assert run["status"] == "invalid" and run["entries"] == [] and queue_host.pending() == 0
    [error] = run["errors"]
    assert error["field"] == "trust_policy" and "the trust policy trust-policy.yaml is invalid (2 problems; " \
        "first: line 3, scopes[0]: the scope has no signatures" in error["message"]
    assert s.acr.tag_digest(f"{prefix}/app", "1.0") is None

    # fixed (no scope names this source): the next upload runs, its entries say nothing applied
    deliver(functions, "trust-policy.yaml", b"version: 1\nscopes: []\n")
    deliver(functions, f"{prefix}.txt", manifest + b"# again\n")
    queue_host.drain()
    run = records_for(f"{prefix}.txt")[-1]
    assert run["status"] == "succeeded" and run["trust"]["scopes"] == 0
    [entry] = run["entries"]
    assert entry["result"] == "imported" and entry["verification"]["status"] == "skipped"
    assert entry["verification"]["reason"] == (f"no scope of the trust policy trust-policy.yaml matches "
                                               f"quay.io/{prefix}/app")
    assert s.acr.tag_digest(f"{prefix}/app", "1.0") == digest


def test_a_throttled_signature_lookup_is_transient_like_any_plan_failure(trust_env, stack, functions, queue_host,
                                                                         prefix, tmp_path):
    """The source answers HEAD but throttles every signature read: the chunk is delivered again; on its last
    delivery the entry fails, retryable, and nothing is imported."""
    import trustme
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from tests.servers import serve_asgi

    image = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "size": 2,
                                   "digest": "sha256:" + __import__("hashlib").sha256(b"{}").hexdigest()},
                        "layers": []}).encode()
    digest = "sha256:" + __import__("hashlib").sha256(image).hexdigest()
    reads: list[str] = []

    async def manifests(request):
        if request.path_params["ref"] in ("1.0", digest):
            return Response(image if request.method == "GET" else b"", headers={
                "Docker-Content-Digest": digest, "Content-Length": str(len(image)),
                "Content-Type": "application/vnd.oci.image.manifest.v1+json"})
        reads.append(request.url.path)
        return JSONResponse({"errors": [{"code": "TOOMANYREQUESTS"}]}, status_code=429, headers={"Retry-After": "0"})

    async def referrers(request):
        reads.append(request.url.path)
        return JSONResponse({"errors": [{"code": "UNAVAILABLE"}]}, status_code=503)

    app = Starlette(routes=[Route("/v2/", lambda r: JSONResponse({})),
                            Route("/v2/{repo:path}/referrers/{digest}", referrers),
                            Route("/v2/{repo:path}/manifests/{ref}", manifests, methods=["GET", "HEAD"])])
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    bundle = tmp_path / "ca.pem"
    bundle.write_bytes(stack.ca_pem.read_bytes() + ca.cert_pem.bytes())
    with serve_asgi(app, certfile=str(tmp_path / "cert.pem"), keyfile=str(tmp_path / "key.pem")) as url:
        trust_env.setenv("SOURCE_REGISTRY_MIRRORS", f"quay.io={url.split('://', 1)[1]}")
        trust_env.setenv("REQUESTS_CA_BUNDLE", str(bundle))
        trust_env.setenv("RETRY_MAX_ATTEMPTS", "2")
        entrypoints.reset()
        key = ns.private_key("ec", 256).public_key().public_bytes(
            __import__("cryptography.hazmat.primitives.serialization", fromlist=["x"]).Encoding.PEM,
            __import__("cryptography.hazmat.primitives.serialization", fromlist=["x"]).PublicFormat
            .SubjectPublicKeyInfo).decode()
        deliver(functions, "trust-policy.yaml", (f"scopes:\n  - name: flaky\n    match: quay.io/{prefix}/*\n"
                                                 "    signatures:\n      - kind: cosign-key\n        key: |\n"
                                                 + indent(key, 10)).encode())
        deliver(functions, f"{prefix}.txt", f"quay.io/{prefix}/flaky:1.0 => {prefix}/flaky\n".encode())
        queue_host.drain()
    [run] = records_for(f"{prefix}.txt")
    assert run["status"] == "failed" and run["retryable"] is True
    [entry] = run["entries"]
    assert entry["result"] == "failed" and entry["error"]["retryable"] is True and "verification" not in entry
    assert entry["error"]["message"].endswith("answered 429")  # cosign's tag, the first place read, is throttled
    assert len(reads) == 2 * queue_host.max_dequeue  # two attempts per delivery, every delivery
    assert services().acr.tag_digest(f"{prefix}/flaky", "1.0") is None


def test_lock_verifies_each_digest_and_records_its_signer(trust_env, stack, prefix, tmp_path):
    from shared.core.lock import parse_lock

    images = Upstreams(stack, prefix, tmp_path)
    roots = tmp_path / "roots"
    roots.mkdir()
    (roots / "mock.json").write_bytes(images.trusted_root)
    policy = tmp_path / "trust-policy.yaml"
    policy.write_bytes(images.policy("mock"))
    manifest = tmp_path / "images.txt"
    manifest.write_bytes(images.manifest(("keyless", "cosign", "notation", "audit/tool")))
    out, err = io.StringIO(), io.StringIO()
    code = cli_main(["lock", str(manifest), "--trust-policy", str(policy), "--trusted-roots", str(roots)],
                    out=out, err=err)
    assert code == 0, err.getvalue()
    lock = parse_lock((tmp_path / "images.lock").read_bytes())
    signers = {i.target.split("/", 1)[1].split(":")[0]: i.signer for i in lock.images}
    assert signers["keyless"] == {"kind": "keyless", "identity": IDENTITY, "issuer": ISSUER}
    assert signers["cosign"]["kind"] == "cosign-key" and signers["cosign"]["key_id"].startswith("sha256:")
    assert signers["notation"] == {"kind": "notation",
                                   "subject": "C=US, ST=WA, O=acme-rockets.io, OU=Finance, CN=SecureBuilder",
                                   "issuer": "C=US, ST=WA, O=acme-rockets.io, OU=PKI, CN=Test Root 7"}
    assert signers["audit-tool"] is None and "locked without a signer (audit)" in err.getvalue()
    assert {i.digest for i in lock.images} == {images.digests[n] for n in ("keyless", "cosign", "notation",
                                                                          "audit/tool")}

    # an unsigned line under enforce: the lock is refused, names the line and why, and is not rewritten
    before = (tmp_path / "images.lock").read_bytes()
    manifest.write_bytes(images.manifest(("keyless", "cosign", "notation", "audit/tool", "unsigned")))
    out, err = io.StringIO(), io.StringIO()
    code = cli_main(["lock", str(manifest), "--trust-policy", str(policy), "--trusted-roots", str(roots)],
                    out=out, err=err)
    assert code == 1 and (tmp_path / "images.lock").read_bytes() == before
    assert "LockIncomplete" in err.getvalue() and "nothing was written" in err.getvalue()
    assert "1 line could not be resolved or verified" in err.getvalue()
    assert f"line 5: quay.io/{prefix}/unsigned:1.0@{images.digests['unsigned']}: SignatureRejected: " \
           "scope cosign (enforce): unsigned: " in err.getvalue()
    # without the trusted root the keyless line cannot be verified: refused, and the error says why
    (roots / "mock.json").unlink()
    manifest.write_bytes(images.manifest(("keyless",)))
    out, err = io.StringIO(), io.StringIO()
    assert cli_main(["lock", str(manifest), "--update", "--trust-policy", str(policy), "--trusted-roots",
                     str(roots)], out=out, err=err) == 1
    assert "trusted root 'mock' is not available" in err.getvalue()
