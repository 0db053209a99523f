"""The emulated ACR's referrers index: which manifests of a repository name a given digest as ``subject``.

Debian's docker-registry (distribution 2.8) behind the emulator has no referrers API, so the
emulator keeps its own index, as ACR does in its metadata store:

- ``referrer(body, digest, content_type)`` reads a manifest's bytes and returns its ``subject``
  digest and the descriptor the referrers API lists for it (OCI distribution-spec 1.1, "Listing
  Referrers": ``mediaType``, ``digest``, ``size``, ``artifactType`` (the manifest's own, else an
  image manifest's ``config.mediaType``; an index without one has none), ``annotations`` (all of the
  manifest's)), or None when the manifest has no subject;
- ``ReferrersIndex`` records those descriptors on disk, one file per (repository, subject,
  referrer): ``<root>/<repository>/_subjects/<algorithm>/<hex>/<referrer hex>.json``. Every file is
  written whole to a temporary name and renamed, so concurrent imports and pushes (each writing
  its own referrer, or the same referrer with the same content) never see or leave half a file and
  need no lock. Repository names cannot contain a path component that starts with ``_``, so
  ``_subjects`` never clashes with a repository. Listing a subject reads that subject's directory
  only: its cost is the number of its referrers, not the size of the repository.

The root lives beside the backing registry's storage (``EmulatorConfig.referrers_path``, by default
``<backing_storage_path>/airlock-emulator/referrers``), so the index survives exactly what the
registry's content survives; without a storage path it is a temporary directory removed on close.
The index records what was written through the emulator (data-plane manifest PUTs and
``importImage``); a referrer deleted later is left out of listings by the caller, which checks that
each listed manifest still exists, and its entry is then dropped.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX_MEDIA_TYPES = frozenset({OCI_INDEX, "application/vnd.docker.distribution.manifest.list.v2+json"})
# a digest the referrers API accepts: algorithm and encoded part (image-spec descriptor grammar),
# restricted to what distribution stores (sha256 / sha512 hex)
DIGEST = re.compile(r"^(?P<algorithm>sha256|sha512):(?P<encoded>[a-f0-9]{64}|[a-f0-9]{128})$")
_HEX_LENGTH = {"sha256": 64, "sha512": 128}
# distribution's repository name grammar (reference/regexp.go); checked before a name becomes a path
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"  # ([-]* in Go's RE2: the same names)
REPOSITORY = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
DEFAULT_SUBDIRECTORY = ("airlock-emulator", "referrers")


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def valid_digest(digest: str) -> bool:
    match = DIGEST.match(digest)
    return bool(match) and len(match["encoded"]) == _HEX_LENGTH[match["algorithm"]]


def referrer(body: bytes, digest: str, content_type: str = "") -> tuple[str, dict[str, Any]] | None:
    """(subject digest, referrers-API descriptor) of the manifest ``body`` stored as ``digest``, or
    None when it is not JSON, not an object, or has no valid ``subject``."""
    try:
        manifest = json.loads(body)
    except ValueError:
        return None
    if not isinstance(manifest, dict):
        return None
    subject = manifest.get("subject")
    if not isinstance(subject, dict) or not isinstance(subject.get("digest"), str):
        return None
    if not valid_digest(subject["digest"]):
        return None
    media_type = (manifest.get("mediaType") or content_type.split(";", 1)[0].strip()
                  or (OCI_INDEX if "manifests" in manifest else OCI_MANIFEST))
    descriptor: dict[str, Any] = {"mediaType": media_type, "digest": digest, "size": len(body)}
    artifact_type = manifest.get("artifactType")
    config = manifest.get("config")
    if isinstance(artifact_type, str) and artifact_type:
        descriptor["artifactType"] = artifact_type
    elif media_type not in INDEX_MEDIA_TYPES and isinstance(config, dict) and isinstance(config.get("mediaType"), str):
        descriptor["artifactType"] = config["mediaType"]
    annotations = manifest.get("annotations")
    if isinstance(annotations, dict) and annotations:
        descriptor["annotations"] = {str(k): str(v) for k, v in annotations.items()}
    return subject["digest"], descriptor


class ReferrersIndex:
    """Referrer descriptors by (repository, subject digest), on disk under ``root``."""

    def __init__(self, root: os.PathLike | str, *, owned: bool = False) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._owned = owned  # a temporary root, removed by close()

    @classmethod
    def for_config(cls, config: Any) -> ReferrersIndex:
        """The index an EmulatorConfig asks for: ``referrers_path``, else beside the backing storage,
        else a temporary directory."""
        if getattr(config, "referrers_path", ""):
            return cls(config.referrers_path)
        if getattr(config, "backing_storage_path", ""):
            return cls(Path(config.backing_storage_path).joinpath(*DEFAULT_SUBDIRECTORY))
        return cls(tempfile.mkdtemp(prefix="emulator-referrers-"), owned=True)

    def _subject_dir(self, repository: str, subject: str) -> Path:
        if not REPOSITORY.match(repository) or len(repository) > 255 or not valid_digest(subject):
            raise ValueError(f"not a repository and digest: {repository!r} {subject!r}")
        algorithm, _, encoded = subject.partition(":")
        return self.root / repository / "_subjects" / algorithm / encoded

    def record(self, repository: str, subject: str, descriptor: dict[str, Any]) -> None:
        """Remember that ``descriptor`` (a manifest of ``repository``) refers to ``subject``."""
        if not valid_digest(descriptor["digest"]):
            raise ValueError(f"not a digest: {descriptor.get('digest')!r}")
        directory = self._subject_dir(repository, subject)
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / (descriptor["digest"].partition(":")[2] + ".json")
        temporary = directory / f".{uuid.uuid4().hex}.tmp"
        temporary.write_text(json.dumps(descriptor, sort_keys=True))
        os.replace(temporary, target)
        log.info("indexed %s@%s as a referrer of %s", repository, descriptor["digest"], subject)

    def listing(self, repository: str, subject: str) -> list[dict[str, Any]]:
        """The recorded descriptors of ``subject``'s referrers in ``repository``, by digest."""
        directory = self._subject_dir(repository, subject)
        try:
            names = sorted(name for name in os.listdir(directory) if name.endswith(".json"))
        except (FileNotFoundError, NotADirectoryError):
            return []
        out = []
        for name in names:
            try:
                out.append(json.loads((directory / name).read_text()))
            except (FileNotFoundError, ValueError):  # removed meanwhile
                continue
        return out

    def forget(self, repository: str, subject: str, digest: str) -> None:
        try:
            (self._subject_dir(repository, subject) / (digest.partition(":")[2] + ".json")).unlink()
        except FileNotFoundError:
            pass

    def close(self) -> None:
        if self._owned:
            shutil.rmtree(self.root, ignore_errors=True)
