"""The ``discover`` check for pipelines: Kubernetes YAML against the mirrored manifests.

The core (``shared.core.discover``) finds the images and decides; this module brings the
manifests (one named blob, an inline ``images.txt``, or every current manifest; their entries and
their tag policies) and the private registry's login server (``registry_host``, else
``ACR_LOGIN_SERVER``, else read from ARM). When there is no host because no registry is
configured (offline settings), the check still runs without it: the result's ``skipped`` says
which check was left out and for how many uses, and ``registry_host`` is null.
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
    entries, policies = [], []
    for name, data in sources:
        result = check_manifest(data, s)
        if not result.ok:
            raise ManifestError(f"manifest {name} is not valid ({len(result.errors)} error(s))", list(result.errors))
        entries.extend(result.entries)
        policies.extend(result.policies)
    return [n for n, _ in sources], ManifestResult(entries, policies=policies)


def _registry_host(services, given: Optional[str]) -> Optional[str]:
    if given:
        return given.strip().lower()
    s = services.settings
    if s.login_server:
        return s.login_server.lower()
    if not (s.subscription_id and s.resource_group and s.registry_name):
        return None  # no registry configured: check without it (the result says what was skipped)
    return services.clients.login_server.lower()


def check_yaml(services, files: list[tuple[str, Union[str, bytes]]], *, manifest: Optional[Union[str, bytes]] = None,
               manifest_blob: Optional[str] = None, registry_host: Optional[str] = None) -> dict:
    """``{"ok", "registry_host", "manifests", "images", "findings", "skipped", "policy_uses"}``
    (``shared.core.discover.CheckReport``); unreadable YAML raises ValidationError."""
    found = core.discover(files)
    if found.problems:
        raise ValidationError("the Kubernetes YAML could not be read",
                              [Problem(p.message, line=p.line, field=name) for name, p in found.problems])
    names, mirrored = _manifests(services, manifest, manifest_blob)
    host = _registry_host(services, registry_host)
    report = core.check_report(found.uses, mirrored, host)
    return {"ok": report.ok, "registry_host": host, "manifests": names,
            "images": [{**i, "uses": [u.to_dict() for u in i["uses"]]} for i in core.images(found.uses, host)],
            **report.to_dict()}
