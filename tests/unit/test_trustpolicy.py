"""The trust policy file (shared.core.trust): syntax, every problem with its line, scope choice."""
import json
import textwrap
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa

from shared.core.trust import (
    MAX_ERRORS,
    MAX_SCOPES,
    TrustPolicyResult,
    format_subject,
    parse_trust_policy,
    parse_trusted_identity,
)
from shared.errors import TrustPolicyError
from tests.fixture_paths import FIXTURES
from tests.unit import yaml_bombs
from tests.unit.notary_signer import NOW, certificate, make_chain, name, private_key

POLICY = FIXTURES / "trust" / "policy.yaml"
# the ublue-os cosign.pub key id: `openssl pkey -pubin -in cosign.pub -outform DER | sha256sum`
UBLUE_KEY_ID = "sha256:efaae036a5afefcfe2c64686db0311ab64e57ae794be634d80c25286695336a6"
KEYLESS = {"kind": "keyless", "identity": "krel-trust@k8s-releng-prod.iam.gserviceaccount.com",
           "issuer": "https://accounts.google.com"}


def public_pem(key) -> str:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


EC_PEM = public_pem(private_key("ec", 256))


def parse(text, **kwargs) -> TrustPolicyResult:
    return parse_trust_policy(textwrap.dedent(text).lstrip("\n") if isinstance(text, str) else text, "test.yaml",
                              **kwargs)


def problems(text, **kwargs):
    result = parse(text, **kwargs)
    assert not result.ok and result.policy is None
    return result.errors


def only_problem(text):
    found = problems(text)
    assert len(found) == 1, [str(p) for p in found]
    return found[0]


def policy_of(*scopes) -> str:
    return json.dumps({"scopes": list(scopes)}, indent=2)


def scope(name="s", match="quay.io/team/**", signatures=None, **extra) -> dict:
    return {"name": name, "match": match, "signatures": signatures if signatures is not None else [KEYLESS],
            **extra}


@pytest.fixture(scope="module")
def example():
    result = parse_trust_policy(POLICY.read_bytes(), "policy.yaml", now=NOW)
    assert result.ok, [str(p) for p in result.errors]
    return result


# --- the example policy ------------------------------------------------------------------------

def test_example_policy(example):
    policy = example.policy
    assert example.warnings == []
    assert [(s.name, s.line, s.mode, s.require) for s in policy] == [
        ("kubernetes", 8, "enforce", "any"), ("kubernetes-legacy", 18, "skip", "any"),
        ("chainguard", 24, "audit", "any"), ("ublue", 34, "enforce", "any"), ("acme", 47, "enforce", "all"),
        ("docker-official", 83, "skip", "any")]
    kubernetes = policy.get("kubernetes").signatures[0]
    assert (kubernetes.kind, kubernetes.identity, kubernetes.issuer) == (
        "keyless", "krel-trust@k8s-releng-prod.iam.gserviceaccount.com", "https://accounts.google.com")
    assert policy.get("ublue").signatures[0].key_id == UBLUE_KEY_ID
    acme = policy.get("acme")
    assert acme.trusted_root == "acme-sigstore" and [r.kind for r in acme.signatures] == ["notation", "keyless"]
    notation = acme.signatures[0]
    assert [format_subject(c.subject) for c in notation.certificates] == [
        "C=US, ST=WA, L=Seattle, O=Notary, CN=alpine"]
    assert [i.text for i in notation.identities] == ["x509.subject: C=US, ST=WA, L=Seattle, O=Notary"]
    assert policy.content_hash.startswith("sha256:") and len(policy.content_hash) == 71
    json.dumps(example.to_dict())  # records and --json output


@pytest.mark.parametrize("registry, repository, expected", [
    ("registry.k8s.io", "pause", "kubernetes"),
    ("registry.k8s.io", "ingress-nginx/controller", "kubernetes"),
    ("REGISTRY.K8S.IO", "kube-apiserver", "kubernetes"),  # hosts compare lowercased
    ("registry.k8s.io", "defaultbackend-amd64", "kubernetes-legacy"),  # exact beats the glob before it
    ("registry.k8s.io", "defaultbackend-amd64/x", "kubernetes"),
    ("cgr.dev", "chainguard/static", "chainguard"),
    ("cgr.dev", "chainguard/sub/static", None),  # * stays inside one segment
    ("ghcr.io", "ublue-os/bluefin", "ublue"),
    ("registry.acme-rockets.io", "web", "acme"),
    ("registry.acme-rockets.io", "team/web/api", "acme"),
    ("eu.acme-rockets.io", "apps/web", "acme"),
    ("eu.acme-rockets.io", "tools/web", None),
    ("docker.io", "nginx", "docker-official"),  # a short name is library/nginx
    ("index.docker.io", "library/nginx", "docker-official"),
    ("docker.io", "bitnami/nginx", None),
    ("quay.io", "jetstack/cert-manager-controller", None),
])
def test_scope_for(example, registry, repository, expected):
    found = example.policy.scope_for(registry, repository)
    assert (found.name if found else None) == expected


def test_the_same_policy_as_json(example):
    import yaml
    as_json = json.dumps(yaml.safe_load(POLICY.read_text()))
    again = parse_trust_policy(as_json, "policy.json")
    assert again.ok
    strip = [{k: v for k, v in s.to_dict().items() if k != "line"} for s in again.policy]
    for s in strip:
        for r in s["signatures"]:
            r.pop("line")
    expected = [{k: v for k, v in s.to_dict().items() if k != "line"} for s in example.policy]
    for s in expected:
        for r in s["signatures"]:
            r.pop("line")
    assert strip == expected


def test_empty_scope_list_and_bom():
    result = parse(b"\xef\xbb\xbfscopes: []\n")
    assert result.ok and len(result.policy) == 0 and result.policy.scope_for("docker.io", "library/x") is None


# --- globs and which scope wins ----------------------------------------------------------------

@pytest.mark.parametrize("pattern, path, matches", [
    ("**", "docker.io/library/nginx", True),
    ("quay.io/**", "quay.io/a", True),
    ("quay.io/**", "quay.io/a/b/c", True),
    ("quay.io/**", "quay.ioo/a", False),
    ("quay.io/**/controller", "quay.io/controller", True),  # ** is zero or more segments
    ("quay.io/**/controller", "quay.io/a/b/controller", True),
    ("quay.io/**/controller", "quay.io/a/b/controller-x", False),
    ("**/nginx", "docker.io/library/nginx", True),
    ("**/nginx", "docker.io/library/nginx-x", False),
    ("quay.io/jetstack/*", "quay.io/jetstack/cert-manager", True),
    ("quay.io/jetstack/*", "quay.io/jetstack/a/b", False),
    ("quay.io/jetstack/cert-manager-*", "quay.io/jetstack/cert-manager-webhook", True),
    ("quay.io/jetstack/cert-manager-?", "quay.io/jetstack/cert-manager-x", True),
    ("quay.io/jetstack/cert-manager-?", "quay.io/jetstack/cert-manager-xy", False),
    ("*.gcr.io/**", "eu.gcr.io/project/app", True),
    ("*.gcr.io/**", "gcr.io/project/app", False),
    ("myreg.example.com:5000/team/*", "myreg.example.com:5000/team/app", True),
    ("localhost/app", "localhost/app", True),
    ("quay.io/a.b/c", "quay.io/aXb/c", False),  # dots are literal
])
def test_glob_semantics(pattern, path, matches):
    registry, _, repository = path.partition("/")
    result = parse(policy_of(scope(match=pattern)))
    assert result.ok, [str(p) for p in result.errors]
    assert (result.policy.scope_for(registry, repository) is not None) == matches


@pytest.mark.parametrize("patterns, path, winner", [
    (["quay.io/**", "quay.io/jetstack/cert-manager-controller"], "quay.io/jetstack/cert-manager-controller", 1),
    (["quay.io/jetstack/cert-manager-controller", "quay.io/**"], "quay.io/jetstack/cert-manager-controller", 0),
    (["quay.io/jetstack/*", "quay.io/jetstack/cert-manager-*"], "quay.io/jetstack/cert-manager-webhook", 1),
    (["**", "quay.io/**"], "quay.io/a", 1),
    (["quay.io/*/x", "quay.io/**/x"], "quay.io/a/x", 0),  # same literals: fewer wildcards
    (["quay.io/**/x", "quay.io/*/x"], "quay.io/a/x", 1),
    (["quay.io/a?/x", "quay.io/?b/x"], "quay.io/ab/x", 0),  # a full tie: the first in the file
    (["quay.io/?b/x", "quay.io/a?/x"], "quay.io/ab/x", 0),
])
def test_most_specific_scope_wins(patterns, path, winner):
    text = policy_of(*[scope(f"s{i}", p) for i, p in enumerate(patterns)])
    registry, _, repository = path.partition("/")
    assert parse(text).policy.scope_for(registry, repository).name == f"s{winner}"


_SEGMENTS = ["a", "b", "ab", "*", "a*", "?", "**"]


@settings(max_examples=200, deadline=None)
@given(patterns=st.lists(st.tuples(st.sampled_from(["quay.io", "ghcr.io", "*.io", "**"]),
                                   st.lists(st.sampled_from(_SEGMENTS), min_size=1, max_size=3)),
                         min_size=1, max_size=8),
       paths=st.lists(st.tuples(st.sampled_from(["quay.io", "ghcr.io", "x.io"]),
                                st.lists(st.sampled_from(["a", "b", "ab", "c"]), min_size=1, max_size=4)),
                      min_size=1, max_size=10))
def test_scope_for_is_the_documented_choice(patterns, paths):
    """The indexed lookup picks what trying every pattern in the documented order picks."""
    texts = []
    for host, segments in patterns:
        text = "**" if host == "**" else "/".join([host, *segments])
        if text not in texts and "**/**" not in text:
            texts.append(text)
    result = parse(policy_of(*[scope(f"s{i}", t) for i, t in enumerate(texts)]))
    assert result.ok, [str(p) for p in result.errors]
    policy = result.policy
    for host, segments in paths:
        path = "/".join([host, *segments])
        ranked = [((p.specificity, -i), s) for i, s in enumerate(policy) for p in s.patterns if p.matches(path)]
        expected = max(ranked, key=lambda r: r[0])[1] if ranked else None
        assert policy.scope_for(host, "/".join(segments)) is expected, path


def test_within_a_scope_any_pattern_counts():
    text = policy_of(scope("broad", ["quay.io/a/*", "quay.io/b/exact"]), scope("mid", "quay.io/b/*"))
    policy = parse(text).policy
    assert policy.scope_for("quay.io", "b/exact").name == "broad"
    assert policy.scope_for("quay.io", "b/other").name == "mid"


# --- fingerprints --------------------------------------------------------------------------------

def fingerprint(**changes) -> str:
    base = {"name": "s", "match": "quay.io/team/**", "signatures": [
        KEYLESS, {"kind": "cosign-key", "key": EC_PEM}]}
    base.update(changes)
    result = parse(policy_of(base))
    assert result.ok, [str(p) for p in result.errors]
    return result.policy.scopes[0].fingerprint()


def test_fingerprint_is_stable_and_about_the_requirements():
    first = fingerprint()
    assert first == fingerprint() and first.startswith("sha256:") and len(first) == 71
    # what a verdict does not depend on
    assert fingerprint(name="renamed", match=["ghcr.io/x/*"], mode="audit") == first
    assert fingerprint(signatures=[{"kind": "cosign-key", "key": EC_PEM}, KEYLESS]) == first
    assert fingerprint(require="any") == first
    # what it does
    changed = {fingerprint(require="all"), fingerprint(trusted_root="corp"),
               fingerprint(signatures=[KEYLESS]),
               fingerprint(signatures=[{**KEYLESS, "identity": "someone@example.com"}]),
               fingerprint(signatures=[{"kind": "keyless", "identity_regex": "krel-trust@.+",
                                        "issuer": "https://accounts.google.com"}]),
               fingerprint(signatures=[{"kind": "cosign-key", "key": public_pem(private_key("ec", 256, 1))}])}
    assert len(changed) == 6 and first not in changed


def test_notation_fingerprint_follows_the_trust_store_and_identities():
    one, two = make_chain(n=0).root_pem(), make_chain(n=1).root_pem()

    def notation(store, identities):
        return fingerprint(signatures=[{"kind": "notation", "trust_store": store, "trusted_identities": identities}])

    acme = ["x509.subject: C=US, ST=WA, O=acme"]
    assert notation([one, two], acme) == notation([two, one], acme) == notation(one + two, acme)
    assert notation([one], acme) != notation([two], acme)
    assert notation([one], acme) != notation([one], ["*"])
    assert notation([one], ["x509.subject: C=US, ST=WA, O=acme"]) == notation([one], ["x509.subject: O=acme, ST=WA, "
                                                                                       "C=US"])


# --- keyless patterns ----------------------------------------------------------------------------

def test_keyless_exact_and_anchored_patterns():
    text = policy_of(scope(signatures=[
        {"kind": "keyless", "identity_regex": r"https://github\.com/acme/[a-z]+/\.github/workflows/release\.yml@.+",
         "issuer": "https://token.actions.githubusercontent.com"},
        {"kind": "keyless", "identity": "ops@acme.example", "issuer_regex": r"https://(login|sts)\.acme\.example"}]))
    regex, exact = parse(text).policy.scopes[0].signatures
    assert regex.matches_identity("https://github.com/acme/web/.github/workflows/release.yml@refs/tags/v1")
    assert not regex.matches_identity("https://github.com/acme/web/.github/workflows/release.yml")
    assert not regex.matches_identity("xhttps://github.com/acme/web/.github/workflows/release.yml@v1")  # anchored
    assert regex.matches_issuer("https://token.actions.githubusercontent.com")
    assert not regex.matches_issuer("https://token.actions.githubusercontent.com.evil")
    assert exact.matches_identity("ops@acme.example") and not exact.matches_identity("ops@acme.example.org")
    assert exact.matches_issuer("https://sts.acme.example") and not exact.matches_issuer("https://sts.acme.example/x")


def test_pattern_matching_any_identity_is_a_warning():
    text = policy_of(scope(signatures=[{"kind": "keyless", "identity_regex": ".*",
                                        "issuer": "https://token.actions.githubusercontent.com"}]))
    result = parse(text)
    assert result.ok
    assert [(p.field, "matches any certificate identity" in p.message) for p in result.warnings] == [
        ("scopes[0].signatures[0].identity_regex", True)]


# --- trusted identities --------------------------------------------------------------------------

def test_trusted_identity_syntax():
    identity = parse_trusted_identity(r"x509.subject: C=US, ST=WA, O=Acme\, Inc., OU=Build\;Sign, CN=\ padded\ ")
    assert identity.attributes == (("C", "US"), ("ST", "WA"), ("O", "Acme, Inc."), ("OU", "Build;Sign"),
                                   ("CN", " padded "))
    assert parse_trusted_identity("x509.subject:C=US,ST=WA,O=a,2.5.4.9999=1").attributes[-1] == ("2.5.4.9999", "1")
    assert parse_trusted_identity(r"x509.subject: c=US, st=WA, o=a\2C b").attributes == (
        ("C", "US"), ("ST", "WA"), ("O", "a, b"))
    assert parse_trusted_identity("x509.subject: 2.5.4.6=US, ST=WA, O=a, 2.5.4.3=b").attributes == (
        ("C", "US"), ("ST", "WA"), ("O", "a"), ("CN", "b"))  # dotted OIDs of named types read as the names


@pytest.mark.parametrize("text, words", [
    ("C=US, ST=WA, O=a", "'x509.subject: C=.., ST=.., O=..' or '*'"),
    ("x509.subject:", "is empty"),
    ("x509.subject: C=US, O=a", "missing ST"),
    ("x509.subject: C=US, ST=WA, O=a, EMAIL=x@y", "unknown attribute type 'EMAIL'"),
    ("x509.subject: C=US, ST=WA, O=a, O=b", "O is given twice"),
    ("x509.subject: C=US, ST=WA, O=a+OU=b", "multi-valued RDNs"),
    ("x509.subject: C=US, ST=WA, O=", "O= has no value"),
    ("x509.subject: C=US, ST=WA, O", "is not TYPE=value"),
    (r"x509.subject: C=US, ST=WA, O=a\q", r"unknown escape \q"),
])
def test_trusted_identity_errors(text, words):
    with pytest.raises(ValueError) as info:
        parse_trusted_identity(text)
    assert words in str(info.value)


def test_identity_matching_against_a_certificate():
    chain = make_chain(leaf_name=x509.Name([
        x509.NameAttribute(x509.oid.NameOID.COUNTRY_NAME, "US"),
        x509.NameAttribute(x509.oid.NameOID.STATE_OR_PROVINCE_NAME, "WA"),
        x509.NameAttribute(x509.oid.NameOID.ORGANIZATION_NAME, "Acme, Inc."),
        x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "builder")]), n=6)
    subject = format_subject(chain.leaf.subject)
    assert subject == r"C=US, ST=WA, O=Acme\, Inc., CN=builder"
    requirement = parse(policy_of(scope(signatures=[{
        "kind": "notation", "trust_store": chain.root_pem(),
        "trusted_identities": ["x509.subject: " + subject]}]))).policy.scopes[0].signatures[0]
    assert requirement.trusts_subject(chain.leaf.subject)
    assert not requirement.trusts_subject(name("builder"))


# --- every problem, with its line and field ------------------------------------------------------

ERRORS = [
    # the file
    ("", 1, None, "the trust policy is empty"),
    ("# only a comment\n", 1, None, "the trust policy is empty"),
    ("- a\n", 1, None, "must be a mapping with a 'scopes' list, not a list"),
    ("scopes: []\nrules: []\n", 2, "rules", "unknown top-level key 'rules'"),
    ("version: 1\n", 1, None, "has no 'scopes' list"),
    ("scopes: {}\n", 1, "scopes", "scopes must be a list, not an object"),
    ("version: 2\nscopes: []\n", 1, "version", "unsupported version 2"),
    ("scopes: []\nscopes: []\n", 2, "scopes", "duplicate key 'scopes' (first on line 1)"),
    ("scopes: [\n", 2, None, "YAML syntax error"),
    ("scopes:\n\t- a\n", 2, None, "YAML syntax error"),
    ("scopes: []\nwhen: 2026-13-01\n", 2, None, "could not be read"),
    # a scope
    ("scopes:\n  - just-a-name\n", 2, "scopes[0]", "a scope must be a mapping"),
    ("scopes:\n  - name: a\n    match: quay.io/a/*\n    mode: skip\n    when: x\n", 5, "scopes[0].when",
     "unknown key 'when' in a scope"),
    ("scopes:\n  - match: quay.io/a/*\n    mode: skip\n", 2, "scopes[0]", "the scope has no name"),
    ("scopes:\n  - name:\n    match: quay.io/a/*\n    mode: skip\n", 2, "scopes[0]", "the scope has no name"),
    ("scopes:\n  - name: 7\n    match: quay.io/a/*\n    mode: skip\n", 2, "scopes[0].name",
     "name must be a string, not a number"),
    ("scopes:\n  - name: Big_Name\n    match: quay.io/a/*\n    mode: skip\n", 2, "scopes[0].name",
     "invalid scope name 'Big_Name'"),
    ("scopes:\n  - name: a\n    mode: skip\n", 2, "scopes[0]", "the scope has no match"),
    ("scopes:\n  - name: a\n    match: []\n    mode: skip\n", 3, "scopes[0].match", "match is an empty list"),
    ("scopes:\n  - name: a\n    match: 5\n    mode: skip\n", 3, "scopes[0].match",
     "a match pattern must be a string, not a number"),
    ("scopes:\n  - name: a\n    match: quay.io/a/*\n    mode: strict\n    signatures: [{kind: keyless, "
     "identity: a, issuer: 'https://x'}]\n", 4, "scopes[0].mode",
     "invalid mode 'strict'; one of enforce, audit, skip"),
    ("scopes:\n  - name: a\n    match: quay.io/a/*\n    mode: true\n    signatures: [{kind: keyless, "
     "identity: a, issuer: 'https://x'}]\n", 4, "scopes[0].mode",
     "invalid mode a boolean"),
    ("scopes:\n  - name: a\n    match: quay.io/a/*\n    require: most\n    signatures: [{kind: keyless, "
     "identity: a, issuer: 'https://x'}]\n", 4, "scopes[0].require", "invalid require 'most'"),
    ("scopes:\n  - name: a\n    match: quay.io/a/*\n    trusted_root: /etc/root.json\n    signatures: [{kind: "
     "keyless, identity: a, issuer: 'https://x'}]\n", 4, "scopes[0].trusted_root", "invalid trusted_root"),
    ("scopes:\n  - name: a\n    match: quay.io/a/*\n", 2, "scopes[0]", "the scope has no signatures"),
    ("scopes:\n  - name: a\n    match: quay.io/a/*\n    signatures: {kind: keyless}\n", 4, "scopes[0].signatures",
     "signatures must be a list, not an object"),
    ("scopes:\n  - name: a\n    match: quay.io/a/*\n    signatures: []\n", 4, "scopes[0].signatures",
     "signatures is empty"),
    ("scopes:\n  - name: a\n    match: quay.io/a/*\n    mode: skip\n    signatures: [{kind: keyless}]\n", 5,
     "scopes[0].signatures", "a scope with mode skip verifies nothing: remove signatures"),
    # a signature
    ("scopes:\n  - name: a\n    match: quay.io/a/*\n    signatures:\n      - keyless\n", 5, "scopes[0].signatures[0]",
     "a signature must be a mapping with a kind"),
    ("scopes:\n  - name: a\n    match: quay.io/a/*\n    signatures:\n      - identity: a\n", 5,
     "scopes[0].signatures[0]", "the signature has no kind"),
    ("scopes:\n  - name: a\n    match: quay.io/a/*\n    signatures:\n      - kind: gpg\n", 5,
     "scopes[0].signatures[0].kind", "unknown signature kind 'gpg'; one of cosign-key, keyless, notation"),
    ("scopes:\n  - name: a\n    match: quay.io/a/*\n    signatures:\n      - kind: keyless\n        identity: a\n"
     "        issuer: https://x\n        subject: a\n", 8, "scopes[0].signatures[0].subject",
     "unknown key 'subject' for kind keyless"),
    ("scopes:\n  - name: a\n    match: quay.io/a/*\n    signatures:\n      - kind: keyless\n"
     "        issuer: https://x\n", 5, "scopes[0].signatures[0]", "give exactly one of identity or identity_regex"),
    ("scopes:\n  - name: a\n    match: quay.io/a/*\n    signatures:\n      - kind: keyless\n        identity: a\n"
     "        identity_regex: a\n        issuer: https://x\n", 7, "scopes[0].signatures[0].identity_regex",
     "give identity or identity_regex, not both"),
    ("scopes:\n  - name: a\n    match: quay.io/a/*\n    signatures:\n      - kind: keyless\n        identity: ''\n"
     "        issuer: https://x\n", 6, "scopes[0].signatures[0].identity", "identity is empty"),
    ("scopes:\n  - name: a\n    match: quay.io/a/*\n    signatures:\n      - kind: keyless\n        identity: ' a'\n"
     "        issuer: https://x\n", 6, "scopes[0].signatures[0].identity", "leading or trailing whitespace"),
    ("scopes:\n  - name: a\n    match: quay.io/a/*\n    signatures:\n      - kind: keyless\n        identity: 12\n"
     "        issuer: https://x\n", 6, "scopes[0].signatures[0].identity", "identity must be a string, not a number"),
    ("scopes:\n  - name: a\n    match: quay.io/a/*\n    signatures:\n      - kind: keyless\n        identity: a\n"
     "        issuer: accounts.google.com\n", 7, "scopes[0].signatures[0].issuer", "is not a URL"),
    ("scopes:\n  - name: a\n    match: quay.io/a/*\n    signatures:\n      - kind: keyless\n"
     "        identity_regex: '(a'\n        issuer: https://x\n", 6, "scopes[0].signatures[0].identity_regex",
     "identity_regex is not a valid RE2 pattern: missing ): (a"),
    ("scopes:\n  - name: a\n    match: quay.io/a/*\n    signatures:\n      - kind: keyless\n        identity: a\n"
     "        issuer_regex: 'https://(?=x)'\n", 7, "scopes[0].signatures[0].issuer_regex",
     "issuer_regex is not a valid RE2 pattern: invalid perl operator: (?="),
    ("scopes:\n  - name: a\n    match: quay.io/a/*\n    signatures:\n      - kind: keyless\n"
     "        identity_regex: '(a)\\1'\n        issuer: https://x\n", 6, "scopes[0].signatures[0].identity_regex",
     "not a valid RE2 pattern: invalid escape sequence"),
    ("scopes:\n  - name: a\n    match: quay.io/a/*\n    signatures:\n      - kind: cosign-key\n", 5,
     "scopes[0].signatures[0]", "a cosign-key signature needs key"),
    ("scopes:\n  - name: a\n    match: quay.io/a/*\n    signatures:\n      - kind: cosign-key\n        key: [a]\n", 6,
     "scopes[0].signatures[0].key", "key must be a PEM string, not a list"),
    ("scopes:\n  - name: a\n    match: quay.io/a/*\n    signatures:\n      - kind: cosign-key\n        key: abc\n", 6,
     "scopes[0].signatures[0].key", "key is not PEM"),
    ("scopes:\n  - name: a\n    match: quay.io/a/*\n    signatures:\n      - kind: cosign-key\n        key: |\n"
     "          -----BEGIN PUBLIC KEY-----\n          AAAA\n", 6, "scopes[0].signatures[0].key",
     "has no matching '-----END ...-----' line"),
    ("scopes:\n  - name: a\n    match: quay.io/a/*\n    signatures:\n      - kind: cosign-key\n        key: |\n"
     "          -----BEGIN PUBLIC KEY-----\n          AAAA\n          -----END PUBLIC KEY-----\n", 6,
     "scopes[0].signatures[0].key", "key is not a valid public key"),
    ("scopes:\n  - name: a\n    match: quay.io/a/*\n    signatures:\n      - kind: cosign-key\n        key: |\n"
     "          -----BEGIN PUBLIC KEY-----\n          !!!!\n          -----END PUBLIC KEY-----\n", 6,
     "scopes[0].signatures[0].key", "the PEM body is not base64"),
    ("scopes:\n  - name: a\n    match: quay.io/a/*\n    signatures:\n      - kind: cosign-key\n        key: |\n"
     "          -----BEGIN CERTIFICATE-----\n          AAAA\n          -----END CERTIFICATE-----\n", 6,
     "scopes[0].signatures[0].key", "key is a 'CERTIFICATE' PEM block; expected a PUBLIC KEY"),
    # notation
    ("scopes:\n  - name: a\n    match: quay.io/a/*\n    signatures:\n      - kind: notation\n"
     "        trusted_identities: ['*']\n", 5, "scopes[0].signatures[0]", "a notation signature needs trust_store"),
    ("scopes:\n  - name: a\n    match: quay.io/a/*\n    signatures:\n      - kind: notation\n        trust_store: []\n"
     "        trusted_identities: ['*']\n", 6, "scopes[0].signatures[0].trust_store", "trust_store is empty"),
    ("scopes:\n  - name: a\n    match: quay.io/a/*\n    signatures:\n      - kind: notation\n        trust_store: 1\n"
     "        trusted_identities: ['*']\n", 6, "scopes[0].signatures[0].trust_store", "must be PEM text"),
    ("scopes:\n  - name: a\n    match: quay.io/a/*\n    signatures:\n      - kind: notation\n"
     "        trust_store: [nope]\n        trusted_identities: ['*']\n", 6, "scopes[0].signatures[0].trust_store[0]",
     "no PEM certificate (-----BEGIN CERTIFICATE-----) found"),
    ("scopes:\n  - name: a\n    match: quay.io/a/*\n    signatures:\n      - kind: notation\n        trust_store: |\n"
     "          -----BEGIN CERTIFICATE-----\n          AAAA\n          -----END CERTIFICATE-----\n"
     "        trusted_identities: ['*']\n", 6, "scopes[0].signatures[0].trust_store",
     "the certificate is not a valid X.509 certificate"),
    ("scopes:\n  - name: a\n    match: quay.io/a/*\n    signatures:\n      - kind: notation\n        trust_store: |\n"
     "          -----BEGIN PUBLIC KEY-----\n          AAAA\n          -----END PUBLIC KEY-----\n"
     "        trusted_identities: ['*']\n", 6, "scopes[0].signatures[0].trust_store",
     "the certificate is a 'PUBLIC KEY' PEM block; a trust store holds CERTIFICATE blocks"),
]


@pytest.mark.parametrize("text, line, field, words", ERRORS)
def test_error(text, line, field, words):
    problem = only_problem(text)
    assert (problem.line, problem.field) == (line, field), str(problem)
    assert words in problem.message, str(problem)


def notation_scope(store, identities) -> str:
    return policy_of(scope(signatures=[{"kind": "notation", "trust_store": store, "trusted_identities": identities}]))


ROOT = make_chain(n=0).root_pem()


@pytest.mark.parametrize("identities, field, words", [
    ({"a": 1}, "trusted_identities", "must be a list, not an object"),
    ([], "trusted_identities", "trusted_identities is empty"),
    (["x509.subject: C=US, ST=WA, O=a", "*"], "trusted_identities[1]", "'*' (any identity) must be the only"),
    ([7], "trusted_identities[0]", "a trusted identity must be a string, not a number"),
    (["x509.subject: C=US, O=a"], "trusted_identities[0]", "must include C, ST and O; missing ST"),
    (["x509.subject: C=US, ST=WA, O=wabbit-network.io, OU=org1", "x509.subject: C=US, ST=WA, O=wabbit-network.io"],
     "trusted_identities[1]", "overlaps 'x509.subject: C=US, ST=WA, O=wabbit-network.io, OU=org1' (index 0)"),
    (["x509.subject: C=US, ST=WA, O=a, OU=x", "x509.subject: C=US, ST=WA, O=a, CN=y"], "trusted_identities[1]",
     "one certificate could match both"),
    (["x509.subject: C=US, ST=WA, O=a"] * 101, "trusted_identities", "101 trusted identities; the limit is 100"),
])
def test_identity_problems(identities, field, words):
    problem = only_problem(notation_scope(ROOT, identities))
    assert problem.field == "scopes[0].signatures[0]." + field and words in problem.message, str(problem)
    assert problem.line is not None


def test_identities_that_differ_do_not_overlap():
    result = parse(notation_scope(ROOT, ["x509.subject: C=US, ST=WA, O=a, OU=x", "x509.subject: C=US, ST=WA, O=a, "
                                                                                  "OU=y"]))
    assert result.ok


def test_trust_store_problems():
    other = make_chain(n=1).root_pem()
    key_pem = private_key("ec", 256).private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()).decode()
    found = problems(policy_of(scope(signatures=[
        {"kind": "notation", "trust_store": [ROOT, ROOT + other], "trusted_identities": ["*"]},
        {"kind": "notation", "trust_store": ROOT + key_pem, "trusted_identities": ["*"]}])))
    assert [(p.field, p.message.split(" (")[0]) for p in found] == [
        ("scopes[0].signatures[0].trust_store[1]", "certificate 1 of 2"),
        ("scopes[0].signatures[1].trust_store", "certificate 2 of 2 is a private key; remove it from this file")]
    assert "is listed twice" in found[0].message
    assert key_pem.splitlines()[1] not in json.dumps([str(p) for p in found])


@pytest.mark.parametrize("make, words", [
    (lambda: rsa.generate_private_key(65537, 1024), "RSA key is 1024 bits; at least 2048 are required"),
    (lambda: ec.generate_private_key(ec.SECP256K1()), "EC curve secp256k1 is not supported"),
    (lambda: dsa.generate_private_key(1024), "DSAPublicKey keys are not supported"),
])
def test_unsupported_cosign_keys(make, words):
    problem = only_problem(policy_of(scope(signatures=[{"kind": "cosign-key", "key": public_pem(make())}])))
    assert problem.field == "scopes[0].signatures[0].key" and words in problem.message, str(problem)


def test_supported_cosign_keys():
    for key in (private_key("ec", 256), private_key("ec", 384), private_key("ec", 521), private_key("rsa", 2048),
                ed25519.Ed25519PrivateKey.generate()):
        result = parse(policy_of(scope(signatures=[{"kind": "cosign-key", "key": public_pem(key)}])))
        assert result.ok, [str(p) for p in result.errors]


def test_a_private_key_is_refused_and_not_echoed():
    secret = private_key("ec", 256).private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()).decode()
    result = parse(policy_of(scope(signatures=[{"kind": "cosign-key", "key": secret}])))
    (problem,) = result.errors
    assert problem.field == "scopes[0].signatures[0].key" and "is a private key" in problem.message
    body = "".join(secret.splitlines()[1:-1])
    text = json.dumps(result.to_dict())
    assert all(chunk not in text for chunk in (body[:20], body[20:40], body[-20:]))


def test_two_keys_in_one_cosign_key():
    problem = only_problem(policy_of(scope(signatures=[{"kind": "cosign-key", "key": EC_PEM * 2}])))
    assert "one PEM public key, found 2 PEM blocks" in problem.message


def test_an_ed25519_certificate_is_not_a_notary_trust_anchor():
    key = ed25519.Ed25519PrivateKey.generate()
    root = certificate(name("ed"), key, name("ed"), key, ca=True, hash_type=lambda: None)
    problem = only_problem(notation_scope(root.public_bytes(serialization.Encoding.PEM).decode(), ["*"]))
    assert "Ed25519 is not a Notary Project algorithm" in problem.message


@pytest.mark.parametrize("pattern, words", [
    ("nginx", "must start with the registry host, fully qualified (for Docker Hub: docker.io/library/nginx)"),
    ("library/nginx", "must start with the registry host"),
    ("docker.io/nginx", "Docker Hub's official images are under library/ (docker.io/library/nginx)"),
    ("index.docker.io/library/nginx", "write Docker Hub as docker.io, not index.docker.io"),
    ("quay.io", "has no repository part; quay.io/** matches every repository"),
    ("quay.io/", "an empty segment"),
    ("quay.io//a", "an empty segment"),
    ("/quay.io/a", "an empty segment"),
    ("Quay.io/a", "must be lowercase"),
    ("quay.io/a:1.0", "must not include a tag"),
    ("quay.io/a@sha256:" + "0" * 64, "must not include a digest"),
    ("quay.io/[ab]c", "character classes ([...]) are not supported"),
    ("quay.io/a**", "'**' must be a whole segment"),
    ("quay.io/**/**", "write '**' once"),
    ("quay.io/a b", "contains whitespace"),
    ("quay.io/a_/b", "invalid repository segment 'a_'"),
    ("quay.io/a+*", "has characters a repository cannot contain"),
    ("qu_ay.io/a", "registry 'qu_ay.io' in match pattern has characters"),
    ("quay.io:99999/a", "registry port 99999 is out of range"),
    ("", "match pattern is empty"),
])
def test_bad_patterns(pattern, words):
    problem = only_problem(policy_of(scope(match=[pattern])))
    assert problem.field == "scopes[0].match[0]" and words in problem.message, str(problem)


def test_pattern_in_two_scopes_and_duplicate_names():
    text = """\
    scopes:
      - name: a
        match: quay.io/a/*
        mode: skip
      - name: a
        match: [quay.io/b/*, quay.io/b/*, quay.io/a/*]
        mode: skip
    """
    found = problems(text)
    assert [(p.line, p.field) for p in found] == [
        (5, "scopes[1].name"), (6, "scopes[1].match[1]"), (6, "scopes[1].match[2]")]
    assert "duplicate scope name 'a' (first used on line 2)" in found[0].message
    assert "pattern 'quay.io/b/*' is listed twice" in found[1].message
    assert "pattern 'quay.io/a/*' is also in scope 'a' (line 2)" in found[2].message


def test_the_same_signature_twice():
    problem = only_problem(policy_of(scope(signatures=[KEYLESS, dict(KEYLESS)])))
    assert problem.field == "scopes[0].signatures[1]" and "listed twice (also at index 0)" in problem.message


def test_every_problem_is_reported_at_once():
    text = """\
    version: 3
    scopes:
      - name: Bad
        match: nginx
        mode: block
        signatures:
          - kind: keyless
            identity_regex: '(?=x)'
            issuer: nope
          - kind: cosign-key
            key: not pem
      - name: ok
        match: quay.io/ok/*
        signatures: []
    """
    found = problems(text)
    assert [p.line for p in found] == [1, 3, 4, 5, 8, 9, 11, 14]
    assert all(p.line is not None for p in found)


# --- limits and hostile input --------------------------------------------------------------------

def test_too_large():
    (problem,) = parse_trust_policy(b"#" * 2_000_000, "big.yaml").errors
    assert "is 2000000 bytes; the limit is 1048576 bytes" in problem.message


def test_too_many_scopes():
    text = policy_of(*[{"name": f"s{i}", "match": f"quay.io/r{i}/*", "mode": "skip"} for i in range(MAX_SCOPES + 1)])
    (problem,) = problems(text)
    assert problem.field == "scopes" and f"{MAX_SCOPES + 1} scopes; the limit is {MAX_SCOPES}" in problem.message


def test_too_many_signatures_and_patterns():
    many = [{"kind": "keyless", "identity": f"u{i}@example.com", "issuer": "https://x"} for i in range(21)]
    assert "21 signatures; the limit is 20" in only_problem(policy_of(scope(signatures=many))).message
    patterns = [f"quay.io/r{i}/*" for i in range(101)]
    assert "101 patterns; the limit is 100" in only_problem(policy_of(scope(match=patterns))).message


def test_regex_length_limit():
    regex = "a" * 1025
    problem = only_problem(policy_of(scope(signatures=[{"kind": "keyless", "identity_regex": regex,
                                                       "issuer": "https://x"}])))
    assert "identity_regex is 1025 characters; the limit is 1024" in problem.message


def test_at_most_max_errors_are_listed():
    text = policy_of(*[{"name": f"s{i}", "match": "nginx", "mode": "skip"} for i in range(MAX_ERRORS + 30)])
    found = problems(text)
    assert len(found) == MAX_ERRORS + 1 and found[-1].message == "30 more problems not listed"


def test_not_utf8():
    (problem,) = problems(b"scopes: []\n# caf\xe9\n")
    assert (problem.line, "not valid UTF-8 (byte 0xe9)" in problem.message) == (2, True)


@pytest.mark.parametrize("document", [yaml_bombs.nested_brackets(), yaml_bombs.alias_bomb(),
                                      yaml_bombs.merge_bomb(), yaml_bombs.wide_alias_bomb(), yaml_bombs.nul_byte()])
def test_hostile_yaml_is_a_problem(document):
    found = problems(document)
    assert found and all(p.line is not None for p in found)


def test_input_type():
    with pytest.raises(TypeError):
        parse_trust_policy(["scopes: []"], "x")  # type: ignore[arg-type]


# --- warnings, results -----------------------------------------------------------------------------

def test_warnings():
    chain = make_chain(n=7)
    expired_key = private_key("rsa", 2048, 300)
    expired = certificate(name("Old Root"), expired_key, name("Old Root"), expired_key, ca=True,
                          not_before=NOW - timedelta(days=800), not_after=NOW - timedelta(days=10))
    intermediate = chain.certificates[1].public_bytes(serialization.Encoding.PEM).decode()
    old_root = expired.public_bytes(serialization.Encoding.PEM).decode()
    text = policy_of(
        scope("a", "quay.io/a/*", trusted_root="corp", signatures=[
            {"kind": "notation", "trust_store": [intermediate, old_root], "trusted_identities": ["*"]}]),
        scope("b", "quay.io/b/*", require="all"))
    result = parse(text, now=NOW)
    assert result.ok
    assert sorted((p.field, p.message.split(":")[0].split(" (")[0]) for p in result.warnings) == [
        ("scopes[0].signatures[0].trust_store[0]", "the certificate"),
        ("scopes[0].signatures[0].trust_store[1]", "the certificate"),
        ("scopes[0].trusted_root", "trusted_root is only used by keyless and cosign-key signatures; this scope has "
                                   "notation signatures only"),
        ("scopes[1].require", "require")]
    messages = " | ".join(p.message for p in result.warnings)
    assert "is not self-signed" in messages and "expired on 2026-02-19" in messages
    assert "require: all with one signature is the same as any" in messages
    without_now = " | ".join(p.message for p in parse(text).warnings)
    assert "is not self-signed" in without_now and "expired" not in without_now  # no `now`: no validity warnings


def test_raise_for_errors():
    parse("scopes: []\n").raise_for_errors()
    with pytest.raises(TrustPolicyError) as info:
        parse("scopes: {}\n").raise_for_errors()
    assert info.value.code == "InvalidTrustPolicy" and info.value.problems[0].line == 1
    assert "the trust policy test.yaml has 1 problem" == info.value.message


def test_result_to_dict():
    result = parse("scopes: {}\n")
    assert result.to_dict() == {"name": "test.yaml", "ok": False, "policy": None, "warnings": [],
                                "errors": [{"message": "scopes must be a list, not an object (write 'scopes: []' "
                                                       "for none)", "line": 1, "field": "scopes"}]}


def test_now_is_only_for_warnings():
    assert parse(POLICY.read_bytes(), now=datetime(2040, 1, 1, tzinfo=timezone.utc)).ok
