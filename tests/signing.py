"""Test helper: signature material made with other people's tools, and the registry layouts it lives in.

- ``sign(spec, out_dir)``: runs ``tests/sigstore/sign.js`` (Node, offline: @sigstore/sign against
  @sigstore/mock through nock) and returns its summary (bundle files, key files, the trusted root).
- ``attach(stack, repository, digest, bundle)``: runs ``tests/sigstore/attach.js``: @sigstore/oci attaches
  the bundle to the image in the stand-in's token-auth upstream (referrers tag schema there).
- ``simple_signing(digest)``: a cosign simple-signing payload, as cosign writes it (compact JSON).
- ``cosign_manifest(layers)`` / ``bundle_manifest(bundle)``: the manifests cosign's tag scheme and
  @sigstore/oci write, with ``artifact(...)`` turning one into the ``SignatureArtifact`` the adapter
  would hand over (for unit tests).
- ``push_manifest(stack, host, repository, tag, manifest, blobs, creds=None)``: pushes a manifest and its
  blobs with skopeo (an OCI layout copied with ``--preserve-digests``), e.g. a ``sha256-<hex>.sig`` tag.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterable, Optional

from devstack import oci
from shared.core import trust as core

ROOT = Path(__file__).resolve().parent.parent
SIGN_JS = ROOT / "tests" / "sigstore" / "sign.js"
ATTACH_JS = ROOT / "tests" / "sigstore" / "attach.js"
EMPTY_CONFIG = b"{}"
IDENTITY = "https://github.com/acme/app/.github/workflows/release.yml@refs/tags/v1.2.3"
ISSUER = "https://token.actions.githubusercontent.com"


def _node() -> str:
    node = shutil.which("node")
    if not node or not (ROOT / "node_modules" / "@sigstore" / "sign").is_dir():
        raise RuntimeError("node and the @sigstore packages are needed (scripts/setup.sh runs npm ci)")
    return node


def sign(spec: dict, out_dir: os.PathLike | str, *, timeout: float = 120) -> dict:
    """Run sign.js with ``spec`` (its ``out`` is set to ``out_dir``); returns the summary it prints."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec_file = out / "spec.json"
    spec_file.write_text(json.dumps({"identity": IDENTITY, "issuer": ISSUER, **spec, "out": str(out)}))
    proc = subprocess.run([_node(), str(SIGN_JS), str(spec_file)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise RuntimeError(f"sign.js failed ({proc.returncode}): {proc.stderr[-3000:]}")
    return json.loads(proc.stdout)


def attach(stack, repository: str, digest: str, bundle: os.PathLike | str, *,
           media_type: str = core.MEDIA_BUNDLE_V03, annotations: Optional[dict] = None,
           timeout: float = 120) -> dict:
    """@sigstore/oci attaches ``bundle`` to ``repository@digest`` in the token-auth upstream."""
    with tempfile.TemporaryDirectory(prefix="attach-") as tmp:
        spec_file = Path(tmp) / "spec.json"
        spec_file.write_text(json.dumps({
            "registry": stack.upstream_auth_host, "repository": repository, "digest": digest, "bundle": str(bundle),
            "mediaType": media_type, "username": stack.upstream_auth_user, "password": stack.upstream_auth_password,
            "annotations": annotations or {}}))
        os.chmod(spec_file, 0o600)  # it holds the stand-in's password
        env = {**os.environ, "NODE_EXTRA_CA_CERTS": str(stack.ca_pem)}
        proc = subprocess.run([_node(), str(ATTACH_JS), str(spec_file)], capture_output=True, text=True,
                              timeout=timeout, cwd=ROOT, env=env, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise RuntimeError(f"attach.js failed ({proc.returncode}): {proc.stderr[-3000:]}")
    return json.loads(proc.stdout)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def simple_signing(digest: str, reference: str = "registry.example/acme/app") -> bytes:
    return json.dumps({"critical": {"identity": {"docker-reference": reference},
                                    "image": {"docker-manifest-digest": digest},
                                    "type": "cosign container image signature"},
                       "optional": None}, separators=(",", ":")).encode()


def cosign_manifest(layers: Iterable[tuple[bytes, dict]]) -> tuple[bytes, dict[str, bytes]]:
    """cosign's ``.sig`` manifest for (payload, annotations) pairs; returns (manifest, blobs by digest)."""
    blobs: dict[str, bytes] = {}
    descriptors = []
    for payload, notes in layers:
        blobs[sha256(payload)] = payload
        descriptors.append({"mediaType": core.MEDIA_SIMPLESIGNING, "size": len(payload), "digest": sha256(payload),
                            "annotations": notes})
    config = json.dumps({"architecture": "", "os": "", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": [d["digest"] for d in descriptors]}}).encode()
    blobs[sha256(config)] = config
    manifest = {"schemaVersion": 2, "mediaType": core.MEDIA_OCI_MANIFEST,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": len(config),
                           "digest": sha256(config)},
                "layers": descriptors}
    return json.dumps(manifest, separators=(",", ":")).encode(), blobs


def bundle_manifest(bundle: bytes, subject: Optional[str] = None,
                    media_type: str = core.MEDIA_BUNDLE_V03) -> tuple[bytes, dict[str, bytes]]:
    """The referrer manifest @sigstore/oci writes for a bundle; returns (manifest, blobs by digest)."""
    manifest = {"schemaVersion": 2, "mediaType": core.MEDIA_OCI_MANIFEST, "artifactType": media_type,
                "config": {"mediaType": "application/vnd.oci.empty.v1+json", "size": len(EMPTY_CONFIG),
                           "digest": sha256(EMPTY_CONFIG)},
                "layers": [{"mediaType": media_type, "size": len(bundle), "digest": sha256(bundle)}]}
    if subject:
        manifest["subject"] = {"mediaType": core.MEDIA_OCI_MANIFEST, "digest": subject, "size": 1}
    return json.dumps(manifest).encode(), {sha256(bundle): bundle, sha256(EMPTY_CONFIG): EMPTY_CONFIG}


def artifact(location: str, manifest: bytes, blobs: dict[str, bytes]) -> core.SignatureArtifact:
    """What the adapter hands over for this manifest: the blobs its plan names."""
    plan = core.plan_artifact(manifest, location)
    fetched = {d.digest: blobs[d.digest] for d in plan.fetch if d.digest in blobs}
    return core.SignatureArtifact(location, manifest, fetched)


def push_manifest(stack, host: str, repository: str, tag: str, manifest: bytes, blobs: dict[str, bytes], *,
                  creds: Optional[str] = None) -> str:
    """Push ``manifest`` (and its blobs) as ``host/repository:tag``; returns its digest."""
    doc = json.loads(manifest)
    with tempfile.TemporaryDirectory(prefix="sigpush-") as tmp:
        layout = Path(tmp)
        (layout / "blobs" / "sha256").mkdir(parents=True)
        for data in [manifest, *blobs.values()]:
            (layout / "blobs" / "sha256" / sha256(data).split(":")[1]).write_bytes(data)
        (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "mediaType": core.MEDIA_OCI_INDEX,
                                                       "manifests": [{"mediaType": doc["mediaType"],
                                                                      "digest": sha256(manifest),
                                                                      "size": len(manifest),
                                                                      "annotations": {oci.REF_ANNOTATION: "sig"}}]}))
        image = oci.ImageLayout(name=repository, seed="sig", path=layout, ref="sig", digest=sha256(manifest),
                                media_type=doc["mediaType"], size=len(manifest), raw=manifest, images=())
        return oci.push(image, f"{host}/{repository}:{tag}", cert_dir=stack.certs_dir, creds=creds)
