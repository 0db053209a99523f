"""``make demo``, part 2: trust at the border, on the local stand-in.

Only reviewed digests cross, signatures are checked where the internet still is, and the proof goes
along into the private registry:

1. the upstream publishes three images under ``quay.io/demo/...``: one signed with a cosign key (its
   ``.sig`` tag), one with a Notary Project signature attached as an OCI 1.1 referrer, one unsigned;
2. a reviewed trust policy requires those signatures (``enforce``); ``airlock trust check`` checks it,
   the blob trigger records its upload check;
3. ``airlock lock --trust-policy`` refuses to lock the unsigned image; the lock is written without it
   checked, then ``airlock sync`` imports the two signed images (each with its ``verification``) and
   refuses the unsigned one (``SignatureRejected``): nothing of it reaches the ACR;
4. the signatures came along: the ACR holds the ``.sig`` tag, and its referrers API lists the
   Notary Project signature of the imported image;
5. a tag moves upstream: ``airlock plan`` reports the drift and imports nothing new, ``airlock lock
   --update`` proposes the new digest for review.

The policy's scopes cover ``quay.io/demo/**`` only, so the rest of the demo's images stay unchecked.
The signatures are made here, with the publishers' tools standing in: ``cryptography`` for the cosign
key and the Notary Project signer the tests use (tests/unit/notary_signer.py, written from the
specification, independent of the verifier).
"""
from __future__ import annotations

import base64
import json
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIGNER = "C=US, ST=WA, O=acme-rockets.io, OU=Finance, CN=SecureBuilder"


def banner(text: str) -> None:
    print(f"\n=== {text} " + "=" * max(0, 76 - len(text)), flush=True)


def cli(env_file: Path, *args: str, expect: int = 0, show: bool = True) -> tuple[int, str]:
    """Run ``airlock`` (python -m shared) and show it (``show``: its stdout too); (exit code, stdout)."""
    print("$ airlock " + " ".join(args), flush=True)
    done = subprocess.run([sys.executable, "-m", "shared", "--env-file", str(env_file), *args], cwd=ROOT,
                          stdout=subprocess.PIPE, text=True)
    if show:
        print(done.stdout, end="", flush=True)
    if done.returncode != expect:
        print(f"(exit {done.returncode}, expected {expect})")
    return done.returncode, done.stdout


def _indent(pem: str, spaces: int) -> str:
    return textwrap.indent(pem.strip() + "\n", " " * spaces)


class Publisher:
    """The upstream's side: images pushed to the stand-in's upstream, signed with the publishers' keys."""

    def __init__(self, stack):
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        from tests.unit import notary_signer

        self.stack = stack
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.public_pem = self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        now = datetime.now(timezone.utc)
        valid = {"not_before": now - timedelta(days=30), "not_after": now + timedelta(days=30)}
        self.ns = notary_signer
        self.chain = notary_signer.make_chain(n=1, root_options=valid, intermediate_options=valid,
                                              leaf_options=valid)

    def push(self, repository: str, tag: str, seed: str):
        from devstack import oci

        layout = oci.build_image(repository, seed=seed, layers=1)
        oci.push(layout, f"{self.stack.upstream_host}/{repository}:{tag}", cert_dir=self.stack.certs_dir)
        return layout

    def cosign_sign(self, repository: str, digest: str) -> None:
        """A cosign key signature over the simple-signing payload, under the ``sha256-<hex>.sig`` tag."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec

        from devstack import oci

        payload = oci.simple_signing_payload(f"quay.io/{repository}", digest)
        signature = base64.b64encode(self.key.sign(payload, ec.ECDSA(hashes.SHA256()))).decode()
        oci.push_cosign([oci.cosign_signature_layer(payload, signature)],
                        f"{self.stack.upstream_host}/{repository}", digest, cert_dir=self.stack.certs_dir)

    def notation_sign(self, repository: str, layout) -> str:
        """A Notary Project JWS signature attached to the image as an OCI 1.1 referrer; its digest."""
        from devstack import oci

        envelope = self.ns.sign_jws(self.chain, self.ns.payload(layout.digest, media_type=layout.media_type,
                                                                 size=layout.size),
                                    signing_time=datetime.now(timezone.utc) - timedelta(minutes=5))
        artifact = oci.build_artifact("application/vnd.cncf.notary.signature",
                                      [oci.ArtifactLayer.of("application/jose+json", envelope)],
                                      subject=oci.layout_descriptor(layout))
        return oci.push_artifact(artifact, f"{self.stack.upstream_host}/{repository}",
                                 cert_dir=self.stack.certs_dir).digest

    def policy(self) -> str:
        return f"""\
# trust-policy.yaml - reviewed like images.txt: which signatures each source must carry
version: 1
scopes:
  - name: demo-signed            # the most specific pattern wins
    match: quay.io/demo/signed
    mode: enforce
    signatures:
      - kind: cosign-key
        key: |
{_indent(self.public_pem, 10)}\
  - name: demo-attested
    match: quay.io/demo/attested
    mode: enforce
    signatures:
      - kind: notation
        trust_store: |
{_indent(self.chain.root_pem(), 10)}\
        trusted_identities: ["x509.subject: {SIGNER}"]
  - name: demo                   # anything else under quay.io/demo: a cosign signature, or it stays out
    match: quay.io/demo/**
    mode: enforce
    signatures:
      - kind: cosign-key
        key: |
{_indent(self.public_pem, 10)}"""


def trust_demo(stack, env_file: Path, workdir: Path, functions: dict) -> bool:
    import azure.functions as func

    from shared import entrypoints

    services = entrypoints.services()
    s = services.settings
    publisher = Publisher(stack)

    banner("trust at the border: the upstream publishes three images")
    signed = publisher.push("demo/signed", "1.0", "s1")
    publisher.cosign_sign("demo/signed", signed.digest)
    print(f"quay.io/demo/signed:1.0     {signed.digest}  signed with a cosign key (.sig tag)")
    attested = publisher.push("demo/attested", "1.0", "a1")
    signature = publisher.notation_sign("demo/attested", attested)
    print(f"quay.io/demo/attested:1.0   {attested.digest}  Notary Project signature {signature[:19]}... "
          "(an OCI 1.1 referrer)")
    unsigned = publisher.push("demo/unsigned", "1.0", "u1")
    print(f"quay.io/demo/unsigned:1.0   {unsigned.digest}  no signature")

    policy = workdir / "trust-policy.yaml"
    policy.write_text(publisher.policy())
    banner(f"the trust policy: {policy.relative_to(ROOT)}")
    print(policy.read_text(), end="")
    ok = cli(env_file, "trust", "check", str(policy))[0] == 0
    services.store.put_bytes(s.manifests_container, s.trust_policy_blob, policy.read_bytes())
    functions["manifest_uploaded"](func.blob.InputStream(data=policy.read_bytes(),
                                                         name=f"{s.manifests_container}/{s.trust_policy_blob}"))
    print(f"uploaded to {s.manifests_container}/{s.trust_policy_blob}; the blob trigger checked it: "
          "runs verify under it from now on")

    manifest = workdir / "trusted.txt"
    manifest.with_suffix(".lock").unlink(missing_ok=True)  # a lock from an earlier demo locks other digests
    manifest.write_text("# trusted.txt - images whose signatures the trust policy requires\n"
                        "quay.io/demo/signed:1.0 => demo/signed\n"
                        "quay.io/demo/attested:1.0 => demo/attested\n"
                        "quay.io/demo/unsigned:1.0 => demo/unsigned\n")
    banner(f"lock the manifest, verifying as a run would: {manifest.relative_to(ROOT)}")
    print(manifest.read_text(), end="")
    ok &= cli(env_file, "lock", str(manifest), "--trust-policy", str(policy), expect=1)[0] == 1
    print("-> refused: the unsigned image would not be let in, so the lock is not written")
    ok &= cli(env_file, "lock", str(manifest))[0] == 0
    print("(written without --trust-policy: digests only; the run still verifies at the border)")
    print(manifest.with_suffix(".lock").read_text(), end="")

    banner("sync: the signed images cross with their signatures, the unsigned one does not")
    code, out = cli(env_file, "--quiet", "sync", str(manifest), "--json", expect=1, show=False)
    ok &= code == 1
    record = json.loads(out) if out.strip() else {"entries": []}
    for entry in record["entries"]:
        v = entry.get("verification") or {}
        error = entry.get("error") or {}
        print(f"  line {entry['line']} {entry['target']}: {entry['result']} - {v.get('status')} "
              f"{v.get('kind') or ''} {v.get('signer') or ''}{error.get('code', '')} {error.get('message', '')}"
              .rstrip())
    print(f"  summary: {record.get('summary')}")
    acr = services.acr
    ok &= acr.tag_digest("demo/signed", "1.0") == signed.digest
    ok &= acr.tag_digest("demo/attested", "1.0") == attested.digest
    ok &= acr.tag_digest("demo/unsigned", "1.0") is None
    print(f"in the ACR: demo/signed:1.0 {acr.tag_digest('demo/signed', '1.0') is not None}, "
          f"demo/attested:1.0 {acr.tag_digest('demo/attested', '1.0') is not None}, "
          f"demo/unsigned:1.0 {acr.tag_digest('demo/unsigned', '1.0') is not None}")

    banner("the proof came along: the ACR's referrers API and cosign's tag")
    referrers = acr.referrers("demo/attested", attested.digest) or []
    print(f"GET /v2/demo/attested/referrers/{attested.digest[:19]}... -> {len(referrers)} referrer(s)")
    for descriptor in referrers:
        print(f"  {descriptor.get('artifactType')}  {descriptor['digest']}")
    ok &= any(d["digest"] == signature for d in referrers)
    sig_tag = "sha256-" + signed.digest.split(":", 1)[1] + ".sig"
    present = acr.tag_digest("demo/signed", sig_tag) is not None
    print(f"demo/signed:{sig_tag[:20]}...sig in the ACR: {present}")
    ok &= present

    banner("a tag moves upstream: reported as drift, nothing imported; lock --update proposes it")
    moved = publisher.push("demo/signed", "1.0", "s2")
    publisher.cosign_sign("demo/signed", moved.digest)
    print(f"quay.io/demo/signed:1.0 now points at {moved.digest}")
    code, out = cli(env_file, "--quiet", "sync", str(manifest), "--json", expect=1, show=False)  # unsigned: refused
    record = json.loads(out) if out.strip() else {}
    drift = [e for e in record.get("entries", []) if e.get("drift")]
    for e in drift:
        print(f"  drift: {e['target']} locked {e['drift']['locked'][:19]}... upstream "
              f"{(e['drift']['upstream'] or 'gone')[:19]}...; result {e['result']}")
    ok &= bool(drift) and acr.tag_digest("demo/signed", "1.0") == signed.digest
    ok &= cli(env_file, "lock", str(manifest), "--update")[0] == 0
    print("-> the lock-update job opens this as a pull request; once merged and uploaded, the new digest "
          "crosses (verified again at the border)")
    services.store.delete(s.manifests_container, s.trust_policy_blob)  # the policy was for this part only
    return bool(ok)
