"""Checking one ``signatures`` entry of a trust policy file: cosign-key, keyless, notation. Pure code.

:class:`SignatureChecks` is the part of the trust policy checker (``shared.core.trust.parse``) that
reads a scope's ``signatures`` list: each entry's ``kind`` and its keys (unknown keys are problems,
with the allowed keys listed), then per kind:

    ``cosign-key``: ``key`` is one PEM public key (``shared.core.trust.keys``); a private key is
    refused (and not echoed).

    ``keyless``: exactly one of ``identity`` (the certificate's identity, exact) or
    ``identity_regex``, and exactly one of ``issuer`` (the OIDC issuer URL, exact) or
    ``issuer_regex``. Patterns are RE2 syntax (no look-around or back-references), at most 1,024
    characters, and must match the whole value (they are anchored, unlike cosign's
    ``--certificate-identity-regexp``). A pattern that matches any identity is flagged.

    ``notation``: ``trust_store`` holds the X.509 certificates (PEM) a signature's chain must lead
    to; ``trusted_identities`` lists ``x509.subject: ...`` distinguished names
    (``shared.core.trust.identities``), or the single value ``*`` (any certificate the trust store
    issued). A trust-store certificate that is not self-signed, or (with ``now``) not valid now, is
    a warning.

Every problem goes to the checker's ``error(at, message)``, every warning to ``warn``; the mixin
needs ``error``, ``warn``, ``line`` and ``now`` from the class it is mixed into.
"""
from __future__ import annotations

import json
from typing import Any, Mapping, Optional

import re2
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from shared.core.builds import type_name
from shared.core.trust.identities import TrustedIdentity, _overlap, format_subject, parse_trusted_identity
from shared.core.trust.keys import _check_public_key, _fingerprint, _is_private, _pem_blocks, _pem_der, key_id
from shared.core.trust.patterns import _RE2_OPTIONS
from shared.core.trust.policy import (MAX_CERTIFICATES, MAX_IDENTITIES, MAX_REGEX, MAX_SIGNATURES, CosignKeyRequirement,
                                      KeylessRequirement, NotationRequirement, Requirement)
from shared.core.trust.verdict import KIND_COSIGN_KEY, KIND_KEYLESS, KIND_NOTATION, KINDS
from shared.core.yamlfile import Segment

_KIND_KEYS = {
    KIND_COSIGN_KEY: ("kind", "key"),
    KIND_KEYLESS: ("kind", "identity", "identity_regex", "issuer", "issuer_regex"),
    KIND_NOTATION: ("kind", "trust_store", "trusted_identities"),
}
# identities that an over-broad pattern would let in: a stranger's e-mail and a stranger's workflow
_PROBE_IDENTITIES = ("attacker@example.com",
                     "https://github.com/attacker/repo/.github/workflows/release.yml@refs/heads/main")
_PROBE_ISSUERS = ("https://attacker.example.com", "https://token.actions.githubusercontent.com")


class SignatureChecks:
    """The checker's methods for a scope's ``signatures`` list (mixed into ``parse._Checker``)."""

    # -- signatures --

    def signatures(self, at: tuple[Segment, ...], raw: Any) -> list[Requirement]:
        at = at + ("signatures",)
        if not isinstance(raw, list):
            self.error(at, f"signatures must be a list, not {type_name(raw)}")
            return []
        if not raw:
            self.error(at, "signatures is empty; list at least one (or use mode: skip)")
            return []
        if len(raw) > MAX_SIGNATURES:
            self.error(at, f"{len(raw)} signatures; the limit is {MAX_SIGNATURES}")
            raw = raw[:MAX_SIGNATURES]
        out: list[Requirement] = []
        seen: dict[str, int] = {}
        for j, item in enumerate(raw):
            requirement = self.requirement(at + (j,), item)
            if requirement is None:
                continue
            key = json.dumps(requirement.canonical(), sort_keys=True)
            if key in seen:
                self.error(at + (j,), f"the same signature is listed twice (also at index {seen[key]})")
                continue
            seen[key] = j
            out.append(requirement)
        return out

    def requirement(self, at: tuple[Segment, ...], item: Any) -> Optional[Requirement]:
        if not isinstance(item, Mapping):
            self.error(at, f"a signature must be a mapping with a kind ({', '.join(KINDS)}), not {type_name(item)}")
            return None
        kind = item.get("kind")
        if "kind" not in item:
            self.error(at, f"the signature has no kind ({', '.join(KINDS)})")
            return None
        if kind not in KINDS or not isinstance(kind, str):
            shown = repr(kind) if isinstance(kind, str) else type_name(kind)
            self.error(at + ("kind",), f"unknown signature kind {shown}; one of {', '.join(KINDS)}")
            return None
        before = len(self.problems.items)
        allowed = _KIND_KEYS[kind]
        for key in item:
            if key not in allowed:
                self.error(at + (key,), f"unknown key {str(key)!r} for kind {kind}; allowed: {', '.join(allowed)}")
        check = {KIND_COSIGN_KEY: self.cosign_key, KIND_KEYLESS: self.keyless, KIND_NOTATION: self.notation}[kind]
        requirement = check(at, item)
        return requirement if len(self.problems.items) == before else None

    def cosign_key(self, at: tuple[Segment, ...], item: Mapping) -> Optional[CosignKeyRequirement]:
        if "key" not in item:
            self.error(at, "a cosign-key signature needs key (a PEM public key)")
            return None
        text = item["key"]
        if not isinstance(text, str):
            self.error(at + ("key",), f"key must be a PEM string, not {type_name(text)}")
            return None
        blocks, broken = _pem_blocks(text)
        if any(_is_private(label) for label, _ in blocks) or "PRIVATE KEY" in text:
            self.error(at + ("key",), "key is a private key; give the public key (cosign public-key) and keep "
                                      "the private key out of this file")
            return None
        if broken or len(blocks) != 1:
            self.error(at + ("key",), broken or (f"key must be one PEM public key, found {len(blocks)} PEM blocks"
                                                 if blocks else "key is not PEM (-----BEGIN PUBLIC KEY-----)"))
            return None
        label, block = blocks[0]
        if label not in ("PUBLIC KEY", "RSA PUBLIC KEY"):
            self.error(at + ("key",), f"key is a {label!r} PEM block; expected a PUBLIC KEY")
            return None
        try:
            public_key = serialization.load_der_public_key(_pem_der(block))
        except (ValueError, TypeError, UnsupportedAlgorithm) as e:
            self.error(at + ("key",), f"key is not a valid public key: {_first_line(e)}")
            return None
        problem = _check_public_key(public_key)
        if problem:
            self.error(at + ("key",), problem)
            return None
        pem = public_key.public_bytes(serialization.Encoding.PEM,
                                      serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        return CosignKeyRequirement(self.line(at), key_id(public_key), pem, public_key)

    def keyless(self, at: tuple[Segment, ...], item: Mapping) -> Optional[KeylessRequirement]:
        values: dict[str, Optional[str]] = {}
        compiled: list[Any] = []
        for exact, regex, what in (("identity", "identity_regex", "certificate identity"),
                                   ("issuer", "issuer_regex", "OIDC issuer")):
            given = [k for k in (exact, regex) if k in item]
            values[exact] = values[regex] = None
            if len(given) != 1:
                self.error(at + ((given[-1],) if given else ()),
                           f"give exactly one of {exact} or {regex} (the {what})" if not given
                           else f"give {exact} or {regex}, not both")
                compiled.append(None)
                continue
            key = given[0]
            value = item[key]
            if not isinstance(value, str):
                self.error(at + (key,), f"{key} must be a string, not {type_name(value)}")
                compiled.append(None)
                continue
            if not value.strip() or value != value.strip():
                self.error(at + (key,), f"{key} is empty" if not value.strip()
                           else f"{key} has leading or trailing whitespace")
                compiled.append(None)
                continue
            if key == exact:
                if exact == "issuer" and not value.startswith(("https://", "http://")):
                    self.error(at + (key,), f"issuer {value!r} is not a URL; an OIDC issuer is e.g. "
                                            "https://accounts.google.com")
                values[key] = value
                compiled.append(None)
                continue
            pattern = self.regex(at + (key,), key, value)
            compiled.append(pattern)
            if pattern is not None:
                values[key] = value
                probes = _PROBE_IDENTITIES if exact == "identity" else _PROBE_ISSUERS
                if all(pattern.fullmatch(p) for p in probes):
                    self.warn(at + (key,), f"{key} {value!r} matches any {what}: anyone who can get a Sigstore "
                                           "certificate could sign")
        return KeylessRequirement(self.line(at), values["identity"], values["identity_regex"], values["issuer"],
                                  values["issuer_regex"], (compiled[0], compiled[1]))

    def regex(self, at: tuple[Segment, ...], key: str, value: str) -> Any:
        if len(value) > MAX_REGEX:
            self.error(at, f"{key} is {len(value)} characters; the limit is {MAX_REGEX}")
            return None
        try:
            return re2.compile(value, _RE2_OPTIONS)
        except re2.error as e:
            reason = e.args[0].decode("utf-8", "replace") if e.args and isinstance(e.args[0], bytes) else str(e)
            self.error(at, f"{key} is not a valid RE2 pattern: {reason}")
            return None

    def notation(self, at: tuple[Segment, ...], item: Mapping) -> Optional[NotationRequirement]:
        certificates = self.trust_store(at, item)
        identities, any_identity = self.identities(at, item)
        if certificates is None or identities is None:
            return None
        return NotationRequirement(self.line(at), tuple(certificates), tuple(identities), any_identity)

    def trust_store(self, at: tuple[Segment, ...], item: Mapping) -> Optional[list[x509.Certificate]]:
        if "trust_store" not in item:
            self.error(at, "a notation signature needs trust_store (PEM certificates the chain must lead to)")
            return None
        raw = item["trust_store"]
        texts = raw if isinstance(raw, list) else [raw]
        where = (lambda j: at + ("trust_store", j)) if isinstance(raw, list) else (lambda j: at + ("trust_store",))
        if isinstance(raw, list) and not raw:
            self.error(at + ("trust_store",), "trust_store is empty; give at least one PEM certificate")
            return None
        found: list[x509.Certificate] = []
        seen: set[str] = set()
        ok = True
        for j, text in enumerate(texts):
            if not isinstance(text, str):
                self.error(where(j), f"trust_store must be PEM text (or a list of it), not {type_name(text)}")
                ok = False
                continue
            blocks, broken = _pem_blocks(text)
            if broken:
                self.error(where(j), broken)
                ok = False
                continue
            if not blocks:
                self.error(where(j), "no PEM certificate (-----BEGIN CERTIFICATE-----) found")
                ok = False
                continue
            for n, (label, block) in enumerate(blocks, 1):
                which = f"certificate {n} of {len(blocks)}" if len(blocks) > 1 else "the certificate"
                if _is_private(label):
                    self.error(where(j), f"{which} is a private key; remove it from this file")
                    ok = False
                    continue
                if label != "CERTIFICATE":
                    self.error(where(j), f"{which} is a {label!r} PEM block; a trust store holds CERTIFICATE blocks")
                    ok = False
                    continue
                try:
                    certificate = x509.load_der_x509_certificate(_pem_der(block))
                    public_key = certificate.public_key()
                    certificate.extensions  # read lazily by cryptography: a damaged one fails here
                except (ValueError, TypeError, UnsupportedAlgorithm, x509.DuplicateExtension,
                        x509.InvalidVersion) as e:
                    self.error(where(j), f"{which} is not a valid X.509 certificate: {_first_line(e)}")
                    ok = False
                    continue
                problem = _check_public_key(public_key)
                if problem or isinstance(public_key, ed25519.Ed25519PublicKey):
                    self.error(where(j), f"{which} ({format_subject(certificate.subject)}): "
                                         f"{problem or 'Ed25519 is not a Notary Project algorithm'}")
                    ok = False
                    continue
                fingerprint = _fingerprint(certificate)
                if fingerprint in seen:
                    self.error(where(j), f"{which} ({format_subject(certificate.subject)}) is listed twice")
                    ok = False
                    continue
                seen.add(fingerprint)
                found.append(certificate)
                self.certificate_warnings(where(j), which, certificate)
        if len(found) > MAX_CERTIFICATES:
            self.error(at + ("trust_store",), f"{len(found)} certificates; the limit is {MAX_CERTIFICATES}")
            return None
        return found if ok else None

    def certificate_warnings(self, at: tuple[Segment, ...], which: str, certificate: x509.Certificate) -> None:
        subject = format_subject(certificate.subject)
        if certificate.issuer != certificate.subject:
            self.warn(at, f"{which} ({subject}) is not self-signed: pinning an intermediate or signing certificate "
                          "breaks verification when it is rotated; prefer the root")
        if self.now is not None:
            if certificate.not_valid_after_utc < self.now:
                self.warn(at, f"{which} ({subject}) expired on {certificate.not_valid_after_utc:%Y-%m-%d}")
            elif certificate.not_valid_before_utc > self.now:
                self.warn(at, f"{which} ({subject}) is not valid before "
                              f"{certificate.not_valid_before_utc:%Y-%m-%d}")

    def identities(self, at: tuple[Segment, ...], item: Mapping) -> tuple[Optional[list[TrustedIdentity]], bool]:
        if "trusted_identities" not in item:
            self.error(at, "a notation signature needs trusted_identities ('x509.subject: C=.., ST=.., O=..' "
                           "items, or [\"*\"])")
            return None, False
        raw = item["trusted_identities"]
        at = at + ("trusted_identities",)
        if not isinstance(raw, list):
            self.error(at, f"trusted_identities must be a list, not {type_name(raw)}")
            return None, False
        if not raw:
            self.error(at, "trusted_identities is empty; list identities, or [\"*\"] for any the trust store issued")
            return None, False
        if len(raw) > MAX_IDENTITIES:
            self.error(at, f"{len(raw)} trusted identities; the limit is {MAX_IDENTITIES}")
            return None, False
        if "*" in raw:
            if len(raw) != 1:
                self.error(at + (raw.index("*"),), "'*' (any identity) must be the only trusted identity")
                return None, False
            return [], True
        out: list[TrustedIdentity] = []
        ok = True
        for j, value in enumerate(raw):
            if not isinstance(value, str):
                self.error(at + (j,), f"a trusted identity must be a string, not {type_name(value)}")
                ok = False
                continue
            try:
                identity = parse_trusted_identity(value)
            except ValueError as e:
                self.error(at + (j,), f"invalid trusted identity {value!r}: {e}")
                ok = False
                continue
            for k, other in enumerate(out):
                if _overlap(identity, other):
                    self.error(at + (j,), f"trusted identity {value!r} overlaps {other.text!r} (index {k}): one "
                                          "certificate could match both")
                    ok = False
                    break
            else:
                out.append(identity)
        return (out if ok else None), False


def _first_line(error: BaseException) -> str:
    return (str(error).splitlines() or [type(error).__name__])[0]
