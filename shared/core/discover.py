"""Which images do Kubernetes manifests pull, and would they pull in the private cluster?

Pure code: no I/O. Reads what ``helm template`` or ``kustomize build`` print (multi-document
YAML) with the bounded loader of ``shared.core.safeyaml``, and walks the *nodes* (not the
constructed data), so every image keeps its file, document and line.

Where images are found:

* ``Pod``: ``spec``; ``PodTemplate``: ``template.spec``;
* ``Deployment``, ``StatefulSet``, ``DaemonSet``, ``ReplicaSet``, ``ReplicationController``,
  ``Job``: ``spec.template.spec``; ``CronJob``: ``spec.jobTemplate.spec.template.spec``;
* ``List`` and any ``*List`` kind: each of ``items``;
* any other kind (a custom resource such as an Argo Rollout) with a ``spec.template.spec`` that
  has containers;
* in each pod spec: ``containers``, ``initContainers`` and ``ephemeralContainers``.

Documents are numbered from 1 in stream order, counting empty ones (``---`` with nothing
after it), so "document 3" is the third ``---``-separated block of the file.

:func:`manifest_lines` turns the images into ``images.txt`` lines with the manifest's default
destination (``shared.core.manifest``: the source path without its registry). :func:`check_report`
compares the uses with a parsed manifest (its entries and its tag policies) and the private
registry's host:

* ``not-private``: the reference does not point at the private registry (the cluster has no
  way out, so it would fail as ``ImagePullBackOff``);
* ``not-mirrored``: no manifest entry produces it (on the private registry: no entry writes that
  repository and tag/digest, and no tag policy into that repository admits the tag; elsewhere: no
  entry or policy imports that source);
* ``invalid-reference``: not an image reference (an unrendered template, an empty value).

A tag that a policy admits passes, and is listed in ``CheckReport.policy_uses``: whether it was
imported depends on the source's tags at each sync (the newest N), which the manifest cannot say.
Without the private registry's host the ``not-private`` check is skipped (``CheckReport.skipped``
says so and for how many uses) and the rest is checked by repository path and tag.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence, Union

import yaml

from shared.core.manifest import DEFAULT_TAG, ManifestResult, PolicyEntry, parse_manifest
from shared.core.reference import ImageReference, ReferenceSyntaxError, normalise_registry, parse_reference
from shared.core.safeyaml import FastSafeLoader, Limits, yaml_problem
from shared.errors import Problem

__all__ = ["LIMITS", "CheckReport", "Discovery", "Finding", "ImageUse", "PolicyUse", "Skipped", "check", "check_report",
           "discover", "images", "manifest_lines", "scan"]

LIMITS = Limits(max_depth=128, max_aliases=256, max_nodes=2_000_000)
CONTAINER_FIELDS = ("containers", "initContainers", "ephemeralContainers")
WORKLOADS = {
    "Pod": ("spec",),
    "PodTemplate": ("template", "spec"),
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "ReplicationController": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}
GENERIC = ("spec", "template", "spec")
_BOM = "\ufeff"


@dataclass(frozen=True)
class ImageUse:
    """One ``image:`` of one container, where it is written."""

    image: str  # as written
    file: str
    document: int  # 1-based, in stream order
    line: int  # 1-based, of the image value
    column: int  # 1-based
    kind: str
    name: str  # the object's metadata.name ("" if none)
    container: str
    field: str  # containers, initContainers or ephemeralContainers
    reference: Optional[ImageReference] = None
    error: Optional[str] = None  # why ``image`` is not a reference

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"

    @property
    def owner(self) -> str:
        return f"{self.kind}/{self.name}" if self.name else self.kind

    def to_dict(self) -> dict:
        return {"image": self.image, "reference": str(self.reference) if self.reference else None,
                "file": self.file, "document": self.document, "line": self.line, "column": self.column,
                "kind": self.kind, "name": self.name, "container": self.container, "field": self.field,
                **({"error": self.error} if self.error else {})}


@dataclass(frozen=True)
class Finding:
    code: str  # not-private, not-mirrored, invalid-reference
    message: str
    use: ImageUse
    suggestion: Optional[str] = None  # an images.txt line, or the private reference to use

    def __str__(self) -> str:
        u = self.use
        text = (f"{u.where}: document {u.document}, {u.owner} {u.field[:-1] if u.field.endswith('s') else u.field} "
                f"{u.container!r}: {self.message}")
        return text + (f" ({self.suggestion})" if self.suggestion else "")

    def to_dict(self) -> dict:
        return {"code": self.code, "message": self.message, "suggestion": self.suggestion, **self.use.to_dict()}


@dataclass
class Discovery:
    uses: list[ImageUse] = field(default_factory=list)
    problems: list[tuple[str, Problem]] = field(default_factory=list)  # (file, problem)

    @property
    def ok(self) -> bool:
        return not self.problems

    def extend(self, other: "Discovery") -> None:
        self.uses.extend(other.uses)
        self.problems.extend(other.problems)


# --- reading -------------------------------------------------------------------------------------

def _decode(data: Union[str, bytes]) -> tuple[Optional[str], Optional[Problem]]:
    if isinstance(data, str):
        try:
            data.encode("utf-8")
        except UnicodeEncodeError as e:  # a lone surrogate, e.g. from a JSON "\ud800" escape
            return None, Problem("not valid Unicode (a lone surrogate)", line=data.count("\n", 0, e.start) + 1)
        return (data[1:] if data.startswith(_BOM) else data), None
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError as e:
        return None, Problem(f"not valid UTF-8 (byte 0x{data[e.start]:02x})", line=data.count(b"\n", 0, e.start) + 1)


def _get(node: Optional[yaml.Node], key: str) -> Optional[yaml.Node]:
    if not isinstance(node, yaml.MappingNode):
        return None
    for k, v in node.value:
        if isinstance(k, yaml.ScalarNode) and k.value == key:
            return v
    return None


def _path(node: Optional[yaml.Node], keys: Sequence[str]) -> Optional[yaml.Node]:
    for key in keys:
        node = _get(node, key)
    return node


def _text(node: Optional[yaml.Node]) -> str:
    return node.value if isinstance(node, yaml.ScalarNode) else ""


def _pod_specs(root: yaml.Node, depth: int = 0) -> Iterable[tuple[str, str, yaml.Node]]:
    """(kind, name, pod spec node) for an object, or for each item of a List."""
    kind = _text(_get(root, "kind"))
    name = _text(_path(root, ("metadata", "name")))
    if kind == "List" or (kind.endswith("List") and isinstance(_get(root, "items"), yaml.SequenceNode)):
        items = _get(root, "items")
        if isinstance(items, yaml.SequenceNode) and depth < 8:
            for item in items.value:
                yield from _pod_specs(item, depth + 1)
        return
    spec = _path(root, WORKLOADS[kind]) if kind in WORKLOADS else None
    if spec is None and kind not in WORKLOADS:
        candidate = _path(root, GENERIC)
        if any(isinstance(_get(candidate, f), yaml.SequenceNode) for f in CONTAINER_FIELDS):
            spec = candidate
    if isinstance(spec, yaml.MappingNode):
        yield kind, name, spec


def _uses_in(file: str, document: int, root: yaml.Node) -> list[ImageUse]:
    found = []
    for kind, name, spec in _pod_specs(root):
        for field_name in CONTAINER_FIELDS:
            containers = _get(spec, field_name)
            if not isinstance(containers, yaml.SequenceNode):
                continue
            for container in containers.value:
                image = _get(container, "image")
                at = image if image is not None else container
                text = _text(image)
                reference, error = None, None
                if image is None or not text.strip():
                    error = "the container has no image"
                elif not isinstance(image, yaml.ScalarNode):
                    error = "image is not a string"
                else:
                    try:
                        reference = parse_reference(text)
                    except ReferenceSyntaxError as e:
                        error = f"not an image reference: {e.reason}"
                found.append(ImageUse(text, file, document, at.start_mark.line + 1, at.start_mark.column + 1, kind,
                                      name, _text(_get(container, "name")), field_name, reference, error))
    return sorted(found, key=lambda u: (u.line, u.column))


def scan(data: Union[str, bytes], file: str, limits: Limits = LIMITS) -> Discovery:
    """Every image used in one file. YAML problems are reported with their line; images found
    before a problem are kept (a later broken document does not hide earlier ones)."""
    result = Discovery()
    text, problem = _decode(data)
    if text is None:
        result.problems.append((file, problem))  # type: ignore[arg-type]
        return result
    try:
        loader = FastSafeLoader(text)
    except yaml.YAMLError as e:  # the reader checks characters up front (a NUL byte)
        result.problems.append((file, yaml_problem(e, text)))
        return result
    loader.limits = limits
    document = 0
    try:
        while loader.check_node():
            document += 1
            root = loader.get_node()
            if root is not None:
                result.uses.extend(_uses_in(file, document, root))
    except (yaml.YAMLError, RecursionError) as e:
        result.problems.append((file, yaml_problem(e, text)))
    finally:
        loader.dispose()
    return result


def discover(files: Iterable[tuple[str, Union[str, bytes]]], limits: Limits = LIMITS) -> Discovery:
    """``scan`` over several ``(name, content)`` files; the alias and node budgets are per file."""
    result = Discovery()
    for name, data in files:
        result.extend(scan(data, name, limits))
    return result


# --- images.txt lines and the check --------------------------------------------------------------

def _is_private(ref: ImageReference, private_host: Optional[str]) -> bool:
    return private_host is not None and ref.registry == normalise_registry(private_host)


def _pulled(ref: ImageReference) -> tuple:
    tag = ref.tag if ref.tag is not None or ref.digest is not None else DEFAULT_TAG
    return (ref.registry, ref.repository, tag, ref.digest)


def images(uses: Iterable[ImageUse], private_host: Optional[str] = None) -> list[dict]:
    """Distinct images (first use first): ``{"image", "reference", "manifest_line", "uses"}``.

    ``manifest_line`` is the ``images.txt`` line with the default destination written out, or
    None for images already on the private registry and for invalid references."""
    grouped: dict[tuple, dict] = {}
    for use in uses:
        key = _pulled(use.reference) if use.reference is not None else ("invalid", use.image)
        item = grouped.get(key)
        if item is None:
            private = use.reference is None or _is_private(use.reference, private_host)
            item = grouped[key] = {"image": use.image, "reference": str(use.reference) if use.reference else None,
                                   "manifest_line": None if private else _line_for(use.image), "uses": []}
        item["uses"].append(use)
    return list(grouped.values())


def manifest_lines(uses: Iterable[ImageUse], private_host: Optional[str] = None) -> list[str]:
    """``images.txt`` lines for :func:`images`, each with a comment saying where it is first used."""
    return [f"{i['manifest_line']}  # {i['uses'][0].file}:{i['uses'][0].line} {i['uses'][0].owner}"
            for i in images(uses, private_host) if i["manifest_line"]]


def _line_for(image: str) -> str:
    """``SOURCE => DESTINATION`` with the destination the manifest gives ``SOURCE`` alone."""
    [entry] = parse_manifest(image).entries
    return f"{image} => {entry.target_repository}"


@dataclass(frozen=True)
class Skipped:
    """A check that was not made, and for how many image uses."""

    check: str
    reason: str
    uses: int

    def __str__(self) -> str:
        return f"skipped the {self.check} check for {self.uses} image use(s): {self.reason}"

    def to_dict(self) -> dict:
        return {"check": self.check, "reason": self.reason, "uses": self.uses}


@dataclass(frozen=True)
class PolicyUse:
    """A use whose tag a tag policy admits: mirrored if the tag was among the policy's newest N at
    a sync (imports are never deleted), which the manifest alone cannot tell."""

    use: ImageUse
    policy: PolicyEntry

    def __str__(self) -> str:
        return (f"{self.use.where}: {self.use.image} is admitted by the tag policy on images.txt line "
                f"{self.policy.line} ({self.policy.policy.text}); mirrored once a sync finds it among the newest "
                f"{self.policy.policy.newest}")

    def to_dict(self) -> dict:
        return {"policy_line": self.policy.line, "policy": self.policy.policy.text,
                "target_repository": self.policy.target_repository, **self.use.to_dict()}


@dataclass
class CheckReport:
    findings: list[Finding] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    policy_uses: list[PolicyUse] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    def to_dict(self) -> dict:
        return {"findings": [f.to_dict() for f in self.findings], "skipped": [s.to_dict() for s in self.skipped],
                "policy_uses": [p.to_dict() for p in self.policy_uses]}


def check(uses: Iterable[ImageUse], manifest: ManifestResult, private_host: Optional[str]) -> list[Finding]:
    """What would not pull in the private cluster, one finding per use (file order); see :func:`check_report`."""
    return check_report(uses, manifest, private_host).findings


def check_report(uses: Iterable[ImageUse], manifest: ManifestResult, private_host: Optional[str]) -> CheckReport:
    """Check each use against the manifest's entries and tag policies.

    With the private registry's host: a reference on it must be written by an entry (repository
    and tag, or an untagged import of its digest) or have a tag that a policy into that repository
    admits; any other reference is ``not-private``, with the private reference to use when an entry
    or policy imports it, and also ``not-mirrored`` when none does.

    Without it (``private_host`` None or empty), references cannot be told apart: a use passes when
    an entry or policy imports it, or when an entry or policy writes its repository path and tag
    (on whatever registry); the ``not-private`` check is skipped and the report says so."""
    if not manifest.ok:
        raise ValueError("check needs a valid manifest")
    host = normalise_registry(private_host) if private_host else None
    sources = {_pulled(e.source): e for e in manifest.entries}
    targets: dict[tuple[str, str], list] = {}
    for entry in manifest.entries:
        key = ":" + entry.target_tag if entry.target_tag is not None else "@" + str(entry.source.digest)
        targets.setdefault((entry.target_repository, key), []).append(entry)
    policy_sources: dict[tuple[str, str], list[PolicyEntry]] = {}
    policy_targets: dict[str, list[PolicyEntry]] = {}
    for policy in manifest.policies:
        policy_sources.setdefault((policy.source.registry, policy.source.repository), []).append(policy)
        policy_targets.setdefault(policy.target_repository, []).append(policy)
    report = CheckReport()
    findings = report.findings
    unsure = 0  # uses whose registry could not be told private or not
    for use in uses:
        ref = use.reference
        if ref is None:
            findings.append(Finding("invalid-reference", f"image {use.image!r}: {use.error}", use))
            continue
        if host is not None and ref.registry == host:
            if _mirrors_target(ref, targets):
                continue
            written = policy_targets.get(ref.repository, [])
            policy = _admitting(ref, written)
            if policy is not None:
                report.policy_uses.append(PolicyUse(use, policy))
                continue
            findings.append(Finding("not-mirrored", f"{ref.path} is not written by any images.txt entry"
                                    + _not_admitted(ref, written), use))
            continue
        entry = sources.get(_pulled(ref))
        policy = None if entry is not None else _admitting(ref, policy_sources.get((ref.registry, ref.repository), []))
        if host is None:
            unsure += 1
            if entry is None and policy is None and not _mirrors_target(ref, targets):
                policy = _admitting(ref, policy_targets.get(ref.repository, []))
                if policy is None:
                    findings.append(Finding(
                        "not-mirrored", f"{use.image} is not imported by any images.txt entry, and no entry writes "
                        f"{ref.path} (the private registry's host is not known)", use,
                        suggestion=f"add: {_line_for(use.image)}"))
                    continue
            if policy is not None:
                report.policy_uses.append(PolicyUse(use, policy))
            continue
        not_private = f"image {use.image} is not on the private registry {host}"
        if entry is not None:
            findings.append(Finding("not-private", not_private, use,
                                    suggestion=f"use {host}/{entry.target} (images.txt line {entry.line})"))
        elif policy is not None:
            findings.append(Finding("not-private", not_private, use,
                                    suggestion=f"use {host}/{policy.target_repository}:{ref.tag or DEFAULT_TAG} "
                                               f"(images.txt line {policy.line}, tag policy {policy.policy.text})"))
        else:
            findings.append(Finding("not-private", not_private, use))
            findings.append(Finding("not-mirrored", f"{use.image} is not imported by any images.txt entry", use,
                                    suggestion=f"add: {_line_for(use.image)}"))
    if unsure:
        report.skipped.append(Skipped(
            "not-private", "the private registry's host is not known (--registry-host, or ACR_LOGIN_SERVER), so a "
            "reference passed when an entry or tag policy imports it, or writes its repository path and tag", unsure))
    return report


def _admitting(ref: ImageReference, policies: Iterable[PolicyEntry]) -> Optional[PolicyEntry]:
    """The first policy that admits the reference's tag (a digest-only reference names no tag; a
    pinned ``tag@digest`` is taken as following the tag, as for entries)."""
    if ref.tag is None and ref.digest is not None:
        return None
    tag = ref.tag or DEFAULT_TAG
    return next((p for p in policies if p.policy.admits(tag)), None)


def _not_admitted(ref: ImageReference, policies: list[PolicyEntry]) -> str:
    if not policies:
        return ""
    what = f"tag {ref.tag or DEFAULT_TAG}" if ref.tag is not None or ref.digest is None else "a digest-only reference"
    lines = ", ".join(f"line {p.line} {p.policy.text}" for p in policies)
    return f"; the tag policy into {ref.repository} ({lines}) does not admit {what}"


def _mirrors_target(ref: ImageReference, targets: dict) -> bool:
    if ref.tag is not None or ref.digest is None:
        entries = targets.get((ref.repository, ":" + (ref.tag or DEFAULT_TAG)), [])
        # a pinned reference is only mirrored if the entry imports that digest (or follows the tag)
        return any(ref.digest is None or e.source.digest in (None, ref.digest) for e in entries)
    return bool(targets.get((ref.repository, "@" + ref.digest)))
