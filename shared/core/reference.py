"""Container image references: parsing, validation and normalisation.

Pure code: no I/O, standard library only.

The grammar follows the OCI distribution-spec / ``distribution/reference`` grammar::

    reference   := name [ ":" tag ] [ "@" digest ]
    name        := [ registry "/" ] repository
    registry    := host [ ":" port ]                (host: DNS name, IPv4, or [IPv6])
    repository  := component ( "/" component )*
    component   := [a-z0-9]+ ( ( [._] | "__" | "-"+ ) [a-z0-9]+ )*
    tag         := [A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}
    digest      := algorithm ":" hex                (sha256: 64 hex, sha512: 128 hex)

The first path component is a registry only when it contains ``.`` or ``:`` or is exactly
``localhost``; otherwise the whole name is a Docker Hub repository. So ``host:5000/repo`` is
registry ``host:5000`` with no tag, and ``repo@sha256:...`` has a digest and no tag -- the two
cases the old shell script got wrong.

Normalisation:

* no registry, or ``index.docker.io`` / ``registry-1.docker.io`` / ``registry.hub.docker.com``
  -> ``docker.io``;
* a single-component Docker Hub repository gets ``library/`` (``nginx`` -> ``library/nginx``);
* registry host names are lower-cased (DNS is case-insensitive). Repositories are never
  lower-cased: upper case in a repository is an error.

The full normalised name (``registry/repository``) may be at most 255 characters, as in
``distribution/reference``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

__all__ = [
    "DOCKER_HUB",
    "ImageReference",
    "ReferenceSyntaxError",
    "is_registry_component",
    "normalise_registry",
    "parse_reference",
    "parse_repository",
    "validate_digest",
    "validate_registry",
    "validate_tag",
]

DOCKER_HUB = "docker.io"
_DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io",
                                 "registry.hub.docker.com"})

NAME_MAX = 255
TAG_MAX = 128

_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_DOMAIN_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?")
_IPV6 = re.compile(r"\[[0-9A-Fa-f:.]+\]")
_PORT = re.compile(r"[0-9]+")
_DIGEST_ALGORITHM = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*")
_HEX = re.compile(r"[0-9a-f]+")
_DIGEST_LENGTHS = {"sha256": 64, "sha512": 128}


class ReferenceSyntaxError(ValueError):
    """A reference, repository, tag or digest did not match the grammar.

    ``reason`` is a short human-readable explanation (also ``str(error)``).
    """

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ImageReference:
    """A normalised, fully-qualified image reference.

    Build one with :func:`parse_reference`. The constructor re-checks each field against the
    grammar (so an invalid value cannot be constructed) but does not normalise.
    """

    registry: str
    repository: str
    tag: Optional[str] = None
    digest: Optional[str] = None

    def __post_init__(self) -> None:
        validate_registry(self.registry)
        _check_repository(self.repository)
        if self.tag is not None:
            validate_tag(self.tag)
        if self.digest is not None:
            validate_digest(self.digest)
        if len(self.name) > NAME_MAX:
            raise ReferenceSyntaxError(
                f"image name is {len(self.name)} characters; the limit is {NAME_MAX}")

    @property
    def name(self) -> str:
        """``registry/repository``, without tag or digest."""
        return f"{self.registry}/{self.repository}"

    @property
    def path(self) -> str:
        """The reference without its registry: ``repository[:tag][@digest]``."""
        out = self.repository
        if self.tag is not None:
            out += f":{self.tag}"
        if self.digest is not None:
            out += f"@{self.digest}"
        return out

    def __str__(self) -> str:
        return f"{self.registry}/{self.path}"


def is_registry_component(component: str) -> bool:
    """True when a leading path component names a registry rather than a repository part."""
    return "." in component or ":" in component or component == "localhost"


def normalise_registry(registry: str) -> str:
    """Lower-case a registry and fold the Docker Hub aliases into ``docker.io``."""
    lowered = registry.lower()
    return DOCKER_HUB if lowered in _DOCKER_HUB_ALIASES else lowered


def validate_registry(registry: str) -> str:
    """Check ``host[:port]``; return it unchanged or raise :class:`ReferenceSyntaxError`."""
    if not registry:
        raise ReferenceSyntaxError("registry host is empty")
    if registry.startswith("["):
        end = registry.find("]")
        host, rest = (registry[:end + 1], registry[end + 1:]) if end != -1 else (registry, "")
        if not _IPV6.fullmatch(host):
            raise ReferenceSyntaxError(f"registry host {registry!r} is not a valid [IPv6] address")
    else:
        host, sep, port = registry.partition(":")
        rest = sep + port
        labels = host.split(".")
        if not all(_DOMAIN_LABEL.fullmatch(label) for label in labels):
            raise ReferenceSyntaxError(
                f"registry host {host!r} is not a valid host name (letters, digits, '-' and '.')")
    if rest:
        port = rest[1:]
        if not rest.startswith(":") or not _PORT.fullmatch(port):
            raise ReferenceSyntaxError(f"registry port in {registry!r} must be a number")
        if not 1 <= int(port) <= 65535:
            raise ReferenceSyntaxError(f"registry port {port} is out of range 1-65535")
    return registry


def validate_tag(text: str) -> str:
    """Check a tag; return it unchanged or raise :class:`ReferenceSyntaxError`."""
    if not text:
        raise ReferenceSyntaxError("tag is empty")
    if len(text) > TAG_MAX:
        raise ReferenceSyntaxError(f"tag is {len(text)} characters; the limit is {TAG_MAX}")
    if not _TAG.fullmatch(text):
        raise ReferenceSyntaxError(
            f"invalid tag {text!r}: a tag is letters, digits, '_', '.' and '-', "
            "and must not start with '.' or '-'")
    return text


def validate_digest(text: str) -> str:
    """Check ``algorithm:hex`` (sha256 or sha512); return it unchanged or raise."""
    if not text:
        raise ReferenceSyntaxError("digest is empty")
    algorithm, sep, hexpart = text.partition(":")
    if not sep:
        raise ReferenceSyntaxError(f"invalid digest {text!r}: expected algorithm:hex")
    if not _DIGEST_ALGORITHM.fullmatch(algorithm):
        raise ReferenceSyntaxError(f"invalid digest algorithm {algorithm!r}")
    if algorithm not in _DIGEST_LENGTHS:
        raise ReferenceSyntaxError(
            f"unsupported digest algorithm {algorithm!r} (expected sha256 or sha512)")
    want = _DIGEST_LENGTHS[algorithm]
    if not _HEX.fullmatch(hexpart or "-"):
        raise ReferenceSyntaxError(f"{algorithm} digest must be lowercase hex (0-9, a-f)")
    if len(hexpart) != want:
        raise ReferenceSyntaxError(
            f"{algorithm} digest must be {want} hex characters, not {len(hexpart)}")
    return text


def _check_repository(text: str) -> str:
    if not text:
        raise ReferenceSyntaxError("repository is empty")
    for component in text.split("/"):
        if not component:
            raise ReferenceSyntaxError(f"repository {text!r} has an empty path component")
        if _COMPONENT.fullmatch(component):
            continue
        if _COMPONENT.fullmatch(component.lower()):
            raise ReferenceSyntaxError(f"repository must be lowercase: {text!r}")
        raise ReferenceSyntaxError(
            f"invalid repository path component {component!r}: use lowercase letters and "
            "digits, separated by '.', '_', '__' or '-'")
    return text


def parse_repository(text: str) -> str:
    """Validate a destination repository (no registry, tag or digest); return it.

    A leading component that looks like a registry (contains '.' or ':' or is 'localhost')
    is rejected, because a name such as ``myacr.azurecr.io/team/app`` would be read as a
    registry host by every client.
    """
    if not text:
        raise ReferenceSyntaxError("repository is empty")
    if any(ch.isspace() for ch in text):
        raise ReferenceSyntaxError(f"repository {text!r} contains whitespace")
    if "@" in text:
        raise ReferenceSyntaxError(f"repository {text!r} must not include a digest")
    first, slash, _ = text.partition("/")
    if slash and is_registry_component(first):
        raise ReferenceSyntaxError(
            f"repository {text!r} must not include a registry host ({first!r})")
    if ":" in text:
        raise ReferenceSyntaxError(f"repository {text!r} must not include a tag")
    _check_repository(text)
    if len(text) > NAME_MAX:
        raise ReferenceSyntaxError(f"repository is {len(text)} characters; the limit is {NAME_MAX}")
    return text


def parse_reference(text: str) -> ImageReference:
    """Parse and normalise an image reference.

    >>> str(parse_reference("nginx:1.27"))
    'docker.io/library/nginx:1.27'
    >>> parse_reference("host:5000/repo").tag is None
    True
    """
    if not isinstance(text, str):
        raise TypeError(f"reference must be str, not {type(text).__name__}")
    if not text:
        raise ReferenceSyntaxError("reference is empty")
    if any(ch.isspace() for ch in text):
        raise ReferenceSyntaxError(f"reference {text!r} contains whitespace")

    name_and_tag, at, digest = text.partition("@")
    if at:
        if "@" in digest:
            raise ReferenceSyntaxError("reference has more than one '@'")
        validate_digest(digest)
        if not name_and_tag:
            raise ReferenceSyntaxError("reference has a digest but no repository")

    first, slash, remainder = name_and_tag.partition("/")
    if slash and is_registry_component(first):
        validate_registry(first)
        registry = normalise_registry(first)
    else:
        registry, remainder = DOCKER_HUB, name_and_tag

    repository, colon, tag = remainder.partition(":")
    if colon:
        if ":" in tag:
            raise ReferenceSyntaxError(f"reference {text!r} has more than one ':' after the registry")
        if "/" in tag:
            raise ReferenceSyntaxError(f"invalid tag {tag!r}: a tag cannot contain '/'")
        validate_tag(tag)
    if not repository:
        raise ReferenceSyntaxError("reference has no repository")
    _check_repository(repository)
    if registry == DOCKER_HUB and "/" not in repository:
        repository = f"library/{repository}"

    return ImageReference(registry, repository, tag if colon else None, digest if at else None)
