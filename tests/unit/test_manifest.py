import hashlib
import itertools

import pytest

from shared.core import manifest as manifest_module
from shared.core.manifest import AllowList, Entry, parse_manifest, registry_allowed
from shared.core.reference import normalise_registry
from shared.errors import ConfigError, ManifestError, Problem

SHA256 = "sha256:" + "ab" * 32
OTHER_SHA256 = "sha256:" + "cd" * 32

# The example images.txt from the seed article, with the leading '#' removed.
SEED_LINES = [
    "registry.k8s.io/ingress-nginx/controller:v1.11.1 => ingress-nginx/controller",
    "registry.k8s.io/ingress-nginx/kube-webhook-certgen:v1.4.1 => ingress-nginx/kube-webhook-certgen",
    "quay.io/jetstack/cert-manager-controller:v1.15.2 => jetstack/cert-manager-controller",
    "quay.io/jetstack/cert-manager-webhook:v1.15.2 => jetstack/cert-manager-webhook",
    "quay.io/jetstack/cert-manager-cainjector:v1.15.2 => jetstack/cert-manager-cainjector",
    "docker.io/cloudflare/cloudflared:latest => cloudflare/cloudflared",
    "mcr.microsoft.com/azuredocs/aks-helloworld:v1 => azuredocs/aks-helloworld",
]
SEED_EXPECTED = [
    ("registry.k8s.io/ingress-nginx/controller:v1.11.1", "ingress-nginx/controller:v1.11.1"),
    ("registry.k8s.io/ingress-nginx/kube-webhook-certgen:v1.4.1",
     "ingress-nginx/kube-webhook-certgen:v1.4.1"),
    ("quay.io/jetstack/cert-manager-controller:v1.15.2", "jetstack/cert-manager-controller:v1.15.2"),
    ("quay.io/jetstack/cert-manager-webhook:v1.15.2", "jetstack/cert-manager-webhook:v1.15.2"),
    ("quay.io/jetstack/cert-manager-cainjector:v1.15.2", "jetstack/cert-manager-cainjector:v1.15.2"),
    ("docker.io/cloudflare/cloudflared:latest", "cloudflare/cloudflared:latest"),
    ("mcr.microsoft.com/azuredocs/aks-helloworld:v1", "azuredocs/aks-helloworld:v1"),
]


def one_entry(line: str) -> Entry:
    result = parse_manifest(line)
    assert result.errors == []
    assert len(result.entries) == 1
    return result.entries[0]


def only_error(text, **kwargs) -> Problem:
    result = parse_manifest(text, **kwargs)
    assert len(result.errors) == 1, result.errors
    return result.errors[0]


# --- the seed's own examples --------------------------------------------------------------

@pytest.mark.parametrize("line, expected", list(zip(SEED_LINES, SEED_EXPECTED)))
def test_seed_example_line(line, expected):
    entry = one_entry(line)
    assert (str(entry.source), entry.target) == expected


def test_seed_example_as_a_whole_file():
    result = parse_manifest("\n".join(SEED_LINES) + "\n")
    assert result.ok
    assert [(str(e.source), e.target) for e in result] == SEED_EXPECTED
    assert [e.line for e in result] == list(range(1, 8))


def test_seed_example_as_published_is_all_comments():
    result = parse_manifest("\n".join("#" + line for line in SEED_LINES))
    assert result.ok and result.entries == []


# --- format rules ---------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "",
    "\n\n",
    "   \n\t\n",
    "# a comment",
    "   # an indented comment",
    "#registry.k8s.io/ingress-nginx/controller:v1.11.1 => ingress-nginx/controller",
])
def test_blank_and_comment_lines_are_ignored(text):
    result = parse_manifest(text)
    assert result.ok and result.entries == []


@pytest.mark.parametrize("line", [
    "quay.io/a/b:1 => x/y",
    "quay.io/a/b:1=>x/y",
    "   quay.io/a/b:1   =>   x/y   ",
    "\tquay.io/a/b:1\t=>\tx/y\t",
    "quay.io/a/b:1 => x/y\r",
    "quay.io/a/b:1 => x/y  # reviewed in PR 42",
    "quay.io/a/b:1 => x/y\t# tab before the comment",
    "quay.io/a/b:1 => x/y # comment with => and # inside",
])
def test_spacing_and_trailing_comments(line):
    entry = one_entry(line)
    assert (str(entry.source), entry.target) == ("quay.io/a/b:1", "x/y:1")


def test_trailing_comment_needs_whitespace_before_hash():
    error = only_error("quay.io/a/b:1#note => x/y")
    assert "invalid tag" in error.message


def test_destination_tag_defaults_to_source_tag():
    assert one_entry("quay.io/a/b:v2 => x/y").target_tag == "v2"


def test_destination_tag_defaults_to_latest_without_tag_or_digest():
    entry = one_entry("quay.io/a/b => x/y")
    assert entry.source.tag is None
    assert entry.target_tag == "latest"
    assert entry.target == "x/y:latest"


def test_digest_only_source_is_an_untagged_import():
    entry = one_entry(f"quay.io/a/b@{SHA256} => x/y")
    assert entry.source.tag is None
    assert entry.source.digest == SHA256
    assert entry.target_tag is None
    assert entry.target == f"x/y@{SHA256}"


def test_tag_and_digest_source_keeps_tag_and_pins_digest():
    entry = one_entry(f"quay.io/a/b:v1@{SHA256} => x/y")
    assert entry.target_tag == "v1"
    assert entry.source.digest == SHA256
    assert entry.target == "x/y:v1"


def test_explicit_destination_tag():
    entry = one_entry("nginx:1.27 => team/nginx:1.27-approved")
    assert entry.target_repository == "team/nginx"
    assert entry.target_tag == "1.27-approved"


def test_explicit_destination_tag_on_digest_only_source():
    entry = one_entry(f"quay.io/a/b@{SHA256} => x/y:pinned")
    assert (entry.target, entry.source.digest) == ("x/y:pinned", SHA256)


@pytest.mark.parametrize("line, target", [
    ("quay.io/jetstack/cert-manager-controller:v1.15.2", "jetstack/cert-manager-controller:v1.15.2"),
    ("nginx:1.27", "library/nginx:1.27"),  # keeps library/, as az acr import does
    ("docker.io/library/nginx", "library/nginx:latest"),
    ("bitnami/redis:7.2", "bitnami/redis:7.2"),
    ("host:5000/repo", "repo:latest"),
    (f"quay.io/a/b@{SHA256}", f"a/b@{SHA256}"),
])
def test_omitted_destination_is_source_path_without_registry(line, target):
    assert one_entry(line).target == target


def test_seed_bug_registry_port_is_not_a_tag():
    # sync-script.sh would have imported into "repo:5000/repo"
    entry = one_entry("host:5000/repo => repo")
    assert entry.source.registry == "host:5000"
    assert entry.target == "repo:latest"


def test_seed_bug_digest_is_not_a_tag():
    # sync-script.sh would have used the digest hex as the destination tag
    entry = one_entry(f"repo@{SHA256} => repo")
    assert entry.target_tag is None
    assert entry.source.digest == SHA256


def test_entries_are_in_file_order_with_line_numbers():
    text = "# header\n\nquay.io/c:1 => c\nquay.io/a:1 => a\n\n# mid\nquay.io/b:1 => b\n"
    result = parse_manifest(text)
    assert [(e.line, e.target_repository) for e in result] == [(3, "c"), (4, "a"), (7, "b")]
    assert [e.line for e in result.entries] == [e.line for e in result]
    assert len(result) == 3


def test_same_source_may_go_to_two_destinations():
    result = parse_manifest("nginx:1.27 => a/nginx\nnginx:1.27 => b/nginx\n")
    assert result.ok and [e.target for e in result] == ["a/nginx:1.27", "b/nginx:1.27"]


def test_untagged_imports_of_different_digests_into_one_repository():
    result = parse_manifest(f"quay.io/a@{SHA256} => a\nquay.io/a@{OTHER_SHA256} => a\n")
    assert result.ok and len(result.entries) == 2


def test_crlf_file():
    result = parse_manifest("quay.io/a:1 => a\r\n# c\r\nquay.io/b:2 => b\r\n")
    assert [(e.line, e.target) for e in result] == [(1, "a:1"), (3, "b:2")]


def test_to_dict_shape():
    result = parse_manifest(f"nginx:1.27\nquay.io/a/b@{SHA256} => x/y\n")
    assert result.to_dict() == {
        "entries": [
            {"line": 1, "source": "docker.io/library/nginx:1.27", "registry": "docker.io",
             "repository": "library/nginx", "tag": "1.27", "digest": None,
             "target_repository": "library/nginx", "target_tag": "1.27"},
            {"line": 2, "source": f"quay.io/a/b@{SHA256}", "registry": "quay.io",
             "repository": "a/b", "tag": None, "digest": SHA256,
             "target_repository": "x/y", "target_tag": None},
        ],
        "policies": [],
        "errors": [],
        "warnings": [],
    }


def test_to_dict_errors_shape():
    result = parse_manifest("ok.io/a:1 => a\nBAD => a\n")
    assert result.to_dict()["entries"] == []
    [error] = result.to_dict()["errors"]
    assert set(error) == {"line", "message"}
    assert error["line"] == 2
    assert error["message"].startswith("line 2: ")


def test_content_hash_is_sha256_of_raw_text():
    text = "nginx:1.27 => library/nginx\n"
    expected = hashlib.sha256(text.encode()).hexdigest()
    assert parse_manifest(text).content_hash == expected
    assert parse_manifest(text.encode()).content_hash == expected


def test_content_hash_is_set_even_when_invalid():
    text = "NOPE\n"
    assert parse_manifest(text).content_hash == hashlib.sha256(text.encode()).hexdigest()


def test_content_hash_covers_the_bom():
    raw = b"\xef\xbb\xbfnginx\n"
    result = parse_manifest(raw)
    assert result.ok
    assert result.content_hash == hashlib.sha256(raw).hexdigest()


@pytest.mark.parametrize("data", [b"\xef\xbb\xbfnginx:1\n", "\ufeffnginx:1\n"])
def test_leading_bom_is_allowed(data):
    assert [e.target for e in parse_manifest(data)] == ["library/nginx:1"]


def test_bytes_and_str_give_the_same_entries():
    text = "\n".join(SEED_LINES)
    assert parse_manifest(text).entries == parse_manifest(text.encode()).entries


def test_non_str_input_is_a_type_error():
    with pytest.raises(TypeError):
        parse_manifest(["nginx"])  # type: ignore[arg-type]


# --- validation errors: one per case, each with its line number -----------------------------

@pytest.mark.parametrize("line, fragment", [
    ("nginx 1.27 => x", "source 'nginx 1.27' contains whitespace"),
    ("nginx => x y", "destination 'x y' contains whitespace"),
    ("quay.io//a:1 => x", "invalid source image 'quay.io//a:1'"),
    ("quay.io/a:1:2 => x", "more than one ':'"),
    ("quay.io/Jetstack/app:1 => x", "repository must be lowercase"),
    ("quay.io/a:1 => Team/App", "repository must be lowercase"),
    ("quay.io/a:" + "t" * 129 + " => x", "the limit is 128"),
    ("quay.io/a:1 => x:" + "t" * 129, "the limit is 128"),
    ("quay.io/a:1 => x => y", "more than one '=>' (2 found)"),
    ("=> x/y", "missing source image before '=>'"),
    ("   =>   ", "missing source image"),
    ("quay.io/a:1 => myacr.azurecr.io/a", "must not include a registry host ('myacr.azurecr.io')"),
    ("quay.io/a:1 => localhost:5000/a", "must not include a registry host"),
    (f"quay.io/a:1 => a@{SHA256}", "must not include a digest"),
    ("quay.io/a:1 => a:1:2", "more than one ':'"),
    ("quay.io/a:1 => a:.bad", "invalid tag"),
    ("repo@sha256:abc => x", "64 hex characters"),
    ("repo@md5:" + "a" * 32 + " => x", "unsupported digest algorithm"),
])
def test_invalid_line(line, fragment):
    result = parse_manifest("# first line is a comment\n" + line + "\n")
    assert result.entries == []
    assert not result.ok
    [error] = result.errors
    assert error.line == 2
    assert fragment in error.message
    assert str(error).startswith("line 2: ")


def test_conflicting_sources_for_one_destination_tag():
    text = "quay.io/a/nginx:1.27 => web/nginx\n\nquay.io/b/nginx:1.27 => web/nginx\n"
    error = only_error(text)
    assert error.line == 3
    assert "web/nginx:1.27" in error.message
    assert "line 1" in error.message
    assert "quay.io/a/nginx:1.27" in error.message


def test_conflict_via_explicit_destination_tag():
    error = only_error("quay.io/a:1 => x:stable\nquay.io/b:2 => x:stable\n")
    assert error.line == 2 and "already written by line 1" in error.message


def test_conflict_between_different_pinned_digests_for_one_tag():
    error = only_error(f"quay.io/a:1@{SHA256} => a\nquay.io/a:1@{OTHER_SHA256} => a\n")
    assert error.line == 2 and "line 1" in error.message


def test_identical_duplicate_line_is_an_error():
    error = only_error("quay.io/a:1 => a\nquay.io/a:1 => a\n")
    assert error.line == 2
    assert "duplicate of line 1" in error.message


def test_duplicate_after_normalisation_is_an_error():
    error = only_error("nginx\ndocker.io/library/nginx:latest => library/nginx\n")
    assert error.line == 2 and "duplicate of line 1" in error.message


def test_duplicate_untagged_import():
    error = only_error(f"quay.io/a@{SHA256} => a\nquay.io/a@{SHA256} => a\n")
    assert error.line == 2 and "duplicate of line 1" in error.message


def test_all_errors_are_reported_and_no_entries_are_returned():
    text = "\n".join([
        "quay.io/good:1 => good",     # 1
        "BAD",                         # 2
        "quay.io/a:1 => x => y",       # 3
        "# comment",                   # 4
        "=> nothing",                  # 5
        "quay.io/good:1 => good",      # 6 duplicate of 1
        "quay.io/fine:2 => fine",      # 7
    ])
    result = parse_manifest(text)
    assert [p.line for p in result.errors] == [2, 3, 5, 6]
    assert result.entries == []
    assert not result.ok


def test_every_error_message_carries_its_line_number():
    bad_lines = [
        "UPPER:1 => x",
        "quay.io/a:" + "t" * 200,
        "a => b => c",
        "=> b",
        "quay.io/a:1 => reg.io/x",
        f"quay.io/a:1 => x@{SHA256}",
        "quay.io/dup:1",
        "quay.io/dup:1",
        "quay.io/one:1 => same",
        "quay.io/two:1 => same:1",
        "evil.example.net/x:1",
    ]
    text = "\n".join(["# header", ""] + bad_lines)
    result = parse_manifest(text, allowed_registries=["quay.io"])
    assert [p.line for p in result.errors] == [3, 4, 5, 6, 7, 8, 10, 12, 13]
    for problem, rendered in zip(result.errors, result.to_dict()["errors"]):
        assert f"line {problem.line}" in str(problem)
        assert rendered["line"] == problem.line
        assert rendered["message"].startswith(f"line {problem.line}: ")


def test_raise_for_errors():
    result = parse_manifest("A\nB\n")
    with pytest.raises(ManifestError) as info:
        result.raise_for_errors()
    assert [p.line for p in info.value.problems] == [1, 2]
    assert info.value.code == "InvalidManifest"
    parse_manifest("nginx\n").raise_for_errors()  # no problems, no exception


# --- allowed registries ----------------------------------------------------------------------

@pytest.mark.parametrize("source, allowed", [
    ("quay.io/a:1", ["quay.io"]),
    ("nginx:1", ["docker.io"]),
    ("nginx:1", ["index.docker.io"]),
    ("registry-1.docker.io/library/nginx:1", ["docker.io"]),
    ("Quay.IO/a:1", ["quay.io"]),
    ("quay.io/a:1", ["QUAY.io"]),
    ("host:5000/a", ["host:5000"]),
    ("myacr.azurecr.io/a:1", ["*.azurecr.io"]),
    ("eu.reg.example.com:443/a", ["*.reg.example.com:443"]),
    ("quay.io/a:1", {"mcr.microsoft.com", "quay.io"}),
])
def test_allowed_registry(source, allowed):
    assert parse_manifest(source, allowed_registries=allowed).ok


@pytest.mark.parametrize("source, allowed", [
    ("quay.io/a:1", ["mcr.microsoft.com"]),
    ("quay.io/a:1", []),
    ("host:5000/a", ["host"]),
    ("host/a", ["host:5000"]),
    ("azurecr.io/a", ["*.azurecr.io"]),
    ("a.b.azurecr.io/a", ["*.azurecr.io"]),
    ("evilazurecr.io/a", ["*.azurecr.io"]),
    ("x.example.com:5000/a", ["*.example.com"]),
    ("nginx", ["quay.io"]),
])
def test_registry_not_allowed(source, allowed):
    error = only_error("\n" + source, allowed_registries=allowed)
    assert error.line == 2
    assert "is not on the allowed list" in error.message


def test_registry_allowed_helper():
    assert registry_allowed("docker.io", ["registry.hub.docker.com"])
    assert not registry_allowed("example.com", ["*.example.com"])


def _allowed_one_entry_at_a_time(registry: str, entries: list[str]) -> bool:
    """The allow-list's meaning, written as the plain loop over its entries (the way it was checked
    before it became two sets): the reference the sets are compared with."""
    registry = normalise_registry(registry)
    for raw in entries:
        text = raw.strip()
        if text.startswith("*."):
            first, dot, rest = registry.partition(".")
            if dot and first and rest == text[2:].lower():
                return True
        elif registry == normalise_registry(text):
            return True
    return False


REGISTRIES = ["quay.io", "QUAY.IO", "quay.io:443", "docker.io", "index.docker.io", "registry-1.docker.io",
              "registry.hub.docker.com", "example.com", "a.example.com", "A.Example.Com", "a.b.example.com",
              "a.example.com:5000", "example.com:5000", "evilexample.com", "x.evilexample.com", "localhost:5000",
              "localhost", "[::1]:5000", "10.0.0.1:5000", "a.10.0.0.1", "myacr.azurecr.io", "azurecr.io"]
ALLOW_ENTRIES = ["quay.io", "QUAY.io", "docker.io", "registry.hub.docker.com", "*.example.com", "*.EXAMPLE.com:5000",
                 "localhost:5000", "[::1]:5000", "*.0.0.1", "*.azurecr.io", " example.com "]


@pytest.mark.parametrize("size", [0, 1, 2, 3])
def test_the_allow_list_sets_answer_as_the_entry_by_entry_loop(size):
    for entries in itertools.combinations(ALLOW_ENTRIES, size):
        allow = AllowList.parse(list(entries))
        for registry in REGISTRIES:
            assert allow.allows(registry) == _allowed_one_entry_at_a_time(registry, list(entries)), (registry, entries)
            assert registry_allowed(registry, list(entries)) == allow.allows(registry)


def test_the_allow_list_is_normalised_once_per_manifest_not_once_per_entry(monkeypatch):
    # 5,000 entries x 5,000 allow-list entries took 51.7 s when every entry walked the whole list;
    # the time is a bench figure (python -m bench policy), the work is counted here
    calls = []
    real = manifest_module._normalise_pattern
    monkeypatch.setattr(manifest_module, "_normalise_pattern", lambda p: calls.append(p) or real(p))
    allowed = [f"r{i}.example.org" for i in range(400)] + ["*.mirror.example.net", "quay.io"]
    text = "".join(f"quay.io/team/app{i}:1\n" for i in range(300)) + "a.mirror.example.net/x:1\nghcr.io/x/y:1\n"
    result = parse_manifest(text, allowed_registries=allowed)
    assert [e.line for e in result.errors] == [302]  # ghcr.io: the only one not allowed
    assert sorted(calls) == sorted(allowed)  # each allow-list entry once, none per manifest entry


@pytest.mark.parametrize("allowed", [[""], ["bad host"], ["*."], ["host:port"], "quay.io"])
def test_malformed_allow_list_is_a_config_error(allowed):
    with pytest.raises(ConfigError):
        parse_manifest("nginx", allowed_registries=allowed)


# --- size and encoding limits ---------------------------------------------------------------

def test_over_max_bytes_is_one_error_without_a_line():
    text = "nginx:1.27\n" * 10
    result = parse_manifest(text, max_bytes=len(text) - 1)
    assert result.entries == []
    [error] = result.errors
    assert error.line is None
    assert f"{len(text)} bytes" in error.message and f"limit is {len(text) - 1}" in error.message
    assert result.to_dict()["errors"] == [{"line": None, "message": error.message}]


def test_exactly_max_bytes_is_fine():
    text = "nginx:1.27\n"
    assert parse_manifest(text, max_bytes=len(text)).ok


def test_max_bytes_counts_utf8_bytes_not_characters():
    text = "# \u00e9\u00e9\u00e9\nnginx\n"  # 12 characters, 15 bytes
    assert not parse_manifest(text, max_bytes=14).ok
    assert parse_manifest(text, max_bytes=15).ok


def test_over_max_entries():
    lines = [f"quay.io/img{i}:1" for i in range(5)]
    text = "# header\n" + "\n# comment\n".join(lines)
    error = only_error(text, max_entries=3)
    assert error.line == 8  # the 4th entry; comments and blank lines do not count
    assert "more than 3 entries" in error.message


def test_exactly_max_entries_is_fine():
    assert parse_manifest("quay.io/a:1\nquay.io/b:1\n", max_entries=2).ok


def test_non_utf8_bytes_report_their_line():
    data = b"quay.io/a:1\n# caf\xe9\nquay.io/b:1\n"
    error = only_error(data)
    assert error.line == 2
    assert "not valid UTF-8" in error.message and "0xe9" in error.message


def test_non_utf8_bytes_do_not_stop_validation_of_other_lines():
    data = b"\xff\nBAD\nquay.io/ok:1\n\xc3\n"
    result = parse_manifest(data)
    assert [p.line for p in result.errors] == [1, 2, 4]
    assert result.entries == []


def test_utf8_inside_a_line_is_decoded_and_then_judged_by_the_grammar():
    error = only_error("quay.io/caf\u00e9:1".encode())
    assert error.line == 1 and "invalid source image" in error.message


def test_no_allow_list_means_no_restriction():
    assert parse_manifest("evil.example.net/x:1", allowed_registries=None).ok
