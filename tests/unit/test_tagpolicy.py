"""Tag policies: parsing, semver ranges, the safe regex dialect, and their place in images.txt."""
import pytest

from shared.core.manifest import PolicyEntry, parse_manifest
from shared.core.tagpolicy import PolicySyntaxError, check_pattern, parse_policy

TAGS = ["1.25.0", "1.25.4", "1.26.1", "1.27.0", "1.27.2", "1.27.10", "1.28.0-rc.1", "1.27.3-alpine",
        "v1.27.11", "1.27", "latest", "mainline", "2.0.0", "1.24.9", "01.2.3"]


@pytest.mark.parametrize("body, expected", [
    ("semver: ~1.27, newest: 3", ["v1.27.11", "1.27.10", "1.27.2"]),
    ("semver: >=1.25 <2, newest: 2", ["v1.27.11", "1.27.10"]),
    ("semver: 1.25.x || 1.26, newest: 5", ["1.26.1", "1.25.4", "1.25.0"]),
    ("semver: ^1.26.1, newest: 1", ["v1.27.11"]),
    ("semver: >1.27.10 <=2.0.0, newest: 5", ["2.0.0", "v1.27.11"]),
    ("semver: *, newest: 2", ["2.0.0", "v1.27.11"]),
    ("semver: >=1.28.0-0, newest: 3, prerelease: true", ["2.0.0", "1.28.0-rc.1"]),
    ("semver: ~1.27", ["v1.27.11"]),  # newest defaults to 1
    (r'regex: "1\.27\.[0-9]+", newest: 2', ["1.27.10", "1.27.2"]),
    (r"regex: 1\.27\.[0-9]+-alpine", ["1.27.3-alpine"]),  # a regex takes what it matches
    (r'regex: "(main|)line", newest: 9', ["mainline"]),
])
def test_select(body, expected):
    assert parse_policy(body).select(TAGS) == expected


def test_prereleases_are_excluded_unless_asked_for():
    assert parse_policy("semver: >=1.27.0, newest: 9").select(["1.28.0-rc.1", "1.27.0"]) == ["1.27.0"]


def test_regex_must_match_the_whole_tag():
    assert parse_policy(r"regex: 1\.27").select(["1.27", "1.27.1", "x1.27"]) == ["1.27"]


@pytest.mark.parametrize("body, fragment", [
    ("", "exactly one of"),
    ("semver: ~1, regex: x", "exactly one of"),
    ("semver: ~1, newest: 0", "newest must be"),
    ("semver: ~1, newest: 51", "newest must be"),
    ("semver: ~1, newest: three", "newest must be"),
    ("semver: ~1, colour: red", "unknown policy key"),
    ("semver: ~1, semver: ~2", "given twice"),
    ("semver: banana", "not a version"),
    ("semver: 1.x.3-rc", "needs a full"),
    ("regex: x, prerelease: true", "applies to semver"),
    ("semver: ~1, prerelease: maybe", "true or false"),
    ('regex: "abc', "unclosed"),
    ("semver: " + " ".join([">=1"] * 17), "more than 16 comparators"),
])
def test_bad_policies(body, fragment):
    with pytest.raises(PolicySyntaxError) as caught:
        parse_policy(body)
    assert fragment in caught.value.reason


@pytest.mark.parametrize("pattern", [
    r"(a+)+b", r"(a|aa)*b", r"(a*)*", r"(\d+)?x", r"(\w)\1", r"(?=a)a", r"(?<!a)b", r"(?P<n>a)",
    r"(?i)a", r"a**", r"a+?", r"a{1,200}", r"a*b*c*d*", r"\bword", r"a{2,1}", "x" * 257,
    r"(a", r"a)", r"[a", r"\Z", r"(a|aa)(a|aa)(a|aa)(a|aa)(a|aa)b", r"a|b|c|d|e", r"(a|b)c*d*e*", r"(a|b|c)*",
])
def test_backtracking_prone_or_unsupported_patterns_are_refused(pattern):
    with pytest.raises(PolicySyntaxError):
        check_pattern(pattern)


@pytest.mark.parametrize("pattern", [
    r"v1\.27\.[0-9]+", r"\d+\.\d+\.\d+", r"(-alpine)?", r"(?:foo|bar)-[a-z]{1,8}", r"[^-]+-x",
    r"1\.2[.]3", r"a{3}b{3}c{3}d{3}",
])
def test_ordinary_patterns_are_accepted(pattern):
    check_pattern(pattern)


def test_policy_lines_in_a_manifest():
    text = (
        "registry.k8s.io/ingress-nginx/controller:{semver: ~1.11, newest: 2} => ingress-nginx/controller\n"
        "nginx:{semver: >=1.25 <2, newest: 3}   # keeps the three newest 1.x\n"
        'quay.io/jetstack/cert-manager-controller:{regex: "v1\\.15\\.[0-9]+", newest: 2}\n'
        "nginx:1.27 => team/nginx\n"
    )
    result = parse_manifest(text)
    assert result.ok, result.errors
    assert [e.target for e in result] == ["team/nginx:1.27"]
    assert [(p.line, p.target_repository, p.policy.kind, p.policy.newest) for p in result.policies] == [
        (1, "ingress-nginx/controller", "semver", 2),
        (2, "library/nginx", "semver", 3),
        (3, "jetstack/cert-manager-controller", "regex", 2),
    ]
    resolved = result.policies[1].resolve(["1.27.1", "1.27.2", "1.26.0", "1.24.0", "2.0.0"])
    assert [(e.line, e.target, e.policy) for e in resolved] == [
        (2, "library/nginx:1.27.2", "{semver: >=1.25 <2, newest: 3}"),
        (2, "library/nginx:1.27.1", "{semver: >=1.25 <2, newest: 3}"),
        (2, "library/nginx:1.26.0", "{semver: >=1.25 <2, newest: 3}"),
    ]
    assert str(resolved[0].source) == "docker.io/library/nginx:1.27.2"


@pytest.mark.parametrize("line, fragment", [
    ("nginx{semver: ~1}", "after the repository and a ':'"),
    ("nginx:1.27:{semver: ~1}", "replaces the tag"),
    ("nginx:{semver: ~1} => team/nginx:1", "must not have a tag"),
    ("nginx:{semver: ~1} extra", "unexpected 'extra'"),
    ("nginx:{semver: ~1", "no closing '}'"),
    ("nginx:{semver: ~1} =>", "nothing after '=>'"),
    ("nginx:{semver: what}", "invalid tag policy"),
    ("nginx@sha256:" + "a" * 64 + ":{semver: ~1}", "replaces the tag"),
])
def test_bad_policy_lines_are_line_numbered_errors(line, fragment):
    result = parse_manifest(f"# first\n{line}\n")
    [error] = result.errors
    assert error.line == 2 and fragment in error.message, error.message


def test_an_unquoted_regex_with_a_counted_repeat():
    result = parse_manifest("quay.io/a/x:{regex: nightly-[0-9]{8}, newest: 2}\n")
    assert result.ok, result.errors
    assert result.policies[0].policy.expression == "nightly-[0-9]{8}"


def test_a_literal_tag_is_never_read_as_a_policy():
    # every character of a policy's syntax is outside the tag grammar
    result = parse_manifest("nginx:1.27 => team/nginx\nnginx:latest => team/x\n")
    assert result.ok and result.policies == []


def test_two_policies_from_different_sources_into_one_repository_are_refused():
    result = parse_manifest("quay.io/a/x:{semver: ~1} => same\nghcr.io/b/x:{semver: ~1} => same\n")
    [error] = result.errors
    assert error.line == 2 and "line 1" in error.message


def test_two_policies_from_one_source_into_one_repository_are_fine():
    result = parse_manifest("quay.io/a/x:{semver: ~1} => same\nquay.io/a/x:{semver: ~2} => same\n")
    assert result.ok and len(result.policies) == 2
    assert all(isinstance(p, PolicyEntry) for p in result.policies)


def test_policy_registry_is_checked_against_the_allow_list():
    result = parse_manifest("quay.io/a/x:{semver: ~1}\n", allowed_registries=["ghcr.io"])
    assert "SOURCE_REGISTRY_ALLOWLIST" in result.errors[0].message
