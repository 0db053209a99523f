"""The ``discover`` check for pipelines: Kubernetes YAML against the mirrored manifests.

The core (``shared.core.discover``) finds the images and decides; this module brings the
manifests (one named blob, an inline ``images.txt``, or every current manifest) and the
private registry's login server (``ACR_LOGIN_SERVER``, else read from ARM).
"""
from __future__ import annotations

from typing import Optional, Union

from ..core import discover as core
from ..core.manifest import ManifestResult
from ..errors import ManifestError, NotFoundError, Problem, ValidationError
from .sync import check_manifest


def _manifests(services, manifest: Optional[Union[str, bytes]],
               blob: Optional[str]) -> tuple[list[str], ManifestResult]:
    s = services.settings
    if manifest is not None:
        sources = [("inline", manifest)]
    elif blob:
        data = services.store.get_bytes(s.manifests_container, blob)
        if data is None:
            raise NotFoundError(f"no manifest {blob!r} in container {s.manifests_container}")
        sources = [(blob, data)]
    else:
        from .triggers import current_manifests

        sources = current_manifests(services)
    entries = []
    for name, data in sources:
        result = check_manifest(data, s)
        if not result.ok:
            raise ManifestError(f"manifest {name} is not valid ({len(result.errors)} error(s))", list(result.errors))
        entries.extend(result.entries)
    return [n for n, _ in sources], ManifestResult(entries)


def check_yaml(services, files: list[tuple[str, Union[str, bytes]]], *, manifest: Optional[Union[str, bytes]] = None,
               manifest_blob: Optional[str] = None) -> dict:
    """``{"ok", "registry_host", "manifests", "images", "findings"}``; unreadable YAML raises ValidationError."""
    found = core.discover(files)
    if found.problems:
        raise ValidationError("the Kubernetes YAML could not be read",
                              [Problem(p.message, line=p.line, field=name) for name, p in found.problems])
    names, mirrored = _manifests(services, manifest, manifest_blob)
    host = (services.settings.login_server or services.clients.login_server).lower()
    findings = core.check(found.uses, mirrored, host)
    return {"ok": not findings, "registry_host": host, "manifests": names,
            "images": [{**i, "uses": [u.to_dict() for u in i["uses"]]} for i in core.images(found.uses, host)],
            "findings": [f.to_dict() for f in findings]}
