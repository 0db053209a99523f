"""Many tags and repositories at once, by writing distribution's storage layout directly.

Pushing one manifest under N tags takes N PUTs (and skopeo per repository is slower still); for
tests and benchmarks that need thousands of tags or repositories, this writes the link files that
the registry's filesystem driver reads (distribution 2.8 layout under ``<root>/docker/registry/v2``):

    repositories/<repo>/_manifests/revisions/sha256/<hex>/link          the manifest is in the repo
    repositories/<repo>/_manifests/tags/<tag>/current/link              what the tag points at
    repositories/<repo>/_manifests/tags/<tag>/index/sha256/<hex>/link   the tag's history
    repositories/<repo>/_layers/sha256/<hex>/link                       a blob is linked to the repo

Each link file holds the digest. The blobs themselves (``blobs/sha256/<2>/<hex>/data``) are
global to the registry, so the image must have been pushed once, to any repository of the same
registry (``oci.push``), before its digest is linked elsewhere. The registry reads these files on
every request (its in-memory cache only holds blob descriptors), so no restart is needed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable


def registry_root(stack, name: str) -> Path:
    """Storage root of one of the stand-in's registries (``upstream``, ``upstream-auth``, ``backing``)."""
    return Path(stack.workdir) / "registries" / name


def _link(path: Path, digest: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "link").write_text(digest)


def link_tags(root: Path, repository: str, digest: str, tags: Iterable[str], *,
              blobs: Iterable[str] = (), history: bool = True) -> None:
    """Make ``repository:<tag>`` point at ``digest`` for every tag (the manifest and ``blobs``
    must already be stored in this registry). ``history=False`` skips the tag's ``index`` link,
    which only deleting a tag or looking tags up by digest reads: half the files, for benchmarks."""
    if not (root / "docker" / "registry" / "v2" / "blobs" / "sha256" / digest[7:9] / digest[7:] / "data").exists():
        raise FileNotFoundError(f"{digest} is not stored in {root}; push the image once first")
    base = root / "docker" / "registry" / "v2" / "repositories" / repository
    algorithm, _, hex_digest = digest.partition(":")
    _link(base / "_manifests" / "revisions" / algorithm / hex_digest, digest)
    for blob in blobs:
        blob_algorithm, _, blob_hex = blob.partition(":")
        _link(base / "_layers" / blob_algorithm / blob_hex, blob)
    for tag in tags:
        tag_dir = base / "_manifests" / "tags" / tag
        _link(tag_dir / "current", digest)
        if history:
            _link(tag_dir / "index" / algorithm / hex_digest, digest)
