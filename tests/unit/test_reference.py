import random

import pytest

from shared.core.reference import (
    ImageReference,
    ReferenceSyntaxError,
    parse_reference,
    parse_repository,
    validate_digest,
    validate_tag,
)

SHA256 = "sha256:" + "0123456789abcdef" * 4
SHA512 = "sha512:" + "0123456789abcdef" * 8


# --- what parses, and into what ---------------------------------------------------------

@pytest.mark.parametrize("text, registry, repository, tag, digest", [
    # Docker Hub short names
    ("nginx", "docker.io", "library/nginx", None, None),
    ("nginx:1.27", "docker.io", "library/nginx", "1.27", None),
    ("bitnami/redis", "docker.io", "bitnami/redis", None, None),
    ("bitnami/redis:7.2", "docker.io", "bitnami/redis", "7.2", None),
    ("docker.io/nginx", "docker.io", "library/nginx", None, None),
    ("docker.io/library/nginx:1.27", "docker.io", "library/nginx", "1.27", None),
    ("index.docker.io/nginx", "docker.io", "library/nginx", None, None),
    ("registry-1.docker.io/bitnami/redis", "docker.io", "bitnami/redis", None, None),
    ("registry.hub.docker.com/library/busybox:1", "docker.io", "library/busybox", "1", None),
    # registries with ports and localhost
    ("myreg.example.com:5000/team/app:1.2", "myreg.example.com:5000", "team/app", "1.2", None),
    ("host:5000/repo", "host:5000", "repo", None, None),
    ("host:5000/repo:v1", "host:5000", "repo", "v1", None),
    ("localhost/app", "localhost", "app", None, None),
    ("localhost:5000/a/b/c:t", "localhost:5000", "a/b/c", "t", None),
    ("127.0.0.1:5000/app", "127.0.0.1:5000", "app", None, None),
    ("[::1]:5000/app:t", "[::1]:5000", "app", "t", None),
    ("MyReg.Example.COM/app", "myreg.example.com", "app", None, None),
    # digests
    (f"repo@{SHA256}", "docker.io", "library/repo", None, SHA256),
    (f"repo:tag@{SHA256}", "docker.io", "library/repo", "tag", SHA256),
    (f"quay.io/a/b@{SHA512}", "quay.io", "a/b", None, SHA512),
    (f"host:5000/repo@{SHA256}", "host:5000", "repo", None, SHA256),
    # repository component separators
    ("quay.io/a.b/c_d/e__f/g-h/i---j", "quay.io", "a.b/c_d/e__f/g-h/i---j", None, None),
    # tags
    ("quay.io/x:_private", "quay.io", "x", "_private", None),
    ("quay.io/x:V1.2-RC_3", "quay.io", "x", "V1.2-RC_3", None),
    ("quay.io/x:" + "t" * 128, "quay.io", "x", "t" * 128, None),
])
def test_parse_reference_fields(text, registry, repository, tag, digest):
    ref = parse_reference(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (registry, repository, tag, digest)


@pytest.mark.parametrize("text, expected", [
    ("nginx:1.27", "docker.io/library/nginx:1.27"),
    ("nginx", "docker.io/library/nginx"),
    (f"host:5000/a/b@{SHA256}", f"host:5000/a/b@{SHA256}"),
    (f"repo:1@{SHA256}", f"docker.io/library/repo:1@{SHA256}"),
    ("index.docker.io/bitnami/redis:7", "docker.io/bitnami/redis:7"),
])
def test_str_is_fully_qualified(text, expected):
    assert str(parse_reference(text)) == expected


@pytest.mark.parametrize("text, expected", [
    ("quay.io/jetstack/cert-manager-controller:v1.15.2", "jetstack/cert-manager-controller:v1.15.2"),
    (f"host:5000/repo@{SHA256}", f"repo@{SHA256}"),
    (f"host:5000/repo:t@{SHA256}", f"repo:t@{SHA256}"),
    ("nginx", "library/nginx"),
])
def test_path_has_no_registry(text, expected):
    assert parse_reference(text).path == expected


def test_dotted_first_component_is_a_registry():
    # the grammar's rule, not a choice: "a.b/c" names registry a.b, never Docker Hub "a.b/c"
    assert parse_reference("a.b/c").registry == "a.b"
    assert parse_reference("a.b").registry == "docker.io"  # no '/' -> a Hub repository


def test_name_is_registry_and_repository():
    assert parse_reference(f"quay.io/a/b:t@{SHA256}").name == "quay.io/a/b"


# --- the two bugs of the shell script ---------------------------------------------------

def test_registry_port_is_not_a_tag():
    ref = parse_reference("host:5000/repo")
    assert ref.registry == "host:5000"
    assert ref.repository == "repo"
    assert ref.tag is None  # the script took everything after the last ':' -> "5000/repo"


def test_digest_is_not_a_tag():
    ref = parse_reference(f"repo@{SHA256}")
    assert ref.tag is None  # the script took "0123..." (after the last ':') as the tag
    assert ref.digest == SHA256


# --- what fails, and why -----------------------------------------------------------------

@pytest.mark.parametrize("text, reason", [
    ("", "reference is empty"),
    ("nginx 1.27", "whitespace"),
    ("Nginx", "repository must be lowercase"),
    ("quay.io/Jetstack/cert-manager", "repository must be lowercase"),
    ("bitnami/Redis:7", "repository must be lowercase"),
    ("quay.io/x:" + "t" * 129, "the limit is 128"),
    ("quay.io/x:", "tag is empty"),
    ("quay.io/x:.hidden", "invalid tag"),
    ("quay.io/x:-dash", "invalid tag"),
    ("quay.io/x:a+b", "invalid tag"),
    ("quay.io/x:a:b", "more than one ':'"),
    ("quay.io/a/b:t/u", "cannot contain '/'"),
    ("quay.io/", "no repository"),
    ("quay.io//x", "empty path component"),
    ("quay.io/x/", "empty path component"),
    ("quay.io/-x", "invalid repository path component '-x'"),
    ("quay.io/x_", "invalid repository path component"),
    ("quay.io/a___b", "invalid repository path component"),
    ("quay.io/a..b", "invalid repository path component"),
    ("quay.io/caf\u00e9", "invalid repository path component"),
    ("host:port/x", "registry port in 'host:port' must be a number"),
    ("host:99999/x", "out of range"),
    ("host:/x", "must be a number"),
    ("bad_host.io/x", "not a valid host name"),
    ("-bad.io/x", "not a valid host name"),
    ("[zz]:5000/x", "IPv6"),
    ("repo@", "digest is empty"),
    ("repo@sha256", "expected algorithm:hex"),
    (f"@{SHA256}", "no repository"),
    (f"repo@{SHA256}@{SHA256}", "more than one '@'"),
    ("repo@md5:" + "a" * 32, "unsupported digest algorithm 'md5'"),
    ("repo@sha256:" + "a" * 63, "must be 64 hex characters, not 63"),
    ("repo@sha256:" + "A" * 64, "lowercase hex"),
    ("repo@sha512:" + "a" * 64, "must be 128 hex characters, not 64"),
    ("quay.io/" + "a" * 250, "the limit is 255"),
    ("a" * 240, "the limit is 255"),  # docker.io/library/ pushes it over
])
def test_parse_reference_rejects(text, reason):
    with pytest.raises(ReferenceSyntaxError) as info:
        parse_reference(text)
    assert reason in info.value.reason
    assert str(info.value) == info.value.reason


def test_reference_syntax_error_is_a_value_error():
    with pytest.raises(ValueError):
        parse_reference("UPPER")


def test_parse_reference_requires_str():
    with pytest.raises(TypeError):
        parse_reference(b"nginx")  # type: ignore[arg-type]


def test_constructor_rejects_invalid_fields():
    with pytest.raises(ReferenceSyntaxError, match="lowercase"):
        ImageReference("quay.io", "Foo", None, None)
    with pytest.raises(ReferenceSyntaxError, match="digest"):
        ImageReference("quay.io", "foo", None, "sha256:abc")


# --- parse_repository, validate_tag, validate_digest --------------------------------------

@pytest.mark.parametrize("text", ["nginx", "library/nginx", "ingress-nginx/controller", "a/b.c/d__e"])
def test_parse_repository_accepts(text):
    assert parse_repository(text) == text


@pytest.mark.parametrize("text, reason", [
    ("", "repository is empty"),
    ("team/App", "repository must be lowercase"),
    ("myacr.azurecr.io/team/app", "must not include a registry host ('myacr.azurecr.io')"),
    ("localhost/app", "must not include a registry host"),
    ("host:5000/app", "must not include a registry host"),
    ("team/app:1.0", "must not include a tag"),
    (f"team/app@{SHA256}", "must not include a digest"),
    ("team//app", "empty path component"),
    ("team app", "whitespace"),
    ("a/" * 128 + "a", "the limit is 255"),
])
def test_parse_repository_rejects(text, reason):
    with pytest.raises(ReferenceSyntaxError) as info:
        parse_repository(text)
    assert reason in info.value.reason


@pytest.mark.parametrize("text", ["latest", "v1.11.1", "1.27-alpine", "_x", "A" * 128])
def test_validate_tag_accepts(text):
    assert validate_tag(text) == text


@pytest.mark.parametrize("text, reason", [
    ("", "tag is empty"),
    ("A" * 129, "tag is 129 characters; the limit is 128"),
    (".x", "invalid tag"),
    ("x/y", "invalid tag"),
    ("x y", "invalid tag"),
])
def test_validate_tag_rejects(text, reason):
    with pytest.raises(ReferenceSyntaxError) as info:
        validate_tag(text)
    assert reason in info.value.reason


def test_validate_digest_accepts_sha256_and_sha512():
    assert validate_digest(SHA256) == SHA256
    assert validate_digest(SHA512) == SHA512


# --- property-style round trips -------------------------------------------------------------

def _component(rng):
    alnum = "abcdefghijklmnopqrstuvwxyz0123456789"
    parts = ["".join(rng.choice(alnum) for _ in range(rng.randint(1, 6)))
             for _ in range(rng.randint(1, 3))]
    out = parts[0]
    for part in parts[1:]:
        out += rng.choice([".", "_", "__", "-", "--"]) + part
    return out


def _random_reference(rng):
    """A random valid reference text, in one of the accepted spellings."""
    registry = rng.choice([
        None, "docker.io", "index.docker.io", "quay.io", "registry.k8s.io", "localhost",
        "localhost:5000", "host:5000", "myreg.example.com:443", "10.0.0.1:5000",
        "Mixed.Case.Example",
    ])
    components = [_component(rng) for _ in range(rng.randint(1, 3))]
    if registry is None and len(components) > 1:
        # without a registry, a dotted first component would itself be read as a registry
        components[0] = components[0].replace(".", "-")
    repository = "/".join(components)
    text = f"{registry}/{repository}" if registry else repository
    if rng.random() < 0.6:
        tag_chars = "ABCxyz019_.-"
        text += ":" + rng.choice("abcXYZ09_") + "".join(
            rng.choice(tag_chars) for _ in range(rng.randint(0, 20)))
    if rng.random() < 0.4:
        algorithm, n = rng.choice([("sha256", 64), ("sha512", 128)])
        text += f"@{algorithm}:" + "".join(rng.choice("0123456789abcdef") for _ in range(n))
    return text


@pytest.mark.parametrize("seed", range(20))
def test_round_trip_through_str(seed):
    rng = random.Random(seed)
    for _ in range(50):
        text = _random_reference(rng)
        ref = parse_reference(text)
        canonical = str(ref)
        again = parse_reference(canonical)
        assert again == ref, text
        assert str(again) == canonical, text
        assert canonical == f"{ref.registry}/{ref.path}"


@pytest.mark.parametrize("seed", range(5))
def test_canonical_text_is_a_fixed_point(seed):
    rng = random.Random(1000 + seed)
    for _ in range(50):
        canonical = str(parse_reference(_random_reference(rng)))
        assert str(parse_reference(canonical)) == canonical
