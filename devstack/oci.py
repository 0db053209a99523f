"""Small, valid, deterministic OCI images for the local stand-in, pushed with skopeo.

Nothing here touches the internet: layers are tar files generated in memory from a name, a
platform and a *seed*, so the same arguments always give byte-identical blobs and therefore the
same digests, and a different seed gives a "new version" of an image with a new digest.

    layout = build_image("library/nginx", platforms=("linux/amd64", "linux/arm64"), seed="1.27")
    digest = push(layout, "127.0.0.1:5000/library/nginx:1.27", cert_dir=stack.certs_dir)

An image is written as an OCI image layout directory (``oci-layout``, ``index.json``,
``blobs/sha256/...``) whose ``index.json`` names the top-level object (an image manifest for one
platform, an image index for several) with the ref ``ImageLayout.ref``; ``push`` runs
``skopeo copy --all --preserve-digests oci:DIR:REF docker://DEST`` and checks that the registry
serves exactly the bytes it was given.

Artifacts that refer to an image (signatures, SBOMs, attestations) are built and pushed over HTTP
(section "OCI artifacts that refer to an image" below):

    art = build_artifact("application/vnd.example.sbom.v1", [ArtifactLayer.of("application/spdx+json", sbom)],
                         subject=layout_descriptor(layout))
    push_artifact(art, "127.0.0.1:5000/library/nginx", cert_dir=stack.certs_dir)   # + referrers tag index
    push_cosign([cosign_signature_layer(payload, b64sig)], "127.0.0.1:5000/library/nginx", layout.digest)

Determinism: tar entries are sorted and carry a fixed mtime, uid/gid 0 and fixed owner names;
gzip streams have mtime 0 and no file name; JSON is serialised compactly with sorted keys.
"""
from __future__ import annotations

import atexit
import base64
import gzip
import hashlib
import io
import json
import logging
import os
import re
import shutil
import ssl
import subprocess
import tarfile
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence
from urllib.parse import urlencode

log = logging.getLogger(__name__)

MEDIA_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_HELM_CONFIG = "application/vnd.cncf.helm.config.v1+json"
MEDIA_HELM_CHART = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"

REF_ANNOTATION = "org.opencontainers.image.ref.name"
FIXED_MTIME = 1704067200  # 2024-01-01T00:00:00Z
CREATED = "2024-01-01T00:00:00Z"
LAYOUT_REF = "image"

# The upstream catalogue: (repository:tag, platforms). Repositories are registry.k8s.io-,
# docker.io-, quay.io- and mcr.microsoft.com-style paths; every upstream host is mirrored to the
# one local upstream registry, so only the path matters here.
MULTI = ("linux/amd64", "linux/arm64")
CATALOGUE: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("ingress-nginx/controller:v1.11.1", MULTI),
    ("ingress-nginx/kube-webhook-certgen:v1.4.1", ("linux/amd64",)),
    ("jetstack/cert-manager-controller:v1.15.2", ("linux/amd64",)),
    ("library/nginx:1.27", MULTI),
    ("library/nginx:latest", ("linux/amd64",)),
    ("cloudflare/cloudflared:latest", ("linux/amd64",)),
    ("azuredocs/aks-helloworld:v1", ("linux/amd64",)),
    ("library/busybox:1.36", ("linux/amd64",)),
)

# The authenticated upstream's catalogue (pushed with the stack's credentials): private
# repositories, docker.io-style paths (for a docker.io mirror), and one anonymous-pull repository.
AUTH_CATALOGUE: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("private/app:1.0", ("linux/amd64",)),
    ("library/redis:7", MULTI),
    ("public/hello:latest", ("linux/amd64",)),
)


class OciError(RuntimeError):
    """Building or pushing an image failed (skopeo's stderr is in the message)."""


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: Optional[str] = None

    @classmethod
    def parse(cls, text: str) -> "Platform":
        parts = text.strip().split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise ValueError(f"platform must look like os/arch[/variant], got {text!r}")
        variant = parts[2] if len(parts) == 3 else ("v8" if parts[1] == "arm64" else None)
        return cls(parts[0], parts[1], variant)

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    def to_oci(self) -> dict:
        d = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            d["variant"] = self.variant
        return d


@dataclass(frozen=True)
class Blob:
    media_type: str
    data: bytes

    @property
    def digest(self) -> str:
        return sha256_digest(self.data)

    @property
    def size(self) -> int:
        return len(self.data)

    def descriptor(self, **extra: Any) -> dict:
        d = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        d.update(extra)
        return d


@dataclass(frozen=True)
class PlatformImage:
    """One single-platform image inside a layout."""

    platform: Platform
    manifest_digest: str
    manifest_size: int
    config_digest: str
    layer_digests: tuple[str, ...]
    diff_ids: tuple[str, ...]


@dataclass(frozen=True)
class ImageLayout:
    """An OCI image layout directory holding one image (manifest) or one image index."""

    name: str
    seed: str
    path: Path
    ref: str
    digest: str  # digest of the top-level manifest or index
    media_type: str
    size: int
    raw: bytes  # the top-level manifest/index bytes
    images: tuple[PlatformImage, ...]

    @property
    def is_index(self) -> bool:
        return self.media_type == MEDIA_OCI_INDEX

    @property
    def source(self) -> str:
        """The skopeo source reference, ``oci:DIR:REF``."""
        return f"oci:{self.path}:{self.ref}"

    @property
    def platforms(self) -> tuple[str, ...]:
        return tuple(str(i.platform) for i in self.images)

    def blob_digests(self) -> set[str]:
        """Every blob digest the image references (manifests, configs, layers)."""
        out = {self.digest}
        for img in self.images:
            out.add(img.manifest_digest)
            out.add(img.config_digest)
            out.update(img.layer_digests)
        return out


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _stream(key: str, n: int) -> bytes:
    """n pseudo-random but fully determined bytes (a sha256 counter stream)."""
    out = bytearray()
    counter = 0
    seed = key.encode()
    while len(out) < n:
        out += hashlib.sha256(seed + counter.to_bytes(8, "big")).digest()
        counter += 1
    return bytes(out[:n])


def _app_name(name: str) -> str:
    base = name.rsplit("/", 1)[-1]
    return re.sub(r"[^a-z0-9._-]", "-", base.lower()) or "app"


def _layer_files(name: str, seed: str, platform: Platform, index: int, count: int) -> dict[str, tuple[int, bytes]]:
    """The files of layer ``index`` (0-based) of ``count``: path -> (mode, content)."""
    app = _app_name(name)
    key = f"{name}|{seed}|{platform}|{index}"
    files: dict[str, tuple[int, bytes]] = {}
    if index == 0:
        files["etc/os-release"] = (0o644, (
            'NAME="airlock devstack base"\nID=airlock-devstack\n'
            f'VERSION_ID="1"\nPRETTY_NAME="airlock devstack base ({platform})"\n').encode())
        files["etc/passwd"] = (0o644, b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
        files["etc/group"] = (0o644, b"root:x:0:\nnogroup:x:65534:\n")
        files[f"lib/{platform.architecture}/libbase.so"] = (0o755, _stream(key + "|lib", 3072))
    if 0 < index < count - 1 or (count == 2 and index == 1) or count == 1:
        files[f"usr/share/{app}/part-{index}.bin"] = (0o644, _stream(key + "|data", 2048 + 512 * index))
        files[f"usr/share/{app}/part-{index}.txt"] = (0o644, f"{name} part {index} for {platform}\n".encode())
    if index == count - 1:
        files[f"usr/local/bin/{app}"] = (0o755, (
            "#!/bin/sh\n"
            f"# {name} built by devstack.oci for {platform}\n"
            f"echo '{app} {seed}'\n").encode())
        files[f"etc/{app}/version"] = (0o644, f"{seed}\n".encode())
    return files


def _tar(files: dict[str, tuple[int, bytes]]) -> bytes:
    """A deterministic tar: sorted entries, parent directories first, fixed metadata."""
    entries: dict[str, Optional[tuple[int, bytes]]] = {}
    for path in files:
        parts = path.split("/")
        for i in range(1, len(parts)):
            entries.setdefault("/".join(parts[:i]), None)
    entries.update(files)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for path in sorted(entries):
            item = entries[path]
            info = tarfile.TarInfo(path)
            info.mtime = FIXED_MTIME
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            if item is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            else:
                mode, data = item
                info.mode = mode
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _gzip(data: bytes) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=6) as gz:
        gz.write(data)
    return buf.getvalue()


def _build_platform(name: str, seed: str, platform: Platform, layers: int) -> tuple[Blob, list[Blob], PlatformImage]:
    """Build one single-platform image. Returns (manifest blob, [config, layers...], info)."""
    layer_blobs: list[Blob] = []
    diff_ids: list[str] = []
    history: list[dict] = []
    for i in range(layers):
        files = _layer_files(name, seed, platform, i, layers)
        raw_tar = _tar(files)
        diff_ids.append(sha256_digest(raw_tar))
        layer_blobs.append(Blob(MEDIA_OCI_LAYER_GZIP, _gzip(raw_tar)))
        history.append({
            "created": CREATED,
            "created_by": f"devstack.oci: layer {i + 1}/{layers}: " + " ".join(sorted(files)),
            "comment": "deterministic test image",
        })
    app = _app_name(name)
    config = {
        "architecture": platform.architecture,
        "os": platform.os,
        **({"variant": platform.variant} if platform.variant else {}),
        "created": CREATED,
        "author": "acr-airlock devstack",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Entrypoint": [f"/usr/local/bin/{app}"],
            "WorkingDir": "/",
            "Labels": {
                "org.opencontainers.image.title": name,
                "org.opencontainers.image.version": seed,
                "dev.acr-airlock.devstack": "true",
            },
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history,
    }
    config_blob = Blob(MEDIA_OCI_CONFIG, canonical_json(config))
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_OCI_MANIFEST,
        "config": config_blob.descriptor(),
        "layers": [b.descriptor() for b in layer_blobs],
        "annotations": {
            "org.opencontainers.image.created": CREATED,
            "org.opencontainers.image.title": name,
        },
    }
    manifest_blob = Blob(MEDIA_OCI_MANIFEST, canonical_json(manifest))
    info = PlatformImage(
        platform=platform,
        manifest_digest=manifest_blob.digest,
        manifest_size=manifest_blob.size,
        config_digest=config_blob.digest,
        layer_digests=tuple(b.digest for b in layer_blobs),
        diff_ids=tuple(diff_ids),
    )
    return manifest_blob, [config_blob, *layer_blobs], info


def _write_layout(path: Path, top: Blob, blobs: Iterable[Blob], ref: str) -> None:
    blob_dir = path / "blobs" / "sha256"
    blob_dir.mkdir(parents=True, exist_ok=True)
    for blob in (top, *blobs):
        target = blob_dir / blob.digest.split(":", 1)[1]
        if not target.exists():
            tmp = target.with_suffix(".tmp")
            tmp.write_bytes(blob.data)
            os.replace(tmp, target)
    (path / "oci-layout").write_bytes(canonical_json({"imageLayoutVersion": "1.0.0"}))
    index = {
        "schemaVersion": 2,
        "mediaType": MEDIA_OCI_INDEX,
        "manifests": [top.descriptor(annotations={REF_ANNOTATION: ref})],
    }
    (path / "index.json").write_bytes(canonical_json(index))


def build_layout(name: str, *, platforms: Sequence[str] = ("linux/amd64",), layers: int = 3,
                 seed: str, out_dir: os.PathLike | str) -> ImageLayout:
    """Build an image into ``out_dir`` (created; not cached). See ``build_image``."""
    if layers < 1:
        raise ValueError("an image needs at least one layer")
    plats = [Platform.parse(p) for p in platforms]
    if not plats:
        raise ValueError("at least one platform is needed")
    if len({str(p) for p in plats}) != len(plats):
        raise ValueError(f"duplicate platforms in {platforms!r}")
    blobs: list[Blob] = []
    infos: list[PlatformImage] = []
    manifests: list[Blob] = []
    for plat in plats:
        manifest, parts, info = _build_platform(name, seed, plat, layers)
        manifests.append(manifest)
        blobs.extend(parts)
        infos.append(info)
    if len(plats) == 1:
        top = manifests[0]
    else:
        index = {
            "schemaVersion": 2,
            "mediaType": MEDIA_OCI_INDEX,
            "manifests": [m.descriptor(platform=i.platform.to_oci()) for m, i in zip(manifests, infos, strict=True)],
            "annotations": {"org.opencontainers.image.title": name},
        }
        top = Blob(MEDIA_OCI_INDEX, canonical_json(index))
        blobs = manifests + blobs
    path = Path(out_dir)
    _write_layout(path, top, blobs, LAYOUT_REF)
    return ImageLayout(name=name, seed=seed, path=path, ref=LAYOUT_REF, digest=top.digest,
                       media_type=top.media_type, size=top.size, raw=top.data, images=tuple(infos))


_cache: dict[tuple, ImageLayout] = {}
_cache_lock = threading.Lock()
_cache_root: Optional[Path] = None


def _cache_dir() -> Path:
    global _cache_root
    if _cache_root is None:
        _cache_root = Path(tempfile.mkdtemp(prefix="airlock-oci-"))
        atexit.register(shutil.rmtree, _cache_root, True)
    return _cache_root


def build_image(name: str, *, platforms: Sequence[str] = ("linux/amd64",), layers: int = 3,
                seed: str) -> ImageLayout:
    """Build (once per process and argument set) a small valid OCI image as an image layout.

    ``name`` is only used for content and labels (not for where it is pushed). One platform gives
    an OCI image manifest; several give an OCI image index whose per-platform images have
    different layers. ``seed`` changes every layer, so a new seed is a new version/digest.
    """
    key = (name, tuple(platforms), layers, seed)
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None and (hit.path / "index.json").exists():
            return hit
        out = _cache_dir() / hashlib.sha256(repr(key).encode()).hexdigest()[:24]
        layout = build_layout(name, platforms=platforms, layers=layers, seed=seed, out_dir=out)
        _cache[key] = layout
        log.debug("built %s (%s) -> %s", name, ",".join(layout.platforms), layout.digest)
        return layout


def build_chart(name: str, version: str, *, seed: str = "1") -> ImageLayout:
    """A Helm chart as ``helm push`` stores it: an OCI image manifest whose config is the chart's
    metadata (``application/vnd.cncf.helm.config.v1+json``) and whose one layer is the packaged
    chart (``application/vnd.cncf.helm.chart.content.v1.tar+gzip``). Cached like ``build_image``."""
    key = ("helm-chart", name, version, seed)
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None and (hit.path / "index.json").exists():
            return hit
        chart_yaml = (f"apiVersion: v2\nname: {name}\nversion: {version}\nappVersion: \"{seed}\"\n"
                      f"description: a chart for the local stand-in\ntype: application\n").encode()
        values = f"image:\n  repository: library/nginx\n  tag: \"1.27\"\nseed: \"{seed}\"\n".encode()
        template = (b"apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ .Release.Name }}\nspec:\n"
                    b"  template:\n    spec:\n      containers:\n        - name: web\n"
                    b"          image: \"{{ .Values.image.repository }}:{{ .Values.image.tag }}\"\n")
        files = {f"{name}/Chart.yaml": (0o644, chart_yaml), f"{name}/values.yaml": (0o644, values),
                 f"{name}/templates/deployment.yaml": (0o644, template)}
        content = Blob(MEDIA_HELM_CHART, _gzip(_tar(files)))
        config = Blob(MEDIA_HELM_CONFIG, canonical_json({
            "apiVersion": "v2", "name": name, "version": version, "appVersion": seed,
            "description": "a chart for the local stand-in", "type": "application"}))
        manifest = {
            "schemaVersion": 2,
            "mediaType": MEDIA_OCI_MANIFEST,
            "config": config.descriptor(),
            "layers": [content.descriptor()],
            "annotations": {"org.opencontainers.image.created": CREATED,
                            "org.opencontainers.image.title": name,
                            "org.opencontainers.image.version": version},
        }
        top = Blob(MEDIA_OCI_MANIFEST, canonical_json(manifest))
        out = _cache_dir() / hashlib.sha256(repr(key).encode()).hexdigest()[:24]
        _write_layout(out, top, [config, content], LAYOUT_REF)
        layout = ImageLayout(name=name, seed=seed, path=out, ref=LAYOUT_REF, digest=top.digest,
                             media_type=top.media_type, size=top.size, raw=top.data, images=())
        _cache[key] = layout
        return layout


# --- skopeo -----------------------------------------------------------------------------------

_policy_path: Optional[Path] = None


def _policy() -> Path:
    """A private signature policy (accept anything) so the host's policy.json does not matter."""
    global _policy_path
    with _cache_lock:
        if _policy_path is None or not _policy_path.exists():
            p = _cache_dir() / "policy.json"
            p.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
            _policy_path = p
        return _policy_path


def _skopeo() -> str:
    exe = os.environ.get("DEVSTACK_SKOPEO") or shutil.which("skopeo")
    if not exe:
        raise OciError("skopeo is not installed (run scripts/setup.sh)")
    return exe


def _strip_transport(dest: str) -> str:
    return dest[len("docker://"):] if dest.startswith("docker://") else dest


def _tls_args(prefix: str, cert_dir, tls_verify: bool) -> list[str]:
    args = [f"--{prefix}tls-verify={'true' if tls_verify else 'false'}"]
    if cert_dir is not None:
        args += [f"--{prefix}cert-dir", str(cert_dir)]
    return args


def _run(args: list[str], *, what: str, timeout: float) -> bytes:
    try:
        proc = subprocess.run(args, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise OciError(f"{what}: skopeo timed out after {timeout:.0f}s") from exc
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()
        raise OciError(f"{what}: skopeo exited {proc.returncode}: {err[-2000:]}")
    return proc.stdout


def inspect_raw(ref: str, *, cert_dir=None, tls_verify: bool = True, creds: Optional[str] = None,
                timeout: float = 60) -> bytes:
    """The raw manifest/index bytes a registry serves for ``HOST/REPO:TAG`` or ``@digest``."""
    ref = _strip_transport(ref)
    args = [_skopeo(), "--policy", str(_policy()), "inspect", "--raw", *_tls_args("", cert_dir, tls_verify)]
    args += ["--creds", creds] if creds else ["--no-creds"]
    return _run(args + [f"docker://{ref}"], what=f"inspect {ref}", timeout=timeout)


def push(layout: ImageLayout, dest: str, *, cert_dir=None, tls_verify: bool = True,
         creds: Optional[str] = None, retries: int = 2, timeout: float = 120) -> str:
    """Push ``layout`` to ``dest`` (``HOST:PORT/REPO:TAG``, optional ``docker://`` prefix).

    ``cert_dir`` is a directory holding ``ca.crt`` for TLS verification; ``tls_verify=False``
    for a plain-HTTP registry. Returns the digest of the pushed manifest/index, computed from the
    bytes and checked against what the registry serves.
    """
    dest = _strip_transport(dest)
    args = [_skopeo(), "--policy", str(_policy()), "copy", "--all", "--preserve-digests", "--quiet",
            *_tls_args("dest-", cert_dir, tls_verify)]
    args += ["--dest-creds", creds] if creds else ["--dest-no-creds"]
    if retries:
        args += ["--retry-times", str(retries)]
    args += [layout.source, f"docker://{dest}"]
    _run(args, what=f"push {layout.name} to {dest}", timeout=timeout)
    served = inspect_raw(dest, cert_dir=cert_dir, tls_verify=tls_verify, creds=creds, timeout=timeout)
    served_digest = sha256_digest(served)
    if served_digest != layout.digest:
        raise OciError(f"push {dest}: registry serves {served_digest}, built {layout.digest}")
    log.info("pushed %s -> %s (%s)", layout.name, dest, layout.digest)
    return layout.digest


# --- the upstream catalogue -------------------------------------------------------------------

_seeded: dict[tuple, dict[str, str]] = {}
_seed_lock = threading.Lock()


def catalogue_image(ref: str, *, seed: str = "1") -> ImageLayout:
    """The (cached) image for one CATALOGUE entry ``repo:tag``."""
    for name, platforms in CATALOGUE:
        if name == ref:
            return build_image(name.rsplit(":", 1)[0], platforms=platforms, layers=3,
                               seed=f"{name}#{seed}")
    raise KeyError(ref)


def seed_upstream(stack, *, seed: str = "1", force: bool = False, workers: int = 4) -> dict[str, str]:
    """Push CATALOGUE to the stack's upstream registry; returns ``{"repo:tag": digest}``.

    Idempotent and cached per stack and seed (``force=True`` pushes again). A different ``seed``
    pushes new versions of every tag (new digests).
    """
    key = (stack.upstream_host, str(stack.workdir), seed)
    with _seed_lock:
        if not force and key in _seeded:
            return dict(_seeded[key])

        def one(ref: str) -> tuple[str, str]:
            layout = catalogue_image(ref, seed=seed)
            return ref, push(layout, f"{stack.upstream_host}/{ref}", cert_dir=stack.certs_dir)

        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            result = dict(pool.map(one, [name for name, _ in CATALOGUE]))
        _seeded[key] = result
        return dict(result)


def auth_catalogue_image(ref: str, *, seed: str = "1") -> ImageLayout:
    """The (cached) image for one AUTH_CATALOGUE entry ``repo:tag``."""
    for name, platforms in AUTH_CATALOGUE:
        if name == ref:
            return build_image(name.rsplit(":", 1)[0], platforms=platforms, layers=2, seed=f"auth:{name}#{seed}")
    raise KeyError(ref)


def seed_upstream_auth(stack, *, seed: str = "1", force: bool = False) -> dict[str, str]:
    """Push AUTH_CATALOGUE to the stack's token-auth upstream with its credentials; returns
    ``{"repo:tag": digest}``. Cached per stack and seed like ``seed_upstream``."""
    key = (stack.upstream_auth_host, str(stack.workdir), "auth", seed)
    with _seed_lock:
        if not force and key in _seeded:
            return dict(_seeded[key])
        result = {ref: push(auth_catalogue_image(ref, seed=seed), f"{stack.upstream_auth_host}/{ref}",
                            cert_dir=stack.certs_dir, creds=stack.upstream_auth_creds)
                  for ref, _ in AUTH_CATALOGUE}
        _seeded[key] = result
        return dict(result)


# --- OCI artifacts that refer to an image, and cosign's tag scheme (the upstream side) ---------------
#
# What a signer or an SBOM tool leaves in a source registry, for the stand-in's upstreams (Debian's
# docker-registry, distribution 2.8, which has no referrers API):
#
# - an OCI 1.1 artifact: an image manifest with ``artifactType``, the empty config
#   (``application/vnd.oci.empty.v1+json``, ``{}``) unless one is given, its layers, and ``subject``
#   naming the image it is about (image-spec "Guidelines for Artifact Usage"). When the registry does
#   not answer the push with ``OCI-Subject``, the pusher keeps the referrers list itself, as the
#   distribution spec requires of clients ("Pushing Manifests with Subject" / "Referrers Tag
#   Schema"): the image index tagged ``<alg>-<hex>`` of the subject is read (404: start empty), the
#   new manifest's descriptor added unless it is there (artifactType: the manifest's, else its config
#   media type; all of its annotations), and the index pushed back to that tag.
# - cosign's tag scheme: tags ``sha256-<hex>.sig`` / ``.att`` / ``.sbom`` holding an image manifest
#   whose config is an image config over the layers and whose layers are the payloads: simple-signing
#   JSON (``application/vnd.dev.cosign.simplesigning.v1+json``) with the base64 signature in the
#   ``dev.cosignproject.cosign/signature`` annotation (and ``dev.sigstore.cosign/certificate``,
#   ``/chain``, ``/bundle`` when given), DSSE envelopes (``application/vnd.dsse.envelope.v1+json``,
#   ``predicateType``) for attestations, an SBOM document for ``.sbom``. A new signature is appended
#   to the layers already under the tag, as cosign does. Signing is not done here: payloads,
#   signatures and annotations come in as bytes and strings.
#
# Pushes go over HTTP with httpx (blob POST + monolithic PUT, manifest PUT; a Bearer challenge is
# answered at its realm with the credentials, as skopeo does), because skopeo cannot write a
# referrers index whose manifests are not local, and oras-py builds its own manifests.

MEDIA_OCI_EMPTY = "application/vnd.oci.empty.v1+json"
EMPTY_BLOB = Blob(MEDIA_OCI_EMPTY, b"{}")
MEDIA_COSIGN_SIMPLESIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
MEDIA_DSSE_ENVELOPE = "application/vnd.dsse.envelope.v1+json"
COSIGN_SIGNATURE = "dev.cosignproject.cosign/signature"
COSIGN_CERTIFICATE = "dev.sigstore.cosign/certificate"
COSIGN_CHAIN = "dev.sigstore.cosign/chain"
COSIGN_BUNDLE = "dev.sigstore.cosign/bundle"
COSIGN_SUFFIXES = ("sig", "att", "sbom")
COSIGN_CREATED = "0001-01-01T00:00:00Z"  # the zero time go-containerregistry writes into cosign's configs
MANIFEST_ACCEPT = ", ".join((MEDIA_OCI_MANIFEST, MEDIA_OCI_INDEX,
                             "application/vnd.docker.distribution.manifest.v2+json",
                             "application/vnd.docker.distribution.manifest.list.v2+json"))
_TAG_UNSAFE = re.compile(r"[^a-zA-Z0-9_.-]")
_DIGEST = re.compile(r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")
_index_locks: dict[tuple[str, str, str], threading.Lock] = {}


@dataclass(frozen=True)
class ArtifactLayer:
    """One layer of an artifact or of a cosign manifest: its bytes, media type and annotations."""

    media_type: str
    data: bytes
    annotations: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, media_type: str, data: bytes, annotations: Optional[dict[str, str]] = None) -> "ArtifactLayer":
        return cls(media_type, data, tuple(sorted((annotations or {}).items())))

    @property
    def blob(self) -> Blob:
        return Blob(self.media_type, self.data)

    def descriptor(self) -> dict:
        return self.blob.descriptor(**({"annotations": dict(self.annotations)} if self.annotations else {}))


@dataclass(frozen=True)
class Artifact:
    """A manifest (its exact bytes) and the blobs it needs, ready to push."""

    manifest: Blob
    blobs: tuple[Blob, ...]

    @property
    def digest(self) -> str:
        return self.manifest.digest

    @property
    def content(self) -> dict:
        return json.loads(self.manifest.data)

    @property
    def subject(self) -> Optional[str]:
        subject = self.content.get("subject")
        return subject.get("digest") if isinstance(subject, dict) else None

    def referrer_descriptor(self) -> dict:
        """This manifest as a referrers list names it (distribution-spec 1.1, "Listing Referrers")."""
        return referrer_descriptor(self.manifest.data, self.manifest.media_type)


@dataclass(frozen=True)
class PushedArtifact:
    digest: str
    reference: str  # HOST/REPO@DIGEST
    oci_subject: Optional[str]  # the registry's OCI-Subject answer: it keeps the referrers itself
    referrers_tag: Optional[str]  # the tag-schema index this push updated (no OCI-Subject), if any


def descriptor_of(raw: bytes, media_type: str) -> dict:
    """The descriptor (mediaType, digest, size) of a manifest's bytes, e.g. a subject."""
    return Blob(media_type, raw).descriptor()


def layout_descriptor(layout: ImageLayout) -> dict:
    """The descriptor of a built image or index (to use as an artifact's ``subject``)."""
    return {"mediaType": layout.media_type, "digest": layout.digest, "size": layout.size}


def referrer_descriptor(raw: bytes, media_type: str = "") -> dict:
    """The referrers-list descriptor of a manifest: mediaType, digest, size, artifactType (its own,
    else an image manifest's config media type; none for an index without one), annotations."""
    manifest = json.loads(raw)
    media_type = manifest.get("mediaType") or media_type or MEDIA_OCI_MANIFEST
    out = {"mediaType": media_type, "digest": sha256_digest(raw), "size": len(raw)}
    if manifest.get("artifactType"):
        out["artifactType"] = manifest["artifactType"]
    elif media_type != MEDIA_OCI_INDEX and isinstance(manifest.get("config"), dict):
        out["artifactType"] = manifest["config"].get("mediaType")
    if manifest.get("annotations"):
        out["annotations"] = dict(manifest["annotations"])
    return out


def referrers_tag(digest: str) -> str:
    """The referrers tag schema's tag of ``digest``: ``<alg>-<encoded>``, the algorithm cut to 32
    characters and the encoded part to 64, characters not allowed in a tag replaced by ``-``."""
    if not _DIGEST.match(digest):
        raise ValueError(f"not a digest: {digest!r}")
    algorithm, _, encoded = digest.partition(":")
    return _TAG_UNSAFE.sub("-", algorithm[:32]) + "-" + _TAG_UNSAFE.sub("-", encoded[:64])


def cosign_tag(digest: str, suffix: str) -> str:
    """cosign's tag for the signatures (``sig``), attestations (``att``) or SBOM (``sbom``) of ``digest``."""
    if suffix not in COSIGN_SUFFIXES:
        raise ValueError(f"cosign tag suffix must be one of {COSIGN_SUFFIXES}, not {suffix!r}")
    algorithm, sep, encoded = digest.partition(":")
    if not sep or not _DIGEST.match(digest):
        raise ValueError(f"not a digest: {digest!r}")
    return f"{algorithm}-{encoded}.{suffix}"


def build_artifact(artifact_type: str, layers: Sequence[ArtifactLayer] = (), *, subject: Optional[dict] = None,
                   annotations: Optional[dict[str, str]] = None, config: Optional[Blob] = None) -> Artifact:
    """An OCI 1.1 artifact manifest (an image manifest with ``artifactType``), deterministic bytes.

    No layers: the empty descriptor stands in as the one layer (image-spec's guidance). ``subject`` is
    a descriptor (``layout_descriptor``, ``descriptor_of``); ``config`` defaults to the empty config.
    """
    if not artifact_type or "/" not in artifact_type:
        raise ValueError(f"artifact_type must be a media type, got {artifact_type!r}")
    config = config or EMPTY_BLOB
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": MEDIA_OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": config.descriptor(),
        "layers": [layer.descriptor() for layer in layers] or [EMPTY_BLOB.descriptor()],
    }
    if subject is not None:
        if not {"mediaType", "digest", "size"} <= set(subject):
            raise ValueError("subject must be a descriptor with mediaType, digest and size")
        manifest["subject"] = {key: subject[key] for key in ("mediaType", "digest", "size")}
    if annotations:
        manifest["annotations"] = dict(annotations)
    blobs = [config, *(layer.blob for layer in layers)] if layers else [config, EMPTY_BLOB]
    return Artifact(Blob(MEDIA_OCI_MANIFEST, canonical_json(manifest)), tuple(dict.fromkeys(blobs)))


def simple_signing_payload(docker_reference: str, manifest_digest: str,
                           optional: Optional[dict[str, Any]] = None) -> bytes:
    """The simple-signing JSON cosign signs for an image (``critical.identity.docker-reference``,
    ``critical.image.docker-manifest-digest``, ``critical.type``, ``optional``)."""
    return canonical_json({
        "critical": {"identity": {"docker-reference": docker_reference},
                     "image": {"docker-manifest-digest": manifest_digest},
                     "type": "cosign container image signature"},
        "optional": optional,
    })


def cosign_signature_layer(payload: bytes, signature_b64: str, *, certificate: Optional[str] = None,
                           chain: Optional[str] = None, bundle: Optional[dict] = None,
                           annotations: Optional[dict[str, str]] = None) -> ArtifactLayer:
    """A ``.sig`` layer: the signed payload, its base64 signature and the optional certificate (PEM),
    chain (PEM) and Rekor bundle (JSON) in cosign's annotations."""
    notes = dict(annotations or {})
    notes[COSIGN_SIGNATURE] = signature_b64
    if certificate:
        notes[COSIGN_CERTIFICATE] = certificate
        notes[COSIGN_CHAIN] = chain or ""
    if bundle is not None:
        notes[COSIGN_BUNDLE] = json.dumps(bundle, sort_keys=True, separators=(",", ":"))
    return ArtifactLayer.of(MEDIA_COSIGN_SIMPLESIGNING, payload, notes)


def cosign_attestation_layer(envelope: bytes, predicate_type: str, *,
                             annotations: Optional[dict[str, str]] = None) -> ArtifactLayer:
    """An ``.att`` layer: a DSSE envelope (its signature is inside, so cosign's signature annotation
    is empty) with its ``predicateType``."""
    notes = {**(annotations or {}), COSIGN_SIGNATURE: "", "predicateType": predicate_type}
    return ArtifactLayer.of(MEDIA_DSSE_ENVELOPE, envelope, notes)


def build_cosign_manifest(layers: Sequence[ArtifactLayer]) -> Artifact:
    """The image manifest cosign keeps under a ``.sig`` / ``.att`` / ``.sbom`` tag: an OCI image
    config whose diff_ids are the (uncompressed) layers' digests, and the layers in order."""
    if not layers:
        raise ValueError("a cosign manifest needs at least one layer")
    blobs = [layer.blob for layer in layers]
    config = Blob(MEDIA_OCI_CONFIG, canonical_json({
        "architecture": "", "os": "", "created": COSIGN_CREATED, "config": {},
        "history": [{"created": COSIGN_CREATED} for _ in layers],
        "rootfs": {"type": "layers", "diff_ids": [blob.digest for blob in blobs]},
    }))
    manifest = {"schemaVersion": 2, "mediaType": MEDIA_OCI_MANIFEST, "config": config.descriptor(),
                "layers": [layer.descriptor() for layer in layers]}
    return Artifact(Blob(MEDIA_OCI_MANIFEST, canonical_json(manifest)), tuple(dict.fromkeys([config, *blobs])))


class RegistryClient:
    """The few distribution-API calls the helpers above need, over httpx.

    ``host`` is ``HOST:PORT``; TLS is verified against ``cert_dir/ca.crt`` (else the system's CAs)
    unless ``plain_http``. A 401 Bearer challenge is answered by asking its realm for a token for the
    challenged scope (HTTP Basic with ``creds`` = "user:password" when given); a Basic challenge with
    ``creds``. ``authorization`` sets a fixed Authorization header instead (an ACR access token).
    """

    def __init__(self, host: str, *, cert_dir=None, plain_http: bool = False, creds: Optional[str] = None,
                 authorization: Optional[str] = None, timeout: float = 60.0) -> None:
        import httpx

        verify: Any = True if cert_dir is None else ssl.create_default_context(cafile=str(Path(cert_dir) / "ca.crt"))
        self._verify = False if plain_http else verify
        self.host = host
        self._creds = tuple(creds.split(":", 1)) if creds else None
        self._fixed = authorization
        self._token: Optional[str] = None
        self._client = httpx.Client(base_url=f"{'http' if plain_http else 'https'}://{host}",
                                    verify=self._verify, timeout=timeout)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> "RegistryClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _auth(self) -> dict[str, str]:
        if self._fixed:
            return {"Authorization": self._fixed}
        return {"Authorization": f"Bearer {self._token}"} if self._token else {}

    def request(self, method: str, url: str, **kwargs):
        headers = kwargs.pop("headers", {})
        response = self._client.request(method, url, headers={**headers, **self._auth()}, **kwargs)
        if response.status_code == 401 and not self._fixed and self._answer(response.headers.get("www-authenticate")):
            response = self._client.request(method, url, headers={**headers, **self._auth()}, **kwargs)
        return response

    def _answer(self, challenge: Optional[str]) -> bool:
        """Get a token for a Bearer challenge (or use Basic credentials); False when it cannot."""
        import httpx

        if not challenge:
            return False
        scheme, _, params = challenge.partition(" ")
        if scheme.lower() == "basic":
            if not self._creds:
                return False
            self._fixed = "Basic " + base64.b64encode(":".join(self._creds).encode()).decode()
            return True
        fields = dict(re.findall(r'(\w+)="([^"]*)"', params))
        if scheme.lower() != "bearer" or "realm" not in fields:
            return False
        query = {key: fields[key] for key in ("service", "scope") if key in fields}
        answer = httpx.get(fields["realm"], params=query, auth=self._creds, verify=self._verify, timeout=30.0)
        if answer.status_code != 200:
            return False
        body = answer.json()
        self._token = body.get("token") or body.get("access_token")
        return bool(self._token)

    def check(self, response, what: str):
        if response.status_code >= 400:
            raise OciError(f"{what}: HTTP {response.status_code}: {response.text[:500]}")
        return response

    def has_blob(self, repository: str, digest: str) -> bool:
        return self.request("HEAD", f"/v2/{repository}/blobs/{digest}").status_code == 200

    def push_blob(self, repository: str, blob: Blob) -> None:
        """Upload ``blob`` unless the repository has it: POST for a session, then one PUT with the
        bytes and ``?digest=`` (the spec's monolithic POST-then-PUT)."""
        if self.has_blob(repository, blob.digest):
            return
        started = self.check(self.request("POST", f"/v2/{repository}/blobs/uploads/"),
                             f"start upload to {self.host}/{repository}")
        location = started.headers["location"]  # keeps its own query (distribution's _state)
        location += ("&" if "?" in location else "?") + urlencode({"digest": blob.digest})
        put = self.request("PUT", location, content=blob.data,
                           headers={"Content-Type": "application/octet-stream"})
        self.check(put, f"upload {blob.digest} to {self.host}/{repository}")

    def put_manifest(self, repository: str, reference: str, manifest: Blob):
        return self.check(self.request("PUT", f"/v2/{repository}/manifests/{reference}", content=manifest.data,
                                       headers={"Content-Type": manifest.media_type}),
                          f"push manifest {self.host}/{repository}:{reference}")

    def get_manifest(self, repository: str, reference: str) -> Optional[tuple[str, bytes]]:
        """(content type, bytes) of a manifest, None when there is none."""
        response = self.request("GET", f"/v2/{repository}/manifests/{reference}", headers={"Accept": MANIFEST_ACCEPT})
        if response.status_code == 404:
            return None
        self.check(response, f"read manifest {self.host}/{repository}:{reference}")
        return response.headers.get("content-type", "").split(";", 1)[0].strip(), response.content

    def push(self, repository: str, artifact: Artifact, reference: Optional[str] = None):
        """Push ``artifact``'s blobs, then its manifest by ``reference`` (default: its digest)."""
        for blob in artifact.blobs:
            self.push_blob(repository, blob)
        return self.put_manifest(repository, reference or artifact.digest, artifact.manifest)


def _split_destination(dest: str) -> tuple[str, str, Optional[str]]:
    """``HOST:PORT/REPO[:TAG]`` -> (host, repository, tag)."""
    dest = _strip_transport(dest)
    host, _, rest = dest.partition("/")
    if not host or not rest or "@" in rest:
        raise ValueError(f"destination must look like HOST:PORT/REPO[:TAG], got {dest!r}")
    repository, _, tag = rest.partition(":")
    return host, repository, tag or None


def add_to_referrers_index(client: RegistryClient, repository: str, subject: str, descriptor: dict) -> bool:
    """Add ``descriptor`` to the referrers tag schema's index of ``subject`` (read, add, push back);
    False when it was listed already. Raises OciError when the tag holds something that is not an
    OCI image index. Updates are serialised per tag within this process; distribution 2.8 has no
    conditional manifest PUT, so pushers in other processes can still race."""
    tag = referrers_tag(subject)
    lock = _index_locks.setdefault((client.host, repository, tag), threading.Lock())
    with lock:
        current = client.get_manifest(repository, tag)
        if current is None:
            index: dict[str, Any] = {"schemaVersion": 2, "mediaType": MEDIA_OCI_INDEX, "manifests": []}
        else:
            media_type, raw = current
            try:
                index = json.loads(raw)
            except ValueError:
                index = None
            if media_type != MEDIA_OCI_INDEX or not isinstance(index, dict) or not isinstance(
                    index.get("manifests"), list):
                raise OciError(f"{client.host}/{repository}:{tag} is not an OCI image index ({media_type}); "
                               "not overwriting it")
        if any(isinstance(m, dict) and m.get("digest") == descriptor["digest"] for m in index["manifests"]):
            return False
        index["manifests"].append(descriptor)
        client.put_manifest(repository, tag, Blob(MEDIA_OCI_INDEX, canonical_json(index)))
        log.info("referrers tag %s/%s:%s lists %d manifest(s)", client.host, repository, tag,
                 len(index["manifests"]))
        return True


def push_artifact(artifact: Artifact, dest: str, *, cert_dir=None, plain_http: bool = False,
                  creds: Optional[str] = None, authorization: Optional[str] = None,
                  fallback: bool = True) -> PushedArtifact:
    """Push an artifact to ``dest`` (``HOST:PORT/REPO`` by digest, or ``HOST:PORT/REPO:TAG``).

    When the artifact has a ``subject`` and the registry's answer carries no ``OCI-Subject`` (no
    referrers API, as distribution 2.8), the referrers tag schema's index is updated (``fallback``).
    """
    host, repository, tag = _split_destination(dest)
    with RegistryClient(host, cert_dir=cert_dir, plain_http=plain_http, creds=creds,
                        authorization=authorization) as client:
        answer = client.push(repository, artifact, tag)
        served = answer.headers.get("docker-content-digest")
        if served and served != artifact.digest:
            raise OciError(f"push {dest}: registry stored {served}, built {artifact.digest}")
        oci_subject = answer.headers.get("oci-subject")
        updated = None
        if artifact.subject and not oci_subject and fallback:
            add_to_referrers_index(client, repository, artifact.subject, artifact.referrer_descriptor())
            updated = referrers_tag(artifact.subject)
    log.info("pushed artifact %s/%s@%s (subject %s)", host, repository, artifact.digest, artifact.subject)
    return PushedArtifact(artifact.digest, f"{host}/{repository}@{artifact.digest}", oci_subject, updated)


def push_cosign(layers: Sequence[ArtifactLayer], dest: str, subject_digest: str, suffix: str = "sig", *,
                cert_dir=None, plain_http: bool = False, creds: Optional[str] = None,
                append: bool = True) -> PushedArtifact:
    """Push cosign-style ``layers`` for ``subject_digest`` under ``HOST:PORT/REPO:<alg>-<hex>.<suffix>``.

    With ``append`` the layers already under that tag are kept and the new ones added after them
    (a layer already there, same digest and annotations, is not added twice), as cosign adds a
    signature; otherwise the tag is replaced.
    """
    host, repository, tag = _split_destination(dest)
    if tag is not None:
        raise ValueError("give the repository only; the tag is cosign's")
    tag = cosign_tag(subject_digest, suffix)
    with RegistryClient(host, cert_dir=cert_dir, plain_http=plain_http, creds=creds) as client:
        kept: list[ArtifactLayer] = []
        current = client.get_manifest(repository, tag) if append else None
        if current is not None:
            for layer in json.loads(current[1]).get("layers", []):
                data = client.check(client.request("GET", f"/v2/{repository}/blobs/{layer['digest']}"),
                                    f"read {layer['digest']}").content
                kept.append(ArtifactLayer.of(layer["mediaType"], data, layer.get("annotations")))
        new = [layer for layer in layers if layer not in kept]
        artifact = build_cosign_manifest([*kept, *new])
        client.push(repository, artifact, tag)
    log.info("pushed %s/%s:%s (%d layer(s))", host, repository, tag, len(kept) + len(new))
    return PushedArtifact(artifact.digest, f"{host}/{repository}@{artifact.digest}", None, None)
