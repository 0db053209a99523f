"""Tag policies: parsing, semver ranges (against npm's own answers), RE2 patterns, exclude, and their
place in images.txt."""
import json
from pathlib import Path

import pytest

from shared.core.manifest import PolicyEntry, parse_manifest
from shared.core.tagpolicy import PolicySyntaxError, TagPolicy, compile_pattern, parse_policy, parse_range

NPM = json.loads((Path(__file__).resolve().parents[1] / "fixtures" / "semver" / "npm-ranges.json").read_text())
# forms npm reads that a policy refuses on purpose (tagpolicy's docstring says why)
REFUSED = {"": "semver range is empty", "1 || ": "empty alternative", "1.2.3+build": "not a version"}

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


@pytest.mark.parametrize("pattern, fragment", [
    (r"(\w)\1", "back-references are not supported"),
    (r"(?P<n>a)(?P=n)", "back-references are not supported"),
    (r"(?=a)a", "look-around is not supported"),
    (r"(?<!a)b", "look-around is not supported"),
    (r"(?>a)", "atomic groups are not supported"),
    (r"a++", "possessive quantifiers are not supported"),
    (r"a{1,2000}", "a counted repeat is at most 1000"),
    (r"(?:a{100}){100}", "a counted repeat is at most 1000"),
    (r"\Z", "write \\z"),
    (r"(a", "missing )"),
    (r"a)", "unexpected )"),
    (r"[a", "missing ]"),
    (r"a**", "bad repetition operator"),
    ("x" * 257, "the limit is 256"),
    ('a"b', "which no tag does"),
    ("", "regex is empty"),
])
def test_patterns_re2_cannot_run_in_linear_time_or_cannot_parse_are_refused_with_the_reason(pattern, fragment):
    with pytest.raises(PolicySyntaxError) as caught:
        compile_pattern(pattern)
    assert fragment in caught.value.reason


@pytest.mark.parametrize("pattern, tag", [
    # everyday patterns regsync users bring (the old dialect refused them: more than 3 choice points)
    (r"v?\d+\.\d+\.\d+", "v1.27.3"),
    (r"\d+\.\d+\.\d+-(alpine|slim)", "1.27.3-alpine"),
    (r"1\.(25|26|27)\.\d+", "1.26.0"),
    (r"(?:foo|bar)-[a-z]{1,8}", "bar-x"),
    (r"a|b|c|d|e", "e"),
    (r"(a|b|c)*", "abcabc"),
    (r"(?i)RC", "rc"),
    # nested repetition is fine: an automaton has nothing to backtrack
    (r"(a+)+b", "aaab"),
    (r"(a|aa)*b", "aaab"),
])
def test_patterns_that_a_backtracker_fears_are_accepted_and_match(pattern, tag):
    assert compile_pattern(pattern).fullmatch(tag)


def test_an_adversarial_pattern_answers_on_the_longest_tag():
    # (a|aa)*b against 128 a's is ~10^26 paths for a backtracking matcher (Python's re would not
    # return); RE2 answers at once. bench/policy.py measures the time against the tag's length.
    assert not compile_pattern(r"(a|aa)*b").fullmatch("a" * 128)
    assert not compile_pattern(r"(a+)+b").fullmatch("a" * 128)
    assert parse_policy(r'regex: "(a|aa)*c?", newest: 2').select(["a" * 128, "a" * 127 + "b", "c"]) == \
        ["c", "a" * 128]


@pytest.mark.parametrize("body, expected", [
    # include, then exclude, then the newest N of what is left
    (r"semver: ~1.27, exclude: v?1\.27\.1[01], newest: 2", ["1.27.2", "1.27.0"]),
    (r"semver: ~1.27, exclude: 1\.27\.1[01], newest: 2", ["v1.27.11", "1.27.2"]),  # the whole tag
    (r"semver: >=1.25 <2, exclude: .*\.0, newest: 9", ["v1.27.11", "1.27.10", "1.27.2", "1.26.1", "1.25.4"]),
    (r"semver: *, prerelease: true, exclude: .*-(alpine|rc\..*), newest: 3", ["2.0.0", "v1.27.11", "1.27.10"]),
    (r'regex: "\d+\.\d+\.\d+(-alpine)?", exclude: ".*-alpine", newest: 2', ["2.0.0", "1.27.10"]),
    (r"regex: 1\.27\..*, exclude: 1\.27\.(10|2), newest: 9", ["1.27.3-alpine", "1.27.0"]),
    (r"regex: latest|mainline, exclude: latest", ["mainline"]),
])
def test_exclude_drops_included_tags_before_newest_is_counted(body, expected):
    assert parse_policy(body).select(TAGS) == expected


def test_exclude_is_a_whole_tag_match_and_shows_in_the_policy_text():
    policy = parse_policy(r"semver: ~1.27, exclude: 1\.27, newest: 9")  # would drop nothing partially
    assert policy.select(["1.27.0", "1.27.1"]) == ["1.27.1", "1.27.0"]
    assert policy.text == r'{semver: ~1.27, newest: 9, exclude: "1\.27"}'
    assert parse_policy(policy.text[1:-1]) == policy  # the recorded text reads back as the same policy


@pytest.mark.parametrize("body, fragment", [
    (r"semver: ~1, exclude: (\d)\1", "exclude is not valid RE2 syntax"),
    (r"semver: ~1, exclude: ", "exclude is empty"),
    (r"semver: ~1, exclude: a, exclude: b", "given twice"),
    (r"exclude: a", "exactly one of"),
])
def test_bad_excludes(body, fragment):
    with pytest.raises(PolicySyntaxError) as caught:
        parse_policy(body)
    assert fragment in caught.value.reason


@pytest.mark.parametrize("text", sorted(NPM["ranges"]))
def test_semver_ranges_agree_with_npm_semver_on_every_tag(text):
    """The fixture is npm semver's answer for each range x tag (its provenance is in the file):
    "release" without pre-release tags (a policy without prerelease: true), "prerelease" with
    includePrerelease (prerelease: true)."""
    want = NPM["ranges"][text]
    if text in REFUSED:
        assert want["valid"]
        with pytest.raises(PolicySyntaxError, match=REFUSED[text]):
            parse_range(text)
        return
    if not want["valid"]:
        with pytest.raises(PolicySyntaxError):
            parse_range(text)
        return
    for key, prerelease in (("release", False), ("prerelease", True)):
        policy = TagPolicy("semver", text, 50, prerelease)
        got = "".join("1" if policy.admits(tag) else "0" for tag in NPM["tags"])
        differ = [tag for tag, a, b in zip(NPM["tags"], got, want[key]) if a != b]
        assert not differ, f"{text!r} ({key}): npm and the policy disagree on {differ}"


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
    (r'nginx:{regex: "(\w+)-\1"}', "back-references are not supported"),
    (r"nginx:{semver: ~1, exclude: (?!rc)}", "look-around is not supported"),
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
