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

Determinism: tar entries are sorted and carry a fixed mtime, uid/gid 0 and fixed owner names;
gzip streams have mtime 0 and no file name; JSON is serialised compactly with sorted keys.
"""
from __future__ import annotations

import atexit
import gzip
import hashlib
import io
import json
import logging
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

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
